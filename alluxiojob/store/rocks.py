"""Embedded RocksDB backend of the ``KVStore`` protocol (single coordinator).

Each value is stored as an 8-byte big-endian modification revision followed by the
payload; the last revision lives under a reserved key outside the job prefix. A
transaction runs as one WriteBatch in a worker thread under a lock, with ``sync`` writes,
so a state transition that was acknowledged survives a crash of the process or host.

Healing after a failed write: once a write fails (a full disk: ENOSPC), RocksDB keeps
the error and refuses every later write, even after space comes back, and rocksdict
offers no ``Resume()``. So the store remembers the failure, and the next write (or
health probe), at most once a second, closes the database and opens it again under
the same lock that serializes writes; reads that meet the closed handle retry on the
new one. A write that failed was never acknowledged, and what was acknowledged is in
the WAL, which the reopen replays. Every error leaves as ``Unavailable`` naming the
directory and RocksDB's message, never as a rocksdict exception.
"""

from __future__ import annotations

import struct
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import trio
from rocksdict import AccessType, Options, Rdict, WriteBatch, WriteOptions

from alluxiojob.core.errors import JobServiceError, Unavailable
from alluxiojob.store.kv import Compare, Delete, Entry, Op, Put, Txn

T = TypeVar("T")

_REVISION_KEY = b"\x00meta/revision"
_HEALTH_KEY = b"\x00meta/health"
_HEADER = struct.Struct(">Q")
_REOPEN_INTERVAL = 1.0  # seconds between attempts to heal a store that cannot write


