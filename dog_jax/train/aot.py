"""Ahead-of-time compile of the trainer's steps for a Cloud TPU slice, on any machine.

``python train.py --config=... --aot_topology=v5e-16 [--aot_report=FILE.json]`` lowers and
compiles the *same* train step and eval step a run of that config would use (model, optimizer,
EMA, mixup/CutMix, precision, shardings, donation: everything comes from the run's
``run_spec.RunSpec`` through ``run_setup.make_step_functions`` over a mesh of the slice's devices)
for TPU devices that libtpu describes without owning them, and reports what XLA's TPU compiler says:
memory per device, FLOPs and bytes per step, the collectives, and whether any dog_jax custom call
slipped in. Nothing runs and no data is read (the dataset's class count and split sizes come from
tfds metadata or, for ImageNet, from the published sizes).

"Fits" counts what a run holds on each chip: the compiled step, the batches the training loop
keeps on the device besides the step's own, and the HBM the program may not use
(``aot_memory``). ``--aot_topology=h100x8`` compiles for one host of 8 NVIDIA H100 GPUs instead
(``gpu_topology``: memory only, XLA gives no cost analysis for GPU without a GPU).

The roofline time is an **estimate**, never a measured speed: max(FLOPs / peak bf16 FLOP/s,
bytes accessed / HBM bandwidth) per step from the chip's published figures (``tpu_topology.CHIPS``),
where "bytes accessed" is XLA's cost model, not measured traffic: it charges every fused op all of its
operands and its result (too much where a fusion reads part of an operand or an operand stays on
chip, e.g. buffers in memory space 1; too little where XLA spills or re-reads within an op); its split
by op category is ``hlo_bytes``. Real steps are slower than the FLOP term in any case (collectives,
imperfect MXU use, float32 parts).
"""

from __future__ import annotations

import collections
import dataclasses
import importlib.metadata
import json
import re
import time
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging
from jax.sharding import Mesh

from dog_jax import data, provenance, storage
from dog_jax.data import pipeline
from dog_jax.ops.auto import record_choices
from dog_jax.train import (aot_memory, aot_search, aot_text, gpu_topology, hlo_bytes, run_setup, run_spec, sharding,
                           steps, tpu_topology)
from dog_jax.train.aot_text import format_report  # noqa: F401 - the report's console lines, used with aot_report

# Published split sizes for datasets whose tfds metadata is only known once prepared
# (ILSVRC-2012: 1,281,167 training and 50,000 validation images).
KNOWN_SPLIT_SIZES = {"imagenet2012": {"train": 1_281_167, "validation": 50_000}}
_COLLECTIVE = re.compile(r"\b(all-reduce|all-gather|reduce-scatter|all-to-all|collective-permute"
                         r"|collective-broadcast)(?:-start)?\(")
_DOG_JAX_CALL = re.compile(r'custom_call_target="dog_jax_')
# XLA's TPU compiler refuses a program whose temporaries exceed the chip's usable HBM, e.g.
# "RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required for HLO temporaries
# (29.78G) exceeds available HBM (15.75G)." (libtpu 0.0.42; sizes in binary units).
_OUT_OF_HBM = re.compile(r"RESOURCE_EXHAUSTED: Ran out of memory.*?required for HLO temporaries \(([\d.]+)([KMGT]?)\)"
                         r".*?available HBM \([^)]*\)", re.S)
_BINARY_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


@dataclasses.dataclass(frozen=True)
class StepCost:
    """What XLA reports for one compiled step, per device. A step XLA refused to compile for lack of
    HBM has ``out_of_memory`` set to XLA's message, the temporaries XLA said it needs as
    ``memory_bytes`` and ``temp_bytes`` (a lower bound on the total), and no cost figures."""

    memory_bytes: int        # arguments + outputs + temporaries + generated code - aliased (donated) bytes
    argument_bytes: int | None
    output_bytes: int | None
    temp_bytes: int
    alias_bytes: int | None
    flops: float | None
    bytes_accessed: float | None
    collectives: dict[str, int] | None
    dog_jax_custom_calls: int | None
    compile_seconds: float
    out_of_memory: str | None = None
    generated_code_bytes: int | None = None
    bytes_by_category: dict[str, Any] | None = None  # hlo_bytes.bytes_by_category of the optimized HLO


