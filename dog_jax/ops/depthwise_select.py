"""How ``impl="auto"`` picks a depthwise implementation: per backend, then per shape class.

CPU (measured; the per-shape timings behind these rules are in docs/performance.md, "How auto
chooses"). The forward pass and the input gradient are the same fused shifted multiply-add in every
"shift*" impl (channel-blocked for C >= 64, see ``depthwise_shift.py``); the impls differ only in the
weight gradient, so the choice is the fastest weight-gradient method for the shape. The rules: the
FFT's cost does not grow with the kernel, so it wins for kernels of 15x15 and more; channel blocking
pays off for wide layers (C >= 384) on maps of at least 10x10 (on 7x7 maps the extra transposes cost
more than they save); otherwise the plain row loop. Before all of these: when the input map has no
more pixels than the kernel has taps, "toeplitz" (one batched matmul); its tap matrix has
H*W*H'*W'*C entries, so it is also capped in size.

"native" (the C++ kernel through the XLA FFI, ``depthwise_native.py``: float32, stride 1), measured
after all of these and faster at every model shape it was timed on, takes every float32 stride-1
case with fewer than 15x15 taps that "toeplitz" does not take -- when the kernel is built.

GPU and TPU: "xla" (cuDNN / the TPU convolution emitter) until measured; a GPU kernel would be
added as another impl and selected here.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from dog_jax.ops.depthwise_args import DepthwiseGeometry
from dog_jax.ops.native_cpu import auto_may_use_native

FFT_MIN_TAPS = 15 * 15          # kernels at least this large: FFT weight gradient
BLOCKED_MIN_CHANNELS = 384      # at least this many channels (a multiple of 8) ...
BLOCKED_MIN_MAP = 10            # ... on output maps at least this large: blocked
TOEPLITZ_MAX_ENTRIES = 2**24    # tap-matrix entries (64 MiB in f32) allowed for "toeplitz"


def select_impl(x_shape, geometry: DepthwiseGeometry, backend: str | None = None, dtype=None,
                native: bool | None = None) -> str:
    """Returns the impl name "auto" resolves to for this input shape and geometry.

    Args:
      x_shape: (N, H, W, C) of the input.
      geometry: the resolved geometry (kernel size, strides, output size).
      backend: "cpu", "gpu", "tpu"; defaults to ``jax.default_backend()``.
      dtype: the computation dtype (of input and kernel together); "native" needs float32. None:
        float32 assumed.
      native: whether the native CPU kernel may be used; defaults to
        ``dog_jax.ops.native_cpu.auto_may_use_native()`` (built, CPU, a single device).
    """
    backend = backend or jax.default_backend()
    if backend != "cpu":
        return "xla"
    kh, kw = geometry.kernel_size
    channels = x_shape[3] * geometry.multiplier
    short_side = min(geometry.out_size)
    in_pixels, out_pixels = x_shape[1] * x_shape[2], geometry.out_size[0] * geometry.out_size[1]
    if in_pixels <= kh * kw and in_pixels * out_pixels * channels <= TOEPLITZ_MAX_ENTRIES:
        return "toeplitz"
    if kh * kw >= FFT_MIN_TAPS:
        return "shift_fft"
    native = auto_may_use_native() if native is None else native
    float32 = dtype is None or jnp.dtype(dtype) == jnp.float32
    if native and float32 and geometry.strides == (1, 1):
        return "native"
    if channels >= BLOCKED_MIN_CHANNELS and channels % 8 == 0 and short_side >= BLOCKED_MIN_MAP:
        return "shift_blocked"
    return "shift"
