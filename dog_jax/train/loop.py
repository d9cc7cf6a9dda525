"""``train_and_evaluate(config, workdir)``: the whole training run, resumable from ``workdir``.

What happens, in order:

1. validate the config against the devices (one-line :class:`ConfigError` on bad values);
2. open the dataset (preparing it if needed) and derive steps from epochs;
3. build model + optimizer state replicated over the mesh (``steps.init_train_state``);
4. if ``<workdir>/checkpoints`` holds a checkpoint, restore the latest into the current
   shardings and continue from its step (the data stream is rebuilt at that step);
5. train with the single jitted step; log every ``log_every_steps``; evaluate and
   checkpoint at their intervals and at the end; write ``summary.json``.

Files in ``workdir``: ``config.json`` (the resolved config), ``checkpoints/``,
``tensorboard/``, ``summary.json``.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from flax import nnx

from dog_jax import data, initializers, models
from dog_jax.train import checkpoint as checkpoint_lib
from dog_jax.train import config as config_lib
from dog_jax.train import optim, reporting, sharding, steps

@dataclasses.dataclass(frozen=True)
class RunPlan:
    """Sizes derived from the config and the dataset."""

    num_classes: int
    train_examples: int
    eval_examples: int
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int
    eval_every: int
    checkpoint_every: int
    local_batch_size: int


def _plan(config: ml_collections.ConfigDict, builder, num_classes: int) -> RunPlan:
    train_examples = data.split_size(builder, config.train_split)
    eval_examples = data.split_size(builder, config.eval_split)
    if train_examples < config.batch_size:
        raise config_lib.ConfigError(
            f"config.batch_size={config.batch_size} exceeds the {train_examples} examples of "
            f"{config.dataset}:{config.train_split}; lower config.batch_size.")
    steps_per_epoch = train_examples // config.batch_size
    total = config.num_train_steps or max(1, int(round(config.num_epochs * steps_per_epoch)))
    return RunPlan(
        num_classes=num_classes, train_examples=train_examples, eval_examples=eval_examples,
        steps_per_epoch=steps_per_epoch, total_steps=total,
        warmup_steps=int(round(config.optimizer.warmup_epochs * steps_per_epoch)),
        eval_every=config.eval_every_steps or steps_per_epoch,
        checkpoint_every=config.checkpoint_every_steps or steps_per_epoch,
        local_batch_size=config.batch_size // jax.process_count())


def model_info(config: ml_collections.ConfigDict, num_classes: int, step: int) -> dict[str, Any]:
    """What a reader needs to rebuild the model of a checkpoint (saved next to it)."""
    return {"model": config.model, "model_overrides": config_lib.architecture_overrides(config),
            "num_classes": num_classes, "dw_init": config.dw_init, "dog": config.dog.to_dict(),
            "image_size": config.image_size, "dataset": config.dataset, "step": step,
            "params_key": "state/params", "ema_decay": config.ema_decay,
            **({"ema_params_key": "state/ema/params"} if config.ema_decay > 0 else {})}


def depthwise_initializer(config: ml_collections.ConfigDict):
    """``dw_init`` argument for ``create_model`` from ``config.dw_init`` / ``config.dog``."""
    if config.dw_init == "dog":
        return initializers.dog(tuple(config.dog.gamma_range), config.dog.on_fraction, norm=config.dog.norm,
                                balanced=config.dog.balanced)
    return config.dw_init


def create_model_from_config(config: ml_collections.ConfigDict, num_classes: int) -> nnx.Module:
    """The trainer's model at step 0: ``config.model`` with its overrides, depthwise init and seed."""
    compute_dtype = jnp.bfloat16 if config.precision == "bfloat16" else jnp.float32
    return models.create_model(
        config.model, num_classes=num_classes, dw_init=depthwise_initializer(config),
        drop_path_rate=config.drop_path_rate, dtype=compute_dtype, param_dtype=jnp.float32,
        rngs=nnx.Rngs(params=config.seed, dropout=config.seed + 1), **config_lib.architecture_overrides(config))


