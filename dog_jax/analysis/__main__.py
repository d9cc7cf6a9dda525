"""Command line: ``python -m dog_jax.analysis CHECKPOINT [CHECKPOINT ...] --out DIR``.

Runs the paper's kernel clustering (Sec. 3.1) and the template / DoG-fit / null-baseline analyses on
each checkpoint and writes summary.json, clusters.csv and PNG figures into DIR. Checkpoints and DIR
may be ``gs://`` URLs. See docs/analysis.md.
Errors are reported as one line on stderr with exit code 2.
"""

from __future__ import annotations

import argparse
import sys
import time

from dog_jax import console, storage
from dog_jax.analysis.readers import CheckpointError
from dog_jax.analysis.report import AnalysisOptions
from dog_jax.analysis.run import analyse_to_dir


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m dog_jax.analysis",
        description="Cluster and classify the depthwise convolution kernels of checkpoints "
                    "(Neural Echos, Sec. 3.1, and beyond). Formats: orbax checkpoint directories, "
                    ".pth/.pt/.bin (PyTorch, weights_only), .safetensors, .npz.")
    p.add_argument("checkpoints", nargs="+", metavar="CHECKPOINT", help="checkpoint file or orbax directory")
    p.add_argument("--out", required=True, help="output directory or gs:// URL (created if missing)")
    p.add_argument("--k", type=int, default=3, help="number of k-means clusters per kernel size (default 3)")
    p.add_argument("--layers", default=None, metavar="REGEX",
                   help="only analyse arrays whose name matches this regular expression (re.search)")
    p.add_argument("--include-regular", action="store_true",
                   help="also analyse regular k×k convolution kernels (clustered separately)")
    p.add_argument("--ema", action="store_true",
                   help="analyse the model EMA's kernels (trainer checkpoints with config.ema_decay > 0, "
                        "ConvNeXt/HorNet release files with 'model_ema') instead of the model's")
    p.add_argument("--n-init", type=int, default=10, help="k-means++ restarts (default 10)")
    p.add_argument("--seed", type=int, default=0, help="random seed of k-means, sampling and shuffling")
    p.add_argument("--max-fit", type=int, default=200_000,
                   help="fit k-means on at most this many kernels per group, then assign all (default 200000)")
    p.add_argument("--min-correlation", type=float, default=0.7,
                   help="template classifier: minimum correlation to classify a kernel (default 0.7)")
    p.add_argument("--no-null", action="store_true", help="skip the pixel-shuffled null baseline")
    p.add_argument("--no-figures", action="store_true", help="write summary.json and clusters.csv only")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    p.add_argument("--verbose", action="store_true", help=console.VERBOSE_HELP)
    return p


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console.setup(args.verbose)
    try:
        storage.configure()  # before any storage client: gs:// checkpoints and --out, emulator
    except storage.StorageConfigError as error:
        return _fail(str(error))
    if args.k < 1 or args.n_init < 1 or args.max_fit < 1:
        return _fail("--k, --n-init and --max-fit must be positive integers.")
    if not 0 < args.min_correlation <= 1:
        return _fail(f"--min-correlation must lie in (0, 1], got {args.min_correlation}.")
    options = AnalysisOptions(k=args.k, n_init=args.n_init, seed=args.seed, layers=args.layers,
                              include_regular=args.include_regular, ema=args.ema, max_fit=args.max_fit,
                              min_correlation=args.min_correlation, null_baseline=not args.no_null)
    start = time.monotonic()

    def progress(message: str) -> None:
        if not args.quiet:
            print(f"[{time.monotonic() - start:6.1f}s] {message}", flush=True)

    try:
        analyses = analyse_to_dir(args.checkpoints, args.out, options, figures=not args.no_figures,
                                  progress=progress)
    except (CheckpointError, ValueError) as e:
        return _fail(str(e))
    except OSError as e:
        return _fail(f"{e.filename or args.out}: {e.strerror or e}.")
    for a in analyses:
        for g in a.groups:
            if g.clusters is not None:
                props = ", ".join(f"{k} {v:.1%}" for k, v in g.clusters.proportions().items())
                paper = ", ".join(f"{k} {v:.1%}" for k, v in g.clusters.proportions("paper").items())
                props = f"{props} (paper's centroid-only naming: {paper})"
                progress(f"{a.name} {g.kind} {g.size_name}: {props}")
    progress(f"wrote the results to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
