"""An interrupted save's temporary folder is removed when the trainer's checkpointer opens."""

import jax.numpy as jnp
import orbax.checkpoint as ocp

from dog_jax.train.checkpoint import Checkpointer


def test_unfinished_save_is_removed_and_finished_steps_stay(tmp_path):
    directory = tmp_path / "checkpoints"
    state = {"step": jnp.asarray(1), "params": {"w": jnp.ones((2, 3))}}
    ckpt = Checkpointer(str(directory), keep=2, asynchronous=False)
    assert ckpt.save(1, state, {"model": "m"})
    ckpt.close()
    # The name orbax gives a save in progress (its public suffix), as a killed process leaves it.
    unfinished = directory / f"2{ocp.step.TMP_DIR_SUFFIX}1234"
    unfinished.mkdir()
    (unfinished / "state").mkdir()
    assert ocp.step.tmp_checkpoints(directory) == [unfinished.name]

    ckpt = Checkpointer(str(directory), keep=2, asynchronous=False)
    assert not unfinished.exists()
    assert ckpt.all_steps() == [1]
    assert ckpt.latest_step() == 1
    ckpt.close()
