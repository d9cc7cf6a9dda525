"""Table 2 of the paper on ImageNet-1k, 50 epochs: which parts of the DoG init matter (ConvMixer-512/12 9x9).

Paper (top-1 %): Kaiming 64.00; gamma in (0,1) on+off 65.20; gamma in (0,0.5) on only 64.78;
gamma in (0,0.5) on+off 66.34. Plus the literal He-normal reading of "Kaiming". One seed::

  python -m dog_jax.experiments configs/sweeps/paper_table2.py --workdir-root workdirs/sweeps/table2 --shard 0/5
"""

from dog_jax.experiments import Entry, Sweep

SWEEP = Sweep(
    description="Table 2 (ImageNet-1k, 50 epochs, ConvMixer-512/12 9x9): DoG gamma range and centre types.",
    entries=[Entry(f"configs/paper.py:table2_{row}")
             for row in ("kaiming-reference", "kaiming-he", "gamma0-1_onoff", "gamma0-0.5_on", "gamma0-0.5_onoff")],
    seeds=(0,),
    analysis=True,
)
