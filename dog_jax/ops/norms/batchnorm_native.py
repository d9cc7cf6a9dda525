"""The native CPU training-mode BatchNorm (``impl="native"``): C++ forward and backward via the XLA FFI.

The handlers (``dog_jax/ops/native/batchnorm_cpu.cc``) are part of the native CPU library that
``library.py`` loads. The forward returns y and the batch mean and biased variance (C,) (the
module updates its running statistics from them in JAX); the backward returns dx, dscale and dbias.
Cotangents of the returned mean and variance are added in JAX when they are not symbolic zeros (they
are zeros when, as in the module, the statistics only feed ``stop_gradient``). Both handlers are
wrapped in custom VJPs whose own derivatives are the pure-JAX ones, so ``grad(grad(...))`` works.
``jax.vmap`` runs the handlers once per batch element (``vmap_method="sequential"``). No ``axis_name``
(cross-device statistics): that stays pure JAX.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.custom_derivatives import SymbolicZero

from dog_jax.ops.native import library
from dog_jax.ops.auto import check_native_target
from dog_jax.ops.norms.native_derivatives import reference_backward, with_reference_derivative
from dog_jax.ops.norms.batchnorm_xla import batch_norm_train_xla

_FORWARD_TARGET = "dog_jax_batchnorm_forward"
_BACKWARD_TARGET = "dog_jax_batchnorm_backward"


def check_batch_norm_native(x: jax.Array, scale: jax.Array, bias: jax.Array, axis_name) -> None:
    """Raises one clear line if the native BatchNorm cannot run on these arguments here."""
    if not library.NATIVE_AVAILABLE:
        raise RuntimeError(f"batch_norm(impl='native'): {library.native_status()}; use impl='auto'")
    check_native_target("batch_norm")
    if axis_name is not None:
        raise ValueError(f"batch_norm(impl='native') has no cross-device statistics (axis_name="
                         f"{axis_name!r}); use impl='auto'")
    if not all(a.dtype == jnp.float32 for a in (x, scale, bias)):
        raise ValueError(f"batch_norm(impl='native') takes float32 input, scale and bias, got {x.dtype}, "
                         f"{scale.dtype}, {bias.dtype}; cast them or use impl='auto'")
    if x.ndim < 2 or x.size == 0 or scale.shape != x.shape[-1:] or bias.shape != x.shape[-1:]:
        raise ValueError(f"batch_norm(impl='native') needs a non-empty x (..., C) and scale, bias (C,), "
                         f"got shapes {x.shape}, {scale.shape}, {bias.shape}")


def native_fits(x: jax.Array, scale: jax.Array, bias: jax.Array, axis_name) -> bool:
    """Whether the native kernel takes these arguments (float32, shapes, no ``axis_name``)."""
    return (axis_name is None
            and all(a.dtype == jnp.float32 for a in (x, scale, bias)) and x.ndim >= 2 and x.size > 0
            and scale.shape == bias.shape == x.shape[-1:])


def _forward_call(x, scale, bias, eps):
    c = x.shape[-1]
    out = (jax.ShapeDtypeStruct(x.shape, jnp.float32), jax.ShapeDtypeStruct((c,), jnp.float32),
           jax.ShapeDtypeStruct((c,), jnp.float32))
    return jax.ffi.ffi_call(_FORWARD_TARGET, out, vmap_method="sequential")(
        x, scale, bias, eps=np.float32(eps))


def _backward_call(x, scale, mean, var, dy, eps):
    out = (jax.ShapeDtypeStruct(x.shape, jnp.float32), jax.ShapeDtypeStruct(scale.shape, jnp.float32),
           jax.ShapeDtypeStruct(scale.shape, jnp.float32))
    return jax.ffi.ffi_call(_BACKWARD_TARGET, out, vmap_method="sequential")(
        x, scale, mean, var, dy, eps=np.float32(eps))


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def batch_norm_train_native(x: jax.Array, scale: jax.Array, bias: jax.Array,
                            eps: float) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Training-mode BatchNorm by the native kernel; same math as ``batch_norm_train_xla``.

    Args:
      x: (..., C) float32 (``check_batch_norm_native``); statistics over all axes but the last.
      scale, bias: (C,) float32.
      eps: added to the variance.

    Returns:
      (y (..., C), batch mean (C,), biased batch variance (C,)), float32.
    """
    return _forward_call(x, scale, bias, eps)


def _train_fwd(x, scale, bias, eps):
    x, scale, bias = x.value, scale.value, bias.value
    y, mean, var = _forward(eps, x, scale, bias)
    return (y, mean, var), (x, scale, mean, var)


def _train_bwd(eps, residuals, cotangents):
    x, scale, mean, var = residuals
    dy, dmean, dvar = cotangents
    if isinstance(dy, SymbolicZero):
        dy = jnp.zeros_like(x)
    dx, dscale, dbias = _backward(eps, x, scale, mean, var, dy)
    count = x.size // x.shape[-1]
    if not isinstance(dmean, SymbolicZero):
        dx = dx + dmean / count
    if not isinstance(dvar, SymbolicZero):
        dx = dx + dvar * (2.0 / count) * (x - mean)
    return dx, dscale, dbias


batch_norm_train_native.defvjp(_train_fwd, _train_bwd, symbolic_zeros=True)


# (y, mean, var); differentiable because a second-order derivative differentiates the forward rule
# above, residuals included.
_forward = with_reference_derivative(
    lambda eps, x, scale, bias: _forward_call(x, scale, bias, eps),
    lambda eps, x, scale, bias: batch_norm_train_xla(x, scale, bias, eps))

# (dx, dscale, dbias) for the output cotangent dy.
_backward = with_reference_derivative(
    lambda eps, x, scale, mean, var, dy: _backward_call(x, scale, mean, var, dy, eps),
    reference_backward(lambda eps, x, scale, bias: batch_norm_train_xla(x, scale, bias, eps)[0]))
