"""Eval-only: ``python -m dog_jax.evaluate --checkpoint=PATH [--config=FILE[:ARGS]] [--split=...]``.

Evaluates a ``train.py`` workdir (its config and latest or ``--step`` checkpoint, ``--ema`` for
the EMA weights) or a PyTorch (.pth/.pt/.bin/...) / .safetensors file with timm or official key
names (then ``--config`` names the model and data, e.g. a converted timm ConvNeXt on ImageNet)::

    python -m dog_jax.evaluate --checkpoint=runs/cnv2_dog --split=validation
    python -m dog_jax.evaluate --checkpoint=convnext_tiny.safetensors \\
        --config=configs/convnext.py:model=convnext_tiny --config.data_dir=/data/tfds --out=eval.json

The data go through the trainer's own eval input (``run_setup.eval_stream``: centre crop of
``eval_crop_pct`` at ``image_size``, uint8), the model's compute dtype from its
``run_spec.ModelSpec``, and the trainer's jitted eval step (ImageNet mean/std on the device) and
loop (``steps.make_eval_step``, ``loop.evaluate``), so a workdir's metrics equal the trainer's own eval.
Writes the metrics as JSON: ``--out``, default ``<workdir>/eval/<split>_step<N>[_ema].json`` for a
workdir, with the evaluation's provenance record (``provenance``: code, libraries, native kernels,
"auto" choices of the eval forward pass, devices; ``dog_jax.provenance``) and, for a workdir, the
training run's (``training_provenance``). Exit codes: 0 done, 1 error (one ``error: ...`` line).
Needs the ``[train]`` extra (``[torch]`` too for PyTorch files).
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

from dog_jax._extras import require
from dog_jax.checkpoints import CheckpointError
from dog_jax.storage import join, make_dirs, run_path, write_text

if TYPE_CHECKING:
    import ml_collections

require("dog_jax.evaluate", "train", "tensorflow", "tensorflow_datasets", "orbax", "ml_collections")

__all__ = ["default_output", "evaluate_checkpoint"]


def _load_weights(checkpoint: str, config: ml_collections.ConfigDict | None, *, step: int | None, ema: bool,
                  num_classes_of_data) -> tuple[Any, Any, ml_collections.ConfigDict, Any, dict[str, Any]]:
    """(model, EMA model or None, config, its ``run_spec.ModelSpec``, description) for a workdir or a
    checkpoint file.

    A workdir whose run has an EMA gives both (the trainer evaluates both), unless ``ema`` asks for
    the EMA alone.
    """
    from dog_jax import convert
    from dog_jax.train import restore, run_spec

    if run_path(checkpoint).is_dir():
        run = restore.find_checkpoint(checkpoint, step)
        model = run.model.abstract(run.num_classes, inference=True)
        restore.fill_model(model, restore.read_weights(run, ema=ema), str(run.step_dir))
        ema_model = None
        if run.has_ema and not ema:
            ema_model = run.model.abstract(run.num_classes, inference=True)
            restore.fill_model(ema_model, restore.read_weights(run, ema=True), str(run.step_dir))
        return model, ema_model, run.config, run.model, {"checkpoint": str(run.workdir), "step": run.step,
                                                         "weights": "ema" if ema else "trained",
                                                         "training_provenance": run.provenance or None}
    if not run_path(checkpoint).exists():
        raise CheckpointError(f"{checkpoint}: no such file or directory.")
    if config is None:
        raise CheckpointError(f"{checkpoint}: a checkpoint file holds no model or data settings; pass "
                              "--config=configs/<family>.py:model=<name> (and --config.dataset / data_dir).")
    if step is not None or ema:
        raise CheckpointError(f"{checkpoint}: --step and --ema select a workdir's checkpoint; a file has "
                              "one set of weights.")
    spec = run_spec.model_spec(config)
    model = spec.abstract(num_classes_of_data(config), inference=True)
    try:
        report = convert.load_torch_checkpoint(model, checkpoint)
    except convert.StateDictMismatchError as error:
        raise CheckpointError(f"{checkpoint}: {error}") from None
    described = {"checkpoint": str(checkpoint), "step": None, "weights": f"file ({report.naming} names)"}
    return model, None, config, spec, described


def evaluate_checkpoint(checkpoint: str | os.PathLike, *, config: ml_collections.ConfigDict | None = None,
                        step: int | None = None, ema: bool = False, split: str | None = None,
                        batch_size: int | None = None) -> dict[str, Any]:
    """Evaluates a workdir or a PyTorch / safetensors checkpoint on a tfds split.

    Args:
      checkpoint: a ``train.py`` workdir, or a .pth/.pt/.bin/.ckpt/.tar/.safetensors/.npz file.
      config: for a file, the config naming the model (``model``, ``model_overrides``,
        ``precision``) and the data (``dataset``, ``data_dir``, ``eval_split``, ``image_size``,
        ``eval_crop_pct``, ``batch_size``); for a workdir its own config is used and this
        must be None.
      step, ema: a workdir's checkpoint step (default latest) and its EMA weights.
      split: tfds split (default ``config.eval_split``), e.g. "validation" or "test[:1000]".
      batch_size: global eval batch (default ``config.batch_size``); a multiple of the devices.

    Returns:
      ``{"eval_top1", "eval_top5", "eval_loss", "eval_examples", "eval_time_s"}`` (fractions;
      mean cross-entropy), ``eval_ema_{top1, top5, loss}`` for a workdir whose run has an EMA
      (as the trainer reports; not with ``ema``, which evaluates the EMA alone), plus what was
      evaluated: checkpoint, step, weights, model, dataset, split, image_size, crop_pct, batch_size;
      ``provenance`` (this evaluation's code and "auto" choices) and, for a workdir,
      ``training_provenance`` (the run's ``config.json`` record; None for runs that predate it).

    Raises:
      CheckpointError, ConfigError, DatasetError: one line each (e.g. a config with a workdir,
      a file without one, a classifier size that differs from the dataset's classes).
    """
    import jax

    from dog_jax import data, provenance
    from dog_jax.train import config as config_lib
    from dog_jax.train import loop, run_setup, sharding, steps

    if config is not None and run_path(checkpoint).is_dir():
        raise config_lib.ConfigError(f"{checkpoint} is a workdir, which evaluates with its own config; drop "
                                     "--config (choose the data with --split / --batch_size).")
    builders = {}

    def builder_for(c):
        key = (c.dataset, c.get("data_dir"), c.get("manual_dir"))
        if key not in builders:
            builders[key] = data.get_builder(c.dataset, c.get("data_dir"), manual_dir=c.get("manual_dir"))
        return builders[key]

    model, ema_model, config, spec, described = _load_weights(
        os.fspath(checkpoint), config, step=step, ema=ema,
        num_classes_of_data=lambda c: data.num_classes(builder_for(c)))
    builder = builder_for(config)
    split = split or config.eval_split
    batch_size = batch_size or config.batch_size
    num_classes = data.num_classes(builder)
    logits = model.head.fc if hasattr(model.head, "fc") else model.head
    if logits is not None and logits.kernel.shape[-1] != num_classes:
        raise config_lib.ConfigError(f"the model has {logits.kernel.shape[-1]} outputs but {config.dataset} "
                                     f"has {num_classes} classes; evaluate it on the dataset it was trained "
                                     "for.")
    devices, processes = jax.device_count(), jax.process_count()
    if batch_size % devices or batch_size % processes:
        raise config_lib.ConfigError(f"batch size {batch_size} is not a multiple of the {devices} devices; "
                                     f"pass --batch_size={max(1, batch_size // devices) * devices}.")

    mesh = sharding.create_mesh()
    parts, params, batch_stats = steps.split_model(model)
    weights = {"params": params, "batch_stats": batch_stats}
    if ema_model is not None:
        _, ema_params, ema_batch_stats = steps.split_model(ema_model)
        weights["ema"] = {"params": ema_params, "batch_stats": ema_batch_stats}
    weights = jax.device_put(weights, sharding.replicated(mesh))
    eval_step = steps.make_eval_step(parts, compute_dtype=spec.compute_dtype, mesh=mesh)
    local_batch = batch_size // processes
    eval_ds = run_setup.eval_stream(builder, split, local_batch_size=local_batch, image_size=config.image_size,
                                    crop_pct=config.eval_crop_pct)
    metrics = loop.evaluate(weights, eval_step, parts.rng_state, eval_ds, mesh)
    shape = (local_batch // jax.local_device_count(), config.image_size, config.image_size, spec.in_chans)
    choices = provenance.auto_choices(model, shape, spec.compute_dtype, target=mesh, train=False)
    return {**metrics, **described, "model": config.model, "dataset": config.dataset, "split": split,
            "image_size": config.image_size, "crop_pct": config.eval_crop_pct, "batch_size": batch_size,
            "provenance": provenance.record(choices)}


def default_output(result: dict[str, Any]) -> str:
    """``<workdir>/eval/<split>_step<N>[_ema].json`` for a workdir's result."""
    split = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in result["split"])
    suffix = "_ema" if result["weights"] == "ema" else ""
    return join(result["checkpoint"], "eval", f"{split}_step{result['step']}{suffix}.json")


def write_json(path: str, payload: dict[str, Any]) -> None:
    """Writes ``payload`` as indented JSON to ``path`` (local or ``gs://``), creating its folder."""
    make_dirs(run_path(path).parent)
    write_text(path, json.dumps(payload, indent=2) + "\n")


def _main(argv: list[str]) -> None:
    import sys

    from absl import flags

    from dog_jax import console, data, storage
    from dog_jax.checkpoints import TORCH_SUFFIXES
    from dog_jax.train.config import ConfigError

    if len(argv) > 1:
        raise SystemExit(f"error: unexpected arguments {' '.join(argv[1:])}; see --helpshort.")
    values = flags.FLAGS
    console.setup(values.verbose)
    try:
        storage.configure()  # before any storage client: gs:// workdirs, emulator
    except storage.StorageConfigError as error:
        raise SystemExit(f"error: {error}") from None
    checkpoint = values.checkpoint
    if run_path(checkpoint).suffix.lower() in TORCH_SUFFIXES:
        try:
            import torch  # noqa: F401  -- before TensorFlow: the pinned versions crash the other way round
        except ImportError:
            pass  # the reader then says which extra to install
    try:
        result = evaluate_checkpoint(checkpoint, config=values.config, step=values.step, ema=values.ema,
                                     split=values.split, batch_size=values.batch_size)
    except (CheckpointError, ConfigError, data.DatasetError) as error:
        raise SystemExit(f"error: {error}") from None
    out = values.out or (default_output(result) if result["step"] is not None else None)
    if out is None:
        raise SystemExit("error: pass --out=metrics.json to write the metrics of a checkpoint file.")
    write_json(out, result)
    print(f"{result['dataset']}:{result['split']} ({result['eval_examples']} examples): top-1 "
          f"{result['eval_top1']:.4f}, top-5 {result['eval_top5']:.4f}, loss {result['eval_loss']:.4f}; "
          f"wrote {out}", file=sys.stdout)


if __name__ == "__main__":
    import sys

    from absl import app, flags
    from ml_collections import config_flags

    from dog_jax import console

    console.quiet_native(console.verbose_in(sys.argv))  # before --config's file imports TensorFlow
    flags.DEFINE_string("checkpoint", None, "A train.py workdir, or a .pth/.pt/.bin/.safetensors/.npz file.")
    config_flags.DEFINE_config_file(
        "config", None, "For a file: config naming model and data, e.g. "
        "configs/convnext.py:model=convnext_tiny (override fields with --config.x=y).", lock_config=True)
    flags.DEFINE_string("split", None, "tfds split (default: the config's eval_split).")
    flags.DEFINE_integer("batch_size", None, "Global eval batch (default: the config's batch_size).")
    flags.DEFINE_integer("step", None, "A workdir's checkpoint step (default: the latest).")
    flags.DEFINE_bool("ema", False, "Evaluate a workdir's EMA weights.")
    flags.DEFINE_bool("verbose", False, f"Console: {console.VERBOSE_HELP}.")
    flags.DEFINE_string("out", None,
                        "Metrics JSON (default for a workdir: <workdir>/eval/<split>_step<N>.json).")
    flags.mark_flag_as_required("checkpoint")
    app.run(_main)
