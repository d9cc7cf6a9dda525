"""Training progress: console lines, TensorBoard event files, and the final summary.json.

Only process 0 writes files; every process keeps the same timers. A console line looks like::

    step   200/1000 (20.0%) | loss 1.8342 acc 0.412 | lr 1.2e-03 gnorm 0.93 | 0.118 s/step 1085 img/s | ETA 1m34s
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import jax
import numpy as np
import tensorflow as tf
from absl import logging
from tensorflow.core.framework import summary_pb2

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


class Reporter:
    """Aggregates step metrics between log points and writes them out.

    Args:
      workdir: run directory; TensorBoard files go to ``<workdir>/tensorboard``.
      total_steps: length of training, for the percentage and ETA.
      global_batch_size: examples per step over all processes, for images/s.
    """

    def __init__(self, workdir: str, *, total_steps: int, global_batch_size: int):
        self.total_steps = total_steps
        self.global_batch_size = global_batch_size
        self.is_writer = jax.process_index() == 0
        self._writer = tf.summary.create_file_writer(os.path.join(workdir, "tensorboard")) if self.is_writer else None
        self._pending: list[dict[str, jax.Array]] = []
        self._mark_time: float | None = None
        self._mark_step: int | None = None
        self.history: list[dict[str, Any]] = []
        self.train_history: list[dict[str, Any]] = []

    def start(self, step: int) -> None:
        """Starts the clock (call after the first, compiling step has finished).

        Metrics already added are kept; only the timing excludes the steps before ``step``.
        """
        self._mark_time, self._mark_step = time.perf_counter(), step

    def add(self, metrics: dict[str, jax.Array]) -> None:
        """Records one step's device metrics without synchronising."""
        self._pending.append(metrics)

    def flush_train(self, step: int) -> dict[str, float]:
        """Averages the pending metrics (one host sync), logs a console line and scalars."""
        if not self._pending:
            return {}
        stacked = jax.device_get(self._pending)
        means = {key: float(np.mean([m[key] for m in stacked])) for key in stacked[0]}
        means["learning_rate"] = float(stacked[-1]["learning_rate"])
        self._pending.clear()
        for key, value in means.items():
            if not np.isfinite(value):
                raise FloatingPointError(f"Non-finite training {key} ({value}) at step {step}; lower "
                                         "config.optimizer.learning_rate or enable grad clipping.")
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
        logging.info("step %*d/%d (%5.1f%%) | loss %.4f acc %.3f | lr %.2e gnorm %.3g | %s | ETA %s",
                     len(str(self.total_steps)), step, self.total_steps, 100.0 * step / self.total_steps,
                     means["loss"], means["accuracy"], means["learning_rate"], means["grad_norm"], speed, eta)
        self.write_scalars(step, {f"train/{key}": value for key, value in means.items()})
        self.train_history.append({"step": step, **means})
        return means

    def log_eval(self, step: int, metrics: dict[str, float]) -> None:
        logging.info("eval  step %d | top1 %.4f top5 %.4f loss %.4f (%d examples, %.1f s)", step,
                     metrics["eval_top1"], metrics["eval_top5"], metrics["eval_loss"], metrics["eval_examples"],
                     metrics["eval_time_s"])
        self.write_scalars(step, {f"eval/{key[5:]}": value for key, value in metrics.items()})
        self.history.append({"step": step, **metrics})

    def write_scalars(self, step: int, scalars: dict[str, float]) -> None:
        """Writes TensorBoard scalars (the ``scalars`` plugin's format, via core TF ops only,
        so the ``tensorboard`` package is needed only to *view* the logs)."""
        if self._writer is None:
            return
        with self._writer.as_default(step=step):
            for key, value in scalars.items():
                tf.summary.write(key, tf.constant(value, tf.float32), metadata=_SCALAR_METADATA)
        self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def write_json(path: str, payload: dict[str, Any]) -> None:
    """Writes ``payload`` as indented JSON atomically (process 0 only)."""
    if jax.process_index() != 0:
        return
    tmp = path + ".tmp"
    with tf.io.gfile.GFile(tmp, "w") as f:
        f.write(json.dumps(payload, indent=2, sort_keys=True, default=str))
    tf.io.gfile.rename(tmp, path, overwrite=True)