def _eval_sums(weights, eval_step, rng_state, eval_ds, mesh) -> dict[str, float]:
    """Sums of loss / top1 / top5 / count over the eval stream for ``{"params", "batch_stats"}``."""
    totals = None
    for batch in eval_ds.as_numpy_iterator():
        sums = eval_step(weights, sharding.global_batch(batch, mesh), rng_state)
        totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
    return {key: float(value) for key, value in jax.device_get(totals).items()}


def evaluate(state, eval_step, rng_state, eval_ds, mesh) -> dict[str, float]:
    """Runs the eval stream; returns eval_{top1, top5, loss, examples, time_s}, and
    eval_ema_{top1, top5, loss} for the EMA weights when the state has them."""
    start = time.perf_counter()
    metrics = {}
    for prefix, weights in (("eval", state), ("eval_ema", state.get("ema"))):
        if weights is None:
            continue
        totals = _eval_sums(weights, eval_step, rng_state, eval_ds, mesh)
        count = max(totals["count"], 1.0)
        metrics.update({f"{prefix}_top1": totals["top1"] / count, f"{prefix}_top5": totals["top5"] / count,
                        f"{prefix}_loss": totals["loss"] / count})
        metrics.setdefault("eval_examples", int(totals["count"]))
    metrics["eval_time_s"] = time.perf_counter() - start
    return metrics


def _without_step(entry: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in entry.items() if key != "step"}


