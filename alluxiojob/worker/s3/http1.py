"""A lean HTTP/1.1 server for the S3 API's plain port: h11 on trio, one task a connection.

The S3 API answers many small GETs, and a general server's per-request machinery (a
task, a memory channel and several cancel scopes per request) costs more CPU than the
answer. This one drives the same ASGI app (``app.py``) with the least that HTTP/1.1
needs, and keeps the limits of every other port (``web.py``):

- a request head must arrive within ``HEADER_TIMEOUT`` (also the idle keep-alive limit)
  and fit in ``MAX_HEADER_BYTES`` (else 431, or 400 for a malformed one), then closed;
- one request at a time per connection: a pipelined request waits, unread past what
  one ``receive_some`` brought, until the answer before it is sent;
- a request body is never read (the S3 API reads the cache: writes answer
  ``NotImplemented``), so a request that had one closes its connection after the answer;
- the app bounds requests in flight (503 ``SlowDown``) and a client that stops reading
  (``SEND_TIMEOUT`` per chunk); the connection closes when the app fails mid-response.

The HTTPS port and the Alluxio REST port stay on hypercorn.
"""

from __future__ import annotations

import email.utils
import functools
import http
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import h11
import structlog
import trio

from alluxiojob.web import HEADER_TIMEOUT, MAX_HEADER_BYTES

log = structlog.get_logger("alluxiojob.worker.s3")

Message = MutableMapping[str, Any]
App = Callable[[MutableMapping[str, Any], Callable[[], Awaitable[Message]],
                Callable[[Message], Awaitable[None]]], Awaitable[None]]
RECEIVE_SIZE = 64 * 1024
_COALESCE = 256 * 1024  # up to this, the head and body parts go in one write
_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError, OSError)


@functools.lru_cache(maxsize=64)
def _reason(status: int) -> bytes:
    try:
        return http.HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""


class _Date:
    """The ``Date`` header's value, formatted once a second."""

    def __init__(self) -> None:
        self.second = -1
        self.value = b""

    def now(self) -> bytes:
        second = int(time.time())
        if second != self.second:
            self.second = second
            self.value = email.utils.formatdate(second, usegmt=True).encode()
        return self.value


class _Exchange:
    """One request's ASGI ``send``: the head is held back and sent with the first body
    part (one write for a small answer)."""

    def __init__(self, conn: h11.Connection, stream: trio.SocketStream, date: _Date) -> None:
        self.conn = conn
        self.stream = stream
        self.date = date
        self.head = b""
        self.started = False
        self.finished = False

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            if self.started:
                raise RuntimeError("the response has already started")
            headers = [(bytes(k), bytes(v)) for k, v in message.get("headers", ())]
            headers.append((b"date", self.date.now()))
            status = int(message["status"])
            self.head = self.conn.send(h11.Response(status_code=status, headers=headers,
                                                    reason=_reason(status)))
            self.started = True
        elif message["type"] == "http.response.body":
            if not self.started or self.finished:
                raise RuntimeError("a response body outside a response")
            pieces: list[bytes] = [self.head] if self.head else []
            self.head = b""
            body = message.get("body", b"")
            if body:  # h11 frames the data without copying it
                pieces += self.conn.send_with_data_passthrough(h11.Data(data=body)) or []
            if not message.get("more_body", False):
                pieces.append(self.conn.send(h11.EndOfMessage()))
                self.finished = True
            if sum(len(p) for p in pieces) <= _COALESCE:
                await self.stream.send_all(b"".join(pieces))
            else:  # a big chunk is not copied to join a small head to it
                for piece in pieces:
                    if piece:
                        await self.stream.send_all(piece)


def _bodiless(conn: h11.Connection) -> bool:
    """True when the request just read has no body (else its connection closes after
    the answer: the body is never read)."""
    try:
        return isinstance(conn.next_event(), h11.EndOfMessage)
    except h11.RemoteProtocolError:
        return False


async def _receive() -> Message:
    # The S3 app reads no request body (see the module doc).
    return {"type": "http.disconnect"}


class Http1Server:
    def __init__(self, app: App, host: str, port: int) -> None:
        self.app = app
        self.host = host
        self.port = port
        self.date = _Date()
        self.header_timeout = HEADER_TIMEOUT

    async def run(self, *, task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        listeners = await trio.open_tcp_listeners(self.port, host=self.host)
        urls = []
        for listener in listeners:
            host, port = listener.socket.getsockname()[:2]
            urls.append(f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}")
        task_status.started(urls)
        await trio.serve_listeners(self._connection, listeners)

    async def _connection(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)
        try:
            peer = stream.socket.getpeername()
            server = stream.socket.getsockname()
            while True:
                request = await self._head(conn, stream)
                if request is None:
                    return
                bodiless = _bodiless(conn)
                exchange = _Exchange(conn, stream, self.date)
                await self._exchange(request, exchange, peer, server)
                if not (bodiless and exchange.finished and conn.our_state is h11.DONE):
                    return
                conn.start_next_cycle()
        except _ERRORS:
            return  # the client went away, or spoke no HTTP/1.1
        except Exception as exc:
            log.error("an S3 API connection failed", error=repr(exc))
        finally:
            await trio.aclose_forcefully(stream)

    async def _head(self, conn: h11.Connection, stream: trio.SocketStream
                    ) -> h11.Request | None:
        """The next request's head, or None: the connection closes (idle too long, closed
        by the client, or a bad request, answered 400/431 first)."""
        with trio.move_on_after(self.header_timeout):
            while True:
                try:
                    event = conn.next_event()
                except h11.RemoteProtocolError as exc:
                    await self._reject(conn, stream, exc.error_status_hint)
                    return None
                if event is h11.NEED_DATA:
                    conn.receive_data(await stream.receive_some(RECEIVE_SIZE))
                    continue
                if not isinstance(event, h11.Request):
                    return None
                if len(event.target) + sum(len(k) + len(v) + 4 for k, v in event.headers) \
                        > MAX_HEADER_BYTES:  # a head that came whole in one read
                    await self._reject(conn, stream, 431)
                    return None
                return event
        return None

    @staticmethod
    async def _reject(conn: h11.Connection, stream: trio.SocketStream, status: int) -> None:
        if conn.our_state is not h11.SEND_RESPONSE and conn.our_state is not h11.IDLE:
            return
        data = conn.send(h11.Response(status_code=status, reason=_reason(status), headers=[
            (b"content-length", b"0"), (b"connection", b"close")]))
        data += conn.send(h11.EndOfMessage())
        with trio.move_on_after(HEADER_TIMEOUT):
            await stream.send_all(data)

    async def _exchange(self, request: h11.Request, exchange: _Exchange,
                        peer: Any, server: Any) -> None:
        target = request.target
        path, _, query = target.partition(b"?")
        scope: MutableMapping[str, Any] = {
            "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": request.http_version.decode("ascii"),
            "method": request.method.decode("ascii"), "scheme": "http",
            "path": path.decode("latin-1"), "raw_path": path, "query_string": query,
            "root_path": "", "headers": list(request.headers),
            "client": (peer[0], peer[1]), "server": (server[0], server[1]),
        }
        try:
            await self.app(scope, _receive, exchange.send)
        except _ERRORS:
            raise
        except Exception as exc:
            log.error("the S3 API failed a request", target=target.decode("latin-1"),
                      error=repr(exc))
            if not exchange.started:
                await exchange.send({"type": "http.response.start", "status": 500,
                                     "headers": [(b"content-length", b"0")]})
                await exchange.send({"type": "http.response.body", "body": b""})
