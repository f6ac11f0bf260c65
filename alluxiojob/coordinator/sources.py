"""Listing sources that stand in for a walk of the job's path: index files, S3 Inventory
manifests and brace templates (``core/manifest.py`` parses them; this module reads).

``open_source`` (blocking) reads what a source needs first (an index file or an
inventory is counted in one streaming pass, checking every line; a template's count is
arithmetic), so the job's total is known before its first file is sent. The source's
``entries(after)`` then yields ``UfsFile``s in the source's order, strictly after the
checkpoint ``after``: the contract of ``UnderFileSystem.walk``. A checkpoint is a
position, so a resumed job reads on from there, not from the top:

* index file: ``(line, byte offset after that line)``: the read starts at the offset;
* inventory: ``(data file number, row number)``: earlier data files are not read again;
* template: ``(index,)``: the name is computed from the index.

A shard of such a job is a range of these positions: ``entries(after, until)`` stops
after ``until``, and ``source_shards`` places the cuts (``core/manifest.py``). A shard
opens its source with ``count=False``: its counts were stored with its plan.

Index files and templates name files only, so each is stat'ed here (a HEAD, a few at a
time on object stores); an inventory row carries its size, date and ETag, so no HEAD.
A file that is missing or outside ``alluxio.job.path.allowlist`` comes back as a
``FailedFile``, which the runner fails by itself: the job goes on.
"""

from __future__ import annotations

import csv
import gzip
import io
import posixpath
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

from alluxiojob.config import Config, Keys
from alluxiojob.core.job import JobRecord
from alluxiojob.core.manifest import (
    Cuts,
    ManifestError,
    SourceShard,
    is_inventory_manifest,
    parse_index_line,
    parse_inventory_manifest,
    parse_inventory_row,
    parse_template,
    template_parts,
    template_shards,
)
from alluxiojob.core.reasons import Reason
from alluxiojob.core.text import printable
from alluxiojob.security.paths import PathAllowlist
from alluxiojob.ufs import is_local, resolve_path, ufs_for
from alluxiojob.ufs.base import UfsError, UfsFile
from alluxiojob.ufs.objects import split_uri
from alluxiojob.ufs.settings import UfsSettings

STAT_BATCH = 256  # names stat'ed together
STAT_THREADS = 16  # HEADs in flight at once on an object store
MANIFEST_MAX = 64 << 20  # an inventory's manifest.json is read whole
MAX_LINE = 64 << 10  # an index file's line: longer is an error, not a growing buffer
CHECK_AT_SUBMIT = 4 << 20  # an index file up to this size is checked whole at submit
# These fail the file, not the job:
FILE_REASONS = (Reason.UFS_NOT_FOUND, Reason.PERMISSION_DENIED, Reason.INVALID_PATH)


@dataclass(frozen=True)
class FailedFile(UfsFile):
    """A file the source names that fails before any worker sees it."""

    reason: str = Reason.UFS_NOT_FOUND
    message: str = ""


class JobSource(Protocol):
    files_total: int
    bytes_total: int  # 0 when unknown

    def entries(self, after: tuple[str, ...], until: tuple[str, ...] = ()) -> Iterator[UfsFile]:
        """The files strictly after ``after`` and at most ``until`` (() = the end)."""
        ...


def open_source(job: JobRecord, config: Config, *, count: bool = True) -> JobSource:
    """Blocking. A ``ManifestError`` or ``UfsError`` names what cannot be used.

    ``count=False`` skips the pass that counts the files (a shard's are counted at its
    plan), leaving ``files_total`` and ``bytes_total`` 0."""
    settings = UfsSettings.from_config(config)
    allowlist = PathAllowlist.from_config(config)
    try:
        if job.options.source == "template":
            return TemplateSource(job.path, settings, allowlist)
        if is_inventory_manifest(job.path):
            return InventorySource(job.path, settings, allowlist, count=count)
        return IndexSource(job.path, settings, allowlist, config[Keys.UFS_ROOT], count=count)
    except ManifestError as exc:  # fails the job, naming the line
        raise UfsError(Reason.INVALID_PATH, str(exc)) from None


