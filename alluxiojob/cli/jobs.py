"""``alluxiojob job ...``: submit, follow, stop, list and rerun jobs."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated, Any

import typer

from alluxiojob.cli.coercion import Typer
from alluxiojob.cli.common import (
    EXIT_JOB_FAILED,
    EXIT_USAGE,
    ConfOption,
    DefineOption,
    coordinator,
    examples,
    fail,
)
from alluxiojob.core.states import SETTLED_STATES

if TYPE_CHECKING:
    from alluxiojob.client import CoordinatorClient

job_app = Typer(help="Submit and follow jobs (load, free, copy, move).",
                      no_args_is_help=True, epilog=examples(
                          "alluxiojob job load --path /data/imagenet --wait",
                          "alluxiojob job list --job-state RUNNING"))

SETTLED = {state.value for state in SETTLED_STATES}

Path_ = Annotated[str | None, typer.Option("--path", help="UFS path of the job.")]
Submit = Annotated[bool, typer.Option("--submit", help="Submit the job (the default).")]
ShowProgress = Annotated[bool, typer.Option("--progress", help="Show the job's progress.")]
Stop = Annotated[bool, typer.Option("--stop", help="Stop the job.")]
Format = Annotated[str, typer.Option("--format", help="TEXT or JSON.")]
Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="More detail.")]
FileStatus = Annotated[str | None, typer.Option(
    "--file-status", help="With --progress: list FAILURE or SUCCESS files.")]
Wait = Annotated[bool, typer.Option(
    "--wait", help="Follow the job with a live progress bar; exit non-zero if it fails.")]
BatchSize = Annotated[int | None, typer.Option("--batch-size", help="Files per task.")]
Bandwidth = Annotated[str | None, typer.Option(
    "--bandwidth", help="Read limit per worker, e.g. 100MiB (per second).")]
Verify = Annotated[bool, typer.Option("--verify", help="Recheck every file after loading.")]
SkipIfExists = Annotated[bool, typer.Option(
    "--skip-if-exists", help="Skip files already cached with the same length and mtime.")]
PartialListing = Annotated[bool, typer.Option(
    "--partial-listing", help="Start loading before the listing completes (always on).")]
Replicas = Annotated[int, typer.Option("--replicas", help="Workers that cache each file.")]
IndexFile = Annotated[str | None, typer.Option(
    "--index-file", help="Load the files listed in this file (local or a UFS URI), one "
    "path or URI a line; or an S3 Inventory manifest.json.")]
TemplateOption = Annotated[str | None, typer.Option(
    "--template", help="Load the files a brace template names: "
    "'s3://b/shard-{000..999}.tar' (ranges multiply; {0..100..10} steps).")]
MetadataOnly = Annotated[bool, typer.Option(
    "--metadata-only", help="List and record the files (name, length, version) on their "
    "workers without copying data.")]


def _action(submit: bool, progress: bool, stop: bool) -> str:
    chosen = [name for name, flag in (("submit", submit), ("progress", progress),
                                      ("stop", stop)) if flag]
    if len(chosen) > 1:
        fail(f"choose one of --submit, --progress and --stop (got {', '.join(chosen)})",
             EXIT_USAGE)
    return chosen[0] if chosen else "submit"


def _emit(data: dict[str, Any], output_format: str, text: str) -> None:
    if output_format.upper() == "JSON":
        typer.echo(json.dumps(data, indent=2))
    elif output_format.upper() == "TEXT":
        typer.echo(text)
    else:
        fail(f"unknown --format {output_format!r}; expected TEXT or JSON", EXIT_USAGE)


FOLLOW_WAIT = 1.0  # seconds the coordinator may hold a progress request (waiting.py)
FOLLOW_PERIOD = 0.2  # seconds between requests the coordinator answers without waiting


def _reports(client: CoordinatorClient, job_type: str, path: str, dst: str,
             field: str) -> Iterator[dict[str, Any]]:
    """Progress reports until the job settles, the settled one last.

    Each request waits at the coordinator for the job's next state change, so the end is
    known within its tick; an answer that comes early with the state unchanged (an older
    coordinator, or one with many requests waiting) is paced to one per FOLLOW_PERIOD."""
    state = ""
    while True:
        asked = time.monotonic()
        report = client.progress(job_type, path, dst, field=field, wait=FOLLOW_WAIT)
        yield report
        if report["job"]["state"] in SETTLED:
            return
        if report["job"]["state"] == state:
            time.sleep(max(0.0, FOLLOW_PERIOD - (time.monotonic() - asked)))
        state = report["job"]["state"]


def _files_text(report: dict[str, Any]) -> str:
    files = report["files"]
    return (f"{files['done']}/{files.get('total', files['listed'])} files"
            + (f", {files['failed']} failed" if files["failed"] else ""))


def _follow(client: CoordinatorClient, job_type: str, path: str, dst: str,
            field: str = "path") -> dict[str, Any]:
    """Follow the job until it settles: a live progress bar on a terminal; otherwise a
    plain line on stderr per state change, without loading the bar's library."""
    if not sys.stderr.isatty():
        report: dict[str, Any] = {}
        for report in _reports(client, job_type, path, dst, field):
            typer.echo(f"{report['job']['state']} {_files_text(report)}", err=True)
        return report
    return _follow_bar(client, job_type, path, dst, field)


