"""The coordinator's websocket client of one worker: tasks multiplexed, slots, liveness.

``WorkerClient`` keeps one connection per worker, reconnecting with backoff, and
multiplexes tasks over it by task id. At most ``max.tasks.per.worker`` tasks are in
flight per worker, across every job of this coordinator (``slots``). A lost connection
fails every task in flight with ``WorkerLost``; the runner retries those files. A task
that has not answered ``alluxio.job.task.timeout`` (plus a margin, as the worker ends
it at the deadline itself) later fails with ``TASK_TIMEOUT``, so a silent worker cannot
hold a slot for ever.

A worker whose connection attempts have failed for ``failure.detection.timeout`` is
*down* (``unreachable_since``); ``membership.py`` then places its share elsewhere.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Collection, Sequence
from contextlib import AbstractAsyncContextManager

import structlog
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

from alluxiojob.core.backoff import backoff_delay
from alluxiojob.core.errors import describe_error
from alluxiojob.core.job import JobType
from alluxiojob.core.reasons import Reason
from alluxiojob.core.rows import FileEntry
from alluxiojob.protocol.codec import (
    MAX_MESSAGE_SIZE,
    Cancel,
    ErrorMessage,
    Hello,
    ProtocolError,
    StatusReply,
    StatusRequest,
    TaskBatch,
    TaskOptions,
    TaskResult,
    Welcome,
    decode,
    encode,
)
from alluxiojob.security.tls import TlsSettings
from alluxiojob.security.token import ClusterToken

log = structlog.get_logger("alluxiojob.coordinator")

PING_INTERVAL = 5.0
STATUS_TIMEOUT = 2.0
CANCEL_TIMEOUT = 1.0

Headers = list[tuple[bytes, bytes]]
Connector = Callable[[str, Headers], AbstractAsyncContextManager[WebSocketConnection]]
"""Opens a websocket to a worker's URL with these upgrade headers: the network by
default, memory streams in tests (``alluxiojob.testing.worker``)."""


def answer_deadline(task_timeout: float) -> float:
    """How long the coordinator waits for a task: the worker's deadline and a margin."""
    return task_timeout + max(5.0, task_timeout / 10)


class WorkerError(Exception):
    reason = Reason.WORKER_RPC_FAILED


class WorkerUnavailable(WorkerError):
    reason = Reason.WORKER_NOT_REACHABLE


class WorkerLost(WorkerError):
    reason = Reason.WORKER_LOST


class WorkerTimeout(WorkerError):
    reason = Reason.TASK_TIMEOUT


class _Pending:
    def __init__(self) -> None:
        self.done = trio.Event()
        self.result: TaskResult | StatusReply | None = None
        self.error: WorkerError | None = None


