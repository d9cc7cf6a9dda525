"""Exactness of the native CPU LayerNorm (``dog_jax/ops/native/layernorm_cpu.cc``, ``layernorm_native.py``).

Output and the three gradients (x, scale, bias) against a float64 NumPy evaluation of the definition
and against the pure-JAX code (normwise relative error <= 1e-5), on odd channel counts (vector tails),
row counts that do not divide into the kernel's chunks, inputs with a large mean (two-pass variance),
under jit and vmap (batched and shared parameters), second derivatives, and the ``LayerNorm`` module's
``impl`` choice. Skipped, saying why, where the native library was not built.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dog_jax.models.layers import LayerNorm
from dog_jax.ops.native import library
from dog_jax.ops.norms.layernorm import layer_norm
from dog_jax.ops.native.library import NATIVE_AVAILABLE, native_status
from tests.support.depthwise_reference import rel_err
from tests.support.layer_norm_reference import EPS, inputs, numpy_reference
from tests.support.requires import NATIVE, requires

needs_native = requires(NATIVE_AVAILABLE, native_status(), NATIVE)


def value_and_grads(impl, x, scale, bias, dy):
    y, vjp = jax.vjp(lambda a, s, b: layer_norm(a, s, b, eps=EPS, impl=impl), x, scale, bias)
    return (y, *vjp(dy))


@needs_native
@pytest.mark.parametrize("shape", [
    (2, 5, 7, 96),      # ConvNeXt stage-1 width: whole 16-lane vectors
    (3, 11, 17, 101),   # 96 + 5: vector tail; 561 rows = two unequal chunks of the backward
    (13, 3),            # C below one vector
    (7001, 5),          # many rows, odd count; C = 5
    (4, 1),             # C = 1: y = bias, dx = 0
])
def test_matches_numpy_and_xla(shape):
    args = inputs(shape)
    native = jax.jit(lambda *a: value_and_grads("native", *a))(*args)
    xla = value_and_grads("xla", *args)
    exacts, dx_terms = numpy_reference(*args)
    for name, got, ref, exact in zip(("y", "dx", "dscale", "dbias"), native, xla, exacts):
        assert got.shape == ref.shape and got.dtype == jnp.float32, name
        # dx is a difference of terms of size |rstd·g| (exactly 0 for C = 1): errors relative to those.
        scale = max(np.abs(exact).max(), dx_terms if name == "dx" else 1e-30)
        assert np.abs(np.asarray(got, np.float64) - exact).max() / scale <= 1e-5, name
        assert np.abs(np.asarray(got, np.float64) - np.asarray(ref, np.float64)).max() / scale <= 1e-5, name


@needs_native
def test_vmap_with_batched_and_shared_parameters():
    x, scale, bias, dy = inputs((3, 4, 6, 21), seed=1)
    scales, biases = jnp.stack([scale, 2 * scale, -scale]), jnp.stack([bias, bias - 1, 3 * bias])

    def per_example(impl, s_axis):
        fn = jax.vmap(lambda a, s, b, d: value_and_grads(impl, a, s, b, d), in_axes=(0, s_axis, s_axis, 0))
        s, b = (scales, biases) if s_axis == 0 else (scale, bias)
        return jax.jit(fn)(x, s, b, dy)

    for s_axis in (0, None):
        for got, ref in zip(per_example("native", s_axis), per_example("xla", s_axis)):
            assert got.shape == ref.shape
            assert rel_err(got, ref) <= 1e-5
    # Nested vmap: two leading batch axes, parameters batched along the inner one only.
    nested = jax.vmap(jax.vmap(lambda a, s: layer_norm(a, s, bias, impl="native"), (0, 0)), (0, None))
    reference = jax.vmap(jax.vmap(lambda a, s: layer_norm(a, s, bias, impl="xla"), (0, 0)), (0, None))
    assert rel_err(nested(x[:, :3], scales), reference(x[:, :3], scales)) <= 1e-5


@needs_native
def test_second_order_matches_xla():
    x, scale, bias, _ = inputs((2, 3, 5, 19), seed=2)

    def grad_norm(impl):
        def loss(x, s, b):
            return jnp.sum(jnp.tanh(layer_norm(x, s, b, impl=impl)) * jnp.arange(19.0))

        def squared_grads(x, s, b):
            return sum(jnp.sum(g ** 2) for g in jax.grad(loss, (0, 1, 2))(x, s, b))

        return jax.jit(jax.grad(squared_grads, (0, 1, 2)))(x, scale, bias)

    for got, ref in zip(grad_norm("native"), grad_norm("xla")):
        assert rel_err(got, ref) <= 1e-5


@needs_native
def test_repeated_calls_are_bitwise_equal():
    args = inputs((8, 30, 30, 40), seed=3)
    fn = jax.jit(lambda *a: value_and_grads("native", *a))
    for a, b in zip(fn(*args), fn(*args)):
        np.testing.assert_array_equal(a, b)


def _targets(fn, *args) -> str:
    return str(jax.make_jaxpr(fn)(*args))


@needs_native
def test_module_impl_choice():
    x = inputs((2, 4, 4, 8))[0]
    auto, xla, native = (LayerNorm(8, impl=impl) for impl in ("auto", "xla", "native"))
    assert "dog_jax_layernorm_forward" in _targets(auto, x)
    assert "dog_jax_layernorm_forward" not in _targets(xla, x)
    assert rel_err(native(x), xla(x)) <= 1e-5
    # bfloat16 in or out: "auto" takes the pure-JAX path, "native" says why it cannot run.
    assert "dog_jax_layernorm_forward" not in _targets(auto, x.astype(jnp.bfloat16))
    assert "dog_jax_layernorm_forward" not in _targets(LayerNorm(8, dtype=jnp.bfloat16), x)
    with pytest.raises(ValueError, match="takes float32 input and dtype") as info:
        native(x.astype(jnp.bfloat16))
    assert "\n" not in str(info.value)


def test_unknown_impl_raises_one_clear_line():
    with pytest.raises(ValueError, match="LayerNorm impl must be one of") as info:
        LayerNorm(8, impl="fast")
    assert "\n" not in str(info.value)


def test_missing_kernel_raises_one_clear_line_and_auto_falls_back(monkeypatch):
    monkeypatch.setattr(library, "NATIVE_AVAILABLE", False)
    monkeypatch.setattr(library, "_STATUS", "not built (test)")
    x = inputs((2, 3, 8))[0]
    with pytest.raises(RuntimeError, match=r"layer_norm\(impl='native'\): .*not built") as info:
        LayerNorm(8, impl="native")(x)
    assert "\n" not in str(info.value)
    assert "dog_jax_layernorm_forward" not in _targets(LayerNorm(8), x)
