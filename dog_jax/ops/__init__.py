"""The ground floor's operations, one folder per operation: ``depthwise/`` (the depthwise convolution
every model uses and its implementations), ``norms/`` (LayerNorm and training-mode BatchNorm),
``native/`` (the optional C++ CPU kernels and their loader), ``gelu.py`` (exact GELU with a
hand-written derivative), and ``auto.py``, the one rule that picks each op's implementation for the
platform a computation is compiled for. Nothing here knows of models, data or training.
"""

from dog_jax.ops.depthwise import depthwise_conv2d
from dog_jax.ops.native import native_status
from dog_jax.ops.norms import batch_norm_train, layer_norm

__all__ = ["batch_norm_train", "depthwise_conv2d", "layer_norm", "native_status"]
