"""Liveness keys under a lease: coordinators and (ETCD membership) workers.

A live process keeps ``<root>coordinators/<id>`` or ``<root>workers/<id>`` under a
lease whose TTL is the failure-detection timeout, refreshing it every third of the
TTL. A process that dies, pauses or is cut off stops refreshing; etcd drops the key
when the lease expires, and that absence is what peers act on. A refresh that finds
its lease gone (etcd was down longer than the TTL, or the process was paused)
registers again under a new lease. A process that stops cleanly revokes its lease, so
its key goes at once.

One id, one process (``exclusive``, for coordinators): the key is only ever created
with a compare "absent", and its value names this process instance (a random token,
with host and pid for the error message). Finding the key held by another instance
is not enough to refuse: after a crash, the previous process's key outlives it by up
to one TTL, and a quick restart under the same id is normal (it then requeues its own
jobs). So the newcomer waits: if the key goes away within the TTL (plus a margin for
etcd's expiry checks), the old holder was dead and the id is taken over; if it is
still there, a live coordinator keeps refreshing it and this one refuses to run with
``DuplicateId``, which names the id and ``alluxio.coordinator.id``.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid

import structlog
import trio

from alluxiojob.core.errors import InvalidArgument, describe_error
from alluxiojob.store.kv import Compare, KVStore, Put

log = structlog.get_logger("alluxiojob.liveness")

_EXPIRY_MARGIN = 2.0  # etcd checks lease expiry periodically, not at the exact instant


class DuplicateId(InvalidArgument):
    """Another live process holds this id: running a second one would corrupt its jobs."""


def liveness_root(job_prefix: str) -> str:
    """``/alluxio/jobs/`` -> ``/alluxio/``: liveness keys sit beside the job keys."""
    trimmed = job_prefix.rstrip("/")
    parent = trimmed.rsplit("/", 1)[0] if "/" in trimmed else ""
    return parent + "/"


def instance_value(process_id: str) -> bytes:
    """A liveness value that names this process instance and no other."""
    return json.dumps({
        "id": process_id,
        "instance": uuid.uuid4().hex,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": time.time(),
    }, sort_keys=True).encode()


def _holder(value: bytes) -> str:
    try:
        data = json.loads(value)
        return f"pid {data['pid']} on {data['host']}"
    except (ValueError, KeyError, TypeError):
        return "another process"


class LeaseRegistration:
    def __init__(
        self,
        kv: KVStore,
        key: str,
        value: bytes,
        ttl: float,
        *,
        exclusive: bool = False,
        setting: str = "alluxio.coordinator.id",
    ) -> None:
        self.kv = kv
        self.key = key.encode()
        self.value = value
        self.ttl = ttl
        self.exclusive = exclusive
        self.setting = setting  # the property that names the id, for the error message
        self.registered = False
        self.acquired = trio.Event()  # set once this process first held the key
        self._last_error = ""

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Keep the key alive until cancelled.

        Startup waits for the first registration only while it can answer: a refused
        id raises ``DuplicateId`` before ``started``; an unreachable etcd does not hold
        startup back (the loop keeps trying, and ``acquired`` stays unset).
        """
        interval = max(0.05, self.ttl / 3)
        started = False
        lease = 0
        try:
            while True:
                try:
                    lease = await self._register()
                    self._ok("registered")
                    self.acquired.set()
                    if not started:
                        task_status.started()
                        started = True
                    while True:
                        await trio.sleep(interval)
                        if not await self.kv.keep_alive(lease):
                            self.registered = False
                            log.warning("liveness lease expired; registering again",
                                        key=self.key.decode())
                            break
                        self._ok("lease refreshed")
                except DuplicateId:
                    raise
                except Exception as exc:
                    self.registered = False
                    message = describe_error(exc)
                    if message != self._last_error:
                        log.warning("cannot refresh liveness", key=self.key.decode(),
                                    error=message)
                    self._last_error = message
                    if not started:
                        task_status.started()
                        started = True
                    await trio.sleep(interval)
        finally:
            self.registered = False
            if lease:
                # A clean stop frees the id at once for a restart.
                with trio.move_on_after(1) as scope:
                    scope.shield = True
                    try:
                        await self.kv.revoke(lease)
                    except Exception as exc:
                        log.info("liveness lease not revoked", error=describe_error(exc))

    async def _register(self) -> int:
        """Put the key under a new lease; exclusive: only once no other instance holds it."""
        if not self.exclusive:
            lease = await self.kv.grant_lease(self.ttl)
            await self.kv.txn([], [Put(self.key, self.value, lease)])
            return lease
        deadline = trio.current_time() + self.ttl + _EXPIRY_MARGIN
        waited = False
        while True:
            held = await self.kv.get(self.key)
            if held is None:
                lease = await self.kv.grant_lease(self.ttl)
                put = Put(self.key, self.value, lease)
                if await self.kv.txn([Compare(self.key, 0)], [put]) is not None:
                    if waited:
                        log.info("took over an id whose previous holder is gone",
                                 key=self.key.decode())
                    return lease
                await self.kv.revoke(lease)  # someone was quicker: look again
                continue
            # Held by an earlier instance, or by this one after an answer was lost (that
            # key expires too: we do not know its lease).
            if held.value != self.value and trio.current_time() > deadline:
                name = self.key.decode().rsplit("/", 1)[-1]
                raise DuplicateId(
                    f"another coordinator is running with {self.setting}={name} "
                    f"({_holder(held.value)} keeps {self.key.decode()} alive); stop it, "
                    f"or give this one a different {self.setting}"
                )
            if not waited:
                log.warning("the id is held by another instance; waiting for its lease to "
                            "expire", key=self.key.decode(), holder=_holder(held.value),
                            up_to_seconds=round(self.ttl + _EXPIRY_MARGIN, 1))
                waited = True
            await trio.sleep(min(0.25, self.ttl / 10))

    def _ok(self, what: str) -> None:
        if not self.registered or self._last_error:
            log.info(f"liveness {what}", key=self.key.decode(), ttl=self.ttl)
        self.registered = True
        self._last_error = ""


async def live_ids(kv: KVStore, prefix: str) -> set[str]:
    encoded = prefix.encode()
    return {entry.key[len(encoded):].decode() for entry in await kv.scan(encoded)}
