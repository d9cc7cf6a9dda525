"""Optional dependencies: one clear line when an extra is not installed.

The core (``dog_jax``, ``dog_jax.models``, ``dog_jax.ops``, ``dog_jax.convert``) needs only JAX, Flax,
NumPy and safetensors. The trainer, the kernel analysis and PyTorch files need the extras declared in
pyproject.toml; packages that use them call :func:`require` before importing anything heavy.
"""

from __future__ import annotations

import importlib.util
import sys


def _available(module: str) -> bool:
    if module in sys.modules:  # None there means "known missing" (also how tests hide a package).
        return sys.modules[module] is not None
    return importlib.util.find_spec(module) is not None


def require(feature: str, extra: str, *modules: str) -> None:
    """Raises ImportError naming the extra to install when any of ``modules`` is not importable.

    Args:
      feature: what needs the modules, for the message (e.g. "dog_jax.analysis").
      extra: the pyproject extra that installs them ("train", "analysis" or "torch").
      modules: top-level module names (e.g. "sklearn", "tensorflow").
    """
    missing = [m for m in modules if not _available(m)]
    if missing:
        raise ImportError(f"{feature} needs {', '.join(missing)} (not installed): "
                          f"pip install 'dog_jax[{extra}]'")
