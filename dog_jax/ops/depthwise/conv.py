"""Depthwise 2-D convolution: the one entry point every model uses.

``depthwise_conv2d(x, kernel, strides=..., padding=..., impl=...)`` computes the same thing as
``lax.conv_general_dilated(..., feature_group_count=C)`` with NHWC input and HWIO kernel, by one
of several implementations:

  "xla"        ``lax.conv_general_dilated``: the reference; also the choice on GPU/TPU, where
               the vendor convolution libraries are fast (until measured otherwise).
  "shift"      kh*kw fused shifted multiply-adds with a hand-written VJP; weight gradient by a
               loop over output rows (``depthwise/shift.py``, ``depthwise/weight_grad.py``).
  "shift_blocked"  as "shift", with the weight-gradient loop on channel-blocked copies (wide layers).
  "shift_fft"  as "shift", but the weight gradient is an FFT correlation (large kernels).
  "native"     a C++ kernel called through the XLA FFI (``depthwise/native.py``): float32, stride 1,
               CPU; compiled at install time, absent without a compiler (``native_status()``).
  "toeplitz"   one batched matmul over pixels with a gathered tap matrix (``depthwise/toeplitz.py``);
               for maps no larger than the kernel, where the shifted forms are overhead-bound.
  "auto"       the fastest of these for the compile target's platform and the shape class
               (``dog_jax.ops.auto``, which states the rule for every op).

Differentiation: every impl supports ``jax.jit``, ``jax.vmap``, ``jax.grad`` and reverse-mode
derivatives of any order (``jax.grad(jax.grad(...))``, ``jax.jacrev``, ``jax.hessian`` built from
``jacrev``). Forward mode (``jax.jvp``, ``jax.jacfwd``, ``jax.linearize``) is not available for
the "shift*" impls because they are defined by a custom VJP; JAX then raises "can't apply
forward-mode autodiff (jvp) to a custom_vjp function" -- use ``impl="xla"`` or ``"toeplitz"`` (plain
JAX, every mode) for forward mode.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from dog_jax.ops.depthwise.geometry import Padding, Strides, check_arrays, make_geometry
from dog_jax.ops.depthwise.native import NATIVE_AVAILABLE, check_native, depthwise_native
from dog_jax.ops.auto import current_target, select_depthwise_impl
from dog_jax.ops.depthwise.shift import depthwise_shift
from dog_jax.ops.depthwise.toeplitz import depthwise_toeplitz

IMPLS = ("auto", "xla", "shift", "shift_blocked", "shift_fft", "toeplitz", "native")
_WEIGHT_GRAD_METHOD = {"shift": "rows", "shift_blocked": "blocked", "shift_fft": "fft"}


def impl_runs(impl: str, dtype, backend: str | None = None) -> bool:
    """Whether ``impl`` can run float inputs of ``dtype`` on ``backend`` (default: the compile target's).

    Every impl runs everywhere except "native": float32 on CPU, and only where its kernel was built.
    Benchmarks and checks use this to list the impls to try.
    """
    if impl != "native":
        return True
    return NATIVE_AVAILABLE and (backend or current_target().platform) == "cpu" and jnp.dtype(dtype) == jnp.float32


def _xla(x: jax.Array, kernel: jax.Array, geometry) -> jax.Array:
    return lax.conv_general_dilated(
        x, kernel.astype(x.dtype), window_strides=geometry.strides, padding=geometry.pads,
        dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=x.shape[-1])


def depthwise_conv2d(x: jax.Array, kernel: jax.Array, *, strides: Strides = 1, padding: Padding = "SAME",
                     impl: str = "auto") -> jax.Array:
    """Depthwise convolution of an NHWC input with an HWIO kernel.

    Args:
      x: (N, H, W, C) input, any float dtype.
      kernel: (kh, kw, 1, C*m) kernel, any float dtype; output channel c*m + j reads input
        channel c (the convention of ``lax.conv``'s ``feature_group_count``). Odd and even kh, kw.
      strides: int or (sh, sw), positive.
      padding: "SAME" (as ``lax.conv``: for even kernels/strides the extra row/column goes
        bottom/right, same as PyTorch ``padding="same"``), "VALID", an int p (p on every side) or
        ((top, bottom), (left, right)) of non-negative ints.
      impl: "auto", "xla", "shift", "shift_blocked", "shift_fft", "toeplitz" or "native" (module
        docstring).

    Returns:
      (N, H', W', C*m) in x's dtype, H' = floor((H + top + bottom - kh) / sh) + 1 (W' alike).
      The fast impls multiply and add in f32 (f64 for f64 inputs) whatever the input dtype; "xla"
      computes in x's dtype (the kernel is cast to it), as ``lax.conv`` does.

    Raises:
      ValueError: one line naming the wrong argument (ranks, kernel in-channel dimension, channel
        counts, dtypes, strides, padding, kernel larger than the padded input, unknown impl).
    """
    if impl not in IMPLS:
        raise ValueError(f"depthwise_conv2d: unknown impl {impl!r}; expected one of {', '.join(IMPLS)}")
    multiplier = check_arrays(x, kernel)
    geometry = make_geometry(jnp.shape(x), jnp.shape(kernel), strides, padding, multiplier)
    if impl == "auto":
        impl = select_depthwise_impl(jnp.shape(x), geometry, dtype=jnp.result_type(x, kernel))
    if impl == "native":
        check_native(x, kernel, geometry)
    if impl == "xla":
        return _xla(x, kernel, geometry)
    kh, kw, _, out_channels = kernel.shape
    if multiplier > 1:
        # Output channel c*m + j reads input channel c: repeat each input channel m times (fused by
        # XLA into the consumer; its transpose is the sum over the m copies).
        x = jnp.repeat(x, multiplier, axis=3)
    if impl == "native":
        return depthwise_native(x, kernel.reshape(kh, kw, out_channels), geometry)
    if impl == "toeplitz":
        return depthwise_toeplitz(x, kernel.reshape(kh, kw, out_channels), geometry)
    return depthwise_shift(x, kernel.reshape(kh, kw, out_channels), geometry, _WEIGHT_GRAD_METHOD[impl])
