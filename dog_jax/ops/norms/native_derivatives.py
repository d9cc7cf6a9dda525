"""Derivatives of the native LayerNorm/BatchNorm calls, taken through their pure-JAX references.

Each norm has a hand-written first derivative (its native backward kernel, wired up in
``norms/layernorm_native.py`` / ``norms/batchnorm_native.py``). Derivatives *of* the native forward's residuals
and of the native backward (second-order gradients) are rare, so instead of more kernels they are
the derivatives of the op's exact pure-JAX reference at the same arguments.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp


def with_reference_derivative(native_call: Callable, reference: Callable) -> Callable:
    """``f(eps, *arrays) = native_call(eps, *arrays)``, whose derivative is ``reference``'s.

    Args:
      native_call: ``(eps, *arrays) -> outputs``, an FFI call.
      reference: ``(eps, *arrays) -> outputs``, the same function in pure JAX.
    """

    @functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
    def f(eps, *arrays):
        return native_call(eps, *arrays)

    def f_fwd(eps, *arrays):
        return f(eps, *arrays), arrays

    def f_bwd(eps, arrays, cotangents):
        _, vjp = jax.vjp(lambda *a: reference(eps, *a), *arrays)
        return vjp(cotangents)

    f.defvjp(f_fwd, f_bwd)
    return f


def reference_backward(reference_forward: Callable) -> Callable:
    """``(eps, x, scale, stat_a, stat_b, dy) -> (dx, dscale, dbias)`` of ``reference_forward``.

    ``reference_forward(eps, x, scale, bias) -> y`` is a norm's pure-JAX output; ``stat_a, stat_b``
    (the native forward's saved statistics, functions of x) are accepted and unused, so they get
    zero cotangents.
    """

    def backward(eps, x, scale, stat_a, stat_b, dy):
        del stat_a, stat_b
        _, vjp = jax.vjp(lambda a, s, b: reference_forward(eps, a, s, b), x, scale, jnp.zeros_like(scale))
        return vjp(dy)

    return backward
