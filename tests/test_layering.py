"""The layering of ``src``: no import cycles between modules, and no module imports or reaches
into another module's private names (``from .x import _y``, ``x._y``). Imports inside
functions (the lazy OpenVINO imports) are not part of the module graph."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.app_harness import REPO

SRC = REPO / "src"
PACKAGES = ("kosmos2_engine", "kosmos2_app")


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def absolute(module: str, level: int, current: str, is_package: bool) -> str:
    """The absolute name of ``from <level dots><module> import ...`` in ``current``."""
    if level == 0:
        return module
    base = current.split(".") if is_package else current.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def ours() -> dict[str, Path]:
    return {module_name(p): p for package in PACKAGES for p in (SRC / package).rglob("*.py")}


def module_level_imports(path: Path, current: str) -> set[str]:
    """Modules of ours imported at module level (not inside a function), by absolute name."""
    found = set()
    tree = ast.parse(path.read_text())
    for node in tree.body:
        nodes = [node] + ([n for n in ast.walk(node) if isinstance(n, ast.If)] if isinstance(node, ast.If) else [])
        for statement in nodes:
            if isinstance(statement, ast.Import):
                found |= {alias.name for alias in statement.names}
            elif isinstance(statement, ast.ImportFrom):
                base = absolute(statement.module or "", statement.level, current, path.name == "__init__.py")
                found.add(base)
                found |= {f"{base}.{alias.name}" for alias in statement.names}
    return {name for name in found if name in ours()}


def test_no_import_cycles_between_modules():
    modules = ours()
    graph = {name: module_level_imports(path, name) - {name} for name, path in modules.items()}
    visiting, done, cycles = set(), set(), []

    def visit(name, trail):
        if name in done:
            return
        if name in visiting:
            cycles.append(trail[trail.index(name) :] + [name])
            return
        visiting.add(name)
        for imported in sorted(graph.get(name, ())):
            visit(imported, trail + [name])
        visiting.discard(name)
        done.add(name)

    for name in sorted(graph):
        visit(name, [])
    # A package's __init__ re-exporting its modules is not a cycle with them.
    real = [cycle for cycle in cycles if not any(m in PACKAGES for m in cycle)]
    assert real == [], real


def test_no_module_imports_or_reaches_into_another_modules_private_names():
    offenders = []
    for name, path in ours().items():
        tree = ast.parse(path.read_text())
        module_aliases = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                base = absolute(node.module or "", node.level, name, path.name == "__init__.py")
                for alias in node.names:
                    if alias.name.startswith("_") and base != name:
                        offenders.append(f"{name}: from {base} import {alias.name}")
                    if f"{base}.{alias.name}" in ours():
                        module_aliases[alias.asname or alias.name] = f"{base}.{alias.name}"
        for node in ast.walk(tree):
            reaches = isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
            if reaches and node.value.id in module_aliases and node.attr.startswith("_") and node.attr[1] != "_":
                offenders.append(f"{name}: {module_aliases[node.value.id]}.{node.attr}")
    assert offenders == []
