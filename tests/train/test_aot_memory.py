"""What the AOT report counts: the run's memory per device (aot_memory), the HLO's bytes per op
category (hlo_bytes), the loop's bound on batches in flight, and the GPU target (gpu_topology)."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dog_jax.train import aot, aot_memory, gpu_topology, hlo_bytes, loop, tpu_topology
from tests.support.requires import GPU_AOT, requires
from tests.support.workdirs import tiny_family_config

# A module in the optimized-HLO text form: a convolution fusion fed by an asynchronous copy into memory
# space 1, a transpose, an all-reduce, and a while loop of known trip count around an elementwise fusion
# whose f32[10,100] operand is tiled T(8,128) (16 x 128 elements as laid out).
HLO = """HloModule m, is_scheduled=true

%fused_conv (p0: bf16[2,8,8,128], p1: bf16[3,3,128,128]) -> bf16[2,8,8,128] {
  %p0 = bf16[2,8,8,128]{3,2,1,0} parameter(0)
  %p1 = bf16[3,3,128,128]{3,2,1,0:S(1)} parameter(1)
  ROOT %c = bf16[2,8,8,128]{3,2,1,0} convolution(%p0, %p1), window={size=3x3 pad=1_1x1_1}, dim_labels=b01f_01io->b01f
}

%fused_negate (q0: f32[10,100]) -> f32[10,100] {
  %q0 = f32[10,100]{1,0:T(8,128)} parameter(0)
  ROOT %n = f32[10,100]{1,0:T(8,128)} negate(%q0)
}

%body (t: (s32[], f32[10,100])) -> (s32[], f32[10,100]) {
  %t = (s32[], f32[10,100]{1,0:T(8,128)}) parameter(0)
  %i = s32[] get-tuple-element(%t), index=0
  %x.1 = f32[10,100]{1,0:T(8,128)} get-tuple-element(%t), index=1
  %f = f32[10,100]{1,0:T(8,128)} fusion(%x.1), kind=kLoop, calls=%fused_negate
  ROOT %r = (s32[], f32[10,100]{1,0:T(8,128)}) tuple(%i, %f)
}

%cond (u: (s32[], f32[10,100])) -> pred[] {
  %u = (s32[], f32[10,100]{1,0:T(8,128)}) parameter(0)
  ROOT %k = pred[] constant(true)
}

%sum (a: f32[], b: f32[]) -> f32[] {
  %a = f32[] parameter(0)
  %b = f32[] parameter(1)
  ROOT %s = f32[] add(%a, %b)
}

