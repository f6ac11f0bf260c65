"""An ASGI guard in front of every HTTP app: who may call, and how much they may send.

In order, before the app sees anything:
0. the browser check of ``browser``: a websocket upgrade with an ``Origin``, or a request
   from another web site (``Origin``, ``Sec-Fetch-Site``), is refused with 403 and a log
   line, in every mode;
1. the peer check of ``access.check_peer`` (loopback only without a token; the bearer
   token otherwise): 401 or 403 with a JSON body that says what to set;
2. a body larger than ``MAX_BODY`` is answered 413 from its ``Content-Length``, or as
   soon as the streamed bytes pass the limit, without being held in memory;
3. the whole body must arrive within ``BODY_TIMEOUT`` (408 otherwise), so that a
   half-sent request does not hold a connection. Headers have their own timeout in
   hypercorn (``keep_alive_timeout`` runs until a request's headers are complete).

The app then gets the body, already read, and parses JSON only after these checks.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import structlog
import trio

from alluxiojob.security.access import PUBLIC_PATHS, Denial, check_peer
from alluxiojob.security.browser import cross_site_denial, websocket_denial
from alluxiojob.security.token import ClusterToken

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

log = structlog.get_logger("alluxiojob.security")

MAX_BODY = 1 << 20
BODY_TIMEOUT = 10.0


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value)
    return None


async def _respond(send: Send, status: int, code: str, message: str,
                   extra: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps({"error": code, "message": message}).encode()
    headers = [(b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode()), *(extra or [])]
    if status in (408, 413):
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class HttpGuard:
    def __init__(self, app: App, token: ClusterToken, *, max_body: int = MAX_BODY,
                 body_timeout: float = BODY_TIMEOUT,
                 public: frozenset[str] = PUBLIC_PATHS) -> None:
        self.app = app
        self.public = public
        self.token = token
        self.max_body = max_body
        self.body_timeout = body_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        peer = str(client[0]) if client else None
        denial = self._browser_denial(scope)
        if denial is not None:
            await self._deny(scope, send, denial)
            return
        public = self.public if scope["type"] == "http" and scope.get("method") in (
            "GET", "HEAD") else frozenset()
        denial = check_peer(self.token, peer, scope.get("path", ""),
                            _header(scope, b"authorization"), _header(scope, b"host"), public)
        if denial is not None:
            await self._deny(scope, send, denial)
            return
        if scope["type"] == "websocket":
            await self.app(scope, receive, send)
            return
        body = await self._read_body(scope, receive, send)
        if body is None:
            return
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def _browser_denial(self, scope: Scope) -> Denial | None:
        """A web page's websocket or cross-site request, logged; None for the others.
        Public paths (data-free pages) may be opened by a link from another site."""
        origin = _header(scope, b"origin")
        shown = origin.decode("latin-1")[:200] if origin is not None else None
        if scope["type"] == "websocket":
            denial = websocket_denial(origin)
            if denial is not None:
                log.warning("refused a websocket upgrade from a web page",
                            path=scope.get("path", ""), origin=shown)
            return denial
        denial = cross_site_denial(
            method=str(scope.get("method", "")), path=str(scope.get("path", "")),
            scheme=str(scope.get("scheme", "http")), host_header=_header(scope, b"host"),
            origin=origin, fetch_site=_header(scope, b"sec-fetch-site"),
            fetch_mode=_header(scope, b"sec-fetch-mode"), navigable=self.public)
        if denial is not None:
            fetch_site = _header(scope, b"sec-fetch-site")
            log.warning("refused a request from another web site", method=scope.get("method"),
                        path=scope.get("path", ""), origin=shown,
                        fetch_site=fetch_site.decode("latin-1")[:50] if fetch_site else None)
        return denial

    async def _deny(self, scope: Scope, send: Send, denial: Denial) -> None:
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": denial.message})
            return
        extra = [(b"www-authenticate", b'Bearer realm="alluxiojob"')] \
            if denial.status == 401 else []
        await _respond(send, denial.status, denial.code, denial.message, extra)

    async def _read_body(self, scope: Scope, receive: Receive, send: Send) -> bytes | None:
        """The request body, or None once a 413/408 was sent instead."""
        declared = _header(scope, b"content-length")
        if declared is not None:
            try:
                length = int(declared)
            except ValueError:
                await _respond(send, 400, "INVALID_ARGUMENT", "bad Content-Length header")
                return None
            if length > self.max_body:
                await self._too_large(send)
                return None
        chunks: list[bytes] = []
        size = 0
        with trio.move_on_after(self.body_timeout) as deadline:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return None
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > self.max_body:
                    await self._too_large(send)
                    return None
                chunks.append(chunk)
                if not message.get("more_body", False):
                    return b"".join(chunks)
        assert deadline.cancelled_caught
        await _respond(send, 408, "REQUEST_TIMEOUT",
                       f"the request body did not arrive within {self.body_timeout:g}s")
        return None

    async def _too_large(self, send: Send) -> None:
        await _respond(send, 413, "PAYLOAD_TOO_LARGE",
                       f"request bodies are limited to {self.max_body} bytes")
