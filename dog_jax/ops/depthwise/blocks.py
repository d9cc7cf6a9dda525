"""Channel-blocked layout (C/8, N, H, W, 8) used by the depthwise loops on wide layers.

Why a block of 8: XLA:CPU vectorises the minor axis with 256-bit registers, i.e. 8 float32 lanes;
one block is then exactly one vector, and a kh*kw window of it (and its weights) fits in L1.

XLA's layout assignment normally turns a transpose into a mere change of *physical* layout, so the
consumer would still walk memory in NHWC order and nothing would be gained. Passing the transposed
array through ``optimization_barrier`` as a flat vector forces a real copy in blocked order.
"""

from __future__ import annotations

import jax
from jax import lax

CHANNEL_BLOCK = 8


def _materialize(x: jax.Array) -> jax.Array:
    return lax.optimization_barrier(x.reshape(-1)).reshape(x.shape)


def to_channel_blocks(x: jax.Array) -> jax.Array:
    """(N, H, W, C) -> (C/8, N, H, W, 8), physically in that order. C must be a multiple of 8."""
    n, h, w, c = x.shape
    return _materialize(x.reshape(n, h, w, c // CHANNEL_BLOCK, CHANNEL_BLOCK).transpose(3, 0, 1, 2, 4))


def from_channel_blocks(x: jax.Array) -> jax.Array:
    """(C/8, N, H, W, 8) -> (N, H, W, C)."""
    blocks, n, h, w, block = x.shape
    return x.transpose(1, 2, 3, 0, 4).reshape(n, h, w, blocks * block)
