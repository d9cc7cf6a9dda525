r"""HorNet-T 7x7 (gnconv with 7x7 depthwise kernels): the paper's HorNet experiment (Table 1).

Paper (Babaiee et al., WACV 2024), ImageNet-1k, 50 epochs, top-1: Kaiming 76.06 -> DoG 76.40.

Commands::

  python train.py --config=configs/hornet.py --workdir=runs/hornet_ref            # trunc-normal 0.02
  python train.py --config=configs/hornet.py:dw_init=kaiming --workdir=runs/hornet_kaiming
  python train.py --config=configs/hornet.py:dw_init=dog --workdir=runs/hornet_dog
  python train.py --config=configs/hornet.py:demo --workdir=/tmp/demo_hornet     # 2-core CPU, minutes

Config-string keys: ``dw_init=<reference|dog|kaiming|...>``, ``model=<hornet_*_7x7>``, ``demo``,
``epochs=<float>``.

Recipe (raoyongming/HorNet, built on the ConvNeXt code base): AdamW lr 4e-3 at batch 4096,
weight decay 0.05 (none on 1-D parameters), cosine to 1e-6 with linear warm-up, RandAugment
rand-m9-mstd0.5-inc1, mixup 0.8, CutMix 1.0, random erasing 0.25, label smoothing 0.1,
drop path 0.2 (HorNet-T), gradient clipping 5.0 (the README's single-machine command), eval
crop 0.875. Changes for the paper's 50-epoch setting: 50 epochs instead of 300, warm-up scaled
in proportion (20 -> 3.33 epochs). Model EMA with decay 0.9999 per step, warmed up as
min(0.9999, (1+t)/(10+t)) so that 50 epochs do not leave ~21 % of the random init in it
(docs/experiments.md), the setting of the
ConvNeXt code base HorNet's training code is built on (not checked against HorNet's own
commands), evaluated beside the model (``eval_ema_top1``).

``demo``: a 4-stage HorNet, one block per stage, 7x7 gnconv (widths 32-256, patch 4, orders 2-5), on
the built-in 32 px dataset. The recipe is shared with configs/convnext.py:
``dog_jax.train.config.convnext_codebase_recipe``.
"""

import ml_collections

from dog_jax.train.config import DW_INIT_KEYS, convnext_codebase_recipe, parse_config_string

_ARGS = {**DW_INIT_KEYS, "model": str, "demo": bool, "epochs": float}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    return convnext_codebase_recipe(parse_config_string(arg, _ARGS), model="hornet_tiny_7x7",
                                    demo_model="hornet_tiny_7x7", drop_path_rate=0.2, grad_clip_norm=5.0,
                                    demo_depths=(1, 1, 1, 1))
