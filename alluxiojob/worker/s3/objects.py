"""GetObject and HeadObject on the owner: a hit from ``data/``, a miss from the UFS.

A hit is opened once, and that descriptor serves the whole response: its ETag and
Last-Modified are the cached version's (the UFS ETag of an object; for a local file a
stable value from its mtime and size), and a concurrent re-load or eviction cannot mix
two versions into one body. It makes no UFS request at all.

A miss (unless ``only.read.cache.data`` makes it ``NoSuchKey``) is read through from
the UFS, pinned to the version its stat saw. With the CACHE read type the file is also
loaded into the cache in the background, through the worker's own LOAD path (the same
reservation, atomic commit and index entry as a job's), once per file at a time and at
most ``MAX_BACKGROUND_LOADS`` at once: past that a miss is only streamed.
"""

from __future__ import annotations

import email.utils
import functools
import itertools
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field

import structlog
import trio

from alluxiojob.core.job import JobType
from alluxiojob.core.reasons import Reason
from alluxiojob.core.rows import FileEntry, FileStatus
from alluxiojob.protocol.codec import TaskBatch, TaskOptions
from alluxiojob.security.paths import PathAllowlist
from alluxiojob.ufs import UfsError, UfsStat, parse_uri, ufs_for
from alluxiojob.ufs.settings import UfsSettings
from alluxiojob.worker.cache import Cache
from alluxiojob.worker.executor import TaskExecutor
from alluxiojob.worker.index import IndexEntry
from alluxiojob.worker.reads import UnsatisfiableRange, _open_read_through, _stream_ufs, parse_range
from alluxiojob.worker.s3.errors import S3Error

log = structlog.get_logger("alluxiojob.worker.s3")

READ_THROUGH_JOB = "s3-read-through"
INLINE_BODY = 256 * 1024  # a hit this small is read in one go
TOUCH_INTERVAL = 1.0
MAX_BACKGROUND_LOADS = 8
_CHUNK = 1 << 20


def etag_of(version: str, mtime_ns: int, length: int) -> str:
    """A quoted ETag: the UFS's for objects, mtime and size for local files."""
    value = version.strip('"') if version else f"{mtime_ns:x}-{length:x}"
    return f'"{value}"'


@functools.lru_cache(maxsize=4096)  # hits of the same files: formatted once each
def http_date(mtime_ns: int) -> str:
    return email.utils.formatdate(mtime_ns / 1e9, usegmt=True)


@dataclass
class Body:
    """What a response streams; ``close`` runs whether or not streaming started."""

    chunks: AsyncIterator[bytes] | None
    close: Callable[[], None] = lambda: None
    aclose: Callable[[], Awaitable[None]] | None = None
    data: bytes | None = None  # the whole body at once, instead of chunks


@dataclass
class ObjectResponse:
    status: int
    headers: dict[str, str]
    body: Body = field(default_factory=lambda: Body(None))
    cached: bool = False
    length: int = 0


async def _fd_chunks(fd: int, start: int, end: int) -> AsyncIterator[bytes]:
    position, remaining = start, end - start + 1
    while remaining > 0:
        chunk = await trio.to_thread.run_sync(os.pread, fd, min(_CHUNK, remaining), position)
        if not chunk:
            raise OSError(f"the file ended {remaining} bytes early")
        position += len(chunk)
        remaining -= len(chunk)
        yield chunk


def _etag_list(header: str) -> list[str]:
    return [item.strip().removeprefix("W/") for item in header.split(",") if item.strip()]


def _parse_http_date(text: str) -> float | None:
    try:
        parsed = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    return parsed.timestamp()


