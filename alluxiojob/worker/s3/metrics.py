"""Prometheus metrics of the S3 API, on the worker's ``/metrics``.

Requests by operation and status, latency by operation, cache hits and misses of
GetObject/HeadObject served here, bytes served and bytes read through from the UFS.
Labels are fixed sets (operation names, HTTP statuses): a client cannot grow them.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

OPERATIONS = ("GetObject", "HeadObject", "ListObjectsV2", "ListObjects", "HeadBucket",
              "ListBuckets", "GetBucketLocation", "NotImplemented", "Unknown",
              "AlluxioNode", "AlluxioInfo", "AlluxioFiles", "AlluxioLoad")


class S3Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "alluxio_worker_s3_requests", "S3 API requests, by operation and HTTP status.",
            ["op", "status"], registry=registry)
        self.latency = Histogram(
            "alluxio_worker_s3_request_seconds",
            "S3 API time to the response's first byte, by operation.", ["op"],
            registry=registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10))
        self.hits = Counter("alluxio_worker_s3_cache_hits",
                            "Object reads served from this worker's cache.", registry=registry)
        self.misses = Counter("alluxio_worker_s3_cache_misses",
                              "Object reads of files not cached here (read through, or "
                              "NoSuchKey).", registry=registry)
        self.bytes_served = Counter("alluxio_worker_s3_bytes_served",
                                    "Object bytes sent to S3 clients by this worker.",
                                    registry=registry)
        self.bytes_read_through = Counter(
            "alluxio_worker_s3_read_through_bytes",
            "Object bytes this worker read from the UFS to answer S3 requests.",
            registry=registry)
        self.forwarded = Counter(
            "alluxio_worker_s3_forwarded",
            "Requests for files another worker owns, by how they were forwarded.",
            ["how"], registry=registry)
        self.inflight = Gauge("alluxio_worker_s3_requests_in_flight",
                              "S3 API requests being served now.", registry=registry)
        self.shed = Counter("alluxio_worker_s3_requests_shed",
                            "Requests answered 503 SlowDown because too many were in "
                            "flight.", registry=registry)
        # plain totals for the coordinator's report (and its web page)
        self.requests_answered = 0
        self.bytes_sent = 0
        # label children looked up once each: (op, status) and op come from fixed sets
        self._requests: dict[tuple[str, int], Counter] = {}
        self._latency: dict[str, Histogram] = {}
        for how in ("proxy", "redirect"):
            self.forwarded.labels(how=how)
        for op in OPERATIONS:
            self.latency.labels(op=op)
            self.requests.labels(op=op, status="200")

    def answered(self, op: str, status: int) -> None:
        child = self._requests.get((op, status))
        if child is None:
            child = self._requests[op, status] = self.requests.labels(op=op,
                                                                      status=str(status))
        child.inc()
        self.requests_answered += 1

    def observe(self, op: str, seconds: float) -> None:
        child = self._latency.get(op)
        if child is None:
            child = self._latency[op] = self.latency.labels(op=op)
        child.observe(seconds)
