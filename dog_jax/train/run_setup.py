"""The pieces of a training run before its first step: plan, model, steps, restore, input streams.

Used by :mod:`dog_jax.train.loop` (``train_and_evaluate``); :func:`model_info` and
:func:`create_model_from_config` are also what readers of a checkpoint rebuild the model with.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from absl import logging
from flax import nnx

from dog_jax import data, initializers, models
from dog_jax.models.remat import set_remat
from dog_jax.train import checkpoint as checkpoint_lib
from dog_jax.train import config as config_lib
from dog_jax.train import optim, sharding, steps


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


def make_plan(config: ml_collections.ConfigDict, builder, num_classes: int) -> RunPlan:
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


def model_info(config: ml_collections.ConfigDict, num_classes: int, step: int, *, devices: int | None = None,
               data_shards: int | None = None) -> dict[str, Any]:
    """What a reader needs to rebuild the model of a checkpoint (saved next to it).

    ``devices`` / ``data_shards``: the run's device count and data shard count, saved so that a
    resume on another device count can say what changes (left out when None).
    """
    run = {key: value for key, value in (("devices", devices), ("data_shards", data_shards)) if value is not None}
    return {**run, "model": config.model, "model_overrides": config_lib.architecture_overrides(config),
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
    model = models.create_model(
        config.model, num_classes=num_classes, dw_init=depthwise_initializer(config),
        drop_path_rate=config.drop_path_rate, dtype=compute_dtype, param_dtype=jnp.float32,
        rngs=nnx.Rngs(params=config.seed, dropout=config.seed + 1), **config_lib.architecture_overrides(config))
    return set_remat(model, bool(config.get("remat", False)))  # older saved configs have no remat field


def open_dataset(config: ml_collections.ConfigDict):
    """The prepared tfds builder (generated or downloaded here if needed) and the run plan."""
    builder = data.get_builder(config.dataset, config.data_dir, manual_dir=config.manual_dir)
    num_classes = data.num_classes(builder)
    plan = make_plan(config, builder, num_classes)
    logging.info("Data: %s, %d train / %d eval examples, %d classes; %d steps (%d per epoch) at global batch %d",
                 config.dataset, plan.train_examples, plan.eval_examples, num_classes, plan.total_steps,
                 plan.steps_per_epoch, config.batch_size)
    return builder, plan


def make_optimizer(config: ml_collections.ConfigDict, plan: RunPlan):
    """(tx, schedule): AdamW at ``optim.UNIT_LEARNING_RATE`` (the step applies the schedule)."""
    schedule = optim.learning_rate_schedule(
        schedule=config.optimizer.schedule, peak=config.optimizer.learning_rate, total_steps=plan.total_steps,
        warmup_steps=plan.warmup_steps, min_learning_rate=config.optimizer.min_learning_rate)
    tx = optim.create_optimizer(  # the schedule is applied in the train step, at state["step"]
        learning_rate=optim.UNIT_LEARNING_RATE, weight_decay=config.optimizer.weight_decay, b1=config.optimizer.b1,
        b2=config.optimizer.b2, eps=config.optimizer.eps, grad_clip_norm=config.optimizer.grad_clip_norm)
    return tx, schedule


def make_step_functions(config: ml_collections.ConfigDict, plan: RunPlan, parts: steps.ModelParts, tx, schedule,
                        mesh):
    """(train_step, eval_step) of ``config``, jitted over ``mesh`` (not yet traced)."""
    compute_dtype = jnp.bfloat16 if config.precision == "bfloat16" else jnp.float32
    train_step = steps.make_train_step(
        parts, tx, schedule, num_classes=plan.num_classes, compute_dtype=compute_dtype, seed=config.seed, mesh=mesh,
        skip_nonfinite=config.nonfinite_policy == "skip", ema_decay=config.ema_decay,
        mix=data.MixConfig(mixup_alpha=config.augment.mixup_alpha, cutmix_alpha=config.augment.cutmix_alpha,
                           prob=config.augment.mix_prob, switch_prob=config.augment.switch_prob,
                           label_smoothing=config.augment.label_smoothing))
    eval_step = steps.make_eval_step(parts, compute_dtype=compute_dtype, mesh=mesh)
    return train_step, eval_step


def make_steps(config: ml_collections.ConfigDict, plan: RunPlan, mesh):
    """(parts, initial state, train_step, eval_step) for ``config`` over ``mesh``."""
    tx, schedule = make_optimizer(config, plan)
    parts, state = steps.init_train_state(lambda: create_model_from_config(config, plan.num_classes), tx, mesh,
                                          ema=config.ema_decay > 0)
    train_step, eval_step = make_step_functions(config, plan, parts, tx, schedule, mesh)
    return parts, state, train_step, eval_step


def capacity_notice(saved: dict[str, Any], devices: int, shard_count: int, fixed_shards: bool) -> str | None:
    """One line saying what a resume on another device count changes; None if it is the same.

    Args:
      saved: the checkpoint's ``model_info`` (``devices`` / ``data_shards`` of the run that wrote it;
        absent in checkpoints of older versions, which get no notice).
      devices, shard_count: this run's device count and data shard count.
      fixed_shards: whether ``config.data_shards`` is set (not 0 = one shard per device).
    """
    saved_devices, saved_shards = saved.get("devices"), saved.get("data_shards")
    if saved_devices is None or saved_devices == devices:
        return None
    if saved_shards == shard_count:
        order = f"the data order is unchanged (config.data_shards={shard_count} fixed)"
    else:
        how = "fixed at" if fixed_shards else "one per device:"
        order = (f"the data order changes ({saved_shards} -> {shard_count} data shards, {how} {shard_count}; "
                 "fix config.data_shards to keep it)")
    return (f"Resuming on {devices} devices from a checkpoint written on {saved_devices}: parameters, batch "
            f"statistics and optimizer state are restored exactly; {order}; later steps match an "
            "uninterrupted run to float rounding, not bitwise.")


def restore(ckpt: checkpoint_lib.Checkpointer, state, info: dict[str, Any], shard_count: int,
             fixed_shards: bool):
    """(start step, state, resumed?) from the newest readable checkpoint, into ``state``'s shardings."""
    restored = ckpt.restore_latest(steps.abstract_train_state(state), info)
    if restored is None:
        return 0, state, False
    start_step, state = restored
    logging.info("Resumed from %s at step %d", ckpt.directory, start_step)
    notice = capacity_notice(ckpt.restore_model_info(start_step), jax.device_count(), shard_count, fixed_shards)
    if notice:
        logging.warning(notice)
    return start_step, state, True


def input_streams(config: ml_collections.ConfigDict, builder, plan: RunPlan, mesh, shard_count: int,
                   start_step: int):
    """(train dataset rebuilt at ``start_step``, eval dataset) of this process."""
    process, processes = jax.process_index(), jax.process_count()
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
    return train_ds, eval_ds
