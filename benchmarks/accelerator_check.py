"""One-command accelerator check: depthwise exactness, depthwise speed and training-step speed vs PyTorch.

Writes ONE markdown report (device name, versions, date, command) with four sections, each run on
its own: a section that fails records its error in the report and the others still run.

  1. exactness: ``tests/ops/test_depthwise.py`` under pytest (every impl vs the NumPy definition and
     ``lax.conv``), plus every impl's forward, input gradient and kernel gradient against "xla"
     (at ``precision=HIGHEST``) at the models' own depthwise shapes, on this device;
  2. depthwise speed: every impl vs PyTorch ``nn.Conv2d(groups=C)`` (cuDNN on a GPU), NCHW and
     channels_last, float32 and bfloat16 (``benchmarks/depthwise.py``'s timing);
  3. training step vs timm eager, float32: ConvMixer-512/12 and ConvNeXt-T, AdamW
     (``benchmarks/train_step.py``'s timing);
  4. the same in bfloat16: dog_jax with ``dtype=bfloat16`` compute (float32 parameters), timm under
     ``torch.autocast(bfloat16)`` (AMP).

On a CUDA machine with only JAX installed, first install the rest (from the repository root; use
the jax version of requirements.txt). torch 2.14.1 from PyPI is built for CUDA 13 (it depends on
the ``nvidia-*-cu13`` wheels), so take JAX's CUDA 13 plugin too and both load the same CUDA
libraries (needs a driver for CUDA 13; on an older driver use ``jax[cuda12]`` and a CUDA 12 torch
from download.pytorch.org):

    pip install "jax[cuda13]==0.10.2" flax==0.12.8 optax orbax-checkpoint ml-collections chex \\
        absl-py etils importlib_resources safetensors torch==2.14.1 timm==1.0.31 pytest hypothesis
    python benchmarks/accelerator_check.py --out docs/results/accelerator_check_gpu.md

Without torch/timm the PyTorch columns and rows are left out (the report says so). On a CPU it runs
too; ``--tiny`` shrinks every size (2 images, narrow models, 32² input) for a smoke run of seconds:

    python benchmarks/accelerator_check.py --tiny --out check.md
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.depthwise import SHAPES  # noqa: E402
from dog_jax.ops.depthwise import IMPLS, impl_runs  # noqa: E402

# (H = W, C, kernel) of the depthwise layers checked and timed: ConvMixer-512's and ConvNeXt-T's.
FULL_SHAPES = {name: SHAPES[name] for name in ("convmixer", "convnext_s1", "convnext_s2", "convnext_s3",
                                               "convnext_s4")}
TINY_SHAPES = {"tiny k9": (8, 16, 9), "tiny k7": (7, 8, 7)}
TRAIN_MODELS = ("convmixer_512_12", "convnext_tiny")
# Narrow variants for --tiny (the same overrides build the dog_jax and the timm model).
TINY_OVERRIDES = {
    "convmixer_512_12": {"width": 16, "depth": 1},
    "convnext_tiny": {"depths": (1, 1, 1, 1), "dims": (8, 16, 32, 64)},
}


def device_description() -> str:
    device = jax.devices()[0]
    name = getattr(device, "device_kind", str(device))
    if device.platform == "cpu":
        from benchmarks.depthwise import cpu_model

        name = f"{cpu_model()} ({os.cpu_count()} cores)"
    return f"{name} (JAX platform {device.platform}, {jax.device_count()} device(s))"


def torch_device() -> tuple[str | None, str]:
    """(torch device string or None, a line describing it)."""
    try:
        import timm
        import torch
    except ImportError as error:
        return None, f"PyTorch comparison left out: {error}"
    if jax.default_backend() == "gpu":
        if not torch.cuda.is_available():
            return None, f"PyTorch comparison left out: torch {torch.__version__} sees no CUDA device"
        return (
            "cuda",
            f"torch {torch.__version__} on {torch.cuda.get_device_name(0)}, timm {timm.__version__}",
        )
    if jax.default_backend() != "cpu":
        return (
            None,
            f"PyTorch comparison left out: no PyTorch backend for JAX platform {jax.default_backend()}",
        )
    return "cpu", f"torch {torch.__version__} on CPU, timm {timm.__version__}"


def markdown_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def section_pytest(args) -> str:
    """Runs tests/ops/test_depthwise.py in a subprocess; returns its summary and failures."""
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-p",
        "no:xdist",
        str(REPO / "tests" / "ops" / "test_depthwise.py"),
    ]
    if args.tiny:
        command += ["-k", "bad_arguments or auto_is_exact"]
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    start = time.perf_counter()
    done = subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, timeout=args.pytest_timeout
    )
    output = (done.stdout + done.stderr).strip().splitlines()
    shown = "\n".join(output[-40:])
    verdict = "passed" if done.returncode == 0 else f"**FAILED (exit code {done.returncode})**"
    shown_command = " ".join(["python -m pytest -q tests/ops/test_depthwise.py"] + [repr(a) for a in command[9:]])
    return (
        f"`{shown_command}`: {verdict} "
        f"in {time.perf_counter() - start:.0f} s. Last lines:\n\n```\n{shown}\n```"
    )


def section_exactness_on_model_shapes(args) -> str:
    """Every impl's (y, dx, dw) vs "xla" at HIGHEST precision on the benchmark shapes, batch 2."""
    from dog_jax.ops import depthwise_conv2d

    rng = np.random.default_rng(0)
    rows = []
    for name, (size, channels, k) in (TINY_SHAPES if args.tiny else FULL_SHAPES).items():
        shape = (2, size, size, channels)
        x = jnp.asarray(rng.standard_normal(shape, np.float32))
        w = jnp.asarray(rng.standard_normal((k, k, 1, channels), np.float32) * 0.05)
        dy = jnp.asarray(rng.standard_normal(shape, np.float32))

        def fwd_bwd(x, w, dy, impl):
            y, vjp = jax.vjp(lambda x, w: depthwise_conv2d(x, w, impl=impl), x, w)
            return (y,) + vjp(dy)

        with jax.default_matmul_precision("highest"):
            reference = jax.jit(fwd_bwd, static_argnums=3)(x, w, dy, "xla")
        tried = [i for i in IMPLS if i != "xla" and i in args.impls + ["auto"] and impl_runs(i, x.dtype)]
        for impl in tried:
            result = jax.jit(fwd_bwd, static_argnums=3)(x, w, dy, impl)
            errors = [float(jnp.abs(r - e).max() / jnp.abs(e).max()) for r, e in zip(result, reference)]
            verdict = "ok" if max(errors) <= 1e-5 else "**over 1e-5**"
            rows.append([name, shape, f"k{k}", impl] + [f"{e:.1e}" for e in errors] + [verdict])
    return (
        'Normwise relative error max|Δ|/max|ref| against `impl="xla"` evaluated with '
        '`jax.default_matmul_precision("highest")` (bound 1e-5, float32):\n\n'
        + markdown_table(["layer", "shape", "k", "impl", "y", "dx", "dw", "verdict"], rows)
    )


