"""One writer per workdir (``dog_jax.train.lease``): take, refuse, release and take over the lease
``<workdir>/LEASE.json``, on a local directory and on a ``gs://`` bucket (fake-gcs-server on
127.0.0.1), plus one ``train.py`` scenario: a second launch on a running run's workdir is refused
with one line and the first run ends as if alone.
"""

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from dog_jax import storage
from dog_jax.storage import conditional
from dog_jax.train import lease as lease_lib
from dog_jax.train.checkpoint import StorageFailure
from dog_jax.train.lease import LEASE_FILE, LeaseHeld, LeaseLost, acquire
from tests.support import subprocesses
from tests.support.checkpoints import assert_bitwise_equal, load_state
from tests.support.configs import ROOT


@pytest.fixture(params=["local", "bucket"])
def workdir(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "run")
    return request.getfixturevalue("bucket") + "/run"


def _prepare(workdir):
    storage.make_dirs(workdir)
    return storage.join(workdir, LEASE_FILE)


def _write_holder(path, **fields):
    now = time.time()
    holder = {"job_id": "0123abcd" * 4, "host": "other-host", "pid": 4242, "started": "2020-01-01T00:00:00Z",
              "code": "abc", "started_unix": now, "heartbeat_unix": now, **fields}
    assert conditional.create(path, json.dumps(holder).encode()) is not None


def _holder(path):
    found = conditional.read(path)
    return json.loads(found[0]) if found else None


def _takeovers(caplog):
    return [r for r in caplog.records if "Taking over the lease" in r.getMessage()]


def test_take_refuse_release(workdir):
    path = _prepare(workdir)
    first = acquire(workdir, heartbeat_s=60)
    held = _holder(path)
    assert held["job_id"] == first.job_id and held["pid"] == os.getpid() and held["host"] == socket.gethostname()
    assert {"started", "code", "heartbeat", "heartbeat_unix", "processes"} <= set(held)
    with pytest.raises(LeaseHeld) as refused:
        acquire(workdir)
    message = str(refused.value)
    assert "\n" not in message and f"pid {os.getpid()}" in message and socket.gethostname() in message
    assert "last heartbeat" in message and "--takeover_lease" in message and "another --workdir" in message
    first.release()
    assert _holder(path) is None
    with acquire(workdir) as again:  # free again
        assert _holder(path)["job_id"] == again.job_id
    assert _holder(path) is None


def test_a_gone_process_on_this_host_is_taken_over_with_one_warning(workdir, caplog):
    path = _prepare(workdir)
    gone = subprocess.Popen(["sleep", "60"])
    gone.send_signal(signal.SIGKILL)
    gone.wait()
    _write_holder(path, host=socket.gethostname(), pid=gone.pid)
    with caplog.at_level(logging.WARNING), acquire(workdir) as taken:
        assert _holder(path)["job_id"] == taken.job_id
    assert len(_takeovers(caplog)) == 1 and f"process {gone.pid} no longer exists" in caplog.text


def test_another_host_is_taken_over_only_after_its_heartbeat_timed_out(workdir, caplog):
    path = _prepare(workdir)
    _write_holder(path, heartbeat_unix=time.time() - 5)
    with pytest.raises(LeaseHeld, match="other-host .*pid 4242.*last heartbeat 5 s ago"):
        acquire(workdir, timeout_s=60, heartbeat_s=1)
    with caplog.at_level(logging.WARNING), acquire(workdir, timeout_s=4, heartbeat_s=1) as taken:
        assert _holder(path)["job_id"] == taken.job_id
    assert len(_takeovers(caplog)) == 1 and "no heartbeat for 5 s" in caplog.text


def test_takeover_lease_takes_a_live_holders_lease(workdir, caplog):
    path = _prepare(workdir)
    holder = acquire(workdir, heartbeat_s=0.05)
    with caplog.at_level(logging.WARNING), acquire(workdir, takeover=True) as taken:
        assert len(_takeovers(caplog)) == 1 and "--takeover_lease" in caplog.text
        time.sleep(0.5)  # the old holder's next heartbeat finds the lease changed
        assert f"was taken over by job {taken.job_id}" in caplog.text
        holder.release()  # not its lease any more: left alone
        assert _holder(path)["job_id"] == taken.job_id
    assert _holder(path) is None


def test_a_run_whose_lease_was_taken_over_or_removed_may_not_write(workdir):
    """What the Checkpointer asks before every write (check: one read) and after every step
    (raise_if_lost: no read, what the heartbeat found)."""
    path = _prepare(workdir)
    stray = acquire(workdir, heartbeat_s=0.05)
    stray.check("the last complete checkpoint is step 2")  # still its own: nothing raised
    with acquire(workdir, takeover=True) as taker:
        deadline = time.time() + 20
        while stray.lost is None and time.time() < deadline:  # its heartbeat finds the lease changed
            time.sleep(0.05)
        for ask in (stray.raise_if_lost, stray.check):
            with pytest.raises(LeaseLost) as lost:
                ask("the last complete checkpoint is step 2")
            message = str(lost.value)
            assert "\n" not in message and f"taken over by job {taker.job_id}" in message, message
            assert "stopped without writing more (the last complete checkpoint is step 2)" in message
        stray.release()
        assert _holder(path)["job_id"] == taker.job_id  # the stray never touches it again
    gone = acquire(workdir, heartbeat_s=60)
    conditional.delete(path, conditional.read(path)[1])  # the workdir removed under the run
    gone.raise_if_lost("-")  # the heartbeat has not run: nothing known yet
    with pytest.raises(StorageFailure, match="vanished while this run wrote to it: its lease .* is gone") as vanished:
        gone.check("the last complete checkpoint is step 4")
    assert not isinstance(vanished.value, LeaseLost) and "step 4, if still there" in str(vanished.value)
    gone.release()


