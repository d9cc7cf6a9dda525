"""Orbax checkpoints of the train state: async saves, keep the last K and the best.

Layout under ``<workdir>/checkpoints/<step>/``:

* ``state/`` -- the train state pytree (``StandardSave``):
  ``{"step", "params", "batch_stats", "opt_state"}`` (+ ``"ema"`` with a model EMA); the
  model's parameters are under
  ``params`` as a nested dict keyed by module path (e.g.
  ``params["blocks"][0]["dw"]["kernel"]``, a (k, k, 1, C) depthwise kernel, HWIO).
* ``history/`` -- JSON: the eval and train histories up to this step and the metrics of the
  steps not yet logged, so that a resumed run's best eval and histories equal those of an
  uninterrupted run.
* ``model/`` -- JSON (``JsonSave``): everything needed to rebuild the model and read the
  parameters without the trainer: model name, architecture overrides, number of classes,
  ``dw_init`` and the DoG parameters, image size, dataset, step.
* orbax's own ``_CHECKPOINT_METADATA``, and the eval metrics used to pick the best.

Checkpoints are written by all processes together (orbax coordinates); restoring takes
an abstract target whose leaves carry the *current* shardings, so a run resumes on a
different number of devices.

Reliability (see ``docs/reliability.md``): orbax writes each step into a temporary
directory and renames it when complete, so a process killed mid-write leaves no
half-written ``<step>/`` (the temporary directory is removed on the next start). A
committed checkpoint that cannot be read (truncated or deleted files) is moved to
``<workdir>/damaged_checkpoints/`` with a one-line warning and the previous one is
used; if checkpoints exist but none is readable the run stops instead of starting over.
"""

from __future__ import annotations

import json
import logging as python_logging
import time
import uuid
from typing import Any, Protocol

import jax
import orbax.checkpoint as ocp
from absl import logging
from orbax.checkpoint import checkpoint_managers

from dog_jax.checkpoints import CheckpointError  # the package's one checkpoint error (re-exported)
from dog_jax.orbax_items import quiet_absl
from dog_jax.storage import absolute, join, make_dirs, move, run_path
from dog_jax.train.config import comparable
from dog_jax.train.failure_report import BackgroundErrors, is_storage_error, short_reason

__all__ = ["BEST_METRIC", "EXIT_STORAGE_FAILURE", "CheckpointError", "Checkpointer", "StorageFailure", "WriterGuard",
           "array_shapes", "check_writable", "remove_unfinished_checkpoints"]

BEST_METRIC = "eval_top1"
# EX_IOERR from sysexits.h: a write to the run's storage failed or never finished; the last complete
# checkpoint is kept, and the same command resumes from it once the storage works.
EXIT_STORAGE_FAILURE = 74
RERUN_ADVICE = "Rerun the same command once the storage works"
# Checkpointer.wait polls the write in flight every 1 ms at first, doubling up to 0.2 s: a small
# checkpoint is usually done within milliseconds, and a flat 0.2 s would add up to 0.2 s of idle time
# to every wait (a short run waits at each evaluation, stop and exit: ~1 s of a 12 s test run).
_FIRST_POLL_S, _LAST_POLL_S = 0.001, 0.2


class StorageFailure(CheckpointError):
    """A write to the run's storage (a checkpoint, summary.json, ...) failed or never finished.

    ``str(error)`` is one line: ``what`` failed (which path, why, the last complete checkpoint) and
    ``advice``. ``background``: what orbax's background threads reported meanwhile (kept out of the
    console; ``train.py`` writes it to a log file). Background writes may still be retrying:
    ``train.py`` prints the line and ends the process at once (``EXIT_STORAGE_FAILURE``) instead of
    waiting for them."""

    def __init__(self, what: str, advice: str = RERUN_ADVICE, background: list[str] | None = None):
        super().__init__(f"{what}. {advice}." if advice else f"{what}.")
        self.what, self.advice, self.background = what, advice, list(background or [])


