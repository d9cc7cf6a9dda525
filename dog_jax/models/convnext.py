"""ConvNeXt V1 ("A ConvNet for the 2020s", Liu et al., 2022) and V2 (Woo et al., 2023) in Flax NNX.

Same network as timm's ``ConvNeXt`` and the official facebookresearch code:

  stem:        Conv 4×4 stride 4 → LayerNorm
  downsample:  LayerNorm → Conv 2×2 stride 2 (before stages 2–4)
  block (V1):  x + drop_path(γ · Linear(GELU(Linear(LN(DWConv7×7(x))))))   γ init 1e-6
  block (V2):  x + drop_path(Linear(GRN(GELU(Linear(LN(DWConv7×7(x)))))))  no layer scale
  head:        global average pool → LayerNorm → Linear

Init as the references: every conv and linear weight (the depthwise too, unless
``dw_init`` says otherwise) trunc-normal std 0.02 cut at ±2, biases 0, head weight
× ``head_init_scale``, LayerNorm 1/0, GRN zeros. ``conv_mlp`` only records that timm's
variant of the same name stores the block MLP as 1×1 convs (state-dict shapes); the
computation is identical.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from dog_jax.initializers import trunc_normal_02
from dog_jax.models.basis import check_dw_param, depthwise_layer
from dog_jax.models.hierarchical import HierarchicalNet
from dog_jax.models.layers import (
    DropPath,
    Initializer,
    LayerNorm,
    Mlp,
    check_stages,
    zeros_init,
)

__all__ = ["ConvNeXt", "ConvNeXtConfig"]


@dataclasses.dataclass(frozen=True)
class ConvNeXtConfig:
    """Architecture of a ConvNeXt V1 / V2.

    Attributes:
      depths: blocks per stage.
      dims: channels per stage.
      kernel_size: depthwise kernel size (7 in the references).
      use_grn: ConvNeXt V2 (GRN in the MLP, no layer scale) when True.
      ls_init_value: layer-scale init (V1: 1e-6); None disables layer scale (V2).
      head_init_scale: multiplies the initial head weight.
      mlp_ratio: hidden width of the block MLP relative to the stage width.
      patch_size: stem patch size.
      conv_mlp: timm stores the MLP as 1×1 convs for this variant (state-dict layout only).
      in_chans: input image channels.
      dw_param: "free" (k×k weights per channel) or "basis" (a learned Gaussian-derivative + DoG
        mix per channel, see ``dog_jax.models.basis``).
    """

    depths: tuple[int, ...] = (3, 3, 9, 3)
    dims: tuple[int, ...] = (96, 192, 384, 768)
    kernel_size: int = 7
    use_grn: bool = False
    ls_init_value: float | None = 1e-6
    head_init_scale: float = 1.0
    mlp_ratio: int = 4
    patch_size: int = 4
    conv_mlp: bool = False
    in_chans: int = 3
    dw_param: str = "free"

    def __post_init__(self):
        check_dw_param(self.dw_param)
        object.__setattr__(self, "depths", tuple(self.depths))
        object.__setattr__(self, "dims", tuple(self.dims))
        check_stages("ConvNeXt", self.depths, self.dims)
        if self.kernel_size < 1 or self.patch_size < 1 or self.mlp_ratio < 1:
            raise ValueError("ConvNeXt kernel_size, patch_size and mlp_ratio must be positive.")


class ConvNeXtBlock(nnx.Module):
    """One ConvNeXt V1/V2 block, (N, H, W, C) -> (N, H, W, C)."""

    def __init__(self, dim: int, cfg: ConvNeXtConfig, *, dw_init: Initializer, drop_path: float,
                 dtype: Any, param_dtype: Any, rngs: nnx.Rngs):
        self.dw = depthwise_layer(cfg.dw_param, dim, cfg.kernel_size, kernel_init=dw_init,
                                  bias_init=zeros_init,
                                  dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.norm = LayerNorm(dim, dtype=dtype, param_dtype=param_dtype)
        self.mlp = Mlp(dim, cfg.mlp_ratio * dim, use_grn=cfg.use_grn, kernel_init=trunc_normal_02(),
                       dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.gamma = (nnx.Param(jnp.full((dim,), cfg.ls_init_value, param_dtype))
                      if cfg.ls_init_value is not None else None)
        self.drop_path = DropPath(drop_path, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        y = self.mlp(self.norm(self.dw(x)))
        if self.gamma is not None:
            y = y * self.gamma[...].astype(y.dtype)
        return x + self.drop_path(y)


class ConvNeXt(HierarchicalNet):
    """ConvNeXt V1/V2 classifier: (N, H, W, in_chans) -> (N, num_classes) float32 logits.

    H and W should be multiples of ``patch_size · 2^(stages−1)`` (32 for the standard models).
    Build it through :func:`dog_jax.models.create_model`.
    """

    def __init__(self, cfg: ConvNeXtConfig, *, num_classes: int = 1000, dw_init: Initializer,
                 drop_path_rate: float = 0.0, dtype: Any = jnp.float32, param_dtype: Any = jnp.float32,
                 rngs: nnx.Rngs):
        self.config = cfg

        def make_block(stage: int, dim: int, drop_path: float, rngs: nnx.Rngs) -> ConvNeXtBlock:
            return ConvNeXtBlock(dim, cfg, dw_init=dw_init, drop_path=drop_path, dtype=dtype,
                                 param_dtype=param_dtype, rngs=rngs)

        super().__init__(in_chans=cfg.in_chans, patch_size=cfg.patch_size, depths=cfg.depths, dims=cfg.dims,
                         make_block=make_block, num_classes=num_classes, drop_path_rate=drop_path_rate,
                         head_init_scale=cfg.head_init_scale, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
