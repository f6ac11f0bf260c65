"""The layout shows the architecture: the pure core imports no I/O, and no module imports
itself through others (not even under ``TYPE_CHECKING``)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import alluxiojob

PACKAGE = Path(alluxiojob.__file__).parent
PURE = ["alluxiojob.core.ledger", "alluxiojob.core.states", "alluxiojob.core.progress",
        "alluxiojob.core.job", "alluxiojob.core.ring", "alluxiojob.protocol.codec"]
IO_LIBRARIES = ["trio", "trio_websocket", "trio_parallel", "httpx", "rocksdict", "hypercorn",
                "starlette", "structlog"]


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports, anywhere in its source."""
    modules = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                continue
            graph[name].update(t for t in targets if t in modules and t != name)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    visiting: list[str] = []
    done: set[str] = set()

    def visit(node: str) -> list[str]:
        if node in visiting:
            return visiting[visiting.index(node):] + [node]
        if node in done:
            return []
        visiting.append(node)
        for target in sorted(graph[node]):
            cycle = visit(target)
            if cycle:
                return cycle
        visiting.pop()
        done.add(node)
        return []

    for node in sorted(graph):
        cycle = visit(node)
        if cycle:
            return cycle
    return []


def test_no_import_cycle_even_under_type_checking() -> None:
    graph = import_graph()
    assert "alluxiojob.coordinator.api" in graph
    assert find_cycle(graph) == []


def test_the_cycle_finder_finds_one() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_the_pure_core_imports_no_io_library() -> None:
    probe = ("import sys, importlib\n"
             f"for name in {PURE!r}: importlib.import_module(name)\n"
             f"print(sorted(m for m in sys.modules if m.split('.')[0] in {IO_LIBRARIES!r}))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         timeout=60, check=True).stdout.strip()
    assert out == "[]", f"the pure core pulled in: {out}"
