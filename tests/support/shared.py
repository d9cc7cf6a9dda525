"""Work done once per pytest run and shared by every test, worker and subprocess that needs it.

The trainer tests are slow because each run builds datasets, traces and lowers its steps and loads
them from the compilation cache; many tests need the *same* inputs (the tiny demo dataset) or the
*same* uninterrupted run to compare against. :func:`once` computes such a thing once per pytest run
(not once per test module or per pytest-xdist worker) in the run's scratch directory
(``$DOG_JAX_TEST_SCRATCH``, made by tests/conftest.py and removed at the end): the first caller, in
whichever worker, computes it under a file lock while any other caller waits for it, and every later
caller gets the stored result. What is shared must be treated as read-only by the tests that use it.

:func:`tiny_demo_data_dir` and :func:`reference_run` are the two things shared this way; their
fixtures are in tests/conftest.py (``tiny_data_dir``) and in the test modules.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import pickle
import shutil
from typing import Any, Callable, Iterator

__all__ = ["once", "reference_run", "scratch", "tiny_demo_data_dir"]


def scratch(*parts: str) -> str:
    """A path inside this pytest run's scratch directory (tests/conftest.py sets it for the whole run)."""
    root = os.environ.get("DOG_JAX_TEST_SCRATCH")
    if not root:
        raise RuntimeError("DOG_JAX_TEST_SCRATCH is not set: tests/conftest.py sets it; run the tests with pytest")
    return os.path.join(root, *parts)


@contextlib.contextmanager
def _locked(path: str) -> Iterator[None]:
    """An exclusive lock (flock) on ``path``, held by this process until the block ends; released by
    the kernel if the process dies, so a killed worker never leaves the others waiting forever."""
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def once(name: str, make: Callable[[str], Any]) -> tuple[str, Any]:
    """``(directory, make(directory))``, with ``make`` called at most once per pytest run for ``name``.

    Args:
      name: what is made; one directory per name (a file name: letters, digits, ``-_.``).
      make: builds the thing into the empty ``directory`` and returns a picklable value (e.g. a run's
        summary). If it raises, the error goes to the caller and the next caller tries again afresh.
    """
    if not name or not all(c.isalnum() or c in "-_." for c in name):
        raise ValueError(f"once({name!r}): the name must be a file name (letters, digits, '-', '_', '.')")
    root = scratch("shared")
    os.makedirs(root, exist_ok=True)
    directory, result = os.path.join(root, name), os.path.join(root, f"{name}.pickle")
    with _locked(os.path.join(root, f"{name}.lock")):
        if not os.path.exists(result):
            shutil.rmtree(directory, ignore_errors=True)  # what a failed attempt left
            os.makedirs(directory)
            value = make(directory)
            with open(result + ".tmp", "wb") as f:
                pickle.dump(value, f)
            os.replace(result + ".tmp", result)  # complete or absent
        with open(result, "rb") as f:
            return directory, pickle.load(f)


def tiny_demo_data_dir() -> str:
    """A tfds data directory holding the prepared tiny demo dataset (``dog_jax_demo/tiny``: 32 px,
    10 classes, what ``tests.support.configs.tiny_config`` trains on), generated once per pytest run."""

    def prepare(directory: str) -> None:
        from dog_jax import data

        data.get_builder("dog_jax_demo/tiny", directory)

    return once("tiny_demo_tfds", prepare)[0]


def reference_run(config) -> tuple[str, dict]:
    """``(workdir, summary)`` of an uninterrupted ``train_and_evaluate(config, workdir)`` in this
    process, run once per pytest run for each distinct config (its JSON is the key): the run that
    interrupted, resumed or concurrent runs of the same config are compared with, bit for bit.

    The workdir (checkpoints, summary.json) is shared: read it, never write to it (no resume in it).
    """
    key = hashlib.sha256(json.dumps(config.to_dict(), sort_keys=True, default=repr).encode()).hexdigest()[:16]

    def train(workdir: str) -> dict:
        from dog_jax.train import train_and_evaluate

        return train_and_evaluate(config, workdir)

    return once(f"reference_run_{key}", train)
