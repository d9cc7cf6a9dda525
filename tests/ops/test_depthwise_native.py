"""Exactness of the native CPU depthwise kernel (impl="native", ``dog_jax/ops/native/``).

Output, input gradient and kernel gradient against a float64 NumPy evaluation of the definition and
against impl="xla" (normwise relative error <= 1e-5 in float32), on odd sizes, stride 1, "SAME" (as
the models use), "VALID" and explicit padding, kernels 3, 5, 7, 9 and a non-square one, channel
counts that exercise every vector width of the kernel (16-, 8- and 1-channel blocks) and map widths
that exercise its register tiles and edge columns. The kernel is built by ``pip install`` wherever a
C++ compiler exists; these tests skip, saying why, where it was not built (fail under CI: tests/support/requires.py).
"""

import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dog_jax.ops import depthwise_conv2d
from dog_jax.ops.native import library
from dog_jax.ops.depthwise.geometry import make_geometry
from dog_jax.ops.depthwise.native import NATIVE_AVAILABLE, native_status
from dog_jax.ops.auto import Target, select_depthwise_impl
from tests.support.depthwise_reference import assert_matches_reference, rel_err
from tests.support.requires import NATIVE, require, requires

needs_native = requires(NATIVE_AVAILABLE, native_status(), NATIVE)


def inputs(shape, kernel, seed=0):
    rng = np.random.default_rng(seed)
    return (jnp.asarray(rng.standard_normal(shape), jnp.float32),
            jnp.asarray(rng.standard_normal(kernel), jnp.float32))


def test_kernel_is_built_where_a_compiler_exists():
    # CI installs with `pip install --no-deps -e .` on a machine with g++: the kernel must be there.
    compiler = shutil.which("c++") or shutil.which("g++")
    require(compiler is not None, "no C++ compiler on this machine", NATIVE)
    assert NATIVE_AVAILABLE, f"{native_status()} -- rebuild: pip install --no-deps -e ."
    assert native_status().startswith("dog_jax native CPU kernels (depthwise conv, LayerNorm, BatchNorm): ")
    assert ": loaded from " in native_status()


@needs_native
@pytest.mark.parametrize("shape, kernel, padding", [
    ((2, 13, 23, 40), (3, 3, 1, 40), "SAME"),      # 16 + 16 + 8 channels; tiles and edges
    ((1, 17, 19, 24), (5, 5, 1, 24), "SAME"),
    ((2, 11, 26, 19), (7, 7, 1, 19), "SAME"),      # 16 + 1 + 1 + 1 channels
    ((1, 9, 29, 16), (9, 9, 1, 16), "SAME"),
    ((2, 5, 7, 3), (9, 9, 1, 3), "SAME"),          # kernel larger than the map
    ((1, 12, 15, 7), (3, 5, 1, 7), "SAME"),        # non-square kernel
    ((2, 10, 21, 9), (7, 7, 1, 9), "VALID"),
    ((1, 8, 14, 8), (5, 5, 1, 8), ((0, 4), (3, 1))),
    ((1, 7, 9, 5), (3, 3, 1, 10), "SAME"),         # channel multiplier 2
])
def test_matches_numpy_and_xla(shape, kernel, padding):
    x, w = inputs(shape, kernel)
    assert_matches_reference("native", x, w, (1, 1), padding)


@needs_native
def test_model_sized_layer_matches_xla():
    # A ConvNeXt-T stage-3-like layer (every 16-channel block, 8-column tiles), batch 2.
    x, w = inputs((2, 14, 14, 384), (7, 7, 1, 384), seed=3)
    assert_matches_reference("native", x, w, (1, 1), "SAME")


@needs_native
def test_second_order_and_vmap_match_xla():
    x, w = inputs((2, 9, 11, 6), (5, 5, 1, 6), seed=1)

    def grad_norm(impl):
        def loss(x, w):
            return jnp.sum(jnp.tanh(depthwise_conv2d(x, w, padding="SAME", impl=impl)))
        return jax.grad(lambda x, w: sum(jnp.sum(g ** 2) for g in jax.grad(loss, (0, 1))(x, w)), (0, 1))(x, w)

    for g, r in zip(grad_norm("native"), grad_norm("xla")):
        assert rel_err(g, r) <= 1e-5
    xs, ws = jnp.stack([x, -2 * x]), jnp.stack([w, w[::-1]])
    got = jax.vmap(lambda a, b: depthwise_conv2d(a, b, impl="native"))(xs, ws)
    ref = jnp.stack([depthwise_conv2d(a, b, impl="xla") for a, b in zip(xs, ws)])
    assert rel_err(got, ref) <= 1e-5


@needs_native
def test_repeated_calls_are_bitwise_equal():
    x, w = inputs((4, 16, 16, 32), (7, 7, 1, 32), seed=2)
    grads = jax.jit(jax.grad(lambda x, w: jnp.sum(depthwise_conv2d(x, w, impl="native") ** 2), (0, 1)))
    first, second = grads(x, w), grads(x, w)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)


@needs_native
@pytest.mark.parametrize("x_dtype, kwargs, match", [
    (jnp.bfloat16, {}, "takes float32 input and kernel"),
    (jnp.float32, {"strides": 2}, "supports stride 1 only"),
])
def test_unsupported_arguments_raise_one_clear_line(x_dtype, kwargs, match):
    x, w = inputs((1, 8, 8, 4), (3, 3, 1, 4))
    with pytest.raises(ValueError, match=match) as info:
        depthwise_conv2d(x.astype(x_dtype), w, impl="native", **kwargs)
    assert "\n" not in str(info.value)


def test_missing_kernel_raises_one_clear_line_and_auto_falls_back(monkeypatch):
    monkeypatch.setattr(library, "NATIVE_AVAILABLE", False)
    monkeypatch.setattr(library, "_STATUS", "not built (test)")
    x, w = inputs((1, 8, 8, 4), (3, 3, 1, 4))
    match = r"depthwise_conv2d\(impl='native'\): dog_jax native CPU kernels .*: not built"
    with pytest.raises(RuntimeError, match=match) as info:
        depthwise_conv2d(x, w, impl="native")
    assert "\n" not in str(info.value)
    geometry = make_geometry(x.shape, w.shape, 1, "SAME", 1)
    assert select_depthwise_impl(x.shape, geometry, target=Target("cpu"), native=False) == "shift"
