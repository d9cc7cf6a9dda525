"""timm architectures for exported models of sizes timm does not register.

timm's ConvMixer entrypoints (``convmixer_1536_20``, ``convmixer_768_32``,
``convmixer_1024_20_ks9_p14``) fix width, depth, kernel and patch size, so a ``config.json``
``model_args`` cannot change them (timm raises "got multiple values for keyword argument"). An
export of any other ConvMixer (the Neural Echos paper's ``convmixer_512_12``, or overridden
sizes) therefore names the architecture ``dog_jax_convmixer``, whose entrypoint takes every size
as an argument and builds timm's own ``ConvMixer`` class (same module names, same state dict).
Register it before loading such an export::

    import timm
    from dog_jax.timm_models import register_timm_models

    register_timm_models()
    model = timm.create_model("local-dir:/path/to/export", pretrained=True)

Without the registration timm stops with ``RuntimeError: Unknown model (dog_jax_convmixer)``.
ConvNeXt V1/V2 exports need none of this (timm's entrypoints accept ``model_args``).
Needs the ``[torch]`` extra (torch, timm).
"""

from __future__ import annotations

from dog_jax._extras import require

require("dog_jax.timm_models", "torch", "torch", "timm")

import timm  # noqa: E402
from timm.models import convmixer as timm_convmixer  # noqa: E402
from timm.models import build_model_with_cfg  # noqa: E402
from torch import nn  # noqa: E402

__all__ = ["CONVMIXER_ARCHITECTURE", "register_timm_models"]

CONVMIXER_ARCHITECTURE = "dog_jax_convmixer"
_ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU}


def dog_jax_convmixer(pretrained: bool = False, *, dim: int, depth: int, kernel_size: int = 9,
                      patch_size: int = 7, activation: str = "gelu", **kwargs) -> timm_convmixer.ConvMixer:
    """timm's ConvMixer of any size; ``activation`` is "gelu" or "relu" (a JSON-friendly name)."""
    if activation not in _ACTIVATIONS:
        raise ValueError(f"activation must be one of {', '.join(_ACTIVATIONS)}, got {activation!r}.")
    return build_model_with_cfg(
        timm_convmixer.ConvMixer, CONVMIXER_ARCHITECTURE, pretrained, dim=dim, depth=depth,
        kernel_size=kernel_size, patch_size=patch_size, act_layer=_ACTIVATIONS[activation],
        feature_cfg=dict(out_indices=kwargs.pop("out_indices", 3), feature_cls="getter"), **kwargs)


def register_timm_models() -> None:
    """Registers ``dog_jax_convmixer`` with timm (idempotent: a second call does nothing)."""
    if not timm.is_model(CONVMIXER_ARCHITECTURE):
        timm.models.register_model(dog_jax_convmixer)
