"""Flax NNX ConvMixer, ConvNeXt V1/V2 and HorNet, numerically identical to timm / official code.

Build models by name with :func:`create_model`; :func:`list_models` lists the names.
See docs/models.md.
"""

from dog_jax.models.convmixer import ConvMixer, ConvMixerConfig
from dog_jax.models.convnext import ConvNeXt, ConvNeXtConfig
from dog_jax.models.hornet import HorNet, HorNetConfig
from dog_jax.models.layers import DepthwiseConv2D, iter_depthwise_convs
from dog_jax.models.registry import create_model, get_model_config, list_models

__all__ = [
    "ConvMixer",
    "ConvMixerConfig",
    "ConvNeXt",
    "ConvNeXtConfig",
    "DepthwiseConv2D",
    "HorNet",
    "HorNetConfig",
    "create_model",
    "get_model_config",
    "iter_depthwise_convs",
    "list_models",
]
