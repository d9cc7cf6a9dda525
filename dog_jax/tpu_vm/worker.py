"""Runs on each TPU VM: ``train.py`` detached from the ssh session, one log per worker, and its stop.

``python -m dog_jax.tpu_vm.worker start --worker_id=I --workdir=W [--commit=SHA] -- CMD...`` (what
``python -m dog_jax.tpu_vm run`` sends to every worker) checks the checkout's commit and that no
trainer runs, then starts a *supervisor* in a new session (``setsid``: the ssh session's hang-up
does not reach it) and returns. The supervisor

* runs CMD with stdout and stderr appended to ``~/dog_jax_run/train.log``, its pid in
  ``~/dog_jax_run/trainer.pid``;
* copies that log to ``<workdir>/logs/worker-<I>.log`` every ``--sync_seconds`` and once more when
  CMD exits (``gcloud storage cp`` for a ``gs://`` workdir, a file copy otherwise). At start it first
  fetches that copy, so after a preemption the rerun's log continues the earlier one, and every
  start and exit is marked by a ``== dog_jax.tpu_vm ...`` line with the exit code;
* ignores SIGTERM and SIGHUP itself (it only notes them in the log). It never forwards them: on a
  preemption or shutdown the trainer gets its own SIGTERM, and a second one would kill it without
  its checkpoint (dog_jax/train/preemption.py).

``python -m dog_jax.tpu_vm.worker stop`` sends SIGTERM to the trainer (it checkpoints and exits 75).
Only the standard library: this runs in the worker's venv, but needs nothing of the trainer.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

# "worker-side file" (the # local: marks): the worker's own run folder, or a workdir on its disk;
# gs:// destinations go through `gcloud storage`.
RUN_DIR = "~/dog_jax_run"
LOG_NAME, PID_NAME, SUPERVISOR_LOG = "train.log", "trainer.pid", "supervisor.log"


def remote_log(workdir: str, worker_id: int) -> str:
    """Where worker ``worker_id``'s log is copied: ``<workdir>/logs/worker-<id>.log``."""
    return f"{workdir.rstrip('/')}/logs/worker-{worker_id}.log"


def _copy(source: str, destination: str) -> bool:
    """Copy a file between local paths and gs:// URLs; False (and a note on stderr) if it failed."""
    if source.startswith("gs://") or destination.startswith("gs://"):
        result = subprocess.run(["gcloud", "storage", "cp", source, destination], capture_output=True, text=True)
        if result.returncode != 0:
            print(f"copy {source} -> {destination} failed: {result.stderr.strip()[-300:]}", file=sys.stderr)
        return result.returncode == 0
    try:
        Path(destination).parent.mkdir(parents=True, exist_ok=True)  # local: worker-side file
        shutil.copyfile(source, destination)  # local: worker-side file
        return True
    except OSError as error:
        print(f"copy {source} -> {destination} failed: {error}", file=sys.stderr)
        return False


def _exists(path: str) -> bool:
    if path.startswith("gs://"):
        return subprocess.run(["gcloud", "storage", "ls", path], capture_output=True).returncode == 0
    return os.path.exists(path)  # local: worker-side file


