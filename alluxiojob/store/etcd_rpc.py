"""Blocking calls to one etcd member through the ``etcd3`` library (``python3-etcd3``).

Theory of operation
-------------------
This is the only module that imports ``etcd3`` or ``grpc``. Neither ships type hints, so
every ``Any`` and ``# type: ignore`` of the etcd client stays here: what leaves this
module is a plain typed value or an ``EtcdRpcError``, never a library exception.

From ``etcd3`` we take the channel set-up (``Endpoint`` / ``MultiEndpointEtcd3Client``,
one endpoint each) and its generated gRPC stubs and messages. We call the stubs
ourselves instead of ``Etcd3Client.get``/``.transaction``/``.lease`` because:

- those methods use one timeout for the whole client, while every call here carries
  its own gRPC deadline: the read timeout for reads, the write timeout for writes.
  The deadline lives in gRPC's C core, so it holds even after trio stops waiting for
  the thread that made the call;
- they turn some gRPC errors into their own exception classes and re-raise the others
  (``CANCELLED``, ``NOT_FOUND``...) as raw ``grpc.RpcError``s;
- ``MultiEndpointEtcd3Client(failover=True)`` does not retry, marks a member failed for
  a fixed ``time_retry`` (300 s by default) and switches its current endpoint by
  mutating shared state without a lock, while our calls come from several threads.
  Failover between members is done one level up, in ``EtcdKVStore``.

Known defects of ``etcd3`` 0.13, and how they are avoided:

- ``watch.py`` calls ``six.itervalues`` without importing ``six``: when a watch stream
  ends (``close()``, a lost connection), the watcher thread dies with a ``NameError``
  and its callbacks are never told. We never create a watcher: membership and the job
  queue are polled (see ``coordinator/membership.py`` and ``coordinator/scheduler.py``).
- ``close()`` closes the gRPC channel under calls still in flight in other threads;
  those calls end with ``CANCELLED: Channel closed!``, which the library re-raises raw
  and which, uncaught in a thread, is an unhandled thread exception. Every call here
  catches ``grpc.RpcError`` (and the ``ValueError`` gRPC raises for a call on a closed
  channel) and returns it as an ``EtcdRpcError``; ``EtcdKVStore.aclose`` also waits a
  moment for calls in flight before it closes.
- gRPC's own connectivity polling (``grpc.channel_ready_future``, ``subscribe``) runs
  a thread that raises ``ValueError`` when the channel is closed under it; nothing here
  subscribes. A channel that cannot connect fails calls fast instead, and its reconnect
  backoff is kept short (below).
- It ships no type hints: this typed wrapper is the only user.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import etcd3  # type: ignore[import-untyped]
import grpc  # type: ignore[import-untyped]
from etcd3 import etcdrpc

from alluxiojob.core.errors import InvalidArgument
from alluxiojob.store.kv import Compare, Op, Put, prefix_end

# Reconnect quickly after a member comes back (gRPC's default backoff grows to 120 s),
# give a connection attempt (TCP, TLS, HTTP/2 settings) 5 s, notice a dead peer on an
# idle connection, and accept large scan pages.
_CHANNEL_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 250),
    ("grpc.min_reconnect_backoff_ms", 5000),  # gRPC's name for the connect timeout
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
)


@dataclass(frozen=True)
class EtcdEndpoint:
    """One etcd member's client address, e.g. ``http://10.0.0.1:2379``."""

    url: str
    host: str
    port: int
    secure: bool

    @classmethod
    def parse(cls, text: str) -> EtcdEndpoint:
        """``host:port``, ``http://host:port`` or ``https://host:port`` (port 2379 if absent)."""
        raw = text.strip().rstrip("/")
        if "://" not in raw:
            raw = "http://" + raw
        try:
            parts = urlsplit(raw)
            port = parts.port or 2379
        except ValueError as exc:
            raise InvalidArgument(f"invalid etcd endpoint {text.strip()!r}: {exc}") from None
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.path:
            raise InvalidArgument(
                f"invalid etcd endpoint {text.strip()!r}: expected http://host:port or host:port"
            )
        host = parts.hostname
        shown = f"[{host}]" if ":" in host else host
        return cls(f"{parts.scheme}://{shown}:{port}", host, port, parts.scheme == "https")


