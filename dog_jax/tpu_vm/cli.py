"""``python -m dog_jax.tpu_vm SUBCOMMAND --name=TPU --zone=ZONE --project=PROJECT [--dry-run] ...``

Subcommands (docs/tpu.md walks through them):

* ``create --slice=v5e-16 [--spot] [--version=IMAGE]``: the slice (with ``--spot``: a queued resource
  for a Spot TPU VM);
* ``setup``: the commit you are on (refused when the working tree has uncommitted changes) onto every
  worker, then ``scripts/tpu_vm_setup.sh`` there;
* ``run --slice=v5e-16 -- TRAIN.PY FLAGS``: the same ``train.py`` command on every worker (with
  ``--multiprocess`` on a multi-host slice), detached, one log per worker copied to
  ``<workdir>/logs/worker-<i>.log``; rerun the same command to resume after a preemption;
* ``logs [--worker=I] [--follow] [--workdir=W]``: one worker's log, live or from the workdir;
* ``stop``: SIGTERM to every worker's trainer (it checkpoints and exits 75);
* ``delete [--spot]``: the TPU VM (or the queued resource).

``--dry-run`` prints the commands, one per line, shell-quoted, and runs nothing (``--zone`` /
``--project`` may then be left out: they print as ZONE / PROJECT). A wrong input is one ``error:``
line on stderr saying what to pass, exit code 2 (also when a command it runs fails: one line naming it).
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
import sys
import tempfile

from dog_jax.tpu_vm import commands, slices


class CliError(Exception):
    """A wrong input or a missing precondition: one line saying what to do."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line instead of argparse's usage block
        raise CliError(f"{message} (see python -m dog_jax.tpu_vm {self.prog.split()[-1]} --help)")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m dog_jax.tpu_vm", description=__doc__.split("\n\n")[1] if __doc__ else None,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="subcommand", required=True, parser_class=_Parser)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--name", required=True, help="the TPU's name (and the queued resource's, with --spot)")
    common.add_argument("--zone", help="the TPU's zone, e.g. us-west4-a")
    common.add_argument("--project", help="the Google Cloud project")
    common.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    helps = {"create": "create the slice", "setup": "install the current commit on every worker",
             "run": "start train.py on every worker", "logs": "show one worker's log",
             "stop": "SIGTERM to every worker's trainer", "delete": "delete the slice"}
    subs = {name: sub.add_parser(name, parents=[common], help=text) for name, text in helps.items()}
    for name in ("create", "run"):
        subs[name].add_argument("--slice", required=True, help="accelerator type: v5e-8, v5e-16, v6e-8, v4-8, ...")
    for name in ("create", "delete"):
        subs[name].add_argument("--spot", action="store_true", help="a queued resource for a Spot TPU VM")
    subs["create"].add_argument("--version", help="TPU VM image (default: Google's image for the generation)")
    subs["run"].add_argument("--sync-seconds", type=float, default=60.0, help="how often logs are copied")
    subs["logs"].add_argument("--worker", type=int, default=0)
    subs["logs"].add_argument("--lines", type=int, default=100)
    subs["logs"].add_argument("--follow", action="store_true", help="keep printing new lines")
    subs["logs"].add_argument("--workdir", help="read <workdir>/logs/worker-<i>.log instead of the live log")
    return parser


def _git(*args: str) -> str:
    result = subprocess.run(["git", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise CliError(f"not in a git checkout of dog_jax (git {args[0]}: {result.stderr.strip()[:120]}): "
                       "run this from your clone")
    return result.stdout


def _commit(require_clean: bool) -> str:
    commit = _git("rev-parse", "HEAD").strip()
    changes = _git("status", "--porcelain").splitlines()
    if changes and require_clean:
        raise CliError(f"the working tree has uncommitted changes ({len(changes)}, e.g. {changes[0][3:]!r}): commit "
                       "or stash them, so that the slice runs exactly the commit you are on")
    if changes:
        print(f"note: {len(changes)} uncommitted changes are not on the slice; it runs {commit[:12]}", file=sys.stderr)
    return commit


def _workdir(train_args: list[str], slice_: slices.Slice) -> str:
    example = "-- --config=configs/convnext.py:dw_init=dog --workdir=gs://BUCKET/runs/NAME"
    if not any(a.startswith("--config=") for a in train_args):
        raise CliError(f"run needs train.py's flags after --, with --config=...: e.g. {example}")
    if any(a.startswith("--aot_topology") for a in train_args):
        raise CliError("--aot_topology only compiles: check the run on your machine with train.py first, "
                       "then run without it")
    workdirs = [a.split("=", 1)[1] for a in train_args if a.startswith("--workdir=")]
    if not workdirs or not workdirs[-1]:
        raise CliError(f"run needs --workdir=... among train.py's flags (written as --workdir=PATH): e.g. {example}")
    if slice_.multi_host and not workdirs[-1].startswith("gs://"):
        raise CliError(f"--workdir={workdirs[-1]} would be a different directory on each of the {slice_.workers} "
                       f"workers of {slice_.name}: pass a bucket, --workdir=gs://BUCKET/runs/NAME")
    return workdirs[-1]


def plan(args: argparse.Namespace, train_args: list[str]) -> tuple[list[list[str]], bool]:
    """The commands of a parsed command line, and whether they run in parallel."""
    slice_ = slices.parse(args.slice) if hasattr(args, "slice") else None
    if train_args and args.subcommand != "run":
        raise CliError(f"{args.subcommand} takes no arguments after --; only run does (train.py's flags)")
    if not args.dry_run:
        for flag in ("zone", "project"):
            if not getattr(args, flag):
                raise CliError(f"--{flag} is required (or --dry-run to only print the commands)")
    target = commands.Target(args.name, args.zone or "ZONE", args.project or "PROJECT",
                             spot=getattr(args, "spot", False))
    if args.subcommand == "create":
        return commands.create(target, slice_, args.version), False
    if args.subcommand == "setup":
        commit = _commit(require_clean=True)
        bundle = f"{tempfile.gettempdir()}/{commands.bundle_name(commit)}"
        return commands.setup(target, commit, bundle), False
    if args.subcommand == "run":
        workdir = _workdir(train_args, slice_)
        return commands.run(target, slice_, _commit(require_clean=False), train_args, workdir,
                            args.sync_seconds), True
    if args.subcommand == "logs":
        return commands.logs(target, args.worker, args.lines, args.follow, args.workdir), False
    return (commands.stop(target) if args.subcommand == "stop" else commands.delete(target)), False


def _execute(lines: list[list[str]], parallel: bool) -> int:
    if shutil.which("gcloud") is None:  # local: a program on PATH
        raise CliError("gcloud not found on PATH: install the Google Cloud CLI "
                       "(https://cloud.google.com/sdk/docs/install) and run `gcloud auth login`")
    if parallel:
        processes = [subprocess.Popen(line) for line in lines]
        failed = [i for i, p in enumerate(processes) if p.wait() != 0]
        if failed:
            raise CliError(f"the command for worker(s) {', '.join(map(str, failed))} failed (its output is above)")
        return 0
    for line in lines:
        code = subprocess.run(line).returncode
        if code != 0:
            raise CliError(f"`{shlex.join(line)[:200]}` failed with exit code {code} (its output is above)")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    ours, train_args = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    try:
        args = _parser().parse_args(ours)
        lines, parallel = plan(args, train_args)
        if args.dry_run:
            print("\n".join(shlex.join(line) for line in lines))
            return 0
        return _execute(lines, parallel)
    except (CliError, slices.SliceError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
