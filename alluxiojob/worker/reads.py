"""Reading the cache over HTTP: ``GET /api/v1/files?path=URI`` with Range support, and
``GET /api/v1/location?path=URI`` (what is cached under a path, listed in pages).

A miss is a 404 naming the path, or, with ``read_through=true``, is served from the
UFS directly (without caching it: loading is the job service's business), if the path
lies inside ``alluxio.job.path.allowlist``. Who may read at all is the HttpGuard's
decision (the cluster token, or loopback peers only). A cached file is opened without
following symlinks, and only from inside ``data/``.

A cached file is served only if it is what the index says: its length always; its
checksum too when it is at most ``checksum_max`` bytes (``alluxio.worker.read.checksum
.max.size``), since such a file is read whole into memory and served from there, so the
check costs no extra I/O. A larger file is checked by length only: a checksum would
mean reading it all before the first byte is sent (the scrub and ``--verify`` cover
it). A file that fails the check is evicted, and the read answered 409 ``CACHE_CORRUPT``
instead of wrong bytes.
"""

from __future__ import annotations

import heapq
import itertools
import os
import re
from collections.abc import Callable, Iterator
from functools import partial
from typing import TypeVar

import structlog
import trio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from alluxiojob.core.errors import http_status
from alluxiojob.security.paths import PathAllowlist
from alluxiojob.ufs import is_local, resolve_path, ufs_for
from alluxiojob.ufs.base import UfsError, UfsStat, UnderFileSystem
from alluxiojob.ufs.local import open_regular, to_local_path
from alluxiojob.ufs.settings import UfsSettings
from alluxiojob.worker.cache import Cache, CacheDir, IndexEntry
from alluxiojob.worker.checksum import fd_checksum
from alluxiojob.worker.layout import cache_name
from alluxiojob.worker.scrub import Busy, evict_unchanged

log = structlog.get_logger("alluxiojob.worker")

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
_CHUNK = 1 << 20
LOCATION_LIST_MAX = 1000  # entries of each list in one /api/v1/location answer
T = TypeVar("T")


def _key_order(key: str) -> bytes:
    """The index's order of keys: their bytes (a name that is not UTF-8 included)."""
    return key.encode("utf-8", "surrogateescape")


def _page(sources: list[Iterator[tuple[str, T]]], limit: int
          ) -> tuple[list[tuple[str, T]], bool]:
    """The first ``limit`` items of sorted ``sources`` merged in key order, and whether
    more remain; reads at most ``limit + 1`` items plus one per source."""
    merged = heapq.merge(*sources, key=lambda item: _key_order(item[0]))
    items = list(itertools.islice(merged, limit + 1))
    return items[:limit], len(items) > limit


class UnsatisfiableRange(ValueError):
    """A well-formed range that lies outside the file (416), unlike a malformed one."""


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(start, end inclusive) of a single-range header; None if absent. Raises ValueError
    (``UnsatisfiableRange`` when it is well formed but outside the file)."""
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
        raise UnsatisfiableRange(f"range {header!r} is outside a {size}-byte file")
    return start, end


async def _stream(open_file: Callable[[], tuple[int, int]], start: int, end: int):  # type: ignore[no-untyped-def]
    """Stream ``[start, end]`` of a file, opened (with every check) here, where the
    ``finally`` that closes it is sure to run."""
    fd, _size = await trio.to_thread.run_sync(open_file)
    try:
        position, remaining = start, end - start + 1
        while remaining > 0:
            chunk = await trio.to_thread.run_sync(os.pread, fd, min(_CHUNK, remaining),
                                                  position)
            if not chunk:
                break
            position += len(chunk)
            remaining -= len(chunk)
            yield chunk
    finally:
        os.close(fd)


def _open_read_through(path: str, allowlist: PathAllowlist, uri: str) -> tuple[int, int]:
    """Blocking: (fd, size) of a UFS file inside the allowlist."""
    allowlist.check(uri, "read-through path")
    fd, info = open_regular(path, name=uri)
    return fd, info.st_size


async def _stream_ufs(ufs: UnderFileSystem, uri: str, start: int, end: int,  # type: ignore[no-untyped-def]
                      version: str):
    """Object read-through: the store's blocking reader, one bounded chunk per thread call."""
    chunks = ufs.read(uri, start, end - start + 1, version)
    while True:
        chunk = await trio.to_thread.run_sync(next, chunks, None)
        if chunk is None:
            return
        yield bytes(chunk)  # a plain copy of the client's buffer for the HTTP layer


