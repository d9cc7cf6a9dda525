"""tf.data training and evaluation pipelines, deterministic and restorable by step.

Train stream (per process)::

    shard -> [cache] -> for epoch e: shuffle(seed = f(seed, e)) -> enumerate
          -> skip to the resume position -> decode+random crop -> flip -> RandAugment
          -> normalise -> random erasing -> batch(local batch) -> prefetch

* Shuffle *then* repeat: every example is seen once per epoch before the next begins.
* The epoch's order depends only on (seed, epoch), and each example's augmentation only on
  (seed, process, position in the stream), so the batch of step ``s`` is a pure function
  of (config, s). Resuming at step ``s`` rebuilds the stream at epoch
  ``s * local_batch // n_local`` and skips only the rest of that epoch's *encoded*
  records (no decoding), which is what issue 7's bit-exact resume needs.

Eval stream: centre crop, every example of the process's shard exactly once; the last
batch is padded with ``mask == 0`` examples, and all processes run the same number of
batches (a collective step must not hang on a host that ran out of data).
"""

from __future__ import annotations

import dataclasses
import math

import tensorflow as tf

from dog_jax.data import augment, randaugment
from dog_jax.data.sources import Source


@dataclasses.dataclass(frozen=True)
class TrainAugmentation:
    """Per-example training augmentation (timm names in brackets)."""

    image_size: int = 224
    crop_area_range: tuple[float, float] = (0.08, 1.0)   # [scale]
    crop_ratio_range: tuple[float, float] = (3 / 4, 4 / 3)  # [ratio]
    flip: bool = True                                    # [hflip=0.5]
    rand_augment: str = "rand-m9-mstd0.5-inc1"           # [auto_augment]; "" disables
    random_erasing: float = 0.25                         # [reprob], mode 'pixel', count 1


def _tf_options() -> tf.data.Options:
    options = tf.data.Options()
    options.deterministic = True
    options.threading.private_threadpool_size = 0  # 0 = let tf.data size it (one per core).
    # One thread per op: parallelism comes from parallel map over examples, which scales
    # better than intra-op threads for small per-image kernels.
    options.threading.max_intra_op_parallelism = 1
    options.experimental_optimization.map_parallelization = True
    return options


def _example_seed(seed: int, process_index: int, position: tf.Tensor) -> tf.Tensor:
    """(2,) int64 stateless seed of the example at ``position`` of this process's stream."""
    base = tf.constant([seed, 7919 * process_index + 1], tf.int64)
    return tf.random.experimental.stateless_fold_in(base, position)


def train_dataset(source: Source, *, local_batch_size: int, augmentation: TrainAugmentation, seed: int,
                  start_step: int = 0, process_index: int = 0, shuffle_buffer: int = 16_384,
                  cache: bool = False) -> tf.data.Dataset:
    """Infinite stream of augmented training batches for this process.

    Args:
      source: this process's encoded examples.
      local_batch_size: examples per batch on this process (global batch / processes).
      augmentation: per-example augmentation.
      seed: run seed; the same seed gives the same batches.
      start_step: first step to produce (resume): batches ``start_step, start_step + 1, ...``.
      process_index: this process, mixed into the augmentation seeds.
      shuffle_buffer: examples in the shuffle buffer (capped at the shard size).
      cache: keep the encoded shard in memory after the first epoch (small datasets).

    Returns:
      Dataset of ``{'image': float32 (B, S, S, 3) normalised, 'label': int32 (B,)}``.
    """
    if source.num_examples < local_batch_size:
        raise ValueError(f"The training shard has {source.num_examples} examples, fewer than the per-process "
                         f"batch of {local_batch_size}; lower config.batch_size or use more data.")
    spec = randaugment.parse_rand_augment(augmentation.rand_augment) if augmentation.rand_augment else None
    examples = source.dataset.cache() if cache else source.dataset
    n_local = source.num_examples
    start_position = start_step * local_batch_size
    start_epoch = start_position // n_local
    buffer = min(shuffle_buffer, n_local)

    def epoch_stream(epoch):
        shuffled = examples.shuffle(buffer, seed=tf.cast(seed, tf.int64) * 1_000_003 + epoch,
                                    reshuffle_each_iteration=False)
        return shuffled.enumerate().map(lambda index, ex: (epoch * n_local + index, ex))

    stream = tf.data.Dataset.range(start_epoch, 2**62).flat_map(epoch_stream)
    stream = stream.skip(start_position - start_epoch * n_local)

    def preprocess(position, example):
        seeds = tf.random.experimental.stateless_split(_example_seed(seed, process_index, position), 4)
        image = augment.decode_and_random_crop(example["image"], seeds[0], augmentation.image_size,
                                               area_range=augmentation.crop_area_range,
                                               ratio_range=augmentation.crop_ratio_range)
        if augmentation.flip:
            image = augment.random_flip_left_right(image, seeds[1])
        if spec is not None:
            image = randaugment.rand_augment(tf.round(image), seeds[2], spec)
        image = augment.normalize(image)
        if augmentation.random_erasing > 0:
            image = augment.random_erasing(image, seeds[3], probability=augmentation.random_erasing)
        return {"image": image, "label": example["label"]}

    stream = stream.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    stream = stream.batch(local_batch_size, drop_remainder=True)
    return stream.prefetch(tf.data.AUTOTUNE).with_options(_tf_options())


def eval_num_batches(total_examples: int, process_count: int, local_batch_size: int) -> int:
    """Batches every process runs so that the largest shard is covered."""
    return math.ceil(math.ceil(total_examples / process_count) / local_batch_size)


def eval_dataset(source: Source, *, local_batch_size: int, num_batches: int, image_size: int,
                 crop_pct: float, cache: bool = False) -> tf.data.Dataset:
    """Finite, deterministic eval batches, padded to exactly ``num_batches``.

    Returns:
      Dataset of ``{'image': float32 (B, S, S, 3), 'label': int32 (B,), 'mask': float32 (B,)}``;
      ``mask`` is 0 for padding examples, which must not count in the metrics.
    """

    def preprocess(example):
        image = augment.normalize(augment.decode_and_center_crop(example["image"], image_size, crop_pct))
        return {"image": image, "label": example["label"], "mask": tf.constant(1.0, tf.float32)}

    stream = source.dataset.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if cache:
        stream = stream.cache()
    padding = tf.data.Dataset.from_tensors({
        "image": tf.zeros([image_size, image_size, 3], tf.float32),
        "label": tf.constant(0, tf.int32),
        "mask": tf.constant(0.0, tf.float32),
    }).repeat()
    stream = stream.concatenate(padding).take(num_batches * local_batch_size)
    stream = stream.batch(local_batch_size, drop_remainder=True)
    return stream.prefetch(tf.data.AUTOTUNE).with_options(_tf_options())
