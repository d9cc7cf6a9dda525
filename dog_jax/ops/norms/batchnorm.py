"""Training-mode BatchNorm (batch statistics over all axes but the last) with a choice of implementation.

  "xla"     pure JAX (``batchnorm_xla.py``): runs everywhere, any dtype, optional ``axis_name``.
  "native"  C++ forward and backward through the XLA FFI (``norms/batchnorm_native.py``): float32, CPU, no
            ``axis_name``, where the native library was built (``dog_jax.ops.native_status()``).
  "auto"    "native" where it can run (a single-device CPU compile target), else "xla"
            (``dog_jax.ops.auto``).

Both compute the same function (two-pass biased variance, float32 statistics) up to float32 rounding.
"""

from __future__ import annotations

import jax

from dog_jax.ops.auto import check_norm_impl, select_norm_impl
from dog_jax.ops.norms.batchnorm_native import batch_norm_train_native, check_batch_norm_native, native_fits
from dog_jax.ops.norms.batchnorm_xla import batch_norm_train_xla


def batch_norm_train(x: jax.Array, scale: jax.Array, bias: jax.Array, *, eps: float = 1e-5,
                     axis_name: str | None = None,
                     impl: str = "auto") -> tuple[jax.Array, jax.Array, jax.Array]:
    """(x − mean) / sqrt(var + eps) · scale + bias with the batch's per-channel mean and biased var.

    Args:
      x: (..., C), float32 for "native"; statistics over all axes but the last.
      scale, bias: (C,), the dtype of x.
      eps: added to the variance.
      axis_name: mapped axis to average the statistics over ("xla" only; "auto" then picks it).
      impl: "auto", "xla" or "native" (module docstring).

    Returns:
      (y (..., C), mean (C,), biased var (C,)).
    """
    check_norm_impl("BatchNorm", impl)
    if impl == "native":
        check_batch_norm_native(x, scale, bias, axis_name)
    elif impl == "auto":
        impl = select_norm_impl("batch_norm", native_fits(x, scale, bias, axis_name))
    if impl == "native":
        return batch_norm_train_native(x, scale, bias, eps)
    return batch_norm_train_xla(x, scale, bias, eps, axis_name)
