"""The kernel analysis of a sweep: are the depthwise kernels centre–surround before and after training?

For every config with finished runs this writes, into ``<out>/analysis/<label>/``, the output of
``python -m dog_jax.analysis`` (docs/analysis.md) on

* each seed's trained checkpoint (the run's workdir: its latest, i.e. final, checkpoint), and
* each seed's *initial* depthwise kernels (``<workdir>/init_kernels.npz``, rebuilt from the run's
  ``config.json``: same model, init and seed as the trainer's step 0),

and then one table, ``<out>/analysis.md``, with the cluster and template-classifier shares at
init and after training (mean ± std over seeds): do DoG-initialised kernels stay centre–surround,
do Kaiming-initialised ones become centre–surround? Each trained row is followed by the same shares
of its pixel-shuffled null (the trained kernels with their pixels permuted: what the numbers are
without spatial structure).

With ``during=True`` every kept checkpoint between init and the end is analysed too (into
``analysis/<label>/during/``, summary only) and the table gets a row per step, with
``analysis/trajectory.png`` plotting the centre–surround shares over training against the null.
Workdirs and the output directory may be ``gs://`` URLs (:mod:`dog_jax.storage`).
"""

import io
import json
import math
import os
from typing import Any, Callable, Sequence

import numpy as np
from etils import epath

from dog_jax.experiments.collect import mean_std, t_interval
from dog_jax.experiments.sweep import Run, read_summary, run_status
from dog_jax.storage import join, run_path

INIT_FILE = "init_kernels.npz"


def export_init_kernels(run: Run) -> epath.Path:
    """Writes the run's step-0 depthwise kernels (HWIO, keys ``<module path>/kernel``) to its workdir."""
    import jax
    import ml_collections

    from dog_jax import models
    from dog_jax.train.run_provenance import split_config_json
    from dog_jax.train.run_spec import model_spec

    path = run_path(run.workdir) / INIT_FILE
    if path.is_file():
        return path
    fields, _ = split_config_json(json.loads((run_path(run.workdir) / "config.json").read_text()))
    config = ml_collections.ConfigDict(fields)
    num_classes = (read_summary(run.workdir) or {}).get("num_classes", 1000)
    # The trainer's own model constructor, built eagerly on the CPU (the trainer runs it under jit).
    with jax.default_device(jax.devices("cpu")[0]):
        model = model_spec(config).create(num_classes)
        arrays = {"/".join(str(p) for p in module_path) + "/kernel": np.asarray(layer.kernel[...])
                  for module_path, layer in models.iter_depthwise_convs(model)}
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    path.write_bytes(buffer.getvalue())
    return path


def kept_steps(workdir: str | os.PathLike) -> list[int]:
    """The steps of the checkpoints kept in a trainer workdir (``checkpoints/<step>``), ascending."""
    directory = run_path(workdir) / "checkpoints"
    return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit()) if directory.is_dir() else []


