"""What the command-line tools print: dog_jax's own lines and everyone's warnings, or everything.

One set-up for every CLI (``train.py``, ``python -m dog_jax.evaluate / export / analysis /
experiments``), chosen by the same ``--verbose`` flag in each:

* Python logging. All records reach the root logger at INFO (absl's handler on it, as
  ``absl.app`` installs it), and a filter on that handler drops third-party records below
  WARNING. A record is dog_jax's when its source file lies inside this package (or its logger
  is ``dog_jax.*``). Most libraries here log through ``absl.logging``, so every record's
  logger is "absl" and only the source file tells whose it is. An earlier filter asked whether
  ``"dog_jax"`` occurred anywhere in the path: true for orbax's files too whenever the checkout
  itself lay in a directory called dog_jax (the virtualenv inside it), so orbax's ~150 INFO
  lines per demo run appeared in some checkouts and not in others.
* TensorFlow's C++ notices. ``TF_CPP_MIN_LOG_LEVEL=1`` (unless already set) hides the INFO
  lines of its runtime; it is read when TensorFlow is loaded, so this runs before that import.
  The oneDNN notice is printed at import through absl's C++ logging, which ignores that
  variable (TensorFlow 2.21, printed once per shared library: twice); it is dropped by reading
  stderr during TensorFlow's import and writing back every other line.

With ``verbose`` nothing is filtered. Log files and TensorBoard output do not pass through here.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.abc
import importlib.util
import logging
import os
import re
import sys
import tempfile
from typing import Iterator, Sequence

VERBOSE_HELP = "also show other libraries' INFO logs (orbax, tfds, absl, TensorFlow's C++ notices)"

_PACKAGE_DIR = os.path.dirname(os.path.realpath(__file__)) + os.sep  # local: the package's source folder
# glog-style INFO lines of native code ("I0000 00:00:1712345678.123456  4242 port.cc:153] ..."), and absl's
# note that such lines went to stderr because its C++ logging was not initialised.
_NATIVE_INFO = re.compile(r"^I\d{4} [\d:.]+\s+\d+ [\w./-]+:\d+\] "
                          r"|^WARNING: All log messages before absl::InitializeLog")


def verbose_in(argv: Sequence[str]) -> bool:
    """Whether an absl command line asks for ``--verbose``, read before its flags are parsed.

    train.py and the evaluate CLI import TensorFlow while absl parses their flags (the config
    file imports the trainer), so the TensorFlow part of :func:`setup` must be decided earlier.
    """
    verbose = False
    for arg in argv[1:]:
        if arg == "--":
            break
        if arg in ("--verbose", "--verbose=true", "--verbose=True", "--verbose=1"):
            verbose = True
        elif arg in ("--noverbose", "--verbose=false", "--verbose=False", "--verbose=0"):
            verbose = False
    return verbose


def setup(verbose: bool) -> None:
    """Console logging of a CLI run: see the module docstring. Idempotent; the last call wins."""
    quiet_native(verbose)
    _setup_python_logging(verbose)


def quiet_native(verbose: bool) -> None:
    """The TensorFlow part of :func:`setup` alone, for a CLI that imports TensorFlow before it
    knows its parsed flags. A no-op once TensorFlow is imported (too late to matter)."""
    if verbose:
        sys.meta_path[:] = [finder for finder in sys.meta_path if not isinstance(finder, _QuietImportFinder)]
        return
    if "tensorflow" in sys.modules:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    if not any(isinstance(finder, _QuietImportFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _QuietImportFinder())


class ProjectOrWarning(logging.Filter):
    """Passes records at WARNING or above, and dog_jax's own records at any level."""

    def filter(self, record: logging.LogRecord) -> bool:
        return (record.levelno >= logging.WARNING or record.name.split(".")[0] == "dog_jax"
                or _in_package(record.pathname))


@functools.lru_cache(maxsize=4096)
def _in_package(pathname: str) -> bool:
    return os.path.realpath(pathname).startswith(_PACKAGE_DIR)  # local: a source file of a log record


def _setup_python_logging(verbose: bool) -> None:
    from absl import flags
    from absl import logging as absl_logging

    # argparse CLIs never parse absl's flags; absl's handler would then prefix its first record
    # with "Logging before flag parsing goes to stderr" (its defaults are what is wanted here).
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()
    absl_logging.use_absl_handler()  # what absl.app.run does; a no-op when it is installed
    absl_logging.set_verbosity(absl_logging.INFO)  # root logger at INFO: dog_jax's progress lines pass
    handler = absl_logging.get_absl_handler()
    for old in [f for f in handler.filters if isinstance(f, ProjectOrWarning)]:
        handler.removeFilter(old)
    if not verbose:
        handler.addFilter(ProjectOrWarning())


class _QuietImportFinder(importlib.abc.MetaPathFinder):
    """Wraps the first import of ``tensorflow`` (by whichever module) in :func:`drop_native_info_lines`."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        # The spec the other finders give. Stays installed until the import itself: a mere
        # ``importlib.util.find_spec`` (dog_jax._extras.require checks extras that way) asks too.
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _QuietLoader(spec.loader)
                return spec
        return None


class _QuietLoader(importlib.abc.Loader):
    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        sys.meta_path[:] = [finder for finder in sys.meta_path if not isinstance(finder, _QuietImportFinder)]
        module.__spec__.loader = module.__loader__ = self._loader  # the module keeps its own loader
        with drop_native_info_lines():
            self._loader.exec_module(module)


@contextlib.contextmanager
def drop_native_info_lines() -> Iterator[None]:
    """Route file descriptor 2 through a temporary file for the duration, then write back every
    line except native INFO notices (warnings and errors are kept, in order)."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (AttributeError, OSError, ValueError):  # no real stderr (embedded interpreters): leave it alone
        yield
        return
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            lines = captured.read().decode(errors="replace").splitlines(keepends=True)
            kept = "".join(line for line in lines if not _NATIVE_INFO.match(line))
            if kept:
                sys.stderr.write(kept)
                sys.stderr.flush()
