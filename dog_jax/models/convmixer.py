"""ConvMixer ("Patches Are All You Need?", Trockman & Kolter, 2022) in Flax NNX.

Same network as timm's ``ConvMixer`` and locuslab's reference ``nn.Sequential``:

  stem:   Conv p×p stride p (bias) → act → BatchNorm
  block:  x = x + BN(act(DWConv k×k(x)))        (only the depthwise part is residual)
          x = BN(act(Conv 1×1(x)))
  head:   global average pool → Linear

Every convolution and linear layer has a bias and PyTorch's default init
(U(±1/√fan_in) for weights and biases); BatchNorm starts at scale 1, bias 0.
The 1×1 convolution is a ``PointwiseLinear`` (``nnx.Linear``) kernel (C_in, C_out): same math.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from dog_jax.initializers import torch_default
from dog_jax.models.basis import check_dw_param, depthwise_layer
from dog_jax.models.remat import run_blocks
from dog_jax.models.layers import (
    ACTIVATIONS,
    BatchNorm,
    DropPath,
    Initializer,
    PatchifyConv,
    PointwiseLinear,
    linear_drop_path_rates,
    torch_default_bias_init,
)

__all__ = ["ConvMixer", "ConvMixerConfig"]


@dataclasses.dataclass(frozen=True)
class ConvMixerConfig:
    """Architecture of a ConvMixer.

    Attributes:
      width: channels h of every block.
      depth: number of blocks.
      kernel_size: depthwise kernel size k (k×k).
      patch_size: stem patch size p (kernel p×p, stride p).
      activation: "gelu" (exact erf) or "relu" (timm's convmixer_768_32).
      in_chans: input image channels.
      dw_param: "free" (k×k weights per channel) or "basis" (a learned Gaussian-derivative + DoG
        mix per channel, see ``dog_jax.models.basis``).
    """

    width: int = 512
    depth: int = 12
    kernel_size: int = 9
    patch_size: int = 7
    activation: str = "gelu"
    in_chans: int = 3
    dw_param: str = "free"

    def __post_init__(self):
        check_dw_param(self.dw_param)
        for name in ("width", "depth", "kernel_size", "patch_size", "in_chans"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"ConvMixer {name} must be a positive int, got {value!r}.")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"ConvMixer activation must be one of {sorted(ACTIVATIONS)}, got {self.activation!r}.")


class ConvMixerBlock(nnx.Module):
    """One ConvMixer block on (N, H, W, h) -> (N, H, W, h)."""

    def __init__(self, cfg: ConvMixerConfig, *, dw_init: Initializer, drop_path: float,
                 dtype: Any, param_dtype: Any, rngs: nnx.Rngs):
        h, k = cfg.width, cfg.kernel_size
        self.act_name = cfg.activation
        self.dw = depthwise_layer(cfg.dw_param, h, k, kernel_init=dw_init,
                                  bias_init=torch_default_bias_init(k * k),
                                  dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.dw_norm = BatchNorm(h, dtype=dtype, param_dtype=param_dtype)
        self.pw = PointwiseLinear(h, h, kernel_init=torch_default(), bias_init=torch_default_bias_init(h),
                                  dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.pw_norm = BatchNorm(h, dtype=dtype, param_dtype=param_dtype)
        self.drop_path = DropPath(drop_path, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        act = ACTIVATIONS[self.act_name]
        x = x + self.drop_path(self.dw_norm(act(self.dw(x))))
        return self.pw_norm(act(self.pw(x)))


class ConvMixer(nnx.Module):
    """ConvMixer classifier: (N, H, W, in_chans) images -> (N, num_classes) float32 logits.

    Build it through :func:`dog_jax.models.create_model`. ``drop_path_rate`` (not in the
    reference, default 0) applies stochastic depth to the residual depthwise branch, rising
    linearly over the blocks.
    """

    def __init__(self, cfg: ConvMixerConfig, *, num_classes: int = 1000, dw_init: Initializer,
                 drop_path_rate: float = 0.0, dtype: Any = jnp.float32, param_dtype: Any = jnp.float32,
                 rngs: nnx.Rngs):
        self.config = cfg
        self.num_classes = num_classes
        self.dtype = dtype
        self.remat = False  # checkpoint each block (dog_jax.models.remat)
        h, p = cfg.width, cfg.patch_size
        self.stem_conv = PatchifyConv(cfg.in_chans, h, p, kernel_init=torch_default(),
                                      bias_init=torch_default_bias_init(cfg.in_chans * p * p),
                                      dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.stem_norm = BatchNorm(h, dtype=dtype, param_dtype=param_dtype)
        rates = linear_drop_path_rates(drop_path_rate, cfg.depth)
        self.blocks = nnx.List([
            ConvMixerBlock(cfg, dw_init=dw_init, drop_path=rates[i], dtype=dtype,
                           param_dtype=param_dtype, rngs=rngs)
            for i in range(cfg.depth)])
        self.head = (nnx.Linear(h, num_classes, kernel_init=torch_default(),
                                bias_init=torch_default_bias_init(h), dtype=dtype,
                                param_dtype=param_dtype, rngs=rngs)
                     if num_classes > 0 else None)

    def forward_features(self, x: jax.Array) -> jax.Array:
        """(N, H, W, in_chans) -> feature map (N, H/p, W/p, width) in the compute dtype."""
        act = ACTIVATIONS[self.config.activation]
        x = self.stem_norm(act(self.stem_conv(x.astype(self.dtype))))
        return run_blocks(self.blocks, x, self.remat)

    def forward_head(self, x: jax.Array) -> jax.Array:
        """Feature map -> float32 logits (or pooled features when ``num_classes == 0``)."""
        pooled = jnp.mean(x.astype(jnp.float32), axis=(1, 2)).astype(self.dtype)
        if self.head is None:
            return pooled.astype(jnp.float32)
        return self.head(pooled).astype(jnp.float32)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.forward_head(self.forward_features(x))
