"""The worker's cache directories: layout, index, capacity and LRU eviction.

Layout of each cache dir::

    data/   one file per cached UFS file, byte-identical to it (sha256sum agrees);
            where each file lives is ``layout.cache_relpath``
    tmp/    partial writes; emptied at startup
    index/  rocksdict (``index.CacheIndex``): the cached files, their access order,
            totals, metadata-only records and pins
    worker-tag  (first dir only) the tag in the names of the worker's COPY/MOVE temp
            files (``ufs.tmpnames``)

The index is written only after a file was renamed into ``data/``, so an index entry
always means a complete file. A crash between the rename and the index write leaves a
complete but unindexed file, which startup removes, so ``data/`` never holds anything
the index does not know. An entry's ``version`` is an object's ETag (empty for local
files, whose mtime is their version): ``--skip-if-exists`` and ``--verify`` compare it
with the listing's, with the length.

The cache is the service's alone: ``data/``, ``tmp/`` and ``index/`` are 0700 (and the
cache dir itself, when the worker creates it), cached files 0600, whatever the umask;
startup narrows what an older version left wider. Each index entry carries the file's
content checksum (``checksum.py``), which reads, ``--verify`` and the scrub check
(``scrub.py``).

Memory does not grow with the number of cached files: the LRU order, the totals and
the pins live in the index, and startup checks ``data/`` against it one directory chunk
at a time. What stays in memory per cache dir is a few numbers, among them the bytes
reserved by loads in flight.
"""

from __future__ import annotations

import os
import shutil
import stat
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import trio

from alluxiojob.core.reasons import Reason
from alluxiojob.ufs.base import UfsError
from alluxiojob.ufs.local import open_regular
from alluxiojob.ufs.tmpnames import worker_tag
from alluxiojob.worker.copier import CACHE_DIR_MODE, CACHE_FILE_MODE
from alluxiojob.worker.index import CacheIndex, IndexEntry, MetadataRecord, Victim
from alluxiojob.worker.layout import (
    CacheName,
    cache_name,
    cache_relpath,
    index_key,
    uri_of_relpath,
)

_PROC_FD = os.path.isdir("/proc/self/fd")


