"""Sweep files: what to run (configs × seeds), where each run lives, and how far it got.

A sweep is a small Python file that defines ``SWEEP``, a :class:`Sweep`::

    from dog_jax.experiments import Entry, Sweep

    SWEEP = Sweep(
        description="ConvMixer on the demo data: reference vs DoG init",
        entries=[Entry("configs/paper.py:table2_kaiming-reference,demo"),
                 Entry("configs/paper.py:table2_gamma0-0.5_onoff,demo", overrides={"num_epochs": 2.0})],
        seeds=(0, 1, 2),
    )

Each (entry, seed) is one :class:`Run` in ``<root>/<label>/seed_<seed>``, where the label is
the entry's ``name`` or is derived from its config string; the root (and so every workdir) may be a
``gs://`` URL, read and written through :mod:`dog_jax.storage`. Relative config paths are resolved
against the current directory first, then against the repository that holds the sweep file.

Hydra / Ray Tune were weighed and not taken: a list of configs × seeds needs no launcher framework.
"""

import dataclasses
import importlib.util
import json
import os
import re
from pathlib import Path  # local: sweep and config files, the repository checkout
from typing import Any, Mapping, Sequence

from dog_jax._paths import resolved
from dog_jax.storage import join, run_path


class SweepError(ValueError):
    """A sweep file or command-line choice is invalid; the message is one line saying how to fix it."""


@dataclasses.dataclass(frozen=True)
class Entry:
    """One configuration of a sweep.

    Attributes:
      config: ``path/to/config.py[:arguments]``, as given to ``train.py --config``.
      overrides: config fields to override, ``{"num_epochs": 2.0, "optimizer.learning_rate": 1e-3}``
        (passed as ``--config.<field>=<value>``; they win over the sweep's ``overrides``).
      name: label of the runs' directory and of the results row; default derived from ``config``.
    """

    config: str
    overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    name: str | None = None

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        path, _, arg = self.config.partition(":")
        stem = Path(path).stem  # local: a config file's name
        return _safe(f"{stem}.{arg}" if arg else stem)


@dataclasses.dataclass(frozen=True)
class Sweep:
    """A list of configs × seeds. ``overrides`` apply to every entry; ``analysis`` turns on the
    kernel analysis of the trained checkpoints after collecting (``--analysis`` also does);
    ``analysis_during`` extends it to every kept checkpoint (the kernels over training);
    ``comparisons`` are ``(label, baseline label)`` pairs that results.md compares seed by seed;
    ``gap_comparisons`` are pairs of such pairs, ``((a, b), (c, d))``: how much the seed-by-seed gap
    a − b differs from the gap c − d (Welch's t over the two sets of per-seed gaps, which need not
    share their seeds' data order, e.g. the same comparison on two datasets)."""

    entries: Sequence[Entry]
    seeds: Sequence[int] = (0,)
    description: str = ""
    overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    analysis: bool = False
    analysis_during: bool = False
    comparisons: Sequence[tuple[str, str]] = ()
    gap_comparisons: Sequence[tuple[tuple[str, str], tuple[str, str]]] = ()


@dataclasses.dataclass(frozen=True)
class Run:
    """One training run: an entry at one seed, in its own workdir."""

    index: int                 # position in the full sweep (stable under --only / --shard)
    entry: Entry
    seed: int
    config_path: str           # absolute path of the config file
    config_arg: str            # the part after ":" ("" if none)
    overrides: Mapping[str, Any]
    workdir: str

    @property
    def label(self) -> str:
        return self.entry.label

    @property
    def key(self) -> str:
        """``<label>/seed_<seed>``: what ``--only`` matches and what progress lines show."""
        return f"{self.label}/seed_{self.seed}"

    @property
    def config_string(self) -> str:
        return f"{self.config_path}:{self.config_arg}" if self.config_arg else self.config_path

    def flags(self) -> list[str]:
        """The ``train.py`` flags of this run (the seed is always passed)."""
        flags = [f"--config={self.config_string}", f"--workdir={self.workdir}"]
        flags += [f"--config.{key}={format_flag_value(value)}" for key, value in self.overrides.items()]
        return flags


def _safe(text: str) -> str:
    """A directory-name-safe version of a label: ',' -> '.', '=' -> '-', other odd characters -> '_'."""
    text = text.replace(",", ".").replace("=", "-")
    return re.sub(r"[^A-Za-z0-9._+-]", "_", text)


