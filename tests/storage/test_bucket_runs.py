"""Runs whose data and workdir live in a Cloud Storage bucket -- a real storage server on 127.0.0.1
(fake-gcs-server, ``tests/support/gcs_server.py``), reached the way a user reaches one:
``STORAGE_EMULATOR_HOST`` and ``gs://`` paths, nothing else.

A ``train.py`` run builds its dataset into the bucket and trains there; ``dog_jax.evaluate``,
``dog_jax.export`` and the kernel analysis then read that workdir from the bucket; a missing or
forbidden bucket ends in one line; storage faults in the middle of a run (the server gone, write
permission revoked during a checkpoint, the lease taken over by another job) end in one line with
their exit code, and the same command resumes. Under ``.ci/run`` the whole suite runs in a network namespace
that has nothing but loopback, so these runs also show that no client reaches for the Internet
(Google's endpoints, the GCE metadata server).
"""

import json
import os
import re
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from dog_jax import storage
from dog_jax.storage import conditional
from dog_jax.train.checkpoint import EXIT_STORAGE_FAILURE
from dog_jax.train.lease import EXIT_LEASE_HELD, LEASE_FILE
from tests.support import fault_runs, subprocesses
from tests.support.checkpoints import assert_bitwise_equal, load_state
from tests.support.configs import ROOT
from tests.support.fault_runs import detail_log, one_line_failure
from tests.support.faulty_storage import RefusingRelay
from tests.support.gcs_server import GcsServer, emulator_environment, server_binary
from tests.support.requires import FAKE_GCS, require

_CONFIG_FILE = textwrap.dedent("""
    import sys
    sys.path.insert(0, {root!r})
    from tests.support.configs import tiny_config

    def get_config():
        return tiny_config({data_dir!r}, **{{**dict(num_train_steps=4, eval_every_steps=4, checkpoint_every_steps=2),
                                            **{changes!r}}})
""")


def _command(tmp_path, data_dir, workdir, **changes):
    """(``train.py`` command, environment, working directory): the tiny config with ``changes``, run
    from an empty directory (so a gs:// path mangled into a local one would show up there)."""
    config = tmp_path / "bucket_config.py"
    config.write_text(_CONFIG_FILE.format(root=ROOT, data_dir=data_dir, changes=changes))
    cwd = tmp_path / "cwd"
    cwd.mkdir(exist_ok=True)
    # TensorFlow's GCS client retries 10 times, up to 32 s apart, by default: once is enough here.
    env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2", GCS_RETRY_CONFIG_MAX_RETRIES="1")
    env["XLA_FLAGS"] = subprocesses.xla_flags()
    return [sys.executable, os.path.join(ROOT, "train.py"), f"--config={config}", f"--workdir={workdir}"], env, cwd


def _train(tmp_path, data_dir, workdir, **changes):
    """Runs ``train.py`` (see :func:`_command`) to its end; returns the completed process."""
    command, env, cwd = _command(tmp_path, data_dir, workdir, **changes)
    result = subprocesses.run(command, env=env, cwd=cwd, timeout=subprocesses.TIMEOUT_S)
    assert os.listdir(cwd) == [], os.listdir(cwd)  # nothing written locally (e.g. a "gs:" folder)
    return result


def _objects(gcs_server, url):
    bucket, _, prefix = url.removeprefix("gs://").partition("/")
    return {name.removeprefix(prefix + "/") for name in gcs_server.objects(bucket, prefix + "/")}


@pytest.mark.slow
def test_a_run_in_a_bucket_then_evaluate_export_and_analyse_it(bucket, gcs_server, tmp_path):
    from dog_jax.analysis.__main__ import main as analysis_main
    from dog_jax.checkpoints import read_state_dict
    from dog_jax.convert import to_torch_state_dict
    from dog_jax.evaluate import default_output, evaluate_checkpoint, write_json
    from dog_jax.export import export_model
    from dog_jax.train.restore import restore_model

    data_dir, workdir = f"{bucket}/tensorflow_datasets", f"{bucket}/runs/tiny"
    result = _train(tmp_path, data_dir, workdir, profile_steps="2:3")
    assert result.returncode == 0, result.stderr[-3000:]
    written = _objects(gcs_server, workdir)
    assert {"config.json", "summary.json", "checkpoints/4/state/_METADATA", "checkpoints/2/model/metadata"} <= written
    assert any(name.startswith("tensorboard/events.out.tfevents.") for name in written), sorted(written)
    # The profiler window's trace, copied into the bucket (traced into a local scratch folder first).
    assert any(name.startswith("profile/plugins/profile/train_steps_2-3/") and name.endswith(".xplane.pb")
               for name in written), sorted(written)
    assert any(name.startswith("dog_jax_demo/tiny/") for name in _objects(gcs_server, data_dir))
    summary = storage.read_text(f"{workdir}/summary.json")
    assert '"final_step": 4' in summary

    # Evaluation reads the checkpoint and the dataset from the bucket, and writes its result there.
    metrics = evaluate_checkpoint(workdir)
    assert metrics["step"] == 4 and metrics["eval_examples"] == 96 and metrics["checkpoint"] == workdir
    write_json(default_output(metrics), metrics)
    assert "eval/test_step4.json" in _objects(gcs_server, workdir)

    # Export into the bucket: the weights are the checkpoint's.
    out = export_model(workdir, f"{bucket}/exports/tiny")
    assert {"model.safetensors", "config.json", "README.md", "training_config.json"} == \
        _objects(gcs_server, str(out))
    model, _ = restore_model(workdir)
    exported = read_state_dict(f"{bucket}/exports/tiny/model.safetensors")
    expected = to_torch_state_dict(model)
    assert sorted(exported) == sorted(expected)
    for name in expected:
        np.testing.assert_array_equal(exported[name], expected[name])

    # The kernel analysis of the bucket's checkpoint, with its results written into the bucket.
    assert analysis_main([workdir, "--out", f"{bucket}/analysis", "--no-null", "-q"]) == 0
    results = _objects(gcs_server, f"{bucket}/analysis")
    assert {"summary.json", "clusters.csv"} <= results and any(name.endswith(".png") for name in results), results


