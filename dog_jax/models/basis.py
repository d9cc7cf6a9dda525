"""Depthwise kernels constrained to a Gaussian-derivative + DoG basis (``dw_param="basis"``).

Each channel's k×k kernel is built on the fly as a learned linear combination of seven fixed-order
basis kernels, sampled on the grid of :func:`dog_jax.initializers.dog_kernel` (centred at
((kh−1)/2, (kw−1)/2), coordinates in units of k/4 per axis, u = 4y/kh, v = 4x/kw, as Eq. 3 does):

====  ==================================  ====================================================
index name                                 kernel (g = exp(−(u²+v²)/(2s²)) / Σ_grid exp(...))
====  ==================================  ====================================================
0     ``gauss``                            g
1     ``dx``  (first derivative along x)   (v/s)·g
2     ``dy``  (first derivative along y)   (u/s)·g
3     ``dxx`` (second derivatives)         (v²/s² − 1)·g
4     ``dxy``                              (u·v/s²)·g
5     ``dyy``                              (u²/s² − 1)·g
6     ``dog``                              the on-centre DoG kernel of ``dog_kernel(k, γ)``
====  ==================================  ====================================================

The derivatives are scale-normalised (σ-multiplied, Lindeberg) and written without the minus sign of
∂g/∂x: the coefficients carry any sign. The DoG element keeps the paper's Eq. 3 scale for its γ (its
σ is a function of γ and k), so with coefficient ±1 it *is* ``dog()``'s kernel.

Parameters per channel (C channels; ``nnx.Param``, ``param_dtype``):

* ``basis_coeffs`` (C, 7): unconstrained mixing weights.
* ``basis_log_scale`` (C,): s = exp(basis_log_scale) > 0, the Gaussian's std in units of k/4
  (σ in pixels = s·k/4, per axis).
* ``basis_gamma`` (C,): the DoG's centre-surround ratio, used as clip(basis_gamma, 1e-3, 1 − 1e-3) —
  the same clamp ``dog()`` applies. A projection rather than a sigmoid so that the DoG init is
  reproduced bit for bit; its gradient is 1 inside the range and 0 outside.
* ``bias`` (C,) as the free layer.

That is 9 numbers per channel (plus the bias) instead of kh·kw: fewer for k ≥ 4, more for k = 3.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from dog_jax.initializers import (
    GAMMA_MAX,
    GAMMA_MIN,
    kernel_hw,
    on_center_kernels,
    signed_kernels,
)
from dog_jax.models.layers import DepthwiseConv2D, Initializer, zeros_init
from dog_jax.ops import depthwise_conv2d

__all__ = ["BASIS_NAMES", "DW_PARAMS", "BasisDepthwiseConv2D", "basis_kernels", "basis_stack",
           "depthwise_layer", "materialize"]

BASIS_NAMES = ("gauss", "dx", "dy", "dxx", "dxy", "dyy", "dog")
DW_PARAMS = ("free", "basis")
_DOG = BASIS_NAMES.index("dog")
# γ a "reference"-initialised basis layer starts from: the middle of the paper's U(0, 0.5).
_DEFAULT_GAMMA = 0.25


def eq3_scale(gamma: jax.Array) -> jax.Array:
    """Eq. 3's σ in units of k/4: sqrt((1 − γ²)/(−ln γ)), with γ clamped like ``dog()``."""
    gamma = jnp.clip(gamma, GAMMA_MIN, GAMMA_MAX)
    return jnp.sqrt((1.0 - gamma**2) / -jnp.log(gamma))


