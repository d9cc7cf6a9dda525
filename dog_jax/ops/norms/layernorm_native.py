"""The native CPU LayerNorm (``impl="native"``): C++ forward and backward called through the XLA FFI.

The handlers (``dog_jax/ops/native/layernorm_cpu.cc``) are part of the native CPU library that
``library.py`` loads. The forward returns y and, per row, the mean and 1/σ that the backward reuses;
the backward returns dx, dscale and dbias in one pass over the rows. Both are wrapped in custom VJPs
whose own derivatives are the pure-JAX ones (``jax.vjp`` of ``layer_norm_xla`` and of its VJP), so
``grad(grad(...))`` works and higher orders run in pure JAX. ``jax.vmap`` batches the handlers
directly (``vmap_method="broadcast_all"``: x's rows form one group per batch element, each with its
scale and bias). Forward-mode differentiation is unavailable, as for every custom VJP.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from dog_jax.ops.native import library
from dog_jax.ops.auto import check_native_target
from dog_jax.ops.norms.native_derivatives import reference_backward, with_reference_derivative
from dog_jax.ops.norms.layernorm_xla import layer_norm_xla

_FORWARD_TARGET = "dog_jax_layernorm_forward"
_BACKWARD_TARGET = "dog_jax_layernorm_backward"


def check_layer_norm_native(x: jax.Array, scale: jax.Array, bias: jax.Array) -> None:
    """Raises one clear line if the native LayerNorm cannot run on these arguments here."""
    if not library.NATIVE_AVAILABLE:
        raise RuntimeError(f"layer_norm(impl='native'): {library.native_status()}; use impl='auto'")
    check_native_target("layer_norm")
    if not all(a.dtype == jnp.float32 for a in (x, scale, bias)):
        raise ValueError(f"layer_norm(impl='native') takes float32 input, scale and bias, got {x.dtype}, "
                         f"{scale.dtype}, {bias.dtype}; cast them or use impl='auto'")
    if x.ndim == 0 or x.shape[-1] == 0 or scale.shape != x.shape[-1:] or bias.shape != x.shape[-1:]:
        raise ValueError(f"layer_norm(impl='native') needs x (..., C) with C > 0 and scale, bias (C,), got "
                         f"shapes {x.shape}, {scale.shape}, {bias.shape}")


def native_fits(x: jax.Array, scale: jax.Array, bias: jax.Array) -> bool:
    """Whether the native kernel takes these arguments: all float32, x (..., C > 0), params (C,)."""
    return (all(a.dtype == jnp.float32 for a in (x, scale, bias))
            and x.ndim > 0 and x.shape[-1] > 0 and scale.shape == bias.shape == x.shape[-1:])


def _forward_call(x, scale, bias, eps):
    f32 = jnp.float32
    out = (jax.ShapeDtypeStruct(x.shape, f32), jax.ShapeDtypeStruct(x.shape[:-1], f32),
           jax.ShapeDtypeStruct(x.shape[:-1], f32))
    return jax.ffi.ffi_call(_FORWARD_TARGET, out, vmap_method="broadcast_all")(
        x, scale, bias, eps=np.float32(eps))


def _backward_call(x, scale, mean, rstd, dy):
    f32 = jnp.float32
    out = (jax.ShapeDtypeStruct(x.shape, f32), jax.ShapeDtypeStruct(scale.shape, f32),
           jax.ShapeDtypeStruct(scale.shape, f32))
    return jax.ffi.ffi_call(_BACKWARD_TARGET, out, vmap_method="broadcast_all")(x, scale, mean, rstd, dy)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def layer_norm_native(x: jax.Array, scale: jax.Array, bias: jax.Array, eps: float) -> jax.Array:
    """LayerNorm over the last axis by the native kernel; same math as ``layer_norm_xla``.

    Args:
      x: (..., C) float32 (``check_layer_norm_native``).
      scale, bias: (C,) float32.
      eps: added to the (biased, two-pass) variance.

    Returns:
      (..., C) float32.
    """
    return _forward_call(x, scale, bias, eps)[0]


def _layer_norm_fwd(x, scale, bias, eps):
    y, mean, rstd = _forward(eps, x, scale, bias)
    return y, (x, scale, mean, rstd)


def _layer_norm_bwd(eps, residuals, dy):
    x, scale, mean, rstd = residuals
    return _backward(eps, x, scale, mean, rstd, dy)


layer_norm_native.defvjp(_layer_norm_fwd, _layer_norm_bwd)


def _reference_forward(eps, x, scale, bias):
    """The native forward's (y, mean, rstd) in pure JAX."""
    mean = jnp.mean(x, axis=-1)
    rstd = jax.lax.rsqrt(jnp.mean(jnp.square(x - mean[..., None]), axis=-1) + eps)
    return layer_norm_xla(x, scale, bias, eps), mean, rstd


# (y, mean, rstd): LayerNorm output and each row's mean and 1/sqrt(var + eps), shape x.shape[:-1];
# differentiable because a second-order derivative differentiates the forward rule above, residuals
# included.
_forward = with_reference_derivative(lambda eps, x, scale, bias: _forward_call(x, scale, bias, eps),
                                     _reference_forward)

# (dx, dscale, dbias) for the output cotangent dy.
_backward = with_reference_derivative(
    lambda eps, x, scale, mean, rstd, dy: _backward_call(x, scale, mean, rstd, dy),
    reference_backward(lambda eps, x, scale, bias: layer_norm_xla(x, scale, bias, eps)))
