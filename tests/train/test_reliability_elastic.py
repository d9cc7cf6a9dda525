"""Elastic resume: a run checkpointed on N simulated CPU devices resumes on M != N (one run,
4 -> 2 -> 4 devices, ``data_shards`` fixed). The restored parameters, batch statistics and
optimizer state equal the saved ones bitwise (captured inside each resumed run, on its M
devices), one line says what changes, and the run completes with the losses of an uninterrupted
run (same batches; float rounding of other device counts). The wording with one data shard per
device (data order changes) is checked on :func:`capacity_notice` directly."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from dog_jax.train.run_setup import capacity_notice
from tests.support import subprocesses
from tests.support.configs import ROOT

_WORKER = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, {root!r})
    import jax
    import numpy as np
    assert jax.device_count() == {devices}, jax.devices()
    from dog_jax.train import checkpoint, train_and_evaluate
    from tests.support.checkpoints import assert_bitwise_equal, load_state
    from tests.support.configs import FOUR_SHARD_RUN, tiny_config

    def named(tree):  # {{orbax-style dotted path: host array}}: the raw read has dicts for tuples
        def name(key):
            return str(getattr(key, "key", getattr(key, "idx", getattr(key, "name", key))))
        return {{".".join(map(name, path)): np.asarray(leaf)
                for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}}

    original = checkpoint.Checkpointer.restore_latest
    checked = []

    def restore_latest(self, *args, **kwargs):  # what the loop restored, against what is on disk
        restored = original(self, *args, **kwargs)
        if restored is not None:
            step, state = restored
            for leaf in jax.tree.leaves(state):
                assert len(leaf.sharding.device_set) == {devices}, leaf.sharding
            got, saved = named(jax.device_get(state)), named(load_state({workdir!r}, step))
            assert len(saved) > 10, sorted(saved)
            assert_bitwise_equal(got, saved)
            checked.append(step)
        return restored

    checkpoint.Checkpointer.restore_latest = restore_latest
    config = tiny_config({data_dir!r}, **{{**FOUR_SHARD_RUN, "eval_every_steps": 4, "data_shards": {data_shards}}})
    stop = (lambda step: step == {stop_at}) if {stop_at} else None
    summary = train_and_evaluate(config, {workdir!r}, stop_requested=stop)
    print("SUMMARY" + json.dumps({{"checked": checked, "start_step": summary["start_step"],
                                   "final_step": summary["final_step"], "history": summary["train_history"]}}))
    from tests.support.subprocesses import exit_without_finalization
    exit_without_finalization(0)
""")


def _start(devices, data_dir, workdir, data_shards, stop_at=0):
    env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2",
               XLA_FLAGS=subprocesses.xla_flags(devices))
    script = _WORKER.format(root=ROOT, devices=devices, data_dir=data_dir, workdir=workdir,
                            data_shards=data_shards, stop_at=stop_at)
    return subprocess.Popen([sys.executable, "-c", script], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _finish(proc):
    code, out, err = subprocesses.finish(proc, timeout=subprocesses.TIMEOUT_S)
    assert code == 0, err[-3000:]
    return json.loads(out.split("SUMMARY", 1)[1].splitlines()[0]), err


def _notices(err):
    return [line for line in err.splitlines() if "Resuming on" in line]


@pytest.mark.slow
def test_resume_on_another_device_count(tmp_path, tiny_data_dir, four_shard_reference):
    """Steps 1-2 on 4 devices, step 3 on 2, step 4 on 4 again (stops at 2 and 3)."""
    data_dir = tiny_data_dir
    workdir = str(tmp_path / "run")
    first = _start(4, data_dir, workdir, data_shards=4, stop_at=2)
    reference = four_shard_reference[1]  # the uninterrupted run on this process's single device
    runs = [_finish(first)]
    runs.append(_finish(_start(2, data_dir, workdir, data_shards=4, stop_at=3)))
    runs.append(_finish(_start(4, data_dir, workdir, data_shards=4)))
    assert [(run["checked"], run["start_step"], run["final_step"]) for run, _ in runs] == [
        ([], 0, 2), ([2], 2, 3), ([3], 3, 4)]  # the restored state was the saved one, bitwise
    assert [len(_notices(err)) for _, err in runs] == [0, 1, 1]
    for (_, err), (now, before) in zip(runs[1:], ((2, 4), (4, 2))):
        (notice,) = _notices(err)
        assert f"Resuming on {now} devices from a checkpoint written on {before}:" in notice
        assert "restored exactly" in notice and "data order is unchanged (config.data_shards=4 fixed)" in notice

    # data_shards fixed: the same batches (and learning rates) as the uninterrupted run on this process's
    # device, before and after each resume.
    expected = {h["step"]: (h["loss"], h["accuracy"], h["learning_rate"]) for h in reference["train_history"]}
    got = {h["step"]: (h["loss"], h["accuracy"], h["learning_rate"]) for h in runs[-1][0]["history"]}
    assert sorted(got) == sorted(expected) == [1, 2, 3, 4]
    for step in expected:
        np.testing.assert_allclose(got[step], expected[step], rtol=2e-4, err_msg=f"step {step}")


def test_capacity_notice_only_when_the_device_count_changes():
    assert capacity_notice({"devices": 4, "data_shards": 4}, 4, 4, fixed_shards=False) is None
    assert capacity_notice({}, 8, 8, fixed_shards=False) is None  # checkpoint of an older version
    line = capacity_notice({"devices": 8, "data_shards": 8}, 2, 8, fixed_shards=True)
    assert "\n" not in line and "data order is unchanged (config.data_shards=8 fixed)" in line
    line = capacity_notice({"devices": 8, "data_shards": 8}, 2, 4, fixed_shards=True)
    assert "data order changes (8 -> 4 data shards, fixed at 4;" in line
    line = capacity_notice({"devices": 2, "data_shards": 2}, 4, 4, fixed_shards=False)
    assert line.startswith("Resuming on 4 devices from a checkpoint written on 2: parameters, batch statistics "
                           "and optimizer state are restored exactly; the data order changes (2 -> 4 data "
                           "shards, one per device: 4; fix config.data_shards to keep it)")
