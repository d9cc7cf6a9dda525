"""Small-scale reproduction on CIFAR-10 (tfds ``cifar10``, downloaded on first use, ~160 MB).

The demo-scale ConvMixer-96/4 (7x7, patch 4) of ``demo_repro.py`` on CIFAR-10's 50,000 / 10,000
images, 1 epoch (390 steps at batch 128), He normal vs reference vs DoG init, three seeds: 9 runs.
The paper saw "little to no improvements" from DoG on CIFAR-10 (kernel sizes 5, 7, 9).

Needs network access for the download (the project's build machine has none, so this sweep was
not run there). Cost: about 2x one demo_repro ConvMixer run per run (2x the steps) — see
docs/experiments.md. Run::

  python -m dog_jax.experiments configs/sweeps/cifar10_repro.py --workdir-root workdirs/sweeps/cifar10_repro
"""

from dog_jax.experiments import Entry, Sweep

_EPOCHS = {"num_epochs": 1.0}

SWEEP = Sweep(
    description=(
        "CIFAR-10, demo-scale ConvMixer (96/4, 7x7, patch 4), 1 epoch: depthwise init He normal "
        "('Kaiming'), the original code's PyTorch default ('reference') or the paper's DoG init."),
    entries=[
        Entry("configs/paper.py:table1_convmixer_kaiming-he,cifar10", _EPOCHS, name="convmixer_kaiming-he"),
        Entry("configs/paper.py:table1_convmixer_kaiming-reference,cifar10", _EPOCHS, name="convmixer_reference"),
        Entry("configs/paper.py:table1_convmixer_dog,cifar10", _EPOCHS, name="convmixer_dog"),
    ],
    seeds=(0, 1, 2),
    analysis=True,
)
