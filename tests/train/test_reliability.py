"""Preemption: SIGKILL at three points (one mid-checkpoint-write) and a SIGTERM, each followed by
rerunning the same ``train.py`` command, end bitwise identical to an uninterrupted run.

Every run is a real ``train.py`` subprocess (signals, exit codes, orbax's temporary directories
are the point). The interruptions are chained in one workdir so that each restart also
resumes from whatever the previous kill left behind. The uninterrupted reference is the storage-fault
tests' (``fault_reference``: the same config but for one log line instead of one per step, which
must not change a bit of the train state), trained once per pytest run.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from tests.support import subprocesses
from tests.support.checkpoints import assert_bitwise_equal, load_state
from tests.support.configs import FAULT_RUN, ROOT
from tests.support.console import third_party_info_lines

TOTAL_STEPS = FAULT_RUN["num_train_steps"]
EXIT_PREEMPTED = 75  # documented in docs/reliability.md and dog_jax/train/preemption.py

# The fault tests' run (``FAULT_RUN``), with a log line -- and so a poll for a stop -- at every step.
_CONFIG_FILE = textwrap.dedent("""
    import sys
    sys.path.insert(0, {root!r})
    from tests.support.configs import FAULT_RUN, tiny_config

    def get_config():
        return tiny_config({data_dir!r}, **{{**FAULT_RUN, "log_every_steps": 1}})
""")

# Runs train.py's real main(); KILL_MODE/KILL_AT make the process signal itself at an exact
# point so that the test is deterministic (an external kill would land anywhere).
_DRIVER = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {root!r})
    sys.argv = ["train.py", "--config={config}", "--workdir={workdir}", *{extra!r}]
    import train
    from dog_jax.train import checkpoint, preemption

    mode, at = os.environ.get("KILL_MODE", ""), int(os.environ.get("KILL_AT", "0"))
    original_poll, original_save = preemption.StopOnSignal.__call__, checkpoint.Checkpointer.save

    def poll(self, step):
        if step == at and mode == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if step == at and mode == "term":
            os.kill(os.getpid(), signal.SIGTERM)
        return original_poll(self, step)

    def save(self, step, *args, **kwargs):
        started = original_save(self, step, *args, **kwargs)
        if step == at and mode == "kill_in_save":  # the async write has just begun
            os.kill(os.getpid(), signal.SIGKILL)
        return started

    preemption.StopOnSignal.__call__ = poll
    checkpoint.Checkpointer.save = save
    train.run()
""")


def _start(tmp, data_dir, workdir, mode="", at=0, flags=()):
    config = os.path.join(tmp, "reliability_config.py")
    if not os.path.exists(config):
        with open(config, "w") as f:
            f.write(_CONFIG_FILE.format(root=ROOT, data_dir=data_dir))
    env = dict(os.environ, JAX_PLATFORMS="cpu", KILL_MODE=mode, KILL_AT=str(at), TF_CPP_MIN_LOG_LEVEL="2")
    env["XLA_FLAGS"] = subprocesses.xla_flags()  # one device, whatever the test process uses
    script = _DRIVER.format(root=ROOT, config=config, workdir=workdir, extra=list(flags))
    return subprocess.Popen([sys.executable, "-c", script], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _finish(proc, timeout=subprocesses.TIMEOUT_S):
    """(exit code, stderr); a run past ``timeout`` fails the test as a hang (its -9 is no SIGKILL result)."""
    code, _, err = subprocesses.finish(proc, timeout=timeout)
    return code, err


def _steps(workdir):
    directory = os.path.join(workdir, "checkpoints")
    return sorted(int(name) for name in os.listdir(directory) if name.isdigit()) if os.path.isdir(directory) else []


@pytest.mark.slow
def test_preemption_resume_is_bitwise_identical_and_runs_are_deterministic(tmp_path, tiny_data_dir, fault_reference):
    """One test (not a shared fixture): under pytest-xdist a module fixture would run once per worker.

    Chain in one workdir, each a fresh ``train.py`` with the same command line:
      1. SIGKILL mid-training at step 3 (step 2's checkpoint was started asynchronously);
      2. SIGKILL right after the checkpoint write of step 4 began;
      3. SIGTERM at step 5: checkpoint of step 5, exit code 75;
      4. SIGKILL at step 7 (after the SIGTERM run's resume and step 6's checkpoint);
      5. the same command again, to the end.
    The chain ends bitwise where the shared reference run (another process) does: resumes lose
    nothing and runs are deterministic. The SIGTERM run has ``--verbose`` (the console's other setting).
    """
    tmp, data_dir = str(tmp_path), tiny_data_dir
    reference_dir = fault_reference[1]
    chain_dir = os.path.join(tmp, "chain")
    started, chain = [], []
    try:
        for mode, at in (("kill", 3), ("kill_in_save", 4), ("term", 5), ("kill", 7), ("", 0)):
            started.append(_start(tmp, data_dir, chain_dir, mode, at, flags=["--verbose"] if mode == "term" else ()))
            code, err = _finish(started[-1])
            chain.append((mode, at, code, _steps(chain_dir), err))
    finally:
        subprocesses.kill_all(started)
    consoles = [chain[-1][4], chain[2][4]]  # the last run of the chain (default console), and --verbose

    for mode, at, code, steps, err in chain:
        expected = {"kill": -signal.SIGKILL, "kill_in_save": -signal.SIGKILL, "term": EXIT_PREEMPTED, "": 0}[mode]
        assert code == expected, f"{mode} at {at}: exit {code}\n{err[-3000:]}"
        assert all(step <= (at or TOTAL_STEPS) for step in steps), (mode, at, steps)

    # Killed during the write of step 4: the next run resumed from a complete checkpoint (orbax
    # commits by renaming a temporary directory), and nothing was taken for damaged.
    resumed = [line for line in chain[2][4].splitlines() if "Resumed from" in line]
    assert resumed and ("at step 2" in resumed[0] or "at step 4" in resumed[0]), chain[2][4][-3000:]
    assert not os.path.exists(os.path.join(chain_dir, "damaged_checkpoints"))

    # SIGTERM: checkpointed the step it was at (not only the last periodic one), said so, exit 75.
    mode, at, code, steps, err = chain[2]
    assert at in steps and "Received SIGTERM" in err, (steps, err[-3000:])

    # The console's Python logging: by default dog_jax's INFO lines only; with --verbose other libraries'
    # (orbax's) too. (This driver imports TensorFlow before train.py's flags: its native notices are
    # checked on a real train.py command in tests/analysis/test_trained_checkpoint.py.)
    python_info = [[line for line in third_party_info_lines(err) if ".py:" in line] for err in consoles]
    assert not python_info[0] and "Done: step 8" in consoles[0], consoles[0][-3000:]
    assert python_info[1], consoles[1][-3000:]
    summary = json.load(open(os.path.join(chain_dir, "summary.json")))
    assert summary["final_step"] == TOTAL_STEPS and summary["start_step"] in (5, 6) and not summary["interrupted"]
    assert _steps(reference_dir)[-1] == TOTAL_STEPS and _steps(chain_dir)[-1] == TOTAL_STEPS
    final = load_state(reference_dir, TOTAL_STEPS)
    assert set(final) == {"step", "params", "batch_stats", "opt_state"} and final["batch_stats"]
    assert_bitwise_equal(load_state(chain_dir, TOTAL_STEPS), final)  # params, BN stats, optimizer state
