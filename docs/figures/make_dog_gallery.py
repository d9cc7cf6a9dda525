"""Draws the paper's Fig. 3 with dog_jax: 9x9 DoG kernels for gamma = 0.2, 0.4, 0.6, 0.8, on- and off-centre.

    python docs/figures/make_dog_gallery.py [--out docs/figures/dog_fig3.png]
"""

from __future__ import annotations

import argparse
import pathlib

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from dog_jax import dog_kernel  # noqa: E402

GAMMAS = (0.2, 0.4, 0.6, 0.8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(pathlib.Path(__file__).with_name("dog_fig3.png")))
    parser.add_argument("--k", type=int, default=9)
    args = parser.parse_args()
    fig, axes = plt.subplots(2, len(GAMMAS), figsize=(2.2 * len(GAMMAS), 4.6))
    for col, gamma in enumerate(GAMMAS):
        for row, on_center in enumerate((True, False)):
            kernel = np.asarray(dog_kernel(args.k, gamma, on_center=on_center))
            limit = np.abs(kernel).max()
            ax = axes[row, col]
            ax.imshow(kernel, cmap="RdBu_r", vmin=-limit, vmax=limit)
            ax.set_xticks([])
            ax.set_yticks([])
            kind = "on" if on_center else "off"
            ax.set_title(f"γ={gamma} {kind}\nmax|w|={limit:.3f}", fontsize=9)
    fig.suptitle(f"DoG kernels, k={args.k} (red +, blue −; each panel scaled to its own max)", fontsize=10)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
