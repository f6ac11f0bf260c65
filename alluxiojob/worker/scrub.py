"""Is a cached file still the file its index entry describes? Reads, verify passes and the
scrub all ask here.

What is checked when (``docs/integrity.md``):

* a read (``reads.py``) checks the length always, and the checksum of files up to
  ``alluxio.worker.read.checksum.max.size``, which it reads whole anyway;
* a verify pass (``job load --verify``) checks the checksum of every file it would skip;
* a scrub (``alluxiojob fs check``, or every ``alluxio.worker.cache.scrub.interval``)
  rereads every file under a path.

A file found corrupt is evicted (its data file and its index entry) unless its entry
changed in the meantime (a load replaced it). An entry without a checksum, written by an
older version, is *unverified*: checked by length only, never called corrupt for that.
Files that a load in flight is writing are left alone.

Blocking, except ``Scrubber``'s async methods.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import structlog
import trio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from alluxiojob.core.rows import FileEntry
from alluxiojob.core.text import printable
from alluxiojob.ufs import resolve_path
from alluxiojob.ufs.base import UfsError
from alluxiojob.worker.cache import Cache, CacheDir
from alluxiojob.worker.checksum import file_checksum
from alluxiojob.worker.index import IndexEntry

log = structlog.get_logger("alluxiojob.worker")

PROBLEMS_MAX = 1000  # corrupt files named in one report; all are counted
EVICT_BATCH = 1000
Busy = Callable[[str], bool]  # is a load in flight writing this data/ path?


def examine(path: str, entry: IndexEntry) -> str | None:
    """Why the cache file at ``path`` is not the file ``entry`` describes, or None."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return "its cache file is missing"
    except OSError as exc:
        return f"its cache file cannot be read: {exc.strerror}"
    if not stat.S_ISREG(info.st_mode):
        return "its cache file is not a regular file"
    if info.st_size != entry.length:
        return f"its cache file holds {info.st_size} bytes, the index says {entry.length}"
    if not entry.checksum:
        return None  # unverified: cached before checksums were recorded
    try:
        digest, _ = file_checksum(path)
    except OSError as exc:
        return f"its cache file cannot be read: {exc.strerror or exc}"
    if digest != entry.checksum:
        return f"its content checksum is {digest}, the index says {entry.checksum}"
    return None


def cached_as_listed(cache: Cache,
                     files: list[FileEntry]) -> list[tuple[FileEntry, IndexEntry]]:
    """The files fully cached with the listed length and version (``--skip-if-exists``)."""
    found: list[tuple[FileEntry, IndexEntry]] = []
    for f in files:
        d = cache.dir_for(f.path)
        entry = d.lookup(f.path)
        if entry is None or not entry.matches(f.length, f.mtime_ns, f.version):
            continue
        try:
            if os.stat(d.data_path(f.path)).st_size == f.length:
                found.append((f, entry))
        except OSError:
            continue
    return found


def content_intact(cache: Cache, found: list[tuple[FileEntry, IndexEntry]]) -> list[FileEntry]:
    """A verify pass: the files whose content still has its checksum. One cached by an
    older version (no checksum) is loaded again, to get one."""
    intact = []
    for f, entry in found:
        path = cache.dir_for(f.path).data_path(f.path)
        why = examine(path, entry) if entry.checksum else "no checksum"
        if why is None:
            intact.append(f)
        else:
            log.warning("cached file differs from what was loaded; loading it again",
                        path=printable(f.path), problem=why)
    return intact


def evict_unchanged(d: CacheDir, found: list[tuple[str, IndexEntry]], busy: Busy) -> int:
    """Evict files found corrupt, each only if its entry is still the one examined and no
    load is writing it now (a load may have replaced it since); returns how many went."""
    if not found:
        return 0
    with d.lock:
        keys = [key for key, _ in found]
        now = d.index.lookup_many(keys)
        gone = [key for (key, seen), current in zip(found, now, strict=True)
                if current is not None and replace(current, seq=0) == replace(seen, seq=0)
                and not busy(d.data_path(key))]
        return len(d.remove(gone))


