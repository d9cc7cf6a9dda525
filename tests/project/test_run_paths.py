"""Run paths may be gs:// URLs, so none goes through pathlib, open() or os.path (which would turn
``gs://b/run`` into ``gs:/b/run`` or look for a local file): they go through ``dog_jax.storage``.

This test finds every call of a local-only file API in the package and ``train.py``; each must be
marked ``# local: <why>`` on its line (the package's own source files, a config file, the TPU VM
worker's local run folder, ...). ``dog_jax/storage/`` itself is the one place that may use them.
"""

import ast
from pathlib import Path

from tests.support.configs import ROOT

# module.attribute calls that only know local files
_LOCAL_MODULES = {"os.path", "shutil", "glob", "pathlib", "tf.io.gfile"}
_LOCAL_NAMES = {"open", "Path", "PurePath", "PosixPath"}  # called by bare name (pathlib's, builtins' open)


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def local_file_calls(source: str) -> list[tuple[int, str]]:
    """(line, what) of every call of open(), Path(...), os.path.*, shutil.*, glob.*, pathlib.*,
    tf.io.gfile.* in ``source``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            name = _dotted(node.func)
            module = name.rsplit(".", 1)[0] if "." in name else ""
            if name in _LOCAL_NAMES or any(module == m or module.startswith(m + ".") for m in _LOCAL_MODULES):
                found.append((node.lineno, name + "()"))
    return found


def _unmarked(path: Path) -> list[str]:
    source = path.read_text()
    lines = source.splitlines()
    return [f"{path.relative_to(ROOT)}:{line}: {what}" for line, what in local_file_calls(source)
            if "# local:" not in lines[line - 1]]


def test_no_run_path_goes_through_a_local_only_file_api():
    files = [p for p in (Path(ROOT) / "dog_jax").rglob("*.py") if "storage" not in p.relative_to(ROOT).parts]
    unmarked = [hit for path in sorted(files) + [Path(ROOT) / "train.py"] for hit in _unmarked(path)]
    assert not unmarked, ("local-only file calls on what may be a gs:// run path; use dog_jax.storage, or mark "
                          "the line '# local: <why>':\n" + "\n".join(unmarked))


def test_the_check_finds_what_it_looks_for():
    source = ("import shutil\nfrom pathlib import Path\nimport os\n"
              "a = open(x)\nb = Path(x)\nc = os.path.join(x, 'y')\nd = tf.io.gfile.exists(x)\n"
              "e = storage.run_path(x).open('rb')\nf = epath.Path(x)\n")
    assert [line for line, _ in sorted(local_file_calls(source))] == [4, 5, 6, 7]
