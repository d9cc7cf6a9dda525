"""Paths as results files record them: relative, so that committed results hold no machine paths.

Pure string logic, also for ``gs://`` URLs (a run's workdir may be a bucket): no file is touched
except where :func:`resolved` follows a local path's symbolic links.
"""

import os


def _is_url(path: str) -> bool:
    return "://" in path


def resolved(path: str | os.PathLike) -> str:
    """A local path made absolute with its symbolic links resolved (as ``Path.resolve`` does); a
    URL (``gs://bucket/run``) as given."""
    text = os.fspath(path)
    return text if _is_url(text) else os.path.realpath(os.path.expanduser(text))  # local: not a URL


def relative_to(path: str | os.PathLike, base: str | os.PathLike) -> str:
    """``path`` relative to ``base`` when it lies inside ``base``; otherwise ``path`` as given.

    Both may be relative (to the current directory) or absolute, or URLs. Results files (a sweep's
    ``results.csv``, the kernel analysis' ``summary.json``) name their runs and checkpoints this
    way, so that a copy of them under docs/ stays valid on another machine.
    """
    path, base = os.fspath(path), os.fspath(base)
    if _is_url(path) or _is_url(base):
        base = base.rstrip("/")
        if path.rstrip("/") == base:
            return "."
        return path[len(base) + 1:] if path.startswith(base + "/") else path
    relative = os.path.relpath(os.path.abspath(path), os.path.abspath(base))  # local: neither is a URL
    return path if relative == ".." or relative.startswith(".." + os.sep) else relative
