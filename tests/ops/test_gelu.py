"""The exact GELU op: forward unchanged, hand-written derivative equal to JAX's own."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dog_jax.models.layers import gelu as layer_gelu
from dog_jax.ops.gelu import gelu


def _reference(x):
    return jax.nn.gelu(x, approximate=False)


def test_forward_is_jax_exact_gelu_and_the_layer_uses_it():
    x = jnp.linspace(-9.0, 9.0, 4000, dtype=jnp.float32).reshape(4, 1000, 1)
    np.testing.assert_array_equal(gelu(x), _reference(x))
    np.testing.assert_array_equal(layer_gelu(x), _reference(x))
    # Not the tanh approximation (differs by up to ~5e-4).
    assert float(jnp.max(jnp.abs(gelu(x) - jax.nn.gelu(x, approximate=True)))) > 1e-4


@pytest.mark.parametrize("dtype,tol", [(jnp.float32, 1e-6), (jnp.bfloat16, 1e-2)])
def test_gradient_matches_autodiff(dtype, tol):
    x = jnp.asarray(np.random.default_rng(0).standard_normal(2048) * 3, dtype)
    dy = jnp.asarray(np.random.default_rng(1).standard_normal(2048), dtype)
    got = jax.vjp(gelu, x)[1](dy)[0]
    ref = jax.vjp(_reference, x)[1](dy)[0]
    assert got.dtype == dtype
    np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(ref, np.float32), atol=tol, rtol=tol)


def test_float64_derivatives_against_finite_differences_and_second_order():
    with jax.enable_x64():
        x = jnp.asarray([-4.0, -1.3, -0.2, 0.0, 0.7, 2.5], jnp.float64)
        h = 1e-6
        fd = (gelu(x + h) - gelu(x - h)) / (2 * h)
        np.testing.assert_allclose(jax.vmap(jax.grad(gelu))(x), fd, atol=1e-8)
        second = jax.vmap(jax.grad(jax.grad(gelu)))(x)
        np.testing.assert_allclose(second, jax.vmap(jax.grad(jax.grad(_reference)))(x), atol=1e-10)
        # GELU''(x) = φ(x)·(2 − x²), nonzero: the backward itself is differentiated.
        np.testing.assert_allclose(second, np.exp(-0.5 * x**2) / np.sqrt(2 * np.pi) * (2 - x**2), atol=1e-10)


def test_jit_and_vmap():
    x = jnp.asarray(np.random.default_rng(2).standard_normal((3, 5, 7)), jnp.float32)
    grad = jax.jit(jax.vmap(jax.grad(lambda v: jnp.sum(gelu(v)))))(x)
    ref = jax.vmap(jax.grad(lambda v: jnp.sum(_reference(v))))(x)
    np.testing.assert_allclose(grad, ref, atol=1e-6)
