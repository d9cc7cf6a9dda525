"""The trainer: config schema, optimizer, sharding, jitted steps, checkpoints, logging, loop.

Entry point: :func:`train_and_evaluate` (``python train.py --config=... --workdir=...``).
"""

from dog_jax._extras import require

require("dog_jax.train", "train", "tensorflow", "tensorflow_datasets", "optax", "orbax", "ml_collections")

from dog_jax.train.config import ConfigError, base_config, parse_config_string, validate
from dog_jax.train.checkpoint import CheckpointError
from dog_jax.train.loop import train_and_evaluate
from dog_jax.train.reporting import NonFiniteError
from dog_jax.train.restore import restore_model

__all__ = ["CheckpointError", "ConfigError", "NonFiniteError", "base_config", "parse_config_string",
           "restore_model", "train_and_evaluate", "validate"]
