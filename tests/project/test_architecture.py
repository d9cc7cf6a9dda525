"""The shape of the package: floors that import only downwards, no import circles, a docstring at
every folder's door, and every public name the README shows importable."""

import ast
import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "dog_jax"

# docs/architecture.md: a module may import from its own floor or below, never from above.
FLOORS = {
    "dog_jax.initializers": 0, "dog_jax.ops": 0, "dog_jax.storage": 0, "dog_jax._extras": 0, "dog_jax._paths": 0,
    "dog_jax.console": 0,
    "dog_jax.provenance": 1,
    "dog_jax.models": 1, "dog_jax.data": 1,
    "dog_jax.checkpoint_error": 2, "dog_jax.orbax_items": 2, "dog_jax.checkpoints": 2, "dog_jax.convert": 2,
    "dog_jax.torch_keys": 2,
    "dog_jax.train": 3, "dog_jax.analysis": 3,
    "dog_jax.evaluate": 4, "dog_jax.export": 4, "dog_jax.experiments": 4, "dog_jax.timm_models": 4,
    "dog_jax.tpu_vm": 4,
    "dog_jax": 4,  # the package's own __init__ re-exports the initializers
}


def _modules() -> dict[str, Path]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        modules[name.removesuffix(".__init__")] = path
    return modules


def _import_graph() -> dict[str, set[str]]:
    """Module -> dog_jax modules it imports (at any depth of the file; ``from pkg import sub`` is an
    edge to ``pkg.sub`` alone, the way Python resolves it once ``pkg`` is initialised)."""
    modules = _modules()
    graph = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                subs = [f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in modules]
                targets = subs if len(subs) == len(node.names) else [node.module, *subs]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                continue
            graph[name].update(t for t in targets if t in modules and t != name)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def _floor(module: str) -> int:
    parts = module.split(".")
    return FLOORS[".".join(parts[:2])] if len(parts) > 1 else FLOORS[module]


def test_no_import_circles():
    assert _cycles(_import_graph()) == []


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_every_module_has_a_floor_and_imports_only_downwards():
    graph = _import_graph()
    upward = [f"{src} -> {dst}" for src, targets in graph.items() for dst in targets
              if src != "dog_jax" and _floor(dst) > _floor(src)]
    assert upward == []


@pytest.mark.parametrize("folder", sorted(p.parent.name for p in PACKAGE.rglob("__init__.py")))
def test_every_folder_opens_with_a_docstring(folder):
    init = next(p for p in PACKAGE.rglob("__init__.py") if p.parent.name == folder)
    docstring = ast.get_docstring(ast.parse(init.read_text()))
    assert docstring and len(docstring.split()) >= 8, f"{init.relative_to(ROOT)} needs a docstring"


def test_ops_has_one_folder_per_operation():
    folders = sorted(p.name for p in (PACKAGE / "ops").iterdir() if p.is_dir() and p.name != "__pycache__")
    assert folders == ["depthwise", "native", "norms"]
    assert sorted(p.name for p in (PACKAGE / "ops").glob("*.py")) == ["__init__.py", "auto.py", "gelu.py"]


def _readme_names() -> list[str]:
    """Every ``from dog_jax... import a, b`` and every backticked ``dog_jax.x.y`` in README.md."""
    text = (ROOT / "README.md").read_text()
    names = [f"{module}.{name.strip()}" for module, imported in
             re.findall(r"^from (dog_jax[\w.]*) import ([\w, ]+)", text, flags=re.MULTILINE)
             for name in imported.split(",")]
    names += re.findall(r"`(dog_jax(?:\.\w+)+)(?:\(\))?`", text)
    return sorted(set(names))


@pytest.mark.parametrize("dotted", _readme_names())
def test_every_public_name_in_the_readme_imports(dotted):
    parts = dotted.split(".")
    for split in range(len(parts), 0, -1):  # the longest importable module prefix, then attributes
        try:
            target = importlib.import_module(".".join(parts[:split]))
        except ModuleNotFoundError:
            continue
        for attribute in parts[split:]:
            target = getattr(target, attribute)
        return
    pytest.fail(f"{dotted} is not importable")


def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _private_reaches() -> list[str]:
    """Every place a module of the package uses another module's private name (``from dog_jax.x import
    _y``, or ``x._y`` on an imported dog_jax module), or imports a private module of another library
    (``timm.models._builder``: it can change in any release)."""
    found = []
    for name, path in _modules().items():
        tree = ast.parse(path.read_text())
        modules = set()  # local names bound to dog_jax modules (or names) by an import
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("dog_jax"):
                        modules.add(alias.asname or alias.name.split(".")[0])
                    elif any(map(_is_private, alias.name.split("."))):
                        found.append(f"{name}:{node.lineno}: import {alias.name}")
            elif isinstance(node, ast.ImportFrom):
                module = node.module or ""
                ours = node.level > 0 or module.startswith("dog_jax")
                if not ours and any(map(_is_private, module.split("."))):
                    found.append(f"{name}:{node.lineno}: from {module} import ...")
                for alias in node.names:
                    if ours and _is_private(alias.name) and f"{module}.{alias.name}" not in _modules():
                        found.append(f"{name}:{node.lineno}: from {'.' * node.level}{module} import {alias.name}")
                    if ours:
                        modules.add(alias.asname or alias.name)
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and _is_private(node.attr):
                base = node.value
                while isinstance(base, ast.Attribute):
                    base = base.value
                if isinstance(base, ast.Name) and base.id in modules:
                    found.append(f"{name}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_no_module_uses_another_modules_private_names():
    # dog_jax._extras and dog_jax._paths are private to the package, not to a module: importing them is fine.
    assert _private_reaches() == []


def _documented_floors() -> dict[str, int]:
    """docs/architecture.md's floor table: every dog_jax module or folder it names, and its floor."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    table = text[text.index("```\nfloor 4"):]
    table = table[:table.index("\n```", 4)]
    floors, floor = {}, None
    for line in table.splitlines():
        if match := re.match(r"floor (\d)", line):
            floor = int(match[1])
        for name in re.findall(r"\bdog_jax[./](\w+)", line):
            floors.setdefault("dog_jax" if name == "__init__" else f"dog_jax.{name}", floor)
    return floors


def test_the_documented_floors_are_the_tested_ones():
    # Every module and folder of the package is on the doc's table, on the floor this test enforces.
    assert _documented_floors() == FLOORS
    assert {name for name in _modules() if name.count(".") == 1} <= set(FLOORS)
