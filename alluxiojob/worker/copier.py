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
import os
import stat
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
    durable: bool = False  # fsync the copy before it is renamed into place (COPY/MOVE)


@dataclass(frozen=True)
class CopyOutcome:
    ok: bool
    bytes: int = 0
    length: int = 0  # the source's length when read
    mtime_ns: int = 0  # the source's mtime when read
    reason: str = ""
    message: str = ""
    version: str = ""  # an object's ETag when read
    written: tuple[int, int] = (0, 0)  # (st_dev, st_ino) of the file we wrote


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
        if job.durable:
            os.fsync(fd_out)
        out = os.fstat(fd_out)
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
        return CopyOutcome(True, copied, before.st_size, before.st_mtime_ns,
                           written=(out.st_dev, out.st_ino))
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
    """COPY/MOVE between UFS locations: write beside the target, fsync, rename, then
    (MOVE) unlink the source once ``safe_to_remove_source`` agrees.

    An existing target is kept, and reported as skipped, unless ``overwrite``. Killed at
    any point, a MOVE loses nothing: before the rename the source is untouched (a
    hidden tmp file may be left beside the target); after it, the target is a complete,
    fsynced copy, and a rerun finds it, compares it byte for byte and only then removes
    the source.
    """
    outcomes: list[CopyOutcome] = []
    for job in jobs:
        if os.path.isdir(job.final) and not os.path.isdir(job.src):
            # A file copied onto a directory goes inside it, as with cp.
            final = os.path.join(job.final, os.path.basename(job.src))
            job = replace(job, final=final,
                          tmp=os.path.join(job.final, os.path.basename(job.tmp)))
        outcomes.append(_transfer_one(replace(job, durable=True), move, overwrite))
    return outcomes


def _identity(info: os.stat_result) -> tuple[int, int]:
    return info.st_dev, info.st_ino


def _transfer_one(job: CopyJob, move: bool, overwrite: bool) -> CopyOutcome:
    try:
        source = os.stat(job.src)
    except OSError as exc:
        return CopyOutcome(False, reason=reason_for(exc), message=f"{job.src}: {exc.strerror}")
    if not stat.S_ISREG(source.st_mode):
        return CopyOutcome(False, reason="INVALID_PATH", message=f"{job.src} is not a file")
    try:
        target: os.stat_result | None = os.stat(job.final)
    except FileNotFoundError:
        target = None  # absent, or a dangling symlink
    except OSError as exc:
        return CopyOutcome(False, reason=reason_for(exc),
                           message=f"{job.final}: {exc.strerror}")
    if target is not None and _identity(target) == _identity(source):
        return CopyOutcome(False, reason="INVALID_PATH",
                           message=f"{job.final} is {job.src} itself under another name "
                                   "(a symlink or a hard link): nothing was copied or removed")
    if not overwrite and os.path.lexists(job.final):
        if not move:
            return CopyOutcome(False, reason="EXISTS",
                               message=f"{job.final} exists; use --overwrite")
        # An earlier MOVE may have copied it and stopped before removing the source.
        refusal = safe_to_remove_source(job.src, job.final, source, written=None)
        if refusal is not None:
            return CopyOutcome(False, reason="EXISTS",
                               message=f"{job.final} exists and {refusal}; use --overwrite")
        return _remove_source(job, CopyOutcome(True, source.st_size, source.st_size,
                                               source.st_mtime_ns))
    outcome = copy_one(job)
    if not outcome.ok:
        return outcome
    try:
        _fsync_dir(os.path.dirname(job.final))
    except OSError as exc:
        return CopyOutcome(False, reason=reason_for(exc),
                           message=f"cannot sync {os.path.dirname(job.final)}: {exc.strerror}")
    if not move:
        return outcome
    refusal = safe_to_remove_source(job.src, job.final, source, written=outcome.written)
    if refusal is not None:
        return CopyOutcome(False, reason="UFS_CHANGED",
                           message=f"copied to {job.final}, but kept {job.src}: {refusal}")
    return _remove_source(job, outcome)


def safe_to_remove_source(
    src: str, dst: str, source: os.stat_result, written: tuple[int, int] | None
) -> str | None:
    """Why a MOVE must keep ``src``, or None when ``dst`` verifiably holds its data.

    ``dst`` must be a regular file (not a symlink) and a different object than ``src``
    (``(st_dev, st_ino)``; two names for one inode are never "already moved"), and
    ``src`` must still be the file that was copied. Its content is verified: either
    ``dst`` is the file this process just wrote and fsynced (``written``), or, for a
    file found already there, it compares equal byte for byte.
    """
    try:
        now = os.stat(src)
        there = os.lstat(dst)
    except OSError as exc:
        return f"cannot check it: {exc.strerror}"
    if not stat.S_ISREG(there.st_mode):
        return f"{dst} is not a regular file"
    if _identity(there) == _identity(now):
        return f"{dst} and {src} are the same file"
    if (_identity(now), now.st_size, now.st_mtime_ns) != (
            _identity(source), source.st_size, source.st_mtime_ns):
        return f"{src} changed after it was copied"
    if written is not None:
        if _identity(there) != written:
            return f"{dst} was replaced after it was written"
        return None
    if there.st_size != now.st_size or not _same_bytes(src, dst):
        return "its content differs from the source"
    return None


def _remove_source(job: CopyJob, outcome: CopyOutcome) -> CopyOutcome:
    try:
        os.unlink(job.src)
    except OSError as exc:
        return CopyOutcome(False, reason=reason_for(exc),
                           message=f"copied, but cannot remove {job.src}: {exc.strerror}")
    return outcome


def _fsync_dir(path: str) -> None:
    """Make a rename in ``path`` durable before a MOVE removes the source."""
    fd = os.open(path or ".", os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _same_bytes(a: str, b: str) -> bool:
    try:
        with open(a, "rb") as fa, open(b, "rb") as fb:
            while True:
                left, right = fa.read(_CHUNK), fb.read(_CHUNK)
                if left != right:
                    return False
                if not left:
                    return True
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
