"""The kernel analysis of a sweep: are the depthwise kernels centre–surround before and after training?

For every config with finished runs this writes, into ``<out>/analysis/<label>/``, the output of
``python -m dog_jax.analysis`` (docs/analysis.md) on

* each seed's trained checkpoint (the run's workdir: its latest, i.e. final, checkpoint), and
* each seed's *initial* depthwise kernels (``<workdir>/init_kernels.npz``, rebuilt from the run's
  ``config.json``: same model, init and seed as the trainer's step 0),

and then one table, ``<out>/analysis.md``, with the cluster and template-classifier shares at
init and after training (mean ± std over seeds): do DoG-initialised kernels stay centre–surround,
do Kaiming-initialised ones become centre–surround?
"""

import json
import math
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from dog_jax.experiments.collect import mean_std
from dog_jax.experiments.sweep import Run, read_summary, run_status

INIT_FILE = "init_kernels.npz"


def export_init_kernels(run: Run) -> Path:
    """Writes the run's step-0 depthwise kernels (HWIO, keys ``<module path>/kernel``) to its workdir."""
    import jax
    import ml_collections
    from flax import nnx

    from dog_jax import models
    from dog_jax.train.config import architecture_overrides
    from dog_jax.train.loop import depthwise_initializer

    path = Path(run.workdir) / INIT_FILE
    if path.is_file():
        return path
    config = ml_collections.ConfigDict(json.loads((Path(run.workdir) / "config.json").read_text()))
    num_classes = (read_summary(run.workdir) or {}).get("num_classes", 1000)
    # Built eagerly on the CPU: same initializers, seed and rng streams as the trainer's init.
    with jax.default_device(jax.devices("cpu")[0]):
        model = models.create_model(
            config.model, num_classes=num_classes, dw_kernel_init=depthwise_initializer(config),
            drop_path_rate=0.0, rngs=nnx.Rngs(params=config.seed, dropout=config.seed + 1),
            **architecture_overrides(config))
        arrays = {"/".join(str(p) for p in module_path) + "/kernel": np.asarray(layer.kernel[...])
                  for module_path, layer in models.iter_depthwise_convs(model)}
    np.savez(path, **arrays)
    return path


def _group(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{checkpoint name: its largest depthwise group} from an analysis summary.json."""
    out = {}
    for checkpoint in summary.get("checkpoints", []):
        groups = [g for g in checkpoint["groups"] if g["kind"] == "depthwise"]
        if groups:
            out[checkpoint["name"]] = max(groups, key=lambda g: g["n_kernels"])
    return out


def _shares(group: dict[str, Any]) -> dict[str, float]:
    props = group.get("proportions") or {}
    paper = group.get("paper_proportions") or {}
    templates = group["templates"]["shares"]
    return {
        "paper_excitatory": paper.get("excitatory-centre", math.nan),
        "paper_inhibitory": paper.get("inhibitory-centre", math.nan),
        "excitatory": props.get("excitatory-centre", math.nan), "inhibitory": props.get("inhibitory-centre", math.nan),
        "other": props.get("other", math.nan), "blob": props.get("gaussian-blob", math.nan),
        "dog_templates": templates["dog_on"] + templates["dog_off"], "gaussian_templates": templates["gaussian"],
        "classified": group["templates"]["classified_share"], "r2": group["dog_fit"]["r2_median"],
    }


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


def analyse_sweep(runs: Sequence[Run], out_dir: str | Path, *, say: Callable[[str], None] = print) -> Path | None:
    """Runs the kernel analysis per config (finished runs only) and writes ``<out_dir>/analysis.md``."""
    from dog_jax.analysis.__main__ import main as analysis_main

    out_dir = Path(out_dir)
    labels = list(dict.fromkeys(run.label for run in runs))
    rows = []
    for label in labels:
        done = [run for run in runs if run.label == label and run_status(run.workdir) == "done"]
        if not done:
            continue
        target = out_dir / "analysis" / label
        say(f"Kernel analysis of {label}: {len(done)} trained checkpoints and their initial kernels -> {target}")
        try:
            init_paths = [str(export_init_kernels(run)) for run in done]
        except (OSError, ValueError, KeyError, TypeError) as error:
            say(f"Kernel analysis of {label} skipped: could not rebuild the initial kernels ({error}).")
            continue
        code = analysis_main([*(run.workdir for run in done), *init_paths, "--out", str(target), "-q"])
        if code != 0:
            say(f"Kernel analysis of {label} failed (exit code {code}); see the error above.")
            continue
        groups = list(_group(json.loads((target / "summary.json").read_text())).values())
        # The analysis keeps its argument order: trained checkpoints first, then the init files.
        trained, initial = groups[:len(done)], groups[len(done):]
        for when, chosen in (("init", initial), ("trained", trained)):
            shares = [_shares(g) for g in chosen]
            kernels = chosen[0]["n_kernels"] if chosen else 0
            cells = [_cell([s[key] for s in shares], key != "r2") for key, _ in _COLUMNS]
            rows.append(f"| `{label}` | {when} | {len(chosen)} × {kernels} | " + " | ".join(cells) + " |")
    if not rows:
        say("Kernel analysis: no finished runs yet.")
        return None
    header = ("| config | when | seeds × kernels | " + " | ".join(name for _, name in _COLUMNS) + " |")
    text = [
        "# Kernel analysis: centre–surround before and after training", "",
        "Per config, the depthwise kernels of every seed at initialisation and at the end of training, "
        "analysed with `python -m dog_jax.analysis` (docs/analysis.md): k-means (k = 3) cluster shares by "
        "name — named from the centroid alone as in the paper (`paper:`), and by the calibrated "
        "strict rule that also checks the members' raw weights (`strict:`) — the template classifier's share of zero-sum DoG (`dog_on` + `dog_off`) and single-signed "
        "Gaussian matches, the share it classifies at all (|r| ≥ 0.7), and the median R² of the per-kernel "
        "DoG fit. Shares in %, mean ± std over seeds. Full outputs (figures, per-layer CSV, null "
        "baseline): `analysis/<config>/`.", "",
        header, "|" + "---|" * (3 + len(_COLUMNS)), *rows, ""]
    path = out_dir / "analysis.md"
    path.write_text("\n".join(text))
    say(f"Wrote {path}")
    return path
