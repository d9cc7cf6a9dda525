"""Every op implementation gives the same values and gradients called eagerly and under ``jax.jit``
(``chex.variants``): a custom VJP, a native FFI call or a shape-dependent choice that worked
only inside or only outside a compiled function would show here. One small problem per op; the
exhaustive numerics are in test_depthwise.py, test_layernorm_native.py, test_batchnorm_native.py
and test_gelu.py (same folder)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import parameterized

from dog_jax.ops import batch_norm_train, depthwise_conv2d, layer_norm
from dog_jax.ops.depthwise import IMPLS
from dog_jax.ops.gelu import gelu
from dog_jax.ops.native import NATIVE_AVAILABLE, native_status
from tests.support import batch_norm_reference, depthwise_reference, layer_norm_reference
from tests.support.requires import NATIVE, require

DEPTHWISE_IMPLS = list(IMPLS)
NORM_IMPLS = ["auto", "xla", "native"]


def _require_built(impl):
    """The native variants skip (fail under CI) where the kernels were not built."""
    if impl == "native":
        require(NATIVE_AVAILABLE, native_status(), NATIVE)


def _assert_close(got, exact, names, tol=1e-5):
    for name, g, e in zip(names, got, exact):
        e = np.asarray(e, np.float64)
        assert g.shape == e.shape, (name, g.shape, e.shape)
        error = np.abs(np.asarray(g, np.float64) - e).max() / max(np.abs(e).max(), 1e-30)
        assert error <= tol, f"{name}: relative error {error:.1e}"


class OpsWithAndWithoutJit(chex.TestCase):

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters(*DEPTHWISE_IMPLS)
    def test_depthwise_conv2d(self, impl):
        _require_built(impl)
        rng = np.random.default_rng(0)
        x, w = (jnp.asarray(rng.standard_normal(shape), jnp.float32) for shape in ((2, 7, 6, 4), (3, 3, 1, 8)))
        dy = jnp.asarray(rng.standard_normal((2, 7, 6, 8)), jnp.float32)

        @self.variant
        def run(x, w, dy):
            y, vjp = jax.vjp(lambda a, b: depthwise_conv2d(a, b, padding="SAME", impl=impl), x, w)
            return (y, *vjp(dy))

        _assert_close(run(x, w, dy), depthwise_reference.numpy_reference(x, w, dy, (1, 1), "SAME"),
                      ("y", "dx", "dw"))

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters(*NORM_IMPLS)
    def test_layer_norm(self, impl):
        _require_built(impl)
        x, scale, bias, dy = layer_norm_reference.inputs((3, 5, 7, 24))

        @self.variant
        def run(x, scale, bias, dy):
            y, vjp = jax.vjp(lambda a, s, b: layer_norm(a, s, b, eps=layer_norm_reference.EPS, impl=impl),
                             x, scale, bias)
            return (y, *vjp(dy))

        exact, _ = layer_norm_reference.numpy_reference(x, scale, bias, dy)
        _assert_close(run(x, scale, bias, dy), exact, ("y", "dx", "dscale", "dbias"))

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters(*NORM_IMPLS)
    def test_batch_norm_train(self, impl):
        _require_built(impl)
        x, scale, bias, dy = layer_norm_reference.inputs((3, 5, 7, 24), offset=5.0)

        @self.variant
        def run(x, scale, bias, dy):
            (y, mean, var), vjp = jax.vjp(
                lambda a, s, b: batch_norm_train(a, s, b, eps=batch_norm_reference.EPS, impl=impl), x, scale, bias)
            return (y, mean, var, *vjp((dy, jnp.zeros_like(mean), jnp.zeros_like(mean))))

        _assert_close(run(x, scale, bias, dy), batch_norm_reference.numpy_reference(x, scale, bias, dy),
                      ("y", "mean", "var", "dx", "dscale", "dbias"))

    @chex.variants(with_jit=True, without_jit=True)
    def test_gelu(self):
        x = jnp.asarray(np.random.default_rng(1).standard_normal(512) * 3, jnp.float32)

        @self.variant
        def run(x):
            return gelu(x), jax.grad(lambda v: jnp.sum(gelu(v)))(x)

        reference = jax.nn.gelu(x, approximate=False), jax.grad(lambda v: jnp.sum(jax.nn.gelu(v, approximate=False)))(x)
        chex.assert_trees_all_close(run(x), reference, rtol=1e-6, atol=1e-6)
