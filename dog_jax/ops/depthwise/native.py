"""The native CPU depthwise convolution (``impl="native"``): a C++ kernel called through the XLA FFI.

The kernel (``dog_jax/ops/native/depthwise_cpu.cc``) is part of the native CPU library that
``library.py`` loads (built by ``pip install`` where a C++ compiler exists). Whether it is present,
and why not, is ``native_status()`` (one line), and ``NATIVE_AVAILABLE``; "auto" picks "native" only
when it is.

Scope: float32 input and kernel, stride 1, any padding, CPU. Forward, input gradient and kernel
gradient are native; the input gradient is the forward kernel on the output gradient with the
spatially flipped kernel, and the kernel gradient's own derivatives are again forward calls, so
reverse-mode derivatives of any order work. ``jax.vmap`` runs the kernel once per batch element.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from dog_jax.ops.native import library
from dog_jax.ops.auto import check_native_target
from dog_jax.ops.depthwise.geometry import DepthwiseGeometry
from dog_jax.ops.native.library import NATIVE_AVAILABLE, native_status

__all__ = ["NATIVE_AVAILABLE", "check_native", "depthwise_native", "native_status"]

_FORWARD_TARGET = "dog_jax_depthwise_forward"
_KERNEL_GRAD_TARGET = "dog_jax_depthwise_kernel_grad"


def check_native(x: jax.Array, kernel: jax.Array, geometry: DepthwiseGeometry) -> None:
    """Raises one clear line if ``impl="native"`` cannot run these arguments here."""
    if not library.NATIVE_AVAILABLE:
        raise RuntimeError(f"depthwise_conv2d(impl='native'): {library.native_status()}; use impl='auto'")
    check_native_target("depthwise_conv2d")
    if x.dtype != jnp.float32 or kernel.dtype != jnp.float32:
        raise ValueError(f"depthwise_conv2d(impl='native') takes float32 input and kernel, got "
                         f"{x.dtype} and {kernel.dtype}; cast them or use impl='auto'")
    if geometry.strides != (1, 1):
        raise ValueError(f"depthwise_conv2d(impl='native') supports stride 1 only, got strides "
                         f"{geometry.strides}; use impl='auto'")


def _forward_call(x: jax.Array, w: jax.Array, pad_top: int, pad_left: int, out_size) -> jax.Array:
    n, _, _, c = x.shape
    out = jax.ShapeDtypeStruct((n, *out_size, c), jnp.float32)
    return jax.ffi.ffi_call(_FORWARD_TARGET, out, vmap_method="sequential")(
        x, w, pad_top=np.int64(pad_top), pad_left=np.int64(pad_left))


def _kernel_grad_call(x: jax.Array, dy: jax.Array, pad_top: int, pad_left: int, kernel_size) -> jax.Array:
    out = jax.ShapeDtypeStruct((*kernel_size, x.shape[3]), jnp.float32)
    return jax.ffi.ffi_call(_KERNEL_GRAD_TARGET, out, vmap_method="sequential")(
        x, dy, pad_top=np.int64(pad_top), pad_left=np.int64(pad_left))


# Geometry of one stride-1 correlation: (pad_top, pad_left, out_height, out_width).
@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _correlate(x: jax.Array, w: jax.Array, geo: tuple[int, int, int, int]) -> jax.Array:
    """y[n,i,j,c] = sum_ab x[n, i-pt+a, j-pl+b, c] * w[a,b,c] (zero outside x); (N, ho, wo, C)."""
    return _forward_call(x, w, geo[0], geo[1], geo[2:])


def _transposed(geo, kernel_size, in_size):
    """Geometry of the input gradient: the correlation with the flipped kernel back onto x."""
    return (kernel_size[0] - 1 - geo[0], kernel_size[1] - 1 - geo[1], *in_size)


def _correlate_fwd(x, w, geo):
    return _correlate(x, w, geo), (x, w)


def _correlate_bwd(geo, residuals, dy):
    x, w = residuals
    dx = _correlate(dy, w[::-1, ::-1], _transposed(geo, w.shape[:2], x.shape[1:3]))
    dw = _kernel_grad(x, dy, (geo[0], geo[1], w.shape[0], w.shape[1]))
    return dx, dw


_correlate.defvjp(_correlate_fwd, _correlate_bwd)


# Geometry: (pad_top, pad_left, kh, kw).
@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _kernel_grad(x: jax.Array, dy: jax.Array, geo: tuple[int, int, int, int]) -> jax.Array:
    """dw[a,b,c] = sum_nij x[n, i-pt+a, j-pl+b, c] * dy[n,i,j,c]; (kh, kw, C)."""
    return _kernel_grad_call(x, dy, geo[0], geo[1], geo[2:])


def _kernel_grad_fwd(x, dy, geo):
    return _kernel_grad(x, dy, geo), (x, dy)


def _kernel_grad_bwd(geo, residuals, g):
    # dw is bilinear in (x, dy): its derivatives are correlations with the cotangent g as kernel.
    x, dy = residuals
    pads = (geo[0], geo[1])
    dx = _correlate(dy, g[::-1, ::-1], _transposed((*pads, *dy.shape[1:3]), geo[2:], x.shape[1:3]))
    ddy = _correlate(x, g, (*pads, *dy.shape[1:3]))
    return dx, ddy


_kernel_grad.defvjp(_kernel_grad_fwd, _kernel_grad_bwd)


def depthwise_native(x: jax.Array, w: jax.Array, geometry: DepthwiseGeometry) -> jax.Array:
    """Stride-1 depthwise correlation by the native kernel.

    Args:
      x: (N, H, W, C) float32 input (already repeated for a channel multiplier).
      w: (kh, kw, C) float32 kernel.
      geometry: resolved geometry; its strides must be (1, 1) (``check_native``).

    Returns:
      (N, H', W', C) float32.
    """
    (top, _), (left, _) = geometry.pads
    return _correlate(x, w, (top, left, *geometry.out_size))
