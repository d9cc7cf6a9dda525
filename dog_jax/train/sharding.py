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
