"""Activation checkpointing per block: trade recomputation for activation memory.

With ``remat`` on, a block's forward pass keeps only its input for the backward pass and recomputes
its inside (``nnx.remat``, i.e. ``jax.checkpoint``) when the gradient reaches it: activation memory
falls from every intermediate of every block to one feature map per block, for about one more
forward pass of FLOPs. The numbers are the same (the recomputation is the same function); BatchNorm
statistics and drop-path draws are not repeated in the model's state. ``train.py`` turns it on with
``--config.remat=true``; docs/tpu.md shows the memory/FLOP trade on TPU.
"""

from __future__ import annotations

from collections.abc import Iterable

import jax
from flax import nnx


@nnx.remat
def _checkpointed(block: nnx.Module, x: jax.Array) -> jax.Array:
    return block(x)


def run_blocks(blocks: Iterable[nnx.Module], x: jax.Array, remat: bool) -> jax.Array:
    """``x`` through ``blocks`` in order; each block checkpointed when ``remat``."""
    for block in blocks:
        x = _checkpointed(block, x) if remat else block(x)
    return x


def set_remat(model: nnx.Module, remat: bool) -> nnx.Module:
    """Turns per-block checkpointing on or off in every block sequence of ``model``; returns it."""
    for _, module in nnx.iter_modules(model):
        if hasattr(module, "remat"):
            module.remat = remat
    return model
