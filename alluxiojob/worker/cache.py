"""The worker's cache directories: layout, index, capacity and LRU eviction.

Layout of each cache dir::

    data/   one file per cached UFS file, byte-identical to it (sha256sum agrees)
    tmp/    partial writes; emptied at startup
    index/  rocksdict: UFS URI -> [length, mtime_ns, last_access, job_id, version]

Where a file lives under ``data/``:

* a local file keeps its path: ``/a/b`` is ``data/a/b`` (a top directory named like an
  object-store scheme, ``s3``, ``gs`` or ``az``, followed by any ``%``, gets one more
  ``%``: ``/s3/x`` is ``data/s3%/x``, so it never meets an object);
* an object is ``data/<scheme>/<bucket>/<key>``, its key encoded component by component
  so that a file system can hold what an object store allows, a key ``a`` beside keys
  under ``a/``: in every component ``%`` becomes ``%25``; a component that is a
  directory gets a trailing ``%`` (which no encoded leaf ends with); a leaf ``.`` or
  ``..`` becomes ``%2E`` or ``%2E%2E``. So ``s3://b/a`` is ``data/s3/b/a`` and
  ``s3://b/a/x%y`` is ``data/s3/b/a%/x%25y``. The encoding is deterministic and one to
  one. A component longer than the file system allows fails that file (``INVALID_PATH``).

The index is written only after a file was renamed into ``data/``, so an index entry
always means a complete file. A crash between the rename and the index write leaves a
complete but unindexed file, which startup removes, so ``data/`` never holds anything
the index does not know. ``version`` is an object's ETag (empty for local files, whose
mtime is their version): ``--skip-if-exists`` and ``--verify`` compare it with the
listing's, with the length.
"""

from __future__ import annotations

import os
import shutil
import stat
import threading
import time
import zlib
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import msgpack
import trio
from rocksdict import Options, Rdict, WriteBatch

from alluxiojob.ufs.base import UfsError


@dataclass(frozen=True)
class IndexEntry:
    length: int
    mtime_ns: int
    last_access: float
    job_id: str
    version: str = ""  # an object's ETag

    def pack(self) -> bytes:
        packed: bytes = msgpack.packb([self.length, self.mtime_ns, self.last_access,
                                       self.job_id, self.version])
        return packed

    @classmethod
    def unpack(cls, raw: bytes) -> IndexEntry:
        fields = msgpack.unpackb(raw)
        version = str(fields[4]) if len(fields) > 4 else ""
        return cls(int(fields[0]), int(fields[1]), float(fields[2]), str(fields[3]), version)

    def matches(self, length: int, mtime_ns: int, version: str) -> bool:
        """Still the listed file: same length, and same ETag (objects) or mtime (local)."""
        if self.length != length:
            return False
        return self.version == version if version else self.mtime_ns == mtime_ns


OBJECT_SCHEME_DIRS = ("s3", "gs", "az")
NAME_MAX = 255


def _encode_key(key: str, uri: str) -> list[str]:
    components = key.split("/")
    encoded = []
    for i, component in enumerate(components):
        name = component.replace("%", "%25").replace("\x00", "%00")
        if i < len(components) - 1:
            name += "%"  # a directory: never equal to a leaf's name
        elif name in (".", ".."):
            name = name.replace(".", "%2E")
        if len(os.fsencode(name)) > NAME_MAX:
            raise UfsError("INVALID_PATH", f"a component of the key {key!r} of {uri} is "
                           f"longer than the {NAME_MAX} bytes a cache file name can hold")
        encoded.append(name)
    return encoded


def cache_relpath(uri: str) -> str:
    """Where ``uri`` lives under ``data/`` (see the module doc); rejects escapes."""
    scheme, sep, rest = uri.partition("://")
    if not sep:
        scheme, rest = "file", uri
    if scheme != "file":
        bucket, _, key = rest.partition("/")
        if (not bucket or not key or key.endswith("/") or bucket in (".", "..")
                or "\x00" in bucket):
            raise UfsError("INVALID_PATH", f"not a cacheable object: {uri!r}")
        return "/".join([scheme, bucket, *_encode_key(key, uri)])
    parts = [p for p in rest.split("/") if p]
    if not parts or any(p in (".", "..") for p in parts) or "\x00" in rest:
        raise UfsError("INVALID_PATH", f"not a cacheable path: {uri!r}")
    if parts[0].rstrip("%") in OBJECT_SCHEME_DIRS:
        parts[0] += "%"
    return "/".join(parts)


