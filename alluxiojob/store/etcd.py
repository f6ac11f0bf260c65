"""etcd v3 backend of the ``KVStore`` protocol (several coordinators share one store).

Theory of operation
-------------------
The store speaks gRPC to etcd through the ``etcd3`` library (see ``etcd_rpc``). Its
calls block, so each one runs in a worker thread (``trio.to_thread.run_sync`` under a
``CapacityLimiter``) and carries a gRPC deadline: the read timeout for ranges, the
write timeout for transactions and lease calls. When trio stops waiting (a cancel
scope, the deadline below) the thread is abandoned and keeps running until its own gRPC
deadline, so no call outlives its timeout and no thread piles up without bound.

Failover: one gRPC channel per configured member. A call that cannot connect, times
out, or gets etcd's "unavailable" answers (no leader, leader changed, request timed
out, too many requests) moves on to the next member; the member that answered last is
tried first next time. A channel that failed to connect fails calls at once until its
reconnect backoff (at most 250 ms) ends; the pause between passes is longer than that,
so a member that is just restarting is tried again for real. After ``max_retries``
further passes the call raises ``Unavailable`` naming the members and each one's
error. Errors etcd reports about the request itself (a lease that no longer exists,
too many operations in one transaction) are not retried. No ``grpc`` or ``etcd3``
exception escapes this module.

Retried writes: a transaction whose answer was lost (a timeout, a connection dropped
after the request was sent) may nevertheless have been applied, and it is sent again.
This is safe because every transaction the job store makes is a compare-and-swap on
modification revisions: if the first attempt was applied, the second one's compares
fail and nothing is written twice. To avoid reporting a write that did happen as a
lost race, a retried transaction whose compares failed is checked once: if every key
it puts now holds exactly the value it put, all at one revision newer than every
compared revision, and every key it deletes is absent, the earlier attempt was applied
and its revision is returned.
"""

from __future__ import annotations

import functools
import math
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

import trio

from alluxiojob.core.backoff import backoff_delay
from alluxiojob.core.errors import (
    InvalidArgument,
    JobServiceError,
    NotFound,
    Unavailable,
    describe_error,
)
from alluxiojob.store.etcd_rpc import EtcdEndpoint, EtcdMember, EtcdRpcError, KeyValue
from alluxiojob.store.kv import Compare, Delete, Entry, Op, Put, Txn, prefix_end

if TYPE_CHECKING:
    from alluxiojob.config.properties import Config

T = TypeVar("T")

RequestHook = Callable[[str, float], None]
"""``on_request(kind, seconds)``: kind is "get", "list", "txn" or "lease"."""