def check_conditions(headers: Mapping[str, str], etag: str, mtime_ns: int,
                     resource: str) -> int | None:
    """304 or None; ``PreconditionFailed`` raised (RFC 9110's order of evaluation)."""
    seconds = mtime_ns // 1_000_000_000
    if_match = headers.get("if-match")
    if if_match is not None:
        tags = _etag_list(if_match)
        if "*" not in tags and etag not in tags:
            raise S3Error("PreconditionFailed", "At least one of the pre-conditions you "
                          "specified did not hold", resource, {"ETag": etag})
    elif (since := _parse_http_date(headers.get("if-unmodified-since", ""))) is not None:
        if seconds > since:
            raise S3Error("PreconditionFailed", "the object was modified since "
                          "If-Unmodified-Since", resource, {"ETag": etag})
    if_none = headers.get("if-none-match")
    if if_none is not None:
        tags = _etag_list(if_none)
        if "*" in tags or etag in tags:
            return 304
    elif (since := _parse_http_date(headers.get("if-modified-since", ""))) is not None:
        if seconds <= since:
            return 304
    return None


class ObjectReader:
    def __init__(self, cache: Cache, executor: TaskExecutor, allowlist: PathAllowlist,
                 ufs_settings: UfsSettings, *, only_cache: bool, cache_misses: bool) -> None:
        self.cache = cache
        self.executor = executor
        self.allowlist = allowlist
        self.ufs_settings = ufs_settings
        self.only_cache = only_cache
        self.cache_misses = cache_misses
        self._loading: set[str] = set()
        self._touched: set[str] = set()
        self._task_ids = itertools.count(1)
        self.nursery: trio.Nursery | None = None  # set by the server: background loads

    def _open_hit(self, uri: str, confine: Callable[[], None], literal: bool
                  ) -> tuple[IndexEntry, int, bytes | None] | None:
        """Blocking, in one thread hop: the caller's checks, then the indexed file opened
        (its entry and descriptor; a small one read whole, its descriptor closed), or
        None for a miss.

        ``literal``: the caller found ``uri`` confined as written (pure string logic);
        then ``confine`` (which follows symlinks in the UFS) runs only for a miss. A hit
        is the copy in our private ``data/``, admitted by the same checks when it was
        loaded; where a UFS symlink leads now changes nothing about its bytes."""
        if not literal:
            confine()
        d = self.cache.dir_for(uri)
        entry = d.lookup(uri)
        if entry is None:
            if literal:
                confine()  # a miss reads the UFS: where the path leads now
            return None
        try:
            fd, size = d.open_cached(uri)
        except (UfsError, OSError):
            return None  # evicted since the lookup: a miss
        if size != entry.length:
            os.close(fd)
            return None  # not the indexed file: never serve it as a hit
        if size > INLINE_BODY:
            return entry, fd, None
        try:
            data = os.pread(fd, size, 0)
        finally:
            os.close(fd)
        return (entry, -1, data) if len(data) == size else None

    async def read(self, uri: str, method: str, headers: Mapping[str, str],
                   resource: str, confine: Callable[[], None] = lambda: None,
                   literal: bool = False) -> ObjectResponse:
        """The response to GET or HEAD of ``uri`` on its owner, once ``confine`` (run
        off the event loop) has let it through (see ``_open_hit`` for ``literal``)."""
        hit = await trio.to_thread.run_sync(self._open_hit, uri, confine, literal)
        fd, inline = -1, None
        if hit is not None:
            entry, fd, inline = hit
            info = UfsStat(entry.length, entry.mtime_ns, entry.version)
            self._touched.add(uri)
        else:
            if self.only_cache:
                raise S3Error("NoSuchKey", "The specified key is not cached "
                              "(alluxio.worker.s3.only.read.cache.data.enabled)", resource)
            info, fd = await self._stat(uri, resource)
        try:
            answer = self._respond(fd, uri, info, method, headers, resource, inline)
        except BaseException:
            if fd >= 0:
                os.close(fd)
            raise
        answer.cached = hit is not None
        if hit is None and answer.status in (200, 206) and method == "GET":
            self._cache_in_background(uri, info)
        return answer

    async def flush_touches(self) -> None:
        """Hits count as uses for eviction (LRU) in batches, once a second, rather than
        one index write per GET."""
        while True:
            await trio.sleep(TOUCH_INTERVAL)
            if not self._touched:
                continue
            touched, self._touched = self._touched, set()
            by_dir: dict[int, list[str]] = {}
            for uri in touched:
                by_dir.setdefault(id(self.cache.dir_for(uri)), []).append(uri)
            for uris in by_dir.values():
                d = self.cache.dir_for(uris[0])
                await trio.to_thread.run_sync(d.touch, uris, limiter=self.cache.limiter)

    async def _stat(self, uri: str, resource: str) -> tuple[UfsStat, int]:
        """A miss as the UFS has it now; a local file comes opened (its descriptor then
        serves the response), an object with -1."""
        def stat() -> tuple[UfsStat, int]:
            parsed = parse_uri(uri)  # once, for the scheme and the local path
            if parsed.local:
                fd, size = _open_read_through(parsed.local_path, self.allowlist, uri)
                try:
                    return UfsStat(size, os.fstat(fd).st_mtime_ns), fd
                except BaseException:
                    os.close(fd)
                    raise
            return ufs_for(parsed, self.ufs_settings).stat(uri), -1

        try:
            return await trio.to_thread.run_sync(stat)
        except UfsError as exc:
            if exc.reason is Reason.PERMISSION_DENIED:
                raise S3Error("AccessDenied", str(exc), resource) from None
            raise S3Error("NoSuchKey", "The specified key does not exist.", resource) from None
        except OSError:
            raise S3Error("NoSuchKey", "The specified key does not exist.", resource) from None

    def _respond(self, fd: int, uri: str, info: UfsStat, method: str,
                 headers: Mapping[str, str], resource: str,
                 inline: bytes | None = None) -> ObjectResponse:
        size = info.length
        etag = etag_of(info.version, info.mtime_ns, size)
        base = {"ETag": etag, "Last-Modified": http_date(info.mtime_ns),
                "Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"}
        not_modified = check_conditions(headers, etag, info.mtime_ns, resource)
        if not_modified is not None:
            if fd >= 0:
                os.close(fd)
            return ObjectResponse(not_modified, base)
        span = None
        if size > 0:
            try:
                span = parse_range(headers.get("range"), size)
            except UnsatisfiableRange:
                raise S3Error("InvalidRange", "The requested range is not satisfiable",
                              resource, {"Content-Range": f"bytes */{size}"}) from None
            except ValueError:
                span = None  # malformed: ignored, the whole object (RFC 9110)
        start, end = span if span is not None else (0, size - 1)
        status = 206 if span is not None else 200
        if span is not None:
            base["Content-Range"] = f"bytes {start}-{end}/{size}"
        length = max(0, end - start + 1)
        base["Content-Length"] = str(length)
        if method == "HEAD" or length == 0:
            if fd >= 0:
                os.close(fd)
            return ObjectResponse(status, base, length=0)
        if inline is not None:
            return ObjectResponse(status, base, Body(None, data=inline[start:end + 1]),
                                  length=length)
        if fd >= 0:
            held = fd
            return ObjectResponse(status, base, Body(_fd_chunks(held, start, end),
                                                     lambda: os.close(held)), length=length)
        ufs = ufs_for(uri, self.ufs_settings)
        return ObjectResponse(status, base, Body(_stream_ufs(ufs, uri, start, end,
                                                             info.version)), length=length)

    def _cache_in_background(self, uri: str, info: UfsStat) -> None:
        if (not self.cache_misses or self.nursery is None or uri in self._loading
                or len(self._loading) >= MAX_BACKGROUND_LOADS):
            return
        self._loading.add(uri)
        self.nursery.start_soon(self._load, uri, info)

    async def _load(self, uri: str, info: UfsStat) -> None:
        """One file through the worker's LOAD path, as a job's task would load it."""
        batch = TaskBatch(-next(self._task_ids), READ_THROUGH_JOB, JobType.LOAD,
                          (FileEntry(uri, info.length, info.mtime_ns, version=info.version),),
                          TaskOptions(skip_if_exists=True))
        try:
            result = await self.executor.run(batch)
            for item in result.results:
                if item.status is FileStatus.FAILED:
                    log.info("a read-through was not cached", path=uri, reason=item.reason,
                             detail=item.message)
        except Exception as exc:  # caching is a bonus: the read itself was served
            log.warning("caching a read-through failed", path=uri, error=repr(exc))
        finally:
            self._loading.discard(uri)
