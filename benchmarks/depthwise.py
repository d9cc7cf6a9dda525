"""Depthwise convolution speed: every dog_jax impl vs lax.conv vs PyTorch, side by side.

For each depthwise shape of the paper's models at 224x224 input, times the forward pass and the
forward+backward pass (output, input gradient and kernel gradient for a given output gradient) of

  * each ``dog_jax.ops.depthwise_conv2d`` impl (jit-compiled; compile time reported apart),
  * PyTorch ``nn.Conv2d(C, C, k, groups=C, padding="same", bias=False)``, NCHW (default) and
    channels_last, eager, with the same number of threads as JAX uses.

All candidates of one shape run round-robin (A, B, C, A, B, C, ...) after one warm-up call each,
so that load from other processes hits them alike; the table gives medians. Example:

    .venv/bin/python benchmarks/depthwise.py --batch 16 --repeats 5
    .venv/bin/python benchmarks/depthwise.py --shapes convmixer convnext_s1 --impls shift shift_fft
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from dog_jax.ops import depthwise_conv2d  # noqa: E402
from dog_jax.ops.depthwise import IMPLS, impl_runs  # noqa: E402
from dog_jax.ops.auto import select_depthwise_impl  # noqa: E402
from dog_jax.ops.depthwise.geometry import make_geometry  # noqa: E402

# name: (H = W, C, kernel). HorNet-T gnconv runs its 7x7 over sum(dims) = dim*(2 - 2**(1-order))
# channels: stage 1 dim 64 order 2 -> 96, stage 2 128/3 -> 224, stage 3 256/4 -> 480, stage 4 512/5 -> 992.
SHAPES = {
    "convmixer": (32, 512, 9),
    "convnext_s1": (56, 96, 7),
    "convnext_s2": (28, 192, 7),
    "convnext_s3": (14, 384, 7),
    "convnext_s4": (7, 768, 7),
    "hornet_s1": (56, 96, 7),
    "hornet_s2": (28, 224, 7),
    "hornet_s3": (14, 480, 7),
    "hornet_s4": (7, 992, 7),
}


# "toeplitz" is timed only where its (H*W, H*W, C) tap matrix has at most this many entries (256 MiB).
TOEPLITZ_BENCH_MAX_ENTRIES = 2**26


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def available_threads() -> int:
    """CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def print_op_run_header(script: str, argv, batch: int, threads: int, with_torch: bool) -> None:
    """The two header lines of an op benchmark: machine, versions, batch, date and load; the command."""
    versions = f"jax {jax.__version__}"
    if with_torch:
        import torch
        versions += f", torch {torch.__version__}"
    print(f"# {cpu_model()}, {threads} threads, backend {jax.default_backend()}, {versions}, "
          f"batch {batch}, f32, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"# command: python benchmarks/{script} {' '.join(argv if argv is not None else sys.argv[1:])}")


def jax_candidates(x, w, dy, impls):
    """name -> (kind, callable, compile seconds) for the JAX impls."""
    out = {}
    for impl in impls:
        def fwd(x, w, impl=impl):
            return depthwise_conv2d(x, w, impl=impl)

        def fwd_bwd(x, w, dy, impl=impl):
            y, vjp = jax.vjp(fwd, x, w)
            return (y,) + vjp(dy)

        for kind, fn, args in (("fwd", fwd, (x, w)), ("fwd+bwd", fwd_bwd, (x, w, dy))):
            start = time.perf_counter()
            compiled = jax.jit(fn).lower(*args).compile()
            seconds = time.perf_counter() - start
            out[(impl, kind)] = (lambda c=compiled, a=args: jax.block_until_ready(c(*a)), seconds)
    return out


def torch_candidates(x, w, dy, threads, device="cpu"):
    """name -> (callable, 0.0) for PyTorch NCHW and channels_last, in x's dtype, on ``device``.

    Each callable waits for the device (``torch.cuda.synchronize``) so that timings are complete.
    """
    import torch

    torch.set_num_threads(threads)
    dtype = getattr(torch, jnp.dtype(x.dtype).name)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    k, channels = w.shape[0], w.shape[-1]
    conv = torch.nn.Conv2d(channels, channels, k, groups=channels, padding="same", bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(np.asarray(w, np.float32)).permute(3, 2, 0, 1))
    conv = conv.to(device=device, dtype=dtype)

    def to_torch(a):  # NHWC jax array (any float dtype) -> NCHW torch tensor on device
        return torch.from_numpy(np.asarray(a, np.float32)).permute(0, 3, 1, 2).contiguous().to(device, dtype)

    xt, gt = to_torch(x), to_torch(dy)
    out = {}
    for label, fmt in (("torch", torch.contiguous_format), ("torch_cl", torch.channels_last)):
        module = conv.to(memory_format=fmt)
        xin = xt.to(memory_format=fmt).requires_grad_(True)
        grad = gt.to(memory_format=fmt)

        def fwd(module=module, xin=xin):
            with torch.no_grad():
                module(xin)
            sync()

        def fwd_bwd(module=module, xin=xin, grad=grad):
            xin.grad = None
            module.weight.grad = None
            module(xin).backward(grad)
            sync()

        out[(label, "fwd")] = (fwd, 0.0)
        out[(label, "fwd+bwd")] = (fwd_bwd, 0.0)
    return out


def measure(candidates, repeats, slow_repeats, slow):
    times = {key: [] for key in candidates}
    for key, (fn, _) in candidates.items():
        fn()  # warm-up
    for r in range(repeats):
        for key, (fn, _) in candidates.items():
            if key[0] in slow and r >= slow_repeats:
                continue
            start = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - start)
    return {key: statistics.median(v) for key, v in times.items()}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--impls", nargs="+",
                        default=[i for i in IMPLS if i != "auto" and impl_runs(i, "float32")],
                        choices=[i for i in IMPLS if i != "auto"])
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per candidate (median)")
    parser.add_argument("--xla-repeats", type=int, default=2,
                        help="timed calls for the (very slow) xla impl; its warm-up call comes on top")
    parser.add_argument("--no-torch", action="store_true")
    args = parser.parse_args(argv)

    threads = available_threads()
    print_op_run_header("depthwise.py", argv, args.batch, threads, not args.no_torch)
    print("| shape (N,H,W,C) k | impl | compile fwd / fwd+bwd (s) | fwd (ms) | fwd+bwd (ms) "
          "| fwd+bwd vs best torch | fwd+bwd vs xla |")
    print("|---|---|---|---|---|---|---|")
    for name in args.shapes:
        size, channels, k = SHAPES[name]
        shape = (args.batch, size, size, channels)
        torch_device = None if args.no_torch else "cpu"
        for row in benchmark_shape(shape, k, jnp.float32, args.impls, args.repeats, args.xla_repeats,
                                   torch_device, threads):
            print(f"| {name} {row['shape']} k{k} | {row['impl']} | {row['compile']} | {row['fwd_ms']:.1f} "
                  f"| {row['fwd_bwd_ms']:.1f} | {row['vs_torch']} | {row['vs_xla']} |", flush=True)


