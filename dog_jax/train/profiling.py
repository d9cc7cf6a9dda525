"""A profiler window: a ``jax.profiler`` trace of training steps FIRST..LAST, saved in the workdir.

``config.profile_steps = "FIRST:LAST"`` traces the training steps FIRST to LAST, numbered as in
the logs (step N is the N-th update; "" = off). The trace starts before step FIRST fetches its
batch, once the previous step has finished on the device, and stops when step LAST has finished
on the device, so the window holds whole steps: their host-side input wait, dispatch and device
work, each step marked with a ``StepTraceAnnotation`` (TensorBoard's step-time breakdown reads
those). An evaluation or checkpoint that falls inside the window is in the trace too. A run that
ends or is preempted inside the window stops the trace there and saves what it has; a run resumed
inside the window traces the rest of it (a second session folder).

Files: ``<workdir>/profile/plugins/profile/train_steps_<first>-<last>/<host>.xplane.pb`` (the
layout TensorBoard's profile plugin and xprof read: ``tensorboard --logdir <workdir>/profile``,
docs/tpu.md). Only process 0 traces unless ``config.profile_all_processes``; then every process
writes its own ``process<k>.<host>.xplane.pb`` into the same session folder.

The trace is written to a local temporary directory and copied into the workdir through
:mod:`dog_jax.storage`, so ``gs://`` workdirs work the same way as local ones (jaxlib's own GCS
client would write to a bucket directly, but past the storage set-up the project tests against).
"""

from __future__ import annotations

import contextlib
import re
import shutil
import tempfile

import jax
import ml_collections
from absl import logging

from dog_jax import storage

PROFILE_DIR = "profile"


def parse_profile_steps(text: str) -> tuple[int, int] | None:
    """``""`` -> None; ``"FIRST:LAST"`` -> (FIRST, LAST) with 1 <= FIRST <= LAST.

    Raises:
      ValueError: one line naming the expected form.
    """
    if not text:
        return None
    match = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*", text)
    if not match or not 1 <= int(match.group(1)) <= int(match.group(2)):
        raise ValueError(f"profile_steps={text!r} must be 'FIRST:LAST' with 1 <= FIRST <= LAST (training steps "
                         "as numbered in the logs, e.g. '100:105'), or '' for no profile.")
    return int(match.group(1)), int(match.group(2))


class ProfileWindow:
    """Starts and stops the trace around the training loop's steps (see the module docstring).

    The loop calls :meth:`before_step` with the number of the step about to run, runs that step
    inside :meth:`annotate`, calls :meth:`after_step` with its outputs, and :meth:`close` when it
    leaves (normally, on a stop, or on an error).
    """

    def __init__(self, steps: tuple[int, int] | None, workdir: str, *, all_processes: bool = False):
        traced = all_processes or jax.process_index() == 0
        self._steps = steps if traced else None
        self._workdir = workdir
        self._all_processes = all_processes
        self._scratch: str | None = None
        self._first_traced = self._last_done = 0

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict, workdir: str) -> ProfileWindow:
        return cls(parse_profile_steps(config.get("profile_steps", "")), workdir,
                   all_processes=bool(config.get("profile_all_processes", False)))

    @property
    def tracing(self) -> bool:
        return self._scratch is not None

    def before_step(self, step: int, previous_outputs=None) -> None:
        """Starts the trace if step ``step`` (1-based) opens the window, after ``previous_outputs``
        (the previous step's results) are ready on the device."""
        if self._steps is None or self.tracing or not self._steps[0] <= step <= self._steps[1]:
            return
        if previous_outputs is not None:
            jax.block_until_ready(previous_outputs)
        self._scratch = tempfile.mkdtemp(prefix="dog_jax_profile_")  # local: jax writes here; copied at the end
        jax.profiler.start_trace(self._scratch)
        self._first_traced = step
        logging.info("Profiling training steps %d-%d into %s", step, self._steps[1],
                     storage.join(self._workdir, PROFILE_DIR))

    def annotate(self, step: int):
        """Context of step ``step``: a step marker in the trace while tracing, else nothing."""
        if not self.tracing:
            return contextlib.nullcontext()
        return jax.profiler.StepTraceAnnotation("train", step_num=step)

    def after_step(self, step: int, outputs) -> None:
        """Records step ``step`` done; at the window's last step waits for ``outputs`` on the device
        and saves the trace."""
        if not self.tracing:
            return
        self._last_done = step
        if step >= self._steps[1]:
            jax.block_until_ready(outputs)
            self._save()

    def close(self) -> None:
        """Saves a trace still running (the run ended or stopped inside the window). Never raises:
        a failure to save is logged, the run's own outcome stands."""
        if self.tracing:
            self._save()

    def _save(self) -> None:
        scratch, self._scratch = self._scratch, None
        last = max(self._last_done, self._first_traced)
        session = storage.join(self._workdir, PROFILE_DIR, "plugins", "profile",
                               f"train_steps_{self._first_traced}-{last}")
        try:
            jax.profiler.stop_trace()
            copied = [self._copy(path, session) for path in storage.files_under(scratch)]
            logging.info("Profile of training steps %d-%d: %s", self._first_traced, last, ", ".join(copied) or "empty")
        except Exception as error:  # noqa: BLE001 -- a lost profile must not end or mask the run's outcome
            logging.warning("The profile of training steps %d-%d was not saved: %s: %s", self._first_traced, last,
                            type(error).__name__, " ".join(str(error).split())[:300])
        finally:
            shutil.rmtree(scratch, ignore_errors=True)  # local: the scratch directory made above

    def _copy(self, path, session: str) -> str:
        name = f"process{jax.process_index()}.{path.name}" if self._all_processes else path.name
        target = storage.join(session, name)
        storage.make_dirs(session)
        storage.write_bytes(target, path.read_bytes())
        return target
