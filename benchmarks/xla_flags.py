"""XLA:CPU flags side by side: the dog_jax training step under each ``XLA_FLAGS`` setting.

Each setting runs ``benchmarks/train_step.py --no-torch`` in its own process (XLA reads the
flags once per process); settings alternate (A, B, C, A, B, C, ...) for ``--rounds`` rounds so
that load from other jobs hits them alike. Reports the median step time and compile time per
setting and the ratio to the first (baseline) setting. A setting is written without the leading
dashes (argparse would take it for an option); "none" is no flags; several flags in one setting
are separated by spaces. Example:

    .venv/bin/python benchmarks/xla_flags.py --model convnext_tiny --rounds 2 \\
        --flags none xla_cpu_enable_fast_math=true xla_cpu_experimental_ynn_fusion_type=dot,eltwise
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_FLAGS = (
    "none",
    "xla_cpu_enable_fast_math=true",
    "xla_cpu_experimental_ynn_fusion_type=dot,eltwise,reduce",
    "xla_cpu_experimental_xnn_fusion_type=dot,eltwise,reduce",
    "xla_cpu_experimental_onednn_fusion_type=dot,eltwise",
    "xla_cpu_use_xnnpack=false",
)


def to_xla_flags(setting: str) -> str:
    """'a=1 b=2' -> '--a=1 --b=2'; 'none' -> ''."""
    if setting.strip() in ("", "none"):
        return ""
    return " ".join("--" + flag.lstrip("-") for flag in setting.split())
ROW = re.compile(r"^\| (\S+) \| dog_jax[^|]*\| ([\d.]+) \(([\d.]+) CPU\) \| ([\d.]+) \|")


def run_once(model: str, batch: int, steps: int, flags: str) -> tuple[float, float]:
    """(step seconds, compile seconds) of one train_step.py process under XLA_FLAGS=flags."""
    env = dict(os.environ, XLA_FLAGS=to_xla_flags(flags))
    command = [sys.executable, "benchmarks/train_step.py", "--no-torch", "--models", model,
               "--batch", str(batch), "--steps", str(steps)]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    for line in result.stdout.splitlines():
        match = ROW.match(line)
        if match:
            return float(match.group(4)), float(match.group(2))
    raise RuntimeError(f"XLA_FLAGS={flags!r}: no result; stderr tail: {result.stderr[-500:]}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="convnext_tiny")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--flags", nargs="+", default=list(DEFAULT_FLAGS),
                        help='XLA_FLAGS settings without leading dashes; the first is the baseline ("none")')
    args = parser.parse_args(argv)
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load {os.getloadavg()[0]:.2f}, "
          f"{args.model}, batch {args.batch}, {args.steps} steps x {args.rounds} rounds")
    print(f"# command: python benchmarks/xla_flags.py {' '.join(argv if argv is not None else sys.argv[1:])}")
    steps = {flags: [] for flags in args.flags}
    compiles = {flags: [] for flags in args.flags}
    for _ in range(args.rounds):
        for flags in args.flags:
            try:
                step, compile_s = run_once(args.model, args.batch, args.steps, flags)
            except RuntimeError as error:
                print(f"# {error}", flush=True)
                continue
            steps[flags].append(step)
            compiles[flags].append(compile_s)
    base = statistics.median(steps[args.flags[0]]) if steps[args.flags[0]] else None
    print(f"# load at end {os.getloadavg()[0]:.2f}")
    print("| XLA_FLAGS | step (s), each round | compile (s) | baseline / this |")
    print("|---|---|---|---|")
    for flags in args.flags:
        if not steps[flags]:
            print(f"| `{to_xla_flags(flags) or '(none)'}` | failed | - | - |")
            continue
        median = statistics.median(steps[flags])
        ratio = f"{base / median:.2f}x" if base else "-"
        print(f"| `{to_xla_flags(flags) or '(none)'}` | {' / '.join(f'{s:.2f}' for s in steps[flags])} "
              f"| {statistics.median(compiles[flags]):.1f} | {ratio} |", flush=True)


if __name__ == "__main__":
    main()