def _stat_object(ufs: UnderFileSystem, allowlist: PathAllowlist, uri: str) -> UfsStat:
    """Blocking: an object inside the allowlist, as it is now."""
    allowlist.check(uri, "read-through path")
    return ufs.stat(uri)


def _ufs_error(exc: UfsError) -> Response:
    """A failure reason as the answer: its status from the one table, ``http_status``."""
    return JSONResponse({"error": exc.reason, "message": str(exc)},
                        status_code=http_status(exc.reason))


def _error(exc: UfsError | OSError, uri: str) -> Response:
    if isinstance(exc, OSError):
        return JSONResponse({"error": "NOT_FOUND", "message": f"{uri}: {exc.strerror}"},
                            status_code=404)
    return _ufs_error(exc)


def _checked_uri(request: Request) -> str | Response:
    """The request's ``path`` as a URI, or the error response to send instead."""
    try:
        return resolve_path(request.query_params.get("path", ""), "")
    except UfsError as exc:
        return _ufs_error(exc)


def _read_whole(fd: int, size: int) -> tuple[bytes, str]:
    """Blocking: a small cached file's bytes and their checksum."""
    data = os.pread(fd, size, 0)
    digest, _ = fd_checksum(fd, size)  # from the page cache, just read
    return data, digest


def _not_busy(_path: str) -> bool:
    return False


