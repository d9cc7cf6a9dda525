"""The paper's clustering (Sec. 3.1) and an order-independent rule that names each cluster.

Procedure (paper): min–max normalise every kernel to [0, 1], flatten, k-means with k = 3
(here k-means++ with ≥ 10 restarts and a fixed seed), separately per kernel size.

Two namings of every cluster. The paper names clusters by eye from their means; :func:`paper_name`
does that from the centroid alone (the first two points below). The strict rule,
:func:`name_cluster`, adds checks on the members (the remaining points), with thresholds calibrated
on kernels of known type (``dog_jax.analysis.calibration``, docs/analysis.md). On the centroid z
(in the normalised [0, 1] space):

* centre = the middle pixel (the four middle pixels for even sizes), border = the outermost ring;
* contrast C = mean(z[centre]) − mean(z[border]);
* centre-peaked if C > τ and the centroid's maximum lies in the centre; centre-dipped if C < −τ and
  its minimum lies in the centre (τ = 0.25, absolute, so a flat "noise" centroid is never named);
* and the border lies at least 0.1 beyond the group's mean normalised level, on the side opposite
  to the centre. k-means on noise (3×3 especially) forms clusters of kernels whose middle pixel
  happens to be extreme; their centre stands out but their border stays at the mean level, while
  a real surround is pulled the other way;
* and its members are not oriented: the median :func:`anisotropy` of the members is below 0.8.
  Second derivatives of Gaussians (bars) at all orientations average to a Laplacian-like,
  centre-dipped centroid, but each of them is oriented (anisotropy ≈ 1; noise-free DoGs 0, noisy
  ones up to ~0.7 at the noise levels of trained kernels);
* a centre-peaked (dipped) cluster is "excitatory-centre" ("inhibitory-centre") when at least
  ``min_antagonistic`` (10 %) of its *raw* kernels are antagonistic — centre and border of opposite
  signs, centre sign matching, and DC ratio |Σw|/Σ|w| < 0.5. Min–max normalisation discards the DC
  component, so a cluster of pure Gaussian blobs looks centre-peaked (even more than DoGs) while
  none of its kernels has an opposite-sign surround: it is named "gaussian-blob", not a DoG;
* everything else is "other".

Every test looks at one centroid and its own members, so the names do not depend on cluster order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dog_jax.analysis.templates import DEFAULT_DC_THRESHOLD, dc_ratio

#: Cluster names, in display order.
CLUSTER_LABELS = ("excitatory-centre", "inhibitory-centre", "gaussian-blob", "other")

#: The names of the paper's two centre–surround clusters.
CENTRE_SURROUND = ("excitatory-centre", "inhibitory-centre")

#: Names the paper's centroid-only rule can give (:func:`paper_name`).
PAPER_LABELS = ("excitatory-centre", "inhibitory-centre", "other")

#: Absolute centre-minus-border contrast (normalised units) a centroid needs to be centre-surround.
DEFAULT_MIN_CONTRAST = 0.25

#: Share of a cluster's raw kernels that must be antagonistic for a DoG (not blob) name.
DEFAULT_MIN_ANTAGONISTIC = 0.10

#: Largest median member anisotropy (0 isotropic, 1 fully oriented) of a centre-surround cluster.
#: Calibrated on known kernels (docs/analysis.md, "Calibration of the naming rule"): DoG clusters
#: stay below it up to noise 0.5 at every size 3..9, clusters dominated by bars lie above it.
DEFAULT_MAX_ANISOTROPY = 0.8

#: How far (normalised units) a centre-surround centroid's border must lie on the other side of the
#: group's mean normalised level than its centre.
DEFAULT_MIN_SURROUND = 0.10


def minmax_normalize(kernels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-kernel min–max normalisation to [0, 1] (the paper's preprocessing).

    Args:
      kernels: (N, kh, kw) raw weights.

    Returns:
      (normalised (N, kh, kw) float32, valid (N,) bool). Constant kernels (max == min, e.g. dead
      channels) cannot be normalised: they are all 0.5 and marked invalid.
    """
    flat = np.asarray(kernels, np.float64).reshape(len(kernels), -1)
    lo, hi = flat.min(axis=1, keepdims=True), flat.max(axis=1, keepdims=True)
    span = hi - lo
    valid = span[:, 0] > 1e-12 * np.maximum(np.abs(hi[:, 0]), 1e-30)
    z = np.where(valid[:, None], (flat - lo) / np.where(span > 0, span, 1.0), 0.5)
    return z.reshape(np.shape(kernels)).astype(np.float32), valid


