"""The pieces of a training run before its first step: dataset, optimizer, steps, restore, input streams.

Used by :mod:`dog_jax.train.loop` (``train_and_evaluate``), each piece made from the run's
:class:`~dog_jax.train.run_spec.RunSpec`; :func:`make_step_functions` also by the TPU compile
(``aot``) and :func:`eval_stream` by ``dog_jax.evaluate``.
"""

from __future__ import annotations

from typing import Any

import jax
import ml_collections
from absl import logging

from dog_jax import data
from dog_jax.train import checkpoint as checkpoint_lib
from dog_jax.train import optim, run_spec, sharding, steps


def open_dataset(config: ml_collections.ConfigDict) -> tuple[Any, run_spec.DataFacts]:
    """The prepared tfds builder (generated or downloaded here if needed) and its facts."""
    builder = data.get_builder(config.dataset, config.data_dir, manual_dir=config.manual_dir)
    facts = run_spec.DataFacts(num_classes=data.num_classes(builder),
                               train_examples=data.split_size(builder, config.train_split),
                               eval_examples=data.split_size(builder, config.eval_split))
    return builder, facts


def make_optimizer(spec: run_spec.RunSpec):
    """(tx, schedule): AdamW at ``optim.UNIT_LEARNING_RATE`` (the step applies the schedule)."""
    config, plan = spec.config, spec.plan
    schedule = optim.learning_rate_schedule(
        schedule=config.optimizer.schedule, peak=config.optimizer.learning_rate, total_steps=plan.total_steps,
        warmup_steps=plan.warmup_steps, min_learning_rate=config.optimizer.min_learning_rate)
    tx = optim.create_optimizer(  # the schedule is applied in the train step, at state["step"]
        learning_rate=optim.UNIT_LEARNING_RATE, weight_decay=config.optimizer.weight_decay, b1=config.optimizer.b1,
        b2=config.optimizer.b2, eps=config.optimizer.eps, grad_clip_norm=config.optimizer.grad_clip_norm)
    return tx, schedule


def make_step_functions(spec: run_spec.RunSpec, parts: steps.ModelParts, tx, schedule, mesh):
    """(train_step, eval_step) of the run, jitted over ``mesh`` (not yet traced)."""
    config, compute_dtype = spec.config, spec.model.compute_dtype
    train_step = steps.make_train_step(
        parts, tx, schedule, num_classes=spec.plan.num_classes, compute_dtype=compute_dtype, seed=config.seed,
        mesh=mesh,
        skip_nonfinite=config.nonfinite_policy == "skip", ema_decay=config.ema_decay,
        grad_accum_steps=spec.plan.grad_accum_steps,
        mix=data.MixConfig(mixup_alpha=config.augment.mixup_alpha, cutmix_alpha=config.augment.cutmix_alpha,
                           prob=config.augment.mix_prob, switch_prob=config.augment.switch_prob,
                           label_smoothing=config.augment.label_smoothing))
    eval_step = steps.make_eval_step(parts, compute_dtype=compute_dtype, mesh=mesh)
    return train_step, eval_step


def make_steps(spec: run_spec.RunSpec, mesh):
    """(parts, initial state, train_step, eval_step) of the run over ``mesh``."""
    tx, schedule = make_optimizer(spec)
    parts, state = steps.init_train_state(lambda: spec.model.create(spec.plan.num_classes), tx, mesh,
                                          ema=spec.config.ema_decay > 0)
    train_step, eval_step = make_step_functions(spec, parts, tx, schedule, mesh)
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


def accumulation_notice(saved: dict[str, Any], grad_accum_steps: int) -> str | None:
    """One line saying what a resume with another ``config.grad_accum_steps`` changes; None if the
    same (or the checkpoint predates the field: ``saved`` is its ``model_info``)."""
    before = saved.get("grad_accum_steps")
    if before is None or before == grad_accum_steps:
        return None
    return (f"Resuming with config.grad_accum_steps={grad_accum_steps} from a checkpoint written with {before}: "
            "parameters, batch statistics and optimizer state are restored exactly and the global batch and "
            "data order are unchanged, but BatchNorm statistics are taken and per-example randomness (mixup/CutMix, "
            "erasing, drop path) drawn per micro-batch: later steps differ from an uninterrupted run's.")


def restore(ckpt: checkpoint_lib.Checkpointer, state, spec: run_spec.RunSpec):
    """(start step, state, resumed?) from the newest readable checkpoint, into ``state``'s shardings."""
    restored = ckpt.restore_latest(steps.abstract_train_state(state), spec.model_info(0, run_facts=False))
    if restored is None:
        return 0, state, False
    start_step, state = restored
    logging.info("Resumed from %s at step %d", ckpt.directory, start_step)
    saved = ckpt.restore_model_info(start_step)
    fixed_shards = bool(spec.config.data_shards)
    for notice in (capacity_notice(saved, spec.devices, spec.plan.data_shards, fixed_shards=fixed_shards),
                   accumulation_notice(saved, spec.plan.grad_accum_steps)):
        if notice:
            logging.warning(notice)
    return start_step, state, True


def eval_stream(builder, split: str, *, local_batch_size: int, image_size: int, crop_pct: float,
                cache: bool = False):
    """This process's part of ``split`` through the eval pipeline: every example once, centre crop of
    ``crop_pct`` at ``image_size``, batches of ``local_batch_size`` padded with masked examples so that
    every process runs the same number of batches (``dog_jax.data.eval_dataset``)."""
    processes = jax.process_count()
    source = data.local_source(builder, split, shard_index=jax.process_index(), shard_count=processes,
                               drop_remainder=False)
    return data.eval_dataset(
        source, local_batch_size=local_batch_size, image_size=image_size, crop_pct=crop_pct, cache=cache,
        num_batches=data.eval_num_batches(data.split_size(builder, split), processes, local_batch_size))


def input_streams(spec: run_spec.RunSpec, builder, mesh, start_step: int):
    """(train dataset rebuilt at ``start_step``, eval dataset) of this process."""
    config, plan = spec.config, spec.plan
    shard_count = plan.data_shards
    shards = sharding.process_data_shards(mesh, shard_count)
    logging.info("Training data: %d shard(s) of %d examples, %d read by this process", shard_count,
                 plan.train_examples // shard_count, len(shards))
    train_sources = [data.local_source(builder, config.train_split, shard_index=shard, shard_count=shard_count,
                                       drop_remainder=True) for shard in shards]
    augmentation = data.TrainAugmentation(
        image_size=config.image_size, crop_area_range=(config.augment.crop_area_min, 1.0), flip=config.augment.flip,
        rand_augment=config.augment.rand_augment, random_erasing=config.augment.random_erasing)
    train_ds = data.train_dataset(train_sources, shard_indices=shards,
                                  shard_batch_size=plan.global_batch // shard_count, augmentation=augmentation,
                                  seed=config.seed, start_step=start_step,
                                  shuffle_buffer=-(-config.shuffle_buffer // shard_count), cache=config.cache_data)
    # Evaluation is not accumulated: its batch is the micro-batch (run_spec.RunPlan).
    eval_ds = eval_stream(builder, config.eval_split, local_batch_size=plan.local_eval_batch_size,
                          image_size=config.image_size, crop_pct=config.eval_crop_pct, cache=config.cache_data)
    return train_ds, eval_ds
