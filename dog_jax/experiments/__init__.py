"""Experiments: run configs × seeds as a resumable sweep and collect one results table.

``python -m dog_jax.experiments SWEEP [--workdir-root DIR] [--dry-run] [--only REGEX] [--shard i/n]``
(see docs/experiments.md). A sweep file (``configs/sweeps/*.py``) defines ``SWEEP``:

    from dog_jax.experiments import Entry, Sweep
    SWEEP = Sweep(entries=[Entry("configs/paper.py:table2_kaiming-reference,demo")], seeds=(0, 1, 2))

Library: :func:`load_sweep`, :func:`plan_runs`, :func:`select_runs`, :func:`run_sweep`,
:func:`collect`; the kernel-analysis hook is :func:`analyse_sweep`.
"""

from dog_jax._extras import require

require("dog_jax.experiments", "train", "tensorflow", "ml_collections")

from dog_jax.experiments.collect import collect, mean_std
from dog_jax.experiments.kernel_report import analyse_sweep
from dog_jax.experiments.runner import run_sweep, subprocess_train
from dog_jax.experiments.sweep import (Entry, Run, Sweep, SweepError, load_sweep, parse_shard, plan_runs, run_status,
                                       select_runs)

__all__ = ["Entry", "Run", "Sweep", "SweepError", "analyse_sweep", "collect", "load_sweep", "mean_std",
           "parse_shard", "plan_runs", "run_status", "run_sweep", "select_runs", "subprocess_train"]
