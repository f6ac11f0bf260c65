"""Membership: the coordinator's current workers, their clients and placement rings.

``Membership`` reads the worker list (STATIC: a file of ``host:port`` lines, reread when
it changes; ETCD: registrations under a lease) and rebuilds the rings on change. A
worker that is *down* (``WorkerClient.unreachable_since``, ``workers.py``) leaves the
ring used for placement (``Membership.placement``), so that its share of a job goes to
the next live owner, and it rejoins as soon as it answers again.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import structlog
import trio

from alluxiojob.coordinator.workers import WorkerClient
from alluxiojob.core.backoff import jittered
from alluxiojob.core.errors import describe_error
from alluxiojob.core.ledger import Placement
from alluxiojob.core.ring import HashRing
from alluxiojob.store.kv import KVStore
from alluxiojob.store.liveness import live_ids

log = structlog.get_logger("alluxiojob.coordinator")

ETCD_POLL_INTERVAL = 1.0


def read_static_members(path: Path) -> list[tuple[str, dict[str, str]]]:
    """``host:port [name=value ...]`` lines: each worker and its attributes (such as
    ``s3=29998``, its S3 port); blank lines and ``#`` comments ignored."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(
            f"worker list {path} not found (alluxio.worker.static.config.file)"
        ) from None
    workers: list[tuple[str, dict[str, str]]] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        tokens = line.split("#", 1)[0].split()
        if not tokens:
            continue
        entry = tokens[0]
        host, sep, port = entry.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{path}:{lineno}: expected host:port, got {entry!r}")
        attributes: dict[str, str] = {}
        for token in tokens[1:]:
            name, sep, value = token.partition("=")
            if not sep or not name:
                raise ValueError(f"{path}:{lineno}: expected name=value after the address, "
                                 f"got {token!r}")
            attributes[name] = value
        workers.append((entry, attributes))
    return workers


def read_static_workers(path: Path) -> list[str]:
    """The ``host:port`` of each worker in a STATIC membership file."""
    return [address for address, _ in read_static_members(path)]


class Membership:
    """The current workers, their clients, and the hash rings built over them.

    ``ring`` holds every member; ``placement()`` gives the ring of live members (all of
    them when none is live, so that work fails as unreachable rather than waits).
    """

    def __init__(
        self,
        make_client: Callable[[str, Callable[[], None]], WorkerClient],
        static_file: Path | None,
        kv: KVStore | None = None,
        etcd_prefix: str = "",
    ) -> None:
        self._make_client = make_client
        self._static_file = static_file
        self._kv = kv
        self._etcd_prefix = etcd_prefix
        self.clients: dict[str, WorkerClient] = {}
        self._scopes: dict[str, trio.CancelScope] = {}
        self.ring = HashRing([])
        self.live_ring = self.ring
        self._placement = Placement(self.live_ring, self.ring.workers, self.ring)
        self.changed = trio.Event()
        self._nursery: trio.Nursery | None = None

    def client(self, worker_id: str) -> WorkerClient | None:
        return self.clients.get(worker_id)

    @property
    def members(self) -> tuple[str, ...]:
        return self.ring.workers

    def placement(self) -> Placement:
        if self._placement.ring is not self.live_ring or self._placement.members != self.members:
            self._placement = Placement(self.live_ring, self.ring.workers, self.ring)
        return self._placement

    def down_changed(self) -> None:
        """A client went down or came back: rebuild the live ring if its members differ."""
        live = self._live_ring()
        if live.workers != self.live_ring.workers:
            self.live_ring = live
            self._notify()

    def _live_ring(self) -> HashRing:
        live = [w for w, client in self.clients.items() if not client.down]
        if not live or len(live) == len(self.clients):
            return self.ring
        return HashRing(live)

    def _notify(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    async def _run_client(self, client: WorkerClient, scope: trio.CancelScope) -> None:
        with scope:
            await client.run()

    def update(self, workers: Sequence[str]) -> None:
        """Apply a new member list: start and stop clients, rebuild the ring."""
        assert self._nursery is not None
        wanted = set(workers)
        if not wanted and self.clients and self._kv is not None:
            log.warning("no worker is registered in etcd")
        if wanted == set(self.clients):
            return
        for worker_id in set(self.clients) - wanted:
            self._scopes.pop(worker_id).cancel()
            del self.clients[worker_id]
            log.info("worker left", worker=worker_id)
        for worker_id in sorted(wanted - set(self.clients)):
            client = self._make_client(worker_id, self.down_changed)
            scope = trio.CancelScope()
            self.clients[worker_id] = client
            self._scopes[worker_id] = scope
            self._nursery.start_soon(self._run_client, client, scope)
            log.info("worker joined", worker=worker_id)
        self.ring = HashRing(self.clients)
        self.live_ring = self._live_ring()
        self._notify()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            if self._static_file is not None:
                self.update(await trio.to_thread.run_sync(read_static_workers, self._static_file))
                nursery.start_soon(self._watch_static_file, self._static_file)
            elif self._kv is not None:
                with trio.move_on_after(ETCD_POLL_INTERVAL * 5):
                    await self._poll_etcd_once(self._kv)
                nursery.start_soon(self._poll_etcd, self._kv)
            task_status.started()

    async def _poll_etcd_once(self, kv: KVStore) -> None:
        try:
            self.update(sorted(await live_ids(kv, self._etcd_prefix)))
        except Exception as exc:
            log.warning("cannot read worker registrations; keeping the current members",
                        error=describe_error(exc))

    async def _poll_etcd(self, kv: KVStore) -> None:
        """ETCD membership: registered workers (under a lease) are the members."""
        while True:
            await trio.sleep(jittered(ETCD_POLL_INTERVAL))
            await self._poll_etcd_once(kv)

    async def _watch_static_file(self, path: Path) -> None:
        """Reread the worker list when its mtime changes (file reads in a thread)."""
        last = (await trio.to_thread.run_sync(os.stat, path)).st_mtime_ns
        while True:
            await trio.sleep(2.0)
            try:
                mtime = (await trio.to_thread.run_sync(os.stat, path)).st_mtime_ns
                if mtime != last:
                    last = mtime
                    self.update(await trio.to_thread.run_sync(read_static_workers, path))
            except (OSError, ValueError) as exc:
                log.warning("cannot reread the worker list; keeping the current one",
                            error=str(exc))
