"""A failure reason is a ``Reason`` member everywhere but in ``core/reasons.py``, and its
HTTP status comes from the one table, ``core.errors.http_status``.

Both are read from the source with ``ast``: a string constant equal to a reason's name
is a bare reason unless it is a docstring, a member of another enum that shares the
name (a task's ``CANCELLED`` state), or the status name of a foreign protocol (etcd's
gRPC ``CANCELLED``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import alluxiojob
from alluxiojob.core.reasons import Reason

pytestmark = pytest.mark.fast

ROOT = Path(alluxiojob.__file__).parent
HOME = ROOT / "core" / "reasons.py"
NAMES = {reason.value for reason in Reason}
# Calls whose string arguments are another vocabulary's names, with what they are.
FOREIGN_CALLS = {"EtcdRpcError": "a gRPC status name"}


def _docstrings(tree: ast.AST) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                found.add(id(body[0].value))
    return found


def _is_enum(node: ast.ClassDef) -> bool:
    return any((isinstance(b, ast.Attribute) and b.attr.endswith("Enum"))
               or (isinstance(b, ast.Name) and b.id.endswith("Enum")) for b in node.bases)


def _excused(tree: ast.AST) -> set[int]:
    """The ids of constants that name something other than a reason."""
    excused = _docstrings(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and _is_enum(node):
            for statement in node.body:
                if isinstance(statement, ast.Assign):
                    excused.update(id(n) for n in ast.walk(statement.value))
        if isinstance(node, ast.Call):
            name = node.func.id if isinstance(node.func, ast.Name) else getattr(
                node.func, "attr", "")
            if name in FOREIGN_CALLS:
                excused.update(id(n) for arg in node.args for n in ast.walk(arg))
    return excused


def bare_reasons(source: str, where: str) -> list[str]:
    tree = ast.parse(source)
    excused = _excused(tree)
    return [f"{where}:{node.lineno}: {node.value!r}" for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
            and node.value in NAMES and id(node) not in excused]


def own_statuses(source: str, where: str) -> list[str]:
    """Calls that pair a ``.reason`` with a literal HTTP status of their own."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        parts = [*node.args, *(k.value for k in node.keywords)]
        inside = [n for part in parts for n in ast.walk(part)]
        has_reason = any(isinstance(n, ast.Attribute) and n.attr == "reason" for n in inside)
        has_status = any(isinstance(p, ast.Constant) and type(p.value) is int
                         and 400 <= p.value < 600 for p in parts)
        if has_reason and has_status:
            found.append(f"{where}:{node.lineno}")
    return found


def _sources() -> list[tuple[str, str]]:
    return [(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT.parent)))
            for path in sorted(ROOT.rglob("*.py")) if path != HOME]


def test_no_bare_reason_string() -> None:
    assert [hit for text, where in _sources() for hit in bare_reasons(text, where)] == []


def test_one_reason_to_status_table() -> None:
    assert [hit for text, where in _sources() for hit in own_statuses(text, where)] == []


def test_the_scans_see_what_they_look_for() -> None:
    source = '''
"""A docstring naming IO_ERROR is prose."""
import enum
class TaskState(enum.StrEnum):
    CANCELLED = "CANCELLED"
def f(exc):
    EtcdRpcError("CANCELLED", "closed")
    if exc.reason == "UFS_NOT_FOUND":
        return JSONResponse({"error": exc.reason}, status_code=404)
'''
    assert bare_reasons(source, "m.py") == ["m.py:8: 'UFS_NOT_FOUND'"]
    assert own_statuses(source, "m.py") == ["m.py:9"]
