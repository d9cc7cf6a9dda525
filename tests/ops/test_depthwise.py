"""Exactness and API tests of dog_jax.ops.depthwise_conv2d against the lax.conv reference.

Two references: impl="xla" (``lax.conv_general_dilated`` with ``feature_group_count``, differentiated
by JAX), and a float64 NumPy evaluation of the definition (`numpy_reference`). Every case is checked
against the NumPy one; against "xla" too unless a padding exceeds kernel-1: there XLA:CPU's input
gradient of a convolution (grouped or not) is wrong in jax 0.10.2 -- e.g. shape (2, 1, 1, 2), kernel
(1, 8), padding ((0, 0), (8, 6)) -- see test_xla_input_gradient_bug_is_still_there.

Error measure throughout: max |result - reference| / max |reference| (normwise relative error).
Bounds: 1e-5 for f32; for bf16/f16 inputs the fast impls accumulate in f32 and round once to the
input dtype, so the bound is that rounding, u = 2**-8 (bf16) / 2**-11 (f16), plus 1e-5.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from dog_jax.ops import depthwise_conv2d
from dog_jax.ops.depthwise import IMPLS
from dog_jax.ops.depthwise.geometry import make_geometry
from dog_jax.ops.auto import Target, compile_target, native_allowed, select_depthwise_impl
from tests.support.depthwise_reference import (assert_matches_reference, forward_and_grads, numpy_reference,
                                               rel_err)

# "native" (float32, stride 1, CPU, built at install time) has its own tests: test_depthwise_native.py.
FAST_IMPLS = [impl for impl in IMPLS if impl not in ("auto", "xla", "native")]
KERNEL_SIZES = (1, 2, 3, 5, 7, 8, 9, 31)


@st.composite
def problems(draw):
    """A small depthwise problem whose padded input is at least as large as the kernel."""
    kh = draw(st.sampled_from(KERNEL_SIZES))
    kw = draw(st.sampled_from((kh,) * 3 + KERNEL_SIZES))  # mostly square, sometimes not
    strides = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    mode = draw(st.sampled_from(("SAME", "VALID", "explicit")))
    if mode == "explicit":
        padding = tuple((draw(st.integers(0, k)), draw(st.integers(0, k))) for k in (kh, kw))
        low = [max(k - sum(p), 1) for k, p in zip((kh, kw), padding)]
    elif mode == "VALID":
        padding, low = "VALID", [kh, kw]
    else:
        padding, low = "SAME", [1, 1]
    if max(low) > 12:  # a 31-wide VALID window needs a big input: keep tensors small instead
        padding, low = "SAME", [1, 1]
    height = draw(st.integers(low[0], low[0] + 8))
    width = draw(st.integers(low[1], low[1] + 8))
    batch = draw(st.integers(1, 2))
    channels = draw(st.integers(1, 3))
    multiplier = draw(st.sampled_from((1, 1, 2, 3)))
    return dict(shape=(batch, height, width, channels), kernel=(kh, kw, 1, channels * multiplier),
                strides=strides, padding=padding)


def make_inputs(problem, dtype=jnp.float32, seed=0):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.standard_normal(problem["shape"]), dtype)
    w = jnp.asarray(rng.standard_normal(problem["kernel"]), dtype)
    return x, w


@pytest.mark.parametrize("impl", FAST_IMPLS)
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problem=problems())
# Cases every run must see, whatever hypothesis draws: kernel sizes 3, 5, 7, 8, 9, 31, batch 1 with
# odd sizes, stride 2 with even kernels, channel multiplier > 1, all three kinds of padding.
@example(problem=dict(shape=(1, 7, 9, 3), kernel=(3, 3, 1, 3), strides=(1, 1), padding="SAME"))
@example(problem=dict(shape=(1, 9, 7, 2), kernel=(5, 5, 1, 4), strides=(2, 2), padding="VALID"))
@example(problem=dict(shape=(2, 11, 13, 3), kernel=(7, 7, 1, 9), strides=(2, 1), padding="SAME"))
@example(problem=dict(shape=(1, 13, 11, 2), kernel=(8, 8, 1, 2), strides=(2, 2), padding="SAME"))
@example(problem=dict(shape=(1, 10, 9, 2), kernel=(9, 9, 1, 4), strides=(1, 2), padding=((4, 0), (3, 5))))
@example(problem=dict(shape=(1, 7, 5, 2), kernel=(31, 31, 1, 2), strides=(1, 1), padding="SAME"))
@example(problem=dict(shape=(2, 6, 8, 3), kernel=(4, 2, 1, 6), strides=(2, 2), padding=((0, 3), (1, 0))))
def test_matches_xla_f32(impl, problem):
    x, w = make_inputs(problem)
    assert_matches_reference(impl, x, w, problem["strides"], problem["padding"])


@pytest.mark.parametrize("dtype, unit_roundoff", [(jnp.bfloat16, 2.0 ** -8), (jnp.float16, 2.0 ** -11)])
@pytest.mark.parametrize("impl", ["shift", "shift_fft", "toeplitz"])
def test_low_precision_rounds_once(impl, dtype, unit_roundoff):
    problem = dict(shape=(2, 9, 11, 4), kernel=(7, 7, 1, 8), strides=(1, 1), padding="SAME")
    x, w = make_inputs(problem, dtype)
    # Reference: the f32 computation on the very same (already rounded) input values.
    assert_matches_reference(impl, x, w, (1, 1), "SAME", tol=unit_roundoff + 1e-5, ref_dtype=jnp.float32)


def test_mixed_dtypes_follow_input_and_kernel():
    x = jnp.ones((1, 5, 5, 2), jnp.bfloat16)
    w = jnp.ones((3, 3, 1, 2), jnp.float32)
    y, (dx, dw) = jax.value_and_grad(lambda x, w: depthwise_conv2d(x, w, impl="shift").astype(jnp.float32).sum(),
                                     (0, 1))(x, w)
    assert dx.dtype == jnp.bfloat16 and dw.dtype == jnp.float32
    assert float(y) == pytest.approx(float(depthwise_conv2d(x, w, impl="xla").astype(jnp.float32).sum()))


def test_float64_accumulates_in_float64():
    with jax.enable_x64(True):
        problem = dict(shape=(1, 6, 7, 2), kernel=(3, 3, 1, 2), strides=(1, 1), padding="SAME")
        x, w = make_inputs(problem, jnp.float64)
        assert_matches_reference("shift", x, w, (1, 1), "SAME", tol=1e-12)


@pytest.fixture(scope="module")
def small_problem():
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.standard_normal((2, 6, 5, 3)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((3, 3, 1, 6)), jnp.float32)
    return x, w


@pytest.mark.parametrize("impl", ["shift", "shift_blocked", "shift_fft"])
def test_vmap_over_inputs_and_kernels(impl, small_problem):
    x, w = small_problem
    xs = jnp.stack([x, 2 * x, -x])
    ws = jnp.stack([w, w[::-1], 0.5 * w])
    conv = lambda x, w: depthwise_conv2d(x, w, strides=2, padding="SAME", impl=impl)  # noqa: E731
    got = jax.vmap(conv)(xs, ws)
    ref = jnp.stack([depthwise_conv2d(a, b, strides=2, impl="xla") for a, b in zip(xs, ws)])
    assert rel_err(got, ref) <= 1e-5
    # Gradients through vmap too.
    loss = lambda xs, ws: jnp.sum(jax.vmap(conv)(xs, ws) ** 2)  # noqa: E731
    ref_loss = lambda xs, ws: sum(  # noqa: E731
        jnp.sum(depthwise_conv2d(a, b, strides=2, impl="xla") ** 2) for a, b in zip(xs, ws))
    for g, r in zip(jax.grad(loss, (0, 1))(xs, ws), jax.grad(ref_loss, (0, 1))(xs, ws)):
        assert rel_err(g, r) <= 1e-5


@pytest.mark.parametrize("impl", ["shift", "shift_fft"])
def test_second_order_reverse_mode(impl, small_problem):
    x, w = small_problem

    def grad_norm(impl):
        def loss(x, w):
            return jnp.sum(jnp.tanh(depthwise_conv2d(x, w, strides=(1, 2), padding="VALID", impl=impl)))

        # d/d(x, w) of |d loss / d(x, w)|^2: reverse mode over reverse mode.
        return jax.jit(jax.grad(lambda x, w: sum(jnp.sum(g ** 2) for g in jax.grad(loss, (0, 1))(x, w)),
                                (0, 1)))(x, w)

    for g, r in zip(grad_norm(impl), grad_norm("xla")):
        assert rel_err(g, r) <= 1e-5


def test_hessian_by_jacrev(small_problem):
    x, w = small_problem
    x = x[:1, :4, :4, :1]
    w = w[:, :, :, :1]
    loss = lambda impl: (lambda w: jnp.sum(jnp.sin(depthwise_conv2d(x, w, impl=impl))))  # noqa: E731
    got = jax.jacrev(jax.jacrev(loss("shift")))(w)
    ref = jax.hessian(loss("xla"))(w)
    assert rel_err(got, ref) <= 1e-5


def test_forward_mode_is_a_documented_error_for_fast_impls(small_problem):
    x, w = small_problem
    # "xla" supports forward mode; the custom-VJP impls raise JAX's own one-line TypeError.
    jax.jvp(lambda x: depthwise_conv2d(x, w, impl="xla"), (x,), (x,))
    with pytest.raises(TypeError, match="forward-mode|jvp"):
        jax.jvp(lambda x: depthwise_conv2d(x, w, impl="shift"), (x,), (x,))


def test_toeplitz_supports_forward_mode_and_second_derivatives():
    rng = np.random.default_rng(4)
    x = jnp.asarray(rng.standard_normal((2, 5, 6, 3)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((5, 5, 1, 3)), jnp.float32)
    for argnums in (0, 1):
        fwd = jax.jacfwd(lambda a, b: depthwise_conv2d(a, b, impl="toeplitz"), argnums=argnums)(x, w)
        ref = jax.jacfwd(lambda a, b: depthwise_conv2d(a, b, impl="xla"), argnums=argnums)(x, w)
        np.testing.assert_allclose(fwd, ref, rtol=1e-5, atol=1e-5)
    hess = jax.grad(lambda b: jnp.sum(jax.grad(lambda a: jnp.sum(
        depthwise_conv2d(a, b, impl="toeplitz") ** 2))(x) ** 2))(w)
    hess_ref = jax.grad(lambda b: jnp.sum(jax.grad(lambda a: jnp.sum(
        depthwise_conv2d(a, b, impl="xla") ** 2))(x) ** 2))(w)
    np.testing.assert_allclose(hess, hess_ref, rtol=1e-4, atol=1e-4)


def test_auto_is_exact_and_uses_a_fast_impl_on_cpu(small_problem):
    x, w = small_problem
    assert_matches_reference("auto", x, w, (1, 1), "SAME")
    geometry = make_geometry(x.shape, w.shape, 1, "SAME", 2)
    # 6 channels on a 6x5 map under a 3x3 kernel: the native kernel where it may run, else "shift"
    # (too few channels for "shift_blocked").
    expected = "native" if native_allowed(Target("cpu")) else "shift"
    assert select_depthwise_impl(x.shape, geometry, target=Target("cpu")) == expected
    with compile_target(Target("cpu")):
        np.testing.assert_array_equal(depthwise_conv2d(x, w, impl="auto"), depthwise_conv2d(x, w, impl=expected))
    assert select_depthwise_impl(x.shape, geometry, target=Target("gpu")) == "xla"
    assert select_depthwise_impl(x.shape, geometry, target=Target("tpu")) == "xla"


def test_matches_even_kernel_same_padding_convention():
    # Even kernels under "SAME": lax (and PyTorch padding="same") put the extra row/column at the
    # bottom/right. A ramp input makes a wrong split visible.
    x = jnp.arange(1 * 6 * 6 * 1, dtype=jnp.float32).reshape(1, 6, 6, 1)
    w = jnp.zeros((4, 4, 1, 1)).at[0, 0, 0, 0].set(1.0)
    np.testing.assert_array_equal(depthwise_conv2d(x, w, impl="shift"), depthwise_conv2d(x, w, impl="xla"))


X = jnp.zeros((1, 8, 8, 4))
W = jnp.zeros((3, 3, 1, 4))


@pytest.mark.parametrize("args, kwargs, match", [
    ((X[0], W), {}, "x must be NHWC with 4 dimensions"),
    ((X, W[..., 0]), {}, "kernel must be HWIO"),
    ((X, jnp.zeros((3, 3, 4, 4))), {}, "in-channel dimension 1"),
    ((X, jnp.zeros((3, 3, 1, 6))), {}, r"multiple of the input channels \(4\)"),
    ((X.astype(jnp.int32), W), {}, "floating dtype"),
    ((X, W), {"impl": "cuda"}, "unknown impl 'cuda'"),
    ((X, W), {"strides": 0}, "strides must be"),
    ((X, W), {"strides": (1, 2, 1)}, "strides must be"),
    ((X, W), {"strides": 1.5}, "strides must be"),
    ((X, W), {"padding": "FULL"}, "padding must be"),
    ((X, W), {"padding": ((1, 1),)}, "padding must be"),
    ((X, W), {"padding": ((-1, 0), (0, 0))}, "non-negative"),
    ((X, jnp.zeros((11, 3, 1, 4))), {"padding": "VALID"}, "larger than the padded input"),
])
@pytest.mark.parametrize("impl", ["xla", "shift"])
def test_bad_arguments_raise_one_clear_line(args, kwargs, match, impl):
    kwargs = {"impl": impl, **kwargs}
    with pytest.raises(ValueError, match=match) as info:
        depthwise_conv2d(*args, **kwargs)
    message = str(info.value)
    assert message.startswith("depthwise_conv2d: ") and "\n" not in message


@pytest.mark.parametrize("padding", ["SAME", "VALID", ((2, 0), (1, 3))])
@pytest.mark.parametrize("strides", [1, 2])
def test_xla_impl_matches_numpy(strides, padding):
    x, w = make_inputs(dict(shape=(2, 9, 8, 3), kernel=(4, 3, 1, 6)))
    assert_matches_reference("xla", x, w, strides, padding)


def test_xla_input_gradient_bug_is_still_there():
    """Documents why "xla" is not the gradient reference when padding > kernel-1 (jax 0.10.2, CPU).

    If this starts failing, XLA has fixed the bug: delete this test and drop the exception in
    assert_matches_reference.
    """
    x, w = make_inputs(dict(shape=(2, 1, 2, 1), kernel=(1, 8, 1, 1)))
    dy = jnp.asarray(np.random.default_rng(0).standard_normal((2, 1, 9, 1)), jnp.float32)
    padding = ((0, 0), (8, 6))
    _, dx_numpy, _ = numpy_reference(x, w, dy, 1, padding)
    _, dx_xla, _ = forward_and_grads("xla", x, w, dy, 1, padding)
    _, dx_shift, _ = forward_and_grads("shift", x, w, dy, 1, padding)
    assert rel_err(dx_shift, dx_numpy) <= 1e-5
    if jax.default_backend() == "cpu":
        assert rel_err(dx_xla, dx_numpy) > 1e-2
