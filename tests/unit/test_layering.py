"""The layering of ``src``, read from every import statement of every module.

An import is *module-level* wherever it runs when the module is imported: at the top, inside
``if`` (``TYPE_CHECKING`` included), ``try``, ``with`` or a class body. An import inside a
function or lambda is *function-level* (the lazy OpenVINO, Ray and matplotlib imports) and is
listed separately. The rules:

* no import cycle between modules at module level (a package's ``__init__`` re-exporting its
  own modules is not one);
* the engine (``kosmos2_engine``) imports nothing of the app, the jobs, ``supervisely_io`` or
  the Supervisely SDK, at any level;
* the app uses the engine through ``kosmos2_engine``'s public names only, and the jobs use the
  app the same way (``from kosmos2_app import X``, never ``kosmos2_app.something``);
* ``supervisely_io`` imports neither the app nor the jobs;
* no module imports or reaches into another module's private names.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGES = ("kosmos2_engine", "kosmos2_app", "supervisely_io", "kosmos2_jobs")


@dataclass(frozen=True)
class Imported:
    """``module`` (absolute) imported by ``importer``; ``lazy`` when inside a function."""

    importer: str
    module: str
    lazy: bool
    line: int


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
    return {
        module_name(p): p for package in PACKAGES if (SRC / package).is_dir() for p in (SRC / package).rglob("*.py")
    }


class _ImportCollector(ast.NodeVisitor):
    """Every import statement, with whether it sits inside a function or lambda."""

    def __init__(self, current: str, is_package: bool):
        self.current, self.is_package = current, is_package
        self.depth = 0
        self.found: list[Imported] = []

    def _inside_function(self, node):
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _inside_function

    def visit_Import(self, node: ast.Import):
        for alias in node.names:
            self.found.append(Imported(self.current, alias.name, self.depth > 0, node.lineno))

    def visit_ImportFrom(self, node: ast.ImportFrom):
        base = absolute(node.module or "", node.level, self.current, self.is_package)
        self.found.append(Imported(self.current, base, self.depth > 0, node.lineno))
        for alias in node.names:
            self.found.append(Imported(self.current, f"{base}.{alias.name}", self.depth > 0, node.lineno))


def imports_of(name: str, path: Path) -> list[Imported]:
    collector = _ImportCollector(name, path.name == "__init__.py")
    collector.visit(ast.parse(path.read_text()))
    return collector.found


def all_imports() -> list[Imported]:
    return [found for name, path in ours().items() for found in imports_of(name, path)]


def _top(module: str) -> str:
    return module.split(".")[0]


def import_cycles(imports: list[Imported]) -> list[list[str]]:
    modules = ours()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for found in imports:
        if not found.lazy and found.module in modules and found.module != found.importer:
            graph[found.importer].add(found.module)
    visiting, done, cycles = set(), set(), []

    def visit(name, trail):
        if name in done:
            return
        if name in visiting:
            cycles.append(trail[trail.index(name) :] + [name])
            return
        visiting.add(name)
        for imported in sorted(graph[name]):
            visit(imported, trail + [name])
        visiting.discard(name)
        done.add(name)

    for name in sorted(graph):
        visit(name, [])
    # A package's __init__ re-exporting its modules is not a cycle with them.
    packages = {name for name, path in modules.items() if path.name == "__init__.py"}
    return [cycle for cycle in cycles if not any(m in packages for m in cycle)]


def layer_violations(imports: list[Imported]) -> list[str]:
    """Every import that breaks a rule of the module docstring, as ``importer:line -> module``."""
    found = []
    for item in imports:
        source, target = _top(item.importer), item.module
        where = f"{item.importer}:{item.line} -> {target}"
        if source == "kosmos2_engine" and _top(target) in (
            "kosmos2_app",
            "kosmos2_jobs",
            "supervisely_io",
            "supervisely",
        ):
            found.append(f"the engine imports {where}")
        if source == "supervisely_io" and _top(target) in ("kosmos2_app", "kosmos2_jobs"):
            found.append(f"supervisely_io imports {where}")
        for package, users in (("kosmos2_engine", ("kosmos2_app", "kosmos2_jobs")), ("kosmos2_app", ("kosmos2_jobs",))):
            if source in users and _top(target) == package and not _public(target, package):
                found.append(f"{item.importer} reaches past {package}'s public names: {where}")
    return found


def _public(module: str, package: str) -> bool:
    """``package`` itself or a name it exports (``package.Name``, not ``package.module``)."""
    if module == package:
        return True
    if module.count(".") != 1:
        return False
    return module not in ours() and not (SRC / package / module.split(".")[1]).is_dir()


def test_no_import_cycles_between_modules():
    assert import_cycles(all_imports()) == []


def test_every_import_keeps_to_its_layer():
    assert layer_violations(all_imports()) == []


def test_imports_inside_functions_are_listed_apart_and_keep_to_their_layer():
    lazy = [item for item in all_imports() if item.lazy]
    assert lazy, "the collector should see the lazy imports (OpenVINO, Ray, matplotlib)"
    assert layer_violations(lazy) == []


def test_imports_under_if_try_and_type_checking_are_seen(tmp_path):
    module = tmp_path / "probe.py"
    module.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from .a import A\n"
        "try:\n    import b\nexcept ImportError:\n    if True:\n        from . import c\n"
        "def f():\n    import d\n"
    )
    seen = {(item.module, item.lazy) for item in imports_of("pkg.probe", module)}
    assert {("pkg.a", False), ("b", False), ("pkg.c", False), ("d", True)} <= seen


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
