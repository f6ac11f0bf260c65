"""Fixtures running the store conformance suite against RocksDB and a real etcd."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from alluxiojob.store.etcd import EtcdKVStore
from alluxiojob.store.jobs import JobStore
from alluxiojob.store.kv import KVStore
from alluxiojob.store.rocks import RocksKVStore
from alluxiojob.testing.etcd import EtcdServer
from alluxiojob.testing.kv import MemoryKVStore


class Backend:
    """Opens (and reopens) KV stores of one kind over the same storage."""

    def __init__(self, kind: str, rocks_dir: Path, etcd: EtcdServer | None) -> None:
        self.kind = kind
        self.rocks_dir = rocks_dir
        self.etcd = etcd
        self.opened: list[KVStore] = []
        self.memory = MemoryKVStore()

    def open(self) -> KVStore:
        store: KVStore
        if self.kind == "rocks":
            store = RocksKVStore(self.rocks_dir)
        elif self.kind == "memory":  # the test double must behave as the real stores do
            store = self.memory.reopen()
        else:
            assert self.etcd is not None
            store = EtcdKVStore([self.etcd.url], read_timeout=5, write_timeout=5, max_retries=2)
        self.opened.append(store)
        return store

    async def aclose(self) -> None:
        for store in reversed(self.opened):
            await store.aclose()


@pytest.fixture(scope="session")
def etcd_server() -> Iterator[EtcdServer]:
    """One etcd for the session, fsyncing as in production; tests use unique prefixes."""
    with EtcdServer() as server:
        yield server


@pytest.fixture(params=["rocks", "etcd", "memory"])
def backend_kind(request: pytest.FixtureRequest) -> tuple[str, EtcdServer | None]:
    """The backend of this run; the etcd server starts only if an etcd run needs it."""
    kind: str = request.param
    server = request.getfixturevalue("etcd_server") if kind == "etcd" else None
    return kind, server


@pytest.fixture
async def backend(
    backend_kind: tuple[str, EtcdServer | None], tmp_path: Path
) -> AsyncIterator[Backend]:
    backend = Backend(backend_kind[0], tmp_path / "rocks", backend_kind[1])
    try:
        yield backend
    finally:
        await backend.aclose()


@pytest.fixture
def kv(backend: Backend) -> KVStore:
    return backend.open()


@pytest.fixture
def prefix() -> str:
    """A key prefix no other test uses (the etcd server is shared)."""
    return f"/t/{uuid.uuid4().hex}/"


@pytest.fixture
def jobs(kv: KVStore, prefix: str) -> JobStore:
    return JobStore(kv, prefix=prefix)
