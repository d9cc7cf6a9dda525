"""scripts/tpu_vm_setup.sh against stub commands: a stock TPU VM (Python 3.10 and pip, no Python 3.11)
reaches a venv through uv; a python3.11 on PATH is used directly; every missing precondition ends
the script with one ``tpu_vm_setup: error:`` line naming it, before any install step runs.

The stubs (``curl``, ``python3``, ``python3.11``, ``uv`` and the venv's ``python``) record every call in
a log and behave as the test's environment variables say; PATH holds only them and a few coreutils,
so no real Python, pip or network is reached.
"""

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "tpu_vm_setup.sh"
BASH = shutil.which("bash")
TOOLS = ("timeout", "grep", "tail", "sed", "mkdir", "cat", "cp", "chmod", "rm", "env", "basename")

# The venv's interpreter: version checks, pip, and the jax check. STUB_VENV_PY, STUB_PIP_FAIL,
# STUB_PLATFORM steer it.
VENV_PYTHON = r"""#!BASH
echo "venv-python $*" >> "$STUB_LOG"
if [[ "$1" == -c ]]; then
    case "$2" in
        *"version_info >= (3, 11)"*) [[ "${STUB_VENV_PY:-3.11}" != 3.10 ]]; exit ;;
        *'print("%d.%d"'*) echo "${STUB_VENV_PY:-3.11}"; exit 0 ;;
        *"import jax"*) echo "WARNING: libtpu noise" >&2
                        echo "dog_jax-tpu-check ${STUB_PLATFORM:-tpu} 16 4 0.10.2 TPU v5 lite"; exit 0 ;;
    esac
fi
if [[ "$1 $2" == "-m pip" && "$3" == install && -n "${STUB_PIP_FAIL:-}" ]]; then exit 1; fi
exit 0
"""

# A Python that makes venvs (python3.11 from a PPA, or what uv downloads): `-m venv DIR`.
MAKER_PYTHON = r"""#!BASH
echo "$(basename "$0") $*" >> "$STUB_LOG"
if [[ "$1" == -c ]]; then
    case "$2" in
        *"version_info >= (3, 11)"*) [[ "$(basename "$0")" != python3 ]]; exit ;;
        *'print("%d.%d"'*) [[ "$(basename "$0")" == python3 ]] && echo 3.10 || echo 3.11; exit 0 ;;
    esac
fi
if [[ "$1 $2" == "-m venv" ]]; then
    mkdir -p "$3/bin" && cp "$STUB_DIR/venv-python" "$3/bin/python"; exit 0
fi
if [[ "$1 $2 $3" == "-m pip --version" ]]; then [[ -z "${STUB_NO_PIP:-}" ]]; exit; fi
if [[ "$1 $2 $3" == "-m pip install" ]]; then
    [[ -z "${STUB_NO_NETWORK:-}" ]] || { echo "ERROR: Could not find a version that satisfies uv" >&2; exit 1; }
    mkdir -p "$HOME/.local/bin" && cp "$STUB_DIR/uv-binary" "$HOME/.local/bin/uv"; exit 0
fi
exit 0
"""

UV = r"""#!BASH
echo "uv $*" >> "$STUB_LOG"
case "$1" in
    python) [[ -z "${STUB_UV_NO_DOWNLOAD:-}" ]] || { echo "error: Failed to download" >&2; exit 2; }; exit 0 ;;
    venv) dir="${@: -1}"; mkdir -p "$dir/bin" && cp "$STUB_DIR/venv-python" "$dir/bin/python"; exit 0 ;;
esac
exit 0
"""

CURL = r"""#!BASH
echo "curl $*" >> "$STUB_LOG"
[[ -z "${STUB_NOT_TPU:-}" ]] || exit 7
echo "v5litepod-16"
"""


def _write(path: Path, text: str) -> None:
    path.write_text(text.replace("#!BASH", f"#!{BASH}"))
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


@pytest.fixture
def vm(tmp_path):
    """A checkout directory, a home, and a PATH of stubs; returns a function that runs the script."""
    stubs, home, checkout = tmp_path / "bin", tmp_path / "home", tmp_path / "dog_jax"
    for d in (stubs, home, checkout):
        d.mkdir()
    for name in ("requirements.txt", "requirements-tpu.txt", "pyproject.toml"):
        (checkout / name).write_text("")
    for tool in TOOLS:
        os.symlink(shutil.which(tool), stubs / tool)
    _write(stubs / "venv-python", VENV_PYTHON)
    _write(stubs / "python3", MAKER_PYTHON)
    _write(stubs / "uv-binary", UV)
    _write(stubs / "curl", CURL)
    log = tmp_path / "calls.log"

    def run(*args, with_python311=False, uv_on_path=False, **stub_env):
        if with_python311:
            _write(stubs / "python3.11", MAKER_PYTHON)
        if uv_on_path:
            shutil.copy(stubs / "uv-binary", stubs / "uv")
        env = {"PATH": str(stubs), "HOME": str(home), "STUB_LOG": str(log), "STUB_DIR": str(stubs),
               **{f"STUB_{k.upper()}": v for k, v in stub_env.items()}}
        result = subprocess.run([BASH, str(SCRIPT), *args], cwd=checkout, env=env, capture_output=True, text=True,
                                timeout=60)
        calls = log.read_text().splitlines() if log.exists() else []
        return result, calls

    run.checkout = checkout
    run.home = home
    return run


