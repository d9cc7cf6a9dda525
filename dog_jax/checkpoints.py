"""The one checkpoint reader, used by weight conversion (``dog_jax.convert``) and the kernel analysis.

Formats: orbax checkpoints (a step directory, an item directory, or a CheckpointManager root, whose
latest finished step is read), PyTorch files (.pth/.pt/.bin/.ckpt/.tar, ``torch.load(weights_only=True)``:
never unpickles code; torch is imported only here, lazily), .safetensors (parsed directly, no torch)
and .npz (``allow_pickle=False``). Nothing here knows about models or the trainer: orbax checkpoints
are restored as raw pytrees, without a target.

* :func:`read_state_dict` — a file as its nested ``{name: numpy array}`` mapping (what conversion needs);
* :func:`read_checkpoint` — any format as one flat mapping of its floating arrays (what analysis needs).

Orbax items are restored by :mod:`dog_jax.orbax_items` (shared with the trainer's restore).

Every failure is raised as :class:`CheckpointError` with a one-line message that says what was wrong
and how to fix it.
"""

from __future__ import annotations

import json
import re
import struct
import tempfile
import zipfile
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping

import numpy as np
from etils import epath

from dog_jax.checkpoint_error import CheckpointError, first_line
from dog_jax.orbax_items import is_item, is_step, latest_step_dir, restore_pytree
from dog_jax.storage import is_url, run_path

Path = epath.Path  # every path here may be local or gs:// (dog_jax.storage)

# ".tar": timm and torchvision training scripts name torch.save files "model_best.pth.tar".
TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".tar")
FILE_FORMATS = ".pth/.pt/.bin/.ckpt/.tar (PyTorch), .safetensors or .npz"
SUPPORTED = f"an orbax checkpoint directory, {FILE_FORMATS}"

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Checkpoint:
    """Arrays of one checkpoint.

    Attributes:
      path: the file or directory given (for an orbax root: the step directory read).
      format: "orbax", "torch", "safetensors" or "npz".
      layout: "HWIO" (Flax/JAX), "OIHW" (PyTorch) or "auto": how 4-D convolution kernels are
        laid out, used only for regular (non-depthwise) kernels whose shape is ambiguous.
      arrays: flat mapping "a/b/c" → numpy array (native dtype; bfloat16 stays bfloat16).
    """

    path: Path
    format: str
    layout: str
    arrays: Mapping[str, np.ndarray]


def _noop(_: str) -> None:
    pass


def read_checkpoint(path: str | Path, *, progress: Progress | None = None) -> Checkpoint:
    """Read any supported checkpoint into flat numpy arrays.

    Args:
      path: a file (.pth, .pt, .bin, .ckpt, .safetensors, .npz; other names are sniffed) or an
        orbax directory (step directory, item directory or CheckpointManager root).
      progress: called with one-line progress messages (e.g. ``print``).

    Returns:
      A :class:`Checkpoint`.

    Raises:
      CheckpointError: missing path, unknown or corrupt format, pickled code, missing torch.
    """
    progress = progress or _noop
    path = run_path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or directory.")
    if path.is_dir():
        return _read_orbax(path, progress)
    kind, tree = _read_any_file(path, progress)
    arrays = {name: value for name, value in flatten_names(tree) if _is_float_array(value)}
    return Checkpoint(path=path, format=kind, layout="OIHW" if kind == "torch" else "auto", arrays=arrays)


def read_state_dict(path: str | Path, *, progress: Progress | None = None) -> dict[str, Any]:
    """Read a checkpoint file into its ``{name: value}`` mapping, nesting kept as in the file.

    Args:
      path: a .safetensors, .npz or PyTorch (.pth/.pt/.bin/.ckpt/.tar) file; other names are sniffed.
      progress: called with one-line progress messages (e.g. ``print``).

    Returns:
      Tensors as numpy arrays (native dtype; PyTorch float16/bfloat16 become float32 because torch
      cannot hand them to numpy; safetensors bfloat16 stays ``ml_dtypes.bfloat16``); other values of
      a PyTorch file (epoch counters, ...) as stored.

    Raises:
      CheckpointError: missing file, a directory, unknown or corrupt format, pickled code, missing torch.
    """
    path = run_path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or directory.")
    if path.is_dir():
        raise CheckpointError(f"{path}: a directory; a state dict is read from a file ({FILE_FORMATS}).")
    return _read_any_file(path, progress or _noop)[1]


