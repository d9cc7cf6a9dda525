"""Device mesh and shardings for data parallelism over every device of every process.

One mesh axis, ``"data"``, spans all devices. Parameters, BatchNorm statistics and the
optimizer state are replicated (``PartitionSpec()``); batches are split along their
leading axis (``PartitionSpec("data")``). Under ``jax.jit`` with these shardings XLA
inserts the gradient all-reduce, and BatchNorm's batch mean is taken over the *global*
batch (no ``axis_name`` is needed outside ``shard_map``).
"""

from __future__ import annotations

import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def maybe_initialize_distributed(enabled: bool | None = None) -> None:
    """Calls ``jax.distributed.initialize()`` for multi-process runs.

    ``enabled=None`` initializes only when the environment names a coordinator
    (``JAX_COORDINATOR_ADDRESS``) -- on Cloud TPU pod slices and SLURM clusters pass
    ``enabled=True`` (``train.py --multiprocess``) and JAX discovers the cluster itself.
    Must run before any other JAX call.
    """
    if enabled is None:
        enabled = bool(os.environ.get("JAX_COORDINATOR_ADDRESS"))
    if enabled:
        jax.distributed.initialize()


def create_mesh() -> Mesh:
    """A 1-D mesh over ``jax.devices()`` (all processes) with axis ``"data"``."""
    return Mesh(np.asarray(jax.devices()), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    """Every device holds the whole array."""
    return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over ``"data"``."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def process_data_shards(mesh: Mesh, shard_count: int) -> list[int]:
    """The data shards whose examples this process supplies, ascending.

    The global batch is cut into ``shard_count`` equal blocks and block ``s`` is always read
    from data shard ``s``; block ``s`` lands on the device(s) at positions
    ``s * D // shard_count ... ((s + 1) * D - 1) // shard_count`` of the ``"data"`` axis
    (``D = mesh.size``). A process reads the shards that land on its devices, so a global
    batch depends only on ``shard_count``, not on how the devices are spread over
    processes, and not on ``D`` either when ``shard_count`` is fixed.

    Raises:
      ValueError: a shard would land on devices of two processes (``shard_count`` must be a
        multiple of the process count).
    """
    devices = list(mesh.devices.flat)
    mine = []
    for shard in range(shard_count):
        first, last = shard * len(devices) // shard_count, ((shard + 1) * len(devices) - 1) // shard_count
        owners = {devices[d].process_index for d in range(first, last + 1)}
        if len(owners) > 1:
            raise ValueError(f"Data shard {shard} of {shard_count} would be split over processes {sorted(owners)}; "
                             f"use a multiple of the {jax.process_count()} processes for config.data_shards.")
        if owners == {jax.process_index()}:
            mine.append(shard)
    return mine


def global_batch(local_batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Assembles each process's host batch into one global, batch-sharded ``jax.Array``.

    Args:
      local_batch: arrays whose leading axis is this process's share of the global batch.

    Returns:
      The same keys, with leading axis = global batch, sharded over ``"data"``.
    """
    sharding = batch_sharded(mesh)
    return {key: jax.make_array_from_process_local_data(sharding, np.asarray(value))
            for key, value in local_batch.items()}
