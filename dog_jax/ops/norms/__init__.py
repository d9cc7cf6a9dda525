"""Normalisation ops with a choice of implementation: LayerNorm (``layernorm.py``) and training-mode
BatchNorm (``batchnorm.py``), each as pure JAX (``*_xla.py``) and as native CPU kernels (``*_native.py``,
with their derivatives through the pure-JAX reference, ``native_derivatives.py``). Which one
``impl="auto"`` runs is decided in ``dog_jax/ops/auto.py``.
"""

from dog_jax.ops.norms.batchnorm import batch_norm_train
from dog_jax.ops.norms.layernorm import layer_norm

__all__ = ["batch_norm_train", "layer_norm"]
