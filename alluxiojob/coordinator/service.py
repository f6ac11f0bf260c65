"""The coordinator process: job store, membership, scheduler, housekeeping and REST API."""

from __future__ import annotations

import functools
import gc
import time
from collections import Counter as Tally
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import structlog
import trio

from alluxiojob.config import Config, ConfigError, Keys
from alluxiojob.coordinator.api import CoordinatorApi
from alluxiojob.coordinator.housekeeping import JobStateGauges, Reconciler, RetentionService
from alluxiojob.coordinator.membership import Membership
from alluxiojob.coordinator.metrics import CoordinatorMetrics
from alluxiojob.coordinator.scheduler import Scheduler
from alluxiojob.coordinator.ui import UI_PUBLIC_PATHS
from alluxiojob.coordinator.workers import WorkerClient
from alluxiojob.core.backoff import jittered
from alluxiojob.core.errors import describe_error
from alluxiojob.core.states import JobState
from alluxiojob.security import PUBLIC_PATHS, Security
from alluxiojob.security.access import protected_mode_warning
from alluxiojob.store.etcd import EtcdKVStore
from alluxiojob.store.jobs import JobStore
from alluxiojob.store.kv import KVStore
from alluxiojob.store.liveness import LeaseRegistration, instance_value, liveness_root
from alluxiojob.web import serve_app

log = structlog.get_logger("alluxiojob.coordinator")
STORE_PROBE_TIMEOUT = 3.0
# Allocations between two collections of the youngest generation (CPython's default:
# 700). A job's files pass through a few objects each, freed by their reference
# counts; collections every 700 of them cost a few µs per file (docs/performance.md).
GC_YOUNG_THRESHOLD = 10_000


def tune_gc() -> None:
    """Once the coordinator is up: what it built to start (modules, config, clients)
    lives as long as it does, so the cycle collector stops scanning it (``gc.freeze``),
    and collects the young generation less often. Cycles are still collected."""
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


def open_kv(config: Config, metrics: CoordinatorMetrics) -> KVStore:
    if config[Keys.META_STORE_TYPE] == "ETCD":
        if not (config[Keys.JOB_ETCD_ENDPOINTS] or config[Keys.ETCD_ENDPOINTS]):
            raise ConfigError(
                "alluxio.coordinator.job.meta.store.type=ETCD needs alluxio.etcd.endpoints "
                "(or alluxio.coordinator.scheduler.job.etcd.endpoints)"
            )
        return EtcdKVStore.from_config(config, on_request=metrics.record_store_request)
    from alluxiojob.store.rocks import RocksKVStore

    return RocksKVStore(Path(config[Keys.META_STORE_DIR]))


