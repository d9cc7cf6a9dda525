"""A training run on a Cloud TPU slice from a laptop: ``python -m dog_jax.tpu_vm create|setup|run|logs|stop|delete``.

* :mod:`~dog_jax.tpu_vm.slices`: slice names (``v5e-16``, ``v6e-8``, ``v4-8``) -> gcloud accelerator type,
  TPU VM image and the number of workers (TPU VMs), from ``dog_jax/train/tpu_topology.py``.
* :mod:`~dog_jax.tpu_vm.commands`: the exact ``gcloud`` (and ``git``) command lines of each subcommand.
* :mod:`~dog_jax.tpu_vm.cli`: the command line: checks its inputs (one ``error:`` line each), then
  prints the commands (``--dry-run``) or runs them.
* :mod:`~dog_jax.tpu_vm.worker`: runs on each TPU VM: starts ``train.py`` detached with one log per
  worker copied into ``<workdir>/logs/``, and stops it with SIGTERM.

The walk-through is docs/tpu.md; scripts/tpu_vm_setup.sh installs the project on each worker.
"""
