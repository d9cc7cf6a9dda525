"""A committed git repository in a temporary folder, for the tests of what reads a checkout's commit."""

import subprocess
from pathlib import Path

from tests.support.requires import require

# Who commits: a test machine may have no git identity configured.
_IDENTITY = ("-c", "user.name=t", "-c", "user.email=t@t")


def committed_repo(repo: Path, files: dict[str, str]) -> str:
    """Creates ``repo`` with ``files`` (relative path -> text), commits them all; returns the commit."""
    import shutil

    require(shutil.which("git") is not None, "git is not installed", "apt-get install git")
    for name, text in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    for args in (["init", "-q"], ["add", "."], [*_IDENTITY, "commit", "-qm", "init"]):
        subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)
    head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], check=True, capture_output=True, text=True)
    return head.stdout.strip()
