"""Table 1 of the paper on ImageNet-1k, 50 epochs: Kaiming vs DoG for ConvNeXt-T, HorNet-T, ConvMixer-512.

Paper (top-1 %): ConvNeXt-T 76.17 -> 76.74, HorNet-T 76.06 -> 76.40, ConvMixer-512/12 9x9 64.00 -> 66.34.
Each "Kaiming" row is run in its best reading (the original code's init, ``*_kaiming-reference``) and in the
literal He-normal reading (``*_kaiming-he``); see configs/paper.py. One seed, as the paper reports.
Needs ImageNet (docs/training.md) and accelerators; fan out with ``--shard i/n``::

  python -m dog_jax.experiments configs/sweeps/paper_table1.py --workdir-root /shared/sweeps/table1 --shard 0/9
"""

from dog_jax.experiments import Entry, Sweep

SWEEP = Sweep(
    description="Table 1 (ImageNet-1k, 50 epochs, each model's original recipe): Kaiming vs DoG.",
    entries=[Entry(f"configs/paper.py:table1_{family}_{init}")
             for family in ("convnext", "hornet", "convmixer") for init in ("kaiming-reference", "kaiming-he", "dog")],
    seeds=(0,),
    analysis=True,
)
