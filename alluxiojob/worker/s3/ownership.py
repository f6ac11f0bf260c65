"""Which worker owns a path: the coordinators' hash ring, seen from a worker.

The members are read the way the coordinators read them (the STATIC file, reread when
it changes; or the ETCD registrations under their leases), and the ring is the same
``HashRing`` over the same worker ids keyed by the same URIs, so a path is served by
the worker a LOAD put it on. A member's S3 address is its host with the S3 port it
announces: in its ETCD registration, or as ``s3=PORT`` (``s3s=PORT`` for HTTPS) after
its address in the STATIC file (``http=PORT``: Alluxio's worker HTTP API); else this
worker's own ports (one port per cluster).
File reads and etcd calls run off the event loop.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass
from pathlib import Path

import structlog
import trio

from alluxiojob.coordinator.membership import ETCD_POLL_INTERVAL, read_static_members
from alluxiojob.core.errors import describe_error
from alluxiojob.core.ring import HashRing
from alluxiojob.store.kv import KVStore

log = structlog.get_logger("alluxiojob.worker.s3")

STATIC_POLL_INTERVAL = 2.0


@dataclass(frozen=True)
class Peer:
    worker_id: str
    host: str
    port: int  # plain S3 port; 0 when it serves HTTPS only
    https_port: int  # 0 when it has no HTTPS port
    http_port: int = 0  # Alluxio's worker HTTP API (alluxiofs)

    def address(self, https: bool) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.https_port if https else self.port}"


def host_of(worker_id: str) -> str:
    return worker_id.rsplit(":", 1)[0].strip("[]")


class Ownership:
    def __init__(self, worker_id: str, port: int, https_port: int, http_port: int = 0, *,
                 static_file: Path | None = None, kv: KVStore | None = None,
                 etcd_prefix: str = "") -> None:
        self.worker_id = worker_id
        self._ports = (port, https_port, http_port)
        self._static_file = static_file
        self._kv = kv
        self._etcd_prefix = etcd_prefix
        self.ring = HashRing([])
        self.peers: dict[str, Peer] = {}

    def owner(self, uri: str) -> Peer | None:
        """The owner of ``uri`` when it is another worker; None for this one (or none)."""
        if not self.ring.workers:
            return None
        owner = self.ring.owner(uri)
        return None if owner == self.worker_id else self.peers.get(owner)

    def owner_of(self, uri: str) -> Peer:
        """The owner of ``uri``, this worker included."""
        return self.owner(uri) or Peer(self.worker_id, host_of(self.worker_id), *self._ports)

    def addresses(self) -> set[str]:
        """Every member's S3 addresses, this worker's included (redirect markers)."""
        found = set()
        for peer in self.peers.values():
            for https in (False, True):
                if (peer.https_port if https else peer.port):
                    found.add(peer.address(https))
        return found

    def _apply(self, members: dict[str, tuple[int, int, int]]) -> None:
        if set(members) == set(self.peers) and all(
                (self.peers[w].port, self.peers[w].https_port, self.peers[w].http_port) == ports
                for w, ports in members.items()):
            return
        self.peers = {w: Peer(w, host_of(w), *ports) for w, ports in members.items()}
        self.ring = HashRing(self.peers)
        if self.worker_id not in self.peers and self.peers:
            log.warning("this worker is not in the membership it reads; it proxies every "
                        "object request to the owners", worker=self.worker_id)
        log.info("S3 API membership", workers=len(self.peers))

    def _static_members(self) -> dict[str, tuple[int, int, int]]:
        assert self._static_file is not None
        members = {}
        for address, attributes in read_static_members(self._static_file):
            try:
                port = int(attributes.get("s3", self._ports[0]))
                https_port = int(attributes.get("s3s", self._ports[1]))
                http_port = int(attributes.get("http", self._ports[2]))
            except ValueError:
                raise ValueError(f"{self._static_file}: s3=, s3s= and http= take port "
                                 f"numbers ({address})") from None
            members[address] = (port, https_port, http_port)
        return members

    async def _etcd_members(self) -> dict[str, tuple[int, int, int]]:
        assert self._kv is not None
        prefix = self._etcd_prefix.encode()
        members = {}
        for entry in await self._kv.scan(prefix):
            worker_id = entry.key[len(prefix):].decode()
            try:
                value = json.loads(entry.value)
                ports = (int(value.get("s3", 0)), int(value.get("s3s", 0)),
                         int(value.get("http", 0)))
            except (ValueError, AttributeError, TypeError):
                ports = self._ports
            members[worker_id] = ports
        return members

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        if self._static_file is not None:
            path = self._static_file
            try:
                self._apply(await trio.to_thread.run_sync(self._static_members))
            except (OSError, ValueError) as exc:
                log.warning("cannot read the worker list; serving every path here",
                            error=str(exc))
            task_status.started()
            last = None
            while True:
                try:
                    mtime = (await trio.to_thread.run_sync(os.stat, path)).st_mtime_ns
                    if mtime != last:
                        last = mtime
                        self._apply(await trio.to_thread.run_sync(self._static_members))
                except (OSError, ValueError) as exc:
                    log.warning("cannot reread the worker list; keeping the current one",
                                error=str(exc))
                await trio.sleep(STATIC_POLL_INTERVAL)
        elif self._kv is not None:
            started = False
            while True:
                try:
                    self._apply(await self._etcd_members())
                except Exception as exc:
                    log.warning("cannot read worker registrations; keeping the current "
                                "members", error=describe_error(exc))
                if not started:
                    started = True
                    task_status.started()
                await trio.sleep(ETCD_POLL_INTERVAL * random.uniform(0.8, 1.2))
        else:
            task_status.started()
