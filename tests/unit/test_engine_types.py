"""Every public function and method of the engine states its types (mypy then checks callers:
a rename cannot leave one calling an attribute that no longer exists)."""

from __future__ import annotations

import ast
from pathlib import Path

ENGINE = Path(__file__).resolve().parents[2] / "src" / "kosmos2_engine"


def unannotated(path: Path) -> list[str]:
    """``module:line name`` of each public function or method of a public class in ``path``
    with a parameter or a return type not annotated (``self`` / ``cls`` and ``__init__``'s
    return excepted)."""
    found = []

    def visit(body, owner: str) -> None:
        for node in body:
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                visit(node.body, f"{node.name}.")
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                if node.name.startswith("_") and node.name != "__init__":
                    continue
                args = node.args.posonlyargs + node.args.args + node.args.kwonlyargs
                if owner and args and args[0].arg in ("self", "cls"):
                    args = args[1:]
                args += [a for a in (node.args.vararg, node.args.kwarg) if a is not None]
                if any(a.annotation is None for a in args) or (node.returns is None and node.name != "__init__"):
                    found.append(f"{path.relative_to(ENGINE)}:{node.lineno} {owner}{node.name}")

    visit(ast.parse(path.read_text()).body, "")
    return found


def test_every_public_engine_function_is_annotated():
    missing = [name for path in sorted(ENGINE.rglob("*.py")) for name in unannotated(path)]
    assert missing == []


def test_the_check_sees_an_unannotated_function(tmp_path):
    module = tmp_path / "probe.py"
    module.write_text("def typed(a: int) -> int:\n    return a\n\ndef loose(a):\n    return a\n\n"
                      "class Open:\n    def method(self, b: int):\n        return b\n")  # fmt: skip
    global ENGINE
    saved, ENGINE = ENGINE, tmp_path
    try:
        assert unannotated(module) == ["probe.py:4 loose", "probe.py:8 Open.method"]
    finally:
        ENGINE = saved
