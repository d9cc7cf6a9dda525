"""The whole ``impl="auto"`` rule of every op, and the compile target it is decided for.

Every op with several implementations (``depthwise_conv2d``, ``layer_norm``, ``batch_norm_train``)
resolves ``impl="auto"`` here, while JAX traces it, for the **target**: the platform and device
count of the computation being compiled -- not the Python host's ``jax.default_backend()``.
Compiling ahead of time for a Cloud TPU topology on a CPU machine (``train.py --aot_topology``),
the host backend is "cpu" while the program is a TPU program: a choice made by the host would put
CPU-only custom calls and CPU-tuned code into it.

The target, first match wins:

1. the innermost :func:`compile_target` context. The trainer enters one from its mesh inside
   every function it jits (``dog_jax.train.steps``), so the context holds while JAX traces;
2. otherwise JAX's default device set: ``jax.default_backend()`` and ``jax.device_count()`` --
   where a ``jax.jit`` without shardings, or eager code, runs.

The rule (measurements behind it: docs/performance.md, "How auto chooses"):

* GPU and TPU: "xla" for every op (cuDNN / the TPU convolution emitter and XLA's fusions; no
  dog_jax custom call and no CPU-tuned formulation ever enters such a program).
* CPU, native kernels (C++ through the XLA FFI, ``dog_jax.ops.native.library``) where they were built,
  the computation is float32 and the target is a **single** device. With several devices a sharded
  computation cannot split the kernels' custom calls: XLA's SPMD partitioner gathers the whole batch
  and every device computes all of it, so "auto" keeps to pure JAX there (``impl="native"`` still
  forces the kernels).
* CPU depthwise convolution, per shape class: when the input map has no more pixels than the kernel
  has taps, "toeplitz" (one batched matmul; its tap matrix has H*W*H'*W'*C entries, so it is capped);
  kernels of 15x15 and more, "shift_fft" (the FFT's cost does not grow with the kernel); then
  "native" (float32, stride 1, measured faster at every model shape it was timed on); then
  "shift_blocked" for wide layers (C >= 384, a multiple of 8) on maps of at least 10x10 (on 7x7 maps
  its extra transposes cost more than they save); otherwise "shift". The "shift*" impls share one
  fused shifted multiply-add forward and input gradient and differ only in the weight gradient.

:func:`record_choices` collects what "auto" resolved to while a model is traced (run provenance).
"""

from __future__ import annotations

import collections
import contextlib
import contextvars
import dataclasses
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp

from dog_jax.ops.native import library

if TYPE_CHECKING:  # annotations only: the depthwise package imports this module
    from dog_jax.ops.depthwise.geometry import DepthwiseGeometry

PLATFORMS = ("cpu", "gpu", "tpu")
NORM_IMPLS = ("auto", "xla", "native")  # of layer_norm and batch_norm_train

FFT_MIN_TAPS = 15 * 15          # kernels at least this large: FFT weight gradient
BLOCKED_MIN_CHANNELS = 384      # at least this many channels (a multiple of 8) ...
BLOCKED_MIN_MAP = 10            # ... on output maps at least this large: blocked
TOEPLITZ_MAX_ENTRIES = 2**24    # tap-matrix entries (64 MiB in f32) allowed for "toeplitz"


@dataclasses.dataclass(frozen=True)
class Target:
    """Where a computation will run: ``platform`` ("cpu", "gpu", "tpu") and its device count."""

    platform: str
    device_count: int = 1

    def __post_init__(self):
        if self.platform not in PLATFORMS:
            raise ValueError(f"compile target platform must be one of {PLATFORMS}, got {self.platform!r}")
        if self.device_count < 1:
            raise ValueError(f"compile target device_count must be >= 1, got {self.device_count}")


_TARGET: contextvars.ContextVar[Target | None] = contextvars.ContextVar("dog_jax_compile_target", default=None)
_RECORDS: contextvars.ContextVar[list | None] = contextvars.ContextVar("dog_jax_auto_records", default=None)


def _platform_of(device: Any) -> str:
    platform = device.platform
    return "gpu" if platform in ("cuda", "rocm") else platform


def target_of(mesh_or_devices: Any) -> Target:
    """The target of a ``jax.sharding.Mesh`` (or a sequence of devices): their platform and count."""
    devices = getattr(mesh_or_devices, "devices", mesh_or_devices)
    devices = list(getattr(devices, "flat", devices))
    platforms = {_platform_of(device) for device in devices}
    if len(platforms) != 1:
        raise ValueError(f"a compile target needs devices of one platform, got {sorted(platforms)}")
    return Target(platforms.pop(), len(devices))


