r"""ConvMixer-512/12, 9x9 kernels, patch 7: the paper's ConvMixer experiment (Table 1 / Table 2).

Paper (Babaiee et al., WACV 2024), ImageNet-1k, top-1 (the paper states 50 epochs for ConvNeXt-T and
HorNet-T, not for ConvMixer; 50 is assumed here):
  Kaiming 64.00 -> DoG 66.34  (Table 2 ablations: gamma in (0,1) on+off 65.20;
  gamma in (0,0.5) on-centre only 64.78).

Commands::

  python train.py --config=configs/convmixer.py --workdir=runs/convmixer_ref       # reference init
  python train.py --config=configs/convmixer.py:dw_init=dog --workdir=runs/convmixer_dog
  python train.py --config=configs/convmixer.py:dw_init=kaiming --workdir=runs/convmixer_kaiming
  python train.py --config=configs/convmixer.py:demo --workdir=/tmp/demo          # 2-core CPU, minutes

Config-string keys (comma separated): ``dw_init=<reference|dog|kaiming|he_normal|torch_default|
trunc_normal_02>``, ``demo`` (built-in dataset, small model), ``epochs=<float>``,
``kernel=<int>``. Any field can also be overridden with ``--config.<field>=<value>``.

Recipe (locuslab/convmixer README, the timm command the ConvMixer authors published):
AdamW lr 0.01 at batch 640, eps 1e-3, weight decay 2e-5 (none on 1-D parameters), one-cycle
schedule (0 -> peak at 2/5 -> peak/20 at 4/5 -> 0), gradient clipping 1.0, RandAugment
rand-m9-mstd0.5-inc1, mixup 0.5, CutMix 0.5, random erasing 0.25, label smoothing 0.1, no
drop path; eval crop 0.96 (timm). Epochs: 50 (as the paper's other models) instead of the
original 150. ``configs/paper.py:NAME,paper_text`` follows the paper's "Adam" (no weight decay).
"reference" init is the PyTorch default (kaiming_uniform with a=sqrt(5)) of the original
code; the paper's "Kaiming" baseline most likely is this default; ``dw_init=kaiming`` gives He normal.
"""

import ml_collections

from dog_jax.train.config import (DW_INIT_KEYS, apply_demo_recipe, base_config, dw_init_from_args,
                                  parse_config_string)

_ARGS = {**DW_INIT_KEYS, "demo": bool, "epochs": float, "kernel": int}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = parse_config_string(arg, _ARGS)
    c = base_config()
    c.model = "convmixer_512_12"
    c.model_overrides = ml_collections.ConfigDict({"kernel_size": args.get("kernel", 9)})
    c.dw_init = dw_init_from_args(args)
    c.batch_size = 640
    c.num_epochs = args.get("epochs", 50.0)
    c.eval_crop_pct = 0.96
    c.optimizer.learning_rate = 0.01
    c.optimizer.eps = 1e-3
    c.optimizer.weight_decay = 2e-5
    c.optimizer.schedule = "onecycle"
    c.optimizer.warmup_epochs = 0.0  # the one-cycle ramp is the warm-up.
    c.optimizer.grad_clip_norm = 1.0
    c.augment.mixup_alpha = 0.5
    c.augment.cutmix_alpha = 0.5
    if args.get("demo"):
        _demo(c, args)
    return c


def _demo(c: ml_collections.ConfigDict, args: dict) -> None:
    """A ConvMixer-96/4 (patch 4, 7x7 kernels) on the built-in 32 px dataset: minutes on a 2-core CPU."""
    apply_demo_recipe(c, epochs=args.get("epochs", 3.0))
    c.model_overrides = ml_collections.ConfigDict(
        {"width": 96, "depth": 4, "kernel_size": args.get("kernel", 7), "patch_size": 4})
    c.optimizer.learning_rate = 0.01
