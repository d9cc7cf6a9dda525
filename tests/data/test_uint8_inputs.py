"""uint8 batches normalised on the device equal the float32 pipeline they replaced.

The float32 reference is that pipeline's per-example chain, rebuilt here from the same ops and the
same stateless seeds: crop (float) -> flip -> RandAugment (which rounded its input) -> (x - mean) / std.
Tolerances: where RandAugment ran, the float pipeline had rounded at the same place, so the two
agree to float32 rounding (1e-6). Elsewhere (eval; training without RandAugment) the uint8 path
rounds the resized crop to whole grey levels: at most 0.5 grey level, i.e. 0.5 / std_c in
normalised units (0.0087 for the green channel, std 0.224 * 255), and about 0.25 grey level on
average.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf

from dog_jax import data
from dog_jax.data import augment, device_augment, pipeline, randaugment
from dog_jax.train import optim, sharding, steps
from tests.support.models import tiny_convmixer

_MEAN = np.float32(device_augment.IMAGENET_MEAN)
_STD = np.float32(device_augment.IMAGENET_STD)
_ROUNDING_BOUND = 0.5 / _STD + 1e-5  # per channel, normalised units


def _encoded_images(count=12, seed=0):
    """JPEGs and PNGs of smooth random colour fields of varying sizes (photo-like: the resize
    produces non-integer pixels almost everywhere)."""
    rng = np.random.default_rng(seed)
    encoded = []
    for index in range(count):
        height, width = int(rng.integers(30, 60)), int(rng.integers(30, 60))
        coarse = rng.uniform(0, 255, (height // 8 + 2, width // 8 + 2, 3)).astype(np.float32)
        pixels = tf.cast(tf.clip_by_value(tf.image.resize(coarse[None], (height, width), "bicubic")[0], 0, 255),
                         tf.uint8)
        encoded.append((tf.io.encode_jpeg if index % 2 else tf.io.encode_png)(pixels).numpy())
    return encoded


def _source(encoded):
    """Labels are the example indices, so a batch row names the example it came from."""
    labels = np.arange(len(encoded), dtype=np.int32)
    return data.Source(tf.data.Dataset.from_tensor_slices({"image": encoded, "label": labels}), len(encoded))


def _float_train_pipeline(augmentation, seed):
    """``f(image bytes, stream position) -> (pixels, erasing box)``: the float32 pipeline's training
    example at that position of shard 0, before normalisation (one traced graph: RandAugment is
    slow eagerly)."""
    spec = randaugment.parse_rand_augment(augmentation.rand_augment) if augmentation.rand_augment else None
    size = augmentation.image_size

    @tf.function
    def example(image_bytes, row):
        seeds = tf.random.experimental.stateless_split(pipeline._example_seed(seed, tf.constant(0, tf.int64), row), 4)
        image = augment.decode_and_random_crop(image_bytes, seeds[0], size, area_range=augmentation.crop_area_range,
                                               ratio_range=augmentation.crop_ratio_range)
        image = augment.random_flip_left_right(image, seeds[1])
        if spec is not None:
            image = randaugment.rand_augment(tf.round(image), seeds[2], spec)
        return image, augment.erasing_box(seeds[3], size, size, probability=augmentation.random_erasing)

    return example


# One RandAugment layer: the same rounding question as two, half the graph to build (seconds).
@pytest.mark.parametrize("rand_augment", ["rand-n1-m9-mstd0.5-inc1", ""])
def test_train_batches_equal_the_float_pipeline(rand_augment):
    encoded = _encoded_images()
    augmentation = data.TrainAugmentation(image_size=24, crop_area_range=(0.3, 1.0), rand_augment=rand_augment,
                                          random_erasing=0.5)
    batch = next(data.train_dataset([_source(encoded)], shard_indices=[0], shard_batch_size=len(encoded),
                                    augmentation=augmentation, seed=5).as_numpy_iterator())
    assert batch["image"].dtype == np.uint8
    normalised = np.asarray(device_augment.normalize(jnp.asarray(batch["image"])))
    float_pipeline = _float_train_pipeline(augmentation, seed=5)
    differences = []
    for row, label in enumerate(batch["label"]):
        pixels, box = float_pipeline(tf.constant(encoded[label]), tf.constant(row, tf.int64))
        np.testing.assert_array_equal(batch["erase_box"][row], box.numpy())  # the float pipeline's box
        differences.append(np.abs(normalised[row] - (pixels.numpy() - _MEAN) / _STD))
    differences = np.stack(differences)
    assert np.sum(batch["erase_box"][:, 2] > 0) >= 2  # some images are erased (probability 0.5)
    if rand_augment:  # rounded at the same place before: float32 rounding only
        assert differences.max() <= 1e-6
    else:
        assert np.all(differences <= _ROUNDING_BOUND)
        grey_levels = differences * _STD
        assert 0.15 < grey_levels.mean() < 0.35  # round to nearest: ~0.25 on average (floor: ~0.5)


def test_eval_batches_equal_the_float_pipeline_within_the_rounding():
    encoded = _encoded_images(count=10, seed=1)
    batches = list(data.eval_dataset(_source(encoded), local_batch_size=4, num_batches=3, image_size=20,
                                     crop_pct=0.875).as_numpy_iterator())
    images = np.concatenate([b["image"] for b in batches])
    labels = np.concatenate([b["label"] for b in batches])
    masks = np.concatenate([b["mask"] for b in batches])
    assert images.dtype == np.uint8 and masks.sum() == 10 and not images[10:].any()  # zero padding
    normalised = np.asarray(device_augment.normalize(jnp.asarray(images[:10])))
    expected = np.stack([(augment.decode_and_center_crop(encoded[label], 20, 0.875).numpy() - _MEAN) / _STD
                         for label in labels[:10]])
    differences = np.abs(normalised - expected)
    assert np.all(differences <= _ROUNDING_BOUND)
    assert 0.15 < (differences * _STD).mean() < 0.35


def test_steps_normalise_inside_the_one_jitted_program():
    """The eval step given uint8 pixels equals the same step given the host-normalised float32
    images, bitwise, in float32 and bfloat16 compute; the lowered train and eval programs take the
    uint8 batch itself (normalisation inside the one jitted program, no separate dispatch). The
    train step's arithmetic after the normalisation is the float path's (``model_images``); full
    runs on uint8 batches are the trainer tests (tests/train)."""
    mesh = sharding.create_mesh()
    tx = optim.create_optimizer(learning_rate=optim.UNIT_LEARNING_RATE, weight_decay=0.05)
    parts, state = steps.init_train_state(tiny_convmixer, tx, mesh)
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (8, 8, 8, 3)).astype(np.uint8)
    labels = rng.integers(0, 10, 8).astype(np.int32)
    boxes = np.zeros((8, 4), np.int32)
    train_step = steps.make_train_step(parts, tx, lambda step: 1e-2, num_classes=10, compute_dtype=jnp.bfloat16,
                                       mix=data.MixConfig(mixup_alpha=0.8), seed=0, mesh=mesh)
    train_batch = sharding.global_batch({"image": pixels, "label": labels, "erase_box": boxes}, mesh)
    assert "8x8x8x3xui8>" in train_step.lower(state, train_batch, parts.rng_state).as_text()
    floats = np.asarray(device_augment.normalize(jnp.asarray(pixels)))
    for dtype in (jnp.float32, jnp.bfloat16):
        eval_step = steps.make_eval_step(parts, compute_dtype=dtype, mesh=mesh)
        sums = []
        for images in (pixels, floats):
            batch = sharding.global_batch({"image": images, "label": labels, "mask": np.ones(8, np.float32)}, mesh)
            if images is pixels:
                assert "8x8x8x3xui8>" in eval_step.lower(state, batch, parts.rng_state).as_text()
            sums.append(jax.device_get(eval_step(state, batch, parts.rng_state)))
        assert sums[0] == sums[1] and 0 < sums[0]["loss"] < np.inf, (dtype, sums)
