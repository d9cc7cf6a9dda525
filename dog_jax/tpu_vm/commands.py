"""The command lines of ``python -m dog_jax.tpu_vm``, as argument lists (``shlex.join`` prints them).

Pure functions of their inputs: no gcloud, git or network is touched here, so ``--dry-run`` and the
tests see exactly what a real run executes. gcloud syntax: the gcloud reference pages for
``compute tpus tpu-vm create|ssh|scp|delete`` and ``compute tpus queued-resources create|delete``
(cloud.google.com/sdk/gcloud/reference/compute/tpus/..., read 2026-12-06).

On the workers, the checkout lives in ``~/dog_jax`` (``REPO_DIR``, relative to the login directory
where ``gcloud ... ssh --command`` starts) and its venv in ``~/dog_jax/.venv``.
"""

from __future__ import annotations

import dataclasses
import shlex

from dog_jax.tpu_vm.slices import Slice
from dog_jax.tpu_vm.worker import RUN_DIR, LOG_NAME, remote_log

REPO_DIR = "dog_jax"
VENV_PYTHON = ".venv/bin/python"


@dataclasses.dataclass(frozen=True)
class Target:
    """Which TPU: its name (the TPU VM node, and the queued resource's name with ``spot``), zone, project."""

    name: str
    zone: str
    project: str
    spot: bool = False

    def where(self) -> list[str]:
        return [f"--zone={self.zone}", f"--project={self.project}"]


def _tpu_vm(target: Target, verb: str, *rest: str) -> list[str]:
    return ["gcloud", "compute", "tpus", "tpu-vm", verb, target.name, *target.where(), *rest]


def ssh(target: Target, worker: int | str, command: str) -> list[str]:
    """``command`` (one shell line) on worker ``worker`` (an index or ``all``)."""
    return _tpu_vm(target, "ssh", f"--worker={worker}", f"--command={command}")


def create(target: Target, slice_: Slice, runtime_version: str | None = None) -> list[list[str]]:
    """The slice: a TPU VM (on demand), or with ``spot`` a queued resource for a Spot TPU VM of the same name."""
    version = runtime_version or slice_.runtime_version
    if target.spot:
        return [["gcloud", "compute", "tpus", "queued-resources", "create", target.name, f"--node-id={target.name}",
                 *target.where(), f"--accelerator-type={slice_.accelerator_type}", f"--runtime-version={version}",
                 "--spot"]]
    return [_tpu_vm(target, "create", f"--accelerator-type={slice_.accelerator_type}", f"--version={version}")]


def bundle_name(commit: str) -> str:
    return f"dog_jax-{commit[:12]}.bundle"


def setup(target: Target, commit: str, bundle_path: str) -> list[list[str]]:
    """The commit, as a git bundle of HEAD copied to every worker, checked out there, and the setup script.

    A bundle needs no pushed branch and no credentials on the workers, and carries exactly the
    commit the user is on. A rerun updates the existing checkout (its .venv is untracked: kept).
    """
    bundle = bundle_name(commit)
    remote = (f"set -e; B=$HOME/{bundle}; "
              f"if [ -d {REPO_DIR}/.git ]; then git -C {REPO_DIR} fetch --quiet \"$B\" HEAD; "
              f"else git clone --quiet \"$B\" {REPO_DIR}; fi; "
              f"cd {REPO_DIR}; git checkout --quiet --detach {commit}; bash scripts/tpu_vm_setup.sh")
    return [["git", "bundle", "create", bundle_path, "HEAD"],
            ["gcloud", "compute", "tpus", "tpu-vm", "scp", bundle_path, f"{target.name}:{bundle}", *target.where(),
             "--worker=all"],
            ssh(target, "all", remote)]


def run(target: Target, slice_: Slice, commit: str, train_args: list[str], workdir: str,
        sync_seconds: float = 60.0) -> list[list[str]]:
    """One ssh per worker (they run in parallel): the same train.py command on each, started detached
    by :mod:`dog_jax.tpu_vm.worker` with that worker's index (which names its log)."""
    train = [VENV_PYTHON, "train.py", *train_args]
    if slice_.multi_host and "--multiprocess" not in train_args:
        train.append("--multiprocess")
    commands = []
    for worker in range(slice_.workers):
        start = [VENV_PYTHON, "-m", "dog_jax.tpu_vm.worker", "start", f"--worker_id={worker}",
                 f"--workdir={workdir}", f"--commit={commit}", f"--sync_seconds={sync_seconds:g}", "--", *train]
        commands.append(ssh(target, worker, f"cd {REPO_DIR} && {shlex.join(start)}"))
    return commands


def logs(target: Target, worker: int, lines: int, follow: bool, workdir: str | None) -> list[list[str]]:
    """Worker ``worker``'s log: live from the VM (``tail``), or the copy in the workdir (also after delete)."""
    if workdir:
        return [["gcloud", "storage", "cat", remote_log(workdir, worker)]]
    tail = ["tail", f"--lines={lines}", *(["--follow=name", "--retry"] if follow else [])]
    return [ssh(target, worker, f"{shlex.join(tail)} {RUN_DIR}/{LOG_NAME}")]


def stop(target: Target) -> list[list[str]]:
    """SIGTERM to the trainer on every worker (each checkpoints and exits 75)."""
    return [ssh(target, "all", f"cd {REPO_DIR} && {VENV_PYTHON} -m dog_jax.tpu_vm.worker stop")]


def delete(target: Target) -> list[list[str]]:
    """The TPU VM, or with ``spot`` the queued resource and its TPU VM (``--force``)."""
    if target.spot:
        return [["gcloud", "compute", "tpus", "queued-resources", "delete", target.name, *target.where(),
                 "--force", "--quiet"]]
    return [_tpu_vm(target, "delete", "--quiet")]