def out_of_hbm(error: Exception, compile_seconds: float) -> StepCost | None:
    """The :class:`StepCost` of a compile XLA stopped because the step needs more HBM than the chip
    has; None if ``error`` is anything else."""
    match = _OUT_OF_HBM.search(str(error))
    if not match:
        return None
    needed = int(float(match[1]) * _BINARY_UNITS[match[2]])
    message = " ".join(match[0].split())
    return StepCost(memory_bytes=needed, argument_bytes=None, output_bytes=None, temp_bytes=needed,
                    alias_bytes=None, flops=None, bytes_accessed=None, collectives=None,
                    dog_jax_custom_calls=None, compile_seconds=compile_seconds, out_of_memory=message)


def analyse(compiled, compile_seconds: float) -> StepCost:
    """Memory, cost and HLO facts of a ``jax.stages.Compiled``."""
    memory = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    cost = cost or {}  # XLA's GPU compiler without a GPU gives no cost analysis
    hlo = compiled.as_text()
    collectives = collections.Counter(match.group(1) for match in _COLLECTIVE.finditer(hlo))
    args, outs = memory.argument_size_in_bytes, memory.output_size_in_bytes
    temp, alias = memory.temp_size_in_bytes, memory.alias_size_in_bytes
    code = memory.generated_code_size_in_bytes  # the program itself lives in device memory too
    return StepCost(memory_bytes=int(args + outs + temp + code - alias), argument_bytes=int(args),
                    output_bytes=int(outs), generated_code_bytes=int(code),
                    bytes_by_category=hlo_bytes.bytes_by_category(hlo),
                    temp_bytes=int(temp), alias_bytes=int(alias),
                    flops=float(cost["flops"]) if "flops" in cost else None,
                    bytes_accessed=float(cost["bytes accessed"]) if "bytes accessed" in cost else None,
                    collectives=dict(sorted(collectives.items())),
                    dog_jax_custom_calls=len(_DOG_JAX_CALL.findall(hlo)), compile_seconds=compile_seconds)


def dataset_facts(config: ml_collections.ConfigDict) -> run_spec.DataFacts:
    """The dataset's classes and split sizes without reading or preparing data (sizes None where unknown)."""
    builder = data.get_builder(config.dataset, config.data_dir, manual_dir=config.manual_dir, prepare=False)
    sizes = {name: split.num_examples for name, split in builder.info.splits.items()}
    sizes = sizes or KNOWN_SPLIT_SIZES.get(config.dataset.split("/")[0], {})
    return run_spec.DataFacts(num_classes=data.num_classes(builder), train_examples=sizes.get(config.train_split),
                              eval_examples=sizes.get(config.eval_split))


def resolve(config: ml_collections.ConfigDict, device_count: int) -> run_spec.RunSpec:
    """The run spec of ``config`` on ``device_count`` devices of one process, its data facts from the
    dataset's metadata (:func:`dataset_facts`). Raises ConfigError for a wrong value."""
    model = run_spec.check(config, device_count=device_count, process_count=1)
    return run_spec.resolve(config, model, dataset_facts(config), device_count=device_count, process_count=1)


def _batch_structs(mesh: Mesh, global_batch: int, image_size: int, *, eval_batch: bool,
                   random_erasing: bool) -> dict[str, Any]:
    """Abstract global batches as the input pipeline delivers them (``pipeline.batch_spec``: uint8
    images; ``sharding.global_batch``)."""
    spec = sharding.batch_sharded(mesh)
    entries = pipeline.batch_spec(image_size, train=not eval_batch, random_erasing=random_erasing)
    return {name: jax.ShapeDtypeStruct((global_batch, *shape), dtype, sharding=spec)
            for name, (shape, dtype) in entries.items()}


