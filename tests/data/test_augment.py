"""Augmentation ops: timm semantics, eagerly and inside tf.data; on-device normalisation, erasing
fill and mixup/CutMix."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf

from dog_jax.data import augment, device_augment, mixing, randaugment


def _image(seed=0, size=32):
    rng = np.random.default_rng(seed)
    return tf.constant(rng.integers(0, 256, (size, size, 3)).astype(np.float32))


def test_parse_rand_augment_timm_string():
    spec = randaugment.parse_rand_augment("rand-m9-mstd0.5-inc1")
    assert spec == randaugment.RandAugmentSpec(num_layers=2, magnitude=9.0, magnitude_std=0.5, prob=0.5,
                                               increasing=True)
    assert randaugment.parse_rand_augment("rand-n3-m7-inc1-p0.3").num_layers == 3
    with pytest.raises(ValueError, match="inc1"):
        randaugment.parse_rand_augment("rand-m9")
    with pytest.raises(ValueError, match="Unknown RandAugment field 'x5'"):
        randaugment.parse_rand_augment("rand-m9-x5-inc1")


@pytest.mark.parametrize("name", randaugment.OP_NAMES)
def test_every_op_keeps_shape_range_and_integer_values(name):
    image = _image()
    out = randaugment.apply_op_by_name(image, name, 9.0).numpy()
    assert out.shape == (32, 32, 3)
    assert out.min() >= 0 and out.max() <= 255
    np.testing.assert_array_equal(out, np.round(out))


def test_op_values_follow_timm_level_maps():
    image = _image()
    np.testing.assert_array_equal(randaugment.apply_op_by_name(image, "Invert", 5).numpy(), 255 - image.numpy())
    # Posterize at m=10 keeps 4 - int(4) = 0 bits; at m=5, 4 - 2 = 2 bits.
    assert randaugment.apply_op_by_name(image, "PosterizeIncreasing", 10).numpy().max() == 0
    two_bits = randaugment.apply_op_by_name(image, "PosterizeIncreasing", 5).numpy()
    assert set(np.unique(two_bits)) <= {0, 64, 128, 192}
    # Solarize at m=5: threshold 256 - int(128) = 128.
    solarized = randaugment.apply_op_by_name(image, "SolarizeIncreasing", 5).numpy()
    expected = np.where(image.numpy() < 128, image.numpy(), 255 - image.numpy())
    np.testing.assert_array_equal(solarized, expected)
    # Brightness factor at m=5, sign +1: 1 + 0.45.
    bright = randaugment.apply_op_by_name(image, "BrightnessIncreasing", 5).numpy()
    np.testing.assert_allclose(bright, np.clip(np.round(image.numpy() * 1.45), 0, 255))
    # Translate by 0.45 * 10 / 10 * 32 = 14.4 px: the right part is filled with timm's mean colour.
    shifted = randaugment.apply_op_by_name(image, "TranslateXRel", 10).numpy()
    np.testing.assert_array_equal(shifted[:, -10:], np.broadcast_to(randaugment.FILL_COLOR, shifted[:, -10:].shape))
    # Equalize spreads a low-contrast image over the full range.
    flat = tf.constant(np.tile(np.arange(100, 132, dtype=np.float32)[None, :, None], (32, 1, 3)))
    equalized = randaugment.apply_op_by_name(flat, "Equalize", 5).numpy()
    assert equalized.min() == 0 and equalized.max() >= 240


def test_rand_augment_is_a_function_of_the_seed():
    spec = randaugment.parse_rand_augment("rand-m9-mstd0.5-inc1")
    image = _image()
    a = randaugment.rand_augment(image, tf.constant([1, 2]), spec).numpy()
    b = randaugment.rand_augment(image, tf.constant([1, 2]), spec).numpy()
    np.testing.assert_array_equal(a, b)
    outputs = [randaugment.rand_augment(image, tf.constant([1, s]), spec).numpy() for s in range(12)]
    changed = sum(not np.array_equal(o, image.numpy()) for o in outputs)
    # Two ops, each applied with p = 0.5: P(unchanged) = 1/4 (some ops can be no-ops too).
    assert 4 <= changed <= 12


def test_ops_inside_tf_data_match_eager():
    spec = randaugment.parse_rand_augment("rand-m9-mstd0.5-inc1")
    images = np.stack([_image(i).numpy() for i in range(4)]).astype(np.uint8)

    def pipeline(index, image):
        seed = tf.stack([tf.constant(3, tf.int64), index])
        return randaugment.rand_augment(image, seed, spec), augment.erasing_box(seed, 32, 32, probability=0.5)

    dataset = tf.data.Dataset.from_tensor_slices(images).enumerate().map(pipeline, num_parallel_calls=2)
    graph = list(dataset.as_numpy_iterator())
    for i, (image, box) in enumerate(graph):
        eager_image, eager_box = pipeline(tf.constant(i, tf.int64), tf.constant(images[i]))
        assert image.dtype == np.uint8
        np.testing.assert_array_equal(image, eager_image.numpy())
        np.testing.assert_array_equal(box, eager_box.numpy())


def test_rand_augment_on_uint8_equals_the_float_path_exactly():
    """The pipeline feeds uint8 pixels; the ops compute in float32 and every result is
    integer-valued, so uint8 in/out gives the float path's values bit for bit."""
    spec = randaugment.parse_rand_augment("rand-m9-mstd0.5-inc1")
    for s in range(16):
        image = _image(s)
        as_float = randaugment.rand_augment(image, tf.constant([4, s]), spec).numpy()
        as_uint8 = randaugment.rand_augment(tf.cast(image, tf.uint8), tf.constant([4, s]), spec)
        assert as_uint8.dtype == tf.uint8
        np.testing.assert_array_equal(as_uint8.numpy().astype(np.float32), as_float)


