"""Dataset sources and tf.data pipelines: demo dataset, determinism/resume, eval padding, errors."""

import os
import re

import numpy as np
import pytest
import tensorflow as tf

from dog_jax import data
from dog_jax.data import demo_dataset


@pytest.fixture(scope="module")
def tiny_builder(tiny_data_dir):
    """The builder of tests/conftest.py's tiny demo dataset (prepared there)."""
    return data.get_builder("dog_jax_demo/tiny", tiny_data_dir)


def test_demo_images_are_deterministic_and_classes_differ_by_structure_not_colour():
    first = list(demo_dataset.generate_split("train", 0, 1500))
    again = list(demo_dataset.generate_split("train", 0, 50))
    for (_, a, la), (_, b, lb) in zip(first, again):
        np.testing.assert_array_equal(a, b)
        assert la == lb
    images = np.stack([image for _, image, _ in first]).astype(np.float32)
    labels = np.array([label for _, _, label in first])
    assert images.shape == (1500, 32, 32, 3) and len(set(labels)) == 10
    # Mean colour carries no class information: a nearest-class-mean classifier on the mean
    # RGB of an image stays near chance (10 %) on held-out images.
    colour = images.mean(axis=(1, 2))
    centroids = np.stack([colour[:1000][labels[:1000] == c].mean(0) for c in range(10)])
    predicted = np.argmin(((colour[1000:, None] - centroids[None]) ** 2).sum(-1), axis=1)
    assert np.mean(predicted == labels[1000:]) < 0.2
    # Train and test never share an image.
    test_image = next(demo_dataset.generate_split("test", 0, 1))[1]
    assert not any(np.array_equal(test_image, image) for _, image, _ in first[:10])


def test_demo_builder_prepares_without_download(tiny_builder):
    assert data.num_classes(tiny_builder) == 10
    assert data.split_size(tiny_builder, "train") == 1200 and data.split_size(tiny_builder, "test") == 96


def _train(builder, start_step=0, seed=0):
    source = data.local_source(builder, "train[:200]", shard_index=0, shard_count=1, drop_remainder=True)
    augmentation = data.TrainAugmentation(image_size=24, crop_area_range=(0.3, 1.0))
    return data.train_dataset([source], shard_indices=[0], shard_batch_size=40, augmentation=augmentation,
                              seed=seed, start_step=start_step)


def test_train_stream_is_a_function_of_the_step(tiny_builder):
    batches = [b for _, b in zip(range(8), _train(tiny_builder).as_numpy_iterator())]  # 8 steps > 1 epoch of 5.
    # Exactly the entries, shapes and dtypes of batch_spec (what the AOT compile lowers for): uint8 pixels.
    spec = data.batch_spec(24, train=True, random_erasing=True)
    assert {key: (value.shape[1:], value.dtype) for key, value in batches[0].items()} == spec
    assert batches[0]["image"].dtype == np.uint8 and batches[0]["image"].shape == (40, 24, 24, 3)
    assert data.batch_bytes(40, 24, train=True, random_erasing=True) == sum(v.nbytes for v in batches[0].values())
    # Resume mid-epoch and in the next epoch: identical pixels and labels.
    for start in (3, 6):
        resumed = next(_train(tiny_builder, start_step=start).as_numpy_iterator())
        for key in ("image", "label", "erase_box"):  # the erasing boxes too: the fill's only host part
            np.testing.assert_array_equal(resumed[key], batches[start][key])
    # Shuffle then repeat: the first epoch (5 batches) is a permutation of the 200 examples.
    source = data.local_source(tiny_builder, "train[:200]", shard_index=0, shard_count=1, drop_remainder=True)
    source_labels = np.array([ex["label"] for ex in source.dataset.as_numpy_iterator()])
    labels = np.concatenate([b["label"] for b in batches[:5]])
    np.testing.assert_array_equal(np.bincount(labels, minlength=10), np.bincount(source_labels, minlength=10))
    # The second epoch is a different permutation; a different seed a different order.
    assert not np.array_equal(batches[5]["label"], batches[0]["label"])
    other = next(_train(tiny_builder, seed=1).as_numpy_iterator())
    assert not np.array_equal(other["label"], batches[0]["label"])


def _sharded_batches(builder, shard_indices, *, steps, start_step=0):
    """This process's batches when it owns the devices ``shard_indices`` of 4 (5 examples per device)."""
    sources = [data.local_source(builder, "train[:200]", shard_index=d, shard_count=4, drop_remainder=True)
               for d in shard_indices]
    stream = data.train_dataset(sources, shard_indices=shard_indices, shard_batch_size=5, seed=3,
                                start_step=start_step, shuffle_buffer=50,
                                augmentation=data.TrainAugmentation(image_size=16, rand_augment=""))
    return [b for _, b in zip(range(steps), stream.as_numpy_iterator())]


