"""Low-level operations used by the models."""

from dog_jax.ops.depthwise import depthwise_conv2d

__all__ = ["depthwise_conv2d"]