def centre_radius(kh: int, kw: int) -> float:
    """Radius (pixels, from the kernel centre) of the "centre" region used by the naming rule: 0.75,
    i.e. the middle pixel for odd sizes and the four middle pixels for even sizes, whatever k.

    The middle pixel is the extremum of every centre–surround kernel, narrow or wide, while a
    larger region would dilute the contrast of the one-pixel centres that the paper's init gives
    for γ < 2/k (about half of its 9×9 kernels).
    """
    del kh, kw  # the same for every size; kept in the signature for other region definitions
    return 0.75


def region_masks(kh: int, kw: int) -> tuple[np.ndarray, np.ndarray]:
    """(centre, border) boolean masks of shape (kh, kw) for the naming rule."""
    y = np.arange(kh) - (kh - 1) / 2
    x = np.arange(kw) - (kw - 1) / 2
    yy, xx = np.meshgrid(y, x, indexing="ij")
    centre = np.hypot(yy, xx) <= centre_radius(kh, kw) + 1e-9
    border = np.zeros((kh, kw), bool)
    border[[0, -1], :] = True
    border[:, [0, -1]] = True
    return centre, border


def antagonistic(kernels: np.ndarray, on_center: bool, dc_threshold: float = DEFAULT_DC_THRESHOLD) -> np.ndarray:
    """Which raw kernels are centre–surround antagonistic with the given centre polarity.

    Args:
      kernels: (N, kh, kw) raw weights.
      on_center: True to test for positive centre / negative border, False for the reverse.
      dc_threshold: maximum DC ratio |Σw|/Σ|w| (a DoG has ≈ 0, a blob ≈ 1).

    Returns:
      (N,) bool.
    """
    kernels = np.asarray(kernels, np.float64)
    centre, border = region_masks(*kernels.shape[1:])
    c = kernels[:, centre].mean(axis=1)
    s = kernels[:, border].mean(axis=1)
    sign = 1.0 if on_center else -1.0
    return (sign * c > 0) & (sign * s < 0) & (dc_ratio(kernels) < dc_threshold)


def anisotropy(kernels: np.ndarray) -> np.ndarray:
    """How oriented each kernel is: 0 for rotation-symmetric patterns, 1 for bars and edges.

    Computed from the second-moment tensor M = Σ (w − mean w)·[[x², xy], [xy, y²]] (pixel
    coordinates from the kernel centre) as |λ1 − λ2| / (|λ1| + |λ2|). A DoG or a Gaussian blob has
    M ∝ I (0; the square grid keeps this exact), a second derivative along u has all its moment on
    u (1). Invariant to a·w + b (a ≠ 0).

    Args:
      kernels: (N, kh, kw) raw (or normalised) weights.

    Returns:
      (N,) float64 in [0, 1]; 1 for kernels whose tensor vanishes.
    """
    w = np.asarray(kernels, np.float64)
    w = w - w.mean(axis=(1, 2), keepdims=True)
    kh, kw = w.shape[1:]
    y = np.arange(kh) - (kh - 1) / 2
    x = np.arange(kw) - (kw - 1) / 2
    yy, xx = np.meshgrid(y, x, indexing="ij")
    mxx, myy, mxy = ((w * m).sum(axis=(1, 2)) for m in (xx**2, yy**2, xx * yy))
    half_trace, half_gap = (mxx + myy) / 2, np.sqrt(((mxx - myy) / 2) ** 2 + mxy**2)
    l1, l2 = half_trace + half_gap, half_trace - half_gap
    total = np.abs(l1) + np.abs(l2)
    return np.divide(np.abs(l1 - l2), total, out=np.ones_like(total), where=total > 1e-30)


def describe_centroid(centroid: np.ndarray) -> dict[str, float | bool]:
    """Centre/border statistics of one centroid (normalised units) used by the naming rule."""
    kh, kw = centroid.shape
    centre, border = region_masks(kh, kw)
    c, s = float(centroid[centre].mean()), float(centroid[border].mean())
    return {
        "centre": c,
        "border": s,
        "contrast": c - s,
        "max_in_centre": bool(centre.ravel()[np.argmax(centroid)]),
        "min_in_centre": bool(centre.ravel()[np.argmin(centroid)]),
    }


