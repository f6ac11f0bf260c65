"""Every command's --help shows examples, and each example names that command."""

from __future__ import annotations

from collections.abc import Iterator

import typer
from typer.testing import CliRunner

from alluxiojob.cli.main import app


def _commands(group: object, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    yield path
    for name, command in sorted(getattr(group, "commands", {}).items()):
        yield from _commands(command, (*path, name))


def test_every_command_help_shows_an_example() -> None:
    runner = CliRunner()
    paths = list(_commands(typer.main.get_command(app)))
    assert ("fs", "distributedLoad") in paths
    assert ("fsadmin", "report", "jobservice") in paths
    assert len(paths) > 20
    for path in paths:
        result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "200"})
        assert result.exit_code == 0, (path, result.output)
        assert "Examples" in result.output, f"alluxiojob {' '.join(path)} --help: no example"
        after = result.output.split("Examples", 1)[1]
        command = " ".join(("alluxiojob", *path))
        assert command in after, f"the examples of {command!r} do not use it:\n{after}"


def test_completion_is_offered() -> None:
    result = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200"})
    assert "--install-completion" in result.output
    assert "--show-completion" in result.output
