"""Find convolution kernels by shape in a flat set of arrays, keeping layer names.

Depthwise kernels are recognised by shape alone:

* PyTorch (C, 1, kh, kw) — OIHW with one input channel per group;
* Flax/JAX (kh, kw, 1, C) — HWIO with one input channel per group;

with kh, kw ≥ 2 and at least 3 pixels along one axis (1×1 and 2×2 kernels have no centre and
surround and are ignored). Because one format needs
dim 1 == 1 and kh ≥ 2 and the other dim 1 == kw ≥ 2, no shape matches both; the checkpoint format's
layout (PyTorch → OIHW, orbax → HWIO) is still preferred, so a PyTorch pointwise (O, I, 1, 1) kernel
is never taken for (kh, kw, 1, C) with C = 1 (in .npz / .safetensors such a shape is read as 1×1). A regular convolution
with a single input channel (e.g. a grayscale stem) has the same shape and is counted as depthwise.

Regular k×k convolution kernels (``include_regular``) are (O, I, kh, kw) or (kh, kw, I, O); the
checkpoint format decides (PyTorch → OIHW, orbax → HWIO); for .npz / .safetensors the array's name
(Flax "…kernel" → HWIO, PyTorch "…weight" → OIHW), else the square pair of dimensions (the smaller
one when both are square, OIHW on a tie) decides.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Mapping

import numpy as np

from dog_jax.analysis.readers import Checkpoint, Progress, read_checkpoint

#: Path segments of optimiser state (Adam moments, momentum, ...) that duplicate parameter shapes.
OPTIMIZER_SEGMENTS = frozenset({
    "opt_state", "optimizer", "optimizer_state", "optim", "mu", "nu", "exp_avg", "exp_avg_sq",
    "momentum_buffer", "trace", "momentum",
})
#: Path segments of a model EMA kept beside the weights (this trainer: "ema"; ConvNeXt/HorNet
#: release files: "model_ema"): a second copy of every layer, analysed only on request.
EMA_SEGMENTS = frozenset({"ema", "model_ema"})


@dataclass(frozen=True)
class KernelLayer:
    """The spatial kernels of one convolution layer.

    Attributes:
      name: the array's name in the checkpoint ("a/b/kernel", or the PyTorch key).
      kind: "depthwise" or "regular".
      kernels: (N, kh, kw) float32 — N = channels (depthwise) or out·in (regular), in the source's
        channel order.
      layout: "OIHW" or "HWIO", the layout it was read in.
      source_shape: the array's shape in the checkpoint.
    """

    name: str
    kind: str
    kernels: np.ndarray
    layout: str
    source_shape: tuple[int, ...]

    @property
    def kernel_size(self) -> tuple[int, int]:
        """(kh, kw)."""
        return tuple(self.kernels.shape[1:])


def _has_segment(name: str, segments: frozenset[str]) -> bool:
    return any(seg in segments for seg in re.split(r"[/.]", name))


def _name_layout(name: str) -> str:
    """Layout suggested by the parameter's name: Flax calls it "kernel", PyTorch "weight"."""
    last = re.split(r"[/.]", name)[-1]
    return {"kernel": "HWIO", "weight": "OIHW"}.get(last, "auto")


def _to_oihw_kernels(arr: np.ndarray, layout: str) -> np.ndarray:
    if layout == "HWIO":
        arr = np.transpose(arr, (3, 2, 0, 1))
    return np.ascontiguousarray(arr, dtype=np.float32).reshape(-1, arr.shape[2], arr.shape[3])


def classify_shape(shape: tuple[int, ...], layout_hint: str = "auto") -> tuple[str, str] | None:
    """How a 4-D array shape reads as a convolution kernel.

    Args:
      shape: the array's shape.
      layout_hint: "OIHW", "HWIO" or "auto" (the checkpoint format's convention).

    Returns:
      (kind, layout) with kind "depthwise" / "regular" and layout "OIHW" / "HWIO", or None when it
      is not a spatial (≥ 2×2) convolution kernel.
    """
    if len(shape) != 4:
        return None
    a, b, c, d = shape

    def spatial(h: int, w: int) -> bool:
        # A centre and a surround need ≥ 2 pixels per axis and ≥ 3 along one (DoGs need a ring).
        return h >= 2 and w >= 2 and max(h, w) >= 3

    # The format's own layout first: a PyTorch pointwise (O, I, 1, 1) kernel must not be read as
    # an HWIO (kh, kw, 1, 1) depthwise one, nor a Flax pointwise (1, 1, I, O) as OIHW.
    torch_dw = b == 1 and spatial(c, d) and layout_hint != "HWIO"
    flax_dw = c == 1 and spatial(a, b) and layout_hint != "OIHW" and not (layout_hint == "auto" and d == 1)
    if torch_dw:
        return "depthwise", "OIHW"
    if flax_dw:
        return "depthwise", "HWIO"
    if layout_hint == "OIHW":
        return ("regular", "OIHW") if spatial(c, d) else None
    if layout_hint == "HWIO":
        return ("regular", "HWIO") if spatial(a, b) else None
    # Both pairs square (e.g. (3, 3, 256, 256)): kernels are small, channels are not.
    oihw, hwio = c == d and spatial(c, d), a == b and spatial(a, b)
    if oihw and hwio:
        return ("regular", "HWIO") if a < c else ("regular", "OIHW")
    if oihw:
        return "regular", "OIHW"
    if hwio:
        return "regular", "HWIO"
    return None


