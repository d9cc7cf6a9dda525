"""PyTorch <-> dog_jax weight conversion for ConvMixer, ConvNeXt V1/V2 and HorNet.

* :func:`load_torch_state_dict` fills a model from a PyTorch state dict with timm names or the
  official names (facebookresearch ConvNeXt / ConvNeXt-V2, raoyongming HorNet, locuslab
  ConvMixer's bare ``nn.Sequential`` indices), also when nested under "state_dict", "model" or
  "model_ema", with torch tensors or NumPy arrays as values.
* :func:`to_torch_state_dict` is the reverse: NumPy arrays keyed and shaped as timm (or the
  official code) expects, so ``timm_model.load_state_dict({k: torch.from_numpy(v) ...},
  strict=True)`` succeeds.
* :func:`read_state_dict` (from :mod:`dog_jax.checkpoints`, shared with the kernel analysis) reads
  ``.safetensors`` (no torch needed), ``.npz``, or ``.pth``/``.pt``/``.bin``/``.ckpt``/``.tar``
  (needs torch; loaded with ``weights_only=True``); every read failure is a ``CheckpointError``.

Layouts: torch conv weights (O, I/groups, kh, kw) <-> HWIO (kh, kw, I/groups, O); linear
weights (out, in) <-> (in, out); 1×1 conv weights (out, in, 1, 1) <-> (in, out). ConvNeXt-V2's
official GRN parameters (1, 1, 1, C) and timm's (C,) both map to (C,). Which key fills which variable:
:mod:`dog_jax.torch_keys`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from dog_jax.checkpoints import CheckpointError, read_state_dict
from dog_jax.torch_keys import KeyTable, key_table, namings_for

__all__ = [
    "CheckpointError",
    "LoadReport",
    "StateDictMismatchError",
    "load_torch_checkpoint",
    "load_torch_state_dict",
    "read_state_dict",
    "save_safetensors",
    "to_torch_state_dict",
]

_NESTING_KEYS = ("state_dict", "model", "model_ema")
_KEY_PREFIXES = ("module.", "_orig_mod.")  # DistributedDataParallel, torch.compile


class StateDictMismatchError(ValueError):
    """A state dict does not fit the model; the message lists every problem key."""


@dataclasses.dataclass(frozen=True)
class LoadReport:
    """What :func:`load_torch_state_dict` did.

    Attributes:
      naming: the naming scheme the keys were read with ("timm" or "official").
      loaded: torch keys copied into the model.
      missing: keys the model needs that the state dict lacks.
      unexpected: state-dict keys the model has no place for.
      mismatched: (key, checkpoint shape, expected torch shape) for keys of the wrong shape.
    """

    naming: str
    loaded: tuple[str, ...]
    missing: tuple[str, ...]
    unexpected: tuple[str, ...]
    mismatched: tuple[tuple[str, tuple[int, ...], tuple[int, ...]], ...]

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------

def _to_numpy(value: Any) -> np.ndarray:
    """torch tensor / jax array / array-like -> NumPy, without importing torch."""
    if hasattr(value, "detach") and hasattr(value, "numpy"):  # torch.Tensor
        value = value.detach().cpu()
        try:
            return value.numpy().copy()  # .numpy() shares the tensor's storage
        except TypeError:  # bfloat16 and friends have no NumPy dtype
            return value.float().numpy()
    return np.asarray(value)


def _unwrap(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Descends into "state_dict" / "model" / "model_ema" and strips DDP/compile prefixes."""
    if not isinstance(state_dict, Mapping):
        raise ValueError(f"Expected a state dict (a mapping of names to tensors), got {type(state_dict).__name__}.")
    sd: Mapping[str, Any] = state_dict
    while True:
        nested = next((k for k in _NESTING_KEYS if isinstance(sd.get(k), Mapping)), None)
        if nested is None:
            break
        sd = sd[nested]
    out = dict(sd)
    for prefix in _KEY_PREFIXES:
        if out and all(isinstance(k, str) and k.startswith(prefix) for k in out):
            out = {k[len(prefix):]: v for k, v in out.items()}
    return out


def _to_model_layout(kind: str, value: np.ndarray) -> np.ndarray | None:
    """Torch layout -> model layout; None when the value cannot have this kind's layout."""
    if kind == "conv":
        return value.transpose(2, 3, 1, 0) if value.ndim == 4 else None
    if kind == "dense":
        if value.ndim == 4 and value.shape[2:] == (1, 1):
            value = value.reshape(value.shape[:2])
        return value.T if value.ndim == 2 else None
    if kind == "vector":
        if value.ndim == 0 or sum(d != 1 for d in value.shape) > 1:
            return None
        return value.reshape(-1)
    raise AssertionError(kind)


def _pick_naming(model: nnx.Module, keys: set[str], naming: str) -> tuple[str, KeyTable]:
    if naming != "auto":
        return naming, key_table(model, naming)  # raises for a naming the model does not have
    candidates = [(n, key_table(model, n)) for n in namings_for(model)]
    return max(candidates, key=lambda c: len(keys & set(c[1].slots)))


