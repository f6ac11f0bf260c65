"""Prometheus metrics of a coordinator, under the names the Alluxio docs give."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class CoordinatorMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.poll = Counter("alluxio_scheduler_etcd_poll",
                            "Poll operations on the job queue.", registry=r)
        self.claim = Counter("alluxio_scheduler_etcd_claim",
                             "Jobs successfully claimed from the queue.", registry=r)
        self.reclaim = Counter("alluxio_scheduler_etcd_reclaim",
                               "Jobs reclaimed from failed coordinators.", registry=r)
        self.latency = Histogram(
            "alluxio_scheduler_etcd_latency_ms",
            "Latency of job store operations performed by the scheduler, in milliseconds.",
            buckets=(0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000),
            registry=r,
        )
        self.access = Counter("alluxio_scheduler_job_access_etcd",
                              "Job store accesses by type (get, list, txn, lease).",
                              ["type"], registry=r)
        self.running_jobs = Gauge("alluxio_coordinator_running_jobs",
                                  "Jobs this coordinator is running.", registry=r)
        self.workers_connected = Gauge("alluxio_coordinator_workers_connected",
                                       "Workers this coordinator is connected to.", registry=r)
        self.workers_total = Gauge("alluxio_coordinator_workers",
                                   "Workers in the membership.", registry=r)
        self.jobs = Gauge("alluxio_jobs", "Jobs in the store by state.", ["state"], registry=r)
        self.store_healthy = Gauge("alluxio_coordinator_job_store_healthy",
                                   "1 if the job store took the last health probe, else 0.",
                                   registry=r)
        self.files = Counter("alluxio_job_files_processed",
                             "Files processed by this coordinator's jobs.", registry=r)

    def record_store_request(self, kind: str, seconds: float) -> None:
        self.access.labels(type=kind).inc()
        self.latency.observe(seconds * 1000.0)
