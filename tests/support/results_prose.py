"""Checks the numbers that documentation quotes from a study's data against that data.

A check is an HTML comment (invisible in the rendered page) placed after the text it checks::

    DoG is ahead by +6.8 points [+4.9, +8.8] on 3 of 3 seeds.
    <!-- check
    +6.8 = mean(gap("convmixer_dog_no_dog", "convmixer_reference_no_dog"))
    [+4.9, +8.8] = ci(gap("convmixer_dog_no_dog", "convmixer_reference_no_dog"))
    3 of 3 = ahead(gap("convmixer_dog_no_dog", "convmixer_reference_no_dog"))
    not data: 0.5 +2.3   # the init's γ range; the paper's number
    -->

Each ``TEXT = EXPRESSION`` line: TEXT must occur in the checked text, after the previous claim's TEXT
(claims follow the text's order, so a number cannot be checked against the wrong row of a table);
the expression, evaluated on the study's data (:class:`Study`), must give one number per number in
TEXT, each equal to it when formatted as it is written (its decimals, an explicit sign, thousands
commas; "−" and "-" alike). ``not data:`` lists numbers of the text that do not come from the data
(settings, the paper's values, sizes), with the reason after ``#``.

The checked text of a study README is everything since the previous check comment, and every
data-like number in it (one with a decimal point, a sign, thousands commas, or followed by "%" or
"±") must be claimed or listed as not data; numbers after the last check comment are not allowed.
Other documents (the top-level README, docs/*.md) check the paragraph, table or list item just above
each comment the same way and leave the rest alone.

Data: ``results.csv`` (one row per run; top-1 in points), ``analysis/<label>/summary.json`` and
``analysis/<label>/during/summary.json`` (the kernel shares of analysis.md, in %), any other CSV of the
study folder (``csv(name)``), and every other study by its folder name (``fashion_mnist.gap(...)``).
The TPU pod plan's reports are ``tpu(case, "key")`` (``docs/results/tpu_plan/<case>.json``; dotted keys
reach into ``train_step`` / ``eval_step``; ``tpu_cases(prefix)`` lists the cases), with the units
``gib``, ``giga``, ``ms``, ``minutes`` and ``hours`` for bytes and seconds.
"""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path
from typing import Any, Sequence

from scipy import stats

from dog_jax.experiments.collect import seeds_to_exclude_zero, welch_interval
from dog_jax.experiments.kernel_report import checkpoint_shares

RESULTS = Path(__file__).resolve().parents[2] / "docs" / "results"
STUDIES = ("demo_repro", "demo_bias", "demo_basis", "fashion_mnist", "fashion_mnist_long", "fashion_mnist_basis",
           "basis_fit")

_CHECK = re.compile(r"<!--\s*check\b(.*?)-->", re.S)
_NUMBER = re.compile(r"(?<![\w.,/:^-])[+−-]?\d+(?:,\d{3})*(?:\.\d+)?(?![\w])")
_HIDDEN = re.compile(r"```.*?```|`[^`\n]*`|<!--.*?-->|\]\([^)]*\)", re.S)  # code, comments, link targets


# ---------------------------------------------------------------------------------------------- data


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def std(values: Sequence[float]) -> float:
    m = mean(values)
    return math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    return mean(values), std(values)


def ci(values: Sequence[float]) -> tuple[float, float]:
    """The 95 % Student-t interval of the mean (as results.md's paired table)."""
    half = float(stats.t.ppf(0.975, len(values) - 1)) * std(values) / math.sqrt(len(values))
    return mean(values) - half, mean(values) + half


def welch(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, float]:
    """(mean(a) − mean(b), lower, upper): Welch's 95 % interval (as results.md's gap table)."""
    return welch_interval(a, b)[:3]


def ahead(values: Sequence[float]) -> tuple[int, int]:
    """(how many are > 0, how many): "3 of 3 seeds ahead"."""
    return sum(v > 0 for v in values), len(values)


def seeds_needed(values: Sequence[float]) -> int | None:
    """The fewest seeds whose 95 % interval would exclude 0 at this mean and std (results.md's
    "seeds to exclude 0")."""
    return seeds_to_exclude_zero(mean(values), std(values))