def section_depthwise_speed(args, torch_dev: str | None) -> str:
    from benchmarks.depthwise import TOEPLITZ_BENCH_MAX_ENTRIES, benchmark_shape

    threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    batch = 2 if args.tiny else args.batch
    parts = []
    for dtype in (jnp.float32, jnp.bfloat16):
        rows = []
        for name, (size, channels, k) in (TINY_SHAPES if args.tiny else FULL_SHAPES).items():
            impls = [i for i in IMPLS if (i in args.impls or i == "xla") and impl_runs(i, dtype)]
            try:
                for row in benchmark_shape(
                    (batch, size, size, channels),
                    k,
                    dtype,
                    impls,
                    args.repeats,
                    args.repeats,
                    torch_dev,
                    threads,
                ):
                    rows.append(
                        [
                            name,
                            row["shape"],
                            f"k{k}",
                            row["impl"],
                            row["compile"],
                            f"{row['fwd_ms']:.2f}",
                            f"{row['fwd_bwd_ms']:.2f}",
                            row["vs_torch"],
                            row["vs_xla"],
                        ]
                    )
            except Exception as error:  # one shape failing must not lose the others
                rows.append(
                    [
                        name,
                        (batch, size, size, channels),
                        f"k{k}",
                        "**error**",
                        f"{type(error).__name__}: {str(error).splitlines()[0][:200] if str(error) else ''}",
                        "",
                        "",
                        "",
                        "",
                    ]
                )
        parts.append(
            f"**{jnp.dtype(dtype).name}**, batch {batch}, median of {args.repeats} calls after one "
            'warm-up; "(auto)" marks the impl `impl="auto"` picks on this backend; toeplitz only '
            f"where its tap matrix has at most {TOEPLITZ_BENCH_MAX_ENTRIES} entries.\n\n"
            + markdown_table(
                [
                    "layer",
                    "shape",
                    "k",
                    "impl",
                    "compile fwd / fwd+bwd (s)",
                    "fwd (ms)",
                    "fwd+bwd (ms)",
                    "fwd+bwd vs best torch",
                    "fwd+bwd vs xla",
                ],
                rows,
            )
        )
    return "\n\n".join(parts)


def _time_candidate(build, steps: int) -> tuple[str, tuple | None, float]:
    """Builds one training-step candidate, runs a warm-up step, then ``steps`` timed steps.

    Returns (label, compile times or None, median step seconds); the candidate is dropped before
    returning, so the next one is timed alone.
    """
    import gc
    import statistics

    label, compile_s, run = build()
    run()  # warm-up
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    del run
    gc.collect()
    return label, compile_s, statistics.median(times)