def load_torch_state_dict(model: nnx.Module, state_dict: Mapping[str, Any], *, naming: str = "auto",
                          strict: bool = True) -> LoadReport:
    """Copies PyTorch weights into ``model`` in place.

    Loading pretrained weights is fastest into an abstract model, which skips the random init:
    ``model = nnx.eval_shape(lambda: create_model(name, rngs=nnx.Rngs(0)))`` then
    ``load_torch_state_dict(model, sd)`` fills every variable with a concrete array.

    Args:
      model: a ConvMixer / ConvNeXt / HorNet from :func:`dog_jax.models.create_model` with the
        same architecture as the checkpoint (concrete, or abstract from ``nnx.eval_shape``).
      state_dict: ``{name: tensor}`` with torch tensors or NumPy arrays, possibly nested under
        "state_dict", "model" or "model_ema" and prefixed by "module."; BatchNorm
        ``num_batches_tracked`` entries are accepted and ignored.
      naming: "timm", "official" or "auto" (the scheme matching most keys).
      strict: when True (default) any missing, unexpected or mis-shaped key raises one
        :class:`StateDictMismatchError` listing them all and nothing is copied; when False the
        matching keys are copied and the report lists the rest.

    Returns:
      A :class:`LoadReport`.
    """
    sd = _unwrap(state_dict)
    naming, table = _pick_naming(model, set(sd), naming)
    missing = [k for k, slot in table.slots.items() if k not in sd and slot.kind != "count"]
    unexpected = [k for k in sd if k not in table.slots]
    mismatched, updates = [], []
    for key, slot in table.slots.items():
        if key not in sd or slot.kind == "count":
            continue
        value = _to_numpy(sd[key])
        converted = _to_model_layout(slot.kind, value)
        if converted is None or converted.shape != tuple(slot.variable.shape):
            mismatched.append((key, tuple(value.shape), slot.torch_shape))
            continue
        updates.append((key, slot.variable, converted))
    report = LoadReport(naming, tuple(k for k, _, _ in updates), tuple(missing), tuple(unexpected),
                        tuple(mismatched))
    if strict and not report.ok:
        raise StateDictMismatchError(_describe_mismatch(type(model).__name__, report))
    for _, variable, value in updates:
        # jnp.array copies: on CPU jnp.asarray may alias the NumPy buffer, which for torch
        # tensors is the tensor's own storage (torch would then update our BatchNorm stats).
        variable.set_value(jnp.array(value, dtype=variable.get_value().dtype, copy=True))
    abstract = [p for p, v in nnx.to_flat_state(nnx.state(model)) if isinstance(v.get_value(), jax.ShapeDtypeStruct)]
    if abstract:
        raise ValueError(f"{len(abstract)} variables of this abstract (nnx.eval_shape) model got no value from the "
                         f"state dict, e.g. {'/'.join(map(str, abstract[0]))}; build the model with random init "
                         "(create_model without eval_shape) when loading only part of it.")
    return report


def _describe_mismatch(model_name: str, report: LoadReport, limit: int = 20) -> str:
    def listing(items: list[str]) -> str:
        more = f", ... ({len(items) - limit} more)" if len(items) > limit else ""
        return ", ".join(items[:limit]) + more

    parts = []
    if report.missing:
        parts.append(f"missing {len(report.missing)}: {listing(list(report.missing))}")
    if report.unexpected:
        parts.append(f"unexpected {len(report.unexpected)}: {listing(list(report.unexpected))}")
    if report.mismatched:
        parts.append(f"mis-shaped {len(report.mismatched)}: " + listing(
            [f"{k} {got} (expected {want})" for k, got, want in report.mismatched]))
    return (f"State dict does not match this {model_name} ({report.naming} names): " + "; ".join(parts)
            + ". Check the model name and overrides (num_classes, depths, dims, ...) or pass strict=False.")


# --------------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------------

def _to_torch_layout(kind: str, value: np.ndarray, torch_shape: tuple[int, ...]) -> np.ndarray:
    if kind == "conv":
        value = value.transpose(3, 2, 0, 1)
    elif kind == "dense":
        value = value.T
    return np.array(value.reshape(torch_shape), order="C", copy=True)  # writable for torch.from_numpy


def to_torch_state_dict(model: nnx.Module, naming: str = "timm") -> dict[str, np.ndarray]:
    """The model's weights as a PyTorch-style state dict of NumPy arrays.

    Args:
      model: a ConvMixer / ConvNeXt / HorNet from :func:`dog_jax.models.create_model`.
      naming: "timm" (loads into the timm model of the same name with ``strict=True``) or
        "official" (facebookresearch ConvNeXt(-V2), raoyongming HorNet, locuslab ConvMixer).
        HorNet only has "official" names.

    Returns:
      ``{key: array}`` in module order; floating arrays are float32 (bfloat16 parameters are
      widened), BatchNorm ``num_batches_tracked`` is int64 0 (PyTorch only reads it when
      momentum is None).
    """
    out: dict[str, np.ndarray] = {}
    for key, slot in key_table(model, naming).slots.items():
        if slot.kind == "count":
            out[key] = np.zeros((), np.int64)
            continue
        value = np.asarray(jnp.asarray(slot.variable.get_value(), jnp.float32))
        out[key] = _to_torch_layout(slot.kind, value, slot.torch_shape)
    return out


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------

def load_torch_checkpoint(model: nnx.Module, path: str | os.PathLike, **kwargs: Any) -> LoadReport:
    """:func:`read_state_dict` then :func:`load_torch_state_dict` (keyword arguments go to it)."""
    return load_torch_state_dict(model, read_state_dict(path), **kwargs)


def save_safetensors(model: nnx.Module, path: str | os.PathLike, naming: str = "timm") -> None:
    """Writes :func:`to_torch_state_dict` to a ``.safetensors`` file that timm can load (``path``
    local or ``gs://``)."""
    from safetensors.numpy import save

    from dog_jax.storage import run_path

    run_path(path).write_bytes(save(to_torch_state_dict(model, naming)))
