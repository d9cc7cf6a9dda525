"""Training-mode BatchNorm in pure JAX: the reference math of every BatchNorm impl."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def normalise(x: jax.Array, mean: jax.Array, var: jax.Array, scale: jax.Array, bias: jax.Array,
              eps: float) -> jax.Array:
    """(x − mean) / sqrt(var + eps) · scale + bias, per channel (last axis); all float32."""
    return (x - mean) * jax.lax.rsqrt(var + eps) * scale + bias


def batch_norm_train_xla(x: jax.Array, scale: jax.Array, bias: jax.Array, eps: float,
                         axis_name: str | None = None) -> tuple[jax.Array, jax.Array, jax.Array]:
    """BatchNorm with batch statistics over all axes but the last, two-pass biased variance.

    Args:
      x: (..., C) float32.
      scale, bias: (C,) float32.
      eps: added to the variance.
      axis_name: optional mapped axis to average the statistics over (``shard_map``/``pmap``).

    Returns:
      (y (..., C), mean (C,), biased var (C,)), float32.
    """
    def batch_mean(v):
        m = jnp.mean(v, axis=tuple(range(v.ndim - 1)))
        return m if axis_name is None else jax.lax.pmean(m, axis_name)

    mean = batch_mean(x)
    var = batch_mean(jnp.square(x - mean))  # two-pass
    return normalise(x, mean, var, scale, bias, eps), mean, var
