"""The property table of the coordinator and of jobs: store, scheduler, REST, job defaults."""

from __future__ import annotations

from alluxiojob.config.registry import (
    enum,
    parse_int,
    parse_list,
    parse_non_negative_int,
    parse_port,
    parse_positive_duration,
    parse_positive_int,
    parse_ratio,
    parse_str,
    register,
)


class CoordinatorKeys:
    """Keys read by coordinators and by the jobs they run."""

    WORK_DIR = register(
        "alluxio.work.dir", parse_str, "~/.alluxiojob", "Base directory for default paths."
    )
    # --- coordinator -----------------------------------------------------------------
    COORDINATOR_HOSTNAME = register(
        "alluxio.coordinator.hostname", parse_str, "localhost", "Coordinator host."
    )
    COORDINATOR_REST_PORT = register(
        "alluxio.coordinator.rest.port", parse_port, "19999", "Coordinator REST API port."
    )
    COORDINATOR_ID = register(
        "alluxio.coordinator.id",
        parse_str,
        "",
        "Coordinator identity in the job store; defaults to hostname:rest.port. In etcd mode "
        "one live process per id.",
    )
    FAILURE_DETECTION_TIMEOUT = register(
        "alluxio.coordinator.failure.detection.timeout",
        parse_positive_duration,
        "15s",
        "The coordinator lease TTL: time before a silent coordinator is considered failed "
        "and its jobs reclaimed.",
    )
    ETCD_MAX_RETRIES = register(
        "alluxio.coordinator.scheduler.etcd.max.retries",
        parse_int,
        "2",
        "Max retries for etcd operations before giving up.",
    )
    ETCD_READ_TIMEOUT = register(
        "alluxio.coordinator.scheduler.etcd.read.timeout",
        parse_positive_duration,
        "10s",
        "Timeout for reading from etcd.",
    )
    ETCD_WRITE_TIMEOUT = register(
        "alluxio.coordinator.scheduler.etcd.write.timeout",
        parse_positive_duration,
        "15s",
        "Timeout for writing to etcd.",
    )
    SCHEDULER_INTERVAL = register(
        "alluxio.coordinator.scheduler.interval.time",
        parse_positive_duration,
        "2s",
        "Scheduling interval: housekeeping such as reclaim, retention and gauges.",
    )
    PROGRESS_WAIT_MAX = register(
        "alluxio.coordinator.progress.wait.max",
        parse_positive_duration,
        "1s",
        "Longest a progress request with wait=S is held for the job's next state change "
        "(job --wait asks with it); at most 16 requests wait at once.",
    )
    JOB_ETCD_PATH = register(
        "alluxio.coordinator.scheduler.job.etcd.path",
        parse_str,
        "/alluxio/jobs/",
        "Key prefix of the job metadata.",
    )
    JOB_ETCD_POLL_INTERVAL = register(
        "alluxio.coordinator.scheduler.job.etcd.poll.interval",
        parse_positive_duration,
        "1s",
        "How often coordinators look for waiting jobs (±20% jitter).",
    )
    JOB_ETCD_ENDPOINTS = register(
        "alluxio.coordinator.scheduler.job.etcd.endpoints",
        parse_list,
        "",
        "A separate etcd cluster for job metadata; defaults to alluxio.etcd.endpoints.",
    )
    MAX_TASKS_PER_WORKER = register(
        "alluxio.coordinator.scheduler.max.tasks.per.worker",
        parse_positive_int,
        "3",
        "Tasks each coordinator keeps in flight on one worker.",
    )
    RUNNING_JOB_CAPACITY = register(
        "alluxio.coordinator.scheduler.running.job.capacity",
        parse_positive_int,
        "100",
        "Jobs one coordinator runs at once.",
    )
    WAITING_JOB_CAPACITY = register(
        "alluxio.coordinator.scheduler.waiting.job.capacity",
        parse_positive_int,
        "300000",
        "Waiting jobs past which a submission is rejected.",
    )
    META_STORE_TYPE = register(
        "alluxio.coordinator.job.meta.store.type",
        enum("ROCKS", "ETCD"),
        "ROCKS",
        "Job store backend: ROCKS (single coordinator) or ETCD (HA).",
    )
    META_STORE_DIR = register(
        "alluxio.coordinator.job.meta.store.dir",
        parse_str,
        "${alluxio.work.dir}/metastore",
        "RocksDB job store directory.",
    )
    ETCD_ENDPOINTS = register(
        "alluxio.etcd.endpoints", parse_list, "",
        "etcd cluster, e.g. http://host:2379; comma separated, failed over in order."
    )
    # --- jobs ------------------------------------------------------------------------
    JOB_BATCH_SIZE = register(
        "alluxio.job.batch.size", parse_positive_int, "200", "Files per task (--batch-size)."
    )
    JOB_CLEANUP_INTERVAL = register(
        "alluxio.job.cleanup.interval",
        parse_positive_duration,
        "1H",
        "Interval between removals of finished jobs past retention.",
    )
    JOB_RETENTION_TIME = register(
        "alluxio.job.retention.time",
        parse_positive_duration,
        "7d",
        "How long finished jobs stay in history.",
    )
    JOB_RETRY_MAX_ATTEMPTS = register(
        "alluxio.job.retry.max.attempts",
        parse_positive_int,
        "3",
        "Attempts per file before it counts as failed.",
    )
    JOB_RETRY_BACKOFF = register(
        "alluxio.job.retry.backoff",
        parse_positive_duration,
        "500ms",
        "First retry delay; doubles per attempt.",
    )
    JOB_FAILURE_COUNT_THRESHOLD = register(
        "alluxio.job.failure.count.threshold",
        parse_int,
        "100",
        "A job fails early when failed files exceed this count and the ratio threshold "
        "(both must be passed); -1 disables.",
    )
    JOB_FAILURE_RATIO_THRESHOLD = register(
        "alluxio.job.failure.ratio.threshold",
        parse_ratio,
        "0.05",
        "A job fails early when the failed-file ratio exceeds this and the count threshold.",
    )
    JOB_SHARD_COUNT = register(
        "alluxio.job.shard.count",
        parse_non_negative_int,
        "0",
        "Shards a new job is split into, at its top-level entries (subdirectories of a "
        "local tree, common prefixes of an object store; below a lone top-level "
        "directory, the first level with several entries), so that several "
        "coordinators, or one coordinator several times over, list and dispatch it "
        "side by side. "
        "0: choose (up to 8, when the top level has several entries); 1: never shard. "
        "A manifest or template job is split into line or index ranges instead (see "
        "alluxio.job.shard.source.files). Jobs with --verify or --bandwidth are not "
        "sharded.",
    )
    JOB_SHARD_SOURCE_FILES = register(
        "alluxio.job.shard.source.files",
        parse_positive_int,
        "10000",
        "Fewest files in a shard of a manifest or template job: a job naming fewer than "
        "twice as many runs whole. Each shard reopens the manifest and rereads the part "
        "of a data file before its range, so tiny shards cost more than they save.",
    )
    JOB_SHARD_SPLIT_KEYS = register(
        "alluxio.job.shard.split.keys",
        parse_non_negative_int,
        "100000",
        "A shard of a listed job (a key range, prefix group or subdirectory) that has "
        "listed this many files since it was claimed, or last split, is split: it keeps "
        "its range up to a cut, and the rest becomes a new shard that any coordinator, or "
        "another slot of this one, claims (at most 60 shards a job). The cut halves what "
        "lies ahead on a local tree, and is the last key listed on an object store. "
        "0: never split.",
    )
    JOB_SHARD_CONCURRENCY = register(
        "alluxio.job.shard.concurrency",
        parse_positive_int,
        "4",
        "Shards, of any job, one coordinator runs at once.",
    )
    JOB_FAILURE_LIST_MAX = register(
        "alluxio.job.failure.list.max",
        parse_positive_int,
        "1000",
        "Failed files kept per job.",
    )
    JOB_TASK_TIMEOUT = register(
        "alluxio.job.task.timeout",
        parse_positive_duration,
        "10min",
        "Deadline of one task on a worker; past it the task's files fail as TASK_TIMEOUT "
        "(retried). Coordinators wait the same plus 10% (at least 5 s) for the answer. Set "
        "it alike on coordinators and workers.",
    )
    CLUSTER_TOKEN = register(
        "alluxio.job.cluster.token",
        parse_str,
        "",
        "The cluster secret every client presents (prefer .token.file; setting both stops "
        "startup); unset: loopback peers only.",
    )
    CLUSTER_TOKEN_FILE = register(
        "alluxio.job.cluster.token.file",
        parse_str,
        "",
        "File holding the cluster secret, readable by the service user only.",
    )
    TLS_CERT_FILE = register(
        "alluxio.job.tls.cert.file",
        parse_str,
        "",
        "PEM certificate (chain) served on the REST API, worker HTTP and websocket ports.",
    )
    TLS_KEY_FILE = register(
        "alluxio.job.tls.key.file", parse_str, "", "PEM private key of the certificate."
    )
    TLS_CA_FILE = register(
        "alluxio.job.tls.ca.file",
        parse_str,
        "",
        "PEM CA bundle clients verify the services' certificates against; once this or a "
        "certificate is set, clients use https and wss.",
    )
    PATH_ALLOWLIST = register(
        "alluxio.job.path.allowlist",
        parse_list,
        "${alluxio.dora.client.ufs.root}",
        "URI prefixes every job source, destination and read-through must lie under; "
        "empty: no confinement.",
    )
    UFS_ROOT = register(
        "alluxio.dora.client.ufs.root",
        parse_str,
        "",
        "Root UFS that relative job paths resolve under.",
    )
