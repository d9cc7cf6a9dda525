"""The core library imports no heavy optional dependency, and a missing extra fails with one line."""

import subprocess
import sys

import pytest

from tests.support import subprocesses

HEAVY = ("tensorflow", "tensorflow_datasets", "sklearn", "matplotlib", "torch", "timm")


def _run(code: str) -> subprocess.CompletedProcess:
    # A fresh interpreter: this test process has already imported torch and TensorFlow.
    return subprocesses.run([sys.executable, "-c", code], timeout=subprocesses.TIMEOUT_S)


def test_core_imports_no_heavy_dependency():
    code = ("import sys\n"
            "import dog_jax, dog_jax.models, dog_jax.ops, dog_jax.convert, dog_jax.initializers\n"
            f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})))\n")
    result = _run(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]", result.stdout


@pytest.mark.parametrize("package, hidden, extra", [
    ("dog_jax.analysis", "sklearn", "analysis"),
    ("dog_jax.analysis", "matplotlib", "analysis"),
    ("dog_jax.train", "tensorflow", "train"),
    ("dog_jax.data", "tensorflow_datasets", "train"),
    ("dog_jax.export", "orbax", "train"),
    ("dog_jax.evaluate", "tensorflow", "train"),
    ("dog_jax.timm_models", "timm", "torch"),
])
def test_missing_extra_names_it(package, hidden, extra):
    # sys.modules[name] = None makes Python treat the package as not installed.
    result = _run(f"import sys\nsys.modules[{hidden!r}] = None\nimport {package}\n")
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last == (f"ImportError: {package} needs {hidden} (not installed): "
                    f"pip install 'dog_jax[{extra}]'"), result.stderr
