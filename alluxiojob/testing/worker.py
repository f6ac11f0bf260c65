"""In-process workers over memory streams, as trio ships ``memory_stream_pair``.

``InProcessWorker`` runs the real ``WorkerService`` session loop (handshake, task
multiplexing, ``Cancel``, the task deadline) on the server side of a
``trio.testing.memory_stream_pair``, with a scripted task runner in place of the
process pool. A real ``WorkerClient`` reaches it through ``connector``, so that the
coordinator's side (runner, retries, backoff, worker-down detection) is tested without
sockets, on ``autojump_clock``.

``kill()`` drops every session and refuses new ones until ``start()``, as a killed and
restarted worker would.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import trio
import trio.testing
from trio_websocket import WebSocketConnection, wrap_client_stream, wrap_server_stream

from alluxiojob.config import Config, build_config
from alluxiojob.protocol.codec import MAX_MESSAGE_SIZE, TaskBatch, TaskResult
from alluxiojob.worker.service import WorkerService

RunTask = Callable[[TaskBatch], Awaitable[TaskResult]]
CONNECT_TIMEOUT = 5.0
TEST_TOKEN = "in-process-worker-test-token-0123456789"
"""The cluster token of in-process workers (a memory stream is no loopback peer, so
protected mode would refuse it); give clients ``ClusterToken(TEST_TOKEN)``."""


class InProcessWorker:
    def __init__(
        self,
        worker_id: str,
        run_task: RunTask,
        cache_dir: Path,
        properties: dict[str, str] | None = None,
    ) -> None:
        self.worker_id = worker_id
        config: Config = build_config({
            "alluxio.worker.id": worker_id,
            "alluxio.worker.page.store.dirs": str(cache_dir),
            "alluxio.job.cluster.token": TEST_TOKEN,
            **(properties or {}),
        })
        self.service = WorkerService(config, run_task=run_task)
        self.up = True
        self.connections = 0  # successful handshakes so far
        self._sessions: set[trio.CancelScope] = set()

    def kill(self) -> None:
        """Drop every session and refuse new ones."""
        self.up = False
        for scope in self._sessions:
            scope.cancel()

    def start(self) -> None:
        self.up = True

    def connector(
        self, url: str, headers: list[tuple[bytes, bytes]]
    ) -> AbstractAsyncContextManager[WebSocketConnection]:
        """For ``WorkerClient(connector=...)``: connects to this worker whatever the URL."""
        return self._connect(headers)

    @asynccontextmanager
    async def _connect(self, headers: list[tuple[bytes, bytes]]
                       ) -> AsyncIterator[WebSocketConnection]:
        if not self.up:
            await trio.lowlevel.checkpoint()
            raise OSError(f"connection refused by {self.worker_id} (killed)")
        client_stream, server_stream = trio.testing.memory_stream_pair()
        async with trio.open_nursery() as nursery:
            session = trio.CancelScope()
            self._sessions.add(session)

            async def serve() -> None:
                try:
                    with session:
                        request = await wrap_server_stream(
                            nursery, server_stream, max_message_size=MAX_MESSAGE_SIZE)
                        self.connections += 1
                        await self.service.handle(request)
                finally:
                    self._sessions.discard(session)
                    await server_stream.aclose()

            nursery.start_soon(serve)
            with trio.fail_after(CONNECT_TIMEOUT):  # as open_websocket_url's connect_timeout
                ws = await wrap_client_stream(
                    nursery, client_stream, "in-process", "/",  # type: ignore[arg-type]
                    extra_headers=headers, max_message_size=MAX_MESSAGE_SIZE)
            try:
                yield ws
            finally:
                with trio.CancelScope(shield=True):
                    await client_stream.aclose()
                nursery.cancel_scope.cancel()

    def close(self) -> None:
        self.service.cache.close()
