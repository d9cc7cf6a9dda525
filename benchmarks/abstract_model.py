"""Building each paper model abstractly (``nnx.eval_shape(lambda: create_model(...))``, what the
trainer, AOT compilation, restore and export do) with and without ``dog_jax.models.tracing``'s
quiet sharding probes, alternating, in one process::

  .venv/bin/python benchmarks/abstract_model.py --repeats 3

Without them, flax's per-update ``sharding`` probe makes JAX build an error message that walks the
whole trace at every parameter (docs/performance.md, "Building a model under a trace").
"""

import argparse
import contextlib
import statistics
import time

from flax import nnx

from dog_jax.models import create_model, registry
from dog_jax.models.tracing import quiet_sharding_probes

MODELS = ("convmixer_512_12", "convnext_tiny", "convnextv2_tiny", "hornet_tiny_7x7")


def build_seconds(name: str) -> float:
    start = time.perf_counter()
    nnx.eval_shape(lambda: create_model(name, rngs=nnx.Rngs(0)))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    variants = {"quiet probes (create_model)": quiet_sharding_probes, "JAX's own probe": contextlib.nullcontext}
    print(f"{'model':18} {'quiet probes s':>15} {'JAX probe s':>12} {'ratio':>6}")
    for name in MODELS:
        times: dict[str, list[float]] = {variant: [] for variant in variants}
        build_seconds(name)  # warm-up: imports, eager helpers
        for _ in range(args.repeats):
            for variant, context in variants.items():
                original = registry.quiet_sharding_probes
                registry.quiet_sharding_probes = context  # the one block create_model builds inside
                try:
                    times[variant].append(build_seconds(name))
                finally:
                    registry.quiet_sharding_probes = original
        quiet, probe = (statistics.median(times[variant]) for variant in variants)
        print(f"{name:18} {quiet:15.2f} {probe:12.2f} {probe / quiet:6.1f}")


if __name__ == "__main__":
    main()
