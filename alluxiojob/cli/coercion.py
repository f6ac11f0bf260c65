"""Option values converted without pydantic, for the plain cases this CLI has.

typer (0.2x) converts every option value through a pydantic ``TypeAdapter``, built
when the command runs: importing pydantic and building the adapters is about a third
of a ``job list`` round trip. The commands and groups of ``Typer`` give each
parameter a converter that handles a ``str``, a ``list[str]``, an ``int`` written in
plain digits and a ``Path`` the way typer does, and hands anything else (``-5``,
``1e3``, an empty path...) to typer's own converter, so its error messages are
unchanged. A typer without these internals keeps its own conversion.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer
from typer.core import TyperCommand, TyperGroup
from typer.models import CommandFunctionType

try:
    from typer._coercion import RuntimeParam, build_runtime_param
    from typer._param_types import coerce_cli_path
except ImportError:  # another typer: it converts values its own way
    RuntimeParam = None  # type: ignore[assignment,misc]

_NOT_PLAIN = object()


def _plain(annotation: Any, value: Any, parameter_info: Any) -> Any:
    """``value`` converted as typer would, or ``_NOT_PLAIN`` for typer to convert."""
    if annotation is str and isinstance(value, str):
        return value
    if annotation == list[str] and isinstance(value, list | tuple) and all(
            isinstance(item, str) for item in value):
        return list(value)
    if annotation is int and parameter_info.min is None and parameter_info.max is None:
        if type(value) is int:
            return value
        if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) < 19 and (
                value == "0" or not value.startswith("0")):
            return int(value)
    return _NOT_PLAIN


if RuntimeParam is not None:
    @dataclass(frozen=True)
    class _PlainRuntimeParam(RuntimeParam):
        def _coerce_value(self, value: Any, param: Any, ctx: Any) -> Any:
            if self.annotation is Path and isinstance(value, str) and value:
                # typer's own checks (exists, readable...) on an already built Path.
                return coerce_cli_path(Path(value), self.parameter_info,
                                       path_type=self.parameter_info.path_type or Path,
                                       param=param, ctx=ctx)
            plain = _plain(self.annotation, value, self.parameter_info)
            if plain is _NOT_PLAIN:
                return build_runtime_param(param.type_descriptor)._coerce_value(
                    value, param=param, ctx=ctx)
            return plain


def _use_plain_coercion(params: list[Any]) -> list[Any]:
    if RuntimeParam is None:
        return params
    for param in params:
        descriptor = getattr(param, "type_descriptor", None)
        if (descriptor is not None and descriptor.file_annotation is None
                and getattr(param, "_runtime_param", False) is None):
            param._runtime_param = _PlainRuntimeParam(
                parameter_info=descriptor.parameter_info, annotation=descriptor.annotation)
    return params


class PlainCoercionCommand(TyperCommand):
    def get_params(self, ctx: Any) -> list[Any]:
        return _use_plain_coercion(super().get_params(ctx))


class PlainCoercionGroup(TyperGroup):
    def get_params(self, ctx: Any) -> list[Any]:
        return _use_plain_coercion(super().get_params(ctx))


class Typer(typer.Typer):
    """``typer.Typer`` whose groups and commands convert plain values without pydantic."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(cls=PlainCoercionGroup, **kwargs)

    def command(self, *args: Any, **kwargs: Any
                ) -> Callable[[CommandFunctionType], CommandFunctionType]:
        kwargs.setdefault("cls", PlainCoercionCommand)
        return super().command(*args, **kwargs)
