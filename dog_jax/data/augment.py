"""Per-example image operations for tf.data: decode + crop, flip, uint8 rounding, erasing boxes.

Every random op is *stateless*: it takes a ``seed`` int32/int64 tensor of shape (2,), and
the pipeline derives that seed from (run seed, process, example position in the stream).
The same step of the same run therefore always sees the same augmented pixels, which is
what makes bit-exact resume possible (no hidden RNG state inside tf.data or Keras layers).

The crops come out as float32 (H, W, 3) in [0, 255]; :func:`to_uint8` rounds them to the uint8
pixels the pipelines deliver. Normalisation (mean/std) and the random-erasing fill run on the
device, inside the jitted steps (``device_augment.py``); here :func:`erasing_box` only draws
where each image is erased. RandAugment lives in ``randaugment.py``.

Differences from timm's ``transforms_imagenet_train`` / ``transforms_imagenet_eval``
(documented in docs/training.md as well):

* Random-resized crop uses ``tf.image.stateless_sample_distorted_bounding_box``: the aspect
  ratio is drawn uniformly in [3/4, 4/3] (timm: log-uniform) and after 10 failed attempts
  it falls back to the whole image (timm: a centre crop clamped to the ratio range).
* The crop is resized bilinearly (timm: bilinear or bicubic at random).
* Eval crops the central ``crop_pct`` square and then resizes it (timm resizes the short
  side to ``size / crop_pct`` and then crops): the same region, decoded only once.
"""

from __future__ import annotations

import math
from typing import Sequence

import tensorflow as tf


def _decode_window(image_bytes: tf.Tensor, window_fn) -> tf.Tensor:
    """Decodes only the window returned by ``window_fn(shape)`` (JPEG) or crops after decode.

    JPEGs go through ``decode_and_crop_jpeg`` which skips IDCT work outside the window;
    other formats (PNG in many tfds datasets) are fully decoded first.
    """

    def jpeg():
        shape = tf.image.extract_jpeg_shape(image_bytes)
        y, x, h, w = tf.unstack(window_fn(shape))
        return tf.image.decode_and_crop_jpeg(image_bytes, tf.stack([y, x, h, w]), channels=3)

    def other():
        image = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)
        y, x, h, w = tf.unstack(window_fn(tf.shape(image)))
        return image[y:y + h, x:x + w]

    image = tf.cond(tf.io.is_jpeg(image_bytes), jpeg, other)
    image.set_shape([None, None, 3])
    return image


def decode_and_random_crop(image_bytes: tf.Tensor, seed: tf.Tensor, size: int, *,
                           area_range: Sequence[float] = (0.08, 1.0),
                           ratio_range: Sequence[float] = (3 / 4, 4 / 3)) -> tf.Tensor:
    """Inception-style random-resized crop, decoded from JPEG only inside the crop.

    Args:
      image_bytes: scalar string tensor, an encoded image (JPEG fast path, others work).
      seed: (2,) int tensor.
      size: output side in pixels.
      area_range: fraction of the image area covered by the crop (timm ``scale``).
      ratio_range: width / height of the crop (timm ``ratio``).

    Returns:
      float32 (size, size, 3) in [0, 255].
    """

    def window(shape):
        begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
            shape, bounding_boxes=tf.constant([0.0, 0.0, 1.0, 1.0], tf.float32, [1, 1, 4]),
            seed=seed, min_object_covered=0.0, aspect_ratio_range=tuple(ratio_range),
            area_range=tuple(area_range), max_attempts=10, use_image_if_no_bounding_boxes=True)
        return tf.stack([begin[0], begin[1], crop_size[0], crop_size[1]])

    image = _decode_window(image_bytes, window)
    image = tf.image.resize(tf.cast(image, tf.float32), (size, size), method="bilinear")
    return tf.clip_by_value(image, 0.0, 255.0)