# model_info keys that decide parameter shapes; a checkpoint that differs cannot be resumed.
_ARCHITECTURE_KEYS = ("model", "model_overrides", "num_classes")


def check_writable(workdir: str) -> None:
    """Creates ``workdir`` and writes + deletes a probe file, so a read-only or full disk (or a
    bucket without write permission) fails at start-up instead of at the first checkpoint."""
    path = run_path(workdir)
    probe = path / f".write_probe_{uuid.uuid4().hex}"
    try:
        make_dirs(path)
        probe.write_text("ok")
        probe.unlink()
    except Exception as error:  # OSError locally; gcsfs / tf.io errors for buckets.
        reason = " ".join(str(error).split()) or type(error).__name__
        raise CheckpointError(f"workdir {workdir!r} is not writable ({reason}); pass a --workdir you can "
                              "write to, or fix its permissions / free disk space.") from None


def remove_unfinished_checkpoints(directory: str) -> None:
    """Deletes the temporary step folders a process killed mid-write left behind.

    orbax writes each save into a temporary folder (listed by ``ocp.step.tmp_checkpoints``) and
    renames it when complete. Removed here, synchronously and on process 0, before the manager opens:
    orbax's own ``CheckpointManagerOptions(cleanup_tmp_directories=True)`` does the same in a
    background thread, whose listing raced with directory creation in tests run under
    ``tfds.testing.mock_data`` (tested in tests/train/test_checkpoint.py).
    """
    root = run_path(directory)
    if jax.process_index() != 0 or not root.exists():
        return
    for name in ocp.step.tmp_checkpoints(root):
        logging.warning("Removing unfinished checkpoint %s (left by an interrupted save).", root / name)
        (root / name).rmtree()


class WriterGuard(Protocol):
    """What a :class:`Checkpointer` asks before it writes (the workdir lease, ``dog_jax.train.lease``)."""

    def check(self, last_complete: str) -> None:
        """Reads the storage once; raises a :class:`StorageFailure` if this run may no longer write
        (every process calls it at the same point)."""

    def raise_if_lost(self, last_complete: str) -> None:
        """No storage access: raises if a background check already found that this run may no longer write."""


