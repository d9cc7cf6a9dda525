"""Argument checking and geometry for depthwise convolution.

Every implementation of ``depthwise_conv2d`` works from the same `DepthwiseGeometry`:
the strides and *explicit* paddings, so that all of them agree with ``lax.conv`` on what
"SAME" means (for even kernels and for stride 2 the extra row/column goes bottom/right).
"""

from __future__ import annotations

import dataclasses
import numbers
from typing import Sequence, Union

import jax.numpy as jnp

Padding = Union[str, int, Sequence[Sequence[int]]]
Strides = Union[int, Sequence[int]]


@dataclasses.dataclass(frozen=True)
class DepthwiseGeometry:
    """Static description of one depthwise convolution (hashable: used as a jit-static argument).

    Attributes:
      strides: (sh, sw), positive ints.
      pads: ((top, bottom), (left, right)), non-negative ints.
      kernel_size: (kh, kw).
      in_size: (H, W) of the unpadded input.
      out_size: (H', W') of the output.
      multiplier: m, output channels per input channel.
    """

    strides: tuple[int, int]
    pads: tuple[tuple[int, int], tuple[int, int]]
    kernel_size: tuple[int, int]
    in_size: tuple[int, int]
    out_size: tuple[int, int]
    multiplier: int

    @property
    def unused_tail(self) -> tuple[int, int]:
        """Rows/columns at the bottom/right of the padded input that no output reads."""
        return tuple(
            (size + lo + hi) - ((out - 1) * s + k)
            for size, (lo, hi), out, s, k in zip(
                self.in_size, self.pads, self.out_size, self.strides, self.kernel_size))


def _fail(message: str) -> None:
    raise ValueError(f"depthwise_conv2d: {message}")


def _normalize_strides(strides: Strides) -> tuple[int, int]:
    if isinstance(strides, numbers.Integral) and not isinstance(strides, bool):
        strides = (strides, strides)
    try:
        pair = tuple(int(s) for s in strides)
        ok = len(pair) == 2 and all(int(s) == s and not isinstance(s, bool) for s in strides)
    except (TypeError, ValueError):
        ok = False
    if not ok or min(pair) < 1:
        _fail(f"strides must be a positive int or a pair of positive ints (sh, sw), got {strides!r}")
    return pair


def _same_pads(size: int, k: int, s: int) -> tuple[int, int]:
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)
    return total // 2, total - total // 2


def _normalize_padding(padding: Padding, in_size, kernel_size, strides) -> tuple[tuple[int, int], tuple[int, int]]:
    if isinstance(padding, str):
        mode = padding.upper()
        if mode == "SAME":
            return tuple(_same_pads(n, k, s) for n, k, s in zip(in_size, kernel_size, strides))
        if mode == "VALID":
            return ((0, 0), (0, 0))
        _fail(f'padding must be "SAME", "VALID" or ((top, bottom), (left, right)), got {padding!r}')
    if isinstance(padding, numbers.Integral) and not isinstance(padding, bool):
        padding = ((padding, padding), (padding, padding))
    try:
        pads = tuple((int(lo), int(hi)) for lo, hi in padding)
        ok = len(pads) == 2 and all(
            int(v) == v and not isinstance(v, bool) for pair in padding for v in pair)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        _fail(f'padding must be "SAME", "VALID" or ((top, bottom), (left, right)) of ints, got {padding!r}')
    if min(min(p) for p in pads) < 0:
        _fail(f"explicit padding must be non-negative (crop the input instead), got {padding!r}")
    return pads


def check_arrays(x, kernel) -> int:
    """Validates shapes and dtypes of (x, kernel); returns the channel multiplier m."""
    x_shape, k_shape = jnp.shape(x), jnp.shape(kernel)
    if len(x_shape) != 4:
        _fail(f"x must be NHWC with 4 dimensions, got shape {x_shape}; add a batch axis with x[None]")
    if len(k_shape) != 4:
        _fail(f"kernel must be HWIO (kh, kw, 1, C*m) with 4 dimensions, got shape {k_shape}")
    if k_shape[2] != 1:
        _fail(f"kernel must be (kh, kw, 1, C*m) with in-channel dimension 1 for a depthwise "
              f"convolution, got shape {k_shape}")
    channels = x_shape[3]
    if channels == 0 or k_shape[3] == 0 or k_shape[3] % channels:
        _fail(f"kernel output channels ({k_shape[3]}) must be a positive multiple of the input "
              f"channels ({channels})")
    for name, array in (("x", x), ("kernel", kernel)):
        if not jnp.issubdtype(jnp.result_type(array), jnp.floating):
            _fail(f"{name} must have a floating dtype, got {jnp.result_type(array)}")
    return k_shape[3] // channels


def make_geometry(x_shape, kernel_shape, strides: Strides, padding: Padding, multiplier: int) -> DepthwiseGeometry:
    """Resolves strides and padding to explicit ints and computes the output size."""
    in_size = (int(x_shape[1]), int(x_shape[2]))
    kernel_size = (int(kernel_shape[0]), int(kernel_shape[1]))
    strides = _normalize_strides(strides)
    pads = _normalize_padding(padding, in_size, kernel_size, strides)
    out_size = []
    for n, k, s, (lo, hi) in zip(in_size, kernel_size, strides, pads):
        if n + lo + hi < k:
            _fail(f"kernel {kernel_size} is larger than the padded input "
                  f"({in_size[0] + sum(pads[0])}, {in_size[1] + sum(pads[1])}); use padding='SAME' or a smaller kernel")
        out_size.append((n + lo + hi - k) // s + 1)
    return DepthwiseGeometry(strides, pads, kernel_size, in_size, tuple(out_size), multiplier)


def accumulation_dtype(*dtypes) -> jnp.dtype:
    """f32 for 16/32-bit floats, f64 when any input is f64 (only possible with jax_enable_x64)."""
    if any(jnp.dtype(d) == jnp.float64 for d in dtypes):
        return jnp.dtype(jnp.float64)
    return jnp.dtype(jnp.float32)

