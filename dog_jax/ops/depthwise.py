"""Depthwise 2-D convolution: the one entry point every model uses.

This first version is the plain XLA grouped convolution; faster implementations,
selected by ``impl``, replace it in the fast-depthwise work.
"""

from __future__ import annotations

import jax
from jax import lax


def depthwise_conv2d(x: jax.Array, kernel: jax.Array, *, strides=1, padding="SAME", impl: str = "auto") -> jax.Array:
    """Depthwise convolution of an NHWC input with an HWIO kernel.

    Args:
      x: (N, H, W, C) input.
      kernel: (kh, kw, 1, C*m) kernel; output channel c*m + j reads input channel c.
      strides: int or (sh, sw).
      padding: "SAME", "VALID" or ((top, bottom), (left, right)).
      impl: "xla" or "auto".

    Returns:
      (N, H', W', C*m) output in x's dtype.
    """
    if isinstance(strides, int):
        strides = (strides, strides)
    return lax.conv_general_dilated(
        x, kernel.astype(x.dtype), window_strides=strides, padding=padding,
        dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=x.shape[-1])
