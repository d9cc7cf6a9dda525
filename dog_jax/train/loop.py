"""``train_and_evaluate(config, workdir)``: the whole training run, resumable from ``workdir``.

What happens, in order:

1. check the config against the devices and resolve its model (``run_spec.check``: one-line
   :class:`ConfigError` on bad values, before any data is read); take the workdir's lease;
2. open the dataset (preparing it if needed) and resolve the run (``run_spec.resolve``: steps from
   epochs, batches, data shards): the :class:`~dog_jax.train.run_spec.RunSpec` everything below reads;
3. build model + optimizer state replicated over the mesh (``steps.init_train_state``);
4. if ``<workdir>/checkpoints`` holds a checkpoint, restore the latest into the current
   shardings (any device count: one line says what changes) and continue from its step
   (the data stream is rebuilt at that step); an evaluation that a stop interrupted at
   that step is redone first;
5. train with the single jitted step; log every ``log_every_steps``; evaluate and
   checkpoint at their intervals and at the end; write ``summary.json``.

A stop request (SIGTERM through :class:`~dog_jax.train.preemption.StopOnSignal`) is honoured
at any moment: before the first training step the run ends at once with
:class:`~dog_jax.train.preemption.Preempted` (nothing new to save); afterwards after the step
in flight, or between two evaluation batches, with a checkpoint of the last completed step.

Files in ``workdir``: ``config.json`` (the resolved config), ``checkpoints/``,
``tensorboard/``, ``summary.json``, and ``profile/`` with ``config.profile_steps``
(:mod:`dog_jax.train.profiling`). Both JSON files carry the run's provenance record (which code,
libraries, native kernels, "auto" choices and devices made it: ``dog_jax.train.run_provenance``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
from absl import logging

from dog_jax import provenance as dog_provenance
from dog_jax import storage
from dog_jax.train import checkpoint as checkpoint_lib
from dog_jax.train import lease as lease_lib
from dog_jax.train import failure_report, profiling, reporting, run_provenance, run_setup, run_spec, sharding, steps
from dog_jax.train.preemption import Preempted, StopPolicy

# Batches on a device at once: the running step's own and the next one. The loops below wait for the
# step before last after dispatching a step; without that, asynchronous dispatch would let the host
# put up to log_every_steps batches on the device ahead of the chip (the AOT report counts these:
# dog_jax.train.aot_memory).
DEVICE_BATCHES = 2


def _eval_sums(weights, eval_step, rng_state, eval_ds, mesh, poll) -> dict[str, float]:
    """Sums of loss / top1 / top5 / count over the eval stream for ``{"params", "batch_stats"}``;
    ``poll()`` runs before every batch (it raises to abandon the evaluation)."""
    totals, in_flight = None, []
    for batch in eval_ds.as_numpy_iterator():
        if poll is not None:
            poll()
        sums = eval_step(weights, sharding.global_batch(batch, mesh), rng_state)
        totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
        in_flight = _bound_in_flight(in_flight, sums)
    return {key: float(value) for key, value in jax.device_get(totals).items()}


def _bound_in_flight(in_flight: list, outputs) -> list:
    """Appends a dispatched step's ``outputs`` and waits for older steps until at most
    ``DEVICE_BATCHES - 1`` remain in flight (the newest step's batch plus the next one the caller
    puts on the device); returns the steps still in flight."""
    in_flight = [*in_flight, outputs]
    while len(in_flight) > DEVICE_BATCHES - 1:
        jax.block_until_ready(in_flight.pop(0))
    return in_flight


def evaluate(state, eval_step, rng_state, eval_ds, mesh, *, poll: Callable[[], None] | None = None
             ) -> dict[str, float]:
    """Runs the eval stream; returns eval_{top1, top5, loss, examples, time_s}, and
    eval_ema_{top1, top5, loss} for the EMA weights when the state has them.

    ``poll``: called before every eval batch; an exception it raises (the trainer's
    :class:`Preempted`) abandons the evaluation.
    """
    start = time.perf_counter()
    metrics = {}
    for prefix, weights in (("eval", state), ("eval_ema", state.get("ema"))):
        if weights is None:
            continue
        totals = _eval_sums(weights, eval_step, rng_state, eval_ds, mesh, poll)
        count = max(totals["count"], 1.0)
        metrics.update({f"{prefix}_top1": totals["top1"] / count, f"{prefix}_top5": totals["top5"] / count,
                        f"{prefix}_loss": totals["loss"] / count})
        metrics.setdefault("eval_examples", int(totals["count"]))
    metrics["eval_time_s"] = time.perf_counter() - start
    return metrics


def _without_step(entry: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in entry.items() if key != "step"}


@dataclasses.dataclass
class _Run:
    """Everything the training loop works with (built by :func:`_set_up`)."""

    spec: run_spec.RunSpec
    mesh: Any
    parts: steps.ModelParts
    state: Any
    ckpt: checkpoint_lib.Checkpointer
    reporter: reporting.Reporter
    train_step: Callable
    eval_step: Callable
    train_iter: Any
    eval_ds: Any
    first_batch: Any
    start_step: int
    resumed: bool
    num_params: int
    provenance: dict[str, Any]  # run_provenance: this start's record and those of earlier starts

    @property
    def plan(self) -> run_spec.RunPlan:
        return self.spec.plan

    def is_eval_step(self, step: int) -> bool:
        return step % self.plan.eval_every == 0 or step == self.plan.total_steps

    def evaluate(self, step: int, stop: StopPolicy) -> dict[str, float]:
        """Evaluates the state of ``step`` and records it; a stop between batches raises Preempted."""
        metrics = evaluate(self.state, self.eval_step, self.parts.rng_state, self.eval_ds, self.mesh,
                           poll=lambda: stop.check(step))
        self.reporter.log_eval(step, metrics)
        return metrics


def _load_history(reporter: reporting.Reporter, ckpt: checkpoint_lib.Checkpointer, step: int) -> None:
    history = ckpt.restore_history(step)
    if history is not None:
        reporter.load_history(history)
    else:
        logging.warning("Checkpoint %d holds no history (written by an older version): best eval and "
                        "histories restart at the resumed step.", step)


def _set_up(config: ml_collections.ConfigDict, model: run_spec.ModelSpec, workdir: str, stop: StopPolicy) -> _Run:
    """Steps 2-4 of the module docstring, up to and including the first training batch."""
    mesh = sharding.create_mesh()
    logging.info("Devices: %d x %s over %d process(es); mesh %s", jax.device_count(), jax.devices()[0].platform,
                 jax.process_count(), dict(mesh.shape))
    builder, facts = run_setup.open_dataset(config)  # 2.
    spec = run_spec.resolve(config, model, facts, device_count=jax.device_count(), process_count=jax.process_count())
    plan = spec.plan
    logging.info("Data: %s, %d train / %d eval examples, %d classes; %d steps (%d per epoch) at global batch %d%s",
                 config.dataset, plan.train_examples, plan.eval_examples, plan.num_classes, plan.total_steps,
                 plan.steps_per_epoch, plan.global_batch,
                 f" = {plan.grad_accum_steps} accumulated micro-batches of {plan.micro_batch} (eval batch "
                 f"{plan.eval_batch})" if plan.grad_accum_steps > 1 else "")
    stop.check_local(0)
    parts, state, train_step, eval_step = run_setup.make_steps(spec, mesh)  # 3.
    num_params = sum(x.size for x in jax.tree.leaves(state["params"]))
    logging.info("Model: %s (%s parameters), dw_init=%s, precision=%s", model.describe(), f"{num_params:,}",
                 model.dw_init, config.precision)

    ckpt = checkpoint_lib.Checkpointer(storage.join(workdir, "checkpoints"), keep=config.keep_checkpoints,
                                       timeout_s=config.get("checkpoint_timeout_s", 900))
    with contextlib.ExitStack() as on_error:  # a stop or an error in here closes what was opened
        on_error.callback(ckpt.close)
        start_step, state, resumed = run_setup.restore(ckpt, state, spec)  # 4.
        stop.check_local(start_step)
        config_file = storage.join(workdir, "config.json")
        record = run_provenance.run_record(spec, mesh)
        # A resume keeps the records of earlier starts made by other code (config.json is rewritten).
        earlier = run_provenance.earlier_starts(config_file, record) if resumed else []
        provenance = {"provenance": record, **({"provenance_earlier": earlier} if earlier else {})}
        if earlier:
            logging.warning("This run continues %d start(s) made by other code (%s); config.json and "
                            "summary.json keep their records.", len(earlier),
                            ", ".join(dog_provenance.code_label(start) for start in earlier))
        reporting.write_json(config_file, {**spec.config.to_dict(), **provenance})
        train_ds, eval_ds = run_setup.input_streams(spec, builder, mesh, start_step)
        reporter = reporting.Reporter(workdir, total_steps=plan.total_steps, global_batch_size=plan.global_batch,
                                      nonfinite_policy=config.nonfinite_policy)
        on_error.callback(reporter.close)
        if resumed:  # best eval and histories continue across a resume
            _load_history(reporter, ckpt, start_step)
        train_iter = train_ds.as_numpy_iterator()
        # The first batch fills the shuffle buffers: part of the set-up that a stop interrupts at once.
        first_batch = next(train_iter) if start_step < plan.total_steps else None
        on_error.pop_all()
    return _Run(spec=spec, mesh=mesh, parts=parts, state=state, ckpt=ckpt, reporter=reporter,
                train_step=train_step, eval_step=eval_step, train_iter=train_iter, eval_ds=eval_ds,
                first_batch=first_batch, start_step=start_step, resumed=resumed, num_params=int(num_params),
                provenance=provenance)


def _redo_pending_evaluation(run: _Run, stop: StopPolicy) -> None:
    """Evaluates the resumed step if its evaluation is due but not in the history (a stop
    interrupted it, or the run finished before histories were saved), and attaches the metrics to
    its checkpoint so that keeping the best checkpoint works as in an uninterrupted run."""
    step, history = run.start_step, run.reporter.history
    if not run.resumed or not run.is_eval_step(step) or (history and history[-1]["step"] == step):
        if run.resumed and step >= run.plan.total_steps:
            logging.info("Training already complete (%d steps); its final evaluation is in the history.", step)
        return
    logging.info("Evaluating step %d (its evaluation had not completed before the run stopped).", step)
    metrics = run.evaluate(step, stop)
    run.ckpt.add_metrics(step, metrics)


def _train(run: _Run, stop: StopPolicy, run_start: float, profile: profiling.ProfileWindow
           ) -> tuple[int, bool, float | None]:
    """The training loop from ``run.start_step``; returns (last step, interrupted?, compile time).

    ``run.state`` is updated in place. A stop (after a step, or Preempted between evaluation
    batches) checkpoints the last completed step and returns with interrupted = True.
    ``profile`` traces the steps of ``config.profile_steps`` (closed on any way out).
    """
    plan, reporter, ckpt = run.plan, run.reporter, run.ckpt
    step, compile_time, batch, metrics, in_flight = run.start_step, None, run.first_batch, None, []
    try:
        _redo_pending_evaluation(run, stop)
        while step < plan.total_steps:
            profile.before_step(step + 1, metrics)
            with profile.annotate(step + 1):
                batch = next(run.train_iter) if batch is None else batch
                run.state, metrics = run.train_step(run.state, sharding.global_batch(batch, run.mesh),
                                                    run.parts.rng_state)
            step, batch = step + 1, None
            profile.after_step(step, metrics)
            reporter.add(step, metrics)
            in_flight = _bound_in_flight(in_flight, metrics)
            ckpt.poll()  # a lost lease or a failed background write stops the run now, not at the next save
            if compile_time is None:
                jax.block_until_ready(metrics)
                compile_time = time.perf_counter() - run_start
                logging.info("First step done (compile + data warm-up) %.1f s after start", compile_time)
                reporter.start(step)
            if step % run.spec.config.log_every_steps == 0 or step == plan.total_steps:
                reporter.flush_train(step)
            eval_metrics = run.evaluate(step, stop) if run.is_eval_step(step) else None
            if step % plan.checkpoint_every == 0 or step == plan.total_steps or eval_metrics:
                reporter.check_finite()  # never checkpoint a NaN state
                if ckpt.save(step, run.state, run.spec.model_info(step), metrics=eval_metrics,
                             history=reporter.history_snapshot()):
                    logging.info("Checkpoint of step %d: being written in the background", step)
            if step < plan.total_steps and stop.after_step(step):
                raise Preempted(f"stop requested at step {step}")
    except Preempted:
        if step > run.start_step:  # else the checkpoint this run resumed from (or none) is the latest
            reporter.check_finite()
            ckpt.save(step, run.state, run.spec.model_info(step), history=reporter.history_snapshot())
        logging.info("Stop requested: checkpointed step %d in %s; rerun to resume.", step, ckpt.directory)
        return step, True, compile_time
    finally:
        profile.close()
    return step, False, compile_time


def _run(run: _Run, workdir: str, stop: StopPolicy, run_start: float) -> tuple[int, dict[str, Any]]:
    """Step 5 of the module docstring: trains, waits for the last checkpoint, writes ``summary.json``."""
    storage_failed = False
    try:
        step, interrupted, compile_time = _train(run, stop, run_start,
                                                 profiling.ProfileWindow.from_config(run.spec.config, workdir))
        run.ckpt.wait()  # an asynchronous write in flight is completed before returning (and exiting)
        summary = _summary(run, step, interrupted, compile_time, time.perf_counter() - run_start)
        reporting.write_json(storage.join(workdir, "summary.json"), summary)
    except checkpoint_lib.StorageFailure:
        storage_failed = True
        raise
    except Exception as error:  # a full disk, a vanished workdir, a dead storage server, ...
        if not failure_report.is_storage_error(error):
            raise
        storage_failed = True
        path = getattr(error, "filename", None) or workdir
        raise checkpoint_lib.StorageFailure(
            f"writing to {path} failed: {failure_report.short_reason(error)}; {run.ckpt.last_complete()}") from error
    finally:
        if not storage_failed:  # else closing would wait for writes that cannot finish
            run.reporter.close()
        run.ckpt.close()
    return step, summary


def _summary(run: _Run, step: int, interrupted: bool, compile_time: float | None, wall_time: float
             ) -> dict[str, Any]:
    """``summary.json``: the run's outcome, its whole (resumed) history and its settings."""
    reporter = run.reporter
    cpu_now = time.process_time()
    return {
        "final_step": step, "total_steps": run.plan.total_steps, "start_step": run.start_step,
        "interrupted": interrupted,
        "final_eval": _without_step(reporter.history[-1]) if reporter.history else {},
        "best_eval": reporting.best_eval(reporter.history),  # over the whole run, resumed parts included
        "best_checkpoint_step": run.ckpt.best_step(),
        "eval_history": reporter.history, "train_history": reporter.train_history,
        "skipped_steps": reporter.skipped_steps, "nonfinite_policy": run.spec.config.nonfinite_policy,
        "wall_time_s": wall_time, "compile_time_s": compile_time,
        # CPU seconds of this train.py process, all threads, start-up and compiles included: what a
        # sweep costs on a shared machine, where wall time measures the other jobs too. The total adds
        # a resumed run's earlier starts (None if its checkpoint predates that record).
        "cpu_time_s": cpu_now, "cpu_time_total_s": reporter.cpu_time_total(cpu_now), "num_params": run.num_params,
        "num_classes": run.plan.num_classes, "devices": jax.device_count(), "processes": jax.process_count(),
        "config": run.spec.config.to_dict(), **run.provenance,
    }


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       stop_requested: Callable[[int], bool] | None = None, takeover_lease: bool = False
                       ) -> dict[str, Any]:
    """Trains ``config`` in ``workdir`` (resuming if it holds checkpoints); returns the summary.

    Args:
      config: a validated-on-entry training config (``configs/*.py``).
      workdir: run directory; rerunning with the same directory resumes.
      stop_requested: optional ``f(step) -> bool`` polled after every step and before every
        evaluation batch (with several processes: every ``log_every_steps`` steps and every
        evaluation batch, agreed over all of them); when it returns True the run checkpoints
        the last completed step and returns early with ``summary["interrupted"] = True`` (a
        later call resumes from there and redoes an interrupted evaluation). A
        :class:`~dog_jax.train.preemption.StopOnSignal` also interrupts the set-up (dataset
        preparation, restore, the first batch) at once.
      takeover_lease: take the workdir's lease even if its holder looks alive (``train.py
        --takeover_lease``, once that run is known to be dead; :mod:`dog_jax.train.lease`).

    Raises:
      Preempted: a stop was requested before the first training step of this call (nothing
        new to checkpoint; ``train.py`` exits with code 75).
      ConfigError, DatasetError: bad config / dataset (one-line messages).
      LeaseHeld: another run holds the workdir's lease (a CheckpointError; ``train.py`` exits 73).
      CheckpointError: workdir not writable; its checkpoints are of another model or all damaged.
      NonFiniteError: NaN/inf loss or gradient with ``config.nonfinite_policy == "stop"``.
    """
    run_start = time.perf_counter()
    stop = StopPolicy(stop_requested, config.log_every_steps)
    with contextlib.ExitStack() as lease:  # released at the end, on a stop and on errors
        with stop.before_first_step(0):  # 1.-4. (module docstring); a stop in here ends the run at once
            model = run_spec.check(config, device_count=jax.device_count(), process_count=jax.process_count())
            storage.configure()  # before any client touches a gs:// workdir or data dir (idempotent)
            workdir = storage.absolute(workdir)
            checkpoint_lib.check_writable(workdir)  # local or gs://; fails now, not at the first checkpoint.
            # One writer per workdir: before anything is written (LeaseHeld if another run holds it).
            held = lease.enter_context(lease_lib.acquire(workdir, timeout_s=config.get("lease_timeout_s", 600),
                                                         heartbeat_s=config.get("lease_heartbeat_s", 60),
                                                         takeover=takeover_lease))
            logging.info("Run %s: config.json, checkpoints/, tensorboard/ and summary.json go there", workdir)
            run = _set_up(config, model, workdir, stop)
            run.ckpt.guard = held  # no checkpoint write once another job holds the lease (or it is gone)
        step, summary = _run(run, workdir, stop, run_start)  # 5.
    logging.info("Done: step %d, eval top1 %.4f (best %.4f at step %s), wall %s", step,
                 summary["final_eval"].get("eval_top1", float("nan")),
                 summary["best_eval"].get("eval_top1", float("nan")), summary["best_eval"].get("step"),
                 reporting.format_duration(summary["wall_time_s"]))
    return summary
