"""How ``impl="auto"`` picks a depthwise implementation: per backend, then per shape class.

CPU (measured; docs/performance.md has the tables). The forward pass and the input gradient are
the same fused shifted multiply-add in every "shift*" impl (channel-blocked for C >= 64, see
``depthwise_shift.py``); the impls differ only in the weight gradient, so the choice is the fastest
weight-gradient method for the shape. Measured with a weight-gradient-only timing (median process
CPU time of 5 calls, one thread pinned with ``taskset``, batch 4; process time because the 2-core
machine was shared with other jobs) on an AMD EPYC (Zen 4) VM, jax 0.10.2, 2026-11-25; times in ms
for rows / blocked / fft:

    (N, H, W, C)        k    rows   blocked   fft
    (4, 32, 32, 512)    9    95.7    28.3     56.4    -> blocked   (ConvMixer-512)
    (4, 56, 56, 96)     7     6.6     6.8     17.3    -> rows      (ConvNeXt-T stage 1)
    (4, 28, 28, 192)    7     3.0     3.3      7.0    -> rows      (stage 2)
    (4, 14, 14, 384)    7     3.2     1.7      3.7    -> blocked   (stage 3)
    (4, 7, 7, 768)      7     3.2     4.3      4.3    -> rows      (stage 4)
    (4, 28, 28, 224)    7     3.9     3.8      8.5    -> rows      (HorNet-T stage 2)
    (4, 14, 14, 480)    7     2.5     2.5      4.8    -> blocked   (stage 3)
    (4, 7, 7, 992)      7     4.1    11.4      6.0    -> rows      (stage 4)
    (4, 14, 14, 384)   31   128.4      -      36.4    -> fft       (large kernel; earlier row loop)

Rules that reproduce these choices: the FFT's cost does not grow with the kernel, so it wins for
kernels of 15x15 and more; channel blocking pays off for wide layers (C >= 384) on maps of at least
10x10 (on 7x7 maps the extra transposes cost more than they save); otherwise the plain row loop.

Before all of these (added later, measured on the same VM with nothing else running, 2026-11-25,
forward + backward, batch 16): when the input map has no more pixels than the kernel has taps,
"toeplitz" (one batched matmul) -- (16, 7, 7, 768) k7: 11.5 ms vs 38.2 ms for "auto"'s shifted
form, (16, 7, 7, 992): 13.9 vs 45.2 ms; at (16, 14, 14, 384), four times the taps, it lost
(115.9 vs 25.8 ms). Its tap matrix has H*W*H'*W'*C entries, so it is also capped in size.

GPU and TPU: "xla" (cuDNN / the TPU convolution emitter) until measured; a GPU kernel would be
added as another impl and selected here.
"""

from __future__ import annotations

import jax

from dog_jax.ops.depthwise_args import DepthwiseGeometry

FFT_MIN_TAPS = 15 * 15          # kernels at least this large: FFT weight gradient
BLOCKED_MIN_CHANNELS = 384      # at least this many channels (a multiple of 8) ...
BLOCKED_MIN_MAP = 10            # ... on output maps at least this large: blocked
TOEPLITZ_MAX_ENTRIES = 2**24    # tap-matrix entries (64 MiB in f32) allowed for "toeplitz"


def select_impl(x_shape, geometry: DepthwiseGeometry, backend: str | None = None) -> str:
    """Returns the impl name "auto" resolves to for this input shape and geometry.

    Args:
      x_shape: (N, H, W, C) of the input.
      geometry: the resolved geometry (kernel size, strides, output size).
      backend: "cpu", "gpu", "tpu"; defaults to ``jax.default_backend()``.
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
    if channels >= BLOCKED_MIN_CHANNELS and channels % 8 == 0 and short_side >= BLOCKED_MIN_MAP:
        return "shift_blocked"
    return "shift"
