"""``alluxiojob fs ...``: where a path is cached, and reading it through a worker."""

from __future__ import annotations

import sys
from typing import Annotated

import httpx
import typer

from alluxiojob.cli.common import (
    EXIT_NOT_FOUND,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    ConfOption,
    DefineOption,
    fail,
    get_config,
)
from alluxiojob.config import Keys, format_size
from alluxiojob.coordinator.workers import read_static_workers
from alluxiojob.core.ring import HashRing
from alluxiojob.ufs import resolve_path
from alluxiojob.ufs.base import UfsError

fs_app = typer.Typer(help="Inspect and read the cache.", no_args_is_help=True)

PathArg = Annotated[str, typer.Option("--path", help="UFS path.")]


def _workers(conf: ConfOption, define: DefineOption) -> tuple[list[str], str, int]:
    config = get_config(conf, define)
    try:
        uri_root = config[Keys.UFS_ROOT]
        workers = read_static_workers(__import__("pathlib").Path(config[Keys.STATIC_CONFIG_FILE]))
    except ValueError as exc:
        fail(str(exc), EXIT_USAGE)
    return workers, uri_root, config[Keys.WORKER_WEB_PORT]


def _web_address(worker: str, web_port_default: int) -> str:
    host = worker.rsplit(":", 1)[0]
    return f"http://{host}:{web_port_default}"


@fs_app.command("location")
def location(path: PathArg, conf: ConfOption = None, define: DefineOption = None,
             web_port: Annotated[int | None, typer.Option(
                 "--web-port", help="Workers' web port, if not alluxio.worker.web.port.")] = None,
             ) -> None:
    """Which workers hold a path, and how much of it."""
    workers, root, default_port = _workers(conf, define)
    try:
        uri = resolve_path(path, root)
    except UfsError as exc:
        fail(str(exc), EXIT_USAGE)
    ring = HashRing(workers)
    owner = ring.owner(uri) if len(ring) else "-"
    typer.echo(f"Path: {uri}\nRing owner: {owner}")
    for worker in workers:
        base = _web_address(worker, web_port or default_port)
        try:
            answer = httpx.get(f"{base}/api/v1/location", params={"path": uri}, timeout=10)
            data = answer.json()
            typer.echo(f"Worker: {worker}\tFiles: {data['files']}\t"
                       f"Bytes: {format_size(data['bytes'])}")
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            typer.echo(f"Worker: {worker}\tunreachable: {exc}")


@fs_app.command("cat")
def cat(path: PathArg, conf: ConfOption = None, define: DefineOption = None,
        read_through: Annotated[bool, typer.Option(
            "--read-through", help="Read from the UFS on a cache miss.")] = False,
        web_port: Annotated[int | None, typer.Option("--web-port")] = None,
        ) -> None:
    """Print a file, read from the worker that owns it."""
    workers, root, default_port = _workers(conf, define)
    try:
        uri = resolve_path(path, root)
    except UfsError as exc:
        fail(str(exc), EXIT_USAGE)
    ring = HashRing(workers)
    if not len(ring):
        fail("no workers configured", EXIT_UNAVAILABLE)
    base = _web_address(ring.owner(uri), web_port or default_port)
    params = {"path": uri, "read_through": str(read_through).lower()}
    try:
        with httpx.stream("GET", f"{base}/api/v1/files", params=params, timeout=30) as answer:
            if answer.status_code == 404:
                answer.read()
                fail(answer.json().get("message", "not found"), EXIT_NOT_FOUND)
            if answer.status_code >= 400:
                answer.read()
                fail(answer.text, EXIT_USAGE)
            for chunk in answer.iter_bytes():
                sys.stdout.buffer.write(chunk)
    except httpx.HTTPError as exc:
        fail(f"cannot reach worker at {base}: {exc}", EXIT_UNAVAILABLE)