class Checkpointer:
    """Thin wrapper around ``ocp.CheckpointManager`` with the trainer's policy.

    ``guard`` (set by the trainer to its workdir lease): checked before every write and, for free,
    after every step (:meth:`poll`). While open, what orbax's background threads report about a
    failing write is kept off the console (:class:`~dog_jax.train.failure_report.BackgroundErrors`)
    and handed to the :class:`StorageFailure` raised for it.
    """

    def __init__(self, directory: str, *, keep: int, asynchronous: bool = True, timeout_s: float = 900.0):
        policy = checkpoint_managers.AnyPreservationPolicy([
            checkpoint_managers.LatestN(n=keep),
            checkpoint_managers.BestN(get_metric_fn=lambda metrics: metrics[BEST_METRIC], reverse=False, n=1,
                                      keep_checkpoints_without_metrics=False),
        ])
        self._options = ocp.CheckpointManagerOptions(
            preservation_policy=policy, enable_async_checkpointing=asynchronous, create=True)
        self.directory = absolute(directory)
        self.timeout_s = timeout_s
        self._writing: int | None = None  # the step of the asynchronous write in flight
        self.stalled = False  # a write that failed, never finished or must not finish: close() must not wait for it
        self.guard: WriterGuard | None = None
        remove_unfinished_checkpoints(self.directory)
        self._manager = self._open()
        self._background = BackgroundErrors().install()

    def _open(self) -> ocp.CheckpointManager:
        # Handlers named up front: reading a checkpoint's array metadata needs them.
        handlers = {"state": ocp.StandardCheckpointHandler(), "model": ocp.JsonCheckpointHandler(),
                    "history": ocp.JsonCheckpointHandler()}
        return ocp.CheckpointManager(self.directory, options=self._options, item_handlers=handlers)

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def best_step(self) -> int | None:
        return self._manager.best_step()

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def save(self, step: int, state: Any, model_info: dict[str, Any], metrics: dict[str, float] | None = None,
             history: dict[str, Any] | None = None) -> bool:
        """Starts an (asynchronous) save of ``state`` at ``step``; False if that step already exists.

        ``history``: the run's eval/train histories (``Reporter.history_snapshot``), committed
        together with the state so that a resume continues them from exactly this step.
        """
        self.check_writer()
        self.wait()  # the previous write, within the time limit (orbax would wait for it without one)
        if step in self._manager.all_steps():
            return False
        items = {"state": ocp.args.StandardSave(state), "model": ocp.args.JsonSave(model_info)}
        if history is not None:
            items["history"] = ocp.args.JsonSave(history)
        self._writing = step
        try:
            return self._manager.save(step, args=ocp.args.Composite(**items), metrics=metrics, force=True)
        except Exception as error:
            if not is_storage_error(error):
                raise
            self.stalled = True  # the part of the write already started in the background is abandoned
            raise StorageFailure(f"writing checkpoint {step} to {self.directory} failed: {short_reason(error)}; "
                                 f"{self.last_complete()}", background=self._background.take()) from error

    def add_metrics(self, step: int, metrics: dict[str, float]) -> None:
        """Attaches eval ``metrics`` to the committed checkpoint ``step`` (saved without them by a
        stop during its evaluation), so that keeping the best checkpoint sees them.

        Written where orbax keeps a save's metrics (``<step>/metrics/metrics``, JSON), through a
        temporary file and a rename: a kill leaves either no metrics or all of them.
        """
        self.check_writer()
        self.wait()
        if jax.process_index() == 0:
            item = run_path(self.directory) / str(step) / "metrics"
            make_dirs(item)
            temporary = item / f".metrics-{uuid.uuid4().hex}"
            temporary.write_text(json.dumps({key: float(value) for key, value in metrics.items()}))
            temporary.rename(item / "metrics")
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils
            multihost_utils.sync_global_devices(f"dog_jax_add_metrics_{step}")
        self._manager.reload()

    def restore_history(self, step: int) -> dict[str, Any] | None:
        """The history saved with checkpoint ``step``; None if it has none (older checkpoints)."""
        if not (run_path(self.directory) / str(step) / "history").exists():
            return None
        return self._manager.restore(step, args=ocp.args.Composite(history=ocp.args.JsonRestore()))["history"]

    def restore(self, step: int, abstract_state: Any) -> Any:
        """Restores the state at ``step`` into the shardings/dtypes of ``abstract_state``."""
        args = ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state))
        return self._manager.restore(step, args=args)["state"]

    def restore_latest(self, abstract_state: Any, model_info: dict[str, Any]) -> tuple[int, Any] | None:
        """(step, state) of the newest readable checkpoint; None if there is none at all.

        Unreadable checkpoints are moved aside with a one-line warning each, newest first.

        Raises:
          CheckpointError: the newest readable checkpoint is of another architecture
            (``model_info`` differs in model / overrides / classes), holds other arrays than
            ``abstract_state`` (optimizer or EMA settings changed), or checkpoints exist but
            none of them can be read.
        """
        tried = []
        wanted_shapes = array_shapes(abstract_state)
        for step in sorted(self.all_steps(), reverse=True):
            try:
                stored = self.restore_model_info(step)
                saved_shapes = self.saved_array_shapes(step)
            except Exception as error:  # noqa: BLE001 -- any read failure means "damaged".
                self._set_aside(step, error)
                tried.append(step)
                continue
            _check_same_architecture(stored, model_info, step, self.directory)
            # Checked before restoring: a layout mismatch must not be mistaken for damage.
            _check_same_state_layout(saved_shapes, wanted_shapes, step, self.directory)
            try:
                return step, self.restore(step, abstract_state)
            except Exception as error:  # noqa: BLE001
                self._set_aside(step, error)
                tried.append(step)
        if tried:
            raise CheckpointError(
                f"none of the checkpoints in {self.directory} (steps {', '.join(map(str, tried))}) is readable "
                f"(moved to {self._damaged_dir()}); delete that workdir's checkpoints/ to start over from step 0.")
        return None

    def _damaged_dir(self) -> str:
        return join(str(run_path(self.directory).parent), "damaged_checkpoints")

    def _set_aside(self, step: int, error: BaseException) -> None:
        """Moves the damaged ``<step>/`` out of the checkpoint directory (kept for inspection;
        left in place, its step would be skipped by later saves) and reopens the manager."""
        reason = " ".join(str(error).split())[:200] or type(error).__name__
        target = join(self._damaged_dir(), f"{step}-{uuid.uuid4().hex[:8]}")
        logging.warning("Checkpoint at step %d in %s is damaged (%s: %s); moved it to %s and trying the "
                        "previous one.", step, self.directory, type(error).__name__, reason, target)
        if jax.process_index() == 0:
            make_dirs(self._damaged_dir())
            move(join(self.directory, str(step)), target)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils
            multihost_utils.sync_global_devices(f"dog_jax_set_aside_{step}")
        self._manager.close()
        self._manager = self._open()

    def restore_model_info(self, step: int) -> dict[str, Any]:
        return self._manager.restore(step, args=ocp.args.Composite(model=ocp.args.JsonRestore()))["model"]

    def saved_array_shapes(self, step: int) -> dict[str, tuple[int, ...]]:
        """``{dotted path: shape}`` of every array of the state saved at ``step`` (from metadata)."""
        metadata = self._manager.item_metadata(step)["state"]
        return {leaf.name: tuple(leaf.shape) for leaf in jax.tree.leaves(metadata.tree)}

    def check_writer(self) -> None:
        """Asks the guard (one storage read) whether this run may still write; a write in flight
        is then abandoned, not waited for (raises what the guard raises)."""
        self._settle_finished_write()
        if self.guard is not None:
            try:
                self.guard.check(self.last_complete())
            except BaseException:
                self.stalled = True
                raise

    def poll(self) -> None:
        """After every training step, without touching the storage: raises :class:`StorageFailure`
        if the guard's heartbeat found the lease lost, or (one process) if the write in flight
        already failed -- instead of training on until the next checkpoint finds out."""
        if self.guard is not None:
            try:
                self.guard.raise_if_lost(self.last_complete())
            except BaseException:
                self.stalled = True
                raise
        self._settle_finished_write()

    def _settle_finished_write(self) -> None:
        """Takes in the outcome of a write that has finished in the background (one process), so
        that a failure found next names it as complete, not "no checkpoint is complete yet"; raises
        :class:`StorageFailure` if that write failed. With several processes each would find out at
        its own step, so they leave it to the next save(), where they agree."""
        if jax.process_count() == 1 and self._writing is not None and not self._manager.is_saving_in_progress():
            self.wait()

    def wait(self) -> None:
        """Blocks until the asynchronous save in flight is written, at most ``timeout_s``.

        Raises:
          StorageFailure: the write failed, or is still unfinished after ``timeout_s`` (storage
            unreachable: tensorstore, gcsfs and TensorFlow retry for minutes) -- one line naming the
            last complete checkpoint.
        """
        start, pause = time.monotonic(), _FIRST_POLL_S
        while self._manager.is_saving_in_progress():
            if time.monotonic() - start > self.timeout_s:
                self.stalled = True
                raise StorageFailure(
                    f"a checkpoint write to {self.directory} has not finished after {self.timeout_s:.0f} s (is the "
                    f"storage reachable?); {self.last_complete()}",
                    f"{RERUN_ADVICE} (config.checkpoint_timeout_s sets this limit)", self._background.take())
            time.sleep(pause)
            pause = min(2 * pause, _LAST_POLL_S)
        try:
            with quiet_absl(python_logging.CRITICAL):  # orbax logs the failure with a traceback, then re-raises it
                self._manager.wait_until_finished()
        except Exception as error:  # noqa: BLE001 -- tensorstore, gcsfs and OS errors alike
            self.stalled = True
            step = f"checkpoint {self._writing}" if self._writing is not None else "a checkpoint"
            raise StorageFailure(f"writing {step} to {self.directory} failed: {short_reason(error)}; "
                                 f"{self.last_complete()}", background=self._background.take()) from error
        self._writing = None
        reports = self._background.take()
        if reports:  # errors reported by orbax's threads for a write that still completed
            logging.warning("orbax's background threads reported %d error(s) during a checkpoint write that "
                            "completed; the first: %s", len(reports), reports[0].splitlines()[0][:300])

    def last_complete(self) -> str:
        """'the last complete checkpoint is step N' (from the manager's memory: no storage access)."""
        steps = [step for step in self._manager.all_steps() if step != self._writing]
        return f"the last complete checkpoint is step {max(steps)}" if steps else "no checkpoint is complete yet"

    def close(self) -> None:
        """Closes the manager; after a write that failed or never finished, leaves it (and its
        threads, whose reports stay off the console) alone: closing would wait for that write."""
        if not self.stalled:
            self._manager.close()
            self._background.uninstall()


