"""Kernel analysis: the paper's Sec. 3.1 clustering of trained depthwise kernels, and beyond it.

Library API (numpy in, numpy out; usable from a notebook):

* :func:`extract_depthwise_kernels` — read a checkpoint (orbax, PyTorch, safetensors, npz) and
  return its depthwise kernels per layer, with names;
* :func:`cluster_kernels` — the paper's min–max + k-means clustering with named clusters;
* :func:`classify_kernels` — k-means-free template classifier (DoGs, Gaussian derivatives);
* :func:`fit_dog` — per-kernel fit of the paper's DoG (γ, amplitude, offset, centre type).

Command line: ``python -m dog_jax.analysis CHECKPOINT ... --out DIR`` (see docs/analysis.md).
"""

from dog_jax._extras import require

require("dog_jax.analysis", "analysis", "sklearn", "matplotlib")

from dog_jax.analysis.cluster import CLUSTER_LABELS, ClusterResult, cluster_kernels, minmax_normalize
from dog_jax.analysis.fit import DogFit, fit_dog
from dog_jax.analysis.kernels import KernelLayer, extract_depthwise_kernels, group_by_size
from dog_jax.analysis.readers import Checkpoint, CheckpointError, read_checkpoint
from dog_jax.analysis.templates import (TEMPLATE_CLASSES, TemplateClassification, classify_kernels,
                                        make_template_bank)

__all__ = [
    "CLUSTER_LABELS",
    "TEMPLATE_CLASSES",
    "Checkpoint",
    "CheckpointError",
    "ClusterResult",
    "DogFit",
    "KernelLayer",
    "TemplateClassification",
    "classify_kernels",
    "cluster_kernels",
    "extract_depthwise_kernels",
    "fit_dog",
    "group_by_size",
    "make_template_bank",
    "minmax_normalize",
    "read_checkpoint",
]