def pct(value: float) -> float:
    return 100 * value


def tpu(case: str, key: str) -> Any:
    """``key`` of the pod plan's report ``case`` (a file name in docs/results/tpu_plan without .json);
    "train_step.temp_bytes" reaches into a nested record."""
    value = json.loads((RESULTS / "tpu_plan" / f"{case}.json").read_text())
    for part in key.split("."):
        value = value[part]
    return value


def tpu_cases(prefix: str = "") -> list[str]:
    """The pod plan's case names (reports in docs/results/tpu_plan) that start with ``prefix``."""
    return sorted(path.stem for path in (RESULTS / "tpu_plan").glob(f"{prefix}*.json"))


UNITS = {"gib": lambda num_bytes: num_bytes / 2**30, "giga": lambda value: value / 1e9,
         "ms": lambda seconds: 1e3 * seconds, "minutes": lambda seconds: seconds / 60,
         "hours": lambda seconds: seconds / 3600}


class Study:
    """The data of one ``docs/results/<name>`` folder, as the functions check expressions call."""

    def __init__(self, name: str, path: Path | None = None, results: str = "results.csv"):
        self.name, self.path, self.results = name, path or RESULTS / name, results
        self._rows = None

    @property
    def rows(self) -> list[dict[str, str]]:
        if self._rows is None:
            self._rows = self.csv(self.results) if (self.path / self.results).is_file() else []
        return self._rows

    def of(self, results: str) -> Study:
        """The same functions over another per-run CSV of the folder (e.g. an earlier code version's runs)."""
        return Study(self.name, self.path, results)

    def csv(self, name: str) -> list[dict[str, str]]:
        with open(self.path / name, newline="") as f:
            return list(csv.DictReader(f))

    def _done(self, label: str) -> list[dict[str, str]]:
        rows = sorted((r for r in self.rows if r["label"] == label and r["status"] == "done"),
                      key=lambda r: int(r["seed"]))
        if not rows:
            raise KeyError(f"{self.name}/results.csv has no finished run labelled {label!r}")
        return rows

    def top1(self, label: str) -> list[float]:
        """Final eval top-1 per seed, in points."""
        return [100 * float(r["final_top1"]) for r in self._done(label)]

    def gap(self, label: str, baseline: str) -> list[float]:
        """Final top-1 of ``label`` minus ``baseline``, per seed both finished, in points."""
        mine = {r["seed"]: float(r["final_top1"]) for r in self._done(label)}
        base = {r["seed"]: float(r["final_top1"]) for r in self._done(baseline)}
        return [100 * (mine[s] - base[s]) for s in sorted(set(mine) & set(base), key=int)]

    def params(self, label: str) -> int:
        (count,) = {int(r["num_params"]) for r in self._done(label)}
        return count

    def _summed(self, column: str, labels: Sequence[str] | None) -> float:
        return sum(float(r[column]) for r in self.rows if r["status"] == "done"
                   and (labels is None or r["label"] in labels))

    def wall_minutes(self, labels: Sequence[str] | None = None) -> float:
        """Summed trainer wall time of the finished runs (of ``labels``), in minutes."""
        return self._summed("wall_time_s", labels) / 60

    def cpu_hours(self, labels: Sequence[str] | None = None) -> float:
        """Summed process CPU time (``cpu_time_s``) of the finished runs (of ``labels``), in hours."""
        return self._summed("cpu_time_s", labels) / 3600

    def commits(self) -> set[str]:
        """The ``commit`` column's values over all rows ("" where a row has none)."""
        return {r.get("commit") or "" for r in self.rows}

    def share(self, label: str, column: str, when: str | int = "trained") -> list[float]:
        """analysis.md's ``column`` (``dog_templates``, ``paper_inhibitory``, ``r2``, ...) per seed: shares in
        %, R² as is. ``when``: "init", "trained", "null" (trained, pixels shuffled) or a step during training."""
        during = isinstance(when, int)
        file = self.path / "analysis" / label / ("during/summary.json" if during else "summary.json")
        per_checkpoint = checkpoint_shares(json.loads(file.read_text()))
        picked = []
        for path, (shares, null) in sorted(per_checkpoint.items()):
            is_init = path.endswith("init_kernels.npz")
            if during and not path.endswith(f"/checkpoints/{when}"):
                continue
            if not during and is_init != (when == "init"):
                continue
            picked.append(null if when == "null" else shares)
        if not picked:
            raise KeyError(f"{file}: no {when} checkpoints")
        scale = 1 if column == "r2" else 100
        return [scale * values[column] for values in picked]

    def centre_surround(self, label: str, naming: str = "paper", when: str | int = "trained") -> list[float]:
        """Per seed, % of the kernels in excitatory- or inhibitory-centre clusters (``naming``: "paper" or
        "strict")."""
        prefix = "paper_" if naming == "paper" else ""
        return [a + b for a, b in zip(self.share(label, prefix + "excitatory", when),
                                      self.share(label, prefix + "inhibitory", when))]

    def fit(self, file: str, checkpoint: str, column: str) -> float:
        """``column`` of basis_fit's CSV ``file`` in the row of ``checkpoint`` (the label fit_basis.py prints)."""
        rows = [r for r in self.csv(file) if r["checkpoint"] == checkpoint]
        if len(rows) != 1:
            raise KeyError(f"{self.name}/{file}: {len(rows)} rows for {checkpoint!r}")
        return float(rows[0][column])

    def namespace(self) -> dict[str, Any]:
        names = {name: getattr(self, name) for name in ("top1", "gap", "params", "wall_minutes", "cpu_hours",
                                                         "share", "centre_surround", "fit", "csv", "of")}
        helpers = {"mean": mean, "std": std, "mean_std": mean_std, "ci": ci, "welch": welch, "ahead": ahead,
                   "seeds_needed": seeds_needed, "pct": pct, "min": min, "max": max, "abs": abs, "len": len,
                   "sum": sum, "sorted": sorted, "round": round, "zip": zip, "int": int, "float": float,
                   "tpu": tpu, "tpu_cases": tpu_cases, **UNITS}
        return {**helpers, **names, **{study: _STUDIES[study] for study in STUDIES}}


