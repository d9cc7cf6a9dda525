"""dog_jax.tpu_vm: the gcloud commands it prints for several slice types, its one-line errors, that a
real (non-dry) run executes exactly the printed commands (a stub gcloud records them), and the worker
side: a detached trainer with its log copied into the workdir, SIGTERM from ``stop``, and a rerun's
log continuing the earlier one."""

import os
import shlex
import signal
import stat
import sys
import time
from pathlib import Path

import pytest

from dog_jax.tpu_vm import cli, slices, worker
from tests.support.git import committed_repo

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ["--config=configs/convnext.py:dw_init=dog", "--workdir=gs://b/runs/x"]
WHERE = ["--zone=us-west4-a", "--project=proj"]


def _with_dry_run(argv) -> list[str]:
    argv = list(argv)
    return argv[:argv.index("--")] + ["--dry-run"] + argv[argv.index("--"):] if "--" in argv else argv + ["--dry-run"]


def _dry(capsys, *argv):
    """The printed command lines of ``--dry-run``, each split back into its arguments."""
    assert cli.main(_with_dry_run(argv)) == 0, capsys.readouterr().err
    return [shlex.split(line) for line in capsys.readouterr().out.splitlines()]


def _error(capsys, *argv) -> str:
    assert cli.main(list(argv)) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and not captured.out, captured
    return lines[0]


@pytest.fixture
def checkout(tmp_path, monkeypatch):
    """A committed git repository as the current directory; returns its HEAD."""
    repo = tmp_path / "repo"
    head = committed_repo(repo, {"train.py": ""})
    monkeypatch.chdir(repo)
    return head


@pytest.mark.parametrize("name, accelerator_type, image, workers", [
    ("v5e-8", "v5litepod-8", "v2-alpha-tpuv5-lite", 1),
    ("v5e-16", "v5litepod-16", "v2-alpha-tpuv5-lite", 4),
    ("v5litepod-16", "v5litepod-16", "v2-alpha-tpuv5-lite", 4),
    ("v5e-64", "v5litepod-64", "v2-alpha-tpuv5-lite", 16),
    ("v6e-8", "v6e-8", "v2-alpha-tpuv6e", 1),
    ("v4-8", "v4-8", "tpu-ubuntu2204-base", 1),
    ("v4-16", "v4-16", "tpu-ubuntu2204-base", 2),
    ("v5p-8", "v5p-8", "v2-alpha-tpuv5", 1),
])
def test_create_and_run_per_slice(capsys, checkout, name, accelerator_type, image, workers):
    assert slices.parse(name).workers == workers
    create = _dry(capsys, "create", "--name=tpu1", f"--slice={name}", *WHERE)
    assert create == [["gcloud", "compute", "tpus", "tpu-vm", "create", "tpu1", *WHERE,
                       f"--accelerator-type={accelerator_type}", f"--version={image}"]]
    run = _dry(capsys, "run", "--name=tpu1", f"--slice={name}", *WHERE, "--", *TRAIN)
    assert len(run) == workers
    for i, line in enumerate(run):
        assert line[:-1] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "tpu1", *WHERE, f"--worker={i}"]
        remote = line[-1].removeprefix("--command=")
        assert remote.startswith("cd dog_jax && ")
        start = shlex.split(remote.removeprefix("cd dog_jax && "))
        train = start[start.index("--") + 1:]
        # The same train.py command on every worker; --multiprocess only where there are several.
        assert train == [".venv/bin/python", "train.py", *TRAIN, *(["--multiprocess"] if workers > 1 else [])]
        assert start[:start.index("--")] == [
            ".venv/bin/python", "-m", "dog_jax.tpu_vm.worker", "start", f"--worker_id={i}",
            "--workdir=gs://b/runs/x", f"--commit={checkout}", "--sync_seconds=60"]


def test_spot_is_a_queued_resource(capsys):
    assert _dry(capsys, "create", "--name=tpu1", "--slice=v6e-8", "--spot", *WHERE) == [[
        "gcloud", "compute", "tpus", "queued-resources", "create", "tpu1", "--node-id=tpu1", *WHERE,
        "--accelerator-type=v6e-8", "--runtime-version=v2-alpha-tpuv6e", "--spot"]]
    assert _dry(capsys, "delete", "--name=tpu1", "--spot", *WHERE) == [[
        "gcloud", "compute", "tpus", "queued-resources", "delete", "tpu1", *WHERE, "--force", "--quiet"]]
    assert _dry(capsys, "delete", "--name=tpu1", *WHERE) == [[
        "gcloud", "compute", "tpus", "tpu-vm", "delete", "tpu1", *WHERE, "--quiet"]]


