"""Free vs basis-parameterised depthwise kernels (``dw_param``) on the built-in demo dataset.

Built-in ``dog_jax_demo`` dataset (32 px, 10 classes); the demo-scale ConvMixer (96/4, 7×7) and
ConvNeXt (1-1-2-1, widths 32-256, 7×7) of ``configs/sweeps/demo_repro.py``; depthwise kernels free
(k² weights) or constrained to the Gaussian-derivative + DoG basis (9 numbers per channel,
``dog_jax.models.basis``); the paper's DoG init or the reference init; three seeds: 24 runs of 2
epochs. With the DoG init both parameterisations start from the same kernels, so the constraint is
the only difference. Accuracy, parameter counts and step times are in each run's summary.

  python -m dog_jax.experiments configs/sweeps/demo_basis.py --workdir-root workdirs/sweeps/demo_basis

The Fashion-MNIST variant is ``fashion_mnist_basis.py``.
"""

from dog_jax.experiments import Entry, Sweep

_EPOCHS = {"num_epochs": 2.0}
_MODELS = {"convmixer": "configs/convmixer.py", "convnext": "configs/convnext.py"}
_INITS = {"dog": "dog", "reference": "reference"}

SWEEP = Sweep(
    description=(
        "Free vs basis-parameterised depthwise kernels on the built-in demo dataset (32 px, 10 classes): "
        "demo-scale ConvMixer (96/4, 7x7) and ConvNeXt (1-1-2-1, 32-256, 7x7), 2 epochs, DoG or reference "
        "depthwise init."),
    entries=[
        Entry(f"{path}:dw_init={init},demo", {**_EPOCHS, "dw_param": dw_param},
              name=f"{model}_{init}_{dw_param}")
        for model, path in _MODELS.items() for init in _INITS for dw_param in ("free", "basis")
    ],
    seeds=(0, 1, 2),
    analysis=True,
    comparisons=[(f"{model}_{init}_basis", f"{model}_{init}_free") for model in _MODELS for init in _INITS],
)
