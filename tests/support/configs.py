"""The repository's root, its configs/ loaded by name, and the tiny trainer config the trainer tests run.

Light on purpose: the config files that subprocess tests write import ``tiny_config`` from here.
"""

import importlib.util
import os

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load(name: str, arg: str | None = None):
    spec = importlib.util.spec_from_file_location(f"cfg_{name}", os.path.join(ROOT, "configs", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


def resolved(config, num_classes: int = 10, *, device_count: int = 1):
    """The ``RunSpec`` of ``config`` on a dataset of ``num_classes`` classes and unknown split sizes
    (no data read): what the trainer saves with a checkpoint, for tests that write or compare one."""
    from dog_jax.train import run_spec

    model = run_spec.check(config, device_count=device_count)
    return run_spec.resolve(config, model, run_spec.DataFacts(num_classes, None, None), device_count=device_count)


def tiny_config(data_dir, **changes):
    """A ConvMixer with BatchNorm, crop/flip, random erasing and mixup/CutMix, a few steps.

    No RandAugment: building its tf.data graph takes ~1 s more in every new process, and the
    reliability tests start tens of trainer processes with this config. RandAugment in a run is
    covered by the family demo configs of tests/train/test_resume.py (resume bitwise, every
    family) and the ImageNet config in tests/train/test_loop.py; its own maths by tests/data/.
    """
    c = load("convmixer", "demo")
    c.dataset = "dog_jax_demo/tiny"
    c.data_dir = data_dir
    c.model_overrides.width = 16
    c.model_overrides.depth = 2
    c.model_overrides.kernel_size = 5
    c.batch_size = 16
    c.num_train_steps = 6
    c.log_every_steps = 1
    c.eval_every_steps = 6
    c.checkpoint_every_steps = 2
    c.augment.mixup_alpha = 0.5
    c.augment.cutmix_alpha = 0.5
    c.augment.rand_augment = ""
    c.cache_data = False
    for key, value in changes.items():
        c[key] = value
    return c


# A short run that still evaluates, checkpoints and logs more than once: 4 steps, evaluations and
# checkpoints at steps 2 and 4, a log line (and stop poll) every step. Its uninterrupted run is
# shared by the tests that compare an interrupted, resumed or concurrent run with it
# (the ``short_reference`` fixture of tests/conftest.py).
SHORT_RUN = dict(num_train_steps=4, eval_every_steps=2, checkpoint_every_steps=2, log_every_steps=1)

# The multi-process and elastic tests' run: 4 steps on 4 data shards (so one device, 2, or 4 -- in one
# process or two -- train on the same global batches), evaluations at 2 and 4, a checkpoint at 4. Its
# uninterrupted run on the test process's one device is the ``four_shard_reference`` fixture
# (tests/conftest.py), what those runs' losses are compared with.
FOUR_SHARD_RUN = dict(num_train_steps=4, eval_every_steps=2, checkpoint_every_steps=4, data_shards=4)

# The storage-fault and preemption tests' run: 8 steps, a checkpoint every 2 (2 kept), one evaluation
# and one log line at the end (a failing run's console fits in 12 lines). Its uninterrupted run is the
# ``fault_reference`` fixture (tests/conftest.py), shared by those tests.
FAULT_RUN = dict(num_train_steps=8, eval_every_steps=8, checkpoint_every_steps=2, keep_checkpoints=2,
                 log_every_steps=8)


def write_imagenet_metadata(data_dir, train=24, validation=24):
    """The metadata a prepared imagenet2012 would have (split sizes), so the real code path runs."""
    import tensorflow_datasets as tfds

    builder = tfds.builder("imagenet2012", data_dir=data_dir)
    builder.info.set_splits(tfds.core.SplitDict([
        tfds.core.SplitInfo(name="train", shard_lengths=[train], num_bytes=0),
        tfds.core.SplitInfo(name="validation", shard_lengths=[validation], num_bytes=0)]))
    os.makedirs(builder.data_dir, exist_ok=True)
    builder.info.write_to_directory(builder.data_dir)
