"""Free vs basis-parameterised depthwise kernels (``dw_param``) on Fashion-MNIST.

The reference- and DoG-initialised runs of ``fashion_mnist.py`` (demo-scale ConvMixer and ConvNeXt,
3 epochs, seeds 0-2 of its eight) beside the same runs with every depthwise kernel constrained to the
Gaussian-derivative + DoG basis of ``dog_jax.models.basis`` (9 numbers per channel instead of
k² = 49 weights). With the DoG init both parameterisations start from the same kernels, so the
constraint is the only difference. The free runs have the same labels, configs and overrides as in
``fashion_mnist.py``: run both sweeps with the same ``--workdir-root`` and they are trained once.
12 new runs, about 55 min on the project's idle 2-core CPU::

  python -m dog_jax.experiments configs/sweeps/fashion_mnist_basis.py --workdir-root workdirs/sweeps/fashion_mnist
"""

from pathlib import Path

from dog_jax.experiments import Entry, Sweep
from dog_jax.experiments.sweep import load_sweep

_FREE = load_sweep(Path(__file__).with_name("fashion_mnist.py"))
_COMPARED = [entry for entry in _FREE.entries if entry.name.endswith(("_reference", "_dog"))]

SWEEP = Sweep(
    description=(
        "Fashion-MNIST (real 28 px photos, resized to 32 px): demo-scale ConvMixer and ConvNeXt, 3 epochs, "
        "reference or DoG depthwise init, depthwise kernels free (k^2 weights) or constrained to the "
        "Gaussian-derivative + DoG basis (dw_param='basis')."),
    entries=[variant for entry in _COMPARED for variant in (
        entry, Entry(entry.config, {**entry.overrides, "dw_param": "basis"}, name=f"{entry.name}_basis"))],
    # Three seeds, the study's recipe since it was first run: its question (what the constraint costs)
    # is not the headline one, and each seed adds four runs.
    seeds=(0, 1, 2),
    analysis=True,
    comparisons=[(f"{entry.name}_basis", entry.name) for entry in _COMPARED],
)
