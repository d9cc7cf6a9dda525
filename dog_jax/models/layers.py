"""Layers shared by the model families, with PyTorch/timm numerics.

Everything here works on NHWC activations and stores convolution kernels in HWIO layout.
The layers exist (instead of the stock ``flax.nnx`` ones) where the reference semantics
differ from Flax's defaults:

* :class:`DepthwiseConv2D` routes every depthwise convolution through
  :func:`dog_jax.ops.depthwise_conv2d` and keeps its kernel as an ``nnx.Param`` named
  ``kernel`` of shape ``(kh, kw, 1, C)``, so analysis code can find depthwise kernels and
  initializers can target exactly them (:func:`iter_depthwise_convs`).
* :class:`BatchNorm` and :class:`LayerNorm` (defined in ``norms.py``, re-exported here) follow
  PyTorch's eps, momentum and variance conventions (see there).
* :func:`gelu` is the exact erf form (Flax defaults to the tanh approximation).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from types import MappingProxyType
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from dog_jax.models.norms import BatchNorm, LayerNorm
from dog_jax.ops import depthwise_conv2d
from dog_jax.ops.gelu import gelu as exact_gelu

Initializer = Callable[[jax.Array, tuple[int, ...], Any], jax.Array]

__all__ = [
    "BatchNorm",
    "Downsample",
    "PatchStem",
    "check_stages",
    "DepthwiseConv2D",
    "DropPath",
    "GlobalResponseNorm",
    "LayerNorm",
    "Mlp",
    "PoolNormHead",
    "gelu",
    "iter_depthwise_convs",
    "linear_drop_path_rates",
    "torch_default_bias_init",
    "zeros_init",
]


def gelu(x: jax.Array) -> jax.Array:
    """Exact (erf) GELU, as ``torch.nn.GELU()``; Flax's default is the tanh approximation.

    Runs :func:`dog_jax.ops.gelu.gelu` (the same forward, a faster hand-written derivative).
    """
    return exact_gelu(x)


def relu(x: jax.Array) -> jax.Array:
    """ReLU, as ``torch.nn.ReLU``."""
    return jax.nn.relu(x)


ACTIVATIONS: Mapping[str, Callable[[jax.Array], jax.Array]] = MappingProxyType({"gelu": gelu, "relu": relu})


def zeros_init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
    """All-zeros initializer (bias, GRN parameters)."""
    del key
    return jnp.zeros(shape, dtype)


def torch_default_bias_init(fan_in: int) -> Initializer:
    """PyTorch's default bias init of ``nn.Conv2d`` / ``nn.Linear``: U(−1/√fan_in, 1/√fan_in).

    Args:
      fan_in: number of inputs of one output unit (in_channels/groups · kh · kw, or in_features).
    """
    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0

    def init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
        return jax.random.uniform(key, shape, jnp.float32, -bound, bound).astype(dtype)

    return init


def check_stages(family: str, depths: tuple[int, ...], dims: tuple[int, ...]) -> None:
    """Raises ValueError unless ``depths`` and ``dims`` are equally long tuples of positive ints."""
    if len(depths) != len(dims) or not depths:
        raise ValueError(f"{family} needs one depth per stage width; got depths={depths}, dims={dims}.")
    if any((not isinstance(v, int)) or v < 1 for v in depths + dims):
        raise ValueError(f"{family} depths and dims must be positive ints; got depths={depths}, dims={dims}.")


def linear_drop_path_rates(max_rate: float, num_blocks: int) -> list[float]:
    """Drop-path rate of each block, rising linearly from 0 to ``max_rate`` (timm/official).

    Matches ``torch.linspace(0, max_rate, num_blocks)`` (computed in float32 like PyTorch).
    """
    if not 0.0 <= max_rate < 1.0:
        raise ValueError(f"drop_path_rate must be in [0, 1), got {max_rate}.")
    return [float(r) for r in np.linspace(0.0, max_rate, num_blocks, dtype=np.float32)]


class DepthwiseConv2D(nnx.Module):
    """Depthwise k×k convolution, stride 1, "SAME" padding, optional bias.

    Input (N, H, W, C) -> output (N, H, W, C) in the compute ``dtype``. Parameters:
    ``kernel`` (kh, kw, 1, C) and ``bias`` (C,), in ``param_dtype``. For odd kernels "SAME"
    equals PyTorch's ``padding=(k-1)//2``; for even kernels it equals ``padding="same"``.
    """

    def __init__(
        self,
        channels: int,
        kernel_size: int | tuple[int, int],
        *,
        use_bias: bool = True,
        kernel_init: Initializer,
        bias_init: Initializer = zeros_init,
        dtype: Any = jnp.float32,
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ):
        kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
        self.channels = channels
        self.kernel_size = (kh, kw)
        self.dtype = dtype
        kernel = kernel_init(rngs.params(), (kh, kw, 1, channels), param_dtype)
        if tuple(kernel.shape) != (kh, kw, 1, channels):
            raise ValueError(
                f"the depthwise initializer (dw_init) returned shape {tuple(kernel.shape)} for a depthwise kernel of "
                f"shape {(kh, kw, 1, channels)}; an initializer must return the requested shape.")
        self.kernel = nnx.Param(jnp.asarray(kernel, param_dtype))
        self.bias = nnx.Param(bias_init(rngs.params(), (channels,), param_dtype)) if use_bias else None

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.astype(self.dtype)
        y = depthwise_conv2d(x, self.kernel[...].astype(self.dtype), strides=1, padding="SAME")
        if self.bias is not None:
            y = y + self.bias[...].astype(self.dtype)
        return y


def iter_depthwise_convs(model: nnx.Module) -> Iterator[tuple[tuple[Any, ...], DepthwiseConv2D]]:
    """Yields ``(path, layer)`` for every :class:`DepthwiseConv2D` in ``model``, in graph order."""
    for path, module in nnx.iter_modules(model):
        if isinstance(module, DepthwiseConv2D):
            yield path, module


class DropPath(nnx.Module):
    """Stochastic depth: zeroes whole samples with probability ``rate`` and rescales the rest
    by 1/(1 − rate), only in training (``deterministic=False``, set by ``model.train()``).

    Randomness comes from the ``dropout`` stream of the ``nnx.Rngs`` given at construction
    (falls back to ``default``). With ``rate == 0`` the layer is the identity and holds no RNG.
    """

    def __init__(self, rate: float, *, deterministic: bool = False, rngs: nnx.Rngs):
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"drop path rate must be in [0, 1), got {rate}.")
        self.rate = float(rate)
        self.deterministic = deterministic
        self.rngs = rngs["dropout"].fork() if self.rate > 0.0 else nnx.data(None)

    def __call__(self, x: jax.Array) -> jax.Array:
        if self.rate == 0.0 or self.deterministic:
            return x
        keep = 1.0 - self.rate
        mask = jax.random.bernoulli(self.rngs(), keep, (x.shape[0],) + (1,) * (x.ndim - 1))
        return jnp.where(mask, x / jnp.asarray(keep, x.dtype), jnp.zeros_like(x))


class GlobalResponseNorm(nnx.Module):
    """ConvNeXt-V2 Global Response Normalization on NHWC input.

    Gx = ‖x‖₂ over (H, W) per channel; Nx = Gx / (mean_c Gx + eps); out = γ·(x·Nx) + β + x.
    ``scale`` (γ) and ``bias`` (β) have shape (C,) and start at zero (block starts as identity).
    """

    def __init__(self, num_features: int, *, eps: float = 1e-6, dtype: Any = jnp.float32,
                 param_dtype: Any = jnp.float32):
        self.eps = eps
        self.dtype = dtype
        self.scale = nnx.Param(jnp.zeros((num_features,), param_dtype))
        self.bias = nnx.Param(jnp.zeros((num_features,), param_dtype))

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        gx = jnp.sqrt(jnp.sum(jnp.square(x32), axis=(1, 2), keepdims=True))
        nx = gx / (jnp.mean(gx, axis=-1, keepdims=True) + self.eps)
        y = self.scale[...].astype(jnp.float32) * (x32 * nx) + self.bias[...].astype(jnp.float32) + x32
        return y.astype(self.dtype)


class PointwiseLinear(nnx.Linear):
    """A 1×1 convolution as ``nnx.Linear`` over the channel axis: (..., C_in) -> (..., C_out).

    Same parameters (``kernel`` (C_in, C_out), ``bias``) and math as ``nnx.Linear``, but the
    leading axes are flattened first so that XLA sees one 2-D matmul: a (N, H, W, C) input
    fed to ``nnx.Linear`` directly becomes a dot_general whose weight gradient contracts
    three axes, which XLA:CPU ran slower (forward + backward; measured at ConvMixer-512 block
    shapes in docs/performance.md, "Training step").
    """

    def __call__(self, inputs: jax.Array) -> jax.Array:
        flat = inputs.reshape(-1, inputs.shape[-1])
        return super().__call__(flat).reshape(*inputs.shape[:-1], -1)


class PatchifyConv(nnx.Conv):
    """A p×p convolution with stride p and no padding (patch embedding, downsampling):
    (N, H, W, C_in) -> (N, H // p, W // p, C_out), computed as one matmul over the
    non-overlapping patches.

    Same parameters (``kernel`` (p, p, C_in, C_out) HWIO, ``bias``) and math as
    ``nnx.Conv(..., (p, p), strides=(p, p), padding="VALID")``; rows/columns beyond the last
    whole patch are dropped, as VALID padding does. XLA:CPU ran the convolution slower than this
    matmul (forward + backward, ConvNeXt-T stem and downsampling shapes; docs/performance.md,
    "Training step").
    """

    def __init__(self, in_features: int, out_features: int, patch_size: int, **kwargs):
        p = patch_size
        super().__init__(in_features, out_features, (p, p), strides=(p, p), padding="VALID", **kwargs)

    def __call__(self, inputs: jax.Array) -> jax.Array:
        p = self.kernel_size[0]
        n, h, w, c = inputs.shape
        rows, cols = h // p, w // p
        patches = inputs[:, :rows * p, :cols * p].reshape(n, rows, p, cols, p, c).transpose(0, 1, 3, 2, 4, 5)
        kernel = self.kernel[...]
        bias = self.bias[...] if self.bias is not None else None
        patches, kernel, bias = self.promote_dtype((patches, kernel, bias), dtype=self.dtype)
        # (p, p, C_in) patch order matches the HWIO kernel's leading axes.
        y = jnp.dot(patches.reshape(n * rows * cols, p * p * c), kernel.reshape(p * p * c, -1),
                    precision=self.precision)
        if bias is not None:
            y = y + bias
        return y.reshape(n, rows, cols, -1)


class Mlp(nnx.Module):
    """Channel MLP of ConvNeXt/HorNet blocks: Linear C→H → exact GELU → [GRN] → Linear H→C."""

    def __init__(self, dim: int, hidden: int, *, use_grn: bool = False, kernel_init: Initializer,
                 dtype: Any = jnp.float32, param_dtype: Any = jnp.float32, rngs: nnx.Rngs):
        kw = dict(kernel_init=kernel_init, bias_init=zeros_init, dtype=dtype,
                  param_dtype=param_dtype, rngs=rngs)
        self.fc1 = PointwiseLinear(dim, hidden, **kw)
        self.grn = (GlobalResponseNorm(hidden, dtype=dtype, param_dtype=param_dtype)
                    if use_grn else None)
        self.fc2 = PointwiseLinear(hidden, dim, **kw)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = gelu(self.fc1(x))
        if self.grn is not None:
            x = self.grn(x)
        return self.fc2(x)


class PatchStem(nnx.Module):
    """Conv p×p stride p → LayerNorm: (N, H, W, in_chans) -> (N, H/p, W/p, dim)."""

    def __init__(self, in_chans: int, dim: int, patch_size: int, *, kernel_init: Initializer,
                 dtype: Any, param_dtype: Any, rngs: nnx.Rngs):
        p = patch_size
        self.conv = PatchifyConv(in_chans, dim, p, kernel_init=kernel_init, bias_init=zeros_init, dtype=dtype,
                                 param_dtype=param_dtype, rngs=rngs)
        self.norm = LayerNorm(dim, dtype=dtype, param_dtype=param_dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.norm(self.conv(x))


class Downsample(nnx.Module):
    """LayerNorm → Conv 2×2 stride 2: (N, H, W, C_in) -> (N, H/2, W/2, C_out)."""

    def __init__(self, in_dim: int, out_dim: int, *, kernel_init: Initializer, dtype: Any,
                 param_dtype: Any, rngs: nnx.Rngs):
        self.norm = LayerNorm(in_dim, dtype=dtype, param_dtype=param_dtype)
        self.conv = PatchifyConv(in_dim, out_dim, 2, kernel_init=kernel_init, bias_init=zeros_init, dtype=dtype,
                                 param_dtype=param_dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.conv(self.norm(x))


class PoolNormHead(nnx.Module):
    """ConvNeXt/HorNet head: global average pool → LayerNorm → Linear.

    (N, H, W, C) -> float32 logits (N, num_classes); ``num_classes=0`` returns the normalised
    pooled features (N, C) instead.
    """

    def __init__(self, dim: int, num_classes: int, *, kernel_init: Initializer,
                 head_init_scale: float = 1.0, dtype: Any = jnp.float32,
                 param_dtype: Any = jnp.float32, rngs: nnx.Rngs):
        self.dtype = dtype
        self.norm = LayerNorm(dim, dtype=dtype, param_dtype=param_dtype)

        def scaled_init(key, shape, dt=jnp.float32):
            return (kernel_init(key, shape, dt) * head_init_scale).astype(dt)

        # The references multiply the (zero) bias by head_init_scale too: it stays zero.
        self.fc = (nnx.Linear(dim, num_classes, kernel_init=scaled_init, bias_init=zeros_init,
                              dtype=dtype, param_dtype=param_dtype, rngs=rngs)
                   if num_classes > 0 else None)

    def __call__(self, x: jax.Array) -> jax.Array:
        pooled = jnp.mean(x.astype(jnp.float32), axis=(1, 2)).astype(self.dtype)
        feats = self.norm(pooled)
        if self.fc is None:
            return feats.astype(jnp.float32)
        return self.fc(feats).astype(jnp.float32)
