"""Template bank and the k-means-free kernel classifier (beyond the paper).

Every kernel is compared, by Pearson correlation, with a bank of zero-mean templates:

* on- and off-centre DoGs of the paper over a γ grid (built with
  :func:`dog_jax.initializers.dog_kernel`, so the DoG lives in one place),
* isotropic Gaussian blobs (zero-meaned, they look like broad-surround DoGs),
* first derivatives of a Gaussian (edges) and second derivatives (bars / lines) at several
  orientations, both polarities.

Pearson correlation ignores a positive affine change a·w + b (a > 0), the same invariance as the
paper's min–max normalisation, so the DC of the raw weights is checked separately: a kernel whose
best match is centre–surround but whose raw weights are (almost) single-signed is a Gaussian blob,
not a DoG.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

#: Classes reported by :func:`classify_kernels`, in display order.
TEMPLATE_CLASSES = ("dog_on", "dog_off", "gaussian", "derivative1", "derivative2", "unclassified")

#: Default minimum correlation with the best template for a kernel to be classified.
DEFAULT_MIN_CORRELATION = 0.7

#: Raw-weight DC ratio |Σw| / Σ|w| at or above which a centre–surround match is a Gaussian blob.
#: A zero-sum DoG has 0, a Gaussian blob ≈ 1 (see docs/analysis.md).
DEFAULT_DC_THRESHOLD = 0.5


@dataclass(frozen=True)
class TemplateBank:
    """Zero-mean, unit-norm templates for one kernel shape.

    Attributes:
      kernel_shape: (kh, kw).
      templates: (T, kh·kw) float64, each row zero-mean with unit L2 norm.
      families: (T,) str, one of "dog_on", "dog_off", "gaussian_on", "gaussian_off",
        "derivative1", "derivative2".
      params: (T,) dicts with the template's parameters (gamma, sigma, theta in degrees, sign).
    """

    kernel_shape: tuple[int, int]
    templates: np.ndarray
    families: np.ndarray
    params: tuple[dict, ...] = field(repr=False)


def dc_ratio(kernels: np.ndarray) -> np.ndarray:
    """|Σw| / Σ|w| per kernel: 0 for a zero-sum kernel (DoG), 1 for a single-signed one (blob).

    Args:
      kernels: (N, kh, kw) raw weights.

    Returns:
      (N,) float64 in [0, 1]; 0 for all-zero kernels.
    """
    flat = np.asarray(kernels, np.float64).reshape(len(kernels), -1)
    total = np.abs(flat).sum(axis=1)
    return np.divide(np.abs(flat.sum(axis=1)), total, out=np.zeros(len(flat)), where=total > 0)


def dog_templates(kernel_shape: tuple[int, int], gammas: np.ndarray) -> np.ndarray:
    """On-centre DoG kernels of the paper for each γ.

    Args:
      kernel_shape: (kh, kw).
      gammas: (G,) centre-surround ratios in (0, 1).

    Returns:
      (G, kh, kw) float64; the off-centre kernels are the negatives.
    """
    import jax

    from dog_jax.initializers import dog_kernel

    kh, kw = kernel_shape
    make = jax.jit(jax.vmap(lambda g: dog_kernel((kh, kw), g)))
    return np.asarray(make(np.asarray(gammas, np.float32)), np.float64)


def _grid(kernel_shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    kh, kw = kernel_shape
    y = np.arange(kh, dtype=np.float64) - (kh - 1) / 2
    x = np.arange(kw, dtype=np.float64) - (kw - 1) / 2
    return np.meshgrid(y, x, indexing="ij")


def gaussian_blob(kernel_shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Isotropic Gaussian exp(−r²/(2σ²)) centred on the kernel, (kh, kw) float64, peak 1."""
    yy, xx = _grid(kernel_shape)
    return np.exp(-(xx**2 + yy**2) / (2 * sigma**2))


