"""The CLI's pydantic-free option conversion gives what typer's own gives, values and
errors alike (``alluxiojob/cli/coercion.py``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import pytest
import typer
from typer.testing import CliRunner

from alluxiojob.cli.coercion import Typer


def _apps() -> tuple[typer.Typer, Typer]:
    def command(
        name: Annotated[str, typer.Option("--name")] = "-",
        count: Annotated[int, typer.Option("--count")] = 1,
        ranged: Annotated[int, typer.Option("--ranged", min=1, max=9)] = 5,
        conf: Annotated[Path | None, typer.Option("--conf")] = None,
        define: Annotated[list[str] | None, typer.Option("-D")] = None,
        flag: Annotated[bool, typer.Option("--flag")] = False,
    ) -> None:
        typer.echo(repr((name, count, ranged, conf, define, flag)))

    plain_app, typer_app = Typer(), typer.Typer()
    for app in (plain_app, typer_app):
        app.command()(command)
        app.command("other")(command)
    return typer_app, plain_app


@pytest.mark.parametrize("args", [
    [], ["--name", "x y"], ["--name", ""], ["--name", "bad\udcff"],
    ["--count", "12"], ["--count", "0"],
    ["--count", "007"], ["--count", "-5"], ["--count", "1e3"], ["--count", "abc"],
    ["--count", ""], ["--count", "1" * 30], ["--count", "٣"], ["--ranged", "12"],
    ["--ranged", "3"], ["--conf", "."], ["--conf", "/nonexistent/file"], ["--conf", ""],
    ["-D", "a=1", "-D", "b=2"], ["--flag"], ["--help"],
])
def test_the_same_values_and_errors_as_typers_own(args: list[str]) -> None:
    typer_app, plain_app = _apps()
    runner = CliRunner()
    expected = runner.invoke(typer_app, ["other", *args])
    got = runner.invoke(plain_app, ["other", *args])
    assert (got.exit_code, got.output) == (expected.exit_code, expected.output)


def test_plain_values_never_build_a_pydantic_adapter(monkeypatch: pytest.MonkeyPatch) -> None:
    import typer._coercion
    import typer.core

    built: list[Any] = []

    def spy(descriptor: Any) -> Any:
        built.append(descriptor.annotation)
        raise AssertionError("typer's converter was built")

    monkeypatch.setattr(typer.core, "build_runtime_param", spy)
    _, plain_app = _apps()
    result = CliRunner().invoke(plain_app, ["other", "--name", "n", "--count", "3",
                                            "--conf", ".", "-D", "k=v", "--flag"])
    assert result.exit_code == 0, result.output
    assert "('n', 3, 5, PosixPath('.'), ['k=v'], True)" in result.output
    assert built == []
