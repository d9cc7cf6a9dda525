"""LayerNorm over the last axis with a choice of implementation.

  "xla"     pure JAX (``layernorm_xla.py``): runs everywhere, any dtype.
  "native"  C++ forward and backward through the XLA FFI (``norms/layernorm_native.py``): float32, CPU,
            where the native library was built (``dog_jax.ops.native.library.native_status()``).
  "auto"    "native" where it can run (a single-device CPU compile target, float32, library built),
            else "xla" (``dog_jax.ops.auto``).

Both compute the same function (two-pass variance, float32 statistics) up to float32 rounding.
"""

from __future__ import annotations

import jax

from dog_jax.ops.auto import check_norm_impl, select_norm_impl
from dog_jax.ops.norms.layernorm_native import check_layer_norm_native, layer_norm_native, native_fits
from dog_jax.ops.norms.layernorm_xla import layer_norm_xla


def layer_norm(x: jax.Array, scale: jax.Array, bias: jax.Array, *, eps: float = 1e-6,
               impl: str = "auto") -> jax.Array:
    """(x − mean) / sqrt(var + eps) · scale + bias over the last axis.

    Args:
      x: (..., C); float32 for "native" (the caller casts, statistics are float32 anyway).
      scale, bias: (C,), the dtype of x.
      eps: added to the biased variance.
      impl: "auto", "xla" or "native" (module docstring).

    Returns:
      (..., C), the dtype of x.
    """
    check_norm_impl("LayerNorm", impl)
    if impl == "native":
        check_layer_norm_native(x, scale, bias)
    elif impl == "auto":
        impl = select_norm_impl("layer_norm", native_fits(x, scale, bias))
    if impl == "native":
        return layer_norm_native(x, scale, bias, eps)
    return layer_norm_xla(x, scale, bias, eps)
