"""The AOT report's search for the smallest gradient accumulation at which the recipe's batch fits.

When the global batch does not fit on the slice, ``aot.aot_report`` finds the largest per-device
batch that does (``aot.largest_fitting_batch``) and, keeping the recipe's batch, the smallest
``config.grad_accum_steps`` k at which it fits (:func:`smallest_fitting_accumulation`), both by
compiling. Here k runs over the divisors of the per-device batch (so that every micro-batch is
split evenly over the devices, ``config.validate``) above the config's own k.

A k whose per-device micro-batch is larger than the largest plain batch that fits is not compiled:
the accumulated step runs that micro-batch's forward and backward pass and holds more besides (the
whole batch, the float32 gradient sum), so it cannot fit where the plain step did not. Among the
rest, memory falls as k grows (smaller micro-batches), so a bisection settles the smallest fitting k;
the first probe is the smallest candidate, which is the answer whenever the micro-batch alone was
what did not fit.
"""

from __future__ import annotations

from typing import Callable

from dog_jax.train import run_spec


def accumulation_candidates(per_device: int, current: int, largest_per_device: int, multiple: int = 8) -> list[int]:
    """The k (ascending) worth compiling for a per-device batch of ``per_device`` (module docstring):
    divisors above ``current`` whose micro-batch is at most ``largest_per_device`` (the largest plain
    batch that fits, 0 if not even ``multiple`` did: then micro-batches below ``multiple``)."""
    bound = largest_per_device or multiple - 1
    return [k for k in range(current + 1, per_device + 1) if per_device % k == 0 and per_device // k <= bound]


def smallest_fitting_accumulation(spec: run_spec.RunSpec, capacity: int, *, largest_per_device: int,
                                  num_devices: int, memory_of: Callable[[run_spec.RunSpec], int]
                                  ) -> tuple[int | None, dict[int, int]]:
    """(the smallest fitting k or None, {k: memory} of every k compiled), keeping ``spec``'s global batch.

    Args:
      spec: the run whose batch did not fit.
      capacity: bytes a device may hold (the chip's HBM less the reserve).
      largest_per_device: the plain batch search's answer (bounds the candidates, module docstring).
      num_devices: devices of the slice.
      memory_of: a run spec -> the bytes it holds per device, by compiling its train step (above
        ``capacity`` when XLA refused it), with the loop's other batches added.
    """
    per_device = spec.plan.global_batch // num_devices
    candidates = accumulation_candidates(per_device, spec.plan.grad_accum_steps, largest_per_device)
    known: dict[int, int] = {}
    low, high = 0, len(candidates)  # the answer's index lies in [low, high]; len(candidates): none fits
    while low < high:
        probe = low if not known else (low + high) // 2  # the smallest candidate first (module docstring)
        k = candidates[probe]
        known[k] = memory_of(spec.at_batch_size(spec.plan.global_batch, k))
        if known[k] <= capacity:
            high = probe
        else:
            low = probe + 1
    return (candidates[low] if low < len(candidates) else None), known
