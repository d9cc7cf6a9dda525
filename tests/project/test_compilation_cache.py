"""The test run's persistent compilation cache (tests/conftest.py) changes no number.

Every trainer test compiles its steps through one JAX compilation cache shared by the pytest
workers and the train.py subprocesses they start, so a run compared bit for bit with another
(resume, preemption, lease, multi-process tests) often executes a program loaded from the cache
while the other compiled it. This holds only if a loaded executable computes exactly what a fresh
compile does: checked here on the trainer's own train step (mixup/CutMix, BatchNorm, AdamW, clipping).
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dog_jax import data
from dog_jax.train import optim, sharding, steps
from tests.support.checkpoints import assert_bitwise_equal
from tests.support.models import tiny_convmixer
from tests.support.shared import scratch


def test_the_cache_is_on_for_this_process_and_its_subprocesses():
    directory = os.environ.get("JAX_COMPILATION_CACHE_DIR")
    assert directory == scratch("jax_cache")  # inherited by every process the tests start
    assert jax.config.jax_compilation_cache_dir == directory and jax.config.jax_enable_compilation_cache
    # Every compile is kept (JAX's default keeps those over 1 s: under the suite's flags, few).
    assert jax.config.jax_persistent_cache_min_compile_time_secs == 0
    assert os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] == "0"


@pytest.fixture
def private_cache(tmp_path):
    """A compilation cache of this test's own, caching every compile (however short); the suite's put back after."""
    from jax.experimental.compilation_cache import compilation_cache

    names = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs")
    saved = {name: getattr(jax.config, name) for name in names}
    jax.config.update("jax_compilation_cache_dir", str(tmp_path / "cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    compilation_cache.reset_cache()  # the cache's directory is read once, at the next compile
    yield
    for name, value in saved.items():
        jax.config.update(name, value)
    compilation_cache.reset_cache()


def test_a_train_step_loaded_from_the_cache_computes_what_a_fresh_compile_does(private_cache):
    mesh = sharding.create_mesh()
    tx = optim.create_optimizer(learning_rate=optim.UNIT_LEARNING_RATE, weight_decay=0.05)
    parts, state = steps.init_train_state(tiny_convmixer, tx, mesh)
    initial = jax.device_get(state)
    rng = np.random.default_rng(0)
    batch = sharding.global_batch({"image": rng.normal(size=(8, 8, 8, 3)).astype(np.float32),
                                   "label": rng.integers(0, 10, 8).astype(np.int32)}, mesh)
    events = []

    def record(event, **kwargs):
        if event in ("/jax/compilation_cache/cache_hits", "/jax/compilation_cache/cache_misses"):
            events.append(event.rsplit("/", 1)[1])

    def step_once():
        """A newly built and traced train step (so compiled, or loaded) applied to the same state and batch."""
        jax.clear_caches()  # nothing reused from this process's memory: only the persistent cache
        train_step = steps.make_train_step(parts, tx, lambda step: 1e-2, num_classes=10,
                                           mix=data.MixConfig(mixup_alpha=0.5, cutmix_alpha=0.5),
                                           compute_dtype=jnp.float32, seed=0, mesh=mesh)
        events.clear()
        new_state, metrics = train_step(jax.device_put(initial, sharding.replicated(mesh)), batch, parts.rng_state)
        return jax.device_get((new_state, metrics)), list(events)

    jax.monitoring.register_event_listener(record)
    try:
        fresh, fresh_events = step_once()
        loaded, loaded_events = step_once()
    finally:
        jax.monitoring.unregister_event_listener(record)
    assert "cache_misses" in fresh_events and "cache_hits" not in fresh_events, fresh_events
    assert "cache_hits" in loaded_events and "cache_misses" not in loaded_events, loaded_events
    assert not np.array_equal(fresh[0]["params"]["head"]["kernel"], initial["params"]["head"]["kernel"])  # it trained
    assert_bitwise_equal(loaded, fresh)
