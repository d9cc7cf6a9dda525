"""configs/paper.py: every Table 1 / Table 2 row and ablation builds, validates and says what it is."""

import importlib.util
import sys
from pathlib import Path

import pytest

from dog_jax.train import config as config_lib
from dog_jax.train import run_spec
from tests.support import subprocesses

ROOT = Path(__file__).resolve().parents[2]


def paper():
    spec = importlib.util.spec_from_file_location("paper_under_test", ROOT / "configs" / "paper.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_paper_row_has_its_number():
    p = paper()
    expected = {
        "table1_convnext_kaiming-reference": 76.17, "table1_convnext_dog": 76.74,
        "table1_hornet_kaiming-reference": 76.06, "table1_hornet_dog": 76.40,
        "table1_convmixer_kaiming-reference": 64.00, "table1_convmixer_dog": 66.34,
        "table2_kaiming-reference": 64.00, "table2_gamma0-1_onoff": 65.20, "table2_gamma0-0.5_on": 64.78,
        "table2_gamma0-0.5_onoff": 66.34,
    }
    for name, top1 in expected.items():
        assert p.EXPERIMENTS[name].paper_top1 == top1, name
    assert all(e.tests for e in p.EXPERIMENTS.values())
    assert all(e.paper_top1 is None for e in p.EXPERIMENTS.values() if e.group in ("ablation", "baseline"))


@pytest.mark.parametrize("name, model, dw_init, gamma_range, on_fraction, norm", [
    ("table1_convnext_kaiming-reference", "convnext_tiny", "reference", (0.0, 0.5), 0.5, "paper"),
    ("table1_convnext_kaiming-he", "convnext_tiny", "he_normal", (0.0, 0.5), 0.5, "paper"),
    ("table1_hornet_kaiming-torch", "hornet_tiny_7x7", "torch_default", (0.0, 0.5), 0.5, "paper"),
    ("table1_hornet_dog", "hornet_tiny_7x7", "dog", (0.0, 0.5), 0.5, "paper"),
    ("table2_kaiming-reference", "convmixer_512_12", "reference", (0.0, 0.5), 0.5, "paper"),
    ("table2_gamma0-1_onoff", "convmixer_512_12", "dog", (0.0, 1.0), 0.5, "paper"),
    ("table2_gamma0-0.5_on", "convmixer_512_12", "dog", (0.0, 0.5), 1.0, "paper"),
    ("table2_gamma0-0.5_onoff", "convmixer_512_12", "dog", (0.0, 0.5), 0.5, "paper"),
    ("ablation_dog-he", "convmixer_512_12", "dog", (0.0, 0.5), 0.5, "he"),
    ("ablation_gamma0.5-1", "convmixer_512_12", "dog", (0.5, 1.0), 0.5, "paper"),
    ("ablation_on0", "convmixer_512_12", "dog", (0.0, 0.5), 0.0, "paper"),
])
def test_rows_change_only_the_depthwise_init(name, model, dw_init, gamma_range, on_fraction, norm):
    c = paper().get_config(name)
    assert (c.model, c.dw_init, tuple(c.dog.gamma_range), c.dog.on_fraction, c.dog.norm) == (
        model, dw_init, gamma_range, on_fraction, norm)
    assert c.dataset == "imagenet2012" and c.num_epochs == 50.0  # the family's ImageNet recipe.
    assert c.dog.balanced is True  # every row uses the paper's exact half/half split
    if model.startswith("convmixer"):
        assert c.model_overrides.kernel_size == 9 and c.batch_size == 640
    run_spec.check(c, device_count=8)


def test_modifiers_demo_cifar10_family_epochs():
    p = paper()
    demo = p.get_config("table2_gamma0-1_onoff,demo,epochs=2")
    assert demo.dataset == "dog_jax_demo" and demo.model_overrides.width == 96 and demo.num_epochs == 2.0
    assert tuple(demo.dog.gamma_range) == (0.0, 1.0)
    cifar = p.get_config("table1_convmixer_dog,cifar10")
    assert (cifar.dataset, cifar.train_split, cifar.eval_split, cifar.image_size) == ("cifar10", "train", "test", 32)
    convnext = p.get_config("ablation_dog-he,family=convnext,demo")
    assert convnext.model == "convnext_atto" and convnext.dog.norm == "he"
    assert p.get_config("baseline_trunc_normal_02,family=hornet").model == "hornet_tiny_7x7"
    for name in p.EXPERIMENTS:
        run_spec.check(p.get_config(f"{name},demo"), device_count=1)
    info = p.experiment_info("table1_convnext_dog,demo")
    assert info["paper_top1"] is None and info["paper_row_top1"] == 76.74 and info["scale"] == "demo"


@pytest.mark.parametrize("arg, message", [
    ("table2_kaiminq",
     "Unknown experiment 'table2_kaiminq' in configs/paper.py; known: table1_convnext_kaiming-reference,"),
    ("list", "Name an experiment in configs/paper.py; known:"),
    (None, "Name an experiment"),
    ("table1_convnext_dog,family=hornet", "'family=' applies only to ablation_* and baseline_* names"),
    ("ablation_on0,family=vit", "family='vit' is unknown"),
    ("table2_kaiming-reference,demo,cifar10", "one of 'demo', 'cifar10' or 'fashion_mnist'"),
    ("table2_kaiming-reference,epochs=lots", "takes a float"),
])
def test_wrong_names_give_one_line_listing_the_names(arg, message):
    with pytest.raises(config_lib.ConfigError, match=message.replace("(", r"\(").replace("*", r"\*")) as info:
        paper().get_config(arg)
    assert "\n" not in str(info.value)


def test_listing_from_the_command_line():
    result = subprocesses.run([sys.executable, str(ROOT / "configs" / "paper.py")], capture_output=True, text=True,
                              timeout=subprocesses.TIMEOUT_S, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "table2_gamma0-0.5_onoff" in result.stdout and "66.34" in result.stdout
    rows = [line.split() for line in result.stdout.splitlines()
            if line.startswith(("table", "ablation", "baseline"))]
    assert len(rows) == len(paper().EXPERIMENTS)
    # Each row states the dw_init it runs (after name, "Table N", model): a paper "Kaiming" row may run
    # the reference init.
    runs = {row[0]: row[4] for row in rows if row[0].startswith("table")}
    assert runs["table1_convnext_kaiming-reference"] == "reference"
    assert runs["table1_convnext_kaiming-he"] == "he_normal"


@pytest.mark.parametrize("old", ["table1_convnext_kaiming", "table1_hornet_kaiming", "table1_convmixer_kaiming",
                                 "table2_kaiming"])
def test_names_before_the_reference_suffix_still_run_the_same_config(old):
    """Recorded runs (docs/results, sweep workdirs) name the paper's "Kaiming" rows without "-reference"."""
    p = paper()
    assert p.ALIASES[old] == f"{old}-reference"
    assert p.get_config(f"{old},demo").to_dict() == p.get_config(f"{old}-reference,demo").to_dict()
    assert p.experiment_info(old)["experiment"] == f"{old}-reference"


@pytest.mark.parametrize("name, clip", [("table1_convnext_dog", 1.0), ("table1_hornet_dog", 5.0),
                                        ("table2_kaiming-reference", 1.0)])
def test_paper_text_follows_the_papers_optimizer(name, clip):
    """The paper's text says Adam and gradient clipping; the default follows the original recipes (AdamW)."""
    original = paper().get_config(name)
    text = paper().get_config(f"{name},paper_text")
    assert original.optimizer.weight_decay > 0 and text.optimizer.weight_decay == 0.0
    assert text.optimizer.grad_clip_norm == clip
    assert original.optimizer.grad_clip_norm == (0.0 if "convnext" in name else clip)
    # Nothing else changes.
    for key in ("learning_rate", "schedule", "warmup_epochs", "b1", "b2", "eps"):
        assert text.optimizer[key] == original.optimizer[key], key
    assert (text.num_epochs, text.batch_size, text.ema_decay) == (original.num_epochs, original.batch_size,
                                                                  original.ema_decay)
    assert paper().experiment_info(f"{name},paper_text")["recipe"] == "paper_text"
    assert paper().experiment_info(name)["recipe"] == "original"