def find_kernels(
    checkpoint: Checkpoint | Mapping[str, np.ndarray],
    *,
    layers: str | None = None,
    include_regular: bool = False,
    layout: str = "auto",
    ema: bool = False,
    progress: Progress | None = None,
) -> list[KernelLayer]:
    """Collect depthwise (and optionally regular) convolution kernels from arrays.

    Args:
      checkpoint: a :class:`~dog_jax.analysis.readers.Checkpoint` or a mapping name → array.
      layers: optional regular expression; only arrays whose name matches (``re.search``) are kept.
      include_regular: also collect regular k×k convolution kernels.
      layout: layout hint for regular kernels when ``checkpoint`` is a plain mapping.
      ema: take the model EMA's kernels (arrays under an "ema" / "model_ema" segment) instead
        of the model's.
      progress: called with one-line progress messages.

    Returns:
      Layers in checkpoint order. Optimiser-state arrays (Adam moments etc.) are skipped, and
      so are the EMA's arrays (or, with ``ema``, the model's).
    """
    if isinstance(checkpoint, Checkpoint):
        arrays, layout = checkpoint.arrays, checkpoint.layout
    else:
        arrays = checkpoint
    try:
        pattern = re.compile(layers) if layers else None
    except re.error as e:
        raise ValueError(f"--layers {layers!r} is not a valid regular expression ({e}).") from None
    found, skipped, other_copy = [], 0, 0
    for name, arr in arrays.items():
        shape = tuple(int(s) for s in np.shape(arr))
        read = classify_shape(shape, layout if layout != "auto" else _name_layout(name))
        if read is None or (read[0] == "regular" and not include_regular):
            continue
        if pattern is not None and not pattern.search(name):
            continue
        if _has_segment(name, OPTIMIZER_SEGMENTS):
            skipped += 1
            continue
        if _has_segment(name, EMA_SEGMENTS) != ema:
            other_copy += 1
            continue
        kind, lay = read
        found.append(KernelLayer(name=name, kind=kind, kernels=_to_oihw_kernels(np.asarray(arr), lay),
                                 layout=lay, source_shape=shape))
    if progress and skipped:
        progress(f"skipped {skipped} optimiser-state arrays with kernel shapes")
    if progress and other_copy:
        progress(f"skipped {other_copy} kernel arrays of the model's weights (analysing the EMA)" if ema else
                 f"skipped {other_copy} kernel arrays of the model EMA (pass --ema to analyse those instead)")
    return found


def extract_depthwise_kernels(
    source: str | os.PathLike | Checkpoint | Mapping[str, np.ndarray],
    *,
    layers: str | None = None,
    include_regular: bool = False,
    ema: bool = False,
    progress: Progress | None = None,
) -> list[KernelLayer]:
    """Read a checkpoint (or take arrays) and return its depthwise convolution kernels per layer.

    Args:
      source: a checkpoint path (orbax directory, .pth/.pt/.bin, .safetensors, .npz), a
        :class:`~dog_jax.analysis.readers.Checkpoint`, or a mapping name → array (e.g. a flattened
        Flax state or a PyTorch ``state_dict`` converted to numpy).
      layers: regular expression selecting layers by name (``re.search``).
      include_regular: also return regular k×k convolution kernels (kind "regular").
      ema: return the model EMA's kernels instead of the model's (checkpoints that hold both).
      progress: called with one-line progress messages (e.g. ``print``).

    Returns:
      A list of :class:`KernelLayer`, each with (N, kh, kw) float32 kernels and the layer name.

    Example:
      >>> layers = extract_depthwise_kernels("mobilenet_v2-b0353104.pth")
      >>> layers[0].name, layers[0].kernels.shape
      ('features.1.conv.0.0.weight', (32, 3, 3))
    """
    if isinstance(source, (str, os.PathLike)):
        source = read_checkpoint(source, progress=progress)
    elif isinstance(source, Mapping) and not isinstance(source, Checkpoint):
        source = {k: np.asarray(v) for k, v in source.items()}
    return find_kernels(source, layers=layers, include_regular=include_regular, ema=ema, progress=progress)


def group_by_size(layers: list[KernelLayer]) -> dict[tuple[str, int, int], tuple[np.ndarray, np.ndarray]]:
    """Pool kernels of the same kind and size across layers (the paper clusters per kernel size).

    Returns:
      {(kind, kh, kw): (kernels (N, kh, kw) float32, layer_index (N,) int into ``layers``)}.
    """
    groups: dict[tuple[str, int, int], list[int]] = {}
    for i, layer in enumerate(layers):
        groups.setdefault((layer.kind, *layer.kernel_size), []).append(i)
    out = {}
    for key, idx in groups.items():
        kernels = np.concatenate([layers[i].kernels for i in idx])
        owner = np.concatenate([np.full(len(layers[i].kernels), i) for i in idx])
        out[key] = (kernels, owner)
    return out
