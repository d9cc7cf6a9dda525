"""The train state, its initialisation, and the jitted train / eval steps.

The train state is a plain dict of arrays (no Python objects), so it can be jitted,
donated, sharded and checkpointed as one pytree::

    {"step": int32 (),
     "params": nested dict of float32 arrays (nnx.Param, keyed by module path),
     "batch_stats": nested dict (nnx.BatchStat: BatchNorm running mean/var; {} if none),
     "opt_state": optax state over "params",
     "ema": {"params", "batch_stats"}}  # only with an EMA (config.ema_decay > 0)

The model's structure (``nnx.GraphDef``) is static: one graph for training
(BatchNorm batch statistics, drop path on) and one for evaluation. Random numbers are
derived from the step: mixup/cutmix use ``fold_in(key(seed), step)``, the random-erasing
noise ``fold_in(erasing key, step)`` and each drop-path stream ``fold_in(its initial key,
step)``, so nothing random is carried in the state. With gradient accumulation
(``grad_accum_steps`` k > 1, ``dog_jax.train.accumulate``) micro-batch j folds j into each of these.

Batches arrive as the input pipelines deliver them (``dog_jax.data.pipeline.batch_spec``):
uint8 pixels, normalised inside the step (``dog_jax.data.device_augment``), in the same jitted
program as the model.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh

from dog_jax.data import device_augment
from dog_jax.data.mixing import MixConfig, mix_batch
from dog_jax.ops.auto import compile_target, target_of
from dog_jax.train import accumulate, sharding

TrainState = dict[str, Any]
_FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


@dataclasses.dataclass(frozen=True)
class ModelParts:
    """A model split for functional use: graphs, and its non-trained random state."""

    train_graph: nnx.GraphDef
    eval_graph: nnx.GraphDef
    rng_state: Any  # pure dict of drop-path RngKey / RngCount variables (may be {}).


def split_model(model: nnx.Module) -> tuple[ModelParts, Any, Any]:
    """(parts, params, batch_stats) with params/batch_stats as pure nested dicts."""
    model.train()
    train_graph, params, batch_stats, rest = nnx.split(model, nnx.Param, nnx.BatchStat, ...)
    model.eval()
    eval_graph = nnx.split(model, nnx.Param, nnx.BatchStat, ...)[0]
    model.train()
    parts = ModelParts(train_graph, eval_graph, nnx.to_pure_dict(rest))
    return parts, nnx.to_pure_dict(params), nnx.to_pure_dict(batch_stats)


def _state_builder(model_fn: Callable[[], nnx.Module], tx: optax.GradientTransformation, mesh: Mesh,
                   ema: bool) -> tuple[ModelParts, Callable[[], tuple[TrainState, Any]]]:
    """(parts without rng state, ``build() -> (state, rng_state)``) for :func:`init_train_state`."""

    def build():
        with compile_target(mesh):
            model = model_fn()
        parts, params, batch_stats = split_model(model)
        state = {"step": jnp.zeros((), jnp.int32), "params": params, "batch_stats": batch_stats,
                 "opt_state": tx.init(params)}
        if ema:
            state["ema"] = {"params": params, "batch_stats": batch_stats}
        return state, parts.rng_state

    parts, _, _ = split_model(nnx.eval_shape(model_fn))
    return parts, build


def init_train_state(model_fn: Callable[[], nnx.Module], tx: optax.GradientTransformation,
                     mesh: Mesh, *, ema: bool = False) -> tuple[ModelParts, TrainState]:
    """Builds the model and optimizer state directly in replicated device memory.

    ``model_fn`` (which creates the model from a fixed seed) runs inside ``jax.jit`` with
    replicated output shardings, so every process computes identical parameters without
    any host-to-device broadcast. ``ema``: add ``state["ema"]``, a copy of the initial
    parameters and batch statistics (the exponential moving average starts there, as timm's).
    """
    parts, build = _state_builder(model_fn, tx, mesh, ema)
    lowered = jax.jit(build, out_shardings=sharding.replicated(mesh)).lower()
    # The init runs once: on CPU, skipping XLA's expensive optimisations cuts its compile time
    # about threefold (docs/performance.md, "Compile times") at no cost that matters.
    options = _FAST_COMPILE if target_of(mesh).platform == "cpu" else None
    state, rng_state = lowered.compile(compiler_options=options)()
    return dataclasses.replace(parts, rng_state=rng_state), state


def abstract_init_train_state(model_fn: Callable[[], nnx.Module], tx: optax.GradientTransformation,
                              mesh: Mesh, *, ema: bool = False) -> tuple[ModelParts, TrainState]:
    """As :func:`init_train_state`, but nothing is computed or allocated: the state and
    ``parts.rng_state`` are ``ShapeDtypeStruct`` trees with their replicated shardings (the
    arguments for lowering the steps ahead of time, e.g. for devices this host does not have)."""
    parts, build = _state_builder(model_fn, tx, mesh, ema)
    replicated = sharding.replicated(mesh)
    state, rng_state = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated),
                                    jax.eval_shape(build))
    return dataclasses.replace(parts, rng_state=rng_state), state


def abstract_train_state(state: TrainState) -> TrainState:
    """``ShapeDtypeStruct`` tree (with shardings) of ``state``: the target for a restore."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)


def _rng_for_step(rng_state: Any, step: jax.Array) -> Any:
    """Derives every RNG stream's key from (its initial key, step); counters restart at 0."""

    def derive(leaf):
        if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            return jax.random.fold_in(leaf, step)
        return jnp.zeros_like(leaf)

    return jax.tree.map(derive, rng_state)


def _rng_for_micro_batch(step_rngs: Any, index: jax.Array) -> Any:
    """The streams of :func:`_rng_for_step` for micro-batch ``index`` (keys folded, counters kept at 0)."""
    return jax.tree.map(lambda leaf: accumulate.micro_key(leaf, index)
                        if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key) else leaf, step_rngs)


