"""DoG vs Kaiming on real photographs: Fashion-MNIST (offline from Debian's dataset-fashion-mnist).

The demo-scale ConvMixer (96/4, 7x7, patch 4 at 32 px: 8x8 maps) and ConvNeXt (1-1-2-1, 32-256, 7x7) of
``demo_repro.py`` on Fashion-MNIST's 60,000 / 10,000 28 px grayscale product photos (resized to
32 px, grey replicated into three channels), 3 epochs (1,404 steps at batch 128), depthwise init
He normal, reference or the paper's DoG, eight seeds: 48 runs.

Eight seeds, compared paired by seed (a seed fixes the data order, every augmentation and the train
step's random draws; only the depthwise init differs between a seed's runs): with three seeds the
ConvMixer DoG - reference gap's 95 % interval was +/- 0.97 points (per-seed gap std 0.39), which
cannot tell a 1-point gain from none. Expected before the rerun, from the 3-seed stds: eight seeds
give half-widths of t(0.975, 7) / sqrt(8) * std = 0.84 * std, i.e. +/- 0.33 points for ConvMixer
DoG - reference (std 0.39), +/- 0.26 for ConvMixer DoG - He (0.31), +/- 0.69 for ConvNeXt
DoG - reference (0.83) and +/- 0.53 for ConvNeXt DoG - He (0.63).

Cost: a few minutes per run on the project's idle 2-core CPU (each row's ``cpu_time_s`` and
``wall_time_s`` say), a few hours for the sweep; it is resumable, so it can be spread over
sessions::

  python -m dog_jax.experiments configs/sweeps/fashion_mnist.py --workdir-root workdirs/sweeps/fashion_mnist
"""

from pathlib import Path

from dog_jax.experiments import Entry, Sweep
from dog_jax.experiments.sweep import load_sweep

_REPRO = load_sweep(Path(__file__).with_name("demo_repro.py"))

# Evaluation and a kept checkpoint every half epoch (234 of 468 steps): six points per learning curve,
# and the middle checkpoints the kernel analysis follows training with (8 kept: the six, plus room for
# a preemption checkpoint between them).
_SCHEDULE = {"num_epochs": 3.0, "eval_every_steps": 234, "checkpoint_every_steps": 234, "keep_checkpoints": 8}

SWEEP = Sweep(
    description=(
        "Fashion-MNIST (real 28 px photos, resized to 32 px): demo-scale ConvMixer (96/4, 7x7) and ConvNeXt "
        "(1-1-2-1, 32-256, 7x7), 3 epochs each, eight seeds, depthwise init He normal ('Kaiming'), the original "
        "code's init ('reference') or the paper's DoG init."),
    entries=[Entry(entry.config.replace(",demo", ",fashion_mnist"), _SCHEDULE, name=entry.name)
             for entry in _REPRO.entries],
    seeds=tuple(range(8)),
    analysis=True,
    comparisons=_REPRO.comparisons,
    analysis_during=True,
)
