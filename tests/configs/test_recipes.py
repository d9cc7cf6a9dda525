"""configs/convmixer.py, convnext.py, hornet.py: the papers' recipes and their config strings (validation
itself: tests/train/test_config.py)."""


import pytest

from dog_jax.train import config as config_lib
from dog_jax.train import run_spec
from tests.support.configs import load


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
    run_spec.check(c, device_count=8)


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
    run_spec.check(demo, device_count=1)
    assert load(name, "demo,dw_init=dog,epochs=1").num_epochs == 1.0
    with pytest.raises(config_lib.ConfigError, match="Unknown config-string key 'bogus'"):
        load(name, "bogus=1")
    # init= is dw_init='s earlier spelling (recorded commands use it); giving both is refused.
    assert load(name, "init=he_normal").dw_init == "he_normal"
    with pytest.raises(config_lib.ConfigError, match="Give the depthwise init once, as dw_init="):
        load(name, "init=dog,dw_init=dog")
    with pytest.raises(config_lib.ConfigError, match="takes a float"):
        load(name, "epochs=many")
