"""The S3 API's service: its parts assembled, and its ports served (the plain S3 port by
``http1.py``, the others by hypercorn).

Started by the worker with ``nursery.start`` when ``alluxio.worker.s3.api.enabled``;
``started`` is given the bound URLs once both ports (plain, and HTTPS with the
cluster's certificate when ``alluxio.worker.s3.tls.enabled``) accept connections.
"""

from __future__ import annotations

from pathlib import Path

import structlog
import trio
from hypercorn.trio import serve
from prometheus_client import CollectorRegistry

from alluxiojob.config import Config, Keys
from alluxiojob.security import Security
from alluxiojob.store.kv import KVStore
from alluxiojob.ufs.settings import UfsSettings
from alluxiojob.web import hypercorn_config
from alluxiojob.worker.cache import Cache
from alluxiojob.worker.executor import TaskExecutor
from alluxiojob.worker.s3.alluxio_rest import AlluxioRestApp
from alluxiojob.worker.s3.app import S3App
from alluxiojob.worker.s3.bucket_ops import BucketOps
from alluxiojob.worker.s3.forward import Proxy
from alluxiojob.worker.s3.http1 import Http1Server
from alluxiojob.worker.s3.metrics import S3Metrics
from alluxiojob.worker.s3.objects import ObjectReader
from alluxiojob.worker.s3.ownership import Ownership
from alluxiojob.worker.s3.settings import S3Settings

log = structlog.get_logger("alluxiojob.worker.s3")


class S3Service:
    def __init__(self, config: Config, settings: S3Settings, security: Security,
                 cache: Cache, executor: TaskExecutor, ufs_settings: UfsSettings,
                 worker_id: str, registry: CollectorRegistry) -> None:
        self.config = config
        self.settings = settings
        self.security = security
        self.host = config[Keys.WORKER_HOSTNAME]
        self.metrics = S3Metrics(registry)
        self.reader = ObjectReader(cache, executor, security.allowlist, ufs_settings,
                                   only_cache=settings.only_cache,
                                   cache_misses=settings.cache_misses)
        self.buckets = BucketOps(settings.buckets, security.allowlist, ufs_settings)
        self.worker_id = worker_id
        self.ufs_settings = ufs_settings
        self.ownership: Ownership | None = None

    def membership(self, kv: KVStore | None, etcd_prefix: str) -> Ownership:
        port = 0 if self.settings.only_https else self.settings.port
        https_port = self.settings.https_port if self.settings.tls else 0
        http_port = self.settings.http_port
        if self.config[Keys.MEMBERSHIP_TYPE] == "ETCD":
            return Ownership(self.worker_id, port, https_port, http_port, kv=kv,
                             etcd_prefix=etcd_prefix)
        return Ownership(self.worker_id, port, https_port, http_port,
                         static_file=Path(self.config[Keys.STATIC_CONFIG_FILE]))

    async def run(self, kv: KVStore | None = None, etcd_prefix: str = "", *,
                  task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED) -> None:
        for warning in self.settings.warnings():
            log.warning(warning)
        ownership = self.ownership = self.membership(kv, etcd_prefix)
        proxy = Proxy(self.settings.max_inflight, self.security.tls.client_context())
        app = S3App(self.settings, self.reader, self.buckets, ownership,
                    self.security.allowlist, self.metrics, proxy)
        try:
            async with trio.open_nursery() as nursery:
                self.reader.nursery = nursery
                nursery.start_soon(self.reader.flush_touches)
                await nursery.start(ownership.run)
                urls: list[str] = []
                if not self.settings.only_https:
                    urls += await nursery.start(self._serve, app, self.settings.port, False)
                if self.settings.tls:
                    urls += await nursery.start(self._serve, app, self.settings.https_port,
                                                True)
                if self.settings.http_port:
                    rest = AlluxioRestApp(self.config, self.settings, self.security,
                                          ownership, self.ufs_settings, self.metrics)
                    urls += await nursery.start(self._serve, rest, self.settings.http_port,
                                                False)
                log.info("S3 API ready", urls=urls, mode=self.settings.mode.value,
                         redirect=self.settings.redirect)
                task_status.started(urls)
        finally:
            with trio.move_on_after(2) as cleanup:
                cleanup.shield = True
                await proxy.aclose()

    async def _serve(self, app: S3App | AlluxioRestApp, port: int, tls: bool, *,
                     task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED
                     ) -> None:
        try:
            if isinstance(app, S3App) and not tls:  # the read path: the lean server
                await Http1Server(app, self.host, port).run(task_status=task_status)
                return
            config = hypercorn_config(self.host, port, self.security if tls else None)
            await serve(app, config, task_status=task_status)  # type: ignore[arg-type]
        except* OSError as group:  # hypercorn binds inside its nursery
            exc: BaseException = group
            while isinstance(exc, BaseExceptionGroup):
                exc = exc.exceptions[0]
            assert isinstance(exc, OSError)
            which = {self.settings.port: Keys.S3_PORT.name,
                     self.settings.https_port: Keys.S3_HTTPS_PORT.name,
                     self.settings.http_port: Keys.ALLUXIO_HTTP_PORT.name}.get(port, "port")
            raise OSError(exc.errno, f"the S3 API cannot listen on {self.host}:{port} "
                          f"({which}): {exc.strerror}") from None
