"""Where a short ``train.py`` process spends its time outside training: start-up (imports, config,
dataset) and the exit after its last line, for this checkout and, with ``--against DIR``, another
checkout of the repository (e.g. ``git worktree add /tmp/old <commit>``), runs alternating.

Each run is a fresh ``python train.py`` on the tiny demo dataset (8 steps, prepared first), with a
persistent compilation cache that the first (warm-up) run fills, so compiles do not dominate::

  .venv/bin/python benchmarks/train_process.py --repeats 3 --against /tmp/old

Phases, from the run's own log lines: ``start -> data`` (process start to the "Data:" line),
``done -> exit`` (the "Done:" line to the process's end) and the total (which also holds the 8 steps
and the evaluation: compare it only between checkouts with the same tiny dataset).
"""

import argparse
import datetime
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _log_time(line: str) -> float:
    """Seconds since the epoch of an absl log line (``I1207 15:57:59.412166 ...``, UTC)."""
    stamp = datetime.datetime.strptime(f"{datetime.date.today().year}{line.split()[0][1:]} {line.split()[1]}",
                                       "%Y%m%d %H:%M:%S.%f")
    return stamp.replace(tzinfo=datetime.timezone.utc).timestamp()


def run_once(checkout: Path, config: Path, workdir: Path, env: dict) -> tuple[float, float, float]:
    """(total, start -> data, done -> exit) seconds of one train.py process."""
    start = datetime.datetime.now(datetime.timezone.utc).timestamp()
    done = subprocess.run([sys.executable, "train.py", f"--config={config}", f"--workdir={workdir}"], cwd=checkout,
                          env=env, capture_output=True, text=True, check=True)
    end = datetime.datetime.now(datetime.timezone.utc).timestamp()
    data = next(_log_time(line) for line in done.stderr.splitlines() if "] Data:" in line)
    last = next(_log_time(line) for line in done.stderr.splitlines() if "] Done:" in line)
    return end - start, data - start, end - last


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--against", type=Path, help="another checkout's root, timed alternately with this one")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="train_process_"))
    env = dict(os.environ, JAX_PLATFORMS="cpu", TFDS_DATA_DIR=str(scratch / "tfds"),
               JAX_COMPILATION_CACHE_DIR=str(scratch / "jax_cache"), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
    config = scratch / "config.py"
    config.write_text(f"import sys\nsys.path.insert(0, {str(ROOT)!r})\n"
                      "from tests.support.configs import FAULT_RUN, tiny_config\n\n"
                      f"def get_config():\n    return tiny_config({str(scratch / 'tfds')!r}, **FAULT_RUN)\n")
    checkouts = {"this checkout": ROOT, **({f"--against {args.against}": args.against} if args.against else {})}
    times: dict[str, list[tuple[float, float, float]]] = {name: [] for name in checkouts}
    for round_ in range(args.repeats + 1):  # round 0 prepares the data and fills the compilation cache
        for index, (name, checkout) in enumerate(checkouts.items()):
            result = run_once(checkout, config, scratch / f"run{round_}-{index}", env)
            if round_:
                times[name].append(result)
    print(f"median of {args.repeats} runs (seconds): total | start -> data | done -> exit")
    for name, rows in times.items():
        print(f"  {name}: " + " | ".join(f"{statistics.median(column):.2f}" for column in zip(*rows)))


if __name__ == "__main__":
    main()
