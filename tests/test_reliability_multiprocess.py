"""Two processes x two simulated CPU devices, coordinated by ``jax.distributed.initialize`` on
localhost (gloo CPU collectives): disjoint data shards, identical metrics on both processes, a
stop requested on one process only is agreed by both, the checkpoint is written once and both
processes restore it.
"""

import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np

from dog_jax import data
from tests.test_train import ROOT

_WORKER = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, {root!r})
    import jax
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize("localhost:{port}", num_processes=2, process_id={process})
    from tests.test_train import tiny_config
    from dog_jax.train import train_and_evaluate
    assert jax.process_count() == 2 and jax.device_count() == 4 and jax.local_device_count() == 2
    config = tiny_config({data_dir!r}, num_train_steps=4, eval_every_steps=4, checkpoint_every_steps=4)
    stop = (lambda step: step == {stop_at}) if {stop_at} else None
    summary = train_and_evaluate(config, {workdir!r}, stop_requested=stop)
    print("SUMMARY" + json.dumps({{key: summary[key] for key in
                                   ("start_step", "final_step", "interrupted", "train_history", "final_eval")}}))
""")


def _free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _run_pair(data_dir, workdir, stop_at_process0):
    port = _free_port()
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=2",
               TF_CPP_MIN_LOG_LEVEL="2")
    # Output to files, not pipes: a process blocked on a full pipe would hang the other in a collective.
    logs = [open(os.path.join(workdir + f".process{process}.log"), "w+") for process in (0, 1)]
    procs = [subprocess.Popen(
        [sys.executable, "-c", _WORKER.format(root=ROOT, port=port, process=process, data_dir=data_dir,
                                              workdir=workdir, stop_at=stop_at_process0 if process == 0 else 0)],
        env=env, cwd=ROOT, stdout=logs[process], stderr=subprocess.STDOUT, text=True) for process in (0, 1)]
    summaries = []
    try:
        for proc in procs:
            proc.wait(timeout=240)
    finally:
        for proc in procs:  # one failed: the other would wait for it in a collective forever
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for proc, log in zip(procs, logs):
        log.seek(0)
        output = log.read()
        log.close()
        assert proc.returncode == 0, output[-3000:]
        summaries.append(json.loads(output.split("SUMMARY", 1)[1].splitlines()[0]))
    return summaries


def _metrics(summary):
    """The training metrics of each logged step (timings differ between processes)."""
    keys = ("step", "loss", "accuracy", "grad_norm", "learning_rate", "skipped")
    return [{key: h[key] for key in keys} for h in summary["train_history"]]


def test_two_processes_train_stop_together_and_share_one_checkpoint(tmp_path):
    data_dir = str(tmp_path / "tfds")
    builder = data.get_builder("dog_jax_demo/tiny", data_dir)
    # Each process reads a disjoint shard of the training split, together all of it.
    shards = [data.local_source(builder, "train", process_index=p, process_count=2, drop_remainder=True)
              for p in (0, 1)]
    images = [{example["image"] for example in shard.dataset.as_numpy_iterator()} for shard in shards]
    assert shards[0].num_examples == shards[1].num_examples == len(images[0]) == len(images[1])
    assert not images[0] & images[1] and len(images[0] | images[1]) == data.split_size(builder, "train")

    workdir = str(tmp_path / "run")
    # Only process 0 is asked to stop (as when one host gets the SIGTERM first): both stop at step 2.
    first = _run_pair(data_dir, workdir, stop_at_process0=2)
    assert [s["final_step"] for s in first] == [2, 2] and all(s["interrupted"] for s in first)
    assert _metrics(first[0]) == _metrics(first[1])
    assert sorted(int(n) for n in os.listdir(os.path.join(workdir, "checkpoints")) if n.isdigit()) == [2]
    assert not [n for n in os.listdir(os.path.join(workdir, "checkpoints")) if "tmp" in n]

    second = _run_pair(data_dir, workdir, stop_at_process0=0)
    assert [(s["start_step"], s["final_step"]) for s in second] == [(2, 4), (2, 4)]
    assert _metrics(second[0]) == _metrics(second[1])
    evals = [{k: v for k, v in s["final_eval"].items() if k != "eval_time_s"} for s in second]
    assert evals[0] == evals[1] and evals[0]["eval_examples"] == 300
    losses = [h["loss"] for h in first[0]["train_history"] + second[0]["train_history"]]
    assert len(losses) == 4 and np.all(np.isfinite(losses))
