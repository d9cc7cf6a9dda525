"""LayerNorm's float64 NumPy reference (the definition) and the inputs its tests use."""

import jax.numpy as jnp
import numpy as np

EPS = 1e-6


def inputs(shape, seed=0, offset=3.0):
    rng = np.random.default_rng(seed)
    c = shape[-1]
    x = rng.standard_normal(shape) * 2.0 + offset
    return tuple(jnp.asarray(a, jnp.float32) for a in (
        x, 1.0 + 0.5 * rng.standard_normal(c), 0.5 * rng.standard_normal(c), rng.standard_normal(shape)))


def numpy_reference(x, scale, bias, dy):
    """(y, dx, dscale, dbias) in float64 from the definition, and the size of dx's terms, max |rstd·g|."""
    x, scale, bias, dy = (np.asarray(a, np.float64) for a in (x, scale, bias, dy))
    mean = x.mean(-1, keepdims=True)
    rstd = 1.0 / np.sqrt(((x - mean) ** 2).mean(-1, keepdims=True) + EPS)
    xhat = (x - mean) * rstd
    g = dy * scale
    dx = rstd * (g - g.mean(-1, keepdims=True) - xhat * (g * xhat).mean(-1, keepdims=True))
    rows = tuple(range(x.ndim - 1))
    return (xhat * scale + bias, dx, (dy * xhat).sum(rows), dy.sum(rows)), np.abs(rstd * g).max()
