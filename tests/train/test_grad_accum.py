"""Gradient accumulation (``config.grad_accum_steps``, dog_jax/train/accumulate.py): k micro-batches make
the update of one batch of the same size (LayerNorm model), k = 1 is bitwise the step without
accumulation, a run with it logs, checkpoints and resumes per optimizer step, and a batch it cannot
split is refused in one line."""

import json
import logging
import os
import re
import shutil

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from dog_jax import data, models
from dog_jax.data import device_augment
from dog_jax.data.mixing import mix_batch
from dog_jax.train import accumulate, optim, run_spec, sharding, steps, train_and_evaluate
from dog_jax.train import config as config_lib
from dog_jax.train.run_setup import accumulation_notice
from tests.support.checkpoints import assert_bitwise_equal, load_state
from tests.support.configs import load, tiny_config


def _tiny_convnext(drop_path_rate=0.0):
    """A LayerNorm model (ConvNeXt, 32 px inputs): an example's output does not depend on its batch."""
    return models.create_model("convnext_atto", num_classes=10, depths=(1, 1, 1, 1), dims=(8, 16, 24, 32),
                               drop_path_rate=drop_path_rate, rngs=nnx.Rngs(params=0, dropout=1))


def _batches(count, size, *, erase_boxes=False, seed=0):
    rng = np.random.default_rng(seed)
    batches = []
    for _ in range(count):
        batch = {"image": rng.integers(0, 256, (size, 32, 32, 3), dtype=np.uint8),
                 "label": rng.integers(0, 10, size).astype(np.int32)}
        if erase_boxes:
            batch["erase_box"] = np.tile(np.array([[4, 4, 12, 10]], np.int32), (size, 1))
        batches.append(batch)
    return batches


def _run(train_step, state, rng_state, batches, mesh):
    """(final state, metrics of every step) on the host, from a copy of ``state`` (the step donates it).
    Compiled without XLA's expensive optimisations (as the trainer's init on CPU): half the compile time,
    the same program for every variant compared."""
    state = jax.tree.map(jnp.copy, state)
    batches = [sharding.global_batch(batch, mesh) for batch in batches]
    compiled = train_step.lower(state, batches[0], rng_state).compile(compiler_options=steps._FAST_COMPILE)
    metrics = []
    for batch in batches:
        state, step_metrics = compiled(state, batch, rng_state)
        metrics.append(jax.device_get(step_metrics))
    return jax.device_get(state), metrics


def test_micro_batches_take_rows_from_every_device():
    """Rows of a batch split over 2 devices (0-3 on the first, 4-7 on the second), in 2 micro-batches:
    each micro-batch takes half of every device's rows, in order, so that no row changes device."""
    batch = {"label": jnp.arange(8), "image": jnp.arange(8 * 2).reshape(8, 2)}
    micro = accumulate.micro_batch_rows(batch, 2, devices=2)
    np.testing.assert_array_equal(micro["label"], [[0, 1, 4, 5], [2, 3, 6, 7]])
    np.testing.assert_array_equal(micro["image"][1], batch["image"][np.array([2, 3, 6, 7])])


@pytest.mark.slow  # two compiles of a train step
def test_k_micro_batches_give_the_update_of_one_batch_k_times_larger():
    """ConvNeXt (LayerNorm), no drop path, no mixing: 2 steps with k = 4 micro-batches of 4 and with
    one batch of 16 give the same parameters, optimizer state and metrics to float32 rounding."""
    mesh = sharding.create_mesh()
    tx = optim.create_optimizer(learning_rate=optim.UNIT_LEARNING_RATE, weight_decay=0.05)
    schedule = optax.linear_schedule(1e-3, 5e-4, 10)
    batches = _batches(2, 16)
    parts, state = steps.init_train_state(_tiny_convnext, tx, mesh, ema=True)
    results = []
    for k in (1, 4):
        train_step = steps.make_train_step(
            parts, tx, schedule, num_classes=10, mix=data.MixConfig(label_smoothing=0.1), compute_dtype=jnp.float32,
            seed=0, mesh=mesh, ema_decay=0.99, grad_accum_steps=k)
        results.append(_run(train_step, state, parts.rng_state, batches, mesh))
    (one, one_metrics), (accumulated, accumulated_metrics) = results
    assert int(one["step"]) == int(accumulated["step"]) == 2  # one optimizer step per batch
    chex.assert_trees_all_close(accumulated, one, rtol=1e-5, atol=1e-6)
    for got, expected in zip(accumulated_metrics, one_metrics):
        chex.assert_trees_all_close(got, expected, rtol=1e-5, atol=1e-6)