_STUDIES = {name: Study(name) for name in STUDIES}  # other studies' data: fashion_mnist.gap(...)


# ---------------------------------------------------------------------------------------------- text


def _visible(text: str) -> str:
    """``text`` with code, comments and link targets blanked out (same length: offsets stay valid)."""
    return _HIDDEN.sub(lambda m: " " * len(m.group()), text)


def _blank(text: str) -> str:
    return re.sub(r"[^\n]", " ", text)


def _data_like(text: str, match: re.Match) -> bool:
    token = match.group()
    after = text[match.end():match.end() + 3].lstrip(" ")
    if token == "95" and "interval" in text[match.end():match.end() + 16]:
        return False  # the confidence level of "95 % interval"
    return ("." in token or token[0] in "+−-" or "," in token or after.startswith(("%", "±")))


def _format_as(value: float, written: str) -> str:
    """``value`` formatted as ``written`` is: its decimals, sign and thousands commas."""
    decimals = len(written.split(".")[1]) if "." in written else 0
    sign = "+" if written[0] == "+" else ""
    comma = "," if "," in written else ""
    return format(value, f"{sign}{comma}.{decimals}f")


def _numbers(text: str) -> list[str]:
    return [m.group() for m in _NUMBER.finditer(text)]


def _flatten(value: Any) -> list[float]:
    if isinstance(value, (int, float)):
        return [value]
    return [x for item in value for x in _flatten(item)]


def parse_check(body: str) -> tuple[list[tuple[str, str]], set[str]]:
    """(claims as (TEXT, EXPRESSION), numbers listed as not data) of a check comment's body."""
    claims, not_data = [], set()
    for line in body.strip().splitlines():
        line = line.strip()
        if not line:
            continue
        if line.startswith("not data:"):
            not_data.update(_numbers(line[len("not data:"):].split("#")[0]))
        elif " = " in line:
            text, expression = line.split(" = ", 1)
            claims.append((text.strip(), expression.strip()))
        else:
            raise ValueError(f"check line {line!r} is neither 'TEXT = EXPRESSION' nor 'not data: ...'")
    return claims, not_data


