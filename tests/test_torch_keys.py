"""dog_jax.torch_keys: every variable of every model family has exactly one torch key, with a torch
shape of the same size, under each naming the family has. (What the keys are called is checked against
timm and the official code in tests/test_convert.py and tests/models/test_timm_parity.py; this file
needs no torch.)"""

from __future__ import annotations

import math

import pytest
from flax import nnx

from dog_jax.models import create_model
from dog_jax.torch_keys import NAMINGS, key_table, namings_for

# Tiny members of each family; ConvNeXt both with timm's 1×1-conv MLP (atto) and without (tiny).
MODELS = {
    "convmixer": ("convmixer_512_12", dict(width=8, depth=2, kernel_size=3, patch_size=4)),
    "convnext_conv_mlp": ("convnext_atto", dict(depths=(1, 1, 1, 1), dims=(8, 8, 8, 8))),
    "convnext": ("convnext_tiny", dict(depths=(1, 1, 1, 1), dims=(8, 8, 8, 8))),
    "convnextv2": ("convnextv2_atto", dict(depths=(1, 1, 1, 1), dims=(8, 8, 8, 8))),
    "hornet": ("hornet_tiny_7x7", dict(depths=(1, 1), dims=(16, 16), orders=(2, 5))),
}


def abstract(family: str):
    name, kwargs = MODELS[family]
    return nnx.eval_shape(lambda: create_model(name, rngs=nnx.Rngs(0), num_classes=5, **kwargs))


def variables(model) -> dict[int, tuple]:
    return {id(v): (path, v) for path, v in nnx.iter_graph(model) if isinstance(v, nnx.Variable)}


@pytest.mark.parametrize("family", sorted(MODELS))
def test_every_variable_has_one_key_of_its_size(family):
    model = abstract(family)
    owned = variables(model)
    for naming in namings_for(model):
        slots = key_table(model, naming).slots
        mapped = [id(s.variable) for s in slots.values() if s.variable is not None]
        assert len(mapped) == len(set(mapped)), f"{naming}: a variable has two keys"
        missing = [owned[i][0] for i in owned.keys() - set(mapped)]
        assert not missing, f"{naming}: variables without a torch key: {missing}"
        assert set(mapped) <= owned.keys(), f"{naming}: a key maps to a variable the model does not own"
        for key, slot in slots.items():
            if slot.variable is not None:
                assert math.prod(slot.torch_shape) == slot.variable.size, key
            else:  # BatchNorm's step counter: ConvMixer only
                assert slot.kind == "count" and key.endswith("num_batches_tracked")


def test_namings_differ_and_hornet_has_only_the_official_one():
    convnext = abstract("convnext")
    assert namings_for(convnext) == NAMINGS
    timm_keys, official_keys = (set(key_table(convnext, n).slots) for n in NAMINGS)
    assert len(timm_keys) == len(official_keys) and not timm_keys & official_keys
    hornet = abstract("hornet")
    assert namings_for(hornet) == ("official",)
    with pytest.raises(ValueError, match="naming='official'"):
        key_table(hornet, "timm")
