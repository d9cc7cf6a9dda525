"""Collects a sweep's ``summary.json`` files into ``results.csv`` and ``results.md``.

``results.csv`` has one row per run (missing runs included, with their status);
``results.md`` one row per config: mean ± sample std over the finished seeds of the final and
best eval top-1, plus the paper's ImageNet number of the row when the config file knows it
(``experiment_info(arg)`` in ``configs/paper.py``); with the sweep's ``comparisons``, also the
paired differences by seed (the same seed gives both runs the same data order and, for configs
that differ only in the depthwise init, the same other weights), and with ``gap_comparisons`` the
change of such a gap between two pairs (Welch's t).

Every row names the code that made the run (``commit``, ``impl``: ``dog_jax.provenance``); a
comparison of runs made by different commits, or with other native kernels or "auto" choices, gets a
one-line warning under its table: the difference may then be the code's.
"""

import csv
import importlib.util
import io
import json
import math
import os
from pathlib import Path  # local: config files and the repository checkout
from typing import Any, Callable, Sequence

from dog_jax import provenance
from dog_jax._paths import relative_to
from dog_jax.experiments.sweep import Run, Sweep, find_repo_root, read_summary, run_cpu_time, run_status
from dog_jax.storage import run_path, write_text

CSV_FIELDS = ("label", "seed", "status", "config", "overrides", "experiment", "group", "dw_init", "scale",
              "final_top1", "final_top5", "final_loss", "best_top1", "best_step", "final_step", "total_steps",
              "wall_time_s", "cpu_time_s", "num_params", "paper_row_top1", "workdir", "commit", "impl")


def config_info(config_path: str, config_arg: str) -> dict[str, Any]:
    """``experiment_info(arg)`` of the config file if it defines one (``configs/paper.py`` does), else {}."""
    spec = importlib.util.spec_from_file_location(f"dog_jax_config_{Path(config_path).stem}",  # local: config
                                                  config_path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception:  # noqa: BLE001 - metadata only; a broken config shows up when training.
        return {}
    info = getattr(module, "experiment_info", None)
    try:
        return dict(info(config_arg)) if callable(info) else {}
    except ValueError:
        return {}


def _run_provenance(workdir: str, summary: dict[str, Any]) -> tuple[str, str]:
    """(commit, impl) labels of a run: from its summary.json, else (unfinished) its config.json. A run
    resumed by other code lists every start's label, latest first, joined by " < "."""
    record = summary if "provenance" in summary else {}
    if not record:
        try:
            record = json.loads((run_path(workdir) / "config.json").read_text())
        except (OSError, ValueError):
            record = {}
    starts = [record.get("provenance"), *record.get("provenance_earlier", [])]
    commits = dict.fromkeys(provenance.code_label(start) for start in starts)
    impls = dict.fromkeys(provenance.impl_label(start) for start in starts)
    return " < ".join(commits), " < ".join(impls)


def run_row(run: Run, info: dict[str, Any], out_dir: str | os.PathLike = ".") -> dict[str, Any]:
    """One ``results.csv`` row. Paths are relative: the run's workdir to ``out_dir`` (where
    results.csv goes, the sweep's workdir root), the config file to the repository holding it."""
    summary = read_summary(run.workdir) or {}
    commit, impl = _run_provenance(run.workdir, summary)
    final, best = summary.get("final_eval") or {}, summary.get("best_eval") or {}
    overrides = {k: v for k, v in run.overrides.items() if k != "seed"}
    return {
        "label": run.label, "seed": run.seed, "status": run_status(run.workdir),
        "config": _config_relative(run),
        "overrides": json.dumps(overrides, sort_keys=True, default=str) if overrides else "",
        "experiment": info.get("experiment", ""), "group": info.get("group", ""),
        "dw_init": info.get("dw_init", summary.get("config", {}).get("dw_init", "")),
        "scale": info.get("scale", ""),
        "final_top1": final.get("eval_top1"), "final_top5": final.get("eval_top5"),
        "final_loss": final.get("eval_loss"),
        "best_top1": best.get("eval_top1"), "best_step": best.get("step"),
        "final_step": summary.get("final_step"), "total_steps": summary.get("total_steps"),
        "wall_time_s": summary.get("wall_time_s"), "cpu_time_s": run_cpu_time(summary),
        "num_params": summary.get("num_params"),
        "paper_row_top1": info.get("paper_row_top1"), "workdir": relative_to(run.workdir, out_dir),
        "commit": commit, "impl": impl,
    }


def _config_relative(run: Run) -> str:
    root = find_repo_root(Path(run.config_path).resolve().parent)  # local: config file in the checkout
    path = relative_to(run.config_path, root) if root is not None else run.config_path
    return f"{path}:{run.config_arg}" if run.config_arg else path


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof = 1; nan for a single value)."""
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, float("nan")
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def _pct(mean: float, std: float) -> str:
    return f"{100 * mean:.2f}" if math.isnan(std) else f"{100 * mean:.2f} ± {100 * std:.2f}"


def csv_text(rows: Sequence[dict[str, Any]]) -> str:
    """results.csv's content: a header of :data:`CSV_FIELDS`, a line per row (None as empty)."""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=CSV_FIELDS)
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in CSV_FIELDS})
    return text.getvalue()


