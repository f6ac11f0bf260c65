"""Liveness keys under a lease: coordinators and (ETCD membership) workers.

A live process keeps ``<root>coordinators/<id>`` or ``<root>workers/<id>`` under a
lease whose TTL is the failure-detection timeout, refreshing it every third of the
TTL. A process that dies, pauses or is cut off stops refreshing; etcd drops the key
when the lease expires, and that absence is what peers act on. A refresh that finds
its lease gone (etcd was down longer than the TTL, or the process was paused)
registers again under a new lease.
"""

from __future__ import annotations

import structlog
import trio

from alluxiojob.core.errors import describe_error
from alluxiojob.store.kv import KVStore, Put

log = structlog.get_logger("alluxiojob.liveness")


def liveness_root(job_prefix: str) -> str:
    """``/alluxio/jobs/`` -> ``/alluxio/``: liveness keys sit beside the job keys."""
    trimmed = job_prefix.rstrip("/")
    parent = trimmed.rsplit("/", 1)[0] if "/" in trimmed else ""
    return parent + "/"


class LeaseRegistration:
    def __init__(self, kv: KVStore, key: str, value: bytes, ttl: float) -> None:
        self.kv = kv
        self.key = key.encode()
        self.value = value
        self.ttl = ttl
        self.registered = False
        self._last_error = ""

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Keep the key alive until cancelled; never blocks startup on etcd."""
        task_status.started()
        interval = max(0.05, self.ttl / 3)
        try:
            while True:
                try:
                    lease = await self.kv.grant_lease(self.ttl)
                    await self.kv.txn([], [Put(self.key, self.value, lease)])
                    self._ok("registered")
                    while True:
                        await trio.sleep(interval)
                        if not await self.kv.keep_alive(lease):
                            self.registered = False
                            log.warning("liveness lease expired; registering again",
                                        key=self.key.decode())
                            break
                        self._ok("lease refreshed")
                except Exception as exc:
                    self.registered = False
                    message = describe_error(exc)
                    if message != self._last_error:
                        log.warning("cannot refresh liveness", key=self.key.decode(),
                                    error=message)
                    self._last_error = message
                    await trio.sleep(interval)
        finally:
            self.registered = False

    def _ok(self, what: str) -> None:
        if not self.registered or self._last_error:
            log.info(f"liveness {what}", key=self.key.decode(), ttl=self.ttl)
        self.registered = True
        self._last_error = ""


async def live_ids(kv: KVStore, prefix: str) -> set[str]:
    encoded = prefix.encode()
    return {entry.key[len(encoded):].decode() for entry in await kv.scan(encoded)}
