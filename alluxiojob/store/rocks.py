"""Embedded RocksDB backend of the ``KVStore`` protocol (single coordinator).

Each value is stored as an 8-byte big-endian modification revision followed by the
payload; the last revision lives under a reserved key outside the job prefix. A
transaction runs as one WriteBatch in a worker thread under a lock, with ``sync`` writes,
so a state transition that was acknowledged survives a crash of the process or host.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Sequence
from pathlib import Path

import trio
from rocksdict import AccessType, Options, Rdict, WriteBatch, WriteOptions

from alluxiojob.core.errors import Unavailable
from alluxiojob.store.kv import Compare, Delete, Entry, Op, Put

_REVISION_KEY = b"\x00meta/revision"
_HEADER = struct.Struct(">Q")


class RocksKVStore:
    supports_leases = False

    def __init__(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        options = Options(raw_mode=True)
        options.create_if_missing(True)
        try:
            self._db = Rdict(str(path), options=options, access_type=AccessType.read_write())
        except Exception as exc:
            raise Unavailable(
                f"cannot open the RocksDB job store at {path}: {exc}. "
                "Is another coordinator using this alluxio.coordinator.job.meta.store.dir?"
            ) from None
        self._sync = WriteOptions()
        self._sync.sync = True
        self._lock = threading.Lock()
        self._limiter = trio.CapacityLimiter(4)
        raw = self._db.get(_REVISION_KEY)
        self._revision = _HEADER.unpack(raw)[0] if raw is not None else 0
        self._closed = False

    @staticmethod
    def _entry(key: bytes, raw: bytes) -> Entry:
        return Entry(key=key, value=raw[_HEADER.size :], revision=_HEADER.unpack_from(raw)[0])

    def _get_sync(self, key: bytes) -> Entry | None:
        raw = self._db.get(key)
        return None if raw is None else self._entry(key, raw)

    def _scan_sync(self, prefix: bytes, start_after: bytes | None, limit: int) -> list[Entry]:
        it = self._db.iter()
        it.seek(prefix if start_after is None or start_after < prefix else start_after)
        out: list[Entry] = []
        while it.valid():
            key: bytes = it.key()
            if not key.startswith(prefix):
                break
            if start_after is None or key > start_after:
                out.append(self._entry(key, it.value()))
                if limit and len(out) >= limit:
                    break
            it.next()
        return out

    def _count_sync(self, prefix: bytes) -> int:
        it = self._db.iter()
        it.seek(prefix)
        count = 0
        while it.valid():
            key: bytes = it.key()
            if not key.startswith(prefix):
                break
            count += 1
            it.next()
        return count

    def _txn_sync(self, compares: Sequence[Compare], ops: Sequence[Op]) -> int | None:
        with self._lock:
            if self._closed:
                raise Unavailable("the RocksDB job store is closed")
            for compare in compares:
                current = self._get_sync(compare.key)
                revision = 0 if current is None else current.revision
                if revision != compare.revision:
                    return None
            if not ops:
                return self._revision
            revision = self._revision + 1
            batch = WriteBatch(raw_mode=True)
            header = _HEADER.pack(revision)
            for op in ops:
                if isinstance(op, Put):
                    batch.put(op.key, header + op.value)
                elif op.prefix:
                    for entry in self._scan_sync(op.key, None, 0):
                        batch.delete(entry.key)
                else:
                    batch.delete(op.key)
            batch.put(_REVISION_KEY, header)
            self._db.write(batch, self._sync)
            self._revision = revision
            return revision

    async def get(self, key: bytes) -> Entry | None:
        return await trio.to_thread.run_sync(self._get_sync, key, limiter=self._limiter)

    async def scan(
        self, prefix: bytes, *, start_after: bytes | None = None, limit: int = 0
    ) -> list[Entry]:
        return await trio.to_thread.run_sync(
            self._scan_sync, prefix, start_after, limit, limiter=self._limiter
        )

    async def count(self, prefix: bytes) -> int:
        return await trio.to_thread.run_sync(self._count_sync, prefix, limiter=self._limiter)

    async def txn(self, compares: Sequence[Compare], ops: Sequence[Op]) -> int | None:
        return await trio.to_thread.run_sync(
            self._txn_sync, compares, ops, limiter=self._limiter
        )

    async def grant_lease(self, ttl: float) -> int:
        raise Unavailable("leases need the ETCD job store")

    async def keep_alive(self, lease: int) -> bool:
        raise Unavailable("leases need the ETCD job store")

    async def revoke(self, lease: int) -> None:
        raise Unavailable("leases need the ETCD job store")

    async def aclose(self) -> None:
        def close() -> None:
            with self._lock:
                if not self._closed:
                    self._closed = True
                    self._db.close()

        await trio.to_thread.run_sync(close)


__all__ = ["RocksKVStore", "Delete", "Put"]
