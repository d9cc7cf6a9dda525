"""The CLIs' console (dog_jax.console): dog_jax's lines and everyone's warnings by default,
everything with --verbose, the same whatever directory the checkout lies in."""

import io
import logging
import os

import pytest
from absl import logging as absl_logging

from dog_jax import console
from tests.support.console import third_party_info_lines

PACKAGE_FILE = os.path.join(os.path.dirname(os.path.realpath(console.__file__)), "train", "loop.py")
# orbax inside a virtualenv inside a checkout called dog_jax: the case the old substring filter let through.
ORBAX_FILE = "/home/someone/dog_jax/.venv/lib/python3.11/site-packages/orbax/checkpoint/_src/path/atomicity.py"


def _record(pathname, level, name="absl"):
    return logging.LogRecord(name, level, pathname, 1, "message", None, None)


@pytest.fixture
def absl_handler():
    """absl's handler, as a CLI leaves it (conftest.py restores the test process's logging afterwards)."""
    return absl_logging.get_absl_handler()


def _passes(handler, record):
    return all(f.filter(record) if hasattr(f, "filter") else f(record) for f in handler.filters)


def test_default_keeps_own_info_and_all_warnings_and_drops_other_info(absl_handler):
    console.setup(verbose=False)
    assert absl_handler in logging.getLogger().handlers and logging.getLogger().level == logging.INFO
    assert _passes(absl_handler, _record(PACKAGE_FILE, logging.INFO))
    assert _passes(absl_handler, _record("/elsewhere/x.py", logging.INFO, name="dog_jax.checkpoints"))
    assert not _passes(absl_handler, _record(ORBAX_FILE, logging.INFO))
    assert not _passes(absl_handler, _record("/site-packages/jax/_src/xla_bridge.py", logging.INFO, name="jax"))
    assert _passes(absl_handler, _record(ORBAX_FILE, logging.WARNING))
    assert _passes(absl_handler, _record(ORBAX_FILE, logging.ERROR))


def test_verbose_keeps_everything_and_the_last_call_wins(absl_handler):
    console.setup(verbose=False)
    console.setup(verbose=False)
    assert sum(isinstance(f, console.ProjectOrWarning) for f in absl_handler.filters) == 1  # idempotent
    console.setup(verbose=True)
    assert _passes(absl_handler, _record(ORBAX_FILE, logging.INFO))
    assert not any(isinstance(f, console.ProjectOrWarning) for f in absl_handler.filters)


def test_records_are_printed_or_dropped_end_to_end(absl_handler, monkeypatch):
    stream = io.StringIO()
    monkeypatch.setattr(absl_handler.python_handler, "stream", stream)  # where the console lines go
    console.setup(verbose=False)
    logger = logging.getLogger("orbax.checkpoint")  # a third-party logger, as tfds/jax use them
    logger.info("third-party INFO line")
    logger.warning("third-party WARNING line")
    # A call made from a file of the package (its code compiled under that file name).
    exec(compile("absl_logging.info('dog_jax INFO line')", PACKAGE_FILE, "exec"), {"absl_logging": absl_logging})
    absl_logging.info("INFO line from a test file")  # outside the package: third-party
    err = stream.getvalue()
    assert "third-party WARNING line" in err and "dog_jax INFO line" in err
    assert "third-party INFO line" not in err and "INFO line from a test file" not in err
    console.setup(verbose=True)
    logger.info("third-party INFO line")
    assert "third-party INFO line" in stream.getvalue()


@pytest.mark.parametrize("argv, expected", [
    (["train.py", "--config=c.py"], False),
    (["train.py", "--verbose"], True),
    (["train.py", "--verbose=true"], True),
    (["train.py", "--verbose", "--noverbose"], False),
    (["train.py", "--verbose=false"], False),
    (["train.py", "--", "--verbose"], False),
])
def test_verbose_is_read_from_an_unparsed_command_line(argv, expected):
    assert console.verbose_in(argv) is expected


def test_native_info_lines_are_dropped_and_other_stderr_kept_in_order(capfd):
    with console.drop_native_info_lines():
        os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n")
        os.write(2, b"I0000 00:00:1796405594.504205    3862 port.cc:153] oneDNN custom operations are on.\n")
        os.write(2, b"W1204 17:30:00.123456    3862 cpu_allocator.cc:12] a real warning\n")
        os.write(2, b"E0000 00:00:1.5  1 file.cc:9] an error\n")
        os.write(2, b"a plain line\n")
    assert capfd.readouterr().err == ("W1204 17:30:00.123456    3862 cpu_allocator.cc:12] a real warning\n"
                                      "E0000 00:00:1.5  1 file.cc:9] an error\na plain line\n")


def test_third_party_info_lines_are_recognised():
    output = ("I0000 00:00:1796405594.504205    3862 port.cc:153] oneDNN custom operations are on.\n"
              "I1204 17:38:02.912437 139856938679168 loop.py:131] Devices: 1 x cpu\n"
              "I1204 17:38:02.912437 139856938679168 atomicity.py:12] Renaming ... orbax-checkpoint-tmp\n"
              "W1204 17:38:02.926336 139856938679168 file_utils.py:394] Variant folder ... has no dataset_info.json\n")
    assert third_party_info_lines(output) == [output.splitlines()[0], output.splitlines()[2]]
