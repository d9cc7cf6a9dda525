"""The image work that runs on the device, inside the jitted train / eval steps.

The input pipelines (``pipeline.py``) deliver images as **uint8** pixels, 4x fewer bytes over the
host->device link and in the device's input buffers than float32. The steps turn them into model
inputs here, in the same jitted program as the model (no extra dispatch):

* :func:`normalize`: uint8 (B, H, W, C) -> float32 ``(x - mean) * (1 / std)`` with timm's
  ImageNet constants -- the arithmetic of the former host-side normalisation, so the result is
  the same float32 values for the same pixels;
* :func:`erase`: the random-erasing fill. *Where* each image is erased (the box, or none) is drawn
  on the host with the example's stateless seed (``augment.erasing_box``), exactly as before; the
  box is filled here with per-pixel N(0, 1) noise in normalised units (timm ``mode='pixel'``),
  drawn from the step's key. Filling on the host is what forced float32 batches: the noise
  lives in normalised space and does not survive a round trip through uint8.

Mixup / CutMix (``mixing.py``) follow, on the normalised and erased float32 images; the step
casts to its compute dtype (bfloat16 runs) after them, as before.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

# timm's IMAGENET_DEFAULT_MEAN / _STD, in [0, 255] units.
IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)
_MEAN = np.asarray(IMAGENET_MEAN, np.float32)
# 1/std rounded once to float32 (from float64): the host pipeline's constant, kept bit for bit.
_INVERSE_STD = (1.0 / np.asarray(IMAGENET_STD, np.float64)).astype(np.float32)


def normalize(pixels: jax.Array) -> jax.Array:
    """uint8 (..., C) pixels -> float32 ``(x - mean) * (1 / std)`` per channel (C = 3).

    Within 1 ulp of ``(x - mean) / std`` (a multiplication instead of a division; float32).
    """
    if pixels.dtype != jnp.uint8:
        raise TypeError(f"normalize takes uint8 pixels as the input pipelines deliver them, got {pixels.dtype}.")
    return (pixels.astype(jnp.float32) - _MEAN) * _INVERSE_STD


def model_images(images: jax.Array) -> jax.Array:
    """A batch as the steps receive it -> normalised float images.

    uint8 images are pixels (the input pipelines' batches) and are normalised (:func:`normalize`);
    floating images are taken as normalised already and returned unchanged (callers that prepare
    their own inputs: tests, benchmarks). Any other dtype is an error.
    """
    if images.dtype == jnp.uint8:
        return normalize(images)
    if jnp.issubdtype(images.dtype, jnp.floating):
        return images
    raise TypeError(f"batch images must be uint8 pixels or normalised floats, got {images.dtype}; feed the "
                    "batches of dog_jax.data.train_dataset / eval_dataset.")


def erase(key: jax.Array, images: jax.Array, boxes: jax.Array) -> jax.Array:
    """Fills each image's erasing box with N(0, 1) noise (timm ``RandomErasing(mode='pixel')``).

    Args:
      key: PRNG key of this step's erasing (the noise is a pure function of it).
      images: (B, H, W, C) float, normalised.
      boxes: (B, 4) int32 ``(top, left, height, width)`` per image; height = width = 0 where the
        image is not erased (``augment.erasing_box``).

    Returns:
      (B, H, W, C) in the dtype of ``images``.

    The noise is drawn for the whole batch and selected by the boxes (static shapes under jit); with
    JAX's partitionable threefry (the default) the draws do not depend on how the batch is sharded.
    """
    top, left, height, width = (boxes[:, i, None, None] for i in range(4))
    rows = jnp.arange(images.shape[1])[None, :, None]
    cols = jnp.arange(images.shape[2])[None, None, :]
    inside = (rows >= top) & (rows < top + height) & (cols >= left) & (cols < left + width)
    noise = jax.random.normal(key, images.shape, images.dtype)
    return jnp.where(inside[..., None], noise, images)
