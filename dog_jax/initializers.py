"""Difference-of-Gaussians (DoG) initialization of depthwise convolution kernels.

Implements the initializer of Babaiee et al., "Neural Echos: Depthwise Convolutional Filters
Replicate Biological Receptive Fields" (WACV 2024, arXiv 2401.10178), Eq. 2-3, plus the baseline
initializers the paper compares against, all with the ``jax.nn.initializers`` contract
``init(key, shape, dtype) -> jax.Array`` on Flax's HWIO kernel layout ``(kh, kw, in_per_group, out)``.

The maths (see ``docs/initializer.md`` for the derivation and every choice made):

* σ = (k/4)·sqrt((1−γ²)/(−ln γ)) per axis (Eq. 3), so with ``q = y²/σ_h² + x²/σ_w²`` on a grid
  centred at ((kh−1)/2, (kw−1)/2) the centre term is E = γ⁻²·exp(−q/(2γ²)) and the surround term
  I = exp(−q/2) (Eq. 2 with unit amplitudes).
* The kernel is a·E − b·I with a, b solving a·ΣE_P − b·ΣI_P = +0.5 and a·ΣE_N − b·ΣI_N = −0.5,
  where P = {E > I} and N is the rest, so the kernel sums to 0 and its positive region (as defined
  by P) to +0.5. The zero crossing of E − I lies at radius γ·k/2.

Numerics: instead of solving the 2×2 system (condition number up to ~3e5, and E overflows or
underflows in float32 for small γ) we use its closed form rewritten in terms of
``i = exp(−q/2)`` and ``ρ = expm1(−β(q − q_b))`` with β = (γ⁻² − 1)/2 and q_b the largest q in
P. Then E ∝ i·(1 + ρ), ρ ≥ 0 on P and ρ < 0 on N, and

    K = 0.5 · i · (ρ·Σi − Σiρ) / D,   D = Σ_N i · Σ_P iρ + Σ_P i · Σ_N i·(−ρ),

where D is a sum of non-negative terms: no cancellation, no overflow, exact in float32 to ~1e-7
relative (tested against a float64 solve of the original system).
"""

from __future__ import annotations

import functools
import math
from typing import Callable, Sequence

import jax
import jax.numpy as jnp

Initializer = Callable[..., jax.Array]

GAMMA_MIN = 1e-3
GAMMA_MAX = 1.0 - 1e-3
NORMS = ("paper", "he")


def kernel_hw(kernel_size: int | Sequence[int]) -> tuple[int, int]:
    """Returns (kh, kw) from an int or a pair, with a clear error for anything else."""
    if isinstance(kernel_size, int) and not isinstance(kernel_size, bool):
        kh = kw = kernel_size
    else:
        try:
            kh, kw = (int(k) for k in kernel_size)
        except (TypeError, ValueError):
            raise ValueError(f"kernel_size must be an int or a (kh, kw) pair, got {kernel_size!r}.") from None
    if kh < 1 or kw < 1:
        raise ValueError(f"kernel_size must be at least 1 in each dimension, got ({kh}, {kw}).")
    if max(kh, kw) < 3:
        # In a 1x1, 1x2 or 2x2 kernel every pixel is equally far from the centre: no centre-surround.
        raise ValueError("A DoG kernel needs at least 3 pixels along one axis to have a centre and a surround, "
                         f"got ({kh}, {kw}).")
    return kh, kw


