"""dog_jax/timm_models.py: ``dog_jax_convmixer``, timm's own ConvMixer of any size, and its registration.
(Loading an export with it: tests/test_export.py.)"""

import pytest

from tests.support.requires import TORCH, require

torch = require("torch", "torch is not installed", TORCH)
timm = require("timm", "timm is not installed", TORCH)

from timm.models import convmixer as timm_convmixer  # noqa: E402

from dog_jax.timm_models import CONVMIXER_ARCHITECTURE, dog_jax_convmixer, register_timm_models  # noqa: E402


def _shapes(model):
    return {name: tuple(value.shape) for name, value in model.state_dict().items()}


def test_registration_is_idempotent_and_builds_any_size():
    register_timm_models()
    register_timm_models()  # a second call changes nothing
    assert timm.is_model(CONVMIXER_ARCHITECTURE) and CONVMIXER_ARCHITECTURE == "dog_jax_convmixer"
    built = timm.create_model("dog_jax_convmixer", dim=8, depth=1, kernel_size=3, patch_size=2,
                              activation="relu", num_classes=5)
    assert isinstance(built, timm_convmixer.ConvMixer) and isinstance(built.blocks[0][2], torch.nn.ReLU)
    assert built.head.out_features == 5


def test_the_state_dict_is_timms_convmixer_of_the_same_size():
    """The names and shapes an export writes are those of timm's ConvMixer class (GELU by default)."""
    ours = dog_jax_convmixer(dim=16, depth=2, kernel_size=5, patch_size=4)
    theirs = timm_convmixer.ConvMixer(dim=16, depth=2, kernel_size=5, patch_size=4)
    assert _shapes(ours) == _shapes(theirs)
    assert isinstance(ours.blocks[0][0].fn[1], torch.nn.GELU)
    assert _shapes(ours)["blocks.1.0.fn.0.weight"] == (16, 1, 5, 5)  # depthwise, 5x5


def test_an_unknown_activation_is_one_line():
    with pytest.raises(ValueError, match="activation must be one of gelu, relu, got 'silu'"):
        dog_jax_convmixer(dim=8, depth=1, activation="silu")
