"""A trained model out of a training workdir: :func:`restore_model` and the pieces export and
evaluation share.

A workdir written by ``train.py`` holds ``config.json`` (the resolved config) and
``checkpoints/<step>/`` with ``state/`` (the train state, orbax) and ``model/metadata`` (JSON:
model name, architecture overrides including ``dw_param``, number of classes; see
``dog_jax.train.checkpoint``). The model is rebuilt from that JSON and the config, abstractly
(``nnx.eval_shape``: no random init), and filled with the saved parameters and BatchNorm
statistics -- or their EMA. Checkpoints are read by the package's one checkpoint reader
(:mod:`dog_jax.checkpoints`); every failure is a one-line :class:`CheckpointError`.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import jax
import ml_collections
import numpy as np
from etils import epath
from flax import nnx

from dog_jax.checkpoints import CheckpointError, flatten_names
from dog_jax.orbax_items import latest_step_dir, restore_pytree
from dog_jax.storage import run_path
from dog_jax.train.run_provenance import split_config_json
from dog_jax.train.run_spec import ModelSpec, model_spec

__all__ = ["RunCheckpoint", "find_checkpoint", "read_weights", "restore_model"]


@dataclasses.dataclass(frozen=True)
class RunCheckpoint:
    """One checkpoint of a training workdir.

    Attributes:
      workdir: the run directory.
      step: the training step of the checkpoint.
      step_dir: ``<workdir>/checkpoints/<step>``.
      config: the run's config (``config.json``), with model / overrides / dw_param taken from
        the checkpoint's own model JSON (what its parameters were built with).
      info: the checkpoint's model JSON (``model``, ``model_overrides``, ``num_classes``, ...).
      model: the model ``config`` builds, resolved (``run_spec.model_spec``).
      provenance: which code trained the run (``config.json``'s ``provenance`` and, for a run
        resumed by other code, ``provenance_earlier``; ``dog_jax.train.run_provenance``); {} for
        workdirs written before runs recorded it.
    """

    workdir: epath.Path
    step: int
    step_dir: epath.Path
    config: ml_collections.ConfigDict
    info: dict[str, Any]
    model: ModelSpec
    provenance: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return int(self.info["num_classes"])

    @property
    def has_ema(self) -> bool:
        return "ema_params_key" in self.info


def find_checkpoint(workdir: str | epath.Path, step: int | None = None) -> RunCheckpoint:
    """The checkpoint ``step`` (default: the latest finished one) of a ``train.py`` workdir.

    Raises:
      CheckpointError: not a workdir, no checkpoints, no such step, or no config.json.
    """
    workdir = run_path(workdir)  # local or gs://
    root = workdir / "checkpoints"
    if not workdir.is_dir():
        raise CheckpointError(f"{workdir}: no such directory; pass a train.py --workdir.")
    if not root.is_dir():
        raise CheckpointError(f"{workdir}: no checkpoints/ directory; pass a train.py --workdir that has "
                              "written a checkpoint.")
    if step is None:
        step_dir = latest_step_dir(root)
        if step_dir is None:
            raise CheckpointError(f"{root}: no finished checkpoint yet.")
    else:
        step_dir = root / str(step)
        if not (step_dir / "state").is_dir():
            saved = sorted(int(p.name) for p in root.iterdir() if p.name.isdigit())
            raise CheckpointError(f"{workdir}: no checkpoint at step {step}; saved steps: "
                                  f"{', '.join(map(str, saved)) or 'none'}.")
    info_file, config_file = step_dir / "model" / "metadata", workdir / "config.json"
    for needed in (info_file, config_file):
        if not needed.is_file():
            raise CheckpointError(f"{needed}: missing; a train.py workdir has it (written by an older "
                                  "version?).")
    info = json.loads(info_file.read_text())
    fields, provenance = split_config_json(json.loads(config_file.read_text()))
    config = ml_collections.ConfigDict(fields)
    # The checkpoint's own record of the architecture wins over config.json (rewritten at every start).
    overrides = dict(info.get("model_overrides", {}))
    config.dw_param = overrides.pop("dw_param", "free")
    config.model = info["model"]
    config.model_overrides = ml_collections.ConfigDict(overrides)
    return RunCheckpoint(workdir=workdir, step=int(info.get("step", step_dir.name)), step_dir=step_dir,
                         config=config, info=info, model=model_spec(config), provenance=provenance)


def read_weights(checkpoint: RunCheckpoint, *, ema: bool = False) -> dict[str, Any]:
    """``{"params", "batch_stats"}`` (nested dicts of host numpy arrays) of a checkpoint.

    Args:
      checkpoint: from :func:`find_checkpoint`.
      ema: the model EMA's weights instead of the trained ones.

    Raises:
      CheckpointError: ``ema`` for a run without EMA, or an unreadable checkpoint.
    """
    if ema and not checkpoint.has_ema:
        raise CheckpointError(f"{checkpoint.workdir}: the run has no EMA weights (config.ema_decay was 0); "
                              "drop --ema / ema=True.")
    # Only the weights wanted: the optimizer state (twice the parameters) stays on disk.
    state = restore_pytree(checkpoint.step_dir / "state", keys=("ema",) if ema else ("params", "batch_stats"))
    weights = state["ema"] if ema else state
    return {"params": weights["params"], "batch_stats": weights.get("batch_stats") or {}}


def fill_model(model: nnx.Module, weights: dict[str, Any], source: str) -> None:
    """Sets every parameter / BatchNorm statistic of the abstract ``model`` from ``weights``.

    Raises:
      CheckpointError: a name is missing or extra, or a shape differs (one line naming it).
    """
    state = nnx.state(model, nnx.Any(nnx.Param, nnx.BatchStat))
    wanted = {"/".join(str(part) for part in path): variable for path, variable in nnx.to_flat_state(state)}
    given = {name: value for group in ("params", "batch_stats") for name, value in flatten_names(weights[group])}
    missing, extra = sorted(set(wanted) - set(given)), sorted(set(given) - set(wanted))
    if missing or extra:
        what = f"missing {missing[0]}" if missing else f"unexpected {extra[0]}"
        raise CheckpointError(f"{source}: its parameters do not fit the model its config builds ({what}; "
                              f"{len(missing)} missing, {len(extra)} unexpected).")
    for key, variable in wanted.items():
        value = np.asarray(given[key])
        if value.shape != tuple(variable.shape):
            raise CheckpointError(f"{source}: {key} has shape {value.shape}, the model needs "
                                  f"{tuple(variable.shape)}.")
        variable.set_value(jax.numpy.asarray(value, dtype=variable.get_value().dtype))
    nnx.update(model, state)


def restore_model(workdir: str | epath.Path, *, step: int | None = None,
                  ema: bool = False) -> tuple[nnx.Module, ml_collections.ConfigDict]:
    """Rebuilds a ``train.py`` run's model with its trained (or EMA) weights.

    Works for every model family and for ``dw_param="basis"`` runs (the model keeps its basis
    parameters; its ``layer.kernel`` is the materialised kernel).

    Args:
      workdir: the run's ``--workdir`` (a local directory or a ``gs://`` URL).
      step: checkpoint step; default the latest finished one.
      ema: load the model EMA's weights (runs with ``config.ema_decay > 0``).

    Returns:
      ``(model, config)``: the NNX model in eval mode (BatchNorm running statistics, no drop
      path; compute dtype from ``config.precision``, parameters float32) and the run's config
      (``config.json`` with the checkpoint's architecture).

    Raises:
      CheckpointError: no such workdir / step, no EMA in the run, unreadable or mismatched
        checkpoint (one line each).
    """
    checkpoint = find_checkpoint(workdir, step)
    model = checkpoint.model.abstract(checkpoint.num_classes, inference=True)
    fill_model(model, read_weights(checkpoint, ema=ema), str(checkpoint.step_dir))
    model.eval()
    return model, checkpoint.config
