"""dog_jax.provenance: which code made a result (commit or package version, auto choices, labels),
and how a resumed run keeps the records of earlier starts made by other code."""

import json
import subprocess

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from dog_jax import models, provenance
from dog_jax.ops.auto import Target
from dog_jax.train.run_provenance import earlier_starts, split_config_json
from tests.support.git import committed_repo


@pytest.fixture
def checkout(tmp_path):
    """A git repository holding a package ``dog_jax`` (just its __init__.py), committed."""
    repo = tmp_path / "repo"
    committed_repo(repo, {"dog_jax/__init__.py": "", ".gitignore": "*.so\n"})
    return repo


def test_code_version_of_a_checkout_and_its_dirty_flag(checkout):
    package = checkout / "dog_jax"
    head = subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True, text=True)
    assert provenance.code_version(package) == {"commit": head.stdout.strip(), "dirty": False}
    (package / "_native.so").write_text("")  # ignored build output: still clean
    assert provenance.code_version(package)["dirty"] is False
    (package / "new_module.py").write_text("")  # untracked code: dirty
    assert provenance.code_version(package)["dirty"] is True
    (package / "new_module.py").unlink()
    (package / "__init__.py").write_text("x = 1\n")  # a changed tracked file: dirty
    assert provenance.code_version(package)["dirty"] is True


def test_code_version_outside_a_checkout_is_the_package_version(tmp_path, checkout):
    loose = tmp_path / "site-packages" / "dog_jax"
    loose.mkdir(parents=True)
    assert provenance.code_version(loose) == {"package_version": "0.1.0"}
    # A package lying inside some other repository, untracked there, is no checkout of dog_jax either.
    inside = checkout / "vendor" / "dog_jax"
    inside.mkdir(parents=True)
    assert provenance.git_checkout(inside) is None


def _tiny_convnext():
    return nnx.eval_shape(lambda: models.create_model("convnext_atto", num_classes=10, depths=(1, 1, 1, 1),
                                                      dims=(8, 16, 24, 32), rngs=nnx.Rngs(0)))


def test_auto_choices_depend_on_the_compile_target():
    model = _tiny_convnext()
    tpu = provenance.auto_choices(model, (2, 32, 32, 3), jnp.float32, target=Target("tpu", 8))
    assert tpu == {"depthwise": {"xla": 4}, "layer_norm": {"xla": sum(tpu["layer_norm"].values())}}
    cpu = provenance.auto_choices(model, (2, 32, 32, 3), jnp.float32, target=Target("cpu", 1))
    assert sum(cpu["depthwise"].values()) == 4 and "xla" not in cpu["depthwise"]
    # 32 px with a patch-4 stem: the last stage's 1x1 map is smaller than the 7x7 kernel.
    assert cpu["depthwise"].get("toeplitz", 0) >= 1


def test_record_and_labels():
    record = provenance.record({"depthwise": {"native": 3, "toeplitz": 1}})
    assert set(record) == {"code", "packages", "native_kernels", "auto_choices", "devices"}
    assert record["packages"]["jax"] == jax.__version__
    assert record["devices"]["count"] == jax.device_count()
    assert provenance.code_label({"code": {"commit": "0123456789abcdef", "dirty": True}}) == "0123456789+dirty"
    assert provenance.code_label({"code": {"package_version": "0.1.0"}}) == "dog_jax 0.1.0"
    assert provenance.code_label(None) == "unrecorded"
    record["native_kernels"]["available"] = True
    assert provenance.impl_label(record) == "native; depthwise native×3 toeplitz×1"


def test_a_resume_by_other_code_keeps_the_earlier_records(tmp_path):
    first = {"code": {"commit": "a" * 40, "dirty": False}, "auto_choices": {"depthwise": {"shift": 4}}}
    second = {**first, "code": {"commit": "b" * 40, "dirty": False}}
    config_file = tmp_path / "config.json"
    assert earlier_starts(str(config_file), first) == []  # no earlier start
    config_file.write_text(json.dumps({"model": "m", "provenance": first}))
    assert earlier_starts(str(config_file), first) == []  # resumed by the same code
    assert earlier_starts(str(config_file), second) == [first]
    config_file.write_text(json.dumps({"model": "m", "provenance": second, "provenance_earlier": [first]}))
    third = {**first, "auto_choices": {"depthwise": {"native": 4}}}  # same commit, other kernels
    assert earlier_starts(str(config_file), third) == [first, second]
    assert earlier_starts(str(config_file), first) == [second]
    assert split_config_json({"model": "m", "provenance": first}) == ({"model": "m"}, {"provenance": first})
