"""The studies compare inits paired by seed: runs of one seed that differ only in ``dw_init`` start
from the same parameters but for the depthwise kernels, with the same drop-path random state and the
same input batches (configs/sweeps/fashion_mnist.py relies on it; mixup/CutMix draw from key(seed) and
the step, dog_jax/train/steps.py)."""

import jax
import numpy as np
import pytest
from flax import nnx

from dog_jax.train import run_setup, run_spec, sharding
from tests.support.configs import load, resolved, tiny_config

_TINY_OVERRIDES = {"convmixer": {"width": 16, "depth": 2},
                   "convnext": {"dims": (8, 16, 24, 32), "depths": (1, 1, 1, 1)}}


def _model_state(family: str, dw_init: str, seed: int):
    config = load(family, "demo")
    for key, value in _TINY_OVERRIDES[family].items():
        config.model_overrides[key] = value
    config.dw_init, config.seed = dw_init, seed
    if family == "convnext":
        config.drop_path_rate = 0.1  # so that the drop-path stream exists
    model = resolved(config).model.create(10)
    def host(variable):
        value = variable[...] if isinstance(variable, nnx.Variable) else variable
        return np.asarray(jax.random.key_data(value) if jax.dtypes.issubdtype(value.dtype, jax.dtypes.prng_key)
                          else value)

    return {"/".join(map(str, path)): host(value)
            for path, value in nnx.to_flat_state(nnx.state(model))}  # parameters, statistics, RNG state


@pytest.mark.parametrize("family", ["convmixer", "convnext"])
def test_a_seeds_models_differ_only_in_their_depthwise_kernels(family):
    states = {init: _model_state(family, init, seed=3) for init in ("he_normal", "reference", "dog")}
    names = set(states["dog"])
    assert all(set(state) == names for state in states.values())
    depthwise = {name for name in names if name.endswith("dw/kernel") or name.endswith("dwconv/kernel")}
    assert depthwise and any("rngs" in name or "dropout" in name for name in names) == (family == "convnext")
    for name in names - depthwise:  # every other parameter and the drop-path random state
        for init in ("he_normal", "reference"):
            np.testing.assert_array_equal(states[init][name], states["dog"][name], err_msg=f"{init}: {name}")
    for name in depthwise:
        assert not np.array_equal(states["reference"][name], states["dog"][name]), name
    other_seed = _model_state(family, "dog", seed=4)
    assert any(not np.array_equal(other_seed[name], states["dog"][name]) for name in names - depthwise)


def test_a_seeds_input_batches_do_not_depend_on_the_init(tiny_data_dir):
    def first_batches(dw_init, seed):  # as the trainer builds them (dog_jax/train/loop.py)
        config = tiny_config(tiny_data_dir, dw_init=dw_init, seed=seed)
        builder, facts = run_setup.open_dataset(config)
        spec = run_spec.resolve(config, run_spec.check(config, device_count=1), facts, device_count=1)
        train, _ = run_setup.input_streams(spec, builder, sharding.create_mesh(), start_step=0)
        return list(train.take(2).as_numpy_iterator())

    dog, reference = first_batches("dog", 0), first_batches("reference", 0)
    for a, b in zip(dog, reference):
        for key in a:
            np.testing.assert_array_equal(np.asarray(a[key]), np.asarray(b[key]), err_msg=key)
    assert not np.array_equal(np.asarray(first_batches("dog", 1)[0]["image"]), np.asarray(dog[0]["image"]))
