"""Saved train states read back raw, and compared bit for bit."""


import chex
import numpy as np
import orbax.checkpoint as ocp

from dog_jax import storage


def load_state(workdir, step):
    """The raw saved train state (numpy leaves, no target) of ``workdir``'s checkpoint ``step``;
    read as host arrays, so it works whatever device count wrote it or reads it."""
    import jax
    path = storage.run_path(storage.join(workdir, "checkpoints", str(step), "state"))  # local or gs://
    with ocp.PyTreeCheckpointer() as checkpointer:
        tree = checkpointer.metadata(path).item_metadata.tree
        as_numpy = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
        return checkpointer.restore(path, args=ocp.args.PyTreeRestore(restore_args=as_numpy))


def save_orbax_states(root, states):
    """Saves ``{step: state}`` under ``root`` with an orbax CheckpointManager (item "default"); waits for it."""
    with ocp.CheckpointManager(root) as manager:
        for step, state in states.items():
            manager.save(step, args=ocp.args.StandardSave(state))
        manager.wait_until_finished()


def assert_bitwise_equal(got, expected):
    """The same tree, and every leaf of the same dtype, shape and bytes (chex names the first leaf that differs)."""
    chex.assert_trees_all_equal_comparator(_same_bits, _bits_differ, got, expected)


def _same_bits(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def _bits_differ(a, b):
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype != b.dtype or a.shape != b.shape:
        return f"{a.dtype}{list(a.shape)} vs {b.dtype}{list(b.shape)}"
    return f"bits differ (max abs diff {np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))})"
