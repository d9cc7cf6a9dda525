"""DoG vs Kaiming on real photographs: Fashion-MNIST (offline from Debian's dataset-fashion-mnist).

The demo-scale ConvMixer (96/4, 7x7, patch 2 at 32 px) and ConvNeXt (1-1-2-1, 32-256, 7x7) of
``demo_repro.py`` on Fashion-MNIST's 60,000 / 10,000 28 px grayscale product photos (resized to
32 px, grey replicated into three channels), 3 epochs (1,404 steps at batch 128), depthwise init
He normal, reference or the paper's DoG, three seeds: 18 runs.

Cost estimate: the demo reproduction trains 2 epochs of 12,000 images per run in about a minute
on the project's 2-core CPU (17 min for its 18 runs at load average 2-4), so one epoch of
Fashion-MNIST costs about 2.5 min per run and this sweep about 2.3 h of that machine (less when
idle); it is resumable, so it can be spread over sessions::

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
        "(1-1-2-1, 32-256, 7x7), 3 epochs each, depthwise init He normal ('Kaiming'), the original code's init "
        "('reference') or the paper's DoG init."),
    entries=[Entry(entry.config.replace(",demo", ",fashion_mnist"), _SCHEDULE, name=entry.name)
             for entry in _REPRO.entries],
    seeds=_REPRO.seeds,
    analysis=True,
    comparisons=_REPRO.comparisons,
    analysis_during=True,
)