def section_train_step(args, torch_dev: str | None, low_precision: bool) -> str:
    from benchmarks.train_step import dog_jax_step, torch_step

    threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    batch, image_size = (2, 32) if args.tiny else (args.train_batch, 224)
    rows = []
    for name in args.models:
        overrides = TINY_OVERRIDES[name] if args.tiny else None
        builders = [
            lambda: dog_jax_step(
                name,
                batch,
                image_size=image_size,
                overrides=overrides,
                dtype=jnp.bfloat16 if low_precision else jnp.float32,
            )
        ]
        if torch_dev is not None:
            builders += [
                lambda cl=cl: torch_step(
                    name,
                    batch,
                    threads,
                    cl,
                    image_size=image_size,
                    device=torch_dev,
                    amp=low_precision,
                    overrides=overrides,
                )
                for cl in (False, True)
            ]
        medians, compiles = {}, {}
        for build in builders:
            try:
                label, compile_s, median = _time_candidate(build, args.steps)
                medians[label], compiles[label] = median, compile_s
            except Exception as error:  # one candidate failing must not lose the others
                rows.append(
                    [
                        name,
                        "**error**",
                        f"{type(error).__name__}: {str(error).splitlines()[0][:200]}",
                        "",
                        "",
                        "",
                    ]
                )
        best_torch = min((t for label, t in medians.items() if label.startswith("timm")), default=None)
        for label, seconds in medians.items():
            compile_s = compiles[label]
            rows.append(
                [
                    name,
                    label,
                    f"{compile_s[0]:.1f}" if compile_s else "-",
                    f"{seconds * 1e3:.1f}",
                    f"{batch / seconds:.1f}",
                    f"{best_torch / seconds:.2f}x" if best_torch else "-",
                ]
            )
    precision = (
        "dog_jax bfloat16 compute, float32 parameters; timm AMP (autocast bfloat16)"
        if low_precision
        else "float32"
    )
    shrink = f", narrow variants {TINY_OVERRIDES}" if args.tiny else ""
    return (
        f"{precision}; batch {batch}, {image_size}² random images, AdamW; median of {args.steps} steps after "
        f"one warm-up; each candidate alone{shrink}.\n\n"
        + markdown_table(
            ["model", "framework", "compile (s)", "step (ms)", "images/s", "vs timm eager (best layout)"],
            rows,
        )
    )


def run_section(title: str, body) -> str:
    start = time.perf_counter()
    try:
        text = body()
    except Exception:  # the report keeps the traceback and the remaining sections still run
        text = f"**This section failed:**\n\n```\n{traceback.format_exc()[-4000:]}\n```"
    print(f"[accelerator_check] {title}: {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    return f"## {title}\n\n{text}\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="markdown report to write")
    parser.add_argument(
        "--tiny", action="store_true", help="tiny sizes for a smoke run (seconds, any device)"
    )
    parser.add_argument("--batch", type=int, default=16, help="depthwise benchmark batch")
    parser.add_argument("--train-batch", type=int, default=64, help="training-step batch")
    parser.add_argument("--repeats", type=int, default=10, help="timed depthwise calls per candidate")
    parser.add_argument("--steps", type=int, default=10, help="timed training steps per candidate")
    parser.add_argument("--pytest-timeout", type=int, default=1200, help="seconds allowed for the pytest run")
    impls = [i for i in IMPLS if i not in ("auto", "xla")]
    parser.add_argument(
        "--impls",
        nargs="+",
        default=impls,
        choices=impls,
        help="depthwise impls checked and timed besides xla and auto (default: all)",
    )
    parser.add_argument("--models", nargs="+", default=list(TRAIN_MODELS), choices=TRAIN_MODELS)
    parser.add_argument(
        "--no-torch", action="store_true", help="leave PyTorch out even where it is installed"
    )
    parser.add_argument(
        "--sections",
        nargs="+",
        default=["pytest", "exactness", "depthwise", "train", "train_bf16"],
        choices=["pytest", "exactness", "depthwise", "train", "train_bf16"],
    )
    args = parser.parse_args(argv)
    if args.tiny:
        args.repeats, args.steps = min(args.repeats, 2), min(args.steps, 2)

    shown_args = sys.argv[1:] if argv is None else argv
    torch_dev, torch_line = (
        (None, "PyTorch comparison left out (--no-torch)") if args.no_torch else torch_device()
    )
    header = [
        "# Accelerator check",
        "",
        f"- device: {device_description()}",
        f"- jax {jax.__version__} (backend {jax.default_backend()}), {torch_line}",
        f"- python {platform.python_version()}, {platform.platform()}",
        f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
        + (f", load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""),
        f"- command: `python benchmarks/accelerator_check.py {' '.join(shown_args)}`",
        "",
    ]
    bodies = {
        "pytest": ("Depthwise exactness tests (pytest)", lambda: section_pytest(args)),
        "exactness": (
            "Depthwise exactness at the models' shapes",
            lambda: section_exactness_on_model_shapes(args),
        ),
        "depthwise": (
            "Depthwise speed: every impl vs PyTorch",
            lambda: section_depthwise_speed(args, torch_dev),
        ),
        "train": ("Training step vs timm, float32", lambda: section_train_step(args, torch_dev, False)),
        "train_bf16": (
            "Training step vs timm, bfloat16 / AMP",
            lambda: section_train_step(args, torch_dev, True),
        ),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    report = "\n".join(header)
    for key in args.sections:
        report += "\n" + run_section(*bodies[key])
        out.write_text(report)  # written after every section: a crash later keeps what was measured
    print(f"[accelerator_check] report written to {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
