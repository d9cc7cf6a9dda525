"""dog_jax.orbax_items: finished steps found, items restored raw (all or some keys), absl quieted."""

import logging

import numpy as np
import pytest

from dog_jax.checkpoints import CheckpointError
from dog_jax.orbax_items import latest_step_dir, quiet_absl, restore_pytree
from dog_jax.storage import run_path
from tests.support.checkpoints import save_orbax_states


def test_latest_step_dir_takes_the_largest_finished_step(tmp_path):
    for name, finished in (("5", True), ("40", True), ("ckpt_12", True), ("70", False),
                           ("90.orbax-checkpoint-tmp-1", True)):
        (tmp_path / name).mkdir()
        if finished:
            (tmp_path / name / "_CHECKPOINT_METADATA").write_text("{}")
    assert latest_step_dir(run_path(tmp_path)).name == "40"  # 70 unfinished, 90 a temporary save
    assert latest_step_dir(run_path(tmp_path / "5")) is None


def test_quiet_absl_restores_the_level_also_after_an_error():
    logger = logging.getLogger("absl")
    before = logger.level
    with pytest.raises(RuntimeError):
        with quiet_absl():
            assert logger.level == logging.ERROR
            raise RuntimeError("inside")
    assert logger.level == before


def test_restore_pytree_reads_only_the_keys_asked_for(tmp_path):
    import jax.numpy as jnp

    save_orbax_states(tmp_path / "ckpt", {1: {"params": {"w": jnp.ones((2, 3))}, "opt_state": {"mu": jnp.zeros(4)}}})
    item = run_path(tmp_path / "ckpt" / "1" / "default")
    assert set(restore_pytree(item)) == {"params", "opt_state"}
    partial = restore_pytree(item, keys=("params", "batch_stats"))
    assert set(partial) == {"params"} and isinstance(partial["params"]["w"], np.ndarray)
    with pytest.raises(CheckpointError, match="could not restore the orbax checkpoint|describes no arrays"):
        restore_pytree(run_path(tmp_path / "ckpt" / "1"))  # a step directory is not an item
