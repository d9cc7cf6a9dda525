"""Compiling the trainer for a Cloud TPU slice on this CPU machine (libtpu topologies, no TPU).

The guarantee: a TPU program built by the trainer holds no dog_jax custom call and no CPU-only path,
and data parallelism needs no all-gather -- for every model family, train and eval step.
"""

import dataclasses
import importlib.util
import json
import os
import re

import chex
import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from dog_jax import data
from dog_jax.ops import depthwise_conv2d, layer_norm
from dog_jax.ops.auto import Target, compile_target, record_choices
from dog_jax.ops.native.library import NATIVE_AVAILABLE
from dog_jax.train import aot, aot_memory, aot_search, run_spec, tpu_topology
from tests.support import train_cli
from tests.support.configs import ROOT
from tests.support.requires import LIBTPU, requires
from tests.support.workdirs import tiny_family_config

HAS_LIBTPU = importlib.util.find_spec("libtpu") is not None
needs_libtpu = requires(HAS_LIBTPU, "libtpu is not installed (the TPU compile tests need it)", LIBTPU)


@pytest.fixture(autouse=True)
def _no_persistent_compilation_cache():
    """Compile without the test run's persistent compilation cache (tests/conftest.py): JAX cannot load
    a TPU executable compiled from a topology description back from it (no TPU client), so it would
    only write entries and warn on every read."""
    from jax.experimental.compilation_cache import compilation_cache

    enabled = jax.config.jax_enable_compilation_cache
    jax.config.update("jax_enable_compilation_cache", False)
    compilation_cache.reset_cache()  # the on/off decision is taken once per process, at the first compile
    yield
    jax.config.update("jax_enable_compilation_cache", enabled)
    compilation_cache.reset_cache()

FAMILIES = ("convmixer", "convnext", "convnextv2", "hornet")


def tiny_config(family: str, tmp_path, batch_size: int = 16):
    """The family's demo config with a tiny architecture; dataset metadata read from an empty dir.

    ConvNeXt and HorNet with two stages (stem, one downsampling, every kind of block layer): the
    program's kinds of operation are those of four, and each TPU compile of a stage costs seconds."""
    config = tiny_family_config(family)
    if family != "convmixer":
        config.model_overrides.depths, config.model_overrides.dims = (1, 1), (8, 16)
    if family == "hornet":
        config.model_overrides.orders = (2, 3)
    config.batch_size = batch_size
    config.data_dir = str(tmp_path)  # nothing is generated or read: AOT needs only the class count
    return config


@pytest.mark.parametrize("name, expected", [
    ("v5e-16", "v5e:4x4"), ("v5litepod-64", "v5e:8x8"), ("v6e-8", "v6e:2x4"), ("v4-8", "v4:2x2x1"),
    ("v5p-16", "v5p:2x2x2"), ("v5e:2x2", "v5e:2x2")])
def test_accelerator_types_map_to_libtpu_topologies(name, expected):
    assert tpu_topology.libtpu_name(name) == expected


@pytest.mark.parametrize("name", ["v5e-12", "v4-7", "tpu-8", "v7-8"])
def test_unknown_accelerator_types_are_one_line_errors(name):
    with pytest.raises(tpu_topology.TopologyError, match="topology|slice shape") as info:
        tpu_topology.libtpu_name(name)
    assert "\n" not in str(info.value)


@needs_libtpu
@pytest.mark.parametrize("name, count, kind", [("v5e-4", 4, "TPU v5 lite"), ("v4-8", 4, "TPU v4"),
                                               ("v5e-1", 1, "TPU v5 lite")])
def test_topology_gives_one_device_per_chip(name, count, kind):
    devices = tpu_topology.topology_devices(name)
    assert len(devices) == count and {d.device_kind for d in devices} == {kind}
    assert {d.platform for d in devices} == {"tpu"}


# The keys the issue fixes for every report, whatever else it holds.
REQUIRED_KEYS = ("topology", "device_kind", "num_devices", "global_batch", "per_device_batch", "hbm_bytes_per_device",
                 "memory_bytes_per_device", "fits", "flops_per_step_per_device", "bytes_accessed_per_step_per_device",
                 "collectives", "dog_jax_custom_calls", "compile_seconds", "roofline_step_seconds",
                 "compiled_bytes", "input_buffer_bytes", "reserve_bytes", "total_bytes", "margin_bytes",
                 "margin_fraction", "bytes_by_category_per_step_per_device")


