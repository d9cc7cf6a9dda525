"""dog_jax.ops.auto: which implementation "auto" picks for a depthwise convolution on each target, with
and without the native CPU kernel, and the native kernels on a mesh of several devices.

XLA's SPMD partitioner cannot split the kernels' custom calls (it gathers the whole batch onto every
device), so with more than one device "auto" runs the pure-JAX code; with one it runs the kernels.
(That "auto" computes the right values: tests/ops/test_depthwise.py.)
"""

import os
import sys
import textwrap

import jax.numpy as jnp
import pytest

from dog_jax.ops.auto import Target, select_depthwise_impl
from dog_jax.ops.depthwise.geometry import make_geometry
from dog_jax.ops.native.library import NATIVE_AVAILABLE, native_status
from tests.support import subprocesses
from tests.support.requires import NATIVE, requires

_SCRIPT = textwrap.dedent("""
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec
    from dog_jax.ops import depthwise_conv2d
    from dog_jax.ops.norms.batchnorm import batch_norm_train
    from dog_jax.ops.norms.layernorm import layer_norm

    mesh = Mesh(np.array(jax.devices()), ("data",))
    x = jax.device_put(jnp.ones((4, 8, 8, 16)), NamedSharding(mesh, PartitionSpec("data")))
    c = jnp.ones(16)
    ops = {"depthwise": lambda x: depthwise_conv2d(x, jnp.ones((3, 3, 1, 16))),
           "layernorm": lambda x: layer_norm(x, c, c),
           "batchnorm": lambda x: batch_norm_train(x, c, c)[0]}
    for name, op in ops.items():
        hlo = jax.jit(op).lower(x).compile().as_text()
        print(name, jax.device_count(), "dog_jax_" in hlo)
""")


def _native_calls(devices: int) -> list[str]:
    env_flag = subprocesses.xla_flags(devices)
    out = subprocesses.run([sys.executable, "-c", _SCRIPT], timeout=subprocesses.TIMEOUT_S,
                           env={**os.environ, "XLA_FLAGS": env_flag, "JAX_PLATFORMS": "cpu"})
    assert out.returncode == 0, out.stderr[-2000:]
    return [line for line in out.stdout.splitlines() if line.split()[0] in ("depthwise", "layernorm", "batchnorm")]


@requires(NATIVE_AVAILABLE, native_status(), NATIVE)
def test_auto_uses_the_kernels_on_one_device_and_pure_jax_on_several():
    assert _native_calls(1) == ["depthwise 1 True", "layernorm 1 True", "batchnorm 1 True"]
    assert _native_calls(2) == ["depthwise 2 False", "layernorm 2 False", "batchnorm 2 False"]


@pytest.mark.parametrize("shape, kernel, expected", [
    ((16, 32, 32, 512), 9, "shift_blocked"),   # ConvMixer-512/12
    ((16, 56, 56, 96), 7, "shift"),            # ConvNeXt-T stage 1
    ((16, 14, 14, 384), 7, "shift_blocked"),   # ConvNeXt-T stage 3
    ((16, 7, 7, 768), 7, "toeplitz"),          # ConvNeXt-T stage 4: map no larger than the kernel
    ((16, 7, 7, 768), 3, "shift"),             # ... but not under a 3x3 kernel
    ((2, 20, 20, 64), 31, "toeplitz"),         # large kernel on a smaller map
    ((2, 40, 40, 64), 31, "shift_fft"),        # large kernel
    ((1, 30, 30, 1024), 31, "shift_fft"),      # tap matrix too large for "toeplitz"
])
def test_auto_choices_on_cpu_without_the_native_kernel(shape, kernel, expected):
    geometry = make_geometry(shape, (kernel, kernel, 1, shape[3]), 1, "SAME", 1)
    assert select_depthwise_impl(shape, geometry, target=Target("cpu"), native=False) == expected


@pytest.mark.parametrize("shape, kernel, dtype, strides, expected", [
    ((16, 32, 32, 512), 9, jnp.float32, 1, "native"),      # ConvMixer-512/12
    ((16, 56, 56, 96), 7, jnp.float32, 1, "native"),       # ConvNeXt-T stage 1
    ((16, 14, 14, 384), 7, jnp.float32, 1, "native"),      # ConvNeXt-T stage 3
    ((16, 7, 7, 768), 7, jnp.float32, 1, "toeplitz"),      # stage 4: not measured against toeplitz
    ((16, 56, 56, 96), 7, jnp.bfloat16, 1, "shift"),       # float32 only
    ((16, 56, 56, 96), 7, jnp.float32, 2, "shift"),        # stride 1 only
    ((2, 40, 40, 64), 31, jnp.float32, 1, "shift_fft"),    # large kernels keep the FFT gradient
])
def test_auto_choices_on_cpu_with_the_native_kernel(shape, kernel, dtype, strides, expected):
    geometry = make_geometry(shape, (kernel, kernel, 1, shape[3]), strides, "SAME", 1)
    assert select_depthwise_impl(shape, geometry, target=Target("cpu"), dtype=dtype, native=True) == expected
    assert select_depthwise_impl(shape, geometry, target=Target("gpu"), dtype=dtype, native=True) == "xla"
