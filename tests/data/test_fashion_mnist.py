"""Fashion-MNIST offline: tfds's own builder prepared from Debian's dataset-fashion-mnist files,
a few real training steps on it, and the one-line error when the files are missing."""

import os

import numpy as np
import pytest
import tensorflow as tf

from dog_jax import data
from dog_jax.data import fashion_mnist
from dog_jax.train import train_and_evaluate
from tests.support.configs import load
from tests.support.requires import require
from tests.support.shared import once


def require_packaged_files(files_dir=fashion_mnist.PACKAGED_DIR):
    """Debian's files where present. Elsewhere a skip saying how to get them -- except under CI
    (CI=true, which .ci/run sets and where it installs the package): there their absence fails."""
    require(fashion_mnist.packaged_files_present(files_dir), f"Fashion-MNIST files absent from {files_dir}",
            fashion_mnist.INSTALL_HINT)


@pytest.fixture(scope="module")
def fashion_data_dir():
    """Fashion-MNIST prepared (70,000 images, ~16 s) once per pytest run for every worker
    (tests/support/shared.py): read-only."""
    require_packaged_files()

    def prepare(directory: str) -> None:
        data.get_builder("fashion_mnist", directory)

    return once("tfds_fashion_mnist", prepare)[0]


def test_prepared_offline_into_tfds_own_builder(fashion_data_dir):
    import tensorflow_datasets as tfds

    builder = tfds.builder("fashion_mnist", data_dir=fashion_data_dir)  # tfds's own, not ours
    assert builder.is_prepared() and type(builder).__module__.startswith("tensorflow_datasets")
    assert builder.info.splits["train"].num_examples == 60_000 and builder.info.splits["test"].num_examples == 10_000
    assert data.num_classes(builder) == 10
    examples = list(tfds.as_numpy(builder.as_dataset(split="test[:200]")))
    labels = np.array([example["label"] for example in examples])
    images = np.stack([example["image"] for example in examples])
    assert images.shape == (200, 28, 28, 1) and images.dtype == np.uint8
    assert len(set(labels)) == 10 and 20 < images.mean() < 120  # real photos: dark background, varied items
    # The training pipeline decodes the stored PNGs with three equal channels.
    source = data.local_source(builder, "test[:4]", shard_index=0, shard_count=1, drop_remainder=False)
    image = tf.io.decode_image(next(iter(source.dataset))["image"], channels=3).numpy()
    assert image.shape == (28, 28, 3) and np.array_equal(image[..., 0], image[..., 2])


def test_trains_a_few_steps_on_the_real_images(fashion_data_dir, tmp_path):
    config = load("paper", "table2_gamma0-0.5_onoff,fashion_mnist")
    assert config.dataset == "fashion_mnist" and config.image_size == 32
    config.data_dir = fashion_data_dir
    config.model_overrides.width, config.model_overrides.depth = 16, 2
    config.batch_size, config.num_train_steps, config.log_every_steps = 32, 4, 2
    config.eval_split, config.eval_every_steps, config.cache_data = "test[:256]", 4, False
    summary = train_and_evaluate(config, str(tmp_path / "run"))
    assert summary["final_step"] == 4 and summary["num_classes"] == 10
    assert summary["final_eval"]["eval_examples"] == 256
    assert all(np.isfinite(entry["loss"]) for entry in summary["train_history"])


@pytest.mark.parametrize("ci, outcome", [("", pytest.skip.Exception), ("true", pytest.fail.Exception)])
def test_absent_files_skip_with_the_hint_or_fail_under_ci(tmp_path, monkeypatch, ci, outcome):
    monkeypatch.setenv("CI", ci)
    with pytest.raises(outcome) as info:
        require_packaged_files(str(tmp_path))  # an empty directory
    assert "apt-get install dataset-fashion-mnist" in str(info.value) and "\n" not in str(info.value)


def test_missing_files_without_network_is_one_line_naming_the_package(tmp_path, monkeypatch):
    import tensorflow_datasets as tfds

    def offline(self, *args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", offline)
    with pytest.raises(data.DatasetError) as error:
        fashion_mnist.prepare(str(tmp_path), files_dir=os.path.join(str(tmp_path), "absent"))
    message = str(error.value)
    assert "\n" not in message and "apt-get install dataset-fashion-mnist" in message and "no network" in message


def test_demo_without_dog_classes_is_the_demo_minus_two_classes(tmp_path):
    import tensorflow_datasets as tfds

    from dog_jax.data import demo_dataset

    builder = tfds.builder("dog_jax_demo/no_dog", data_dir=str(tmp_path))
    names = builder.info.features["label"].names
    assert len(names) == 8 and not set(names) & set(demo_dataset.DOG_CLASSES)
    kept = list(builder._generate_examples("test", 40))  # the generator only: no preparation needed
    full = list(demo_dataset.generate_split("test", 0, 40))
    assert len(kept) == 32  # 40 images, 10 balanced classes, 2 left out
    by_index = {index: (image, label) for index, image, label in full}
    for index, example in kept:
        image, label = by_index[index]
        assert demo_dataset.CLASS_NAMES[label] == names[example["label"]]  # relabelled, same class
        np.testing.assert_array_equal(example["image"], image)  # the same image
