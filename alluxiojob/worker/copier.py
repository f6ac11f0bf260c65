"""The data path that runs inside the worker's process pool: plain blocking code.

A shard is a list of ``LocalCopy``s: either whole small files, or one byte range of a
large file. Every write goes to ``tmp/`` first. A whole file is renamed into ``data/``
here, once complete; the ranges of a large file are written in place at their offsets
in one preallocated tmp file, and the parent renames it when every range is done. So a
file in ``data/`` is always complete, and a crash leaves only ``tmp/`` debris, which the
worker removes at startup.

A LOAD's small file goes through memory (``smallcopy.py``). A larger whole file is
copied by the kernel (copy_file_range) and read back once written, for its checksum,
since its bytes never passed through this process. The ranges of a large file are read
back by the parent, once.

The cache is the service's alone: its files are created 0600 and its directories 0700,
whatever the umask. A COPY or MOVE keeps its source's permission bits, never wider (as
``cp -p`` does).

This module must stay cheap to import: it is loaded by every pool process.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass, replace

from alluxiojob.core.reasons import Reason
from alluxiojob.ufs.base import UfsError
from alluxiojob.ufs.local import fsync_dir, make_dirs, open_regular, reason_for
from alluxiojob.ufs.tmpnames import TmpOwner, hold_lock, retarget, sweep
from alluxiojob.worker.checksum import fd_checksum

_CHUNK = 8 * 1024 * 1024
_made_dirs: set[str] = set()
CACHE_FILE_MODE = 0o600
CACHE_DIR_MODE = 0o700


@dataclass(frozen=True, eq=False)
class LocalCopy:
    """A copy of a local file into a file of ours: the whole file (``final`` set: written
    to ``tmp``, then renamed to ``final``), or one byte range of it (``final`` empty:
    written in place into the preallocated ``tmp``, which the parent renames).

    Each is one piece of work, equal only to itself: the parent keys every piece's
    outcome by the piece (``load.py``), which must not hash eleven fields per file."""

    src: str  # local path of the UFS file
    tmp: str  # tmp path to write
    final: str  # data/ path; "" for a range of a large file (the parent renames)
    offset: int = 0
    length: int = -1  # -1: the whole file
    expect_length: int = -1  # listing's view; -1 skips the check
    expect_mtime_ns: int = -1
    durable: bool = False  # fsync the copy before it is renamed into place (COPY/MOVE)
    locked: bool = False  # hold a lock on tmp while it is written (COPY/MOVE: ``tmpnames``)
    transfer: bool = False  # COPY/MOVE: keep the source's mode; no cache checksum


@dataclass(frozen=True)
class CopyOutcome:
    ok: bool
    bytes: int = 0
    length: int = 0  # the source's length when read
    mtime_ns: int = 0  # the source's mtime when read
    reason: Reason | None = None  # why it failed (None when ok)
    message: str = ""
    version: str = ""  # an object's ETag when read
    written: tuple[int, int] = (0, 0)  # (st_dev, st_ino) of the file we wrote
    checksum: str = ""  # a whole file's content checksum (``checksum.py``)


def ensure_parent(path: str, mode: int = CACHE_DIR_MODE) -> None:
    """Make ``path``'s directory: private (0700) in the cache; ``0o777`` (the umask's
    choice) for a COPY/MOVE destination."""
    parent = os.path.dirname(path)
    if parent not in _made_dirs:
        make_dirs(parent, mode)
        if len(_made_dirs) > 100_000:
            _made_dirs.clear()
        _made_dirs.add(parent)


_WRITE_SIDE = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})


class Failed(Exception):
    """One file's failure, with the reason and a message that names the right path."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def cache_side(exc: OSError, path: str, src: str) -> Failed:
    """An error of the cache's file system: the message names the cache file."""
    return Failed(reason_for(exc), f"cache file {path}: {exc.strerror} (caching {src})")


def _copy_range(fd_in: int, fd_out: int, offset: int, length: int, job: LocalCopy) -> int:
    """Copy ``length`` bytes at ``offset`` (same offset in both files); returns bytes copied.

    An error names the side it came from: the source, or the cache file.
    """
    copied = 0
    while copied < length:
        position = offset + copied
        try:
            n = os.copy_file_range(fd_in, fd_out, length - copied, position, position)
        except OSError as exc:
            if exc.errno in _WRITE_SIDE:
                raise cache_side(exc, job.tmp, job.src) from None
            if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                raise Failed(reason_for(exc), f"copying {job.src} to the cache file "
                              f"{job.tmp}: {exc.strerror}") from None
            n = _copy_chunk(fd_in, fd_out, min(_CHUNK, length - copied), position, job)
        if n == 0:
            break  # the source shrank under us; the caller's length check catches it
        copied += n
    return copied


