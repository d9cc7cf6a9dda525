"""LayerNorm over the last axis in pure JAX: the reference math of every LayerNorm impl."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def layer_norm_xla(x: jax.Array, scale: jax.Array, bias: jax.Array, eps: float) -> jax.Array:
    """(x − mean) / sqrt(var + eps) · scale + bias over the last axis, two-pass (biased) variance.

    Two-pass because the one-pass E[x²] − E[x]² loses precision for inputs with a large mean.

    Args:
      x: (..., C) float32.
      scale, bias: (C,) float32.
      eps: added to the variance.

    Returns:
      (..., C) float32.
    """
    mean = jnp.mean(x, axis=-1, keepdims=True)
    centred = x - mean
    var = jnp.mean(jnp.square(centred), axis=-1, keepdims=True)
    y = centred * jax.lax.rsqrt(var + eps)
    return y * scale + bias