ENTRY %main (x: bf16[2,8,8,128], w: bf16[3,3,128,128], v: f32[10,100]) -> (bf16[2,128,8,8], (s32[], f32[10,100])) {
  %x = bf16[2,8,8,128]{3,2,1,0} parameter(0)
  %w = bf16[3,3,128,128]{3,2,1,0} parameter(1)
  %v = f32[10,100]{1,0:T(8,128)} parameter(2)
  %zero = s32[] constant(0)
  %cs = (bf16[3,3,128,128]{3,2,1,0:S(1)}, bf16[3,3,128,128]{3,2,1,0}, u32[]{:S(2)}) copy-start(%w)
  %cd = bf16[3,3,128,128]{3,2,1,0:S(1)} copy-done(%cs)
  %conv = bf16[2,8,8,128]{3,2,1,0} fusion(%x, %cd), kind=kOutput, calls=%fused_conv
  %tr = bf16[2,128,8,8]{3,2,1,0} transpose(%conv), dimensions={0,3,1,2}
  %ar = f32[10,100]{1,0:T(8,128)} all-reduce(%v), replica_groups={}, to_apply=%sum
  %init = (s32[], f32[10,100]{1,0:T(8,128)}) tuple(%zero, %ar)
  %wh = (s32[], f32[10,100]{1,0:T(8,128)}) while(%init), condition=%cond, body=%body, \
backend_config={"known_trip_count":{"n":"3"}}
  ROOT %out = (bf16[2,128,8,8]{3,2,1,0}, (s32[], f32[10,100]{1,0:T(8,128)})) tuple(%tr, %wh)
}
"""


def test_hlo_bytes_by_category_on_a_known_module():
    x, w, v_padded, v_plain = 2 * 8 * 8 * 128 * 2, 3 * 3 * 128 * 128 * 2, 16 * 128 * 4, 10 * 100 * 4
    result = hlo_bytes.bytes_by_category(HLO)
    parts = result["categories"]
    assert parts["async_copy_slice"] == {"bytes": 2 * w, "unpadded_bytes": 2 * w, "on_chip_bytes": w}  # read + write
    assert parts["convolution_matmul"] == {"bytes": 2 * x + w, "unpadded_bytes": 2 * x + w, "on_chip_bytes": w}
    assert parts["copy_relayout"]["bytes"] == 2 * x
    assert parts["collective"] == {"bytes": 2 * v_padded, "unpadded_bytes": 2 * v_plain, "on_chip_bytes": 0}
    assert parts["elementwise_norm"]["bytes"] == 3 * 2 * v_padded  # the while body, 3 trips
    assert parts["other"]["bytes"] == 0 and result["while_without_trip_count"] == 0
    assert result["total_bytes"] == sum(part["bytes"] for part in parts.values())
    assert result["on_chip_bytes"] == 2 * w
    assert hlo_bytes.summary_line(result).startswith("async_copy_slice 0.0 GB, convolution_matmul")


def test_hlo_bytes_of_a_compiled_cpu_program_agree_with_xla():
    """On CPU (no tiling, no async copies) the per-category sum is XLA's own "bytes accessed"."""
    def step(images, kernel):
        y = jax.lax.conv_general_dilated(images, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return jnp.transpose(jnp.tanh(y), (0, 3, 1, 2)).sum(axis=0)

    compiled = jax.jit(step).lower(jnp.ones((4, 8, 8, 3)), jnp.ones((3, 3, 3, 5))).compile()
    result = hlo_bytes.bytes_by_category(compiled.as_text())
    conv = (4 * 8 * 8 * 3 + 3 * 3 * 3 * 5 + 4 * 8 * 8 * 5) * 4
    assert result["categories"]["convolution_matmul"]["bytes"] == conv
    assert result["total_bytes"] == pytest.approx(compiled.cost_analysis()["bytes accessed"], rel=0.01)


def test_live_memory_adds_the_next_batch_and_the_reserve():
    mesh_devices = 4
    images_f32 = {"image": jax.ShapeDtypeStruct((64, 224, 224, 3), jnp.float32),
                  "label": jax.ShapeDtypeStruct((64,), jnp.int32)}
    images_u8 = {**images_f32, "image": jax.ShapeDtypeStruct((64, 224, 224, 3), jnp.uint8)}
    f32_bytes = aot_memory.per_device_bytes(images_f32, mesh_devices)
    assert f32_bytes == 16 * (224 * 224 * 3 * 4 + 4)
    assert aot_memory.per_device_bytes(images_u8, mesh_devices) == 16 * (224 * 224 * 3 + 4)  # the dtype travels
    chip = tpu_topology.CHIPS["TPU v5 lite"]
    assert chip.reserve_bytes == 2**30 // 4  # 16 GiB - XLA's 15.75 GiB
    live = aot_memory.live_memory(10 * 2**30, f32_bytes, reserve_bytes=chip.reserve_bytes,
                                  capacity_bytes=chip.hbm_bytes)
    assert live["input_buffer_bytes"] == (loop.DEVICE_BATCHES - 1) * f32_bytes
    assert live["total_bytes"] == 10 * 2**30 + live["input_buffer_bytes"] + chip.reserve_bytes
    assert live["margin_bytes"] == chip.hbm_bytes - live["total_bytes"] and live["fits"]
    # ConvMixer-512/12 on a v5e-8 (plan row, 512 float32 images per chip): compiled 15.52 GiB fits alone,
    # not with the next batch and the reserve.
    row = aot_memory.live_memory(int(15.52 * 2**30), 512 * 224 * 224 * 3 * 4, reserve_bytes=chip.reserve_bytes,
                                 capacity_bytes=chip.hbm_bytes)
    assert not row["fits"] and row["margin_fraction"] < 0
    assert not aot_memory.live_memory(1, 1, reserve_bytes=0, capacity_bytes=10, refused=True)["fits"]


def test_the_loop_keeps_one_step_in_flight(monkeypatch):
    waited = []
    monkeypatch.setattr(jax, "block_until_ready", lambda outputs: waited.append(outputs))
    in_flight = []
    for step in range(5):
        in_flight = loop._bound_in_flight(in_flight, step)
        assert in_flight == [step]  # the newest step only: with the next batch, DEVICE_BATCHES on the device
    assert waited == [0, 1, 2, 3] and loop.DEVICE_BATCHES == 2


@pytest.mark.parametrize("name", ["h100x8", "h100x1"])
def test_gpu_names_are_recognised(name):
    assert gpu_topology.is_gpu_name(name) and not gpu_topology.is_gpu_name("v5e-8")


def test_unknown_gpu_is_a_one_line_error():
    with pytest.raises(tpu_topology.TopologyError, match="h100x") as info:
        gpu_topology.topology_devices("a100x8")
    assert "\n" not in str(info.value)


HAS_CUDA_PLUGIN = gpu_topology.cuda_plugin_installed()


@pytest.mark.slow
@requires(HAS_CUDA_PLUGIN, "jax's CUDA plugin is not installed (the GPU compile test needs it)", GPU_AOT)
def test_train_step_compiles_for_h100s_without_a_gpu(tmp_path):
    """The trainer's real steps for 2 H100s, compiled here: memory and fits, no cost figures."""
    config = tiny_family_config("convnext")
    config.batch_size, config.data_dir = 8, str(tmp_path)
    path = tmp_path / "report.json"
    assert aot.run(config, "h100x2", str(path)) is None
    report = json.loads(path.read_text())
    assert report["device_kind"] == "NVIDIA H100 80GB HBM3" and report["num_devices"] == 2
    assert report["reserve_bytes"] == report["hbm_bytes_per_device"] - int(0.75 * 84978434048)
    assert report["total_bytes"] == report["compiled_bytes"] + report["input_buffer_bytes"] + report["reserve_bytes"]
    assert report["fits"] and report["roofline_step_seconds"] is None
    train = report["train_step"]
    assert train["dog_jax_custom_calls"] == 0 and train["collectives"].get("all-reduce", 0) >= 1
    assert report["bytes_by_category_per_step_per_device"]["categories"]["convolution_matmul"]["bytes"] > 0
    assert report["provenance"]["auto_choices"] and all(
        set(impls) == {"xla"} for impls in report["provenance"]["auto_choices"].values())
    assert np.isfinite(report["margin_fraction"])