class WorkerClient:
    def __init__(
        self,
        worker_id: str,
        address: str,
        token: ClusterToken,
        coordinator_id: str,
        max_tasks: int,
        liveness_timeout: float,
        tls: TlsSettings | None = None,
        task_timeout: float = 600.0,
        connector: Connector | None = None,
        on_down_change: Callable[[], None] = lambda: None,
    ) -> None:
        self.worker_id = worker_id
        self.tls = tls or TlsSettings()
        self.url = f"{self.tls.ws_scheme}://{address}/"
        self.token = token
        self.coordinator_id = coordinator_id
        self.max_tasks = max_tasks
        self.slots = trio.Semaphore(max_tasks)
        self.liveness_timeout = liveness_timeout
        self.task_timeout = task_timeout
        self._connector = connector
        self._on_down_change = on_down_change
        self.down = False
        self._unreachable_since: float | None = None
        self._ws: WebSocketConnection | None = None
        self._ready = trio.Event()  # set: connected, or known to be down (stop waiting)
        self._pending: dict[int, _Pending] = {}
        self._ids = itertools.count(1)
        self._send_lock = trio.StrictFIFOLock()
        self.last_error = ""
        self.web_port = 0

    @property
    def connected(self) -> bool:
        return self._ws is not None

    @property
    def web_url(self) -> str:
        """The worker's HTTP address, once it has told us its web port."""
        if not self.web_port:
            return ""
        host = self.worker_id.rsplit(":", 1)[0]
        return f"{self.tls.http_scheme}://{host}:{self.web_port}"

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Keep a connection up until cancelled."""
        task_status.started()
        attempt = 0
        while True:
            try:
                await self._session()
                attempt = 0
            except Exception as exc:  # any failure of a session means: reconnect
                message = describe_error(exc)
                if message != self.last_error:
                    log.warning("worker unreachable", worker=self.worker_id, error=message)
                self.last_error = message
            self._attempt_failed()
            attempt += 1
            await trio.sleep(backoff_delay(attempt, first=0.05, cap=1.0))

    def _attempt_failed(self) -> None:
        """No connection now: after ``failure.detection.timeout`` of that, the worker is down."""
        now = trio.current_time()
        if self._unreachable_since is None:
            self._unreachable_since = now
        if not self.down and now - self._unreachable_since >= self.liveness_timeout:
            self.down = True
            self._ready.set()  # whoever waits for a connection gives up now
            log.warning("worker is down; its work goes to the next live workers",
                        worker=self.worker_id,
                        unreachable_for=round(now - self._unreachable_since, 3))
            self._on_down_change()

    @property
    def unreachable_since(self) -> float | None:
        """Trio time of the first failed connection attempt since the worker last answered."""
        return self._unreachable_since

    def _answered(self) -> None:
        self._unreachable_since = None
        if self.down:
            self.down = False
            log.info("worker is up again", worker=self.worker_id)
            self._on_down_change()

    def _connect(self) -> AbstractAsyncContextManager[WebSocketConnection]:
        # The token also goes in the upgrade request: the worker checks it before it
        # accepts the websocket, so a stranger never gets to send a message at all.
        headers = [(k.lower().encode(), v.encode())
                   for k, v in self.token.authorization().items()]
        if self._connector is not None:
            return self._connector(self.url, headers)
        return open_websocket_url(
            self.url,
            ssl_context=self.tls.client_context(),
            extra_headers=headers,
            max_message_size=MAX_MESSAGE_SIZE,
            receive_buffer_size=65536,
            connect_timeout=5,
            disconnect_timeout=2,
        )

    async def _session(self) -> None:
        async with self._connect() as ws:
            await ws.send_message(encode(Hello(self.token.value, self.coordinator_id)))
            with trio.fail_after(10):
                reply = decode(await ws.get_message())
            if isinstance(reply, ErrorMessage):
                raise WorkerError(f"worker {self.worker_id} refused us: {reply.message}")
            if not isinstance(reply, Welcome):
                raise ProtocolError(f"expected welcome, got {type(reply).__name__}")
            if reply.worker != self.worker_id:
                log.warning("worker identity differs from the membership list",
                            listed=self.worker_id, reported=reply.worker)
            if self.last_error:
                log.info("worker reconnected", worker=self.worker_id)
            self.last_error = ""
            self._answered()
            self.web_port = reply.web_port
            self._ws = ws
            self._ready.set()
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._pinger, ws, nursery.cancel_scope)
                    await self._reader(ws)
                    nursery.cancel_scope.cancel()
            finally:
                self._ws = None
                self._ready = trio.Event()
                pending, self._pending = self._pending, {}
                for item in pending.values():
                    item.error = WorkerLost(f"lost connection to worker {self.worker_id}")
                    item.done.set()

    async def _reader(self, ws: WebSocketConnection) -> None:
        while True:
            try:
                raw = await ws.get_message()
            except ConnectionClosed:
                return
            try:
                message = decode(raw)
            except ProtocolError as exc:
                log.warning("malformed message from worker", worker=self.worker_id,
                            error=str(exc))
                continue
            if isinstance(message, TaskResult | StatusReply):
                key = message.task_id if isinstance(message, TaskResult) else message.request_id
                item = self._pending.pop(key, None)
                if item is not None:
                    item.result = message
                    item.done.set()
            elif isinstance(message, ErrorMessage):
                item = self._pending.pop(message.task_id, None)
                if item is not None:
                    item.error = WorkerError(f"worker {self.worker_id}: {message.message}")
                    item.done.set()
                else:
                    log.warning("worker reported an error", worker=self.worker_id,
                                error=message.message)

    async def _pinger(self, ws: WebSocketConnection, scope: trio.CancelScope) -> None:
        """A paused or partitioned worker must not hold tasks forever."""
        while True:
            await trio.sleep(PING_INTERVAL)
            with trio.move_on_after(self.liveness_timeout) as timeout:
                await ws.ping()
            if timeout.cancelled_caught:
                log.warning("worker stopped answering pings", worker=self.worker_id)
                scope.cancel()
                return

    async def _request(self, request_id: int, payload: bytes, wait: float) -> _Pending:
        if not self.down:  # a worker known to be down fails at once
            with trio.move_on_after(wait):
                await self._ready.wait()
        ws = self._ws
        if ws is None:
            raise WorkerUnavailable(
                f"worker {self.worker_id} is not reachable"
                + (f" ({self.last_error})" if self.last_error else "")
            )
        item = _Pending()
        self._pending[request_id] = item
        try:
            async with self._send_lock:
                await ws.send_message(payload)
        except ConnectionClosed:
            self._pending.pop(request_id, None)
            raise WorkerLost(f"lost connection to worker {self.worker_id}") from None
        return item

    async def call(
        self,
        job_id: str,
        op: JobType,
        files: Sequence[FileEntry],
        options: TaskOptions,
        connect_wait: float,
        sent: set[int] | None = None,
    ) -> TaskResult:
        """Run one task. Its id is in ``sent`` from when it is sent until it is answered,
        so that the caller can cancel it (``cancel``) if it stops waiting."""
        task_id = next(self._ids)
        batch = TaskBatch(task_id, job_id, op, tuple(files), options)
        if sent is not None:
            sent.add(task_id)
        item = await self._request(task_id, encode(batch), connect_wait)
        deadline = answer_deadline(self.task_timeout)
        try:
            with trio.move_on_after(deadline):
                await item.done.wait()
        finally:
            self._pending.pop(task_id, None)
            if sent is not None and item.done.is_set():
                sent.discard(task_id)
        if item.error is not None:
            raise item.error
        if item.result is None:
            raise WorkerTimeout(
                f"worker {self.worker_id} did not answer a task in {deadline:g}s "
                f"(alluxio.job.task.timeout={self.task_timeout:g}s)"
            )
        assert isinstance(item.result, TaskResult)
        return item.result

    async def cancel(self, job_id: str, task_ids: Collection[int]) -> None:
        """Ask the worker to cancel these tasks of ``job_id`` (and no other: the
        runners of a job's shards share this connection).

        Best effort: without a connection there is nothing to cancel, as the worker
        cancels a session's tasks when the session ends.
        """
        ws = self._ws
        if ws is None or not task_ids:  # no ids would cancel every task of the job
            return
        with trio.move_on_after(CANCEL_TIMEOUT):
            try:
                async with self._send_lock:
                    await ws.send_message(encode(Cancel(job_id, tuple(sorted(task_ids)))))
            except ConnectionClosed:
                pass

    async def status(self) -> StatusReply:
        timeout = STATUS_TIMEOUT
        request_id = next(self._ids)
        item = await self._request(request_id, encode(StatusRequest(request_id)), 0)
        with trio.move_on_after(timeout):
            await item.done.wait()
        self._pending.pop(request_id, None)
        if item.error is not None:
            raise item.error
        if not isinstance(item.result, StatusReply):
            raise WorkerUnavailable(f"worker {self.worker_id} did not answer in {timeout}s")
        return item.result
