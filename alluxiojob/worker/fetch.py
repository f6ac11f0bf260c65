"""Loading objects into the cache: runs inside the worker's pool processes.

An object store is latency-bound, so each pool process keeps many requests in flight: a
shard's jobs run on a thread pool of ``UfsSettings.requests_per_process`` threads (the
store client releases the GIL while it waits). A job is a whole small object, written to
``tmp/`` and renamed into ``data/`` here, or one range of a large object, written in
place at its offset in the preallocated tmp file that the parent renames once every
range is done. Ranges are pinned to the ETag the parent read with HEAD (``If-Match``),
so a change mid-read is ``UFS_CHANGED``, never a mixed file. Bytes are streamed in
bounded chunks: memory is bounded by the chunks in flight, not by object sizes.

A whole object's checksum is computed as its bytes are written, and, when its ETag is
the MD5 of its content (a single-part upload), its MD5 too: a mismatch fails the file
(``IO_ERROR``, retried) instead of caching bytes the store never held. The ranges of a
large object are checked by the parent's read-back, once all are written.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from alluxiojob.core.reasons import Reason
from alluxiojob.ufs import ufs_for
from alluxiojob.ufs.base import UfsError
from alluxiojob.ufs.local import reason_for
from alluxiojob.ufs.objects import ObjectStoreUfs
from alluxiojob.ufs.settings import UfsSettings
from alluxiojob.worker.checksum import Checksum, Md5Check
from alluxiojob.worker.copier import CACHE_FILE_MODE, CopyOutcome, ensure_parent

_pool: ThreadPoolExecutor | None = None
_pool_size = 0
_pool_lock = threading.Lock()


def thread_pool(size: int) -> ThreadPoolExecutor:
    """This process's request threads, made once (and again only if the size changes)."""
    global _pool, _pool_size
    with _pool_lock:
        if _pool is None or _pool_size != size:
            if _pool is not None:
                _pool.shutdown(wait=False)
            _pool = ThreadPoolExecutor(size, thread_name_prefix="ufs")
            _pool_size = size
        return _pool


@dataclass(frozen=True)
class ObjectFetch:
    """An object (or one byte range of it) fetched into the cache, as ``LocalCopy`` does
    for a local file."""

    uri: str  # the object
    tmp: str  # tmp path to write
    final: str  # data/ path; "" for a range of a large object (the parent renames)
    offset: int = 0
    length: int = -1  # -1: the whole object
    version: str = ""  # ranges: the ETag they must match


def _object_ufs(uri: str, settings: UfsSettings) -> ObjectStoreUfs:
    ufs = ufs_for(uri, settings)
    assert isinstance(ufs, ObjectStoreUfs)
    return ufs


def fetch_one(job: ObjectFetch, settings: UfsSettings) -> CopyOutcome:
    ufs = _object_ufs(job.uri, settings)
    try:
        if job.final:
            ensure_parent(job.tmp)
            info, chunks = ufs.open(job.uri)
            written = 0
            running, md5 = Checksum(), Md5Check(info.version)
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
            with open(os.open(job.tmp, flags, CACHE_FILE_MODE), "wb") as f:
                for chunk in chunks:
                    f.write(chunk)
                    running.update(chunk)
                    md5.update(chunk)
                    written += len(chunk)
            if written != info.length:
                raise UfsError(Reason.UFS_CHANGED, f"{job.uri} gave {written} bytes, not "
                               f"{info.length}; it will be retried")
            mismatch = md5.mismatch(job.uri)
            if mismatch is not None:
                raise UfsError(Reason.IO_ERROR, mismatch)
            ensure_parent(job.final)
            os.rename(job.tmp, job.final)
            return CopyOutcome(True, written, info.length, info.mtime_ns, version=info.version,
                               checksum=running.hexdigest())
        fd = os.open(job.tmp, os.O_WRONLY)
        try:
            position = job.offset
            for chunk in ufs.read(job.uri, job.offset, job.length, job.version):
                os.pwrite(fd, chunk, position)
                position += len(chunk)
        finally:
            os.close(fd)
        return CopyOutcome(True, position - job.offset, version=job.version)
    except UfsError as exc:
        _discard(job)
        return CopyOutcome(False, reason=exc.reason, message=str(exc))
    except OSError as exc:
        _discard(job)
        return CopyOutcome(False, reason=reason_for(exc),  # only the cache side is local
                           message=f"cache file {job.tmp}: {exc.strerror} (caching {job.uri})")


def _discard(job: ObjectFetch) -> None:
    if job.final:
        try:
            os.unlink(job.tmp)
        except OSError:
            pass


def fetch_shard(jobs: list[ObjectFetch], settings: UfsSettings) -> list[CopyOutcome]:
    """Run in a pool process: fetch every job, many at a time; never raises for one file.
    (A job's bandwidth is paced by the parent, between shards.)"""
    pool = thread_pool(settings.requests_per_process)
    return list(pool.map(lambda job: fetch_one(job, settings), jobs))