def _step_without_accumulation(parts, tx, schedule, *, num_classes, mix, seed, mesh, ema_decay):
    """The train step as it was before gradient accumulation existed (dog_jax/train/steps.py at
    ed3b165, float32, without the non-finite skip), for the bitwise comparison below."""
    mix_key = jax.random.key(seed)
    erase_key = jax.random.fold_in(mix_key, np.uint32(2**32 - 1))

    def train_step(state, batch, rng_state):
        step = state["step"]
        images = device_augment.model_images(batch["image"])
        if "erase_box" in batch:
            images = device_augment.erase(jax.random.fold_in(erase_key, step), images, batch["erase_box"])
        images, targets = mix_batch(jax.random.fold_in(mix_key, step), images, batch["label"], num_classes, mix)
        step_rngs = steps._rng_for_step(rng_state, step)

        def loss_fn(params):
            model = nnx.merge(parts.train_graph, params, state["batch_stats"], step_rngs)
            logits = model(images).astype(jnp.float32)
            loss = jnp.mean(optax.softmax_cross_entropy(logits, targets))
            return loss, (logits, nnx.to_pure_dict(nnx.state(model, nnx.BatchStat)))

        (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
        learning_rate = jnp.asarray(schedule(step), jnp.float32)
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        updates = jax.tree.map(lambda update: learning_rate * update, updates)
        new_state = {"step": step + 1, "params": optax.apply_updates(state["params"], updates),
                     "batch_stats": batch_stats, "opt_state": opt_state}
        d = steps.ema_decay_at(step, ema_decay)
        new_state["ema"] = jax.tree.map(lambda average, value: d * average + (1.0 - d) * value,
                                        state["ema"], {"params": new_state["params"], "batch_stats": batch_stats})
        grad_norm = optax.tree.norm(grads)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        return new_state, {"loss": loss,
                           "accuracy": jnp.mean((jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32)),
                           "grad_norm": grad_norm, "learning_rate": learning_rate,
                           "nonfinite": 1.0 - finite.astype(jnp.float32)}

    replicated = sharding.replicated(mesh)
    return jax.jit(train_step, in_shardings=(replicated, sharding.batch_sharded(mesh), replicated),
                   out_shardings=(replicated, replicated), donate_argnums=(0,))


@pytest.mark.slow  # two compiles of a train step
def test_one_micro_batch_is_bitwise_the_step_without_accumulation():
    """grad_accum_steps=1 (the default) with every random stream in use -- mixup/CutMix, erasing noise,
    drop path -- and an EMA: the same bits as the step before accumulation, over 2 steps."""
    mesh = sharding.create_mesh()
    tx = optim.create_optimizer(learning_rate=optim.UNIT_LEARNING_RATE, weight_decay=0.05, grad_clip_norm=1.0)
    schedule = optax.linear_schedule(1e-3, 5e-4, 10)
    mix = data.MixConfig(mixup_alpha=0.8, cutmix_alpha=1.0, label_smoothing=0.1)
    batches = _batches(2, 8, erase_boxes=True)
    parts, state = steps.init_train_state(lambda: _tiny_convnext(drop_path_rate=0.3), tx, mesh, ema=True)
    results = []
    for build in (steps.make_train_step, _step_without_accumulation):
        extra = {"compute_dtype": jnp.float32} if build is steps.make_train_step else {}
        train_step = build(parts, tx, schedule, num_classes=10, mix=mix, seed=3, mesh=mesh, ema_decay=0.99, **extra)
        results.append(_run(train_step, state, parts.rng_state, batches, mesh))
    assert_bitwise_equal(results[0], results[1])


@pytest.mark.parametrize("changes, message", [
    ({"grad_accum_steps": 3},
     "config.batch_size=4096 is not divisible by config.grad_accum_steps=3 x 8 devices = 24 (every micro-batch "
     "is split over the devices); use a multiple of 24, e.g. --config.batch_size=4080, or a grad_accum_steps "
     "that divides 512."),
    ({"grad_accum_steps": 0}, "config.grad_accum_steps=0 must be a positive int"),
])
def test_a_batch_that_accumulation_cannot_split_is_one_line(changes, message):
    config = load("convnext")
    for key, value in changes.items():
        config[key] = value
    with pytest.raises(config_lib.ConfigError, match=re.escape(message)) as info:
        run_spec.check(config, device_count=8)
    assert "\n" not in str(info.value)


@pytest.mark.slow
def test_an_accumulated_run_logs_checkpoints_and_resumes_per_optimizer_step(tiny_data_dir, tmp_path, caplog):
    """ConvMixer (BatchNorm) with mixup/CutMix and erasing, 16 examples per step as 2 micro-batches of 8:
    3 optimizer steps logged one by one; stopped after step 1 and resumed, it ends bitwise as the
    uninterrupted run, and its config.json records the setting."""
    config = tiny_config(tiny_data_dir, grad_accum_steps=2, num_train_steps=3, eval_every_steps=3,
                         checkpoint_every_steps=1)
    reference = train_and_evaluate(config, str(tmp_path / "reference"))
    assert [entry["step"] for entry in reference["train_history"]] == [1, 2, 3]
    assert reference["final_step"] == 3 and reference["final_eval"]["eval_examples"] > 0
    workdir = str(tmp_path / "resumed")
    stopped = train_and_evaluate(config, workdir, stop_requested=lambda step: step == 1)
    assert stopped["interrupted"] and stopped["final_step"] == 1
    # The same checkpoint resumed without accumulation (e.g. on a larger slice): allowed, and said.
    shutil.copytree(workdir, tmp_path / "unaccumulated")
    with caplog.at_level(logging.WARNING):
        plain = train_and_evaluate(tiny_config(tiny_data_dir, num_train_steps=2, eval_every_steps=2,
                                               checkpoint_every_steps=1), str(tmp_path / "unaccumulated"))
    assert plain["start_step"] == 1 and plain["final_step"] == 2
    assert [r.getMessage() for r in caplog.records if "grad_accum_steps" in r.getMessage()] == [
        accumulation_notice({"grad_accum_steps": 2}, 1)]
    resumed = train_and_evaluate(config, workdir)
    assert resumed["start_step"] == 1 and resumed["final_step"] == 3
    assert_bitwise_equal(load_state(workdir, 3), load_state(str(tmp_path / "reference"), 3))
    losses = [(entry["step"], entry["loss"]) for entry in resumed["train_history"]]
    assert losses == [(entry["step"], entry["loss"]) for entry in reference["train_history"]]
    with open(os.path.join(workdir, "config.json")) as f:
        saved = json.load(f)
    assert saved["grad_accum_steps"] == 2 and saved["provenance"]


def test_a_resume_with_other_micro_batches_is_said_in_one_line():
    assert accumulation_notice({"grad_accum_steps": 4}, 4) is None
    assert accumulation_notice({}, 2) is None  # a checkpoint written before the field
    line = accumulation_notice({"grad_accum_steps": 4}, 2)
    assert "\n" not in line
    assert line.startswith("Resuming with config.grad_accum_steps=2 from a checkpoint written with 4")
    assert "global batch and data order are unchanged" in line and "later steps differ" in line
