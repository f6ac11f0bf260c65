"""Typer's help renderer without the parts of rich that plain help never uses.

``typer.rich_utils`` draws every ``--help`` page. At import it also loads
``rich.markdown`` (markdown-it, and pygments through ``rich.syntax``) for the
``"markdown"`` markup mode, and ``rich.traceback`` for pretty exceptions: about a third
of the CLI's start-up, for two names this CLI never calls (its markup mode is ``"rich"``
and pretty exceptions are off). ``import_help_renderer`` imports ``typer.rich_utils``
with those two modules stood in for by classes that import the real module the first
time they are used, then takes the stand-ins out of ``sys.modules``, so a later
``import rich.markdown`` gets the real module. The help text is the same either way.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

# module -> the names typer.rich_utils imports from it
_DEFERRED = {"rich.markdown": ("Markdown",), "rich.traceback": ("Traceback",)}


class _Deferred(type):
    """The metaclass of a stand-in: class attributes come from the real class."""

    _module: str
    _name: str

    def real(cls) -> Any:
        return getattr(importlib.import_module(cls._module), cls._name)

    def __getattr__(cls, attr: str) -> Any:
        return getattr(cls.real(), attr)


def _stand_in(module: str, name: str) -> type:
    def __new__(cls: _Deferred, *args: Any, **kwargs: Any) -> Any:
        return cls.real()(*args, **kwargs)

    return _Deferred(name, (), {"_module": module, "_name": name, "__new__": __new__})


def import_help_renderer() -> None:
    """Import ``typer.rich_utils`` without markdown and tracebacks (no-op if imported)."""
    if "typer.rich_utils" in sys.modules:
        return
    installed: list[tuple[str, types.ModuleType]] = []
    for module, names in _DEFERRED.items():
        if module in sys.modules:
            continue
        stub = types.ModuleType(module, "Stands in while typer.rich_utils is imported.")
        for name in names:
            setattr(stub, name, _stand_in(module, name))
        sys.modules[module] = stub
        installed.append((module, stub))
    try:
        importlib.import_module("typer.rich_utils")
    except ImportError:
        pass  # a typer without rich: it prints plain help and never needs this
    finally:
        for module, stub in installed:
            if sys.modules.get(module) is stub:
                del sys.modules[module]


def help_requested(args: list[str]) -> bool:
    """Whether these arguments may print a help page: ``--help``, or one word at most
    (a bare group prints its help; ``coordinator`` and ``worker`` just import a little
    early what they would not need)."""
    return "--help" in args or len(args) < 2