@pytest.mark.slow
@needs_libtpu
@pytest.mark.parametrize("family", FAMILIES)
def test_tpu_steps_have_no_dog_jax_call_and_no_all_gather(family, tmp_path):
    """The report of ``train.py --aot_topology`` (``aot.run``) for each family's train and eval step."""
    path = tmp_path / "report.json"
    assert aot.run(tiny_config(family, tmp_path), "v5e:2x2", str(path)) is None  # fits
    report = json.loads(path.read_text())
    assert not [key for key in REQUIRED_KEYS if key not in report]
    assert (report["num_devices"], report["global_batch"], report["per_device_batch"]) == (4, 16, 4)
    assert report["device_kind"] == "TPU v5 lite" and report["fits"]
    choices = report["provenance"]["auto_choices"]
    assert choices and all(set(impls) == {"xla"} for impls in choices.values()), choices
    assert report["provenance"]["packages"]["libtpu"] and report["provenance"]["code"]
    train, evaluation = report["train_step"], report["eval_step"]
    for step in (train, evaluation):
        assert step["dog_jax_custom_calls"] == 0
        assert "all-gather" not in step["collectives"], step["collectives"]
        assert step["memory_bytes"] > 0 and step["flops"] > 0
    assert train["collectives"].get("all-reduce", 0) >= 1  # the gradient's mean over the slice
    assert train["flops"] > 2 * evaluation["flops"]  # a backward pass was compiled
    assert report["memory_bytes_per_device"] == max(train["memory_bytes"], evaluation["memory_bytes"])
    # fits = the compiled step + the next batch (4 32x32 uint8 images per device with labels and
    # erasing boxes or masks, whichever batch is larger, in the dtypes the pipeline delivers) + the
    # 0.25 GiB of a v5e chip that XLA leaves to the runtime
    erasing = tiny_config(family, tmp_path).augment.random_erasing > 0
    assert report["input_buffer_bytes"] == max(data.batch_bytes(4, 32, train=True, random_erasing=erasing),
                                               data.batch_bytes(4, 32, train=False))
    assert report["reserve_bytes"] == 2**28
    assert report["total_bytes"] == report["compiled_bytes"] + report["input_buffer_bytes"] + 2**28
    assert report["compiled_bytes"] == report["memory_bytes_per_device"] > train["generated_code_bytes"] > 0
    categories = report["bytes_by_category_per_step_per_device"]
    assert categories["categories"]["convolution_matmul"]["bytes"] > 0 and categories["on_chip_bytes"] > 0
    assert report["roofline_step_seconds"] == pytest.approx(max(
        train["flops"] / 197e12, train["bytes_accessed"] / 819e9))
    assert "not a measured speed" in report["roofline_note"]
    assert any("not a measured speed" in line for line in aot.format_report(report))


@pytest.mark.slow
@needs_libtpu
def test_an_accumulated_step_compiles_without_moving_rows_between_devices(tmp_path):
    """grad_accum_steps=2 on 4 chips: each micro-batch takes rows from every device, so the train step's
    only collectives are the all-reduces (no all-gather, all-to-all or permute of the batch); its FLOPs
    and bytes count both micro-batches (2 x the step without accumulation at the micro-batch)."""
    config = tiny_config("convmixer", tmp_path, batch_size=32)
    config.grad_accum_steps = 2
    config.augment.mixup_alpha = config.augment.cutmix_alpha = 0.0  # mixing reverses a batch across devices
    report = aot.aot_report(config, "v5e:2x2")
    assert report["fits"] and (report["grad_accum_steps"], report["micro_batch_per_device"]) == (2, 4)
    assert set(report["train_step"]["collectives"]) == {"all-reduce"}, report["train_step"]["collectives"]
    micro = report["micro_batch_step"]
    assert report["flops_per_step_per_device"] == 2 * micro["flops"]
    assert report["bytes_accessed_per_step_per_device"] == 2 * micro["bytes_accessed"]
    assert report["bytes_by_category_per_step_per_device"]["total_bytes"] == 2 * micro["bytes_by_category"][
        "total_bytes"]
    assert "in 2 micro-batches of 4" in aot.format_report(report)[0]