def _follow_bar(client: CoordinatorClient, job_type: str, path: str, dst: str,
                field: str) -> dict[str, Any]:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    console = Console(stderr=True)
    columns = [TextColumn("[bold]{task.fields[state]}"), BarColumn(), DownloadColumn(),
               TransferSpeedColumn(), TextColumn("{task.fields[files]}"),
               TimeElapsedColumn(), TimeRemainingColumn()]
    report: dict[str, Any] = {}
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("job", total=None, state="WAITING", files="")
        for report in _reports(client, job_type, path, dst, field):
            nbytes = report["bytes"]
            bytes_known = report["progress"]["listing_done"] or report["progress"].get(
                "bytes_total")
            bar.update(task, completed=nbytes["processed"] + nbytes["skipped"],
                       total=nbytes.get("total") if report["total_known"] and bytes_known
                       else None,
                       state=report["job"]["state"], files=_files_text(report))
    return report


def run_job_command(
    job_type: str,
    path: str | None,
    dst: str,
    action: str,
    options: dict[str, Any],
    output_format: str,
    verbose: bool,
    file_status: str | None,
    wait: bool,
    conf: ConfOption,
    define: DefineOption,
    field: str = "path",
) -> None:
    """``field``: what ``path`` is: a ``path``, an ``indexFile`` or a ``template``."""
    from alluxiojob.core.report import progress_text

    if not path:
        fail("missing --path" + (" (or --index-file, --template)" if job_type == "LOAD" else "")
             if job_type in ("LOAD", "FREE") else "missing --src", EXIT_USAGE)
    with coordinator(conf, define) as client:
        if action == "submit":
            answer = client.submit(job_type, path, dst, options, field)
            job = answer["job"]
            messages = {
                "CREATED": f"Submitted {job_type} job {job['id']} for {job['path']}",
                "ALREADY_RUNNING": f"Job {job['id']} for {job['path']} is already running "
                                   f"({job['state']})",
                "RESUMED": f"Resumed stopped job {job['id']} for {job['path']}",
            }
            _emit(answer, output_format, messages[answer["outcome"]]
                  + (f" -> {job['dst']}" if job.get("dst") else ""))
            if wait:
                report = _follow(client, job_type, job["path"], job.get("dst", ""), field)
                typer.echo(progress_text(report, verbose), err=False)
                if report["job"]["state"] != "SUCCEEDED":
                    raise typer.Exit(EXIT_JOB_FAILED)
        elif action == "progress":
            status = (file_status or "").upper()
            if status not in ("", "FAILURE", "SUCCESS"):
                fail(f"--file-status must be FAILURE or SUCCESS, got {file_status!r}",
                     EXIT_USAGE)
            if wait:
                _follow(client, job_type, path, dst, field)
            report = client.progress(job_type, path, dst, verbose=verbose, file_status=status,
                                     field=field)
            _emit(report, output_format, progress_text(report, verbose))
            if wait and report["job"]["state"] != "SUCCEEDED":
                raise typer.Exit(EXIT_JOB_FAILED)
        else:
            answer = client.stop(job_type, path, dst, field)
            _emit(answer, output_format, f"Stopped {job_type} job {answer['id']} for {path}")


