"""timm-compatible RandAugment (``rand-m9-mstd0.5-inc1``) as stateless TensorFlow ops.

Why not ``keras.layers.RandAugment``: its op set, magnitude scale and per-op probability
differ from timm's (no ``magnitude_std``, no "increasing" variants, no 0.5 apply
probability), and it draws from a stateful seed generator, so augmentation could not be
keyed by (seed, example) for bit-exact resume. This module follows timm's definitions
(``timm/data/auto_augment.py``, read for the numbers only):

* ``num_layers`` ops (default 2) are drawn uniformly *with replacement* from the 15
  "increasing" transforms; each is applied with probability ``prob`` (0.5).
* Each application draws its magnitude from N(m, mstd) clipped to [0, 10].
* Level -> argument maps (level = magnitude / 10): rotate +-30 deg * level, shear
  +-0.3 * level, translate +-0.45 * level of the image side, enhance factors
  1 +- 0.9 * level (at least 0.1), posterize keeps 4 - int(4 * level) bits, solarize
  threshold 256 - int(256 * level), solarize-add min(128, int(110 * level)).
* Geometric ops fill with timm's ImageNet-mean colour (124, 116, 104).

Documented differences: geometric ops always interpolate bilinearly (timm picks bilinear
or bicubic at random); rotation/shear use TF's pixel-centre convention, PIL's differs by
half a pixel; enhance ops are computed in float and rounded once per op (PIL rounds in
integer arithmetic, off by at most 1 grey level).

The ops compute on float32 (H, W, 3) images with integer values in [0, 255] and round their own
results; :func:`rand_augment` takes and returns the pipeline's uint8 pixels (float32 integer-valued
images work too and stay float32), so the uint8 conversions are exact.
"""

from __future__ import annotations

import dataclasses
import re

import tensorflow as tf

FILL_COLOR = (124.0, 116.0, 104.0)  # round(255 * IMAGENET_DEFAULT_MEAN), as timm.
OP_NAMES = (
    "AutoContrast", "Equalize", "Invert", "Rotate", "PosterizeIncreasing", "SolarizeIncreasing",
    "SolarizeAdd", "ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing",
    "SharpnessIncreasing", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel",
)


@dataclasses.dataclass(frozen=True)
class RandAugmentSpec:
    """Parsed timm RandAugment string; see :func:`parse_rand_augment`."""

    num_layers: int = 2
    magnitude: float = 9.0
    magnitude_std: float = 0.5
    prob: float = 0.5
    increasing: bool = True


def parse_rand_augment(spec: str) -> RandAugmentSpec:
    """Parses a timm string such as ``"rand-m9-mstd0.5-inc1"`` (also ``-n2``, ``-p0.5``).

    Only the increasing op set is implemented, so ``inc1`` is required.
    """
    parts = spec.split("-")
    if parts[0] != "rand":
        raise ValueError(f"RandAugment spec must start with 'rand', got {spec!r}; "
                         "use e.g. 'rand-m9-mstd0.5-inc1', or '' to disable RandAugment.")
    fields = {"num_layers": 2, "magnitude": 9.0, "magnitude_std": 0.5, "prob": 0.5, "increasing": False}
    keys = {"m": "magnitude", "n": "num_layers", "mstd": "magnitude_std", "p": "prob", "inc": "increasing"}
    for part in parts[1:]:
        match = re.fullmatch(r"(mstd|inc|m|n|p)([0-9.]+)", part)
        if not match:
            raise ValueError(f"Unknown RandAugment field {part!r} in {spec!r}; "
                             "supported: m<magnitude>, n<num ops>, mstd<std>, p<prob>, inc1.")
        key, value = keys[match.group(1)], float(match.group(2))
        fields[key] = int(value) if key == "num_layers" else bool(value) if key == "increasing" else value
    if not fields["increasing"]:
        raise ValueError(f"Only timm's increasing op set is implemented; add '-inc1' to {spec!r}.")
    return RandAugmentSpec(**fields)


