"""Prometheus metrics of a coordinator, under the names the Alluxio docs give.

Counters are exposed with Prometheus's ``_total`` suffix. ``deploy/grafana`` and
``deploy/prometheus`` query these names: rename one only together with them.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from alluxiojob.core.job import JobType
from alluxiojob.core.reasons import Reason
from alluxiojob.core.states import JobState


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
        self.running_capacity = Gauge(
            "alluxio_coordinator_running_job_capacity",
            "Jobs this coordinator may run at once "
            "(alluxio.coordinator.scheduler.running.job.capacity).", registry=r)
        self.waiting_capacity = Gauge(
            "alluxio_coordinator_waiting_job_capacity",
            "Jobs the queue may hold before submissions are rejected "
            "(alluxio.coordinator.scheduler.waiting.job.capacity).", registry=r)
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
        self.files_failed = Counter(
            "alluxio_job_files_failed",
            "Files of this coordinator's jobs that failed for good (after retries), "
            "by job type and reason.", ["type", "reason"], registry=r)
        self.jobs_finished = Counter(
            "alluxio_job_finished",
            "Jobs this coordinator drove to SUCCEEDED or FAILED, by job type and state.",
            ["type", "state"], registry=r)
        # Every labelled series exists from the start, at 0: a counter that appears at 1
        # shows no increase(), so the first failure would raise no alert.
        for job_type in JobType:
            for final in (JobState.SUCCEEDED, JobState.FAILED):
                self.jobs_finished.labels(type=job_type.value, state=final.value)
            for reason in Reason:
                self.files_failed.labels(type=job_type.value, reason=reason.value)
        for state in JobState:
            self.jobs.labels(state=state.value)

    def record_store_request(self, kind: str, seconds: float) -> None:
        self.access.labels(type=kind).inc()
        self.latency.observe(seconds * 1000.0)

    def file_failed(self, job_type: str, reason: str) -> None:
        self.files_failed.labels(type=job_type, reason=reason).inc()

    def job_finished(self, job_type: str, state: str) -> None:
        self.jobs_finished.labels(type=job_type, state=state).inc()
