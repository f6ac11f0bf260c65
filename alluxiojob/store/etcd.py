"""etcd v3 backend of the ``KVStore`` protocol (several coordinators share one store).

Theory of operation
-------------------
The store talks to etcd's HTTP/JSON gateway (``/v3/kv/range``, ``/v3/kv/txn``,
``/v3/lease/*``) with one pooled ``httpx.AsyncClient``, which runs natively under trio.
Keys and values travel base64-encoded; etcd's int64 fields come back as strings and
fields holding their zero value (an empty value, a failed txn's ``succeeded``, a dead
lease's ``TTL``) are left out of the JSON, so every read of a response has a default.

Every request has a deadline: the read timeout for ranges, the write timeout for
transactions and lease calls. A request that cannot connect, times out, or gets an
"unavailable" answer (no leader, request timed out) moves on to the next endpoint; the
endpoint that answered last is tried first next time. After ``max_retries`` further
passes over every endpoint (with a short backoff between passes) the call raises
``Unavailable`` naming the endpoints and the last error, so no ``httpx`` exception
escapes. Errors etcd reports about the request itself (a lease that no longer exists,
a transaction with too many operations or a duplicate key) are not retried.

Retried writes: a transaction whose answer was lost (a timeout, a dropped connection
after the request was sent, etcd's own "request timed out") may nevertheless have been
applied, and it is sent again. This is safe because every transaction the job store
makes is a compare-and-swap on modification revisions: if the first attempt was
applied, the second one's compares fail and nothing is written twice. To avoid
reporting a write that did happen as a lost race, a retried transaction whose compares
failed is checked once: if every key it puts now holds exactly the value it put, all at
one revision newer than every compared revision, and every key it deletes is absent,
the earlier attempt was applied and its revision is returned.
"""

from __future__ import annotations

import base64
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
import trio

from alluxiojob.core.errors import InvalidArgument, JobServiceError, NotFound, Unavailable
from alluxiojob.store.kv import Compare, Delete, Entry, Op, Put, prefix_end

if TYPE_CHECKING:
    from alluxiojob.config.properties import Config

RequestHook = Callable[[str, float], None]
"""``on_request(kind, seconds)``: kind is "get", "list", "txn" or "lease"."""

# gRPC status codes that mean "this member cannot serve the request right now": no
# leader, leader changed, request timed out, too many requests, database space exceeded.
_GRPC_DEADLINE_EXCEEDED = 4
_GRPC_NOT_FOUND = 5
_GRPC_RESOURCE_EXHAUSTED = 8
_GRPC_UNAVAILABLE = 14
_RETRYABLE_GRPC_CODES = frozenset(
    {_GRPC_DEADLINE_EXCEEDED, _GRPC_RESOURCE_EXHAUSTED, _GRPC_UNAVAILABLE}
)

_MAX_CONNECT_TIMEOUT = 3.0  # a dead host should not use a whole read timeout
_BACKOFF_FIRST = 0.05
_BACKOFF_MAX = 1.0


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text)


def normalize_endpoint(endpoint: str) -> str:
    """``host:port`` or ``http://host:port/`` -> ``http://host:port``."""
    endpoint = endpoint.strip().rstrip("/")
    if "://" not in endpoint:
        endpoint = "http://" + endpoint
    try:
        url = httpx.URL(endpoint)
    except httpx.InvalidURL as exc:
        raise InvalidArgument(f"invalid etcd endpoint {endpoint!r}: {exc}") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise InvalidArgument(
            f"invalid etcd endpoint {endpoint!r}: expected http://host:port or host:port"
        )
    return endpoint


@dataclass(frozen=True)
class _Failure:
    """One attempt against one endpoint failed in a way another endpoint may not."""

    message: str
    ambiguous: bool  # the request may have reached etcd (and a write been applied)


