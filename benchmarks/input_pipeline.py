"""Input-pipeline throughput per CPU core: dog_jax's tf.data pipelines vs timm's transforms.

Runs the trainer's own tf.data training pipeline (``dog_jax.data.train_dataset``: JPEG decode
fused with the random-resized crop, rounding to uint8, flip, RandAugment rand-m9-mstd0.5-inc1,
random-erasing boxes 0.25, batching; normalisation and the erasing fill run on the device, in the
train step) and timm's training transform (``create_transform(224,
is_training=True, auto_augment="rand-m9-mstd0.5-inc1", re_prob=0.25)`` on PIL-decoded images,
collated into batches as its DataLoader does) over the same in-memory JPEGs, alternating the
two so both see the same machine state. The JPEGs' sizes follow ImageNet's typical range (short
side 300-500 px, aspect 3:4 to 4:3, quality 90); content is smooth random colour fields plus
texture noise, which compresses like photographs (~40-120 KB per image). Neither disk nor
network is measured. The eval pipelines (dog_jax's centre crop vs timm's eval transform) are
measured the same way.

Usage::

    python benchmarks/input_pipeline.py                 # 1 thread side by side + scaling to all cores
    python benchmarks/input_pipeline.py --rounds 5      # more alternations, steadier medians
    python benchmarks/input_pipeline.py --no-timm --threads 2 --shards 1 8   # one shard vs 8 interleaved

Prints images per CPU-second (process CPU time over all threads: the throughput of one fully used
core, comparable across machines and robust to other load) for each side, their ratio; the
host->device bytes of one batch as the pipeline delivers it (uint8) beside the float32 batch it
delivered before (normalised on the host; built here from the same pixels, the only place that
format still exists) and the time ``sharding.global_batch`` takes to put each on the local JAX
devices. Only an accelerator's time measures a host->device link. On a CPU backend it is host
memory bookkeeping: the float32 batch of 64 (38.5 MB) lands above glibc's largest ``mmap``
threshold (32 MB), so every copy faults in fresh pages, while the 9.6 MB uint8 batch reuses heap
memory -- a 10-200x gap, not 4x; with ``MALLOC_MMAP_THRESHOLD_`` raised above the batch the float32
copy fell from 245 to 0.5 ms in one scratch run. Last, the wall-clock rate of dog_jax's training
pipeline at each thread count with its scaling efficiency (rate / (threads x 1-thread rate)).
Because that wall-clock scaling also measures whatever else runs on the machine, the table adds the
scheduler's view of the pipeline's own threads (Linux): how much of the time its workers were
runnable rather than blocked on the pipeline, the consuming thread's CPU share, and from these an
idle-machine scaling estimate (see ``print_scaling``).
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import io
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # tf.data's option notices would drown the table
import statistics
import threading
import time

# torch / timm before TensorFlow: the other import order crashes with these versions.
try:
    import torch
    from PIL import Image
    from timm.data import create_transform
except ImportError:  # the dog_jax side still runs
    torch = None

import numpy as np
import tensorflow as tf

from dog_jax.data import Source, TrainAugmentation, augment, eval_dataset, randaugment, train_dataset

# Cumulative stages of the per-example training map, for --profile.
STAGES = ("decode+crop+resize", "round to uint8", "flip", "RandAugment", "erasing box", "batching")


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
    result = measure_threads(jpegs, threads=threads, batch_size=batch_size, batches=batches, warmup=warmup,
                             rand_augment=rand_augment, shards=shards)
    return result.wall_rate, result.cpu_rate


@dataclasses.dataclass(frozen=True)
class ThreadRun:
    """One timed run of the training pipeline with its threads' scheduler accounting.

    wall_rate, cpu_rate: images per wall-clock second / per CPU-second (all threads).
    runnable: per worker (the ``threads`` threads with the most CPU time), the fraction of the
      wall time it was on a CPU or waiting for one, i.e. not blocked on the pipeline (NaN
      where /proc/<pid>/task/*/schedstat is missing, e.g. not Linux).
    consumer_cpu: CPU seconds of the consuming (main) thread per wall second.
    """

    wall_rate: float
    cpu_rate: float
    runnable: tuple[float, ...]
    consumer_cpu: float


def parse_schedstat(text: str) -> tuple[float, float]:
    """(seconds on a CPU, seconds runnable but waiting for a CPU) from a schedstat file's text
    ("<ns on cpu> <ns waiting> <timeslices>"). Raises ValueError on anything else."""
    on_cpu, waiting, _ = (int(field) for field in text.split())
    return on_cpu / 1e9, waiting / 1e9


def _thread_clock() -> dict[int, tuple[float, float]]:
    """{thread id: :func:`parse_schedstat`} of this process's threads, from Linux's
    /proc/self/task/*/schedstat ({} where that is missing)."""
    clock = {}
    for task in glob.glob("/proc/self/task/*/schedstat"):
        try:
            with open(task) as file:
                clock[int(task.split("/")[-2])] = parse_schedstat(file.read())
        except (OSError, ValueError):  # the thread ended meanwhile
            continue
    return clock


def thread_run(before: dict[int, tuple[float, float]], after: dict[int, tuple[float, float]], *, consumer: int,
               threads: int, images: int, wall: float, cpu: float) -> ThreadRun:
    """The :class:`ThreadRun` of ``images`` in ``wall`` seconds and ``cpu`` process CPU-seconds,
    from two :func:`_thread_clock` readings around it. The workers are the ``threads`` threads
    other than ``consumer`` (the consuming thread's id) that spent the most CPU time in between;
    threads that started or ended in between are left out."""
    spent = {tid: tuple(a - b for a, b in zip(after[tid], before[tid])) for tid in after if tid in before}
    workers = sorted((tid for tid in spent if tid != consumer), key=lambda tid: -spent[tid][0])
    runnable = tuple(min(1.0, sum(spent[tid]) / wall) for tid in workers[:threads])
    consumer_cpu = spent.get(consumer, (float("nan"), 0.0))[0] / wall
    return ThreadRun(images / wall, images / cpu, runnable or (float("nan"),) * threads, consumer_cpu)


def measure_threads(jpegs: list[bytes], *, threads: int, batch_size: int, batches: int, warmup: int,
                    rand_augment: str = "rand-m9-mstd0.5-inc1", shards: int = 1) -> ThreadRun:
    """:func:`measure` plus where each thread's wall time went (see :class:`ThreadRun`)."""
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
    before = _thread_clock()
    start, cpu_start = time.perf_counter(), time.process_time()
    for _ in range(batches):
        next(iterator)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    return thread_run(before, _thread_clock(), consumer=threading.get_native_id(), threads=threads,
                      images=batches * batch_size, wall=wall, cpu=cpu)


def measure_eval(jpegs: list[bytes], *, threads: int, batch_size: int, batches: int,
                 warmup: int) -> tuple[float, float]:
    """(images per wall second, images per CPU-second) of the eval pipeline (centre crop 0.875)."""
    labels = np.arange(len(jpegs), dtype=np.int32) % 1000
    examples = tf.data.Dataset.from_tensor_slices({"image": jpegs, "label": labels}).repeat()
    source = Source(examples, len(jpegs))
    dataset = eval_dataset(source, local_batch_size=batch_size, num_batches=warmup + batches, image_size=224,
                           crop_pct=0.875)
    options = tf.data.Options()
    options.threading.private_threadpool_size = threads
    iterator = iter(dataset.with_options(options))
    return _time_batches(iterator, batch_size=batch_size, batches=batches, warmup=warmup)


def _time_batches(iterator, *, batch_size: int, batches: int, warmup: int) -> tuple[float, float]:
    for _ in range(warmup):
        next(iterator)
    start, cpu_start = time.perf_counter(), time.process_time()
    for _ in range(batches):
        next(iterator)
    images = batches * batch_size
    return images / (time.perf_counter() - start), images / (time.process_time() - cpu_start)


def transfer_rows(jpegs: list[bytes], *, batch_size: int, repeats: int,
                  rand_augment: str = "rand-m9-mstd0.5-inc1") -> list[str]:
    """Host->device cost of one training batch: as the pipeline delivers it (uint8 pixels, labels,
    erasing boxes) beside the float32 batch the pipeline delivered before (the same pixels
    normalised on the host, labels): bytes, and the median time of ``sharding.global_batch`` (what
    the training loop calls) until the arrays are on the local devices, the two alternated."""
    import jax

    from dog_jax.data import device_augment
    from dog_jax.train import sharding

    labels = np.arange(len(jpegs), dtype=np.int32) % 1000
    examples = tf.data.Dataset.from_tensor_slices({"image": jpegs, "label": labels})
    dataset = train_dataset([Source(examples, len(jpegs))], shard_indices=[0], shard_batch_size=batch_size, seed=0,
                            augmentation=TrainAugmentation(image_size=224, rand_augment=rand_augment), cache=True)
    batch = next(dataset.as_numpy_iterator())
    before = {"image": np.asarray(device_augment.normalize(batch["image"])), "label": batch["label"]}
    mesh = sharding.create_mesh()
    times = {"float32": [], "uint8": []}
    for _ in range(repeats):
        for name, host_batch in (("float32", before), ("uint8", batch)):
            start = time.perf_counter()
            jax.block_until_ready(sharding.global_batch(host_batch, mesh))
            times[name].append(time.perf_counter() - start)
    sizes = {"float32": sum(v.nbytes for v in before.values()), "uint8": sum(v.nbytes for v in batch.values())}
    median = {name: statistics.median(values) for name, values in times.items()}
    device = f"{jax.device_count()} x {jax.devices()[0].platform}"
    rows = [f"host->device, one batch of {batch_size} at 224 px (sharding.global_batch to {device}; median of "
            f"{repeats}, alternated):"]
    for name, label in (("float32", "float32 images, normalised on the host (before)"),
                        ("uint8", "uint8 images + erasing boxes (now)")):
        rows.append(f"  {label:50s} {sizes[name] / 1e6:7.2f} MB | {median[name] * 1e3:7.2f} ms | "
                    f"{sizes[name] / median[name] / 1e9:6.2f} GB/s")
    rows.append(f"  before / now: {sizes['float32'] / sizes['uint8']:.2f}x the bytes, "
                f"{median['float32'] / median['uint8']:.2f}x the time")
    return rows


def timm_transforms(interpolation: str = "bicubic"):
    """timm's training transform for the same recipe, and its eval transform (crop 0.875).

    ``interpolation``: the random-resized crop's filter. ConvNeXt's and HorNet's recipes use
    bicubic (timm's ``train_interpolation``); dog_jax resizes bilinearly (a documented
    difference), so ``"bilinear"`` gives the like-for-like comparison."""
    train = create_transform(224, is_training=True, auto_augment="rand-m9-mstd0.5-inc1", re_prob=0.25,
                             re_mode="pixel", interpolation=interpolation)
    evaluation = create_transform(224, is_training=False, crop_pct=0.875, interpolation="bicubic")
    return train, evaluation


def measure_timm(jpegs: list[bytes], transform, *, batch_size: int, batches: int,
                 warmup: int) -> tuple[float, float]:
    """(images per wall second, images per CPU-second) of ``transform`` on PIL-decoded JPEGs in
    this thread, batched with ``torch.stack`` as timm's DataLoader collates them.

    timm 1.0.31 with current Pillow raises for PosterizeIncreasing at magnitude 10 (0 bits); such
    an image is counted (its time was spent) and transformed again, as a training loop would
    have to."""
    torch.set_num_threads(1)

    def one_batch(offset):
        tensors = []
        for index in range(offset, offset + batch_size):
            while True:
                try:
                    image = Image.open(io.BytesIO(jpegs[index % len(jpegs)])).convert("RGB")
                    tensors.append(transform(image))
                    break
                except ValueError:
                    continue
        return torch.stack(tensors)

    for batch in range(warmup):
        one_batch(batch * batch_size)
    start, cpu_start = time.perf_counter(), time.process_time()
    for batch in range(batches):
        one_batch((warmup + batch) * batch_size)
    images = batches * batch_size
    return images / (time.perf_counter() - start), images / (time.process_time() - cpu_start)


def profile_stages(jpegs: list[bytes], *, images: int = 512) -> list[tuple[str, float]]:
    """(stage, ms per image at one thread) of the training map, from cumulative prefixes of it:
    each stage's cost is the difference of two prefixes' CPU time per image."""
    spec = randaugment.parse_rand_augment("rand-m9-mstd0.5-inc1")
    options = tf.data.Options()
    options.threading.private_threadpool_size = 1
    options.threading.max_intra_op_parallelism = 1
    options.autotune.enabled = False

    def prefix(depth):
        def preprocess(index, image_bytes):
            seeds = tf.random.experimental.stateless_split(tf.stack([index, tf.constant(1, tf.int64)]), 4)
            image = augment.decode_and_random_crop(image_bytes, seeds[0], 224)
            if depth > 1:
                image = augment.to_uint8(image)
            if depth > 2:
                image = augment.random_flip_left_right(image, seeds[1])
            if depth > 3:
                image = randaugment.rand_augment(image, seeds[2], spec)
            if depth > 4:
                return image, augment.erasing_box(seeds[3], 224, 224, probability=0.25)
            return image
        return preprocess

    totals = []
    for depth in range(1, len(STAGES) + 1):
        dataset = tf.data.Dataset.from_tensor_slices(jpegs).cache().repeat().enumerate()
        dataset = dataset.map(prefix(min(depth, 5)), num_parallel_calls=1)
        batch = 64 if depth == 6 else 1
        iterator = iter(dataset.batch(batch).with_options(options))
        for _ in range(64 // batch):
            next(iterator)
        start = time.process_time()
        for _ in range(images // batch):
            next(iterator)
        totals.append(1e3 * (time.process_time() - start) / images)
    return [(name, total - (totals[i - 1] if i else 0.0)) for i, (name, total) in enumerate(zip(STAGES, totals))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    parser.add_argument("--threads", type=int, nargs="*", default=sorted({1, available}),
                        help="tf.data thread-pool sizes for the scaling table (default: 1 and all cores)")
    parser.add_argument("--images", type=int, default=256, help="distinct JPEGs (cycled)")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--batches", type=int, default=6, help="timed batches per measurement")
    parser.add_argument("--warmup", type=int, default=2, help="untimed batches first")
    parser.add_argument("--scaling_batches", type=int, default=16,
                        help="timed batches per measurement of the thread-scaling table")
    parser.add_argument("--rounds", type=int, default=3, help="alternations of dog_jax and timm (medians)")
    parser.add_argument("--rand_augment", default="rand-m9-mstd0.5-inc1", help="timm RandAugment string; '' = off")
    parser.add_argument("--shards", type=int, nargs="*", default=[1],
                        help="data shards read by this process (one per local device by default in training), "
                             "e.g. --shards 1 8 to compare; must divide --batch_size")
    parser.add_argument("--no-timm", dest="timm", action="store_false", help="dog_jax only")
    parser.add_argument("--transfer_repeats", type=int, default=20,
                        help="timed host->device copies of each batch format (0 = skip that table)")
    parser.add_argument("--profile", action="store_true",
                        help="only the per-stage cost of the training map (ms per image, 1 thread)")
    parser.add_argument("--timm_interpolation", default="bicubic", choices=["bicubic", "bilinear"],
                        help="timm's random-resized-crop filter (the recipes: bicubic; dog_jax: bilinear)")
    args = parser.parse_args()
    if args.timm and torch is None:
        parser.error("timm is not installed; install requirements-test.txt or pass --no-timm")

    jpegs = generate_jpegs(args.images)
    kilobytes = np.mean([len(j) for j in jpegs]) / 1024
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{len(jpegs)} JPEGs, mean {kilobytes:.0f} KB; {available} cores available; batch {args.batch_size}; "
          f"RandAugment {args.rand_augment or 'off'}; load average {load:.2f} at start"
          + (f"; timm crop filter {args.timm_interpolation}" if args.timm else ""))
    if args.profile:
        for name, milliseconds in profile_stages(jpegs):
            print(f"  {name:20s} {milliseconds:6.2f} ms per image")
        return
    common = dict(batch_size=args.batch_size, batches=args.batches, warmup=args.warmup)
    if args.timm:
        timm_train, timm_eval = timm_transforms(args.timm_interpolation)
        rates = {key: [] for key in ("dog_train", "timm_train", "dog_eval", "timm_eval")}
        for _ in range(args.rounds):  # alternate, so both sides see the same machine state
            rates["dog_train"].append(measure(jpegs, threads=1, rand_augment=args.rand_augment, **common)[1])
            rates["timm_train"].append(measure_timm(jpegs, timm_train, **common)[1])
            rates["dog_eval"].append(measure_eval(jpegs, threads=1, **common)[1])
            rates["timm_eval"].append(measure_timm(jpegs, timm_eval, **common)[1])
        median = {key: statistics.median(values) for key, values in rates.items()}
        print("images per CPU-second, 1 thread, median of "
              f"{args.rounds} alternations (each: {', '.join(f'{v:.0f}' for v in rates['dog_train'])} dog_jax / "
              f"{', '.join(f'{v:.0f}' for v in rates['timm_train'])} timm):")
        print(f"  train | dog_jax {median['dog_train']:7.1f} | timm {median['timm_train']:7.1f} | "
              f"ratio {median['dog_train'] / median['timm_train']:.2f}x")
        print(f"  eval  | dog_jax {median['dog_eval']:7.1f} | timm {median['timm_eval']:7.1f} | "
              f"ratio {median['dog_eval'] / median['timm_eval']:.2f}x")
    if args.transfer_repeats:
        for line in transfer_rows(jpegs, batch_size=args.batch_size, repeats=args.transfer_repeats,
                                  rand_augment=args.rand_augment):
            print(line)
    print_scaling(jpegs, thread_counts=args.threads, shard_counts=args.shards, rounds=args.rounds,
                  batch_size=args.batch_size, batches=args.scaling_batches, warmup=args.warmup,
                  rand_augment=args.rand_augment)


def print_scaling(jpegs: list[bytes], *, thread_counts: list[int], shard_counts: list[int], rounds: int,
                  **common) -> None:
    """Wall-clock rate of the training pipeline per thread count (medians of ``rounds``, the
    thread counts alternated) and a load-independent estimate of its scaling.

    On a shared machine the wall-clock scaling measures the other load as much as the
    pipeline. The estimate uses what the pipeline controls: images per CPU-second at N
    threads (parallel overhead) and the fraction of the wall time its N workers were runnable
    (on a CPU or queued for one) rather than blocked waiting on the pipeline. On an idle
    machine runnable time becomes CPU time, so the rate would be (images per CPU-second) x
    (sum of the workers' runnable fractions)."""
    for shards in shard_counts:
        runs = {threads: [] for threads in thread_counts}
        for _ in range(rounds):
            for threads in thread_counts:
                runs[threads].append(measure_threads(jpegs, threads=threads, shards=shards, **common))
        for line in scaling_rows(runs, shards=shards):
            print(line)
    print(f"(medians of {rounds} alternations; scaling relative to {min(thread_counts)} thread(s) x threads; the "
          "wall-clock scaling is meaningful only on an otherwise idle machine)")


def scaling_rows(runs: dict[int, list[ThreadRun]], *, shards: int) -> list[str]:
    """One table row per thread count from its runs' medians (see :func:`print_scaling`); scaling
    is relative to the smallest thread count."""
    median = {threads: {
        "wall": statistics.median(run.wall_rate for run in results),
        "cpu": statistics.median(run.cpu_rate for run in results),
        "runnable": statistics.median(statistics.fmean(run.runnable) for run in results),
        "consumer": statistics.median(run.consumer_cpu for run in results),
    } for threads, results in runs.items()}
    base = min(runs)
    one = median[base]
    rows = []
    for threads in runs:
        row = median[threads]
        wall_scaling = row["wall"] * base / (threads * one["wall"])
        idle_scaling = (row["cpu"] * row["runnable"]) / (one["cpu"] * one["runnable"])
        rows.append(f"train threads {threads:3d} shards {shards:2d} | {row['wall']:7.1f} img/s wall-clock "
                    f"(scaling {wall_scaling:.2f}) | {row['cpu']:6.1f} img per CPU-second | workers runnable "
                    f"{row['runnable']:4.0%} | consumer thread {row['consumer']:4.1%} of a core | "
                    f"idle-machine scaling estimate {idle_scaling:.2f}")
    return rows

if __name__ == "__main__":
    main()
