"""Two processes x two simulated CPU devices, coordinated by ``jax.distributed.initialize`` on
localhost (gloo CPU collectives), with data and workdir in a Cloud Storage bucket (a local server),
as on a pod slice: disjoint data shards, identical metrics on both processes, a SIGTERM received by
one process only (in the middle of an evaluation) stops both at the same step with exit code 75, the
checkpoint is written once and both processes restore it (redoing the evaluation); the resumed run
ends bit for bit where an uninterrupted one does, and its losses equal those of one process on one
device (the same global batches; float rounding of another device count).
"""

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
import types

import numpy as np
import pytest

from dog_jax import data, storage
from dog_jax.train import ConfigError, sharding, validate
from dog_jax.train.preemption import EXIT_PREEMPTED
from tests.support import subprocesses
from tests.support.checkpoints import assert_bitwise_equal, load_state
from tests.support.configs import ROOT, tiny_config

# As train.py does: a StopOnSignal handler and exit code 75 after a stop. With signal=True the
# process sends itself SIGTERM at the second batch of its first evaluation (step 2).
_WORKER = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, {root!r})
    import jax
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize("localhost:{port}", num_processes={processes}, process_id={process})
    from tests.support.configs import FOUR_SHARD_RUN, tiny_config
    from dog_jax.train import steps, train_and_evaluate
    from dog_jax.train.preemption import EXIT_PREEMPTED, StopOnSignal
    assert jax.process_count() == {processes} and jax.device_count() == 4
    if {signal}:
        from tests.support.signals import sigterm_at_eval_batch
        sigterm_at_eval_batch(steps, 2)
    config = tiny_config({data_dir!r}, **FOUR_SHARD_RUN)
    with StopOnSignal() as stop:
        summary = train_and_evaluate(config, {workdir!r}, stop_requested=stop)
    print("SUMMARY" + json.dumps({{key: summary[key] for key in ("start_step", "final_step", "interrupted",
                                                                 "train_history", "final_eval", "eval_history")}}))
    from tests.support.subprocesses import exit_without_finalization
    exit_without_finalization(EXIT_PREEMPTED if summary["interrupted"] else 0)