def array_shapes(tree: Any) -> dict[str, tuple[int, ...]]:
    """``{dotted path: shape}`` of every array of ``tree``, named as orbax names saved arrays
    (``"opt_state.0.mu.blocks.0.dw.kernel"``)."""

    def name(key) -> str:
        return str(getattr(key, "key", getattr(key, "idx", getattr(key, "name", key))))

    return {".".join(name(key) for key in path): tuple(leaf.shape)
            for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _check_same_state_layout(saved: dict[str, tuple[int, ...]], wanted: dict[str, tuple[int, ...]], step: int,
                             directory: str) -> None:
    if saved == wanted:
        return
    missing = sorted(set(wanted) - set(saved))
    extra = sorted(set(saved) - set(wanted))
    reshaped = sorted(key for key in set(saved) & set(wanted) if saved[key] != wanted[key])
    problems = []
    if missing:
        problems.append(f"{len(missing)} array(s) the config needs are missing (e.g. {missing[0]})")
    if extra:
        problems.append(f"{len(extra)} array(s) are not in the config's state (e.g. {extra[0]})")
    if reshaped:
        problems.append(f"{len(reshaped)} differ in shape (e.g. {reshaped[0]}: {saved[reshaped[0]]} saved, "
                        f"{wanted[reshaped[0]]} wanted)")
    raise CheckpointError(
        f"workdir checkpoint {directory}/{step} holds another train state than the config builds: "
        f"{'; '.join(problems)}. Optimizer or EMA settings changed since it was written (e.g. "
        "optimizer.grad_clip_norm or ema_decay switched on/off); use the config that wrote it, or a new --workdir.")


def _check_same_architecture(stored: dict[str, Any], current: dict[str, Any], step: int, directory: str) -> None:
    # The stored info went through JSON (lists for tuples): compare normalised values.
    differs = [key for key in _ARCHITECTURE_KEYS if comparable(stored.get(key)) != comparable(current.get(key))]
    if differs:
        saved = ", ".join(f"{key}={comparable(stored.get(key))!r}" for key in differs)
        wanted = ", ".join(f"{key}={comparable(current.get(key))!r}" for key in differs)
        raise CheckpointError(
            f"workdir checkpoint {directory}/{step} is of another model ({saved}) than the config ({wanted}); "
            "use a new --workdir, or the config that wrote it.")