def test_to_uint8_rounds_half_to_even_and_clips():
    pixels = tf.constant([-3.0, 0.4, 0.5, 1.5, 2.5, 254.5, 254.6, 300.0])
    np.testing.assert_array_equal(augment.to_uint8(pixels).numpy(), [0, 0, 0, 2, 2, 254, 255, 255])


def test_random_crop_decodes_only_the_window_and_resizes():
    image = tf.cast(_image(size=64), tf.uint8)
    for encoded in (tf.io.encode_jpeg(image), tf.io.encode_png(image)):
        crop = augment.decode_and_random_crop(encoded, tf.constant([0, 1]), 24)
        assert crop.shape == (24, 24, 3) and crop.dtype == tf.float32
        again = augment.decode_and_random_crop(encoded, tf.constant([0, 1]), 24)
        np.testing.assert_array_equal(crop.numpy(), again.numpy())
    # A full-area crop of a PNG reproduces the image.
    whole = augment.decode_and_random_crop(tf.io.encode_png(image), tf.constant([0, 1]), 64, area_range=(1.0, 1.0),
                                           ratio_range=(1.0, 1.0))
    np.testing.assert_allclose(whole.numpy(), image.numpy(), atol=1e-3)


def test_center_crop_takes_the_central_fraction():
    image = np.zeros((40, 40, 3), np.uint8)
    image[10:30, 10:30] = 255  # the central half
    out = augment.decode_and_center_crop(tf.io.encode_png(image), 20, 0.5).numpy()
    assert out.shape == (20, 20, 3) and out.min() > 250
    with pytest.raises(ValueError, match="crop_pct"):
        augment.decode_and_center_crop(tf.io.encode_png(image), 20, 1.5)


def _box_mask(box, height, width):
    top, left, h, w = (int(v) for v in box)
    mask = np.zeros((height, width), bool)
    mask[top:top + h, left:left + w] = True
    return mask


def test_random_erasing_area_and_probability():
    boxes = [augment.erasing_box(tf.constant([5, s]), 32, 32, probability=0.25).numpy() for s in range(200)]
    fractions = np.array([_box_mask(box, 32, 32).mean() for box in boxes])
    applied = fractions > 0
    assert 0.15 < applied.mean() < 0.35
    assert fractions[applied].max() <= 1 / 3 + 0.05 and fractions[applied].min() >= 0.01
    # Not erased: the all-zero box, which the device fill leaves alone.
    assert all(not box.any() for box, erased in zip(boxes, applied) if not erased)


def test_smooth_one_hot_matches_timm():
    targets = mixing.smooth_one_hot(jnp.array([2]), 4, 0.1)
    np.testing.assert_allclose(targets, [[0.025, 0.025, 0.925, 0.025]], rtol=1e-6)