def format_flag_value(value: Any) -> str:
    """Formats an override for ``--config.<field>=...`` (ml_collections parses tuples from '(a, b)')."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (tuple, list)):
        return "(" + ", ".join(format_flag_value(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    return str(value)


def find_repo_root(start: Path) -> Path | None:  # local: the repository checkout
    """The nearest directory at or above ``start`` that holds ``train.py``."""
    for directory in [start, *start.parents]:
        if (directory / "train.py").is_file():
            return directory
    return None


def load_sweep(path: str | os.PathLike) -> Sweep:
    """Imports a sweep file and returns its ``SWEEP``; :class:`SweepError` if it is missing or wrong."""
    path = Path(path)  # local: a sweep file of the checkout
    if not path.is_file():
        raise SweepError(f"Sweep file {str(path)!r} does not exist; sweeps live in configs/sweeps/*.py.")
    spec = importlib.util.spec_from_file_location(f"dog_jax_sweep_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sweep = getattr(module, "SWEEP", None)
    if not isinstance(sweep, Sweep):
        raise SweepError(f"{path} must define SWEEP = dog_jax.experiments.Sweep(entries=[...], seeds=(...)).")
    if not sweep.entries or not sweep.seeds:
        raise SweepError(f"{path}: SWEEP needs at least one entry and one seed.")
    labels = [entry.label for entry in sweep.entries]
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise SweepError(f"{path}: entries share the label {duplicates[0]!r}; give them distinct name=... values.")
    if len(set(sweep.seeds)) != len(sweep.seeds):
        raise SweepError(f"{path}: seeds {tuple(sweep.seeds)} contain duplicates.")
    named = {label for pair in sweep.comparisons for label in pair}
    named |= {label for pairs in sweep.gap_comparisons for pair in pairs for label in pair}
    unknown = sorted(named - set(labels))
    if unknown:
        raise SweepError(f"{path}: comparisons name {unknown[0]!r}, which is no entry's label "
                         f"(labels: {', '.join(labels)}).")
    return sweep


def _resolve_config(config: str, sweep_path: Path) -> tuple[str, str]:  # local: config files
    path, _, arg = config.partition(":")
    candidates = [Path(path)] if Path(path).is_absolute() else [Path.cwd() / path]  # local: a config file
    root = find_repo_root(sweep_path.resolve().parent)
    if root is not None and not Path(path).is_absolute():  # local: a config file
        candidates.append(root / path)
    for candidate in candidates:
        if candidate.is_file():
            return str(candidate.resolve()), arg
    raise SweepError(f"Config file {path!r} of sweep {sweep_path} not found (looked in "
                     f"{', '.join(str(c.parent) for c in candidates)}).")


def plan_runs(sweep: Sweep, sweep_path: str | os.PathLike, root: str | os.PathLike) -> list[Run]:
    """All runs of ``sweep`` in order: entries in file order, seeds within each entry."""
    sweep_path, root = Path(sweep_path), resolved(root)  # local: the sweep file (root may be a URL)
    runs = []
    for entry in sweep.entries:
        config_path, config_arg = _resolve_config(entry.config, sweep_path)
        for seed in sweep.seeds:
            overrides = {**sweep.overrides, **entry.overrides, "seed": int(seed)}
            workdir = join(root, entry.label, f"seed_{seed}")
            runs.append(Run(len(runs), entry, int(seed), config_path, config_arg, overrides, workdir))
    return runs


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` -> (i, n) with 0 <= i < n."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
    if not match or not 0 <= int(match[1]) < int(match[2]):
        raise SweepError(f"--shard {text!r} must be i/n with 0 <= i < n, e.g. --shard 0/4 ... --shard 3/4.")
    return int(match[1]), int(match[2])


def select_runs(runs: Sequence[Run], *, only: str | None = None, shard: tuple[int, int] | None = None) -> list[Run]:
    """Filters by ``--only`` (regex searched in ``<label>/seed_<seed>``), then keeps shard i of n.

    Sharding is round-robin over the run index in the full sweep, so every machine gets a mix of
    configs and the split does not depend on which runs are already finished.
    """
    selected = list(runs)
    if only:
        try:
            pattern = re.compile(only)
        except re.error as error:
            raise SweepError(f"--only {only!r} is not a valid regular expression ({error}).") from None
        selected = [run for run in selected if pattern.search(run.key)]
    if shard is not None:
        index, count = shard
        selected = [run for run in selected if run.index % count == index]
    return selected


def read_summary(workdir: str | os.PathLike) -> dict[str, Any] | None:
    """The run's ``summary.json``, or None if it has none (or an unreadable one)."""
    path = run_path(workdir) / "summary.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def run_cpu_time(summary: dict[str, Any]) -> float | None:
    """The run's CPU seconds over all its starts where recorded, else its last start's."""
    total = summary.get("cpu_time_total_s")
    return total if total is not None else summary.get("cpu_time_s")


def run_status(workdir: str | os.PathLike) -> str:
    """"done" (finished summary), "partial" (checkpoints to resume from) or "pending"."""
    summary = read_summary(workdir)
    if summary is not None and not summary.get("interrupted") and \
            summary.get("final_step", 0) >= summary.get("total_steps", float("inf")):
        return "done"
    checkpoints = run_path(workdir) / "checkpoints"
    if checkpoints.is_dir() and any(p.name.isdigit() for p in checkpoints.iterdir()):
        return "partial"
    return "pending"
