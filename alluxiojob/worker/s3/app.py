"""The S3 API as an ASGI app: admission, authentication, routing and responses.

In order, for every request:
1. past ``max.inflight.requests`` in flight, ``503 SlowDown`` at once (never a queue);
2. who may call (``settings.AuthMode``): SigV4 checked against the key pairs; without
   key pairs, loopback peers addressing a local name only, and never a browser's
   cross-site request (``Origin``, ``Sec-Fetch-Site``), as every other port of the
   service; SIMPLE mode (only when acknowledged) checks nothing but that browser rule;
3. the operation, by method, path (path-style: ``/bucket/key``) and query;
4. for an object another worker owns: proxy or 307 (``forward.py``); else ``objects.py``.

Errors are S3's XML. Bodies stream in bounded chunks; a client that stops reading
holds its slot at most ``SEND_TIMEOUT`` per chunk.
"""

from __future__ import annotations

import itertools
import secrets
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import structlog
import trio

from alluxiojob.security.access import is_local_name, is_loopback
from alluxiojob.security.paths import PathAllowlist, resolved_location
from alluxiojob.worker.s3 import sigv4
from alluxiojob.worker.s3.bucket_ops import BucketOps
from alluxiojob.worker.s3.buckets import Bucket
from alluxiojob.worker.s3.errors import S3Error
from alluxiojob.worker.s3.forward import (
    HOP_HEADER,
    REDIRECT_MARKER,
    OwnerUnreachable,
    Proxy,
    redirect_location,
)
from alluxiojob.worker.s3.metrics import S3Metrics
from alluxiojob.worker.s3.objects import Body, ObjectReader
from alluxiojob.worker.s3.ownership import Ownership
from alluxiojob.worker.s3.settings import AuthMode, S3Settings

log = structlog.get_logger("alluxiojob.worker.s3")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

SEND_TIMEOUT = 60.0
# request ids: a random prefix per process and a counter (unique, no syscall per request)
_ID_PREFIX = secrets.token_hex(4).upper()
_ids = itertools.count(1)
_OBJECT_WRITES = frozenset({"PUT", "POST", "DELETE", "PATCH"})


@dataclass
class Request:
    method: str
    raw_path: str
    raw_query: str
    headers: dict[str, str]
    header_list: list[tuple[str, str]]
    peer: str | None
    https: bool
    request_id: str

    @property
    def resource(self) -> str:
        return unquote(self.raw_path)

    @classmethod
    def from_scope(cls, scope: Scope) -> Request:
        header_list = [(k.decode("latin-1").lower(), v.decode("latin-1"))
                       for k, v in scope.get("headers", ())]
        headers: dict[str, str] = {}
        for name, value in header_list:
            headers[name] = f"{headers[name]},{value}" if name in headers else value
        raw = scope.get("raw_path") or scope.get("path", "/").encode()
        raw_path = raw.decode("latin-1").split("?", 1)[0]
        client = scope.get("client")
        return cls(scope["method"], raw_path, scope.get("query_string", b"").decode("latin-1"),
                   headers, header_list, str(client[0]) if client else None,
                   scope.get("scheme") == "https", f"{_ID_PREFIX}{next(_ids) & 0xFFFFFFFF:08X}")


