"""Where a training step's time goes: per-op-class breakdown in dog_jax (XLA:CPU) and timm (PyTorch).

dog_jax: the jitted step (``benchmarks/train_step.py``'s) runs under ``jax.profiler.trace``; every
executed HLO instruction (thunk) of the step is attributed, through the source location XLA keeps
in the instruction's metadata, to the innermost user function that emitted it (for a fusion: the
source of most of its fused instructions), and from that to a class: depthwise, pointwise/MLP
matmuls, patchify/downsample, LayerNorm, BatchNorm, GELU, optimizer, loss/head, other.
PyTorch: ``torch.profiler`` over the eager step, self CPU time of each aten op, by op name.
Times are totals over the timed steps divided by their number (seconds per step); they add up to
less than the step time in PyTorch (Python overhead between ops is not an op).

    .venv/bin/python benchmarks/step_profile.py --models convnext_tiny convmixer_512_12 --batch 16
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402

# (substring of "file:function" of the innermost user frame, class); first match wins.
JAX_CLASSES = (
    ("depthwise", "depthwise conv"),
    ("layers.py:DepthwiseConv2D", "depthwise conv"),
    ("PointwiseLinear", "pointwise matmuls"),
    ("PatchifyConv", "patchify/downsample"),
    ("LayerNorm", "LayerNorm"),
    ("BatchNorm", "BatchNorm"),
    ("layernorm", "LayerNorm"),  # dog_jax/ops/norms/layernorm*.py (native kernel, pure-JAX code)
    ("batchnorm", "BatchNorm"),
    ("gelu", "GELU"),
    ("_tree_math.py", "optimizer"),
    ("update.py", "optimizer"),
    ("transform.py", "optimizer"),
    ("alias.py", "optimizer"),
    ("train_step.py:step", "optimizer"),
    ("softmax_cross_entropy", "loss/head"),
    ("linear.py:Linear", "pointwise matmuls"),  # flax's Linear: PointwiseLinear's matmul (and the head)
)


def _hlo_sources(hlo_text: str) -> dict[str, str]:
    """instruction name -> "file:function:line" of its innermost source frame (from the HLO text)."""

    def table(title, pattern):
        block = hlo_text.split(f"\n{title}\n", 1)[1].split("\n\n", 1)[0] if f"\n{title}\n" in hlo_text else ""
        return {m.group(1): m.groups()[1:] for m in re.finditer(pattern, block)}

    files = {k: v[0] for k, v in table("FileNames", r'(\d+) "(.*)"').items()}
    funcs = {k: v[0] for k, v in table("FunctionNames", r'(\d+) "(.*)"').items()}
    locs = table("FileLocations", r"(\d+) \{file_name_id=(\d+) function_name_id=(\d+) line=(\d+)")
    frames = table("StackFrames", r"(\d+) \{file_location_id=(\d+)")
    out = {}
    for m in re.finditer(r"%([\w.\-]+) = .*?stack_frame_id=(\d+)", hlo_text):
        loc = locs.get(frames.get(m.group(2), ("",))[0])
        if loc:
            out[m.group(1)] = f"{Path(files.get(loc[0], '?')).name}:{funcs.get(loc[1], '?')}:{loc[2]}"
    return out


def _classify(source: str) -> str:
    return next((cls for key, cls in JAX_CLASSES if key in source), "other")


def jax_breakdown(name: str, batch: int, steps: int, image_size: int, overrides) -> tuple[dict, float, float]:
    """({class: seconds per step}, step seconds, compile seconds) of the dog_jax step."""
    from benchmarks.train_step import dog_jax_step

    _, compile_s, run, compiled = dog_jax_step(
        name, batch, image_size=image_size, overrides=overrides, return_compiled=True
    )
    sources = _hlo_sources(compiled.as_text())
    run()
    with tempfile.TemporaryDirectory() as trace_dir:
        start = time.perf_counter()
        with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
            for _ in range(steps):
                run()
        step_s = (time.perf_counter() - start) / steps
        trace = next(Path(trace_dir).rglob("perfetto_trace.json.gz"))
        events = json.load(gzip.open(trace))
    events = events["traceEvents"] if isinstance(events, dict) else events
    totals = collections.Counter()
    by_source = collections.Counter()
    for event in events:
        op = event.get("args", {}).get("hlo_op") if event.get("ph") == "X" else None
        # Loop and call thunks contain the thunks of their bodies, which are counted themselves.
        if op and "jit_step" in event["args"].get("hlo_module", "") and not op.startswith(("while", "call")):
            source = sources.get(op, op)
            totals[_classify(source)] += event["dur"] * 1e-6 / steps
            by_source[source] += event["dur"] * 1e-6 / steps
    return totals, step_s, compile_s[0], by_source


def torch_breakdown(
    name: str, batch: int, steps: int, image_size: int, overrides, threads
) -> tuple[dict, float]:
    """({aten op: self CPU seconds per step}, step seconds) of the timm step in channels_last."""
    import torch

    from benchmarks.train_step import torch_step

    _, _, run = torch_step(name, batch, threads, True, image_size=image_size, overrides=overrides)
    run()
    start = time.perf_counter()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        for _ in range(steps):
            run()
    step_s = (time.perf_counter() - start) / steps
    totals = collections.Counter()
    for row in profile.key_averages():
        totals[row.key] += row.self_cpu_time_total * 1e-6 / steps
    return totals, step_s


TORCH_CLASSES = (
    ("convolution_backward", "conv backward (depthwise, patchify)"),
    ("conv", "conv forward"),
    ("mkldnn_convolution", "conv forward"),
    ("addmm", "pointwise matmuls"),
    ("mm", "pointwise matmuls"),
    ("linear", "pointwise matmuls"),
    ("layer_norm", "LayerNorm"),
    ("batch_norm", "BatchNorm"),
    ("gelu", "GELU"),
    ("_foreach", "optimizer"),
    ("adam", "optimizer"),
    ("softmax", "loss/head"),
    ("nll", "loss/head"),
)


def main(argv=None) -> None:
    import os

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["convnext_tiny", "convmixer_512_12"])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--top", type=int, default=12, help="source locations / aten ops listed per model")
    parser.add_argument("--no-torch", action="store_true")
    args = parser.parse_args(argv)
    threads = len(os.sched_getaffinity(0))
    print(
        f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load {os.getloadavg()[0]:.1f}, "
        f"batch {args.batch}, {args.image_size}², {threads} threads; "
        "command: python benchmarks/step_profile.py "
        + " ".join(sys.argv[1:] if argv is None else argv)
    )
    for name in args.models:
        jax_totals, jax_step, compile_s, by_source = jax_breakdown(
            name, args.batch, args.steps, args.image_size, None
        )
        torch_classes, torch_step_s, torch_ops = collections.Counter(), None, {}
        if not args.no_torch:
            torch_ops, torch_step_s = torch_breakdown(
                name, args.batch, args.steps, args.image_size, None, threads
            )
            for op, seconds in torch_ops.items():
                torch_classes[next((c for k, c in TORCH_CLASSES if k in op), "other")] += seconds
        print(
            f"\n## {name}: dog_jax step {jax_step:.2f} s (compile {compile_s:.1f} s), "
            f"timm channels_last step {torch_step_s or float('nan'):.2f} s\n"
        )
        print("| class | dog_jax (s/step) | timm (s/step) |\n|---|---|---|")
        for cls in sorted(set(jax_totals) | set(torch_classes), key=lambda c: -jax_totals.get(c, 0)):
            print(f"| {cls} | {jax_totals.get(cls, 0):.3f} | {torch_classes.get(cls, 0):.3f} |")
        print(f"| sum of ops | {sum(jax_totals.values()):.3f} | {sum(torch_classes.values()):.3f} |")
        print(
            "\ndog_jax top source locations (s/step): "
            + "; ".join(f"{src} {sec:.3f}" for src, sec in by_source.most_common(args.top))
        )
        if torch_ops:
            print(
                "timm top aten ops (self s/step): "
                + "; ".join(
                    f"{op} {sec:.3f}" for op, sec in collections.Counter(torch_ops).most_common(args.top)
                )
            )


if __name__ == "__main__":
    main()
