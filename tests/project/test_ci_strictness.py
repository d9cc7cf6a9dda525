"""CI cannot pass by not running a test: a missing dependency the project installs fails under CI=true
(tests/support/requires.py), any skip under CI fails the run, and a test that hangs fails as a timeout.

Each rule is shown on a tiny generated test file run by pytest in a subprocess, with the project's
plugin (``-p tests.support.requires``) or its pytest configuration (pyproject.toml: the timeout).
"""

import os
import re
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

from tests.support import subprocesses
from tests.support.configs import ROOT

_MISSING = "dog_jax_no_such_module"
_LINE = f"{_MISSING} is not installed: pip install {_MISSING}"


def _pytest(tmp_path, source, *args, ci=None, plugins=("tests.support.requires",), extra_env=None):
    """(exit code, output) of pytest on ``source`` written to tmp_path/test_generated.py; entry-point
    plugins are not loaded (faster), the named ones are; CI is set to ``ci`` or unset; ``extra_env``
    adds variables."""
    (tmp_path / "test_generated.py").write_text(textwrap.dedent(source))
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTEST_") and key != "CI"}
    env.update(PYTHONPATH=ROOT, PYTEST_DISABLE_PLUGIN_AUTOLOAD="1", **({"CI": ci} if ci is not None else {}),
               **(extra_env or {}))
    plugin_args = [arg for name in plugins for arg in ("-p", name)]
    command = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", *plugin_args,
               "--rootdir", str(tmp_path), *args, "test_generated.py"]
    result = subprocesses.run(command, timeout=subprocesses.TIMEOUT_S, cwd=tmp_path, env=env)
    return result.returncode, result.stdout + result.stderr


_REQUIRING = f"""
    from tests.support.requires import require, requires

    @requires("{_MISSING}", "{_MISSING} is not installed", "pip install {_MISSING}")
    def test_marked():
        pass

    def test_called():
        require("{_MISSING}", "{_MISSING} is not installed", "pip install {_MISSING}")

    def test_present():
        assert require("os", "os is not installed", "reinstall Python").sep
"""


def test_a_missing_dependency_skips_saying_how_to_install_it(tmp_path):
    code, output = _pytest(tmp_path, _REQUIRING)
    assert code == 0, output
    assert "1 passed, 2 skipped" in output, output
    # -rs: each skip's reason, at the line that called require() (the marker's: at the helper's hook)
    assert re.search(rf"SKIPPED \[1\] test_generated.py:\d+: {re.escape(_LINE)}\n", output), output
    assert re.search(rf"SKIPPED \[1\] .*requires.py:\d+: {re.escape(_LINE)}\n", output), output


@pytest.mark.parametrize("ci", ["true", "1", "TRUE"])
def test_under_ci_a_missing_dependency_fails_with_the_same_line(tmp_path, ci):
    code, output = _pytest(tmp_path, _REQUIRING, ci=ci)
    assert code == 1, output
    assert "1 failed, 1 passed, 1 error" in output  # the marker is checked in the setup: an error there
    assert output.count(f"{_LINE} (CI={ci}: CI installs it, so its absence is a failure)") == 2, output


@pytest.mark.parametrize("ci", [None, "false", "true"])
def test_a_module_level_requirement(tmp_path, ci):
    source = f"""
        from tests.support.requires import require

        require("{_MISSING}", "{_MISSING} is not installed", "pip install {_MISSING}")

        def test_never_reached():
            pass
    """
    (tmp_path / "test_other.py").write_text("def test_runs():\n    pass\n")
    code, output = _pytest(tmp_path, source, "test_other.py", ci=ci)
    if ci == "true":  # a collection error, which stops pytest before any test runs
        assert code == 2 and "1 error" in output and f"{_LINE} (CI=true" in output, output
    else:
        assert code == 0 and "1 passed, 1 skipped" in output and _LINE in output, output


def test_a_string_that_is_no_module_name_is_refused():
    from tests.support.requires import require

    with pytest.raises(TypeError, match="a string is a module name; pass a bool"):
        require("/usr/bin/git", "git is not installed", "apt-get install git")  # shutil.which's answer


@pytest.mark.parametrize("workers", [[], ["-p", "xdist", "-n", "2"]], ids=["in-process", "xdist"])
def test_under_ci_any_skip_fails_the_run(tmp_path, workers):
    source = """
        import pytest

        def test_skips():
            pytest.skip("skipped by hand")

        def test_passes():
            pass
    """
    code, output = _pytest(tmp_path, source, *workers)
    assert code == 0 and "1 passed, 1 skipped" in output, output
    code, output = _pytest(tmp_path, source, *workers, ci="true")
    assert code == 1 and "1 passed, 1 skipped" in output, output
    assert "CI=true: 1 skipped test(s) fail this run" in output, output


