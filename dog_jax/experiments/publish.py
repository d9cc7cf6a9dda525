"""Copies a sweep's results (not its checkpoints) into a directory meant for the repository.

``python -m dog_jax.experiments SWEEP --collect --publish docs/results/<name>`` copies
``results.{md,csv}``, ``analysis.md`` and, of this sweep's configs only (a workdir root shared with
another sweep holds that sweep's outputs too), ``curves/<label>.png`` and the kernel-analysis outputs
(``analysis/<label>/{summary.json,clusters.csv,*.png}``; ``during/summary.json`` and ``analysis/*.png``
when the sweep analyses kernels during training). The target's previous ``curves/`` and ``analysis/``
are replaced, not merged. It writes ``commands.md``: the code that made the runs and published them,
the sweep command, every run's exact ``train.py`` command, the machine, and the runs' summed wall time.

The workdir root may be a ``gs://`` URL (read through :mod:`dog_jax.storage`, as is the target).

Published results must name the code that made them, so :func:`unpublishable` refuses a working tree
with uncommitted changes and runs made by uncommitted code (``--allow-dirty`` overrides).
"""

import os
import platform
import shlex
import sys
import time
from pathlib import Path  # local: the repository checkout (train.py)
from typing import Any, Sequence

from etils import epath

from dog_jax import provenance
from dog_jax._paths import relative_to, resolved
from dog_jax.storage import run_path
from dog_jax.experiments.runner import train_command
from dog_jax.train.reporting import format_duration
from dog_jax.experiments.sweep import Run, read_summary, run_cpu_time

_ANALYSIS_FILES = ("summary.json", "clusters.csv", "*.png")
_DURING_FILES = ("during/summary.json",)


def unpublishable(rows: Sequence[dict[str, Any]]) -> str | None:
    """Why these results (results.csv rows) may not be published as they are, or None.

    Refused: a working tree whose files differ from its commit (or a dog_jax that is no git checkout,
    whose state cannot be told), and runs whose record says uncommitted code made them.
    """
    code = provenance.code_version()
    if "commit" not in code:
        return ("dog_jax is not imported from a git checkout here, so whether the published code is "
                "committed cannot be told")
    if code.get("dirty") is not False:
        return f"the working tree has uncommitted changes (`git status` in {provenance.git_checkout()})"
    dirty = sorted({f"{row['label']}/seed_{row['seed']}" for row in rows if "+dirty" in (row.get("commit") or "")})
    if dirty:
        return f"{len(dirty)} run(s) were made by uncommitted code (e.g. {dirty[0]}; results.csv, column commit)"
    return None


def _code_lines(rows: Sequence[dict[str, Any]], published_by: str) -> list[str]:
    """commands.md's account of the code: which commits and implementations made the runs, and which
    commit published them (``published_by``, taken before the target's files change)."""
    done = [row for row in rows if row.get("status") == "done"]
    commits = sorted({row["commit"] for row in done})
    impls: dict[str, list[str]] = {}
    for row in done:
        impls.setdefault(row["impl"], [])
        if row["label"] not in impls[row["impl"]]:
            impls[row["impl"]].append(row["label"])
    lines = [f"Runs made by: {', '.join(f'`{c}`' for c in commits) or '—'} (results.csv, column `commit`: the "
             "git commit of the dog_jax checkout, `+dirty` if it had uncommitted changes; each run's "
             f"config.json / summary.json hold the full record). Published by: `{published_by}`.", "",
             "Implementations (native kernels; what `impl=\"auto\"` chose per op class, calls per forward pass) "
             "and the configs that ran them:", ""]
    lines += [f"- {impl}: {', '.join(f'`{label}`' for label in labels)}" for impl, labels in impls.items()]
    return lines + [""]


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
    repo, root = _repository(train_script), resolved(root)
    if not _inside(root, repo):
        command = command.replace(root, "$ROOT")
    return command.replace(repo + "/", "")


def _repository(train_script: str | os.PathLike) -> str:
    return str(Path(train_script).resolve().parent)  # local: the repository checkout


def _inside(path: str, directory: str) -> bool:
    """Whether ``path`` is ``directory`` or lies below it (a URL never lies in a local directory)."""
    return relative_to(path, directory) != path or path == directory


def _copy(source: epath.Path, destination: epath.Path) -> epath.Path:
    """Copies a file's bytes (either side local or a ``gs://`` URL)."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    destination.write_bytes(source.read_bytes())
    return destination


def publish(runs: Sequence[Run], root: str | os.PathLike, target: str | os.PathLike, *, sweep_command: str,
            published_with: str, train_script: str | os.PathLike = "train.py", during: bool = False,
            rows: Sequence[dict[str, Any]] = ()) -> list[epath.Path]:
    """Copies the collected results of ``root`` into ``target``; returns the files written.

    ``during``: the sweep analysed kernels during training (copy those outputs too); ``rows``: the
    collected results.csv rows, whose code commands.md names.
    """
    root, target = run_path(root), run_path(target)
    published_by = provenance.code_label({"code": provenance.code_version()})  # before the copies dirty the tree
    target.mkdir(parents=True, exist_ok=True)
    labels = list(dict.fromkeys(run.label for run in runs))
    for generated in ("curves", "analysis"):  # a previous publication's files would outlive their sweep
        (target / generated).rmtree(missing_ok=True)
    written = []
    for name in ("results.md", "results.csv", "analysis.md"):
        if (root / name).is_file():
            written.append(_copy(root / name, target / name))
    for name in [*labels, "all_configs"]:
        if (root / "curves" / f"{name}.png").is_file():
            written.append(_copy(root / "curves" / f"{name}.png", target / "curves" / f"{name}.png"))
    if during:
        for figure in sorted((root / "analysis").glob("*.png")):  # figures over all configs (the trajectory)
            written.append(_copy(figure, target / "analysis" / figure.name))
    for label in labels:
        label_dir = root / "analysis" / label
        for pattern in _ANALYSIS_FILES + (_DURING_FILES if during else ()):
            for path in sorted(label_dir.glob(pattern)):
                written.append(_copy(path, target / "analysis" / label / path.relative_to(label_dir)))
    summaries = [read_summary(run.workdir) or {} for run in runs]
    total = sum(s.get("wall_time_s") or 0.0 for s in summaries)
    cpu = sum(run_cpu_time(s) or 0.0 for s in summaries)
    finished = sum(1 for s in summaries if s)
    outside = not _inside(resolved(root), _repository(train_script))
    lines = [
        "# How these results were made", "",
        f"Published {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on: {_machine()}.", "",
        *_code_lines(rows, published_by),
        f"{finished} of {len(runs)} runs have a summary; their trainer wall times add up to "
        f"{format_duration(total)} (without process start-up and the kernel analysis)"
        + (f"; their processes used {format_duration(cpu)} of CPU time (start-up and compiles included; "
           "a resumed run's earlier starts count up to the checkpoint it resumed from, or not at all if "
           "its summary.json has no cpu_time_total_s)."
           if cpu else "."), "",
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