def gaussian_derivative(kernel_shape: tuple[int, int], sigma: float, theta_deg: float, order: int) -> np.ndarray:
    """First or second directional derivative of an isotropic Gaussian.

    Args:
      kernel_shape: (kh, kw).
      sigma: Gaussian std in pixels.
      theta_deg: direction of differentiation, degrees anticlockwise from the +x (column) axis.
      order: 1 (edge detector, odd) or 2 (bar / line detector, even).

    Returns:
      (kh, kw) float64 (unnormalised).
    """
    yy, xx = _grid(kernel_shape)
    theta = np.deg2rad(theta_deg)
    # Rows grow downwards, so "up" is −y: the direction vector in (x, −y) coordinates.
    u = xx * np.cos(theta) - yy * np.sin(theta)
    g = gaussian_blob(kernel_shape, sigma)
    if order == 1:
        return -u / sigma**2 * g
    if order == 2:
        return (u**2 / sigma**4 - 1 / sigma**2) * g
    raise ValueError(f"order must be 1 or 2, got {order}.")


def _unit_rows(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Zero-mean, unit-norm rows and a mask of rows that were not constant."""
    t = t - t.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(t, axis=1, keepdims=True)
    ok = norm[:, 0] > 1e-9
    return np.divide(t, norm, out=np.zeros_like(t), where=norm > 1e-9), ok


@lru_cache(maxsize=32)
def make_template_bank(
    kernel_shape: tuple[int, int],
    n_gammas: int = 24,
    n_orientations: int = 8,
    sigma_fractions: tuple[float, ...] = (0.15, 0.22, 0.32),
) -> TemplateBank:
    """Build the template bank for one kernel shape (cached: it is a pure function).

    Args:
      kernel_shape: (kh, kw), each ≥ 2.
      n_gammas: number of γ values on an even grid over (0, 1) for the on/off DoGs.
      n_orientations: orientations over 360° for the derivative templates (8 → every 45°; the
        first derivative at θ + 180° is the negative one, so polarity is covered).
      sigma_fractions: Gaussian σ of blobs and derivatives, as fractions of the kernel size.

    Returns:
      A :class:`TemplateBank`; constant or duplicate templates are dropped.
    """
    kh, kw = kernel_shape
    size = (kh + kw) / 2
    rows, families, params = [], [], []

    gammas = (np.arange(n_gammas) + 0.5) / n_gammas
    for g, t in zip(gammas, dog_templates(kernel_shape, gammas)):
        for fam, sign in (("dog_on", 1.0), ("dog_off", -1.0)):
            rows.append(sign * t.ravel())
            families.append(fam)
            params.append({"gamma": round(float(g), 4)})
    for frac in sigma_fractions:
        sigma = frac * size
        blob = gaussian_blob(kernel_shape, sigma).ravel()
        for fam, sign in (("gaussian_on", 1.0), ("gaussian_off", -1.0)):
            rows.append(sign * blob)
            families.append(fam)
            params.append({"sigma": round(sigma, 4)})
        for i in range(n_orientations):
            theta = 360.0 * i / n_orientations
            rows.append(gaussian_derivative(kernel_shape, sigma, theta, 1).ravel())
            families.append("derivative1")
            params.append({"sigma": round(sigma, 4), "theta": theta})
        # The second derivative is symmetric under θ → θ + 180°: half the orientations, two signs.
        for i in range(max(1, n_orientations // 2)):
            theta = 360.0 * i / n_orientations
            d2 = gaussian_derivative(kernel_shape, sigma, theta, 2).ravel()
            for sign in (1.0, -1.0):
                rows.append(sign * d2)
                families.append("derivative2")
                params.append({"sigma": round(sigma, 4), "theta": theta, "sign": int(sign)})

    unit, ok = _unit_rows(np.asarray(rows))
    # Drop constant templates and exact duplicates (tiny kernels make many DoGs coincide).
    _, first = np.unique(np.round(unit, 9), axis=0, return_index=True)
    keep = np.zeros(len(unit), bool)
    keep[first] = True
    keep &= ok
    idx = np.flatnonzero(keep)
    return TemplateBank(
        kernel_shape=(kh, kw),
        templates=unit[idx],
        families=np.asarray(families)[idx],
        params=tuple(params[i] for i in idx),
    )


@dataclass(frozen=True)
class TemplateClassification:
    """Result of :func:`classify_kernels` for N kernels of one shape.

    Attributes:
      classes: (N,) str, one of :data:`TEMPLATE_CLASSES`.
      correlation: (N,) float64, Pearson r with the best template (NaN for constant kernels).
      template_index: (N,) int, row of the best template in ``bank.templates`` (−1 if constant).
      dc_ratio: (N,) float64, |Σw| / Σ|w| of the raw kernel.
      bank: the template bank used.
      min_correlation: threshold used.
    """

    classes: np.ndarray
    correlation: np.ndarray
    template_index: np.ndarray
    dc_ratio: np.ndarray
    bank: TemplateBank = field(repr=False)
    min_correlation: float

    def shares(self) -> dict[str, float]:
        """Fraction of kernels per class, over :data:`TEMPLATE_CLASSES` (sums to 1)."""
        n = max(len(self.classes), 1)
        return {c: float(np.count_nonzero(self.classes == c)) / n for c in TEMPLATE_CLASSES}

    def counts(self) -> dict[str, int]:
        """Number of kernels per class, over :data:`TEMPLATE_CLASSES`."""
        return {c: int(np.count_nonzero(self.classes == c)) for c in TEMPLATE_CLASSES}


def classify_kernels(
    kernels: np.ndarray,
    *,
    min_correlation: float = DEFAULT_MIN_CORRELATION,
    dc_threshold: float = DEFAULT_DC_THRESHOLD,
    bank: TemplateBank | None = None,
    chunk: int = 65536,
) -> TemplateClassification:
    """Classify kernels by their best-correlated template (no k-means).

    Rule, per kernel: r = max over templates of the Pearson correlation (signed, so on- and
    off-centre are different templates). If r < ``min_correlation`` → "unclassified". Otherwise the
    best template's family decides; a centre–surround match (DoG or Gaussian blob template) is
    "dog_on" / "dog_off" (by the sign of its centre) when the raw kernel is close to zero-sum
    (DC ratio < ``dc_threshold``) and "gaussian" when it is single-signed. Derivative matches keep
    their class whatever the DC (an edge plus an offset is still an edge).

    Args:
      kernels: (N, kh, kw) raw kernel weights, any float dtype.
      min_correlation: correlation threshold in (0, 1].
      dc_threshold: DC ratio |Σw| / Σ|w| from which a centre–surround kernel counts as a blob.
      bank: template bank for (kh, kw); built with :func:`make_template_bank` if None.
      chunk: kernels per matrix product (bounds memory for millions of kernels).

    Returns:
      A :class:`TemplateClassification`.
    """
    kernels = np.asarray(kernels)
    if kernels.ndim != 3:
        raise ValueError(f"kernels must have shape (N, kh, kw), got {kernels.shape}.")
    if not 0 < min_correlation <= 1:
        raise ValueError(f"min_correlation must lie in (0, 1], got {min_correlation}.")
    shape = tuple(int(s) for s in kernels.shape[1:])
    bank = bank or make_template_bank(shape)
    if bank.kernel_shape != shape:
        raise ValueError(f"template bank is for {bank.kernel_shape} kernels, got {shape} kernels.")
    n = len(kernels)
    best = np.full(n, -1, np.int64)
    corr = np.full(n, np.nan)
    for start in range(0, n, chunk):
        unit, ok = _unit_rows(kernels[start:start + chunk].reshape(-1, shape[0] * shape[1]).astype(np.float64))
        r = unit @ bank.templates.T
        i = np.argmax(r, axis=1)
        best[start:start + chunk] = np.where(ok, i, -1)
        corr[start:start + chunk] = np.where(ok, r[np.arange(len(r)), i], np.nan)

    dc = dc_ratio(kernels)
    fam = np.where(best >= 0, bank.families[np.maximum(best, 0)], "")
    centre_surround = np.char.startswith(fam.astype(str), "dog") | np.char.startswith(fam.astype(str), "gaussian")
    on = (fam == "dog_on") | (fam == "gaussian_on")
    dog_or_blob = np.where(dc >= dc_threshold, "gaussian", np.where(on, "dog_on", "dog_off"))
    classes = np.where(centre_surround, dog_or_blob, fam)
    classes = np.where((best < 0) | ~(corr >= min_correlation), "unclassified", classes).astype("<U12")
    return TemplateClassification(
        classes=classes, correlation=corr, template_index=best, dc_ratio=dc, bank=bank,
        min_correlation=float(min_correlation))
