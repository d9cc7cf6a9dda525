"""The analysis reads checkpoints through :mod:`dog_jax.checkpoints` (shared with weight conversion)."""

from dog_jax.checkpoints import Checkpoint, CheckpointError, Progress, read_checkpoint, read_state_dict
from dog_jax.orbax_items import latest_step_dir

__all__ = ["Checkpoint", "CheckpointError", "Progress", "latest_step_dir", "read_checkpoint",
           "read_state_dict"]
