"""Training input-pipeline throughput (images/s per CPU core) on generated ImageNet-sized JPEGs.

Runs the trainer's own tf.data training pipeline (``dog_jax.data.train_dataset``: JPEG decode
fused with the random-resized crop, flip, RandAugment rand-m9-mstd0.5-inc1, normalisation,
random erasing, batching) over in-memory JPEGs whose sizes follow ImageNet's typical range
(short side 300-500 px, aspect 3:4 to 4:3, quality 90; mean ~ 400x350 like ILSVRC2012 train),
so neither disk nor network is measured. Content is smooth random colour fields plus texture
noise, which compresses like photographs (~40-120 KB per image) rather than like white noise.

Usage::

    python benchmarks/input_pipeline.py                    # all cores this process may use
    python benchmarks/input_pipeline.py --threads=1 --batches=20
    python benchmarks/input_pipeline.py --threads=2 --shards 1 8   # one shard vs 8 interleaved

Prints one line per thread count: images/s (wall clock) and images per CPU-second, i.e. the
throughput of one fully used core, which is the number to compare across machines.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import tensorflow as tf

from dog_jax.data import Source, TrainAugmentation, train_dataset


def generate_jpegs(count: int, seed: int = 0) -> list[bytes]:
    """``count`` JPEGs of ImageNet-like sizes and photo-like compressibility."""
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(count):
        short = int(rng.integers(300, 501))
        ratio = float(np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3))))
        height, width = (short, int(short * ratio)) if ratio >= 1 else (int(short / ratio), short)
        coarse = rng.uniform(0, 255, (height // 32 + 2, width // 32 + 2, 3)).astype(np.float32)
        smooth = tf.image.resize(coarse[None], (height, width), method="bicubic")[0].numpy()
        texture = rng.normal(0, 12, (height, width, 3))
        pixels = np.clip(smooth + texture, 0, 255).astype(np.uint8)
        images.append(tf.io.encode_jpeg(pixels, quality=90).numpy())
    return images


def measure(jpegs: list[bytes], *, threads: int, batch_size: int, batches: int, warmup: int,
            rand_augment: str = "rand-m9-mstd0.5-inc1", shards: int = 1) -> tuple[float, float]:
    """(images per wall-clock second, images per CPU-second) with ``threads`` tf.data threads.

    Images per CPU-second (process CPU time over all threads) is the per-core throughput and
    stays meaningful on a shared machine, where wall-clock rates depend on the other load.
    ``shards`` > 1 reads the examples as that many data shards interleaved into one batch, as
    one process feeding that many devices does (``config.data_shards``).
    """
    labels = np.arange(len(jpegs), dtype=np.int32) % 1000
    examples = tf.data.Dataset.from_tensor_slices({"image": jpegs, "label": labels})
    per_shard = len(jpegs) // shards
    sources = [Source(examples.shard(shards, index).take(per_shard), per_shard) for index in range(shards)]
    dataset = train_dataset(sources, shard_indices=list(range(shards)), shard_batch_size=batch_size // shards,
                            seed=0, augmentation=TrainAugmentation(image_size=224, rand_augment=rand_augment),
                            cache=True)
    options = tf.data.Options()
    options.threading.private_threadpool_size = threads  # overrides the pipeline's default (all cores)
    iterator = iter(dataset.with_options(options))
    for _ in range(warmup):
        next(iterator)
    start, cpu_start = time.perf_counter(), time.process_time()
    for _ in range(batches):
        next(iterator)
    images = batches * batch_size
    return images / (time.perf_counter() - start), images / (time.process_time() - cpu_start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    parser.add_argument("--threads", type=int, nargs="*", default=sorted({1, available}),
                        help="tf.data thread-pool sizes to measure (default: 1 and all available cores)")
    parser.add_argument("--images", type=int, default=256, help="distinct JPEGs (cycled)")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--batches", type=int, default=16, help="timed batches")
    parser.add_argument("--warmup", type=int, default=4, help="untimed batches first")
    parser.add_argument("--rand_augment", default="rand-m9-mstd0.5-inc1", help="timm RandAugment string; '' = off")
    parser.add_argument("--shards", type=int, nargs="*", default=[1],
                        help="data shards read by this process (one per local device by default in training), "
                             "e.g. --shards 1 8 to compare; must divide --batch_size")
    args = parser.parse_args()

    jpegs = generate_jpegs(args.images)
    kilobytes = np.mean([len(j) for j in jpegs]) / 1024
    print(f"{len(jpegs)} JPEGs, mean {kilobytes:.0f} KB; {available} cores available; batch {args.batch_size}; "
          f"RandAugment {args.rand_augment or 'off'}")
    for threads in args.threads:
        for shards in args.shards:
            wall, per_cpu = measure(jpegs, threads=threads, batch_size=args.batch_size, batches=args.batches,
                                    warmup=args.warmup, rand_augment=args.rand_augment, shards=shards)
            print(f"threads {threads:3d} shards {shards:2d} | {wall:8.1f} img/s wall-clock | "
                  f"{per_cpu:7.1f} img per CPU-second (per core)")


if __name__ == "__main__":
    main()