def paper_name(centroid: np.ndarray, *, min_contrast: float = DEFAULT_MIN_CONTRAST) -> str:
    """The paper's naming, from the centroid alone (normalised units).

    "excitatory-centre" if contrast C > τ and the centroid's maximum lies in the centre,
    "inhibitory-centre" if C < −τ and its minimum lies in the centre, else "other". This is what a
    reader naming the mean images by eye (as the paper did) would do; it cannot tell a DoG from a
    Gaussian blob or a Laplacian-like average of bars (see :func:`name_cluster`).
    """
    stats = describe_centroid(centroid)
    if stats["contrast"] > min_contrast and stats["max_in_centre"]:
        return "excitatory-centre"
    if stats["contrast"] < -min_contrast and stats["min_in_centre"]:
        return "inhibitory-centre"
    return "other"


def name_cluster(
    centroid: np.ndarray,
    raw_members: np.ndarray,
    *,
    reference_level: float = 0.5,
    min_contrast: float = DEFAULT_MIN_CONTRAST,
    min_surround: float = DEFAULT_MIN_SURROUND,
    max_anisotropy: float = DEFAULT_MAX_ANISOTROPY,
    min_antagonistic: float = DEFAULT_MIN_ANTAGONISTIC,
) -> tuple[str, dict]:
    """Name one cluster from its centroid and its members' raw weights (see module docstring).

    Args:
      centroid: (kh, kw) centroid in normalised [0, 1] units.
      raw_members: (M, kh, kw) raw weights of the kernels assigned to it.
      reference_level: mean normalised value of all kernels of the group (0.5 for symmetric noise).
      min_contrast: τ, the absolute centre-minus-border contrast threshold.
      min_surround: how far the border must lie beyond ``reference_level``, on the side opposite
        to the centre.
      max_anisotropy: largest median :func:`anisotropy` of the members.
      min_antagonistic: minimum share of antagonistic raw kernels for a DoG name.

    Returns:
      (name in :data:`CLUSTER_LABELS`, statistics dict: paper_name (:func:`paper_name`), centre,
      border, contrast, surround_offset (border − reference level), anisotropy_median,
      max/min_in_centre, antagonistic_share (None unless the paper's name is centre–surround: it is
      only defined for a centre polarity), dc_median).
    """
    stats = describe_centroid(centroid)
    stats["surround_offset"] = stats["border"] - float(reference_level)
    stats["anisotropy_median"] = float(np.median(anisotropy(raw_members))) if len(raw_members) else float("nan")
    isotropic = stats["anisotropy_median"] < max_anisotropy
    peaked = (stats["contrast"] > min_contrast and stats["max_in_centre"]
              and stats["surround_offset"] < -min_surround and isotropic)
    dipped = (stats["contrast"] < -min_contrast and stats["min_in_centre"]
              and stats["surround_offset"] > min_surround and isotropic)
    stats["paper_name"] = paper_name(centroid, min_contrast=min_contrast)
    share = None
    if len(raw_members) and stats["paper_name"] in CENTRE_SURROUND:
        share = float(antagonistic(raw_members, on_center=stats["paper_name"] == "excitatory-centre").mean())
    stats["antagonistic_share"] = share
    stats["dc_median"] = float(np.median(dc_ratio(raw_members))) if len(raw_members) else float("nan")
    if peaked or dipped:
        if share is not None and share >= min_antagonistic:
            return ("excitatory-centre" if peaked else "inhibitory-centre"), stats
        return "gaussian-blob", stats
    return "other", stats


