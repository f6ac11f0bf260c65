"""The worker process: a websocket task server and an HTTP server, around a TaskExecutor.

Any coordinator may connect. Its upgrade request must carry the cluster token
(``Authorization: Bearer``), checked before the websocket is accepted, or, with no token
configured, come from a loopback peer (protected mode). An upgrade that carries an
``Origin`` comes from a web page, and is refused (403) in every mode. Until its
``Hello`` (which repeats the token) is accepted, a session may only send messages of
``HELLO_MAX_SIZE`` bytes, so a stranger cannot make the worker buffer large frames.

After that, every message is decoded on its own: a malformed one is answered with an
``ErrorMessage`` naming the problem and the session goes on, so a bad peer can never
crash the worker or disturb other sessions. Those decisions are ``session.py``'s
(``SessionProtocol``, no I/O); this module reads, sends and runs what it decides.

Every task runs under its own cancel scope, with the deadline
``alluxio.job.task.timeout``: past it, the task's files fail with ``TASK_TIMEOUT``
(which the coordinator retries). ``Cancel`` cancels the running tasks it names (or, from
an older coordinator, all the running tasks of a job) that the same session started
(the job was stopped, or its runner ended); they answer with ``CANCELLED``. Cancelling
a task kills the pool processes copying for it (``kill_on_cancel``), which frees them
for other jobs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import structlog
import trio
import trio_parallel
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest, serve_websocket
from trio_websocket import Endpoint as WebSocketEndpoint

from alluxiojob.config import Config, ConfigError, Keys
from alluxiojob.core.errors import describe_error
from alluxiojob.core.reasons import Reason
from alluxiojob.core.rows import FileResult, FileStatus
from alluxiojob.protocol.codec import (
    MAX_MESSAGE_SIZE,
    ErrorMessage,
    Message,
    StatusReply,
    TaskBatch,
    TaskResult,
    encode,
)
from alluxiojob.security import PathAllowlist, Security, check_peer
from alluxiojob.security.access import protected_mode_warning
from alluxiojob.security.browser import websocket_denial
from alluxiojob.store.etcd import EtcdKVStore
from alluxiojob.store.liveness import LeaseRegistration, liveness_root
from alluxiojob.ufs.settings import UfsSettings
from alluxiojob.web import metrics_endpoint, serve_app
from alluxiojob.worker.cache import Cache
from alluxiojob.worker.executor import TaskExecutor
from alluxiojob.worker.metrics import WorkerMetrics
from alluxiojob.worker.reads import file_routes
from alluxiojob.worker.s3.server import S3Service
from alluxiojob.worker.s3.settings import S3Settings
from alluxiojob.worker.scrub import Scrubber
from alluxiojob.worker.session import (
    Accept,
    CancelJob,
    Close,
    Send,
    SessionProtocol,
    SessionState,
    StartTask,
)

log = structlog.get_logger("alluxiojob.worker")

HELLO_TIMEOUT = 10.0
HELLO_MAX_SIZE = 8 * 1024  # a Hello is a token (at most 4 KiB) and a coordinator id
HANDSHAKE_TIMEOUT = 10.0  # for the websocket upgrade request to arrive


def _set_max_message_size(ws: WebSocketConnection, size: int) -> None:
    """trio-websocket has no public setter for one connection's message limit.

    Its reader compares each message's accumulated size with ``_max_message_size`` as
    fragments arrive and closes the connection (1009) past it, so lowering it bounds
    what a peer can make us buffer. Checked, so that a change in the library fails
    loudly (every coordinator session would fail) rather than silently.
    """
    if not isinstance(getattr(ws, "_max_message_size", None), int):
        raise RuntimeError("this trio-websocket has no per-connection message size limit")
    ws._max_message_size = size


def _host_header(request: WebSocketRequest) -> str:
    """The upgrade request's ``Host``. wsproto keeps it out of ``headers`` and
    trio-websocket does not expose its ``host``; without it, the name is treated as not
    local (protected mode then refuses, which a test would catch)."""
    host = getattr(getattr(request, "_event", None), "host", None)
    return host if isinstance(host, str) else ""


def _peer_of(remote: WebSocketEndpoint | str) -> tuple[str | None, str]:
    """(host for the access check, text for logs) of a websocket peer."""
    if isinstance(remote, str):
        return None, remote
    return str(remote.address), f"{remote.address}:{remote.port}"


RunTask = Callable[[TaskBatch], Awaitable[TaskResult]]


def pool_size_for(config: Config) -> int:
    """The process pool: capped to what the host can use, whatever threads.max says."""
    cpus = os.cpu_count() or 2
    return max(1, min(config[Keys.EXECUTOR_THREADS_MAX], max(2, cpus)))


@dataclass
class WorkerIdentity:
    worker_id: str
    host: str
    rpc_port: int
    web_port: int


class Session:
    """One coordinator's connection. Sends are serialized through one lock."""

    def __init__(self, ws: WebSocketConnection, peer: str) -> None:
        self.ws = ws
        self.peer = peer
        self._send_lock = trio.StrictFIFOLock()
        self.running: dict[str, dict[int, trio.CancelScope]] = {}  # job id -> task id -> scope
        self.cancelled: set[trio.CancelScope] = set()

    def cancel_job(self, job_id: str, task_ids: tuple[int, ...] = ()) -> int:
        """Cancel this session's running tasks ``task_ids`` of ``job_id`` (with no ids,
        all of them); returns how many. Ids that are not running are ignored."""
        running = self.running.get(job_id, {})
        chosen = task_ids or tuple(running)
        scopes = [scope for task_id in chosen
                  if (scope := running.pop(task_id, None)) is not None]
        if not running:
            self.running.pop(job_id, None)
        for scope in scopes:
            self.cancelled.add(scope)
            scope.cancel()
        return len(scopes)

    async def send(self, message: Message) -> None:
        async with self._send_lock:
            await self.ws.send_message(encode(message))