def _opened_path(fd: int, path: str) -> str:
    """Where the open descriptor ``fd`` really is (``path`` resolved, failing that)."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return os.path.realpath(path)

__all__ = ["Cache", "CacheDir", "IndexEntry", "MetadataRecord", "cache_relpath", "index_key"]

_CHECK_CHUNK = 1000  # data/ files checked against the index per multi-get at startup


class CacheDir:
    """One cache directory with its own index, capacity and reservations."""

    def __init__(self, root: Path, capacity: int) -> None:
        self.root = root
        self.data = root / "data"
        self.tmp = root / "tmp"
        self._tmp_prefix = os.path.join(str(self.tmp), "")  # tmp/ as text, for tmp_path
        self.capacity = capacity  # 0: unlimited
        self._data_real: str | None = None  # data/ resolved, with a trailing separator
        # A cache dir the worker creates is 0700. One that exists keeps its mode (it may
        # be a mount point the operator chose); what lives in it is made private.
        root.mkdir(mode=CACHE_DIR_MODE, parents=True, exist_ok=True)
        for sub in (self.data, self.tmp, root / "index"):
            sub.mkdir(mode=CACHE_DIR_MODE, exist_ok=True)
            if stat.S_IMODE(sub.stat().st_mode) != CACHE_DIR_MODE:
                sub.chmod(CACHE_DIR_MODE)  # the umask, or an older version, made it wider
        self.index = CacheIndex(str(root / "index"))
        self.lock = self.index.lock
        self.reserved = 0  # bytes promised to loads in flight, not yet in the index

    @property
    def used(self) -> int:
        return self.index.used

    @property
    def files(self) -> int:
        return self.index.files

    # --- startup (blocking) ----------------------------------------------------------
    def recover(self) -> tuple[int, int, list[str]]:
        """Open the index, drop tmp debris, symlinks and unindexed files.

        Returns (files, unindexed files removed, symlinks removed). A symlink in
        ``data/`` or ``tmp/`` was not made by us: served, it would hand out whatever it
        points at; written through, it would overwrite it. So it goes, with its index
        entry if it had one.
        """
        links = self._remove_tmp_links()
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir(mode=CACHE_DIR_MODE, parents=True, exist_ok=True)
        self.index.open()
        removed = self._check_data(links)
        return self.index.files, removed, links

    def _remove_tmp_links(self) -> list[str]:
        removed: list[str] = []
        for sub in (self.data, self.tmp):
            if sub.is_symlink():
                sub.unlink()
                removed.append(str(sub))
                sub.mkdir(mode=CACHE_DIR_MODE, parents=True, exist_ok=True)
        for path in self._walk(str(self.tmp)):
            if os.path.islink(path):
                os.unlink(path)
                removed.append(path)
        return removed

    @staticmethod
    def _walk(root: str) -> Iterator[str]:
        """Every non-directory under ``root`` (symlinks included, never followed),
        streamed: a directory of a million files is never one list in memory."""
        stack = [root]
        while stack:
            try:
                with os.scandir(stack.pop()) as it:
                    for entry in it:
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(entry.path)
                        else:
                            yield entry.path
            except FileNotFoundError:
                continue

    def _check_data(self, links: list[str]) -> int:
        """Unlink symlinks (their entries go too) and files the index does not know."""
        prefix = str(self.data) + os.sep
        removed = 0
        linked: list[str] = []
        chunk: list[tuple[str, str]] = []

        def check(chunk: list[tuple[str, str]]) -> int:
            known = self.index.known([key for _path, key in chunk])
            gone = 0
            for (path, _key), ok in zip(chunk, known, strict=True):
                if not ok:
                    os.unlink(path)
                    gone += 1
            return gone

        for path in self._walk(str(self.data)):
            try:
                info = os.lstat(path)
                key = uri_of_relpath(path[len(prefix):])
            except FileNotFoundError:
                continue
            except ValueError:
                key = ""
            if stat.S_ISLNK(info.st_mode):
                os.unlink(path)
                links.append(path)
                if key:
                    linked.append(key)
            elif not key or not stat.S_ISREG(info.st_mode):
                os.unlink(path)  # not a name the cache gives, or not a file
                removed += 1
            else:
                if info.st_mode & 0o077:
                    os.chmod(path, CACHE_FILE_MODE)  # cached by an older version
                chunk.append((path, key))
                if len(chunk) >= _CHECK_CHUNK:
                    removed += check(chunk)
                    chunk = []
        if chunk:
            removed += check(chunk)
        if linked:
            self.index.forget(linked)
        return removed

    def open_cached(self, uri: str, relpath: str | None = None) -> tuple[int, int]:
        """Blocking: (fd, size) of a cached file, opened only from inside ``data/``
        (``relpath``: its cache relative path, when the caller has it already).

        The file itself is opened with ``O_NOFOLLOW``, and the file actually opened must
        lie in ``data/`` (no symlinked directory on the way): checked on the descriptor,
        through ``/proc/self/fd`` (one ``readlink``, and no race with a rename) where
        there is one, else by resolving the path first.
        """
        path = self.data_path(uri) if relpath is None else self.path_of(relpath)
        data = self._data_real
        if data is None:
            data = self._data_real = os.path.realpath(self.data) + os.sep
        if not _PROC_FD and not os.path.realpath(path).startswith(data):
            raise UfsError(Reason.PERMISSION_DENIED,
                           f"{uri}: its cache file resolves outside {self.data}")
        fd, info = open_regular(path, name=f"{uri}: its cache file", nofollow=True)
        if _PROC_FD and not _opened_path(fd, path).startswith(data):
            os.close(fd)
            raise UfsError(Reason.PERMISSION_DENIED,
                           f"{uri}: its cache file resolves outside {self.data}")
        return fd, info.st_size

    # --- paths -----------------------------------------------------------------------
    def data_path(self, uri: str) -> str:
        return self.path_of(cache_relpath(uri))

    def path_of(self, relpath: str) -> str:
        """The ``data/`` file at a cache relative path (``layout.cache_name``)."""
        return os.path.join(str(self.data), relpath)

    def tmp_path(self, uri: str) -> str:
        tag = zlib.crc32(uri.encode("utf-8", "surrogateescape"))
        return f"{self._tmp_prefix}{tag:08x}-{time.time_ns()}"

    # --- index (blocking) --------------------------------------------------------------
    def lookup(self, uri: str) -> IndexEntry | None:
        return self.index.lookup(index_key(uri))

    def commit(self, entries: list[tuple[str, IndexEntry, int]]) -> None:
        """Record finished files in one batch (their data files are already in place).

        Each file's reservation turns into used space in the same step, so that a
        concurrent reservation never sees the file counted twice, nor not at all.
        """
        self.commit_keys([(index_key(uri), entry, reserved) for uri, entry, reserved in entries])

    def commit_keys(self, entries: list[tuple[str, IndexEntry, int]]) -> None:
        """``commit``, the files named by their index keys (``layout.cache_name``)."""
        if not entries:
            return
        with self.lock:
            self.index.commit([(key, entry) for key, entry, _ in entries])
            self.reserved -= sum(reserved for _, _, reserved in entries)

    def remove(self, uris: list[str]) -> list[tuple[str, int]]:
        """Evict files from the index and data/; returns (uri, bytes) actually removed.
        Metadata-only records of these files go too."""
        return self.remove_named([(uri, cache_name(uri)) for uri in uris])

    def remove_named(self, named: list[tuple[str, CacheName]]) -> list[tuple[str, int]]:
        """``remove``, each file's cache name computed already (``layout.cache_name``)."""
        with self.lock:
            forgotten = dict(self.index.forget([name.key for _, name in named]))
            removed = []
            for uri, name in named:
                if name.key in forgotten:
                    try:
                        os.unlink(self.path_of(name.relpath))
                    except FileNotFoundError:
                        pass
                    removed.append((uri, forgotten[name.key]))
        return removed

    def evict(self, victims: list[Victim]) -> int:
        """Remove chosen victims; returns the bytes freed."""
        with self.lock:
            forgotten = self.index.forget([v.key for v in victims], [v.seq for v in victims])
            for key, _length in forgotten:
                self._unlink(key)
        return sum(length for _key, length in forgotten)

    def _unlink(self, uri: str) -> None:
        try:
            os.unlink(self.data_path(uri))
        except FileNotFoundError:
            pass

    def touch(self, uris: list[str]) -> None:
        self.index.touch([index_key(uri) for uri in uris])

    def free_space(self) -> int:
        if not self.capacity:
            return 1 << 62
        return self.capacity - self.used - self.reserved

    def no_room(self, length: int) -> str:
        """Why ``length`` bytes do not fit: what is cached and what is promised."""
        return (f"no room for {length} bytes in {self.root}: {self.used} bytes cached + "
                f"{self.reserved} reserved by loads in flight, of {self.capacity}; the "
                "cached files that could make room belong to jobs active within "
                "alluxio.worker.job.cache.pin.time")

    def under(self, prefix: str, after: str = "") -> Iterator[tuple[str, IndexEntry]]:
        """Cached files at ``prefix`` or below it (past ``after``): a range scan."""
        return self.index.under(prefix, after)

    def record_metadata(self, records: list[tuple[str, MetadataRecord]]) -> None:
        """``--metadata-only``: what files are, with no data (see ``index``)."""
        self.index.record_metadata([(index_key(uri), record) for uri, record in records])

    def metadata(self, uri: str) -> MetadataRecord | None:
        return self.index.metadata(index_key(uri))

    def metadata_under(self, prefix: str, after: str = "") -> Iterator[tuple[str, int]]:
        return self.index.metadata_under(prefix, after)

    def close(self) -> None:
        self.index.close()


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
        # Kept in the first dir, whose index (open now) no other worker process can open.
        self.worker_tag = worker_tag(str(self.dirs[0].root))
        self.limiter = trio.CapacityLimiter(1)
        self._space = trio.Lock()

    def dir_for(self, uri: str) -> CacheDir:
        try:
            key = index_key(uri)
        except UfsError:
            key = uri  # not cacheable: the dir's data_path will say so
        return self.dirs[self.dir_index(key)]

    def dir_index(self, key: str) -> int:
        """Which cache dir holds the file of index key ``key``."""
        return zlib.crc32(key.encode("utf-8", "surrogateescape")) % len(self.dirs)

    @property
    def used(self) -> int:
        return sum(d.used for d in self.dirs)

    @property
    def capacity(self) -> int:
        return 0 if any(d.capacity == 0 for d in self.dirs) else sum(d.capacity for d in self.dirs)

    @property
    def files(self) -> int:
        return sum(d.files for d in self.dirs)

    async def recover(self) -> tuple[int, int, list[str]]:
        """(files, unindexed files removed, symlinks removed) over every cache dir."""
        files = removed = 0
        links: list[str] = []
        for d in self.dirs:
            f, r, found = await trio.to_thread.run_sync(d.recover)
            files, removed = files + f, removed + r
            links.extend(found)
        return files, removed, links

    async def reserve(self, uri: str | CacheDir, length: int, pinned_jobs: set[str]
                      ) -> str | None:
        """Make room for ``length`` bytes (in ``uri``'s dir, or the dir given), evicting
        LRU files of jobs not pinned if needed. None when reserved; otherwise why not
        (the ``CACHE_FULL`` message)."""
        d = uri if isinstance(uri, CacheDir) else self.dir_for(uri)
        if not d.capacity:
            return None  # unlimited: nothing to account, nothing to evict
        async with self._space:
            shortfall = length - d.free_space()
            if shortfall > 0:
                victims = await trio.to_thread.run_sync(d.index.victims, shortfall, pinned_jobs,
                                                        limiter=self.limiter)
                if victims:
                    await trio.to_thread.run_sync(d.evict, victims, limiter=self.limiter)
            with d.lock:
                if d.free_space() < length:
                    return d.no_room(length)
                d.reserved += length
            return None

    def release(self, uri: str | CacheDir, length: int) -> None:
        d = uri if isinstance(uri, CacheDir) else self.dir_for(uri)
        if d.capacity:
            with d.lock:
                d.reserved -= length

    # --- pins (blocking) ---------------------------------------------------------------
    def save_pins(self, pins: dict[str, float]) -> None:
        """Persist pins in every dir's index, so that a restart keeps them."""
        for d in self.dirs:
            d.index.save_pins(pins)

    def drop_pins(self, job_ids: list[str]) -> None:
        for d in self.dirs:
            d.index.drop_pins(job_ids)

    def load_pins(self) -> dict[str, float]:
        pins: dict[str, float] = {}
        for d in self.dirs:
            for job_id, when in d.index.pins().items():
                pins[job_id] = max(when, pins.get(job_id, 0.0))
        return pins

    def close(self) -> None:
        for d in self.dirs:
            d.close()
