"""Share a trained model: ``python -m dog_jax.export WORKDIR --out DIR [--step N] [--ema]``.

Writes into ``DIR``:

* ``model.safetensors`` -- the weights as a PyTorch state dict (float32), named as timm names
  them for ConvMixer and ConvNeXt V1/V2 and as the official repository does for HorNet
  (``dog_jax.convert.to_torch_state_dict``). Basis-parameterised runs (``dw_param="basis"``)
  export their materialised k×k depthwise kernels, so the file is an ordinary model's.
* ``config.json`` -- timm's hub format: ``architecture``, ``num_classes``, ``num_features``,
  ``model_args`` (only where the architecture name alone does not give the sizes) and
  ``pretrained_cfg`` (input size, mean/std, crop, interpolation, ...), plus a ``dog_jax`` entry
  (model name, overrides, key naming and ``provenance``: the training run's record and the
  export's, ``dog_jax.provenance``) that timm ignores.
* ``README.md`` -- a model card: model, depthwise init and DoG settings, training config, eval
  metrics from the run's ``summary.json``, which code trained and exported it, how to load it, and
  the command that wrote it.
* ``training_config.json`` -- the run's full config.

timm loads the directory offline with ``timm.create_model("local-dir:DIR", pretrained=True)``;
ConvMixers of sizes timm does not register need ``dog_jax.timm_models.register_timm_models()``
first (see that module). Needs the ``[train]`` extra (the checkpoint is an orbax train state).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import shlex
import sys
from typing import TYPE_CHECKING, Any

from etils import epath

from dog_jax import __version__, console, models, provenance, storage
from dog_jax._extras import require
from dog_jax.checkpoints import CheckpointError
from dog_jax.storage import run_path

if TYPE_CHECKING:
    import ml_collections

    from dog_jax.train.run_spec import ModelSpec

require("dog_jax.export", "train", "tensorflow", "tensorflow_datasets", "orbax", "ml_collections")

__all__ = ["export_model", "hub_config", "main", "timm_architecture"]

# timm's registered ConvMixer sizes (its entrypoints fix all four sizes; timm/models/convmixer.py).
TIMM_CONVMIXERS = ("convmixer_768_32", "convmixer_1024_20_ks9_p14", "convmixer_1536_20")
# ConvNeXt config fields -> timm ConvNeXt arguments; head_init_scale only scales the random init.
_CONVNEXT_ARGS = {"depths": "depths", "dims": "dims", "kernel_size": "kernel_sizes", "use_grn": "use_grn",
                  "ls_init_value": "ls_init_value", "patch_size": "patch_size", "conv_mlp": "conv_mlp",
                  "in_chans": "in_chans"}
_PAPER = "Neural Echos: Depthwise Convolutional Filters Replicate Biological Receptive Fields"


def _json_value(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def timm_architecture(model: ModelSpec) -> tuple[str, dict[str, Any], str]:
    """``(architecture, model_args, naming)`` of an exported model.

    Args:
      model: the run's model (``dog_jax.train.run_spec.ModelSpec``): its registered name, the
        registered size and the architecture with the run's overrides.

    Returns:
      ``architecture``: the timm model name (or ``dog_jax_convmixer`` for ConvMixer sizes timm does
      not register; the dog_jax name for HorNet, which timm lacks); ``model_args``: the arguments
      that differ from that architecture's defaults (empty for an unmodified registered size);
      ``naming``: "timm" or "official" (HorNet), for ``to_torch_state_dict``.

    Raises:
      ValueError: an override timm's ConvNeXt has no argument for (``mlp_ratio``).
    """
    model_name, default = model.name, model.registered
    free = dataclasses.replace(model.architecture, dw_param="free")
    if isinstance(free, models.ConvMixerConfig):
        if model_name in TIMM_CONVMIXERS and free == default:
            return model_name, {}, "timm"
        from_fields = ("kernel_size", "patch_size", "activation", "in_chans")
        return "dog_jax_convmixer", {"dim": free.width, "depth": free.depth,
                                     **{name: getattr(free, name) for name in from_fields}}, "timm"
    if isinstance(free, models.ConvNeXtConfig):
        if free.mlp_ratio != default.mlp_ratio:
            raise ValueError(f"mlp_ratio={free.mlp_ratio} cannot be exported for timm: its ConvNeXt has no "
                             "mlp_ratio argument (it is always 4).")
        args = {timm_name: _json_value(getattr(free, field)) for field, timm_name in _CONVNEXT_ARGS.items()
                if getattr(free, field) != getattr(default, field)}
        return model_name, args, "timm"
    return model_name, {}, "official"  # HorNet: the official repository's names; timm has no HorNet


def _pretrained_cfg(config: ml_collections.ConfigDict, model_config: Any, num_classes: int,
                    naming: str) -> dict[str, Any]:
    """timm's ``pretrained_cfg``: what the model expects as input (the run's eval pipeline)."""
    from dog_jax.data.device_augment import IMAGENET_MEAN, IMAGENET_STD

    size = config.image_size
    if isinstance(model_config, models.ConvMixerConfig):
        first_conv, classifier = "stem.0", "head"
    elif naming == "timm":
        first_conv, classifier = "stem.0", "head.fc"
    else:
        first_conv, classifier = "downsample_layers.0.0", "head"
    return {
        "input_size": [model_config.in_chans, size, size], "fixed_input_size": False,
        "interpolation": "bicubic", "crop_pct": config.eval_crop_pct, "crop_mode": "center",
        "mean": [round(m / 255.0, 6) for m in IMAGENET_MEAN],
        "std": [round(s / 255.0, 6) for s in IMAGENET_STD],
        "num_classes": num_classes, "pool_size": None, "first_conv": first_conv, "classifier": classifier,
        "paper_name": _PAPER, "paper_ids": "arXiv:2401.10178",
        "description": f"dog_jax {config.model} trained on {config.dataset} (dw_init={config.dw_init})",
    }


def hub_config(config: ml_collections.ConfigDict, model: ModelSpec, num_classes: int) -> dict[str, Any]:
    """The ``config.json`` of an export (timm's hub format plus a ``dog_jax`` entry) of the run with
    ``config`` and its ``model``."""
    # A basis run's kernels are exported materialised: the file is a free-kernel model's.
    overrides = {key: value for key, value in model.overrides.items() if key != "dw_param"}
    model_config = model.architecture
    architecture, model_args, naming = timm_architecture(model)
    dims = getattr(model_config, "dims", None)
    hub = {"architecture": architecture, "num_classes": num_classes,
           "num_features": dims[-1] if dims else model_config.width}
    if model_args:
        hub["model_args"] = model_args
    hub["pretrained_cfg"] = _pretrained_cfg(config, model_config, num_classes, naming)
    # What dog_jax needs to rebuild it (free kernels: a basis run's kernels are exported materialised).
    hub["dog_jax"] = {"model": config.model,
                      "model_overrides": {k: _json_value(v) for k, v in overrides.items()},
                      "naming": naming, "timm_loadable": naming == "timm"}
    return hub


def _eval_metrics(summary: dict[str, Any] | None, step: int) -> list[tuple[str, dict[str, Any]]]:
    """(label, metrics) rows for the card: the exported step's eval, the final and the best."""
    if not summary:
        return []
    rows = []
    at_step = [entry for entry in summary.get("eval_history", []) if entry.get("step") == step]
    if at_step:
        rows.append((f"step {step} (exported)", at_step[-1]))
    final = summary.get("final_eval") or {}
    if final and summary.get("final_step") != step:
        rows.append((f"final (step {summary.get('final_step')})", final))
    best = summary.get("best_eval") or {}
    if best:
        rows.append((f"best (step {best.get('step')})", best))
    return rows


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else ("–" if value is None else str(value))


def _provenance_lines(record: dict[str, Any] | None, what: str) -> list[str]:
    """One bullet: which code (commit or version), libraries, native kernels and auto choices did ``what``."""
    if not record:
        return [f"- {what}: not recorded (the run predates provenance records)"]
    packages = ", ".join(f"{name} {version}" for name, version in record["packages"].items() if version)
    devices = record.get("devices") or {}
    return [f"- {what}: dog_jax `{provenance.code_label(record)}`; {packages}; "
            f"{provenance.impl_label(record)}; {devices.get('count')} {devices.get('kind')} device(s), "
            f"{devices.get('processes')} process(es)"]


def model_card(config: ml_collections.ConfigDict, hub: dict[str, Any], *, step: int, ema: bool,
               summary: dict[str, Any] | None, command: str) -> str:
    """The export's README.md (Markdown)."""
    c, mine = config, hub["dog_jax"]
    dog = c.dog.to_dict() if c.dw_init == "dog" else None
    weights = "the model EMA's weights" if ema else "the trained weights"
    lines = [
        f"# {c.model} ({c.dataset}, dw_init={c.dw_init})", "",
        f"A dog_jax {c.model} trained with the training config below; {weights} at step {step}. "
        f"Reimplementation of \"{_PAPER}\" (Babaiee et al., WACV 2024, arXiv:2401.10178).", "",
        "## Model", "",
        f"- architecture: `{hub['architecture']}`, {hub['num_classes']} classes, "
        f"input {hub['pretrained_cfg']['input_size']} (channels, height, width)",
        f"- dog_jax model: `{mine['model']}`, overrides `{json.dumps(mine['model_overrides'])}`",
        f"- state-dict names: {mine['naming']}" + ("" if mine["timm_loadable"] else " (timm has no HorNet)"),
        "", "## Depthwise kernels", "",
        f"- initialisation (`dw_init`): `{c.dw_init}`",
        f"- parameterisation (`dw_param`): `{c.get('dw_param', 'free')}`"
        + (" — exported as the materialised k×k kernels" if c.get("dw_param", "free") == "basis" else ""),
    ]
    if dog:
        lines.append(f"- DoG settings: gamma_range {tuple(dog['gamma_range'])}, "
                     f"on_fraction {dog['on_fraction']}, norm `{dog['norm']}`, balanced {dog['balanced']}")
    opt, aug = c.optimizer, c.augment
    lines += [
        "", "## Training", "",
        f"- data: `{c.dataset}` ({c.train_split} / eval {c.eval_split}), {c.image_size} px, "
        f"eval crop {c.eval_crop_pct}",
        f"- length: {c.num_train_steps or c.num_epochs} {'steps' if c.num_train_steps else 'epochs'}, "
        f"global batch {c.batch_size}, precision {c.precision}, seed {c.seed}",
        f"- optimizer: AdamW lr {opt.learning_rate}, weight decay {opt.weight_decay}, "
        f"{opt.schedule} schedule, "
        f"warmup {opt.warmup_epochs} epochs, grad clip {opt.grad_clip_norm}",
        f"- augmentation: RandAugment `{aug.rand_augment}`, mixup {aug.mixup_alpha}, "
        f"CutMix {aug.cutmix_alpha}, "
        f"random erasing {aug.random_erasing}, label smoothing {aug.label_smoothing}",
        f"- drop path {c.drop_path_rate}, EMA decay {c.ema_decay}; full config: `training_config.json`",
        "", "## Evaluation", "",
    ]
    rows = _eval_metrics(summary, step)
    if rows:
        lines += ["| checkpoint | top-1 | top-5 | loss | EMA top-1 |", "|---|---|---|---|---|"]
        keys = ("eval_top1", "eval_top5", "eval_loss", "eval_ema_top1")
        lines += [f"| {label} | " + " | ".join(_fmt(m.get(key)) for key in keys) + " |" for label, m in rows]
        lines.append(f"\nOn `{c.dataset}:{c.eval_split}` with the run's eval pipeline (its summary.json).")
    else:
        lines.append("No summary.json in the workdir (the run has not finished): no eval metrics recorded.")
    made_by = hub["dog_jax"]["provenance"]
    lines += ["", "## Provenance", "", *_provenance_lines(made_by["training"], "trained by"),
              *[line for start in made_by["training_earlier"]
                for line in _provenance_lines(start, "earlier start of the resumed run (other code)")],
              *_provenance_lines(made_by["export"], "exported by"),
              "", "The full records: `config.json`, entry `dog_jax.provenance`."]
    lines += ["", "## Loading", ""]
    if mine["timm_loadable"]:
        register = ("from dog_jax.timm_models import register_timm_models\nregister_timm_models()  "
                    "# dog_jax_convmixer: a ConvMixer size timm does not register\n"
                    if hub["architecture"] == "dog_jax_convmixer" else "")
        load = 'model = timm.create_model("local-dir:PATH/TO/THIS/DIR", pretrained=True).eval()'
        lines += ["```python", "import timm", register + load, "```", ""]
    lines += ["In dog_jax (JAX/Flax NNX):", "", "```python", "from flax import nnx",
              "from dog_jax.convert import load_torch_checkpoint",
              "from dog_jax.models import create_model", "",
              f"model = create_model({mine['model']!r}, num_classes={hub['num_classes']}, rngs=nnx.Rngs(0)"
              + "".join(f", {k}={tuple(v) if isinstance(v, list) else v!r}"
                        for k, v in mine["model_overrides"].items()) + ")",
              'load_torch_checkpoint(model, "model.safetensors")', "model.eval()", "```", "",
              "## Produced by", "", "```", command, "```",
              f"dog_jax {__version__}, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC.",
              ""]
    return "\n".join(lines)


def export_model(workdir: str | os.PathLike, out: str | os.PathLike, *, step: int | None = None, ema: bool = False,
                 command: str | None = None) -> epath.Path:
    """Writes ``model.safetensors``, ``config.json``, ``README.md``, ``training_config.json`` into ``out``.

    Args:
      workdir: a ``train.py`` workdir (local or ``gs://``).
      out: the export directory, local or ``gs://`` (created; existing files of these names are replaced).
      step: checkpoint step (default: the latest).
      ema: export the model EMA's weights.
      command: the command line recorded in the model card (default: this process's).

    Returns:
      ``out`` as an ``epath.Path``.

    Raises:
      CheckpointError: no such workdir / step / EMA, unreadable checkpoint.
      ValueError: an architecture override timm cannot express (``mlp_ratio``).
    """
    from dog_jax.convert import save_safetensors
    from dog_jax.train.restore import find_checkpoint, restore_model

    checkpoint = find_checkpoint(workdir, step)
    # Before restoring: fails fast on mlp_ratio.
    hub = hub_config(checkpoint.config, checkpoint.model, checkpoint.num_classes)
    hub["dog_jax"]["provenance"] = {"training": checkpoint.provenance.get("provenance"),
                                    "training_earlier": checkpoint.provenance.get("provenance_earlier", []),
                                    "export": provenance.record()}
    model, config = restore_model(workdir, step=checkpoint.step, ema=ema)
    out = run_path(out)
    storage.make_dirs(out)
    save_safetensors(model, out / "model.safetensors", naming=hub["dog_jax"]["naming"])
    (out / "config.json").write_text(json.dumps(hub, indent=2) + "\n")
    (out / "training_config.json").write_text(json.dumps(config.to_dict(), indent=2, default=str) + "\n")
    summary_file = run_path(workdir) / "summary.json"
    summary = json.loads(summary_file.read_text()) if summary_file.is_file() else None
    command = command or shlex.join(["python", "-m", "dog_jax.export", *sys.argv[1:]])
    (out / "README.md").write_text(model_card(config, hub, step=checkpoint.step, ema=ema, summary=summary,
                                              command=command))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dog_jax.export", description=__doc__.split("\n")[0])
    parser.add_argument("workdir", help="a train.py --workdir")
    parser.add_argument("--out", required=True, help="export directory (created)")
    parser.add_argument("--step", type=int, default=None, help="checkpoint step (default: the latest)")
    parser.add_argument("--ema", action="store_true", help="export the model EMA's weights")
    parser.add_argument("--verbose", action="store_true", help=console.VERBOSE_HELP)
    args = parser.parse_args(argv)
    console.setup(args.verbose)
    try:
        storage.configure()  # before any storage client: gs:// workdirs, emulator
        out = export_model(args.workdir, args.out, step=args.step, ema=args.ema)
    except (CheckpointError, ValueError, storage.StorageConfigError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"wrote {out}/model.safetensors, config.json, README.md, training_config.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