@dataclass(frozen=True)
class KeyValue:
    key: bytes
    value: bytes
    mod_revision: int


@dataclass(frozen=True)
class RangeResult:
    kvs: list[KeyValue]
    count: int
    revision: int  # the store's revision when the range was read


class EtcdRpcError(Exception):
    """A failed call: the gRPC status code's name (``UNAVAILABLE``...) and etcd's message."""

    def __init__(self, code: str, details: str) -> None:
        super().__init__(f"{code}: {details}")
        self.code = code
        self.details = details


def _failure(exc: Exception) -> EtcdRpcError:
    if isinstance(exc, grpc.RpcError):
        code = exc.code() if hasattr(exc, "code") else None
        details = exc.details() if hasattr(exc, "details") else None
        name = str(getattr(code, "name", "UNKNOWN"))
        return EtcdRpcError(name, str(details or name.lower().replace("_", " ")))
    # gRPC raises ValueError for a call made on a channel that is already closed.
    return EtcdRpcError("CANCELLED", f"channel closed ({exc})")


def _kv(item: Any) -> KeyValue:
    return KeyValue(bytes(item.key), bytes(item.value), int(item.mod_revision))


def _request_op(op: Op) -> Any:
    if isinstance(op, Put):
        return etcdrpc.RequestOp(
            request_put=etcdrpc.PutRequest(key=op.key, value=op.value, lease=op.lease)
        )
    delete = etcdrpc.DeleteRangeRequest(key=op.key)
    if op.prefix:
        end = prefix_end(op.key)
        if end is None or not op.key:
            raise InvalidArgument("refusing to delete every key of the store")
        delete.range_end = end
    return etcdrpc.RequestOp(request_delete_range=delete)


def _txn_request(compares: Sequence[Compare], ops: Sequence[Op]) -> Any:
    return etcdrpc.TxnRequest(
        compare=[
            etcdrpc.Compare(
                result=etcdrpc.Compare.EQUAL,
                target=etcdrpc.Compare.MOD,
                key=c.key,
                mod_revision=c.revision,  # 0 matches an absent key
            )
            for c in compares
        ],
        success=[_request_op(op) for op in ops],
    )