def _errors(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("tpu_vm_setup: error:")]


def test_stock_tpu_vm_gets_python_311_through_uv_and_a_checked_venv(vm):
    result, calls = vm()
    assert result.returncode == 0, result.stderr
    # uv comes from PyPI through the system pip, then Python 3.11 and the venv through uv.
    assert "python3 -m pip install --user --quiet uv>=0.5" in calls
    assert "uv python install 3.11" in calls
    assert "uv venv --seed --python 3.11 .venv" in calls
    installs = [c for c in calls if c.startswith("venv-python -m pip install")]
    assert installs == ["venv-python -m pip install --quiet -r requirements.txt -r requirements-tpu.txt",
                        "venv-python -m pip install --quiet --no-deps -e ."]
    assert calls.index(installs[-1]) < max(i for i, c in enumerate(calls) if "import jax" in c)
    assert "ok: jax 0.10.2 sees 16 TPU devices (4 on this worker, TPU v5 lite)" in result.stdout
    assert (vm.checkout / ".venv" / "bin" / "python").exists()


def test_a_python311_on_path_is_used_without_uv(vm):
    result, calls = vm(with_python311=True)
    assert result.returncode == 0, result.stderr
    assert "python3.11 -m venv .venv" in calls
    assert not [c for c in calls if c.startswith("uv ")]


def test_rerun_reuses_the_venv(vm):
    assert vm()[0].returncode == 0
    result, calls = vm()
    assert result.returncode == 0, result.stderr
    assert "reusing .venv (Python 3.11)" in result.stdout
    assert calls.count("uv python install 3.11") == 1  # only the first run


@pytest.mark.parametrize("kwargs, message", [
    ({"not_tpu": "1"}, "not a Cloud TPU VM"),
    ({"no_pip": "1"}, "no pip for the system python3 (3.10): sudo apt-get install -y python3-pip"),
    ({"no_network": "1"}, "could not install uv from PyPI (no network?"),
    ({"uv_no_download": "1"}, "uv could not install Python 3.11"),
    ({"platform": "cpu"}, "jax 0.10.2 sees no TPU (platform cpu)"),
    ({"pip_fail": "1"}, "pip could not install requirements.txt + requirements-tpu.txt"),
])
def test_a_missing_precondition_is_one_error_line(vm, kwargs, message):
    result, calls = vm(**kwargs)
    assert result.returncode == 1
    errors = _errors(result)
    assert len(errors) == 1 and message in errors[0], result.stderr
    if kwargs.keys() & {"not_tpu", "no_pip", "no_network", "uv_no_download"}:
        assert not [c for c in calls if c.startswith("venv-python -m pip install")]  # stopped before installing


def test_an_existing_venv_with_the_wrong_python_is_refused(vm):
    (vm.checkout / ".venv" / "bin").mkdir(parents=True)
    shutil.copy(vm.checkout.parent / "bin" / "venv-python", vm.checkout / ".venv" / "bin" / "python")
    result, calls = vm(venv_py="3.10")
    assert result.returncode == 1
    assert _errors(result) == ["tpu_vm_setup: error: .venv has Python 3.10, dog_jax needs >= 3.11: remove it "
                               "(rm -rf .venv) and rerun"]
    assert not [c for c in calls if c.startswith(("uv ", "venv-python -m pip install"))]


def test_outside_a_checkout_and_unknown_arguments(vm):
    (vm.checkout / "requirements.txt").unlink()
    result, _ = vm()
    assert result.returncode == 1 and "run from the root of the dog_jax checkout" in _errors(result)[0]
    result, _ = vm("--fast")
    assert result.returncode == 1 and _errors(result)


def test_no_tpu_check_installs_off_a_tpu_vm(vm):
    result, calls = vm("--no-tpu-check", not_tpu="1", platform="cpu")
    assert result.returncode == 0, result.stderr
    assert not [c for c in calls if c.startswith("curl") or "import jax" in c]
    assert "TPU check skipped" in result.stdout
