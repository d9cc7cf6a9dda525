"""Preemption at any moment: a SIGTERM during dataset preparation, the first compile, an
evaluation or a checkpoint write ends the run promptly -- before the first step with no
checkpoint and exit code 75, afterwards with a checkpoint of the last completed step -- and
rerunning finishes bitwise like an uninterrupted run (an interrupted evaluation is redone).

Each test delivers the signal with ``signal.raise_signal`` from inside the named phase (a
patched function), so the moment is exact; the handler is the real ``StopOnSignal``.
"""

import json
import os
import signal
import sys
import textwrap

import pytest

from dog_jax import data
from dog_jax.train import checkpoint as checkpoint_lib
from dog_jax.train import steps, train_and_evaluate
from dog_jax.train.preemption import EXIT_PREEMPTED, Preempted, StopOnSignal
from tests.support import signals, subprocesses
from tests.support.checkpoints import assert_bitwise_equal, load_state
from tests.support.configs import ROOT, SHORT_RUN, tiny_config

TOTAL_STEPS = 4


def _config(data_dir):
    """4 steps; evaluation and checkpoint every 2 steps; a log line (and stop poll) every step."""
    return tiny_config(data_dir, **SHORT_RUN)


def _checkpoint_steps(workdir):
    directory = os.path.join(workdir, "checkpoints")
    names = os.listdir(directory) if os.path.isdir(directory) else []
    assert not [name for name in names if "tmp" in name], names  # no half-written checkpoint left behind
    return sorted(int(name) for name in names if name.isdigit())


@pytest.fixture
def reference(short_reference):
    """The uninterrupted run of :func:`_config` (shared, tests/conftest.py): (workdir, summary)."""
    assert short_reference[1]["config"]["num_train_steps"] == TOTAL_STEPS
    return short_reference


def _interrupted_then_resumed(config, workdir, reference, stopped_at, after_stop=None):
    """Runs ``config`` under a real SIGTERM handler (the test has patched a phase to raise the
    signal), checks the stop, calls ``after_stop()``, reruns to the end and compares with ``reference``."""
    with StopOnSignal() as stop:
        stopped = train_and_evaluate(config, workdir, stop_requested=stop)
    if after_stop is not None:
        after_stop()
    assert stop.received == signal.SIGTERM
    assert stopped["interrupted"] and stopped["final_step"] == stopped_at
    assert _checkpoint_steps(workdir)[-1] == stopped_at
    resumed = train_and_evaluate(config, workdir)
    assert resumed["start_step"] == stopped_at and resumed["final_step"] == TOTAL_STEPS
    reference_dir, reference_summary = reference
    assert_bitwise_equal(load_state(workdir, TOTAL_STEPS), load_state(reference_dir, TOTAL_STEPS))
    without_time = [{k: v for k, v in entry.items() if k != "eval_time_s"} for entry in resumed["eval_history"]]
    assert without_time == [{k: v for k, v in entry.items() if k != "eval_time_s"}
                            for entry in reference_summary["eval_history"]]
    assert resumed["best_checkpoint_step"] == reference_summary["best_checkpoint_step"]
    return stopped, resumed


def test_sigterm_during_the_first_compile_checkpoints_the_first_step(tiny_data_dir, reference, tmp_path, monkeypatch):
    """The signal arrives while the train step is traced (part of the first compile): the compile
    cannot be interrupted, so the run stops right after the first step, with its checkpoint."""
    traced = []
    original = steps._rng_for_step

    def rng_for_step(*args):  # called while jax.jit traces the train step
        traced.append(True)
        if len(traced) == 1:  # once: a second SIGTERM terminates at once (by design)
            signal.raise_signal(signal.SIGTERM)
        return original(*args)

    monkeypatch.setattr(steps, "_rng_for_step", rng_for_step)
    stopped, _ = _interrupted_then_resumed(_config(tiny_data_dir), str(tmp_path / "run"), reference, stopped_at=1)
    assert traced and stopped["eval_history"] == []


def test_sigterm_during_an_evaluation_is_redone_on_resume(tiny_data_dir, reference, tmp_path, monkeypatch):
    """The signal arrives at the second batch of step 2's evaluation: the evaluation is abandoned,
    step 2 checkpointed; the rerun evaluates step 2 first and keeps the best checkpoint as an
    uninterrupted run does (metrics attached to the checkpoint written by the stop)."""
    monkeypatch.setattr(steps, "make_eval_step", steps.make_eval_step)  # restored after the test
    calls = signals.sigterm_at_eval_batch(steps, 2)
    workdir = str(tmp_path / "run")
    def after_stop():  # polled between batches: the evaluation was abandoned at the next batch
        assert len(calls) == 2

    stopped, resumed = _interrupted_then_resumed(_config(tiny_data_dir), workdir, reference, stopped_at=2,
                                                 after_stop=after_stop)
    assert stopped["eval_history"] == []
    assert [entry["step"] for entry in resumed["eval_history"]] == [2, 4]
    with open(os.path.join(workdir, "checkpoints", "2", "metrics", "metrics")) as f:
        assert json.load(f)["eval_top1"] == resumed["eval_history"][0]["eval_top1"]


