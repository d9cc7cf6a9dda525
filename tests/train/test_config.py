"""dog_jax.train.config: validation of a config, to one line per mistake (the recipes themselves:
tests/configs/)."""

import re

import pytest

from dog_jax.train import config as config_lib
from dog_jax.train import run_spec
from tests.support.configs import load


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
    ({"profile_steps": "5:3"}, "config.profile_steps='5:3' must be 'FIRST:LAST' with 1 <= FIRST <= LAST"),
    ({"profile_steps": "0:3"}, "config.profile_steps='0:3' must be 'FIRST:LAST'"),
    ({"profile_steps": "100"}, "config.profile_steps='100' must be 'FIRST:LAST'"),
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
        run_spec.check(c, device_count=8)
    assert "\n" not in str(info.value)


def test_profile_steps_are_parsed():
    from dog_jax.train.profiling import parse_profile_steps

    assert parse_profile_steps("") is None and parse_profile_steps("100:105") == (100, 105)
    assert parse_profile_steps(" 7 : 7 ") == (7, 7)
    config_lib.validate(load("convmixer"), device_count=8)  # the default: no profile
