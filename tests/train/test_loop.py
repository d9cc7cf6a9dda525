"""The trainer end to end: mock ImageNet, the demo, CLI errors (resume on another device count:
tests/train/test_reliability_elastic.py)."""

import glob
import json
import os
import subprocess

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from dog_jax.train import train_and_evaluate
from tests.support import train_cli
from tests.support.configs import ROOT, load, write_imagenet_metadata

@pytest.mark.slow
def test_imagenet2012_code_path_under_mock_data(tmp_path):
    data_dir = str(tmp_path / "tfds")
    write_imagenet_metadata(data_dir)
    c = load("convmixer")  # the real ImageNet config: imagenet2012, RandAugment, mixup/CutMix, ...
    c.data_dir = data_dir
    c.model_overrides.width = 8
    c.model_overrides.depth = 1
    c.model_overrides.kernel_size = 3
    c.image_size = 28
    c.batch_size = 8
    c.num_train_steps = 2
    c.log_every_steps = 1
    c.precision = "bfloat16"
    with tfds.testing.mock_data(num_examples=24, data_dir=data_dir, policy=tfds.testing.MockPolicy.USE_FILES):
        summary = train_and_evaluate(c, str(tmp_path / "run"))
    assert summary["num_classes"] == 1000 and summary["final_step"] == 2
    assert summary["final_eval"]["eval_examples"] == 24
    assert np.isfinite(summary["train_history"][-1]["loss"])
    assert 0 < summary["cpu_time_s"] < 3600 and summary["wall_time_s"] > 0


@pytest.mark.slow
def test_demo_run_writes_checkpoints_logs_and_summary(tiny_data_dir, tmp_path):
    c = load("convmixer", "demo,dw_init=dog")
    c.dataset = "dog_jax_demo/tiny"
    c.data_dir = tiny_data_dir
    c.model_overrides.width, c.model_overrides.depth = 16, 2  # the demo recipe; top-1 ~0.4 at 40 steps
    c.num_train_steps = 40
    c.batch_size = 64
    c.log_every_steps = 10
    workdir = str(tmp_path / "demo")
    summary = train_and_evaluate(c, workdir)
    written = json.load(open(os.path.join(workdir, "summary.json")))
    assert written["final_step"] == 40 and written["config"]["dw_init"] == "dog"
    assert written["final_eval"]["eval_examples"] == 96
    assert summary["final_eval"]["eval_top1"] > 0.2  # chance is 0.1
    losses = [h["loss"] for h in summary["train_history"]]
    assert losses[-1] < losses[0]
    assert json.load(open(os.path.join(workdir, "config.json")))["model"] == "convmixer_512_12"
    events = glob.glob(os.path.join(workdir, "tensorboard", "events.out.tfevents.*"))
    tags = {value.tag for path in events for event in tf.compat.v1.train.summary_iterator(path)
            for value in event.summary.value}
    assert {"train/loss", "train/learning_rate", "train/grad_norm", "eval/top1", "eval/top5"} <= tags
    steps = sorted(int(s) for s in os.listdir(os.path.join(workdir, "checkpoints")) if s.isdigit())
    assert steps[-1] == 40 and len(steps) <= c.keep_checkpoints + 1
    model_json = json.load(open(os.path.join(workdir, "checkpoints", "40", "model", "metadata")))
    assert model_json["model"] == "convmixer_512_12" and model_json["num_classes"] == 10
    assert model_json["dw_kernel_size"] == c.model_overrides.get("kernel_size", 9)  # convmixer_512_12: 9x9
    check_provenance(workdir, c, expected_depthwise=c.model_overrides.depth)
    # Rerunning the finished run resumes at the end and only evaluates.
    again = train_and_evaluate(c, workdir)
    assert again["start_step"] == 40 and again["final_eval"]["eval_top1"] == summary["final_eval"]["eval_top1"]
    assert "provenance_earlier" not in again  # resumed by the same code


def check_provenance(workdir, config, *, expected_depthwise):
    """config.json and summary.json of a finished run name the code, libraries, kernels and devices."""
    import jax

    from dog_jax.ops.native import NATIVE_AVAILABLE

    record = json.load(open(os.path.join(workdir, "config.json")))["provenance"]
    assert json.load(open(os.path.join(workdir, "summary.json")))["provenance"] == record
    head = subprocess.run(["git", "-C", ROOT, "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode == 0:  # a git checkout: its commit; else the installed package's version
        status = subprocess.run(["git", "-C", ROOT, "status", "--porcelain"], capture_output=True, text=True)
        assert record["code"] == {"commit": head.stdout.strip(), "dirty": bool(status.stdout.strip())}
    else:
        assert record["code"]["package_version"] == "0.1.0"
    assert record["packages"]["jax"] == jax.__version__ and record["packages"]["flax"]
    assert set(record["packages"]) == {"jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "tensorflow-datasets"}
    assert record["native_kernels"]["available"] == NATIVE_AVAILABLE
    assert record["devices"] == {"platform": "cpu", "kind": jax.devices()[0].device_kind,
                                 "count": jax.device_count(), "processes": 1}
    choices = record["auto_choices"]
    assert sum(choices["depthwise"].values()) == expected_depthwise  # every depthwise layer, traced once
    if config.model.startswith("convmixer"):
        assert set(choices) == {"depthwise", "batch_norm"}
    if config.model.startswith("convmixer") and NATIVE_AVAILABLE and jax.device_count() == 1:
        grid = config.image_size // config.model_overrides.patch_size  # ConvMixer's one map size
        if grid > config.model_overrides.kernel_size and config.precision == "float32":
            assert choices["depthwise"] == {"native": expected_depthwise}  # auto.py's rule for this shape


@pytest.mark.parametrize("flag, expected", [
    ("--config.model=convmixer_9000", "error: config.model: Unknown model 'convmixer_9000'"),
    ("--config.no_such_key=1", "error: unknown config field"),
    ("--config.batch_size=lots", "error: flag --config.batch_size=lots"),
])
def test_cli_errors_are_one_line(tmp_path, monkeypatch, flag, expected):
    """train.py's flag parsing and main() in this process: each error ends the run with one line
    (``SystemExit(message)``: Python prints the message alone and exits with 1), no traceback."""
    argv = ["train.py", "--config=" + os.path.join(ROOT, "configs/convmixer.py:demo"), flag, f"--workdir={tmp_path}"]
    message = train_cli.exit_message(monkeypatch, argv)
    assert isinstance(message, str) and message.startswith(expected) and "\n" not in message, message
    assert flag.split("=")[0].split(".")[-1] in message  # names the field