def on_center_kernels(gammas: jax.Array, kh: int, kw: int) -> jax.Array:
    """On-centre DoG kernels for a batch of centre-surround ratios.

    Args:
      gammas: (n,) float32 (or float64) centre-surround ratios, already clamped into [GAMMA_MIN, GAMMA_MAX].
      kh, kw: kernel height and width in pixels.

    Returns:
      (n, kh, kw) kernels in the dtype of ``gammas``, each summing to 0 with positive region summing to +0.5.
    """
    # The dtype follows gammas (float32 from signed_kernels; float64 in gradient checks).
    gammas = gammas[:, None, None]
    y = jnp.arange(kh, dtype=gammas.dtype) - (kh - 1) / 2
    x = jnp.arange(kw, dtype=gammas.dtype) - (kw - 1) / 2
    # q·s² with s = sqrt((1−γ²)/(−ln γ)): the per-axis σ_h = kh·s/4 and σ_w = kw·s/4 factor out.
    q_unit = 16.0 * ((y / kh)[:, None] ** 2 + (x / kw)[None, :] ** 2)
    log_inv_gamma = -jnp.log(gammas)
    s2 = (1.0 - gammas**2) / log_inv_gamma
    q = q_unit[None] / s2
    beta = 0.5 * (1.0 / gammas**2 - 1.0)
    # E > I  <=>  −2 ln γ − β q > 0  <=>  q < q0.
    q0 = 2.0 * log_inv_gamma / beta
    q_min = jnp.min(q, axis=(1, 2), keepdims=True)
    q_max = jnp.max(q, axis=(1, 2), keepdims=True)
    centre = q < q0
    # Degenerate cases, defined rather than left singular: an empty centre (even kernels with a tiny
    # γ: the true centre lies between pixels) becomes the pixels nearest the centre; an empty
    # surround (k=3 with γ >= ~0.945) becomes the pixels farthest from it.
    centre = jnp.where(jnp.any(centre, axis=(1, 2), keepdims=True), centre, q <= q_min)
    centre = jnp.where(jnp.all(centre, axis=(1, 2), keepdims=True), q < q_max, centre)
    q_b = jnp.max(jnp.where(centre, q, -jnp.inf), axis=(1, 2), keepdims=True)
    i = jnp.exp(-0.5 * q)
    rho = jnp.expm1(-beta * (q - q_b))
    i_rho = i * rho
    sum_i = jnp.sum(i, axis=(1, 2), keepdims=True)
    sum_i_rho = jnp.sum(i_rho, axis=(1, 2), keepdims=True)
    sum_i_p = jnp.sum(jnp.where(centre, i, 0.0), axis=(1, 2), keepdims=True)
    sum_i_rho_p = jnp.sum(jnp.where(centre, i_rho, 0.0), axis=(1, 2), keepdims=True)
    sum_i_n = sum_i - sum_i_p
    sum_neg_i_rho_n = jnp.sum(jnp.where(centre, 0.0, -i_rho), axis=(1, 2), keepdims=True)
    denom = sum_i_n * sum_i_rho_p + sum_i_p * sum_neg_i_rho_n
    kernel = 0.5 * i * (rho * sum_i - sum_i_rho) / denom
    # In float32, rho * sum_i - sum_i_rho cancels: for a large kernel with a small centre (k=31,
    # γ≈0.06) the surround's 960 pixels all err the same way and sum to −0.49998, not −0.5 (by how
    # much depends on the CPU's exp). Rescaling each part to exactly ±0.5 removes that; in exact
    # arithmetic both scales are 1 for every γ, so values and gradients are unchanged.
    centre_sum = jnp.sum(jnp.where(centre, kernel, 0.0), axis=(1, 2), keepdims=True)
    surround_sum = jnp.sum(jnp.where(centre, 0.0, kernel), axis=(1, 2), keepdims=True)
    return kernel * jnp.where(centre, 0.5 / centre_sum, -0.5 / surround_sum)


@functools.partial(jax.jit, static_argnames=("kh", "kw"))
def signed_kernels(gammas: jax.Array, signs: jax.Array, kh: int, kw: int) -> jax.Array:
    """(n, kh, kw) kernels: on-centre where ``signs`` is +1, off-centre (negated) where −1."""
    gammas = jnp.clip(gammas.astype(jnp.float32), GAMMA_MIN, GAMMA_MAX)
    return on_center_kernels(gammas, kh, kw) * signs.astype(jnp.float32)[:, None, None]


