"""Run paths: one abstraction for local directories and ``gs://`` URLs.

``pathlib.Path("gs://b/run")`` silently becomes ``gs:/b/run`` and ``open``/``os.path`` look for a
local file, so no run path (workdir, data dir, checkpoint, export) goes through them: they go
through :func:`run_path`, an ``etils.epath.Path`` (local files through ``os``, ``gs://`` through
gcsfs once :func:`dog_jax.storage.configure` has run). ``tests/project/test_run_paths.py`` keeps it so.
"""

from __future__ import annotations

import os
import uuid

from etils import epath

from dog_jax.storage.emulator import configure

PathLike = str | os.PathLike


def is_url(path: PathLike) -> bool:
    """True for ``scheme://...`` paths (``gs://bucket/run``)."""
    return "://" in os.fspath(path)


def absolute(path: PathLike) -> str:
    """The absolute form of a local path (``~`` expanded); URLs unchanged."""
    text = os.fspath(path)
    return text if is_url(text) else os.path.abspath(os.path.expanduser(text))


def run_path(path: PathLike) -> epath.Path:
    """``path`` (local or ``gs://``) as an ``epath.Path``, local paths made absolute.

    A URL first makes sure the storage clients are configured (:func:`dog_jax.storage.configure`;
    idempotent), so library calls work on buckets without a command's start-up."""
    text = absolute(path)
    if is_url(text):
        configure()
    return epath.Path(text)


def join(path: PathLike, *parts: str) -> str:
    """``path/part/...`` as a string, keeping a URL's ``scheme://``."""
    return os.fspath(run_path(path).joinpath(*parts))


def make_dirs(path: PathLike) -> None:
    """Creates a local directory and its parents. A no-op on a bucket, where folders are name
    prefixes that need no creation -- and where gcsfs' ``mkdir`` would create a missing *bucket*."""
    if not is_url(path):
        run_path(path).mkdir(parents=True, exist_ok=True)


def files_under(path: PathLike) -> list[epath.Path]:
    """Every file below the directory ``path``, at any depth, sorted (local or gs://; epath has no
    recursive glob on buckets, so this walks: one listing per folder)."""
    root = run_path(path)
    # gcsfs reports the folders it walks without their "gs://": rebuild them from the root.
    bare_root = os.fspath(root).split("://", 1)[-1].rstrip("/")
    found = []
    for directory, _, names in root.walk():
        relative = os.fspath(directory).split("://", 1)[-1].rstrip("/")[len(bare_root):].strip("/")
        found += [root.joinpath(*([relative] if relative else []), name) for name in names]
    return sorted(found)


def move(source: PathLike, target: PathLike) -> None:
    """Moves a file or folder to ``target`` (whose parent folder exists). Locally a rename; on a
    bucket, where folders are name prefixes, every object is copied and deleted (not atomic)."""
    if not is_url(source):
        run_path(source).rename(absolute(target))
        return
    import fsspec

    configure()
    fsspec.filesystem("gs").mv(os.fspath(source), os.fspath(target), recursive=True)


def read_text(path: PathLike) -> str:
    return run_path(path).read_text()


def write_bytes(path: PathLike, content: bytes) -> None:
    """Writes ``content`` so that readers see the old content or the new, never a part: through a
    temporary name and a rename locally; in one upload on a bucket (an object appears whole)."""
    target = run_path(path)
    if is_url(target):
        target.write_bytes(content)
        return
    temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
    temporary.write_bytes(content)
    temporary.replace(target)


def write_text(path: PathLike, text: str) -> None:
    """:func:`write_bytes` of ``text`` encoded as UTF-8."""
    write_bytes(path, text.encode("utf-8"))
