"""Depthwise convolution's float64 NumPy reference (the definition), and the check of an impl against it.

Error measure: max |result - reference| / max |reference| (normwise relative error).
"""

import jax
import jax.numpy as jnp
import numpy as np

from dog_jax.ops import depthwise_conv2d
from dog_jax.ops.depthwise.geometry import make_geometry


def rel_err(result, reference) -> float:
    result = np.asarray(result, np.float64)
    reference = np.asarray(reference, np.float64)
    return float(np.abs(result - reference).max() / max(np.abs(reference).max(), 1e-30))


def numpy_reference(x, w, dy, strides, padding):
    """(y, dx, dw) straight from the definition, in float64 NumPy.

    y[n, i, j, c*m + k] = sum_ab xp[n, i*sh + a, j*sw + b, c] * w[a, b, 0, c*m + k], xp = padded x;
    dx and dw scatter/gather the same products.
    """
    x, w, dy = (np.asarray(t, np.float64) for t in (x, w, dy))
    geometry = make_geometry(x.shape, w.shape, strides, padding, w.shape[3] // x.shape[3])
    (top, bottom), (left, right) = geometry.pads
    (sh, sw), (ho, wo), m = geometry.strides, geometry.out_size, geometry.multiplier
    xp = np.pad(np.repeat(x, m, axis=3), ((0, 0), (top, bottom), (left, right), (0, 0)))
    y = np.zeros(dy.shape)
    dxp = np.zeros(xp.shape)
    dw = np.zeros(w.shape)
    for a in range(w.shape[0]):
        for b in range(w.shape[1]):
            rows = slice(a, a + (ho - 1) * sh + 1, sh)
            cols = slice(b, b + (wo - 1) * sw + 1, sw)
            y += xp[:, rows, cols] * w[a, b, 0]
            dxp[:, rows, cols] += dy * w[a, b, 0]
            dw[a, b, 0] = (xp[:, rows, cols] * dy).sum(axis=(0, 1, 2))
    dx = dxp[:, top:top + x.shape[1], left:left + x.shape[2]]
    dx = dx.reshape(x.shape + (m,)).sum(axis=-1)
    return y, dx, dw


def forward_and_grads(impl, x, w, dy, strides, padding):
    """(y, dx, dw) of one impl, jit-compiled, for output cotangent dy."""
    def run(x, w, dy):
        y, vjp = jax.vjp(lambda x, w: depthwise_conv2d(x, w, strides=strides, padding=padding, impl=impl), x, w)
        return (y,) + vjp(dy)
    return jax.jit(run)(x, w, dy)


def padding_exceeds_kernel(x_shape, w_shape, strides, padding) -> bool:
    geometry = make_geometry(x_shape, w_shape, strides, padding, w_shape[3] // x_shape[3])
    return any(p > k - 1 for pads, k in zip(geometry.pads, geometry.kernel_size) for p in pads)


def assert_matches_reference(impl, x, w, strides, padding, tol=1e-5, ref_dtype=None):
    """Checks impl's (y, dx, dw) against NumPy float64 and (where it is right) against "xla"."""
    rng = np.random.default_rng(1)
    ref_dtype = ref_dtype or x.dtype
    xr, wr = x.astype(ref_dtype), w.astype(ref_dtype)
    y_shape = jax.eval_shape(lambda: depthwise_conv2d(xr, wr, strides=strides, padding=padding, impl="xla")).shape
    dy = jnp.asarray(rng.standard_normal(y_shape), x.dtype)
    got = forward_and_grads(impl, x, w, dy, strides, padding)
    references = {"numpy": numpy_reference(xr, wr, dy.astype(ref_dtype), strides, padding)}
    if not padding_exceeds_kernel(x.shape, w.shape, strides, padding):
        references["xla"] = forward_and_grads("xla", xr, wr, dy.astype(ref_dtype), strides, padding)
    for ref_name, ref in references.items():
        for name, g, r in zip(("output", "input grad", "kernel grad"), got, ref):
            assert g.shape == r.shape, (name, g.shape, r.shape)
            err = rel_err(g, r)
            assert err <= tol, f"{impl} {name} vs {ref_name}: relative error {err:.2e} > {tol:.0e}"
    assert got[0].dtype == x.dtype and got[1].dtype == x.dtype and got[2].dtype == w.dtype
