"""The run spec: a training config resolved once into what every consumer of it needs.

A config (``configs/*.py``) names things: a registered model and its overrides, a precision, a
number of epochs. What runs needs them resolved: the architecture dataclass those names build, the
compute dtype, the steps those epochs come to at this batch on this dataset. That happens here, in
two stages, and nowhere else:

1. :func:`check` -- before any data is read: the config's field checks (:func:`dog_jax.train.config.validate`)
   and the model fields resolved into a :class:`ModelSpec` (an unknown model, override or a patch
   larger than the image fails here, as one line);
2. :func:`resolve` -- once the dataset's facts are known (:class:`DataFacts`): a :class:`RunSpec`
   with the plan's sizes (:class:`RunPlan`).

The trainer (``loop``, ``run_setup``), the TPU compile (``aot``), the provenance record, and the
readers of a finished run (``restore``, ``dog_jax.evaluate``, ``dog_jax.export``) receive a spec and
read from it; none of them looks a model up or maps a precision again. A checkpoint saves the
spec's :meth:`RunSpec.model_info`, which a resume compares with its own (``checkpoint.py``); a
finished run's readers make a :class:`ModelSpec` from its saved config with :func:`model_spec`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp
import ml_collections
from flax import nnx

from dog_jax import initializers, models
from dog_jax.models.remat import set_remat
from dog_jax.train import config as config_lib

# config.precision -> the compute dtype (parameters are always float32).
COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
# A schedule needs a length even when the dataset's size is unknown (the TPU compile of a dataset not
# prepared here): one nominal epoch of this many steps (the compiled program depends on the
# schedule's constants, not on its length).
NOMINAL_STEPS_PER_EPOCH = 1000


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """The model a config builds: registered name, resolved architecture, init, dtypes, seed.

    Attributes:
      name: the registered name (``config.model``).
      overrides: ``create_model`` architecture overrides: ``config.model_overrides`` plus ``dw_param``
        when it is not "free" (a "free" run leaves it out, so configs and checkpoints written before
        the field existed read the same). JSON values; saved with every checkpoint.
      architecture: the family's frozen config dataclass with the overrides applied.
      registered: the same without overrides (the registered size).
      dw_init, dog: depthwise init name and the DoG settings (``config.dog`` as a dict).
      drop_path_rate: stochastic depth of the last block.
      compute_dtype, param_dtype: ``config.precision``'s dtype, float32.
      remat: per-block activation checkpointing.
      seed: draws the init (``params``) and drop path (``dropout``, seed + 1).
    """

    name: str
    overrides: dict[str, Any]
    architecture: Any
    registered: Any
    dw_init: str
    dog: dict[str, Any]
    drop_path_rate: float
    compute_dtype: Any
    param_dtype: Any
    remat: bool
    seed: int

    @property
    def in_chans(self) -> int:
        return self.architecture.in_chans

    def describe(self) -> str:
        """The name, with the overrides when there are any (they can resize the model: the demo configs)."""
        return self.name + (" with " + ", ".join(f"{k}={v}" for k, v in self.overrides.items())
                            if self.overrides else "")

    def depthwise_initializer(self):
        """``create_model``'s ``dw_init``: the DoG initializer with ``dog``'s settings, else the name."""
        if self.dw_init == "dog":
            return initializers.dog(tuple(self.dog["gamma_range"]), self.dog["on_fraction"], norm=self.dog["norm"],
                                    balanced=self.dog["balanced"])
        return self.dw_init

    def create(self, num_classes: int) -> nnx.Module:
        """The model at step 0 (random init from ``seed``), in training mode."""
        model = models.create_model(
            self.name, num_classes=num_classes, dw_init=self.depthwise_initializer(),
            drop_path_rate=self.drop_path_rate, dtype=self.compute_dtype, param_dtype=self.param_dtype,
            rngs=nnx.Rngs(params=self.seed, dropout=self.seed + 1), **self.overrides)
        return set_remat(model, self.remat)

    def abstract(self, num_classes: int, *, inference: bool = False) -> nnx.Module:
        """:meth:`create` without allocating (``nnx.eval_shape``); ``inference``: drop path off (its RNG
        state is not in checkpoints, and inference never drops paths)."""
        spec = dataclasses.replace(self, drop_path_rate=0.0) if inference else self
        return nnx.eval_shape(lambda: spec.create(num_classes))


@dataclasses.dataclass(frozen=True)
class DataFacts:
    """What the dataset says: its classes and its split sizes (None where only prepared data knows)."""

    num_classes: int
    train_examples: int | None
    eval_examples: int | None


@dataclasses.dataclass(frozen=True)
class RunPlan:
    """Sizes derived from the config, the dataset and the devices.

    ``train_examples`` / ``eval_examples`` are 0 where the dataset's sizes are unknown (then
    ``steps_per_epoch`` is :data:`NOMINAL_STEPS_PER_EPOCH`). Batches are in examples: ``global_batch``
    over all devices and processes, ``local_batch_size`` of this process. ``data_shards``: the
    training split's shards (``config.data_shards``, or one per device).

    ``grad_accum_steps`` (k, ``config.grad_accum_steps``): each optimizer step's ``global_batch`` is
    taken as k micro-batches of ``micro_batch`` examples (``dog_jax.train.accumulate``); steps count
    optimizer steps. Evaluation is not accumulated: the eval batch is the micro-batch
    (``eval_batch`` over all processes, ``local_eval_batch_size`` of this process), the largest batch
    the train step's model pass is known to hold, so that evaluation needs no more memory than training.
    """

    num_classes: int
    train_examples: int
    eval_examples: int
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int
    eval_every: int
    checkpoint_every: int
    global_batch: int
    local_batch_size: int
    data_shards: int
    grad_accum_steps: int = 1

    @property
    def micro_batch(self) -> int:
        """Examples per micro-batch over all devices: ``global_batch / grad_accum_steps``."""
        return self.global_batch // self.grad_accum_steps

    @property
    def eval_batch(self) -> int:
        """The global eval batch: the micro-batch (class docstring)."""
        return self.micro_batch

    @property
    def local_eval_batch_size(self) -> int:
        """This process's eval batch."""
        return self.local_batch_size // self.grad_accum_steps


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """A training run resolved: the config (for its plain fields: optimizer, augmentation, intervals,
    ...), its model and its plan. Made by :func:`resolve`; the config is a locked copy."""

    config: ml_collections.ConfigDict
    model: ModelSpec
    plan: RunPlan
    devices: int
    processes: int

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(height, width, channels) of an input image, as the model takes it."""
        return self.config.image_size, self.config.image_size, self.model.in_chans

    def model_info(self, step: int, *, run_facts: bool = True) -> dict[str, Any]:
        """What a reader needs to rebuild the model of a checkpoint (saved next to it; a resume compares
        its ``model`` / ``model_overrides`` / ``num_classes`` with the checkpoint's).

        ``run_facts``: with the run's device and data shard counts and its micro-batches per step, so
        that a resume on another device count or accumulation can say what changes.
        """
        c = self.config
        run = {"devices": self.devices, "data_shards": self.plan.data_shards,
               "grad_accum_steps": self.plan.grad_accum_steps} if run_facts else {}
        return {**run, "model": self.model.name, "model_overrides": dict(self.model.overrides),
                # A reader of basis-parameterised kernels needs the size, which the parameters lack.
                "dw_kernel_size": self.model.architecture.kernel_size,
                "num_classes": self.plan.num_classes, "dw_init": self.model.dw_init, "dog": dict(self.model.dog),
                "image_size": c.image_size, "dataset": c.dataset, "step": step,
                "params_key": "state/params", "ema_decay": c.ema_decay,
                **({"ema_params_key": "state/ema/params"} if c.ema_decay > 0 else {})}

    def at_batch_size(self, global_batch: int, grad_accum_steps: int | None = None) -> RunSpec:
        """This run at another global batch and/or number of micro-batches (default: this run's); the TPU
        compile's searches for a batch, or an accumulation, that fits."""
        config = self.config.copy_and_resolve_references()
        with config.unlocked():  # a saved config of before the field has no grad_accum_steps
            config.batch_size = global_batch
            config.grad_accum_steps = self.plan.grad_accum_steps if grad_accum_steps is None else grad_accum_steps
        data = DataFacts(self.plan.num_classes, self.plan.train_examples or None, self.plan.eval_examples or None)
        return dataclasses.replace(self, config=config, plan=_plan(config, data, self.devices, self.processes))


def _architecture_overrides(config: ml_collections.ConfigDict) -> dict[str, Any]:
    overrides = config.model_overrides.to_dict()
    dw_param = config.get("dw_param", "free")  # configs saved before the field existed: "free"
    if dw_param != "free":
        overrides["dw_param"] = dw_param
    return overrides


def model_spec(config: ml_collections.ConfigDict) -> ModelSpec:
    """The :class:`ModelSpec` of ``config`` (a training config, or a finished run's saved one).

    Raises:
      ConfigError: an unknown model, an override it does not take, or an image smaller than its patch.
    """
    try:
        registered = models.get_model_config(config.model)
    except ValueError as error:
        raise config_lib.ConfigError(f"config.model: {error}") from None
    overrides = _architecture_overrides(config)
    try:
        architecture = models.get_model_config(config.model, **overrides)
    except (ValueError, TypeError) as error:
        raise config_lib.ConfigError(f"config.model_overrides: {error}") from None
    if config.image_size < architecture.patch_size:
        raise config_lib.ConfigError(
            f"config.image_size={config.image_size} is smaller than the model's patch size "
            f"{architecture.patch_size}; raise image_size or lower model_overrides.patch_size.")
    return ModelSpec(
        name=config.model, overrides=overrides, architecture=architecture, registered=registered,
        dw_init=config.dw_init, dog=config.dog.to_dict(), drop_path_rate=config.drop_path_rate,
        compute_dtype=COMPUTE_DTYPES[config.precision], param_dtype=jnp.float32,
        remat=bool(config.get("remat", False)),  # older saved configs have no remat field
        seed=config.seed)


def check(config: ml_collections.ConfigDict, *, device_count: int, process_count: int = 1) -> ModelSpec:
    """Stage 1 (module docstring): every check that needs no data; returns the model's spec.

    Raises:
      ConfigError: the first wrong value, in one line naming the field and the fix.
    """
    config_lib.validate(config, device_count=device_count, process_count=process_count)
    return model_spec(config)


def _plan(config: ml_collections.ConfigDict, data: DataFacts, devices: int, processes: int) -> RunPlan:
    if data.train_examples is not None and data.train_examples < config.batch_size:
        raise config_lib.ConfigError(
            f"config.batch_size={config.batch_size} exceeds the {data.train_examples} examples of "
            f"{config.dataset}:{config.train_split}; lower config.batch_size.")
    steps_per_epoch = (data.train_examples // config.batch_size if data.train_examples is not None
                       else NOMINAL_STEPS_PER_EPOCH)
    return RunPlan(
        num_classes=data.num_classes, train_examples=data.train_examples or 0,
        eval_examples=data.eval_examples or 0, steps_per_epoch=steps_per_epoch,
        total_steps=config.num_train_steps or max(1, int(round(config.num_epochs * steps_per_epoch))),
        warmup_steps=int(round(config.optimizer.warmup_epochs * steps_per_epoch)),
        eval_every=config.eval_every_steps or steps_per_epoch,
        checkpoint_every=config.checkpoint_every_steps or steps_per_epoch,
        global_batch=config.batch_size, local_batch_size=config.batch_size // processes,
        data_shards=config.data_shards or devices,  # default: one data shard per device
        grad_accum_steps=config.get("grad_accum_steps", 1))  # configs saved before the field existed: 1


def resolve(config: ml_collections.ConfigDict, model: ModelSpec, data: DataFacts, *, device_count: int,
            process_count: int = 1) -> RunSpec:
    """Stage 2 (module docstring): the run of ``config`` (checked by :func:`check`, which gave ``model``)
    on a dataset with the facts ``data``, over ``device_count`` devices in ``process_count`` processes.

    Raises:
      ConfigError: a global batch larger than the training split.
    """
    config = config.copy_and_resolve_references()
    config.lock()
    return RunSpec(config=config, model=model, plan=_plan(config, data, device_count, process_count),
                   devices=device_count, processes=process_count)
