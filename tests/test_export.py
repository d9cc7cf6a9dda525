"""Sharing a trained model: restore_model, python -m dog_jax.export, and timm loading the export offline."""

import json
import os
import sys

import pytest

from tests.support.requires import TORCH, require

torch = require("torch", "torch is not installed", TORCH)
timm = require("timm", "timm is not installed", TORCH)

import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from dog_jax import models  # noqa: E402
from dog_jax.convert import load_torch_checkpoint  # noqa: E402
from dog_jax.export import export_model, timm_architecture  # noqa: E402
from dog_jax.timm_models import register_timm_models  # noqa: E402
from dog_jax.train import CheckpointError, base_config, restore_model  # noqa: E402
from dog_jax.train.run_spec import model_spec  # noqa: E402
from tests.support import subprocesses  # noqa: E402
from tests.support.console import third_party_info_lines  # noqa: E402
from tests.support.workdirs import saved_workdir, tiny_family_config  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# The models' forward pass compiled once per architecture: op by op (eager), a HorNet's few hundred
# primitives would each be compiled on first use, which took most of these tests' time.
_logits = nnx.jit(lambda model, x: model(x))

def _images(seed=0):
    return np.random.default_rng(seed).normal(size=(2, 32, 32, 3)).astype(np.float32)


def _pure(model, kind):
    return nnx.to_pure_dict(nnx.state(model, kind))


def test_restore_model_trained_and_ema_weights(tmp_path):
    config = tiny_family_config("convmixer", ema_decay=0.9)
    saved = saved_workdir(str(tmp_path / "run"), config)
    model, restored_config = restore_model(tmp_path / "run")
    assert restored_config.model_overrides.width == 16 and restored_config.ema_decay == 0.9
    params, stats = _pure(model, nnx.Param), _pure(model, nnx.BatchStat)
    np.testing.assert_array_equal(params["head"]["kernel"], saved["params"]["head"]["kernel"])
    np.testing.assert_array_equal(params["blocks"][1]["dw"]["kernel"],
                                  saved["params"]["blocks"][1]["dw"]["kernel"])
    saved_var = saved["batch_stats"]["blocks"][1]["pw_norm"]["var"]
    np.testing.assert_array_equal(stats["blocks"][1]["pw_norm"]["var"], saved_var)
    ema_model, _ = restore_model(tmp_path / "run", step=3, ema=True)
    ema_head = saved["ema"]["params"]["head"]["kernel"]
    np.testing.assert_array_equal(_pure(ema_model, nnx.Param)["head"]["kernel"], ema_head)
    assert not np.array_equal(ema_head, saved["params"]["head"]["kernel"])
    # Eval mode: BatchNorm normalises with the restored running statistics, so a batch of one
    # example gives the same logits as inside a larger batch.
    x = jnp.asarray(_images())
    np.testing.assert_allclose(np.asarray(_logits(model, x))[:1], np.asarray(_logits(model, x[:1])), rtol=1e-5,
                               atol=1e-6)

    with pytest.raises(CheckpointError, match=r"no checkpoint at step 7; saved steps: 3\.$"):
        restore_model(tmp_path / "run", step=7)
    with pytest.raises(CheckpointError, match="no such directory"):
        restore_model(tmp_path / "missing")


def test_restore_without_ema_is_one_line_error(tmp_path):
    saved_workdir(str(tmp_path / "run"), tiny_family_config("convmixer"))
    with pytest.raises(CheckpointError) as error:
        restore_model(tmp_path / "run", ema=True)
    assert str(error.value) == (f"{tmp_path / 'run'}: the run has no EMA weights (config.ema_decay was 0); "
                                "drop --ema / ema=True.")
    with pytest.raises(CheckpointError, match="no EMA weights"):
        export_model(tmp_path / "run", tmp_path / "out", ema=True)
    assert not (tmp_path / "out").exists()


def test_one_checkpoint_error_class():
    from dog_jax import checkpoints
    from dog_jax.analysis import CheckpointError as analysis_error
    from dog_jax.convert import CheckpointError as convert_error
    from dog_jax.train.checkpoint import CheckpointError as trainer_error

    assert trainer_error is checkpoints.CheckpointError is convert_error is analysis_error is CheckpointError


@pytest.mark.parametrize("family, dw_param",
                         [("convmixer", "free"), ("convnext", "free"), ("convnextv2", "basis")])
