"""The local (or NFS-mounted) filesystem as a UFS: plain absolute paths and ``file://``."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Iterable, Iterator

from alluxiojob.core.reasons import Reason
from alluxiojob.ufs.base import READ_CHUNK, UfsError, UfsFile, UfsStat, listed_file
from alluxiojob.ufs.tmpnames import TmpName, TmpOwner, hold_lock, sweep
from alluxiojob.ufs.uri import UfsUri, parse_uri, to_local_path

SCHEME = "file"
_NO_WORKER = TmpOwner.anonymous()

__all__ = ["LocalUfs", "make_dirs", "open_regular", "reason_for", "to_local_path",
           "write_reason_for"]


def reason_for(exc: OSError) -> Reason:
    if exc.errno in (errno.ENOENT, errno.ENOTDIR):
        return Reason.UFS_NOT_FOUND
    if exc.errno in (errno.EACCES, errno.EPERM):
        return Reason.PERMISSION_DENIED
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return Reason.CACHE_FULL
    return Reason.IO_ERROR


def write_reason_for(exc: OSError) -> Reason:
    """Writing: a file in the way of a directory is a path this tree cannot hold."""
    if exc.errno in (errno.ENOTDIR, errno.EEXIST, errno.EISDIR, errno.ENAMETOOLONG):
        return Reason.INVALID_PATH
    return reason_for(exc)


def open_regular(path: str, *, name: str = "", nofollow: bool = False
                 ) -> tuple[int, os.stat_result]:
    """(fd, stat) of a local file opened for reading, without ever blocking: the one
    way to open a file the worker reads (a copy's source, a cached file, a read-through).

    A FIFO, a device or a socket can take a file's place between a listing and a read;
    opened the usual way, a FIFO with no writer blocks for good. So the open does not
    block (``O_NONBLOCK``, which changes nothing for a regular file) and anything but a
    regular file is refused: ``UfsError(INVALID_PATH, "<name>: not a regular file")``.
    ``INVALID_PATH`` and not ``IO_ERROR``: no retry turns a FIFO into a file, so the
    failure is final at once. ``name`` is what the message calls the file (its URI;
    ``path`` by default); ``nofollow`` refuses a symlink (``O_NOFOLLOW``).
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (os.O_NOFOLLOW if nofollow else 0)
    fd = os.open(path, flags)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UfsError(Reason.INVALID_PATH, f"{name or path}: not a regular file")
    except BaseException:
        os.close(fd)
        raise
    return fd, info


def make_dirs(path: str, mode: int = 0o777) -> None:
    """``os.makedirs(path, mode, exist_ok=True)`` in a loop: ``os.makedirs`` recurses once
    per missing level, and a tree deeper than Python's recursion limit is a valid tree."""
    missing: list[str] = []
    while path and not os.path.isdir(path):
        missing.append(path)
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, mode)
        except FileExistsError:
            if not os.path.isdir(directory):
                raise


