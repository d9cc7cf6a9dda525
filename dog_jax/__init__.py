"""dog_jax: difference-of-Gaussians initialization of depthwise convolutions in JAX/Flax.

Reimplements Babaiee et al., "Neural Echos: Depthwise Convolutional Filters Replicate Biological
Receptive Fields" (WACV 2024). Submodules: ``initializers``, ``ops``, ``models``, ``convert``,
``data``, ``train``, ``analysis``.
"""

from dog_jax.initializers import (
    INITIALIZER_NAMES,
    dog,
    dog_kernel,
    get_initializer,
    he_normal,
    torch_default,
    trunc_normal_02,
)

__version__ = "0.1.0"

__all__ = [
    "INITIALIZER_NAMES",
    "dog",
    "dog_kernel",
    "get_initializer",
    "he_normal",
    "torch_default",
    "trunc_normal_02",
]
