"""Depthwise convolution as kh*kw shifted multiply-adds, with a hand-written VJP.

Why: XLA:CPU lowers a grouped convolution (``feature_group_count=C``) to a loop over C tiny
convolutions, and its weight gradient is worse still (see docs/performance.md). Written as a sum of
shifted, per-channel-scaled slices of the padded input, the same convolution becomes *one* fused,
vectorised (over channels, the minor NHWC axis) and multi-threaded loop, several times faster
(docs/performance.md, "Implementations" and the CPU tables).

The backward pass is not left to autodiff (which would keep kh*kw intermediates alive):
  * input gradient = the same correlation applied to the stride-dilated, re-padded output
    gradient with the spatially flipped kernel (one more fused loop; itself differentiable through
    this VJP, so second-order derivatives stay fast);
  * weight gradient = per-channel correlation of the padded input with the output gradient, by
    one of the `weight_grad` methods in ``depthwise/weight_grad.py``.

All arithmetic is done in the accumulation dtype (f32, or f64 for f64 inputs); results are cast
back to the input's dtype (forward, input gradient) and the kernel's dtype (weight gradient).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from dog_jax.ops.depthwise.geometry import DepthwiseGeometry, accumulation_dtype
from dog_jax.ops.depthwise.blocks import CHANNEL_BLOCK, from_channel_blocks, to_channel_blocks
from dog_jax.ops.depthwise.weight_grad import weight_grad

# Above this many kernel taps the forward loop runs over kernel rows instead of unrolling every
# tap into one fusion: keeps the HLO (and compile time) bounded for large kernels (31x31 = 961
# taps), at the cost of one extra read+write of the accumulator per kernel row.
MAX_UNROLLED_TAPS = 121
# From this many channels (a multiple of CHANNEL_BLOCK) the forward loops over channel blocks.
# Faster for wide and narrow layers alike (measured: docs/performance.md, "Implementations").
BLOCKED_FORWARD_MIN_CHANNELS = 64


def correlate_valid(xp: jax.Array, w: jax.Array, strides: tuple[int, int], out_size: tuple[int, int],
                    acc_dtype) -> jax.Array:
    """Per-channel valid cross-correlation of an already padded input.

    Args:
      xp: (N, Hp, Wp, C) padded input, any float dtype.
      w: (kh, kw, C) kernel.
      strides: (sh, sw).
      out_size: (H', W') with (H'-1)*sh + kh <= Hp (same for W).
      acc_dtype: dtype used for every product and sum.

    Returns:
      (N, H', W', C) array in acc_dtype: out[n,i,j,c] = sum_ab xp[n, i*sh+a, j*sw+b, c] * w[a,b,c].
    """
    kh, kw, _ = w.shape
    sh, sw = strides
    ho, wo = out_size
    xp = xp.astype(acc_dtype)
    w = w.astype(acc_dtype)

    def row_taps(rows: jax.Array, a) -> jax.Array:
        # rows: (N, (ho-1)*sh + 1, Wp, C) slice starting at kernel row a.
        total = None
        for b in range(kw):
            tap = lax.slice_in_dim(rows, 0, (ho - 1) * sh + 1, stride=sh, axis=1)
            tap = lax.slice_in_dim(tap, b, b + (wo - 1) * sw + 1, stride=sw, axis=2)
            term = tap * w[a, b]
            total = term if total is None else total + term
        return total

    span = (ho - 1) * sh + 1
    if kh * kw <= MAX_UNROLLED_TAPS:
        out = None
        for a in range(kh):
            term = row_taps(lax.slice_in_dim(xp, a, a + span, axis=1), a)
            out = term if out is None else out + term
        return out

    def body(a, out):
        rows = lax.dynamic_slice_in_dim(xp, a, span, axis=1)
        return out + row_taps(rows, a)

    out = jnp.zeros((xp.shape[0], ho, wo, xp.shape[3]), acc_dtype)
    return lax.fori_loop(0, kh, body, out)


def _pad(x: jax.Array, pads) -> jax.Array:
    (top, bottom), (left, right) = pads
    return jnp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))


def uses_channel_blocks(channels: int) -> bool:
    """Whether the forward correlation runs block by block over groups of CHANNEL_BLOCK channels."""
    return channels % CHANNEL_BLOCK == 0 and channels >= BLOCKED_FORWARD_MIN_CHANNELS


def _forward(x: jax.Array, w: jax.Array, geometry: DepthwiseGeometry) -> jax.Array:
    acc = accumulation_dtype(x.dtype, w.dtype)
    xp = _pad(x, geometry.pads)
    if not uses_channel_blocks(x.shape[3]):
        out = correlate_valid(xp, w, geometry.strides, geometry.out_size, acc)
        return out.astype(x.dtype)
    # Wide layers: with all C channels in the vectorised inner loop, every output pixel streams
    # kh*kw*C inputs and as many weights (2 x 162 KB for C=512, k=9) through L2, and XLA's loop
    # runs ~4x below its C<=96 speed. One block of 8 channels at a time keeps the window and the
    # weights in L1 (measured: docs/performance.md, "Implementations").
    kh, kw, channels = w.shape
    blocks = channels // CHANNEL_BLOCK
    xb = to_channel_blocks(xp)                                                 # (B, N, Hp, Wp, 8)
    wb = w.reshape(kh, kw, blocks, CHANNEL_BLOCK).transpose(2, 0, 1, 3)        # (B, kh, kw, 8)
    out = lax.map(lambda args: correlate_valid(args[0], args[1], geometry.strides, geometry.out_size, acc)
                  .astype(x.dtype), (xb, wb))
    return from_channel_blocks(out)


def _input_grad_geometry(geometry: DepthwiseGeometry) -> tuple[tuple, DepthwiseGeometry]:
    """lax.pad config that dilates and re-pads dy, and the stride-1 geometry that follows it."""
    config = [(0, 0, 0)]
    for k, s, (lo, hi), tail in zip(geometry.kernel_size, geometry.strides, geometry.pads,
                                     geometry.unused_tail):
        # Full correlation needs k-1 zeros each side; the forward padding is then cropped off
        # (negative lax.pad amounts crop), and rows the forward never read get zero gradient.
        config.append((k - 1 - lo, k - 1 - hi + tail, s - 1))
    config.append((0, 0, 0))
    dx_geometry = DepthwiseGeometry(
        strides=(1, 1), pads=((0, 0), (0, 0)), kernel_size=geometry.kernel_size,
        in_size=tuple(o + sum(c[:2]) + (o - 1) * c[2] for o, c in zip(geometry.out_size, config[1:3])),
        out_size=geometry.in_size, multiplier=1)
    return tuple(config), dx_geometry


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def depthwise_shift(x: jax.Array, w: jax.Array, geometry: DepthwiseGeometry,
                    weight_grad_method: str) -> jax.Array:
    """Depthwise correlation with channel multiplier 1.

    Args:
      x: (N, H, W, C) input, float dtype.
      w: (kh, kw, C) kernel, float dtype.
      geometry: strides, explicit pads and sizes (``multiplier`` is ignored here: the caller has
        already repeated the input channels).
      weight_grad_method: which ``weight_grad`` method the backward pass uses.

    Returns:
      (N, H', W', C) in x.dtype.
    """
    return _forward(x, w, geometry)


def _depthwise_shift_fwd(x, w, geometry, weight_grad_method):
    return _forward(x, w, geometry), (x, w)


def _depthwise_shift_bwd(geometry, weight_grad_method, residuals, dy):
    x, w = residuals
    config, dx_geometry = _input_grad_geometry(geometry)
    dy_dilated = lax.pad(dy, jnp.zeros((), dy.dtype), config)
    # The input gradient is itself a depthwise correlation: calling the custom-VJP op (not the raw
    # loop) keeps higher-order derivatives on the fast path too.
    dx = depthwise_shift(dy_dilated, w[::-1, ::-1], dx_geometry, weight_grad_method)
    dw = weight_grad(x, dy, geometry, weight_grad_method)
    return dx.astype(x.dtype), dw.astype(w.dtype)


depthwise_shift.defvjp(_depthwise_shift_fwd, _depthwise_shift_bwd)
