"""Training progress: console lines, TensorBoard event files, and the final summary.json.

Only process 0 writes files; every process keeps the same timers. A console line looks like::

    step   200/1000 (20.0%) | loss 1.8342 acc 0.412 | lr 1.2e-03 gnorm 0.93 | 0.118 s/step 1085 img/s | ETA 1m34s
"""

from __future__ import annotations

import contextlib
import json
import time
from typing import Any, Iterator

import jax
import numpy as np
import tensorflow as tf
from absl import logging
from tensorflow.core.framework import summary_pb2

from dog_jax.storage import join, write_text

# clu's metric writers were weighed and not taken: clu is unmaintained; tf.summary's event files suffice.
# Tags the raw summaries as TensorBoard scalars (what tf.summary.scalar would add).
_SCALAR_METADATA = summary_pb2.SummaryMetadata(
    plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"))


def format_duration(seconds: float) -> str:
    """'1h02m', '3m07s' or '42s'."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


class NonFiniteError(FloatingPointError):
    """Training produced a NaN/inf loss or gradient (policy "stop"); the message names the step."""


def best_eval(history: list[dict[str, Any]]) -> dict[str, Any]:
    """The eval entry with the highest ``eval_top1`` (the later one on a tie); {} if none."""
    best: dict[str, Any] = {}
    for entry in history:
        if entry["eval_top1"] >= best.get("eval_top1", -1.0):
            best = entry
    return dict(best)


class Reporter:
    """Aggregates step metrics between log points and writes them out.

    Non-finite steps are found from the per-step ``nonfinite`` metric when metrics are
    fetched anyway (log lines, and before checkpoints), never with an extra per-step sync.

    Args:
      workdir: run directory; TensorBoard files go to ``<workdir>/tensorboard``.
      total_steps: length of training, for the percentage and ETA.
      global_batch_size: examples per step over all processes, for images/s.
      nonfinite_policy: "stop" raises :class:`NonFiniteError` naming the first bad step and
        metric; "skip" (the step already left the state unchanged) counts it.
    """

    def __init__(self, workdir: str, *, total_steps: int, global_batch_size: int, nonfinite_policy: str = "stop"):
        self.total_steps = total_steps
        self.global_batch_size = global_batch_size
        self.nonfinite_policy = nonfinite_policy
        self.skipped_steps = 0
        # CPU seconds that earlier starts of this run spent up to the checkpoint it resumed from (0 for a
        # fresh run; None when that checkpoint predates the record): see cpu_time_total.
        self.cpu_time_before_s: float | None = 0.0
        self.is_writer = jax.process_index() == 0
        self._writer = tf.summary.create_file_writer(join(workdir, "tensorboard")) if self.is_writer else None
        self._pending: list[tuple[int, dict[str, jax.Array]]] = []
        self._mark_time: float | None = None
        self._mark_step: int | None = None
        self.history: list[dict[str, Any]] = []
        self.train_history: list[dict[str, Any]] = []

    def start(self, step: int) -> None:
        """Starts the clock (call after the first, compiling step has finished).

        Metrics already added are kept; only the timing excludes the steps before ``step``.
        """
        self._mark_time, self._mark_step = time.perf_counter(), step

    def add(self, step: int, metrics: dict[str, jax.Array]) -> None:
        """Records the device metrics of ``step`` (the step count after it) without synchronising."""
        self._pending.append((step, metrics))

    def check_finite(self) -> None:
        """Raises :class:`NonFiniteError` if a pending step was non-finite (policy "stop").

        Fetches only the pending ``nonfinite`` flags; called before a checkpoint so that a
        NaN state is never saved.
        """
        if self.nonfinite_policy == "stop" and self._pending:
            flags = jax.device_get([m["nonfinite"] for _, m in self._pending])
            if any(flags):
                self._raise_nonfinite(jax.device_get(self._pending))

    def _raise_nonfinite(self, fetched: list[tuple[int, dict[str, Any]]]) -> None:
        step, metrics = next((s, m) for s, m in fetched if m["nonfinite"])
        key = "loss" if not np.isfinite(metrics["loss"]) else "grad_norm"
        raise NonFiniteError(
            f"non-finite training {key} ({float(metrics[key])}) at step {step}; nothing after step {step - 1} was "
            "checkpointed. Lower config.optimizer.learning_rate, set config.optimizer.grad_clip_norm, or set "
            "config.nonfinite_policy='skip' to skip such updates.")

    def flush_train(self, step: int) -> dict[str, float]:
        """Averages the pending metrics (one host sync), logs a console line and scalars.

        Steps skipped as non-finite are counted (``skipped``) and left out of the means.
        """
        if not self._pending:
            return {}
        fetched = jax.device_get(self._pending)
        self._pending.clear()
        bad = [m for _, m in fetched if m["nonfinite"]]
        if bad and self.nonfinite_policy == "stop":
            self._raise_nonfinite(fetched)
        good = [m for _, m in fetched if not m["nonfinite"]] or [fetched[-1][1]]
        means = {key: float(np.mean([m[key] for m in good])) for key in good[0] if key != "nonfinite"}
        means["learning_rate"] = float(fetched[-1][1]["learning_rate"])
        self.skipped_steps += len(bad)
        means["skipped"] = float(len(bad))
        skipped_note = ""
        if bad:
            skipped_note = f" | skipped {len(bad)} non-finite (total {self.skipped_steps})"
            logging.warning("Skipped %d non-finite update(s) among steps %d-%d (total %d).", len(bad),
                            fetched[0][0], step, self.skipped_steps)
        now = time.perf_counter()
        steps = step - (self._mark_step if self._mark_step is not None else step)
        step_time = (now - self._mark_time) / steps if steps > 0 and self._mark_time else float("nan")
        self._mark_time, self._mark_step = now, step
        speed, eta = "- s/step", "?"
        if np.isfinite(step_time) and step_time > 0:  # no timing yet right after the compiling step.
            means["step_time_s"] = step_time
            means["images_per_s"] = self.global_batch_size / step_time
            speed = f"{step_time:.3f} s/step {means['images_per_s']:.0f} img/s"
            eta = format_duration((self.total_steps - step) * step_time)
        logging.info("step %*d/%d (%5.1f%%) | loss %.4f acc %.3f | lr %.2e gnorm %.3g | %s | ETA %s%s",
                     len(str(self.total_steps)), step, self.total_steps, 100.0 * step / self.total_steps,
                     means["loss"], means["accuracy"], means["learning_rate"], means["grad_norm"], speed, eta,
                     skipped_note)
        self.write_scalars(step, {f"train/{key}": value for key, value in means.items()})
        self.train_history.append({"step": step, **means})
        return means

    def log_eval(self, step: int, metrics: dict[str, float]) -> None:
        ema = (f" | EMA top1 {metrics['eval_ema_top1']:.4f} top5 {metrics['eval_ema_top5']:.4f} "
               f"loss {metrics['eval_ema_loss']:.4f}") if "eval_ema_top1" in metrics else ""
        logging.info("eval  step %d | top1 %.4f top5 %.4f loss %.4f%s (%d examples, %.1f s)", step,
                     metrics["eval_top1"], metrics["eval_top5"], metrics["eval_loss"], ema, metrics["eval_examples"],
                     metrics["eval_time_s"])
        self.write_scalars(step, {f"eval/{key[5:]}": value for key, value in metrics.items()})
        self.history.append({"step": step, **metrics})

    def history_snapshot(self) -> dict[str, Any]:
        """The histories so far, and the per-step metrics not yet averaged into a log line,
        as JSON-able data: saved inside every checkpoint so that a resumed run continues
        them exactly (same best eval, same histories, same logging windows)."""
        pending = [{"step": step, **{key: float(value) for key, value in metrics.items()}}
                   for step, metrics in jax.device_get(self._pending)]
        return {"eval_history": self.history, "train_history": self.train_history, "pending": pending,
                "skipped_steps": self.skipped_steps, "cpu_time_s": self.cpu_time_total(time.process_time())}

    def cpu_time_total(self, process_cpu_s: float) -> float | None:
        """CPU seconds of the whole run so far: this process's ``process_cpu_s`` (``time.process_time()``:
        all threads, start-up included) plus what earlier starts spent up to the checkpoint this one
        resumed from (their work after it, redone here, is not counted twice); None if that is unknown."""
        return None if self.cpu_time_before_s is None else self.cpu_time_before_s + process_cpu_s

    def load_history(self, snapshot: dict[str, Any]) -> None:
        """Continues from a :meth:`history_snapshot` (taken at the step being resumed)."""
        self.history = list(snapshot["eval_history"])
        self.train_history = list(snapshot["train_history"])
        self.skipped_steps = int(snapshot["skipped_steps"])
        self.cpu_time_before_s = snapshot.get("cpu_time_s")  # absent from checkpoints written before 2026-12-07
        # float32 again, so the next log line averages exactly what it would have without the break.
        self._pending = [(entry["step"], {key: np.float32(value) for key, value in entry.items() if key != "step"})
                         for entry in snapshot["pending"]]

    def write_scalars(self, step: int, scalars: dict[str, float]) -> None:
        """Writes TensorBoard scalars (the ``scalars`` plugin's format, via core TF ops only,
        so the ``tensorboard`` package is needed only to *view* the logs)."""
        if self._writer is None:
            return
        with _as_os_error():
            with self._writer.as_default(step=step):
                for key, value in scalars.items():
                    tf.summary.write(key, tf.constant(value, tf.float32), metadata=_SCALAR_METADATA)
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            with _as_os_error():
                self._writer.close()


@contextlib.contextmanager
def _as_os_error() -> Iterator[None]:
    """TensorFlow's errors writing event files (a full disk: ``ResourceExhaustedError``) as the
    ``OSError`` that the trainer reports as a storage failure (one line, exit 74)."""
    try:
        yield
    except tf.errors.OpError as error:
        raise OSError(f"writing TensorBoard events failed: {error.message}") from error


def write_json(path: str, payload: dict[str, Any]) -> None:
    """Writes ``payload`` as indented JSON atomically, locally or on a bucket (process 0 only)."""
    if jax.process_index() == 0:
        write_text(path, json.dumps(payload, indent=2, sort_keys=True, default=str))