def _read_any_file(path: Path, progress: Progress) -> tuple[str, Any]:
    """:func:`_read_file` for a local file or, through a local copy, a file in a bucket (the readers
    memory-map safetensors and hand torch a file name); errors name the file as given."""
    if not is_url(path):
        return _read_file(path, progress)
    with tempfile.TemporaryDirectory(prefix="dog_jax_checkpoint_") as directory:
        local = run_path(directory) / path.name
        progress(f"copying {path} to a local temporary file")
        path.copy(local)
        try:
            return _read_file(local, progress)
        except CheckpointError as error:
            raise CheckpointError(str(error).replace(str(local), str(path))) from None


def _read_file(path: Path, progress: Progress) -> tuple[str, Any]:
    """(format, nested tree of numpy arrays) of a checkpoint file."""
    suffix = path.suffix.lower()
    kind = {".safetensors": "safetensors", ".npz": "npz"}.get(suffix)
    kind = kind or ("torch" if suffix in TORCH_SUFFIXES else _sniff(path))
    if kind == "npz":
        return kind, _read_npz(path)
    if kind == "safetensors":
        return kind, _read_safetensors(path)
    if kind == "torch":
        return kind, _read_torch(path, progress)
    raise CheckpointError(f"{path}: not a checkpoint this tool can read; expected {SUPPORTED}.")


def _is_float_array(value: Any) -> bool:
    return isinstance(value, np.ndarray) and (value.dtype.kind == "f" or value.dtype.name == "bfloat16")


def _sniff(path: Path) -> str | None:
    with path.open("rb") as f:
        head = f.read(16)
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
        if names and all(n.endswith(".npy") for n in names):
            return "npz"
        if any(n.endswith("data.pkl") for n in names):
            return "torch"
        return None
    if len(head) >= 9 and head[8:9] == b"{":
        return "safetensors"
    if head[:1] == b"\x80":  # pickle protocol 2+ (legacy torch.save)
        return "torch"
    return None


# ----------------------------------------------------------------------------- flattening