def test_setup_stop_logs(capsys, checkout):
    bundle = f"dog_jax-{checkout[:12]}.bundle"
    git, scp, ssh = _dry(capsys, "setup", "--name=tpu1", *WHERE)
    assert git[:3] == ["git", "bundle", "create"] and git[3].endswith(bundle) and git[4:] == ["HEAD"]
    assert scp == ["gcloud", "compute", "tpus", "tpu-vm", "scp", git[3], f"tpu1:{bundle}", *WHERE, "--worker=all"]
    assert ssh[:-1] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "tpu1", *WHERE, "--worker=all"]
    assert f"git checkout --quiet --detach {checkout}; bash scripts/tpu_vm_setup.sh" in ssh[-1]
    assert _dry(capsys, "stop", "--name=tpu1", *WHERE)[0][-2:] == [
        "--worker=all", "--command=cd dog_jax && .venv/bin/python -m dog_jax.tpu_vm.worker stop"]
    assert _dry(capsys, "logs", "--name=tpu1", "--worker=3", "--follow", *WHERE)[0][-2:] == [
        "--worker=3", "--command=tail --lines=100 --follow=name --retry ~/dog_jax_run/train.log"]
    assert _dry(capsys, "logs", "--name=tpu1", "--worker=3", "--workdir=gs://b/runs/x/", *WHERE) == [
        ["gcloud", "storage", "cat", "gs://b/runs/x/logs/worker-3.log"]]
    # Without --zone/--project a dry run prints placeholders.
    assert _dry(capsys, "stop", "--name=tpu1")[0][6:8] == ["--zone=ZONE", "--project=PROJECT"]


def test_wrong_inputs_are_one_line(capsys, checkout):
    assert "unknown slice 'v9-8'" in _error(capsys, "create", "--name=t", "--slice=v9-8", *WHERE)
    assert "libtpu topology name" in _error(capsys, "create", "--name=t", "--slice=v5e:4x4", *WHERE)
    assert "--zone is required" in _error(capsys, "create", "--name=t", "--slice=v5e-8", "--project=p")
    assert "--project is required" in _error(capsys, "delete", "--name=t", "--zone=z")
    assert "--name" in _error(capsys, "stop", "--dry-run")
    assert "pass a bucket" in _error(capsys, "run", "--name=t", "--slice=v5e-16", "--dry-run", "--",
                                     "--config=c.py", "--workdir=runs/x")
    assert "--workdir" in _error(capsys, "run", "--name=t", "--slice=v5e-8", "--dry-run", "--", "--config=c.py")
    assert "--config" in _error(capsys, "run", "--name=t", "--slice=v5e-8", "--dry-run")
    assert "only run does" in _error(capsys, "stop", "--name=t", "--dry-run", "--", "--config=c.py")
    # A single host may keep its workdir on its own disk.
    assert len(_dry(capsys, "run", "--name=t", "--slice=v5e-8", "--", "--config=c.py", "--workdir=runs/x")) == 1
    Path("notes.txt").write_text("uncommitted")
    assert "uncommitted changes (1, e.g. 'notes.txt')" in _error(capsys, "setup", "--name=t", "--dry-run")


@pytest.fixture
def gcloud_stub(tmp_path, monkeypatch):
    """A ``gcloud`` on PATH that records its arguments (one JSON-free line each) and fails on request."""
    bin_dir, log = tmp_path / "bin", tmp_path / "gcloud.log"
    bin_dir.mkdir()
    stub = bin_dir / "gcloud"
    stub.write_text(f"#!{sys.executable}\nimport os, shlex, sys\n"
                    f"open({str(log)!r}, 'a').write(shlex.join(sys.argv[1:]) + '\\n')\n"
                    "sys.exit(3 if os.environ.get('STUB_GCLOUD_FAIL') else 0)\n")
    stub.chmod(stub.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return log


def test_a_real_run_executes_the_printed_commands(capsys, checkout, gcloud_stub, monkeypatch):
    argv = ["run", "--name=tpu1", "--slice=v4-16", *WHERE, "--", *TRAIN]
    printed = [line.removeprefix("gcloud ") for line in _dry_text(capsys, argv)]
    assert cli.main(argv) == 0
    assert sorted(gcloud_stub.read_text().splitlines()) == sorted(printed)  # the 2 workers, in parallel
    monkeypatch.setenv("STUB_GCLOUD_FAIL", "1")
    assert "exit code 3" in _error(capsys, "delete", "--name=tpu1", *WHERE)
    assert "worker(s) 0, 1 failed" in _error(capsys, *argv)


def _dry_text(capsys, argv):
    assert cli.main(_with_dry_run(argv)) == 0
    return capsys.readouterr().out.splitlines()


def test_missing_gcloud_is_one_line(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert "gcloud not found on PATH" in _error(capsys, "delete", "--name=t", *WHERE)


# --- the worker side --------------------------------------------------------------------------------

# A trainer that prints a step a tenth of a second and, on SIGTERM, "checkpoints" and exits 75.
FAKE_TRAINER = """
import signal, sys, time
def stop(*_):
    print("checkpointed", flush=True); sys.exit(75)
signal.signal(signal.SIGTERM, stop)
for step in range(600):
    print(f"step {step}", flush=True); time.sleep(0.1)
"""


@pytest.fixture
def run_worker(capsys, monkeypatch):
    """``python -m dog_jax.tpu_vm.worker ARGS`` in this process (the supervisors it starts are
    subprocesses, which find dog_jax through PYTHONPATH); returns (exit code, stdout, stderr)."""
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP)}

    def run(*args):
        try:
            code = worker.main(list(args))
        finally:  # `supervise` installs its own
            for signum, handler in handlers.items():
                signal.signal(signum, handler)
        out, err = capsys.readouterr()
        return code, out, err

    return run


