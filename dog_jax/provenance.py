"""Which code made a result: one record, written into every run, evaluation and export.

The code changed while the published sweeps ran (native kernels landed mid-sweep and "auto" then
picked them), and results moved with it. So every result carries :func:`record`:

* ``code``: the git commit of the checkout ``dog_jax`` is imported from and whether its files differ
  from it (``dirty``), or, for an installed package (no git checkout), its version;
* ``packages``: versions of the libraries that change numerics or checkpoints;
* ``native_kernels``: whether the C++ kernels were loaded (``dog_jax.ops.native``);
* ``auto_choices``: what ``impl="auto"`` resolved to per op class (``{op: {impl: calls}}``) for the
  model traced by :func:`auto_choices`; None where nothing was traced (an export);
* ``devices``: platform, device kind and count, process count.

:func:`code_label` and :func:`impl_label` condense a record into the short strings a sweep's
results.csv shows; runs whose labels differ were made by different code.
"""

from __future__ import annotations

import importlib.metadata
import subprocess
from pathlib import Path  # local: the package's checkout
from typing import Any

import jax

PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "tensorflow-datasets")
_PACKAGE_ROOT = Path(__file__).resolve().parent  # local: the package's checkout
_SHORT = 10  # commit digits in labels


def _git(repo: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def git_checkout(package_root: Path = _PACKAGE_ROOT) -> Path | None:
    """The root of the git checkout whose tracked ``dog_jax/`` is this package, else None (a wheel, or a
    site-packages that merely lies inside some other repository)."""
    top = _git(package_root, "rev-parse", "--show-toplevel")
    if top is None or Path(top).resolve() != package_root.parent:  # local: the package's checkout
        return None
    tracked = _git(package_root.parent, "ls-files", "--error-unmatch", f"{package_root.name}/__init__.py")
    return package_root.parent if tracked is not None else None


def code_version(package_root: Path = _PACKAGE_ROOT) -> dict[str, Any]:
    """``{"commit", "dirty"}`` of the package's git checkout, else ``{"package_version"}``.

    Dirty means ``git status`` lists anything: a changed tracked file or an untracked one that is not
    ignored (a new module is code too). Ignored build outputs (the native library, workdirs) do not count.
    """
    checkout = git_checkout(package_root)
    commit = _git(checkout, "rev-parse", "HEAD") if checkout is not None else None
    if commit is None:
        try:
            version = importlib.metadata.version("dog_jax")
        except importlib.metadata.PackageNotFoundError:
            version = None
        return {"package_version": version}
    status = _git(checkout, "status", "--porcelain")
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def package_versions() -> dict[str, str | None]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def native_kernels() -> dict[str, Any]:
    """Whether the native CPU kernels are loaded; the reason when not (no machine path when loaded)."""
    from dog_jax.ops.native import library as native_library

    status = native_library.native_status().split(": ", 1)[-1]
    return {"available": native_library.NATIVE_AVAILABLE,
            "status": "loaded" if native_library.NATIVE_AVAILABLE else status}


def devices() -> dict[str, Any]:
    first = jax.devices()[0]
    return {"platform": first.platform, "kind": first.device_kind, "count": jax.device_count(),
            "processes": jax.process_count()}


def auto_choices(model, input_shape: tuple[int, ...], dtype, *, target: Any, train: bool = True
                 ) -> dict[str, dict[str, int]]:
    """What every ``impl="auto"`` op of ``model`` resolves to for ``target``: ``{op: {impl: calls}}``.

    Traces one forward pass abstractly (``jax.eval_shape``: nothing is computed or allocated), in
    train mode unless ``train=False``, on an input of ``input_shape`` and ``dtype``. ``model`` may be
    abstract (``nnx.eval_shape``). ``target``: a Mesh, devices or ``dog_jax.ops.auto.Target`` -- the
    choice depends on the platform and device count the program is compiled for.
    """
    from flax import nnx

    from dog_jax.ops.auto import compile_target, record_choices

    graph, state = nnx.split(model)

    def forward(state, x):
        module = nnx.merge(graph, state)
        module.train() if train else module.eval()
        return module(x)

    with compile_target(target), record_choices() as choices:
        jax.eval_shape(forward, state, jax.ShapeDtypeStruct(tuple(input_shape), dtype))
    return {op: dict(sorted(counts.items())) for op, counts in sorted(choices.items())}


def record(choices: dict[str, dict[str, int]] | None = None) -> dict[str, Any]:
    """The provenance record (module docstring); ``choices`` from :func:`auto_choices`."""
    return {"code": code_version(), "packages": package_versions(), "native_kernels": native_kernels(),
            "auto_choices": choices, "devices": devices()}


def code_label(provenance: dict[str, Any] | None) -> str:
    """``<commit>`` (10 digits), ``<commit>+dirty``, ``dog_jax <version>`` or ``unrecorded``."""
    code = (provenance or {}).get("code") or {}
    if code.get("commit"):
        return code["commit"][:_SHORT] + ("+dirty" if code.get("dirty") else "")
    if code.get("package_version"):
        return f"dog_jax {code['package_version']}"
    return "unrecorded"


def impl_label(provenance: dict[str, Any] | None) -> str:
    """The implementations a run used, e.g. ``native; depthwise native×3 toeplitz×1; layer_norm xla×5``."""
    if not provenance:
        return "unrecorded"
    native = "native" if (provenance.get("native_kernels") or {}).get("available") else "no native"
    choices = provenance.get("auto_choices")
    if choices is None:
        return native
    parts = [f"{op} " + " ".join(f"{impl}×{calls}" for impl, calls in counts.items())
             for op, counts in choices.items()]
    return "; ".join([native, *parts])
