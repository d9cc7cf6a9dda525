"""Depthwise 2-D convolution: the public function (``conv.py``), its geometry and argument checks
(``geometry.py``), and its implementations -- shifted multiply-adds with hand-written derivatives
(``shift.py``, ``blocks.py``, ``weight_grad.py``), a batched matmul (``toeplitz.py``) and the native
CPU kernel (``native.py``). Which one ``impl="auto"`` runs is decided in ``dog_jax/ops/auto.py``.
"""

from dog_jax.ops.depthwise.conv import IMPLS, depthwise_conv2d, impl_runs

__all__ = ["IMPLS", "depthwise_conv2d", "impl_runs"]
