"""Runs a sweep's training runs one after another, each as its own ``python train.py`` process.

Why a subprocess per run: a crash (or an out-of-memory kill) of one run does not end the sweep,
every run starts with fresh memory and a fresh XLA cache, and each run is exactly the command a
user would type (printed by ``--dry-run``). Each run's full output is appended to
``<workdir>/train.log`` (and echoed unless quiet); the console gets one line per run. What a run
achieved is read from its ``summary.json`` only, never from its log lines.
"""

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Sequence, TextIO

from dog_jax.experiments.sweep import Run, find_repo_root, read_summary, run_status

#: ``train_fn(run, log) -> exit code``: trains one run, writing its output to ``log``.
TrainFn = Callable[[Run, TextIO], int]

def train_command(run: Run, train_script: str | os.PathLike) -> list[str]:
    """The ``python train.py ...`` command of a run."""
    return [sys.executable, str(train_script), *run.flags()]


def locate_train_script(sweep_path: str | os.PathLike) -> Path:
    """``train.py`` of the repository holding the sweep file, else of the current directory."""
    for start in (Path(sweep_path).resolve().parent, Path.cwd()):
        root = find_repo_root(start)
        if root is not None:
            return root / "train.py"
    raise FileNotFoundError("train.py not found above the sweep file or the current directory; "
                            "run from the dog_jax repository or pass --train-script.")


def subprocess_train(train_script: str | os.PathLike, echo: Callable[[str], None] | None = None, *,
                     exit_grace_s: float = 20.0, verbose: bool = False) -> TrainFn:
    """A :data:`TrainFn` that runs ``python train.py`` and streams its output into the log.

    ``echo``: called with every output line (without its newline), e.g. to show progress.
    ``verbose``: pass ``--verbose`` to train.py (other libraries' INFO logs too; see dog_jax.console).
    ``exit_grace_s``: once the run's ``summary.json`` says it finished (the trainer writes it after
    its checkpoints are committed), the process gets this long to exit before it is terminated.
    A safety net: train.py used to take up to ~1 min to exit after finishing (tf.data's
    autotuning thread held up the iterator's destruction; autotuning is off since), a minute
    lost per run of a sweep.
    """

    def train(run: Run, log: TextIO) -> int:
        summary_path = os.path.join(run.workdir, "summary.json")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        command = train_command(run, train_script) + (["--verbose"] if verbose else [])
        process = subprocess.Popen(command, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True, env=env,
                                   cwd=str(Path(train_script).resolve().parent))
        try:
            finished = False
            for line in process.stdout:
                log.write(line)
                log.flush()
                if echo is not None:
                    echo(line.rstrip("\n"))
                if os.path.exists(summary_path) and run_status(run.workdir) == "done":
                    finished = True
                    break
            if not finished:
                return process.wait()
            try:
                rest, _ = process.communicate(timeout=exit_grace_s)
                log.write(rest or "")
                return process.returncode
            except subprocess.TimeoutExpired:
                process.terminate()
                rest, _ = process.communicate()
                log.write((rest or "") + f"(train.py had not exited {exit_grace_s:.0f} s after writing its "
                          "final summary.json; terminated it)\n")
                return 0
        except BaseException:
            process.terminate()  # Ctrl-C: the trainer's last checkpoint stays; a rerun resumes.
            process.wait()
            raise

    return train


def run_sweep(runs: Sequence[Run], train_fn: TrainFn, *, out: TextIO | None = None) -> dict[str, list[Run]]:
    """Runs every not-yet-finished run in order; returns {"done", "skipped", "failed": [runs]}.

    Finished runs (``summary.json`` of a complete run) are skipped; interrupted ones are rerun in
    the same workdir, where the trainer resumes from the latest checkpoint. A failing run is
    reported and the sweep continues.
    """
    # Imported here: the trainer's package imports TensorFlow, which the CLI's console set-up precedes.
    from dog_jax.train.reporting import format_duration

    out = out or sys.stdout  # looked up per call, not at import (tests and notebooks swap sys.stdout).
    result: dict[str, list[Run]] = {"done": [], "skipped": [], "failed": []}
    width = len(str(len(runs)))
    start = time.monotonic()
    for position, run in enumerate(runs, 1):
        tag = f"[{position:{width}d}/{len(runs)}] {run.key}"
        status = run_status(run.workdir)
        if status == "done":
            print(f"{tag}: finished earlier, skipped", file=out, flush=True)
            result["skipped"].append(run)
            continue
        print(f"{tag}: {'resuming' if status == 'partial' else 'starting'} (log: {run.workdir}/train.log)",
              file=out, flush=True)
        os.makedirs(run.workdir, exist_ok=True)
        run_start = time.monotonic()
        with open(os.path.join(run.workdir, "train.log"), "a") as log:
            log.write(f"==== {time.strftime('%Y-%m-%d %H:%M:%S')} {run.config_string} seed {run.seed}\n")
            log.flush()
            code = train_fn(run, log)
        elapsed = format_duration(time.monotonic() - run_start)
        summary = read_summary(run.workdir)
        if code == 0 and run_status(run.workdir) == "done":
            top1 = summary.get("final_eval", {}).get("eval_top1") if summary else None
            score = f", eval top1 {top1:.4f}" if isinstance(top1, (int, float)) else ""
            print(f"{tag}: done in {elapsed}{score}", file=out, flush=True)
            result["done"].append(run)
        else:
            reason = f"exit code {code}" if code != 0 else "no finished summary.json"
            print(f"{tag}: FAILED after {elapsed} ({reason}); last lines of {run.workdir}/train.log:",
                  file=out, flush=True)
            for line in _tail(os.path.join(run.workdir, "train.log"), 6):
                print(f"    {line}", file=out)
            result["failed"].append(run)
    print(f"Sweep: {len(result['done'])} trained, {len(result['skipped'])} already finished, "
          f"{len(result['failed'])} failed, in {format_duration(time.monotonic() - start)}.", file=out, flush=True)
    return result


def _tail(path: str, count: int) -> list[str]:
    try:
        with open(path, errors="replace") as f:
            return [line.rstrip() for line in f.readlines()[-count:]]
    except OSError:
        return []
