"""The packages of ``alluxiojob`` stand in floors, and every import points down or level.

Ground floor first: config and logs; core (pure values and rules); protocol (the wire);
ufs and store; security; web and the REST client; coordinator and worker; cli and
testing. An import from a lower floor to a higher one, or a cycle between packages, is
a fault: every import is read from the source with ``ast``, module-level and inside
functions alike (a lazy import is still an arrow).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import alluxiojob

pytestmark = pytest.mark.fast

ROOT = Path(alluxiojob.__file__).parent

FLOORS: dict[str, int] = {
    "config": 0, "logs": 0,
    "core": 1,
    "protocol": 2,
    "ufs": 3, "store": 3,
    "security": 4,
    "web": 5, "client": 5,
    "coordinator": 6, "worker": 6,
    "cli": 7, "testing": 7,
}


def _package_of(module: str) -> str | None:
    """``alluxiojob.core.ledger`` → ``core``; None outside alluxiojob or for its root."""
    parts = module.split(".")
    if parts[0] != "alluxiojob" or len(parts) < 2:
        return None
    return parts[1]


def _imports(path: Path) -> list[tuple[int, str]]:
    """Every alluxiojob module ``path`` imports, with the line, wherever the import is."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this file's package
                base = path.relative_to(ROOT.parent).with_suffix("").parts[:-node.level]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            found.append((node.lineno, module))
    return found


def _edges() -> dict[tuple[str, str], list[str]]:
    """(from package, to package) → the places (file:line) that draw that arrow."""
    edges: dict[tuple[str, str], list[str]] = {}
    for path in sorted(ROOT.rglob("*.py")):
        here = _package_of(".".join(path.relative_to(ROOT.parent).with_suffix("").parts))
        if here is None:
            continue
        for line, module in _imports(path):
            there = _package_of(module)
            if there is None or there == here:
                continue
            edges.setdefault((here, there), []).append(
                f"{path.relative_to(ROOT.parent)}:{line}")
    return edges


def _upward(edges: dict[tuple[str, str], list[str]]) -> list[str]:
    return [f"{a} (floor {FLOORS[a]}) imports {b} (floor {FLOORS[b]}) at {', '.join(places)}"
            for (a, b), places in sorted(edges.items()) if FLOORS[a] < FLOORS[b]]


def _cycles(edges: dict[tuple[str, str], list[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one package (Tarjan's algorithm)."""
    graph: dict[str, set[str]] = {}
    for a, b in edges:
        graph.setdefault(a, set()).add(b)
        graph.setdefault(b, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                group.append(top)
                if top == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def test_every_package_has_a_floor() -> None:
    packages = {p.stem if p.is_file() else p.name for p in ROOT.iterdir()
                if (p.is_dir() and (p / "__init__.py").exists())
                or (p.suffix == ".py" and p.name != "__init__.py")}
    assert packages - FLOORS.keys() == set(), "give the new package a floor in FLOORS"


def test_no_import_runs_back_up() -> None:
    assert _upward(_edges()) == []


def test_no_import_cycle_between_packages() -> None:
    assert _cycles(_edges()) == []


def test_the_checks_see_an_upward_arrow_and_a_cycle() -> None:
    """The two checks above can fail: a made-up graph with one of each."""
    edges = {("core", "protocol"): ["x:1"], ("protocol", "core"): ["y:2"],
             ("ufs", "store"): ["z:3"], ("store", "ufs"): ["w:4"]}
    assert _upward(edges) == ["core (floor 1) imports protocol (floor 2) at x:1"]
    assert _cycles(edges) == [["core", "protocol"], ["store", "ufs"]]


def test_function_level_imports_are_read(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from alluxiojob.cli import main\n", encoding="utf-8")
    assert _imports(source) == [(2, "alluxiojob.cli")]
