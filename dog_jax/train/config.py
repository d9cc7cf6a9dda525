"""The training configuration: its fields, config-string parsing, and validation.

Every ``configs/*.py`` file starts from :func:`base_config` and overrides the fields of
its model's recipe. The fields (all of them; unknown keys are rejected when the config
is locked by ``ml_collections``):

================================  ==========================================================
``model``                         registered name (``dog_jax.models.list_models()``)
``model_overrides``               architecture overrides passed to ``create_model``
``dw_init``                       depthwise kernel init: "reference", "dog", "kaiming", ...
``dw_param``                      depthwise kernels: "free" (k×k weights) or "basis" (a learned
                                  Gaussian-derivative + DoG mix, ``dog_jax.models.basis``)
``dog.*``                         DoG parameters: gamma_range, on_fraction, norm, balanced
``drop_path_rate``                stochastic depth of the last block
``ema_decay``                     model EMA (parameters and BatchNorm statistics) updated
                                  every step and evaluated beside the model; 0 = off
``dataset`` / ``data_dir``        tfds name, "dog_jax_demo" or "folder:/path"; tfds data dir
``manual_dir``                    ImageNet tar files (default ``<data_dir>/downloads/manual``)
``train_split`` / ``eval_split``  tfds split strings
``image_size`` / ``eval_crop_pct``  train/eval resolution; eval centre-crop fraction
``batch_size``                    *global* batch over all devices and processes
``grad_accum_steps``              micro-batches per optimizer step (gradient accumulation, the
                                  ConvNeXt code's ``--update_freq``): the global batch stays
                                  ``batch_size``, each micro-batch is ``batch_size / k``
                                  (``dog_jax.train.accumulate``; 1 = off)
``num_epochs`` / ``num_train_steps``  length; steps win when > 0
``optimizer.*``                   AdamW: learning_rate, weight_decay, b1, b2, eps,
                                  grad_clip_norm (0 = off), schedule ("cosine" | "onecycle"),
                                  warmup_epochs, min_learning_rate
``augment.*``                     crop_area_min, flip, rand_augment, random_erasing,
                                  mixup_alpha, cutmix_alpha, mix_prob, switch_prob,
                                  label_smoothing
``precision``                     "float32" or "bfloat16" (compute; parameters stay float32)
``remat``                         checkpoint every block's activations (recompute them in the
                                  backward pass): less memory, ~1 more forward pass of FLOPs
``log_every_steps``               console + TensorBoard training metrics
``eval_every_steps``              0 = once per epoch
``checkpoint_every_steps``        0 = once per epoch; always at the end
``keep_checkpoints``              last K kept (plus the best by eval top-1)
``checkpoint_timeout_s``          a checkpoint write still unfinished after this many seconds
                                  (storage unreachable: its clients retry for minutes) ends the
                                  run with one line; the last complete checkpoint stays
``lease_timeout_s``               a workdir lease (one writer per workdir) whose holder on another
                                  host sent no heartbeat for this long is taken over (default 600)
``lease_heartbeat_s``             the lease holder refreshes its heartbeat this often (default 60)
``data_shards``                   training split cut into this many shards, each feeding its
                                  own block of every global batch; 0 = one per device. Fix it
                                  (e.g. 8) to keep the data order when the device count changes;
                                  it must divide batch_size and be a multiple of the processes
``shuffle_buffer`` / ``cache_data``  shuffle buffer in examples over all shards (each buffers
                                  ``shuffle_buffer / data_shards``); cache the encoded training
                                  shards in RAM
``nonfinite_policy``               NaN/inf loss or gradient: "stop" (error naming the step)
                                  or "skip" (leave the state unchanged, count the step)
``profile_steps``                 "FIRST:LAST": a ``jax.profiler`` trace of those training steps
                                  into ``<workdir>/profile/`` ("" = none; ``train/profiling.py``)
``profile_all_processes``         trace on every process, not only process 0
``seed``                          model init, data order, augmentation, mixing, drop path
================================  ==========================================================
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import ml_collections

from dog_jax.initializers import INITIALIZER_NAMES

PRECISIONS = ("float32", "bfloat16")
SCHEDULES = ("cosine", "onecycle")
NONFINITE_POLICIES = ("stop", "skip")


class ConfigError(ValueError):
    """A configuration value is invalid; the message is one line naming the field and the fix."""


def base_config() -> ml_collections.ConfigDict:
    """Defaults shared by all configs: ImageNet-1k, 50 epochs (the paper), timm-style recipe."""
    c = ml_collections.ConfigDict()
    c.model = "convmixer_512_12"
    c.model_overrides = ml_collections.ConfigDict()
    c.dw_init = "reference"
    c.dw_param = "free"
    c.dog = ml_collections.ConfigDict(
        dict(gamma_range=(0.0, 0.5), on_fraction=0.5, norm="paper", balanced=True))
    c.drop_path_rate = 0.0
    c.ema_decay = 0.0

    c.dataset = "imagenet2012"
    c.data_dir = ml_collections.config_dict.placeholder(str)
    c.manual_dir = ml_collections.config_dict.placeholder(str)
    c.train_split = "train"
    c.eval_split = "validation"
    c.image_size = 224
    c.eval_crop_pct = 0.875
    c.data_shards = 0
    c.shuffle_buffer = 16_384
    c.cache_data = False

    c.batch_size = 1024
    c.grad_accum_steps = 1
    c.num_epochs = 50.0
    c.num_train_steps = 0

    c.optimizer = ml_collections.ConfigDict(dict(
        learning_rate=1e-3, weight_decay=0.05, b1=0.9, b2=0.999, eps=1e-8, grad_clip_norm=0.0,
        schedule="cosine", warmup_epochs=5.0, min_learning_rate=1e-6))
    c.augment = ml_collections.ConfigDict(dict(
        crop_area_min=0.08, flip=True, rand_augment="rand-m9-mstd0.5-inc1", random_erasing=0.25,
        mixup_alpha=0.8, cutmix_alpha=1.0, mix_prob=1.0, switch_prob=0.5, label_smoothing=0.1))

    c.precision = "float32"
    c.remat = False
    c.log_every_steps = 50
    c.eval_every_steps = 0
    c.checkpoint_every_steps = 0
    c.keep_checkpoints = 3
    c.checkpoint_timeout_s = 900
    c.lease_timeout_s = 600
    c.lease_heartbeat_s = 60
    c.nonfinite_policy = "stop"
    c.profile_steps = ""
    c.profile_all_processes = False
    c.seed = 0
    return c


def apply_demo_recipe(c: ml_collections.ConfigDict, *, epochs: float = 3.0) -> None:
    """The data and training settings every ``:demo`` config shares: the built-in 32 px
    ``dog_jax_demo`` dataset, batch 128, light augmentation (no mixup/CutMix), cached data,
    frequent logging. Each family config sets its small model and learning rate on top."""
    c.dataset = "dog_jax_demo"
    c.train_split, c.eval_split = "train", "test"
    c.image_size = 32
    c.eval_crop_pct = 1.0
    c.drop_path_rate = 0.0
    c.ema_decay = 0.0  # 0.9999 averages over ~10k steps; a demo run has a few hundred
    c.batch_size = 128
    c.num_epochs = epochs
    c.augment.crop_area_min = 0.35
    c.augment.rand_augment = "rand-m5-mstd0.5-inc1"
    c.augment.random_erasing = 0.1
    c.augment.mixup_alpha = 0.0
    c.augment.cutmix_alpha = 0.0
    c.shuffle_buffer = 4096
    c.cache_data = True
    c.log_every_steps = 25
    c.keep_checkpoints = 2


#: Config-string keys of the depthwise init in every family config: ``dw_init`` (the name of the config
#: field and of ``create_model``'s argument) and ``init``, its earlier spelling, still read.
DW_INIT_KEYS: dict[str, type] = {"dw_init": str, "init": str}


def dw_init_from_args(args: dict[str, object]) -> str:
    """The ``dw_init=`` of a parsed config string (or ``init=``, its earlier spelling); "reference" if none."""
    if "dw_init" in args and "init" in args:
        raise ConfigError("Give the depthwise init once, as dw_init=...; init= is its earlier spelling.")
    return str(args.get("dw_init", args.get("init", "reference")))


def convnext_codebase_recipe(args: Mapping[str, object], *, model: str, demo_model: str, drop_path_rate: float,
                             grad_clip_norm: float, demo_depths: tuple[int, ...]) -> ml_collections.ConfigDict:
    """The ImageNet recipe of the ConvNeXt code base, which HorNet's training code is built on, at the
    paper's 50 epochs (``configs/convnext.py`` and ``configs/hornet.py`` give its sources): AdamW lr 4e-3
    at batch 4096, weight decay 0.05, cosine to 1e-6 after a warm-up of 20/300 of the epochs, mixup 0.8,
    CutMix 1.0, eval crop 0.875, model EMA 0.9999, 7x7 depthwise kernels.

    Args:
      args: the parsed config string (``dw_init``/``init``, ``model``, ``demo``, ``epochs``).
      model, demo_model: the registered model of the full run and of ``demo`` (``model=`` overrides both).
      drop_path_rate, grad_clip_norm: what the two families' recipes set differently.
      demo_depths: the blocks per stage of the ``demo`` model (widths 32-256, patch 4, 32 px demo data).
    """
    c = base_config()
    c.model = args.get("model", model)
    # kernel_size is listed so that --config.model_overrides.kernel_size=<k> works (locked config).
    c.model_overrides = ml_collections.ConfigDict({"kernel_size": 7})
    c.dw_init = dw_init_from_args(args)
    c.drop_path_rate = drop_path_rate
    c.batch_size = 4096
    c.num_epochs = args.get("epochs", 50.0)
    c.eval_crop_pct = 0.875
    c.optimizer.learning_rate = 4e-3
    c.optimizer.weight_decay = 0.05
    c.optimizer.schedule = "cosine"
    c.optimizer.warmup_epochs = 20 * c.num_epochs / 300
    c.optimizer.min_learning_rate = 1e-6
    c.optimizer.grad_clip_norm = grad_clip_norm
    c.augment.mixup_alpha = 0.8
    c.augment.cutmix_alpha = 1.0
    c.ema_decay = 0.9999
    if args.get("demo"):
        c.model = args.get("model", demo_model)
        c.model_overrides = ml_collections.ConfigDict(
            {"depths": demo_depths, "dims": (32, 64, 128, 256), "patch_size": 4, "kernel_size": 7})
        apply_demo_recipe(c, epochs=args.get("epochs", 3.0))
        c.optimizer.learning_rate = 4e-3
        c.optimizer.warmup_epochs = 0.3
    return c


def parse_config_string(arg: str | None, allowed: dict[str, type]) -> dict[str, object]:
    """Parses ``"key=value,key2=value2,flag"`` (the part after ``:`` in ``--config=file.py:...``).

    A bare word ``flag`` means ``flag=True``. Values are converted with the type in
    ``allowed``; unknown keys raise :class:`ConfigError` listing the known ones.
    """
    result: dict[str, object] = {}
    for item in filter(None, (part.strip() for part in (arg or "").split(","))):
        key, _, value = item.partition("=")
        if key not in allowed:
            raise ConfigError(f"Unknown config-string key {key!r} in {arg!r}; "
                              f"known keys: {', '.join(sorted(allowed))}.")
        kind = allowed[key]
        if kind is bool:
            if value.lower() not in ("", "true", "1", "false", "0"):
                raise ConfigError(f"Config-string key {key!r} takes true/false, got {value!r}.")
            result[key] = value.lower() in ("", "true", "1")
        else:
            if not value:
                raise ConfigError(f"Config-string key {key!r} needs a value, e.g. {key}=...")
            try:
                result[key] = kind(value)
            except ValueError:
                raise ConfigError(f"Config-string key {key!r} takes a {kind.__name__}, got {value!r}.") from None
    return result


def comparable(value: Any) -> Any:
    """``value`` in the form a JSON round trip gives it, for comparing a saved config with a live one.

    A config written to JSON comes back with lists for tuples and dicts for ConfigDicts, and
    an integral float may come back as an int: tuples and lists become lists, ConfigDicts and
    mappings plain dicts (recursively), and a float equal to an int that int. Comparing
    ``comparable(saved) == comparable(live)`` therefore says "the same setting".
    """
    if isinstance(value, ml_collections.ConfigDict):
        value = value.to_dict()
    if isinstance(value, Mapping):
        return {str(key): comparable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [comparable(item) for item in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def validate(config: ml_collections.ConfigDict, *, device_count: int, process_count: int = 1) -> None:
    """Checks the values that would otherwise fail deep inside training; raises :class:`ConfigError`.

    The model fields (``model``, ``model_overrides``, ``dw_param``, the patch against ``image_size``)
    are checked where they are resolved: ``dog_jax.train.run_spec.check`` runs this, then resolves them.
    """
    allowed_inits = ("reference",) + tuple(INITIALIZER_NAMES)
    _require(config.dw_init in allowed_inits,
             f"config.dw_init={config.dw_init!r} is unknown; use one of {', '.join(allowed_inits)}.")
    lo, hi = config.dog.gamma_range
    _require(0.0 <= lo < hi <= 1.0, f"config.dog.gamma_range={tuple(config.dog.gamma_range)} must satisfy "
             "0 <= low < high <= 1 (the paper uses (0, 0.5)).")
    _require(0.0 <= config.dog.on_fraction <= 1.0, "config.dog.on_fraction must be in [0, 1].")
    _require(0.0 <= config.drop_path_rate < 1.0, f"config.drop_path_rate={config.drop_path_rate} must be in [0, 1).")
    _require(0.0 <= config.ema_decay < 1.0,
             f"config.ema_decay={config.ema_decay} must be in [0, 1) (0 = no EMA; ConvNeXt uses 0.9999).")

    _require(isinstance(config.batch_size, int) and config.batch_size > 0,
             f"config.batch_size={config.batch_size!r} must be a positive int (the global batch).")
    _require(config.batch_size % device_count == 0,
             f"config.batch_size={config.batch_size} is not divisible by the {device_count} devices; "
             f"use a multiple of {device_count}, e.g. "
             f"--config.batch_size={max(1, config.batch_size // device_count) * device_count}.")
    accum = config.get("grad_accum_steps", 1)  # configs saved before the field existed: 1
    _require(isinstance(accum, int) and not isinstance(accum, bool) and accum > 0,
             f"config.grad_accum_steps={accum!r} must be a positive int (micro-batches per optimizer step; 1 = off).")
    if accum > 1:
        unit = accum * device_count
        _require(config.batch_size % unit == 0,
                 f"config.batch_size={config.batch_size} is not divisible by config.grad_accum_steps={accum} x "
                 f"{device_count} devices = {unit} (every micro-batch is split over the devices); use a multiple "
                 f"of {unit}, e.g. --config.batch_size={max(1, config.batch_size // unit) * unit}, or a "
                 f"grad_accum_steps that divides {config.batch_size // device_count}.")
    _require(config.batch_size % process_count == 0,
             f"config.batch_size={config.batch_size} is not divisible by the {process_count} processes.")
    _require(isinstance(config.data_shards, int) and config.data_shards >= 0,
             f"config.data_shards={config.data_shards!r} must be an int >= 0 (0 = one per device).")
    if config.data_shards:
        _require(config.batch_size % config.data_shards == 0,
                 f"config.batch_size={config.batch_size} is not divisible by config.data_shards={config.data_shards}; "
                 "use a divisor of the batch size, or 0 for one shard per device.")
        _require(config.data_shards % process_count == 0,
                 f"config.data_shards={config.data_shards} is not a multiple of the {process_count} processes; "
                 "use a multiple, or 0 for one shard per device.")
    _require(config.num_train_steps > 0 or config.num_epochs > 0,
             "Set config.num_epochs > 0 or config.num_train_steps > 0.")
    _require(isinstance(config.image_size, int) and config.image_size >= 8,
             f"config.image_size={config.image_size!r} must be an int >= 8.")
    _require(0.0 < config.eval_crop_pct <= 1.0, f"config.eval_crop_pct={config.eval_crop_pct} must be in (0, 1].")

    opt = config.optimizer
    _require(opt.learning_rate > 0, f"config.optimizer.learning_rate={opt.learning_rate} must be > 0.")
    _require(opt.weight_decay >= 0, f"config.optimizer.weight_decay={opt.weight_decay} must be >= 0.")
    _require(opt.grad_clip_norm >= 0, f"config.optimizer.grad_clip_norm={opt.grad_clip_norm} must be >= 0 (0 = off).")
    _require(opt.schedule in SCHEDULES,
             f"config.optimizer.schedule={opt.schedule!r}; use one of {', '.join(SCHEDULES)}.")
    _require(opt.warmup_epochs >= 0, "config.optimizer.warmup_epochs must be >= 0.")

    aug = config.augment
    _require(0.0 < aug.crop_area_min <= 1.0, f"config.augment.crop_area_min={aug.crop_area_min} must be in (0, 1].")
    _require(0.0 <= aug.random_erasing <= 1.0, "config.augment.random_erasing is a probability in [0, 1].")
    _require(0.0 <= aug.label_smoothing < 1.0, "config.augment.label_smoothing must be in [0, 1).")
    _require(aug.mixup_alpha >= 0 and aug.cutmix_alpha >= 0, "config.augment mixup/cutmix alphas must be >= 0.")
    if aug.rand_augment:
        from dog_jax.data.randaugment import parse_rand_augment
        try:
            parse_rand_augment(aug.rand_augment)
        except ValueError as error:
            raise ConfigError(f"config.augment.rand_augment: {error}") from None

    _require(isinstance(config.get("remat", False), bool),
             f"config.remat={config.get('remat')!r} must be true or false.")
    _require(config.precision in PRECISIONS,
             f"config.precision={config.precision!r}; use one of {', '.join(PRECISIONS)}.")
    for name in ("log_every_steps",):
        _require(config[name] > 0, f"config.{name} must be > 0.")
    for name in ("eval_every_steps", "checkpoint_every_steps"):
        _require(config[name] >= 0, f"config.{name} must be >= 0 (0 = once per epoch).")
    _require(config.keep_checkpoints >= 1, "config.keep_checkpoints must be >= 1.")
    _require(config.get("checkpoint_timeout_s", 900) > 0, "config.checkpoint_timeout_s must be > 0 (seconds).")
    _require(config.get("lease_timeout_s", 600) > config.get("lease_heartbeat_s", 60) > 0,
             f"config.lease_timeout_s={config.get('lease_timeout_s')} must be greater than "
             f"config.lease_heartbeat_s={config.get('lease_heartbeat_s')}, which must be > 0 (seconds).")
    _require(config.nonfinite_policy in NONFINITE_POLICIES,
             f"config.nonfinite_policy={config.nonfinite_policy!r}; use one of {', '.join(NONFINITE_POLICIES)}.")
    from dog_jax.train.profiling import parse_profile_steps  # local: imports jax, which config files need not
    try:
        parse_profile_steps(config.get("profile_steps", ""))
    except ValueError as error:
        raise ConfigError(f"config.{error}") from None

