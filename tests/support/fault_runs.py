"""``train.py`` runs that meet storage faults, and what their console must look like.

One config file serves every run of the fault tests (the same command before and after a fault):
the tiny ConvMixer, 8 steps, a checkpoint every 2 steps, one log line (so that a failing run's
console fits in 12 lines). :func:`reference_run` trains it once, uninterrupted (the ``fault_reference``
fixture of tests/conftest.py, shared by the fault tests of a pytest process); a run that met faults and
was resumed must end with its final checkpoint bitwise equal.

A fault is injected (``FAULT``) by a driver around ``train.py``'s real ``main`` right after the
checkpoint of step ``FAULT_AFTER`` is complete, between two checkpoints as it happens in a run:
``fill`` fills the workdir's disk with a file ``ballast`` next to the workdir, leaving half of what
that checkpoint took free (so the next checkpoint meets a full disk, whatever a write needs at its
peak), ``vanish`` removes the workdir, ``read_only`` bind-mounts it read-only over itself (inside a
private mount namespace), ``take_lease`` replaces its lease by another job's (as that job's
``--takeover_lease`` would) and records the workdir's files at that moment. A fault that needs no
timing (a bucket refusing writes, armed in the relay) runs the plain ``train.py`` command.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import textwrap
import time
from typing import Iterator

from tests.support import subprocesses
from tests.support.configs import FAULT_RUN, ROOT

STEPS = FAULT_RUN["num_train_steps"]
MAX_CONSOLE_LINES = 12  # issue 36: a storage fault ends in at most 12 console lines

_CONFIG_FILE = textwrap.dedent("""
    import sys
    sys.path.insert(0, {root!r})
    from tests.support.configs import FAULT_RUN, tiny_config

    def get_config():
        return tiny_config({data_dir!r}, **FAULT_RUN)