@contextlib.contextmanager
def compile_target(target: Target | Any) -> Iterator[Target]:
    """Within this context every "auto" choice is made for ``target`` (a Target, a Mesh or devices).

    Enter it inside the function being traced (JAX traces ``jax.jit`` functions at their first
    call or ``.lower()``, not where ``jax.jit`` is called).
    """
    target = target if isinstance(target, Target) else target_of(target)
    token = _TARGET.set(target)
    try:
        yield target
    finally:
        _TARGET.reset(token)


def current_target() -> Target:
    """The target "auto" decides for now (module docstring)."""
    target = _TARGET.get()
    if target is not None:
        return target
    return Target(_platform_of(jax.devices()[0]), jax.device_count())


def native_allowed(target: Target | None = None) -> bool:
    """Whether "auto" may use the native CPU kernels for ``target`` (default: the current one)."""
    target = target or current_target()
    return library.NATIVE_AVAILABLE and target.platform == "cpu" and target.device_count == 1


@contextlib.contextmanager
def record_choices() -> Iterator[dict[str, collections.Counter]]:
    """Collects what "auto" resolves to while in this context: ``{op: Counter(impl -> calls)}``.

    Trace a model inside it (e.g. ``jax.eval_shape``) to learn which implementations a run uses.
    """
    records: list[tuple[str, str]] = []
    token = _RECORDS.set(records)
    choices: dict[str, collections.Counter] = {}
    try:
        yield choices
    finally:
        _RECORDS.reset(token)
        for op, impl in records:
            choices.setdefault(op, collections.Counter())[impl] += 1


def _chosen(op: str, impl: str) -> str:
    records = _RECORDS.get()
    if records is not None:
        records.append((op, impl))
    return impl


def _float32(*dtypes) -> bool:
    return all(dtype is None or jnp.dtype(dtype) == jnp.float32 for dtype in dtypes)


def select_depthwise_impl(x_shape, geometry: DepthwiseGeometry, dtype=None, *, target: Target | None = None,
                          native: bool | None = None) -> str:
    """The impl ``depthwise_conv2d(impl="auto")`` runs for this input shape and geometry.

    Args:
      x_shape: (N, H, W, C) of the input.
      geometry: the resolved geometry (kernel size, strides, output size).
      dtype: the computation dtype (of input and kernel together); None: float32.
      target: where the computation runs; default :func:`current_target`.
      native: override whether the native kernel may be used (default :func:`native_allowed`).
    """
    target = target or current_target()
    if target.platform != "cpu":
        return _chosen("depthwise", "xla")
    kh, kw = geometry.kernel_size
    channels = x_shape[3] * geometry.multiplier
    in_pixels, out_pixels = x_shape[1] * x_shape[2], geometry.out_size[0] * geometry.out_size[1]
    if in_pixels <= kh * kw and in_pixels * out_pixels * channels <= TOEPLITZ_MAX_ENTRIES:
        return _chosen("depthwise", "toeplitz")
    if kh * kw >= FFT_MIN_TAPS:
        return _chosen("depthwise", "shift_fft")
    native = native_allowed(target) if native is None else native
    if native and _float32(dtype) and geometry.strides == (1, 1):
        return _chosen("depthwise", "native")
    if channels >= BLOCKED_MIN_CHANNELS and channels % 8 == 0 and min(geometry.out_size) >= BLOCKED_MIN_MAP:
        return _chosen("depthwise", "shift_blocked")
    return _chosen("depthwise", "shift")


def check_norm_impl(layer: str, impl: str) -> None:
    """Raises one clear line unless ``impl`` is one of ``NORM_IMPLS``."""
    if impl not in NORM_IMPLS:
        raise ValueError(f"{layer} impl must be one of {NORM_IMPLS}, got {impl!r}")


def select_norm_impl(op: str, native_fits: bool, *, target: Target | None = None) -> str:
    """The impl ``layer_norm`` / ``batch_norm_train`` (``op``) run for "auto".

    ``native_fits``: the arguments are ones the native kernel takes (float32, shapes, no axis_name).
    """
    return _chosen(op, "native" if native_fits and native_allowed(target) else "xla")


def check_native_target(op: str) -> None:
    """Raises one line if a forced ``impl="native"`` is traced for a target other than CPU."""
    target = current_target()
    if target.platform != "cpu":
        raise ValueError(f"{op}(impl='native') runs on CPU only, but this computation is compiled for "
                         f"{target.platform}; use impl='auto'")
