"""Copies a sweep's results (not its checkpoints) into a directory meant for the repository.

``python -m dog_jax.experiments SWEEP --collect --publish docs/results/<name>`` copies
``results.{md,csv}``, ``curves/``, ``analysis.md`` and the kernel-analysis outputs
(``analysis/<label>/{summary.json,clusters.csv,*.png,during/summary.json}``, ``analysis/*.png``),
and writes ``commands.md``: the sweep command, every run's exact ``train.py`` command, the machine,
and the runs' summed wall time.
"""

import os
import platform
import shlex
import shutil
import sys
import time
from pathlib import Path
from typing import Sequence

from dog_jax.experiments.runner import train_command
from dog_jax.train.reporting import format_duration
from dog_jax.experiments.sweep import Run, read_summary

_ANALYSIS_FILES = ("summary.json", "clusters.csv", "*.png", "during/summary.json")


def _machine() -> str:
    try:
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        load = "n/a"
    return (f"{platform.platform()}, Python {platform.python_version()}, {os.cpu_count()} CPU cores, "
            f"load average now {load}")


def _relative(command: str, train_script: str | os.PathLike, root: str | os.PathLike) -> str:
    """No machine paths: paths inside the repository relative to it (the commands are run from its
    root), and a workdir root outside it written ``$ROOT``."""
    repo, root = Path(train_script).resolve().parent, Path(root).resolve()
    if not root.is_relative_to(repo):
        command = command.replace(str(root), "$ROOT")
    return command.replace(str(repo) + "/", "")


def publish(runs: Sequence[Run], root: str | os.PathLike, target: str | os.PathLike, *, sweep_command: str,
            published_with: str, train_script: str | os.PathLike = "train.py") -> list[Path]:
    """Copies the collected results of ``root`` into ``target``; returns the files written."""
    root, target = Path(root), Path(target)
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for name in ("results.md", "results.csv", "analysis.md"):
        if (root / name).is_file():
            written.append(Path(shutil.copy2(root / name, target / name)))
    if (root / "curves").is_dir():
        shutil.copytree(root / "curves", target / "curves", dirs_exist_ok=True)
        written += sorted((target / "curves").glob("*.png"))
    for figure in sorted((root / "analysis").glob("*.png")):  # figures over all configs (the trajectory)
        (target / "analysis").mkdir(parents=True, exist_ok=True)
        written.append(Path(shutil.copy2(figure, target / "analysis" / figure.name)))
    for label_dir in sorted((root / "analysis").glob("*")) if (root / "analysis").is_dir() else []:
        for pattern in _ANALYSIS_FILES:
            for path in sorted(label_dir.glob(pattern)):
                destination = target / "analysis" / label_dir.name / path.relative_to(label_dir)
                destination.parent.mkdir(parents=True, exist_ok=True)
                written.append(Path(shutil.copy2(path, destination)))
    summaries = [read_summary(run.workdir) or {} for run in runs]
    total = sum(s.get("wall_time_s") or 0.0 for s in summaries)
    finished = sum(1 for s in summaries if s)
    outside = not Path(root).resolve().is_relative_to(Path(train_script).resolve().parent)
    lines = [
        "# How these results were made", "",
        f"Published {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on: {_machine()}.", "",
        f"{finished} of {len(runs)} runs have a summary; their trainer wall times add up to "
        f"{format_duration(total)} (without process start-up and the kernel analysis).", "",
        "Sweep command (rerun it to reproduce; finished runs are skipped):", "", "```bash",
        _relative(sweep_command, train_script, root), "```", "",
        f"Published with: `{_relative(published_with, train_script, root)}`", "",
        *(["`$ROOT` is the sweep's workdir root, which was outside the repository on the machine that ran "
           "it; any directory will do, e.g. `ROOT=workdirs/sweeps/<sweep name>`.", ""] if outside else []),
        "Each run (what the sweep executed, paths relative to the repository):", "", "```bash",
        *(_relative(shlex.join(["python", *train_command(run, train_script)[1:]]), train_script, root)
          for run in runs),
        "```", ""]
    (target / "commands.md").write_text("\n".join(lines))
    written.append(target / "commands.md")
    print(f"Published {len(written)} files to {target}", file=sys.stdout, flush=True)
    return written
