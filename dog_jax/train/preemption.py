"""SIGTERM (the Cloud TPU / Slurm / Kubernetes preemption notice) as a graceful stop, at any moment.

Two pieces:

* :class:`StopOnSignal`, created per run (``train.py``): turns SIGTERM into a stop request.
  Before the first training step of a run nothing new exists to save, so inside
  :meth:`StopOnSignal.raising` (dataset preparation, model set-up, restore, the first input
  batch) the handler raises :class:`Preempted` at once; afterwards it only sets a flag, which
  the loop polls at safe points. A second signal of the same kind gets the default
  behaviour (immediate termination), so an impatient operator still wins; the checkpoints
  already on disk are unaffected.
* :class:`StopPolicy`, used by the loop: where the flag is polled (after every training step,
  between evaluation batches, around the set-up phases) and, with several processes, the
  agreement so that every process stops at the same step (or the others would hang in the
  next collective).

``train.py`` exits with :data:`EXIT_PREEMPTED` after a stop. What bounds the time from the
signal to the exit is listed in ``docs/reliability.md`` ("Bounded stop time").
"""

from __future__ import annotations

import contextlib
import signal
import types
from typing import Callable, Iterable, Iterator

import jax
import numpy as np
from absl import logging

# EX_TEMPFAIL from sysexits.h: "temporary failure, rerun": the run was checkpointed and
# rerunning the same command resumes it. Schedulers can requeue on this code.
EXIT_PREEMPTED = 75


class Preempted(BaseException):
    """A stop was requested at a point where the run ends at once.

    A ``BaseException`` (like ``KeyboardInterrupt``) so that no ``except Exception`` on the way
    (e.g. the damaged-checkpoint fallback of a restore) mistakes it for a failure.
    """


class StopOnSignal:
    """Callable ``stop_requested(step) -> bool`` that turns True once a signal arrived.

    Use as a context manager: the previous handlers are restored on exit.
    """

    def __init__(self, signals: Iterable[int] = (signal.SIGTERM,)):
        self.signals = tuple(signals)
        self.received: int | None = None
        self._previous: dict[int, object] = {}
        self._raise = False

    def __enter__(self) -> "StopOnSignal":
        for signum in self.signals:
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    @contextlib.contextmanager
    def raising(self) -> Iterator[None]:
        """Within the block a signal raises :class:`Preempted` at once (also one received before).

        For the phases before the first training step. The exception surfaces at the next
        Python bytecode of the main thread, so a long native call (an XLA compile) finishes first.
        """
        self._raise = True
        try:
            self._raise_if_received()
            yield
        finally:
            self._raise = False

    def _raise_if_received(self) -> None:
        if self.received is not None:
            raise Preempted(f"{signal.Signals(self.received).name} before the first training step")

    def _handle(self, signum: int, frame: types.FrameType | None) -> None:
        del frame
        if self.received is not None:  # second signal: give up on the graceful stop.
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)
            return
        self.received = signum
        if self._raise:
            logging.warning("Received %s before the first training step: exiting with code %d (nothing new "
                            "to checkpoint).", signal.Signals(signum).name, EXIT_PREEMPTED)
            self._raise_if_received()
        logging.warning("Received %s: checkpointing the last completed step, then exiting with code %d.",
                        signal.Signals(signum).name, EXIT_PREEMPTED)

    def __call__(self, step: int) -> bool:
        del step
        return self.received is not None


class StopPolicy:
    """Where and how the loop asks ``stop_requested``, and the agreement between processes.

    Args:
      stop_requested: ``f(step) -> bool`` (a :class:`StopOnSignal`, or any callable), or None.
      every: with several processes, training steps between two agreements (the log interval,
        which synchronises anyway). With one process the flag is read after every step.
    """

    def __init__(self, stop_requested: Callable[[int], bool] | None, every: int):
        self._stop_requested = stop_requested
        self._every = every

    def _local(self, step: int) -> bool:
        return self._stop_requested is not None and bool(self._stop_requested(step))

    def agreed(self, step: int) -> bool:
        """The local flags of all processes, OR-ed; every process must call this at the same point.

        One ``process_allgather`` of an int32 per call with several processes, none with one.
        """
        if jax.process_count() == 1:
            return self._local(step)
        # Every process must take part in the all-gather, also one that was given no stop_requested.
        from jax.experimental import multihost_utils
        local = np.asarray([self._local(step)], np.int32)
        return bool(np.any(multihost_utils.process_allgather(local)))

    def after_step(self, step: int) -> bool:
        """Whether to checkpoint ``step`` and stop (agreed every ``every`` steps with several processes)."""
        if jax.process_count() > 1 and step % self._every:
            return False
        return self.agreed(step)

    def check(self, step: int) -> None:
        """Raises :class:`Preempted` when the stop is agreed (between evaluation batches)."""
        if self.agreed(step):
            raise Preempted(f"stop requested at step {step}")

    def check_local(self, step: int) -> None:
        """Raises :class:`Preempted` on a local request (set-up phases, before any collective)."""
        if self._local(step):
            raise Preempted(f"stop requested before training step {step + 1}")

    @contextlib.contextmanager
    def before_first_step(self, step: int) -> Iterator[None]:
        """The set-up phases: a :class:`StopOnSignal` raises at once inside; any other callable is
        polled on entry and exit (callers add :meth:`check_local` between long phases)."""
        raising = getattr(self._stop_requested, "raising", None)
        self.check_local(step)
        with raising() if raising is not None else contextlib.nullcontext():
            yield
        self.check_local(step)
