"""Exactness of the native CPU training-mode BatchNorm (``batchnorm_cpu.cc``, ``batchnorm_native.py``).

Output, batch statistics and the three gradients against a float64 NumPy evaluation and against the
pure-JAX code (normwise relative error <= 1e-5), on odd channel counts, row counts that do not divide
into the kernel's chunks, inputs with a large mean (two-pass variance); gradients through the
returned statistics, jit, vmap, second derivatives, and the ``BatchNorm`` module (``impl``, running
statistics). Skipped, saying why, where the native library was not built.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dog_jax.models.layers import BatchNorm
from dog_jax.ops.native import library
from dog_jax.ops.norms.batchnorm import batch_norm_train
from dog_jax.ops.native.library import NATIVE_AVAILABLE, native_status
from tests.support.batch_norm_reference import EPS, numpy_reference
from tests.support.depthwise_reference import rel_err
from tests.support.layer_norm_reference import inputs
from tests.support.requires import NATIVE, requires

needs_native = requires(NATIVE_AVAILABLE, native_status(), NATIVE)


def outputs_and_grads(impl, x, scale, bias, dy):
    (y, mean, var), vjp = jax.vjp(lambda a, s, b: batch_norm_train(a, s, b, eps=EPS, impl=impl),
                                  x, scale, bias)
    zeros = jnp.zeros_like(mean)
    return (y, mean, var, *vjp((dy, zeros, zeros)))


@needs_native
@pytest.mark.parametrize("shape", [
    (2, 5, 7, 96),       # whole vectors
    (3, 11, 17, 101),    # odd C; 561 rows
    (7001, 5),           # many rows in unequal chunks (6553 rows per chunk at C = 5)
    (4, 3, 3, 512),      # ConvMixer width
])
def test_matches_numpy_and_xla(shape):
    args = inputs(shape, offset=5.0)
    native = jax.jit(lambda *a: outputs_and_grads("native", *a))(*args)
    xla = outputs_and_grads("xla", *args)
    names = ("y", "mean", "var", "dx", "dscale", "dbias")
    for name, got, ref, exact in zip(names, native, xla, numpy_reference(*args)):
        assert got.shape == ref.shape and got.dtype == jnp.float32, name
        scale = np.abs(exact).max()
        assert np.abs(np.asarray(got, np.float64) - exact).max() / scale <= 1e-5, name
        assert np.abs(np.asarray(got, np.float64) - np.asarray(ref, np.float64)).max() / scale <= 1e-5, name


@needs_native
def test_gradients_through_the_statistics_vmap_and_second_order():
    x, scale, bias, _ = inputs((3, 4, 5, 13), seed=1)

    def loss(impl):
        def f(x, s, b):
            y, mean, var = batch_norm_train(x, s, b, impl=impl)
            return jnp.sum(jnp.tanh(y) * jnp.arange(13.0)) + jnp.sum(mean ** 2) + jnp.sum(jnp.sqrt(var))
        return f

    first = [jax.jit(jax.grad(loss(impl), (0, 1, 2)))(x, scale, bias) for impl in ("native", "xla")]
    for got, ref in zip(*first):
        assert rel_err(got, ref) <= 1e-5

    def squared_grads(impl):
        return lambda *a: sum(jnp.sum(g ** 2) for g in jax.grad(loss(impl), (0, 1, 2))(*a))

    second = [jax.jit(jax.grad(squared_grads(impl), (0, 1, 2)))(x, scale, bias) for impl in ("native", "xla")]
    for got, ref in zip(*second):
        assert rel_err(got, ref) <= 1e-5
    batched = [jax.vmap(lambda a, impl=impl: batch_norm_train(a, scale, bias, impl=impl))(x)
               for impl in ("native", "xla")]
    for got, ref in zip(*batched):
        assert got.shape == ref.shape and rel_err(got, ref) <= 1e-5


@needs_native
def test_module_running_statistics_and_impl_choice():
    x = inputs((4, 6, 6, 24), seed=2)[0]
    layers = {impl: BatchNorm(24, impl=impl) for impl in ("auto", "xla", "native")}
    assert "dog_jax_batchnorm_forward" in str(jax.make_jaxpr(lambda v: BatchNorm(24)(v))(x))
    assert "dog_jax_batchnorm_forward" not in str(jax.make_jaxpr(lambda v: BatchNorm(24, impl="xla")(v))(x))
    outputs = {impl: layer(x) for impl, layer in layers.items()}
    for impl in ("auto", "native"):
        assert rel_err(outputs[impl], outputs["xla"]) <= 1e-5
        assert rel_err(layers[impl].mean[...], layers["xla"].mean[...]) <= 1e-5
        assert rel_err(layers[impl].var[...], layers["xla"].var[...]) <= 1e-5
    # Evaluation mode, bfloat16 and axis_name stay pure JAX under "auto"; "native" says why not.
    layers["auto"].use_running_average = True
    assert "dog_jax_batchnorm" not in str(jax.make_jaxpr(lambda v: layers["auto"](v))(x))
    assert "dog_jax_batchnorm" not in str(jax.make_jaxpr(lambda v: BatchNorm(24)(v))(x.astype(jnp.bfloat16)))
    with pytest.raises(ValueError, match="takes float32 input and dtype") as info:
        BatchNorm(24, impl="native")(x.astype(jnp.bfloat16))
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="no cross-device statistics") as info:
        batch_norm_train(x, jnp.ones(24), jnp.zeros(24), axis_name="batch", impl="native")
    assert "\n" not in str(info.value)


def test_missing_kernel_raises_one_clear_line(monkeypatch):
    monkeypatch.setattr(library, "NATIVE_AVAILABLE", False)
    monkeypatch.setattr(library, "_STATUS", "not built (test)")
    x = inputs((2, 3, 8))[0]
    with pytest.raises(RuntimeError, match=r"batch_norm\(impl='native'\): .*not built") as info:
        BatchNorm(8, impl="native")(x)
    assert "\n" not in str(info.value)
    assert "dog_jax_batchnorm" not in str(jax.make_jaxpr(lambda v: BatchNorm(8)(v))(x))
    with pytest.raises(ValueError, match="BatchNorm impl must be one of"):
        BatchNorm(8, impl="fast")