def options_for(batch_size: int | None, bandwidth: str | None, verify: bool,
             skip_if_exists: bool, partial_listing: bool, replicas: int,
             overwrite: bool = False) -> dict[str, Any]:
    options: dict[str, Any] = {"verify": verify, "skip_if_exists": skip_if_exists,
                               "partial_listing": partial_listing, "replicas": replicas,
                               "overwrite": overwrite}
    if batch_size is not None:
        if batch_size <= 0:
            fail(f"--batch-size must be positive, got {batch_size}", EXIT_USAGE)
        options["batch_size"] = batch_size
    if bandwidth:
        from alluxiojob.config import parse_size

        try:
            options["bandwidth"] = parse_size(bandwidth)
        except ValueError as exc:
            fail(f"bad --bandwidth: {exc}", EXIT_USAGE)
    if replicas < 1:
        fail(f"--replicas must be at least 1, got {replicas}", EXIT_USAGE)
    return options


@job_app.command("load", epilog=examples(
    "alluxiojob job load --path /data/imagenet --wait",
    "alluxiojob job load --path s3://bucket/train --replicas 2 --bandwidth 200MiB --verify",
    "alluxiojob job load --path /data/imagenet --progress --file-status FAILURE",
    "alluxiojob job load --path /data/imagenet --metadata-only --wait",
    "alluxiojob job load --path /data/imagenet --stop",
    "alluxiojob job load --index-file s3://bucket/lists/train.txt --wait",
    "alluxiojob job load --index-file s3://inventory/bucket/daily/2026-01-01T01-00Z/"
    "manifest.json",
    "alluxiojob job load --template 's3://bucket/train/shard-{000000..099999}.tar' --progress",
))
def load(
    path: Path_ = None, index_file: IndexFile = None, template: TemplateOption = None,
    submit: Submit = False, progress: ShowProgress = False, stop: Stop = False,
    verify: Verify = False, batch_size: BatchSize = None, bandwidth: Bandwidth = None,
    skip_if_exists: SkipIfExists = False, partial_listing: PartialListing = False,
    replicas: Replicas = 1, metadata_only: MetadataOnly = False, output_format: Format = "TEXT",
    verbose: Verbose = False, file_status: FileStatus = None, wait: Wait = False,
    conf: ConfOption = None, define: DefineOption = None,
) -> None:
    """Load a UFS path into the workers' caches."""
    options = options_for(batch_size, bandwidth, verify, skip_if_exists, partial_listing,
                          replicas)
    if metadata_only:
        options["metadata_only"] = True
    given = [(flag, field, value) for flag, field, value in (
        ("--path", "path", path), ("--index-file", "indexFile", index_file),
        ("--template", "template", template)) if value]
    if len(given) > 1:
        fail(f"give one of --path, --index-file and --template, not "
             f"{' and '.join(flag for flag, _, _ in given)}", EXIT_USAGE)
    _, field, value = given[0] if given else ("", "path", None)
    run_job_command("LOAD", value, "", _action(submit, progress, stop), options,
                    output_format, verbose, file_status, wait, conf, define, field)


@job_app.command("free", epilog=examples(
    "alluxiojob job free --path /data/imagenet --wait",
    "alluxiojob job free --path /data/imagenet --progress --format JSON",
))
def free(
    path: Path_ = None, submit: Submit = False, progress: ShowProgress = False, stop: Stop = False,
    batch_size: BatchSize = None, output_format: Format = "TEXT", verbose: Verbose = False,
    file_status: FileStatus = None, wait: Wait = False,
    conf: ConfOption = None, define: DefineOption = None,
) -> None:
    """Evict a UFS path from every worker's cache."""
    run_job_command("FREE", path, "", _action(submit, progress, stop),
                     options_for(batch_size, None, False, False, False, 1),
                     output_format, verbose, file_status, wait, conf, define)


Src = Annotated[str | None, typer.Option("--src", help="Source UFS path.")]
Dst = Annotated[str | None, typer.Option("--dst", help="Destination UFS path.")]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace existing files.")]


