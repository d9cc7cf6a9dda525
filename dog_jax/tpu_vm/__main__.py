"""``python -m dog_jax.tpu_vm``: see :mod:`dog_jax.tpu_vm.cli`."""

import sys

from dog_jax.tpu_vm.cli import main

sys.exit(main())
