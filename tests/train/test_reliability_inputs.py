"""Damaged checkpoints, unwritable workdirs, non-finite losses, and bad inputs: one line each."""

import json
import os
import re

import jax
import numpy as np
import pytest
from absl import logging

from dog_jax import data, storage
from dog_jax.data import DatasetError
from dog_jax.train import train_and_evaluate
from dog_jax.train.checkpoint import CheckpointError
from dog_jax.train.reporting import NonFiniteError
from tests.support.checkpoints import load_state
from tests.support.configs import tiny_config


def small(data_dir, steps, **changes):
    c = tiny_config(data_dir, num_train_steps=steps, eval_every_steps=steps, checkpoint_every_steps=2, **changes)
    c.augment.mixup_alpha = c.augment.cutmix_alpha = 0.0
    return c


def _steps(workdir):
    return sorted(int(p.name) for p in storage.run_path(f"{workdir}/checkpoints").iterdir() if p.name.isdigit())


def _files(directory):
    """Every file under ``directory`` (local or gs://)."""
    return storage.files_under(directory)


def _one_line(error):
    message = str(error.value)
    assert "\n" not in message and message, message
    return message


@pytest.mark.parametrize("where", ["local", "bucket"])
def test_damaged_checkpoints_fall_back_then_stop_never_restart(tiny_data_dir, tmp_path, caplog, where, request):
    """The same in a local workdir and in a Cloud Storage bucket (a local server: tests/support/gcs_server)."""
    workdir = str(tmp_path / "run") if where == "local" else f"{request.getfixturevalue('bucket')}/run"
    train_and_evaluate(small(tiny_data_dir, 4), workdir)
    assert _steps(workdir) == [2, 4]
    # Truncate the largest array file of the latest checkpoint (a disk filled up / a copy cut short).
    largest = max(_files(f"{workdir}/checkpoints/4/state"), key=lambda p: p.stat().length)
    largest.write_bytes(largest.read_bytes()[:largest.stat().length // 2])

    caplog.set_level(logging.WARNING)
    resumed = train_and_evaluate(small(tiny_data_dir, 6), workdir)
    assert resumed["start_step"] == 2 and resumed["final_step"] == 6  # the previous good one, not 0
    warnings = [r.getMessage() for r in caplog.records if "is damaged" in r.getMessage()]
    assert len(warnings) == 1 and "step 4" in warnings[0] and "\n" not in warnings[0], warnings
    assert [p.name.split("-")[0] for p in storage.run_path(f"{workdir}/damaged_checkpoints").iterdir()] == ["4"]
    assert 4 in _steps(workdir) and 6 in _steps(workdir)  # step 4 was saved again after the fall-back

    # The same workdir with another architecture: refused, naming what differs.
    with pytest.raises(CheckpointError) as error:
        train_and_evaluate(small(tiny_data_dir, 8, model_overrides={"width": 8, "depth": 2, "kernel_size": 5}), workdir)
    assert "another model" in _one_line(error) and "width" in str(error.value) and "--workdir" in str(error.value)

    # Every checkpoint partly deleted: an error, never a silent restart from step 0.
    for step in _steps(workdir):
        for file in _files(f"{workdir}/checkpoints/{step}/state"):
            file.unlink()
    with pytest.raises(CheckpointError) as error:
        train_and_evaluate(small(tiny_data_dir, 8), workdir)
    assert "none of the checkpoints" in _one_line(error) and "step 0" in str(error.value)


def test_unwritable_workdir_fails_at_start_up(tiny_data_dir, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    with pytest.raises(CheckpointError) as error:
        train_and_evaluate(small(tiny_data_dir, 2), str(blocker / "run"))
    assert "is not writable" in _one_line(error) and "--workdir" in str(error.value)
    assert not (tmp_path / "tfds").exists()


@pytest.mark.parametrize("policy", ["stop", "skip"])
def test_nonfinite_policy(tiny_data_dir, tmp_path, policy):
    # Adam's first update moves every weight by ~lr: the head's logits overflow from step 2 on.
    c = small(tiny_data_dir, 4, nonfinite_policy=policy)
    c.optimizer.learning_rate = 1e38
    c.optimizer.warmup_epochs = 0.0
    c.log_every_steps = 4
    workdir = str(tmp_path / policy)
    if policy == "stop":
        with pytest.raises(NonFiniteError) as error:
            train_and_evaluate(c, workdir)
        message = _one_line(error)
        bad_step = int(re.search(r"at step (\d+);", message).group(1))
        assert bad_step >= 2 and re.search(r"training (loss|grad_norm) \((nan|inf|-inf)\)", message), message
        assert "nonfinite_policy='skip'" in message
        assert all(step < bad_step for step in _steps(workdir))  # a NaN state is never checkpointed
        return
    summary = train_and_evaluate(c, workdir)
    skipped = summary["skipped_steps"]
    assert summary["final_step"] == 4 and 1 <= skipped <= 3  # step 1 is finite (initial params)
    assert sum(h["skipped"] for h in summary["train_history"]) == skipped
    assert json.load(open(os.path.join(workdir, "summary.json")))["skipped_steps"] == skipped
    state = load_state(workdir, 4)
    assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(state["params"]))


def test_unknown_dataset_and_empty_folder(tmp_path):
    with pytest.raises(DatasetError) as error:
        data.get_builder("no_such_dataset_xyz", str(tmp_path))
    assert "Unknown dataset 'no_such_dataset_xyz'" in _one_line(error)
    (tmp_path / "empty" / "train").mkdir(parents=True)
    with pytest.raises(DatasetError) as error:
        data.get_builder(f"folder:{tmp_path / 'empty'}")
    assert "holds no images" in _one_line(error)


def test_corrupt_jpeg_in_image_folder_is_an_error_naming_the_file(tmp_path):
    import tensorflow as tf
    good = tf.io.encode_jpeg(tf.zeros((16, 16, 3), tf.uint8)).numpy()
    for split in ("train", "test"):
        for label in ("a", "b"):
            os.makedirs(tmp_path / split / label)
            for i in range(2):
                (tmp_path / split / label / f"{i}.jpg").write_bytes(good)
    data.get_builder(f"folder:{tmp_path}")  # all complete: fine
    (tmp_path / "train" / "b" / "1.jpg").write_bytes(good[: len(good) // 2])  # cut short
    (tmp_path / "test" / "a" / "0.jpg").write_bytes(b"<html>not an image</html>")
    with pytest.raises(DatasetError) as error:
        data.get_builder(f"folder:{tmp_path}")
    message = _one_line(error)
    assert f"{tmp_path}/test/a/0.jpg is damaged: not a JPEG" in message and "(and 1 more)" in message, message