class _EtcdError(Exception):
    """etcd answered, and rejected the request itself: retrying will not help."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class EtcdKVStore:
    """``KVStore`` over an etcd v3 cluster's JSON gateway. See the module docstring."""

    supports_leases = True

    def __init__(
        self,
        endpoints: Sequence[str],
        read_timeout: float = 10.0,
        write_timeout: float = 15.0,
        max_retries: int = 2,
        *,
        on_request: RequestHook | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.endpoints: tuple[str, ...] = tuple(
            normalize_endpoint(e) for e in endpoints if e.strip()
        )
        if not self.endpoints:
            raise InvalidArgument(
                "no etcd endpoints configured: set alluxio.etcd.endpoints "
                "(or alluxio.coordinator.scheduler.job.etcd.endpoints), e.g. http://host:2379"
            )
        if read_timeout <= 0 or write_timeout <= 0:
            raise InvalidArgument("etcd read and write timeouts must be positive")
        self.read_timeout = read_timeout
        self.write_timeout = write_timeout
        self.max_retries = max(0, max_retries)
        self._on_request = on_request
        self._preferred = 0
        self._closed = False
        self._client = httpx.AsyncClient(
            transport=transport,
            timeout=None,  # deadlines are trio cancel scopes around each attempt
            headers={"content-type": "application/json"},
        )

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
    async def _attempt(
        self, url: str, body: bytes, limit: float
    ) -> dict[str, Any] | _Failure:
        connect = httpx.Timeout(None, connect=min(limit, _MAX_CONNECT_TIMEOUT))
        response: httpx.Response | None = None
        with trio.move_on_after(limit):
            try:
                response = await self._client.post(url, content=body, timeout=connect)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                return _Failure(f"{type(exc).__name__}: {str(exc) or 'cannot connect'}", False)
            except httpx.HTTPError as exc:
                return _Failure(f"{type(exc).__name__}: {str(exc) or 'connection lost'}", True)
        if response is None:
            return _Failure(f"no answer within {limit:g}s", True)
        data = _parse_body(response.text)
        if response.status_code == 200 and data is not None:
            error = data.get("error")
            if error is None:
                # A streaming call (lease keepalive) wraps its message in "result".
                result = data.get("result", data)
                return result if isinstance(result, dict) else {}
            data = error if isinstance(error, dict) else data
        code, message = _error_of(data, response)
        if code is None or code in _RETRYABLE_GRPC_CODES:
            # etcd cannot serve it now (no leader, request timed out), or this is not an
            # etcd answer at all (a proxy, another service on that port): try elsewhere.
            return _Failure(f"HTTP {response.status_code}: {message}", True)
        raise _EtcdError(code, message)

    async def _call(
        self, kind: str, path: str, payload: dict[str, Any], *, write: bool
    ) -> tuple[dict[str, Any], bool]:
        """POST ``payload`` with failover; returns (answer, whether an attempt was lost)."""
        if self._closed:
            raise Unavailable("the etcd job store is closed")
        timeout = self.write_timeout if write else self.read_timeout
        body = json.dumps(payload, separators=(",", ":")).encode()
        started = time.monotonic()
        count = len(self.endpoints)
        last_error = "no attempt made"
        ambiguous = False
        for attempt in range(self.max_retries + 1):
            if attempt:
                await trio.sleep(min(_BACKOFF_FIRST * 2 ** (attempt - 1), _BACKOFF_MAX))
            first = self._preferred
            for step in range(count):
                index = (first + step) % count
                outcome = await self._attempt(self.endpoints[index] + path, body, timeout)
                if isinstance(outcome, _Failure):
                    last_error = f"{self.endpoints[index]}: {outcome.message}"
                    ambiguous = ambiguous or outcome.ambiguous
                    continue
                self._preferred = index
                if self._on_request is not None:
                    self._on_request(kind, time.monotonic() - started)
                return outcome, ambiguous
        raise Unavailable(
            f"etcd is unavailable at {', '.join(self.endpoints)} "
            f"({self.max_retries + 1} attempts each): {last_error}"
        )

    async def _request(
        self, kind: str, path: str, payload: dict[str, Any], *, write: bool
    ) -> tuple[dict[str, Any], bool]:
        try:
            return await self._call(kind, path, payload, write=write)
        except _EtcdError as exc:
            if exc.code == _GRPC_NOT_FOUND:
                raise NotFound(f"etcd: {exc.message}") from None
            raise JobServiceError(f"etcd rejected the {kind} request: {exc.message}") from None

    # ------------------------------------------------------------------ reads
    @staticmethod
    def _entries(answer: dict[str, Any]) -> list[Entry]:
        return [
            Entry(
                key=_unb64(kv["key"]),
                value=_unb64(kv.get("value", "")),
                revision=int(kv.get("mod_revision", 0)),
            )
            for kv in answer.get("kvs", ())
        ]

    async def get(self, key: bytes) -> Entry | None:
        answer, _ = await self._request("get", "/v3/kv/range", {"key": _b64(key)}, write=False)
        entries = self._entries(answer)
        return entries[0] if entries else None

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
        payload: dict[str, Any] = {
            "key": _b64(bounds[0]),
            "range_end": _b64(bounds[1]),
            "sort_order": "ASCEND",
            "sort_target": "KEY",
        }
        if limit > 0:
            payload["limit"] = limit
        answer, _ = await self._request("list", "/v3/kv/range", payload, write=False)
        return self._entries(answer)

    async def count(self, prefix: bytes) -> int:
        bounds = self._range(prefix)
        if bounds is None:
            return 0
        payload = {"key": _b64(bounds[0]), "range_end": _b64(bounds[1]), "count_only": True}
        answer, _ = await self._request("list", "/v3/kv/range", payload, write=False)
        return int(answer.get("count", 0))

    # ------------------------------------------------------------------ writes
    @staticmethod
    def _op(op: Op) -> dict[str, Any]:
        if isinstance(op, Put):
            put: dict[str, Any] = {"key": _b64(op.key), "value": _b64(op.value)}
            if op.lease:
                put["lease"] = str(op.lease)
            return {"request_put": put}
        delete: dict[str, Any] = {"key": _b64(op.key)}
        if op.prefix:
            bounds = EtcdKVStore._range(op.key)
            if bounds is None:
                raise InvalidArgument("cannot delete an empty key range")
            delete = {"key": _b64(bounds[0]), "range_end": _b64(bounds[1])}
        return {"request_delete_range": delete}

    async def txn(self, compares: Sequence[Compare], ops: Sequence[Op]) -> int | None:
        """Apply ``ops`` if every compare holds; the new revision, or None.

        May be sent more than once when an answer is lost; see the module docstring for
        why that is safe for compare-and-swap transactions and how a lost success is
        recognized.
        """
        payload = {
            "compare": [
                {
                    "key": _b64(c.key),
                    "target": "MOD",
                    "result": "EQUAL",
                    "mod_revision": str(c.revision),  # 0 matches an absent key
                }
                for c in compares
            ],
            "success": [self._op(op) for op in ops],
        }
        answer, ambiguous = await self._request("txn", "/v3/kv/txn", payload, write=True)
        if answer.get("succeeded", False):
            return int(answer.get("header", {}).get("revision", 0))
        if ambiguous:
            return await self._applied_revision(compares, ops)
        return None

    async def _applied_revision(
        self, compares: Sequence[Compare], ops: Sequence[Op]
    ) -> int | None:
        """After a lost answer and failed compares: the revision if our write landed."""
        puts = [op for op in ops if isinstance(op, Put)]
        deletes = [op for op in ops if isinstance(op, Delete) and not op.prefix]
        if not puts:
            return None  # nothing that identifies our write
        keys = [op.key for op in puts] + [op.key for op in deletes]
        reads = [{"request_range": {"key": _b64(key)}} for key in keys]
        answer, _ = await self._request(
            "get", "/v3/kv/txn", {"success": reads}, write=False
        )
        found: list[list[Entry]] = [
            self._entries(item.get("response_range", {}))
            for item in answer.get("responses", ())
        ]
        if len(found) != len(reads):
            return None
        revisions: set[int] = set()
        for op, entries in zip(puts, found, strict=False):
            if not entries or entries[0].value != op.value:
                return None
            revisions.add(entries[0].revision)
        if any(found[len(puts) :]) or len(revisions) != 1:
            return None
        revision = revisions.pop()
        if revision <= max((c.revision for c in compares), default=0):
            return None
        return revision

    # ------------------------------------------------------------------ leases
    async def grant_lease(self, ttl: float) -> int:
        seconds = max(1, math.ceil(ttl))
        answer, _ = await self._request("lease", "/v3/lease/grant", {"TTL": seconds}, write=True)
        lease = int(answer.get("ID", 0))
        if lease == 0:
            raise JobServiceError(f"etcd did not grant a lease: {answer}")
        return lease

    async def keep_alive(self, lease: int) -> bool:
        answer, _ = await self._request(
            "lease", "/v3/lease/keepalive", {"ID": str(lease)}, write=True
        )
        return int(answer.get("TTL", 0)) > 0

    async def revoke(self, lease: int) -> None:
        try:
            await self._request("lease", "/v3/lease/revoke", {"ID": str(lease)}, write=True)
        except NotFound:
            pass  # already expired or revoked

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            await self._client.aclose()


def _parse_body(text: str) -> dict[str, Any] | None:
    """The JSON object of an answer (the first line of a streamed one), or None."""
    for line in text.splitlines() or [text]:
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except ValueError:
            return None
        return data if isinstance(data, dict) else None
    return None


def _error_of(data: dict[str, Any] | None, response: httpx.Response) -> tuple[int | None, str]:
    """(gRPC code, message) of an error answer; code None if it is not etcd's."""
    if data is None:
        snippet = response.text.strip().replace("\n", " ")[:200]
        return None, snippet or response.reason_phrase or "empty answer"
    code = data.get("code", data.get("grpc_code"))
    message = str(data.get("message") or data.get("error") or data)
    return (int(code) if isinstance(code, int | str) and str(code).isdigit() else None), message


__all__ = ["EtcdKVStore", "RequestHook", "normalize_endpoint"]
