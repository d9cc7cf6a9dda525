"""Learning curves of a sweep's runs, read from the trainer's TensorBoard event files.

The event files (``<workdir>/tensorboard``) hold the whole history of a run, also across
resumes; ``summary.json``'s ``train_history`` / ``eval_history`` only cover the last start, so
they are the fallback when no event file is readable. When a resumed run logs a step again,
the later value wins. Workdirs and the figures' directory may be ``gs://`` URLs
(:mod:`dog_jax.storage`).
"""

import io
import os
from collections import defaultdict
from typing import Sequence

import numpy as np
from etils import epath

from dog_jax.experiments.sweep import Run, read_summary, run_status
from dog_jax.storage import run_path

#: (tag in the event files, key in summary.json's history, axis label)
TRAIN_LOSS = ("train/loss", "loss", "train loss")
EVAL_TOP1 = ("eval/top1", "eval_top1", "eval top-1")

Curve = tuple[np.ndarray, np.ndarray]  # steps, values


def event_files(tensorboard_dir: str | os.PathLike) -> list[epath.Path]:
    """The event files at any depth under ``tensorboard_dir`` in the order they were begun: by file
    name (``events.out.tfevents.<unix time>.<host>...``; a resumed run's files come later), then path."""
    files = [directory / name for directory, _, names in run_path(tensorboard_dir).walk()
             for name in names if name.startswith("events.out.tfevents.")]
    return sorted(files, key=lambda path: (path.name, os.fspath(path)))


def read_event_scalars(tensorboard_dir: str | os.PathLike) -> dict[str, Curve]:
    """{tag: (steps, values)} of every scalar in the event files under ``tensorboard_dir``."""
    import tensorflow as tf  # the trainer writes with TF; reading needs only its record reader.

    values: dict[str, dict[int, float]] = defaultdict(dict)
    for path in event_files(tensorboard_dir):
        try:
            # TF's record reader opens the file itself (a gs:// URL through TF's own GCS client).
            for record in tf.data.TFRecordDataset(os.fspath(path)).as_numpy_iterator():
                event = tf.compat.v1.Event.FromString(record)
                for value in event.summary.value:
                    if value.HasField("tensor"):
                        scalar = float(tf.make_ndarray(value.tensor).reshape(-1)[0])
                    else:
                        scalar = float(value.simple_value)
                    values[value.tag][int(event.step)] = scalar
        except tf.errors.DataLossError:
            continue  # a file cut short by a killed run: keep what was read.
    return {tag: (np.array(sorted(v)), np.array([v[s] for s in sorted(v)])) for tag, v in values.items()}


def run_curves(run: Run) -> dict[str, Curve]:
    """Train-loss and eval-top-1 curves of one run (event files, else summary.json)."""
    tensorboard = run_path(run.workdir) / "tensorboard"
    scalars = read_event_scalars(tensorboard) if tensorboard.is_dir() else {}
    curves = {}
    summary = read_summary(run.workdir) or {}
    for tag, key, _ in (TRAIN_LOSS, EVAL_TOP1):
        if tag in scalars and len(scalars[tag][0]):
            curves[tag] = scalars[tag]
        else:
            history = summary.get("train_history" if tag.startswith("train") else "eval_history") or []
            points = [(h["step"], h[key]) for h in history if key in h]
            if points:
                curves[tag] = (np.array([p[0] for p in points]), np.array([p[1] for p in points], float))
    return curves


def _mean_curve(curves: Sequence[Curve]) -> Curve | None:
    """Mean over runs at the steps all of them logged."""
    if not curves:
        return None
    common = set(curves[0][0].tolist())
    for steps, _ in curves[1:]:
        common &= set(steps.tolist())
    steps = np.array(sorted(common))
    if not len(steps):
        return None
    return steps, np.mean([vals[np.searchsorted(s, steps)] for s, vals in curves], axis=0)


def write_curve_figures(runs: Sequence[Run], out_dir: str | os.PathLike) -> list[epath.Path]:
    """One PNG per config (train loss and eval top-1, a line per seed) and ``all_configs.png``
    (the seed-mean curves of every config together). Returns the paths written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = run_path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    by_label: dict[str, list[tuple[int, dict[str, Curve]]]] = defaultdict(list)
    for run in runs:
        if run_status(run.workdir) == "done":
            by_label[run.label].append((run.seed, run_curves(run)))
    written = []
    means: dict[str, dict[str, Curve]] = {}
    for label, seeded in by_label.items():
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
        means[label] = {}
        for ax, (tag, _, name) in zip(axes, (TRAIN_LOSS, EVAL_TOP1)):
            present = [(seed, c[tag]) for seed, c in seeded if tag in c]
            for seed, (steps, vals) in present:
                ax.plot(steps, vals, lw=1, alpha=0.6, marker="o" if tag == EVAL_TOP1[0] else None, ms=3,
                        label=f"seed {seed}")
            mean = _mean_curve([c for _, c in present])
            if mean is not None:
                means[label][tag] = mean
                ax.plot(*mean, color="black", lw=2, label="mean")
            ax.set_xlabel("step")
            ax.set_ylabel(name)
            ax.grid(alpha=0.3)
        axes[1].legend(fontsize=8)
        fig.suptitle(label, fontsize=10)
        fig.tight_layout()
        path = out_dir / f"{label}.png"
        save_figure(fig, path, dpi=110)
        plt.close(fig)
        written.append(path)
    if len(means) > 1:
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for label, curves in means.items():
            for ax, (tag, _, name) in zip(axes, (TRAIN_LOSS, EVAL_TOP1)):
                if tag in curves:
                    ax.plot(*curves[tag], lw=1.5, marker="o" if tag == EVAL_TOP1[0] else None, ms=3, label=label)
                ax.set_xlabel("step")
                ax.set_ylabel(f"{name} (mean over seeds)")
                ax.grid(alpha=0.3)
        axes[1].legend(fontsize=7)
        fig.tight_layout()
        path = out_dir / "all_configs.png"
        save_figure(fig, path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def save_figure(fig, path: str | os.PathLike, **options) -> None:
    """``fig.savefig`` as a PNG to ``path``, a local file or a ``gs://`` URL (rendered in memory)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", **options)
    run_path(path).write_bytes(buffer.getvalue())