def _alive(pid_file: Path) -> int | None:
    """The pid in ``pid_file`` if that process still runs."""
    try:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def _stamp() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def start(args) -> int:
    """Check, then start the supervisor detached; returns at once."""
    run_dir = Path(os.path.expanduser(args.run_dir))  # local: worker-side file
    if args.commit:
        head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
        if head != args.commit:
            print(f"error: worker {args.worker_id} has commit {head[:12] or '(none)'} checked out in {os.getcwd()}, "
                  f"not {args.commit[:12]}: run `python -m dog_jax.tpu_vm setup` for this commit first",
                  file=sys.stderr)
            return 1
    pid = _alive(run_dir / PID_NAME)
    if pid is not None:
        print(f"error: a trainer already runs on worker {args.worker_id} (pid {pid}): stop it first "
              "(python -m dog_jax.tpu_vm stop)", file=sys.stderr)
        return 1
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / PID_NAME).unlink(missing_ok=True)
    supervise = [sys.executable, "-m", "dog_jax.tpu_vm.worker", "supervise", f"--worker_id={args.worker_id}",
                 f"--workdir={args.workdir}", f"--run_dir={run_dir}", f"--sync_seconds={args.sync_seconds}",
                 "--", *args.command]
    with open(run_dir / SUPERVISOR_LOG, "ab") as out:  # local: worker-side file
        process = subprocess.Popen(supervise, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    print(f"worker {args.worker_id}: started (supervisor pid {process.pid}); log {run_dir / LOG_NAME} -> "
          f"{remote_log(args.workdir, args.worker_id)}")
    return 0


def supervise(args) -> int:
    """Run the trainer, copy its log now and then and at its exit; returns the trainer's exit code."""
    run_dir = Path(args.run_dir)  # local: worker-side file
    log, remote = run_dir / LOG_NAME, remote_log(args.workdir, args.worker_id)
    if _exists(remote):  # a rerun (after a preemption, a stop) continues the earlier log
        _copy(remote, str(log))

    def note(signum, _frame):
        with open(log, "a") as f:  # local: worker-side file
            f.write(f"== dog_jax.tpu_vm: supervisor got {signal.Signals(signum).name} at {_stamp()}; "
                    "waiting for the trainer ==\n")

    signal.signal(signal.SIGTERM, note)  # handlers (unlike SIG_IGN) do not pass on to the child
    signal.signal(signal.SIGHUP, note)
    with open(log, "a") as out:  # local: worker-side file
        out.write(f"== dog_jax.tpu_vm: worker {args.worker_id} start {_stamp()}: {' '.join(args.command)} ==\n")
        out.flush()
        trainer = subprocess.Popen(args.command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    (run_dir / PID_NAME).write_text(f"{trainer.pid}\n")
    last_copy = time.monotonic()
    while trainer.poll() is None:
        time.sleep(min(1.0, args.sync_seconds))
        if time.monotonic() - last_copy >= args.sync_seconds:
            _copy(str(log), remote)
            last_copy = time.monotonic()
    code = trainer.returncode
    with open(log, "a") as out:  # local: worker-side file
        out.write(f"== dog_jax.tpu_vm: worker {args.worker_id} trainer exited with code {code} at {_stamp()} ==\n")
    (run_dir / PID_NAME).unlink(missing_ok=True)
    _copy(str(log), remote)
    return code


def stop(args) -> int:
    """SIGTERM to this worker's trainer."""
    pid = _alive(Path(os.path.expanduser(args.run_dir)) / PID_NAME)  # local: worker-side file
    host = os.uname().nodename
    if pid is None:
        print(f"{host}: no trainer running")
        return 0
    os.kill(pid, signal.SIGTERM)
    print(f"{host}: SIGTERM sent to trainer pid {pid} (it checkpoints and exits 75)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dog_jax.tpu_vm.worker", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="action", required=True)
    for name in ("start", "supervise"):
        p = sub.add_parser(name)
        p.add_argument("--worker_id", type=int, required=True)
        p.add_argument("--workdir", required=True)
        p.add_argument("--commit", default=None)
        p.add_argument("--run_dir", default=RUN_DIR)
        p.add_argument("--sync_seconds", type=float, default=60.0)
        p.add_argument("command", nargs=argparse.REMAINDER)
    p = sub.add_parser("stop")
    p.add_argument("--run_dir", default=RUN_DIR)
    args = parser.parse_args(argv)
    if args.action == "stop":
        return stop(args)
    args.command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not args.command:
        parser.error("the command to run follows --")
    return start(args) if args.action == "start" else supervise(args)


if __name__ == "__main__":
    sys.exit(main())
