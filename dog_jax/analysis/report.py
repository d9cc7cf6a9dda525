"""Run the whole analysis on checkpoints and write summary.json and clusters.csv.

For each checkpoint and each (kind, kernel size) group: the paper's k-means clusters with names,
per-layer counts, the template classifier, the per-kernel DoG fit and the null baseline (the same
clustering and classifier on pixel-shuffled copies of the kernels).
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import asdict, dataclass, field

import numpy as np

from dog_jax._paths import relative_to, resolved
from dog_jax.analysis.cluster import CLUSTER_LABELS, PAPER_LABELS, ClusterResult, cluster_kernels
from dog_jax.analysis.fit import DogFit, fit_dog
from dog_jax.analysis.kernels import KernelLayer, extract_depthwise_kernels, group_by_size
from dog_jax.analysis.readers import CheckpointError, Progress, read_checkpoint
from dog_jax.analysis.templates import TEMPLATE_CLASSES, TemplateClassification, classify_kernels
from dog_jax.storage import is_url, run_path, write_text

ALL_LAYERS = "(all layers)"
ALL_SHUFFLED = "(all layers, pixel-shuffled)"

#: Per-cluster statistics of :func:`~dog_jax.analysis.cluster.name_cluster` written to summary.json.
CLUSTER_STATS = ("centre", "border", "contrast", "surround_offset", "anisotropy_median", "antagonistic_share",
                 "dc_median")

#: Below this many kernels per cluster, a warning is printed (centroids of noise stop averaging out).
MIN_KERNELS_PER_CLUSTER = 50


@dataclass(frozen=True)
class AnalysisOptions:
    """Settings of one analysis run (the CLI flags)."""

    k: int = 3
    n_init: int = 10
    seed: int = 0
    layers: str | None = None
    include_regular: bool = False
    ema: bool = False
    max_fit: int | None = 200_000
    min_correlation: float = 0.7
    null_baseline: bool = True


@dataclass
class GroupAnalysis:
    """All results for one (kind, kernel size) group of one checkpoint."""

    kind: str
    kernel_size: tuple[int, int]
    kernels: np.ndarray                 # (N, kh, kw) float32 raw
    owner: np.ndarray                   # (N,) index into the checkpoint's layers
    clusters: ClusterResult | None      # None when too few kernels to cluster
    templates: TemplateClassification
    fit: DogFit
    null_clusters: ClusterResult | None = None
    null_templates: TemplateClassification | None = None
    warning: str | None = None

    @property
    def size_name(self) -> str:
        return f"{self.kernel_size[0]}x{self.kernel_size[1]}"


@dataclass
class CheckpointAnalysis:
    """Results for one checkpoint."""

    name: str
    path: str
    format: str
    layers: list[KernelLayer]
    groups: list[GroupAnalysis] = field(default_factory=list)


def shuffle_pixels(kernels: np.ndarray, seed: int) -> np.ndarray:
    """Independently permute the pixels of every kernel (keeps each kernel's value distribution).

    Args:
      kernels: (N, kh, kw).
      seed: random seed.

    Returns:
      (N, kh, kw) shuffled copy.
    """
    flat = kernels.reshape(len(kernels), -1)
    order = np.argsort(np.random.default_rng(seed).random(flat.shape), axis=1)
    return np.take_along_axis(flat, order, axis=1).reshape(kernels.shape)


def analyse_checkpoint(path: str | os.PathLike, name: str, options: AnalysisOptions,
                       progress: Progress | None = None) -> CheckpointAnalysis:
    """Read one checkpoint and analyse each kernel-size group.

    Raises:
      CheckpointError: unreadable checkpoint, or no kernels found.
    """
    say = progress or (lambda _: None)
    ckpt = read_checkpoint(path, progress=say)
    layers = extract_depthwise_kernels(ckpt, layers=options.layers, include_regular=options.include_regular,
                                       ema=options.ema, progress=say)
    if not layers:
        what = "depthwise or regular k×k" if options.include_regular else "depthwise"
        where = f" matching --layers {options.layers!r}" if options.layers else ""
        where += " in a model EMA (--ema)" if options.ema else ""
        raise CheckpointError(
            f"{path}: no {what} convolution kernels{where} found ({len(ckpt.arrays)} arrays read; depthwise kernels "
            "have shape (C, 1, k, k) or (k, k, 1, C) with k >= 3).")
    n_dw = sum(layer.kind == "depthwise" for layer in layers)
    say(f"{name}: {n_dw} depthwise and {len(layers) - n_dw} regular layers, "
        f"{sum(len(layer.kernels) for layer in layers):,} kernels")
    result = CheckpointAnalysis(name=name, path=str(ckpt.path), format=ckpt.format, layers=layers)
    for (kind, kh, kw), (kernels, owner) in sorted(group_by_size(layers).items()):
        say(f"{name}: {kind} {kh}x{kw}: {len(kernels):,} kernels — k-means (k={options.k}, "
            f"{options.n_init} restarts)")
        warning = None
        if len(kernels) < MIN_KERNELS_PER_CLUSTER * options.k:
            warning = (f"only {len(kernels)} kernels for {options.k} clusters; chance centroids of small clusters "
                       "can look centre-surround: compare with the null baseline")
            say(f"{name}: {kind} {kh}x{kw}: {warning}")
        what = f"{name}: {kind} {kh}x{kw}"
        clusters = _cluster_or_none(kernels, options, say, what)
        if clusters is not None:
            say(f"{what}: clusters {', '.join(clusters.names)}; template classifier")
        templates = classify_kernels(kernels, min_correlation=options.min_correlation)
        say(f"{what}: DoG fit")
        group = GroupAnalysis(kind=kind, kernel_size=(kh, kw), kernels=kernels, owner=owner, clusters=clusters,
                              warning=warning, templates=templates, fit=fit_dog(kernels))
        if options.null_baseline:
            say(f"{what}: null baseline (pixel-shuffled copies)")
            shuffled = shuffle_pixels(kernels, options.seed + 1)
            group.null_clusters = _cluster_or_none(shuffled, options, lambda _: None, "")
            group.null_templates = classify_kernels(shuffled, min_correlation=options.min_correlation,
                                                    bank=group.templates.bank)
        result.groups.append(group)
    return result


def _cluster_or_none(kernels, options: AnalysisOptions, say: Progress, what: str) -> ClusterResult | None:
    try:
        return cluster_kernels(kernels, options.k, n_init=options.n_init, seed=options.seed, max_fit=options.max_fit)
    except ValueError as e:
        say(f"{what}: not clustered: {e}")
        return None


# ----------------------------------------------------------------------------- summary


def _rounded(x: float, nd: int = 4) -> float | None:
    return None if x is None or not np.isfinite(x) else round(float(x), nd)


def _proportions(counts: dict[str, int]) -> dict[str, float]:
    total = sum(counts.values())
    return {k: (v / total if total else 0.0) for k, v in counts.items()}


def _layer_counts(group: GroupAnalysis, layer_index: int, naming: str = "strict") -> dict[str, int]:
    labels = group.clusters.kernel_labels_for(naming)[group.owner == layer_index]
    return {name: int(np.count_nonzero(labels == name))
            for name in (CLUSTER_LABELS if naming == "strict" else PAPER_LABELS)}


def group_summary(ca: CheckpointAnalysis, group: GroupAnalysis) -> dict:
    """JSON-ready summary of one group."""
    fit = group.fit
    good = fit.r2 >= 0.5
    out: dict = {
        "kind": group.kind,
        "kernel_size": group.size_name,
        "n_kernels": int(len(group.kernels)),
        "n_layers": int(len(np.unique(group.owner))),
    }
    if group.warning:
        out["warning"] = group.warning
    if group.clusters is None:
        out["clusters"] = None
    else:
        cr = group.clusters
        out["n_constant"] = int(np.count_nonzero(cr.assignments < 0))
        # Two namings side by side: "counts"/"proportions" use the strict rule (name), the paper_*
        # keys the paper's centroid-only rule (paper_name); docs/analysis.md explains both.
        out["counts"] = cr.counts()
        out["proportions"] = {k: _rounded(v) for k, v in cr.proportions().items()}
        out["paper_counts"] = cr.counts("paper")
        out["paper_proportions"] = {k: _rounded(v) for k, v in cr.proportions("paper").items()}
        out["clusters"] = [
            {"index": i, "name": cr.names[i], "paper_name": cr.paper_names[i], "count": st["count"],
             **{key: _rounded(st[key]) for key in CLUSTER_STATS},
             "centroid": np.round(cr.centroids[i], 4).tolist()}
            for i, st in enumerate(cr.stats)]
        out["layers"] = []
        for li in np.unique(group.owner):
            counts = _layer_counts(group, li)
            paper_counts = _layer_counts(group, li, "paper")
            mine = group.owner == li
            classes = group.templates.classes[mine]
            out["layers"].append({
                "name": ca.layers[li].name, "shape": list(ca.layers[li].source_shape),
                "n_kernels": int(np.count_nonzero(mine)), "counts": counts,
                "proportions": {k: _rounded(v) for k, v in _proportions(counts).items()},
                "paper_counts": paper_counts,
                "paper_proportions": {k: _rounded(v) for k, v in _proportions(paper_counts).items()},
                "template_counts": {c: int(np.count_nonzero(classes == c)) for c in TEMPLATE_CLASSES},
                "dog_fit_r2_median": _rounded(np.median(fit.r2[mine]))})
    out["templates"] = {"min_correlation": group.templates.min_correlation,
                        "counts": group.templates.counts(),
                        "shares": {k: _rounded(v) for k, v in group.templates.shares().items()},
                        "classified_share": _rounded(1 - group.templates.shares()["unclassified"])}
    out["dog_fit"] = {
        "r2_median": _rounded(np.median(fit.r2)),
        "share_r2_at_least_0.5": _rounded(np.mean(good)),
        "gamma_median_r2_at_least_0.5": _rounded(np.median(fit.gamma[good])) if good.any() else None,
        "gamma_quartiles_r2_at_least_0.5": [_rounded(q) for q in np.quantile(fit.gamma[good], [0.25, 0.75])]
        if good.any() else None,
        "share_on_center": _rounded(np.mean(fit.on_center[good])) if good.any() else None,
    }
    if group.null_templates is not None:
        null = {"templates": {k: _rounded(v) for k, v in group.null_templates.shares().items()}}
        if group.null_clusters is not None:
            null["proportions"] = {k: _rounded(v) for k, v in group.null_clusters.proportions().items()}
            null["cluster_names"] = list(group.null_clusters.names)
            null["paper_proportions"] = {k: _rounded(v)
                                         for k, v in group.null_clusters.proportions("paper").items()}
            null["paper_cluster_names"] = list(group.null_clusters.paper_names)
            null["cluster_contrasts"] = [_rounded(st["contrast"]) for st in group.null_clusters.stats]
        out["null_baseline"] = null
    return out


def summary(analyses: list[CheckpointAnalysis], options: AnalysisOptions,
            paths_relative_to: str | os.PathLike = ".") -> dict:
    """The content of summary.json; each checkpoint's ``path`` relative to ``paths_relative_to``
    when it lies inside it (no machine paths in results that get committed)."""
    return {
        "settings": asdict(options),
        "labels": list(CLUSTER_LABELS),
        "paper_labels": list(PAPER_LABELS),
        "template_classes": list(TEMPLATE_CLASSES),
        "checkpoints": [
            {"name": ca.name, "path": relative_to(ca.path, paths_relative_to), "format": ca.format,
             "n_layers": len(ca.layers), "groups": [group_summary(ca, g) for g in ca.groups]}
            for ca in analyses],
    }


def write_summary(analyses: list[CheckpointAnalysis], options: AnalysisOptions, out_dir: str | os.PathLike,
                  paths_relative_to: str | os.PathLike = ".") -> os.PathLike:
    """Write summary.json (checkpoint paths as :func:`summary` records them) into ``out_dir`` (a
    directory or a ``gs://`` URL); returns its path."""
    path = run_path(out_dir) / "summary.json"
    path.write_text(json.dumps(summary(analyses, options, paths_relative_to), indent=1) + "\n")
    return path


def write_clusters_csv(analyses: list[CheckpointAnalysis], out_dir: str | os.PathLike) -> os.PathLike:
    """Write clusters.csv into ``out_dir`` (a directory or a ``gs://`` URL): one row per checkpoint ×
    group × layer, plus pooled and shuffled rows; counts and shares under the strict naming, and
    counts under the paper's (``n_paper_*``)."""
    path = run_path(out_dir) / "clusters.csv"
    header = ["checkpoint", "kind", "kernel_size", "layer", "n_kernels"]
    header += [f"n_{lab}" for lab in CLUSTER_LABELS] + [f"p_{lab}" for lab in CLUSTER_LABELS]
    header += [f"n_paper_{lab}" for lab in PAPER_LABELS]
    text = io.StringIO()
    w = csv.writer(text)
    w.writerow(header)
    for ca in analyses:
        for g in ca.groups:
            if g.clusters is None:
                continue
            rows = [(ALL_LAYERS, g.clusters.counts(), g.clusters.counts("paper"))]
            if g.null_clusters is not None:
                rows.append((ALL_SHUFFLED, g.null_clusters.counts(), g.null_clusters.counts("paper")))
            rows += [(ca.layers[li].name, _layer_counts(g, li), _layer_counts(g, li, "paper"))
                     for li in np.unique(g.owner)]
            for layer, counts, paper_counts in rows:
                props = _proportions(counts)
                w.writerow([ca.name, g.kind, g.size_name, layer, sum(counts.values())]
                           + [counts[lab] for lab in CLUSTER_LABELS]
                           + [f"{props[lab]:.4f}" for lab in CLUSTER_LABELS]
                           + [paper_counts[lab] for lab in PAPER_LABELS])
    write_text(path, text.getvalue())
    return path


def unique_names(paths: list[str | os.PathLike]) -> list[str]:
    """Short display names for checkpoints: the file stem (directory name), prefixed with parent
    directories until the names differ; a path given twice gets a "#2", "#3", ... suffix. Local paths
    are resolved first (symbolic links followed); ``gs://bucket/...`` URLs are named from their
    components the same way."""
    parts = [_parts(resolved(p)) for p in paths]

    def name(p: tuple[str, ...], depth: int) -> str:
        return "/".join(p[-depth:-1] + (_stem(p[-1]),)) if p else "checkpoint"

    depth = 1
    distinct = set(parts)
    while depth < max(len(p) for p in parts) and len({name(p, depth) for p in distinct}) < len(distinct):
        depth += 1
    names = [name(p, depth) for p in parts]
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 else f"{n}#{seen[n]}")
    return out


def _parts(path: str) -> tuple[str, ...]:
    """The components of an absolute path, as a POSIX path's ``parts`` (``/`` first), or of a
    URL (``gs://b/x`` -> ``("gs:", "b", "x")``)."""
    components = tuple(part for part in path.split("/") if part)
    return components if is_url(path) else ("/", *components)


def _stem(name: str) -> str:
    """A file name without its last suffix, as a path's ``stem`` (``x.pth`` -> ``x``, ``.npz``
    and ``ckpt`` unchanged)."""
    dot = name.rfind(".")
    return name[:dot] if 0 < dot < len(name) - 1 else name