def _transfer_command(job_type: str, doc: str, *example_lines: str) -> None:
    """Register ``job copy`` or ``job move``: the same options, one type each."""

    def command(
        src: Src = None, dst: Dst = None, submit: Submit = False, progress: ShowProgress = False,
        stop: Stop = False, batch_size: BatchSize = None, overwrite: Overwrite = False,
        output_format: Format = "TEXT", verbose: Verbose = False,
        file_status: FileStatus = None, wait: Wait = False,
        conf: ConfOption = None, define: DefineOption = None,
    ) -> None:
        if not dst:
            fail("missing --dst", EXIT_USAGE)
        run_job_command(job_type, src, dst, _action(submit, progress, stop),
                        options_for(batch_size, None, False, False, False, 1, overwrite),
                        output_format, verbose, file_status, wait, conf, define)

    command.__doc__ = doc
    job_app.command(job_type.lower(), epilog=examples(*example_lines))(command)


_transfer_command(
    "COPY", "Copy a UFS path to another UFS path, spread over the workers.",
    "alluxiojob job copy --src /data/raw --dst /archive/raw --wait",
    "alluxiojob job copy --src /data/raw --dst /archive/raw --progress",
)
_transfer_command(
    "MOVE", "Move a UFS path to another UFS path: copy each file, then remove its source.",
    "alluxiojob job move --src /data/incoming --dst /data/ready --wait",
    "alluxiojob job move --src /data/incoming --dst /data/ready --overwrite",
)


@job_app.command("list", epilog=examples(
    "alluxiojob job list",
    "alluxiojob job list --job-state FAILED --job-type LOAD --format JSON",
))
def list_jobs(
    job_state: Annotated[str | None, typer.Option("--job-state", help="Filter by state.")] = None,
    job_type: Annotated[str | None, typer.Option("--job-type", help="Filter by type.")] = None,
    coordinator_id: Annotated[str | None, typer.Option(
        "--coordinator", help="Only jobs owned by this coordinator (HA mode).")] = None,
    output_format: Format = "TEXT",
    conf: ConfOption = None, define: DefineOption = None,
) -> None:
    """List jobs within the retention window."""
    from alluxiojob.core.report import job_list_text

    with coordinator(conf, define) as client:
        jobs = client.list_jobs(job_state or "", job_type or "", coordinator_id or "")
    _emit({"jobs": jobs}, output_format, job_list_text(jobs))


@job_app.command("ls", epilog=examples("alluxiojob job ls"))
def ls(conf: ConfOption = None, define: DefineOption = None) -> None:
    """List jobs, one line each: id, type, state (the 2.x command)."""
    with coordinator(conf, define) as client:
        for job in client.list_jobs():
            typer.echo(f"{job['id']}\t{job['type']}\t{job['state']}")


@job_app.command("stat", epilog=examples(
    "alluxiojob job stat 0f9c3d52-6f4e-4d55-9a0e-2b1f1f6c8a11",
    "alluxiojob job stat -v 0f9c3d52-6f4e-4d55-9a0e-2b1f1f6c8a11",
))
def stat(
    job_id: Annotated[str, typer.Argument(help="Job id.")],
    verbose: Verbose = False,
    conf: ConfOption = None, define: DefineOption = None,
) -> None:
    """Details of one job; -v adds the workers that ran it."""
    from alluxiojob.core.report import job_stat_text

    with coordinator(conf, define) as client:
        job = client.get_job(job_id)
        report = client.job_progress(job_id) if verbose else None
    typer.echo(job_stat_text(job, report, verbose))


@job_app.command("rerun", epilog=examples(
    "alluxiojob job rerun --id 0f9c3d52-6f4e-4d55-9a0e-2b1f1f6c8a11",
    "alluxiojob job rerun --path /data/imagenet --type LOAD",
))
def rerun(
    path: Path_ = None,
    job_type: Annotated[str | None, typer.Option("--type", help="Job type, with --path.")] = None,
    job_id: Annotated[str | None, typer.Option("--id", help="Job id.")] = None,
    conf: ConfOption = None, define: DefineOption = None,
) -> None:
    """Put a stuck, failed or stopped job back in the queue (etcd mode only)."""
    if job_id:
        payload: dict[str, Any] = {"id": job_id}
    elif path and job_type:
        payload = {"path": path, "type": job_type}
    else:
        fail("give --id, or --path with --type", EXIT_USAGE)
    with coordinator(conf, define) as client:
        answer = client.rerun(payload)
    typer.echo(f"Re-queued job {answer['id']} ({answer['job']['type']} {answer['job']['path']})")
