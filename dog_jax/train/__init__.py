"""The trainer: config schema, optimizer, sharding, jitted steps, checkpoints, logging, loop.

Entry point: :func:`train_and_evaluate` (``python train.py --config=... --workdir=...``).
"""

from dog_jax.train.config import ConfigError, base_config, parse_config_string, validate
from dog_jax.train.loop import train_and_evaluate

__all__ = ["ConfigError", "base_config", "parse_config_string", "train_and_evaluate", "validate"]
