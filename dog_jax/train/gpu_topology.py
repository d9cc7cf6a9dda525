"""NVIDIA GPU hosts as ahead-of-time compile targets, without a GPU: ``--aot_topology=h100x8``.

jax's CUDA plugin (``jax-cuda13-plugin`` 0.10.2, requirements-gpu-aot.txt) builds compile-only GPU
devices from a topology shape ``<partitions>x<hosts>x<devices per host>`` and a GPU *target
config* (XLA's ``GpuTargetConfigProto`` in text form: the device's description and the CUDA/cuDNN
versions the program is built for), so XLA's GPU compiler runs on a CPU machine. What it cannot do
without the GPU: autotune (cuDNN convolution algorithms are left to be picked at run time, with no
workspace in the compiled memory), and cost analysis (``cost_analysis()`` is empty: no FLOPs, no
roofline). The process must not open CUDA itself: JAX_PLATFORMS=cpu (``train.py --aot_topology``
sets it).
"""

from __future__ import annotations

import importlib.util
import re

from dog_jax.train.tpu_topology import ChipSpec, TopologyError

# XLA's H100 SXM description (openxla/xla, xla/tools/hlo_opt/gpu_specs/h100_sxm.txtpb, made by XLA from a
# device; memory 84978434048 bytes = 79.1 GiB), plus the two versions the plugin requires of a target
# config without a device (openxla/xla issue 25910): CUDA 13.0 (the jax-cuda13 plugin) and cuDNN 9.24
# (nvidia-cudnn-cu13 as installed with the plugin's with-cuda extra, 2026-12-06).
H100_SXM_TARGET_CONFIG = """
gpu_device_info {
  threads_per_block_limit: 1024
  threads_per_warp: 32
  shared_memory_per_block: 49152
  shared_memory_per_core: 233472
  threads_per_core_limit: 2048
  core_count: 132
  fpus_per_core: 128
  block_dim_limit_x: 2147483647
  block_dim_limit_y: 65535
  block_dim_limit_z: 65535
  memory_bandwidth: 3352320000000
  l2_cache_size: 52428800
  clock_rate_ghz: 1.98
  device_memory_size: 84978434048
  shared_memory_per_block_optin: 232448
  cuda_compute_capability { major: 9 }
  registers_per_core_limit: 65536
  registers_per_block_limit: 65536
}
platform_name: "CUDA"
dnn_version_info { major: 9 minor: 24 }
runtime_version { major: 13 minor: 0 }
device_description_str: "NVIDIA H100 80GB HBM3"
"""

# NVIDIA's H100 datasheet (nvidia.com/en-us/data-center/h100, SXM column): 80 GB HBM3 (the device
# reports 84978434048 bytes), 3.35 TB/s, BF16 tensor core 1,979 TFLOP/s *with sparsity* (989.5
# dense, the figure used); an HGX H100 host has 8. Usable: JAX's GPU allocator takes 75 % of the
# memory unless XLA_PYTHON_CLIENT_MEM_FRACTION says otherwise (docs.jax.dev, "GPU memory allocation").
H100_SXM = ChipSpec("h100", 84978434048, 989.5e12, 3.35e12, 8, "nvidia.com/en-us/data-center/h100",
                    chips_per_vm=8, usable_hbm_bytes=int(0.75 * 84978434048))

_TARGETS = {"h100": (H100_SXM_TARGET_CONFIG, H100_SXM)}
CHIPS = {"NVIDIA H100 80GB HBM3": H100_SXM}


def cuda_plugin_installed() -> bool:
    """jax's CUDA plugin (``jax_plugins.xla_cuda13``) is importable."""
    try:
        return importlib.util.find_spec("jax_plugins.xla_cuda13") is not None
    except ModuleNotFoundError:  # no jax_plugins package at all
        return False


def is_gpu_name(name: str) -> bool:
    """``h100x8``, ``h100x1``, ... (``<gpu>x<count>``: one host)."""
    return re.fullmatch(r"[a-z]\d+x\d+", name) is not None


def topology_devices(name: str) -> list:
    """The compile-only devices of one host of ``<count>`` GPUs ``name`` (``h100x8``).

    Raises:
      TopologyError: an unknown GPU, or the CUDA plugin not installed.
    """
    gpu, count = re.fullmatch(r"([a-z]\d+)x(\d+)", name).groups()
    if gpu not in _TARGETS or int(count) < 1:
        raise TopologyError(f"unknown GPU topology {name!r}: use h100x<GPUs per host>, e.g. h100x8")
    if not cuda_plugin_installed():
        raise TopologyError("compiling for GPU needs jax's CUDA plugin: pip install -r requirements-gpu-aot.txt")
    from jax.experimental import topologies

    target_config, _ = _TARGETS[gpu]
    try:
        topology = topologies.get_topology_desc("", platform="cuda", target_config=target_config,
                                                topology=f"1x1x{count}")
    except Exception as error:  # noqa: BLE001 - the plugin raises JaxRuntimeError / NotImplementedError
        message = " ".join(str(error).split())
        raise TopologyError(f"jax's CUDA plugin could not describe {name} ({message[:200]}); run with "
                            "JAX_PLATFORMS=cpu on a machine without a GPU") from None
    return list(topology.devices)