def test_a_missing_bucket_is_one_line_and_no_bucket_is_created(gcs_server, bucket, tmp_path):
    missing = "gs://dog-jax-no-such-bucket"
    result = _train(tmp_path, f"{bucket}/tensorflow_datasets", f"{missing}/run")
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: workdir 'gs://dog-jax-no-such-bucket/run' is not writable"), result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    buckets = {item["name"] for item in gcs_server.request("GET", "/storage/v1/b").get("items", [])}
    assert "dog-jax-no-such-bucket" not in buckets  # gcsfs' mkdir would have created it


@pytest.fixture
def forbidding_server():
    """An HTTP server on 127.0.0.1 that answers every request with Cloud Storage's 403 JSON error,
    set as ``STORAGE_EMULATOR_HOST`` for this test."""
    import http.server
    import json
    import threading

    class Forbid(http.server.BaseHTTPRequestHandler):
        def _refuse(self):
            body = json.dumps({"error": {"code": 403, "message": "dog-jax-test@example.iam.gserviceaccount.com does "
                                         "not have storage.objects.create access to the Google Cloud Storage object."}})
            self.send_response(403)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body.encode())

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _refuse

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Forbid)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with emulator_environment(f"http://127.0.0.1:{server.server_address[1]}"):
            yield server
    finally:
        server.shutdown()


def test_a_bucket_that_refuses_writes_is_one_line(forbidding_server):
    """A server that answers 403 to everything, as Cloud Storage does for a service account without
    write permission on the bucket."""
    from dog_jax.train.checkpoint import CheckpointError, check_writable

    with pytest.raises(CheckpointError) as error:
        check_writable("gs://a-bucket-of-someone-else/run")
    message = str(error.value)
    assert "\n" not in message and "is not writable" in message and "Forbidden" in message, message


# train.py, whose checkpoint write of step 4 waits until the file GO exists: the test stops the storage
# server in the middle of the run (after step 2's checkpoint is complete), then lets it go on. The patch
# is made after train.py's flag parsing, which sets up the console before TensorFlow is imported.
_PAUSING_DRIVER = textwrap.dedent("""
    import os, sys, time
    sys.path.insert(0, {root!r})
    sys.argv = {argv!r}
    import train

    def main(argv):
        from dog_jax.train import checkpoint

        original = checkpoint.Checkpointer.save

        def save(self, step, *args, **kwargs):
            while step == 4 and not os.path.exists({go!r}):
                time.sleep(0.1)
            return original(self, step, *args, **kwargs)

        checkpoint.Checkpointer.save = save
        return train.main(argv)

    train.app.run(main, flags_parser=train._parse_flags)
""")


