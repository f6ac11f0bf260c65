"""A loopback TCP proxy that can lose answers, for tests of retried etcd writes.

Every accepted connection is piped to the target by two threads. ``hold_answers()``
stops forwarding what the target sends back (requests still go through),
``drop_requests()`` stops forwarding what clients send (the target never sees it), and
``cut()``
closes every open connection, dropping what was held: to the client, the request was
sent and the answer never came, exactly as when a connection dies after etcd applied a
write. New connections made afterwards are forwarded normally.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from types import TracebackType


class TcpProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._holding = threading.Event()
        self._dropping = threading.Event()
        self.held_bytes = 0
        self._closed = False
        self._threads: list[threading.Thread] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> TcpProxy:
        self._spawn(self._accept)
        return self

    def _spawn(self, target: object, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)  # type: ignore[arg-type]
        thread.start()
        self._threads.append(thread)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._closed:
                    client.close()
                    upstream.close()
                    return
                self._sockets += [client, upstream]
            self._spawn(self._pipe, client, upstream, False)
            self._spawn(self._pipe, upstream, client, True)

    def _pipe(self, source: socket.socket, sink: socket.socket, answers: bool) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if answers and self._holding.is_set():
                    self.held_bytes += len(data)
                    continue
                if not answers and self._dropping.is_set():
                    continue
                sink.sendall(data)
        with self._lock:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
                if sock in self._sockets:
                    self._sockets.remove(sock)

    def hold_answers(self) -> None:
        self.held_bytes = 0
        self._holding.set()

    def drop_requests(self) -> None:
        self._dropping.set()

    def cut(self) -> None:
        """Close every open connection (held answers and dropped requests are lost), then
        forward normally."""
        with self._lock:
            doomed, self._sockets = self._sockets, []
        for sock in doomed:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        self._holding.clear()
        self._dropping.clear()

    def close(self) -> None:
        with self._lock:
            self._closed = True
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread
        self._listener.close()
        self.cut()
        for thread in self._threads:
            thread.join(timeout=5)

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