def fsync_dir(path: str, *, best_effort: bool = False) -> None:
    """Make a rename or unlink in directory ``path`` durable (fsync the directory).

    ``best_effort``: a directory that cannot be opened (write-only, gone) is skipped
    rather than raised; a failing fsync still raises. A MOVE is strict: it removes its
    source only once the new name is on disk.
    """
    try:
        fd = os.open(path or ".", os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        if best_effort:
            return
        raise
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalUfs:
    scheme = SCHEME

    def normalize(self, path: str | UfsUri) -> str:
        parsed = path if isinstance(path, UfsUri) else parse_uri(path)
        local, path = parsed.local_path, parsed.text
        if not local.startswith("/"):
            raise UfsError(Reason.INVALID_PATH, f"not an absolute path: {path!r}")
        if "\x00" in local:
            raise UfsError(Reason.INVALID_PATH, f"path contains a NUL byte: {path!r}")
        normalized = os.path.normpath(local)
        if normalized.startswith("//"):
            normalized = "/" + normalized.lstrip("/")
        return "file://" + normalized

    def exists(self, uri: str) -> bool:
        return os.path.lexists(to_local_path(uri))

    def stat(self, uri: str) -> UfsStat:
        try:
            info = os.stat(to_local_path(uri))
        except OSError as exc:
            raise UfsError(reason_for(exc), f"{uri}: {exc.strerror}") from None
        if not stat.S_ISREG(info.st_mode):
            raise UfsError(Reason.IO_ERROR, f"{uri}: not a regular file")
        return UfsStat(info.st_size, info.st_mtime_ns)

    def read(self, uri: str, offset: int = 0, length: int = -1,
             version: str = "") -> Iterator[bytes]:
        path = to_local_path(uri)
        try:
            fd, before = open_regular(path)
        except OSError as exc:
            raise UfsError(reason_for(exc), f"{uri}: {exc.strerror}") from None
        with os.fdopen(fd, "rb") as f:
            f.seek(offset)
            left = before.st_size - offset if length < 0 else length
            while left > 0:
                chunk = f.read(min(READ_CHUNK, left))
                if not chunk:
                    break
                left -= len(chunk)
                yield chunk
            after = os.fstat(f.fileno())
            if left > 0 or (after.st_size, after.st_mtime_ns) != (before.st_size,
                                                                   before.st_mtime_ns):
                raise UfsError(Reason.UFS_CHANGED, f"{uri} changed while it was read")

    def write(self, uri: str, chunks: Iterable[bytes], length: int,
              overwrite: bool, tmp_owner: TmpOwner | None = None) -> UfsStat:
        """A tmp file beside the target, fsynced, then renamed over it (then the dir fsynced).

        ``tmp_owner``: the worker run that writes (``tmpnames``). Given, the temp files its
        dead runs left in the target's directory are swept first; without one, the temp
        file belongs to no worker and is never swept.
        """
        path = to_local_path(uri)
        if not overwrite and os.path.lexists(path):
            raise UfsError(Reason.EXISTS, f"{uri} exists; use --overwrite")
        head = os.path.dirname(path)
        tmp = TmpName.new(tmp_owner or _NO_WORKER).beside(path)
        try:
            make_dirs(head)
            if tmp_owner is not None:
                sweep(head, tmp_owner)
            written = 0
            with open(tmp, "wb") as f:
                hold_lock(f.fileno())
                for chunk in chunks:
                    f.write(chunk)
                    written += len(chunk)
                f.flush()
                os.fsync(f.fileno())
            if written != length:
                raise UfsError(Reason.UFS_CHANGED,
                               f"the source of {uri} gave {written} bytes, not {length}")
            os.rename(tmp, path)
            fsync_dir(head, best_effort=True)
            info = os.stat(path)
        except OSError as exc:
            reason = write_reason_for(exc)
            why = (" (a local tree cannot hold a file and a directory of the same name, "
                   "as an object store can)" if reason is Reason.INVALID_PATH else "")
            raise UfsError(reason, f"cannot write {uri}: {exc.strerror}{why}") from None
        finally:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        return UfsStat(info.st_size, info.st_mtime_ns)

    def delete(self, uri: str) -> None:
        path = to_local_path(uri)
        try:
            os.unlink(path)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise UfsError(reason_for(exc), f"cannot remove {uri}: {exc.strerror}") from None
        fsync_dir(os.path.dirname(path), best_effort=True)

    def walk(
        self,
        uri: str,
        after: tuple[str, ...] = (),
        follow_link: Callable[[str], bool] | None = None,
    ) -> Iterator[UfsFile]:
        root = to_local_path(uri)
        try:
            info = os.stat(root)
        except OSError as exc:
            raise UfsError(reason_for(exc), f"cannot list {uri}: {exc.strerror}") from None
        base = uri.rstrip("/") if uri != "file:///" else "file://"
        if not stat.S_ISDIR(info.st_mode):
            if not after:
                yield UfsFile(uri, (), info.st_size, info.st_mtime_ns)
            return
        yield from _walk_tree(root, base, after, (info.st_dev, info.st_ino), follow_link)


def _sorted_entries(path: str) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(path) as it:
            return sorted(it, key=lambda e: e.name)
    except OSError as exc:
        raise UfsError(reason_for(exc), f"cannot list {path}: {exc.strerror}") from None


def _gone(exc: OSError) -> bool:
    """An entry that vanished since it was listed, or a dangling or looping link."""
    return exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP)


def _walk_tree(
    root: str,
    base: str,
    after: tuple[str, ...],
    root_key: tuple[int, int],
    follow_link: Callable[[str], bool] | None,
) -> Iterator[UfsFile]:
    """Every regular file under ``root`` in the order of its ``parts`` (names sorted at
    each level, a directory's files where its name sorts), strictly after ``after``.

    Iterative, with one frame per open directory: a tree of any depth is walked in
    bounded stack. A directory on the path from ``root`` (a symlink back up the tree) is
    not entered again. An entry that cannot be examined fails the listing by name,
    unless it is simply gone (vanished, or a dangling link): skipping it would finish a
    job that never saw part of its tree.
    """
    # (remaining entries of a directory, in reverse; its parts; its (st_dev, st_ino); its
    # URI with a trailing "/", which a file's name completes)
    stack: list[tuple[list[os.DirEntry[str]], tuple[str, ...], tuple[int, int], str]] = [
        (_sorted_entries(root)[::-1], (), root_key, base + "/")]
    ancestors = {root_key}
    while stack:
        entries, prefix, dir_key, dir_uri = stack[-1]
        if not entries:
            stack.pop()
            ancestors.discard(dir_key)
            continue
        entry = entries.pop()
        parts = (*prefix, entry.name)
        if follow_link is not None and entry.is_symlink() and not follow_link(entry.path):
            continue
        try:
            is_dir = entry.is_dir(follow_symlinks=True)
        except OSError:
            is_dir = False
        if is_dir:
            # Skip subtrees that end before the checkpoint; descend into the one on it.
            if after and parts < after[: len(parts)]:
                continue
            try:
                dir_info = entry.stat(follow_symlinks=True)
            except OSError as exc:
                if _gone(exc):
                    continue
                raise UfsError(reason_for(exc), f"cannot list {entry.path}: "
                               f"{exc.strerror}") from None
            key = (dir_info.st_dev, dir_info.st_ino)
            if key in ancestors:
                continue  # a symlink back up the tree: do not loop
            stack.append((_sorted_entries(entry.path)[::-1], parts, key,
                          dir_uri + entry.name + "/"))
            ancestors.add(key)
            continue
        if after and parts <= after:
            continue
        try:
            info = entry.stat(follow_symlinks=True)
        except OSError as exc:
            if _gone(exc):
                continue  # vanished or a dangling link: nothing to load
            raise UfsError(reason_for(exc), f"cannot read {entry.path}: "
                           f"{exc.strerror}") from None
        if not stat.S_ISREG(info.st_mode):
            continue
        yield listed_file(dir_uri + entry.name, parts, info.st_size, info.st_mtime_ns)
