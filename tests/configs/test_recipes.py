"""configs/*.py: parse config strings, hold the paper's recipes, validate to one-line errors."""

import importlib.util
import os
import re

import pytest

from dog_jax.train import config as config_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load(name: str, arg: str | None = None):
    spec = importlib.util.spec_from_file_location(f"cfg_{name}", os.path.join(ROOT, "configs", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


@pytest.mark.parametrize("name, model, batch, lr, epochs", [
    ("convmixer", "convmixer_512_12", 640, 0.01, 50.0),
    ("convnext", "convnext_tiny", 4096, 4e-3, 50.0),
    ("hornet", "hornet_tiny_7x7", 4096, 4e-3, 50.0),
])
def test_defaults_are_the_papers_imagenet_setting(name, model, batch, lr, epochs):
    c = load(name)
    assert (c.model, c.batch_size, c.optimizer.learning_rate, c.num_epochs) == (model, batch, lr, epochs)
    assert c.dataset == "imagenet2012" and c.image_size == 224 and c.dw_init == "reference"
    assert c.augment.rand_augment == "rand-m9-mstd0.5-inc1" and c.augment.random_erasing == 0.25
    assert c.augment.label_smoothing == 0.1
    config_lib.validate(c, device_count=8)


def test_recipe_details():
    convmixer = load("convmixer")
    assert convmixer.optimizer.schedule == "onecycle" and convmixer.optimizer.grad_clip_norm == 1.0
    assert (convmixer.augment.mixup_alpha, convmixer.augment.cutmix_alpha) == (0.5, 0.5)
    assert convmixer.model_overrides.kernel_size == 9 and convmixer.eval_crop_pct == 0.96
    convnext = load("convnext")
    assert convnext.drop_path_rate == 0.1 and convnext.optimizer.weight_decay == 0.05
    assert (convnext.augment.mixup_alpha, convnext.augment.cutmix_alpha) == (0.8, 1.0)
    assert load("hornet").drop_path_rate == 0.2 and load("hornet").optimizer.grad_clip_norm == 5.0


@pytest.mark.parametrize("name", ["convmixer", "convnext", "hornet"])
def test_config_strings(name):
    dog = load(name, "dw_init=dog")
    assert dog.dw_init == "dog" and tuple(dog.dog.gamma_range) == (0.0, 0.5) and dog.dog.on_fraction == 0.5
    assert dog.dog.balanced is True  # the paper's split: exactly half of each layer on-centre
    demo = load(name, "demo")
    assert demo.dataset == "dog_jax_demo" and demo.image_size == 32
    config_lib.validate(demo, device_count=1)
    assert load(name, "demo,dw_init=dog,epochs=1").num_epochs == 1.0
    with pytest.raises(config_lib.ConfigError, match="Unknown config-string key 'bogus'"):
        load(name, "bogus=1")
    # init= is dw_init='s earlier spelling (recorded commands use it); giving both is refused.
    assert load(name, "init=he_normal").dw_init == "he_normal"
    with pytest.raises(config_lib.ConfigError, match="Give the depthwise init once, as dw_init="):
        load(name, "init=dog,dw_init=dog")
    with pytest.raises(config_lib.ConfigError, match="takes a float"):
        load(name, "epochs=many")


@pytest.mark.parametrize("changes, message", [
    ({"model": "convmixer_9000"}, "Unknown model 'convmixer_9000'"),
    ({"batch_size": 100}, "config.batch_size=100 is not divisible by the 8 devices; use a multiple of 8, "
                          "e.g. --config.batch_size=96"),
    ({"dw_init": "gabor"}, "config.dw_init='gabor' is unknown"),
    ({"optimizer.learning_rate": -1.0}, "learning_rate=-1.0 must be > 0"),
    ({"optimizer.learning_rate": 0.0}, "config.optimizer.learning_rate=0.0 must be > 0"),
    ({"optimizer.schedule": "step"}, "config.optimizer.schedule='step'"),
    ({"image_size": 4}, "must be an int >= 8"),
    ({"image_size": 8, "model_overrides.patch_size": 14}, "smaller than the model's patch size 14"),
    ({"precision": "fp8"}, "config.precision='fp8'"),
    ({"augment.rand_augment": "rand-m9"}, "inc1"),
    ({"dog.gamma_range": (0.5, 0.2)}, "gamma_range=(0.5, 0.2)"),
    ({"dog.gamma_range": (0.5, 1.5)}, "must satisfy 0 <= low < high <= 1"),
    ({"nonfinite_policy": "ignore"}, "use one of stop, skip"),
    ({"data_shards": -1}, "config.data_shards=-1 must be an int >= 0 (0 = one per device)"),
    ({"data_shards": 3}, "is not divisible by config.data_shards=3; use a divisor of the batch size"),
])
def test_bad_values_give_one_clear_line(changes, message):
    c = load("convmixer")
    for field, value in changes.items():
        parent = c
        *path, leaf = field.split(".")
        for key in path:
            parent = parent[key]
        parent[leaf] = value
    with pytest.raises(config_lib.ConfigError, match=re.escape(message)) as info:
        config_lib.validate(c, device_count=8)
    assert "\n" not in str(info.value)
