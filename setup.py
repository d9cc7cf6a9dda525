"""Builds the optional native CPU kernels (``dog_jax/ops/native/*.cc``: depthwise convolution,
LayerNorm, BatchNorm).

Everything else about the package is declared in pyproject.toml. The kernels form one plain C++ shared
library called from JAX through the XLA FFI; it needs the XLA FFI headers that ship with jaxlib
(``jax.ffi.include_dir()``), so pyproject.toml's [build-system] requires the pinned jaxlib. The
extension is optional: without a C++ compiler (or without the headers) the build prints a warning,
the install succeeds, and dog_jax uses its pure-JAX code paths
(``dog_jax.ops.native.library.native_status()`` says which is in use).
"""

import os

from setuptools import Extension, setup


def _ffi_include_dirs() -> list[str]:
    """The XLA FFI header directory of the jaxlib in the build environment (empty if none)."""
    try:
        import jaxlib
    except ImportError:
        return []
    include = os.path.join(os.path.dirname(jaxlib.__file__), "include")
    return [include] if os.path.isdir(include) else []


setup(
    ext_modules=[
        Extension(
            "dog_jax.ops.native._native_cpu",
            sources=["dog_jax/ops/native/depthwise_cpu.cc", "dog_jax/ops/native/layernorm_cpu.cc",
                     "dog_jax/ops/native/batchnorm_cpu.cc"],
            depends=["dog_jax/ops/native/parallel.h", "dog_jax/ops/native/norm_shapes.h"],
            include_dirs=_ffi_include_dirs(),
            language="c++",
            # Portable: no -march=native; the hot loops carry their own AVX2/AVX-512 clones.
            extra_compile_args=["-std=c++17", "-O3", "-Wno-attributes", "-Wno-psabi"],
            optional=True,
        )
    ],
)
