"""The kernel analysis over training as a figure: centre–surround shares per step against the null.

Input is what :func:`dog_jax.experiments.kernel_report.analyse_sweep` gathers with ``during=True``:
per config, the share rows (one dict per seed) at each analysed step (0 = initialisation) and the
share rows of the trained kernels' pixel-shuffled null.
"""

import os
from typing import Mapping, Sequence

import numpy as np
from etils import epath

from dog_jax.experiments.curves import save_figure
from dog_jax.storage import run_path

Shares = Mapping[str, float]
#: (panel title, function of one share row): the two views of "centre–surround" the analysis has.
_PANELS = (
    ("centre–surround clusters, % of kernels\n(k-means, paper naming: excitatory + inhibitory centre)",
     lambda s: s["paper_excitatory"] + s["paper_inhibitory"]),
    ("DoG templates, % of kernels\n(zero-sum DoG matched with |r| ≥ 0.7)", lambda s: s["dog_templates"]),
)


def write_trajectory_figure(trajectories: Mapping[str, tuple[Sequence[tuple[int, Sequence[Shares]]],
                                                              Sequence[Shares]]],
                            path: str | os.PathLike) -> epath.Path:
    """Two panels (cluster view, template view), a line per config: the mean over seeds per step with
    a ±1 std band, and the config's null (trained kernels, pixels shuffled) as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = run_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for index, (label, (points, null)) in enumerate(trajectories.items()):
        color = f"C{index % 10}"
        steps = np.array([step for step, _ in points])
        for ax, (_, measure) in zip(axes, _PANELS):
            values = [100 * np.array([measure(s) for s in seeds]) for _, seeds in points]
            mean = np.array([v.mean() for v in values])
            std = np.array([v.std(ddof=1) if len(v) > 1 else 0.0 for v in values])
            ax.plot(steps, mean, color=color, marker="o", ms=3, lw=1.5, label=label)
            ax.fill_between(steps, mean - std, mean + std, color=color, alpha=0.15, lw=0)
            if null:
                ax.axhline(100 * np.mean([measure(s) for s in null]), color=color, ls="--", lw=1)
    for ax, (title, _) in zip(axes, _PANELS):
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("training step (0 = initialisation)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, title="dashed: pixel-shuffled null", title_fontsize=7)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    plt.close(fig)
    return path
