"""Training-mode BatchNorm's float64 NumPy reference (the definition)."""

import numpy as np

EPS = 1e-5


def numpy_reference(x, scale, bias, dy):
    """(y, mean, var, dx, dscale, dbias) in float64 from the definition."""
    x, scale, bias, dy = (np.asarray(a, np.float64) for a in (x, scale, bias, dy))
    rows = tuple(range(x.ndim - 1))
    count = x.size // x.shape[-1]
    mean, var = x.mean(rows), x.var(rows)
    xhat = (x - mean) / np.sqrt(var + EPS)
    dbias, dscale = dy.sum(rows), (dy * xhat).sum(rows)
    dx = scale / np.sqrt(var + EPS) * (dy - dbias / count - xhat * dscale / count)
    return xhat * scale + bias, mean, var, dx, dscale, dbias