def basis_stack(log_scale: jax.Array, gamma: jax.Array, kh: int, kw: int) -> jax.Array:
    """The seven basis kernels of every channel.

    Args:
      log_scale: (C,) log of the Gaussian std s in units of k/4.
      gamma: (C,) DoG centre-surround ratio (clamped into [1e-3, 1 − 1e-3]).
      kh, kw: kernel size in pixels.

    Returns:
      (C, 7, kh, kw) in the dtype of ``log_scale`` (float32 or float64), in ``BASIS_NAMES`` order.
    """
    dtype = log_scale.dtype
    u = (4.0 * (jnp.arange(kh, dtype=dtype) - (kh - 1) / 2) / kh)[None, :, None]
    v = (4.0 * (jnp.arange(kw, dtype=dtype) - (kw - 1) / 2) / kw)[None, None, :]
    s = jnp.exp(log_scale)[:, None, None]
    un, vn = u / s, v / s
    g = jnp.exp(-0.5 * (un**2 + vn**2))
    g = g / jnp.sum(g, axis=(1, 2), keepdims=True)
    if dtype == jnp.float32:
        # The very function (and compiled program) dog() uses, so the DoG element matches it bit for bit.
        dog = signed_kernels(gamma, jnp.ones_like(gamma), kh, kw)
    else:  # float64 (gradient checks): the same maths without dog()'s float32 cast.
        dog = on_center_kernels(jnp.clip(gamma, GAMMA_MIN, GAMMA_MAX), kh, kw)
    terms = (g, vn * g, un * g, (vn**2 - 1.0) * g, un * vn * g, (un**2 - 1.0) * g, dog)
    return jnp.stack(terms, axis=1)


def basis_kernels(coeffs: jax.Array, log_scale: jax.Array, gamma: jax.Array, kh: int, kw: int) -> jax.Array:
    """Materialised depthwise kernels, HWIO (kh, kw, 1, C), from (C, 7), (C,), (C,) parameters."""
    stack = basis_stack(log_scale, gamma, kh, kw)
    # Elementwise product and a sum over the 7 terms (not a dot): zero coefficients add exact zeros,
    # so a coefficient vector (0, …, 0, ±1) returns the DoG kernel bit for bit.
    kernels = jnp.sum(coeffs[:, :, None, None] * stack, axis=1)
    return jnp.transpose(kernels, (1, 2, 0))[:, :, None, :]


def _init_params(kernel_init: Initializer, key: jax.Array, kh: int, kw: int, channels: int):
    """(coeffs, log_scale, gamma) float32 from the key the free layer would use for its kernel.

    With a ``dog()`` initializer the draws (γ, on/off sign) are exactly the ones ``dog()`` makes from
    ``key``; any other initializer draws its free kernel from ``key`` and the layer starts from that
    kernel's least-squares projection onto the basis at γ = 0.25 and Eq. 3's scale for it.
    """
    draw = getattr(kernel_init, "dog_draw", None)
    if draw is not None:
        gamma, signs = draw(key, channels)
        coeff_dog = signs
        if getattr(kernel_init, "dog_norm", "paper") == "he":
            on = signed_kernels(gamma, jnp.ones_like(signs), kh, kw)
            coeff_dog = signs * (math.sqrt(2.0) / jnp.sqrt(jnp.sum(on**2, axis=(1, 2))))
        coeffs = jnp.zeros((channels, len(BASIS_NAMES)), jnp.float32).at[:, _DOG].set(coeff_dog)
        return coeffs, jnp.log(eq3_scale(gamma)), gamma
    free = kernel_init(key, (kh, kw, 1, channels), jnp.float32)
    if tuple(free.shape) != (kh, kw, 1, channels):
        raise ValueError(f"dw_init returned shape {tuple(free.shape)} for a depthwise kernel of "
                         f"shape {(kh, kw, 1, channels)}; an initializer must return the requested shape.")
    gamma = jnp.full((channels,), _DEFAULT_GAMMA, jnp.float32)
    log_scale = jnp.log(eq3_scale(gamma))
    basis = basis_stack(log_scale[:1], gamma[:1], kh, kw)[0].reshape(len(BASIS_NAMES), kh * kw)
    targets = jnp.asarray(free, jnp.float32).reshape(kh * kw, channels)
    coeffs = jnp.linalg.lstsq(basis.T, targets)[0].T
    return coeffs, log_scale, gamma


class _MaterialisedKernel(nnx.Variable):
    """The kernel a basis layer computes, wrapped like a parameter for readers (export, analysis).

    Read-only: writing raises, because free kernels cannot be loaded into the basis.
    """

    def set_value(self, *args, **kwargs):
        raise ValueError("This depthwise layer is basis-parameterised (dw_param='basis'); its kernel is computed, "
                         "not stored. Load free kernels into a model built with dw_param='free'.")