def check_document(path: Path, study: Study | None, *, strict: bool,
                   region: tuple[str, str] | None = None) -> list[str]:
    """Every failed check of ``path`` as one line each (file:line: what); [] if all hold.

    ``study``: whose data bare names refer to (None: only ``<study>.<function>`` names); ``strict``:
    the whole document is checked text (a study README), else the paragraph above each comment;
    ``region``: (first words, words after the end) of the part of the document that is checked.
    """
    text = path.read_text()
    visible = _visible(text)
    if region:
        begin = text.index(region[0])
        end = text.index(region[1], begin)
        visible = _blank(visible[:begin]) + visible[begin:end] + _blank(visible[end:])
    namespace = (study or _STUDIES[STUDIES[0]]).namespace()
    if study is None:  # no bare study functions: only <study>.<function>
        namespace = {key: value for key, value in namespace.items() if not hasattr(Study, key)}
    problems, start = [], 0
    checks = list(_CHECK.finditer(text))
    for check in checks:
        line = text.count("\n", 0, check.start()) + 1
        where = f"{_shown(path)}:{line}"
        begin = start if strict else _paragraph_start(text, check.start())
        block = visible[begin:check.start()]
        start = check.end()
        try:
            claims, not_data = parse_check(check.group(1))
        except ValueError as error:
            problems.append(f"{where}: {error}")
            continue
        cursor, covered = 0, []
        for written, expression in claims:
            found = _find(block, written, cursor)
            if found < 0:
                problems.append(f"{where}: {written!r} not found in the text above (after the previous claim)")
                continue
            cursor = found + len(written)
            covered.append((found, cursor))
            try:
                values = _flatten(eval(expression, {"__builtins__": {}, **namespace}))  # noqa: S307 - our own docs
            except Exception as error:  # noqa: BLE001 - reported as a failed check
                problems.append(f"{where}: {expression}: {type(error).__name__}: {error}")
                continue
            numbers = _numbers(written)
            if len(values) != len(numbers):
                problems.append(f"{where}: {written!r} has {len(numbers)} numbers, {expression} gives {len(values)}")
                continue
            for number, value in zip(numbers, values):
                expected = _format_as(value, number.replace("−", "-"))
                if expected != number.replace("−", "-"):
                    problems.append(f"{where}: {number} should be {expected} ({expression})")
        for match in _NUMBER.finditer(block):
            inside = any(lo <= match.start() < hi for lo, hi in covered)
            if not inside and _data_like(block, match) and match.group() not in not_data:
                problems.append(f"{where}: {match.group()!r} in {_context(block, match)!r} is neither checked nor "
                                "listed as not data")
    if strict:
        tail = visible[start:]
        for match in _NUMBER.finditer(tail):
            if _data_like(tail, match):
                problems.append(f"{_shown(path)}: {match.group()!r} in "
                                f"{_context(tail, match)!r} comes after the last check comment")
    return problems


def _find(text: str, written: str, start: int) -> int:
    """Where ``written`` occurs in ``text`` from ``start`` as whole numbers ("+6.0" is not in "+6.05")."""
    match = re.compile(r"(?<![\d.,])" + re.escape(written) + r"(?![\d]|[.,]\d)").search(text, start)
    return match.start() if match else -1


def _shown(path: Path) -> str:
    return str(path.relative_to(RESULTS.parents[1])) if path.is_relative_to(RESULTS.parents[1]) else str(path)


def _paragraph_start(text: str, end: int) -> int:
    """Where the paragraph, table or list item that ends just before ``end`` begins."""
    lines = text[:end].rstrip().split("\n")
    start = len(lines) - 1
    while start > 0 and lines[start - 1].strip() and not re.match(r"\s*([*-]|\d+\.) ", lines[start]):
        start -= 1
    return sum(len(line) + 1 for line in lines[:start])


def _context(text: str, match: re.Match) -> str:
    return " ".join(text[max(0, match.start() - 30):match.end() + 15].split())
