"""How much does the demo data favour a DoG init? The demo reproduction with and without the two
DoG-blob classes, on one code version.

``demo_repro.py``'s 18 runs (demo-scale ConvMixer and ConvNeXt; He normal, reference and DoG
depthwise init; three seeds; 2 epochs) on ``dog_jax_demo`` (10 classes), and the same 18 on
``dog_jax_demo/no_dog``: the same images minus the on-/off-centre classes (8 classes, 9,600 / 1,600
images; labels ``*_no_dog``). The change of the DoG-minus-reference gap between the two datasets is the
size of the demo data's bias. Both halves are in this one sweep so that the comparison is made by one
code version (runs record their commit; results.md warns when a comparison mixes versions). The
10-class runs have ``demo_repro.py``'s labels, configs and overrides: run both sweeps with the same
``--workdir-root`` and they are trained once. 36 runs, about 1.8x the cost of ``demo_repro.py``::

  python -m dog_jax.experiments configs/sweeps/demo_bias.py --workdir-root workdirs/sweeps/demo_repro
"""

from pathlib import Path

from dog_jax.experiments import Entry, Sweep
from dog_jax.experiments.sweep import load_sweep

_REPRO = load_sweep(Path(__file__).with_name("demo_repro.py"))
_NO_DOG = "_no_dog"

SWEEP = Sweep(
    description=_REPRO.description.replace(
        "on the built-in demo dataset (32 px, 10 classes)",
        "on the demo dataset with (dog_jax_demo, 10 classes) and without its two DoG-blob classes "
        "(dog_jax_demo/no_dog, 8 classes; labels *_no_dog), 32 px"),
    entries=[*_REPRO.entries,
             *(Entry(entry.config, {**entry.overrides, "dataset": "dog_jax_demo/no_dog"}, name=entry.name + _NO_DOG)
               for entry in _REPRO.entries)],
    seeds=_REPRO.seeds,
    analysis=True,
    comparisons=[*((a + _NO_DOG, b + _NO_DOG) for a, b in _REPRO.comparisons), *_REPRO.comparisons],
    # Without the blob classes minus with them: the part of the DoG gain the blob classes do not explain.
    gap_comparisons=[((a + _NO_DOG, b + _NO_DOG), (a, b)) for a, b in _REPRO.comparisons],
)
