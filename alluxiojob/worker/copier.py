"""The data path that runs inside the worker's process pool: plain blocking code.

A shard is a list of ``CopyJob``s: either whole small files, or one byte range of a
large file. Every write goes to ``tmp/`` first. A whole file is renamed into ``data/``
here, once complete; the ranges of a large file are written in place at their offsets
in one preallocated tmp file, and the parent renames it when every range is done. So a
file in ``data/`` is always complete, and a crash leaves only ``tmp/`` debris, which the
worker removes at startup.

This module must stay cheap to import: it is loaded by every pool process.
"""

from __future__ import annotations

import errno
import filecmp
import os
import time
from dataclasses import dataclass, replace

from alluxiojob.ufs.local import reason_for

_CHUNK = 8 * 1024 * 1024
_made_dirs: set[str] = set()


@dataclass(frozen=True)
class CopyJob:
    src: str  # local path of the UFS file
    tmp: str  # tmp path to write
    final: str  # data/ path; "" for a range of a large file (the parent renames)
    offset: int = 0
    length: int = -1  # -1: the whole file
    expect_length: int = -1  # listing's view; -1 skips the check
    expect_mtime_ns: int = -1


@dataclass(frozen=True)
class CopyOutcome:
    ok: bool
    bytes: int = 0
    length: int = 0  # the source's length when read
    mtime_ns: int = 0  # the source's mtime when read
    reason: str = ""
    message: str = ""
    version: str = ""  # an object's ETag when read


def ensure_parent(path: str) -> None:
    parent = os.path.dirname(path)
    if parent not in _made_dirs:
        os.makedirs(parent, exist_ok=True)
        if len(_made_dirs) > 100_000:
            _made_dirs.clear()
        _made_dirs.add(parent)


def _copy_range(fd_in: int, fd_out: int, offset: int, length: int, rate: int) -> int:
    """Copy ``length`` bytes at ``offset`` (same offset in both files); returns bytes copied."""
    copied = 0
    started = time.monotonic()
    while copied < length:
        want = min(_CHUNK if rate else length - copied, length - copied)
        if rate:
            want = min(want, max(64 * 1024, rate // 4))
        try:
            n = os.copy_file_range(fd_in, fd_out, want, offset + copied, offset + copied)
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                raise
            data = os.pread(fd_in, want, offset + copied)
            n = os.pwrite(fd_out, data, offset + copied) if data else 0
        if n == 0:
            break  # the source shrank under us; the caller's length check catches it
        copied += n
        if rate:
            ahead = copied / rate - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)
    return copied


def copy_one(job: CopyJob, rate: int = 0) -> CopyOutcome:
    try:
        fd_in = os.open(job.src, os.O_RDONLY)
    except OSError as exc:
        return CopyOutcome(False, reason=reason_for(exc), message=f"{job.src}: {exc.strerror}")
    fd_out = -1
    try:
        before = os.fstat(fd_in)
        if job.final:
            length = before.st_size
            ensure_parent(job.tmp)
            fd_out = os.open(job.tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        else:
            length = job.length
            fd_out = os.open(job.tmp, os.O_WRONLY)
        copied = _copy_range(fd_in, fd_out, job.offset, length, rate)
        after = os.fstat(fd_in)
        os.close(fd_out)
        fd_out = -1
        if (
            copied != length
            or after.st_size != before.st_size
            or after.st_mtime_ns != before.st_mtime_ns
        ):
            raise _Changed(f"{job.src} changed while it was read; it will be retried")
        if job.final:
            ensure_parent(job.final)
            os.rename(job.tmp, job.final)
        return CopyOutcome(True, copied, before.st_size, before.st_mtime_ns)
    except _Changed as exc:
        _discard(job)
        return CopyOutcome(False, reason="UFS_CHANGED", message=str(exc))
    except OSError as exc:
        _discard(job)
        where = job.tmp if exc.errno in (errno.ENOSPC, errno.EDQUOT) else job.src
        return CopyOutcome(False, reason=reason_for(exc), message=f"{where}: {exc.strerror}")
    finally:
        os.close(fd_in)
        if fd_out >= 0:
            os.close(fd_out)


class _Changed(Exception):
    pass


def _discard(job: CopyJob) -> None:
    if job.final:  # a range's tmp file is shared; the parent discards it
        try:
            os.unlink(job.tmp)
        except OSError:
            pass


def copy_shard(jobs: list[CopyJob], rate: int = 0) -> list[CopyOutcome]:
    """Run in a pool process: copy every job in order; never raises for a single file."""
    return [copy_one(job, rate) for job in jobs]


def transfer_shard(jobs: list[CopyJob], move: bool, overwrite: bool) -> list[CopyOutcome]:
    """COPY/MOVE between UFS locations: write beside the target, rename, then (MOVE) unlink.

    An existing target is kept, and reported as skipped, unless ``overwrite``.
    """
    outcomes: list[CopyOutcome] = []
    for job in jobs:
        if os.path.isdir(job.final) and not os.path.isdir(job.src):
            # A file copied onto a directory goes inside it, as with cp.
            final = os.path.join(job.final, os.path.basename(job.src))
            job = replace(job, final=final,
                          tmp=os.path.join(job.final, os.path.basename(job.tmp)))
        if not overwrite and os.path.lexists(job.final):
            if move and _same_content(job.src, job.final):
                # An earlier MOVE copied it but did not get to remove the source.
                outcomes.append(_remove_source(job, CopyOutcome(
                    True, os.path.getsize(job.final))))
            else:
                outcomes.append(CopyOutcome(False, reason="EXISTS",
                                            message=f"{job.final} exists; use --overwrite"))
            continue
        outcome = copy_one(job)
        outcomes.append(_remove_source(job, outcome) if outcome.ok and move else outcome)
    return outcomes


def _remove_source(job: CopyJob, outcome: CopyOutcome) -> CopyOutcome:
    try:
        os.unlink(job.src)
    except OSError as exc:
        return CopyOutcome(False, reason=reason_for(exc),
                           message=f"copied, but cannot remove {job.src}: {exc.strerror}")
    return outcome


def _same_content(a: str, b: str) -> bool:
    try:
        return filecmp.cmp(a, b, shallow=False)
    except OSError:
        return False


def preallocate(path: str, length: int) -> None:
    """Create the tmp file of a large file, sized, so that ranges can be written in place."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        if length:
            os.posix_fallocate(fd, 0, length)
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
            os.close(fd)
            fd = -1
            os.unlink(path)
            raise
        os.ftruncate(fd, length)
    finally:
        if fd >= 0:
            os.close(fd)