@dataclass(frozen=True)
class ClusterResult:
    """k-means clusters of N kernels of one size.

    Attributes:
      assignments: (N,) int cluster index in [0, k), −1 for constant kernels (not normalisable).
      centroids: (k, kh, kw) float32 in normalised [0, 1] units.
      names: (k,) str cluster names from :data:`CLUSTER_LABELS` (the strict, gated rule).
      stats: one dict per cluster (see :func:`name_cluster`) plus "count".
      inertia: k-means inertia on the fitted sample.
      reference_level: mean normalised value of the group's kernels (the surround test's level).
    """

    assignments: np.ndarray
    centroids: np.ndarray
    names: tuple[str, ...]
    stats: tuple[dict, ...] = field(repr=False)
    inertia: float
    reference_level: float = 0.5

    @property
    def paper_names(self) -> tuple[str, ...]:
        """(k,) names from the centroid alone (:func:`paper_name`), the paper's naming."""
        return tuple(st["paper_name"] for st in self.stats)

    def _names(self, naming: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
        if naming == "strict":
            return self.names, CLUSTER_LABELS
        if naming == "paper":
            return self.paper_names, PAPER_LABELS
        raise ValueError(f"naming must be 'strict' or 'paper', got {naming!r}.")

    def kernel_labels_for(self, naming: str = "strict") -> np.ndarray:
        """(N,) str: the name of each kernel's cluster under ``naming`` ("strict" or "paper");
        "constant" for constant kernels."""
        names = np.asarray(self._names(naming)[0] + ("constant",))
        return names[np.where(self.assignments >= 0, self.assignments, len(self.names))]

    @property
    def kernel_labels(self) -> np.ndarray:
        """(N,) str: the strict name of each kernel's cluster ("constant" for constant kernels)."""
        return self.kernel_labels_for("strict")

    def counts(self, naming: str = "strict") -> dict[str, int]:
        """Kernels per name (:data:`CLUSTER_LABELS` for "strict", :data:`PAPER_LABELS` for "paper");
        constant kernels are not counted."""
        labels = self.kernel_labels_for(naming)
        return {name: int(np.count_nonzero(labels == name)) for name in self._names(naming)[1]}

    def proportions(self, naming: str = "strict") -> dict[str, float]:
        """Share of (non-constant) kernels per name under ``naming``; sums to 1."""
        counts = self.counts(naming)
        total = max(sum(counts.values()), 1)
        return {name: c / total for name, c in counts.items()}


def cluster_kernels(
    kernels: np.ndarray,
    k: int = 3,
    *,
    n_init: int = 10,
    seed: int = 0,
    max_fit: int | None = 200_000,
    min_contrast: float = DEFAULT_MIN_CONTRAST,
    min_surround: float = DEFAULT_MIN_SURROUND,
    max_anisotropy: float = DEFAULT_MAX_ANISOTROPY,
    min_antagonistic: float = DEFAULT_MIN_ANTAGONISTIC,
) -> ClusterResult:
    """The paper's k-means clustering of kernels of one size, with named clusters.

    Args:
      kernels: (N, kh, kw) raw weights of one kernel size (any float dtype).
      k: number of clusters (the paper uses 3).
      n_init: k-means++ restarts (≥ 10 recommended; the best inertia wins).
      seed: random seed of k-means (and of the fitting sample), for reproducible clusters.
      max_fit: fit k-means on at most this many randomly drawn kernels, then assign all kernels
        to the nearest centroid (None: fit on all). Bounds the time for regular convolutions with
        millions of kernels.
      min_contrast, min_surround, max_anisotropy, min_antagonistic: thresholds of the naming rule
        (see :func:`name_cluster`).

    Returns:
      A :class:`ClusterResult`.

    Raises:
      ValueError: wrong shape, or fewer non-constant kernels than clusters.
    """
    from sklearn.cluster import KMeans

    kernels = np.asarray(kernels)
    if kernels.ndim != 3:
        raise ValueError(f"kernels must have shape (N, kh, kw), got {kernels.shape}.")
    if k < 1 or n_init < 1:
        raise ValueError(f"k and n_init must be >= 1, got k={k}, n_init={n_init}.")
    z, valid = minmax_normalize(kernels)
    idx = np.flatnonzero(valid)
    if len(idx) < k:
        raise ValueError(f"need at least k={k} non-constant kernels to cluster, got {len(idx)}.")
    flat = z.reshape(len(z), -1)
    rng = np.random.default_rng(seed)
    fit_idx = idx if max_fit is None or len(idx) <= max_fit else np.sort(rng.choice(idx, max_fit, replace=False))
    km = KMeans(n_clusters=k, init="k-means++", n_init=n_init, random_state=seed).fit(flat[fit_idx])
    assignments = np.full(len(kernels), -1, np.int64)
    assignments[idx] = km.predict(flat[idx])

    kh, kw = kernels.shape[1:]
    centroids = km.cluster_centers_.reshape(k, kh, kw).astype(np.float32)
    reference = float(flat[idx].mean())
    names, stats = [], []
    for c in range(k):
        members = kernels[assignments == c]
        name, st = name_cluster(centroids[c], members, reference_level=reference, min_contrast=min_contrast,
                                min_surround=min_surround, max_anisotropy=max_anisotropy,
                                min_antagonistic=min_antagonistic)
        st["count"] = int(len(members))
        names.append(name)
        stats.append(st)
    return ClusterResult(assignments=assignments, centroids=centroids, names=tuple(names),
                         stats=tuple(stats), inertia=float(km.inertia_), reference_level=reference)
