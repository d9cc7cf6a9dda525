"""Figures of the analysis (PNG, Agg backend, small files).

* ``samples_*.png`` — random kernels (paper Fig. 4);
* ``clusters_*.png`` — random kernels per cluster with the cluster means (Figs. 5, 7, 8);
* ``proportions.png`` — cluster proportions of several checkpoints side by side, with the
  pixel-shuffled null baseline (Figs. 9, 10), under the paper's naming and the strict one;
* ``templates.png`` — template-classifier shares per checkpoint, real and shuffled;
* ``gamma_hist.png`` — histogram of fitted DoG γ per checkpoint.

Kernels are shown min–max normalised (as clustered), dark = low, bright = high. The figures are
rendered in memory and written through :mod:`dog_jax.storage` (a directory or a ``gs://`` URL).
"""

from __future__ import annotations

import io
import os

import matplotlib

matplotlib.use("Agg")  # no display needed; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from dog_jax.analysis.cluster import CLUSTER_LABELS, PAPER_LABELS, minmax_normalize  # noqa: E402
from dog_jax.analysis.report import CheckpointAnalysis, GroupAnalysis  # noqa: E402
from dog_jax.analysis.templates import TEMPLATE_CLASSES  # noqa: E402
from dog_jax.storage import run_path  # noqa: E402

PathLike = str | os.PathLike

DPI = 72
LABEL_COLORS = {"excitatory-centre": "#d62728", "inhibitory-centre": "#1f77b4",
                "gaussian-blob": "#ff7f0e", "other": "#7f7f7f"}
CLASS_COLORS = {"dog_on": "#d62728", "dog_off": "#1f77b4", "gaussian": "#ff7f0e",
                "derivative1": "#2ca02c", "derivative2": "#9467bd", "unclassified": "#c7c7c7"}


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text).strip("_")