def test_mixup_mixes_images_and_targets_with_the_same_lambda():
    images = jnp.stack([jnp.full((8, 8, 3), float(i)) for i in range(4)])
    labels = jnp.arange(4)
    config = mixing.MixConfig(mixup_alpha=0.8, label_smoothing=0.0)
    out, targets = mixing.mix_batch(jax.random.key(0), images, labels, 4, config)
    lam = float(targets[0, 0])
    np.testing.assert_allclose(out[0], lam * 0 + (1 - lam) * 3, rtol=1e-5)
    np.testing.assert_allclose(targets.sum(-1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(targets[0, 3], 1 - lam, rtol=1e-6)


def test_cutmix_lambda_is_the_uncovered_area():
    images = jnp.stack([jnp.full((16, 16, 1), float(i)) for i in range(2)])
    config = mixing.MixConfig(cutmix_alpha=1.0)
    for seed in range(5):
        out, targets = mixing.mix_batch(jax.random.key(seed), images, jnp.array([0, 1]), 2, config)
        pasted = float(jnp.mean(out[0] == 1.0))
        np.testing.assert_allclose(targets[0, 0], 1.0 - pasted, rtol=1e-5)


def test_mixing_disabled_only_smooths():
    images = jnp.ones((2, 4, 4, 3))
    out, targets = mixing.mix_batch(jax.random.key(0), images, jnp.array([0, 1]), 3,
                                    mixing.MixConfig(label_smoothing=0.3))
    np.testing.assert_array_equal(out, images)
    np.testing.assert_allclose(targets[0], [0.8, 0.1, 0.1], rtol=1e-6)


def test_random_erasing_noise_is_standard_normal_inside_the_box_only():
    """The device fill puts N(0, 1) noise inside each image's box (drawn on the host), leaves the
    rest untouched, leaves images without a box alone, and is a pure function of the key."""
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.normal(size=(300, 40, 48, 3)).astype(np.float32))
    boxes = np.stack([augment.erasing_box(tf.constant([11, s]), 40, 48, probability=0.5).numpy()
                      for s in range(300)])
    out = np.asarray(device_augment.erase(jax.random.key(7), images, jnp.asarray(boxes)))
    again = np.asarray(device_augment.erase(jax.random.key(7), images, jnp.asarray(boxes)))
    np.testing.assert_array_equal(out, again)
    masks = np.stack([_box_mask(box, 40, 48) for box in boxes])
    np.testing.assert_array_equal(out[~masks], np.asarray(images)[~masks])
    assert not np.any(out[masks] == np.asarray(images)[masks])
    assert 0.4 < masks.any(axis=(1, 2)).mean() < 0.6
    noise = out[masks].ravel()
    assert noise.size > 10_000
    assert abs(noise.mean()) < 0.03 and abs(noise.std() - 1.0) < 0.03
    assert abs(np.mean(np.abs(noise) < 1.0) - 0.6827) < 0.02
    other = np.asarray(device_augment.erase(jax.random.key(8), images, jnp.asarray(boxes)))
    assert not np.array_equal(other[masks], out[masks])


def test_flip_is_a_fair_coin_and_exact():
    image = _image()
    flipped = [augment.random_flip_left_right(image, tf.constant([2, s])).numpy() for s in range(400)]
    mirrored = [np.array_equal(f, image.numpy()[:, ::-1]) for f in flipped]
    unchanged = [np.array_equal(f, image.numpy()) for f in flipped]
    assert all(m or u for m, u in zip(mirrored, unchanged))
    assert 0.43 < np.mean(mirrored) < 0.57


def test_normalize_equals_the_division_within_an_ulp():
    pixels = np.random.default_rng(1).integers(0, 256, (2, 17, 23, 3)).astype(np.uint8)
    expected = (pixels.astype(np.float32) - np.float32(device_augment.IMAGENET_MEAN)) / np.float32(
        device_augment.IMAGENET_STD)
    for normalize in (device_augment.normalize, jax.jit(device_augment.normalize)):
        got = normalize(jnp.asarray(pixels))
        assert got.dtype == jnp.float32
        np.testing.assert_allclose(np.asarray(got), expected, rtol=3e-7, atol=1e-6)
    # The steps' entry point: uint8 is normalised, floats pass unchanged, anything else is refused.
    np.testing.assert_array_equal(device_augment.model_images(jnp.asarray(pixels)), device_augment.normalize(pixels))
    floats = jnp.asarray(expected)
    assert device_augment.model_images(floats) is floats
    with pytest.raises(TypeError, match="uint8 pixels or normalised floats, got int32"):
        device_augment.model_images(jnp.asarray(pixels, jnp.int32))


@pytest.mark.parametrize("name", ["Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel"])
def test_geometric_ops_fill_with_the_mean_colour_as_a_mask_channel_would(name):
    """Warping (image - fill) with fill 0 and adding fill back equals warping a ones-channel
    alongside and blending with the fill colour (the direct form), within float rounding."""
    image = _image()
    got = randaugment.apply_op_by_name(image, name, 9.0).numpy()
    level = tf.constant(0.9)
    size = tf.cast(tf.shape(image)[:2], tf.float32)
    matrices = {
        "ShearX": tf.stack([1.0, 0.3 * level, 0.0, 0.0, 1.0, 0.0]),
        "ShearY": tf.stack([1.0, 0.0, 0.0, 0.3 * level, 1.0, 0.0]),
        "TranslateXRel": tf.stack([1.0, 0.0, 0.45 * level * size[1], 0.0, 1.0, 0.0]),
        "TranslateYRel": tf.stack([1.0, 0.0, 0.0, 0.0, 1.0, 0.45 * level * size[0]]),
    }
    if name == "Rotate":
        theta = 27.0 * np.pi / 180
        h, w = image.shape[0], image.shape[1]
        cx, cy = (w - 1) / 2, (h - 1) / 2
        c, s = np.cos(theta), np.sin(theta)
        matrix = tf.constant([c, -s, cx - c * cx + s * cy, s, c, cy - s * cx - c * cy], tf.float32)
    else:
        matrix = matrices[name]
    with_mask = tf.concat([image, tf.ones_like(image[..., :1])], -1)
    transform = tf.concat([matrix, tf.zeros([2], tf.float32)], 0)[None]
    warped = tf.raw_ops.ImageProjectiveTransformV3(
        images=with_mask[None], transforms=transform, output_shape=tf.shape(image)[:2], fill_value=0.0,
        interpolation="BILINEAR", fill_mode="CONSTANT")[0]
    direct = tf.round(warped[..., :3] + (1.0 - warped[..., 3:]) * tf.constant(randaugment.FILL_COLOR)).numpy()
    # Rounding to integers may differ by one grey level where the two sums straddle a .5.
    assert np.max(np.abs(got - direct)) <= 1.0 and np.mean(got != direct) < 0.01
    assert np.mean(np.all(got == np.float32(randaugment.FILL_COLOR), -1)) > 0.01  # the fill is there


def test_colour_ops_on_the_flat_view_equal_the_broadcast_formulas_bitwise():
    """AutoContrast, Color, Contrast and Sharpness avoid broadcasting over the channel axis
    (slow in TF); the arithmetic must stay exactly that of the straightforward formulas."""
    pixels = np.random.default_rng(5).integers(0, 256, (20, 28, 3)).astype(np.float32)
    pixels[..., 2] = 77.0  # a constant channel: AutoContrast leaves it alone
    image = tf.constant(pixels)
    lo = tf.reduce_min(image, axis=[0, 1], keepdims=True)
    hi = tf.reduce_max(image, axis=[0, 1], keepdims=True)
    contrasted = tf.where(hi > lo, tf.clip_by_value(tf.round((image - lo) * (255.0 / tf.maximum(hi - lo, 1.0))),
                                                    0, 255), image)
    gray = tf.round(tf.reduce_sum(image * tf.constant([0.299, 0.587, 0.114]), -1, keepdims=True))
    factor = 1.0 + 0.9 * 0.7

    def blend(degenerate):
        return tf.round(tf.clip_by_value(degenerate + factor * (image - degenerate), 0.0, 255.0))

    kernel = tf.tile((tf.constant([[1, 1, 1], [1, 5, 1], [1, 1, 1]], tf.float32) / 13.0)[:, :, None, None],
                     [1, 1, 3, 1])
    smooth = tf.pad(tf.round(tf.nn.depthwise_conv2d(image[None], kernel, [1, 1, 1, 1], "VALID")[0]),
                    [[1, 1], [1, 1], [0, 0]])
    interior = np.zeros((20, 28), bool)
    interior[1:-1, 1:-1] = True
    expected = {
        "AutoContrast": contrasted,
        "ColorIncreasing": blend(gray),
        "ContrastIncreasing": blend(tf.round(tf.reduce_mean(gray))),
        "SharpnessIncreasing": blend(tf.where(interior[..., None], smooth, image)),
    }
    for name, reference in expected.items():
        got = randaugment.apply_op_by_name(image, name, 7.0).numpy()
        np.testing.assert_array_equal(got, reference.numpy(), err_msg=name)
    assert np.all(expected["AutoContrast"].numpy()[..., 2] == 77.0)
