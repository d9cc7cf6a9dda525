"""Elastic resume: a run checkpointed on N simulated CPU devices resumes on M != N (4 -> 2 with
``data_shards`` fixed, 2 -> 4 with one shard per device). The restored parameters, batch statistics
and optimizer state equal the saved ones bitwise (captured inside the resumed run, on its M
devices), one line says what changes, and the run completes; with ``data_shards`` fixed its
losses follow an uninterrupted run's (same batches, float rounding of other device counts)."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np

from dog_jax import data
from dog_jax.train import train_and_evaluate
from dog_jax.train.run_setup import capacity_notice
from tests.test_train import ROOT, tiny_config

_WORKER = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, {root!r})
    import jax
    import numpy as np
    assert jax.device_count() == {devices}, jax.devices()
    from dog_jax.train import checkpoint, train_and_evaluate
    from tests.test_reliability import load_state
    from tests.test_train import tiny_config

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
            assert sorted(got) == sorted(saved) and len(got) > 10, (sorted(got), sorted(saved))
            for key in saved:
                assert got[key].dtype == saved[key].dtype and got[key].tobytes() == saved[key].tobytes(), key
            checked.append(step)
        return restored

    checkpoint.Checkpointer.restore_latest = restore_latest
    config = tiny_config({data_dir!r}, num_train_steps=4, eval_every_steps=4, checkpoint_every_steps=4,
                         data_shards={data_shards})
    stop = (lambda step: step == {stop_at}) if {stop_at} else None
    summary = train_and_evaluate(config, {workdir!r}, stop_requested=stop)
    print("SUMMARY" + json.dumps({{"checked": checked, "start_step": summary["start_step"],
                                   "final_step": summary["final_step"], "history": summary["train_history"]}}))
""")


def _start(devices, data_dir, workdir, data_shards, stop_at=0):
    env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2",
               XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    script = _WORKER.format(root=ROOT, devices=devices, data_dir=data_dir, workdir=workdir,
                            data_shards=data_shards, stop_at=stop_at)
    return subprocess.Popen([sys.executable, "-c", script], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _finish(proc):
    try:
        out, err = proc.communicate(timeout=400)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out.split("SUMMARY", 1)[1].splitlines()[0]), err


def _notices(err):
    return [line for line in err.splitlines() if "Resuming on" in line]


def test_resume_on_another_device_count(tmp_path):
    data_dir = str(tmp_path / "tfds")
    data.get_builder("dog_jax_demo/tiny", data_dir)
    fixed, per_device = str(tmp_path / "fixed_4_to_2"), str(tmp_path / "per_device_2_to_4")
    first = [_start(4, data_dir, fixed, data_shards=4, stop_at=2),
             _start(2, data_dir, per_device, data_shards=0, stop_at=2)]
    # The uninterrupted reference, on this process's single device, meanwhile.
    reference = train_and_evaluate(tiny_config(data_dir, num_train_steps=4, eval_every_steps=4,
                                               checkpoint_every_steps=4, data_shards=4), str(tmp_path / "ref"))
    for proc in first:
        summary, err = _finish(proc)
        assert summary["final_step"] == 2 and summary["checked"] == [] and not _notices(err)

    second = [_start(2, data_dir, fixed, data_shards=4), _start(4, data_dir, per_device, data_shards=0)]
    (fixed_run, fixed_err), (per_device_run, per_device_err) = (_finish(proc) for proc in second)
    for run in (fixed_run, per_device_run):
        assert run["checked"] == [2] and (run["start_step"], run["final_step"]) == (2, 4)

    (notice,) = _notices(fixed_err)
    assert "Resuming on 2 devices from a checkpoint written on 4" in notice
    assert "restored exactly" in notice and "data order is unchanged (config.data_shards=4 fixed)" in notice
    (notice,) = _notices(per_device_err)
    assert "Resuming on 4 devices from a checkpoint written on 2" in notice
    assert "data order changes (2 -> 4 data shards, one per device: 4; fix config.data_shards" in notice

    # data_shards fixed: the same batches as the uninterrupted run, before and after the resume.
    expected = {h["step"]: (h["loss"], h["accuracy"]) for h in reference["train_history"]}
    got = {h["step"]: (h["loss"], h["accuracy"]) for h in fixed_run["history"]}
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
