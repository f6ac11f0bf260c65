"""``alluxiojob``: start a coordinator or a worker, drive jobs, inspect the cache."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from alluxiojob.cli.alluxio2 import add_alluxio2_commands
from alluxiojob.cli.coercion import Typer
from alluxiojob.cli.common import (
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    ConfOption,
    DefineOption,
    coordinator,
    examples,
    fail,
    get_config,
)
from alluxiojob.cli.fs import fs_app
from alluxiojob.cli.jobs import job_app

app = Typer(
    name="alluxiojob",
    help="A job service that loads datasets into worker caches, frees them, "
    "and copies or moves data between storage systems.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    epilog=examples(
        "alluxiojob coordinator --conf alluxio-site.properties",
        "alluxiojob job load --path /data/imagenet --wait",
        "alluxiojob --install-completion        (tab completion for bash, zsh, fish)",
    ),
)
app.add_typer(job_app, name="job")
app.add_typer(fs_app, name="fs")
report_app = Typer(help="Reports about the job service.", no_args_is_help=True,
                         epilog=examples("alluxiojob report jobservice"))
app.add_typer(report_app, name="report")
fsadmin_app = Typer(help="Alluxio 2.x's admin commands (fsadmin report jobservice).",
                          no_args_is_help=True,
                          epilog=examples("alluxiojob fsadmin report jobservice"))
fsadmin_report_app = Typer(help="Reports about the job service.", no_args_is_help=True,
                                 epilog=examples("alluxiojob fsadmin report jobservice"))
fsadmin_app.add_typer(fsadmin_report_app, name="report")
app.add_typer(fsadmin_app, name="fsadmin")


async def _serve_until_signal(service_run: object) -> None:
    import signal

    import trio

    async with trio.open_nursery() as nursery:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            await nursery.start(service_run)  # type: ignore[arg-type]
            async for _ in signals:
                nursery.cancel_scope.cancel()
                break


# A service's exit is Python's own (its pools and threads stop as they always have); every
# other command's is exit_now's (alluxiojob/cli/quick_exit.py).
_services_run: list[str] = []


def _run_service(kind: str, conf: Path | None, defines: list[str] | None,
                 log_level: str) -> None:
    _services_run.append(kind)
    # A service needs all of these; the CLI's other commands need none of them.
    import logging

    import trio

    from alluxiojob.config import ConfigError
    from alluxiojob.core.errors import InvalidArgument, JobServiceError, describe_error, leaves
    from alluxiojob.logs import configure_logging

    config = get_config(conf, defines)
    configure_logging(log_level)
    try:
        if kind == "coordinator":
            from alluxiojob.coordinator.service import CoordinatorService

            service_run = CoordinatorService(config).run
        else:
            from alluxiojob.worker.service import WorkerService

            service_run = WorkerService(config).run
        trio.run(_serve_until_signal, service_run)
    except BaseException as exc:  # noqa: B036 - every way out gets a message and a code
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise
        errors = leaves(exc)
        if any(isinstance(e, ConfigError | InvalidArgument) for e in errors):
            # A configuration a service cannot run with (a bad value, a coordinator id
            # already in use) is a usage error, not an outage.
            fail(f"{kind} cannot start: {describe_error(exc)}", EXIT_USAGE)
        if not all(isinstance(e, JobServiceError | ValueError | OSError) for e in errors):
            logging.getLogger("alluxiojob").exception("%s stopped by an unexpected error", kind)
        fail(f"{kind} stopped: {describe_error(exc)}", EXIT_UNAVAILABLE)


LogLevel = Annotated[str, typer.Option("--log-level", help="DEBUG, INFO, WARNING or ERROR.")]


def _service_command(kind: str, doc: str, *example_lines: str) -> None:
    """Register ``coordinator`` or ``worker``: the same options, one service each."""

    def command(conf: ConfOption = None, define: DefineOption = None,
                log_level: LogLevel = "INFO") -> None:
        _run_service(kind, conf, define, log_level)

    command.__doc__ = doc
    app.command(kind, epilog=examples(*example_lines))(command)


_service_command(
    "coordinator", "Run a coordinator: the REST API, the scheduler and the job store.",
    "alluxiojob coordinator --conf /etc/alluxio/alluxio-site.properties",
    "alluxiojob coordinator -D alluxio.coordinator.rest.port=29998 --log-level DEBUG",
)
_service_command(
    "worker", "Run a worker: the task server, the process pool and the cache.",
    "alluxiojob worker --conf /etc/alluxio/alluxio-site.properties",
    "alluxiojob worker -D alluxio.worker.page.store.dirs=/mnt/nvme0/cache",
)


@report_app.command("jobservice", epilog=examples(
    "alluxiojob report jobservice",
    "alluxiojob report jobservice --format JSON",
))
def report_jobservice(
    conf: ConfOption = None,
    define: DefineOption = None,
    output_format: str = typer.Option("TEXT", "--format", help="TEXT or JSON."),
) -> None:
    """Workers' task pools and load, job counts by status, notable jobs."""
    from alluxiojob.core.report import report_text

    with coordinator(conf, define) as client:
        report = client.report()
    typer.echo(json.dumps(report, indent=2) if output_format.upper() == "JSON"
               else report_text(report))


add_alluxio2_commands(fs_app, fsadmin_report_app, report_jobservice)


def main() -> None:
    import sys

    from alluxiojob.cli.light_help import help_requested, import_help_renderer

    if help_requested(sys.argv[1:]):
        import_help_renderer()
    try:
        app()
    except SystemExit as exc:
        if _services_run:
            raise
        from alluxiojob.cli.quick_exit import exit_now

        exit_now(exc.code)


if __name__ == "__main__":
    main()