#: EMA warm-up constant c of ``ema_decay_at``: the decay used at update t is at most (1 + t)/(c + t).
EMA_WARMUP_C = 10.0


def ema_decay_at(step: jax.Array | int, decay: float, warmup: bool = True) -> jax.Array:
    """EMA decay used for the update made at optimizer step ``step`` (0-based).

    With ``warmup``, ``min(decay, (1 + step) / (10 + step))``: the average forgets the random
    initial weights within the first few hundred steps, then tightens until it reaches ``decay``
    (0.9999 at step ~90,000). Without it the init keeps a weight ``decay**T`` after T steps: 21 %
    for 0.9999 over the 15.6k steps of 50 ImageNet epochs at batch 4096 (docs/experiments.md).
    The same idea as the ``num_updates`` of TensorFlow's ExponentialMovingAverage.
    """
    decay = jnp.asarray(decay, jnp.float32)
    if not warmup:
        return decay
    t = jnp.asarray(step, jnp.float32)
    return jnp.minimum(decay, (1.0 + t) / (EMA_WARMUP_C + t))


def make_train_step(parts: ModelParts, tx: optax.GradientTransformation, schedule: optax.Schedule, *,
                    num_classes: int, mix: MixConfig, compute_dtype: Any, seed: int, mesh: Mesh,
                    skip_nonfinite: bool = False, ema_decay: float = 0.0, ema_warmup: bool = True,
                    grad_accum_steps: int = 1):
    """Returns ``train_step(state, batch, rng_state) -> (state, metrics)``, jitted with explicit shardings.

    ``rng_state`` is ``parts.rng_state`` (an argument, not a closure, so that it stays a
    sharded global array in multi-process runs).
    ``batch``: ``{"image": uint8 (B, H, W, 3), "label": int32 (B,)}`` sharded over ``"data"``,
    plus ``"erase_box"`` int32 (B, 4) when the pipeline draws random-erasing boxes; the state is
    donated. In the step, before the model: normalisation (``device_augment.model_images``: uint8
    pixels are normalised; floating images are taken as normalised already), the erasing fill
    (``device_augment.erase``), mixup / CutMix, then the cast to ``compute_dtype``.
    Metrics (replicated float32 scalars): ``loss``
    (mixed-target cross-entropy), ``accuracy`` (top-1 against the un-mixed labels),
    ``grad_norm`` (before clipping), ``learning_rate`` (applied to this update),
    ``nonfinite`` (1.0 if the loss or any gradient was NaN/inf, else 0.0).

    ``tx`` must be built with ``optim.UNIT_LEARNING_RATE``: its updates are multiplied by
    ``schedule(state["step"])`` here, so the state's step is the only counter the schedule
    follows (see ``dog_jax.train.optim``).

    ``skip_nonfinite``: on a non-finite step keep params, batch statistics, optimizer
    state and EMA unchanged (only ``step`` advances, so the data stream moves on). Decided
    on the device with ``jnp.where``: no host synchronisation.

    ``ema_decay`` > 0 (the state must have ``"ema"``): after every update
    ``ema = d * ema + (1 - d) * new`` for parameters and batch statistics alike (every float
    entry of the state, as timm's ``ModelEma`` in the ConvNeXt code), with
    ``d = ema_decay_at(step, ema_decay, ema_warmup)``. ``ema_warmup=False`` is the original's
    constant decay, which at 0.9999 over a 50-epoch run keeps ~21 % of the random init.

    ``grad_accum_steps`` k > 1: the batch is taken as k micro-batches (``dog_jax.train.accumulate``:
    the gradient is their float32 mean, BatchNorm statistics are updated once per micro-batch, mixing,
    erasing and drop path are drawn per micro-batch), followed by the one optimizer update, EMA update
    and schedule step above; ``loss`` and ``accuracy`` are the means over the micro-batches. B must be
    divisible by k times the device count. k = 1 is the step without accumulation.
    """
    mix_key = jax.random.key(seed)
    # The erasing noise's own stream. Steps are int32 >= 0, so folding in 2**32 - 1 gives a key that
    # is no step's mixing key fold_in(key(seed), step).
    erase_key = jax.random.fold_in(mix_key, np.uint32(2**32 - 1))

    def train_step(state: TrainState, batch: dict[str, jax.Array], rng_state: Any):
        with compile_target(mesh):  # "auto" ops choose for the mesh's platform (dog_jax.ops.auto)
            return _train_step(state, batch, rng_state)

    def gradients(params, batch_stats, batch, erasing, mixing, rngs):
        """(loss, accuracy, batch_stats, grads) of one batch (or micro-batch); ``erasing``, ``mixing``:
        its keys for the erasing noise and mixup/CutMix, ``rngs`` its drop-path streams."""
        images = device_augment.model_images(batch["image"])
        if "erase_box" in batch:
            images = device_augment.erase(erasing, images, batch["erase_box"])
        images, targets = mix_batch(mixing, images, batch["label"], num_classes, mix)
        images = images.astype(compute_dtype)

        def loss_fn(params):
            model = nnx.merge(parts.train_graph, params, batch_stats, rngs)
            logits = model(images).astype(jnp.float32)
            loss = jnp.mean(optax.softmax_cross_entropy(logits, targets))
            return loss, (logits, nnx.to_pure_dict(nnx.state(model, nnx.BatchStat)))

        (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        accuracy = jnp.mean((jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32))
        return loss, accuracy, batch_stats, grads

    def _train_step(state: TrainState, batch: dict[str, jax.Array], rng_state: Any):
        step = state["step"]
        step_erase_key, step_mix_key = jax.random.fold_in(erase_key, step), jax.random.fold_in(mix_key, step)
        step_rngs = _rng_for_step(rng_state, step)
        if grad_accum_steps == 1:  # the step's own keys: a run without accumulation draws what it always drew
            loss, accuracy, batch_stats, grads = gradients(state["params"], state["batch_stats"], batch,
                                                           step_erase_key, step_mix_key, step_rngs)
        else:
            def micro_gradients(micro_batch, batch_stats, index):
                return gradients(state["params"], batch_stats, micro_batch, accumulate.micro_key(step_erase_key, index),
                                 accumulate.micro_key(step_mix_key, index), _rng_for_micro_batch(step_rngs, index))

            loss, accuracy, batch_stats, grads = accumulate.accumulate_gradients(
                micro_gradients, batch, state["batch_stats"], state["params"], grad_accum_steps, mesh)
        learning_rate = jnp.asarray(schedule(step), jnp.float32)
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        updates = jax.tree.map(lambda update: learning_rate * update, updates)
        new_state = {"step": step + 1, "params": optax.apply_updates(state["params"], updates),
                     "batch_stats": batch_stats, "opt_state": opt_state}
        if ema_decay:
            d = ema_decay_at(step, ema_decay, ema_warmup)
            new_state["ema"] = jax.tree.map(lambda average, value: d * average + (1.0 - d) * value,
                                            state["ema"], {"params": new_state["params"], "batch_stats": batch_stats})
        grad_norm = optax.tree.norm(grads)  # non-finite iff some gradient is.
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        if skip_nonfinite:
            kept = {key: state[key] for key in ("params", "batch_stats", "opt_state", "ema") if key in state}
            updated = {key: new_state[key] for key in kept}
            new_state.update(jax.tree.map(lambda new, old: jnp.where(finite, new, old), updated, kept))
        metrics = {
            "loss": loss,
            "accuracy": accuracy,
            "grad_norm": grad_norm,
            "learning_rate": learning_rate,
            "nonfinite": 1.0 - finite.astype(jnp.float32),
        }
        return new_state, metrics

    replicated = sharding.replicated(mesh)
    return jax.jit(train_step, in_shardings=(replicated, sharding.batch_sharded(mesh), replicated),
                   out_shardings=(replicated, replicated), donate_argnums=(0,))


def make_eval_step(parts: ModelParts, *, compute_dtype: Any, mesh: Mesh):
    """Returns ``eval_step(state, batch, rng_state) -> sums``, jitted.

    ``batch``: ``{"image": uint8 (B, H, W, 3), "label": int32 (B,), "mask": float32 (B,)}``
    (mask 0 for padding); images are normalised as in the train step. Returns replicated float32
    sums over unmasked examples: ``loss`` (plain cross-entropy), ``top1``, ``top5``, ``count``.
    """

    def eval_step(state: TrainState, batch: dict[str, jax.Array], rng_state: Any):
        with compile_target(mesh):
            return _eval_step(state, batch, rng_state)

    def _eval_step(state: TrainState, batch: dict[str, jax.Array], rng_state: Any):
        model = nnx.merge(parts.eval_graph, state["params"], state["batch_stats"], rng_state)
        logits = model(device_augment.model_images(batch["image"]).astype(compute_dtype)).astype(jnp.float32)
        labels, mask = batch["label"], batch["mask"]
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
        k = min(5, logits.shape[-1])
        topk = jax.lax.top_k(logits, k)[1]
        in_top5 = jnp.any(topk == labels[:, None], axis=-1)
        return {"loss": jnp.sum(loss * mask),
                "top1": jnp.sum((topk[:, 0] == labels) * mask),
                "top5": jnp.sum(in_top5 * mask),
                "count": jnp.sum(mask)}

    replicated = sharding.replicated(mesh)
    return jax.jit(eval_step, in_shardings=(replicated, sharding.batch_sharded(mesh), replicated),
                   out_shardings=replicated)
