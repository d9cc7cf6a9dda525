"""Time of the DoG initializer: compile once, then the median of repeated calls.

    python benchmarks/initializer.py [--n 10000] [--k 9] [--repeats 20]

The target: 10,000 9x9 kernels well under 50 ms on CPU after compilation.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax

from dog_jax import dog, he_normal


def time_init(init, key, shape, repeats: int) -> tuple[float, float]:
    """Returns (first call incl. compilation, median of later calls), both in seconds."""
    fn = jax.jit(init, static_argnums=(1,))
    start = time.perf_counter()
    fn(key, shape).block_until_ready()
    first = time.perf_counter() - start
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        fn(jax.random.fold_in(key, i), shape).block_until_ready()
        times.append(time.perf_counter() - start)
    return first, statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10000, help="number of depthwise kernels (output channels)")
    parser.add_argument("--k", type=int, default=9, help="kernel size")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    shape = (args.k, args.k, 1, args.n)
    key = jax.random.key(0)
    print(f"backend={jax.default_backend()} shape={shape}")
    inits = [("dog()", dog()), ("dog(balanced=False)", dog(balanced=False)), ("he_normal()", he_normal())]
    for name, init in inits:
        first, median = time_init(init, key, shape, args.repeats)
        print(f"{name:22s} first call {first * 1e3:8.1f} ms   median {median * 1e3:7.2f} ms")


if __name__ == "__main__":
    main()
