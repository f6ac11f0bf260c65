"""Prometheus metrics of a worker: its cache, its task pool and what its tasks did.

Gauges read the executor and the cache when scraped. Counters (exposed with the
``_total`` suffix) count every file result a task sends back, so dashboards can take
rates of files and bytes and break failures down by reason. ``deploy/grafana`` and
``deploy/prometheus`` query these names: rename one only together with them.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge

from alluxiojob.core.job import JobType
from alluxiojob.core.reasons import Reason
from alluxiojob.core.rows import FileStatus
from alluxiojob.protocol.codec import TaskResult
from alluxiojob.worker.cache import Cache
from alluxiojob.worker.executor import TaskExecutor


class WorkerMetrics:
    def __init__(self, executor: TaskExecutor, cache: Cache) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        stats = executor.stats
        gauges: dict[str, Callable[[], float]] = {
            "alluxio_worker_job_tasks_unfinished": lambda: stats.unfinished_tasks,
            "alluxio_worker_job_shards_active": lambda: stats.active_shards,
            "alluxio_worker_job_files_loaded": lambda: stats.files_loaded,
            "alluxio_worker_job_bytes_loaded": lambda: stats.bytes_loaded,
            "alluxio_worker_job_files_failed": lambda: stats.files_failed,
            "alluxio_worker_job_files_freed": lambda: stats.files_freed,
            "alluxio_worker_cache_bytes_used": lambda: cache.used,
            "alluxio_worker_cache_bytes_capacity": lambda: cache.capacity,
            "alluxio_worker_cache_files": lambda: cache.files,
            "alluxio_worker_job_pool_size": lambda: executor.pool_size,
        }
        for name, read in gauges.items():
            Gauge(name, name.replace("_", " "), registry=r).set_function(read)
        self.tasks = Counter("alluxio_worker_job_tasks",
                             "Tasks this worker finished, by operation.", ["op"], registry=r)
        self.files = Counter(
            "alluxio_worker_job_files",
            "Files this worker's tasks handled, by operation and status (OK, SKIPPED, "
            "FAILED). A file retried after a failure counts again.",
            ["op", "status"], registry=r)
        self.bytes = Counter(
            "alluxio_worker_job_bytes",
            "Bytes this worker's tasks loaded, copied, moved or freed, by operation.",
            ["op"], registry=r)
        self.failures = Counter(
            "alluxio_worker_job_failures",
            "Failed file attempts on this worker, by operation and reason.",
            ["op", "reason"], registry=r)
        # Every labelled series exists from the start, at 0, so that rates and
        # increase() see the first file of each kind.
        for op in (JobType.LOAD, JobType.FREE, JobType.COPY, JobType.MOVE):
            self.tasks.labels(op=op.value)
            self.bytes.labels(op=op.value)
            for status in (FileStatus.OK, FileStatus.SKIPPED, FileStatus.FAILED):
                self.files.labels(op=op.value, status=status.value)
            for reason in Reason:
                self.failures.labels(op=op.value, reason=reason.value)

    def record_task(self, op: JobType, result: TaskResult) -> None:
        """Count one task's file results."""
        self.tasks.labels(op=op.value).inc()
        moved = 0
        for item in result.results:
            self.files.labels(op=op.value, status=item.status.value).inc()
            if item.status is FileStatus.OK:
                moved += item.bytes
            elif item.status is FileStatus.FAILED:
                self.failures.labels(op=op.value, reason=(item.reason or Reason.IO_ERROR)).inc()
        self.bytes.labels(op=op.value).inc(moved)