def _wait_for(predicate, what, seconds=30.0):
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"still waiting after {seconds:.0f} s for {what}")
        time.sleep(0.1)


def test_worker_detached_run_log_copies_stop_and_rerun(tmp_path, run_worker):
    run_dir, workdir = tmp_path / "run", tmp_path / "workdir"
    remote = workdir / "logs" / "worker-1.log"
    start = ["start", "--worker_id=1", f"--workdir={workdir}", f"--run_dir={run_dir}", "--sync_seconds=0.2",
             "--", sys.executable, "-c", FAKE_TRAINER]
    code, out, err = run_worker(*start)
    assert code == 0, err
    assert f"-> {remote}" in out
    pid_file = run_dir / worker.PID_NAME
    _wait_for(lambda: pid_file.exists() and remote.exists() and "step 3" in remote.read_text(),
              "the trainer's pid and a periodic copy of its log")
    trainer_pid = int(pid_file.read_text())
    # A second start is refused while it runs.
    code, _, err = run_worker(*start)
    assert code == 1 and f"already runs on worker 1 (pid {trainer_pid})" in err
    # The supervisor ignores its own SIGTERM and does not pass it on: the trainer keeps running.
    supervisor_pid = int(out.split("supervisor pid ")[1].split(")")[0])
    os.kill(supervisor_pid, signal.SIGTERM)
    time.sleep(0.5)
    os.kill(trainer_pid, 0)
    code, out, _ = run_worker("stop", f"--run_dir={run_dir}")
    assert code == 0 and f"SIGTERM sent to trainer pid {trainer_pid}" in out
    _wait_for(lambda: "exited with code 75" in remote.read_text(), "the final copy after the trainer's exit")
    first = remote.read_text()
    assert "checkpointed" in first and "supervisor got SIGTERM" in first and not pid_file.exists()
    assert "no trainer running" in run_worker("stop", f"--run_dir={run_dir}")[1]
    # A rerun (after a preemption the VM is new: no local log) continues the copy in the workdir.
    (run_dir / worker.LOG_NAME).unlink()
    quick = ["start", "--worker_id=1", f"--workdir={workdir}", f"--run_dir={run_dir}", "--",
             sys.executable, "-c", "print('resumed')"]
    assert run_worker(*quick)[0] == 0
    _wait_for(lambda: remote.read_text().count("exited with code") == 2, "the rerun's exit")
    text = remote.read_text()
    assert text.startswith(first) and "resumed" in text[len(first):] and "exited with code 0" in text


def test_worker_refuses_another_commit(tmp_path, checkout, run_worker):
    code, _, err = run_worker("start", "--worker_id=0", f"--workdir={tmp_path}", "--commit=" + "0" * 40,
                              f"--run_dir={tmp_path / 'run'}", "--", "true")
    assert code == 1
    assert err.strip() == (f"error: worker 0 has commit {checkout[:12]} checked out in {Path.cwd()}, not "
                                     "000000000000: run `python -m dog_jax.tpu_vm setup` for this commit first")
    assert not (tmp_path / "run").exists()


def test_worker_copies_to_gs_with_gcloud_storage(tmp_path, monkeypatch, run_worker):
    """A gs:// workdir goes through `gcloud storage ls/cp` (a stub mapping gs://b/ to a local folder)."""
    bucket, bin_dir = tmp_path / "bucket", tmp_path / "bin"
    bin_dir.mkdir()
    stub = bin_dir / "gcloud"
    stub.write_text(f"#!{sys.executable}\nimport os, shutil, sys\n"
                    f"local = lambda p: p.replace('gs://b/', {str(bucket) + '/'!r})\n"
                    "verb, *paths = sys.argv[2:]\n"
                    "if verb == 'ls': sys.exit(0 if os.path.exists(local(paths[0])) else 1)\n"
                    "dst = local(paths[1]); os.makedirs(os.path.dirname(dst), exist_ok=True)\n"
                    "shutil.copyfile(local(paths[0]), dst)\n")
    stub.chmod(stub.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    code, _, err = run_worker("supervise", "--worker_id=2", "--workdir=gs://b/runs/x", f"--run_dir={tmp_path}", "--",
                              sys.executable, "-c", "print('hello'); raise SystemExit(75)")
    assert code == 75, err
    text = (bucket / "runs" / "x" / "logs" / "worker-2.log").read_text()
    assert "hello" in text and "trainer exited with code 75" in text