class CacheDir:
    """One cache directory with its own index, capacity and LRU order."""

    def __init__(self, root: Path, capacity: int) -> None:
        self.root = root
        self.data = root / "data"
        self.tmp = root / "tmp"
        self.capacity = capacity  # 0: unlimited
        for sub in (self.data, self.tmp, root / "index"):
            sub.mkdir(parents=True, exist_ok=True)
        options = Options(raw_mode=True)
        options.create_if_missing(True)
        self._index = Rdict(str(root / "index"), options=options)
        self.lock = threading.Lock()
        self.used = 0
        self.reserved = 0
        self.lru: OrderedDict[str, tuple[int, str]] = OrderedDict()  # uri -> (length, job)

    # --- startup (blocking) ----------------------------------------------------------
    def recover(self) -> tuple[int, int, list[str]]:
        """Load the index, drop tmp debris, symlinks and unindexed files.

        Returns (files, unindexed files removed, symlinks removed). A symlink in
        ``data/`` or ``tmp/`` was not made by us: served, it would hand out whatever it
        points at; written through, it would overwrite it. So it goes, with its index
        entry if it had one.
        """
        links = self._remove_symlinks()
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir(parents=True, exist_ok=True)
        entries: list[tuple[str, IndexEntry]] = []
        for key, raw in self._index.items():
            entries.append((cast(bytes, key).decode(), IndexEntry.unpack(raw)))
        entries.sort(key=lambda item: item[1].last_access)
        known: set[str] = set()
        dropped = WriteBatch(raw_mode=True)
        removed_links = set(links)
        for uri, entry in entries:
            path = os.path.join(str(self.data), cache_relpath(uri))
            if path in removed_links:
                dropped.delete(uri.encode())
                continue
            self.lru[uri] = (entry.length, entry.job_id)
            self.used += entry.length
            known.add(path)
        if removed_links:
            self._index.write(dropped)
        removed = 0
        for dirpath, _dirs, files in os.walk(self.data):
            for name in files:
                full = os.path.join(dirpath, name)
                if full not in known:
                    os.unlink(full)
                    removed += 1
        return len(self.lru), removed, links

    def _remove_symlinks(self) -> list[str]:
        """Blocking: unlink every symlink in data/ and tmp/ (and those dirs, if links)."""
        removed: list[str] = []
        for sub in (self.data, self.tmp):
            if sub.is_symlink():
                sub.unlink()
                removed.append(str(sub))
                sub.mkdir(parents=True, exist_ok=True)
            for dirpath, dirs, files in os.walk(sub):  # never descends into a link
                for name in [*dirs, *files]:
                    full = os.path.join(dirpath, name)
                    if os.path.islink(full):
                        os.unlink(full)
                        removed.append(full)
        return removed

    def open_cached(self, uri: str) -> tuple[int, int]:
        """Blocking: (fd, size) of a cached file, opened only from inside ``data/``.

        The resolved path must lie in ``data/`` (no symlinked directory on the way) and
        the file itself is opened with ``O_NOFOLLOW``.
        """
        path = self.data_path(uri)
        data = os.path.realpath(self.data)
        if not os.path.realpath(path).startswith(data + os.sep):
            raise UfsError("PERMISSION_DENIED",
                           f"{uri}: its cache file resolves outside {self.data}")
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise UfsError("INVALID_PATH", f"{uri}: its cache file is not a regular file")
        except BaseException:
            os.close(fd)
            raise
        return fd, info.st_size

    # --- paths -----------------------------------------------------------------------
    def data_path(self, uri: str) -> str:
        return os.path.join(str(self.data), cache_relpath(uri))

    def tmp_path(self, uri: str) -> str:
        return os.path.join(str(self.tmp), f"{zlib.crc32(uri.encode()):08x}-{time.time_ns()}")

    # --- index (blocking) --------------------------------------------------------------
    def lookup(self, uri: str) -> IndexEntry | None:
        raw = self._index.get(uri.encode())
        return None if raw is None else IndexEntry.unpack(raw)

    def commit(self, entries: Iterable[tuple[str, IndexEntry, int]]) -> None:
        """Record finished files in one batch (their data files are already in place).

        Each file's reservation turns into used space in the same step, so that a
        concurrent eviction never sees the file counted twice, nor not at all.
        """
        batch = WriteBatch(raw_mode=True)
        count = 0
        with self.lock:
            for uri, entry, reserved in entries:
                self.reserved -= reserved
                batch.put(uri.encode(), entry.pack())
                old = self.lru.pop(uri, None)
                if old is not None:
                    self.used -= old[0]
                self.lru[uri] = (entry.length, entry.job_id)
                self.used += entry.length
                count += 1
            if count:
                self._index.write(batch)

    def remove(self, uris: Iterable[str]) -> list[tuple[str, int]]:
        """Evict files from data/ and the index; returns (uri, bytes) actually removed."""
        removed: list[tuple[str, int]] = []
        batch = WriteBatch(raw_mode=True)
        with self.lock:
            for uri in uris:
                entry = self.lru.pop(uri, None)
                if entry is None and self._index.get(uri.encode()) is None:
                    continue
                try:
                    os.unlink(self.data_path(uri))
                except FileNotFoundError:
                    pass
                batch.delete(uri.encode())
                length = entry[0] if entry else 0
                self.used -= length
                removed.append((uri, length))
            if removed:
                self._index.write(batch)
        return removed

    def touch(self, uri: str) -> None:
        with self.lock:
            if uri in self.lru:
                self.lru.move_to_end(uri)

    def choose_victims(self, needed: int, pinned_jobs: set[str]) -> list[str] | None:
        """LRU files, not needed by a running job, whose removal frees ``needed`` bytes."""
        victims: list[str] = []
        freed = 0
        with self.lock:
            for uri, (length, job_id) in self.lru.items():
                if freed >= needed:
                    break
                if job_id in pinned_jobs:
                    continue
                victims.append(uri)
                freed += length
        return victims if freed >= needed else None

    def free_space(self) -> int:
        if not self.capacity:
            return 1 << 62
        return self.capacity - self.used - self.reserved

    def close(self) -> None:
        with self.lock:
            self._index.close()


