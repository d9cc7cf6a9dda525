r"""Every row of the paper's Table 1 and Table 2, and the project's ablations, as named configs.

Babaiee et al., "Neural Echos", WACV 2024 (arXiv 2401.10178); ImageNet-1k, top-1 (%); 50 epochs
(stated for ConvNeXt-T and HorNet-T; assumed for ConvMixer).

Usage::

  python train.py --config=configs/paper.py:table2_gamma0-0.5_onoff --workdir=runs/t2_dog
  python train.py --config=configs/paper.py:table1_convnext_dog,demo --workdir=/tmp/cnx_dog   # demo scale
  python train.py --config=configs/paper.py:ablation_dog-he,family=convnext --workdir=runs/cnx_dog_he
  python configs/paper.py          # lists every name, what it tests and the paper's number

A name is followed by optional comma-separated modifiers:

* ``demo``     — the family's demo scale (small model, built-in 32 px ``dog_jax_demo`` dataset,
  2-core CPU in minutes; see ``configs/<family>.py``);
* ``cifar10``  — the same demo-scale model on tfds ``cifar10`` (downloaded on first use);
* ``fashion_mnist`` — the same on Fashion-MNIST (offline from Debian's ``dataset-fashion-mnist``);
* ``epochs=F`` — training length;
* ``family=convmixer|convnext|hornet`` — the model for ``ablation_*`` / ``baseline_*`` names
  (default convmixer, the model of Table 2); table rows fix their model;
* ``paper_text`` — follow the paper's text where it is explicit and differs from the original
  recipes: Adam (AdamW with weight decay 0) and gradient clipping (by global norm; the paper gives
  no value: the family's own value, or 1.0 — ConvMixer's — for ConvNeXt, which has none).

Without ``paper_text`` every name follows the model's original recipe (see the recipe table in
docs/experiments.md, which lists each hyper-parameter as the paper's text, the original recipe and
this config).

Every name starts from its family's config (``configs/convmixer.py``, ``convnext.py``,
``hornet.py``: the original training recipe at 50 epochs) and changes only the depthwise
kernel init (``dw_init``, ``dog.*``). Any field can still be overridden with
``--config.<field>=<value>``.

The "Kaiming" baseline. The paper calls every baseline "Kaiming" without saying which. For
ConvMixer the original code leaves PyTorch's default init (kaiming_uniform with a=sqrt(5),
i.e. U(+-1/k) for a depthwise kernel), which is a Kaiming init; for ConvNeXt and HorNet the
original code initialises every conv, the depthwise ones too, with trunc-normal(0.02) and
no Kaiming init at all. Our best reading is that each paper baseline is the unchanged original
code, i.e. the model's reference init: the ``*_kaiming-reference`` names run
``dw_init="reference"`` (their names before 2026-11-29, ``*_kaiming``, still work: results in
docs/results record them). The literal readings are offered beside them: ``*_kaiming-he`` (He
normal, N(0, 2/k^2), PyTorch's ``kaiming_normal_``) and ``*_kaiming-torch`` (PyTorch's default;
for ConvMixer identical to the reference). Every name runs the ``dw_init`` that
``python configs/paper.py`` lists beside it. See docs/experiments.md.
"""


import dataclasses
import importlib.util
import os

import ml_collections

from dog_jax.train.config import ConfigError, parse_config_string

FAMILIES = ("convmixer", "convnext", "hornet")
_MODIFIERS = {"demo": bool, "cifar10": bool, "fashion_mnist": bool, "epochs": float, "family": str,
              "paper_text": bool}
# Real-image datasets run with the demo-scale models and recipe: (tfds name, train, eval split).
_SMALL_DATASETS = {"cifar10": ("cifar10", "train", "test"), "fashion_mnist": ("fashion_mnist", "train", "test")}

#: Global-norm clipping of ``paper_text`` configs whose family recipe has none (the paper gives no value).
PAPER_TEXT_CLIP_NORM = 1.0
_PAPER_DOG = {"gamma_range": (0.0, 0.5), "on_fraction": 0.5, "norm": "paper", "balanced": True}