def _should_stop(stop_requested: Callable[[int], bool] | None, step: int, every: int) -> bool:
    """Whether to checkpoint and return now.

    With several processes every one must stop at the same step (or the others hang in the
    next collective), but a SIGTERM reaches each at a different step: the local flags are
    combined with one all-gather every ``every`` steps (the log interval, which syncs anyway).
    """
    if jax.process_count() == 1:
        return stop_requested is not None and bool(stop_requested(step))
    if step % every:
        return False
    # Every process must take part in the all-gather, also one that was given no stop_requested.
    from jax.experimental import multihost_utils
    local = np.asarray([stop_requested is not None and bool(stop_requested(step))], np.int32)
    return bool(np.any(multihost_utils.process_allgather(local)))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       stop_requested: Callable[[int], bool] | None = None) -> dict[str, Any]:
    """Trains ``config`` in ``workdir`` (resuming if it holds checkpoints); returns the summary.

    Args:
      config: a validated-on-entry training config (``configs/*.py``).
      workdir: run directory; rerunning with the same directory resumes.
      stop_requested: optional ``f(step) -> bool`` polled after every step (with several
        processes: every ``log_every_steps``, agreed over all of them); when it returns
        True the run checkpoints the current step and returns early with
        ``summary["interrupted"] = True`` (a later call resumes from there).

    Raises:
      ConfigError, DatasetError: bad config / dataset (one-line messages).
      CheckpointError: workdir not writable; its checkpoints are of another model or all damaged.
      NonFiniteError: NaN/inf loss or gradient with ``config.nonfinite_policy == "stop"``.
    """
    run_start = time.perf_counter()
    config_lib.validate(config, device_count=jax.device_count(), process_count=jax.process_count())
    workdir = checkpoint_lib.absolute_dir(workdir)
    checkpoint_lib.check_writable(workdir)  # local or gs://; fails now, not at the first checkpoint.
    mesh = sharding.create_mesh()
    logging.info("Devices: %d x %s over %d process(es); mesh %s", jax.device_count(), jax.devices()[0].platform,
                 jax.process_count(), dict(mesh.shape))

    builder = data.get_builder(config.dataset, config.data_dir, manual_dir=config.manual_dir)
    num_classes = data.num_classes(builder)
    plan = _plan(config, builder, num_classes)
    logging.info("Data: %s, %d train / %d eval examples, %d classes; %d steps (%d per epoch) at global batch %d",
                 config.dataset, plan.train_examples, plan.eval_examples, num_classes, plan.total_steps,
                 plan.steps_per_epoch, config.batch_size)

    compute_dtype = jnp.bfloat16 if config.precision == "bfloat16" else jnp.float32
    schedule = optim.learning_rate_schedule(
        schedule=config.optimizer.schedule, peak=config.optimizer.learning_rate, total_steps=plan.total_steps,
        warmup_steps=plan.warmup_steps, min_learning_rate=config.optimizer.min_learning_rate)
    tx = optim.create_optimizer(  # the schedule is applied in the train step, at state["step"]
        learning_rate=optim.UNIT_LEARNING_RATE, weight_decay=config.optimizer.weight_decay, b1=config.optimizer.b1,
        b2=config.optimizer.b2, eps=config.optimizer.eps, grad_clip_norm=config.optimizer.grad_clip_norm)

    def model_fn() -> nnx.Module:
        return create_model_from_config(config, num_classes)

    parts, state = steps.init_train_state(model_fn, tx, mesh, ema=config.ema_decay > 0)
    num_params = sum(x.size for x in jax.tree.leaves(state["params"]))
    logging.info("Model: %s (%s parameters), dw_init=%s, precision=%s", config.model, f"{num_params:,}",
                 config.dw_init, config.precision)

    ckpt = checkpoint_lib.Checkpointer(os.path.join(workdir, "checkpoints"), keep=config.keep_checkpoints)
    start_step = 0
    restored = ckpt.restore_latest(steps.abstract_train_state(state), model_info(config, num_classes, 0))
    if restored is not None:
        start_step, state = restored
        logging.info("Resumed from %s at step %d", ckpt.directory, start_step)
    reporting.write_json(os.path.join(workdir, "config.json"), config.to_dict())

    train_step = steps.make_train_step(
        parts, tx, schedule, num_classes=num_classes, compute_dtype=compute_dtype, seed=config.seed, mesh=mesh,
        skip_nonfinite=config.nonfinite_policy == "skip", ema_decay=config.ema_decay,
        mix=data.MixConfig(mixup_alpha=config.augment.mixup_alpha, cutmix_alpha=config.augment.cutmix_alpha,
                           prob=config.augment.mix_prob, switch_prob=config.augment.switch_prob,
                           label_smoothing=config.augment.label_smoothing))
    eval_step = steps.make_eval_step(parts, compute_dtype=compute_dtype, mesh=mesh)

    process, processes = jax.process_index(), jax.process_count()
    shard_count = config.data_shards or mesh.size  # default: one data shard per device
    shards = sharding.process_data_shards(mesh, shard_count)
    logging.info("Training data: %d shard(s) of %d examples, %d read by this process", shard_count,
                 plan.train_examples // shard_count, len(shards))
    train_sources = [data.local_source(builder, config.train_split, shard_index=shard, shard_count=shard_count,
                                       drop_remainder=True) for shard in shards]
    augmentation = data.TrainAugmentation(
        image_size=config.image_size, crop_area_range=(config.augment.crop_area_min, 1.0), flip=config.augment.flip,
        rand_augment=config.augment.rand_augment, random_erasing=config.augment.random_erasing)
    train_ds = data.train_dataset(train_sources, shard_indices=shards,
                                  shard_batch_size=config.batch_size // shard_count, augmentation=augmentation,
                                  seed=config.seed, start_step=start_step,
                                  shuffle_buffer=-(-config.shuffle_buffer // shard_count), cache=config.cache_data)
    eval_source = data.local_source(builder, config.eval_split, shard_index=process, shard_count=processes,
                                    drop_remainder=False)
    eval_ds = data.eval_dataset(
        eval_source, local_batch_size=plan.local_batch_size, image_size=config.image_size,
        crop_pct=config.eval_crop_pct, cache=config.cache_data,
        num_batches=data.eval_num_batches(plan.eval_examples, processes, plan.local_batch_size))

    reporter = reporting.Reporter(workdir, total_steps=plan.total_steps, global_batch_size=config.batch_size,
                                  nonfinite_policy=config.nonfinite_policy)
    if restored is not None:  # best eval and histories continue across a resume
        history = ckpt.restore_history(start_step)
        if history is not None:
            reporter.load_history(history)
        else:
            logging.warning("Checkpoint %d holds no history (written by an older version): best eval and "
                            "histories restart at the resumed step.", start_step)
    eval_metrics = _without_step(reporter.history[-1]) if reporter.history else {}
    info = lambda step: model_info(config, num_classes, step)  # noqa: E731
    train_iter = train_ds.as_numpy_iterator()
    compile_time = None
    step = start_step
    interrupted = False
    while step < plan.total_steps:
        batch = sharding.global_batch(next(train_iter), mesh)
        state, metrics = train_step(state, batch, parts.rng_state)
        step += 1
        reporter.add(step, metrics)
        if compile_time is None:
            jax.block_until_ready(metrics)
            compile_time = time.perf_counter() - run_start
            logging.info("First step done (compile + data warm-up) %.1f s after start", compile_time)
            reporter.start(step)
        if step % config.log_every_steps == 0 or step == plan.total_steps:
            reporter.flush_train(step)
        checkpoint_metrics = None
        if step % plan.eval_every == 0 or step == plan.total_steps:
            eval_metrics = evaluate(state, eval_step, parts.rng_state, eval_ds, mesh)
            reporter.log_eval(step, eval_metrics)
            checkpoint_metrics = eval_metrics
        if step % plan.checkpoint_every == 0 or step == plan.total_steps or checkpoint_metrics:
            reporter.check_finite()  # never checkpoint a NaN state
            ckpt.save(step, state, info(step), metrics=checkpoint_metrics, history=reporter.history_snapshot())
        if step < plan.total_steps and _should_stop(stop_requested, step, config.log_every_steps):
            reporter.check_finite()
            ckpt.save(step, state, info(step), history=reporter.history_snapshot())
            interrupted = True
            logging.info("Stop requested: checkpointed step %d in %s; rerun to resume.", step, ckpt.directory)
            break
    if start_step >= plan.total_steps:
        if reporter.history and reporter.history[-1]["step"] == step:
            logging.info("Training already complete (%d steps); its final evaluation is in the history.", step)
        else:
            logging.info("Training already complete (%d steps); evaluating the final state only.", step)
            eval_metrics = evaluate(state, eval_step, parts.rng_state, eval_ds, mesh)
            reporter.log_eval(step, eval_metrics)
    best = reporting.best_eval(reporter.history)  # over the whole run, resumed parts included
    ckpt.wait()

    summary = {
        "final_step": step, "total_steps": plan.total_steps, "start_step": start_step, "interrupted": interrupted,
        "final_eval": eval_metrics, "best_eval": best, "best_checkpoint_step": ckpt.best_step(),
        "eval_history": reporter.history, "train_history": reporter.train_history,
        "skipped_steps": reporter.skipped_steps, "nonfinite_policy": config.nonfinite_policy,
        "wall_time_s": time.perf_counter() - run_start,
        "compile_time_s": compile_time, "num_params": int(num_params), "num_classes": num_classes,
        "devices": jax.device_count(), "processes": processes, "config": config.to_dict(),
    }
    reporting.write_json(os.path.join(workdir, "summary.json"), summary)
    reporter.close()
    ckpt.close()
    logging.info("Done: step %d, eval top1 %.4f (best %.4f at step %s), wall %s", step,
                 eval_metrics.get("eval_top1", float("nan")), best.get("eval_top1", float("nan")), best.get("step"),
                 reporting.format_duration(summary["wall_time_s"]))
    return summary
