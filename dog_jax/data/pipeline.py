"""tf.data training and evaluation pipelines, deterministic and restorable by step.

Train stream: the training split is cut into ``D`` equal *data shards* (``config.data_shards``,
default one per device); shard ``d`` feeds block ``d`` of every global batch, which lands on
the device(s) at the matching position of the mesh. Each shard is its own stream::

    shard d -> [cache] -> for epoch e: shuffle(seed = f(seed, d, e)) -> enumerate
            -> skip to the resume position -> (d, position, example)

A process reads only the shards of its own devices and interleaves them block by block
(``shard_batch_size`` examples from each, in shard order), then decodes + random-crops,
rounds to uint8, flips, applies RandAugment, draws the random-erasing box and batches.

Batches carry **uint8 pixels** (:data:`IMAGE_DTYPE`; :func:`batch_spec` lists every entry):
a quarter of float32's bytes from host to device and in the device's input buffers. The
jitted steps normalise them and fill the erasing boxes with noise (``device_augment.py``),
then mixup / CutMix (``mixing.py``). The one rounding this adds is the crop's resize output
to integers (``augment.to_uint8``); with RandAugment on, the float pipeline rounded there too.

* Shuffle *then* repeat: every example of a shard is seen once per epoch before the next.
* A shard's order depends only on (seed, d, epoch), and each example's augmentation only on
  (seed, d, position in the shard's stream), so the global batch of step ``s`` is a pure
  function of (config, D, s) -- the same whether the devices belong to one process or to
  several (2 processes x 2 devices train on exactly the batches of 1 x 4). Resuming at step
  ``s`` rebuilds every shard at epoch ``s * shard_batch_size // n_shard`` and skips only the
  rest of that epoch's *encoded* records (no decoding).

Eval stream: centre crop, every example of the process's shard exactly once; the last
batch is padded with ``mask == 0`` examples, and all processes run the same number of
batches (a collective step must not hang on a host that ran out of data).
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Sequence

import numpy as np
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


# Batches buffered on the host ahead of the training step.
PREFETCH_BATCHES = 2

# tf.data traces every function it maps; by default AutoGraph first rewrites the function's Python
# source (and that of every function it calls) to turn tensor-dependent control flow into graph ops.
# These functions branch only on Python values (config flags), so they are traced as written:
# AutoGraph's rewrite took ~1.6 s of the ~2.1 s each run spends building its input pipelines (cProfile
# of a tiny train.py run, 2026-12-07), paid at every start and resume. A tensor used as a Python
# bool would now fail loudly at trace time, never silently.
_as_written = tf.autograph.experimental.do_not_convert

#: dtype of the images of every batch the pipelines deliver (train and eval): pixels in [0, 255],
#: normalised on the device by the steps.
IMAGE_DTYPE = np.dtype(np.uint8)


def batch_spec(image_size: int, *, train: bool, random_erasing: bool = False
               ) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Per-example shape and dtype of every entry of the pipelines' batches (leading batch axis left out).

    Train: ``image`` uint8 (S, S, 3), ``label`` int32, and with random erasing ``erase_box`` int32
    (4,) (``augment.erasing_box``). Eval: ``image``, ``label`` and ``mask`` float32 (0 = padding).
    What the AOT compile (``dog_jax.train.aot``) lowers the steps for, and what memory reports count.
    """
    spec = {"image": ((image_size, image_size, 3), IMAGE_DTYPE), "label": ((), np.dtype(np.int32))}
    if train and random_erasing:
        spec["erase_box"] = ((4,), np.dtype(np.int32))
    if not train:
        spec["mask"] = ((), np.dtype(np.float32))
    return spec


def batch_bytes(batch_size: int, image_size: int, *, train: bool, random_erasing: bool = False) -> int:
    """Bytes of one batch of ``batch_size`` examples as the pipelines deliver it (all entries)."""
    spec = batch_spec(image_size, train=train, random_erasing=random_erasing)
    return batch_size * sum(math.prod(shape) * dtype.itemsize for shape, dtype in spec.values())


