"""Resume across every model family: a saved config is recognised as the same run, the train
state continues bitwise, and best eval / histories / the applied learning rate continue as if
the run had never stopped."""

import importlib.util
import json
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from dog_jax import data, initializers
from dog_jax.train import CheckpointError, optim, sharding, steps, train_and_evaluate
from dog_jax.train import checkpoint as checkpoint_lib
from dog_jax.train import config as config_lib
from tests.support.configs import ROOT, load, resolved
from tests.support.checkpoints import assert_bitwise_equal, load_state
from tests.support.models import tiny_convmixer as _tiny_convmixer

def _paper_module():
    spec = importlib.util.spec_from_file_location("cfg_paper_resume", os.path.join(ROOT, "configs", "paper.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _every_config_string():
    """(file, config string) of every family config, its demo and init variants, and every named
    paper config with and without its demo modifier: new names are covered automatically."""
    strings = []
    for family in ("convmixer", "convnext", "hornet"):
        for arg in (None, "demo", *(f"dw_init={name}" for name in ("reference", *initializers.INITIALIZER_NAMES)),
                    "demo,dw_init=dog"):
            strings.append((family, arg))
    for name in _paper_module().EXPERIMENTS:
        strings += [("paper", name), ("paper", f"{name},demo")]
    return strings


def _json_round_trip(value):
    return json.loads(json.dumps(value))


@pytest.mark.parametrize("file, arg", _every_config_string())
def test_saved_config_is_recognised_as_the_same_run(file, arg):
    config = load(file, arg)
    live = resolved(config).model_info(0)
    saved = _json_round_trip(live)  # what the checkpoint's model/ item gives back
    checkpoint_lib._check_same_architecture(saved, live, step=20, directory="W/checkpoints")
    # The whole config too (config.json / summary.json), for any other comparison of the two.
    assert config_lib.comparable(_json_round_trip(config.to_dict())) == config_lib.comparable(config)


def test_comparable_normalises_only_representation():
    assert config_lib.comparable({"dims": (32, 64), "lr": 1.0}) == config_lib.comparable({"dims": [32, 64], "lr": 1})
    assert config_lib.comparable((1, 2)) != config_lib.comparable((1, 3))
    assert config_lib.comparable({"a": 0.5}) != config_lib.comparable({"a": 1})


def test_another_model_is_still_refused_in_one_line():
    config = load("convnext", "demo")
    saved = _json_round_trip(resolved(config).model_info(0))
    other = load("convnext", "demo")
    other.model_overrides.dims = (32, 64, 128, 512)
    with pytest.raises(CheckpointError) as error:
        checkpoint_lib._check_same_architecture(saved, resolved(other).model_info(0), 20, "W/ck")
    message = str(error.value)
    assert "\n" not in message and "is of another model" in message and "[32, 64, 128, 256]" in message
    assert "[32, 64, 128, 512]" in message and "use a new --workdir" in message


def _family_config(family, data_dir):
    """A tiny demo run of ``family``: 8 steps, evals at 2/4/6/8, checkpoints every 2 steps, a log
    line every 3 (so a stop at step 5 falls inside a logging window)."""
    c = load(family, "demo")
    # Two stages (a stem, one downsampling, blocks with every kind of parameter and state): what a
    # resume carries is the same at any depth, and each stage costs a run seconds of tracing and compiling.
    if family == "convnext":
        c.model_overrides.depths, c.model_overrides.dims = (1, 1), (8, 16)
    elif family == "hornet":
        c.model_overrides.depths, c.model_overrides.dims, c.model_overrides.orders = (1, 1), (8, 16), (2, 3)
    else:
        c.model_overrides.width, c.model_overrides.depth = 16, 2
    c.dataset, c.data_dir, c.cache_data = "dog_jax_demo/tiny", data_dir, False
    c.batch_size = 16
    c.num_train_steps, c.eval_every_steps, c.checkpoint_every_steps, c.log_every_steps = 8, 2, 2, 3
    c.keep_checkpoints = 5
    return c


def _comparable_summary(summary):
    """What must not depend on an interruption: best eval, histories (timings left out)."""
    timing = ("eval_time_s", "step_time_s", "images_per_s")

    def strip(entry):
        return {key: value for key, value in entry.items() if key not in timing}

    return {"best_eval": strip(summary["best_eval"]), "final_eval": strip(summary["final_eval"]),
            "eval_history": [strip(entry) for entry in summary["eval_history"]],
            "train_history": [strip(entry) for entry in summary["train_history"]],
            "best_checkpoint_step": summary["best_checkpoint_step"], "skipped_steps": summary["skipped_steps"]}


def _annotated_steps(xplane_file):
    """The step numbers of the trainer's "train" step markers in a profiler trace."""
    profile = jax.profiler.ProfileData.from_file(xplane_file)
    return sorted({dict(event.stats)["step_num"] for plane in profile.planes for line in plane.lines
                   for event in line.events if event.name == "train" and "step_num" in dict(event.stats)})


@pytest.mark.slow
@pytest.mark.parametrize("family", ["convnext", "hornet", "convmixer"])
def test_interrupted_run_ends_like_an_uninterrupted_one(family, tiny_data_dir, tmp_path, one_trace_per_run):
    """Stopped at step 5 (between checkpoints and log lines) and resumed: the final train state is
    bitwise that of an uninterrupted run, and so are best eval, eval and train histories; rerunning
    the finished run changes none of them. Every run (evaluations every 2 steps, checkpoints,
    a stop, a resume) traces its train and eval steps once (``one_trace_per_run``).

    For ConvMixer the stopped-and-resumed run is also profiled (``profile_steps="4:6"``; the
    profiler is the same for every family, and costs a HorNet run ~9 s): the stop at step 5 ends the
    trace inside its window (steps 4-5 saved), the resumed run traces the rest (step 6), and the
    final state is still bitwise the unprofiled reference's."""
    config = _family_config(family, tiny_data_dir)
    reference = train_and_evaluate(config, str(tmp_path / "reference"))
    profiled = config.copy_and_resolve_references()
    if family == "convmixer":
        profiled.profile_steps = "4:6"
    workdir = str(tmp_path / "resumed")
    stopped = train_and_evaluate(profiled, workdir, stop_requested=lambda step: step == 5)
    assert stopped["interrupted"] and stopped["final_step"] == 5
    sessions = os.path.join(workdir, "profile", "plugins", "profile")
    if profiled.profile_steps:
        assert os.listdir(sessions) == ["train_steps_4-5"]
    else:
        assert not os.path.exists(sessions)
    resumed = train_and_evaluate(profiled, workdir)
    assert resumed["start_step"] == 5 and resumed["final_step"] == 8 and not resumed["interrupted"]
    # The run's CPU total adds what the stopped start had spent by its checkpoint (in-process here, so
    # "this process" is pytest's: the difference is bounded by the stopped start's own total).
    assert reference["cpu_time_total_s"] == reference["cpu_time_s"]
    assert 0 < resumed["cpu_time_total_s"] - resumed["cpu_time_s"] <= stopped["cpu_time_total_s"]
    assert_bitwise_equal(load_state(workdir, 8), load_state(str(tmp_path / "reference"), 8))
    if profiled.profile_steps:
        assert sorted(os.listdir(sessions)) == ["train_steps_4-5", "train_steps_6-6"]
        for session, steps_traced in (("train_steps_4-5", [4, 5]), ("train_steps_6-6", [6])):
            traces = [name for name in os.listdir(os.path.join(sessions, session)) if name.endswith(".xplane.pb")]
            assert len(traces) == 1
            assert _annotated_steps(os.path.join(sessions, session, traces[0])) == steps_traced
    expected = _comparable_summary(reference)
    assert [entry["step"] for entry in expected["eval_history"]] == [2, 4, 6, 8]
    assert [entry["step"] for entry in expected["train_history"]] == [3, 6, 8]
    assert _comparable_summary(resumed) == expected
    again = train_and_evaluate(config, workdir)  # a finished run, rerun: nothing forgotten or overwritten
    assert again["start_step"] == 8 and _comparable_summary(again) == expected
    with open(os.path.join(workdir, "summary.json")) as f:
        assert _comparable_summary(json.load(f)) == expected
    # The hook saw every run's steps (4 runs; the finished rerun builds them too, traces neither).
    assert one_trace_per_run == ["train_step", "eval_step"] * 4


def test_after_a_skipped_update_the_applied_learning_rate_is_the_logged_one():
    """nonfinite_policy="skip": the update skipped at state step 1 leaves optax's count behind, but
    the schedule follows the train state's step, the one counter: the update at step 2 is applied
    with schedule(2) -- the rate it logs -- and equals that update computed by hand."""
    mesh = sharding.create_mesh()
    tx = optim.create_optimizer(learning_rate=optim.UNIT_LEARNING_RATE, weight_decay=0.05)
    parts, state = steps.init_train_state(_tiny_convmixer, tx, mesh)

    def schedule(step):  # a different rate at every step
        return 1e-3 * (1.0 + jnp.asarray(step, jnp.float32))

    train_step = steps.make_train_step(parts, tx, schedule, num_classes=10, mix=data.MixConfig(),
                                       compute_dtype=jnp.float32, seed=0, mesh=mesh, skip_nonfinite=True)
    rng = np.random.default_rng(0)
    batches = [{"image": rng.normal(size=(8, 8, 8, 3)).astype(np.float32),
                "label": rng.integers(0, 10, 8).astype(np.int32)} for _ in range(3)]
    batches[1]["image"][0, 0, 0, 0] = np.nan
    logged = []
    for index, batch in enumerate(batches):
        if index == 2:
            before = jax.tree.map(jnp.array, state)  # a copy: the step donates its input
        state, metrics = train_step(state, sharding.global_batch(batch, mesh), parts.rng_state)
        logged.append((float(metrics["learning_rate"]), float(metrics["nonfinite"])))
    assert logged[1][1] == 1.0 and logged[0][1] == logged[2][1] == 0.0
    np.testing.assert_allclose([rate for rate, _ in logged], [1e-3, 2e-3, 3e-3], rtol=1e-6)

    # The third update by hand from the state before it: optax's direction times schedule(2).
    def loss_fn(params):
        model = nnx.merge(parts.train_graph, params, before["batch_stats"], steps._rng_for_step(parts.rng_state, 2))
        logits = model(jnp.asarray(batches[2]["image"]))
        return jnp.mean(optax.softmax_cross_entropy(logits, jax.nn.one_hot(batches[2]["label"], 10)))

    grads = jax.grad(loss_fn)(before["params"])
    direction, _ = tx.update(grads, before["opt_state"], before["params"])
    expected = jax.tree.map(lambda p, u: p + 3e-3 * u, before["params"], direction)
    chex.assert_trees_all_close(jax.device_get(state["params"]), expected, rtol=2e-5, atol=1e-8)
    # Old behaviour for contrast: optax's own count froze at the skipped step, so a rate read from
    # it would have been schedule(1) = 2e-3 -- measurably different from what was applied.
    counts = [int(leaf) for path, leaf in jax.tree_util.tree_flatten_with_path(state["opt_state"])[0]
              if "count" in jax.tree_util.keystr(path)]
    assert counts and set(counts) == {2}, counts


def test_cpu_time_before_a_resume_travels_in_the_history_snapshot(tmp_path):
    """The CPU total continues from a snapshot; a snapshot from before the record leaves it unknown."""
    from dog_jax.train.reporting import Reporter

    first = Reporter(str(tmp_path / "a"), total_steps=8, global_batch_size=4)
    snapshot = first.history_snapshot()
    assert snapshot["cpu_time_s"] > 0
    later = Reporter(str(tmp_path / "b"), total_steps=8, global_batch_size=4)
    later.load_history(snapshot)
    assert later.cpu_time_total(10.0) == snapshot["cpu_time_s"] + 10.0
    older = {key: value for key, value in snapshot.items() if key != "cpu_time_s"}
    later.load_history(older)
    assert later.cpu_time_total(10.0) is None
    for reporter in (first, later):
        reporter.close()
