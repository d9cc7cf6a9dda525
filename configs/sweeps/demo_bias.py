"""How much does the demo data favour a DoG init? The demo reproduction again, without the two
DoG-blob classes.

``demo_repro.py``'s 18 runs (demo-scale ConvMixer and ConvNeXt; He normal, reference and DoG
depthwise init; three seeds; 2 epochs) on ``dog_jax_demo/no_dog``: the same images minus the
on-/off-centre classes (8 classes, 9,600 / 1,600 images). The DoG-minus-reference gap here,
against the gap in ``docs/results/demo_repro``, is the size of the demo data's bias. About
0.8x the cost of ``demo_repro.py`` (80 % of the images)::

  python -m dog_jax.experiments configs/sweeps/demo_bias.py --workdir-root workdirs/sweeps/demo_bias
"""

import importlib.util
import os

from dog_jax.experiments import Entry, Sweep

_spec = importlib.util.spec_from_file_location(
    "dog_jax_sweep_demo_repro", os.path.join(os.path.dirname(os.path.abspath(__file__)), "demo_repro.py"))
_repro = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_repro)

SWEEP = Sweep(
    description=_repro.SWEEP.description.replace(
        "on the built-in demo dataset (32 px, 10 classes)",
        "on the demo dataset without its two DoG-blob classes (dog_jax_demo/no_dog, 32 px, 8 classes)"),
    entries=[Entry(entry.config, {**entry.overrides, "dataset": "dog_jax_demo/no_dog"}, name=entry.name)
             for entry in _repro.SWEEP.entries],
    seeds=_repro.SWEEP.seeds,
    analysis=True,
)
