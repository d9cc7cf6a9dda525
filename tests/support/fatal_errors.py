"""A test process that dies of a fatal signal is named, with its signal, in the run's summary.

A crash in native code (XLA, TensorFlow, the native kernels) ends a pytest-xdist worker with one line,
"worker 'gw1' crashed while running ...": the signal and the stacks that faulthandler writes go to the
worker's stderr, somewhere in the middle of a long log. Here every test process writes faulthandler's
report to its own file under ``$DOG_JAX_TEST_SCRATCH/fatal_errors`` instead (opened at session start,
after pytest's own faulthandler set-up, which it replaces), and the summary at the end of the run prints
each non-empty one: "Fatal Python error: Segmentation fault" (or Aborted, Bus error, ...) and the Python
stacks of the threads, as far as faulthandler could walk them. The header is written before the stacks,
so it survives a dump that itself crashes (one did, in CI on 2026-12-07).

Loaded by tests/conftest.py; tests/project/test_ci_strictness.py crashes a worker on purpose.
"""

from __future__ import annotations

import faulthandler
import os

import pytest

_SUBDIRECTORY = "fatal_errors"
_REPORT = pytest.StashKey()
# Innermost frames shown per thread (faulthandler writes the most recent call first): where each thread
# was is what matters, and a short section stays inside the tail of a CI log.
_FRAMES_PER_THREAD = 8


def _directory() -> str:
    return os.path.join(os.environ["DOG_JAX_TEST_SCRATCH"], _SUBDIRECTORY)


def pytest_sessionstart(session):
    os.makedirs(_directory(), exist_ok=True)
    name = f"{os.environ.get('PYTEST_XDIST_WORKER', 'main')}-pid{os.getpid()}.txt"
    # Open for the process's lifetime: faulthandler writes to its descriptor from the signal handler.
    report = open(os.path.join(_directory(), name), "w")  # noqa: SIM115
    session.config.stash[_REPORT] = report
    faulthandler.enable(file=report, all_threads=True)


def pytest_terminal_summary(terminalreporter):
    if os.environ.get("PYTEST_XDIST_WORKER") or not os.path.isdir(_directory()):
        return
    for name in sorted(os.listdir(_directory())):
        with open(os.path.join(_directory(), name), errors="replace") as f:
            lines = f.read().splitlines()
        if not lines:
            continue
        process = name.removesuffix(".txt")
        terminalreporter.section(f"fatal error in test process {process}", sep="!", red=True, bold=True)
        for line in shortened(lines):
            terminalreporter.write_line(line)


def shortened(report: list[str]) -> list[str]:
    """A faulthandler report with at most ``_FRAMES_PER_THREAD`` frames per thread, the rest counted."""
    kept, frames = [], 0

    def count_omitted():
        if frames > _FRAMES_PER_THREAD:
            kept.append(f"  ... {frames - _FRAMES_PER_THREAD} outer frames")

    for line in report:
        if line.startswith("  File "):
            frames += 1
            if frames <= _FRAMES_PER_THREAD:
                kept.append(line)
            continue
        count_omitted()
        frames = 0
        kept.append(line)
    count_omitted()
    return kept