def dog_kernel(kernel_size: int | Sequence[int], gamma: float | jax.Array, *, on_center: bool = True) -> jax.Array:
    """One DoG kernel of the paper (Eq. 2-3), normalised to ±0.5.

    Args:
      kernel_size: k, or a (kh, kw) pair for rectangular kernels (each axis uses its own size in σ).
      gamma: centre-surround ratio γ in [0, 1]; clamped into [1e-3, 1 − 1e-3]. May be traced.
      on_center: True for an excitatory (on) centre, False for the inhibitory (off) kernel, which is
        the negated on-centre one.

    Returns:
      (kh, kw) float32 kernel that sums to 0, with centre radius ≈ γ·k/2 (in pixels).
    """
    kh, kw = kernel_hw(kernel_size)
    if isinstance(gamma, (int, float)) and not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must lie in [0, 1] (it is clamped into [{GAMMA_MIN}, {GAMMA_MAX}]), got {gamma}.")
    gammas = jnp.reshape(jnp.asarray(gamma, jnp.float32), (1,))
    signs = jnp.ones((1,), jnp.float32) if on_center else -jnp.ones((1,), jnp.float32)
    return signed_kernels(gammas, signs, kh, kw)[0]


def _check_range(gamma_range: Sequence[float]) -> tuple[float, float]:
    try:
        lo, hi = (float(g) for g in gamma_range)
    except (TypeError, ValueError):
        raise ValueError(f"gamma_range must be a (low, high) pair, got {gamma_range!r}.") from None
    if not (0.0 <= lo <= hi <= 1.0):
        raise ValueError(
            f"gamma_range must satisfy 0 <= low <= high <= 1, got ({lo}, {hi}); the paper uses (0.0, 0.5).")
    return lo, hi


def dog(
    gamma_range: Sequence[float] = (0.0, 0.5),
    on_fraction: float = 0.5,
    *,
    norm: str = "paper",
    balanced: bool = True,
    depthwise_only: bool = True,
) -> Initializer:
    """The paper's DoG initializer, as a drop-in ``kernel_init=`` for Flax NNX and Linen convolutions.

    Every kernel draws its own γ ~ Uniform(gamma_range) (then clamped into [1e-3, 1 − 1e-3]). By
    default exactly round(on_fraction·n) of the n kernels of one call (one layer) are on-centre, at
    random positions, and the rest off-centre: the paper assigns "half of the kernels with excitatory
    centers and the other half with inhibitory centers".

    Args:
      gamma_range: (low, high) range of the centre-surround ratio γ, within [0, 1].
      on_fraction: share of on-centre (excitatory) kernels (exact when ``balanced``, else the
        probability of each kernel).
      norm: "paper" (positive part +0.5, negative part −0.5, as in the paper), or "he": each kernel
        rescaled to the expected L2 norm of a He-normal kernel of the same fan-in, sqrt(2/in_per_group)
        (sqrt(2) for a depthwise kernel) — an ablation the paper did not run.
      balanced: True (default, the paper's split): exactly round(on_fraction·n) of the n kernels are
        on-centre, at random positions. False: an independent coin flip per kernel (the on-centre
        share of a layer then varies by ±sqrt(on_fraction·(1−on_fraction)/n)).
      depthwise_only: if True (default), refuse kernels with in_per_group > 1, which are not depthwise.
        If False, every (in, out) slice gets its own independent DoG kernel.

    Returns:
      ``init(key, shape, dtype=jnp.float32)`` for HWIO shapes (kh, kw, in_per_group, out), returning
      kernels computed in float32 and cast to ``dtype``. Works with traced keys inside ``jax.jit``.
    """
    lo, hi = _check_range(gamma_range)
    if not 0.0 <= float(on_fraction) <= 1.0:
        raise ValueError(f"on_fraction must lie in [0, 1], got {on_fraction}.")
    if norm not in NORMS:
        raise ValueError(f"Unknown norm {norm!r}; expected one of {NORMS}.")
    on_fraction = float(on_fraction)

    def draw(key: jax.Array, n: int) -> tuple[jax.Array, jax.Array]:
        """(γ, sign) of n kernels, each (n,) float32, γ not yet clamped; what ``init`` draws from ``key``."""
        gamma_key, sign_key = jax.random.split(key)
        gammas = jax.random.uniform(gamma_key, (n,), jnp.float32, lo, hi)
        if balanced:
            n_on = int(round(on_fraction * n))
            signs = jax.random.permutation(sign_key, jnp.where(jnp.arange(n) < n_on, 1.0, -1.0))
        else:
            signs = jnp.where(jax.random.bernoulli(sign_key, on_fraction, (n,)), 1.0, -1.0)
        return gammas, signs

    def init(key: jax.Array, shape: Sequence[int], dtype=jnp.float32) -> jax.Array:
        shape = tuple(shape)
        if len(shape) != 4:
            raise ValueError(
                f"DoG initialization expects a 4-D HWIO kernel shape (kh, kw, in_per_group, out), got {shape}.")
        kh, kw, in_per_group, out = shape
        kernel_hw((kh, kw))
        if in_per_group > 1 and depthwise_only:
            raise ValueError(
                "DoG initialization is defined for depthwise convolutions: use feature_group_count=in_features, "
                f"or pass depthwise_only=False (got kernel shape {shape}).")
        n = in_per_group * out
        gammas, signs = draw(key, n)
        kernels = signed_kernels(gammas, signs, kh, kw)
        if norm == "he":
            target = math.sqrt(2.0 / in_per_group)
            kernels = kernels * (target / jnp.sqrt(jnp.sum(kernels**2, axis=(1, 2), keepdims=True)))
        # (n, kh, kw) with n ordered as (in, out) -> HWIO.
        kernels = kernels.reshape(in_per_group, out, kh, kw).transpose(2, 3, 0, 1)
        return kernels.astype(dtype)

    # Lets a basis-parameterised layer (dog_jax.models.basis) start from exactly these kernels.
    init.dog_draw = draw
    init.dog_norm = norm
    return init


