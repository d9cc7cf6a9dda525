"""Weight gradient of a depthwise convolution: per-channel correlation of input and output gradient.

    dw[a, b, c] = sum_{n, i, j} xp[n, i*sh + a, j*sw + b, c] * dy[n, i, j, c]

(xp = padded input). kh*kw separate reductions over the whole batch each stream all of x and dy
through memory and XLA:CPU emits them as strided scalar loops (the slowest option measured). Three
methods restructure the loops instead:

  "rows": a loop over groups of output rows; each step is one fused multiply-add into the
          (N, kh, kw, C) accumulator with the group's output positions unrolled (~TERMS_PER_STEP of
          them), reading kh+ input rows that stay in cache. Work = kh*kw*N*H'*W'*C multiply-adds,
          vectorised over C.
  "blocked": as "rows", but on channel-blocked copies (C/8, N, H, W, 8) of x and dy, so that one
          step's working set (kh input rows of 8 channels) stays in L1 whatever C is; costs a
          transpose of x and dy, and pays off for wide layers (measured, one thread: 3.4x at (4, 32, 32, 512) k9,
          1.9x at (4, 14, 14, 384) k7, none at C <= 224 or on 7x7 maps).
  "fft":  the correlation in the frequency domain over the padded spatial size (channels moved
          to the front so the FFT axes are minor): cost ~ N*C*Hp*Wp*log(Hp*Wp), independent of
          the kernel size, so it wins for large kernels and large inputs.

All accumulate in f32 (f64 for f64 inputs) and return (kh, kw, C) in that dtype.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from dog_jax.ops.depthwise.geometry import DepthwiseGeometry, accumulation_dtype
from dog_jax.ops.depthwise.blocks import CHANNEL_BLOCK, to_channel_blocks

WEIGHT_GRAD_METHODS = ("rows", "blocked", "fft")


def _padded(x: jax.Array, geometry: DepthwiseGeometry, acc_dtype) -> jax.Array:
    (top, bottom), (left, right) = geometry.pads
    return jnp.pad(x.astype(acc_dtype), ((0, 0), (top, bottom), (left, right), (0, 0)))


# Each loop step handles enough output rows for about this many unrolled columns: on small maps
# (7x7, 14x14) one row per step leaves too little work per pass over the accumulator.
TERMS_PER_STEP = 56


def _row_loop(xp: jax.Array, dy: jax.Array, geometry: DepthwiseGeometry) -> jax.Array:
    """Sum over output positions of window * dy, for spatial axes -3, -2 and any leading axes.

    Args:
      xp: (..., Hp, Wp, c) padded input, accumulation dtype.
      dy: (..., H', W', c) output gradient, accumulation dtype.

    Returns:
      (..., kh, kw, c): total[..., a, b, :] = sum_ij xp[..., i*sh + a, j*sw + b, :] * dy[..., i, j, :].
    """
    kh, kw = geometry.kernel_size
    sh, sw = geometry.strides
    ho, wo = geometry.out_size
    rows_per_step = max(1, min(ho, -(-TERMS_PER_STEP // wo)))
    steps = -(-ho // rows_per_step)
    extra = steps * rows_per_step - ho
    if extra:
        # Zero output-gradient rows contribute nothing; pad the input so their windows exist.
        lead = [(0, 0)] * (dy.ndim - 3)
        dy = jnp.pad(dy, lead + [(0, extra), (0, 0), (0, 0)])
        xp = jnp.pad(xp, lead + [(0, extra * sh), (0, 0), (0, 0)])
    span = (rows_per_step - 1) * sh + kh
    h_axis = dy.ndim - 3

    def body(step, total):
        rows = lax.dynamic_slice_in_dim(xp, step * rows_per_step * sh, span, axis=h_axis)
        dy_rows = lax.dynamic_slice_in_dim(dy, step * rows_per_step, rows_per_step, axis=h_axis)
        for r in range(rows_per_step):
            window_rows = lax.slice_in_dim(rows, r * sh, r * sh + kh, axis=h_axis)      # (..., kh, Wp, c)
            for j in range(wo):
                window = lax.slice_in_dim(window_rows, j * sw, j * sw + kw, axis=h_axis + 1)
                weight = lax.slice_in_dim(lax.slice_in_dim(dy_rows, r, r + 1, axis=h_axis), j, j + 1,
                                          axis=h_axis + 1)                                  # (..., 1, 1, c)
                total = total + window * weight
        return total

    total = jnp.zeros(dy.shape[:-3] + (kh, kw, dy.shape[-1]), xp.dtype)
    return lax.fori_loop(0, steps, body, total)


def weight_grad_rows(x: jax.Array, dy: jax.Array, geometry: DepthwiseGeometry) -> jax.Array:
    """(kh, kw, C) weight gradient by a loop over output rows (see module docstring)."""
    acc = accumulation_dtype(x.dtype, dy.dtype)
    return _row_loop(_padded(x, geometry, acc), dy.astype(acc), geometry).sum(axis=0)


def weight_grad_blocked(x: jax.Array, dy: jax.Array, geometry: DepthwiseGeometry) -> jax.Array:
    """(kh, kw, C) weight gradient by the row loop on channel-blocked copies (see module docstring)."""
    channels = x.shape[3]
    if channels % CHANNEL_BLOCK:
        return weight_grad_rows(x, dy, geometry)
    acc = accumulation_dtype(x.dtype, dy.dtype)
    xp = to_channel_blocks(_padded(x, geometry, acc))                   # (C/8, N, Hp, Wp, 8)
    total = _row_loop(xp, to_channel_blocks(dy.astype(acc)), geometry)  # (C/8, N, kh, kw, 8)
    kh, kw = geometry.kernel_size
    return total.sum(axis=1).transpose(1, 2, 0, 3).reshape(kh, kw, channels)


def weight_grad_fft(x: jax.Array, dy: jax.Array, geometry: DepthwiseGeometry) -> jax.Array:
    """(kh, kw, C) weight gradient by FFT correlation (see module docstring)."""
    acc = accumulation_dtype(x.dtype, dy.dtype)
    kh, kw = geometry.kernel_size
    sh, sw = geometry.strides
    xp = jnp.transpose(_padded(x, geometry, acc), (3, 0, 1, 2))          # (C, N, Hp, Wp)
    size = xp.shape[2:]
    dy = jnp.transpose(dy.astype(acc), (3, 0, 1, 2))                      # (C, N, H', W')
    if sh > 1 or sw > 1:
        dy = lax.pad(dy, jnp.zeros((), acc), ((0, 0, 0), (0, 0, 0), (0, 0, sh - 1), (0, 0, sw - 1)))
    # Circular correlation of length Hp never wraps: lag a < kh and dy's support ends at
    # Hp - kh (the dilated dy is at most Hp - kh + 1 long).
    spectrum = jnp.fft.rfft2(xp, s=size) * jnp.conj(jnp.fft.rfft2(dy, s=size))
    corr = jnp.fft.irfft2(spectrum.sum(axis=1), s=size)[:, :kh, :kw]    # (C, kh, kw)
    return jnp.transpose(corr, (1, 2, 0)).astype(acc)


def weight_grad(x: jax.Array, dy: jax.Array, geometry: DepthwiseGeometry, method: str) -> jax.Array:
    """Dispatches to one of WEIGHT_GRAD_METHODS."""
    if method == "rows":
        return weight_grad_rows(x, dy, geometry)
    if method == "blocked":
        return weight_grad_blocked(x, dy, geometry)
    if method == "fft":
        return weight_grad_fft(x, dy, geometry)
    raise ValueError(f"depthwise weight gradient: unknown method {method!r}; expected one of {WEIGHT_GRAD_METHODS}")