""")


def _free_port():
    """A port the OS reported free. Released before the coordinator binds it, so another process
    may take it meanwhile: :func:`_run_processes` then retries on a fresh one."""
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


_PROCESSES = 2  # each simulates 2 of the run's 4 CPU devices
_BIND_FAILED = "Failed to start RPC server"  # jax.distributed.initialize's error when the port is taken
_TIMEOUT_S = subprocesses.TIMEOUT_S


def _run_processes(data_dir, workdir, logs, signalled_process=None, attempts=3):
    """Trains with two processes sharing 4 CPU devices; returns each one's (exit code, summary).

    Retries (on a new port) when the coordinator could not bind its port; a process still running
    after the timeout fails the test as a hang."""
    for attempt in range(attempts):
        outputs = _start_and_wait(data_dir, workdir, logs, signalled_process, _free_port(), attempt)
        if not any(_BIND_FAILED in output for _, output in outputs) or attempt == attempts - 1:
            break
    summaries = []
    for code, output in outputs:
        assert "SUMMARY" in output, output[-3000:]
        summaries.append((code, json.loads(output.split("SUMMARY", 1)[1].splitlines()[0])))
    return summaries


def _start_and_wait(data_dir, workdir, log_base, signalled_process, port, attempt):
    env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2",
               XLA_FLAGS=subprocesses.xla_flags(4 // _PROCESSES))
    # Output to files, not pipes: a process blocked on a full pipe would hang the other in a collective.
    logs = [open(f"{log_base}.process{process}.attempt{attempt}.log", "w+") for process in range(_PROCESSES)]
    procs = [subprocess.Popen(
        [sys.executable, "-c", _WORKER.format(root=ROOT, port=port, process=process, processes=_PROCESSES,
                                              data_dir=data_dir, workdir=workdir,
                                              signal=process == signalled_process)],
        env=env, cwd=ROOT, stdout=logs[process], stderr=subprocess.STDOUT, text=True) for process in range(_PROCESSES)]
    try:
        deadline = time.monotonic() + _TIMEOUT_S
        while any(proc.poll() is None for proc in procs):
            if procs[0].poll() not in (None, 0, EXIT_PREEMPTED):
                break  # the coordinator failed (e.g. its port was taken): the others would wait for it
            if time.monotonic() > deadline:
                subprocesses.kill_all(procs)
                subprocesses.hang(procs[0].args, _TIMEOUT_S, _read(logs[0]))
            time.sleep(0.5)
    finally:
        subprocesses.kill_all(procs)  # one failed: the other would wait for it in a collective forever
    outputs = [(proc.returncode, _read(log)) for proc, log in zip(procs, logs)]
    for log in logs:
        log.close()
    return outputs


def _read(log):
    log.flush()
    log.seek(0)
    return log.read()


def _metrics(summary):
    """The training metrics of each logged step (timings differ between processes)."""
    keys = ("step", "loss", "accuracy", "grad_norm", "learning_rate", "skipped")
    return [{key: h[key] for key in keys} for h in summary["train_history"]]


def _mesh_of_processes(owners):
    """A stand-in mesh: only ``devices[i].process_index`` is read (this process is 0)."""
    return types.SimpleNamespace(devices=np.array([types.SimpleNamespace(process_index=p) for p in owners]))


def test_process_reads_the_data_shards_of_its_own_devices(tmp_path):
    two_by_two = _mesh_of_processes([0, 0, 1, 1])
    assert sharding.process_data_shards(two_by_two, 4) == [0, 1]  # one per device
    assert sharding.process_data_shards(two_by_two, 2) == [0]
    assert sharding.process_data_shards(two_by_two, 8) == [0, 1, 2, 3]  # two per device
    assert sharding.process_data_shards(_mesh_of_processes([0, 1, 0, 1]), 4) == [0, 2]  # mesh order, not ids
    assert sharding.process_data_shards(_mesh_of_processes([0] * 8), 2) == [0, 1]  # a shard over 4 devices
    with pytest.raises(ValueError, match="Data shard 0 of 1 would be split over processes \\[0, 1\\]"):
        sharding.process_data_shards(two_by_two, 1)
    with pytest.raises(ConfigError, match="config.data_shards=3 is not a multiple of the 2 processes"):
        validate(tiny_config(str(tmp_path), data_shards=3, batch_size=12), device_count=4, process_count=2)


def _checkpoint_names(workdir):
    return [p.name for p in storage.run_path(f"{workdir}/checkpoints").iterdir()]


@pytest.mark.slow
def test_two_processes_train_stop_together_and_share_one_checkpoint(tmp_path, bucket, four_shard_reference):
    """Data and workdir in a Cloud Storage bucket (a local server), as on a pod slice."""
    data_dir = f"{bucket}/tensorflow_datasets"
    builder = data.get_builder("dog_jax_demo/tiny", data_dir)
    # Each process reads a disjoint shard of the training split, together all of it.
    shards = [data.local_source(builder, "train", shard_index=p, shard_count=2, drop_remainder=True)
              for p in (0, 1)]
    images = [{example["image"] for example in shard.dataset.as_numpy_iterator()} for shard in shards]
    assert shards[0].num_examples == shards[1].num_examples == len(images[0]) == len(images[1])
    assert not images[0] & images[1] and len(images[0] | images[1]) == data.split_size(builder, "train")

    workdir = f"{bucket}/run"
    # Only process 1 receives SIGTERM, in the middle of the evaluation of step 2: the processes agree
    # between evaluation batches, so both abandon it, checkpoint step 2 and exit with 75.
    codes, first = zip(*_run_processes(data_dir, workdir, str(tmp_path / "run"), signalled_process=1))
    assert codes == (EXIT_PREEMPTED, EXIT_PREEMPTED), codes
    assert [s["final_step"] for s in first] == [2, 2] and all(s["interrupted"] for s in first)
    assert [s["eval_history"] for s in first] == [[], []]
    assert _metrics(first[0]) == _metrics(first[1])
    assert sorted(int(n) for n in _checkpoint_names(workdir) if n.isdigit()) == [2]
    assert not [n for n in _checkpoint_names(workdir) if "tmp" in n]

    codes, second = zip(*_run_processes(data_dir, workdir, str(tmp_path / "resumed")))
    assert codes == (0, 0), codes
    assert [(s["start_step"], s["final_step"]) for s in second] == [(2, 4), (2, 4)]
    assert [[e["step"] for e in s["eval_history"]] for s in second] == [[2, 4], [2, 4]]  # step 2's redone
    assert _metrics(second[0]) == _metrics(second[1])
    evals = [{k: v for k, v in s["final_eval"].items() if k != "eval_time_s"} for s in second]
    assert evals[0] == evals[1] and evals[0]["eval_examples"] == 96
    # The resumed run's history continues the first run's (restored from the checkpoint).
    assert _metrics(second[0])[:len(first[0]["train_history"])] == _metrics(first[0])
    losses = [h["loss"] for h in second[0]["train_history"]]
    assert len(losses) == 4 and np.all(np.isfinite(losses))

    # The same two processes uninterrupted: the interrupted and resumed run ends bit for bit where it does.
    reference = f"{bucket}/reference"
    codes, uninterrupted = zip(*_run_processes(data_dir, reference, str(tmp_path / "reference")))
    assert codes == (0, 0), codes
    assert _metrics(uninterrupted[0]) == _metrics(second[0])
    assert_bitwise_equal(load_state(workdir, 4), load_state(reference, 4))

    # One process on one device (the shared four-shard reference, the same local data as the bucket's)
    # trains on the same global batches: the same metrics up to the float rounding of another device count.
    single = four_shard_reference[1]
    two = _metrics(second[0])
    for key in ("step", "learning_rate", "skipped"):
        assert [h[key] for h in _metrics(single)] == [h[key] for h in two]
    for key in ("loss", "grad_norm", "accuracy"):
        np.testing.assert_allclose([h[key] for h in _metrics(single)], [h[key] for h in two], rtol=2e-4)
    single_eval = {k: v for k, v in single["final_eval"].items() if k != "eval_time_s"}
    np.testing.assert_allclose([single_eval[k] for k in sorted(single_eval)],
                               [evals[0][k] for k in sorted(single_eval)], rtol=2e-4)
