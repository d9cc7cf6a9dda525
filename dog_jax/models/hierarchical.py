"""The four-stage skeleton ConvNeXt and HorNet share (the official HorNet code reuses ConvNeXt's):

  stem (Conv p×p stride p → LayerNorm) → 4 stages, each [LayerNorm → Conv 2×2 stride 2] then
  identical blocks → head (global average pool → LayerNorm → Linear).

The families differ only in their block, supplied as a factory. Stem, downsampling and head
weights are trunc-normal 0.02 (cut at ±2), biases 0, head weight × ``head_init_scale``.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
from flax import nnx

from dog_jax.initializers import trunc_normal_02
from dog_jax.models.layers import Downsample, PatchStem, PoolNormHead, linear_drop_path_rates
from dog_jax.models.remat import run_blocks

# (stage index, stage width, drop-path rate of the block, rngs) -> block (N, H, W, C) -> (N, H, W, C).
BlockFactory = Callable[[int, int, float, nnx.Rngs], nnx.Module]


class Stage(nnx.Module):
    """[Downsample] followed by ``len(blocks)`` blocks: (N, H, W, C_in) -> (N, H', W', C).

    ``remat``: checkpoint each block (``dog_jax.models.remat``; off by default).
    """

    def __init__(self, downsample: Downsample | None, blocks: list[nnx.Module]):
        self.downsample = downsample
        self.blocks = nnx.List(blocks)
        self.remat = False

    def __call__(self, x: jax.Array) -> jax.Array:
        if self.downsample is not None:
            x = self.downsample(x)
        return run_blocks(self.blocks, x, self.remat)


class HierarchicalNet(nnx.Module):
    """Stem → stages → head: (N, H, W, in_chans) -> (N, num_classes) float32 logits.

    H and W should be multiples of ``patch_size · 2^(stages−1)`` (32 for the standard models).
    """

    def __init__(self, *, in_chans: int, patch_size: int, depths: tuple[int, ...], dims: tuple[int, ...],
                 make_block: BlockFactory, num_classes: int, drop_path_rate: float, head_init_scale: float,
                 dtype: Any, param_dtype: Any, rngs: nnx.Rngs):
        self.num_classes = num_classes
        self.dtype = dtype
        self.stem = PatchStem(in_chans, dims[0], patch_size, kernel_init=trunc_normal_02(), dtype=dtype,
                              param_dtype=param_dtype, rngs=rngs)
        rates = iter(linear_drop_path_rates(drop_path_rate, sum(depths)))
        stages, in_dim = [], dims[0]
        for i, (depth, dim) in enumerate(zip(depths, dims)):
            downsample = (Downsample(in_dim, dim, kernel_init=trunc_normal_02(), dtype=dtype,
                                     param_dtype=param_dtype, rngs=rngs) if i > 0 else None)
            stages.append(Stage(downsample, [make_block(i, dim, next(rates), rngs) for _ in range(depth)]))
            in_dim = dim
        self.stages = nnx.List(stages)
        self.head = PoolNormHead(dims[-1], num_classes, kernel_init=trunc_normal_02(),
                                 head_init_scale=head_init_scale, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

    def forward_features(self, x: jax.Array) -> jax.Array:
        """(N, H, W, in_chans) -> last-stage feature map (N, H/32, W/32, dims[-1])."""
        x = self.stem(x.astype(self.dtype))
        for stage in self.stages:
            x = stage(x)
        return x

    def forward_head(self, x: jax.Array) -> jax.Array:
        """Feature map -> float32 logits (or normalised pooled features when ``num_classes == 0``)."""
        return self.head(x)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.forward_head(self.forward_features(x))
