"""Calibration of the cluster-naming rule on kernel sets whose answer is known.

Used by ``docs/figures/analysis/calibrate_naming.py`` (which writes the table of docs/analysis.md)
and by ``tests/analysis/test_calibration.py`` (which checks the claims made there).

Synthetic families at kernel size k (every kernel independently):

* ``dog_on`` / ``dog_off``: the paper's DoG (:func:`~dog_jax.analysis.templates.dog_templates`),
  γ ~ U(0, 1) (Table 2's widest range; the init uses (0, 0.5)), on- or off-centre;
* ``blob``: an isotropic Gaussian, σ ~ U(0.15, 0.35)·k (single-signed: not centre–surround);
* ``bar``: a second derivative of a Gaussian (dark line on a bright ground), σ ~ U(0.15, 0.3)·k, any
  orientation — bars at all orientations average to a centre-dipped, Laplacian-like centroid;
* ``edge``: a first derivative of a Gaussian, any orientation; ``noise``: i.i.d. normal pixels.

Each kernel w (not noise) becomes a·(w + b + s·std(w)·ε): a ~ U(0.5, 2), a DC offset
b ~ U(−0.25, 0.25)·std(w), ε standard normal, s the noise level. s = 0.25, 0.5, 1 leave a
DoG-fit R² of about 0.94, 0.8 and 0.5 (the trained demo ConvMixer kernels of docs/results have a
median R² of 0.87).

Scenarios (each clustered with the paper's k-means, k = 3): ``dogs+noise`` (on, off, noise),
``dogs+bars`` (on, off, bars), ``blobs+dogs`` (blobs, on, off), ``bars+edges+noise`` and
``noise``. A cluster's truth is the family of most of its members.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dog_jax.analysis.cluster import CENTRE_SURROUND, cluster_kernels, name_cluster
from dog_jax.analysis.templates import dog_templates, gaussian_blob, gaussian_derivative

#: Noise levels s (noise std relative to each kernel's own std) of the calibration.
NOISE_LEVELS = (0.0, 0.25, 0.5, 1.0)

#: Kernel sizes of the calibration.
KERNEL_SIZES = (3, 5, 7, 9)

#: Scenario name -> families mixed in equal numbers.
SCENARIOS = {
    "dogs+noise": ("dog_on", "dog_off", "noise"),
    "dogs+bars": ("dog_on", "dog_off", "bar"),
    "blobs+dogs": ("blob", "dog_on", "dog_off"),
    "bars+edges+noise": ("bar", "edge", "noise"),
    "noise": ("noise", "noise", "noise"),
}

#: The correct name of a cluster made mostly of one family, per naming rule.
EXPECTED = {
    "paper": {"dog_on": "excitatory-centre", "dog_off": "inhibitory-centre", "blob": "excitatory-centre",
              "bar": "other", "edge": "other", "noise": "other"},
    "strict": {"dog_on": "excitatory-centre", "dog_off": "inhibitory-centre", "blob": "gaussian-blob",
               "bar": "other", "edge": "other", "noise": "other"},
}


def make_family(rng: np.random.Generator, family: str, n: int, k: int, noise: float) -> np.ndarray:
    """(n, k, k) float64 kernels of one family (see the module docstring)."""
    if family == "noise":
        return rng.standard_normal((n, k, k))
    if family in ("dog_on", "dog_off"):
        w = dog_templates((k, k), rng.uniform(0.0, 1.0, n)) * (1.0 if family == "dog_on" else -1.0)
    elif family == "blob":
        w = np.stack([gaussian_blob((k, k), rng.uniform(0.15, 0.35) * k) for _ in range(n)])
    elif family in ("bar", "edge"):
        order = 2 if family == "bar" else 1
        w = np.stack([gaussian_derivative((k, k), rng.uniform(0.15, 0.3) * k, rng.uniform(0, 360), order)
                      for _ in range(n)])
        if family == "bar":  # one polarity, dark line: a centre-dipped centroid over all orientations
            w = -w * np.sign(w[:, k // 2, k // 2])[:, None, None]
    else:
        raise ValueError(f"unknown family {family!r}; expected dog_on, dog_off, blob, bar, edge or noise.")
    std = w.reshape(n, -1).std(axis=1)[:, None, None]
    b = rng.uniform(-0.25, 0.25, (n, 1, 1)) * std
    a = rng.uniform(0.5, 2.0, (n, 1, 1))
    return a * (w + b + noise * std * rng.standard_normal(w.shape))


@dataclass(frozen=True)
class CalibratedCluster:
    """One k-means cluster of a calibration set: its true family and the names the rules give it."""

    k: int
    noise: float
    scenario: str
    seed: int
    truth: str
    purity: float
    paper_name: str
    anisotropy_median: float
    strict_names: dict[float, str]


def calibrate(kernel_sizes=KERNEL_SIZES, noise_levels=NOISE_LEVELS, scenarios=tuple(SCENARIOS),
              seeds=(0, 1, 2), n_per_family: int = 400,
              max_anisotropies=(0.5, 0.7, 0.8, 0.9, 0.95, 1.01)) -> list[CalibratedCluster]:
    """Clusters every (k, noise, scenario, seed) set and names each cluster under both rules.

    The strict rule is evaluated for every ``max_anisotropies`` threshold (1.01: gate off), its other
    thresholds at their defaults.
    """
    out = []
    for k in kernel_sizes:
        for noise in noise_levels:
            for scenario in scenarios:
                for seed in seeds:
                    rng = np.random.default_rng([k, int(noise * 100), seed, len(scenario)])
                    families = SCENARIOS[scenario]
                    kernels = np.concatenate([make_family(rng, f, n_per_family, k, noise) for f in families])
                    truth = np.repeat(np.asarray(families), n_per_family)
                    result = cluster_kernels(kernels, 3, n_init=4, seed=seed)
                    reference = float(result.reference_level)
                    for c in range(3):
                        members = result.assignments == c
                        if not members.any():
                            continue
                        fams, counts = np.unique(truth[members], return_counts=True)
                        strict = {t: name_cluster(result.centroids[c], kernels[members],
                                                  reference_level=reference, max_anisotropy=t)[0]
                                  for t in max_anisotropies}
                        out.append(CalibratedCluster(
                            k=k, noise=noise, scenario=scenario, seed=seed, truth=str(fams[counts.argmax()]),
                            purity=float(counts.max() / counts.sum()), paper_name=result.paper_names[c],
                            anisotropy_median=float(result.stats[c]["anisotropy_median"]),
                            strict_names=strict))
    return out


def rates(clusters: list[CalibratedCluster], rule: str,
          threshold: float | None = None) -> dict[str, float | None]:
    """Shares over clusters: ``dog_named`` (DoG clusters given their own name), ``false_centre_surround``
    (bar, edge and noise clusters given a centre–surround name), ``blob_correct`` (blob clusters given
    the rule's expected name). None where no cluster of that kind exists."""

    def name(c: CalibratedCluster) -> str:
        return c.paper_name if rule == "paper" else c.strict_names[threshold]

    def share(selected, ok) -> float | None:
        selected = list(selected)
        return float(np.mean([ok(c) for c in selected])) if selected else None

    dogs = [c for c in clusters if c.truth in ("dog_on", "dog_off")]
    rest = [c for c in clusters if c.truth in ("bar", "edge", "noise")]
    blobs = [c for c in clusters if c.truth == "blob"]
    return {
        "dog_named": share(dogs, lambda c: name(c) == EXPECTED[rule][c.truth]),
        "false_centre_surround": share(rest, lambda c: name(c) in CENTRE_SURROUND),
        "blob_correct": share(blobs, lambda c: name(c) == EXPECTED[rule][c.truth]),
    }
