"""Loader of dog_jax's native CPU kernels: one C++ library, its XLA FFI targets and one status line.

The sources (``dog_jax/ops/native/*.cc``: depthwise convolution, LayerNorm,
BatchNorm) are compiled during
``pip install`` into the extension file ``dog_jax/ops/native/_native_cpu*.so`` (``setup.py``; optional, so a
machine without a C++ compiler still installs and uses the pure-JAX code). This module loads it once,
registers every handler it exports as a CPU FFI target, and says in ``native_status()`` (one line)
whether that worked and if not why; ``NATIVE_AVAILABLE`` is the same as a bool. The ops' wrappers
(``depthwise/native.py``, ``norms/layernorm_native.py``,
``norms/batchnorm_native.py``) call the targets by the names in ``TARGETS``.
"""

from __future__ import annotations

import ctypes
import importlib.util
from types import MappingProxyType

import jax

_EXTENSION = "dog_jax.ops.native._native_cpu"

# FFI target name -> exported handler symbol.
TARGETS = MappingProxyType({
    "dog_jax_depthwise_forward": "DogJaxDepthwiseForward",
    "dog_jax_depthwise_kernel_grad": "DogJaxDepthwiseKernelGrad",
    "dog_jax_layernorm_forward": "DogJaxLayerNormForward",
    "dog_jax_layernorm_backward": "DogJaxLayerNormBackward",
    "dog_jax_batchnorm_forward": "DogJaxBatchNormForward",
    "dog_jax_batchnorm_backward": "DogJaxBatchNormBackward",
})


def _load() -> tuple[bool, str]:
    """Loads the compiled library and registers its FFI targets; returns (available, status)."""
    try:
        spec = importlib.util.find_spec(_EXTENSION)
    except ImportError as error:  # pragma: no cover - a broken package layout
        return False, f"not available ({error})"
    if spec is None or spec.origin is None:
        return False, ("not built (no C++ compiler at install time?): reinstall with one, "
                       "`pip install --no-deps -e .`; the pure-JAX code is used meanwhile")
    try:
        library = ctypes.CDLL(spec.origin)
        for target, symbol in TARGETS.items():
            jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(library, symbol)), platform="cpu")
    except (OSError, AttributeError) as error:
        return False, f"present but not loadable ({spec.origin}: {error})"
    return True, f"loaded from {spec.origin}"


NATIVE_AVAILABLE, _STATUS = _load()

def native_status() -> str:
    """One line saying whether the native CPU kernels are in use, and if not, why."""
    return f"dog_jax native CPU kernels (depthwise conv, LayerNorm, BatchNorm): {_STATUS}"
