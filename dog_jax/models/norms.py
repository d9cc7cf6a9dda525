"""Normalisation layers with PyTorch/timm numerics (re-exported by ``layers.py``).

* :class:`BatchNorm` follows ``torch.nn.BatchNorm2d``: eps 1e-5, momentum 0.1 in PyTorch's
  convention, two-pass variance, and running variance updated with the *unbiased* batch
  variance (``flax.nnx.BatchNorm`` uses the biased one).
* :class:`LayerNorm` uses eps 1e-6 and the two-pass variance (Flax's fast variance
  E[x²]−E[x]² loses precision for inputs with a large mean).

Normalisation statistics are always computed in float32, also when the compute ``dtype``
is bfloat16; the result is cast back to the compute dtype. Both layers have an ``impl``
attribute: "auto" runs dog_jax's native CPU kernels where they apply (``dog_jax.ops.norms.layernorm``,
``dog_jax.ops.norms.batchnorm``), "xla" the pure-JAX code, "native" the kernels or one error line.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from dog_jax.ops.norms.batchnorm import batch_norm_train
from dog_jax.ops.norms.batchnorm_xla import normalise
from dog_jax.ops.norms.layernorm import layer_norm
from dog_jax.ops.auto import check_norm_impl

__all__ = ["BatchNorm", "LayerNorm"]


class LayerNorm(nnx.Module):
    """LayerNorm over the last (channel) axis, two-pass variance, statistics in float32.

    Equals ``torch.nn.LayerNorm(C, eps)`` on channels-last input and timm's ``LayerNorm2d`` /
    the official channels-first LayerNorm on the corresponding NCHW input. Parameters
    ``scale`` (C,) initialised to 1 and ``bias`` (C,) initialised to 0.

    ``impl`` (``dog_jax.ops.norms.layernorm``): "auto" runs the native CPU kernel where it applies (CPU
    backend, float32 input and ``dtype``, library built) and the pure-JAX code elsewhere; "xla" forces
    the pure-JAX code; "native" forces the kernel and raises one line where it cannot run. The
    attribute may be changed on a built model (``layer.impl = "xla"``).
    """

    def __init__(self, num_features: int, *, eps: float = 1e-6, dtype: Any = jnp.float32,
                 param_dtype: Any = jnp.float32, impl: str = "auto"):
        check_norm_impl("LayerNorm", impl)
        self.eps = eps
        self.dtype = dtype
        self.impl = impl
        self.scale = nnx.Param(jnp.ones((num_features,), param_dtype))
        self.bias = nnx.Param(jnp.zeros((num_features,), param_dtype))

    def __call__(self, x: jax.Array) -> jax.Array:
        y = layer_norm(x.astype(jnp.float32), self.scale[...].astype(jnp.float32),
                       self.bias[...].astype(jnp.float32), eps=self.eps,
                       impl=_norm_impl("LayerNorm", self.impl, x, self.dtype))
        return y.astype(self.dtype)


class BatchNorm(nnx.Module):
    """``torch.nn.BatchNorm2d`` semantics for NHWC input (statistics over N, H, W).

    Training (``use_running_average=False``, set by ``model.train()``): normalises with the
    biased batch variance and updates ``running = (1 − momentum)·running + momentum·batch``,
    using the *unbiased* batch variance for ``var`` as PyTorch does. Evaluation
    (``model.eval()``): normalises with the running statistics.

    Args:
      num_features: channels C.
      momentum: PyTorch convention (weight of the new batch statistic), default 0.1.
      eps: added to the variance, default 1e-5.
      axis_name: optional mapped axis name to average batch statistics over (``shard_map``/
        ``pmap``); under plain ``jit`` with a sharded batch the mean is already global.
      impl: training-mode implementation (``dog_jax.ops.norms.batchnorm``): "auto" runs the native CPU
        kernel where it applies (CPU backend, float32 input and ``dtype``, no ``axis_name``, library
        built), "xla" forces the pure-JAX code, "native" the kernel (one error line where it cannot
        run). Evaluation mode is pure JAX always.
    """

    def __init__(self, num_features: int, *, momentum: float = 0.1, eps: float = 1e-5,
                 use_running_average: bool = False, axis_name: str | None = None,
                 dtype: Any = jnp.float32, param_dtype: Any = jnp.float32, impl: str = "auto"):
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"BatchNorm momentum (PyTorch convention) must be in [0, 1], got {momentum}.")
        check_norm_impl("BatchNorm", impl)
        self.momentum = momentum
        self.eps = eps
        self.use_running_average = use_running_average
        self.axis_name = axis_name
        self.dtype = dtype
        self.impl = impl
        self.scale = nnx.Param(jnp.ones((num_features,), param_dtype))
        self.bias = nnx.Param(jnp.zeros((num_features,), param_dtype))
        self.mean = nnx.BatchStat(jnp.zeros((num_features,), jnp.float32))
        self.var = nnx.BatchStat(jnp.ones((num_features,), jnp.float32))

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        scale, bias = self.scale[...].astype(jnp.float32), self.bias[...].astype(jnp.float32)
        if self.use_running_average:
            y = normalise(x32, self.mean[...], self.var[...], scale, bias, self.eps)
            return y.astype(self.dtype)
        y, mean, var = batch_norm_train(x32, scale, bias, eps=self.eps, axis_name=self.axis_name,
                                        impl=_norm_impl("BatchNorm", self.impl, x, self.dtype))
        count = math.prod(x.shape[:-1])
        if self.axis_name is not None:
            count *= jax.lax.psum(1, self.axis_name)
        unbiased = var * (count / max(count - 1, 1))
        m = self.momentum
        self.mean[...] = (1.0 - m) * self.mean[...] + m * jax.lax.stop_gradient(mean)
        self.var[...] = (1.0 - m) * self.var[...] + m * jax.lax.stop_gradient(unbiased)
        return y.astype(self.dtype)


def _norm_impl(layer: str, impl: str, x: jax.Array, dtype: Any) -> str:
    """The impl a normalisation layer passes on: "auto" becomes "xla" unless input and output are
    float32 (the native kernels' scope); "native" with other dtypes raises one line."""
    if x.dtype == jnp.float32 and jnp.dtype(dtype) == jnp.float32:
        return impl
    if impl == "native":
        raise ValueError(f"{layer}(impl='native') takes float32 input and dtype, got {x.dtype} and "
                         f"{jnp.dtype(dtype)}; use impl='auto'")
    return "xla" if impl == "auto" else impl
