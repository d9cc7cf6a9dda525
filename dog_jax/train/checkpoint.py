"""Orbax checkpoints of the train state: async saves, keep the last K and the best.

Layout under ``<workdir>/checkpoints/<step>/``:

* ``state/`` -- the train state pytree (``StandardSave``):
  ``{"step", "params", "batch_stats", "opt_state"}``; the model's parameters are under
  ``params`` as a nested dict keyed by module path (e.g.
  ``params["blocks"][0]["dw"]["kernel"]``, a (k, k, 1, C) depthwise kernel, HWIO).
* ``model/`` -- JSON (``JsonSave``): everything needed to rebuild the model and read the
  parameters without the trainer: model name, architecture overrides, number of classes,
  ``dw_init`` and the DoG parameters, image size, dataset, step.
* orbax's own ``_CHECKPOINT_METADATA``, and the eval metrics used to pick the best.

Checkpoints are written by all processes together (orbax coordinates); restoring takes
an abstract target whose leaves carry the *current* shardings, so a run resumes on a
different number of devices.
"""

from __future__ import annotations

import os
from typing import Any

import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers

BEST_METRIC = "eval_top1"


def absolute_dir(path: str) -> str:
    """Absolute form of a local path; URLs such as ``gs://bucket/run`` are returned unchanged."""
    return path if "://" in path else os.path.abspath(path)


class Checkpointer:
    """Thin wrapper around ``ocp.CheckpointManager`` with the trainer's policy."""

    def __init__(self, directory: str, *, keep: int, asynchronous: bool = True):
        policy = checkpoint_managers.AnyPreservationPolicy([
            checkpoint_managers.LatestN(n=keep),
            checkpoint_managers.BestN(get_metric_fn=lambda metrics: metrics[BEST_METRIC], reverse=False, n=1,
                                      keep_checkpoints_without_metrics=False),
        ])
        options = ocp.CheckpointManagerOptions(preservation_policy=policy, enable_async_checkpointing=asynchronous,
                                               create=True)
        self.directory = absolute_dir(directory)
        self._manager = ocp.CheckpointManager(self.directory, options=options, item_names=("state", "model"))

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def best_step(self) -> int | None:
        return self._manager.best_step()

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def save(self, step: int, state: Any, model_info: dict[str, Any], metrics: dict[str, float] | None = None) -> bool:
        """Starts an (asynchronous) save of ``state`` at ``step``; False if that step already exists."""
        if step in self._manager.all_steps():
            return False
        args = ocp.args.Composite(state=ocp.args.StandardSave(state), model=ocp.args.JsonSave(model_info))
        return self._manager.save(step, args=args, metrics=metrics, force=True)

    def restore(self, step: int, abstract_state: Any) -> Any:
        """Restores the state at ``step`` into the shardings/dtypes of ``abstract_state``."""
        args = ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state))
        return self._manager.restore(step, args=args)["state"]

    def restore_model_info(self, step: int) -> dict[str, Any]:
        return self._manager.restore(step, args=ocp.args.Composite(model=ocp.args.JsonRestore()))["model"]

    def wait(self) -> None:
        """Blocks until pending asynchronous saves are on disk."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.close()
