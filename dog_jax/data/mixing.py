"""Mixup / CutMix with label smoothing, on the device, inside the jitted train step.

Semantics follow timm's ``Mixup(mode='batch', correct_lam=True)``: one mixing
coefficient per (global) batch, each image mixed with the image at the mirrored batch
position (``x[::-1]``), and the targets mixed with the same coefficient:

* with probability ``prob`` the batch is mixed, otherwise only label smoothing applies;
* when both alphas are > 0, CutMix is chosen with probability ``switch_prob``;
* mixup: ``lam ~ Beta(mixup_alpha, mixup_alpha)``, ``x = lam * x + (1 - lam) * x[::-1]``;
* CutMix: ``lam ~ Beta(cutmix_alpha, cutmix_alpha)``, a box of sides ``int(H sqrt(1-lam))``
  x ``int(W sqrt(1-lam))`` centred at a uniform pixel (clipped at the border) is pasted
  from ``x[::-1]``; ``lam`` is then corrected to the uncovered area fraction;
* targets: ``lam * smooth(y) + (1 - lam) * smooth(y[::-1])`` with
  ``smooth(y) = one_hot(y) * (1 - s) + s / num_classes``.

Everything is a pure function of the PRNG key, so the step's key (derived from the step
number) fully determines the mixing.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class MixConfig:
    """timm ``Mixup`` arguments (``mode='batch'``); all-zero alphas disable mixing."""

    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    prob: float = 1.0
    switch_prob: float = 0.5
    label_smoothing: float = 0.0

    @property
    def enabled(self) -> bool:
        return self.prob > 0 and (self.mixup_alpha > 0 or self.cutmix_alpha > 0)


def smooth_one_hot(labels: jax.Array, num_classes: int, smoothing: float) -> jax.Array:
    """(B,) int labels -> (B, num_classes) float32 targets with label smoothing ``smoothing``."""
    off = smoothing / num_classes
    return jax.nn.one_hot(labels, num_classes, dtype=jnp.float32) * (1.0 - smoothing) + off


def _cutmix_mask(key: jax.Array, lam: jax.Array, height: int, width: int) -> tuple[jax.Array, jax.Array]:
    """(H, W) bool box to paste and the area-corrected lam; timm ``rand_bbox`` + ``correct_lam``."""
    ratio = jnp.sqrt(1.0 - lam)
    cut_h = (height * ratio).astype(jnp.int32)
    cut_w = (width * ratio).astype(jnp.int32)
    key_y, key_x = jax.random.split(key)
    cy = jax.random.randint(key_y, (), 0, height)
    cx = jax.random.randint(key_x, (), 0, width)
    top, bottom = jnp.clip(cy - cut_h // 2, 0, height), jnp.clip(cy + cut_h // 2, 0, height)
    left, right = jnp.clip(cx - cut_w // 2, 0, width), jnp.clip(cx + cut_w // 2, 0, width)
    rows = jnp.arange(height)[:, None]
    cols = jnp.arange(width)[None, :]
    box = (rows >= top) & (rows < bottom) & (cols >= left) & (cols < right)
    corrected = 1.0 - ((bottom - top) * (right - left)).astype(jnp.float32) / (height * width)
    return box, corrected


def mix_batch(key: jax.Array, images: jax.Array, labels: jax.Array, num_classes: int,
              config: MixConfig) -> tuple[jax.Array, jax.Array]:
    """Mixes a global batch and builds soft targets.

    Args:
      key: PRNG key for this step.
      images: (B, H, W, C) float images (any float dtype; kept).
      labels: (B,) int32 class indices.
      num_classes: number of classes.
      config: mixing parameters.

    Returns:
      images (B, H, W, C) in the input dtype, targets (B, num_classes) float32.
    """
    targets = smooth_one_hot(labels, num_classes, config.label_smoothing)
    if not config.enabled:
        return images, targets
    key_apply, key_switch, key_mixup, key_cutmix, key_box = jax.random.split(key, 5)
    apply = jax.random.uniform(key_apply) < config.prob
    if config.mixup_alpha > 0 and config.cutmix_alpha > 0:
        use_cutmix = jax.random.uniform(key_switch) < config.switch_prob
    else:
        use_cutmix = jnp.asarray(config.cutmix_alpha > 0)
    lam_mixup = (jax.random.beta(key_mixup, config.mixup_alpha, config.mixup_alpha)
                 if config.mixup_alpha > 0 else jnp.float32(1.0))
    lam_cutmix = (jax.random.beta(key_cutmix, config.cutmix_alpha, config.cutmix_alpha)
                  if config.cutmix_alpha > 0 else jnp.float32(1.0))
    box, lam_box = _cutmix_mask(key_box, lam_cutmix, images.shape[1], images.shape[2])

    flipped = images[::-1]
    mixed_linear = lam_mixup.astype(images.dtype) * images + (1 - lam_mixup).astype(images.dtype) * flipped
    mixed_cut = jnp.where(box[None, :, :, None], flipped, images)
    lam = jnp.where(apply, jnp.where(use_cutmix, lam_box, lam_mixup), 1.0).astype(jnp.float32)
    out = jnp.where(apply, jnp.where(use_cutmix, mixed_cut, mixed_linear), images)
    return out, lam * targets + (1.0 - lam) * targets[::-1]