def _group(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{checkpoint name: its largest depthwise group} from an analysis summary.json."""
    out = {}
    for checkpoint in summary.get("checkpoints", []):
        groups = [g for g in checkpoint["groups"] if g["kind"] == "depthwise"]
        if groups:
            out[checkpoint["name"]] = max(groups, key=lambda g: g["n_kernels"])
    return out


def _share_row(props: dict[str, float], paper: dict[str, float], templates: dict[str, float], classified: float,
               r2: float) -> dict[str, float]:
    return {
        "paper_excitatory": paper.get("excitatory-centre", math.nan),
        "paper_inhibitory": paper.get("inhibitory-centre", math.nan),
        "excitatory": props.get("excitatory-centre", math.nan), "inhibitory": props.get("inhibitory-centre", math.nan),
        "other": props.get("other", math.nan), "blob": props.get("gaussian-blob", math.nan),
        "dog_templates": templates["dog_on"] + templates["dog_off"], "gaussian_templates": templates["gaussian"],
        "classified": classified, "r2": r2,
    }


def _shares(group: dict[str, Any]) -> dict[str, float]:
    templates = group["templates"]
    return _share_row(group.get("proportions") or {}, group.get("paper_proportions") or {}, templates["shares"],
                      templates["classified_share"], group["dog_fit"]["r2_median"])


def _null_shares(group: dict[str, Any]) -> dict[str, float] | None:
    """:func:`_shares` of a group's pixel-shuffled null baseline (no DoG fit is made for the null)."""
    null = group.get("null_baseline")
    if not null:
        return None
    templates = null["templates"]
    return _share_row(null.get("proportions") or {}, null.get("paper_proportions") or {}, templates,
                      1.0 - templates["unclassified"], math.nan)


def checkpoint_shares(summary: dict[str, Any]) -> dict[str, tuple[dict[str, float], dict[str, float] | None]]:
    """``{checkpoint path: (shares, null shares or None)}`` of an analysis summary.json: the fractions
    analysis.md tabulates (keys of ``_COLUMNS``), per checkpoint. For checks of the numbers a study quotes."""
    paths = {checkpoint["name"]: checkpoint["path"] for checkpoint in summary.get("checkpoints", [])}
    return {paths[name]: (_shares(group), _null_shares(group)) for name, group in _group(summary).items()}


_COLUMNS = (("paper_excitatory", "paper: excit."), ("paper_inhibitory", "paper: inhib."),
            ("excitatory", "strict: excit."), ("inhibitory", "strict: inhib."), ("blob", "strict: blob"),
            ("other", "strict: other"),
            ("dog_templates", "DoG template"), ("gaussian_templates", "Gaussian template"),
            ("classified", "classified"), ("r2", "DoG-fit R² (median)"))


def _cell(values: Sequence[float], percent: bool) -> str:
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return "—"
    mean, std = mean_std(values)
    scale, fmt = (100, "{:.0f}") if percent else (1, "{:.2f}")
    text = fmt.format(scale * mean)
    return text if math.isnan(std) else f"{text} ± {fmt.format(scale * std)}"


def _analyse_label(done: Sequence[Run], target: epath.Path, options: Any, during: bool,
                   say: Callable[[str], None], root: epath.Path) -> list[tuple[str, int | None, list[dict[str, Any]]]]:
    """The analysed depthwise groups of one config's finished runs, as ``(stage, step, groups)``:
    init (step 0), each kept checkpoint before the last (with ``during``), trained (the last).
    The summary.json files name the checkpoints relative to ``root``, the sweep's workdir root."""
    from dog_jax.analysis.report import summary
    from dog_jax.analysis.run import analyse_to_dir

    init_paths = [os.fspath(export_init_kernels(run)) for run in done]
    analyses = analyse_to_dir([*(run.workdir for run in done), *init_paths], target, options,
                              paths_relative_to=root)
    groups = list(_group(summary(analyses, options)).values())
    # The analysis keeps its argument order: trained checkpoints first, then the init files.
    stages = [("init", 0, groups[len(done):])]
    if during:
        middle = [(step, join(run.workdir, "checkpoints", str(step)))
                  for run in done for step in kept_steps(run.workdir)[:-1]]
        if middle:
            say(f"  and {len(middle)} checkpoints during training -> {target / 'during'}")
            middle_analyses = analyse_to_dir([path for _, path in middle], target / "during", options,
                                             figures=False, paths_relative_to=root)
            middle_groups = list(_group(summary(middle_analyses, options)).values())
            for step in sorted({step for step, _ in middle}):
                chosen = [g for (s, _), g in zip(middle, middle_groups) if s == step]
                stages.append((f"step {step}", step, chosen))
    final_steps = [max(kept_steps(run.workdir), default=None) for run in done]
    final_step = final_steps[0] if len(set(final_steps)) == 1 else None
    stages.append(("trained", final_step, groups[:len(done)]))
    return stages


def _interval_cell(values: Sequence[float]) -> str:
    """Mean and 95 % t interval over seeds, in %: ``"34 [27, 41]"``."""
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return "—"
    mean, half = t_interval(values)
    if math.isnan(half):
        return f"{100 * mean:.0f}"
    return f"{100 * mean:.0f} [{100 * (mean - half):.0f}, {100 * (mean + half):.0f}]"


def _centre_surround(shares: dict[str, float]) -> float:
    """The paper's centre–surround share: its excitatory- plus inhibitory-centre clusters."""
    return shares["paper_excitatory"] + shares["paper_inhibitory"]


def _emergence_row(label: str, trained: Sequence[dict[str, float]], null: Sequence[dict[str, float]]) -> str:
    cells = [_interval_cell([_centre_surround(s) for s in shares]) for shares in (trained, null)]
    cells += [_interval_cell([s["dog_templates"] for s in shares]) for shares in (trained, null)]
    return f"| `{label}` | {len(trained)} | " + " | ".join(cells) + " |"


def _table_row(label: str, when: str, shares: Sequence[dict[str, float]], kernels: int) -> str:
    cells = [_cell([s[key] for s in shares], key != "r2") for key, _ in _COLUMNS]
    return f"| `{label}` | {when} | {len(shares)} × {kernels} | " + " | ".join(cells) + " |"


def analyse_sweep(runs: Sequence[Run], out_dir: str | os.PathLike, *, during: bool = False,
                  say: Callable[[str], None] = print) -> epath.Path | None:
    """Runs the kernel analysis per config (finished runs only) and writes ``<out_dir>/analysis.md``;
    with ``during``, also of every kept checkpoint and ``<out_dir>/analysis/trajectory.png``."""
    from dog_jax.analysis import CheckpointError
    from dog_jax.analysis.report import AnalysisOptions

    out_dir = run_path(out_dir)
    options = AnalysisOptions()  # the paper's settings, as `python -m dog_jax.analysis` without flags
    labels = list(dict.fromkeys(run.label for run in runs))
    rows, emergence, trajectories = [], [], {}
    for label in labels:
        done = [run for run in runs if run.label == label and run_status(run.workdir) == "done"]
        if not done:
            continue
        target = out_dir / "analysis" / label
        say(f"Kernel analysis of {label}: {len(done)} trained checkpoints and their initial kernels -> {target}")
        try:
            stages = _analyse_label(done, target, options, during, say, out_dir)
        except (CheckpointError, ValueError, OSError, KeyError, TypeError) as error:
            say(f"Kernel analysis of {label} failed: {error}")
            continue
        for when, _, chosen in stages:
            rows.append(_table_row(label, when, [_shares(g) for g in chosen], chosen[0]["n_kernels"]))
        trained = stages[-1][2]
        null = [n for n in map(_null_shares, trained) if n is not None]
        if null:
            rows.append(_table_row(label, "null (trained, pixels shuffled)", null, trained[0]["n_kernels"]))
        emergence.append(_emergence_row(label, [_shares(g) for g in trained], null))
        trajectories[label] = ([(step, [_shares(g) for g in chosen]) for _, step, chosen in stages
                                if step is not None], null)
    if not rows:
        say("Kernel analysis: no finished runs yet.")
        return None
    header = ("| config | when | seeds × kernels | " + " | ".join(name for _, name in _COLUMNS) + " |")
    text = [
        "# Kernel analysis: centre–surround before, during and after training", "",
        "Per config, the depthwise kernels of every seed at initialisation, at the kept checkpoints during "
        "training (where analysed) and at the end, analysed with `python -m dog_jax.analysis` "
        "(docs/analysis.md): k-means (k = 3) cluster shares by "
        "name — named from the centroid alone as in the paper (`paper:`), and by the calibrated "
        "strict rule that also checks the members' raw weights (`strict:`) — the template classifier's "
        "share of zero-sum DoG (`dog_on` + `dog_off`) and single-signed "
        "Gaussian matches, the share it classifies at all (|r| ≥ 0.7), and the median R² of the per-kernel "
        "DoG fit. The null row: the same analysis of the trained kernels with their pixels shuffled "
        "(no spatial structure). Shares in %, mean ± std over seeds. Full outputs (figures, per-layer CSV): "
        "`analysis/<config>/`.", "",
        header, "|" + "---|" * (3 + len(_COLUMNS)), *rows, "",
        "## Centre–surround at the end of training, with 95 % intervals over seeds", "",
        "Per config, the trained kernels' share (%) named centre–surround as in the paper (its excitatory- "
        "plus inhibitory-centre clusters) and the share matching a zero-sum DoG template, each beside the "
        "same share of the pixel-shuffled null: mean [95 % t interval over seeds].", "",
        "| config | seeds | centre–surround (paper naming) | null | DoG template | null |",
        "|---|---|---|---|---|---|", *emergence, ""]
    path = out_dir / "analysis.md"
    path.write_text("\n".join(text))
    say(f"Wrote {path}")
    if during and any(len(points) > 2 for points, _ in trajectories.values()):
        from dog_jax.experiments.kernel_trajectory import write_trajectory_figure

        say(f"Wrote {write_trajectory_figure(trajectories, out_dir / 'analysis' / 'trajectory.png')}")
    return path