def flatten_names(tree: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """``(name, leaf)`` for a nested dict/list tree, names joined with "/" (list items by index)."""
    if isinstance(tree, Mapping):
        for key, value in tree.items():
            yield from flatten_names(value, f"{prefix}/{key}" if prefix else str(key))
    elif isinstance(tree, (list, tuple)):
        for i, value in enumerate(tree):
            yield from flatten_names(value, f"{prefix}/{i}" if prefix else str(i))
    else:
        yield prefix, tree


# ----------------------------------------------------------------------------- PyTorch


def _read_torch(path: Path, progress: Progress) -> Any:
    try:
        import torch
    except ImportError:
        raise CheckpointError(
            f"{path}: reading PyTorch files needs torch (pip install 'dog_jax[torch]'), or convert the file "
            "to .safetensors or .npz.") from None
    import pickle

    progress(f"loading {path} with torch.load(weights_only=True)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        text = str(e)
        if "Weights only load failed" in text or "Unsupported global" in text:
            found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
            what = f" ({found.group(1)})" if found else ""
            raise CheckpointError(
                f"{path}: the pickle needs to run Python code{what} and is refused (weights_only=True); "
                "re-save it as a plain state dict (torch.save(model.state_dict(), ...)) or as .safetensors."
            ) from None
        raise CheckpointError(f"{path}: not a PyTorch checkpoint ({first_line(text)}).") from None
    except Exception as e:  # torch.load raises many types (IndexError, RuntimeError, ...) on garbage.
        detail = first_line(str(e))
        detail = detail if len(detail) > 20 else f"{type(e).__name__} while unpickling"
        raise CheckpointError(f"{path}: not a PyTorch checkpoint written by torch.save ({detail}).") from None


    def to_numpy(tree: Any) -> Any:
        if isinstance(tree, Mapping):
            return {k: to_numpy(v) for k, v in tree.items()}
        if isinstance(tree, (list, tuple)):
            return [to_numpy(v) for v in tree]
        if isinstance(tree, torch.Tensor):
            t = tree.detach().cpu()
            return (t.float() if t.dtype in (torch.bfloat16, torch.float16) else t).numpy()
        return tree

    return to_numpy(obj)


# ----------------------------------------------------------------------------- safetensors

_SAFETENSORS_DTYPES = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
    "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool",
}


def _read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """Parse the documented safetensors layout: u64 header size, JSON header, raw little-endian data.

    Done here (not via ``safetensors.numpy``) because numpy has no native bfloat16, which the
    library's numpy loader rejects; ml_dtypes (a JAX dependency) provides it.
    """
    import ml_dtypes

    size = path.stat().length
    with path.open("rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise CheckpointError(f"{path}: not a safetensors file (too short).")
        (header_len,) = struct.unpack("<Q", raw)
        if header_len > size - 8 or header_len > 100_000_000:
            raise CheckpointError(f"{path}: not a safetensors file (bad header length).")
        try:
            header = json.loads(f.read(header_len))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise CheckpointError(f"{path}: not a safetensors file (header is not JSON).") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: not a safetensors file (header is not a JSON object).")
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + header_len)
    arrays = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype_name = _SAFETENSORS_DTYPES[info["dtype"]]
            dtype = np.dtype(getattr(ml_dtypes, dtype_name)) if dtype_name == "bfloat16" else np.dtype(dtype_name)
            start, end = info["data_offsets"]
            arr = np.frombuffer(data[start:end], dtype=dtype.newbyteorder("<")).reshape(info["shape"])
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{path}: corrupt safetensors entry {name!r}.") from None
        arrays[name] = arr
    return arrays


# ----------------------------------------------------------------------------- npz


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except ValueError as e:
        if "allow_pickle" in str(e):
            raise CheckpointError(f"{path}: the .npz holds pickled Python objects, which are refused; "
                                  "save plain numeric arrays (np.savez(path, **arrays)).") from None
        raise CheckpointError(f"{path}: not a readable .npz file ({first_line(str(e))}).") from None
    except (OSError, zipfile.BadZipFile, EOFError) as e:
        raise CheckpointError(f"{path}: not a readable .npz file ({first_line(str(e))}).") from None
    return arrays


# ----------------------------------------------------------------------------- orbax

def _read_orbax(path: Path, progress: Progress) -> Checkpoint:
    """Read an item directory, a step directory, a CheckpointManager root or a run directory
    whose single subdirectory is a CheckpointManager root (``train.py``'s ``<workdir>``)."""
    if is_item(path):
        items = {"": path}
        step_dir = path
    else:
        step_dir = path
        if not is_step(path):
            step_dir = latest_step_dir(path)
            if step_dir is None:
                # A training run directory (train.py --workdir) holds the manager root one level down.
                roots = [p for p in sorted(path.iterdir()) if p.is_dir() and latest_step_dir(p) is not None]
                if len(roots) == 1:
                    progress(f"{path}: reading the checkpoints in {roots[0].name}/")
                    path, step_dir = roots[0], latest_step_dir(roots[0])
                elif len(roots) > 1:
                    names = ", ".join(p.name for p in roots)
                    raise CheckpointError(f"{path}: several checkpoint directories ({names}); pass one of them.")
            if step_dir is None:
                raise CheckpointError(
                    f"{path}: a directory, but not an orbax checkpoint (no _METADATA / _CHECKPOINT_METADATA "
                    f"and no step subdirectories); expected {SUPPORTED}.")
            progress(f"{path}: CheckpointManager root, reading the latest step {step_dir.name}")
        items = {p.name: p for p in sorted(step_dir.iterdir()) if p.is_dir() and is_item(p)}
        if not items:
            raise CheckpointError(f"{step_dir}: orbax step directory without readable pytree items.")
    arrays: dict[str, np.ndarray] = {}
    for item_name, item_dir in items.items():
        progress(f"restoring orbax item {item_dir}")
        tree = restore_pytree(item_dir)
        for name, value in flatten_names(tree, item_name):
            if _is_float_array(value):
                arrays[name] = value
    if any(name.endswith("basis_coeffs") for name in arrays):  # dw_param="basis": materialised kernels
        arrays = _materialize_basis(arrays, step_dir)
    return Checkpoint(path=step_dir, format="orbax", layout="HWIO", arrays=arrays)


def _materialize_basis(arrays: dict[str, np.ndarray], step_dir: Path) -> dict[str, np.ndarray]:
    """``dog_jax.models.basis.materialize`` for a trainer step directory: the kernel size comes from
    the step's ``model`` JSON item (``dw_kernel_size``, written by ``train.py``; checkpoints written
    before that field existed name the model and overrides, from which the registry tells it)."""
    from dog_jax.models import basis, registry  # the models (and JAX) only for basis checkpoints

    info_file = step_dir / "model" / "metadata"
    if not info_file.is_file():
        raise CheckpointError(f"{step_dir}: basis-parameterised depthwise layers but no model/metadata JSON to read "
                              "their kernel size from; pass a train.py checkpoint step directory.")
    info = json.loads(info_file.read_text())
    size = info.get("dw_kernel_size") or registry.depthwise_kernel_size(info["model"],
                                                                        **info.get("model_overrides", {}))
    return basis.materialize(arrays, size)