class RocksKVStore:
    supports_leases = False

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise Unavailable(f"cannot create the RocksDB job store at {path}: {exc}") from None
        self._sync = WriteOptions()
        self._sync.sync = True
        self._lock = threading.Lock()
        self._limiter = trio.CapacityLimiter(4)
        self._db: Rdict | None = None
        try:
            self._db = self._open()
            self._revision = self._stored_revision(self._db)
        except Exception as exc:
            raise Unavailable(
                f"cannot open the RocksDB job store at {path}: {exc}. "
                "Is another coordinator using this alluxio.coordinator.job.meta.store.dir?"
            ) from None
        self._broken = ""  # why the last write failed, until one succeeds again
        self._next_heal = 0.0
        self._closed = False

    def _open(self) -> Rdict:
        options = Options(raw_mode=True)
        options.create_if_missing(True)
        return Rdict(str(self.path), options=options, access_type=AccessType.read_write())

    @staticmethod
    def _stored_revision(db: Rdict) -> int:
        raw = db.get(_REVISION_KEY)
        return int(_HEADER.unpack(raw)[0]) if raw is not None else 0

    @staticmethod
    def _entry(key: bytes, raw: bytes) -> Entry:
        return Entry(key=key, value=raw[_HEADER.size :], revision=_HEADER.unpack_from(raw)[0])

    # ------------------------------------------------------------------ healing
    def _heal_locked(self) -> None:
        """With the lock held: reopen a database whose writes failed (rate-limited)."""
        if not self._broken and self._db is not None:
            return
        now = time.monotonic()
        if now < self._next_heal:
            raise Unavailable(self._broken_message())
        self._next_heal = now + _REOPEN_INTERVAL
        old, self._db = self._db, None
        if old is not None:
            try:
                old.close()
            except Exception:  # it repeats the write error, and still releases the handle
                pass
        try:
            self._db = self._open()
            self._revision = max(self._revision, self._stored_revision(self._db))
        except Exception as exc:
            self._db = None
            self._broken = f"cannot reopen it: {exc}"
            raise Unavailable(self._broken_message()) from None

    def _broken_message(self) -> str:
        return f"the RocksDB job store at {self.path} cannot write: {self._broken}"

    def _current(self) -> Rdict:
        if self._closed:
            raise Unavailable("the RocksDB job store is closed")
        if self._db is None:
            raise Unavailable(self._broken_message())
        return self._db

    def _read(self, fn: Callable[[Rdict], T]) -> T:
        """Run a read; a handle closed by a concurrent reopen is retried on the new one."""
        db = self._current()
        try:
            return fn(db)
        except Exception:
            with self._lock:  # waits for a reopen in progress
                db = self._current()
            try:
                return fn(db)
            except Exception as exc:
                raise Unavailable(
                    f"the RocksDB job store at {self.path} cannot read: {exc}"
                ) from None

    # ------------------------------------------------------------------ sync bodies
    def _get_sync(self, key: bytes) -> Entry | None:
        def get(db: Rdict) -> Entry | None:
            raw = db.get(key)
            return None if raw is None else self._entry(key, raw)

        return self._read(get)

    @classmethod
    def _scan_db(
        cls, db: Rdict, prefix: bytes, start_after: bytes | None, limit: int
    ) -> list[Entry]:
        it = db.iter()
        it.seek(prefix if start_after is None or start_after < prefix else start_after)
        out: list[Entry] = []
        while it.valid():
            key: bytes = it.key()
            if not key.startswith(prefix):
                break
            if start_after is None or key > start_after:
                out.append(cls._entry(key, it.value()))
                if limit and len(out) >= limit:
                    break
            it.next()
        return out

    def _scan_sync(self, prefix: bytes, start_after: bytes | None, limit: int) -> list[Entry]:
        return self._read(lambda db: self._scan_db(db, prefix, start_after, limit))

    def _count_sync(self, prefix: bytes) -> int:
        def count(db: Rdict) -> int:
            it = db.iter()
            it.seek(prefix)
            found = 0
            while it.valid():
                key: bytes = it.key()
                if not key.startswith(prefix):
                    break
                found += 1
                it.next()
            return found

        return self._read(count)

    def _write_locked(self, db: Rdict, batch: WriteBatch) -> None:
        try:
            db.write(batch, self._sync)
        except Exception as exc:
            self._broken = str(exc) or type(exc).__name__
            raise Unavailable(self._broken_message()) from None
        self._broken = ""

    def _holds(self, db: Rdict, compares: Sequence[Compare]) -> bool:
        for compare in compares:
            raw = db.get(compare.key)
            revision = 0 if raw is None else _HEADER.unpack_from(raw)[0]
            if revision != compare.revision:
                return False
        return True

    def _apply_locked(self, db: Rdict, batch: WriteBatch, ops: Sequence[Op],
                      header: bytes) -> None:
        for op in ops:
            if isinstance(op, Put):
                batch.put(op.key, header + op.value)
            elif op.prefix:
                for entry in self._scan_db(db, op.key, None, 0):
                    batch.delete(entry.key)
            else:
                batch.delete(op.key)

    def _txn_each_sync(self, txns: Sequence[Txn]) -> list[int | None]:
        written: set[bytes] = set()
        for _, ops in txns:
            keys = {op.key for op in ops}
            if written & keys:
                raise JobServiceError("transactions of one batch write the same key")
            written |= keys
        with self._lock:
            self._heal_locked()
            db = self._current()
            try:
                return self._txn_each_locked(db, txns)
            except JobServiceError:
                raise
            except Exception as exc:
                raise Unavailable(
                    f"the RocksDB job store at {self.path} cannot read: {exc}"
                ) from None

    def _txn_each_locked(self, db: Rdict, txns: Sequence[Txn]) -> list[int | None]:
        holds = [self._holds(db, compares) for compares, _ in txns]
        if not any(holds):
            return [None] * len(txns)
        if not any(ops for (_, ops), ok in zip(txns, holds, strict=True) if ok):
            return [self._revision if ok else None for ok in holds]
        revision = self._revision + 1
        header = _HEADER.pack(revision)
        batch = WriteBatch(raw_mode=True)
        for (_, ops), ok in zip(txns, holds, strict=True):
            if ok:
                self._apply_locked(db, batch, ops, header)
        batch.put(_REVISION_KEY, header)
        self._write_locked(db, batch)
        self._revision = revision
        return [revision if ok else None for ok in holds]

    def _probe_sync(self) -> None:
        with self._lock:
            self._heal_locked()
            db = self._current()
            batch = WriteBatch(raw_mode=True)
            batch.put(_HEALTH_KEY, _HEADER.pack(self._revision))
            self._write_locked(db, batch)

    # ------------------------------------------------------------------ KVStore
    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        return await trio.to_thread.run_sync(fn, *args, limiter=self._limiter)

    async def get(self, key: bytes) -> Entry | None:
        return await self._run(self._get_sync, key)

    async def scan(
        self, prefix: bytes, *, start_after: bytes | None = None, limit: int = 0
    ) -> list[Entry]:
        return await self._run(self._scan_sync, prefix, start_after, limit)

    async def count(self, prefix: bytes) -> int:
        return await self._run(self._count_sync, prefix)

    async def txn(self, compares: Sequence[Compare], ops: Sequence[Op]) -> int | None:
        return (await self._run(self._txn_each_sync, [(compares, ops)]))[0]

    async def txn_each(self, txns: Sequence[Txn]) -> list[int | None]:
        if not txns:
            return []
        return await self._run(self._txn_each_sync, list(txns))

    async def probe(self) -> None:
        """One small sync write: what fails first when the disk is full."""
        await self._run(self._probe_sync)

    async def grant_lease(self, ttl: float) -> int:
        raise Unavailable("leases need the ETCD job store")

    async def keep_alive(self, lease: int) -> bool:
        raise Unavailable("leases need the ETCD job store")

    async def revoke(self, lease: int) -> None:
        raise Unavailable("leases need the ETCD job store")

    async def aclose(self) -> None:
        def close() -> None:
            with self._lock:
                if self._closed:
                    return
                self._closed = True
                db, self._db = self._db, None
                if db is not None:
                    try:
                        db.close()
                    except Exception:  # a failed last flush: the WAL has every write
                        pass

        await trio.to_thread.run_sync(close)


__all__ = ["RocksKVStore", "Delete", "Put"]
