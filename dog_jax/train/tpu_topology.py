"""Cloud TPU slices as ahead-of-time compile targets: names, devices and published chip figures.

A TPU slice's devices come from libtpu's topology description (``jax.experimental.topologies``),
which works on a machine without TPUs (a CPU laptop or CI) when the ``libtpu`` package of jax's
``tpu`` extra is installed (``pip install -e .[tpu]``). Names are either libtpu's
``<generation>:<shape>`` (``v5e:4x4``, ``v4:2x2x1``) or the accelerator types users rent
(``v5e-16``, ``v5litepod-16``, ``v4-8``, ``v5p-8``, ``v6e-8``).

One JAX device per chip: v4 and v5p chips carry two TensorCores that JAX drives as one
"megacore" device, as on a real v4/v5p VM (a v4-8 has 4 chips, 4 JAX devices, 8 TensorCores).
"""

from __future__ import annotations

import dataclasses
import os
import re

GiB = 2**30


@dataclasses.dataclass(frozen=True)
class ChipSpec:
    """Published per-chip figures: HBM capacity (bytes), peak bf16 FLOP/s, HBM bandwidth (bytes/s), and
    the chips one TPU VM host drives in a multi-host training slice; ``usable_hbm_bytes``: what XLA
    lets a program use (below), None where nothing is known."""

    name: str
    hbm_bytes: int
    peak_bf16_flops: float
    hbm_bytes_per_second: float
    chips_per_host: int
    source: str
    chips_per_vm: int = 4
    usable_hbm_bytes: int | None = None

    @property
    def reserve_bytes(self) -> int:
        """HBM a program may not use: capacity − usable (0 when usable is unknown or not smaller)."""
        return max(0, self.hbm_bytes - self.usable_hbm_bytes) if self.usable_hbm_bytes else 0

    def hosts(self, chips: int) -> int:
        """Physical hosts of a slice of ``chips`` chips, as Google's slice tables count them (a v5e
        4x4 is 2 hosts). libtpu's topology groups devices 4 to a process whatever the generation, so
        its process count is not used."""
        return -(-chips // self.chips_per_host)

    def vms(self, chips: int) -> int:
        """TPU VMs (= ``--worker`` indices = JAX processes) of a slice of ``chips`` chips: one VM up
        to a host's chips, else one per ``chips_per_vm`` chips (multi-host v5e/v6e slices are built
        from 4-chip VMs: a v5e/v6e 4x4 is 2 hosts but 4 VMs)."""
        return 1 if chips <= self.chips_per_host else -(-chips // self.chips_per_vm)


# Google Cloud's TPU documentation (tpu/docs/v4, v5e, v5p, v6e; read 2026-12): "Peak compute per
# chip (bf16)", "HBM capacity and bandwidth", and the slice tables' chips and hosts (v5e 4x4: 16
# chips on 2 hosts; v6e: 8 chips per host; v4/v5p 2x2x1: 4 chips on 1 host). Capacities are taken
# in GiB (the docs write "GB" for v5e/v5p/v6e and "GiB" for v4; HBM stacks come in binary sizes).
# TPU VMs per slice (read 2026-12-06): cloud.google.com/tpu/docs/v6e, "Supported configurations": 4x4 =
# 16 chips, 2 hosts, 4 VMs (ct6e-standard-4t); 2x4 = 1 VM of 8 chips. tpu/docs/v5e, "VM types": a v5e
# VM holds 1, 4 or 8 chips, multi-host slices use the 4-chip VM (ct5lp-hightpu-4t). v4/v5p: 4 chips
# per VM (a v4-16 is 2 VMs).
# Usable HBM: what XLA's TPU compiler (libtpu 0.0.42) says a program may use, read from its refusal of a
# program too large for every chip ("... exceeds available HBM (15.75G)", binary units; measured
# 2026-12-06 by compiling a program needing 466 GiB of temporaries for v5e:2x2, v6e:2x2, v4:2x2x1,
# v5p:2x2x1). v5p: 95.74G, more than the 95 GiB published figure used as its capacity: no reserve there.
CHIPS = {
    "TPU v4": ChipSpec("v4", 32 * GiB, 275e12, 1200e9, 4, "cloud.google.com/tpu/docs/v4",
                       usable_hbm_bytes=int(30.75 * GiB)),
    "TPU v5 lite": ChipSpec("v5e", 16 * GiB, 197e12, 819e9, 8, "cloud.google.com/tpu/docs/v5e",
                            usable_hbm_bytes=int(15.75 * GiB)),
    "TPU v5": ChipSpec("v5p", 95 * GiB, 459e12, 2765e9, 4, "cloud.google.com/tpu/docs/v5p",
                       usable_hbm_bytes=int(95.74 * GiB)),
    "TPU v6 lite": ChipSpec("v6e", 32 * GiB, 918e12, 1638e9, 8, "cloud.google.com/tpu/docs/v6e",
                            usable_hbm_bytes=int(31.25 * GiB)),
}

# Accelerator type -> libtpu topology. v4/v5p types count TensorCores (2 per chip), v5e/v6e chips.
_SHAPES_2D = {1: "1x1", 4: "2x2", 8: "2x4", 16: "4x4", 32: "4x8", 64: "8x8", 128: "8x16", 256: "16x16"}
_SHAPES_3D = {4: "2x2x1", 8: "2x2x2", 16: "2x2x4", 32: "2x4x4", 64: "4x4x4", 128: "4x4x8", 256: "4x8x8",
              512: "8x8x8"}
# Slices of fewer chips than libtpu's default host (2x2) -- one v5e/v6e chip (``v5e-1``, a VM of one chip:
# ct5lp-hightpu-1t) or two -- are described with a host of their own size (libtpu's
# ``chips_per_host_bounds``; without it libtpu 0.0.42 refuses "v5e:1x1": "not divisible by ... 2x2x1").
_SMALLER_THAN_A_HOST = {"1x1": [1, 1, 1], "1x2": [1, 2, 1], "2x1": [2, 1, 1]}
_GENERATIONS = {"v4": "v4", "v5p": "v5p", "v5e": "v5e", "v5litepod": "v5e", "v6e": "v6e"}
_MEGACORE = ("v4", "v5p")


class TopologyError(ValueError):
    """A topology name libtpu does not know, or libtpu is missing; one line saying what to do."""


def libtpu_name(name: str) -> str:
    """``v5e-16`` -> ``v5e:4x4``; libtpu names (``v5e:4x4``) pass through.

    Raises:
      TopologyError: an accelerator type whose size has no standard slice shape here.
    """
    if ":" in name:
        return name
    match = re.fullmatch(r"(v4|v5p|v5e|v5litepod|v6e)-(\d+)", name)
    if not match:
        raise TopologyError(f"unknown TPU topology {name!r}: use an accelerator type such as v5e-16, v4-8, "
                            "v6e-8, v5p-8, or libtpu's <generation>:<shape> such as v5e:4x4")
    generation, count = _GENERATIONS[match.group(1)], int(match.group(2))
    if generation in _MEGACORE:
        shape = _SHAPES_3D.get(count // 2) if count % 2 == 0 else None
    else:
        shape = _SHAPES_2D.get(count)
    if shape is None:
        raise TopologyError(f"no standard slice shape for {name}; name it by shape, e.g. "
                            f"{generation}:{'2x2x2' if generation in _MEGACORE else '4x4'}")
    return f"{generation}:{shape}"


def topology_devices(name: str) -> list:
    """The JAX devices of TPU slice ``name`` (one per chip), from libtpu, without TPUs.

    Raises:
      TopologyError: libtpu not installed, or a name it does not know.
    """
    import jax
    from jax.experimental import topologies

    libtpu = libtpu_name(name)
    # Several processes may compile for TPU at once (pytest workers): libtpu's per-host lock file
    # guards real TPU chips, which a topology description never opens.
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    generation, _, shape = libtpu.partition(":")
    options = {"chip_config_name": "megacore"} if generation in _MEGACORE else {}
    if shape in _SMALLER_THAN_A_HOST:  # libtpu's default host of 2x2 chips does not divide these
        options["chips_per_host_bounds"] = _SMALLER_THAN_A_HOST[shape]
    try:
        return list(topologies.get_topology_desc(platform="tpu", topology_name=libtpu, **options).devices)
    except Exception as error:  # noqa: BLE001 - libtpu raises plain RuntimeErrors/XlaRuntimeErrors
        message = " ".join(str(error).split())
        if not _libtpu_installed():
            raise TopologyError(f"compiling for TPU needs libtpu: pip install -e .[tpu] (or "
                                f"pip install -r requirements-tpu.txt); jax {jax.__version__} said: "
                                f"{message[:160]}") from None
        raise TopologyError(f"libtpu does not know topology {libtpu!r} ({message[:200]}); try e.g. v5e:4x4, "
                            "v4:2x2x1, v6e:2x4") from None


def _libtpu_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("libtpu") is not None


def chip_spec(device_kind: str) -> ChipSpec:
    """Published figures for a device kind ("TPU v5 lite", ...); TopologyError for unknown kinds."""
    try:
        return CHIPS[device_kind]
    except KeyError:
        raise TopologyError(f"no published figures recorded for {device_kind!r} (known: "
                            f"{', '.join(CHIPS)}); add them to dog_jax.train.tpu_topology.CHIPS") from None
