"""A cache dir's index: one rocksdict that holds everything per file, so that a worker's
memory does not grow with the files it caches.

Key families, each behind a one-byte tag so that a family is one contiguous range::

    F<key>         -> [length, mtime_ns, seq, job_id, version, checksum]   a cached file
    A<seq>         -> [key, length, job_id]                       access order, oldest first
    M<key>         -> [length, mtime_ns, version, job_id, time]   a metadata-only record
    P<job_id>      -> time of the job's last task here            pins
    T              -> [bytes used, files]                         totals of the F family

``key`` is ``layout.index_key`` of the file's URI; ``seq`` is an 8-byte big-endian
number, larger for every access, so the A family iterates least recently used first
and eviction reads it from the start instead of keeping an LRU list in memory. Every
change to F, A and T is one ``WriteBatch``: after a crash they still agree.

An M record (``--metadata-only``) says what a file was when listed; it is no cached
data. Nothing that serves, skips, verifies or counts cached files reads it.

Keys written by older versions (the URI itself, no tag) are converted once, at startup.
An F record of an older version has no ``checksum`` (five fields): it reads as ``""``,
a file cached before checksums existed, *unverified* (``checksum.py``), not corrupt.

Blocking: call from a thread. One lock orders the read-modify-write of each method.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, cast

import msgpack
from rocksdict import BlockBasedOptions, Cache, Options, Rdict, WriteBatch

from alluxiojob.worker.layout import index_key

FILE = b"\x01"
ACCESS = b"\x02"
METADATA = b"\x03"
PIN = b"\x04"
TOTALS = b"\x05"
_LEGACY_FROM = b"\x06"  # untagged keys of older versions sort after every tag

# Memory the index may take, whatever the file count: rocksdb's memtables and block
# cache (its defaults allow 128 MiB of memtables alone).
WRITE_BUFFER = 8 * 1024 * 1024
BLOCK_CACHE = 8 * 1024 * 1024


def _enc(key: str) -> bytes:
    return key.encode("utf-8", "surrogateescape")


def _dec(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _pack(value: Any) -> bytes:
    packed: bytes = msgpack.packb(value, use_bin_type=True, unicode_errors="surrogateescape")
    return packed


def _unpack(raw: bytes) -> Any:
    return msgpack.unpackb(raw, raw=False, unicode_errors="surrogateescape")


def _seq_key(seq: int) -> bytes:
    return ACCESS + seq.to_bytes(8, "big")


@dataclass(frozen=True)
class IndexEntry:
    """A cached file: its length, its version when read (mtime, or an object's ETag),
    the job that loaded it, its place in the access order and its content checksum."""

    length: int
    mtime_ns: int
    job_id: str
    version: str = ""  # an object's ETag
    seq: int = 0
    checksum: str = ""  # "crc32c:<hex>"; "" for a file cached by an older version

    def pack(self, seq: int | None = None) -> bytes:
        """The F record; with ``seq``, as if ``seq`` were its place in the access order
        (what ``commit`` and ``touch`` write, without a copy of the entry per file)."""
        return _pack([self.length, self.mtime_ns, self.seq if seq is None else seq,
                      self.job_id, self.version, self.checksum])

    @classmethod
    def unpack(cls, raw: bytes) -> IndexEntry:
        fields = _unpack(raw)
        length, mtime_ns, seq, job_id, version = fields[:5]
        checksum = str(fields[5]) if len(fields) > 5 else ""
        return cls(int(length), int(mtime_ns), str(job_id), str(version), int(seq), checksum)

    def matches(self, length: int, mtime_ns: int, version: str) -> bool:
        """Still the listed file: same length, and same ETag (objects) or mtime (local)."""
        if self.length != length:
            return False
        return self.version == version if version else self.mtime_ns == mtime_ns


@dataclass(frozen=True)
class MetadataRecord:
    """What a ``--metadata-only`` LOAD recorded: the file as listed, no data."""

    length: int
    mtime_ns: int
    version: str
    job_id: str
    recorded_at: float

    def matches(self, length: int, mtime_ns: int, version: str) -> bool:
        if self.length != length:
            return False
        return self.version == version if version else self.mtime_ns == mtime_ns


@dataclass(frozen=True)
class Victim:
    key: str
    seq: int
    length: int


def _options() -> Options:
    options = Options(raw_mode=True)
    options.create_if_missing(True)
    options.set_write_buffer_size(WRITE_BUFFER)
    options.set_max_write_buffer_number(2)
    table = BlockBasedOptions()
    table.set_block_cache(Cache(BLOCK_CACHE))
    table.set_cache_index_and_filter_blocks(True)
    options.set_block_based_table_factory(table)
    options.set_max_open_files(256)
    return options


class CacheIndex:
    def __init__(self, path: str) -> None:
        self._db = Rdict(path, options=_options())
        self.lock = threading.RLock()  # CacheDir holds it across an index call
        self.used = 0  # bytes of the F family: mirrors T, which is written with every change
        self.files = 0
        self._seq = 0

    def close(self) -> None:
        with self.lock:
            self._db.close()

    # ------------------------------------------------------------------ startup
    def open(self) -> int:
        """Convert older keys, load the totals and the access counter; returns the files."""
        with self.lock:
            self._convert_legacy()
            totals = self._db.get(TOTALS)
            if totals is None:
                self.used, self.files = self._count()
                self._db.put(TOTALS, _pack([self.used, self.files]))
            else:
                self.used, self.files = (int(x) for x in _unpack(totals))
            last = 0
            for key in self._db.keys(backwards=True, from_key=ACCESS + b"\xff" * 8):
                if cast(bytes, key).startswith(ACCESS):
                    last = int.from_bytes(cast(bytes, key)[1:], "big")
                break
            self._seq = last
            return self.files

    def _count(self) -> tuple[int, int]:
        used = files = 0
        for _key, raw in self._range(FILE):
            used += IndexEntry.unpack(raw).length
            files += 1
        return used, files

    def _convert_legacy(self) -> None:
        """Entries of older versions (``uri -> [length, mtime, last_access, job, etag]``)
        become F and A records, in their old access order; a bounded batch at a time."""
        converted = 0
        while True:
            batch = WriteBatch(raw_mode=True)
            count = 0
            for key, raw in self._db.items(from_key=_LEGACY_FROM):
                count += 1
                converted += 1
                batch.delete(key)
                try:
                    fields = _unpack(raw)
                    uri = index_key(_dec(cast(bytes, key)))
                    # Old access order, by the millisecond; entries of one commit share
                    # a time, so a counter tells them apart.
                    seq = (int(float(fields[2]) * 1000) << 22) | (converted & (1 << 22) - 1)
                    entry = IndexEntry(int(fields[0]), int(fields[1]), str(fields[3]),
                                       str(fields[4]) if len(fields) > 4 else "", seq)
                except Exception:  # an unreadable old entry: its file goes as unindexed
                    continue
                batch.put(FILE + _enc(uri), entry.pack())
                batch.put(_seq_key(seq), _pack([uri, entry.length, entry.job_id]))
                if count >= 10_000:
                    break
            if not count:
                return
            batch.delete(TOTALS)  # recounted by open()
            self._db.write(batch)

    def _range(self, family: bytes, under: bytes = b"", after: bytes = b""
               ) -> Iterator[tuple[bytes, bytes]]:
        """The keys of ``family`` that start with ``under``, in order: a range scan;
        with ``after``, only the keys past ``family + after`` (where the scan starts)."""
        prefix = family + under
        start = max(prefix, family + after) if after else prefix
        for key, raw in self._db.items(from_key=start):
            if not cast(bytes, key).startswith(prefix):
                return
            if after and key == family + after:
                continue
            yield cast(bytes, key), cast(bytes, raw)

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _totals(self, batch: WriteBatch) -> None:
        batch.put(TOTALS, _pack([self.used, self.files]))

    # ------------------------------------------------------------------ cached files
    def lookup(self, key: str) -> IndexEntry | None:
        raw = self._db.get(FILE + _enc(key))
        return None if raw is None else IndexEntry.unpack(raw)

    def lookup_many(self, keys: list[str]) -> list[IndexEntry | None]:
        if not keys:
            return []
        return [None if raw is None else IndexEntry.unpack(raw) for raw in self._get_many(keys)]

    def known(self, keys: list[str]) -> list[bool]:
        """Which keys have an F record (startup: one multi-get per directory chunk)."""
        if not keys:
            return []
        return [raw is not None for raw in self._get_many(keys)]

    def _get_many(self, keys: list[str]) -> list[bytes | None]:
        raws = self._db.get([FILE + _enc(k) for k in keys])
        return cast(list[bytes | None], raws)

    def commit(self, entries: list[tuple[str, IndexEntry]]) -> None:
        """Record files whose data is in place, as most recently used."""
        batch = WriteBatch(raw_mode=True)
        with self.lock:
            olds = self.lookup_many([key for key, _ in entries])
            for (key, entry), old in zip(entries, olds, strict=True):
                if old is not None:
                    batch.delete(_seq_key(old.seq))
                    self.used -= old.length
                    self.files -= 1
                seq = self._next_seq()
                batch.put(FILE + _enc(key), entry.pack(seq))
                batch.put(_seq_key(seq), _pack([key, entry.length, entry.job_id]))
                self.used += entry.length
                self.files += 1
            self._totals(batch)
            self._db.write(batch)

    def touch(self, keys: list[str]) -> None:
        """Make these files the most recently used."""
        batch = WriteBatch(raw_mode=True)
        with self.lock:
            for key, entry in zip(keys, self.lookup_many(keys), strict=True):
                if entry is None:
                    continue
                seq = self._next_seq()
                batch.delete(_seq_key(entry.seq))
                batch.put(_seq_key(seq), _pack([key, entry.length, entry.job_id]))
                batch.put(FILE + _enc(key), entry.pack(seq))
            self._db.write(batch)

    def forget(self, keys: list[str], also_seqs: Iterable[int] = ()) -> list[tuple[str, int]]:
        """Drop F records (and their access entries, and any metadata record); returns
        (key, length) of the files that were indexed. Unlinking is the caller's."""
        batch = WriteBatch(raw_mode=True)
        forgotten: list[tuple[str, int]] = []
        with self.lock:
            for seq in also_seqs:
                batch.delete(_seq_key(seq))
            for key, entry in zip(keys, self.lookup_many(keys), strict=True):
                batch.delete(METADATA + _enc(key))
                if entry is None:
                    continue
                batch.delete(FILE + _enc(key))
                batch.delete(_seq_key(entry.seq))
                self.used -= entry.length
                self.files -= 1
                forgotten.append((key, entry.length))
            self._totals(batch)
            self._db.write(batch)
        return forgotten

    def victims(self, needed: int, pinned_jobs: set[str]) -> list[Victim] | None:
        """Least recently used files of jobs not pinned, freeing ``needed`` bytes; None if
        not enough can go."""
        chosen: list[Victim] = []
        freed = 0
        for key, raw in self._range(ACCESS):
            if freed >= needed:
                break
            name, length, job_id = _unpack(raw)
            if job_id in pinned_jobs:
                continue
            chosen.append(Victim(str(name), int.from_bytes(key[1:], "big"), int(length)))
            freed += int(length)
        return chosen if freed >= needed else None

    def under(self, prefix: str, after: str = "") -> Iterator[tuple[str, IndexEntry]]:
        """Cached files at ``prefix`` or below it (``prefix/...``), in key order: a range
        scan; every cached file for an empty ``prefix``; with ``after``, only the keys past
        it (the next page of a listing)."""
        if not prefix:
            for key, raw in self._range(FILE, after=_enc(after) if after else b""):
                yield _dec(key[1:]), IndexEntry.unpack(raw)
            return
        exact = self.lookup(prefix)
        if exact is not None and (not after or _enc(prefix) > _enc(after)):
            yield prefix, exact
        for key, raw in self._range(FILE, _enc(prefix.rstrip("/") + "/"), _enc(after)):
            yield _dec(key[1:]), IndexEntry.unpack(raw)

    # ------------------------------------------------------------------ metadata only
    def record_metadata(self, records: list[tuple[str, MetadataRecord]]) -> None:
        batch = WriteBatch(raw_mode=True)
        for key, r in records:
            batch.put(METADATA + _enc(key), _pack([r.length, r.mtime_ns, r.version, r.job_id,
                                                   r.recorded_at]))
        with self.lock:
            self._db.write(batch)

    def metadata(self, key: str) -> MetadataRecord | None:
        raw = self._db.get(METADATA + _enc(key))
        if raw is None:
            return None
        length, mtime_ns, version, job_id, recorded_at = _unpack(raw)
        return MetadataRecord(int(length), int(mtime_ns), str(version), str(job_id),
                              float(recorded_at))

    def metadata_under(self, prefix: str, after: str = "") -> Iterator[tuple[str, int]]:
        """(key, length) of the metadata records at ``prefix`` or below it, in key
        order; with ``after``, only the keys past it."""
        exact = self.metadata(prefix)
        if exact is not None and (not after or _enc(prefix) > _enc(after)):
            yield prefix, exact.length
        for key, raw in self._range(METADATA, _enc(prefix.rstrip("/") + "/"), _enc(after)):
            yield _dec(key[1:]), int(_unpack(raw)[0])

    # ------------------------------------------------------------------ pins
    def save_pins(self, pins: dict[str, float]) -> None:
        batch = WriteBatch(raw_mode=True)
        for job_id, when in pins.items():
            batch.put(PIN + _enc(job_id), _pack(when))
        with self.lock:
            self._db.write(batch)

    def drop_pins(self, job_ids: Iterable[str]) -> None:
        batch = WriteBatch(raw_mode=True)
        for job_id in job_ids:
            batch.delete(PIN + _enc(job_id))
        with self.lock:
            self._db.write(batch)

    def pins(self) -> dict[str, float]:
        return {_dec(key[1:]): float(_unpack(raw)) for key, raw in self._range(PIN)}
