"""Per-kernel fit of the paper's DoG (beyond the paper).

Model, per kernel w of shape (kh, kw):  w ≈ s · A · DoG_γ + b,  with DoG_γ the paper's zero-sum,
±0.5-normalised on-centre kernel (:func:`dog_jax.initializers.dog_kernel`), centre type s = ±1,
amplitude A ≥ 0 and offset b. Because DoG_γ sums to zero, for a fixed γ the least-squares offset is
the kernel mean and s·A is a projection; γ is picked from a fine grid by the largest explained
variance R², so the fit is exact on the grid, vectorised and deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dog_jax.analysis.templates import dog_templates

#: Default γ grid: 0.01 … 0.99 in steps of 0.005 (the init draws γ from (0, 0.5)).
DEFAULT_GAMMAS = np.round(np.arange(0.01, 0.99 + 1e-9, 0.005), 4)


@dataclass(frozen=True)
class DogFit:
    """Fitted DoG parameters for N kernels (all arrays have shape (N,)).

    Attributes:
      gamma: best γ on the grid (float64; NaN for constant kernels).
      amplitude: A ≥ 0, in the kernel's weight units per unit of the ±0.5-normalised DoG.
      offset: b, the kernel mean (weight units).
      on_center: True for an excitatory (positive) centre, False for inhibitory.
      r2: fraction of the kernel's variance (around its mean) explained by the fit, in [0, 1].
    """

    gamma: np.ndarray
    amplitude: np.ndarray
    offset: np.ndarray
    on_center: np.ndarray
    r2: np.ndarray


def fit_dog(kernels: np.ndarray, *, gammas: np.ndarray | None = None, chunk: int = 65536) -> DogFit:
    """Fit s·A·DoG_γ + b to every kernel by least squares over a γ grid.

    Args:
      kernels: (N, kh, kw) raw weights, any float dtype; kh, kw ≥ 2.
      gammas: (G,) candidate γ values in (0, 1); default :data:`DEFAULT_GAMMAS` (step 0.005).
        On small kernels neighbouring γ give nearly the same DoG (e.g. every γ < 2/3 gives a
        one-pixel centre at k = 3), so read γ of 3×3 kernels as a coarse indication.
      chunk: kernels per matrix product.

    Returns:
      A :class:`DogFit`.
    """
    kernels = np.asarray(kernels)
    if kernels.ndim != 3 or min(kernels.shape[1:]) < 2:
        raise ValueError(f"kernels must have shape (N, kh, kw) with kh, kw >= 2, got {kernels.shape}.")
    gammas = DEFAULT_GAMMAS if gammas is None else np.asarray(gammas, np.float64)
    if gammas.ndim != 1 or not np.all((gammas > 0) & (gammas < 1)):
        raise ValueError("gammas must be a 1-D array of values in (0, 1).")
    shape = kernels.shape[1:]
    dogs = dog_templates(shape, gammas).reshape(len(gammas), -1)
    norms = np.linalg.norm(dogs, axis=1)
    usable = norms > 1e-9
    dogs, norms, gammas = dogs[usable], norms[usable], gammas[usable]
    unit = dogs / norms[:, None]

    n = len(kernels)
    out = {name: np.full(n, np.nan) for name in ("gamma", "coef", "offset", "r2")}
    for start in range(0, n, chunk):
        w = kernels[start:start + chunk].reshape(-1, dogs.shape[1]).astype(np.float64)
        mean = w.mean(axis=1)
        centred = w - mean[:, None]
        var = np.einsum("ij,ij->i", centred, centred)
        proj = centred @ unit.T                      # (n, G): <w − mean, DoG/|DoG|>
        best = np.argmax(proj**2, axis=1)
        p = proj[np.arange(len(w)), best]
        sl = slice(start, start + len(w))
        ok = var > 1e-30
        out["gamma"][sl] = np.where(ok, gammas[best], np.nan)
        out["coef"][sl] = np.where(ok, p / norms[best], 0.0)
        out["offset"][sl] = mean
        out["r2"][sl] = np.where(ok, p**2 / np.where(ok, var, 1.0), 0.0)
    return DogFit(
        gamma=out["gamma"], amplitude=np.abs(out["coef"]), offset=out["offset"],
        on_center=out["coef"] >= 0, r2=np.clip(out["r2"], 0.0, 1.0))
