"""Does DoG's gain on Fashion-MNIST survive longer training? ConvMixer at 12 epochs, 4x the study's.

The demo-scale ConvMixer (96/4, 7x7) of ``fashion_mnist.py`` with the reference or the paper's DoG
depthwise init, trained 12 epochs (5,616 steps at batch 128; the one-cycle schedule stretched to the
12 epochs) instead of 3, seeds 0-3, paired by seed as in ``fashion_mnist.py``: 8 runs. The paper
trains 50 epochs; a gap that shrinks to nothing here is an early-training effect, not a better
end point. Evaluated and checkpointed every epoch.

Expected before any DoG result was seen (written 2026-12-07 22:45 UTC with the first DoG run in
progress, from the 3-epoch study's eight seeds: DoG - reference +1.33 points, per-seed std 0.42):
four seeds give a half-width of
t(0.975, 3) / sqrt(4) * std = 1.59 * std, about +/- 0.67 points if the spread stays as it was; an
interval excluding 0 then needs a 12-epoch gap above ~0.7 points, and a gap that halves would be
within noise (more seeds would be needed to tell it from none)::

  python -m dog_jax.experiments configs/sweeps/fashion_mnist_long.py --workdir-root workdirs/sweeps/fashion_mnist_long
"""

from pathlib import Path

from dog_jax.experiments import Entry, Sweep
from dog_jax.experiments.sweep import load_sweep

_SHORT = load_sweep(Path(__file__).with_name("fashion_mnist.py"))
_EPOCH_STEPS = 468  # 60,000 images / 128, rounded down
_SCHEDULE = {"num_epochs": 12.0, "eval_every_steps": _EPOCH_STEPS, "checkpoint_every_steps": _EPOCH_STEPS,
             "keep_checkpoints": 3}
_COMPARED = ("convmixer_reference", "convmixer_dog")

SWEEP = Sweep(
    description=(
        "Fashion-MNIST (real 28 px photos, resized to 32 px): demo-scale ConvMixer (96/4, 7x7), 12 epochs "
        "(4x fashion_mnist.py), reference or DoG depthwise init, four seeds."),
    entries=[Entry(entry.config, _SCHEDULE, name=f"{entry.name}_12ep")
             for entry in _SHORT.entries if entry.name in _COMPARED],
    seeds=(0, 1, 2, 3),
    analysis=True,
    comparisons=[("convmixer_dog_12ep", "convmixer_reference_12ep")],
)
