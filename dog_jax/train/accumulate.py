"""Gradient accumulation: one optimizer step from k micro-batches, inside the one jitted train step.

``config.grad_accum_steps = k`` (the ConvNeXt code's ``--update_freq``) keeps the recipe's global
batch B and cuts it into k micro-batches of B/k examples. The train step (``steps.make_train_step``)
runs a ``lax.scan`` over them: each micro-batch's loss and gradients are computed (float32 gradients,
summed in the scan's carry), then divided by k, and the optimizer, the learning-rate schedule and
the EMA take *one* step with that mean. Only one micro-batch's activations are alive at a time, so
the step needs about the memory of a B/k batch plus one float32 copy of the parameters (the sum).

What this is and is not equal to (``docs/training.md``, "Gradient accumulation"):

* the gradient is the mean over the B examples, as with one batch of B, for models whose output
  for an example does not depend on the other examples of its batch (LayerNorm: ConvNeXt, HorNet),
  up to float rounding (tests/train/test_grad_accum.py);
* BatchNorm (ConvMixer) normalises each micro-batch with the micro-batch's own statistics, and its
  running statistics are updated k times per optimizer step, in order;
* mixup/CutMix mix within a micro-batch (the image at the mirrored position of the micro-batch),
  with a coefficient drawn per micro-batch; random-erasing noise and drop path are drawn per
  micro-batch: micro-batch j uses the step's key with j folded in (``micro_key``).

Which rows form micro-batch j: the batch arrives split over the devices along its leading axis
(each device holds B/D consecutive rows); micro-batch j takes rows ``j*m ... (j+1)*m - 1`` of every
device's rows (m = B/(D k)), so every micro-batch is again split over all devices and no example
moves between devices (:func:`split_micro_batches`).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from dog_jax.train import sharding

#: ``micro_gradients(micro_batch, batch_stats, index) -> (loss, accuracy, batch_stats, grads)`` of one micro-batch.
MicroGradients = Callable[[dict[str, jax.Array], Any, jax.Array], tuple[jax.Array, jax.Array, Any, Any]]


def micro_key(key: jax.Array, index: jax.Array | int) -> jax.Array:
    """The key of micro-batch ``index`` drawn from the step's ``key`` (``fold_in``; never used when k = 1,
    where the step's own key is used, so that a step without accumulation keeps its random numbers)."""
    return jax.random.fold_in(key, index)


def micro_batch_rows(batch: dict[str, Any], k: int, *, devices: int) -> dict[str, Any]:
    """(B, ...) -> (k, B/k, ...): entry j holds rows ``j*m ... (j+1)*m - 1`` of each of the ``devices``
    consecutive parts of B/D rows (m = B/(D k)), the parts in order. Only reshapes and a transpose."""

    def split(x):
        rows = x.shape[0] // (devices * k)
        # (B, ...) -> (D, k, m, ...): the leading axis stays the device one, so on a batch split over
        # the devices the reshape is local; then micro-batch first.
        x = x.reshape(devices, k, rows, *x.shape[1:]).swapaxes(0, 1)
        return x.reshape(k, devices * rows, *x.shape[3:])

    return jax.tree.map(split, batch)


def split_micro_batches(batch: dict[str, jax.Array], k: int, mesh: Mesh) -> dict[str, jax.Array]:
    """Cuts a batch-sharded global batch into k micro-batches without moving rows between devices.

    Args:
      batch: arrays of leading axis B (e.g. ``image`` uint8 (B, H, W, 3), ``label`` int32 (B,)),
        sharded over the mesh's ``"data"`` axis (D devices, B/D consecutive rows each).
      k: micro-batches; B must be divisible by D k (``config.validate``).

    Returns:
      The same keys with shape (k, B/k, ...) (:func:`micro_batch_rows`), sharded over ``"data"`` along
      the second axis: each device keeps its own rows.
    """
    per_device_micro = NamedSharding(mesh, PartitionSpec(None, sharding.DATA_AXIS))
    micro = micro_batch_rows(batch, k, devices=mesh.shape[sharding.DATA_AXIS])
    return jax.tree.map(lambda x: jax.lax.with_sharding_constraint(x, per_device_micro), micro)


def accumulate_gradients(micro_gradients: MicroGradients, batch: dict[str, jax.Array], batch_stats: Any,
                         params: Any, k: int, mesh: Mesh) -> tuple[jax.Array, jax.Array, Any, Any]:
    """The mean gradient of k micro-batches of ``batch``, by a ``lax.scan`` (one micro-batch at a time).

    Args:
      micro_gradients: ``(micro_batch, batch_stats, index) -> (loss, accuracy, batch_stats, grads)`` of
        one micro-batch (float32 scalars; BatchNorm running statistics after it; gradients shaped as
        ``params``); ``index`` is the micro-batch's int32 position, for its random numbers.
      batch: the global batch, as the train step receives it (:func:`split_micro_batches`).
      batch_stats: the running statistics before the step; micro-batch j starts from those that
        micro-batch j - 1 left.
      params: the parameters (only their shapes are read here: the gradient sum's zeros).
      k: micro-batches (>= 2; k = 1 is the train step without this function).

    Returns:
      (loss, accuracy, batch_stats, grads): loss and accuracy are the means over the micro-batches
      (equal sizes: the batch's means), batch_stats after the last micro-batch, grads the float32 mean.
    """
    micro = split_micro_batches(batch, k, mesh)
    batch_sharded = sharding.batch_sharded(mesh)

    def body(carry, xs):
        grad_sum, stats, loss_sum, accuracy_sum = carry
        index, micro_batch = xs
        micro_batch = jax.tree.map(lambda x: jax.lax.with_sharding_constraint(x, batch_sharded), micro_batch)
        loss, accuracy, stats, grads = micro_gradients(micro_batch, stats, index)
        grad_sum = jax.tree.map(lambda total, grad: total + grad.astype(jnp.float32), grad_sum, grads)
        return (grad_sum, stats, loss_sum + loss, accuracy_sum + accuracy), None

    zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), params)
    start = (zeros, batch_stats, jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32))
    (grad_sum, batch_stats, loss_sum, accuracy_sum), _ = jax.lax.scan(
        body, start, (jnp.arange(k, dtype=jnp.int32), micro))
    grads = jax.tree.map(lambda total: total / k, grad_sum)
    return loss_sum / k, accuracy_sum / k, batch_stats, grads