def test_the_heartbeat_refreshes_the_lease(workdir):
    path = _prepare(workdir)
    with acquire(workdir, heartbeat_s=0.1):
        first = _holder(path)["heartbeat_unix"]
        deadline = time.time() + 20
        while _holder(path)["heartbeat_unix"] == first and time.time() < deadline:
            time.sleep(0.05)
        assert _holder(path)["heartbeat_unix"] > first


def test_conditional_writes_check_the_generation(workdir):
    path = _prepare(workdir)
    first = conditional.create(path, b"one")
    assert first is not None and conditional.create(path, b"two") is None
    assert conditional.read(path) == (b"one", first)
    second = conditional.replace(path, b"three", first)
    assert second is not None and second != first
    assert conditional.replace(path, b"four", first) is None  # stale generation: refused
    assert conditional.read(path) == (b"three", second)
    if not storage.is_url(path):  # fake-gcs-server ignores ifGenerationMatch on deletes
        assert not conditional.delete(path, first)
    assert conditional.delete(path, second) and conditional.read(path) is None


def test_concurrent_launches_exactly_one_wins(workdir):
    _prepare(workdir)
    barrier, won, refused = threading.Barrier(4), [], []

    def launch():
        barrier.wait()
        try:
            won.append(acquire(workdir))
        except LeaseHeld:
            refused.append(True)

    threads = [threading.Thread(target=launch) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(won) == 1 and len(refused) == 3
    won[0].release()


def test_config_validation_of_the_lease_times():
    from dog_jax.train import ConfigError
    from dog_jax.train.config import validate
    from tests.support.configs import tiny_config

    config = tiny_config("/nonexistent", lease_timeout_s=10, lease_heartbeat_s=20)
    with pytest.raises(ConfigError, match="lease_timeout_s=10 must be greater than config.lease_heartbeat_s=20"):
        validate(config, device_count=1, process_count=1)


# train.py, whose run waits after taking the lease until the file GO exists (so that the second
# launch certainly meets a running holder).
_DRIVER = textwrap.dedent("""
    import os, sys, time
    sys.path.insert(0, {root!r})
    sys.argv = ["train.py", "--config={config}", "--workdir={workdir}", *{extra!r}]
    import train
    from dog_jax.train import lease

    original = lease.acquire

    def acquire(*args, **kwargs):
        taken = original(*args, **kwargs)
        go = os.environ.get("GO_FILE")
        while go and not os.path.exists(go):
            time.sleep(0.1)
        return taken

    lease.acquire = acquire
    train.run()
""")

_CONFIG_FILE = textwrap.dedent("""
    import sys
    sys.path.insert(0, {root!r})
    from tests.support.configs import SHORT_RUN, tiny_config

    def get_config():
        return tiny_config({data_dir!r}, **SHORT_RUN)
""")


def _start(tmp_path, data_dir, workdir, *extra, go=""):
    config = tmp_path / "lease_config.py"
    config.write_text(_CONFIG_FILE.format(root=ROOT, data_dir=data_dir))
    env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2", GO_FILE=go)
    env["XLA_FLAGS"] = subprocesses.xla_flags()
    script = _DRIVER.format(root=ROOT, config=config, workdir=workdir, extra=list(extra))
    return subprocess.Popen([sys.executable, "-c", script], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_a_second_launch_on_a_running_workdir_is_refused_and_the_first_ends_as_if_alone(tmp_path, tiny_data_dir,
                                                                                        short_reference):
    """The first run ends as if alone: its final train state is bitwise that of the same config's
    uninterrupted run in a workdir of its own (``short_reference``, tests/conftest.py)."""
    shared, go = str(tmp_path / "shared"), str(tmp_path / "GO")
    started = [_start(tmp_path, tiny_data_dir, shared, go=go)]
    try:
        deadline = time.time() + subprocesses.TIMEOUT_S
        while not os.path.exists(os.path.join(shared, LEASE_FILE)):
            assert started[0].poll() is None and time.time() < deadline, started[0].communicate()[1][-3000:]
            time.sleep(0.2)
        started.append(_start(tmp_path, tiny_data_dir, shared, "--config.seed=7"))
        code, _, err = subprocesses.finish(started[1], timeout=subprocesses.TIMEOUT_S)
        open(go, "w").close()
        lines = err.strip().splitlines()
        assert code == lease_lib.EXIT_LEASE_HELD, err[-3000:]
        assert len(lines) <= 8, err
        assert lines[-1].startswith(f"error: workdir {shared} is in use by job "), err
        assert f"pid {started[0].pid}" in lines[-1] and "--takeover_lease" in lines[-1], err
        code, _, err = subprocesses.finish(started[0], timeout=subprocesses.TIMEOUT_S)
        assert code == 0, err[-3000:]
    finally:
        subprocesses.kill_all(started)
    assert not os.path.exists(os.path.join(shared, LEASE_FILE))  # released at the end
    with open(os.path.join(shared, "config.json")) as f:
        assert json.load(f)["seed"] == 0
    alone, summary = short_reference
    assert summary["final_step"] == 4 and summary["config"]["seed"] == 0
    assert_bitwise_equal(load_state(shared, 4), load_state(alone, 4))
