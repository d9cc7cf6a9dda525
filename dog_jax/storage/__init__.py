"""Run paths that may be local directories or ``gs://`` buckets, and the storage clients behind them.

* :mod:`dog_jax.storage.paths` -- the one path abstraction for every run path (workdirs, data
  dirs, checkpoints, exports): ``etils.epath``, never ``pathlib``/``open``/``os.path``.
* :mod:`dog_jax.storage.conditional` -- create-if-absent, replace/delete-if-unchanged of one small
  object, local or ``gs://`` (the workdir lease, :mod:`dog_jax.train.lease`).
* :mod:`dog_jax.storage.emulator` -- :func:`configure`: real Cloud Storage, or every layer pointed
  at a local emulator named by ``STORAGE_EMULATOR_HOST``.
* :mod:`dog_jax.storage.tls_bridge` -- the loopback proxy that lets TensorFlow's GCS client reach
  that emulator.
"""

from dog_jax.storage.emulator import EMULATOR_VARIABLE, StorageConfigError, configure
from dog_jax.storage.paths import (absolute, files_under, is_url, join, make_dirs, move, read_text, run_path,
                                   write_bytes, write_text)

__all__ = ["EMULATOR_VARIABLE", "StorageConfigError", "absolute", "configure", "files_under", "is_url", "join",
           "make_dirs", "move", "read_text", "run_path", "write_bytes", "write_text"]
