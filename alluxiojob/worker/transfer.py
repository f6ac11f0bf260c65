"""COPY and MOVE between any two UFSes (s3→local, local→s3, s3→s3): runs in pool processes.

Local→local keeps its own path (``copier.transfer_shard``: copy_file_range beside the
target, then rename). Every other pair streams the source through the destination's
atomic ``write``: a local file is written beside its target, fsynced and renamed; an
object is one PUT, or a multipart upload completed at the end, so it appears only when
complete. Threads keep many requests in flight, as for loading.

MOVE deletes a source only once the destination is a different object holding exactly
the bytes just read: the write counted them, the destination's length was checked after
it, and the source still has the version that was read (so a source rewritten meanwhile
is kept). The bytes of an object whose ETag is its content MD5 (a single-part upload)
are checked against it as they stream: a mismatch fails the file before the destination
appears. A destination found already in place from an interrupted MOVE is compared byte
for byte before its source goes. At any point of an interruption, every file is in
the source, the destination, or both.

A MOVE run again after it finished (its answer was lost: the worker was killed, or the
task was sent again) finds its source gone. ``moved_before`` then counts the file as
moved if the destination holds it as listed: a regular file or object of the listed
length and, when the listed ETag is a content MD5, of that MD5 (the destination's own
ETag when it is one, else its bytes read). A local source has no checksum: its length
is what can be checked. Neither there: the file stays ``UFS_NOT_FOUND``.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from alluxiojob.core.reasons import Reason
from alluxiojob.ufs import ufs_for
from alluxiojob.ufs.base import UfsError, UfsStat, UnderFileSystem
from alluxiojob.ufs.local import LocalUfs, to_local_path
from alluxiojob.ufs.objects import ObjectStoreUfs
from alluxiojob.ufs.settings import UfsSettings
from alluxiojob.ufs.tmpnames import TmpOwner
from alluxiojob.ufs.uploads import UploadJournal
from alluxiojob.worker.checksum import checked_against_etag, md5_of_etag
from alluxiojob.worker.copier import CopyOutcome
from alluxiojob.worker.fetch import thread_pool


@dataclass(frozen=True)
class ObjectTransfer:
    """A COPY or MOVE of one file where either side is an object store."""

    src: str  # URI
    dst: str  # URI


def _open(ufs: UnderFileSystem, uri: str) -> tuple[UfsStat, Iterator[bytes]]:
    if isinstance(ufs, ObjectStoreUfs):
        return ufs.open(uri)
    info = ufs.stat(uri)
    return info, ufs.read(uri, 0, info.length)


def _exists(ufs: UnderFileSystem, uri: str) -> bool:
    """The destination file or object itself (keys under it are no conflict)."""
    if not isinstance(ufs, ObjectStoreUfs):
        return ufs.exists(uri)
    try:
        ufs.stat(uri)
        return True
    except UfsError as exc:
        if exc.reason is Reason.UFS_NOT_FOUND:
            return False
        raise


def streams_equal(a: Iterable[bytes], b: Iterable[bytes]) -> bool:
    """Whether two streams carry the same bytes, however each cuts them into chunks.

    Holds at most one chunk of each side (views, no copies)."""
    a, b = iter(a), iter(b)
    left = right = memoryview(b"")
    while True:
        if not left:
            left = memoryview(next((chunk for chunk in a if chunk), b""))
        if not right:
            right = memoryview(next((chunk for chunk in b if chunk), b""))
        if not left or not right:  # one side ended: equal only if both did
            return not left and not right
        n = min(len(left), len(right))
        if left[:n] != right[:n]:
            return False
        left, right = left[n:], right[n:]


def _same_content(src_ufs: UnderFileSystem, src: str, dst_ufs: UnderFileSystem,
                  dst: str) -> bool:
    """Byte for byte, streamed in bounded chunks."""
    try:
        a_info, a = _open(src_ufs, src)
        b_info, b = _open(dst_ufs, dst)
        return a_info.length == b_info.length and streams_equal(a, b)
    except UfsError:
        return False


def transfer_one(job: ObjectTransfer, move: bool, overwrite: bool,
                 settings: UfsSettings, tmp_owner: TmpOwner | None = None,
                 uploads: UploadJournal | None = None) -> CopyOutcome:
    src_ufs, dst_ufs = ufs_for(job.src, settings), ufs_for(job.dst, settings)
    try:
        if isinstance(dst_ufs, LocalUfs) and os.path.isdir(to_local_path(job.dst)):
            return CopyOutcome(False, reason=Reason.INVALID_PATH, message=(
                f"cannot write {job.dst}: a directory of that name is in the way (a local "
                "tree cannot hold a file and a directory of the same name, as an object "
                "store can)"))
        if not overwrite and _exists(dst_ufs, job.dst):
            if move and _same_content(src_ufs, job.src, dst_ufs, job.dst):
                # An earlier MOVE wrote it but did not get to remove the source.
                length = dst_ufs.stat(job.dst).length
                src_ufs.delete(job.src)
                return CopyOutcome(True, length)
            return CopyOutcome(False, reason=Reason.EXISTS, message=f"{job.dst} exists; use "
                               "--overwrite")
        info, chunks = _open(src_ufs, job.src)
        chunks = checked_against_etag(chunks, info.version, job.src)
        if isinstance(dst_ufs, LocalUfs):
            written = dst_ufs.write(job.dst, chunks, info.length, overwrite=True,
                                    tmp_owner=tmp_owner)
        elif isinstance(dst_ufs, ObjectStoreUfs):
            written = dst_ufs.write(job.dst, chunks, info.length, overwrite=True,
                                    uploads=uploads)
        else:
            written = dst_ufs.write(job.dst, chunks, info.length, overwrite=True)
        if written.length != info.length:
            return CopyOutcome(False, reason=Reason.IO_ERROR, message=f"{job.dst} holds "
                               f"{written.length} bytes, the source {info.length}")
        if move:
            now = src_ufs.stat(job.src)
            if (now.length, now.version or now.mtime_ns) != (info.length,
                                                             info.version or info.mtime_ns):
                return CopyOutcome(False, reason=Reason.UFS_CHANGED, message=f"{job.src} changed "
                                   "while it was moved; it is kept and will be retried")
            src_ufs.delete(job.src)
        return CopyOutcome(True, info.length, info.length, info.mtime_ns,
                           version=info.version)
    except UfsError as exc:
        return CopyOutcome(False, reason=exc.reason, message=str(exc))


def moved_before(src: str, dst: str, length: int, etag: str,
                 settings: UfsSettings) -> CopyOutcome | None:
    """Blocking. A done outcome if ``src`` is gone and ``dst`` holds a verified copy of
    it as listed (``length``, and ``etag`` when it is a content MD5); else None."""
    src_ufs, dst_ufs = ufs_for(src, settings), ufs_for(dst, settings)
    try:
        if _exists(src_ufs, src):
            return None
        if isinstance(dst_ufs, LocalUfs):
            try:
                if not stat.S_ISREG(os.lstat(to_local_path(dst)).st_mode):
                    return None  # a symlink or a directory is no copy
            except OSError:
                return None
        info = dst_ufs.stat(dst)
        if info.length != length:
            return None
        expected = md5_of_etag(etag)
        if expected is not None:
            there = md5_of_etag(info.version)
            if there is None:  # a local file or a multipart object: read its bytes
                _, chunks = _open(dst_ufs, dst)
                for _ in checked_against_etag(chunks, etag, dst):
                    pass
            elif there != expected:
                return None
    except UfsError:
        return None
    return CopyOutcome(True, length, length, version=etag)


def transfer_objects_shard(jobs: list[ObjectTransfer], move: bool, overwrite: bool,
                           settings: UfsSettings,
                           tmp_owner: TmpOwner | None = None,
                           uploads: UploadJournal | None = None) -> list[CopyOutcome]:
    """Run in a pool process: every job, many at a time; never raises for one file.
    ``tmp_owner``: the worker run whose temp files a local destination gets; ``uploads``:
    the journal of its multipart uploads to an object store."""
    pool = thread_pool(settings.requests_per_process)
    return list(pool.map(
        lambda job: transfer_one(job, move, overwrite, settings, tmp_owner, uploads), jobs))