@pytest.mark.slow
def test_sigterm_during_a_checkpoint_write_waits_for_it(tiny_data_dir, reference, tmp_path, monkeypatch):
    """The signal arrives while the asynchronous write of step 2 is in flight: the run stops after
    that step, the write completes (readable, no temporary directory), exit state consistent."""
    original = checkpoint_lib.Checkpointer.save
    signalled = []

    def save(self, step, *args, **kwargs):
        started = original(self, step, *args, **kwargs)
        if step == 2 and not signalled:
            signalled.append(step)
            signal.raise_signal(signal.SIGTERM)
        return started

    monkeypatch.setattr(checkpoint_lib.Checkpointer, "save", save)
    workdir = str(tmp_path / "run")
    stopped, _ = _interrupted_then_resumed(_config(tiny_data_dir), workdir, reference, stopped_at=2)
    assert [entry["step"] for entry in stopped["eval_history"]] == [2]


def test_sigterm_before_the_first_step_raises_preempted_with_no_checkpoint(tiny_data_dir, tmp_path, monkeypatch):
    """In-process API: a stop during set-up (here: while the model is built) raises Preempted and
    leaves no checkpoint; the same workdir then trains normally."""
    original = steps.init_train_state

    def init_train_state(*args, **kwargs):
        signal.raise_signal(signal.SIGTERM)
        raise AssertionError("not reached: the handler raises Preempted at once")

    monkeypatch.setattr(steps, "init_train_state", init_train_state)
    workdir = str(tmp_path / "run")
    with StopOnSignal() as stop, pytest.raises(Preempted):
        train_and_evaluate(_config(tiny_data_dir), workdir, stop_requested=stop)
    assert _checkpoint_steps(workdir) == [] and not os.path.exists(os.path.join(workdir, "summary.json"))
    monkeypatch.setattr(steps, "init_train_state", original)
    assert train_and_evaluate(_config(tiny_data_dir), workdir)["final_step"] == TOTAL_STEPS


# train.py end to end, the demo dataset generated by the run itself: the signal comes from inside
# the example generator after 50 images.
_DRIVER = textwrap.dedent("""
    import signal, sys
    sys.path.insert(0, {root!r})
    sys.argv = ["train.py", "--config={config}", "--workdir={workdir}"]
    import train
    from dog_jax.data import demo_dataset
    original = demo_dataset.DogJaxDemo._generate_examples

    def generate(self, *args, **kwargs):
        for count, example in enumerate(original(self, *args, **kwargs)):
            if count == 50:
                signal.raise_signal(signal.SIGTERM)
                print("GENERATED PAST THE SIGNAL", flush=True)
            yield example

    demo_dataset.DogJaxDemo._generate_examples = generate
    train.run()
""")

_CONFIG_FILE = textwrap.dedent("""
    import sys
    sys.path.insert(0, {root!r})
    from tests.support.configs import tiny_config

    def get_config():
        return tiny_config({data_dir!r}, num_train_steps=2)
""")


def test_sigterm_during_dataset_preparation_exits_75_with_nothing_written(tmp_path):
    data_dir, workdir = str(tmp_path / "tfds"), str(tmp_path / "run")
    config = tmp_path / "config.py"
    config.write_text(_CONFIG_FILE.format(root=ROOT, data_dir=data_dir))
    env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2")
    env["XLA_FLAGS"] = subprocesses.xla_flags()
    result = subprocesses.run([sys.executable, "-c", _DRIVER.format(root=ROOT, config=config, workdir=workdir)],
                              env=env, cwd=ROOT, timeout=subprocesses.TIMEOUT_S)
    assert result.returncode == EXIT_PREEMPTED, result.stderr[-3000:]
    assert "GENERATED PAST THE SIGNAL" not in result.stdout  # preparation ended at the signal
    assert "before the first training step" in result.stderr
    assert _checkpoint_steps(workdir) == [] and not os.path.exists(os.path.join(workdir, "summary.json"))
    # tfds prepares into a temporary directory: nothing half-prepared is taken for the dataset.
    builder = data.get_builder("dog_jax_demo/tiny", data_dir, prepare=False)
    assert not builder.is_prepared()