def compile_steps(spec: run_spec.RunSpec, devices: list, *,
                  which: tuple[str, ...] = ("train", "eval")) -> dict[str, StepCost]:
    """Compiles the run's train and/or eval step (``which``) for ``devices``: the train step at the global
    batch (with the run's gradient accumulation), the eval step at the eval batch (the micro-batch)."""
    mesh = Mesh(np.asarray(devices), (sharding.DATA_AXIS,))
    tx, schedule = run_setup.make_optimizer(spec)
    parts, state = steps.abstract_init_train_state(
        lambda: spec.model.create(spec.plan.num_classes), tx, mesh, ema=spec.config.ema_decay > 0)
    train_step, eval_step = run_setup.make_step_functions(spec, parts, tx, schedule, mesh)
    available = {"train": (train_step, False), "eval": (eval_step, True)}
    costs = {}
    for name in which:
        step_fn, eval_batch = available[name]
        batch = _batch_structs(mesh, spec.plan.eval_batch if eval_batch else spec.plan.global_batch,
                               spec.config.image_size, eval_batch=eval_batch,
                               random_erasing=spec.config.augment.random_erasing > 0)
        start = time.perf_counter()
        try:
            compiled = step_fn.lower(state, batch, parts.rng_state).compile()
        except jax.errors.JaxRuntimeError as error:
            costs[name] = out_of_hbm(error, time.perf_counter() - start)
            if costs[name] is None:
                raise
            continue
        costs[name] = analyse(compiled, time.perf_counter() - start)
    return costs


def searched_memory(cost: StepCost, capacity: int) -> int:
    """The memory the batch search files for a step: XLA's figure, and above ``capacity`` whenever
    XLA refused the step (its usable HBM is a little below the chip's capacity)."""
    return max(cost.memory_bytes, capacity + 1) if cost.out_of_memory else cost.memory_bytes