def test_global_batch_does_not_depend_on_how_devices_are_spread_over_processes(tiny_builder):
    # 12 steps = 1.2 epochs of a 50-example device shard.
    one_process = _sharded_batches(tiny_builder, [0, 1, 2, 3], steps=12)
    two_processes = [_sharded_batches(tiny_builder, blocks, steps=12) for blocks in ([0, 1], [2, 3])]
    four_processes = [_sharded_batches(tiny_builder, [d], steps=12) for d in range(4)]
    for step, batch in enumerate(one_process):
        assert batch["image"].shape == (20, 16, 16, 3)
        for key in ("image", "label"):
            np.testing.assert_array_equal(
                batch[key], np.concatenate([two_processes[0][step][key], two_processes[1][step][key]]))
            np.testing.assert_array_equal(batch[key], np.concatenate([p[step][key] for p in four_processes]))
    # Block d of every batch comes from device shard d: an epoch of block d is a permutation of shard d.
    for d in range(4):
        shard = data.local_source(tiny_builder, "train[:200]", shard_index=d, shard_count=4, drop_remainder=True)
        labels = np.concatenate([b["label"][5 * d:5 * d + 5] for b in one_process[:10]])
        expected = [ex["label"] for ex in shard.dataset.as_numpy_iterator()]
        np.testing.assert_array_equal(np.sort(labels), np.sort(expected))
    # Blocks of different shards are not copies of one another (each shard has its own order and seeds).
    assert not np.array_equal(one_process[0]["image"][:5], one_process[0]["image"][5:10])
    # Resuming with several local shards continues every shard where it was.
    resumed = _sharded_batches(tiny_builder, [2, 3], steps=2, start_step=10)
    for offset in range(2):
        np.testing.assert_array_equal(resumed[offset]["image"], one_process[10 + offset]["image"][10:])


def test_processes_read_disjoint_shards(tiny_builder):
    counts = []
    labels = []
    for index in range(2):
        source = data.local_source(tiny_builder, "test", shard_index=index, shard_count=2, drop_remainder=False)
        counts.append(source.num_examples)
        labels.append([ex["image"] for ex in source.dataset.as_numpy_iterator()])
    assert counts == [48, 48]
    assert not set(labels[0]) & set(labels[1])


def test_eval_stream_covers_every_example_once_with_padding(tiny_builder):
    source = data.local_source(tiny_builder, "test", shard_index=0, shard_count=1, drop_remainder=False)
    num_batches = data.eval_num_batches(96, 1, 40)
    assert num_batches == 3
    batches = list(data.eval_dataset(source, local_batch_size=40, num_batches=num_batches, image_size=32,
                                     crop_pct=1.0).as_numpy_iterator())
    spec = data.batch_spec(32, train=False)
    assert {key: (value.shape[1:], value.dtype) for key, value in batches[0].items()} == spec
    masks = np.concatenate([b["mask"] for b in batches])
    assert len(batches) == 3 and masks.sum() == 96 and masks[:96].all() and not masks[96:].any()
    again = list(data.eval_dataset(source, local_batch_size=40, num_batches=num_batches, image_size=32,
                                   crop_pct=1.0).as_numpy_iterator())
    np.testing.assert_array_equal(batches[0]["image"], again[0]["image"])


def test_unknown_dataset_is_one_clear_line(tmp_path):
    with pytest.raises(data.DatasetError, match="Unknown dataset 'imagenet2013'") as info:
        data.get_builder("imagenet2013", str(tmp_path))
    assert "\n" not in str(info.value)


def test_missing_imagenet_says_where_the_files_go(tmp_path):
    with pytest.raises(data.DatasetError) as info:
        data.get_builder("imagenet2012", str(tmp_path))
    message = str(info.value)
    manual = os.path.join(str(tmp_path), "downloads", "manual")
    assert "\n" not in message
    assert f"ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar are missing from {manual}" in message
    assert re.search(rf"tfds build imagenet2012 --data_dir={re.escape(str(tmp_path))} --manual_dir=", message)


def test_image_folder_source(tmp_path):
    rng = np.random.default_rng(0)
    for split, count in (("train", 6), ("val", 3)):
        for label in ("cat", "dog"):
            os.makedirs(tmp_path / split / label)
            for i in range(count):
                image = rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)
                tf.io.write_file(str(tmp_path / split / label / f"{i}.jpg"), tf.io.encode_jpeg(image))
    builder = data.get_builder(f"folder:{tmp_path}")
    assert data.num_classes(builder) == 2 and data.split_size(builder, "train") == 12
    source = data.local_source(builder, "train", shard_index=1, shard_count=2, drop_remainder=True)
    assert source.num_examples == 6 and len(list(source.dataset)) == 6
    batch = next(data.train_dataset([source], shard_indices=[1], shard_batch_size=4, seed=0,
                                    augmentation=data.TrainAugmentation(image_size=16)).as_numpy_iterator())
    assert batch["image"].shape == (4, 16, 16, 3)
    with pytest.raises(data.DatasetError, match="does not exist"):
        data.get_builder(f"folder:{tmp_path}/nowhere")