# gRPC status codes that mean "this member cannot serve the request right now": no
# leader, leader changed, request timed out, too many requests, database space exceeded;
# UNKNOWN and INTERNAL carry errors etcd passes through unmapped, such as a read that
# found no quorum in time ("context deadline exceeded").
_RETRYABLE = frozenset(
    {"UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "UNKNOWN", "INTERNAL"}
)
_NOT_SENT = ("failed to connect", "connection refused", "name resolution")

_THREADS = 32  # etcd calls in flight per store; each holds a thread until its deadline
_BACKOFF_FIRST = 0.3  # longer than a channel's reconnect backoff (etcd_rpc)
_BACKOFF_MAX = 1.0
_TRIO_MARGIN = 0.5  # gRPC's own deadline normally ends a call first
_CLOSE_GRACE = 1.0  # how long aclose waits for calls in flight


def normalize_endpoint(endpoint: str) -> str:
    """``host:port`` or ``http://host:port/`` -> ``http://host:port``."""
    return EtcdEndpoint.parse(endpoint).url


class _Rejected(Exception):
    """etcd answered, and rejected the request itself: retrying will not help."""

    def __init__(self, error: EtcdRpcError) -> None:
        super().__init__(str(error))
        self.error = error


class EtcdKVStore:
    """``KVStore`` over an etcd v3 cluster through ``etcd3``. See the module docstring."""

    supports_leases = True

    def __init__(
        self,
        endpoints: Sequence[str],
        read_timeout: float = 10.0,
        write_timeout: float = 15.0,
        max_retries: int = 2,
        *,
        on_request: RequestHook | None = None,
    ) -> None:
        parsed = [EtcdEndpoint.parse(e) for e in endpoints if e.strip()]
        if not parsed:
            raise InvalidArgument(
                "no etcd endpoints configured: set alluxio.etcd.endpoints "
                "(or alluxio.coordinator.scheduler.job.etcd.endpoints), e.g. http://host:2379"
            )
        if read_timeout <= 0 or write_timeout <= 0:
            raise InvalidArgument("etcd read and write timeouts must be positive")
        self.endpoints: tuple[str, ...] = tuple(e.url for e in parsed)
        self.read_timeout = read_timeout
        self.write_timeout = write_timeout
        self.max_retries = max(0, max_retries)
        self._on_request = on_request
        self._members = [EtcdMember(e) for e in parsed]
        self._limiter = trio.CapacityLimiter(_THREADS)
        self._preferred = 0
        self._closed = False
        self._idle = threading.Condition()
        self._busy = 0  # calls running in threads, abandoned ones included

    @classmethod
    def from_config(
        cls, config: Config, on_request: RequestHook | None = None, *, membership: bool = False
    ) -> EtcdKVStore:
        """The job-metadata cluster, or with ``membership`` the main Alluxio etcd."""
        from alluxiojob.config.properties import Keys

        endpoints = config[Keys.ETCD_ENDPOINTS]
        if not membership:
            endpoints = config[Keys.JOB_ETCD_ENDPOINTS] or endpoints
        return cls(
            endpoints,
            read_timeout=config[Keys.ETCD_READ_TIMEOUT],
            write_timeout=config[Keys.ETCD_WRITE_TIMEOUT],
            max_retries=config[Keys.ETCD_MAX_RETRIES],
            on_request=on_request,
        )

    # ------------------------------------------------------------------ transport
    def _run_counted(self, fn: Callable[[], T]) -> T:
        with self._idle:
            self._busy += 1
        try:
            return fn()
        finally:
            with self._idle:
                self._busy -= 1
                self._idle.notify_all()

    def _wait_idle(self, seconds: float) -> None:
        with self._idle:
            self._idle.wait_for(lambda: self._busy == 0, seconds)

    async def _call(
        self,
        kind: str,
        call: Callable[[EtcdMember, float], T],
        *,
        write: bool,
    ) -> tuple[T, bool]:
        """Run ``call(member, timeout)`` with failover.

        Returns (answer, whether an earlier attempt may have been applied).
        """
        if self._closed:
            raise Unavailable("the etcd job store is closed")
        timeout = self.write_timeout if write else self.read_timeout
        started = time.monotonic()
        count = len(self._members)
        errors: dict[str, str] = {}  # per member, the most telling error
        ambiguous = False
        for attempt in range(self.max_retries + 1):
            if attempt:
                await trio.sleep(backoff_delay(attempt, first=_BACKOFF_FIRST, cap=_BACKOFF_MAX))
            first = self._preferred
            for step in range(count):
                index = (first + step) % count
                member = self._members[index]
                try:
                    # The thread is abandoned if trio stops waiting; its gRPC deadline
                    # (the same timeout) ends it soon after.
                    with trio.move_on_after(timeout + _TRIO_MARGIN) as scope:
                        answer = await trio.to_thread.run_sync(
                            self._run_counted,
                            functools.partial(call, member, timeout),
                            limiter=self._limiter,
                            abandon_on_cancel=True,
                        )
                    if scope.cancelled_caught:
                        raise EtcdRpcError("DEADLINE_EXCEEDED", "no answer")
                except JobServiceError:
                    raise
                except Exception as exc:
                    if not isinstance(exc, EtcdRpcError):
                        # A request the client could not even build: not etcd's answer.
                        raise JobServiceError(
                            f"etcd {kind} request failed: {describe_error(exc)}"
                        ) from None
                    if self._closed:
                        raise Unavailable("the etcd job store is closed") from None
                    if exc.code not in _RETRYABLE:
                        raise _Rejected(exc) from None
                    if exc.code != "DEADLINE_EXCEEDED" or member.endpoint.url not in errors:
                        errors[member.endpoint.url] = _describe(exc, timeout)
                    sent = not any(s in exc.details.lower() for s in _NOT_SENT)
                    ambiguous = ambiguous or (write and sent)
                    continue
                self._preferred = index
                if self._on_request is not None:
                    self._on_request(kind, time.monotonic() - started)
                return answer, ambiguous
        raise Unavailable(
            f"etcd is unavailable at {', '.join(self.endpoints)} "
            f"({self.max_retries + 1} attempts each): "
            + "; ".join(f"{url}: {error}" for url, error in errors.items())
        )

    async def _request(
        self, kind: str, call: Callable[[EtcdMember, float], T], *, write: bool
    ) -> tuple[T, bool]:
        try:
            return await self._call(kind, call, write=write)
        except _Rejected as rejected:
            if rejected.error.code == "NOT_FOUND":
                raise NotFound(f"etcd: {rejected.error.details}") from None
            raise JobServiceError(
                f"etcd rejected the {kind} request: {rejected.error}"
            ) from None

    # ------------------------------------------------------------------ reads
    async def get(self, key: bytes) -> Entry | None:
        answer, _ = await self._request(
            "get", lambda m, t: m.range(key, timeout=t), write=False
        )
        return _entry(answer.kvs[0]) if answer.kvs else None

    @staticmethod
    def _range(prefix: bytes, start_after: bytes | None = None) -> tuple[bytes, bytes] | None:
        """(key, range_end) covering ``prefix`` after ``start_after``; None if empty."""
        end = prefix_end(prefix)
        key = prefix
        if start_after is not None and start_after >= prefix:
            key = start_after + b"\x00"
        if end is None:
            # Every key from ``key`` on; etcd spells "no end" as range_end "\0" and
            # does not accept an empty key.
            return (key or b"\x00"), b"\x00"
        if key >= end:
            return None
        return key, end

    async def scan(
        self, prefix: bytes, *, start_after: bytes | None = None, limit: int = 0
    ) -> list[Entry]:
        bounds = self._range(prefix, start_after)
        if bounds is None:
            return []
        key, end = bounds
        answer, _ = await self._request(
            "list",
            lambda m, t: m.range(key, end, limit=max(0, limit), timeout=t),
            write=False,
        )
        return [_entry(kv) for kv in answer.kvs]

    async def count(self, prefix: bytes) -> int:
        bounds = self._range(prefix)
        if bounds is None:
            return 0
        key, end = bounds
        answer, _ = await self._request(
            "list",
            lambda m, t: m.range(key, end, count_only=True, timeout=t),
            write=False,
        )
        return answer.count

    # ------------------------------------------------------------------ writes
    async def txn(self, compares: Sequence[Compare], ops: Sequence[Op]) -> int | None:
        """Apply ``ops`` if every compare holds; the new revision, or None.

        May be sent more than once when an answer is lost; see the module docstring for
        why that is safe for compare-and-swap transactions and how a lost success is
        recognized.
        """
        (succeeded, revision), ambiguous = await self._request(
            "txn", lambda m, t: m.txn(compares, ops, timeout=t), write=True
        )
        if succeeded:
            return revision
        if ambiguous:
            return (await self._applied_revisions([(compares, ops)]))[0]
        return None

    async def txn_each(self, txns: Sequence[Txn]) -> list[int | None]:
        if not txns:
            return []
        (applied, revision), ambiguous = await self._request(
            "txn", lambda m, t: m.txn_each(txns, timeout=t), write=True
        )
        results: list[int | None] = [revision if ok else None for ok in applied]
        missed = [i for i, ok in enumerate(applied) if not ok]
        if ambiguous and missed:
            found = await self._applied_revisions([txns[i] for i in missed])
            for i, landed in zip(missed, found, strict=True):
                results[i] = landed
        return results

    async def _applied_revisions(self, txns: Sequence[Txn]) -> list[int | None]:
        """After a lost answer and failed compares: per txn, its revision if it landed."""
        checks: list[tuple[list[Put], list[Delete], int]] = []
        keys: list[bytes] = []
        for compares, ops in txns:
            puts = [op for op in ops if isinstance(op, Put)]
            deletes = [op for op in ops if isinstance(op, Delete) and not op.prefix]
            checks.append((puts, deletes, max((c.revision for c in compares), default=0)))
            keys += [op.key for op in puts] + [op.key for op in deletes]
        if not keys:
            return [None] * len(txns)
        found, _ = await self._request(
            "get", lambda m, t: m.read_keys(keys, timeout=t), write=False
        )
        results: list[int | None] = []
        position = 0
        for puts, deletes, newest_compared in checks:
            mine = found[position : position + len(puts) + len(deletes)]
            position += len(puts) + len(deletes)
            results.append(_landed(puts, mine, newest_compared))
        return results

    # ------------------------------------------------------------------ leases
    async def grant_lease(self, ttl: float) -> int:
        seconds = max(1, math.ceil(ttl))
        lease, _ = await self._request(
            "lease", lambda m, t: m.lease_grant(seconds, timeout=t),
            write=True,
        )
        if lease == 0:
            raise JobServiceError("etcd did not grant a lease")
        return lease

    async def keep_alive(self, lease: int) -> bool:
        ttl, _ = await self._request(
            "lease", lambda m, t: m.lease_keepalive(lease, timeout=t),
            write=True,
        )
        return ttl > 0

    async def revoke(self, lease: int) -> None:
        try:
            await self._request(
                "lease", lambda m, t: m.lease_revoke(lease, timeout=t),
                write=True,
            )
        except NotFound:
            pass  # already expired or revoked

    # ------------------------------------------------------------------ health
    async def probe(self) -> None:
        """A quorum round trip (etcd serves alarm requests through raft) and its alarms."""
        alarms, _ = await self._request(
            "get", lambda m, t: m.alarms(timeout=t), write=False
        )
        if "NOSPACE" in alarms:
            raise Unavailable(
                f"etcd at {', '.join(self.endpoints)} refuses writes: alarm NOSPACE "
                "(database space exceeded; compact, defragment, then disarm the alarm)"
            )

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        # Let calls in flight end on their own before their channels close under them
        # (etcd3's close() cancels them with "Channel closed!"; see etcd_rpc).
        await trio.to_thread.run_sync(self._wait_idle, _CLOSE_GRACE)
        for member in self._members:
            member.close()


def _entry(kv: KeyValue) -> Entry:
    return Entry(key=kv.key, value=kv.value, revision=kv.mod_revision)


def _describe(error: EtcdRpcError, timeout: float) -> str:
    if error.code == "DEADLINE_EXCEEDED":
        return f"no answer within {timeout:g}s"
    return str(error)


def _landed(puts: list[Put], found: list[KeyValue | None], newest_compared: int) -> int | None:
    """The revision at which ``puts`` (then absent deletes) were applied, or None."""
    if not puts:
        return None  # nothing that identifies our write
    revisions: set[int] = set()
    for op, kv in zip(puts, found, strict=False):
        if kv is None or kv.value != op.value:
            return None
        revisions.add(kv.mod_revision)
    if any(kv is not None for kv in found[len(puts) :]) or len(revisions) != 1:
        return None
    revision = revisions.pop()
    return revision if revision > newest_compared else None


__all__ = ["EtcdKVStore", "RequestHook", "normalize_endpoint"]