async def http_request(scope: Scope, receive: Receive, send: Send) -> Request | None:
    """The request of an ASGI ``http`` scope; None for any other scope, after answering
    a ``lifespan`` one (start-up and shutdown have nothing to do)."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return None
    if scope["type"] != "http":
        return None
    return Request.from_scope(scope)


@dataclass
class Reply:
    status: int
    headers: dict[str, str] | list[tuple[str, str]]
    body: bytes | Body = b""
    op: str = "Unknown"


def _browser_cross_site(request: Request) -> str | None:
    site = request.headers.get("sec-fetch-site", "")
    if site in ("cross-site", "same-site"):
        return f"Sec-Fetch-Site: {site}"
    origin = request.headers.get("origin")
    if origin is not None:
        if origin == "null" or urlsplit(origin).netloc.lower() != request.headers.get(
                "host", "").lower():
            return f"Origin: {origin}"
    return None


def admit_unsigned(request: Request, mode: AuthMode) -> None:
    """A request without a signature: never a cross-site browser's, and, unless in
    SIMPLE mode, only from a loopback peer addressing a local name (protected mode)."""
    cross = _browser_cross_site(request)
    if cross is not None:
        raise S3Error("AccessDenied", f"cross-site browser requests are refused ({cross})")
    if mode is AuthMode.SIMPLE:
        return
    if not is_loopback(request.peer) or not is_local_name(request.headers.get("host", "")):
        raise S3Error("AccessDenied", "requests without a signature are accepted from "
                      "loopback peers addressing localhost only (protected mode); set "
                      "alluxio.worker.s3.credentials.file and sign requests to serve other "
                      "hosts")


class S3App:
    def __init__(self, settings: S3Settings, reader: ObjectReader, buckets: BucketOps,
                 ownership: Ownership, allowlist: PathAllowlist, metrics: S3Metrics,
                 proxy: Proxy) -> None:
        self.settings = settings
        self.reader = reader
        self.buckets = buckets
        self.ownership = ownership
        self.allowlist = allowlist
        self.metrics = metrics
        self.proxy = proxy
        self.inflight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = await http_request(scope, receive, send)
        if request is None:
            return
        if self.inflight >= self.settings.max_inflight:
            self.metrics.shed.inc()
            await self._send(request, receive, send, self._error(request, S3Error(
                "SlowDown", "Please reduce your request rate."), "Unknown"), time.monotonic())
            return
        self.inflight += 1
        self.metrics.inflight.inc()
        started = time.monotonic()
        try:
            try:
                reply = await self._handle(request)
            except S3Error as exc:
                reply = self._error(request, exc, exc.op)
            except Exception:
                log.exception("S3 request failed", method=request.method,
                              path=request.resource)
                reply = self._error(request, S3Error("InternalError",
                                                     "We encountered an internal error."),
                                    "Unknown")
            await self._send(request, receive, send, reply, started)
        finally:
            self.inflight -= 1
            self.metrics.inflight.dec()

    def _error(self, request: Request, exc: S3Error, op: str) -> Reply:
        if not exc.resource:
            exc.resource = request.resource
        headers = {"Content-Type": "application/xml", **exc.headers}
        body = b"" if request.method == "HEAD" else exc.body(request.request_id)
        return Reply(exc.status, headers, body, op)

    # ------------------------------------------------------------------ admission
    def _authenticate(self, request: Request) -> None:
        mode = self.settings.mode
        if mode is not AuthMode.SIGV4:
            admit_unsigned(request, mode)
            return
        signed = sigv4.SignedRequest(request.method, request.raw_path, request.raw_query,
                                     request.headers)
        query = dict(sigv4.query_pairs(request.raw_query))
        host = None
        came_from = query.get(REDIRECT_MARKER)
        if came_from is not None and came_from in self.ownership.addresses():
            host = came_from
        sigv4.verify(signed, self.settings.credentials.secrets, time.time(), host=host,
                     ignored_query=(REDIRECT_MARKER,))

    # ------------------------------------------------------------------ routing
    async def _handle(self, request: Request) -> Reply:
        path = request.resource
        query = dict(sigv4.query_pairs(request.raw_query))
        bucket_name, _, key = path.lstrip("/").partition("/")
        op = self._operation(request.method, bucket_name, key, query)
        try:
            self._authenticate(request)
            return await self._dispatch(request, op, bucket_name, key, query)
        except S3Error as exc:
            exc.op = op
            raise

    @staticmethod
    def _operation(method: str, bucket: str, key: str, query: dict[str, str]) -> str:
        if method not in ("GET", "HEAD"):
            return "NotImplemented"
        if not bucket:
            return "ListBuckets"
        if key:
            return "GetObject" if method == "GET" else "HeadObject"
        if method == "HEAD":
            return "HeadBucket"
        if "location" in query:
            return "GetBucketLocation"
        if query.get("list-type") == "2":
            return "ListObjectsV2"
        subresources = {"acl", "policy", "versioning", "tagging", "uploads", "versions",
                        "lifecycle", "cors", "website", "notification", "encryption"}
        return "NotImplemented" if subresources & set(query) else "ListObjects"

    async def _dispatch(self, request: Request, op: str, bucket_name: str, key: str,
                        query: dict[str, str]) -> Reply:
        xml_type = {"Content-Type": "application/xml"}
        if op == "NotImplemented":
            raise S3Error("NotImplemented", "This S3 API reads the cache: writes and this "
                          "operation are not implemented (COPY and MOVE jobs write)")
        if op == "ListBuckets":
            return Reply(200, xml_type, await self.buckets.list_buckets(), op)
        bucket = self.settings.buckets.resolve(bucket_name)
        if op == "HeadBucket":
            await self.buckets.head_bucket(bucket)
            return Reply(200, {"x-amz-bucket-region": "us-east-1"}, b"", op)
        if op == "GetBucketLocation":
            return Reply(200, xml_type, await self.buckets.location(bucket), op)
        if op in ("ListObjects", "ListObjectsV2"):
            body = await self.buckets.list_objects(bucket, query, v2=op == "ListObjectsV2")
            return Reply(200, xml_type, body, op)
        return await self._object(request, op, bucket, key, query)

    async def _object(self, request: Request, op: str, bucket: Bucket, key: str,
                      query: dict[str, str]) -> Reply:
        uri = bucket.uri(key)

        def confine() -> None:
            self.buckets.check_bucket(bucket)
            if not resolved_location(uri).within(resolved_location(bucket.root)):
                raise S3Error("AccessDenied", f"the key {key!r} leads outside its bucket")
            if not self.allowlist.admits(uri):
                raise S3Error("AccessDenied", f"{uri} lies outside "
                              f"{self.allowlist.describe()}")

        # The key cannot leave its bucket as written (``check_key``); with the bucket's
        # root inside the allowlist as written too, a hit needs no symlink resolution.
        literal = self.allowlist.admits_literally(bucket.root)
        owner = self.ownership.owner(uri)
        forwarded = HOP_HEADER in request.headers or REDIRECT_MARKER in query
        if owner is not None and not forwarded:
            if not literal:  # else the owner confines what it reads from the UFS
                await trio.to_thread.run_sync(confine)
            https = not owner.port
            if self.settings.redirect:
                self.metrics.forwarded.labels(how="redirect").inc()
                here = request.headers.get("host", "")
                location = redirect_location(owner, https, request.raw_path,
                                             request.raw_query, here)
                body = S3Error("InvalidRequest", "Please re-send this request to the "
                               "specified temporary endpoint.").body(request.request_id)
                body = body.replace(b"<Code>InvalidRequest</Code>",
                                    b"<Code>TemporaryRedirect</Code>")
                return Reply(307, {"Location": location, "Content-Type": "application/xml"},
                             body if request.method == "GET" else b"", op)
            try:
                status, headers, stream = await self.proxy.forward(
                    owner, https, request.method, request.raw_path, request.raw_query,
                    request.header_list)
            except OwnerUnreachable as exc:
                log.warning("the owner of a file is unreachable; serving it here", path=uri,
                            error=str(exc))
            else:
                self.metrics.forwarded.labels(how="proxy").inc()
                return Reply(status, headers, stream, op)
        answer = await self.reader.read(uri, request.method, request.headers,
                                        request.resource, confine, literal)
        (self.metrics.hits if answer.cached else self.metrics.misses).inc()
        if not answer.cached and request.method == "GET":
            self.metrics.bytes_read_through.inc(answer.length)
        answer.headers["x-alluxio-cached"] = "true" if answer.cached else "false"
        return Reply(answer.status, answer.headers, answer.body, op)

    # ------------------------------------------------------------------ responses
    async def _send(self, request: Request, receive: Receive, send: Send, reply: Reply,
                    started: float) -> None:
        """Send the reply. One deadline covers the response, pushed back after each
        chunk the client takes: a client that stops reading loses its response."""
        items = reply.headers.items() if isinstance(reply.headers, dict) else reply.headers
        headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in items]
        headers.append((b"x-amz-request-id", request.request_id.encode()))
        body = reply.body
        whole = body if isinstance(body, bytes) else body.data
        if whole is not None and not any(k == b"content-length" for k, _ in headers):
            headers.append((b"content-length", str(len(whole)).encode()))
        self.metrics.answered(reply.op, reply.status)
        counted = reply.op == "GetObject" and HOP_HEADER not in request.headers
        scope = trio.CancelScope(deadline=trio.current_time() + SEND_TIMEOUT)
        try:
            with scope:
                await send({"type": "http.response.start", "status": reply.status,
                            "headers": headers})
                self.metrics.observe(reply.op, time.monotonic() - started)
                if whole is not None:
                    await send({"type": "http.response.body", "body": whole})
                    if counted and not isinstance(body, bytes):
                        self.metrics.bytes_served.inc(len(whole))
                        self.metrics.bytes_sent += len(whole)
                else:
                    assert isinstance(body, Body)
                    await self._stream(body, send, counted, scope)
            if scope.cancelled_caught:
                log.info("an S3 client stopped reading; dropping its response")
        finally:
            if not isinstance(body, bytes):
                await self._close(body)

    @staticmethod
    async def _close(body: Body) -> None:
        closer = getattr(body.chunks, "aclose", None)
        if closer is None and body.aclose is None:
            body.close()
            return
        with trio.move_on_after(5) as cleanup:
            cleanup.shield = True
            if closer is not None:
                await closer()
            body.close()
            if body.aclose is not None:
                await body.aclose()

    async def _stream(self, body: Body, send: Send, count: bool,
                      scope: trio.CancelScope) -> None:
        if body.chunks is not None:
            async for chunk in body.chunks:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                scope.deadline = trio.current_time() + SEND_TIMEOUT
                if count:
                    self.metrics.bytes_served.inc(len(chunk))
                    self.metrics.bytes_sent += len(chunk)
        await send({"type": "http.response.body", "body": b""})
