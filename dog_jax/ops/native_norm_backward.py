"""The native LayerNorm/BatchNorm backward as a differentiable function.

Both norms' native backward kernels return (dx, dscale, dbias) from (x, scale, two statistics of x
saved by the forward, dy). Derivatives of that backward (second-order gradients) are taken through
the op's pure-JAX reference instead of being written natively: they are rare, and the reference is
exact. The two statistics are functions of x, so they get zero cotangents.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp


def differentiable_native_backward(native_call: Callable, reference_forward: Callable) -> Callable:
    """``backward(x, scale, stat_a, stat_b, dy, eps) -> (dx, dscale, dbias)``, differentiable.

    Args:
      native_call: ``(x, scale, stat_a, stat_b, dy, eps) -> (dx, dscale, dbias)``, the FFI call.
      reference_forward: ``(x, scale, bias, eps) -> y``, the pure-JAX forward of the same op.
    """

    def reference_backward(x, scale, dy, eps):
        _, vjp = jax.vjp(lambda a, s, b: reference_forward(a, s, b, eps), x, scale, jnp.zeros_like(scale))
        return vjp(dy)

    @functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
    def backward(x, scale, stat_a, stat_b, dy, eps):
        return native_call(x, scale, stat_a, stat_b, dy, eps)

    def backward_fwd(x, scale, stat_a, stat_b, dy, eps):
        return backward(x, scale, stat_a, stat_b, dy, eps), (x, scale, stat_a, stat_b, dy)

    def backward_bwd(eps, residuals, cotangents):
        x, scale, stat_a, stat_b, dy = residuals
        _, vjp = jax.vjp(lambda a, s, d: reference_backward(a, s, d, eps), x, scale, dy)
        dx, dscale, ddy = vjp(cotangents)
        return dx, dscale, jnp.zeros_like(stat_a), jnp.zeros_like(stat_b), ddy

    backward.defvjp(backward_fwd, backward_bwd)
    return backward
