"""Small-scale reproduction: Kaiming vs DoG vs reference init on the demo data.

Built-in ``dog_jax_demo`` dataset (12,000 / 2,000 images, 32 px, 10 classes), two small models
of the paper's families at their demo scale (``configs/convmixer.py:demo``: ConvMixer-96/4, 7x7;
``configs/convnext.py:demo``: ConvNeXt 1-1-2-1, widths 32-256, 7x7), three depthwise inits each,
three seeds: 18 runs of 2 epochs (186 steps at batch 128), then the kernel analysis of every
trained checkpoint next to its initial kernels.

* ``*_kaiming-he``: He normal N(0, 2/k^2), the literal "Kaiming";
* ``*_reference``: the original code's init (ConvMixer: PyTorch default kaiming_uniform(a=sqrt(5)),
  the best reading of the paper's ConvMixer "Kaiming"; ConvNeXt: trunc-normal 0.02);
* ``*_dog``: the paper's DoG init, gamma ~ U(0, 0.5), exactly half of each layer on-centre.

Run (estimated ~50 min on a loaded 2-core CPU from a measured 1-epoch run; docs/experiments.md)::

  python -m dog_jax.experiments configs/sweeps/demo_repro.py --workdir-root workdirs/sweeps/demo_repro
"""

from dog_jax.experiments import Entry, Sweep

_EPOCHS = {"num_epochs": 2.0}

SWEEP = Sweep(
    description=(
        "Small-scale reproduction on the built-in demo dataset (32 px, 10 classes): demo-scale ConvMixer "
        "(96/4, 7x7) and ConvNeXt (1-1-2-1, 32-256, 7x7), 2 epochs each, depthwise init He normal "
        "('Kaiming'), the original code's init ('reference') or the paper's DoG init."),
    entries=[
        Entry("configs/paper.py:table1_convmixer_kaiming-he,demo", _EPOCHS, name="convmixer_kaiming-he"),
        Entry("configs/paper.py:table1_convmixer_kaiming-reference,demo", _EPOCHS, name="convmixer_reference"),
        Entry("configs/paper.py:table1_convmixer_dog,demo", _EPOCHS, name="convmixer_dog"),
        Entry("configs/paper.py:table1_convnext_kaiming-he,demo", _EPOCHS, name="convnext_kaiming-he"),
        Entry("configs/paper.py:table1_convnext_kaiming-reference,demo", _EPOCHS, name="convnext_reference"),
        Entry("configs/paper.py:table1_convnext_dog,demo", _EPOCHS, name="convnext_dog"),
    ],
    seeds=(0, 1, 2),
    analysis=True,
    # DoG against each of the two other inits, per model, seed by seed.
    comparisons=[(f"{model}_dog", f"{model}_{baseline}") for model in ("convmixer", "convnext")
                 for baseline in ("reference", "kaiming-he")],
)
