"""Low-level operations used by the models."""

from dog_jax.ops.batchnorm import batch_norm_train
from dog_jax.ops.depthwise import depthwise_conv2d
from dog_jax.ops.layernorm import layer_norm

__all__ = ["batch_norm_train", "depthwise_conv2d", "layer_norm"]
