"""``python -m dog_jax.experiments SWEEP``: run a sweep's configs × seeds, then collect the results.

Examples::

  python -m dog_jax.experiments configs/sweeps/demo_repro.py --dry-run          # the plan and its commands
  python -m dog_jax.experiments configs/sweeps/demo_repro.py                    # train what is missing, collect
  python -m dog_jax.experiments configs/sweeps/demo_repro.py --shard 1/3        # machine 2 of 3
  python -m dog_jax.experiments configs/sweeps/demo_repro.py --collect          # only aggregate

Rerunning the same command skips finished runs and resumes interrupted ones. Outputs go to
``--workdir-root`` (default ``workdirs/sweeps/<sweep name>``): one workdir per run
(``<label>/seed_<seed>``), ``results.csv``, ``results.md``, ``curves/*.png`` and, with
``--analysis``, ``analysis.md`` and ``analysis/``; ``--publish DIR`` copies them (no checkpoints)
with a ``commands.md`` into DIR. The workdir root may be a ``gs://`` URL. See docs/experiments.md.
Wrong arguments or sweep files are reported in one line on stderr (exit code 2); failed runs
make the exit code 1 after the sweep has finished the others.
"""

import argparse
import importlib.util
import shlex
import sys
from pathlib import Path  # local: sweep and config files

from dog_jax import console, storage
from dog_jax._paths import resolved
from dog_jax.experiments.sweep import Run, SweepError, load_sweep, parse_shard, plan_runs, run_status, select_runs


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m dog_jax.experiments",
        description="Run a sweep (configs x seeds, one train.py process per run, resumable) and collect "
                    "results.csv / results.md / learning curves.")
    p.add_argument("sweep", help="sweep file defining SWEEP, e.g. configs/sweeps/demo_repro.py")
    p.add_argument("--workdir-root", default=None, metavar="DIR",
                   help="where run directories and results go, a directory or a gs:// URL (default "
                        "workdirs/sweeps/<sweep name>)")
    p.add_argument("--dry-run", action="store_true", help="print each run's status and command; train nothing")
    p.add_argument("--only", metavar="REGEX", help="only runs whose '<label>/seed_<seed>' matches (re.search)")
    p.add_argument("--shard", metavar="i/n", help="run only shard i of n (round-robin), e.g. 0/4 on machine 1 of 4")
    p.add_argument("--collect", action="store_true", help="only aggregate the existing runs (no training)")
    p.add_argument("--analysis", action=argparse.BooleanOptionalAction, default=None,
                   help="kernel analysis of the finished checkpoints after collecting (default: the sweep's "
                        "'analysis' setting)")
    p.add_argument("--no-curves", action="store_true", help="skip the learning-curve PNGs")
    p.add_argument("--publish", default=None, metavar="DIR",
                   help="after collecting, copy the results (tables, curves, analysis; no checkpoints) and a "
                        "commands.md into DIR, e.g. docs/results/demo_repro")
    p.add_argument("--allow-dirty", action="store_true",
                   help="publish even from a working tree with uncommitted changes, or runs made by one "
                        "(the results then cannot name the code that made them)")
    p.add_argument("--train-script", default=None, metavar="PATH",
                   help="train.py to run (default: the repository's)")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="do not echo the trainer's output (it is always in each run's train.log)")
    p.add_argument("--verbose", action="store_true", help=console.VERBOSE_HELP + "; passed on to train.py")
    return p


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def _publish_refusal(args: argparse.Namespace, rows: list) -> str | None:
    """Why ``--publish`` would publish results that cannot name the code that made them (uncommitted
    changes in the tree or, with ``rows``, in the runs); None when it may publish or is not asked to."""
    if args.publish is None or args.allow_dirty:
        return None
    from dog_jax.experiments.publish import unpublishable

    problem = unpublishable(rows)
    return f"--publish: {problem}; commit first, or pass --allow-dirty." if problem else None