class EtcdMember:
    """Blocking, thread-safe calls to one etcd member, each with its own deadline."""

    def __init__(self, endpoint: EtcdEndpoint) -> None:
        self.endpoint = endpoint
        creds = grpc.ssl_channel_credentials() if endpoint.secure else None
        target = etcd3.Endpoint(
            endpoint.host, endpoint.port, secure=endpoint.secure, creds=creds,
            opts=list(_CHANNEL_OPTIONS),
        )
        self._client = etcd3.MultiEndpointEtcd3Client(endpoints=[target])
        self._kv = etcdrpc.KVStub(target.channel)
        self._lease = etcdrpc.LeaseStub(target.channel)
        self._maintenance = etcdrpc.MaintenanceStub(target.channel)
        self._closed = threading.Event()

    def _call(self, method: Any, request: Any, timeout: float) -> Any:
        if self._closed.is_set():
            raise EtcdRpcError("CANCELLED", "the etcd client is closed")
        try:
            return method(request, timeout=timeout)
        except (grpc.RpcError, ValueError) as exc:
            raise _failure(exc) from None

    # ------------------------------------------------------------------ KV
    def range(
        self,
        key: bytes,
        range_end: bytes = b"",
        *,
        limit: int = 0,
        count_only: bool = False,
        timeout: float,
    ) -> RangeResult:
        # No sort order: etcd returns a range in key order, and a sort order other than
        # NONE makes it read the whole range before applying the limit.
        request = etcdrpc.RangeRequest(
            key=key, range_end=range_end, limit=limit, count_only=count_only
        )
        answer = self._call(self._kv.Range, request, timeout)
        return RangeResult(
            kvs=[_kv(item) for item in answer.kvs],
            count=int(answer.count),
            revision=int(answer.header.revision),
        )

    def read_keys(
        self, keys: Sequence[bytes], *, timeout: float
    ) -> list[KeyValue | None]:
        """Several keys read at one revision (a transaction of ranges only)."""
        request = etcdrpc.TxnRequest(
            success=[etcdrpc.RequestOp(request_range=etcdrpc.RangeRequest(key=key))
                     for key in keys]
        )
        answer = self._call(self._kv.Txn, request, timeout)
        found: list[KeyValue | None] = []
        for response in answer.responses:
            kvs = response.response_range.kvs
            found.append(_kv(kvs[0]) if len(kvs) else None)
        return found

    def txn(
        self,
        compares: Sequence[Compare],
        ops: Sequence[Op],
        *,
        timeout: float,
    ) -> tuple[bool, int]:
        """(whether the compares held, the store's revision after the call)."""
        answer = self._call(self._kv.Txn, _txn_request(compares, ops), timeout)
        return bool(answer.succeeded), int(answer.header.revision)

    def txn_each(
        self,
        txns: Sequence[tuple[Sequence[Compare], Sequence[Op]]],
        *,
        timeout: float,
    ) -> tuple[list[bool], int]:
        """Nested transactions in one request: each applies if its own compares hold."""
        request = etcdrpc.TxnRequest(
            success=[etcdrpc.RequestOp(request_txn=_txn_request(c, o)) for c, o in txns]
        )
        answer = self._call(self._kv.Txn, request, timeout)
        applied = [bool(r.response_txn.succeeded) for r in answer.responses]
        return applied, int(answer.header.revision)

    # ------------------------------------------------------------------ leases
    def lease_grant(self, ttl: int, *, timeout: float) -> int:
        answer = self._call(self._lease.LeaseGrant, etcdrpc.LeaseGrantRequest(TTL=ttl),
                            timeout)
        if answer.error:
            raise EtcdRpcError("UNKNOWN", f"lease not granted: {answer.error}")
        return int(answer.ID)

    def lease_keepalive(self, lease: int, *, timeout: float) -> int:
        """The lease's new TTL in seconds; 0 once it has expired or been revoked."""
        if self._closed.is_set():
            raise EtcdRpcError("CANCELLED", "the etcd client is closed")
        request = etcdrpc.LeaseKeepAliveRequest(ID=lease)
        try:
            # A stream of one request: etcd answers once, then the stream ends.
            stream = self._lease.LeaseKeepAlive(iter([request]), timeout=timeout)
            ttls = [int(answer.TTL) for answer in stream]
        except (grpc.RpcError, ValueError) as exc:
            raise _failure(exc) from None
        return ttls[0] if ttls else 0

    def lease_revoke(self, lease: int, *, timeout: float) -> None:
        self._call(self._lease.LeaseRevoke, etcdrpc.LeaseRevokeRequest(ID=lease), timeout)

    # ------------------------------------------------------------------ health
    def alarms(self, *, timeout: float) -> list[str]:
        """Active alarms (``NOSPACE``: etcd refuses writes until space is reclaimed)."""
        request = etcdrpc.AlarmRequest(action=etcdrpc.AlarmRequest.GET, memberID=0,
                                       alarm=etcdrpc.NONE)
        answer = self._call(self._maintenance.Alarm, request, timeout)
        return [str(etcdrpc.AlarmType.Name(a.alarm)) for a in answer.alarms]

    def close(self) -> None:
        # etcd3's close() also closes its watcher, whose thread would die on the missing
        # ``six`` import; we never start one. Calls still in flight end with CANCELLED
        # "Channel closed!", which _call turns into an EtcdRpcError in their own thread.
        self._closed.set()
        self._client.close()


__all__ = ["EtcdEndpoint", "EtcdMember", "EtcdRpcError", "KeyValue", "RangeResult"]
