"""The S3 port's lean HTTP/1.1 server, on a loopback socket, with a small ASGI app."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

import trio

from alluxiojob.web import MAX_HEADER_BYTES
from alluxiojob.worker.s3.http1 import Http1Server

Message = MutableMapping[str, Any]


async def app(scope: MutableMapping[str, Any], receive: Callable[[], Awaitable[Message]],
              send: Callable[[Message], Awaitable[None]]) -> None:
    if scope["raw_path"] == b"/fail":
        raise RuntimeError("the app failed")
    body = f"{scope['method']} {scope['raw_path'].decode()}?{scope['query_string'].decode()}"
    data = body.encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})


@asynccontextmanager
async def served(header_timeout: float = 30.0) -> AsyncIterator[int]:
    server = Http1Server(app, "127.0.0.1", 0)
    server.header_timeout = header_timeout
    async with trio.open_nursery() as nursery:
        urls = await nursery.start(server.run)
        yield int(urls[0].rsplit(":", 1)[1])
        nursery.cancel_scope.cancel()


async def exchange(port: int, payload: bytes) -> bytes:
    """Send ``payload``, then read until the server closes the connection."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(payload)
        out = b""
        while chunk := await stream.receive_some(65536):
            out += chunk
        return out


def get(path: str, *, close: bool = False, extra: str = "") -> bytes:
    tail = "Connection: close\r\n" if close else ""
    return f"GET {path} HTTP/1.1\r\nHost: localhost\r\n{extra}{tail}\r\n".encode()


async def test_keep_alive_and_pipelined_requests_are_answered_in_order() -> None:
    with trio.fail_after(30):
        async with served() as port:
            out = await exchange(port, get("/a?x=1") + get("/b") + get("/c", close=True))
    assert out.count(b"HTTP/1.1 200 OK\r\n") == 3
    assert out.index(b"GET /a?x=1") < out.index(b"GET /b?") < out.index(b"GET /c?")
    assert b"date: " in out


async def test_bad_and_oversized_heads_are_refused_and_closed() -> None:
    with trio.fail_after(30):
        async with served() as port:
            garbage = await exchange(port, b"NOT HTTP\r\n\r\n" + get("/after"))
            big = await exchange(port, get("/x", extra=f"X-Big: {'a' * MAX_HEADER_BYTES}\r\n")
                                 + get("/after"))
    assert garbage.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert big.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
    assert b"/after" not in garbage + big


async def test_a_request_with_a_body_is_answered_then_its_connection_closed() -> None:
    with trio.fail_after(30):
        async with served() as port:
            out = await exchange(port, b"PUT /k HTTP/1.1\r\nHost: localhost\r\n"
                                       b"Content-Length: 5\r\n\r\nhello" + get("/after"))
    assert out.startswith(b"HTTP/1.1 200 OK\r\n")
    assert out.endswith(b"PUT /k?")


async def test_an_app_failure_is_a_500_and_an_idle_connection_is_closed() -> None:
    with trio.fail_after(30):
        async with served(header_timeout=0.2) as port:
            failed = await exchange(port, get("/fail") + get("/next", close=True))
            idle = await exchange(port, get("/once"))  # kept alive, then idle: closed
    assert failed.startswith(b"HTTP/1.1 500 Internal Server Error\r\n")
    assert failed.endswith(b"GET /next?")
    assert idle.count(b"HTTP/1.1 200 OK") == 1
    assert idle.endswith(b"GET /once?")
