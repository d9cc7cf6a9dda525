"""Training-step throughput: dog_jax (Flax NNX, jit) vs timm/PyTorch eager, same machine, same batch.

One step = forward, cross-entropy loss, backward, AdamW update (fp32, random images and labels,
224x224, model in training mode: BatchNorm batch statistics, no drop path). Reports images/s from
the median of the timed steps, the step's process CPU time (work of all threads: less distorted than
wall time when other jobs share the machine), and for dog_jax the compile time of the step
(``lower().compile()``) apart from the timed steps. ``--norm-impls auto xla`` times dog_jax once
per LayerNorm/BatchNorm impl. By default (``--order sequential``) each candidate is built, warmed
up, timed and dropped before the next is built (dog_jax first), so each runs alone in the process.
``--order round-robin`` builds all candidates first and steps them A, B, C, A, B, C, ..., which
spreads load from other jobs over all alike, but on a quiet 2-core machine the JAX step ran
25-45 % slower with the PyTorch models built beside it (ConvNeXt-T 5.2-5.8 s vs 4.0 s;
ConvMixer-512/12 8.0 s vs 6.0-6.4 s), so use it only on a busy machine.

PyTorch counterparts: ``convmixer_512_12`` is timm's ``ConvMixer(dim=512, depth=12, kernel_size=9,
patch_size=7)`` (timm registers no 512/12 variant), ``convnext_tiny`` is timm's; HorNet has no
timm model and the official code is not a package, so ``hornet_tiny_7x7`` is timed in dog_jax only.
PyTorch runs in its default (NCHW) layout and with ``channels_last``. ``--dw-params free basis`` also
times the dog_jax model with basis-parameterised depthwise kernels (``dw_param="basis"``).

    .venv/bin/python benchmarks/train_step.py --models convmixer_512_12 convnext_tiny --batch 16
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402

from benchmarks.depthwise import cpu_model  # noqa: E402
from dog_jax.models import create_model  # noqa: E402
from dog_jax.models.layers import BatchNorm, LayerNorm  # noqa: E402

MODELS = ("convmixer_512_12", "convnext_tiny", "hornet_tiny_7x7")
LEARNING_RATE, WEIGHT_DECAY = 1e-3, 0.05


def dog_jax_step(name: str, batch: int, *, image_size: int = 224, dtype=jnp.float32,
                 overrides: dict | None = None, return_compiled: bool = False,
                 norm_impl: str = "auto") -> tuple:
    """(label, (compile wall s, compile CPU s), run_one_step) for the dog_jax model; run_one_step blocks.

    ``dtype`` is the compute dtype (parameters stay float32); ``overrides`` are architecture fields
    passed to ``create_model`` (e.g. a narrower model for a smoke run). ``return_compiled`` appends
    the compiled step (for its HLO) to the tuple. ``norm_impl`` is set as every ``LayerNorm``'s and
    ``BatchNorm``'s ``impl`` ("auto", "xla" or "native").
    """
    model = create_model(name, dtype=dtype, rngs=nnx.Rngs(0), **(overrides or {}))
    model.train()
    for _, module in nnx.iter_modules(model):
        if isinstance(module, (LayerNorm, BatchNorm)):
            module.impl = norm_impl
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    params, rest = nnx.to_pure_dict(params), nnx.to_pure_dict(rest)
    tx = optax.adamw(LEARNING_RATE, weight_decay=WEIGHT_DECAY)
    opt_state = tx.init(params)

    def step(params, rest, opt_state, images, labels):
        def loss_fn(params):
            logits, new_rest = _apply(graphdef, params, rest, images)
            return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), new_rest

        (loss, new_rest), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), new_rest, opt_state, loss

    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.standard_normal((batch, image_size, image_size, 3), np.float32))
    labels = jnp.asarray(rng.integers(0, 1000, batch), jnp.int32)
    start, start_cpu = time.perf_counter(), time.process_time()
    compiled = jax.jit(step, donate_argnums=(0, 1, 2)).lower(params, rest, opt_state, images, labels).compile()
    # Wall clock, and CPU seconds (less sensitive to other jobs on a shared machine).
    compile_s = (time.perf_counter() - start, time.process_time() - start_cpu)
    carry = [params, rest, opt_state]

    def run_one_step():
        *carry[:], loss = compiled(*carry, images, labels)  # new params, rest, opt_state
        if not np.isfinite(float(loss)):
            raise FloatingPointError(f"{name}: non-finite loss")

    dw_param = (overrides or {}).get("dw_param", "free")
    parts = (["depthwise impl auto"] + (["basis kernels"] if dw_param == "basis" else [])
             + ([f"norm impl {norm_impl}"] if norm_impl != "auto" else []))
    label = f"dog_jax ({', '.join(parts)})"
    result = (label, compile_s, run_one_step)
    return result + (compiled,) if return_compiled else result


def _apply(graphdef, params, rest, images):
    model = nnx.merge(graphdef, params, rest)
    logits = model(images).astype(jnp.float32)
    _, _, new_rest = nnx.split(model, nnx.Param, ...)  # BatchNorm statistics, RNG counters
    return logits, nnx.to_pure_dict(new_rest)


def torch_model(name: str, overrides: dict | None = None):
    """The timm counterpart of a dog_jax model (same architecture fields as ``overrides``), or None."""
    from timm.models.convmixer import ConvMixer
    from timm.models.convnext import ConvNeXt

    overrides = overrides or {}
    if name == "convmixer_512_12":
        fields = {"width": 512, "depth": 12, "kernel_size": 9, "patch_size": 7, **overrides}
        return ConvMixer(dim=fields["width"], depth=fields["depth"], kernel_size=fields["kernel_size"],
                         patch_size=fields["patch_size"])
    if name == "convnext_tiny":  # timm.create_model("convnext_tiny") builds the same
        return ConvNeXt(**{"depths": (3, 3, 9, 3), "dims": (96, 192, 384, 768), **overrides})
    return None


def torch_step(name: str, batch: int, threads: int, channels_last: bool, *, image_size: int = 224,
               device: str = "cpu", amp: bool = False,
               overrides: dict | None = None) -> tuple[str, None, callable] | None:
    """(label, None, run_one_step) for the timm model, or None where there is none.

    ``amp``: forward and loss under ``torch.autocast(device, bfloat16)`` (parameters and optimizer
    float32). On CUDA run_one_step waits for the device before returning.
    """
    import torch

    torch.set_num_threads(threads)
    model = torch_model(name, overrides)
    if model is None:
        return None
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.train().to(device=device, memory_format=fmt)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY)
    images = torch.randn(batch, 3, image_size, image_size).to(device=device, memory_format=fmt)
    labels = torch.randint(0, 1000, (batch,)).to(device)
    device_type = torch.device(device).type

    def run_one_step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=amp):
            loss = torch.nn.functional.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()
        if device_type == "cuda":
            torch.cuda.synchronize()

    label = "timm eager" + (" AMP bf16" if amp else "") + (" channels_last" if channels_last else "")
    return label, None, run_one_step


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per framework (after one warm-up)")
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--no-channels-last", action="store_true", help="skip the PyTorch channels_last runs")
    parser.add_argument("--channels-last-only", action="store_true", help="skip the PyTorch NCHW runs")
    parser.add_argument("--dw-params", nargs="+", default=["free"], choices=("free", "basis"),
                        help="dog_jax depthwise parameterisations to time (dw_param; 'basis' builds each "
                             "kernel from 9 numbers per channel in every step)")
    parser.add_argument("--order", choices=("sequential", "round-robin"), default="sequential",
                        help="time each candidate's steps in one block (default; for a quiet machine), or "
                             "interleave the candidates step by step (spreads load from other jobs)")
    parser.add_argument("--norm-impls", nargs="+", default=["auto"], choices=("auto", "xla", "native"),
                        help="one dog_jax candidate per LayerNorm/BatchNorm impl "
                             "(auto xla: native vs pure JAX)")
    args = parser.parse_args(argv)

    threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    versions = f"jax {jax.__version__}"
    if not args.no_torch:
        import timm
        import torch
        versions += f", torch {torch.__version__}, timm {timm.__version__}"
    print(f"# {cpu_model()}, {threads} threads, {versions}, batch {args.batch}, fp32, AdamW, "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load average {os.getloadavg()[0]:.1f}")
    print(f"# command: python benchmarks/train_step.py {' '.join(argv if argv is not None else sys.argv[1:])}")
    print("| model | framework | compile (s) | step (s) | step CPU (s) | images/s "
          "| vs timm eager (best layout) |")
    print("|---|---|---|---|---|---|---|")
    for name in args.models:
        builders = [lambda p=dw_param, impl=impl: dog_jax_step(name, args.batch, overrides={"dw_param": p},
                                                                norm_impl=impl)
                    for dw_param in args.dw_params for impl in args.norm_impls]
        if not args.no_torch:
            layouts = ((True,) if args.channels_last_only else
                       (False,) if args.no_channels_last else (False, True))
            builders += [lambda cl=channels_last: torch_step(name, args.batch, threads, cl)
                         for channels_last in layouts]
        times, cpu_times, compile_times = {}, {}, {}

        def timed(label, run):
            start, start_cpu = time.perf_counter(), time.process_time()
            run()
            times[label].append(time.perf_counter() - start)
            cpu_times[label].append(time.process_time() - start_cpu)

        def built(candidate):
            label, compile_s, run = candidate
            times[label], cpu_times[label], compile_times[label] = [], [], compile_s
            run()  # warm-up: first call allocates buffers (and, for PyTorch, picks kernels)
            return label, run

        if args.order == "sequential":
            # Build, time and drop one candidate at a time: each runs alone in the process.
            for build in builders:
                candidate = build()
                if candidate is not None:
                    label, run = built(candidate)
                    for _ in range(args.steps):
                        timed(label, run)
                    del candidate, run
                    gc.collect()
        else:
            runs = [built(candidate) for candidate in (build() for build in builders) if candidate is not None]
            for _ in range(args.steps):
                for label, run in runs:
                    timed(label, run)
        medians = {label: statistics.median(t) for label, t in times.items()}
        torch_times = [t for label, t in medians.items() if label.startswith("timm")]
        best_torch = min(torch_times) if torch_times else None
        for label, compile_s in compile_times.items():
            compile_text = f"{compile_s[0]:.1f} ({compile_s[1]:.1f} CPU)" if compile_s is not None else "-"
            ratio = f"{best_torch / medians[label]:.2f}x" if best_torch else "no PyTorch model"
            print(f"| {name} | {label} | {compile_text} | {medians[label]:.2f} | "
                  f"{statistics.median(cpu_times[label]):.2f} | "
                  f"{args.batch / medians[label]:.2f} | {ratio} |", flush=True)


if __name__ == "__main__":
    main()
