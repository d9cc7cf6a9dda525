"""Model registry: ``create_model(name, ...)`` and ``list_models()``.

Names follow timm where timm has the model; ``convmixer_512_12`` (the Neural Echos paper's
9×9 ConvMixer) and the ``hornet_*_7x7`` models follow the papers / official code.
Architecture facts and parameter counts: docs/models.md and the references cited in each
family module.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import warnings
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import jax.numpy as jnp
from flax import nnx

from dog_jax.initializers import get_initializer, torch_default, trunc_normal_02
from dog_jax.models.convmixer import ConvMixer, ConvMixerConfig
from dog_jax.models.convnext import ConvNeXt, ConvNeXtConfig
from dog_jax.models.hornet import HorNet, HorNetConfig
from dog_jax.models.layers import Initializer
from dog_jax.models.tracing import quiet_sharding_probes

__all__ = ["create_model", "depthwise_kernel_size", "get_model_config", "list_models", "resolve_dw_init"]


@dataclasses.dataclass(frozen=True)
class _Family:
    model_cls: type
    config_cls: type
    reference_dw_init: Callable[[], Initializer]


_CONVMIXER = _Family(ConvMixer, ConvMixerConfig, torch_default)
_CONVNEXT = _Family(ConvNeXt, ConvNeXtConfig, trunc_normal_02)
_HORNET = _Family(HorNet, HorNetConfig, trunc_normal_02)


def _convnext_dims(c: int) -> tuple[int, ...]:
    return (c, 2 * c, 4 * c, 8 * c)


_SMALL = dict(conv_mlp=True)  # timm's atto..nano store the MLP as 1×1 convs
_V2 = dict(use_grn=True, ls_init_value=None)

# name -> (family, config overrides). Depths/widths from timm convnext.py / convmixer.py and the
# official ConvNeXt(-V2) and HorNet repositories.
_REGISTRY: Mapping[str, tuple[_Family, dict[str, Any]]] = MappingProxyType({
    "convmixer_512_12": (_CONVMIXER, dict(width=512, depth=12, kernel_size=9, patch_size=7)),
    "convmixer_768_32": (_CONVMIXER, dict(width=768, depth=32, kernel_size=7, patch_size=7, activation="relu")),
    "convmixer_1024_20_ks9_p14": (_CONVMIXER, dict(width=1024, depth=20, kernel_size=9, patch_size=14)),
    "convmixer_1536_20": (_CONVMIXER, dict(width=1536, depth=20, kernel_size=9, patch_size=7)),
    "convnext_atto": (_CONVNEXT, dict(depths=(2, 2, 6, 2), dims=_convnext_dims(40), **_SMALL)),
    "convnext_femto": (_CONVNEXT, dict(depths=(2, 2, 6, 2), dims=_convnext_dims(48), **_SMALL)),
    "convnext_pico": (_CONVNEXT, dict(depths=(2, 2, 6, 2), dims=_convnext_dims(64), **_SMALL)),
    "convnext_nano": (_CONVNEXT, dict(depths=(2, 2, 8, 2), dims=_convnext_dims(80), **_SMALL)),
    "convnext_tiny": (_CONVNEXT, dict(depths=(3, 3, 9, 3), dims=_convnext_dims(96))),
    "convnext_small": (_CONVNEXT, dict(depths=(3, 3, 27, 3), dims=_convnext_dims(96))),
    "convnext_base": (_CONVNEXT, dict(depths=(3, 3, 27, 3), dims=_convnext_dims(128))),
    "convnext_large": (_CONVNEXT, dict(depths=(3, 3, 27, 3), dims=_convnext_dims(192))),
    "convnext_xlarge": (_CONVNEXT, dict(depths=(3, 3, 27, 3), dims=_convnext_dims(256))),
    "convnextv2_atto": (_CONVNEXT, dict(depths=(2, 2, 6, 2), dims=_convnext_dims(40), **_SMALL, **_V2)),
    "convnextv2_femto": (_CONVNEXT, dict(depths=(2, 2, 6, 2), dims=_convnext_dims(48), **_SMALL, **_V2)),
    "convnextv2_pico": (_CONVNEXT, dict(depths=(2, 2, 6, 2), dims=_convnext_dims(64), **_SMALL, **_V2)),
    "convnextv2_nano": (_CONVNEXT, dict(depths=(2, 2, 8, 2), dims=_convnext_dims(80), **_SMALL, **_V2)),
    "convnextv2_tiny": (_CONVNEXT, dict(depths=(3, 3, 9, 3), dims=_convnext_dims(96), **_V2)),
    "convnextv2_base": (_CONVNEXT, dict(depths=(3, 3, 27, 3), dims=_convnext_dims(128), **_V2)),
    "convnextv2_large": (_CONVNEXT, dict(depths=(3, 3, 27, 3), dims=_convnext_dims(192), **_V2)),
    "convnextv2_huge": (_CONVNEXT, dict(depths=(3, 3, 27, 3), dims=(352, 704, 1408, 2816), **_V2)),
    "hornet_tiny_7x7": (_HORNET, dict(depths=(2, 3, 18, 2), dims=_convnext_dims(64))),
    "hornet_small_7x7": (_HORNET, dict(depths=(2, 3, 18, 2), dims=_convnext_dims(96))),
    "hornet_base_7x7": (_HORNET, dict(depths=(2, 3, 18, 2), dims=_convnext_dims(128))),
    "hornet_large_7x7": (_HORNET, dict(depths=(2, 3, 18, 2), dims=_convnext_dims(192))),
})


def list_models(pattern: str | None = None) -> list[str]:
    """Sorted names accepted by :func:`create_model`; ``pattern`` keeps names containing it."""
    return sorted(n for n in _REGISTRY if pattern is None or pattern in n)


def _lookup(name: str) -> tuple[_Family, dict[str, Any]]:
    if name not in _REGISTRY:
        close = difflib.get_close_matches(str(name), list(_REGISTRY), n=5, cutoff=0.5)
        hint = f"closest: {', '.join(close)}" if close else "see dog_jax.models.list_models()"
        raise ValueError(f"Unknown model {name!r}; {hint}.")
    return _REGISTRY[name]


def get_model_config(name: str, **overrides: Any):
    """The architecture config (a frozen dataclass) ``create_model(name, **overrides)`` builds."""
    family, defaults = _lookup(name)
    allowed = [f.name for f in dataclasses.fields(family.config_cls)]
    unknown = sorted(set(overrides) - set(allowed))
    if unknown:
        raise ValueError(f"{name} does not take {', '.join(unknown)}; architecture overrides it accepts: "
                         f"{', '.join(allowed)}.")
    return family.config_cls(**{**defaults, **overrides})


def depthwise_kernel_size(name: str, **overrides: Any) -> int | tuple[int, int]:
    """The depthwise kernel size (pixels) of ``create_model(name, **overrides)``: what reading a
    basis-parameterised checkpoint needs besides its parameters."""
    return get_model_config(name, **overrides).kernel_size


def resolve_dw_init(spec: str | Initializer, reference: Initializer) -> Initializer:
    """Turns a ``dw_init`` argument into an initializer.

    "reference" gives ``reference`` (the family's own choice); other strings go through
    :func:`dog_jax.initializers.get_initializer` ("dog", "he_normal", "torch_default",
    "trunc_normal_02", ...); callables ``(key, shape, dtype) -> array`` are used as is.
    """
    if isinstance(spec, str) and spec == "reference":
        return reference
    if not isinstance(spec, str) and not callable(spec):
        raise ValueError(f"dw_init must be a name or an initializer callable, got {type(spec).__name__}.")
    return get_initializer(spec)


def create_model(name: str, *, num_classes: int = 1000, dw_init: str | Initializer = "reference",
                 drop_path_rate: float = 0.0, dtype: Any = jnp.float32, param_dtype: Any = jnp.float32,
                 rngs: nnx.Rngs, **overrides: Any) -> nnx.Module:
    """Builds a registered model with the reference initialization.

    Args:
      name: one of :func:`list_models`; an unknown name raises ValueError naming the closest.
      num_classes: classifier outputs; 0 drops the classifier (the model returns features).
      dw_init: initializer of every depthwise kernel and nothing else (the trainer's
        ``config.dw_init``; ``dw_kernel_init`` is its deprecated old name): "reference"
        (ConvMixer: PyTorch default; ConvNeXt/HorNet: trunc-normal 0.02), "dog", "he_normal",
        "torch_default", "trunc_normal_02", or a callable ``(key, shape, dtype)`` for HWIO
        shapes ``(k, k, 1, C)``.
      drop_path_rate: stochastic-depth rate of the last block; rises linearly from 0.
      dtype: compute dtype (e.g. ``jnp.bfloat16``); normalisation statistics stay float32 and
        logits are returned as float32.
      param_dtype: parameter dtype.
      rngs: ``nnx.Rngs``; ``params`` (or ``default``) draws the init, ``dropout`` (or
        ``default``) drives drop path.
      **overrides: architecture fields of the family's config, e.g. ``width``, ``depth``,
        ``kernel_size``, ``patch_size`` for ConvMixer; ``depths``, ``dims``, ``kernel_size``,
        ``conv_mlp``, ``head_init_scale`` for ConvNeXt; ``orders``, ``gnconv_scale`` for HorNet.

    Returns:
      The model, in training mode like a fresh PyTorch module (call ``model.eval()`` for
      inference: BatchNorm running statistics, no drop path).
    """
    family, _ = _lookup(name)
    if "dw_kernel_init" in overrides:  # the name before it matched the trainer's config field
        warnings.warn("create_model(dw_kernel_init=...) is deprecated; pass dw_init=... (same values).",
                      DeprecationWarning, stacklevel=2)
        old = overrides.pop("dw_kernel_init")
        if not (isinstance(dw_init, str) and dw_init == "reference"):
            raise ValueError("Pass dw_init=... only; dw_kernel_init is its deprecated old name, "
                             "not a second setting.")
        dw_init = old
    if not isinstance(rngs, nnx.Rngs):
        raise ValueError(f"rngs must be an nnx.Rngs, e.g. nnx.Rngs(0); got {type(rngs).__name__}.")
    if not isinstance(num_classes, int) or num_classes < 0:
        raise ValueError(f"num_classes must be a non-negative int, got {num_classes!r}.")
    config = get_model_config(name, **overrides)
    init = resolve_dw_init(dw_init, family.reference_dw_init())
    with quiet_sharding_probes():  # linear, not quadratic, under nnx.eval_shape / jax.jit (models/tracing.py)
        return family.model_cls(config, num_classes=num_classes, dw_init=init, drop_path_rate=drop_path_rate,
                                dtype=dtype, param_dtype=param_dtype, rngs=rngs)


def parameter_counts(name: str, **overrides: Any) -> tuple[int, int]:
    """(free, basis) parameter counts of a registered model with 1000 classes, without allocating:
    the cost of ``dw_param="basis"`` (``dog_jax.models.basis``) for that model."""

    def count(dw_param: str) -> int:
        model = nnx.eval_shape(lambda: create_model(name, rngs=nnx.Rngs(0), dw_param=dw_param, **overrides))
        return sum(math.prod(v.shape) for _, v in nnx.to_flat_state(nnx.state(model, nnx.Param)))

    return count("free"), count("basis")


if __name__ == "__main__":  # python -m dog_jax.models.registry: the parameter table of docs/models.md
    print("| model | free depthwise | basis depthwise | basis / free |\n|---|---|---|---|")
    for model_name in list_models():
        free, basis = parameter_counts(model_name)
        print(f"| `{model_name}` | {free:,} | {basis:,} | {basis / free:.4f} |")
