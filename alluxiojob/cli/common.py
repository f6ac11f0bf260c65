"""Options and helpers shared by every command: --conf, -D, errors and exit codes.

Every CLI module imports only typer at start-up; the configuration, the security
settings and the HTTP client are imported by the command that uses them, so that
``--help`` and a round trip start in a fraction of the time the whole package takes
(``tests/unit/test_cli_startup.py``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

if TYPE_CHECKING:
    from alluxiojob.client import ApiError, CoordinatorClient
    from alluxiojob.config import Config
    from alluxiojob.security import Security

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
    from alluxiojob.config import ConfigError, load_config

    try:
        config = load_config(conf, defines or [])
    except ConfigError as exc:
        fail(str(exc), EXIT_USAGE)
    for warning in config.warnings:
        typer.echo(f"Warning: {warning}", err=True)
    return config


def get_security(config: Config) -> Security:
    """The client's side of the cluster token and TLS; a bad setting is exit code 2."""
    from alluxiojob.config import ConfigError
    from alluxiojob.security import Security

    try:
        security = Security.from_config(config, serving=False)
    except ConfigError as exc:
        fail(str(exc), EXIT_USAGE)
    for warning in security.warnings:
        typer.echo(f"Warning: {warning}", err=True)
    return security


def access_hint(error: ApiError) -> str:
    """What to set when the coordinator refused us (401, or 403 in protected mode)."""
    from alluxiojob.security.paths import ALLOWLIST_KEY
    from alluxiojob.security.token import TOKEN_FILE_KEY, TOKEN_KEY

    if error.status == 401:
        return (f"\nSet {TOKEN_FILE_KEY} (or {TOKEN_KEY}) to the cluster's token, in the "
                "site file or with -D.")
    if error.status == 403 and "protected mode" in str(error):
        return (f"\nSet {TOKEN_FILE_KEY} (or {TOKEN_KEY}) on the coordinator and here, or "
                "run this command on the coordinator's host.")
    if error.status == 403 and "allowed prefixes" in str(error):
        return f"\nThe coordinator confines jobs to {ALLOWLIST_KEY}."
    return ""


def exit_code_for(error: ApiError) -> int:
    from alluxiojob.core.reasons import Reason

    if error.status in (401, 403):
        return EXIT_USAGE
    if error.code in ("NOT_FOUND", Reason.UFS_NOT_FOUND):
        return EXIT_NOT_FOUND
    if error.code in ("UNAVAILABLE", "RESOURCE_EXHAUSTED"):
        return EXIT_UNAVAILABLE
    if error.code in ("INVALID_ARGUMENT", Reason.INVALID_PATH):
        return EXIT_USAGE
    if error.code == "FAILED_PRECONDITION":
        return EXIT_WRONG_STATE
    return EXIT_ERROR


@contextmanager
def coordinator(conf: Path | None, defines: list[str] | None) -> Iterator[CoordinatorClient]:
    from alluxiojob.client import ApiError, CoordinatorClient

    config = get_config(conf, defines)
    client = CoordinatorClient(config, get_security(config))
    try:
        yield client
    except ApiError as exc:
        fail(str(exc) + access_hint(exc), exit_code_for(exc))
    finally:
        client.close()