class CoordinatorService:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.security = Security.from_config(config, serving=True)
        host = config[Keys.COORDINATOR_HOSTNAME]
        port = config[Keys.COORDINATOR_REST_PORT]
        self.host, self.port = host, port
        self.coordinator_id = config[Keys.COORDINATOR_ID] or f"{host}:{port}"
        self.store_type = config[Keys.META_STORE_TYPE]
        self.ha = self.store_type == "ETCD"
        self.metrics = CoordinatorMetrics()
        self.metrics.running_capacity.set(config[Keys.RUNNING_JOB_CAPACITY])
        self.metrics.waiting_capacity.set(config[Keys.WAITING_JOB_CAPACITY])
        self.kv = open_kv(config, self.metrics)
        self.store = JobStore(self.kv, prefix=config[Keys.JOB_ETCD_PATH])
        static_file = (
            Path(config[Keys.STATIC_CONFIG_FILE])
            if config[Keys.MEMBERSHIP_TYPE] == "STATIC" else None
        )
        self.root = liveness_root(config[Keys.JOB_ETCD_PATH])
        self.membership_kv: KVStore | None = None
        if config[Keys.MEMBERSHIP_TYPE] == "ETCD":
            if not config[Keys.ETCD_ENDPOINTS]:
                raise ConfigError("alluxio.worker.membership.manager.type=ETCD needs "
                                  "alluxio.etcd.endpoints")
            self.membership_kv = self.kv if self.ha and not config[Keys.JOB_ETCD_ENDPOINTS] \
                else EtcdKVStore.from_config(config, membership=True)
        self.membership = Membership(
            self._make_client, static_file, self.membership_kv, self.root + "workers/"
        )
        self.liveness = (
            LeaseRegistration(self.kv, self.root + "coordinators/" + self.coordinator_id,
                              instance_value(self.coordinator_id),
                              config[Keys.FAILURE_DETECTION_TIMEOUT], exclusive=True)
            if self.ha else None
        )
        self.scheduler = Scheduler(
            self.coordinator_id, self.store, self.membership, config, self.metrics,
            ready=None if self.liveness is None else self.liveness.acquired,
        )
        self.reconciler = Reconciler(
            self.store, self.coordinator_id, config[Keys.SCHEDULER_INTERVAL], self.metrics,
            self.scheduler.notify, liveness=self.liveness, kv=self.kv,
            peers_prefix=self.root + "coordinators/",
        )
        self.retention = RetentionService(
            self.store, config[Keys.JOB_RETENTION_TIME], config[Keys.JOB_CLEANUP_INTERVAL]
        )
        self.job_gauges = JobStateGauges(self.store, self.metrics)
        membership = self.membership
        self.metrics.workers_total.set_function(lambda: len(membership.clients))
        self.metrics.workers_connected.set_function(
            lambda: sum(1 for client in membership.clients.values() if client.connected))

    def _make_client(self, worker_id: str, on_down_change: Callable[[], None]) -> WorkerClient:
        return WorkerClient(
            worker_id,
            worker_id,
            self.security.token,
            self.coordinator_id,
            self.config[Keys.MAX_TASKS_PER_WORKER],
            self.config[Keys.FAILURE_DETECTION_TIMEOUT],
            self.security.tls,
            task_timeout=self.config[Keys.JOB_TASK_TIMEOUT],
            on_down_change=on_down_change,
        )

    async def report(self) -> dict[str, Any]:
        """What ``report jobservice`` prints: workers, counts by state, notable jobs."""
        workers = []
        for worker_id, client in sorted(self.membership.clients.items()):
            entry: dict[str, Any] = {"worker": worker_id, "connected": client.connected}
            try:
                status = await client.status()
                entry.update(
                    pool_size=status.pool_size,
                    unfinished_tasks=status.unfinished_tasks,
                    active_tasks=status.active_tasks,
                    load_avg=list(status.load_avg),
                    cache_used=status.cache_used,
                    cache_capacity=status.cache_capacity,
                    cached_files=status.cached_files,
                    s3_requests=status.s3_requests,
                    s3_bytes_served=status.s3_bytes_served,
                )
            except Exception as exc:
                entry["error"] = describe_error(exc)
            workers.append(entry)
        jobs = await self.store.list_jobs()
        counts = Tally(job.state.value for job in jobs)
        now = time.time()
        by_update = sorted(jobs, key=lambda j: j.updated_at, reverse=True)
        failed = [j for j in by_update if j.state is JobState.FAILED]
        running = [j for j in jobs if j.state in (JobState.RUNNING, JobState.VERIFYING)]
        running.sort(key=lambda j: now - (j.started_at or now), reverse=True)
        return {
            "coordinator": self.coordinator_id,
            "store": self.store_type,
            "workers": workers,
            "counts": {state.value: counts.get(state.value, 0) for state in JobState},
            "recently_modified": [j.to_wire() for j in by_update[:10]],
            "recently_failed": [j.to_wire() for j in failed[:10]],
            "longest_running": [j.to_wire() for j in running[:10]],
        }

    async def store_health(self) -> dict[str, Any]:
        """Probe the job store (a small write, or an etcd quorum round trip), bounded."""
        started = time.monotonic()
        error = ""
        with trio.move_on_after(STORE_PROBE_TIMEOUT) as scope:
            try:
                await self.kv.probe()
            except Exception as exc:
                error = str(exc) or describe_error(exc)
        if scope.cancelled_caught:
            error = f"the {self.store_type} job store did not answer within " \
                    f"{STORE_PROBE_TIMEOUT:g}s"
        self.metrics.store_healthy.set(0 if error else 1)
        return {"store_ok": not error, "store_error": error,
                "store_latency_ms": round((time.monotonic() - started) * 1000, 3)}

    async def cached_under(self, path: str, limit: int) -> list[dict[str, Any]]:
        """Files under ``path`` present in the workers' caches (``--file-status SUCCESS``)."""
        found: list[dict[str, Any]] = []
        headers = self.security.token.authorization()
        verify = self.security.tls.client_context() or True
        async with httpx.AsyncClient(timeout=10, headers=headers, verify=verify) as http:
            for worker_id, client in sorted(self.membership.clients.items()):
                if not client.web_url or len(found) >= limit:
                    continue
                try:
                    answer = await http.get(f"{client.web_url}/api/v1/location",
                                            params={"path": path, "list": limit - len(found)})
                    answer.raise_for_status()
                    for item in answer.json().get("list", []):
                        found.append({"path": item["path"], "bytes": item["bytes"],
                                      "worker": worker_id})
                except (httpx.HTTPError, ValueError, KeyError) as exc:
                    found.append({"path": "", "bytes": 0, "worker": worker_id,
                                  "error": describe_error(exc)})
        return found

    async def refresh_metrics(self) -> None:
        await self.job_gauges.refresh()

    async def _watch_store(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Probe the job store every interval: the health gauge, and a RocksDB store
        that lost its directory heals here."""
        task_status.started()
        while True:
            await self.store_health()
            await trio.sleep(jittered(self.config[Keys.SCHEDULER_INTERVAL]))

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            async with trio.open_nursery() as nursery:
                if self.liveness is not None:
                    await nursery.start(self.liveness.run)
                await nursery.start(self.membership.run)
                await nursery.start(self.reconciler.run)
                await nursery.start(self.retention.run)
                await nursery.start(self._watch_store)
                await nursery.start(self.scheduler.run)
                for warning in self.security.warnings:
                    log.warning(warning)
                if self.security.protected_mode:
                    log.warning(protected_mode_warning("coordinator"))
                serve = functools.partial(serve_app, public=PUBLIC_PATHS | UI_PUBLIC_PATHS)
                binds = await nursery.start(serve, CoordinatorApi(self).app(), self.host,
                                            self.port, self.security)
                log.info("coordinator ready", coordinator=self.coordinator_id,
                         rest=binds, store=self.store_type,
                         workers=sorted(self.membership.clients))
                tune_gc()
                task_status.started()
        finally:
            with trio.move_on_after(5) as scope:
                scope.shield = True
                await self.kv.aclose()
                if self.membership_kv is not None and self.membership_kv is not self.kv:
                    await self.membership_kv.aclose()
