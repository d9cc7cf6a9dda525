"""Subprocesses in tests: every one has a timeout, and running past it is a hang, reported as one.

A timed-out process is killed, and the test fails saying so: its exit code (-9 after the kill)
must never be read as the code a test expected (a SIGKILL test expects -9 too).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shlex
import subprocess
import sys
import threading
from typing import Iterator, NoReturn, Sequence

import pytest

# Generous: a timeout here means a hang, not a slow machine. On the 2-core machine under a load
# of ~30 a trainer subprocess took over 400 s; an idle machine needs a few tens of seconds.
TIMEOUT_S = 900

# XLA:CPU without its expensive optimisations, for every compile in the suite (tests/conftest.py sets
# it in os.environ, which the test processes and their subprocesses inherit). The suite's models are
# tiny, so compiling dominates: this halves the time of compile-bound tests (hornet's remat test plus
# the family forward/grad tests: 123 s -> 64 s on 2 cores, 2026-12-07) and the trainer's own
# optimised path stays what users run. Tests compare runs made under the same flags.
# XLA:CPU's older elemental emitters instead of its MLIR fusion emitters: the tests' eager operations
# (hundreds of one-op programs per model built) compile in ~2/3 of the time (a tiny HorNet built and
# run eagerly, no compilation cache: 11.2-12.8 -> 6.7-7.8 CPU-s, 2026-12-07, at load ~7); a tiny
# trainer run is unchanged (6.3 vs 6.4 CPU-s) and computes the same loss.
FAST_COMPILE_XLA_FLAGS = ("--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true "
                          "--xla_cpu_use_fusion_emitters=false")


def xla_flags(devices: int | None = None) -> str:
    """``XLA_FLAGS`` for a test subprocess: the suite's compile flags, and ``devices`` CPU devices
    (None: one, whatever the test process uses)."""
    count = f" --xla_force_host_platform_device_count={devices}" if devices else ""
    return FAST_COMPILE_XLA_FLAGS + count


def exit_without_finalization(code: int) -> NoReturn:
    """Ends a test's driver process (a ``python -c`` script) with ``code`` as train.py ends a run: every
    atexit handler first (JAX's shuts a distributed run down), then no interpreter finalisation, which
    costs ~2 s a process for tearing down TensorFlow and XLA."""
    atexit._run_exitfuncs()  # noqa: SLF001 - the stdlib's way to run them before os._exit
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def describe(args: Sequence[str]) -> str:
    """The command, shortened for a failure message (``python -c`` scripts are long)."""
    args = [str(a) for a in args]
    if len(args) > 2 and args[1] == "-c":
        args = [args[0], "-c", args[2].strip().splitlines()[0] + " ..."]
    return shlex.join(a if a != sys.executable else "python" for a in args)


def hang(args: Sequence[str], timeout: float, stderr: str | None = None) -> None:
    tail = f"; its stderr ended with:\n{stderr[-2000:]}" if stderr else ""
    pytest.fail(f"hang: `{describe(args)}` was still running after {timeout:.0f} s and was killed{tail}",
                pytrace=False)


def run(args: Sequence[str], *, timeout: float, **kwargs) -> subprocess.CompletedProcess:
    """``subprocess.run`` (output captured as text unless told otherwise); a timeout fails the test as a hang."""
    kwargs.setdefault("capture_output", True)
    kwargs.setdefault("text", True)
    try:
        return subprocess.run(args, timeout=timeout, **kwargs)
    except subprocess.TimeoutExpired as error:
        hang(args, timeout, error.stderr.decode(errors="replace") if isinstance(error.stderr, bytes)
             else error.stderr)


def finish(proc: subprocess.Popen, *, timeout: float) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of a started process; killed and failed as a hang after ``timeout``."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        hang(proc.args, timeout, err if isinstance(err, str) else None)
    return proc.returncode, out, err


def kill_all(procs: Sequence[subprocess.Popen]) -> None:
    """Kills whatever still runs (after a failure, so that no trainer is left behind)."""
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


@contextlib.contextmanager
def watchdog(monkeypatch, timeout: float) -> Iterator[None]:
    """For code under test that starts processes itself without a timeout (the sweep runner's
    train.py runs): every ``subprocess.Popen`` started inside is killed after ``timeout`` seconds,
    and the test then fails as a hang (whatever the code under test made of the killed process)."""
    started, expired, original = [], threading.Event(), subprocess.Popen

    class Recorded(original):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            started.append(self)

    def expire():
        expired.set()
        for proc in started:
            if proc.poll() is None:
                proc.kill()

    def fail_if_expired():
        if expired.is_set():
            hang(started[-1].args if started else ["(no process)"], timeout)

    monkeypatch.setattr(subprocess, "Popen", Recorded)
    timer = threading.Timer(timeout, expire)
    timer.start()
    try:
        yield
    except BaseException:
        fail_if_expired()
        raise
    finally:
        timer.cancel()
        monkeypatch.setattr(subprocess, "Popen", original)
    fail_if_expired()
