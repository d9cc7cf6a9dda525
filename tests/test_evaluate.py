"""Eval-only (python -m dog_jax.evaluate): a workdir reproduces the trainer's own eval, its export
evaluates the same, and a PyTorch checkpoint of a timm ConvNeXt is evaluated on (mock) ImageNet."""

import json
import os
import sys

import pytest

import numpy as np  # noqa: E402
import tensorflow_datasets as tfds  # noqa: E402

from dog_jax import data, provenance  # noqa: E402
from dog_jax.data import device_augment  # noqa: E402
from dog_jax.evaluate import evaluate_checkpoint  # noqa: E402
from dog_jax.export import export_model  # noqa: E402
from dog_jax.train import CheckpointError, ConfigError, train_and_evaluate  # noqa: E402
from dog_jax.train.restore import find_checkpoint  # noqa: E402
from tests.support import subprocesses  # noqa: E402
from tests.support.console import third_party_info_lines  # noqa: E402
from tests.support.configs import ROOT, load, tiny_config, write_imagenet_metadata  # noqa: E402
from tests.support.requires import TORCH, require  # noqa: E402

_METRICS = ("eval_top1", "eval_top5", "eval_loss", "eval_examples")


@pytest.mark.slow
def test_evaluate_workdir_equals_the_trainers_eval_and_its_export(tiny_data_dir, tmp_path):
    workdir = str(tmp_path / "run")
    config = tiny_config(tiny_data_dir, num_train_steps=2, eval_every_steps=2, ema_decay=0.5)
    trainer = train_and_evaluate(config, workdir)["final_eval"]

    result = evaluate_checkpoint(workdir)  # the trained weights and, as the trainer does, the EMA
    assert result["step"] == 2 and result["split"] == "test" and result["weights"] == "trained"
    assert result["eval_examples"] == trainer["eval_examples"]
    for prefix in ("eval", "eval_ema"):
        assert result[f"{prefix}_top1"] == trainer[f"{prefix}_top1"]
        np.testing.assert_allclose(result[f"{prefix}_loss"], trainer[f"{prefix}_loss"], rtol=1e-6)
    assert result["eval_ema_loss"] != result["eval_loss"]
    ema_only = evaluate_checkpoint(workdir, ema=True)
    assert ema_only["weights"] == "ema" and "eval_ema_loss" not in ema_only
    np.testing.assert_allclose(ema_only["eval_loss"], trainer["eval_ema_loss"], rtol=1e-6)

    # Both name the code: the evaluation's own record (eval-mode auto choices) and the run's.
    trained_by = json.loads((tmp_path / "run" / "config.json").read_text())["provenance"]
    assert result["training_provenance"] == {"provenance": trained_by}
    assert result["provenance"]["code"] == trained_by["code"] and result["provenance"]["packages"]
    assert set(result["provenance"]["auto_choices"]) == {"depthwise"}  # eval mode: BatchNorm uses its statistics
    assert sum(result["provenance"]["auto_choices"]["depthwise"].values()) == config.model_overrides.depth

    # The exported timm-named file, evaluated with the run's config, gives the same numbers.
    export_model(workdir, tmp_path / "export")
    made_by = json.loads((tmp_path / "export" / "config.json").read_text())["dog_jax"]["provenance"]
    assert made_by["training"] == trained_by and made_by["export"]["code"] == trained_by["code"]
    card = (tmp_path / "export" / "README.md").read_text()
    assert f"- trained by: dog_jax `{provenance.code_label(trained_by)}`; " in card
    assert "- exported by: dog_jax `" in card
    exported = tmp_path / "export" / "model.safetensors"
    from_file = evaluate_checkpoint(exported, config=find_checkpoint(workdir).config)
    assert from_file["weights"] == "file (timm names)" and from_file["step"] is None
    for key in _METRICS:
        np.testing.assert_allclose(from_file[key], trainer[key], rtol=1e-5, err_msg=key)

    with pytest.raises(ConfigError, match="is a workdir, which evaluates with its own config"):
        evaluate_checkpoint(workdir, config=tiny_config(tiny_data_dir))
    with pytest.raises(CheckpointError, match="a checkpoint file holds no model or data settings; pass"):
        evaluate_checkpoint(exported)

    # The command line: default output <workdir>/eval/<split>_step<N>.json, one summary line.
    command = [sys.executable, "-m", "dog_jax.evaluate", f"--checkpoint={workdir}", "--split=test[:40]",
               "--batch_size=8"]
    result = subprocesses.run(command, timeout=subprocesses.TIMEOUT_S, cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": ROOT})
    assert result.returncode == 0, result.stderr
    assert not third_party_info_lines(result.stderr), result.stderr  # the default console
    written = json.loads((tmp_path / "run" / "eval" / "test__40__step2.json").read_text())
    assert written["eval_examples"] == 40 and written["split"] == "test[:40]" and written["batch_size"] == 8
    assert "dog_jax_demo/tiny:test[:40] (40 examples): top-1" in result.stdout


def _timm_oracle(model, eval_ds):
    """top-1 / top-5 / mean loss of a timm model on the same eval batches (PyTorch, NCHW)."""
    import torch

    correct1 = correct5 = loss = count = 0.0
    for batch in eval_ds.as_numpy_iterator():
        with torch.no_grad():
            images = np.asarray(device_augment.normalize(batch["image"]))  # what the eval step feeds the model
            logits = model(torch.from_numpy(images.transpose(0, 3, 1, 2).copy()))
        labels = torch.from_numpy(batch["label"].astype(np.int64))
        mask = torch.from_numpy(batch["mask"].copy())
        top5 = logits.topk(5, dim=-1).indices
        correct1 += float(((top5[:, 0] == labels) * mask).sum())
        correct5 += float(((top5 == labels[:, None]).any(-1) * mask).sum())
        loss += float((torch.nn.functional.cross_entropy(logits, labels, reduction="none") * mask).sum())
        count += float(mask.sum())
    return {"eval_top1": correct1 / count, "eval_top5": correct5 / count, "eval_loss": loss / count,
            "eval_examples": count}


def test_evaluate_a_timm_pytorch_checkpoint_on_mock_imagenet(tmp_path):
    torch, timm = require("torch", "torch is not installed", TORCH), require("timm", "timm is not installed", TORCH)
    data_dir = str(tmp_path / "tfds")
    write_imagenet_metadata(data_dir, validation=20)
    config = load("convnext", "model=convnext_atto")  # the ImageNet config: imagenet2012, 1000 classes
    config.model_overrides.depths, config.model_overrides.dims = (1, 1, 1, 1), (8, 16, 24, 32)
    config.data_dir, config.image_size, config.batch_size = data_dir, 32, 8
    # Layer scale 1 instead of 1e-6: every block matters.
    reference = timm.create_model("convnext_atto", depths=(1, 1, 1, 1), dims=(8, 16, 24, 32),
                                  num_classes=1000, ls_init_value=1.0).eval()
    torch.save(reference.state_dict(), tmp_path / "convnext.pth")
    with tfds.testing.mock_data(num_examples=20, data_dir=data_dir, policy=tfds.testing.MockPolicy.USE_FILES):
        result = evaluate_checkpoint(tmp_path / "convnext.pth", config=config)
        builder = data.get_builder("imagenet2012", data_dir)
        eval_ds = data.eval_dataset(data.local_source(builder, "validation", shard_index=0, shard_count=1,
                                                      drop_remainder=False),
                                    local_batch_size=8, image_size=32, crop_pct=config.eval_crop_pct,
                                    num_batches=3)
        expected = _timm_oracle(reference, eval_ds)
    assert result["split"] == "validation" and result["dataset"] == "imagenet2012"
    assert result["weights"] == "file (timm names)" and expected["eval_examples"] == 20
    for key in _METRICS:
        np.testing.assert_allclose(result[key], expected[key], rtol=1e-4, err_msg=key)

    config.model_overrides.dims = (8, 16, 24, 40)
    with pytest.raises(CheckpointError, match="convnext.pth: State dict does not match this ConvNeXt"):
        evaluate_checkpoint(tmp_path / "convnext.pth", config=config)
