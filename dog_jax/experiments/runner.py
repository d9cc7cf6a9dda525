"""Runs a sweep's training runs one after another, each as its own ``python train.py`` process.

Why a subprocess per run: a crash (or an out-of-memory kill) of one run does not end the sweep,
every run starts with fresh memory and a fresh XLA cache, and each run is exactly the command a
user would type (printed by ``--dry-run``). Each run's full output is appended to
``<workdir>/train.log`` (and echoed unless quiet); the console gets one line per run. What a run
achieved is read from its ``summary.json`` only, never from its log lines. Workdirs may be
``gs://`` URLs (:mod:`dog_jax.storage`): a bucket's objects cannot be appended to, so there the log
is kept in memory after its earlier content and uploaded whole, every half minute and at the end.
"""

import io
import os
import subprocess
import sys
import time
from pathlib import Path  # local: the repository checkout (train.py)
from typing import Callable, Sequence, TextIO

from dog_jax.experiments.sweep import Run, find_repo_root, read_summary, run_status
from dog_jax.storage import is_url, run_path, write_text

#: ``train_fn(run, log) -> exit code``: trains one run, writing its output to ``log``.
TrainFn = Callable[[Run, TextIO], int]
#: How often (at most) a run's output lines make the runner look for its summary.json in a bucket.
BUCKET_POLL_S = 5.0

def train_command(run: Run, train_script: str | os.PathLike) -> list[str]:
    """The ``python train.py ...`` command of a run."""
    return [sys.executable, str(train_script), *run.flags()]


def locate_train_script(sweep_path: str | os.PathLike) -> Path:  # local: the checkout
    """``train.py`` of the repository holding the sweep file, else of the current directory."""
    for start in (Path(sweep_path).resolve().parent, Path.cwd()):  # local: the repository checkout
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
    its checkpoints are committed), the process gets this long to exit before it is terminated. (In a
    bucket, summary.json is looked for at most every :data:`BUCKET_POLL_S` seconds, not per line.)
    A safety net: train.py used to take up to ~1 min to exit after finishing (tf.data's
    autotuning thread held up the iterator's destruction; autotuning is off since), a minute
    lost per run of a sweep.
    """

    def train(run: Run, log: TextIO) -> int:
        summary_path = run_path(run.workdir) / "summary.json"
        poll_s, polled = (BUCKET_POLL_S if is_url(run.workdir) else 0.0), float("-inf")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        command = train_command(run, train_script) + (["--verbose"] if verbose else [])
        process = subprocess.Popen(command, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True, env=env,
                                   cwd=str(Path(train_script).resolve().parent))  # local: the checkout
        try:
            finished = False
            for line in process.stdout:
                log.write(line)
                log.flush()
                if echo is not None:
                    echo(line.rstrip("\n"))
                if time.monotonic() - polled < poll_s:
                    continue
                polled = time.monotonic()
                if summary_path.exists() and run_status(run.workdir) == "done":
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
        run_path(run.workdir).mkdir(parents=True, exist_ok=True)
        run_start = time.monotonic()
        with _open_log(run_path(run.workdir) / "train.log") as log:
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
            for line in _tail(run_path(run.workdir) / "train.log", 6):
                print(f"    {line}", file=out)
            result["failed"].append(run)
    print(f"Sweep: {len(result['done'])} trained, {len(result['skipped'])} already finished, "
          f"{len(result['failed'])} failed, in {format_duration(time.monotonic() - start)}.", file=out, flush=True)
    return result


def _tail(path: str | os.PathLike, count: int) -> list[str]:
    try:
        data = run_path(path).read_bytes()
    except OSError:
        return []
    return [line.rstrip() for line in io.TextIOWrapper(io.BytesIO(data), errors="replace").readlines()[-count:]]


def _open_log(path: os.PathLike) -> TextIO:
    """``path`` (a run's train.log) opened for appending: the file itself when local, else a
    :class:`_UploadedLog`."""
    return _UploadedLog(path) if is_url(path) else run_path(path).open("a")


class _UploadedLog(io.StringIO):
    """A log in a bucket, whose objects cannot be appended to: the earlier content and what is
    written are kept in memory and uploaded whole on the first flush, then on a flush at least
    ``every_s`` seconds after the last upload, and on close."""

    def __init__(self, path: os.PathLike, every_s: float = 30.0):
        try:
            earlier = run_path(path).read_bytes().decode(errors="replace")
        except FileNotFoundError:
            earlier = ""
        super().__init__(earlier)
        self.seek(0, io.SEEK_END)
        self.path, self.every_s, self._uploaded = path, every_s, float("-inf")

    def upload(self) -> None:
        write_text(self.path, self.getvalue())
        self._uploaded = time.monotonic()

    def flush(self) -> None:
        super().flush()
        if time.monotonic() - self._uploaded >= self.every_s:
            self.upload()

    def close(self) -> None:
        if not self.closed:
            self.upload()
        super().close()
