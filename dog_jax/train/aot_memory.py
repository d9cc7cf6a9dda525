"""What a training run holds on each chip, not only the compiled step: the AOT report's "fits".

A run's device memory at its peak, per device (bytes):

* **compiled** — XLA's memory analysis of the step: arguments (train state, *one* batch, the RNG
  state) + outputs + temporaries + generated code − aliased bytes (the train state is donated: its
  outputs reuse the argument buffers, so it counts once). The eval step is compiled with the whole
  train state as an argument, so evaluating the EMA weights needs no extra term;
* **input buffers** — the batches the training loop holds on the device *besides* the step's own
  argument: ``loop.DEVICE_BATCHES - 1`` more (the next batch, put on the device while the step
  runs), in the dtype and shape the batch travels in (``aot._batch_structs``);
* **reserve** — HBM the program may not use. On TPU it is the chip's capacity minus what XLA's
  TPU compiler says a program may use (its own out-of-memory message, libtpu 0.0.42: "available
  HBM (15.75G)" on a 16 GiB v5e chip; ``ChipSpec.xla_usable_hbm_bytes``). On GPU it is the part of
  the memory JAX leaves to others by default: its allocator takes 75 % of the GPU
  (``XLA_PYTHON_CLIENT_MEM_FRACTION``, JAX's "GPU memory allocation" page). No further allowance
  for fragmentation: the temporaries are one block XLA plans itself, and the other buffers are a
  few repeated sizes.

``fits`` = compiled + input buffers + reserve ≤ capacity; the report carries each part.
"""

from __future__ import annotations

import math
from typing import Any

import jax

from dog_jax.train.loop import DEVICE_BATCHES


def per_device_bytes(batch: dict[str, jax.ShapeDtypeStruct], num_devices: int) -> int:
    """Bytes of one batch on each device: every leaf's global size / ``num_devices`` (the batch is
    split along its leading axis over all devices), in the leaf's own dtype."""
    total = sum(math.prod(leaf.shape) * jax.numpy.dtype(leaf.dtype).itemsize for leaf in jax.tree.leaves(batch))
    return -(-total // num_devices)


def input_buffer_bytes(batch_bytes: int) -> int:
    """The loop's batches on a device besides the step's own (module docstring), for batches of
    ``batch_bytes`` per device."""
    return (DEVICE_BATCHES - 1) * batch_bytes


def live_memory(compiled_bytes: int, batch_bytes: int, *, reserve_bytes: int, capacity_bytes: int,
                refused: bool = False) -> dict[str, Any]:
    """The parts of a run's peak memory per device and whether they fit (units: bytes).

    Args:
      compiled_bytes: XLA's figure for the step (module docstring), or the temporaries XLA said it
        needed when it refused to compile the step (``refused``: then it does not fit, whatever
        the sum).
      batch_bytes: one batch on one device (:func:`per_device_bytes`).
      reserve_bytes: HBM the program may not use (module docstring).
      capacity_bytes: the chip's memory.
    """
    input_bytes = input_buffer_bytes(batch_bytes)
    total = compiled_bytes + input_bytes + reserve_bytes
    return {"compiled_bytes": compiled_bytes, "input_buffer_bytes": input_bytes, "reserve_bytes": reserve_bytes,
            "total_bytes": total, "capacity_bytes": capacity_bytes,
            "margin_bytes": capacity_bytes - total, "margin_fraction": 1.0 - total / capacity_bytes,
            "fits": (not refused) and total <= capacity_bytes}


def budget_for_step(batch_bytes: int, *, reserve_bytes: int, capacity_bytes: int) -> int:
    """The largest compiled-step figure that still fits beside the input buffers and the reserve."""
    return capacity_bytes - reserve_bytes - input_buffer_bytes(batch_bytes)
