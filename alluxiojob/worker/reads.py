"""Reading the cache over HTTP: ``GET /api/v1/files?path=URI`` with Range support.

A miss is a 404 naming the path, or, with ``read_through=true``, is served from the
UFS directly (without caching it: loading is the job service's business). When the
cluster has a token (``alluxio.job.cluster.token``), every read must present it.
"""

from __future__ import annotations

import os
import re
import stat

import trio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from alluxiojob.protocol.codec import TOKEN_HEADER
from alluxiojob.ufs import resolve_path
from alluxiojob.ufs.base import UfsError
from alluxiojob.ufs.local import to_local_path
from alluxiojob.worker.cache import Cache

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
_CHUNK = 1 << 20


def _parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(start, end inclusive) of a single-range header; None if absent. Raises ValueError."""
    if not header:
        return None
    match = _RANGE.match(header.strip())
    if match is None:
        raise ValueError(f"unsupported Range header {header!r}")
    first, last = match.group(1), match.group(2)
    if first == "" and last == "":
        raise ValueError(f"unsupported Range header {header!r}")
    if first == "":
        length = int(last)
        start, end = max(0, size - length), size - 1
    else:
        start = int(first)
        end = min(int(last), size - 1) if last else size - 1
    if start >= size or start > end:
        raise ValueError(f"range {header!r} is outside a {size}-byte file")
    return start, end


async def _stream(path: str, start: int, end: int):  # type: ignore[no-untyped-def]
    f = await trio.open_file(path, "rb")
    try:
        await f.seek(start)
        remaining = end - start + 1
        while remaining > 0:
            chunk = await f.read(min(_CHUNK, remaining))
            if not chunk:
                break
            remaining -= len(chunk)
            yield chunk
    finally:
        await f.aclose()



def _forbidden(request: Request, token: str) -> Response | None:
    """With a cluster token set, reads need it too: a worker serves whole file systems."""
    if token and request.headers.get(TOKEN_HEADER, "") != token:
        return JSONResponse(
            {"error": "PERMISSION_DENIED",
             "message": f"reading needs the cluster token in the {TOKEN_HEADER} header"},
            status_code=403,
        )
    return None


def _checked_uri(request: Request, token: str) -> str | Response:
    """The request's ``path`` as a URI, or the error response to send instead."""
    if (denied := _forbidden(request, token)) is not None:
        return denied
    try:
        return resolve_path(request.query_params.get("path", ""), "")
    except UfsError as exc:
        return JSONResponse({"error": exc.reason, "message": str(exc)}, status_code=400)


def file_routes(cache: Cache, token: str = "") -> list[Route]:
    async def read_file(request: Request) -> Response:
        checked = _checked_uri(request, token)
        if isinstance(checked, Response):
            return checked
        uri = checked
        try:
            d = cache.dir_for(uri)
            data_path = d.data_path(uri)
        except UfsError as exc:
            return JSONResponse({"error": exc.reason, "message": str(exc)}, status_code=400)
        entry = await trio.to_thread.run_sync(d.lookup, uri, limiter=cache.limiter)
        source = data_path
        cached = entry is not None
        if not cached:
            if request.query_params.get("read_through", "false").lower() != "true":
                return JSONResponse(
                    {"error": "NOT_CACHED", "message": f"{uri} is not cached on this worker"},
                    status_code=404,
                )
            source = to_local_path(uri)
        try:
            info = await trio.to_thread.run_sync(os.stat, source)
        except OSError as exc:
            return JSONResponse(
                {"error": "NOT_FOUND", "message": f"{uri}: {exc.strerror}"}, status_code=404
            )
        if not stat.S_ISREG(info.st_mode):
            return JSONResponse(
                {"error": "INVALID_PATH", "message": f"{uri} is not a regular file"},
                status_code=400,
            )
        size = info.st_size
        try:
            span = _parse_range(request.headers.get("range"), size)
        except ValueError as exc:
            return JSONResponse({"error": "BAD_RANGE", "message": str(exc)}, status_code=416,
                                headers={"Content-Range": f"bytes */{size}"})
        if cached:
            d.touch(uri)
        headers = {"Accept-Ranges": "bytes", "X-Alluxio-Cached": "true" if cached else "false"}
        if span is None:
            start, end, status = 0, size - 1, 200
        else:
            start, end, status = span[0], span[1], 206
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        headers["Content-Length"] = str(max(0, end - start + 1))
        if size == 0:
            return Response(b"", status_code=200, headers=headers)
        return StreamingResponse(_stream(source, start, end), status_code=status,
                                 headers=headers, media_type="application/octet-stream")

    async def locate(request: Request) -> Response:
        """What this worker holds under a path: files and bytes."""
        checked = _checked_uri(request, token)
        if isinstance(checked, Response):
            return checked
        uri = checked
        try:
            limit = int(request.query_params.get("list", "0"))
        except ValueError:
            return JSONResponse({"error": "INVALID_ARGUMENT", "message": "list must be a number"},
                                status_code=400)
        prefix = uri.rstrip("/")

        def scan() -> tuple[int, int, list[dict[str, object]]]:
            """Blocking: a cache may hold millions of files; not on the event loop."""
            files = total = 0
            listed: list[dict[str, object]] = []
            for d in cache.dirs:
                with d.lock:
                    entries = list(d.lru.items())
                for key, (length, _job) in entries:
                    if key == prefix or key.startswith(prefix + "/"):
                        files += 1
                        total += length
                        if len(listed) < limit:
                            listed.append({"path": key, "bytes": length})
            return files, total, listed

        files, total, listed = await trio.to_thread.run_sync(scan)
        answer: dict[str, object] = {"path": uri, "files": files, "bytes": total}
        if limit:
            answer["list"] = listed
        return JSONResponse(answer)

    return [Route("/api/v1/files", read_file), Route("/api/v1/location", locate)]
