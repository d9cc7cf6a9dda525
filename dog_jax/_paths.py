"""Paths as results files record them: relative, so that committed results hold no machine paths."""

import os


def relative_to(path: str | os.PathLike, base: str | os.PathLike) -> str:
    """``path`` relative to ``base`` when it lies inside ``base``; otherwise ``path`` as given.

    Both may be relative (to the current directory) or absolute. Results files (a sweep's
    ``results.csv``, the kernel analysis' ``summary.json``) name their runs and checkpoints this
    way, so that a copy of them under docs/ stays valid on another machine.
    """
    relative = os.path.relpath(os.path.abspath(path), os.path.abspath(base))
    return os.fspath(path) if relative == ".." or relative.startswith(".." + os.sep) else relative
