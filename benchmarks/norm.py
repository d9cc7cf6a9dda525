"""Normalisation speed: dog_jax's native CPU kernels vs its pure-JAX code vs PyTorch, side by side.

For the LayerNorm shapes of ConvNeXt-T and the BatchNorm shape of ConvMixer-512/12 at 224x224 input,
times the forward pass and the forward+backward pass (y, dx, dscale, dbias for a given output
gradient) of

  * ``dog_jax.ops.norms.layernorm.layer_norm`` / ``dog_jax.ops.norms.batchnorm.batch_norm_train`` (training
    mode: batch statistics) with impl "native" and "xla" (jit-compiled),
  * PyTorch, eager, with the same number of threads as JAX: ``torch.nn.LayerNorm(C)`` on the
    contiguous (N, H, W, C) tensor (what timm's ``LayerNorm2d`` runs on a channels_last model);
    ``torch.nn.BatchNorm2d(C)`` in training mode on the channels_last tensor.

All candidates of one shape run round-robin after one warm-up call each (``depthwise.measure``), so
that load from other processes hits them alike; the table gives medians. Example:

    .venv/bin/python benchmarks/norm.py --batch 16 --repeats 10
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.depthwise import available_threads, measure, print_op_run_header  # noqa: E402
from dog_jax.ops.norms.batchnorm import batch_norm_train  # noqa: E402
from dog_jax.ops.norms.layernorm import layer_norm  # noqa: E402
from dog_jax.ops.native.library import NATIVE_AVAILABLE, native_status  # noqa: E402

# name: (op, H = W, C): ConvNeXt-T's per-block LayerNorms (stages 1-4), ConvMixer-512/12's BatchNorm.
SHAPES = {"ln_convnext_s1": ("layernorm", 56, 96), "ln_convnext_s2": ("layernorm", 28, 192),
          "ln_convnext_s3": ("layernorm", 14, 384), "ln_convnext_s4": ("layernorm", 7, 768),
          "bn_convmixer": ("batchnorm", 32, 512)}


def jax_candidates(op, x, scale, bias, dy, impls):
    """(impl, kind) -> (callable, compile seconds)."""
    out = {}
    for impl in impls:
        def fwd(x, s, b, impl=impl):
            if op == "layernorm":
                return layer_norm(x, s, b, impl=impl)
            return batch_norm_train(x, s, b, impl=impl)[0]

        def fwd_bwd(x, s, b, dy, impl=impl):
            y, vjp = jax.vjp(fwd, x, s, b)
            return (y,) + vjp(dy)

        for kind, fn, args in (("fwd", fwd, (x, scale, bias)), ("fwd+bwd", fwd_bwd, (x, scale, bias, dy))):
            start = time.perf_counter()
            compiled = jax.jit(fn).lower(*args).compile()
            out[(impl, kind)] = (lambda c=compiled, a=args: jax.block_until_ready(c(*a)),
                                 time.perf_counter() - start)
    return out


def torch_candidates(op, x, scale, bias, dy, threads):
    """(label, kind) -> (callable, 0.0): torch.nn.LayerNorm on the (N, H, W, C) tensor, or
    torch.nn.BatchNorm2d (training mode) on the channels_last (N, C, H, W) view of it."""
    import torch

    torch.set_num_threads(threads)
    c = x.shape[-1]
    norm = torch.nn.LayerNorm(c, eps=1e-6) if op == "layernorm" else torch.nn.BatchNorm2d(c).train()
    with torch.no_grad():
        norm.weight.copy_(torch.from_numpy(np.array(scale)))
        norm.bias.copy_(torch.from_numpy(np.array(bias)))

    def to_torch(a):  # channels-last memory either way; BatchNorm2d takes the (N, C, H, W) view
        t = torch.from_numpy(np.array(a))
        return t if op == "layernorm" else t.permute(0, 3, 1, 2)

    xt = to_torch(x).requires_grad_(True)
    gt = to_torch(dy)

    def fwd():
        with torch.no_grad():
            norm(xt)

    def fwd_bwd():
        xt.grad = None
        norm.weight.grad = norm.bias.grad = None
        norm(xt).backward(gt)

    return {("torch", "fwd"): (fwd, 0.0), ("torch", "fwd+bwd"): (fwd_bwd, 0.0)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--repeats", type=int, default=10, help="timed calls per candidate (median)")
    parser.add_argument("--no-torch", action="store_true")
    args = parser.parse_args(argv)

    threads = available_threads()
    impls = ["native", "xla"] if NATIVE_AVAILABLE else ["xla"]
    print_op_run_header("norm.py", argv, args.batch, threads, not args.no_torch)
    print(f"# {native_status()}")
    print("| op, shape (N,H,W,C) | impl | fwd (ms) | fwd+bwd (ms) | fwd+bwd vs torch | fwd+bwd vs xla |")
    print("|---|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    for name in args.shapes:
        op, size, channels = SHAPES[name]
        shape = (args.batch, size, size, channels)
        x = jnp.asarray(rng.standard_normal(shape, np.float32))
        dy = jnp.asarray(rng.standard_normal(shape, np.float32))
        scale = jnp.asarray(1.0 + 0.1 * rng.standard_normal(channels, np.float32))
        bias = jnp.asarray(0.1 * rng.standard_normal(channels, np.float32))
        candidates = jax_candidates(op, x, scale, bias, dy, impls)
        if not args.no_torch:
            candidates.update(torch_candidates(op, x, scale, bias, dy, threads))
        medians = measure(candidates, args.repeats, args.repeats, slow=set())
        torch_fb, xla_fb = medians.get(("torch", "fwd+bwd")), medians[("xla", "fwd+bwd")]
        for label in dict.fromkeys(key[0] for key in candidates):
            fb = medians[(label, "fwd+bwd")]
            vs_torch = f"{torch_fb / fb:.2f}x" if torch_fb else "-"
            print(f"| {name} {shape} | {label} | {medians[(label, 'fwd')] * 1e3:.2f} | {fb * 1e3:.2f} "
                  f"| {vs_torch} | {xla_fb / fb:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
