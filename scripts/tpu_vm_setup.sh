#!/usr/bin/env bash
# From a stock Cloud TPU VM to a working dog_jax virtualenv: bash scripts/tpu_vm_setup.sh
#
# Run from the root of a dog_jax checkout, as the login user (no sudo). What it assumes, as Google's
# "TPU software versions" page lists the images (https://cloud.google.com/tpu/docs/runtimes, read
# 2026-12-06): tpu-ubuntu2204-base (v4), v2-alpha-tpuv5-lite (v5e), v2-alpha-tpuv5 (v5p),
# v2-alpha-tpuv6e (v6e): Ubuntu 22.04, whose python3 is 3.10 with pip; dog_jax needs Python 3.11.
#
# Steps, each failing with one "tpu_vm_setup: error: ..." line on stderr that says what to do:
#   1. a Cloud TPU VM? (instance metadata "accelerator-type"; --no-tpu-check skips this and step 5)
#   2. Python 3.11: `python3.11` if one is on PATH (e.g. from the deadsnakes PPA), otherwise uv
#      (`pip install --user uv` with the system pip, then `uv python install 3.11`: a standalone
#      CPython build downloaded by uv; no root, no apt lock, nothing changed system-wide)
#   3. the virtualenv (.venv, or $DOG_JAX_VENV); an existing one is reused if it has Python >= 3.11
#   4. pip install -r requirements.txt -r requirements-tpu.txt, then pip install --no-deps -e .
#   5. jax.devices() must report TPU devices (under `timeout`; on a multi-host slice every worker
#      runs this at once, as `python -m dog_jax.tpu_vm setup` does, since the TPU runtime starts
#      together on all of them)
# Rerunning it is safe: it reuses the venv and pip skips what is installed.
set -uo pipefail

die() {
    echo "tpu_vm_setup: error: $*" >&2
    exit 1
}
say() { echo "tpu_vm_setup: $*"; }

check_tpu=1
for arg in "$@"; do
    case "$arg" in
        --no-tpu-check) check_tpu=0 ;;
        -h | --help)
            sed -n '2,/^set /p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *) die "unknown argument '$arg' (known: --no-tpu-check, --help)" ;;
    esac
done

venv=${DOG_JAX_VENV:-.venv}
python_version=3.11
metadata_url=${DOG_JAX_METADATA_URL:-http://metadata.google.internal/computeMetadata/v1/instance/attributes}
tpu_check_timeout=${DOG_JAX_TPU_CHECK_TIMEOUT:-600}

[[ -f requirements.txt && -f requirements-tpu.txt && -f pyproject.toml ]] ||
    die "run from the root of the dog_jax checkout (no requirements.txt / requirements-tpu.txt in $PWD)"

# 1. A TPU VM: its instance metadata names the accelerator type.
if ((check_tpu)); then
    command -v curl >/dev/null || die "curl not found (it reads the TPU VM's metadata): sudo apt-get install -y curl"
    accelerator=$(curl -sf --max-time 5 -H 'Metadata-Flavor: Google' "$metadata_url/accelerator-type") ||
        die "not a Cloud TPU VM (no accelerator-type in the instance metadata at $metadata_url); on another machine pass --no-tpu-check"
    say "TPU VM: accelerator type $accelerator"
fi

# Exit status 0 when interpreter $1 is Python >= 3.11.
new_enough() { "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' >/dev/null 2>&1; }
version_of() { "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || echo "unknown"; }

# 2 + 3. The virtualenv, and a Python 3.11 to make it from when there is none yet.
if [[ -e "$venv/bin/python" ]]; then
    new_enough "$venv/bin/python" ||
        die "$venv has Python $(version_of "$venv/bin/python"), dog_jax needs >= 3.11: remove it (rm -rf $venv) and rerun"
    say "reusing $venv (Python $(version_of "$venv/bin/python"))"
elif command -v python$python_version >/dev/null && new_enough python$python_version; then
    say "python$python_version found on PATH: python$python_version -m venv $venv"
    python$python_version -m venv "$venv" ||
        die "python$python_version -m venv failed: install its venv module (sudo apt-get install -y python$python_version-venv) or remove python$python_version from PATH to use uv"
else
    uv=$(command -v uv || true)
    if [[ -z "$uv" && -x "$HOME/.local/bin/uv" ]]; then
        uv=$HOME/.local/bin/uv
    fi
    if [[ -z "$uv" ]]; then
        command -v python3 >/dev/null || die "no python3 on this machine to install uv with: sudo apt-get install -y python3-pip"
        python3 -m pip --version >/dev/null 2>&1 ||
            die "no pip for the system python3 ($(version_of python3)): sudo apt-get install -y python3-pip"
        say "installing uv with the system pip (python3 $(version_of python3)): python3 -m pip install --user uv"
        python3 -m pip install --user --quiet 'uv>=0.5' ||
            die "the system pip could not install uv from PyPI (no network? a proxy?); or install python$python_version yourself and rerun"
        uv=$HOME/.local/bin/uv
        [[ -x "$uv" ]] || die "pip installed uv but $uv is missing (pip's --user directory differs?): put uv on PATH and rerun"
    fi
    say "Python $python_version through uv: $uv python install $python_version"
    "$uv" python install "$python_version" ||
        die "uv could not install Python $python_version (it downloads a CPython build from github.com: is outbound HTTPS allowed?)"
    "$uv" venv --seed --python "$python_version" "$venv" || die "uv venv --python $python_version $venv failed (see above)"
fi
py=$venv/bin/python
new_enough "$py" || die "$py is Python $(version_of "$py"), not >= 3.11: remove $venv and rerun"
"$py" -m pip --version >/dev/null 2>&1 || die "$venv has no pip: remove $venv and rerun"

# 4. The project, as docs/tpu.md installs it.
say "pip install -r requirements.txt -r requirements-tpu.txt"
"$py" -m pip install --quiet -r requirements.txt -r requirements-tpu.txt ||
    die "pip could not install requirements.txt + requirements-tpu.txt into $venv (see pip's message above)"
say "pip install --no-deps -e ."
"$py" -m pip install --quiet --no-deps -e . || die "pip install --no-deps -e . failed (see above)"

# 5. jax sees the TPU.
if ((check_tpu)); then
    say "checking that jax sees the TPU (timeout ${tpu_check_timeout} s)"
    report=$(timeout "$tpu_check_timeout" "$py" -c '
import jax
devices = jax.devices()
print("dog_jax-tpu-check", devices[0].platform, jax.device_count(), jax.local_device_count(), jax.__version__,
      devices[0].device_kind)
') || die "jax could not start on this VM (exit $?; 124 = still waiting after ${tpu_check_timeout} s, e.g. for the other workers of a multi-host slice)"
    read -r marker platform count local_count jax_version kind <<<"$(grep '^dog_jax-tpu-check ' <<<"$report" | tail -n 1)"
    [[ "${marker:-}" == dog_jax-tpu-check ]] || die "the jax check printed no result"
    [[ "$platform" == tpu ]] ||
        die "jax $jax_version sees no TPU (platform $platform): is libtpu installed (requirements-tpu.txt) and is the TPU free (another process holding /dev/accel*)?"
    say "ok: jax $jax_version sees $count TPU devices ($local_count on this worker, $kind); venv $PWD/$venv"
else
    say "ok: installed into $PWD/$venv (TPU check skipped)"
fi