@pytest.mark.parametrize("family", FAMILIES)
def test_the_same_model_on_a_cpu_target_uses_cpu_paths(family, tmp_path):
    """The contrast that makes the TPU test meaningful: "auto" does change with the target."""
    config = tiny_config(family, tmp_path)
    model = run_spec.model_spec(config).create(10)
    x = jax.ShapeDtypeStruct((4, 32, 32, 3), jnp.float32)
    with compile_target(Target("cpu", 1)), record_choices() as on_cpu:
        nnx.eval_shape(lambda m, x: m(x), model, x)  # nnx: BatchNorm updates its statistics
    with compile_target(Target("tpu", 4)), record_choices() as on_tpu:
        nnx.eval_shape(lambda m, x: m(x), model, x)
    assert set(on_cpu["depthwise"]) - {"xla"}, on_cpu
    assert all(set(impls) == {"xla"} for impls in on_tpu.values()), on_tpu
    if NATIVE_AVAILABLE:
        norm = "batch_norm" if family == "convmixer" else "layer_norm"  # float32 demo configs
        assert set(on_cpu[norm]) == {"native"}


def test_forced_native_impl_is_refused_for_a_tpu_target():
    x, kernel = jnp.ones((1, 8, 8, 4)), jnp.ones((3, 3, 1, 4))
    with compile_target(Target("tpu", 4)):
        with pytest.raises(ValueError, match="compiled for tpu") as info:
            depthwise_conv2d(x, kernel, impl="native")
        with pytest.raises(ValueError, match="compiled for tpu"):
            layer_norm(x, jnp.ones(4), jnp.zeros(4), impl="native")
    assert "\n" not in str(info.value)


