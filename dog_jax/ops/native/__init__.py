"""dog_jax's native CPU kernels: the C++ sources (depthwise convolution, LayerNorm, BatchNorm, and
their shared ``parallel.h`` / ``norm_shapes.h``), compiled at install time into one optional
extension, and ``library.py``, which loads it, registers its XLA FFI targets and says in
``native_status()`` whether that worked. The ops that call the kernels live with their operation
(``dog_jax/ops/depthwise/native.py``, ``dog_jax/ops/norms/*_native.py``).
"""

from dog_jax.ops.native.library import NATIVE_AVAILABLE, native_status

__all__ = ["NATIVE_AVAILABLE", "native_status"]
