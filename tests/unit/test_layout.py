"""The layout shows the architecture: the pure core imports no I/O, arrows point down
(the core imports no service, nothing below the CLI imports the CLI), and no module
imports itself through others (not even under ``TYPE_CHECKING``)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import alluxiojob

PACKAGE = Path(alluxiojob.__file__).parent
PURE = ["alluxiojob.core.ledger", "alluxiojob.core.states", "alluxiojob.core.progress",
        "alluxiojob.core.job", "alluxiojob.core.ring", "alluxiojob.core.report",
        "alluxiojob.core.backoff", "alluxiojob.core.text", "alluxiojob.protocol.codec"]
# The floors above the core, with the CLI on top; the core imports none of them.
SERVICES = ("alluxiojob.coordinator", "alluxiojob.worker", "alluxiojob.store",
            "alluxiojob.ufs", "alluxiojob.security", "alluxiojob.testing", "alluxiojob.cli",
            "alluxiojob.web", "alluxiojob.logs")
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


def _in(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def upward_arrows(graph: dict[str, set[str]]) -> list[str]:
    """Imports that point up: the core importing a service, or anything importing the CLI."""
    arrows = []
    for module, targets in sorted(graph.items()):
        for target in sorted(targets):
            if module.startswith("alluxiojob.core") and _in(target, SERVICES):
                arrows.append(f"{module} -> {target}")
            elif _in(target, ("alluxiojob.cli",)) and not _in(module, ("alluxiojob.cli",)):
                arrows.append(f"{module} -> {target}")
    return arrows


def test_no_arrow_points_up() -> None:
    graph = import_graph()
    assert "alluxiojob.core.report" in graph["alluxiojob.coordinator.api"]
    assert upward_arrows(graph) == []


def test_the_arrow_finder_finds_both_kinds() -> None:
    graph = {"alluxiojob.coordinator.api": {"alluxiojob.cli.render"},
             "alluxiojob.core.job": {"alluxiojob.store.jobs", "alluxiojob.core.states"},
             "alluxiojob.cli.main": {"alluxiojob.cli.jobs", "alluxiojob.core.report"}}
    assert upward_arrows(graph) == ["alluxiojob.coordinator.api -> alluxiojob.cli.render",
                                    "alluxiojob.core.job -> alluxiojob.store.jobs"]
