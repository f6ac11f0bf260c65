"""``alluxiojob fs ...``: where a path is cached, and reading it through a worker.

The coordinator tells which workers exist, their web addresses and the ring owners of a
path; the data itself is read straight from the worker.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from alluxiojob.cli.coercion import Typer
from alluxiojob.cli.common import (
    EXIT_ERROR,
    EXIT_NOT_FOUND,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    ConfOption,
    DefineOption,
    coordinator,
    examples,
    fail,
)

fs_app = Typer(
    help="Inspect and read the cache; Alluxio 2.x's distributedLoad, distributedCp, "
    "distributedMv.", no_args_is_help=True,
    epilog=examples("alluxiojob fs location --path /data/imagenet",
                    "alluxiojob fs distributedLoad /data/imagenet"))

PathArg = Annotated[str, typer.Option("--path", help="UFS path.")]


@fs_app.command("location", epilog=examples(
    "alluxiojob fs location --path /data/imagenet",
    "alluxiojob fs location --path /data/imagenet/train/n01440764/img_0001.JPEG",
))
def location(path: PathArg, conf: ConfOption = None, define: DefineOption = None) -> None:
    """Which workers hold a path (a file or a directory), and how much of it.

    Files that a --metadata-only LOAD recorded, without data, are counted apart."""
    import httpx

    from alluxiojob.config import format_size

    with coordinator(conf, define) as client:
        answer = client.workers(path)
        headers = client.security.token.authorization()
        verify = client.security.tls.client_context() or True
    owners = answer.get("owners", [])
    typer.echo(f"Path: {answer['path']}")
    typer.echo(f"Ring owners: {', '.join(owners[:3]) or '-'}")
    for worker in answer["workers"]:
        if not worker["web"]:
            typer.echo(f"Worker: {worker['worker']}\tnot connected")
            continue
        try:
            reply = httpx.get(f"{worker['web']}/api/v1/location", headers=headers,
                              params={"path": answer["path"]}, timeout=10, verify=verify)
            data = reply.json()
            if reply.status_code >= 400:
                typer.echo(f"Worker: {worker['worker']}\trefused: {data.get('message')}")
                continue
            line = (f"Worker: {worker['worker']}\tFiles: {data['files']}\t"
                    f"Bytes: {format_size(data['bytes'])}")
            if data.get("metadata_files"):
                line += f"\tMetadata only: {data['metadata_files']} files"
            typer.echo(line)
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            typer.echo(f"Worker: {worker['worker']}\tunreachable: {exc}")


@fs_app.command("cat", epilog=examples(
    "alluxiojob fs cat --path /data/imagenet/labels.txt",
    "alluxiojob fs cat --path /data/imagenet/labels.txt --read-through | head",
))
def cat(path: PathArg, conf: ConfOption = None, define: DefineOption = None,
        read_through: Annotated[bool, typer.Option(
            "--read-through", help="Read from the UFS on a cache miss.")] = False,
        ) -> None:
    """Write a file to stdout, read from the first worker on the ring that serves it."""
    import httpx

    with coordinator(conf, define) as client:
        answer = client.workers(path)
        headers = client.security.token.authorization()
        verify = client.security.tls.client_context() or True
    web = {w["worker"]: w["web"] for w in answer["workers"] if w["web"]}
    owners = [o for o in answer.get("owners", []) if o in web]
    if not owners:
        fail("no connected worker to read from", EXIT_UNAVAILABLE)
    last_miss = ""
    # A file loaded with replicas may sit on any of its first owners: try them in order.
    for index, owner in enumerate(owners):
        through = read_through and index == 0
        params = {"path": answer["path"], "read_through": str(through).lower()}
        try:
            with httpx.stream("GET", f"{web[owner]}/api/v1/files", params=params,
                              headers=headers, timeout=30, verify=verify) as response:
                if response.status_code in (404, 409):  # 409: its copy was corrupt
                    response.read()
                    last_miss = str(response.json().get("message", "not cached"))
                    continue
                if response.status_code >= 400:
                    response.read()
                    try:
                        message = str(response.json().get("message", response.text))
                    except ValueError:
                        message = response.text
                    fail(f"worker {owner} refused the read: {message}", EXIT_USAGE)
                for chunk in response.iter_bytes():
                    sys.stdout.buffer.write(chunk)
                sys.stdout.buffer.flush()
                return
        except httpx.HTTPError as exc:
            last_miss = f"cannot reach worker {owner}: {exc}"
    fail(f"{answer['path']} is not cached on any worker ({last_miss}); "
         "load it first, or use --read-through", EXIT_NOT_FOUND)


@fs_app.command("check", epilog=examples(
    "alluxiojob fs check --path /data/imagenet",
    "alluxiojob fs check --path s3://bucket/train --reload",
    "alluxiojob fs check --path /data/imagenet --no-repair",
))
def check(path: PathArg, conf: ConfOption = None, define: DefineOption = None,
          repair: Annotated[bool, typer.Option(
              "--repair/--no-repair",
              help="Evict the corrupt copies (the default), or only report them.")] = True,
          reload: Annotated[bool, typer.Option(
              "--reload", help="Then load the path again (--skip-if-exists), so that "
              "what was evicted is cached anew.")] = False,
          ) -> None:
    """Reread every cached file under a path, on every worker, against its checksum.

    Reports files whose bytes no longer match what was loaded (and evicts them), and
    files cached before checksums existed (unverified). Exit status 1 if any file was
    corrupt, 5 if a worker could not be checked."""
    import httpx

    from alluxiojob.config import format_size

    with coordinator(conf, define) as client:
        answer = client.workers(path)
        headers = client.security.token.authorization()
        verify = client.security.tls.client_context() or True
    typer.echo(f"Path: {answer['path']}")
    corrupt = evicted = unchecked = 0
    for worker in answer["workers"]:
        name = worker["worker"]
        if not worker["web"]:
            typer.echo(f"Worker: {name}\tnot connected")
            unchecked += 1
            continue
        try:
            reply = httpx.post(f"{worker['web']}/api/v1/check", headers=headers,
                               json={"path": answer["path"], "repair": repair},
                               timeout=None, verify=verify)
            data = reply.json()
            if reply.status_code >= 400:
                typer.echo(f"Worker: {name}\trefused: {data.get('message')}")
                unchecked += 1
                continue
            typer.echo(f"Worker: {name}\tFiles: {data['files']}\t"
                       f"Bytes: {format_size(data['bytes'])}\tCorrupt: {data['corrupt']}\t"
                       f"Evicted: {data['evicted']}\tUnverified: {data['unverified']}")
            for problem in data["problems"]:
                typer.echo(f"  corrupt: {problem['path']}: {problem['problem']}")
            corrupt += int(data["corrupt"])
            evicted += int(data["evicted"])
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            typer.echo(f"Worker: {name}\tunreachable: {exc}")
            unchecked += 1
    if reload and evicted:
        with coordinator(conf, define) as client:
            job = client.submit("LOAD", answer["path"], "", {"skip_if_exists": True})
        typer.echo(f"Reloading {evicted} evicted files: LOAD job {job['id']}")
    elif evicted:
        typer.echo(f"{evicted} corrupt files were evicted; load them again with: alluxiojob "
                   f"job load --path {answer['path']} --skip-if-exists")
    if unchecked:
        raise typer.Exit(EXIT_UNAVAILABLE)
    if corrupt:
        raise typer.Exit(EXIT_ERROR)