@dataclasses.dataclass(frozen=True)
class Experiment:
    """One named experiment: a family config plus a depthwise init.

    Attributes:
      name: the config-string name.
      family: "convmixer", "convnext" or "hornet"; None for ablations (chosen by ``family=``).
      dw_init: ``config.dw_init`` ("reference", "dog", "he_normal", "torch_default", "trunc_normal_02").
      dog: ``config.dog`` fields changed from the paper's (gamma (0, 0.5), half on-centre, ±0.5 norm).
      group: "Table 1", "Table 2", "ablation" or "baseline".
      paper_top1: the paper's ImageNet top-1 (%) for this row, None for the project's own ablations.
      tests: one sentence: what this run tests.
    """

    name: str
    family: str | None
    dw_init: str
    group: str
    tests: str
    paper_top1: float | None = None
    dog: tuple[tuple[str, object], ...] = ()

    def dog_params(self) -> dict[str, object]:
        return {**_PAPER_DOG, **dict(self.dog)}


def _experiments() -> list[Experiment]:
    rows = []
    # Table 1: Kaiming -> DoG for each model (ImageNet, 50 epochs).
    table1 = {"convnext": ("ConvNeXt-T 7x7", 76.17, 76.74, "trunc-normal(0.02)"),
              "hornet": ("HorNet-T 7x7", 76.06, 76.40, "trunc-normal(0.02)"),
              "convmixer": ("ConvMixer-512/12 9x9", 64.00, 66.34, "PyTorch default, kaiming_uniform(a=sqrt(5))")}
    for family, (model, kaiming, dog, reference) in table1.items():
        rows += [
            Experiment(f"table1_{family}_kaiming-reference", family, "reference", "Table 1",
                       f"{model} baseline, best reading of the paper's 'Kaiming': the original code's "
                       f"init ({reference}){'' if family == 'convmixer' else ', not a Kaiming init'}", kaiming),
            Experiment(f"table1_{family}_kaiming-he", family, "he_normal", "Table 1",
                       f"{model} baseline, literal reading: He-normal N(0, 2/k^2) depthwise kernels", kaiming),
        ]
        if family != "convmixer":  # for ConvMixer the PyTorch default *is* the reference init.
            rows.append(Experiment(f"table1_{family}_kaiming-torch", family, "torch_default", "Table 1",
                                   f"{model} baseline, alternative reading: PyTorch's default "
                                   "kaiming_uniform(a=sqrt(5)) depthwise kernels", kaiming))
        rows.append(Experiment(f"table1_{family}_dog", family, "dog", "Table 1",
                               f"{model} with the paper's DoG init: gamma ~ U(0, 0.5), half on-centre", dog))
    # Table 2: ConvMixer-512/12 9x9, which parts of the DoG recipe matter.
    rows += [
        Experiment("table2_kaiming-reference", "convmixer", "reference", "Table 2",
                   "ConvMixer baseline (PyTorch default = the original code's init; same as "
                   "table1_convmixer_kaiming-reference)", 64.00),
        Experiment("table2_kaiming-he", "convmixer", "he_normal", "Table 2",
                   "ConvMixer baseline, literal He-normal reading of 'Kaiming'", 64.00),
        Experiment("table2_gamma0-1_onoff", "convmixer", "dog", "Table 2",
                   "DoG with gamma ~ U(0, 1): does restricting the centre size to gamma < 0.5 matter?", 65.20,
                   (("gamma_range", (0.0, 1.0)),)),
        Experiment("table2_gamma0-0.5_on", "convmixer", "dog", "Table 2",
                   "DoG with on-centre kernels only: do off-centre kernels matter?", 64.78,
                   (("on_fraction", 1.0),)),
        Experiment("table2_gamma0-0.5_onoff", "convmixer", "dog", "Table 2",
                   "the paper's DoG init (gamma ~ U(0, 0.5), half on-centre; same as table1_convmixer_dog)",
                   66.34),
    ]
    # The project's ablations (not in the paper): any family, chosen with family=.
    rows += [
        Experiment("ablation_dog-he", None, "dog", "ablation",
                   "DoG rescaled to He-normal's L2 norm (sqrt(2) per kernel): is the gain the shape "
                   "or the small scale (DoG L2 ~0.4 vs He ~1.4)?", dog=(("norm", "he"),)),
        Experiment("ablation_dog-coinflip", None, "dog", "ablation",
                   "DoG with an independent on/off coin flip per kernel instead of exactly half "
                   "on-centre per layer (the default until 2026-11-28)",
                   dog=(("balanced", False),)),
        Experiment("ablation_gamma0-0.25", None, "dog", "ablation",
                   "DoG with small centres only, gamma ~ U(0, 0.25) (mostly one-pixel centres)",
                   dog=(("gamma_range", (0.0, 0.25)),)),
        Experiment("ablation_gamma0.25-0.5", None, "dog", "ablation",
                   "DoG with gamma ~ U(0.25, 0.5): no one-pixel centres at k >= 9",
                   dog=(("gamma_range", (0.25, 0.5)),)),
        Experiment("ablation_gamma0.5-1", None, "dog", "ablation",
                   "DoG with large centres only, gamma ~ U(0.5, 1) (the half Table 2's (0, 1) row adds)",
                   dog=(("gamma_range", (0.5, 1.0)),)),
        Experiment("ablation_on0", None, "dog", "ablation",
                   "DoG with off-centre kernels only (mirror of table2_gamma0-0.5_on)",
                   dog=(("on_fraction", 0.0),)),
        Experiment("ablation_on0.25", None, "dog", "ablation", "DoG with 25 % on-centre kernels",
                   dog=(("on_fraction", 0.25),)),
        Experiment("ablation_on0.75", None, "dog", "ablation", "DoG with 75 % on-centre kernels",
                   dog=(("on_fraction", 0.75),)),
    ]
    baselines = {
        "reference": "the model's original init (ConvMixer: PyTorch default; ConvNeXt/HorNet: trunc-normal 0.02)",
        "he_normal": "He/Kaiming normal N(0, 2/k^2), untruncated (PyTorch kaiming_normal_)",
        "torch_default": "PyTorch's default conv init, kaiming_uniform(a=sqrt(5)) = U(+-1/k)",
        "trunc_normal_02": "trunc-normal(std 0.02), the ConvNeXt/HorNet init",
    }
    rows += [Experiment(f"baseline_{init}", None, init, "baseline", f"depthwise kernels from {text}")
             for init, text in baselines.items()]
    return rows


