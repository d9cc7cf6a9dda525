"""Cloud TPU slices as gcloud creates them: accelerator type, TPU VM image and worker count.

The chip figures and slice shapes come from ``dog_jax/train/tpu_topology.py``, loaded here as a file
of its own: it needs only the standard library, while importing it through the ``dog_jax.train``
package would start TensorFlow (8 s) and require the ``train`` extra on a machine that only launches
runs (a laptop, Cloud Shell).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import pathlib  # local: this package's own source file
import sys

# "TPU software versions" (https://cloud.google.com/tpu/docs/runtimes, read 2026-12-06): the image to
# install JAX on, per generation. All are Ubuntu 22.04 with Python 3.10 (scripts/tpu_vm_setup.sh).
RUNTIME_VERSIONS = {"v4": "tpu-ubuntu2204-base", "v5e": "v2-alpha-tpuv5-lite", "v5p": "v2-alpha-tpuv5",
                    "v6e": "v2-alpha-tpuv6e"}
# gcloud's accelerator-type prefix per generation (v5e slices are rented as "v5litepod-N").
_GCLOUD_PREFIX = {"v4": "v4", "v5e": "v5litepod", "v5p": "v5p", "v6e": "v6e"}


class SliceError(ValueError):
    """A slice name that is not a Cloud TPU accelerator type; the message says what to pass."""


@dataclasses.dataclass(frozen=True)
class Slice:
    """A TPU slice: its name as given, generation, gcloud accelerator type, chips, TPU VMs (workers)
    and the default TPU VM image."""

    name: str
    generation: str
    accelerator_type: str
    chips: int
    workers: int
    runtime_version: str

    @property
    def multi_host(self) -> bool:
        return self.workers > 1


def topology_module():
    """``dog_jax/train/tpu_topology.py`` without the ``dog_jax.train`` package (see the module docstring)."""
    name = "dog_jax.train.tpu_topology"
    if name in sys.modules:  # already imported with the trainer: the same module
        return sys.modules[name]
    alias = "dog_jax.tpu_vm._tpu_topology_file"
    if alias not in sys.modules:
        path = pathlib.Path(__file__).resolve().parents[1] / "train" / "tpu_topology.py"  # local: own source
        spec = importlib.util.spec_from_file_location(alias, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[alias] = module  # dataclasses look their module up while the file executes
        spec.loader.exec_module(module)
    return sys.modules[alias]


def parse(name: str) -> Slice:
    """``v5e-16`` / ``v5litepod-16`` / ``v6e-8`` / ``v4-8`` / ``v5p-8`` -> :class:`Slice`.

    Raises:
      SliceError: a libtpu ``<generation>:<shape>`` name or anything tpu_topology does not know.
    """
    topology = topology_module()
    hint = "pass an accelerator type such as v5e-8, v5e-16, v6e-8, v4-8 or v5p-8"
    if ":" in name:
        raise SliceError(f"slice {name!r} is a libtpu topology name; gcloud rents accelerator types: {hint}")
    try:
        generation, shape = topology.libtpu_name(name).split(":")
    except topology.TopologyError:
        raise SliceError(f"unknown slice {name!r}: {hint}") from None
    chips = math.prod(int(n) for n in shape.split("x"))
    spec = next(s for s in topology.CHIPS.values() if s.name == generation)
    count = name.rsplit("-", 1)[1]
    return Slice(name=name, generation=generation, accelerator_type=f"{_GCLOUD_PREFIX[generation]}-{count}",
                 chips=chips, workers=spec.vms(chips), runtime_version=RUNTIME_VERSIONS[generation])
