""""auto" and the native CPU kernels on a mesh of several devices.

XLA's SPMD partitioner cannot split the kernels' custom calls (it gathers the whole batch onto every
device), so with more than one device "auto" runs the pure-JAX code; with one it runs the kernels.
"""

import os
import sys
import textwrap

import pytest

from dog_jax.ops.native.library import NATIVE_AVAILABLE, native_status
from tests import subprocesses

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
    env_flag = f"--xla_force_host_platform_device_count={devices}"
    out = subprocesses.run([sys.executable, "-c", _SCRIPT], timeout=subprocesses.TIMEOUT_S,
                           env={**os.environ, "XLA_FLAGS": env_flag, "JAX_PLATFORMS": "cpu"})
    assert out.returncode == 0, out.stderr[-2000:]
    return [line for line in out.stdout.splitlines() if line.split()[0] in ("depthwise", "layernorm", "batchnorm")]


@pytest.mark.skipif(not NATIVE_AVAILABLE, reason=native_status())
def test_auto_uses_the_kernels_on_one_device_and_pure_jax_on_several():
    assert _native_calls(1) == ["depthwise 1 True", "layernorm 1 True", "batchnorm 1 True"]
    assert _native_calls(2) == ["depthwise 2 False", "layernorm 2 False", "batchnorm 2 False"]