EXPERIMENTS: dict[str, Experiment] = {e.name: e for e in _experiments()}
#: Earlier names of rows, still accepted (run directories and docs/results record them): the paper's
#: "Kaiming" rows were called ``*_kaiming`` although they run the reference init.
ALIASES: dict[str, str] = {name.removesuffix("-reference"): name for name in EXPERIMENTS
                           if name.endswith("_kaiming-reference")}


def _load_family(family: str):
    """Imports configs/<family>.py (the family's recipe) from this file's directory."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), f"{family}.py")
    spec = importlib.util.spec_from_file_location(f"dog_jax_configs_{family}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def parse(arg: str | None) -> tuple[Experiment, str, dict[str, object]]:
    """Splits ``"NAME[,modifier...]"`` into (experiment, family, modifiers); one-line ConfigError if wrong."""
    name, _, rest = (arg or "").strip().partition(",")
    name = ALIASES.get(name.strip(), name.strip())
    if name not in EXPERIMENTS:
        what = f"Unknown experiment {name!r}" if name and name != "list" else "Name an experiment"
        raise ConfigError(f"{what} in configs/paper.py; known: {', '.join(EXPERIMENTS)} "
                          "(descriptions: python configs/paper.py, docs/experiments.md).")
    experiment = EXPERIMENTS[name]
    mods = parse_config_string(rest, _MODIFIERS)
    if "family" in mods and experiment.family is not None:
        raise ConfigError(f"{name} is a {experiment.family} row of the paper; 'family=' applies only to "
                          "ablation_* and baseline_* names.")
    family = str(mods.get("family", experiment.family or "convmixer"))
    if family not in FAMILIES:
        raise ConfigError(f"family={family!r} is unknown; use one of {', '.join(FAMILIES)}.")
    if sum(bool(mods.get(key)) for key in ("demo", *_SMALL_DATASETS)) > 1:
        raise ConfigError("Use one of 'demo', 'cifar10' or 'fashion_mnist', not several (all are demo-scale "
                          "models on different data).")
    return experiment, family, mods


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The config of ``configs/paper.py:NAME[,demo|,cifar10|,fashion_mnist][,epochs=F][,family=F]``."""
    experiment, family, mods = parse(arg)
    family_args = [f"dw_init={experiment.dw_init}"]
    small = next((key for key in _SMALL_DATASETS if mods.get(key)), None)
    if mods.get("demo") or small:
        family_args.append("demo")
    if "epochs" in mods:
        family_args.append(f"epochs={mods['epochs']}")
    c = _load_family(family).get_config(",".join(family_args))
    for key, value in experiment.dog_params().items():
        c.dog[key] = value
    if small:
        # Same 32 px demo-scale model and recipe on real images: CIFAR-10 (50,000 / 10,000) or
        # Fashion-MNIST (60,000 / 10,000 28 px grayscale photos, resized to 32 px, grey in R=G=B).
        c.dataset, c.train_split, c.eval_split = _SMALL_DATASETS[small]
    if mods.get("paper_text"):
        # The paper says Adam and gradient clipping; the original recipes use AdamW (ConvNeXt: no clipping).
        c.optimizer.weight_decay = 0.0
        if c.optimizer.grad_clip_norm == 0.0:
            c.optimizer.grad_clip_norm = PAPER_TEXT_CLIP_NORM
    return c