class Cache:
    """All cache dirs of a worker; a URI always maps to the same dir."""

    def __init__(self, dirs: list[Path], capacities: list[int]) -> None:
        if not dirs:
            raise ValueError("alluxio.worker.page.store.dirs is empty")
        if capacities and len(capacities) not in (1, len(dirs)):
            raise ValueError(
                "alluxio.worker.page.store.sizes must have one size, or one per directory in "
                "alluxio.worker.page.store.dirs"
            )
        sizes = capacities * len(dirs) if len(capacities) == 1 else capacities
        self.dirs = [CacheDir(d, sizes[i] if sizes else 0) for i, d in enumerate(dirs)]
        self.limiter = trio.CapacityLimiter(1)
        self._space = trio.Lock()

    def dir_for(self, uri: str) -> CacheDir:
        return self.dirs[zlib.crc32(uri.encode()) % len(self.dirs)]

    @property
    def used(self) -> int:
        return sum(d.used for d in self.dirs)

    @property
    def capacity(self) -> int:
        return 0 if any(d.capacity == 0 for d in self.dirs) else sum(d.capacity for d in self.dirs)

    @property
    def files(self) -> int:
        return sum(len(d.lru) for d in self.dirs)

    async def recover(self) -> tuple[int, int, list[str]]:
        """(files, unindexed files removed, symlinks removed) over every cache dir."""
        files = removed = 0
        links: list[str] = []
        for d in self.dirs:
            f, r, found = await trio.to_thread.run_sync(d.recover)
            files, removed = files + f, removed + r
            links.extend(found)
        return files, removed, links

    async def reserve(self, uri: str, length: int, pinned_jobs: set[str]) -> bool:
        """Make room for ``length`` bytes, evicting LRU files if needed; False if impossible."""
        d = self.dir_for(uri)
        if not d.capacity:
            return True  # unlimited: nothing to account, nothing to evict
        async with self._space:
            shortfall = length - d.free_space()
            if shortfall > 0:
                victims = d.choose_victims(shortfall, pinned_jobs)
                if victims is None:
                    return False
                await trio.to_thread.run_sync(d.remove, victims, limiter=self.limiter)
            with d.lock:
                d.reserved += length
            return True

    def release(self, uri: str, length: int) -> None:
        d = self.dir_for(uri)
        if d.capacity:
            with d.lock:
                d.reserved -= length

    def close(self) -> None:
        for d in self.dirs:
            d.close()
