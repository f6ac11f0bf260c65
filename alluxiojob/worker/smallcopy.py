"""A LOAD's small files, the pool's side: through memory, sources read ahead.

A small file (at most ``SMALL`` bytes) is read into memory once, its checksum
(``checksum.py``) computed from those bytes and the same bytes written to ``tmp/``, then
renamed into ``data/``: the fewest system calls and the least Python per file, and no
read back (``copier.py`` reads back what the kernel copied for it). Every other piece of
work goes to ``copier.copy_one``.

This module must stay cheap to import: it is loaded by every pool process.
"""

from __future__ import annotations

import os
from collections import deque

from alluxiojob.core.reasons import Reason
from alluxiojob.ufs.local import reason_for
from alluxiojob.worker.checksum import bytes_checksum
from alluxiojob.worker.copier import (
    CACHE_FILE_MODE,
    CopyOutcome,
    Failed,
    LocalCopy,
    Opened,
    cache_side,
    copy_one,
    discard_tmp,
    ensure_parent,
    open_source,
)

SMALL = 1024 * 1024  # a whole file up to this size is copied through memory (``_copy_small``)
AHEAD = 32  # small files whose sources a pool process reads ahead (``copy_shard``)


def copy_shard(jobs: list[LocalCopy]) -> list[CopyOutcome]:
    """Run in a pool process: copy every job in order; never raises for a single file.

    The sources of the next ``AHEAD`` small files are opened ahead and their reads started
    (``posix_fadvise(WILLNEED)``: the kernel reads them in the background), so that the
    disk has many reads in flight while this process writes one file at a time; each
    read then finds its bytes in the page cache. Opened early is no weaker: each file is
    checked against what its open saw (``_copy_small``)."""
    outcomes: list[CopyOutcome] = []
    ahead: deque[Opened] = deque()
    try:
        for i, job in enumerate(jobs):
            for k in range(i + len(ahead), min(i + AHEAD, len(jobs))):
                ahead.append(_prefetch(jobs[k]))
            outcomes.append(copy_piece(job, ahead.popleft()))
    finally:
        for opened in ahead:  # only when interrupted: every opened source is used
            if not isinstance(opened, CopyOutcome):
                os.close(opened[0])
    return outcomes


def _prefetch(job: LocalCopy) -> Opened:
    """Open ``job``'s source and start reading it, when it is a small file of a LOAD."""
    opened = open_source(job)
    if not isinstance(opened, CopyOutcome) and opened[1].st_size and \
            _small_load(job, opened[1]):
        try:
            os.posix_fadvise(opened[0], 0, opened[1].st_size, os.POSIX_FADV_WILLNEED)
        except OSError:
            pass  # only a hint
    return opened


def copy_piece(job: LocalCopy, opened: Opened) -> CopyOutcome:
    """One piece of a LOAD's work, its source opened already (closed here)."""
    if not isinstance(opened, CopyOutcome) and _small_load(job, opened[1]):
        return _copy_small(job, opened[0], opened[1])
    return copy_one(job, opened)


def _small_load(job: LocalCopy, source: os.stat_result) -> bool:
    """A small whole file into the cache (a LOAD's, not a COPY's or MOVE's)."""
    return bool(job.final) and not (job.transfer or job.durable or job.locked) \
        and source.st_size <= SMALL


def _copy_small(job: LocalCopy, fd_in: int, before: os.stat_result) -> CopyOutcome:
    """A small whole file into the cache: one read of the source (one byte more than its
    size, so that a file that grew is seen), the checksum of those bytes, one write, then
    the rename. Closes ``fd_in``; never raises for the file's own failure."""
    fd_out = -1
    try:
        size = before.st_size
        try:
            data = os.read(fd_in, size + 1)
            after = os.fstat(fd_in)
        except OSError as exc:
            raise Failed(reason_for(exc), f"{job.src}: {exc.strerror}") from None
        if (len(data) != size or after.st_size != size
                or after.st_mtime_ns != before.st_mtime_ns):
            raise Failed(Reason.UFS_CHANGED, f"{job.src} changed while it was read; it will "
                         "be retried")
        try:
            ensure_parent(job.tmp)
            fd_out = os.open(job.tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC,
                             CACHE_FILE_MODE)
            written = 0
            while written < size:
                written += os.write(fd_out, data[written:] if written else data)
            done, fd_out = fd_out, -1
            os.close(done)
        except OSError as exc:
            raise cache_side(exc, job.tmp, job.src) from None
        try:
            ensure_parent(job.final)
            os.rename(job.tmp, job.final)
        except OSError as exc:
            raise cache_side(exc, job.final, job.src) from None
        return CopyOutcome(True, size, size, before.st_mtime_ns,
                           checksum=bytes_checksum(data))
    except Failed as exc:
        discard_tmp(job)
        return CopyOutcome(False, reason=exc.reason, message=str(exc))
    finally:
        os.close(fd_in)
        if fd_out >= 0:
            os.close(fd_out)
