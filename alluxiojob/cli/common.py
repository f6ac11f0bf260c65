"""Options and helpers shared by every command: --conf, -D, errors and exit codes."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from alluxiojob.cli.client import ApiError, CoordinatorClient
from alluxiojob.config import Config, ConfigError, load_config

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_JOB_FAILED = 4
EXIT_UNAVAILABLE = 5
EXIT_WRONG_STATE = 6

ConfOption = Annotated[
    Path | None,
    typer.Option("--conf", help="alluxio-site.properties file (default: "
                 "$ALLUXIO_CONF_DIR/alluxio-site.properties)", show_default=False),
]
DefineOption = Annotated[
    list[str] | None,
    typer.Option("-D", "--define", metavar="KEY=VALUE",
                 help="Set a property, overriding the file and the environment."),
]


def examples(*commands: str) -> str:
    """A command's help epilog: its examples, one a paragraph (rich markup)."""
    return "[bold]Examples[/bold]\n\n" + "\n\n".join(commands)


def fail(message: str, code: int = EXIT_ERROR) -> NoReturn:
    typer.echo(f"Error: {message}", err=True)
    raise typer.Exit(code)


def get_config(conf: Path | None, defines: list[str] | None) -> Config:
    try:
        config = load_config(conf, defines or [])
    except ConfigError as exc:
        fail(str(exc), EXIT_USAGE)
    for warning in config.warnings:
        typer.echo(f"Warning: {warning}", err=True)
    return config


def exit_code_for(error: ApiError) -> int:
    if error.code in ("NOT_FOUND", "UFS_NOT_FOUND"):
        return EXIT_NOT_FOUND
    if error.code in ("UNAVAILABLE", "RESOURCE_EXHAUSTED"):
        return EXIT_UNAVAILABLE
    if error.code in ("INVALID_ARGUMENT", "INVALID_PATH"):
        return EXIT_USAGE
    if error.code == "FAILED_PRECONDITION":
        return EXIT_WRONG_STATE
    return EXIT_ERROR


@contextmanager
def coordinator(conf: Path | None, defines: list[str] | None) -> Iterator[CoordinatorClient]:
    client = CoordinatorClient(get_config(conf, defines))
    try:
        yield client
    except ApiError as exc:
        fail(str(exc), exit_code_for(exc))
    finally:
        client.close()


def stdout_is_tty() -> bool:
    return sys.stdout.isatty()