@dataclass
class ScrubReport:
    path: str
    files: int = 0
    bytes: int = 0
    unverified: int = 0
    corrupt: int = 0
    evicted: int = 0
    busy: int = 0  # being written by a load in flight: not checked
    problems: list[dict[str, str]] = field(default_factory=list)

    def as_json(self) -> dict[str, object]:
        return {"path": self.path, "files": self.files, "bytes": self.bytes,
                "unverified": self.unverified, "corrupt": self.corrupt,
                "evicted": self.evicted, "busy": self.busy, "problems": self.problems}


def scrub(cache: Cache, prefix: str, repair: bool, busy: Busy) -> ScrubReport:
    """Reread every cached file at ``prefix`` or below it ("": the whole cache) against
    its entry; with ``repair``, evict the corrupt ones."""
    report = ScrubReport(prefix)
    for d in cache.dirs:
        pending: list[tuple[str, IndexEntry]] = []
        for key, entry in d.under(prefix):
            path = d.data_path(key)
            if busy(path):
                report.busy += 1
                continue
            report.files += 1
            report.bytes += entry.length
            if not entry.checksum:
                report.unverified += 1
            why = examine(path, entry)
            if why is None:
                continue
            report.corrupt += 1
            if len(report.problems) < PROBLEMS_MAX:
                report.problems.append({"path": printable(key), "problem": why})
            log.warning("cached file is corrupt", path=printable(key), problem=why,
                        evicted=repair)
            if repair:
                pending.append((key, entry))
                if len(pending) >= EVICT_BATCH:
                    report.evicted += evict_unchanged(d, pending, busy)
                    pending = []
        report.evicted += evict_unchanged(d, pending, busy)
    return report


class Scrubber:
    """Scrubs of one worker's cache, one at a time (each reads every byte it checks)."""

    def __init__(self, cache: Cache, busy: Busy) -> None:
        self.cache = cache
        self.busy = busy
        self.limiter = trio.CapacityLimiter(1)

    async def run(self, prefix: str, repair: bool) -> ScrubReport:
        return await trio.to_thread.run_sync(scrub, self.cache, prefix, repair, self.busy,
                                             limiter=self.limiter)

    async def every(self, interval: float) -> None:
        """``alluxio.worker.cache.scrub.interval``: scrub the whole cache, repairing."""
        while True:
            await trio.sleep(interval)
            report = await self.run("", repair=True)
            log.info("scheduled cache scrub done", files=report.files, bytes=report.bytes,
                     corrupt=report.corrupt, evicted=report.evicted,
                     unverified=report.unverified)

    def routes(self) -> list[Route]:
        """``POST /api/v1/check`` with ``{"path": P, "repair": true}``: a scrub on demand.

        JSON only (``Content-Type: application/json``): a browser cannot send that
        across origins without a preflight, which nothing here answers.
        """

        async def check(request: Request) -> Response:
            content_type = request.headers.get("content-type", "").split(";", 1)[0].strip()
            if content_type.lower() != "application/json":
                return JSONResponse({"error": "INVALID_ARGUMENT", "message":
                                     "send the request as Content-Type: application/json"},
                                    status_code=415)
            try:
                body = json.loads(await request.body())
                if not isinstance(body, dict) or not isinstance(body.get("path"), str) \
                        or not isinstance(body.get("repair", True), bool):
                    raise ValueError('expected {"path": string, "repair": bool}')
                uri = resolve_path(body["path"], "")
            except (ValueError, UfsError) as exc:
                return JSONResponse({"error": "INVALID_ARGUMENT", "message": str(exc)},
                                    status_code=400)
            report = await self.run(uri.rstrip("/"), bool(body.get("repair", True)))
            return JSONResponse(report.as_json())

        return [Route("/api/v1/check", check, methods=["POST"])]