def test_export_loads_in_timm_with_equal_outputs(tmp_path, family, dw_param):
    config = tiny_family_config(family, dw_param=dw_param, ema_decay=0.9)
    saved_workdir(str(tmp_path / "run"), config)
    with open(tmp_path / "run" / "summary.json", "w") as f:  # what a finished run has
        json.dump({"final_step": 3, "final_eval": {"eval_top1": 0.25, "eval_top5": 0.75, "eval_loss": 2.0},
                   "best_eval": {"step": 3, "eval_top1": 0.25}, "eval_history": []}, f)
    out = export_model(tmp_path / "run", tmp_path / "export", ema=True,
                       command="python -m dog_jax.export run")
    model, _ = restore_model(tmp_path / "run", ema=True)

    hub = json.loads((out / "config.json").read_text())
    assert hub["num_classes"] == 10 and "model_args" in hub  # tiny sizes are not registered in timm
    cfg = hub["pretrained_cfg"]
    assert cfg["input_size"] == [3, 32, 32] and cfg["crop_pct"] == config.eval_crop_pct
    assert cfg["mean"] == [0.485, 0.456, 0.406] and cfg["std"] == [0.229, 0.224, 0.225]
    card = (out / "README.md").read_text()
    assert f"`dw_init`): `{config.dw_init}`" in card and f"`dw_param`): `{dw_param}`" in card
    assert "| final (step 3) | 0.2500 | 0.7500 | 2.0000 |" not in card  # final == exported step: not repeated
    assert "| best (step 3) | 0.2500 |" in card and "python -m dog_jax.export run" in card
    assert "model EMA's weights at step 3" in card

    register_timm_models()  # dog_jax_convmixer; a no-op for ConvNeXt
    reference = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
    x = _images()
    with torch.no_grad():
        expected = reference(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
    got = np.asarray(_logits(model, jnp.asarray(x)))
    assert np.abs(expected).max() > 0.5  # not a degenerate output
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_export_hornet_official_names_reload_into_dog_jax(tmp_path):
    config = tiny_family_config("hornet")
    saved_workdir(str(tmp_path / "run"), config)
    out = export_model(tmp_path / "run", tmp_path / "export")
    hub = json.loads((out / "config.json").read_text())
    assert hub["dog_jax"]["naming"] == "official" and not hub["dog_jax"]["timm_loadable"]
    card = (out / "README.md").read_text()
    assert "timm has no HorNet" in card and "depths=(1, 1, 2, 1), dims=(8, 16, 24, 32)" in card
    model, _ = restore_model(tmp_path / "run")
    mine = hub["dog_jax"]
    overrides = {k: tuple(v) if isinstance(v, list) else v for k, v in mine["model_overrides"].items()}
    reloaded = models.create_model(mine["model"], num_classes=hub["num_classes"], rngs=nnx.Rngs(1),
                                   **overrides)
    report = load_torch_checkpoint(reloaded, out / "model.safetensors")
    assert report.naming == "official" and report.ok
    reloaded.eval()
    x = jnp.asarray(_images(1))
    np.testing.assert_allclose(np.asarray(_logits(reloaded, x)), np.asarray(_logits(model, x)), rtol=1e-5, atol=1e-5)


def _model(name, **overrides):
    """The run spec's model of a config naming ``name`` with ``overrides``."""
    config = base_config()
    config.model = name
    config.model_overrides = ml_collections.ConfigDict(overrides)
    return model_spec(config)


def test_timm_architecture_routes():
    # Registered sizes export under their own name without model_args.
    assert timm_architecture(_model("convnext_atto")) == ("convnext_atto", {}, "timm")
    assert timm_architecture(_model("convmixer_768_32")) == ("convmixer_768_32", {}, "timm")
    for name in models.list_models("convnext"):
        assert timm.is_model(name), name  # every dog_jax ConvNeXt name is a timm architecture
    # The trap: timm's ConvMixer entrypoints fix their sizes, model_args cannot change them ...
    with pytest.raises(TypeError, match="multiple values for keyword argument 'dim'"):
        timm.create_model("convmixer_768_32", dim=16)
    # ... so the paper's ConvMixer (not in timm) and changed sizes use dog_jax_convmixer.
    architecture, args, _ = timm_architecture(_model("convmixer_768_32", depth=2))
    assert architecture == "dog_jax_convmixer" and args["depth"] == 2 and args["activation"] == "relu"
    assert timm_architecture(_model("convmixer_512_12"))[0] == "dog_jax_convmixer"  # tests/test_timm_models.py
    with pytest.raises(ValueError, match="mlp_ratio=2 cannot be exported for timm"):
        timm_architecture(_model("convnext_atto", mlp_ratio=2))


@pytest.mark.slow
def test_export_cli(tmp_path):
    saved_workdir(str(tmp_path / "run"), tiny_family_config("convnext"))
    command = [sys.executable, "-m", "dog_jax.export", str(tmp_path / "run"),
               "--out", str(tmp_path / "export")]
    result = subprocesses.run(command, timeout=subprocesses.TIMEOUT_S, cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": ROOT})
    assert result.returncode == 0, result.stderr
    assert not third_party_info_lines(result.stderr), result.stderr  # the default console
    assert sorted(os.listdir(tmp_path / "export")) == ["README.md", "config.json", "model.safetensors",
                                                       "training_config.json"]
    assert f"python -m dog_jax.export {tmp_path / 'run'} --out {tmp_path / 'export'}" in (
        tmp_path / "export" / "README.md").read_text()
    failed = subprocesses.run(command + ["--step", "9"], timeout=subprocesses.TIMEOUT_S, cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": ROOT})
    assert failed.returncode == 1
    last = failed.stderr.strip().splitlines()[-1]
    assert last == f"error: {tmp_path / 'run'}: no checkpoint at step 9; saved steps: 3."