def file_routes(cache: Cache, allowlist: PathAllowlist,
                settings: UfsSettings | None = None, *, checksum_max: int = 1 << 20,
                busy: Busy = _not_busy) -> list[Route]:
    async def read_file(request: Request) -> Response:
        checked = _checked_uri(request)
        if isinstance(checked, Response):
            return checked
        uri = checked
        try:
            name = cache_name(uri)  # parsed once here, carried below
        except UfsError as exc:
            return _ufs_error(exc)
        d = cache.dirs[cache.dir_index(name.key)]
        entry = await trio.to_thread.run_sync(d.index.lookup, name.key, limiter=cache.limiter)
        cached = entry is not None
        if not cached and request.query_params.get("read_through", "false").lower() != "true":
            return JSONResponse(
                {"error": "NOT_CACHED", "message": f"{uri} is not cached on this worker"},
                status_code=404,
            )
        if not cached and not is_local(uri):
            return await _read_object(request, uri)
        open_file: Callable[[], tuple[int, int]] = (
            partial(d.open_cached, uri, name.relpath) if cached
            else partial(_open_read_through, to_local_path(uri), allowlist, uri))
        body: bytes | None = None
        try:
            fd, size = await trio.to_thread.run_sync(open_file)
            try:
                if entry is not None:
                    body, problem = await _check_cached(d, fd, size, entry)
                    if problem is not None:
                        return await _refuse(d, uri, name.key, entry, problem)
            finally:
                os.close(fd)  # reopened, and checked again, by the response's stream
        except (UfsError, OSError) as exc:
            return _error(exc, uri)
        try:
            span = parse_range(request.headers.get("range"), size)
        except ValueError as exc:
            return JSONResponse({"error": "BAD_RANGE", "message": str(exc)}, status_code=416,
                                headers={"Content-Range": f"bytes */{size}"})
        if cached:
            await trio.to_thread.run_sync(d.index.touch, [name.key], limiter=cache.limiter)
        headers = {"Accept-Ranges": "bytes", "X-Alluxio-Cached": "true" if cached else "false"}
        if span is None:
            start, end, status = 0, size - 1, 200
        else:
            start, end, status = span[0], span[1], 206
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        headers["Content-Length"] = str(max(0, end - start + 1))
        if size == 0:
            return Response(b"", status_code=200, headers=headers)
        if body is not None:
            return Response(body[start:end + 1], status_code=status, headers=headers,
                            media_type="application/octet-stream")
        return StreamingResponse(_stream(open_file, start, end), status_code=status,
                                 headers=headers, media_type="application/octet-stream")

    async def _check_cached(d: CacheDir, fd: int, size: int,
                            entry: IndexEntry) -> tuple[bytes | None, str | None]:
        """(the whole file if it was read for its checksum, why it must not be served)."""
        if size != entry.length:
            return None, f"its cached copy holds {size} bytes, the index says {entry.length}"
        if not entry.checksum or size > checksum_max:
            return None, None
        data, digest = await trio.to_thread.run_sync(_read_whole, fd, size)
        if len(data) != size:
            return None, f"its cached copy gave {len(data)} bytes, the index says {size}"
        if digest != entry.checksum:
            return None, (f"its cached copy's checksum is {digest}, the index says "
                          f"{entry.checksum}")
        return data, None

    async def _refuse(d: CacheDir, uri: str, key: str, entry: IndexEntry,
                      problem: str) -> Response:
        """Never serve a corrupt copy: evict it (unless a load is replacing it now)."""
        evicted = await trio.to_thread.run_sync(evict_unchanged, d, [(key, entry)], busy,
                                                limiter=cache.limiter)
        log.warning("refused to serve a corrupt cached file", path=uri, problem=problem,
                    evicted=bool(evicted))
        then = ("it was evicted: load it again, or read it with --read-through" if evicted
                else "a load is replacing it: try again")
        return JSONResponse({"error": "CACHE_CORRUPT", "message": f"{uri}: {problem}; {then}"},
                            status_code=409)

    async def _read_object(request: Request, uri: str) -> Response:
        """Read-through of an object: HEAD it once, then stream the range pinned to its ETag."""
        ufs = ufs_for(uri, settings)
        try:
            info = await trio.to_thread.run_sync(_stat_object, ufs, allowlist, uri)
        except UfsError as exc:
            return _error(exc, uri)
        size = info.length
        try:
            span = parse_range(request.headers.get("range"), size)
        except ValueError as exc:
            return JSONResponse({"error": "BAD_RANGE", "message": str(exc)}, status_code=416,
                                headers={"Content-Range": f"bytes */{size}"})
        headers = {"Accept-Ranges": "bytes", "X-Alluxio-Cached": "false"}
        start, end, status = (0, size - 1, 200) if span is None else (span[0], span[1], 206)
        if span is not None:
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        headers["Content-Length"] = str(max(0, end - start + 1))
        if size == 0:
            return Response(b"", status_code=200, headers=headers)
        return StreamingResponse(_stream_ufs(ufs, uri, start, end, info.version),
                                 status_code=status, headers=headers,
                                 media_type="application/octet-stream")

    async def locate(request: Request) -> Response:
        """What this worker holds under a path: cached files and bytes, and apart from
        them the files a ``--metadata-only`` LOAD recorded here.

        ``list=N`` also lists up to N of each (at most ``LOCATION_LIST_MAX``), in key
        order; when more remain, ``next`` is the key to pass as ``after`` for the next
        page. A page with ``after`` holds the lists only: the totals take a scan of
        everything under the path, done once, on the first page."""
        checked = _checked_uri(request)
        if isinstance(checked, Response):
            return checked
        uri = checked
        try:
            limit = int(request.query_params.get("list", "0"))
        except ValueError:
            limit = -1
        if limit < 0:
            return JSONResponse({"error": "INVALID_ARGUMENT",
                                 "message": "list must be a number from 0 to "
                                            f"{LOCATION_LIST_MAX}"}, status_code=400)
        limit = min(limit, LOCATION_LIST_MAX)
        after = request.query_params.get("after", "")
        prefix = uri.rstrip("/")

        def scan() -> dict[str, object]:
            """Blocking: range scans of the index, which may hold millions of files;
            memory is bounded by ``limit``, whatever the count."""
            answer: dict[str, object] = {"path": uri}
            if not after:
                files = total = recorded = recorded_bytes = 0
                for d in cache.dirs:
                    for _key, entry in d.under(prefix):
                        files += 1
                        total += entry.length
                    for _key, length in d.metadata_under(prefix):
                        recorded += 1
                        recorded_bytes += length
                answer.update(files=files, bytes=total, metadata_files=recorded,
                              metadata_bytes=recorded_bytes)
            if not limit:
                return answer
            listed, listed_more = _page([d.under(prefix, after) for d in cache.dirs], limit)
            metadata, metadata_more = _page(
                [d.metadata_under(prefix, after) for d in cache.dirs], limit)
            # Both lists go on from one key: the smaller of the two ends, if either has
            # more; what lies past it comes on the next page.
            ends = [page[-1][0] for page, more in ((listed, listed_more),
                                                   (metadata, metadata_more)) if more]
            following = min(ends, key=_key_order) if ends else None
            if following is not None:
                bound = _key_order(following)
                listed = [item for item in listed if _key_order(item[0]) <= bound]
                metadata = [item for item in metadata if _key_order(item[0]) <= bound]
                answer["next"] = following
            answer["list"] = [{"path": key, "bytes": entry.length} for key, entry in listed]
            answer["metadata_list"] = [{"path": key, "length": length}
                                       for key, length in metadata]
            return answer

        return JSONResponse(await trio.to_thread.run_sync(scan, limiter=cache.limiter))

    return [Route("/api/v1/files", read_file), Route("/api/v1/location", locate)]