def write_csv(rows: Sequence[dict[str, Any]], path: str | os.PathLike) -> None:
    """Writes :func:`csv_text` to ``path`` (a local file or a ``gs://`` URL)."""
    write_text(path, csv_text(rows))


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """Per-config table: mean ± std over finished seeds (top-1 in %)."""
    lines = ["| config | init | seeds | final top-1 (%) | best top-1 (%) | per seed (final) | "
             "min / run | paper row, ImageNet (%) | commit |",
             "|---|---|---|---|---|---|---|---|---|"]
    labels = list(dict.fromkeys(row["label"] for row in rows))
    for label in labels:
        mine = [r for r in rows if r["label"] == label]
        done = [r for r in mine if r["status"] == "done" and r["final_top1"] is not None]
        init = mine[0]["dw_init"] or "?"
        if mine[0]["dw_init"] == "dog" and mine[0]["experiment"]:
            init = f"dog ({mine[0]['experiment']})"
        seeds = f"{len(done)}/{len(mine)}"
        if done:
            final = _pct(*mean_std([r["final_top1"] for r in done]))
            best = _pct(*mean_std([r["best_top1"] for r in done]))
            per_seed = ", ".join(f"{100 * r['final_top1']:.1f}" for r in done)
            minutes = f"{mean_std([r['wall_time_s'] or 0.0 for r in done])[0] / 60:.1f}"
        else:
            final = best = per_seed = minutes = "—"
        paper = mine[0]["paper_row_top1"]
        paper = f"{paper:.2f}" if isinstance(paper, (int, float)) else "—"
        commits = ", ".join(dict.fromkeys(r["commit"] for r in (done or mine))) or "—"
        lines.append(f"| `{label}` | {init} | {seeds} | {final} | {best} | {per_seed} | {minutes} | {paper} | "
                     f"{commits} |")
    return "\n".join(lines)


def provenance_warning(rows: Sequence[dict[str, Any]], name: str) -> str | None:
    """One line if ``rows`` (the runs behind one comparison) were not all made by one code version with
    the same implementations, else None."""
    commits = sorted({r["commit"] for r in rows})
    impls = sorted({r["impl"] for r in rows})
    if any(c == "unrecorded" for c in commits):
        unknown = sum(r["commit"] == "unrecorded" for r in rows)
        return (f"> ⚠ {name}: {unknown} of its {len(rows)} runs record no code version, so whether one code "
                "made them is unknown.")
    problems = []
    if len(commits) > 1 or any(" < " in c for c in commits):
        problems.append("different commits (" + ", ".join(commits) + ")")
    if any(c.endswith("+dirty") for c in commits):
        problems.append("uncommitted code")
    if len(impls) > 1 or any(" < " in i for i in impls):
        problems.append("different implementations (" + " | ".join(impls) + ")")
    if not problems:
        return None
    return f"> ⚠ {name} compares runs made by {' and '.join(problems)}: part of the difference may be the code's."


def _t_quantile_975(df: int) -> float:
    """The two-sided 95 % quantile of Student's t with ``df`` degrees of freedom (scipy comes with jax)."""
    from scipy import stats

    return float(stats.t.ppf(0.975, df))


