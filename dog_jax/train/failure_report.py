"""How a storage failure reaches the user: one line on the console, the full detail in a log file.

A checkpoint write that fails (a full disk, a read-only or vanished workdir, a bucket refusing
writes) fails inside orbax's and tensorstore's background threads, which report it themselves:
ERROR records with tracebacks, and "Event loop is closed" tracebacks that tensorstore's callbacks
hand to ``sys.unraisablehook`` once orbax's event loop is gone (tens of them per failure, measured
with orbax-checkpoint 0.12.8 / tensorstore 0.1.86 on a full tmpfs). The trainer reports the failure
itself, in one line (``dog_jax.train.checkpoint.StorageFailure``), so:

* :class:`BackgroundErrors`, installed by the trainer's ``Checkpointer`` for its lifetime, keeps
  those reports out of the console (orbax's ERROR records from threads other than the main one,
  unraisable exceptions and uncaught exceptions of other threads) and collects them as text;
* :func:`short_reason` turns an error of any storage layer into a few words (``No space left on
  device [ENOSPC]``);
* :func:`write_detail_log` writes the failure's traceback and the collected reports to a log file:
  in the workdir, else next to it, else in the local temporary directory (the line names it).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import sys
import tempfile
import threading
import time
import traceback
from typing import Any

from dog_jax.storage import is_url, join, run_path

__all__ = ["BackgroundErrors", "is_storage_error", "short_reason", "write_detail_log"]

_ORBAX_DIR = f"{os.sep}orbax{os.sep}"
_MAX_ENTRIES = 200  # a failing save reports tens of errors; more than this adds nothing
# tensorstore writes the OS error into its message: "... No space left on device [os_error_code='28']".
_OS_ERROR_CODE = re.compile(r"os_error_code='?(\d+)")
_URL = re.compile(r"https?://\S+")
# Errors whose text is all that reaches us (TensorFlow's event writer, gcsfs): recognised by strerror.
_KNOWN_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOENT, errno.EIO,
                 errno.ESTALE)


class BackgroundErrors:
    """While installed, what background threads report goes into :attr:`entries`, not the console.

    Caught: ERROR records that orbax's files log from a thread other than the main thread (orbax logs
    through ``absl.logging``: the "absl" logger), exceptions passed to ``sys.unraisablehook`` from
    other threads, and uncaught exceptions of other threads (``threading.excepthook``). The main
    thread's errors and everyone's warnings reach the console as before. Hooks chain to the ones
    they replaced; :meth:`uninstall` puts those back (if nothing replaced them in between).
    """

    def __init__(self):
        self.entries: list[str] = []
        self._lock = threading.Lock()
        self._active = False
        self._filter = _DivertFilter(self)
        self._previous_unraisable = sys.unraisablehook
        self._previous_thread_hook = threading.excepthook

    def install(self) -> BackgroundErrors:
        self._previous_unraisable, self._previous_thread_hook = sys.unraisablehook, threading.excepthook
        sys.unraisablehook, threading.excepthook = self._unraisable, self._thread_exception
        logging.getLogger("absl").addFilter(self._filter)
        self._active = True
        return self

    def uninstall(self) -> None:
        self._active = False
        logging.getLogger("absl").removeFilter(self._filter)
        if sys.unraisablehook == self._unraisable:
            sys.unraisablehook = self._previous_unraisable
        if threading.excepthook == self._thread_exception:
            threading.excepthook = self._previous_thread_hook

    def add(self, text: str) -> None:
        with self._lock:
            if len(self.entries) < _MAX_ENTRIES:
                self.entries.append(text.rstrip())

    def take(self) -> list[str]:
        """The entries collected so far (and forgets them)."""
        with self._lock:
            entries, self.entries = self.entries, []
        return entries

    def _unraisable(self, unraisable: Any) -> None:
        if self._active and threading.current_thread() is not threading.main_thread():
            where = f" in {unraisable.object!r}" if unraisable.object is not None else ""
            self.add(f"[unraisable exception in thread {threading.current_thread().name}{where}]\n" + "".join(
                traceback.format_exception(unraisable.exc_type, unraisable.exc_value, unraisable.exc_traceback)))
            return
        self._previous_unraisable(unraisable)

    def _thread_exception(self, args: Any) -> None:
        if self._active and args.thread is not threading.main_thread():
            name = args.thread.name if args.thread is not None else "?"
            self.add(f"[uncaught exception in thread {name}]\n" + "".join(
                traceback.format_exception(args.exc_type, args.exc_value, args.exc_traceback)))
            return
        self._previous_thread_hook(args)


class _DivertFilter(logging.Filter):
    def __init__(self, errors: BackgroundErrors):
        super().__init__()
        self._errors = errors

    def filter(self, record: logging.LogRecord) -> bool:
        if (record.levelno >= logging.ERROR and _ORBAX_DIR in (record.pathname or "")
                and record.thread != threading.main_thread().ident):
            text = f"[{record.levelname} {record.pathname}:{record.lineno}, thread {record.threadName}] " \
                   f"{record.getMessage()}"
            if record.exc_info:
                text += "\n" + "".join(traceback.format_exception(*record.exc_info))
            self._errors.add(text)
            return False
        return True


# How tensorstore's errors (ValueError) begin: an absl status code.
_STATUS = re.compile(r"^(RESOURCE_EXHAUSTED|PERMISSION_DENIED|UNAVAILABLE|DEADLINE_EXCEEDED|NOT_FOUND|ABORTED|"
                     r"FAILED_PRECONDITION|UNAUTHENTICATED|DATA_LOSS|UNKNOWN|INTERNAL): ")


def is_storage_error(error: BaseException) -> bool:
    """Whether ``error`` comes from the storage rather than from the program: an ``OSError`` (local
    files, gcsfs' 403/404), a tensorstore error with a status code, or gcsfs' ``HttpError``."""
    return isinstance(error, OSError) or type(error).__name__ == "HttpError" or bool(_STATUS.match(str(error)))


def short_reason(error: BaseException) -> str:
    """A few words for what went wrong: the OS error and its name when one is known (also inside
    tensorstore's and TensorFlow's messages), else the error's type and the start of its message."""
    text = " ".join(str(error).split())
    code = error.errno if isinstance(error, OSError) and error.errno in errno.errorcode else None
    found = _OS_ERROR_CODE.search(text)
    if code is None and found and int(found[1]) in errno.errorcode:
        code = int(found[1])
    if code is None:
        code = next((known for known in _KNOWN_ERRNOS if os.strerror(known) in text), None)
    if code is not None:
        return f"{os.strerror(code)} [{errno.errorcode[code]}]"
    text = " ".join(_URL.sub("", text).split())  # without the request's URL: long, and the line names the path
    if "PERMISSION_DENIED" in text or "Forbidden" in text or re.search(r"\b403\b", text):
        return f"permission refused (HTTP 403): {text[:200]}"
    return f"{type(error).__name__}: {text[:200]}" if text else type(error).__name__


def write_detail_log(workdir: str, line: str, error: BaseException | None, background: list[str]) -> str | None:
    """Writes ``line``, the traceback of ``error`` (and of its cause) and the ``background`` reports
    to ``storage_failure-<time>-<pid>.log``; returns the file written, or None if none could be.

    Tried in order: in a local workdir; next to it (``<parent>/<workdir name>.storage_failure-...``,
    e.g. when the workdir vanished); in the local temporary directory (``$TMPDIR``; always for a
    ``gs://`` workdir, whose storage just failed). A partly written file is removed.
    """
    name = f"storage_failure-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}.log"
    parts = [line, ""]
    if error is not None:
        parts.append("".join(traceback.format_exception(error)))
    if background:
        parts += [f"{len(background)} report(s) of background threads (orbax, tensorstore):", *background]
    text = "\n".join(parts) + "\n"
    candidates = [join(tempfile.gettempdir(), f"dog_jax-{name}")]
    if not is_url(workdir):
        parent, base = os.path.split(workdir.rstrip(os.sep))  # local: the workdir's own name and parent
        candidates = [join(workdir, name), join(parent, f"{base}.{name}"), *candidates]
    for candidate in candidates:
        path = run_path(candidate)
        try:
            path.write_text(text)
            return candidate
        except Exception:  # noqa: BLE001 -- the next place may work; the console line matters more
            with contextlib.suppress(Exception):
                path.unlink()
    return None