class BasisDepthwiseConv2D(DepthwiseConv2D):
    """Depthwise k×k convolution whose kernels are a learned mix of the basis (module docstring).

    Input (N, H, W, C) -> output (N, H, W, C) in the compute ``dtype``, stride 1, "SAME", through
    :func:`dog_jax.ops.depthwise_conv2d`, like :class:`DepthwiseConv2D` (a subclass, so
    ``iter_depthwise_convs`` finds it). ``layer.kernel`` is the materialised (kh, kw, 1, C) kernel
    (read-only); ``layer.kernel[...]`` evaluates it.
    """

    def __init__(self, channels: int, kernel_size: int | tuple[int, int], *, use_bias: bool = True,
                 kernel_init: Initializer, bias_init: Initializer = zeros_init, dtype: Any = jnp.float32,
                 param_dtype: Any = jnp.float32, rngs: nnx.Rngs):
        kh, kw = kernel_hw(kernel_size)
        self.channels = channels
        self.kernel_size = (kh, kw)
        self.dtype = dtype
        coeffs, log_scale, gamma = _init_params(kernel_init, rngs.params(), kh, kw, channels)
        self.basis_coeffs = nnx.Param(coeffs.astype(param_dtype))
        self.basis_log_scale = nnx.Param(log_scale.astype(param_dtype))
        self.basis_gamma = nnx.Param(gamma.astype(param_dtype))
        self.bias = nnx.Param(bias_init(rngs.params(), (channels,), param_dtype)) if use_bias else None

    def materialized_kernel(self) -> jax.Array:
        """(kh, kw, 1, C) kernels in ``param_dtype``, computed from the current parameters."""
        return basis_kernels(self.basis_coeffs[...], self.basis_log_scale[...], self.basis_gamma[...],
                             *self.kernel_size)

    @property
    def kernel(self) -> _MaterialisedKernel:  # type: ignore[override]
        return _MaterialisedKernel(self.materialized_kernel())

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.astype(self.dtype)
        y = depthwise_conv2d(x, self.materialized_kernel().astype(self.dtype), strides=1, padding="SAME")
        if self.bias is not None:
            y = y + self.bias[...].astype(self.dtype)
        return y


def depthwise_layer(dw_param: str, channels: int, kernel_size: int | tuple[int, int],
                    **kwargs: Any) -> DepthwiseConv2D:
    """A free (:class:`DepthwiseConv2D`) or basis (:class:`BasisDepthwiseConv2D`) depthwise layer."""
    if dw_param == "free":
        return DepthwiseConv2D(channels, kernel_size, **kwargs)
    if dw_param == "basis":
        return BasisDepthwiseConv2D(channels, kernel_size, **kwargs)
    raise ValueError(f"dw_param must be one of {', '.join(DW_PARAMS)}, got {dw_param!r}.")


def check_dw_param(dw_param: Any) -> None:
    """One clear error for a wrong ``dw_param`` (used by the family configs)."""
    if dw_param not in DW_PARAMS:
        raise ValueError(f"dw_param must be one of {', '.join(DW_PARAMS)}, got {dw_param!r}.")


def materialize(arrays: dict[str, np.ndarray], kernel_size: int | tuple[int, int]) -> dict[str, np.ndarray]:
    """Flat ``{name: array}`` parameters with every basis layer replaced by its materialised kernel.

    ``…/basis_coeffs``, ``…/basis_log_scale`` and ``…/basis_gamma`` of a layer become ``…/kernel``
    (kh, kw, 1, C) float32 (separator ``/`` or ``.``); everything else passes through. The kernel
    size is not stored in the parameters, so it is an argument (the model's ``kernel_size``).
    """
    kh, kw = kernel_hw(kernel_size)
    out: dict[str, np.ndarray] = {}
    for name, value in arrays.items():
        prefix, sep, leaf = name.rpartition("/") if "/" in name else name.rpartition(".")
        if leaf == "basis_coeffs":
            coeffs, log_scale, gamma = (jnp.asarray(arrays[f"{prefix}{sep}{leaf_name}"], jnp.float32)
                                        for leaf_name in ("basis_coeffs", "basis_log_scale", "basis_gamma"))
            out[f"{prefix}{sep}kernel"] = np.asarray(basis_kernels(coeffs, log_scale, gamma, kh, kw))
        elif leaf not in ("basis_log_scale", "basis_gamma"):
            out[name] = value
    return out