def t_interval(values: Sequence[float]) -> tuple[float, float]:
    """(mean, half-width of its 95 % t interval) of a sample; the half-width is nan below two values."""
    mean, std = mean_std(values)
    if len(values) < 2:
        return mean, float("nan")
    return mean, _t_quantile_975(len(values) - 1) * std / math.sqrt(len(values))


def seeds_to_exclude_zero(mean: float, std: float, most: int = 1000) -> int | None:
    """The fewest seeds whose 95 % t interval would exclude 0 if the per-seed gaps kept this mean and
    sample std (a planning figure, not a promise); None if no count up to ``most`` would."""
    if not mean or math.isnan(std):
        return None
    for n in range(2, most + 1):
        if _t_quantile_975(n - 1) * std / math.sqrt(n) < abs(mean):
            return n
    return None


def _finished(rows: Sequence[dict[str, Any]]) -> dict[tuple[str, int], dict[str, Any]]:
    return {(r["label"], r["seed"]): r for r in rows if r["status"] == "done" and r["final_top1"] is not None}


def paired_gaps(rows: Sequence[dict[str, Any]], label: str, baseline: str
                ) -> tuple[list[float], list[dict[str, Any]]]:
    """(per-seed final top-1 of label minus baseline in points, the runs used) over the seeds both finished."""
    final = _finished(rows)
    seeds = sorted({seed for lab, seed in final if lab == label} & {seed for lab, seed in final if lab == baseline})
    diffs = [100 * (final[(label, seed)]["final_top1"] - final[(baseline, seed)]["final_top1"]) for seed in seeds]
    return diffs, [final[(lab, seed)] for seed in seeds for lab in (label, baseline)]


def paired_table(rows: Sequence[dict[str, Any]], comparisons: Sequence[tuple[str, str]]) -> str:
    """Per ``(label, baseline)``: final top-1 of label minus baseline for each seed both finished,
    their mean ± sample std, the 95 % t interval of the mean, and how many seeds favour the label;
    below the table one warning line per comparison of runs made by different code."""
    lines = ["| config | minus | seeds | per seed (points) | mean ± std (points) | 95 % interval | "
             "seeds ahead | seeds to exclude 0 |", "|---|---|---|---|---|---|---|---|"]
    warnings = []
    for label, baseline in comparisons:
        diffs, used = paired_gaps(rows, label, baseline)
        warning = provenance_warning(used, f"`{label}` − `{baseline}`") if used else None
        if warning:
            warnings.append(warning)
        if not diffs:
            lines.append(f"| `{label}` | `{baseline}` | 0 | — | — | — | — | — |")
            continue
        (mean, std), (_, half) = mean_std(diffs), t_interval(diffs)
        if len(diffs) > 1:
            interval = f"[{mean - half:+.2f}, {mean + half:+.2f}]"
            summary = f"{mean:+.2f} ± {std:.2f}"
        else:
            interval, summary = "—", f"{mean:+.2f}"
        needed = seeds_to_exclude_zero(mean, std)
        needed_text = "—" if len(diffs) < 2 else str(needed) if needed else "> 1000"
        per_seed = ", ".join(f"{d:+.1f}" for d in diffs)
        ahead = sum(d > 0 for d in diffs)
        lines.append(f"| `{label}` | `{baseline}` | {len(diffs)} | {per_seed} | {summary} | {interval} | "
                     f"{ahead} of {len(diffs)} | {needed_text} |")
    return "\n".join(lines + ([""] + warnings if warnings else []))


def welch_interval(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, float, float]:
    """(mean(a) − mean(b), lower, upper, degrees of freedom): Welch's 95 % t interval of the
    difference of two means with unequal variances (Welch-Satterthwaite degrees of freedom)."""
    (mean_a, std_a), (mean_b, std_b) = mean_std(a), mean_std(b)
    va, vb = std_a ** 2 / len(a), std_b ** 2 / len(b)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    half = _t_quantile_975(df) * math.sqrt(va + vb)
    diff = mean_a - mean_b
    return diff, diff - half, diff + half, df


