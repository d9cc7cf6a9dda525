"""Orbax pytree items read without a target: what the checkpoint reader, the trainer's restore and the
kernel analysis share (host numpy arrays, no sharding, no model).

* :func:`latest_step_dir` — the newest finished step of a CheckpointManager root;
* :func:`restore_pytree` — one item directory as a pytree of numpy arrays (optionally some keys);
* :func:`quiet_absl` — orbax's expected absl warnings silenced for a block.

Failures are :class:`dog_jax.checkpoint_error.CheckpointError` with one line for the user.
"""

from __future__ import annotations

import contextlib
import logging
import re
from typing import Any, Iterator

import numpy as np
from etils import epath

from dog_jax.checkpoint_error import CheckpointError, first_line
from dog_jax.storage import run_path

Path = epath.Path  # local or gs:// (dog_jax.storage)

_STEP_DIR = re.compile(r"^(?:.*_)?(\d+)$")


# orbax 0.12 has no public "is this directory a checkpoint?" call for a path given by a user, so the
# reader recognises the files its format guide documents: an item (PyTree) directory holds
# `_METADATA` (or an OCDBT `manifest.ocdbt`), a CheckpointManager step `_CHECKPOINT_METADATA`, and an
# unfinished save is a `<step>.orbax-checkpoint-tmp-*` directory (tests/analysis/test_readers.py).
def is_item(path: Path) -> bool:
    return (path / "_METADATA").is_file() or (path / "manifest.ocdbt").is_file()


def is_step(path: Path) -> bool:
    return (path / "_CHECKPOINT_METADATA").is_file() or any(
        is_item(p) for p in path.iterdir() if p.is_dir())


def latest_step_dir(root: Path) -> Path | None:
    """The finished step directory with the largest step number under a CheckpointManager root."""
    steps = []
    for p in root.iterdir():
        m = _STEP_DIR.match(p.name)
        # Unfinished saves are written to "<step>.orbax-checkpoint-tmp-*" and do not match.
        if m and p.is_dir() and is_step(p):
            steps.append((int(m.group(1)), p))
    return max(steps)[1] if steps else None


@contextlib.contextmanager
def quiet_absl(level: int = logging.ERROR) -> Iterator[None]:
    """Raise the absl logger's level to ``level`` for the duration (restored afterwards): orbax's
    expected warnings, or its traceback of a failure that reaches the user as one line."""
    logger = logging.getLogger("absl")
    previous = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(previous)


def restore_pytree(item_dir: Path, keys: tuple[str, ...] | None = None) -> Any:
    """Restore one orbax pytree item as host numpy arrays, with no target and no sharding.

    ``keys``: restore only these top-level entries of a dict item (e.g. ``("params",
    "batch_stats")`` of a train state, leaving the optimizer state on disk); missing ones are
    left out of the result.
    """
    import jax
    import orbax.checkpoint as ocp
    from orbax.checkpoint import metadata as ocp_metadata

    # orbax reads a relative directory's metadata as empty (no error), so hand it an absolute one.
    item_dir = run_path(item_dir)
    checkpointer = ocp.PyTreeCheckpointer()
    try:
        with quiet_absl():  # orbax warns that an item directory has no step metadata: expected here.
            meta = checkpointer.metadata(item_dir)
            tree = getattr(getattr(meta, "item_metadata", None), "tree", None) or getattr(meta, "tree", None)
            if not tree:
                raise CheckpointError(f"{item_dir}: its orbax metadata describes no arrays (a corrupt or unfinished "
                                      "save, or not a PyTree/Standard checkpoint).")
            if keys is not None:
                tree = {key: value for key, value in tree.items() if key in keys}
            restore_args = jax.tree.map(
                lambda m: ocp.RestoreArgs(restore_type=np.ndarray)
                if isinstance(m, ocp_metadata.ArrayMetadata) else ocp.RestoreArgs(),
                tree)
            args = ocp.args.PyTreeRestore(item=tree, restore_args=restore_args, partial_restore=True) \
                if keys is not None else ocp.args.PyTreeRestore(restore_args=restore_args)
            return checkpointer.restore(item_dir, args=args)
    except CheckpointError:
        raise
    except Exception as e:  # orbax raises many types; the user needs one line, not a stack.
        raise CheckpointError(f"{item_dir}: could not restore the orbax checkpoint ({type(e).__name__}: "
                              f"{first_line(str(e))}).") from None