def failed_task(batch: TaskBatch, reason: Reason, message: str) -> TaskResult:
    return TaskResult(batch.task_id, tuple(
        FileResult(f.path, FileStatus.FAILED, 0, reason, message) for f in batch.files))


class WorkerService:
    def __init__(self, config: Config, run_task: RunTask | None = None) -> None:
        """``run_task`` replaces the executor in tests of the session (no pool, no cache I/O)."""
        self.config = config
        host = config[Keys.WORKER_HOSTNAME]
        rpc_port = config[Keys.WORKER_RPC_PORT]
        self.identity = WorkerIdentity(
            worker_id=config[Keys.WORKER_ID] or f"{host}:{rpc_port}",
            host=host,
            rpc_port=rpc_port,
            web_port=config[Keys.WORKER_WEB_PORT],
        )
        dirs = [Path(d) for d in config[Keys.PAGE_STORE_DIRS]]
        sizes: tuple[int, ...] = config[Keys.PAGE_STORE_SIZES]
        self.cache = Cache(dirs, list(sizes))
        pool_size = pool_size_for(config)
        self.ufs_settings = UfsSettings.from_config(config, pool_size)
        self.allowlist = PathAllowlist.from_config(config)
        self.executor = TaskExecutor(
            self.cache, config[Keys.PARTITION_SIZE], pool_size,
            pin_seconds=config[Keys.WORKER_PIN_TIME], allowlist=self.allowlist,
            ufs_settings=self.ufs_settings,
        )
        self.run_task: RunTask = run_task or self.executor.run
        self.task_timeout = config[Keys.JOB_TASK_TIMEOUT]
        self.security = Security.from_config(config, serving=True)
        self.token = self.security.token
        self.sessions = 0
        self.metrics = WorkerMetrics(self.executor, self.cache)
        s3 = S3Settings.from_config(config, tls_serving=self.security.tls.serving)
        self.s3 = S3Service(config, s3, self.security, self.cache, self.executor,
                            self.ufs_settings, self.identity.worker_id,
                            self.metrics.registry) if s3.enabled else None
        self.scrubber = Scrubber(self.cache, self.executor.writing)
        self.read_checksum_max = config[Keys.WORKER_READ_CHECKSUM_MAX]
        self.scrub_interval = config[Keys.WORKER_SCRUB_INTERVAL]

    def status(self, request_id: int) -> StatusReply:
        try:
            load = os.getloadavg()
        except OSError:
            load = (0.0, 0.0, 0.0)
        return StatusReply(
            request_id=request_id,
            worker=self.identity.worker_id,
            pool_size=self.executor.pool_size,
            unfinished_tasks=self.executor.stats.unfinished_tasks,
            active_tasks=self.executor.stats.active_shards,
            load_avg=(load[0], load[1], load[2]),
            cache_used=self.cache.used,
            cache_capacity=self.cache.capacity,
            cached_files=self.cache.files,
            s3_requests=self.s3.metrics.requests_answered if self.s3 is not None else 0,
            s3_bytes_served=self.s3.metrics.bytes_sent if self.s3 is not None else 0,
        )

    # ------------------------------------------------------------------ websocket side
    async def handle(self, request: WebSocketRequest) -> None:
        host, peer = _peer_of(request.remote)
        headers = {k.lower(): v for k, v in request.headers}
        origin = headers.get(b"origin")
        denial = websocket_denial(origin)
        if denial is not None:  # a browser's page: coordinators send no Origin
            log.warning("refused a websocket upgrade from a web page", peer=peer,
                        origin=origin.decode("latin-1")[:200] if origin else None)
        else:
            denial = check_peer(self.token, host, request.path,
                                headers.get(b"authorization"), _host_header(request),
                                public=frozenset())
            if denial is not None:
                log.warning("refused a websocket peer", peer=peer, reason=denial.message)
        if denial is not None:
            with trio.move_on_after(2):
                await request.reject(denial.status, body=denial.message.encode())
            return
        ws = await request.accept()
        _set_max_message_size(ws, HELLO_MAX_SIZE)
        session = Session(ws, peer)
        protocol = SessionProtocol(self.token, self.identity.worker_id,
                                   self.identity.web_port, self.status)
        try:
            await self._serve_session(session, protocol)
        except ConnectionClosed:
            pass
        except Exception as exc:  # one session's failure must never stop the worker
            log.warning("coordinator session ended", peer=session.peer,
                        error=describe_error(exc))
        finally:
            with trio.move_on_after(2) as cleanup:
                cleanup.shield = True
                await ws.aclose()

    async def _serve_session(self, session: Session, protocol: SessionProtocol) -> None:
        """The I/O of a session: messages in, the protocol's actions out (``session.py``)."""
        async with trio.open_nursery() as nursery:
            counted = False
            try:
                while True:
                    if protocol.state is SessionState.AWAITING_HELLO:
                        raw: bytes | str | None = None
                        with trio.move_on_after(HELLO_TIMEOUT):
                            raw = await session.ws.get_message()
                        actions = (protocol.hello_timed_out(HELLO_TIMEOUT) if raw is None
                                   else protocol.receive(raw))
                    else:
                        try:
                            raw = await session.ws.get_message()
                        except ConnectionClosed:
                            return
                        actions = protocol.receive(raw)
                    for action in actions:
                        if isinstance(action, Send):
                            if action.warning:
                                detail = getattr(action.message, "message", "")
                                log.warning(action.warning, peer=session.peer, detail=detail)
                            await session.send(action.message)
                        elif isinstance(action, Accept):
                            _set_max_message_size(session.ws, MAX_MESSAGE_SIZE)
                            log.info("coordinator connected", coordinator=action.coordinator,
                                     peer=session.peer)
                            self.sessions += 1
                            counted = True
                        elif isinstance(action, StartTask):
                            nursery.start_soon(self._run_task, session, action.batch)
                        elif isinstance(action, CancelJob):
                            count = session.cancel_job(action.job_id, action.task_ids)
                            log.info("cancelling a job's tasks", job_id=action.job_id,
                                     tasks=count, peer=session.peer)
                        elif isinstance(action, Close):
                            return
            finally:
                if counted:
                    self.sessions -= 1
                # The coordinator retries whatever did not report back; stop wasting work.
                nursery.cancel_scope.cancel()

    async def _run_task(self, session: Session, batch: TaskBatch) -> None:
        with structlog.contextvars.bound_contextvars(job_id=batch.job_id, task=batch.task_id):
            scope = trio.CancelScope(deadline=trio.current_time() + self.task_timeout)
            session.running.setdefault(batch.job_id, {})[batch.task_id] = scope
            result: TaskResult | None = None
            try:
                with scope:
                    result = await self.run_task(batch)
            except Exception as exc:  # a bug must fail the task, not the worker
                log.exception("task failed")
                await session.send(ErrorMessage(f"task failed: {exc!r}", batch.task_id))
                return
            finally:
                tasks = session.running.get(batch.job_id, {})
                if tasks.get(batch.task_id) is scope:
                    del tasks[batch.task_id]
                    if not tasks:
                        session.running.pop(batch.job_id, None)
                stopped = scope in session.cancelled
                session.cancelled.discard(scope)
            if result is None:  # the scope was cancelled: by a Cancel, or at the deadline
                if stopped:
                    result = failed_task(batch, Reason.CANCELLED, "the job was stopped")
                else:
                    log.warning("task passed its deadline", files=len(batch.files),
                                timeout=self.task_timeout)
                    result = failed_task(
                        batch, Reason.TASK_TIMEOUT,
                        f"the task passed alluxio.job.task.timeout={self.task_timeout:g}s")
            self.metrics.record_task(batch.op, result)
            try:
                await session.send(result)
            except ConnectionClosed:
                log.info("coordinator left before the result was sent")

    # ------------------------------------------------------------------ HTTP side
    def web_app(self) -> Starlette:
        async def healthz(request: Request) -> Response:
            return JSONResponse({"status": "ok", "worker": self.identity.worker_id})

        async def status(request: Request) -> Response:
            reply = self.status(0)
            return JSONResponse({
                "worker": reply.worker,
                "pool_size": reply.pool_size,
                "unfinished_tasks": reply.unfinished_tasks,
                "active_tasks": reply.active_tasks,
                "load_avg": list(reply.load_avg),
                "cache_used": reply.cache_used,
                "cache_capacity": reply.cache_capacity,
                "cached_files": reply.cached_files,
            })

        routes = [
            Route("/healthz", healthz),
            Route("/metrics", metrics_endpoint(self.metrics.registry)),  # type: ignore[arg-type]
            Route("/api/v1/worker/status", status),
            *file_routes(self.cache, self.allowlist, self.ufs_settings,
                         checksum_max=self.read_checksum_max, busy=self.executor.writing),
            *self.scrubber.routes(),
        ]
        return Starlette(routes=routes)

    def _registration(self) -> LeaseRegistration | None:
        """ETCD membership: the worker announces itself under a lease."""
        if self.config[Keys.MEMBERSHIP_TYPE] != "ETCD":
            return None
        if not self.config[Keys.ETCD_ENDPOINTS]:
            raise ConfigError("alluxio.worker.membership.manager.type=ETCD needs "
                              "alluxio.etcd.endpoints")
        kv = EtcdKVStore.from_config(self.config, membership=True)
        root = liveness_root(self.config[Keys.JOB_ETCD_PATH])
        announced: dict[str, object] = {"rpc": self.identity.worker_id,
                                        "web": self.identity.web_port}
        if self.s3 is not None:
            s3 = self.s3.settings
            announced["s3"] = 0 if s3.only_https else s3.port
            announced["s3s"] = s3.https_port if s3.tls else 0
            announced["http"] = s3.http_port
        value = json.dumps(announced).encode()
        return LeaseRegistration(kv, root + "workers/" + self.identity.worker_id, value,
                                 self.config[Keys.FAILURE_DETECTION_TIMEOUT])

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        registration = self._registration()
        root = liveness_root(self.config[Keys.JOB_ETCD_PATH])
        for warning in self.security.warnings:
            log.warning(warning)
        if self.security.protected_mode:
            log.warning(protected_mode_warning("worker"))
        files, removed, links = await self.cache.recover()
        for link in links:
            log.warning("removed a symlink from the cache directory: the cache holds only "
                        "files the worker wrote", path=link)
        pins = await self.executor.restore_pins()
        log.info("cache recovered", files=files, removed_unindexed=removed,
                 removed_symlinks=len(links), pinned_jobs=pins,
                 dirs=[str(d.root) for d in self.cache.dirs],
                 tmp_owner=f"{self.executor.tmp_owner.worker}-{self.executor.tmp_owner.run}")
        try:
            # Pool processes live for an hour idle, and are started before the first task,
            # so a job never waits for interpreters to spawn.
            async with trio_parallel.cache_scope(idle_timeout=3600.0, grace_period=2.0), \
                    trio.open_nursery() as nursery:
                nursery.start_soon(self.executor.warm_up)
                nursery.start_soon(self.executor.sweep_uploads)
                if self.scrub_interval > 0:
                    nursery.start_soon(self.scrubber.every, self.scrub_interval)
                await nursery.start(serve_app, self.web_app(), self.identity.host,
                                    self.identity.web_port, self.security)
                ssl_context = (self.security.tls.server_context()
                               if self.security.tls.serving else None)
                await nursery.start(
                    lambda task_status: serve_websocket(
                        self.handle,
                        self.identity.host,
                        self.identity.rpc_port,
                        ssl_context,
                        handler_nursery=None,
                        max_message_size=HELLO_MAX_SIZE,  # raised once the hello is good
                        receive_buffer_size=65536,
                        connect_timeout=HANDSHAKE_TIMEOUT,
                        task_status=task_status,
                    )
                )
                if registration is not None:
                    await nursery.start(registration.run)
                if self.s3 is not None:
                    await nursery.start(
                        self.s3.run, registration.kv if registration is not None else None,
                        root + "workers/" if registration is not None else "")
                log.info("worker ready", worker=self.identity.worker_id,
                         rpc_port=self.identity.rpc_port, web_port=self.identity.web_port,
                         pool_size=self.executor.pool_size)
                task_status.started()
        finally:
            self.cache.close()
            if registration is not None:
                with trio.move_on_after(2) as scope:
                    scope.shield = True
                    await registration.kv.aclose()
