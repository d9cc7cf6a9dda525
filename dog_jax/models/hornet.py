"""HorNet ("HorNet: Efficient High-Order Spatial Interactions with Recursive Gated
Convolutions", Rao et al., NeurIPS 2022) with 7×7 gnconv, in Flax NNX.

Follows the official raoyongming/HorNet code (timm has no HorNet):

  stem, downsampling, head and init as ConvNeXt (trunc-normal 0.02, head_init_scale)
  block:  x = x + drop_path(γ1 · gnconv(LN(x)))
          x = x + drop_path(γ2 · Linear(GELU(Linear(LN(x)))))          γ1, γ2 init 1e-6

gnconv(dim, order, s): dims = [dim/2^(order−1), …, dim/2, dim] (ascending);
  proj_in: 1×1 dim → 2·dim, split into pwa (dims[0]) and abc (sum(dims));
  dw = DWConv7×7(abc) · s — one depthwise conv over all sum(dims) channels, with bias;
  split dw by dims; y = pwa · dw[0]; y = pws[i](y) · dw[i+1] with pws[i]: 1×1 dims[i] → dims[i+1];
  out = proj_out(y), 1×1 dim → dim.
The official hornet_*_7x7 models use orders (2, 3, 4, 5) per stage and s = 1/3.
1×1 convolutions are ``PointwiseLinear`` (``nnx.Linear``) kernels (C_in, C_out): same math.
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
    PointwiseLinear,
    check_stages,
    zeros_init,
)

__all__ = ["GnConv", "HorNet", "HorNetConfig", "gnconv_dims"]


def gnconv_dims(dim: int, order: int) -> tuple[int, ...]:
    """Channel widths of the recursive gating steps, ascending: (dim/2^(order−1), …, dim)."""
    if order < 1 or dim % (2 ** (order - 1)):
        raise ValueError(f"gnconv of order {order} needs a width divisible by {2 ** (order - 1)}, got {dim}.")
    return tuple(dim // 2 ** i for i in range(order))[::-1]


@dataclasses.dataclass(frozen=True)
class HorNetConfig:
    """Architecture of a HorNet with depthwise (not global-filter) gnconv.

    Attributes:
      depths: blocks per stage.
      dims: channels per stage (official: base_dim · (1, 2, 4, 8)).
      orders: gnconv interaction order per stage.
      gnconv_scale: s, the factor on the depthwise output (1/3 for the 7×7 models).
      kernel_size: depthwise kernel size of gnconv.
      ls_init_value: layer-scale init of γ1, γ2.
      head_init_scale: multiplies the initial head weight.
      mlp_ratio: hidden width of the block MLP relative to the stage width.
      patch_size: stem patch size.
      in_chans: input image channels.
      dw_param: "free" (k×k weights per channel) or "basis" (a learned Gaussian-derivative + DoG
        mix per channel, see ``dog_jax.models.basis``).
    """

    depths: tuple[int, ...] = (2, 3, 18, 2)
    dims: tuple[int, ...] = (64, 128, 256, 512)
    orders: tuple[int, ...] = (2, 3, 4, 5)
    gnconv_scale: float = 1.0 / 3.0
    kernel_size: int = 7
    ls_init_value: float = 1e-6
    head_init_scale: float = 1.0
    mlp_ratio: int = 4
    patch_size: int = 4
    in_chans: int = 3
    dw_param: str = "free"

    def __post_init__(self):
        check_dw_param(self.dw_param)
        for name in ("depths", "dims", "orders"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        check_stages("HorNet", self.depths, self.dims)
        if len(self.orders) != len(self.dims):
            raise ValueError(f"HorNet needs one gnconv order per stage; got orders={self.orders}, dims={self.dims}.")
        for dim, order in zip(self.dims, self.orders):
            gnconv_dims(dim, order)


class GnConv(nnx.Module):
    """Recursive gated convolution g^n Conv, (N, H, W, dim) -> (N, H, W, dim)."""

    def __init__(self, dim: int, order: int, *, scale: float, kernel_size: int, dw_init: Initializer,
                 dtype: Any, param_dtype: Any, rngs: nnx.Rngs, dw_param: str = "free"):
        self.dims = gnconv_dims(dim, order)
        self.scale = float(scale)
        lin = dict(kernel_init=trunc_normal_02(), bias_init=zeros_init, dtype=dtype, param_dtype=param_dtype,
                   rngs=rngs)
        self.proj_in = PointwiseLinear(dim, 2 * dim, **lin)
        self.dw = depthwise_layer(dw_param, sum(self.dims), kernel_size, kernel_init=dw_init,
                                  bias_init=zeros_init,
                                  dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.pws = nnx.List([PointwiseLinear(self.dims[i], self.dims[i + 1], **lin) for i in range(order - 1)])
        self.proj_out = PointwiseLinear(dim, dim, **lin)

    def __call__(self, x: jax.Array) -> jax.Array:
        fused = self.proj_in(x)
        pwa, abc = fused[..., :self.dims[0]], fused[..., self.dims[0]:]
        dw = self.dw(abc) * jnp.asarray(self.scale, abc.dtype)
        offsets = [sum(self.dims[:i]) for i in range(len(self.dims) + 1)]
        gates = [dw[..., offsets[i]:offsets[i + 1]] for i in range(len(self.dims))]
        y = pwa * gates[0]
        for i, pw in enumerate(self.pws):
            y = pw(y) * gates[i + 1]
        return self.proj_out(y)


class HorNetBlock(nnx.Module):
    """One HorNet block, (N, H, W, C) -> (N, H, W, C)."""

    def __init__(self, dim: int, order: int, cfg: HorNetConfig, *, dw_init: Initializer, drop_path: float,
                 dtype: Any, param_dtype: Any, rngs: nnx.Rngs):
        self.norm1 = LayerNorm(dim, dtype=dtype, param_dtype=param_dtype)
        self.gnconv = GnConv(dim, order, scale=cfg.gnconv_scale, kernel_size=cfg.kernel_size,
                             dw_init=dw_init, dtype=dtype, param_dtype=param_dtype, rngs=rngs,
                             dw_param=cfg.dw_param)
        self.gamma1 = nnx.Param(jnp.full((dim,), cfg.ls_init_value, param_dtype))
        self.norm2 = LayerNorm(dim, dtype=dtype, param_dtype=param_dtype)
        self.mlp = Mlp(dim, cfg.mlp_ratio * dim, kernel_init=trunc_normal_02(), dtype=dtype,
                       param_dtype=param_dtype, rngs=rngs)
        self.gamma2 = nnx.Param(jnp.full((dim,), cfg.ls_init_value, param_dtype))
        self.drop_path = DropPath(drop_path, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        y = self.gnconv(self.norm1(x))
        x = x + self.drop_path(y * self.gamma1[...].astype(y.dtype))
        y = self.mlp(self.norm2(x))
        return x + self.drop_path(y * self.gamma2[...].astype(y.dtype))


class HorNet(HierarchicalNet):
    """HorNet classifier: (N, H, W, in_chans) -> (N, num_classes) float32 logits.

    H and W should be multiples of ``patch_size · 2^(stages−1)`` (32 for the standard models).
    Build it through :func:`dog_jax.models.create_model`.
    """

    def __init__(self, cfg: HorNetConfig, *, num_classes: int = 1000, dw_init: Initializer,
                 drop_path_rate: float = 0.0, dtype: Any = jnp.float32, param_dtype: Any = jnp.float32,
                 rngs: nnx.Rngs):
        self.config = cfg

        def make_block(stage: int, dim: int, drop_path: float, rngs: nnx.Rngs) -> HorNetBlock:
            return HorNetBlock(dim, cfg.orders[stage], cfg, dw_init=dw_init, drop_path=drop_path,
                               dtype=dtype, param_dtype=param_dtype, rngs=rngs)

        super().__init__(in_chans=cfg.in_chans, patch_size=cfg.patch_size, depths=cfg.depths, dims=cfg.dims,
                         make_block=make_block, num_classes=num_classes, drop_path_rate=drop_path_rate,
                         head_init_scale=cfg.head_init_scale, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