def experiment_info(arg: str | None) -> dict[str, object]:
    """Metadata for results tables (read by ``python -m dog_jax.experiments``)."""
    experiment, family, mods = parse(arg)
    small = next((key for key in _SMALL_DATASETS if mods.get(key)), None)
    scale = small or ("demo" if mods.get("demo") else "imagenet")
    return {"experiment": experiment.name, "family": family, "group": experiment.group,
            "dw_init": experiment.dw_init, "dog": experiment.dog_params() if experiment.dw_init == "dog" else None,
            "scale": scale, "paper_top1": experiment.paper_top1 if scale == "imagenet" else None,
            "recipe": "paper_text" if mods.get("paper_text") else "original",
            "paper_row_top1": experiment.paper_top1, "tests": experiment.tests}


def describe() -> str:
    """A plain-text table of every name (``python configs/paper.py``)."""
    lines = [f"{'name':34s} {'group':9s} {'model':10s} {'dw_init':15s} {'paper':>6s}  tests"]
    for e in EXPERIMENTS.values():
        paper = f"{e.paper_top1:.2f}" if e.paper_top1 is not None else "-"
        lines.append(f"{e.name:34s} {e.group:9s} {e.family or 'family=':10s} {e.dw_init:15s} {paper:>6s}  "
                     f"{e.tests}")
    lines.append("dw_init: the depthwise kernels' init (config.dw_init); 'reference' is the model's original "
                 "init, not He normal. Earlier names still accepted: "
                 + ", ".join(f"{old} = {new}" for old, new in ALIASES.items()) + ".")
    lines.append("Modifiers: ,demo | ,cifar10 | ,fashion_mnist | ,epochs=F | ,family=convmixer|convnext|hornet "
                 "(ablation_*/baseline_*) | ,paper_text (Adam + gradient clipping, as the paper's text).")
    return "\n".join(lines)


if __name__ == "__main__":
    print(describe())
