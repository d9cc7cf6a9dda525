"""``train.py``'s process: it exits with its run's code without Python's finalisation, after every
atexit handler, and its TensorFlow import leaves Keras out."""

import os
import subprocess
import sys
import textwrap

import pytest

from tests.support.configs import ROOT

# train.py imported as a module, its main() replaced: the exit path alone, no run.
_DRIVER = textwrap.dedent("""
    import atexit, sys
    sys.path.insert(0, {root!r})
    sys.argv = ["train.py", "--config=configs/convmixer.py:demo"]
    import train
    atexit.register(lambda: open({marker!r}, "w").write("ran"))  # registered after train.py's handler


    class Finalised:  # its __del__ runs when the interpreter is finalised, not at os._exit
        def __del__(self, open=open):  # builtins may be gone by then
            open({marker!r} + ".finalised", "w").write("finalised")


    witness = Finalised()

    def main(argv):
        {body}

    train.main = main
    train.run()
""")


def _run(tmp_path, body: str, env=None) -> tuple[subprocess.CompletedProcess, bool, bool]:
    """(the process, whether the atexit handler ran, whether the interpreter was finalised)."""
    marker = tmp_path / "atexit_ran"
    script = _DRIVER.format(root=ROOT, marker=str(marker), body=body)
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env=env or dict(os.environ))
    return done, marker.exists(), (tmp_path / "atexit_ran.finalised").exists()


@pytest.mark.parametrize("body, code, message", [
    ("return 0", 0, ""),
    ("sys.exit(75)", 75, ""),
    ("raise SystemExit('error: one line')", 1, "error: one line"),
])
def test_the_exit_code_and_message_survive_and_atexit_handlers_run(tmp_path, body, code, message):
    done, handler_ran, finalised = _run(tmp_path, body)
    assert done.returncode == code, done.stderr[-2000:]
    assert message in done.stderr and handler_ran and not finalised


def test_an_uncaught_exception_ends_as_python_ends_it(tmp_path):
    done, handler_ran, finalised = _run(tmp_path, "raise RuntimeError('boom')")
    assert done.returncode == 1 and "RuntimeError: boom" in done.stderr and handler_ran and finalised


def test_train_py_imports_tensorflow_without_keras(tmp_path):
    """As a user runs it: without the suite's TF_USE_LEGACY_KERAS (tests/conftest.py)."""
    env = {key: value for key, value in os.environ.items() if key != "TF_USE_LEGACY_KERAS"}
    body = "import tensorflow; print('keras loaded:', 'keras' in sys.modules)"
    done, _, _ = _run(tmp_path, body, env=env)
    assert done.returncode == 0 and "keras loaded: False" in done.stdout, done.stderr[-2000:]