def torch_default() -> Initializer:
    """PyTorch's default Conv/Linear weight init (kaiming_uniform with a=sqrt(5)): U(±1/sqrt(fan_in))."""
    return jax.nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def he_normal() -> Initializer:
    """He/Kaiming normal as PyTorch's ``kaiming_normal_`` (fan_in, gain sqrt(2)): N(0, 2/fan_in), untruncated.

    Note ``jax.nn.initializers.he_normal`` truncates at ±2σ and rescales; this one matches PyTorch.
    """
    return jax.nn.initializers.variance_scaling(2.0, "fan_in", "normal")


def trunc_normal_02() -> Initializer:
    """ConvNeXt/HorNet's init: N(0, 0.02²) truncated at ±2 *absolute* (i.e. ±100σ: effectively untruncated).

    Note ``jax.nn.initializers.truncated_normal(0.02)`` truncates at ±2σ, giving std ≈ 0.0176.
    """
    std = 0.02

    def init(key: jax.Array, shape: Sequence[int], dtype=jnp.float32) -> jax.Array:
        return (std * jax.random.truncated_normal(key, -2.0 / std, 2.0 / std, shape, jnp.float32)).astype(dtype)

    return init


_NAMED = {
    "dog": dog,
    "he_normal": he_normal,
    "kaiming": he_normal,
    "torch_default": torch_default,
    "trunc_normal_02": trunc_normal_02,
}

INITIALIZER_NAMES = tuple(_NAMED)


def get_initializer(name_or_init: str | Initializer) -> Initializer:
    """Resolves an initializer name (see ``INITIALIZER_NAMES``) or passes a callable through.

    "dog" is ``dog()`` with default arguments; "kaiming" is an alias of "he_normal". The per-model
    name "reference" is resolved by ``dog_jax.models``, not here.
    """
    if callable(name_or_init):
        return name_or_init
    if isinstance(name_or_init, str) and name_or_init in _NAMED:
        return _NAMED[name_or_init]()
    raise ValueError(
        f"Unknown initializer {name_or_init!r}; expected a callable or one of {', '.join(INITIALIZER_NAMES)}.")
