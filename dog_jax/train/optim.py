"""AdamW with the references' details: schedules, no decay on 1-D parameters, norm clipping.

* ``cosine``: linear warmup from 0 to the peak over ``warmup_steps``, then cosine decay to
  ``min_learning_rate`` at the last step, evaluated per step (ConvNeXt / HorNet, as timm's
  per-iteration cosine in their code).
* ``onecycle``: ConvMixer's schedule, piecewise linear in the step:
  0 -> peak at 2/5 of training -> peak/20 at 4/5 -> 0 at the end (locuslab/convmixer).
* Weight decay is decoupled (AdamW) and skipped for every parameter with ndim <= 1
  (biases, norm scales/offsets, layer scales, GRN), like timm's ``filter_bias_and_bn``.
* Gradients are clipped by their global L2 norm before the update when
  ``grad_clip_norm > 0``; the reported gradient norm is the one before clipping.

The trainer builds the optimizer with :data:`UNIT_LEARNING_RATE` and multiplies the updates
by ``schedule(state["step"])`` in the train step: the train state's step is the one counter
that drives the schedule, so an update skipped as non-finite (which leaves the optimizer
state, and so optax's own count, unchanged) does not shift the schedule, and the rate logged
is the rate applied -- as PyTorch's per-iteration schedulers step whether or not the
optimizer did. A constant *schedule* (not the float 1.0) keeps optax's schedule counter in
the optimizer state, i.e. the same state layout as checkpoints written before.
"""

from __future__ import annotations

from typing import Any

import jax
import optax


UNIT_LEARNING_RATE = optax.constant_schedule(1.0)


def learning_rate_schedule(*, schedule: str, peak: float, total_steps: int, warmup_steps: int = 0,
                           min_learning_rate: float = 0.0) -> optax.Schedule:
    """Step -> learning rate (float32 scalar)."""
    total_steps = max(int(total_steps), 1)
    if schedule == "onecycle":
        # Boundaries may be fractional steps (e.g. 2/5 of 7); the phases are linear in the step.
        rise, fall = total_steps * 2 / 5, total_steps * 4 / 5
        return optax.join_schedules(
            [optax.linear_schedule(0.0, peak, rise),
             optax.linear_schedule(peak, peak / 20.0, fall - rise),
             optax.linear_schedule(peak / 20.0, 0.0, total_steps - fall)],
            boundaries=[rise, fall])
    if schedule != "cosine":
        raise ValueError(f"Unknown schedule {schedule!r}; use 'cosine' or 'onecycle'.")
    warmup_steps = min(int(warmup_steps), total_steps)
    # optax's decay_steps counts the warmup; the cosine part lasts at least one step.
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=peak, warmup_steps=warmup_steps,
        decay_steps=warmup_steps + max(total_steps - warmup_steps, 1), end_value=min_learning_rate)


def decay_mask(params: Any) -> Any:
    """True for parameters that get weight decay: kernels with ndim >= 2."""
    return jax.tree.map(lambda p: p.ndim > 1, params)


def create_optimizer(*, learning_rate: optax.Schedule, weight_decay: float, b1: float = 0.9, b2: float = 0.999,
                     eps: float = 1e-8, grad_clip_norm: float = 0.0) -> optax.GradientTransformation:
    """AdamW (decoupled decay, masked to ndim >= 2) behind optional global-norm clipping."""
    adamw = optax.adamw(learning_rate, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay, mask=decay_mask)
    if grad_clip_norm > 0:
        return optax.chain(optax.clip_by_global_norm(grad_clip_norm), adamw)
    return adamw