def source_shards(job: JobRecord, config: Config, parts: int) -> list[SourceShard]:
    """Blocking: at most ``parts`` shards of a manifest or template job, each of at
    least ``alluxio.job.shard.source.files`` files, with their counts (an index file or
    an inventory is read once, to the end, to place the cuts)."""
    least = config[Keys.JOB_SHARD_SOURCE_FILES]
    source = open_source(job, config, count=False)
    if isinstance(source, TemplateSource):
        return template_shards(source.files_total, min(parts, source.files_total // least))
    cuts = Cuts()
    try:
        if isinstance(source, IndexSource):
            for _, position in source._paths(0, 0):
                cuts.add(position, 0)
        elif isinstance(source, InventorySource):
            for row in source._rows(0, -1):
                cuts.add(row.parts, row.length)
    except ManifestError as exc:
        raise UfsError(Reason.INVALID_PATH, str(exc)) from None
    return cuts.shards(min(parts, cuts.files // least))


class _Stats:
    """Stat named files, in order; a file's own failure becomes a ``FailedFile``."""

    def __init__(self, settings: UfsSettings, allowlist: PathAllowlist) -> None:
        self.settings = settings
        self.allowlist = allowlist

    def one(self, uri: str, parts: tuple[str, ...]) -> UfsFile:
        if self.allowlist.enabled and not self.allowlist.admits(uri):
            return FailedFile(uri, parts, 0, 0, reason=Reason.PERMISSION_DENIED,
                              message=f"{printable(uri)} is outside alluxio.job.path.allowlist "
                                      f"({self.allowlist.describe()})")
        try:
            info = ufs_for(uri, self.settings).stat(uri)
        except UfsError as exc:
            if exc.reason not in FILE_REASONS:
                # throttled, unreachable: the runner resumes the listing here, later
                raise RuntimeError(f"{exc.reason}: {exc}") from None
            return FailedFile(uri, parts, 0, 0, reason=exc.reason, message=str(exc))
        return UfsFile(uri, parts, info.length, info.mtime_ns, info.version)

    def each(self, named: Iterable[tuple[str, tuple[str, ...]]]) -> Iterator[UfsFile]:
        pool = ThreadPoolExecutor(STAT_THREADS, thread_name_prefix="manifest-stat")
        try:
            batch: list[tuple[str, tuple[str, ...]]] = []
            for item in named:
                batch.append(item)
                if len(batch) >= STAT_BATCH:
                    yield from self._batch(pool, batch)
                    batch = []
            yield from self._batch(pool, batch)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _batch(self, pool: ThreadPoolExecutor,
               batch: list[tuple[str, tuple[str, ...]]]) -> Iterable[UfsFile]:
        if not batch:
            return ()
        if all(is_local(uri) for uri, _ in batch):
            return [self.one(uri, parts) for uri, parts in batch]
        return list(pool.map(lambda item: self.one(*item), batch))


# ====================================================================== templates
class TemplateSource:
    def __init__(self, text: str, settings: UfsSettings, allowlist: PathAllowlist) -> None:
        self.template = parse_template(text)
        self.files_total = self.template.total
        self.bytes_total = 0
        self.stats = _Stats(settings, allowlist)

    def entries(self, after: tuple[str, ...], until: tuple[str, ...] = ()) -> Iterator[UfsFile]:
        start = int(after[0]) + 1 if after else 0
        stop = int(until[0]) + 1 if until else None
        named = ((name, template_parts(index)) for index, name in self.template.names(start, stop))
        return self.stats.each(named)


# ====================================================================== index files
def _lines(uri: str, chunks: Iterable[bytes], offset: int) -> Iterator[tuple[bytes, int]]:
    """(line without its newline, byte offset just after it), from ``offset`` on."""
    pending = b""
    for chunk in chunks:
        pending += chunk
        start = 0
        while (end := pending.find(b"\n", start)) >= 0:
            offset += end + 1 - start
            yield pending[start:end], offset
            start = end + 1
        pending = pending[start:]
        if len(pending) > MAX_LINE:
            raise ManifestError(f"{printable(uri)}: the line at byte {offset} is longer "
                                f"than {MAX_LINE} bytes")
    if pending:
        yield pending, offset + len(pending)


class IndexSource:
    """One path or URI a line; ``#`` comments and blank lines skipped."""

    def __init__(self, uri: str, settings: UfsSettings, allowlist: PathAllowlist,
                 ufs_root: str, *, count: bool = True) -> None:
        self.uri = uri
        self.ufs_root = ufs_root
        self.ufs = ufs_for(uri, settings)
        self.stats = _Stats(settings, allowlist)
        self.files_total = sum(1 for _ in self._paths(0, 0)) if count else 0
        self.bytes_total = 0

    def _paths(self, line: int, offset: int,
               stop: int | None = None) -> Iterator[tuple[str, tuple[str, ...]]]:
        chunks = (self.ufs.read(self.uri) if not offset
                  else _after_line_end(self.uri, self.ufs.read(self.uri, offset - 1), offset))
        for raw, end in _lines(self.uri, chunks, offset):
            line += 1
            if stop is not None and line >= stop:
                return
            path = index_entry(self.uri, raw, line, self.ufs_root)
            if path is not None:
                yield path, (f"{line:012d}", str(end))

    def entries(self, after: tuple[str, ...], until: tuple[str, ...] = ()) -> Iterator[UfsFile]:
        line, offset = (int(after[0]), int(after[1])) if after else (0, 0)
        stop = int(until[0]) + 1 if until else None
        try:
            yield from self.stats.each(self._paths(line, offset, stop))
        except ManifestError as exc:
            raise UfsError(Reason.INVALID_PATH, f"index file {exc}") from None


def _after_line_end(uri: str, chunks: Iterable[bytes], offset: int) -> Iterator[bytes]:
    """An index file's bytes from ``offset``, given them from ``offset - 1``, where a
    line must end: a position stored by a shard's plan or a checkpoint points at the
    start of a line. If the file was rewritten since, the byte there is most likely no
    newline (or the file is shorter), and reading on would take half a line for a path:
    that is ``UFS_CHANGED``, which fails the job, naming the file. (The last line of a
    file need not end with a newline: a single byte left there is that line's end.)"""
    rest = iter(chunks)
    head = b""
    for chunk in rest:
        head += chunk
        if len(head) > 1:
            break
    if not head or (head[:1] != b"\n" and len(head) > 1):
        raise UfsError(Reason.UFS_CHANGED, f"the index file {printable(uri)} changed since "
                       f"the job planned its reads: no line ends at byte {offset}; "
                       "rerun the job to read it from the start")
    yield head[1:]
    yield from rest


def index_entry(uri: str, raw: bytes, line: int, ufs_root: str) -> str | None:
    """The URI on ``line`` of the index file ``uri``; None for a blank or # line."""
    try:
        text = parse_index_line(raw, line)
        return None if text is None else resolve_path(text, ufs_root)
    except ManifestError as exc:
        raise ManifestError(f"{printable(uri)} {exc}") from None
    except UfsError as exc:  # a relative path with no alluxio.dora.client.ufs.root
        raise ManifestError(f"{printable(uri)} line {line}: {exc}") from None


def check_index(uri: str, config: Config, limit: int = CHECK_AT_SUBMIT) -> int:
    """Blocking, at submit: an inventory's manifest is parsed; an index file of at most
    ``limit`` bytes is read whole and every line checked (syntax, allowlist); a larger
    one is checked as the job reads it (a bad line then fails the job, naming it).
    Returns the number of lines read (-1: not read now)."""
    settings = UfsSettings.from_config(config)
    ufs = ufs_for(uri, settings)
    size = ufs.stat(uri).length
    if is_inventory_manifest(uri):
        if size > MANIFEST_MAX:
            raise ManifestError(f"{printable(uri)} is larger than {MANIFEST_MAX} bytes")
        parse_inventory_manifest(b"".join(ufs.read(uri)))
        return -1
    if size > limit:
        return -1
    allowlist = PathAllowlist.from_config(config)
    count = 0
    for raw, _ in _lines(uri, ufs.read(uri), 0):
        count += 1
        path = index_entry(uri, raw, count, config[Keys.UFS_ROOT])
        if path is None:
            continue
        if allowlist.enabled and not allowlist.admits(path):
            raise ManifestError(f"{printable(uri)} line {count}: {printable(path)} is outside "
                                f"alluxio.job.path.allowlist ({allowlist.describe()})")
    return count


# ====================================================================== S3 Inventory
class _ChunkReader(io.RawIOBase):
    """A file object over a UFS read, so gzip and csv can stream it."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        while not self._pending:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._pending = bytes(chunk)
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size


class InventorySource:
    """An S3 Inventory: ``manifest.json`` and its CSV or CSV.gz data files."""

    def __init__(self, uri: str, settings: UfsSettings, allowlist: PathAllowlist, *,
                 count: bool = True) -> None:
        self.uri = uri
        self.settings = settings
        self.allowlist = allowlist
        ufs = ufs_for(uri, settings)
        if ufs.stat(uri).length > MANIFEST_MAX:
            raise ManifestError(f"{printable(uri)} is larger than {MANIFEST_MAX} bytes")
        self.manifest = parse_inventory_manifest(b"".join(ufs.read(uri)))
        self.files = [self._data_uri(key) for key in self.manifest.files]
        self.scheme = uri.split("://", 1)[0] if not is_local(uri) else "s3"
        self.files_total = self.bytes_total = 0
        for row in self._rows(0, -1) if count else ():
            self.files_total += 1
            self.bytes_total += row.length

    def _data_uri(self, key: str) -> str:
        """A data file's key is in the manifest's bucket (the inventory's destination); a
        copy on local disk keeps the layout: the key lies under an ancestor directory."""
        if not is_local(self.uri):
            scheme, bucket, _ = split_uri(self.uri)
            return f"{scheme}://{bucket}/{key.lstrip('/')}"
        key = key.lstrip("/")
        head = key.split("/", 1)[0]
        directory = posixpath.dirname(self.uri)
        while posixpath.basename(directory) not in (head, ""):
            directory = posixpath.dirname(directory)
        base = posixpath.dirname(directory) if directory.endswith("/" + head) else (
            posixpath.dirname(self.uri))
        return f"{base}/{key}"

    def _rows(self, first_file: int, after_row: int) -> Iterator[UfsFile]:
        for number in range(first_file, len(self.files)):
            data_uri = self.files[number]
            chunks = ufs_for(data_uri, self.settings).read(data_uri)
            raw: Any = io.BufferedReader(_ChunkReader(iter(chunks)))
            if data_uri.endswith(".gz"):
                raw = gzip.GzipFile(fileobj=raw)
            text = io.TextIOWrapper(raw, encoding="utf-8", newline="")
            skip = after_row if number == first_file else -1
            try:
                for row_number, fields in enumerate(csv.reader(text)):
                    if row_number <= skip or not fields:
                        continue
                    where = f"{printable(data_uri)} row {row_number + 1}"
                    row = parse_inventory_row(fields, self.manifest.columns, self.scheme, where)
                    if row is not None:
                        yield UfsFile(row.uri, (f"{number:06d}", f"{row_number:012d}"),
                                   row.length, row.mtime_ns, row.version)
            except (UnicodeDecodeError, csv.Error, OSError, EOFError) as exc:
                raise ManifestError(f"{printable(data_uri)}: {exc}") from None

    def entries(self, after: tuple[str, ...], until: tuple[str, ...] = ()) -> Iterator[UfsFile]:
        first, row = (int(after[0]), int(after[1])) if after else (0, -1)
        try:
            for entry in self._rows(first, row):
                if until and entry.parts > until:
                    return
                if self.allowlist.enabled and not self.allowlist.admits(entry.uri):
                    yield FailedFile(entry.uri, entry.parts, 0, 0, reason=Reason.PERMISSION_DENIED,
                                     message=f"{printable(entry.uri)} is outside "
                                             "alluxio.job.path.allowlist")
                else:
                    yield entry
        except ManifestError as exc:
            raise UfsError(Reason.INVALID_PATH, f"inventory {exc}") from None