def benchmark_shape(shape, k, dtype, impls, repeats, xla_repeats, torch_device, threads) -> list[dict]:
    """Times every JAX impl (and PyTorch on ``torch_device`` unless None) at one (N, H, W, C) shape.

    Returns one dict per candidate: shape, impl (tagged "(auto)" for the one auto picks), compile
    (text, s), fwd_ms, fwd_bwd_ms, vs_torch (best PyTorch layout's fwd+bwd time / this one's, as
    text), vs_xla (text). Inputs are standard normal, the kernel N(0, 0.05²), all in ``dtype``.
    """
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal(shape, np.float32), dtype)
    impls = [i for i in impls if impl_runs(i, dtype)]  # "native": float32 on CPU only
    w = jnp.asarray(rng.standard_normal((k, k, 1, shape[3]), np.float32) * 0.05, dtype)
    dy = jnp.asarray(rng.standard_normal(shape, np.float32), dtype)
    if "toeplitz" in impls and (shape[1] * shape[2]) ** 2 * shape[3] > TOEPLITZ_BENCH_MAX_ENTRIES:
        impls = [i for i in impls if i != "toeplitz"]  # its tap matrix would need GBs here
    candidates = jax_candidates(x, w, dy, impls)
    if torch_device is not None:
        candidates.update(torch_candidates(x, w, dy, threads, torch_device))
    slow = {"xla"} if jax.default_backend() == "cpu" else set()  # lax.conv is slow on CPU only
    medians = measure(candidates, repeats, xla_repeats, slow=slow)
    labels = list(dict.fromkeys(key[0] for key in candidates))
    torch_best = min((medians[(t, "fwd+bwd")] for t in ("torch", "torch_cl") if (t, "fwd+bwd") in medians),
                     default=None)
    xla = medians.get(("xla", "fwd+bwd"))
    auto = select_depthwise_impl(shape, make_geometry(shape, w.shape, 1, "SAME", 1), dtype=x.dtype)
    rows = []
    for label in labels:
        fb = medians[(label, "fwd+bwd")]
        rows.append({
            "shape": shape, "impl": f"{label} (auto)" if label == auto else label,
            "compile": (f"{candidates[(label, 'fwd')][1]:.2f} / {candidates[(label, 'fwd+bwd')][1]:.2f}"
                        if label in impls else "-"),
            "fwd_ms": medians[(label, "fwd")] * 1e3, "fwd_bwd_ms": fb * 1e3,
            "vs_torch": f"{torch_best / fb:.2f}x" if torch_best else "-",
            "vs_xla": f"{xla / fb:.1f}x" if xla else "-"})
    return rows

if __name__ == "__main__":
    main()
