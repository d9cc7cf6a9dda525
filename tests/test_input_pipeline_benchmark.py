"""benchmarks/input_pipeline.py's thread accounting: per-thread scheduler times are read and
attributed (the scaling table's 'workers runnable' column rests on them)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import input_pipeline  # noqa: E402

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="needs Linux /proc schedstat")


def test_thread_clock_charges_a_busy_loop_to_this_thread():
    import threading

    me = threading.get_native_id()
    before = input_pipeline._thread_clock()[me]
    end = time.process_time() + 0.2
    while time.process_time() < end:  # ~0.2 s of CPU in this thread
        pass
    after = input_pipeline._thread_clock()[me]
    assert 0.15 <= after[0] - before[0] < 5.0
    assert after[1] >= before[1] >= 0.0


@pytest.mark.parametrize("threads", [1, 2])
def test_measure_threads_reports_one_runnable_share_per_worker(threads):
    jpegs = input_pipeline.generate_jpegs(8)
    run = input_pipeline.measure_threads(jpegs, threads=threads, batch_size=4, batches=2, warmup=1,
                                         rand_augment="")
    assert run.wall_rate > 0 and run.cpu_rate > 0
    assert len(run.runnable) == threads
    assert 0.0 < run.runnable[0] <= 1.0 and all(0.0 <= share <= 1.0 for share in run.runnable)
    # The consumer only fetches batches: far less than a core (the workers do the decoding).
    assert 0.0 <= run.consumer_cpu < 0.5
