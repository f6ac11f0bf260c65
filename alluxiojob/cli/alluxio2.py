"""Alluxio 2.x's command names, as aliases, so scripts written for Alluxio keep working.

``fs distributedLoad``, ``fs distributedCp`` and ``fs distributedMv`` take 2.x's
positional paths and flags and run a LOAD, COPY or MOVE job; like 2.x they wait for the
job (``--async`` only submits it). ``fsadmin report jobservice`` is ``report
jobservice``. 2.x flags that pick workers by host or locality have no meaning here,
where the hash ring places files: they are refused with a message that says so.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from alluxiojob.cli.common import (
    EXIT_JOB_FAILED,
    EXIT_USAGE,
    ConfOption,
    DefineOption,
    examples,
    fail,
)
from alluxiojob.cli.jobs import BatchSize, Format, options_for, run_job_command

ActiveJobs = Annotated[int | None, typer.Option(
    "--active-jobs", help="Accepted for 2.x scripts and ignored: one job covers the whole "
    "path, and alluxio.coordinator.scheduler.running.job.capacity bounds running jobs.")]
Async = Annotated[bool, typer.Option(
    "--async", help="Submit the job and return, instead of waiting for it as 2.x does.")]

# 2.x placement flags (distributedLoad), each refused by name when given.
PLACEMENT_FLAGS = ("--hosts", "--host-file", "--excluded-hosts", "--excluded-host-file",
                   "--locality", "--locality-file", "--excluded-locality",
                   "--excluded-locality-file")


def _placement(flag: str) -> object:
    return typer.Option(flag, hidden=True, help="Not supported: the hash ring places files.")


def _refuse_placement(given: dict[str, str | None]) -> None:
    used = [flag for flag, value in given.items() if value is not None]
    if used:
        fail(f"{', '.join(used)} not supported: files are placed on workers by the "
             "consistent-hash ring (use --replication for more copies)", EXIT_USAGE)


def _index_paths(index_file: str) -> list[str]:
    """The UFS paths listed in a local index file, one a line (blank lines skipped)."""
    try:
        lines = Path(index_file).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"cannot read the index file {index_file}: {exc}", EXIT_USAGE)
    paths = [line.strip() for line in lines if line.strip()]
    if not paths:
        fail(f"the index file {index_file} lists no path", EXIT_USAGE)
    return paths


def distributed_load(
    path: Annotated[str, typer.Argument(
        help="UFS path to load; with --index, a local file listing UFS paths.")],
    replication: Annotated[int, typer.Option(
        "--replication", help="Workers that cache each file (our --replicas).")] = 1,
    active_jobs: ActiveJobs = None,
    batch_size: BatchSize = None,
    index: Annotated[bool, typer.Option(
        "--index", help="PATH is a local file listing one UFS path a line: one job each.")
    ] = False,
    run_async: Async = False,
    passive_cache: Annotated[bool, typer.Option("--passive-cache", hidden=True)] = False,
    direct_cache: Annotated[bool, typer.Option("--direct-cache", hidden=True)] = False,
    hosts: Annotated[str | None, _placement("--hosts")] = None,
    host_file: Annotated[str | None, _placement("--host-file")] = None,
    excluded_hosts: Annotated[str | None, _placement("--excluded-hosts")] = None,
    excluded_host_file: Annotated[str | None, _placement("--excluded-host-file")] = None,
    locality: Annotated[str | None, _placement("--locality")] = None,
    locality_file: Annotated[str | None, _placement("--locality-file")] = None,
    excluded_locality: Annotated[str | None, _placement("--excluded-locality")] = None,
    excluded_locality_file: Annotated[str | None, _placement("--excluded-locality-file")
                                      ] = None,
    output_format: Format = "TEXT",
    conf: ConfOption = None, define: DefineOption = None,
) -> None:
    """Load a path into the workers' caches (Alluxio 2.x's name for job load)."""
    _refuse_placement(dict(zip(PLACEMENT_FLAGS, (
        hosts, host_file, excluded_hosts, excluded_host_file, locality, locality_file,
        excluded_locality, excluded_locality_file), strict=True)))
    options = options_for(batch_size, None, False, False, False, replication)
    failed = 0
    for ufs_path in _index_paths(path) if index else [path]:
        try:
            run_job_command("LOAD", ufs_path, "", "submit", options, output_format, False,
                            None, not run_async, conf, define)
        except typer.Exit as stop:
            if stop.exit_code != EXIT_JOB_FAILED or not index:
                raise
            failed += 1  # as 2.x does, go on with the other paths and count failures
    if failed:
        fail(f"{failed} of the jobs failed", EXIT_JOB_FAILED)


def _transfer(job_type: str, src: str, dst: str, batch_size: int | None, overwrite: bool,
              run_async: bool, output_format: str, conf: ConfOption,
              define: DefineOption) -> None:
    options = options_for(batch_size, None, False, False, False, 1, overwrite)
    run_job_command(job_type, src, dst, "submit", options, output_format, False, None,
                    not run_async, conf, define)


def distributed_cp(
    src: Annotated[str, typer.Argument(help="Source UFS path.")],
    dst: Annotated[str, typer.Argument(help="Destination UFS path.")],
    active_jobs: ActiveJobs = None,
    batch_size: BatchSize = None,
    overwrite: Annotated[str, typer.Option(
        "--overwrite", metavar="true|false",
        help="Replace files that exist at the destination (2.x's default: true).")
    ] = "true",
    run_async: Async = False,
    output_format: Format = "TEXT",
    conf: ConfOption = None, define: DefineOption = None,
) -> None:
    """Copy a path to another, spread over the workers (Alluxio 2.x's name for job copy)."""
    choice = overwrite.strip().lower()
    if choice not in ("true", "false"):
        fail(f"--overwrite must be true or false, got {overwrite!r}", EXIT_USAGE)
    _transfer("COPY", src, dst, batch_size, choice == "true", run_async, output_format,
              conf, define)


def distributed_mv(
    src: Annotated[str, typer.Argument(help="Source UFS path.")],
    dst: Annotated[str, typer.Argument(help="Destination UFS path.")],
    active_jobs: ActiveJobs = None,
    batch_size: BatchSize = None,
    run_async: Async = False,
    output_format: Format = "TEXT",
    conf: ConfOption = None, define: DefineOption = None,
) -> None:
    """Move a path to another: copy each file, then remove its source (2.x: job move).

    As in 2.x, a file that exists at the destination is not replaced: it is skipped and
    its source stays.
    """
    _transfer("MOVE", src, dst, batch_size, False, run_async, output_format, conf, define)


def add_alluxio2_commands(fs_app: typer.Typer, fsadmin_report_app: typer.Typer,
                          report_jobservice: Callable[..., None]) -> None:
    """Register the 2.x names on ``fs`` and ``fsadmin report``."""
    fs_app.command("distributedLoad", epilog=examples(
        "alluxiojob fs distributedLoad /data/imagenet",
        "alluxiojob fs distributedLoad --replication 2 --batch-size 500 s3://bucket/train",
        "alluxiojob fs distributedLoad --index --async paths.txt",
    ))(distributed_load)
    fs_app.command("distributedCp", epilog=examples(
        "alluxiojob fs distributedCp /data/raw /archive/raw",
        "alluxiojob fs distributedCp --overwrite false --batch-size 100 /data/a /data/b",
    ))(distributed_cp)
    fs_app.command("distributedMv", epilog=examples(
        "alluxiojob fs distributedMv /data/incoming /data/ready",
    ))(distributed_mv)
    fsadmin_report_app.command("jobservice", epilog=examples(
        "alluxiojob fsadmin report jobservice",
    ))(report_jobservice)
