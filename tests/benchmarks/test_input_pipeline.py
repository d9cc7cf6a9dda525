"""benchmarks/input_pipeline.py's accounting on fixed inputs: schedstat parsing, the attribution
of per-thread scheduler times (the scaling table's 'workers runnable' column rests on it) and the
table's rows. No assertion depends on timing or on what else runs on the machine."""

from __future__ import annotations

import math
import os
import sys
import threading
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks import input_pipeline  # noqa: E402
from benchmarks.input_pipeline import ThreadRun  # noqa: E402
from tests.support.requires import requires  # noqa: E402


def test_schedstat_is_parsed_in_seconds():
    assert input_pipeline.parse_schedstat("1500000000 250000000 42\n") == (1.5, 0.25)
    with pytest.raises(ValueError):
        input_pipeline.parse_schedstat("1500000000 250000000")  # a truncated read


def test_workers_are_the_busiest_other_threads_and_their_share_is_runnable_over_wall():
    consumer = 10
    before = {consumer: (1.0, 0.0), 11: (0.0, 0.0), 12: (5.0, 1.0), 13: (2.0, 0.0), 14: (0.0, 0.0)}
    after = {consumer: (1.2, 0.1), 11: (0.1, 0.0), 12: (6.0, 1.5), 13: (2.8, 0.4), 15: (9.0, 0.0)}  # 14 ended, 15 new
    run = input_pipeline.thread_run(before, after, consumer=consumer, threads=2, images=64, wall=2.0, cpu=4.0)
    # Thread 12 spent 1.0 s on a CPU + 0.5 s waiting; 13: 0.8 + 0.4; 11 (least CPU) is not a worker.
    assert run.runnable == pytest.approx((0.75, 0.6))
    assert run.consumer_cpu == pytest.approx(0.1)  # 0.2 s of CPU in 2 s of wall time
    assert (run.wall_rate, run.cpu_rate) == (32.0, 16.0)
    # A share is capped at 1 (wall and scheduler clocks are read at slightly different moments).
    capped = input_pipeline.thread_run({1: (0.0, 0.0), 2: (0.0, 0.0)}, {1: (0.0, 0.0), 2: (1.5, 0.7)}, consumer=1,
                                       threads=1, images=8, wall=2.0, cpu=2.0)
    assert capped.runnable == (1.0,)


def test_without_schedstat_shares_are_nan_not_zero():
    run = input_pipeline.thread_run({}, {}, consumer=1, threads=3, images=8, wall=1.0, cpu=1.0)
    assert len(run.runnable) == 3 and all(math.isnan(share) for share in run.runnable)
    assert math.isnan(run.consumer_cpu)


def test_scaling_rows_are_medians_relative_to_the_smallest_thread_count():
    one = [ThreadRun(100.0, 110.0, (0.9,), 0.02), ThreadRun(90.0, 100.0, (0.8,), 0.04),
           ThreadRun(95.0, 105.0, (1.0,), 0.03)]
    two = [ThreadRun(150.0, 100.0, (0.8, 0.6), 0.05)]
    rows = input_pipeline.scaling_rows({1: one, 2: two}, shards=1)
    # Medians at 1 thread: 95 img/s, 105 per CPU-second, runnable 0.9, consumer 3 %. At 2: wall
    # scaling 150 / (2 x 95) = 0.79; idle estimate (100 x 0.7) / (105 x 0.9) = 0.74.
    assert rows == [
        "train threads   1 shards  1 |    95.0 img/s wall-clock (scaling 1.00) |  105.0 img per CPU-second | "
        "workers runnable  90% | consumer thread 3.0% of a core | idle-machine scaling estimate 1.00",
        "train threads   2 shards  1 |   150.0 img/s wall-clock (scaling 0.79) |  100.0 img per CPU-second | "
        "workers runnable  70% | consumer thread 5.0% of a core | idle-machine scaling estimate 0.74",
    ]


@requires(os.path.exists(f"/proc/self/task/{threading.get_native_id()}/schedstat"),
          "no per-thread schedstat in /proc", "run on Linux (a kernel built with CONFIG_SCHEDSTATS)")
def test_thread_clock_reads_this_processes_threads():
    clock = input_pipeline._thread_clock()
    assert threading.get_native_id() in clock
    assert all(on_cpu >= 0.0 and waiting >= 0.0 for on_cpu, waiting in clock.values())


def test_measure_threads_runs_the_training_pipeline():
    """A smoke run of the real pipeline: the result's shape only (its numbers are measurements)."""
    jpegs = input_pipeline.generate_jpegs(4)
    run = input_pipeline.measure_threads(jpegs, threads=1, batch_size=2, batches=1, warmup=1, rand_augment="")
    assert len(run.runnable) == 1 and math.isfinite(run.wall_rate) and math.isfinite(run.cpu_rate)


def test_transfer_rows_compare_the_uint8_batch_with_the_float32_one():
    """The host->device table: bytes are exact (uint8 images + labels + erasing boxes against float32
    images + labels); the times are measurements and only have to be there."""
    rows = input_pipeline.transfer_rows(input_pipeline.generate_jpegs(2), batch_size=2, repeats=2, rand_augment="")
    float32_bytes, uint8_bytes = 2 * 224 * 224 * 3 * 4 + 2 * 4, 2 * 224 * 224 * 3 + 2 * 4 + 2 * 4 * 4
    assert f"{float32_bytes / 1e6:7.2f} MB" in rows[1] and "before" in rows[1]
    assert f"{uint8_bytes / 1e6:7.2f} MB" in rows[2] and "now" in rows[2]
    assert rows[3].startswith(f"  before / now: {float32_bytes / uint8_bytes:.2f}x the bytes")