def _copy_chunk(fd_in: int, fd_out: int, size: int, position: int, job: LocalCopy) -> int:
    try:
        data = os.pread(fd_in, size, position)
    except OSError as exc:
        raise Failed(reason_for(exc), f"{job.src}: {exc.strerror}") from None
    try:
        return os.pwrite(fd_out, data, position) if data else 0
    except OSError as exc:
        raise cache_side(exc, job.tmp, job.src) from None


Opened = tuple[int, os.stat_result] | CopyOutcome  # a source opened, or why it could not be


def open_source(job: LocalCopy) -> Opened:
    try:
        return open_regular(job.src)
    except UfsError as exc:
        return CopyOutcome(False, reason=exc.reason, message=str(exc))
    except OSError as exc:
        return CopyOutcome(False, reason=reason_for(exc), message=f"{job.src}: {exc.strerror}")


def copy_one(job: LocalCopy, opened: Opened | None = None) -> CopyOutcome:
    """Copy one whole file (or one range of a large one) into the cache's tmp/, and
    rename a whole file into data/. Never raises for the file's own failure.
    ``opened``: the source, opened already (``copy_shard``); closed here."""
    if opened is None:
        opened = open_source(job)
    if isinstance(opened, CopyOutcome):
        return opened
    fd_in, before = opened
    fd_out = -1
    dir_mode = 0o777 if job.transfer else CACHE_DIR_MODE
    try:
        try:
            if job.final:
                ensure_parent(job.tmp, dir_mode)
                fd_out = os.open(job.tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC,
                                 CACHE_FILE_MODE)
                if job.transfer:  # the source's bits, never wider (an older tmp may be)
                    os.fchmod(fd_out, stat.S_IMODE(before.st_mode) & 0o777)
                if job.locked:
                    hold_lock(fd_out)
            else:
                fd_out = os.open(job.tmp, os.O_WRONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise cache_side(exc, job.tmp, job.src) from None
        length = before.st_size if job.final else job.length
        copied = _copy_range(fd_in, fd_out, job.offset, length, job)
        after = os.fstat(fd_in)
        checksum = ""
        if job.final and not job.transfer:
            try:
                checksum, _read = fd_checksum(fd_out, copied)
            except OSError as exc:
                raise cache_side(exc, job.tmp, job.src) from None
        try:
            if job.durable:
                os.fsync(fd_out)
            out = os.fstat(fd_out)
            written, fd_out = fd_out, -1
            os.close(written)
        except OSError as exc:
            raise cache_side(exc, job.tmp, job.src) from None
        if (
            copied != length
            or after.st_size != before.st_size
            or after.st_mtime_ns != before.st_mtime_ns
        ):
            raise Failed(Reason.UFS_CHANGED, f"{job.src} changed while it was read; it will be "
                         "retried")
        if job.final:
            try:
                ensure_parent(job.final, dir_mode)
                os.rename(job.tmp, job.final)
            except OSError as exc:
                raise cache_side(exc, job.final, job.src) from None
        return CopyOutcome(True, copied, before.st_size, before.st_mtime_ns,
                           written=(out.st_dev, out.st_ino), checksum=checksum)
    except Failed as exc:
        discard_tmp(job)
        return CopyOutcome(False, reason=exc.reason, message=str(exc))
    except OSError as exc:
        discard_tmp(job)
        return CopyOutcome(False, reason=reason_for(exc), message=f"{job.src}: {exc.strerror}")
    finally:
        os.close(fd_in)
        if fd_out >= 0:
            os.close(fd_out)


def discard_tmp(job: LocalCopy) -> None:
    if job.final:  # a range's tmp file is shared; the parent discards it
        try:
            os.unlink(job.tmp)
        except OSError:
            pass


def transfer_shard(jobs: list[LocalCopy], move: bool, overwrite: bool,
                   tmp_owner: TmpOwner | None = None) -> list[CopyOutcome]:
    """COPY/MOVE between UFS locations: write beside the target, fsync, rename, then
    (MOVE) unlink the source once ``safe_to_remove_source`` agrees.

    Each ``job.tmp`` is a ``tmpnames`` name of ``tmp_owner``'s; given the owner, the temp
    files its dead runs left in a target's directory are swept before the first write
    there.

    An existing target is kept, and reported as skipped, unless ``overwrite``. Killed at
    any point, a MOVE loses nothing: before the rename the source is untouched (a
    hidden tmp file may be left beside the target, which the worker's next run sweeps);
    after it, the target is a complete, fsynced copy, and a rerun finds it, compares it
    byte for byte and only then removes the source.
    """
    outcomes: list[CopyOutcome] = []
    for job in jobs:
        if os.path.isdir(job.final) and not os.path.isdir(job.src):
            # A file copied onto a directory goes inside it, as with cp.
            final = os.path.join(job.final, os.path.basename(job.src))
            job = replace(job, final=final, tmp=retarget(job.tmp, final))
        outcomes.append(_transfer_one(replace(job, durable=True, locked=True, transfer=True),
                                      move, overwrite, tmp_owner))
    return outcomes


def _identity(info: os.stat_result) -> tuple[int, int]:
    return info.st_dev, info.st_ino


def _transfer_one(job: LocalCopy, move: bool, overwrite: bool,
                  tmp_owner: TmpOwner | None) -> CopyOutcome:
    try:
        source = os.stat(job.src)
    except OSError as exc:
        return CopyOutcome(False, reason=reason_for(exc), message=f"{job.src}: {exc.strerror}")
    if not stat.S_ISREG(source.st_mode):
        return CopyOutcome(False, reason=Reason.INVALID_PATH,
                           message=f"{job.src}: not a regular file")
    try:
        target: os.stat_result | None = os.stat(job.final)
    except FileNotFoundError:
        target = None  # absent, or a dangling symlink
    except OSError as exc:
        return CopyOutcome(False, reason=reason_for(exc),
                           message=f"{job.final}: {exc.strerror}")
    if target is not None and _identity(target) == _identity(source):
        return CopyOutcome(False, reason=Reason.INVALID_PATH,
                           message=f"{job.final} is {job.src} itself under another name "
                                   "(a symlink or a hard link): nothing was copied or removed")
    if not overwrite and os.path.lexists(job.final):
        if not move:
            return CopyOutcome(False, reason=Reason.EXISTS,
                               message=f"{job.final} exists; use --overwrite")
        # An earlier MOVE may have copied it and stopped before removing the source.
        refusal = safe_to_remove_source(job.src, job.final, source, written=None)
        if refusal is not None:
            return CopyOutcome(False, reason=Reason.EXISTS,
                               message=f"{job.final} exists and {refusal}; use --overwrite")
        return _remove_source(job, CopyOutcome(True, source.st_size, source.st_size,
                                               source.st_mtime_ns))
    if tmp_owner is not None:
        sweep(os.path.dirname(job.final), tmp_owner)
    outcome = copy_one(job)
    if not outcome.ok:
        return outcome
    try:
        fsync_dir(os.path.dirname(job.final))
    except OSError as exc:
        return CopyOutcome(False, reason=reason_for(exc),
                           message=f"cannot sync {os.path.dirname(job.final)}: {exc.strerror}")
    if not move:
        return outcome
    refusal = safe_to_remove_source(job.src, job.final, source, written=outcome.written)
    if refusal is not None:
        return CopyOutcome(False, reason=Reason.UFS_CHANGED,
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


def _remove_source(job: LocalCopy, outcome: CopyOutcome) -> CopyOutcome:
    try:
        os.unlink(job.src)
    except OSError as exc:
        return CopyOutcome(False, reason=reason_for(exc),
                           message=f"copied, but cannot remove {job.src}: {exc.strerror}")
    return outcome


def _same_bytes(a: str, b: str) -> bool:
    try:
        fd_a, _ = open_regular(a)
        fd_b = -1
        try:
            fd_b, _ = open_regular(b)
        finally:
            if fd_b < 0:
                os.close(fd_a)
    except (OSError, UfsError):
        return False
    try:
        with os.fdopen(fd_a, "rb") as fa, os.fdopen(fd_b, "rb") as fb:
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
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, CACHE_FILE_MODE)
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