def largest_fitting_batch(spec: run_spec.RunSpec, devices: list, capacity: int, *,
                          known: dict[int, int], multiple: int = 8, input_bytes_per_example: int = 0) -> int:
    """The largest per-device batch (a multiple of ``multiple``) whose train step fits in
    ``capacity`` bytes, found by compiling; 0 if not even ``multiple`` fits.
    ``input_bytes_per_example``: device bytes the loop holds besides the step per example of the
    per-device batch (``aot_memory``), added to each probe's compiled figure.

    ``known``: per-device batch -> memory bytes already compiled, with at least one batch that does
    not fit (updated in place). Each probe lies on the straight line through the largest batch
    known to fit (or the smallest measured) and the smallest known not to: memory grows about
    linearly with the batch, so two or three compiles usually settle it; the interval shrinks with
    every probe, so the search ends whatever the memory curve.
    """
    fits = max((b for b, m in known.items() if m <= capacity), default=0)
    fails = min(b for b, m in known.items() if m > capacity)
    while fails - fits > multiple:
        low = fits or min(known)
        if low == fails:  # one measurement: assume memory proportional to the batch
            guess = fails * capacity / known[fails]
        else:
            slope = (known[fails] - known[low]) / (fails - low)
            guess = low + (capacity - known[low]) / slope if slope > 0 else (fits + fails) / 2
        probe = min(max(int(guess) // multiple * multiple, fits + multiple), fails - multiple)
        # The step without accumulation (a batch of the probe's size may not split into the run's micro-batches).
        cost = compile_steps(spec.at_batch_size(probe * len(devices), 1), devices, which=("train",))["train"]
        known[probe] = searched_memory(cost, capacity) + input_bytes_per_example * probe
        logging.info("  per-device batch %d: %s%.2f GiB", probe, "more than " if cost.out_of_memory else "",
                     cost.memory_bytes / 2**30)
        if known[probe] <= capacity:
            fits = probe
        else:
            fails = probe
    return fits


def target_devices(topology: str) -> tuple[list, tpu_topology.ChipSpec]:
    """The compile-only devices of ``topology`` (a TPU slice or a GPU host) and their chip's figures."""
    if gpu_topology.is_gpu_name(topology):
        devices = gpu_topology.topology_devices(topology)
        return devices, gpu_topology.CHIPS[devices[0].device_kind]
    devices = tpu_topology.topology_devices(topology)
    return devices, tpu_topology.chip_spec(devices[0].device_kind)


def device_batch_bytes(spec: run_spec.RunSpec, devices: list) -> int:
    """One batch of the run on one device, in the dtypes it travels in (``_batch_structs``: uint8
    images): the larger of the training batch (the whole global batch, with its erasing boxes, also
    when it is accumulated) and the eval batch (the micro-batch, with its mask), so that one figure
    bounds both loops."""
    mesh = Mesh(np.asarray(devices), (sharding.DATA_AXIS,))
    erasing = spec.config.augment.random_erasing > 0
    return max(aot_memory.per_device_bytes(_batch_structs(
        mesh, spec.plan.eval_batch if evaluation else spec.plan.global_batch, spec.config.image_size,
        eval_batch=evaluation, random_erasing=erasing), len(devices)) for evaluation in (False, True))


def _step_costs(spec: run_spec.RunSpec, devices: list, train: StepCost) -> tuple[StepCost, int]:
    """(the step whose FLOPs and bytes the report counts, times it counts them) for a whole optimizer
    step. XLA's cost analysis of a loop counts its body once per copy the compiler lays out, not per
    iteration (measured, libtpu 0.0.42: a 2-, 8- and 32-iteration scan came out at 1, 1/2 and 1/8 of
    the work), so with k micro-batches the figures are k times those of the step without accumulation
    at the micro-batch (one more compile; its optimizer update is then counted k times, not once)."""
    k = spec.plan.grad_accum_steps
    if k == 1 or train.out_of_memory or train.flops is None:
        return train, 1
    return compile_steps(spec.at_batch_size(spec.plan.micro_batch, 1), devices, which=("train",))["train"], k


def _times(by_category: dict[str, Any] | None, k: int) -> dict[str, Any] | None:
    """``hlo_bytes.bytes_by_category`` of k steps (its byte counts times k)."""
    if by_category is None or k == 1:
        return by_category
    return {key: (_times(value, k) if isinstance(value, dict) else value * k if key.endswith("bytes") else value)
            for key, value in by_category.items()}


def aot_report(config: ml_collections.ConfigDict, topology: str) -> dict[str, Any]:
    """Compiles ``config``'s steps for ``topology`` (TPU slice or GPU host); returns the report (module
    docstring)."""
    devices, chip = target_devices(topology)
    kind = devices[0].device_kind
    n = len(devices)
    spec = resolve(config, n)
    config, model, plan = spec.config, spec.model, spec.plan
    per_device, k = plan.global_batch // n, plan.grad_accum_steps
    logging.info("AOT: compiling %s (dw_init=%s, precision=%s) for %s: %d x %s, global batch %d (%d per device%s)",
                 model.describe(), model.dw_init, config.precision, topology, n, kind, plan.global_batch, per_device,
                 f", {k} micro-batches of {per_device // k}" if k > 1 else "")
    # The train step first: when it does not fit, the eval step's compile (minutes at paper scale)
    # would change nothing, so it is skipped and the search for a fitting batch starts at once.
    with record_choices() as choices:
        train = compile_steps(spec, devices, which=("train",))["train"]
        evaluation = (compile_steps(spec, devices, which=("eval",))["eval"]
                      if searched_memory(train, chip.hbm_bytes) <= chip.hbm_bytes else None)
        costed, times = _step_costs(spec, devices, train)  # FLOPs and bytes of the whole optimizer step
    memory = max(train.memory_bytes, evaluation.memory_bytes if evaluation else 0)
    # Both loops hold the same number of batches on the device (eval batches: same size, plus a mask).
    batch_bytes = device_batch_bytes(spec, devices)
    live = aot_memory.live_memory(memory, batch_bytes, reserve_bytes=chip.reserve_bytes,
                                  capacity_bytes=chip.hbm_bytes, refused=bool(train.out_of_memory))
    flops = None if costed.flops is None else costed.flops * times
    bytes_accessed = None if costed.bytes_accessed is None else costed.bytes_accessed * times
    roofline = (None if train.out_of_memory or flops is None else  # refused, or no cost analysis (GPU)
                max(flops / chip.peak_bf16_flops, bytes_accessed / chip.hbm_bytes_per_second))
    hosts = chip.hosts(n)
    report = {
        "topology": topology, "device_kind": kind,
        "libtpu_topology": None if gpu_topology.is_gpu_name(topology) else tpu_topology.libtpu_name(topology),
        "num_devices": n, "num_hosts": hosts, "model": model.name,
        "model_overrides": model.overrides, "precision": config.precision,
        "remat": model.remat, "image_size": config.image_size, "num_classes": plan.num_classes,
        "global_batch": plan.global_batch, "per_device_batch": per_device,
        "grad_accum_steps": k, "micro_batch_per_device": per_device // k,
        "hbm_bytes_per_device": chip.hbm_bytes, "memory_bytes_per_device": memory,
        # What a run holds per device: the compiled step + the loop's other batches + the reserve.
        "compiled_bytes": live["compiled_bytes"], "input_buffer_bytes": live["input_buffer_bytes"],
        "input_batches_on_device": aot_memory.DEVICE_BATCHES, "reserve_bytes": live["reserve_bytes"],
        "total_bytes": live["total_bytes"], "margin_bytes": live["margin_bytes"],
        "margin_fraction": live["margin_fraction"], "fits": live["fits"],
        "flops_per_step_per_device": flops, "bytes_accessed_per_step_per_device": bytes_accessed,
        "collectives": train.collectives, "dog_jax_custom_calls": train.dog_jax_custom_calls,
        "compile_seconds": train.compile_seconds + (evaluation.compile_seconds if evaluation else 0.0)
        + (costed.compile_seconds if times > 1 else 0.0),
        "roofline_step_seconds": roofline,
        "roofline_note": (f"estimate: max(FLOPs / {chip.peak_bf16_flops / 1e12:g} TFLOP/s peak bf16, XLA's "
                          f"cost-model bytes / {chip.hbm_bytes_per_second / 1e9:g} GB/s HBM) per {chip.name} chip "
                          f"({chip.source}); not a measured speed, not a bound"),
        "bytes_by_category_per_step_per_device": _times(costed.bytes_by_category, times),
        "train_step": dataclasses.asdict(train), "eval_step": dataclasses.asdict(evaluation) if evaluation else None,
        # With accumulation: the step without it at the micro-batch, whose figures times k are the costs above.
        "micro_batch_step": dataclasses.asdict(costed) if times > 1 else None,
        # Which code made this report: the same record a training run keeps (dog_jax.provenance), with
        # libtpu's version (the compiler) and what "auto" chose for the TPU target.
        "provenance": {"code": provenance.code_version(),
                       "packages": {**provenance.package_versions(), "libtpu": _version("libtpu"),
                                    "jax-cuda13-plugin": _version("jax-cuda13-plugin")},
                       "auto_choices": {op: dict(impls) for op, impls in choices.items()}},
    }
    if plan.train_examples and roofline:
        report.update({"train_examples": plan.train_examples, "steps_per_epoch": plan.steps_per_epoch,
                       "roofline_epoch_seconds": roofline * plan.steps_per_epoch,
                       "roofline_run_seconds": roofline * plan.steps_per_epoch * config.num_epochs,
                       "num_epochs": config.num_epochs,
                       "images_per_second_per_host_at_roofline": plan.global_batch / roofline / hosts})
    if not report["fits"]:
        budget = chip.hbm_bytes - chip.reserve_bytes
        per_example = (aot_memory.DEVICE_BATCHES - 1) * batch_bytes // per_device
        known = {per_device: searched_memory(train, budget) + per_example * per_device}
        start = time.perf_counter()
        report["largest_fitting_per_device_batch"] = largest_fitting_batch(
            spec, devices, budget, known=known, input_bytes_per_example=per_example)
        report["search_compile_seconds"] = time.perf_counter() - start
        report["probed_memory_bytes"] = {str(b): m for b, m in sorted(known.items())}
        start = time.perf_counter()
        accumulation, probed = aot_search.smallest_fitting_accumulation(
            spec, budget, largest_per_device=report["largest_fitting_per_device_batch"], num_devices=n,
            memory_of=lambda candidate: searched_memory(compile_steps(candidate, devices, which=("train",))["train"],
                                                        budget) + aot_memory.input_buffer_bytes(
                                                            device_batch_bytes(candidate, devices)))
        report["smallest_fitting_grad_accum_steps"] = accumulation
        report["grad_accum_search_compile_seconds"] = time.perf_counter() - start
        report["grad_accum_probed_memory_bytes"] = {str(b): m for b, m in sorted(probed.items())}
    return report


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def run(config: ml_collections.ConfigDict, topology: str, report_path: str | None = None) -> str | None:
    """``train.py --aot_topology``: compile, log the report, write it as JSON; returns None if the batch
    fits, else the one line naming the largest per-device batch that does (and the accumulation at which
    the batch fits)."""
    report = aot_report(config, topology)
    for line in aot_text.format_report(report):
        logging.info(line)
    if report_path:
        storage.write_text(report_path, json.dumps(report, indent=2))  # local or gs://
        logging.info("AOT report written to %s", report_path)
    return aot_text.too_big(report)