def _parallel_calls() -> int:
    """Examples decoded/augmented at once: one per core this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _tf_options() -> tf.data.Options:
    options = tf.data.Options()
    options.deterministic = True
    options.threading.private_threadpool_size = 0  # 0 = let tf.data size it (one per core).
    # One thread per op: parallelism comes from parallel map over examples, which scales
    # better than intra-op threads for small per-image kernels.
    options.threading.max_intra_op_parallelism = 1
    options.experimental_optimization.map_parallelization = True
    # Fixed widths instead of AUTOTUNE: destroying an iterator waits for tf.data's autotuning
    # thread to finish its current round, which kept every train.py run alive 4-5 s after
    # its last step (measured, TF 2.21; up to a minute in long runs). The map already uses
    # every core, so autotuning had nothing to gain (benchmarks/input_pipeline.py: same
    # images per CPU-second with and without it).
    options.autotune.enabled = False
    return options


def _example_seed(seed: int, shard: tf.Tensor, position: tf.Tensor) -> tf.Tensor:
    """(2,) int64 stateless seed of the example at ``position`` of data shard ``shard``."""
    base = tf.stack([tf.constant(seed, tf.int64), 7919 * tf.cast(shard, tf.int64) + 1])
    return tf.random.experimental.stateless_fold_in(base, position)


def _shard_stream(source: Source, shard: int, *, shard_batch_size: int, seed: int, start_step: int,
                  shuffle_buffer: int, cache: bool) -> tf.data.Dataset:
    """Infinite ``(shard, position, encoded example)`` stream of one data shard from ``start_step``."""
    examples = source.dataset.cache() if cache else source.dataset
    n_shard = source.num_examples
    start_position = start_step * shard_batch_size
    start_epoch = start_position // n_shard
    buffer = min(shuffle_buffer, n_shard)
    # Shard 0 keeps the seeds of the single-device stream, so one-device runs are unchanged.
    seed_base = tf.constant(seed, tf.int64) * 1_000_003 + tf.constant(shard, tf.int64) * 2**40

    def epoch_stream(epoch):
        shuffled = examples.shuffle(buffer, seed=seed_base + epoch, reshuffle_each_iteration=False)
        return shuffled.enumerate().map(_as_written(lambda index, ex: (epoch * n_shard + index, ex)))

    stream = tf.data.Dataset.range(start_epoch, 2**62).flat_map(_as_written(epoch_stream))
    stream = stream.skip(start_position - start_epoch * n_shard)
    return stream.map(_as_written(lambda position, ex: (tf.constant(shard, tf.int64), position, ex)))


def train_dataset(sources: Sequence[Source], *, shard_indices: Sequence[int], shard_batch_size: int,
                  augmentation: TrainAugmentation, seed: int, start_step: int = 0, shuffle_buffer: int = 16_384,
                  cache: bool = False) -> tf.data.Dataset:
    """Infinite stream of this process's part of every global training batch.

    Args:
      sources: the encoded examples of this process's data shards (equal sizes), in the
        order of ``shard_indices``.
      shard_indices: the global index of each shard (``sharding.process_data_shards``),
        ascending.
      shard_batch_size: examples per shard per step (global batch / number of shards).
      augmentation: per-example augmentation.
      seed: run seed; the same seed and number of shards give the same global batches.
      start_step: first step to produce (resume): batches ``start_step, start_step + 1, ...``.
      shuffle_buffer: examples in each shard's shuffle buffer (capped at the shard size).
      cache: keep the encoded shards in memory after their first epoch (small datasets).

    Returns:
      Dataset of ``{'image': uint8 (B, S, S, 3), 'label': int32 (B,)}`` plus ``'erase_box': int32
      (B, 4)`` when ``augmentation.random_erasing`` > 0 (:func:`batch_spec`), with
      ``B = len(sources) * shard_batch_size``: ``shard_batch_size`` rows from each shard, in
      the order of ``shard_indices`` (what ``jax.make_array_from_process_local_data`` expects).
    """
    if len(sources) != len(shard_indices) or not sources:
        raise ValueError(f"train_dataset needs one source per shard index; got {len(sources)} sources for "
                         f"shard indices {list(shard_indices)}.")
    sizes = {source.num_examples for source in sources}
    if len(sizes) != 1:
        raise ValueError(f"The training shards differ in size ({sorted(sizes)}); read them with "
                         "local_source(..., drop_remainder=True).")
    if sizes.pop() < shard_batch_size:
        raise ValueError(f"Each device's training shard has {sources[0].num_examples} examples, fewer than the "
                         f"per-device batch of {shard_batch_size}; lower config.batch_size or use more data.")
    spec = randaugment.parse_rand_augment(augmentation.rand_augment) if augmentation.rand_augment else None
    streams = [_shard_stream(source, shard, shard_batch_size=shard_batch_size, seed=seed, start_step=start_step,
                             shuffle_buffer=shuffle_buffer, cache=cache)
               for source, shard in zip(sources, shard_indices)]
    if len(streams) == 1:
        stream = streams[0]
    else:  # shard_batch_size examples from each local shard in turn.
        which_shard = _as_written(lambda i: i // shard_batch_size)
        choice = tf.data.Dataset.range(len(streams) * shard_batch_size).map(which_shard)
        stream = tf.data.Dataset.choose_from_datasets(streams, choice.repeat())

    size = augmentation.image_size

    def preprocess(shard, position, example):
        seeds = tf.random.experimental.stateless_split(_example_seed(seed, shard, position), 4)
        image = augment.decode_and_random_crop(example["image"], seeds[0], size,
                                               area_range=augmentation.crop_area_range,
                                               ratio_range=augmentation.crop_ratio_range)
        image = augment.to_uint8(image)
        if augmentation.flip:
            image = augment.random_flip_left_right(image, seeds[1])
        if spec is not None:
            image = randaugment.rand_augment(image, seeds[2], spec)
        batch = {"image": image, "label": example["label"]}
        if augmentation.random_erasing > 0:
            batch["erase_box"] = augment.erasing_box(seeds[3], size, size, probability=augmentation.random_erasing)
        return batch

    stream = stream.map(_as_written(preprocess), num_parallel_calls=_parallel_calls(), deterministic=True)
    stream = stream.batch(len(streams) * shard_batch_size, drop_remainder=True)
    return stream.prefetch(PREFETCH_BATCHES).with_options(_tf_options())


def eval_num_batches(total_examples: int, process_count: int, local_batch_size: int) -> int:
    """Batches every process runs so that the largest shard is covered."""
    return math.ceil(math.ceil(total_examples / process_count) / local_batch_size)


def eval_dataset(source: Source, *, local_batch_size: int, num_batches: int, image_size: int,
                 crop_pct: float, cache: bool = False) -> tf.data.Dataset:
    """Finite, deterministic eval batches, padded to exactly ``num_batches``.

    Returns:
      Dataset of ``{'image': uint8 (B, S, S, 3), 'label': int32 (B,), 'mask': float32 (B,)}``;
      ``mask`` is 0 for padding examples, which must not count in the metrics.
    """

    def preprocess(example):
        image = augment.to_uint8(augment.decode_and_center_crop(example["image"], image_size, crop_pct))
        return {"image": image, "label": example["label"], "mask": tf.constant(1.0, tf.float32)}

    stream = source.dataset.map(_as_written(preprocess), num_parallel_calls=_parallel_calls(), deterministic=True)
    if cache:
        stream = stream.cache()
    padding = tf.data.Dataset.from_tensors({
        "image": tf.zeros([image_size, image_size, 3], tf.uint8),
        "label": tf.constant(0, tf.int32),
        "mask": tf.constant(0.0, tf.float32),
    }).repeat()
    stream = stream.concatenate(padding).take(num_batches * local_batch_size)
    stream = stream.batch(local_batch_size, drop_remainder=True)
    return stream.prefetch(PREFETCH_BATCHES).with_options(_tf_options())
