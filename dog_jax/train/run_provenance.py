"""The provenance record of a training run (``dog_jax.provenance``), as its workdir files carry it.

``config.json`` and ``summary.json`` hold it under ``"provenance"``. A run resumed by different code
(another commit, other native kernels or other "auto" choices) also keeps the records of the earlier
starts it continues, under ``"provenance_earlier"``: such a run was made by more than one code version.
"""

from __future__ import annotations

import json
from typing import Any

from dog_jax import provenance
from dog_jax.storage import run_path
from dog_jax.train.run_spec import RunSpec

KEYS = ("provenance", "provenance_earlier")
# What makes two starts different code; devices are not code (a resume on other devices is allowed,
# and changes the record only through the auto choices, which are compared).
_CODE_KEYS = ("code", "packages", "native_kernels", "auto_choices")


def run_record(spec: RunSpec, mesh) -> dict[str, Any]:
    """:func:`dog_jax.provenance.record` with the auto choices of the run's model in train mode, traced
    abstractly for ``mesh`` at the run's compute dtype, image shape and per-device batch (of a micro-batch
    with gradient accumulation: what the model sees)."""
    model = spec.model.abstract(spec.plan.num_classes)
    per_device = max(1, spec.plan.micro_batch // mesh.size)
    choices = provenance.auto_choices(model, (per_device, *spec.image_shape), spec.model.compute_dtype, target=mesh)
    return provenance.record(choices)


def same_code(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool:
    return bool(a) and bool(b) and all(a.get(key) == b.get(key) for key in _CODE_KEYS)


def earlier_starts(config_file: str, current: dict[str, Any]) -> list[dict[str, Any]]:
    """Records of the earlier starts of a resumed run (from its previous ``config.json``) that were
    made by other code than ``current``; [] when there are none or the file has no record."""
    try:  # dog_jax.storage: the trainer's workdirs may be gs:// paths
        path = run_path(config_file)
        if not path.exists():
            return []
        previous = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    starts = [*previous.get("provenance_earlier", []), previous.get("provenance")]
    kept: list[dict[str, Any]] = []
    for start in starts:
        if start and not same_code(start, current) and not any(same_code(start, k) for k in kept):
            kept.append(start)
    return kept


def split_config_json(payload: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the config fields, the provenance fields) of a workdir's ``config.json``."""
    config = {key: value for key, value in payload.items() if key not in KEYS}
    return config, {key: payload[key] for key in KEYS if key in payload}