def test_largest_fitting_batch_search_settles_on_the_boundary(monkeypatch):
    """The search's arithmetic on a known memory curve (a compile per probe, counted)."""
    probes = []

    class AtBatch:  # stands in for a RunSpec: the fake compile reads only its global batch
        def __init__(self, global_batch=0):
            self.plan = dataclasses.make_dataclass("Plan", ["global_batch"])(global_batch)

        def at_batch_size(self, global_batch, grad_accum_steps=None):
            assert grad_accum_steps == 1  # the plain step: a probe's batch need not split into micro-batches
            return AtBatch(global_batch)

    def fake_compile(spec, devices, which=("train", "eval")):
        per_device = spec.plan.global_batch // len(devices)
        probes.append(per_device)
        memory = 1000 + 37 * per_device + (per_device // 64) * 50  # linear, with a small kink
        return {"train": aot.StepCost(memory, 0, 0, 0, 0, 1.0, 1.0, {}, 0, 0.0)}

    monkeypatch.setattr(aot, "compile_steps", fake_compile)
    devices = [object()] * 4
    memory = {256: 1000 + 37 * 256 + 4 * 50}
    capacity = 1000 + 37 * 100 + 50
    largest = aot.largest_fitting_batch(AtBatch(), devices, capacity, known=memory)
    assert largest == max(b for b in range(8, 257, 8) if 1000 + 37 * b + (b // 64) * 50 <= capacity)
    assert len(probes) <= 4
    assert aot.largest_fitting_batch(AtBatch(), devices, 500, known={256: memory[256]}) == 0


def test_xla_refusing_a_step_for_lack_of_hbm_is_read_as_does_not_fit():
    """libtpu 0.0.42's message for ConvNeXt-T at 1024 images per v5e chip, verbatim; any other error is
    not taken for a memory verdict."""
    refusal = jax.errors.JaxRuntimeError(
        "RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required for HLO temporaries (29.78G) "
        "exceeds available HBM (15.75G).")
    cost = aot.out_of_hbm(refusal, 25.0)
    assert cost.memory_bytes == cost.temp_bytes == int(29.78 * 2**30) and cost.flops is None
    assert cost.out_of_memory.startswith("RESOURCE_EXHAUSTED") and cost.compile_seconds == 25.0
    assert aot.searched_memory(cost, 40 * 2**30) == 40 * 2**30 + 1  # refused: above any capacity
    assert aot.out_of_hbm(jax.errors.JaxRuntimeError("INTERNAL: something else"), 1.0) is None


def test_accumulation_search_bisects_the_divisors_above_the_micro_batch_that_fits():
    """The smallest k at which a per-device batch of 96 fits, on a known memory curve: only divisors whose
    micro-batch is at most the 40 that fit without accumulation are compiled, the smallest (k = 3) first."""
    class Spec:  # stands in for a RunSpec: the fake compile reads k only
        def __init__(self, k=1):
            self.plan = dataclasses.make_dataclass("Plan", ["global_batch", "grad_accum_steps"])(4 * 96, k)

        def at_batch_size(self, global_batch, grad_accum_steps):
            assert global_batch == 4 * 96  # the batch is kept
            return Spec(grad_accum_steps)

    def memory_of(spec):  # the whole batch and the gradient sum, then the micro-batch's activations
        return 500 + 10 * 96 // spec.plan.grad_accum_steps

    assert aot_search.accumulation_candidates(96, 1, 40) == [3, 4, 6, 8, 12, 16, 24, 32, 48, 96]
    for capacity, expected, most in ((900, 3, 1), (700, 6, 5), (560, 16, 5), (500, None, 4)):
        k, probed = aot_search.smallest_fitting_accumulation(Spec(), capacity, largest_per_device=40, num_devices=4,
                                                             memory_of=memory_of)
        assert k == expected and len(probed) <= most and min(probed) == 3
        assert all(memory > capacity for key, memory in probed.items() if expected is None or key < expected)


@pytest.mark.slow
@needs_libtpu
def test_train_py_names_the_largest_batch_that_fits(monkeypatch, tmp_path):
    """``train.py --aot_topology`` in this process, with the chip's HBM shrunk so that the tiny
    ConvMixer's batch does not fit: XLA refuses such a step (as libtpu does at full size, below), and
    train.py exits with one line naming the largest batch found by compiling, the report written and
    the eval step (moot) not compiled."""
    compile_for_real = jax.stages.Lowered.compile
    compiled_programs, compile_calls = {}, []

    def compile_once(lowered, *args, **kwargs):
        """A program compiled before is not compiled again (the search probes per-device batch 24,
        which this test compiles first): every TPU compile here takes seconds."""
        key = (lowered.as_text(), repr(args), repr(sorted(kwargs.items())))
        compile_calls.append(key)
        if key not in compiled_programs:
            compiled_programs[key] = compile_for_real(lowered, *args, **kwargs)
        return compiled_programs[key]

    monkeypatch.setattr(jax.stages.Lowered, "compile", compile_once)
    config = tiny_config("convmixer", tmp_path)
    config.batch_size = 4 * 24
    spec, devices = aot.resolve(config, 4), tpu_topology.topology_devices("v5e:2x2")
    fitting = aot.compile_steps(spec, devices, which=("train",))
    capacity = fitting["train"].memory_bytes  # XLA's usable HBM here: per-device batch 24 fits exactly, 32 does not
    # The chip: that, plus the loop's other batches at 24 per device (aot_memory), and no reserve.
    input_bytes = (aot_memory.DEVICE_BATCHES - 1) * aot.device_batch_bytes(spec, devices)
    chip_bytes = capacity + input_bytes
    real = tpu_topology.CHIPS["TPU v5 lite"]
    monkeypatch.setitem(tpu_topology.CHIPS, "TPU v5 lite",
                        dataclasses.replace(real, hbm_bytes=chip_bytes, usable_hbm_bytes=None))
    def compile_with_less_hbm(lowered, *args, **kwargs):
        """As XLA's TPU compiler does with a step that exceeds the chip's HBM (its wording, libtpu 0.0.42,
        from ConvNeXt-T at 1024 images per v5e chip)."""
        compiled = compile_once(lowered, *args, **kwargs)
        needed = aot.analyse(compiled, 0.0).memory_bytes
        if needed > capacity:
            raise jax.errors.JaxRuntimeError(
                "RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required for HLO temporaries "
                f"({needed / 2**20:.2f}M) exceeds available HBM ({capacity / 2**20:.2f}M).")
        return compiled

    monkeypatch.setattr(jax.stages.Lowered, "compile", compile_with_less_hbm)
    out = tmp_path / "report.json"
    message = train_cli.exit_message(monkeypatch, [
        "train.py", "--config=" + os.path.join(ROOT, "configs/convmixer.py:demo"), "--config.batch_size=128",
        f"--config.data_dir={tmp_path}", *(f"--config.model_overrides.{key}={value}"
                                            for key, value in config.model_overrides.items()),
        "--aot_topology=v5e-4", f"--aot_report={out}"])
    report = json.loads(out.read_text())
    assert report["topology"] == "v5e-4" and report["per_device_batch"] == 32 and not report["fits"]
    assert report["eval_step"] is None and report["roofline_step_seconds"] is None
    assert report["train_step"]["out_of_memory"].startswith("RESOURCE_EXHAUSTED: Ran out of memory on HBM")
    assert report["memory_bytes_per_device"] > capacity  # what XLA said the step needs
    assert report["search_compile_seconds"] > 0
    # Compiled: 96 (above), 128, and k = 2, 16, 32 at 128; the search's 24 per device is the first again.
    assert len(compile_calls) == 6 and len(compiled_programs) == 5 and compile_calls.count(compile_calls[0]) == 2
    largest = report["largest_fitting_per_device_batch"]
    assert largest == 24  # one probe: the search's own logic is tested above, with a stand-in compiler
    probed = {int(batch): memory for batch, memory in report["probed_memory_bytes"].items()}
    # The search files each batch's compiled memory plus its input buffers against the chip.
    assert probed[largest] <= chip_bytes and min(b for b, m in probed.items() if m > chip_bytes) == largest + 8
    assert isinstance(message, str) and message.startswith("error: global batch 128") and "\n" not in message
    assert "XLA refused to compile it: out of HBM" in message
    assert f"largest per-device batch that fits is {largest} (--config.batch_size={4 * largest})" in message
    # Keeping the batch, the accumulation search compiled k = 2 first (the smallest divisor of 32 whose
    # micro-batch, 16, is at most the 24 that fits), then bisected up to k = 32: none fits this tiny
    # model, whose step is mostly fixed costs (the whole batch and the gradient sum come on top).
    accumulation = {int(k): memory for k, memory in report["grad_accum_probed_memory_bytes"].items()}
    assert min(accumulation) == 2 and set(accumulation) <= {2, 4, 8, 16, 32} and 32 in accumulation
    assert report["smallest_fitting_grad_accum_steps"] is None and min(accumulation.values()) > chip_bytes
    assert "grad_accum_steps" not in message
    assert any(line.startswith("  no grad_accum_steps makes global batch 128 fit")
               for line in aot.format_report(report))


@pytest.mark.parametrize("family", FAMILIES)
def test_remat_gives_the_same_gradients_and_batch_statistics(family, tmp_path):
    from dog_jax.models.remat import set_remat
    from dog_jax.train.steps import split_model

    config = tiny_config(family, tmp_path)
    config.drop_path_rate = 0.2  # the recomputed forward must redraw the same drop-path masks
    x = jax.random.normal(jax.random.key(1), (4, 32, 32, 3))
    results = []
    for remat in (False, True):
        parts, params, stats = split_model(set_remat(run_spec.model_spec(config).create(10), remat))

        def loss(params, stats, rng, parts=parts):
            model = nnx.merge(parts.train_graph, params, stats, rng)
            return jnp.sum(model(x) ** 2), nnx.to_pure_dict(nnx.state(model, nnx.BatchStat))

        step = jax.value_and_grad(loss, has_aux=True)
        jaxpr = str(jax.make_jaxpr(step)(params, stats, parts.rng_state))
        assert bool(re.search(r"\b(remat2?|checkpoint)\[", jaxpr)) == remat  # jax.checkpoint's primitive
        results.append(jax.jit(step)(params, stats, parts.rng_state))
    (plain_loss, plain_stats), plain_grads = results[0]
    (remat_loss, remat_stats), remat_grads = results[1]
    assert float(plain_loss) == float(remat_loss)
    chex.assert_trees_all_close((plain_grads, plain_stats), (remat_grads, remat_stats), rtol=1e-5, atol=1e-7)