def gap_table(rows: Sequence[dict[str, Any]],
              gap_comparisons: Sequence[tuple[tuple[str, str], tuple[str, str]]]) -> str:
    """Per ``((a, b), (c, d))``: the mean per-seed gap a − b, the mean gap c − d, their difference and its
    Welch 95 % interval (the two gaps' seeds are independent samples); provenance warnings below."""
    lines = ["| gap | against gap | gap (points) | against (points) | change (points) | 95 % Welch interval | "
             "df |", "|---|---|---|---|---|---|---|"]
    warnings = []
    for (a, b), (c, d) in gap_comparisons:
        gaps, used = paired_gaps(rows, a, b)
        others, others_used = paired_gaps(rows, c, d)
        name = f"(`{a}` − `{b}`) − (`{c}` − `{d}`)"
        runs = list({(r["label"], r["seed"]): r for r in used + others_used}.values())  # pairs may share runs
        warning = provenance_warning(runs, name) if runs else None
        if warning:
            warnings.append(warning)
        if len(gaps) < 2 or len(others) < 2:
            lines.append(f"| `{a}` − `{b}` | `{c}` − `{d}` | — | — | — | — (needs 2 seeds each) | — |")
            continue
        diff, low, high, df = welch_interval(gaps, others)
        lines.append(f"| `{a}` − `{b}` | `{c}` − `{d}` | {_mean_pm(gaps)} | {_mean_pm(others)} | {diff:+.2f} | "
                     f"[{low:+.2f}, {high:+.2f}] | {df:.1f} |")
    return "\n".join(lines + ([""] + warnings if warnings else []))


def _mean_pm(values: Sequence[float]) -> str:
    mean, std = mean_std(values)
    return f"{mean:+.2f} ± {std:.2f}"


def collect(runs: Sequence[Run], sweep: Sweep, out_dir: str | os.PathLike, *, title: str,
            curves: bool = True, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Writes results.csv, results.md and (if ``curves``) learning-curve PNGs into ``out_dir`` (a
    directory or a ``gs://`` URL)."""
    out_dir = run_path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    infos: dict[str, dict[str, Any]] = {}
    rows = []
    for run in runs:
        key = run.config_string
        if key not in infos:
            infos[key] = config_info(run.config_path, run.config_arg)
        rows.append(run_row(run, infos[key], out_dir))
    write_csv(rows, out_dir / "results.csv")
    done = sum(r["status"] == "done" for r in rows)
    text = [f"# {title}", ""]
    if sweep.description:
        text += [sweep.description.strip(), ""]
    text += [f"{done} of {len(rows)} runs finished. Top-1 on the eval split at the end of training "
             "(final) and the best over the evaluations (best): mean ± sample std over seeds.", "",
             markdown_table(rows), ""]
    if sweep.comparisons:
        text += ["## Paired by seed", "",
                 "Final top-1 of a config minus its baseline's, seed by seed (same seed: same data order "
                 "and, where the configs differ only in the depthwise init, the same other initial weights). "
                 "The interval is the mean's 95 % Student-t interval over seeds; an interval containing 0 "
                 "means the difference is within the seed-to-seed noise of this sweep.", "",
                 paired_table(rows, sweep.comparisons), ""]
    if sweep.gap_comparisons:
        text += ["## Change of a paired gap", "",
                 "How much a seed-by-seed gap changes between two pairs of configs (e.g. the same comparison "
                 "on two datasets): the difference of the two mean gaps, with Welch's 95 % t interval over "
                 "the two sets of per-seed gaps (unequal variances; Welch-Satterthwaite degrees of freedom). "
                 "An interval containing 0 means the change is within the seed-to-seed noise.", "",
                 gap_table(rows, sweep.gap_comparisons), ""]
    written = [out_dir / "results.csv", out_dir / "results.md"]
    if curves and done:
        from dog_jax.experiments.curves import write_curve_figures  # matplotlib + TF: only when needed.

        figures = write_curve_figures(runs, out_dir / "curves")
        written += figures
        text += ["## Learning curves", ""] + [f"![{f.stem}](curves/{f.name})" for f in figures] + [""]
    (out_dir / "results.md").write_text("\n".join(text))
    say(f"Collected {done}/{len(rows)} finished runs into {out_dir}/results.csv and results.md"
        + (f" (+{len(written) - 2} figures)" if len(written) > 2 else ""))
    return {"rows": rows, "written": written}
