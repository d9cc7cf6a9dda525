"""How much does the demo data favour a DoG init? The demo reproduction again, without the two
DoG-blob classes.

``demo_repro.py``'s 18 runs (demo-scale ConvMixer and ConvNeXt; He normal, reference and DoG
depthwise init; three seeds; 2 epochs) on ``dog_jax_demo/no_dog``: the same images minus the
on-/off-centre classes (8 classes, 9,600 / 1,600 images). The DoG-minus-reference gap here,
against the gap in ``docs/results/demo_repro``, is the size of the demo data's bias. About
0.8x the cost of ``demo_repro.py`` (80 % of the images)::

  python -m dog_jax.experiments configs/sweeps/demo_bias.py --workdir-root workdirs/sweeps/demo_bias
"""

from pathlib import Path

from dog_jax.experiments import Entry, Sweep
from dog_jax.experiments.sweep import load_sweep

_REPRO = load_sweep(Path(__file__).with_name("demo_repro.py"))

SWEEP = Sweep(
    description=_REPRO.description.replace(
        "on the built-in demo dataset (32 px, 10 classes)",
        "on the demo dataset without its two DoG-blob classes (dog_jax_demo/no_dog, 32 px, 8 classes)"),
    entries=[Entry(entry.config, {**entry.overrides, "dataset": "dog_jax_demo/no_dog"}, name=entry.name)
             for entry in _REPRO.entries],
    seeds=_REPRO.seeds,
    analysis=True,
    comparisons=_REPRO.comparisons,
)
