"""An in-memory ``KVStore``, as trio ships ``trio.testing``: revisions, leases, no I/O.

It keeps what etcd keeps (a value and a modification revision per key, one revision
counter for the store, leases with a TTL) and judges lease expiry by
``trio.current_time()``, so that lease expiry and reclaims run on trio's
``autojump_clock`` in milliseconds. It passes the same conformance suite as the RocksDB
and etcd backends (``tests/store``). ``reopen()`` gives a second handle on the same data,
as a restarted coordinator would open the same RocksDB directory or etcd cluster;
``outage()`` makes every call fail with ``Unavailable`` for a while.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import trio

from alluxiojob.core.errors import InvalidArgument, Unavailable
from alluxiojob.store.kv import Compare, Delete, Entry, Op, Put, Txn


@dataclass
class _Lease:
    ttl: float
    expires: float
    keys: set[bytes] = field(default_factory=set)


@dataclass
class _Data:
    values: dict[bytes, tuple[bytes, int, int]] = field(default_factory=dict)  # value, rev, lease
    revision: int = 0
    leases: dict[int, _Lease] = field(default_factory=dict)
    next_lease: int = 1
    down_until: float = float("-inf")
    calls: int = 0


class MemoryKVStore:
    supports_leases = True

    def __init__(self, data: _Data | None = None) -> None:
        self._data = data or _Data()
        self._closed = False

    def reopen(self) -> MemoryKVStore:
        """Another handle on the same data (a restarted process, a second coordinator)."""
        return MemoryKVStore(self._data)

    def outage(self, seconds: float) -> None:
        """Every call fails with ``Unavailable`` for ``seconds`` of trio time."""
        self._data.down_until = trio.current_time() + seconds

    @property
    def calls(self) -> int:
        """Calls made on this data so far, by every handle."""
        return self._data.calls

    # ------------------------------------------------------------------ internals
    async def _enter(self) -> _Data:
        await trio.lowlevel.checkpoint()  # every call yields, as real I/O would
        data = self._data
        data.calls += 1
        if self._closed:
            raise Unavailable("the in-memory store is closed")
        if trio.current_time() < data.down_until:
            raise Unavailable("the in-memory store is unavailable (outage)")
        self._expire(data)
        return data

    @staticmethod
    def _expire(data: _Data) -> None:
        now = trio.current_time()
        for lease_id, lease in list(data.leases.items()):
            if lease.expires <= now:
                for key in lease.keys:
                    current = data.values.get(key)
                    if current is not None and current[2] == lease_id:
                        del data.values[key]
                del data.leases[lease_id]

    @staticmethod
    def _in_range(key: bytes, prefix: bytes, start_after: bytes | None) -> bool:
        return key.startswith(prefix) and (start_after is None or key > start_after)

    # ------------------------------------------------------------------ KVStore
    async def get(self, key: bytes) -> Entry | None:
        data = await self._enter()
        found = data.values.get(key)
        return None if found is None else Entry(key, found[0], found[1])

    async def scan(
        self, prefix: bytes, *, start_after: bytes | None = None, limit: int = 0
    ) -> list[Entry]:
        data = await self._enter()
        keys = sorted(k for k in data.values if self._in_range(k, prefix, start_after))
        if limit:
            keys = keys[:limit]
        return [Entry(k, data.values[k][0], data.values[k][1]) for k in keys]

    async def count(self, prefix: bytes) -> int:
        data = await self._enter()
        return sum(1 for key in data.values if key.startswith(prefix))

    async def txn(self, compares: Sequence[Compare], ops: Sequence[Op]) -> int | None:
        data = await self._enter()
        if not self._holds(data, compares):
            return None
        if not ops:
            return data.revision
        self._check_leases(data, ops)
        data.revision += 1
        self._apply(data, ops)
        return data.revision

    async def txn_each(self, txns: Sequence[Txn]) -> list[int | None]:
        data = await self._enter()
        holds = [self._holds(data, compares) for compares, _ in txns]
        for ok, (_, ops) in zip(holds, txns, strict=True):
            if ok:
                self._check_leases(data, ops)
        if any(holds):
            data.revision += 1
        for ok, (_, ops) in zip(holds, txns, strict=True):
            if ok:
                self._apply(data, ops)
        return [data.revision if ok else None for ok in holds]

    async def probe(self) -> None:
        await self._enter()

    @staticmethod
    def _holds(data: _Data, compares: Sequence[Compare]) -> bool:
        for compare in compares:
            found = data.values.get(compare.key)
            if (0 if found is None else found[1]) != compare.revision:
                return False
        return True

    @staticmethod
    def _check_leases(data: _Data, ops: Sequence[Op]) -> None:
        for op in ops:
            if isinstance(op, Put) and op.lease and op.lease not in data.leases:
                raise InvalidArgument(f"lease {op.lease} not found")

    @staticmethod
    def _apply(data: _Data, ops: Sequence[Op]) -> None:
        for op in ops:
            if isinstance(op, Put):
                data.values[op.key] = (op.value, data.revision, op.lease)
                if op.lease:
                    data.leases[op.lease].keys.add(op.key)
            elif isinstance(op, Delete) and op.prefix:
                for key in [k for k in data.values if k.startswith(op.key)]:
                    del data.values[key]
            else:
                data.values.pop(op.key, None)

    async def grant_lease(self, ttl: float) -> int:
        data = await self._enter()
        lease_id = data.next_lease
        data.next_lease += 1
        data.leases[lease_id] = _Lease(ttl, trio.current_time() + ttl)
        return lease_id

    async def keep_alive(self, lease: int) -> bool:
        data = await self._enter()
        found = data.leases.get(lease)
        if found is None:
            return False
        found.expires = trio.current_time() + found.ttl
        return True

    async def revoke(self, lease: int) -> None:
        data = await self._enter()
        found = data.leases.pop(lease, None)
        if found is not None:
            for key in found.keys:
                current = data.values.get(key)
                if current is not None and current[2] == lease:
                    del data.values[key]

    async def aclose(self) -> None:
        self._closed = True