""")

_DRIVER = textwrap.dedent("""
    import json, os, shutil, subprocess, sys, time
    sys.path.insert(0, {root!r})
    sys.argv = ["train.py", "--config={config}", "--workdir={workdir}"]
    from dog_jax import console
    console.quiet_native(False)  # as train.py does before anything imports TensorFlow
    import train
    from dog_jax import storage
    from dog_jax.storage import conditional
    from dog_jax.train import checkpoint

    fault, after, workdir = os.environ["FAULT"], int(os.environ["FAULT_AFTER"]), {workdir!r}
    original = checkpoint.Checkpointer.save

    def used():
        stat = os.statvfs(os.path.dirname(workdir))
        return (stat.f_blocks - stat.f_bfree) * stat.f_frsize, stat.f_bavail * stat.f_frsize

    def inject(used_before):
        if fault == "fill":  # another process fills the disk: half a checkpoint stays free
            used_after, free = used()
            with open(os.path.join(os.path.dirname(workdir), "ballast"), "wb") as f:
                f.write(bytes(free - (used_after - used_before) // 2))
        elif fault == "vanish":
            shutil.rmtree(workdir)
        elif fault == "read_only":
            for args in (["--bind", workdir, workdir], ["-o", "remount,bind,ro", workdir]):
                subprocess.run(["mount", *args], check=True)
        elif fault == "take_lease":
            lease = storage.join(workdir, "LEASE.json")
            content, generation = conditional.read(lease)
            now = time.time()
            other = {{"job_id": "0ther" + "0" * 27, "host": "another-host", "pid": 4242, "code": "abc",
                     "started": "2030-01-01T00:00:00Z", "heartbeat_unix": now, "started_unix": now}}
            assert conditional.replace(lease, json.dumps(other).encode(), generation) is not None
            files = {{str(p): p.stat().length for p in storage.files_under(workdir)}}
            with open(os.environ["FAULT_SNAPSHOT"], "w") as f:
                json.dump(files, f)

    def save(self, step, *args, **kwargs):
        before = used()[0] if step == after and fault == "fill" else 0
        started = original(self, step, *args, **kwargs)
        if step == after:
            self.wait()  # that checkpoint is complete: the fault comes between two checkpoints
            inject(before)
        return started

    checkpoint.Checkpointer.save = save
    train.run()
""")


def write_config(directory: str, data_dir: str) -> str:
    path = os.path.join(directory, "fault_config.py")
    with open(path, "w") as f:
        f.write(_CONFIG_FILE.format(root=ROOT, data_dir=data_dir))
    return path


def environment(**extra: str) -> dict[str, str]:
    env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2", GCS_RETRY_CONFIG_MAX_RETRIES="1", **extra)
    env["XLA_FLAGS"] = subprocesses.xla_flags()  # one device, whatever the test process uses
    return env


def command(config: str, workdir: str, fault: str = "") -> list[str]:
    """The ``train.py`` command (``fault``: through the driver, which runs the same ``main``)."""
    if not fault:
        return [sys.executable, "train.py", f"--config={config}", f"--workdir={workdir}"]  # run in ROOT
    return [sys.executable, "-c", _DRIVER.format(root=ROOT, config=config, workdir=workdir)]


def run(config: str, workdir: str, *, fault: str = "", after: int = 0, prefix: tuple[str, ...] = (),
        **env: str) -> subprocess.CompletedProcess:
    """Runs :func:`command` to its end (``prefix``: e.g. ``nsenter`` into a mount namespace)."""
    faults = {"FAULT": fault, "FAULT_AFTER": str(after)} if fault else {}
    return subprocesses.run([*prefix, *command(config, workdir, fault)], env=environment(**faults, **env),
                            cwd=ROOT, timeout=subprocesses.TIMEOUT_S)


def reference_run(directory: str, data_dir: str) -> tuple[str, str]:
    """(config file, workdir) of the uninterrupted reference run."""
    config = write_config(directory, data_dir)
    workdir = os.path.join(directory, "reference")
    result = run(config, workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    return config, workdir


def one_line_failure(result: subprocess.CompletedProcess, code: int) -> str:
    """The console's last line, after checking the run ended with ``code``, no traceback, at most
    :data:`MAX_CONSOLE_LINES` lines and exactly one ``error:`` line, the last."""
    output = result.stderr
    lines = output.strip().splitlines()
    assert result.returncode == code, f"exit {result.returncode}, not {code}:\n{output[-3000:]}"
    assert "Traceback" not in output and len(lines) <= MAX_CONSOLE_LINES, output[-3000:]
    assert [line for line in lines if line.startswith("error: ")] == lines[-1:], output[-3000:]
    return lines[-1]


def detail_log(line: str) -> str:
    """The log file the line names (``(details: PATH)`` at its end)."""
    found = re.search(r"\(details: (\S+)\)$", line)
    assert found, line
    return found[1]


@contextlib.contextmanager
def private_mount_namespace() -> Iterator[tuple[str, ...]]:
    """A mount namespace of its own (root: ``unshare -m``), held by a sleeping process; yields the
    ``nsenter`` prefix that runs a command inside it. Mounts made inside vanish with it; the test
    process sees their files through ``/proc/<pid>/root``."""
    holder = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sleep", "3600"])
    try:
        deadline = time.monotonic() + 30
        # Until unshare has switched namespaces, nsenter would enter (and mount in) this one.
        while os.readlink(f"/proc/{holder.pid}/ns/mnt") == os.readlink("/proc/self/ns/mnt"):
            assert holder.poll() is None and time.monotonic() < deadline, "unshare -m did not start"
            time.sleep(0.01)
        yield ("nsenter", "-t", str(holder.pid), "-m", f"--wd={ROOT}", "--")
    finally:
        holder.kill()
        holder.wait()


def inside(prefix: tuple[str, ...], path: str) -> str:
    """``path`` as the namespace of ``prefix`` sees it, from outside (``/proc/<pid>/root/...``)."""
    return f"/proc/{prefix[2]}/root{path}"


def mount_namespaces_work() -> bool:
    """Whether this process may make private mount namespaces and mount tmpfs in them (root)."""
    if os.geteuid() != 0:
        return False
    probe = subprocess.run(["unshare", "-m", "--propagation", "private", "true"], capture_output=True)
    return probe.returncode == 0