def _blend(degenerate: tf.Tensor, image: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
    """PIL ImageEnhance: degenerate + factor * (image - degenerate), clipped to [0, 255]."""
    return tf.clip_by_value(degenerate + factor * (image - degenerate), 0.0, 255.0)


def _flat(image: tf.Tensor) -> tf.Tensor:
    """(H, W, 3) viewed as (H, W * 3)."""
    return tf.reshape(image, [tf.shape(image)[0], -1])


def _per_channel(values, image: tf.Tensor) -> tf.Tensor:
    """(3,) per-channel ``values`` tiled to (W * 3,), to combine with ``_flat(image)``.

    TensorFlow's element-wise kernels take a slow scalar path when they broadcast over a
    last axis of 3 (per-op timings: docs/performance.md, "Input pipeline"); the arithmetic,
    hence the result, is the same.
    """
    return tf.tile(tf.convert_to_tensor(values, tf.float32), tf.shape(image)[1:2])


def _grayscale(image: tf.Tensor) -> tf.Tensor:
    """ITU-R 601 luma as PIL's ``convert('L')``; (H, W, 1)."""
    weighted = tf.reshape(_flat(image) * _per_channel([0.299, 0.587, 0.114], image), tf.shape(image))
    return tf.round(tf.reduce_sum(weighted, -1, keepdims=True))


def _affine(image: tf.Tensor, matrix: tf.Tensor) -> tf.Tensor:
    """Applies the output->input affine map ``matrix`` (a0 a1 a2 b0 b1 b2), filling with the mean.

    The image is warped with the fill colour subtracted and a fill value of 0, then the fill
    colour is added back: bilinear weights are linear, so a pixel sampled partly from outside
    the image is blended with :data:`FILL_COLOR` exactly as by warping a ones-channel
    alongside and mixing, with three channels to warp instead of four.
    """
    fill = tf.constant(FILL_COLOR)
    transform = tf.concat([matrix, tf.zeros([2], tf.float32)], 0)[None]
    warped = tf.raw_ops.ImageProjectiveTransformV3(
        images=(image - fill)[None], transforms=transform, output_shape=tf.shape(image)[:2],
        fill_value=0.0, interpolation="BILINEAR", fill_mode="CONSTANT")[0]
    return tf.round(warped + fill)


def _rotate(image: tf.Tensor, degrees: tf.Tensor) -> tf.Tensor:
    height = tf.cast(tf.shape(image)[0], tf.float32)
    width = tf.cast(tf.shape(image)[1], tf.float32)
    theta = degrees * (3.141592653589793 / 180.0)
    cos, sin = tf.cos(theta), tf.sin(theta)
    cx, cy = (width - 1) / 2, (height - 1) / 2
    # input = R(theta) (output - centre) + centre
    return _affine(image, tf.stack([cos, -sin, cx - cos * cx + sin * cy,
                                    sin, cos, cy - sin * cx - cos * cy]))


def _equalize_channel(channel: tf.Tensor) -> tf.Tensor:
    """PIL ``ImageOps.equalize`` for one (H, W) channel of integer values."""
    values = tf.cast(channel, tf.int32)
    hist = tf.math.bincount(tf.reshape(values, [-1]), minlength=256, maxlength=256)
    nonzero = tf.boolean_mask(hist, hist > 0)
    step = (tf.reduce_sum(nonzero) - nonzero[-1]) // 255

    def equalized():
        # lut[i] = (step // 2 + sum(hist[:i])) // step
        cumulative = tf.concat([[0], tf.cumsum(hist)[:-1]], 0)
        lut = (step // 2 + cumulative) // step
        return tf.cast(tf.gather(tf.clip_by_value(lut, 0, 255), values), tf.float32)

    return tf.cond(step > 0, equalized, lambda: channel)


def _sharpness_degenerate(image: tf.Tensor) -> tf.Tensor:
    """PIL's SMOOTH filter (3x3, centre 5, others 1, /13) inside; the border pixels unchanged."""
    kernel = tf.constant([[1, 1, 1], [1, 5, 1], [1, 1, 1]], tf.float32) / 13.0
    kernel = tf.tile(kernel[:, :, None, None], [1, 1, 3, 1])
    smooth = tf.nn.depthwise_conv2d(image[None], kernel, [1, 1, 1, 1], "VALID")[0]
    smooth = tf.pad(tf.round(smooth), [[1, 1], [1, 1], [0, 0]])
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    rows, cols = tf.range(height)[:, None], tf.range(width)[None, :]
    interior = (rows > 0) & (rows < height - 1) & (cols > 0) & (cols < width - 1)
    return tf.where(tf.tile(interior[..., None], [1, 1, 3]), smooth, image)  # same-shape select


def _apply_op(index: tf.Tensor, image: tf.Tensor, level: tf.Tensor, sign: tf.Tensor) -> tf.Tensor:
    """Applies op ``OP_NAMES[index]`` at ``level`` in [0, 1]; ``sign`` is +-1 for signed ops."""
    size = tf.cast(tf.shape(image)[:2], tf.float32)
    enhance = tf.maximum(0.1, 1.0 + sign * 0.9 * level)

    def auto_contrast():
        # On the (H, W * 3) view with per-channel values tiled over the width (see _per_channel).
        pixels = tf.reshape(image, [-1, 3])
        lo = _per_channel(tf.reduce_min(pixels, 0), image)
        hi = _per_channel(tf.reduce_max(pixels, 0), image)
        scale = 255.0 / tf.maximum(hi - lo, 1.0)
        flat = _flat(image)
        flat = tf.where(hi > lo, tf.clip_by_value(tf.round((flat - lo) * scale), 0, 255), flat)
        return tf.reshape(flat, tf.shape(image))

    def posterize():
        bits = 4 - tf.cast(level * 4, tf.int32)
        shift = tf.cast(8 - bits, tf.int32)
        return tf.cast(tf.bitwise.left_shift(tf.bitwise.right_shift(tf.cast(image, tf.int32), shift), shift),
                       tf.float32)

    def solarize():
        threshold = 256.0 - tf.floor(level * 256.0)
        return tf.where(image < threshold, image, 255.0 - image)

    def solarize_add():
        add = tf.minimum(128.0, tf.floor(level * 110.0))
        return tf.where(image < 128.0, tf.minimum(image + add, 255.0), image)

    def contrast():
        mean = tf.round(tf.reduce_mean(_grayscale(image)))
        return tf.round(_blend(mean, image, enhance))

    branches = [
        auto_contrast,
        lambda: tf.stack([_equalize_channel(image[..., c]) for c in range(3)], -1),
        lambda: 255.0 - image,
        lambda: _rotate(image, sign * 30.0 * level),
        posterize,
        solarize,
        solarize_add,
        lambda: tf.round(_blend(tf.tile(_grayscale(image), [1, 1, 3]), image, enhance)),  # same-shape
        contrast,
        lambda: tf.round(_blend(tf.zeros_like(image), image, enhance)),
        lambda: tf.round(_blend(_sharpness_degenerate(image), image, enhance)),
        lambda: _affine(image, tf.stack([1.0, sign * 0.3 * level, 0.0, 0.0, 1.0, 0.0])),
        lambda: _affine(image, tf.stack([1.0, 0.0, 0.0, sign * 0.3 * level, 1.0, 0.0])),
        lambda: _affine(image, tf.stack([1.0, 0.0, sign * 0.45 * level * size[1], 0.0, 1.0, 0.0])),
        lambda: _affine(image, tf.stack([1.0, 0.0, 0.0, 0.0, 1.0, sign * 0.45 * level * size[0]])),
    ]
    out = tf.switch_case(index, branches)
    return tf.ensure_shape(out, image.shape)


def apply_op_by_name(image: tf.Tensor, name: str, magnitude: float, sign: float = 1.0) -> tf.Tensor:
    """Applies one named op deterministically (for tests and visual checks); float32 (H, W, 3)."""
    level = tf.constant(min(max(magnitude, 0.0), 10.0) / 10.0, tf.float32)
    return _apply_op(tf.constant(OP_NAMES.index(name)), tf.cast(image, tf.float32), level,
                     tf.constant(sign, tf.float32))


def rand_augment(image: tf.Tensor, seed: tf.Tensor, spec: RandAugmentSpec) -> tf.Tensor:
    """timm RandAugment on (H, W, 3) [0, 255] pixels: uint8, or float32 with integer values.

    Returns the same shape and dtype (every op's result is integer-valued in [0, 255], so the
    cast back to uint8 is exact).
    """
    dtype = image.dtype
    image = tf.round(tf.cast(image, tf.float32))
    seeds = tf.random.experimental.stateless_split(seed, spec.num_layers)
    for layer in range(spec.num_layers):
        draws = tf.random.stateless_uniform([3], seeds[layer])
        noise = tf.random.stateless_normal([], tf.random.experimental.stateless_fold_in(seeds[layer], 1))
        index = tf.random.stateless_uniform([], tf.random.experimental.stateless_fold_in(seeds[layer], 2),
                                            0, len(OP_NAMES), dtype=tf.int32)
        magnitude = spec.magnitude + spec.magnitude_std * noise if spec.magnitude_std > 0 else spec.magnitude
        level = tf.clip_by_value(tf.cast(magnitude, tf.float32), 0.0, 10.0) / 10.0
        sign = tf.where(draws[1] < 0.5, -1.0, 1.0)
        image = tf.cond(draws[0] < spec.prob,
                        lambda image=image, index=index, level=level, sign=sign:
                            _apply_op(index, image, level, sign),
                        lambda image=image: image)
    return tf.cast(image, dtype)