_SKIPS = re.compile(r"importorskip|pytest\.skip\(|\bskipif\b|mark\.skip\b|unittest\.skip|skipTest\(|"
                    r"allow_module_level|SkipTest")


def test_every_skip_goes_through_the_helper():
    """No test file skips by itself: an optional dependency is declared with require()/requires(),
    which fail under CI. (The helper and this file are the only places that name pytest's skips.)"""
    allowed = {Path(ROOT) / "tests" / "support" / "requires.py", Path(__file__)}
    found = [f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
             for path in sorted((Path(ROOT) / "tests").rglob("*.py")) if path not in allowed
             for number, line in enumerate(path.read_text().splitlines(), 1) if _SKIPS.search(line)]
    assert found == []


def test_the_ci_entry_point_sets_ci_and_runs_the_suite_with_the_plugin():
    script = (Path(ROOT) / ".ci" / "run").read_text()
    assert 'export CI="${CI:-true}"' in script
    conftest = (Path(ROOT) / "tests" / "conftest.py").read_text()
    assert "from tests.support.requires import" in conftest and "pytest_sessionfinish" in conftest


# ------------------------------------------------------------------------------------------- timeouts


def test_every_test_has_a_timeout_above_a_subprocess_hang():
    options = tomllib.loads((Path(ROOT) / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert options["timeout_method"] == "thread"
    assert int(options["timeout"]) > subprocesses.TIMEOUT_S  # a hung subprocess is reported with its stderr first
    assert subprocesses.TIMEOUT_S < float(options["faulthandler_timeout"]) < int(options["timeout"])


_SLEEPER = """
    import time

    import pytest

    @pytest.mark.timeout(1)
    def test_hangs():
        time.sleep(60)
"""


def test_a_hang_fails_as_a_timeout_showing_where_it_hung(tmp_path):
    code, output = _pytest(tmp_path, _SLEEPER, "-c", os.path.join(ROOT, "pyproject.toml"),
                           plugins=("pytest_timeout",))
    assert code == 1, output  # pytest-timeout ended the process
    assert "+ Timeout +" in output and "time.sleep(60)" in output, output  # the hung thread's stack


def test_under_xdist_a_hang_fails_that_test_and_faulthandler_shows_where_it_hung(tmp_path):
    # The worker's own pytest-timeout report is lost with the worker (its output is captured);
    # faulthandler_timeout (pyproject.toml: a minute before the timeout, here 0.5 s) writes the stacks
    # to the real stderr first.
    code, output = _pytest(tmp_path, _SLEEPER + "\n\n    def test_after():\n        pass\n",
                           "-c", os.path.join(ROOT, "pyproject.toml"), "-o", "faulthandler_timeout=0.5",
                           "-p", "xdist", "-n", "1", plugins=("pytest_timeout",))
    assert code == 1, output
    assert "Timeout (0:00:00.500000)!" in output and "in test_hangs" in output, output
    assert "worker 'gw0' crashed while running 'test_generated.py::test_hangs'" in output, output
    assert "1 failed, 1 passed" in output, output  # a new worker runs the rest


# ------------------------------------------------------------------------------------------- crashes


def test_a_worker_killed_by_a_fatal_signal_is_named_with_its_signal_in_the_summary(tmp_path):
    """tests/support/fatal_errors.py: the crashed worker's faulthandler report (signal, the test's
    stack) is printed at the end of the run, where a CI log's tail shows it."""
    source = """
        import os
        import signal

        def test_crashes():
            os.kill(os.getpid(), signal.SIGSEGV)

        def test_after():
            pass
    """
    scratch = tmp_path / "scratch"  # this run's own: the outer suite's summary must not show its crash
    code, output = _pytest(tmp_path, source, "-p", "xdist", "-n", "1", plugins=("tests.support.fatal_errors",),
                           extra_env={"DOG_JAX_TEST_SCRATCH": str(scratch)})
    assert code == 1 and "1 failed, 1 passed" in output, output
    assert "worker 'gw0' crashed while running 'test_generated.py::test_crashes'" in output, output
    summary = output[output.index("fatal error in test process gw0-pid"):]
    assert "Fatal Python error: Segmentation fault" in summary, output
    assert 'test_generated.py", line 6 in test_crashes' in summary, output
    assert output.count("fatal error in test process") == 1, output  # the replacement worker did not crash
