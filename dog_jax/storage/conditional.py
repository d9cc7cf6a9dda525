"""Conditional writes of one small object (local file or ``gs://`` object): create it only if it is
absent, replace or delete it only if nobody changed it since it was read.

What :mod:`dog_jax.train.lease` needs to let one writer at a time own a workdir. Every function
takes a run path; a *generation* is an opaque string that changes with every write:

* local files: ``"<inode>.<mtime_ns>"``. A create writes a temporary file and hard-links it to
  the name (``os.link`` fails if the name exists, and readers never see a partial file); a
  replace or delete holds ``fcntl.flock`` on the current file, checks that the name still points at
  it and that its generation is the expected one, then renames a new file over it / unlinks it.
  (Two hosts sharing a network file system need one whose ``flock`` and ``link`` work across hosts.)
* ``gs://``: the object's generation number; Cloud Storage's preconditions ``ifGenerationMatch=0``
  (create) and ``ifGenerationMatch=<generation>`` (replace, delete) make each call atomic on the
  server. The client is google-cloud-storage: anonymous on the emulator that ``STORAGE_EMULATOR_HOST``
  names, else default credentials. (fake-gcs-server, the tests' emulator, honours the precondition
  for uploads but not for deletes.)
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import uuid
from typing import Iterator

from dog_jax.storage.emulator import EMULATOR_VARIABLE
from dog_jax.storage.paths import PathLike, absolute, configure, is_url

__all__ = ["create", "delete", "read", "replace"]

_TIMEOUT_S = 30  # per HTTP request
_RETRY_S = 60  # retries of transient errors (every call here is conditional, so safe to retry) end after this


def create(path: PathLike, content: bytes) -> str | None:
    """Writes ``content`` to ``path`` if nothing is there; its generation, or None if it exists."""
    if is_url(path):
        return _gcs_call(path, "upload", content, 0)
    target = absolute(path)
    temporary = _write_temporary(target, content)
    try:
        os.link(temporary, target)
        return _generation(os.stat(target))
    except FileExistsError:
        return None
    finally:
        os.unlink(temporary)


def read(path: PathLike, *, retry_s: float = _RETRY_S) -> tuple[bytes, str] | None:
    """``(content, generation)`` of ``path``, or None if it does not exist. ``retry_s``: on a bucket,
    how long transient errors are retried before the error is raised."""
    if is_url(path):
        return _gcs_read(path, retry_s)
    try:
        fd = os.open(absolute(path), os.O_RDONLY)
    except FileNotFoundError:
        return None
    with os.fdopen(fd, "rb") as file:
        return file.read(), _generation(os.fstat(fd))


def replace(path: PathLike, content: bytes, generation: str) -> str | None:
    """Writes ``content`` to ``path`` if it still has ``generation``; the new generation, or None
    if it changed or vanished."""
    if is_url(path):
        return _gcs_call(path, "upload", content, int(generation))
    target = absolute(path)
    with _locked_if_current(target, generation) as current:
        if not current:
            return None
        temporary = _write_temporary(target, content)
        new_generation = _generation(os.stat(temporary))
        os.replace(temporary, target)
        return new_generation


def delete(path: PathLike, generation: str) -> bool:
    """Deletes ``path`` if it still has ``generation``; False if it changed or vanished."""
    if is_url(path):
        return _gcs_call(path, "delete", None, int(generation)) is not None
    target = absolute(path)
    with _locked_if_current(target, generation) as current:
        if current:
            os.unlink(target)
        return current


def _generation(stat: os.stat_result) -> str:
    return f"{stat.st_ino}.{stat.st_mtime_ns}"


def _write_temporary(target: str, content: bytes) -> str:
    temporary = os.path.join(os.path.dirname(target), f".{os.path.basename(target)}.{uuid.uuid4().hex[:8]}.tmp")
    with open(temporary, "wb") as file:
        file.write(content)
        file.flush()
        os.fsync(file.fileno())
    return temporary


@contextlib.contextmanager
def _locked_if_current(target: str, generation: str) -> Iterator[bool]:
    """Holds ``flock`` on ``target``; yields whether it still is the file of ``generation``."""
    try:
        fd = os.open(target, os.O_RDONLY)
    except FileNotFoundError:
        yield False
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            still_named = os.stat(target).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            still_named = False
        yield still_named and _generation(os.fstat(fd)) == generation
    finally:
        os.close(fd)  # releases the lock


@functools.cache
def _client(emulator: str | None):
    from google.cloud import storage

    if emulator:
        from google.auth.credentials import AnonymousCredentials

        return storage.Client(project="dog-jax-emulator", credentials=AnonymousCredentials())
    return storage.Client()


def _retry(retry_s: float = _RETRY_S):
    from google.cloud.storage.retry import DEFAULT_RETRY

    return DEFAULT_RETRY.with_timeout(retry_s)


def _blob(path: PathLike):
    configure()
    bucket, _, name = os.fspath(path).split("://", 1)[1].partition("/")
    return _client(os.environ.get(EMULATOR_VARIABLE)).bucket(bucket).blob(name)


def _gcs_call(path: PathLike, action: str, content: bytes | None, generation: int) -> str | None:
    """An upload (``content``) or a delete under ``ifGenerationMatch=generation``; the new
    generation (``""`` after a delete), or None if the precondition failed / the object is gone."""
    from google.api_core import exceptions

    blob = _blob(path)
    try:
        if action == "upload":
            blob.upload_from_string(content, content_type="application/json", if_generation_match=generation,
                                    timeout=_TIMEOUT_S, retry=_retry())
            return str(blob.generation)
        blob.delete(if_generation_match=generation, timeout=_TIMEOUT_S, retry=_retry())
        return ""
    except (exceptions.PreconditionFailed, exceptions.NotFound):
        return None


def _gcs_read(path: PathLike, retry_s: float) -> tuple[bytes, str] | None:
    from google.api_core import exceptions

    timeout = min(_TIMEOUT_S, retry_s)
    for _ in range(5):  # the object may change between reading its generation and its content
        blob = _blob(path)
        try:
            blob.reload(timeout=timeout, retry=_retry(retry_s))
            content = blob.download_as_bytes(if_generation_match=blob.generation, timeout=timeout,
                                             retry=_retry(retry_s))
            return content, str(blob.generation)
        except exceptions.NotFound:
            return None
        except exceptions.PreconditionFailed:
            continue
    raise OSError(f"{os.fspath(path)} keeps changing while it is read")