@pytest.mark.slow
def test_storage_that_dies_mid_run_is_one_line_and_the_same_command_resumes(tmp_path, tiny_data_dir):
    """The storage server stops in the middle of a run that writes checkpoints (every 2 steps; it is
    stopped once step 2's is complete, and the run held before step 4's until then): the run ends
    within its checkpoint time limit with one line (exit 74, no traceback), the last complete
    checkpoint is intact, and the same ``train.py`` command resumes from it once the server is back."""
    server = GcsServer(str(tmp_path / "server"))  # this test's own: it is stopped and restarted
    try:
        with emulator_environment(server.url):
            name = server.new_bucket()
            command, env, cwd = _command(tmp_path, tiny_data_dir, f"gs://{name}/run", num_train_steps=8,
                                         eval_every_steps=8, log_every_steps=2, checkpoint_timeout_s=10)
            go = str(tmp_path / "GO")
            script = _PAUSING_DRIVER.format(root=ROOT, argv=["train.py", *command[2:]], go=go)
            with open(tmp_path / "stderr", "w+") as stderr:
                process = subprocess.Popen([sys.executable, "-c", script], env=env, cwd=cwd,
                                           stdout=subprocess.DEVNULL, stderr=stderr, text=True)
                try:
                    deadline = time.monotonic() + subprocesses.TIMEOUT_S
                    while "run/checkpoints/2/commit_success.txt" not in server.objects(name, "run/checkpoints/2/"):
                        assert process.poll() is None and time.monotonic() < deadline, "no checkpoint of step 2"
                        time.sleep(0.2)
                    server.stop()
                    open(go, "w").close()
                    code, _, _ = subprocesses.finish(process, timeout=300)
                finally:
                    subprocesses.kill_all([process])
                stderr.seek(0)
                output = stderr.read()
            lines = output.strip().splitlines()
            assert code == EXIT_STORAGE_FAILURE, output[-3000:]
            assert "Traceback" not in output and len(lines) <= 12, output[-3000:]
            # What meets the dead server first varies: a checkpoint's write (its time limit), another write,
            # or the read of the lease before a checkpoint.
            assert re.match(r"error: (a checkpoint write to|writing (checkpoint \d+ )?to|reading the lease) gs://",
                            lines[-1]) and "last complete checkpoint is step" in lines[-1], lines[-1]
            last_complete = int(lines[-1].split("last complete checkpoint is step ")[1].split(".")[0])

            server.start()
            result = subprocesses.run(command, env=env, cwd=cwd, timeout=subprocesses.TIMEOUT_S)
            assert result.returncode == 0, result.stderr[-3000:]
            assert f"Resumed from gs://{name}/run/checkpoints at step {last_complete}" in result.stderr, \
                result.stderr[-3000:]
            assert '"final_step": 8' in storage.read_text(f"gs://{name}/run/summary.json")
    finally:
        server.stop()


@pytest.fixture
def refusing_bucket(tmp_path):
    """(relay, ``gs://`` bucket): a fresh bucket on a server of this test's own, reached through the relay."""
    require(server_binary() is not None, "the Cloud Storage tests need fake-gcs-server", FAKE_GCS)
    relay = RefusingRelay()
    server = GcsServer(str(tmp_path / "server"), external_url=relay.url)
    relay.upstream = ("127.0.0.1", server.port)
    try:
        with emulator_environment(relay.url):
            yield relay, f"gs://{server.new_bucket()}"
    finally:
        server.stop()
        relay.close()


def _files(workdir):
    return {str(path): path.stat().length for path in storage.files_under(workdir)}


@pytest.mark.slow
def test_permission_refused_mid_checkpoint_and_a_stray_writer_cost_one_line_and_nothing_is_lost(
        fault_reference, refusing_bucket, tmp_path):
    config, reference = fault_reference
    relay, bucket = refusing_bucket
    workdir = f"{bucket}/run"
    same_command = f"python train.py --config={config} --workdir={workdir}"
    env = {"TMPDIR": str(tmp_path)}  # a gs:// run's detail log goes to the local temporary directory

    # 1. Write permission is revoked in the middle of the checkpoint of step 4: two of its writes pass.
    relay.refuse_writes_after("/checkpoints/4", 2)
    result = fault_runs.run(config, workdir, **env)
    line = one_line_failure(result, EXIT_STORAGE_FAILURE)
    print(f"\nConsole of the run whose bucket refused writes:\n{result.stderr}")
    assert len(relay.passed_marked) == 2 and relay.refused, (relay.passed_marked, relay.refused)
    assert "403" in line and "the last complete checkpoint is step 2." in line, line
    assert f"Rerun the same command once the storage works: {same_command} (details: {tmp_path}/" in line, line
    with open(detail_log(line)) as f:
        assert "Traceback" in f.read()

    # 2. Permission back: the same command resumes from step 2. After its checkpoint of step 4 another
    # job takes the lease over: this run, now a stray writer, stops before its next write.
    relay.allow_writes()
    snapshot = tmp_path / "files_at_takeover.json"
    result = fault_runs.run(config, workdir, fault="take_lease", after=4, FAULT_SNAPSHOT=str(snapshot), **env)
    line = one_line_failure(result, EXIT_LEASE_HELD)
    assert f"Resumed from {workdir}/checkpoints at step 2" in result.stderr, result.stderr[-3000:]
    assert line.startswith(f"error: this run's lease on workdir {workdir} was taken over by job 0ther"), line
    assert "on host another-host" in line and "stopped without writing more (the last complete checkpoint is " \
        "step 4)" in line and f"once that run has ended: {same_command} (details: " in line, line
    assert _files(workdir) == json.loads(snapshot.read_text())  # not one byte written after the takeover

    # 3. That job has ended (its lease removed): the same command resumes from step 4 to the end.
    lease = storage.join(workdir, LEASE_FILE)
    assert conditional.delete(lease, conditional.read(lease)[1])
    result = fault_runs.run(config, workdir, **env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"Resumed from {workdir}/checkpoints at step 4" in result.stderr, result.stderr[-3000:]
    assert_bitwise_equal(load_state(workdir, fault_runs.STEPS), load_state(reference, fault_runs.STEPS))