def decode_and_center_crop(image_bytes: tf.Tensor, size: int, crop_pct: float) -> tf.Tensor:
    """Deterministic eval view: the central ``crop_pct`` square, resized (bicubic) to ``size``.

    Equivalent to timm's resize-short-side-to ``floor(size / crop_pct)`` then centre crop.

    Returns:
      float32 (size, size, 3) in [0, 255].
    """
    if not 0.0 < crop_pct <= 1.0:
        raise ValueError(f"crop_pct must be in (0, 1], got {crop_pct}; use e.g. 0.875 or 0.96.")

    def window(shape):
        height, width = shape[0], shape[1]
        side = tf.cast(tf.cast(tf.minimum(height, width), tf.float32) * crop_pct, tf.int32)
        side = tf.maximum(side, 1)
        return tf.stack([(height - side + 1) // 2, (width - side + 1) // 2, side, side])

    image = _decode_window(image_bytes, window)
    image = tf.image.resize(tf.cast(image, tf.float32), (size, size), method="bicubic", antialias=True)
    return tf.clip_by_value(image, 0.0, 255.0)


def random_flip_left_right(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Mirrors (H, W, C) ``image`` horizontally with probability 0.5.

    A conditional reverse: ``tf.image.stateless_random_flip_left_right`` computes the mirrored
    image for every example and selects, twice the memory traffic for the same distribution.
    """
    flip = tf.random.stateless_uniform([], seed) < 0.5
    return tf.ensure_shape(tf.cond(flip, lambda: tf.reverse(image, axis=[1]), lambda: image), image.shape)


def to_uint8(image: tf.Tensor) -> tf.Tensor:
    """float [0, 255] pixels -> uint8, rounded half to even (``tf.round``) after clipping.

    The pipelines call it once, right after the crop's resize: the only step whose output is not
    integer-valued (RandAugment's ops round their own results), so this is the one rounding the
    uint8 batches add.
    """
    return tf.cast(tf.round(tf.clip_by_value(image, 0.0, 255.0)), tf.uint8)


def erasing_box(seed: tf.Tensor, height: int, width: int, *, probability: float = 0.25,
                area_range: Sequence[float] = (0.02, 1 / 3),
                log_ratio_range: Sequence[float] = (math.log(0.3), math.log(1 / 0.3)),
                attempts: int = 10) -> tf.Tensor:
    """Where timm ``RandomErasing(mode='pixel', max_count=1)`` erases an (H, W) image, if at all.

    With probability ``probability`` one rectangle is erased. Its area is a uniform fraction of
    the image in ``area_range`` and its log aspect ratio uniform in ``log_ratio_range``; the first
    of ``attempts`` draws that fits inside the image is used, none if no draw fits. The fill
    (per-pixel N(0, 1) noise in normalised units, as timm) is drawn on the device by the train
    step (``device_augment.erase``): it lives in normalised space, which uint8 batches cannot carry.

    Args:
      seed: (2,) int tensor.
      height, width: the image's size in pixels.

    Returns:
      int32 (4,): ``(top, left, box height, box width)``; ``(0, 0, 0, 0)`` when nothing is erased.
    """
    seeds = tf.random.experimental.stateless_split(seed, 6)
    area = float(height * width)
    target = area * tf.random.stateless_uniform([attempts], seeds[0], *area_range)
    ratio = tf.exp(tf.random.stateless_uniform([attempts], seeds[1], *log_ratio_range))
    h = tf.cast(tf.round(tf.sqrt(target * ratio)), tf.int32)
    w = tf.cast(tf.round(tf.sqrt(target / ratio)), tf.int32)
    fits = (h < height) & (w < width)
    first = tf.argmax(tf.cast(fits, tf.int32), output_type=tf.int32)
    h, w = h[first], w[first]
    # Uniform integer offsets in [0, H - h] and [0, W - w] (timm: random.randint inclusive).
    u = tf.random.stateless_uniform([2], seeds[2])
    top = tf.minimum(tf.cast(u[0] * tf.cast(height - h + 1, tf.float32), tf.int32), height - h)
    left = tf.minimum(tf.cast(u[1] * tf.cast(width - w + 1, tf.float32), tf.int32), width - w)
    apply = (tf.random.stateless_uniform([], seeds[3]) < probability) & tf.reduce_any(fits)
    return tf.where(apply, tf.stack([top, left, h, w]), tf.zeros([4], tf.int32))
