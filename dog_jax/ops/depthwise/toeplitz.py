"""Depthwise convolution as one batched matmul over pixels, for maps no larger than the kernel.

When the input map is small (ConvNeXt-T/HorNet-T stage 4: 7x7 maps under 7x7 kernels), nearly
every output pixel reads nearly every input pixel, and the shifted multiply-adds of
``depthwise/shift.py`` are dominated by per-tap overhead (above all the weight-gradient
reductions). Here each channel's convolution is written as a (H*W, H'*W') matrix whose entries
are kernel taps (zero where an input pixel does not reach an output pixel), built by one gather
from the kernel; the output is ``einsum("nqc,qpc->npc")``. The matmul costs H*W*H'*W' multiply-adds
per channel and image -- as many as the direct form's H'*W'*kh*kw when H*W <= kh*kw -- but runs
at matmul speed, and JAX differentiates it (gather -> scatter-add for the kernel gradient) in any
mode, forward included.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from dog_jax.ops.depthwise.geometry import DepthwiseGeometry


@functools.lru_cache(maxsize=64)
def tap_indices(geometry: DepthwiseGeometry) -> np.ndarray:
    """(H*W, H'*W') int32: the kernel tap ``ty * kw + tx`` linking input pixel q to output pixel p,
    or ``kh * kw`` (a zero tap) where none does. Row-major pixel order."""
    (sh, sw), ((top, _), (left, _)) = geometry.strides, geometry.pads
    kh, kw = geometry.kernel_size
    in_y, in_x = (a.ravel() for a in np.meshgrid(*map(np.arange, geometry.in_size), indexing="ij"))
    out_y, out_x = (a.ravel() for a in np.meshgrid(*map(np.arange, geometry.out_size), indexing="ij"))
    ty = in_y[:, None] - out_y[None, :] * sh + top
    tx = in_x[:, None] - out_x[None, :] * sw + left
    inside = (ty >= 0) & (ty < kh) & (tx >= 0) & (tx < kw)
    return np.where(inside, ty * kw + tx, kh * kw).astype(np.int32)


def depthwise_toeplitz(x: jax.Array, kernel: jax.Array, geometry: DepthwiseGeometry) -> jax.Array:
    """x (N, H, W, C), kernel (kh, kw, C) (channel multiplier already applied to x) ->
    (N, H', W', C) in x's dtype; products and sums in f32 (f64 for f64 inputs)."""
    n, h, w, c = x.shape
    kh, kw = geometry.kernel_size
    acc = jnp.promote_types(x.dtype, jnp.float32)
    taps = jnp.concatenate([kernel.reshape(kh * kw, c).astype(acc), jnp.zeros((1, c), acc)])
    matrix = taps[tap_indices(geometry)]  # (H*W, H'*W', C)
    y = jnp.einsum("nqc,qpc->npc", x.reshape(n, h * w, c).astype(acc), matrix, precision=lax.Precision.HIGHEST)
    return y.reshape(n, *geometry.out_size, c).astype(x.dtype)