def check_configs(runs: list[Run]) -> None:
    """Builds every distinct config with its overrides and validates it, so that a typo stops the
    sweep before hours of training instead of at its 17th run. Raises SweepError."""
    from dog_jax.train.config import ConfigError
    from dog_jax.train.run_spec import check

    seen = set()
    for run in runs:
        key = (run.config_string, tuple(sorted((k, str(v)) for k, v in run.overrides.items() if k != "seed")))
        if key in seen:
            continue
        seen.add(key)
        spec = importlib.util.spec_from_file_location(f"dog_jax_config_{Path(run.config_path).stem}",  # local: config
                                                      run.config_path)
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except Exception as error:  # noqa: BLE001 - any error in the user's config file, as one line.
            raise SweepError(f"{run.config_path} does not load: {type(error).__name__}: {error}") from None
        try:
            config = module.get_config(run.config_arg) if run.config_arg else module.get_config()
            for field, value in run.overrides.items():
                *parents, leaf = field.split(".")
                node = config
                for part in parents:
                    node = node[part]
                if leaf not in node:
                    raise ConfigError(f"override {field!r} is not a config field")
                node[leaf] = value
            check(config, device_count=1)
        except (ConfigError, KeyError, TypeError, ValueError) as error:
            raise SweepError(f"{run.label}: {error}") from None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console.setup(args.verbose)
    try:
        storage.configure()  # before any storage client: a gs:// --workdir-root, emulator
        sweep = load_sweep(args.sweep)
        shard = parse_shard(args.shard) if args.shard else None
        root = args.workdir_root or f"workdirs/sweeps/{Path(args.sweep).stem}"  # local: the sweep file's name
        all_runs = plan_runs(sweep, args.sweep, root)
        runs = select_runs(all_runs, only=args.only, shard=shard)
    except (SweepError, storage.StorageConfigError) as error:
        return _fail(str(error))
    if not runs:
        return _fail(f"no runs selected (of {len(all_runs)}); check --only / --shard.")
    print(f"Sweep {args.sweep}: {len(runs)} of {len(all_runs)} runs selected, root {resolved(root)}", flush=True)
    refusal = _publish_refusal(args, [])  # the tree now: before hours of training (the runs are checked after)
    if refusal:
        return _fail(refusal)
    train_script = None
    if not args.collect or args.publish is not None:  # train.py runs the runs; publish names it in commands.md
        from dog_jax.experiments.runner import locate_train_script

        try:
            train_script = args.train_script or locate_train_script(args.sweep)
        except FileNotFoundError as error:
            return _fail(str(error))

    failed = False
    if not args.collect:
        try:
            check_configs(runs)
        except SweepError as error:
            return _fail(str(error))
        from dog_jax.experiments.runner import run_sweep, subprocess_train, train_command

        if args.dry_run:
            for run in runs:
                print(f"[{run_status(run.workdir):7s}] {run.key}\n    " + shlex.join(train_command(run, train_script)))
            return 0
        echo = None if args.quiet else (lambda line: print(f"    {line}", flush=True))
        try:
            result = run_sweep(runs, subprocess_train(train_script, echo, verbose=args.verbose))
        except KeyboardInterrupt:
            print("Interrupted; rerun the same command to resume (finished runs are skipped).", file=sys.stderr)
            return 130
        failed = bool(result["failed"])
    elif args.dry_run:
        return _fail("--dry-run and --collect exclude each other.")

    from dog_jax.experiments.collect import collect

    # Collect over the whole sweep (not just this shard): the table shows every run's status.
    collected = collect(all_runs, sweep, root, title=f"Results of {Path(args.sweep).name}",  # local: sweep file
                        curves=not args.no_curves)
    refusal = _publish_refusal(args, collected["rows"])  # before the analysis: minutes not spent in vain
    if refusal:
        return _fail(refusal)
    # A shard's machine skips the sweep's default analysis: the final --collect does it once for all.
    if args.analysis if args.analysis is not None else (sweep.analysis and shard is None):
        from dog_jax.experiments.kernel_report import analyse_sweep

        analyse_sweep(all_runs, root, during=sweep.analysis_during)
    if args.publish is not None:
        from dog_jax.experiments.publish import publish

        publish(all_runs, root, args.publish, train_script=train_script, during=sweep.analysis_during,
                rows=collected["rows"],
                sweep_command=shlex.join(["python", "-m", "dog_jax.experiments", str(args.sweep),
                                          "--workdir-root", str(root)]),
                published_with=shlex.join(["python", "-m", "dog_jax.experiments", *(argv or sys.argv[1:])]))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
