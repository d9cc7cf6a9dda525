"""The project's DoG ablations at demo scale (ConvMixer-96/4, 7x7, built-in demo data), three seeds.

Table 2's rows plus: DoG at He-normal scale, a coin flip per kernel for on/off, gamma sub-ranges, on-centre
fractions 0 / 0.25 / 0.75, and trunc-normal(0.02) (for ConvMixer the other baselines are Table 2's
rows: reference = torch_default = table2_kaiming-reference, he_normal = table2_kaiming-he): 14 configs x 3
seeds = 42 runs of 2 epochs (about 2 h on a 2-core CPU; fan out with --shard i/n). Run::

  python -m dog_jax.experiments configs/sweeps/demo_ablations.py --workdir-root workdirs/sweeps/demo_ablations
"""

from dog_jax.experiments import Entry, Sweep

_ROWS = (
    "table2_kaiming-reference", "table2_kaiming-he", "table2_gamma0-1_onoff", "table2_gamma0-0.5_on",
    "table2_gamma0-0.5_onoff",
    "ablation_dog-he", "ablation_dog-coinflip", "ablation_gamma0-0.25", "ablation_gamma0.25-0.5",
    "ablation_gamma0.5-1", "ablation_on0", "ablation_on0.25", "ablation_on0.75",
    "baseline_trunc_normal_02",
)

SWEEP = Sweep(
    description="DoG ablations on the built-in demo dataset, ConvMixer-96/4 (7x7), 2 epochs.",
    entries=[Entry(f"configs/paper.py:{row},demo", name=row) for row in _ROWS],
    seeds=(0, 1, 2),
    overrides={"num_epochs": 2.0},
    analysis=True,
)