def _show(ax, kernel: np.ndarray) -> None:
    ax.imshow(kernel, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def _save(fig: plt.Figure, path: PathLike, **options) -> None:
    """``fig.savefig`` as a PNG to ``path`` (local or ``gs://``), through an in-memory buffer."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", **options)
    run_path(path).write_bytes(buffer.getvalue())


def plot_samples(ca: CheckpointAnalysis, group: GroupAnalysis, path: PathLike, n: int = 64, seed: int = 0) -> PathLike:
    """Fig. 4: a grid of randomly drawn kernels of one group."""
    z, _ = minmax_normalize(group.kernels)
    idx = np.random.default_rng(seed).choice(len(z), min(n, len(z)), replace=False)
    cols = int(np.ceil(np.sqrt(len(idx))))
    rows = int(np.ceil(len(idx) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 0.6, rows * 0.6 + 0.4), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, i in zip(axes.ravel(), idx):
        ax.axis("on")
        _show(ax, z[i])
    fig.suptitle(f"{ca.name}: random {group.kind} {group.size_name} kernels", fontsize=8)
    _save(fig, path, dpi=DPI)
    plt.close(fig)
    return path


def plot_clusters(ca: CheckpointAnalysis, group: GroupAnalysis, path: PathLike, n: int = 12, seed: int = 0) -> PathLike:
    """Figs. 5/7/8: per cluster, its mean (first column, framed in the label colour) and random members."""
    cr = group.clusters
    z, _ = minmax_normalize(group.kernels)
    rng = np.random.default_rng(seed)
    k = len(cr.names)
    fig, axes = plt.subplots(k, n + 1, figsize=((n + 1) * 0.55 + 1.6, k * 0.62 + 0.45), squeeze=False)
    for c in range(k):
        ax = axes[c, 0]
        _show(ax, cr.centroids[c])
        for spine in ax.spines.values():
            spine.set_edgecolor(LABEL_COLORS[cr.names[c]])
            spine.set_linewidth(2.5)
        share = cr.stats[c]["count"] / max(np.count_nonzero(cr.assignments >= 0), 1)
        ax.set_ylabel(f"strict: {cr.names[c]}\npaper: {cr.paper_names[c]}\n{100 * share:.0f}%", fontsize=6,
                      rotation=0, ha="right", va="center")
        members = np.flatnonzero(cr.assignments == c)
        pick = rng.choice(members, min(n, len(members)), replace=False) if len(members) else []
        for j in range(n):
            ax = axes[c, j + 1]
            if j < len(pick):
                _show(ax, z[pick[j]])
            else:
                ax.axis("off")
    axes[0, 0].set_title("mean", fontsize=7)
    fig.suptitle(f"{ca.name}: {group.kind} {group.size_name} clusters (k={k})", fontsize=8)
    fig.subplots_adjust(left=1.5 / ((n + 1) * 0.55 + 1.6), right=0.99, top=1 - 0.4 / (k * 0.62 + 0.45),
                        bottom=0.02, wspace=0.1, hspace=0.15)
    _save(fig, path, dpi=DPI)
    plt.close(fig)
    return path


def _bars(ax, entries: list[tuple[str, dict[str, float], dict[str, float] | None]], keys, colors) -> None:
    width = 0.8 / len(keys)
    x = np.arange(len(entries))
    for j, key in enumerate(keys):
        real = [e[1].get(key, 0.0) for e in entries]
        ax.bar(x + (j - (len(keys) - 1) / 2) * width, real, width, color=colors[key], label=key)
        null = [e[2].get(key, 0.0) if e[2] else np.nan for e in entries]
        ax.scatter(x + (j - (len(keys) - 1) / 2) * width, null, marker="_", s=60, color="black", zorder=3,
                   label="pixel-shuffled" if j == 0 else None)
    ax.set_xticks(x)
    ax.set_xticklabels([e[0] for e in entries], fontsize=7, rotation=20, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("proportion of kernels", fontsize=8)
    ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)


def _entries(analyses: list[CheckpointAnalysis], what: str, naming: str = "strict"):
    entries = []
    for ca in analyses:
        for g in ca.groups:
            label = f"{ca.name}\n{g.kind} {g.size_name}" if len(ca.groups) > 1 else f"{ca.name}\n{g.size_name}"
            if what == "clusters" and g.clusters is not None:
                null = g.null_clusters.proportions(naming) if g.null_clusters is not None else None
                entries.append((label, g.clusters.proportions(naming), null))
            elif what == "templates":
                null = g.null_templates.shares() if g.null_templates is not None else None
                entries.append((label, g.templates.shares(), null))
    return entries


def plot_proportions(analyses: list[CheckpointAnalysis], path: PathLike) -> PathLike | None:
    """Figs. 9/10: cluster-name proportions per checkpoint and kernel size, side by side; top: the
    paper's naming from the centroid alone, bottom: the strict rule (docs/analysis.md)."""
    entries = _entries(analyses, "clusters")
    if not entries:
        return None
    fig, axes = plt.subplots(2, 1, figsize=(1.3 * len(entries) + 4.5, 6.0))
    _bars(axes[0], _entries(analyses, "clusters", "paper"), PAPER_LABELS, LABEL_COLORS)
    axes[0].set_title("k-means clusters named from the centroid (the paper's naming; black tick: "
                      "pixel-shuffled null)", fontsize=8)
    _bars(axes[1], entries, CLUSTER_LABELS, LABEL_COLORS)
    axes[1].set_title("the same clusters, strict naming (centroid + members' raw weights)", fontsize=8)
    fig.tight_layout()
    _save(fig, path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_templates(analyses: list[CheckpointAnalysis], path: PathLike) -> PathLike:
    """Template-classifier class shares per checkpoint and kernel size, with the shuffled null."""
    entries = _entries(analyses, "templates")
    fig, ax = plt.subplots(figsize=(1.7 * len(entries) + 3.0, 3.0))
    _bars(ax, entries, TEMPLATE_CLASSES, CLASS_COLORS)
    ax.set_title("template classifier (black tick: pixel-shuffled null)", fontsize=8)
    _save(fig, path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_gamma_hist(analyses: list[CheckpointAnalysis], path: PathLike, min_r2: float = 0.5) -> PathLike:
    """Histogram of fitted DoG γ (kernels with R² ≥ ``min_r2``): one panel per checkpoint and size."""
    groups = [(ca, g) for ca in analyses for g in ca.groups]
    fig, axes = plt.subplots(len(groups), 1, figsize=(4.5, 1.1 * len(groups) + 0.8), sharex=True, squeeze=False)
    bins = np.linspace(0, 1, 41)
    for ax, (ca, g) in zip(axes[:, 0], groups):
        good = g.fit.r2 >= min_r2
        ax.axvspan(0, 0.5, color="#eeeeee", zorder=0)
        if good.any():
            ax.hist(g.fit.gamma[good], bins=bins, weights=np.full(good.sum(), 1 / good.sum()), color="#4c72b0")
        ax.set_title(f"{ca.name} {g.kind} {g.size_name}: {good.mean():.0%} of kernels fit", fontsize=7)
        ax.tick_params(labelsize=6)
        ax.set_ylabel("share", fontsize=7)
    axes[-1, 0].set_xlabel("fitted γ (centre/surround ratio); grey: the init's range (0, 0.5)", fontsize=7)
    fig.suptitle(f"per-kernel DoG fit, kernels with R² ≥ {min_r2}", fontsize=8)
    fig.tight_layout()
    _save(fig, path, dpi=DPI)
    plt.close(fig)
    return path


def write_figures(analyses: list[CheckpointAnalysis], out_dir: PathLike, seed: int = 0) -> list[PathLike]:
    """Write every figure into ``out_dir`` (a directory or a ``gs://`` URL); returns the paths written."""
    out_dir = run_path(out_dir)
    paths = []
    for ca in analyses:
        for g in ca.groups:
            stem = _slug(f"{ca.name}_{g.kind}_{g.size_name}")
            paths.append(plot_samples(ca, g, out_dir / f"samples_{stem}.png", seed=seed))
            if g.clusters is not None:
                paths.append(plot_clusters(ca, g, out_dir / f"clusters_{stem}.png", seed=seed))
    p = plot_proportions(analyses, out_dir / "proportions.png")
    if p:
        paths.append(p)
    paths.append(plot_templates(analyses, out_dir / "templates.png"))
    paths.append(plot_gamma_hist(analyses, out_dir / "gamma_hist.png"))
    return paths
