"""Workdirs for the export / restore / eval-only tests, written by the trainer's own code.

``saved_workdir`` builds the train state as ``train_and_evaluate`` does (``steps.init_train_state``),
perturbs every parameter and BatchNorm statistic (a fresh ConvNeXt's layer scale of 1e-6 would hide
its blocks from an output comparison), and saves it with the trainer's ``Checkpointer`` and
``RunSpec.model_info``, plus the ``config.json`` the trainer writes: a workdir without a training run.
"""

import json
import os

import jax
import numpy as np

from dog_jax.train import optim, sharding, steps
from dog_jax.train.checkpoint import Checkpointer
from tests.support.configs import load, resolved


def tiny_family_config(family: str, *, dw_param: str = "free", ema_decay: float = 0.0):
    """A config of ``configs/<family>.py`` with a tiny architecture (32 px, a few channels)."""
    c = load({"convnextv2": "convnext"}.get(family, family), "demo")
    if family == "convmixer":
        c.model_overrides.width, c.model_overrides.depth = 16, 2
        c.model_overrides.kernel_size, c.model_overrides.patch_size = 5, 4
    else:
        names = {"convnext": "convnext_atto", "convnextv2": "convnextv2_atto", "hornet": "hornet_tiny_7x7"}
        c.model = names[family]
        c.model_overrides.depths, c.model_overrides.dims = (1, 1, 2, 1), (8, 16, 24, 32)
    c.dw_param = dw_param
    c.ema_decay = ema_decay
    return c


def saved_workdir(workdir: str, config, *, num_classes: int = 10, step: int = 3, seed: int = 0) -> dict:
    """Writes ``workdir`` (checkpoint at ``step`` + config.json); returns the saved state on the host."""
    spec = resolved(config, num_classes)
    tx = optim.create_optimizer(learning_rate=optim.UNIT_LEARNING_RATE, weight_decay=0.05)
    mesh = sharding.create_mesh()
    _, state = steps.init_train_state(lambda: spec.model.create(num_classes), tx, mesh,
                                      ema=config.ema_decay > 0)
    rng = np.random.default_rng(seed)
    host = jax.device_get(state)

    def perturb(x):
        x = np.asarray(x)
        if x.dtype != np.float32:
            return x
        noise = rng.normal(scale=0.2, size=x.shape).astype(np.float32)
        return np.abs(x + noise) + 0.5 if x.ndim == 1 and np.all(x >= 0) else x + noise  # variances stay > 0

    for key in ("params", "batch_stats", "ema"):
        if key in host:
            host[key] = jax.tree.map(perturb, host[key])
    state = jax.device_put(host, sharding.replicated(mesh))
    checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"), keep=3, asynchronous=False)
    checkpointer.save(step, state, spec.model_info(step, run_facts=False))
    checkpointer.wait()
    checkpointer.close()
    with open(os.path.join(workdir, "config.json"), "w") as f:
        json.dump(config.to_dict(), f)
    return host
