"""The pod plan for the paper's ImageNet runs: ``train.py --aot_topology`` over models x slices.

Runs one ``train.py --config=... --aot_topology=... --aot_report=...`` per case (skipping cases whose
report already exists, so an interrupted plan resumes), then writes the table of docs/tpu.md from
the reports: ``docs/results/tpu_plan/<case>.json``, ``docs/results/tpu_plan/table.md``, and the same
table in docs/tpu.md between its ``<!-- tpu_plan table -->`` markers.

    python benchmarks/tpu_plan.py                 # every case, in the listed order (hours on 2 cores)
    python benchmarks/tpu_plan.py --only convnext_tiny-v5e-64-bf16 --table-only

The input rate a host must deliver at the roofline estimate is compared with the pipeline's measured
images per CPU-second (docs/performance.md, "Input pipeline": 284-302 on the 2-core machine, the
lower figure is used), giving the host cores the pipeline needs at that rate.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dog_jax import provenance  # noqa: E402
OUT = REPO / "docs" / "results" / "tpu_plan"
PIPELINE_IMAGES_PER_CPU_SECOND = 284  # docs/performance.md, idle 2-core machine, timm's train recipe

CONFIGS = {
    "convnext_tiny": "configs/convnext.py:dw_init=dog",
    "hornet_tiny_7x7": "configs/hornet.py:dw_init=dog",
    "convmixer_512_12": "configs/convmixer.py:dw_init=dog",
}
# (model, slice, precision, remat[, grad_accum_steps]), most informative first: every family on a slice where batch 4096
# fits (64 per chip: the cheapest compiles), what remat costs and saves on the same slice, every family
# on smaller slices (ConvMixer, the quickest to compile, on the most), ConvNeXt-T on the slices where
# it may not fit, float32; ConvNeXt-T's batch 4096 kept on small slices by gradient accumulation.
CASES = [
    ("convnext_tiny", "v5e-64", "bfloat16", False),
    ("hornet_tiny_7x7", "v5e-64", "bfloat16", False),
    ("convmixer_512_12", "v5e-64", "bfloat16", False),
    ("convnext_tiny", "v5e-64", "bfloat16", True),
    ("convnext_tiny", "v5e-16", "bfloat16", False),
    ("convmixer_512_12", "v5e-16", "bfloat16", False),
    ("convmixer_512_12", "v6e-8", "bfloat16", False),
    ("convmixer_512_12", "v5e-64", "float32", False),
    ("hornet_tiny_7x7", "v5e-16", "bfloat16", False),
    ("convnext_tiny", "v6e-8", "bfloat16", False),
    ("hornet_tiny_7x7", "v6e-8", "bfloat16", False),
    ("convnext_tiny", "v4-8", "bfloat16", False),
    ("convnext_tiny", "v4-8", "bfloat16", True),
    ("hornet_tiny_7x7", "v5e-64", "float32", False),
    ("convnext_tiny", "v5e-64", "float32", False),
    ("convnext_tiny", "v5e-8", "bfloat16", False),
    ("convnext_tiny", "v5e-8", "bfloat16", True),
    ("convmixer_512_12", "v5e-8", "bfloat16", False),
    ("convnext_tiny", "v5e-4", "bfloat16", False),  # does not fit: the batch search at full size
    ("convnext_tiny", "v5e-4", "bfloat16", True),
    # One host of 8 NVIDIA H100s, compiled without a GPU (jax's CUDA plugin: requirements-gpu-aot.txt).
    ("convnext_tiny", "h100x8", "bfloat16", False),
    ("hornet_tiny_7x7", "h100x8", "bfloat16", False),
    ("convmixer_512_12", "h100x8", "bfloat16", False),
    # The recipe's batch on one host of 4 v5e chips and on one chip, by gradient accumulation: micro-batches of
    # 512 and 256 per chip (512 per chip fits without accumulation on a v5e-8). Not compiled yet: about an
    # hour each on the 2-core machine.
    ("convnext_tiny", "v5e-4", "bfloat16", False, 2),
    ("convnext_tiny", "v5e-1", "bfloat16", False, 16),
]
GLOBAL_BATCH = 4096  # the paper's setting for all three (ConvMixer's own recipe uses 640)


def case_name(model: str, topology: str, precision: str, remat: bool, accum: int = 1) -> str:
    return (f"{model}-{topology}-{'bf16' if precision == 'bfloat16' else 'f32'}{'-remat' if remat else ''}"
            f"{f'-accum{accum}' if accum > 1 else ''}")


def command(model: str, topology: str, precision: str, remat: bool, accum: int = 1) -> list[str]:
    name = case_name(model, topology, precision, remat, accum)
    return ["python", "train.py", f"--config={CONFIGS[model]}", f"--config.batch_size={GLOBAL_BATCH}",
            *([f"--config.grad_accum_steps={accum}"] if accum > 1 else []),
            f"--config.precision={precision}", *(["--config.remat=true"] if remat else []),
            f"--aot_topology={topology}", f"--aot_report=docs/results/tpu_plan/{name}.json"]


def run_case(case: tuple) -> None:
    name = case_name(*case)
    if (OUT / f"{name}.json").exists():
        print(f"[tpu_plan] {name}: report exists, skipped", file=sys.stderr)
        return
    args = command(*case)
    start, load_at_start = time.time(), os.getloadavg()[0]
    commit = provenance.code_label({"code": provenance.code_version()})  # as the report will record it
    print(f"[tpu_plan] {name}: {' '.join(args)}", file=sys.stderr, flush=True)
    result = subprocess.run([sys.executable, *args[1:]], cwd=REPO, capture_output=True, text=True)
    log = OUT / f"{name}.log"
    log.write_text(f"$ {' '.join(args)}\n# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(start))}, "
                   f"exit {result.returncode}, {time.time() - start:.0f} s wall, 1-min load at start "
                   f"{load_at_start:.1f} and end {os.getloadavg()[0]:.1f}, commit {commit}\n" + "\n".join(
                       line for line in result.stderr.splitlines() if "dog_jax" in line or "error" in line
                       or "aot.py" in line))
    print(f"[tpu_plan] {name}: exit {result.returncode} after {time.time() - start:.0f} s", file=sys.stderr)


def _gib(num_bytes: float) -> str:
    return f"{num_bytes / 2**30:.1f}"


def _memory(r: dict, refused: bool) -> str:
    """Total per chip (the compiled step + the loop's next batch + the reserve) / capacity; reports
    made before the total existed give the compiled step alone."""
    if refused:
        return f"> {_gib(r['memory_bytes_per_device'])} / {_gib(r['hbm_bytes_per_device'])} (XLA: out of HBM)"
    if "total_bytes" not in r:
        return f"{_gib(r['memory_bytes_per_device'])} (step only) / {_gib(r['hbm_bytes_per_device'])}"
    return (f"{_gib(r['total_bytes'])} = {_gib(r['compiled_bytes'])} + {r['input_buffer_bytes'] / 2**30:.2f} + "
            f"{r['reserve_bytes'] / 2**30:.2f} / {_gib(r['hbm_bytes_per_device'])}")


def _load(case: tuple) -> str:
    """The machine's 1-min load average during the compile, from the case's log."""
    log = OUT / f"{case_name(*case)}.log"
    text = log.read_text() if log.exists() else ""
    measured = re.search(r"load at start ([\d.]+) and end ([\d.]+)", text)
    if measured:
        return f"load {measured[1]}–{measured[2]}"
    noted = re.search(r"\(load ([\d.]+-[\d.]+)\)", text)  # logs written by hand before loads were recorded
    if noted:
        return f"load {noted[1].replace('-', '–')}"
    uptime = re.search(r"load average: ([\d.]+)", text)  # an `uptime` line at the start
    return f"load {uptime[1]} at start" if uptime else "load not recorded"


def _search(report: dict) -> str:
    """The batch search's compiles, when the batch did not fit."""
    if "search_compile_seconds" not in report:
        return ""
    return f" + {report['search_compile_seconds']:.0f} search ({len(report['probed_memory_bytes']) - 1} compiles)"


def _commit(report: dict) -> str:
    label = provenance.code_label(report.get("provenance"))
    return "not recorded (reports before provenance)" if label == "unrecorded" else label


def _reports() -> list[tuple[tuple, dict | None]]:
    """(case, report) of every case with a report, grouped for reading: by model, bfloat16 before
    float32, without remat before with, then the largest slice first; then the cases not compiled yet
    (report None), in the listed order."""
    done = [(case, json.loads(path.read_text())) for case in CASES
            if (path := OUT / f"{case_name(*case)}.json").exists()]
    pending = [(case, None) for case in CASES if not (OUT / f"{case_name(*case)}.json").exists()]
    return sorted(done, key=lambda item: (list(CONFIGS).index(item[0][0]), item[0][2] != "bfloat16", item[0][3],
                                          -item[1]["num_devices"])) + pending


def _per_chip(report: dict) -> str:
    """The per-chip batch, with its micro-batches when accumulated."""
    k = report.get("grad_accum_steps", 1)  # reports written before accumulation existed have none
    return f"{report['per_device_batch']} = {k} × {report['micro_batch_per_device']}" if k > 1 else \
        str(report["per_device_batch"])


def _largest(report: dict) -> str:
    """The largest global batch that fits, and the accumulation that keeps the recipe's batch."""
    if report["fits"]:
        return f"≥ {report['global_batch']} (not searched)"
    largest = report["largest_fitting_per_device_batch"]
    text = f"{largest * report['num_devices']} ({largest}/chip)"
    if "smallest_fitting_grad_accum_steps" in report:
        k = report["smallest_fitting_grad_accum_steps"]
        text += f"; {report['global_batch']} with grad_accum_steps={k}" if k else "; no accumulation fits"
    return text


def _not_compiled(case: tuple) -> str:
    model, topology, precision, remat, *accum = case
    micro = f" in {accum[0]} micro-batches" if accum else ""
    return (f"| {model} | {topology} | {precision} | {'yes' if remat else 'no'} | global {GLOBAL_BATCH}{micro} | "
            "not compiled yet | — | — | — | — | — | — | — | — | — | — |")


def table() -> str:
    """Markdown table of every report in OUT (order: :func:`_reports`) and their commands."""
    rows = ["| model | slice | precision | remat | per-chip batch | memory = step + next batch + reserve / HBM per "
            "chip (GiB) | fits | largest global batch that fits | GFLOP per step per chip | GFLOP per image | "
            "roofline estimate ms/step | est. min/epoch | est. h for 50 epochs | host input at the estimate img/s "
            "(cores) | compile s (load) | commit |",
            "|" + "---|" * 16]
    listed = _reports()
    for case, r in listed:
        if r is None:
            rows.append(_not_compiled(case))
            continue
        refused = r["train_step"].get("out_of_memory")  # XLA would not compile the step: no costs
        if refused or r["roofline_step_seconds"] is None:  # refused, or no cost analysis (GPU without a GPU)
            costs = "— | — | — | — | — | —"
        else:
            rate = r["images_per_second_per_host_at_roofline"]
            costs = (f"{r['flops_per_step_per_device'] / 1e9:.0f} | "
                     f"{r['flops_per_step_per_device'] / 1e9 / r['per_device_batch']:.1f} | "
                     f"{r['roofline_step_seconds'] * 1e3:.0f} | {r['roofline_epoch_seconds'] / 60:.1f} | "
                     f"{r['roofline_run_seconds'] / 3600:.1f} | "
                     f"{rate:,.0f} ({rate / PIPELINE_IMAGES_PER_CPU_SECOND:.0f})")
        units = ("GPU" if r.get("libtpu_topology", "") is None else "chip") + ("s" if r["num_devices"] > 1 else "")
        rows.append(
            f"| {r['model']} | {r['topology']} ({r['num_devices']} {units}, {r['num_hosts']} host"
            f"{'s' if r['num_hosts'] > 1 else ''}) | {r['precision']} | "
            f"{'yes' if r['remat'] else 'no'} | {_per_chip(r)} | {_memory(r, bool(refused))} | "
            f"{'yes' if r['fits'] else '**no**'} | {_largest(r)} | {costs} | "
            f"{r['compile_seconds']:.0f}{_search(r)} ({_load(case)}) | {_commit(r)} |")
    commands = [f"- `{' '.join(command(*case))}`" for case, _ in listed]
    return "\n".join(rows) + "\n\nCommands (one per row, in order):\n\n" + "\n".join(commands) + "\n"


MARK_BEGIN, MARK_END = "<!-- tpu_plan table -->", "<!-- end tpu_plan table -->"


def write_tables() -> str:
    """Writes table.md and the table in docs/tpu.md (between its markers); returns the table."""
    text = table()
    (OUT / "table.md").write_text(text)
    doc = REPO / "docs" / "tpu.md"
    if doc.exists() and MARK_BEGIN in doc.read_text():
        before, rest = doc.read_text().split(MARK_BEGIN, 1)
        doc.write_text(before + MARK_BEGIN + "\n" + text + rest[rest.index(MARK_END):])
    return text


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", help="case names to run (default: all)")
    parser.add_argument("--table-only", action="store_true", help="only rewrite table.md from the reports")
    args = parser.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    if not args.table_only:
        for case in CASES:
            if not args.only or case_name(*case) in args.only:
                run_case(case)
    # Once, at the end: rewriting tracked files between cases would mark the following reports'
    # code as dirty (their provenance is taken from this checkout). The reports alone are the
    # plan's state; --table-only rebuilds the table from them at any time.
    print(write_tables())


if __name__ == "__main__":
    main()
