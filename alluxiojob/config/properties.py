"""Every property alluxiojob understands, with its Alluxio name, parser and default.

Theory of operation: ``PROPERTIES`` is the one registry. ``load_config`` merges, in
increasing precedence, the defaults, an ``alluxio-site.properties`` file, ``ALLUXIO_*``
environment variables and ``-D key=value`` pairs. Every known value is parsed once, at
load, so that a bad value stops startup with a message that names the key, instead of
failing later inside a running job. Unknown keys only warn: one site file is often shared
with the other Alluxio components.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from alluxiojob.config.units import parse_duration, parse_size

T = TypeVar("T")


class ConfigError(ValueError):
    """A property file, key or value is unusable. The message names the key."""


def _parse_int(text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise ValueError(f"not an integer: {text!r}") from None


def _parse_non_negative_int(text: str) -> int:
    value = _parse_int(text)
    if value < 0:
        raise ValueError(f"must be 0 or more, got {value}")
    return value


def _parse_positive_int(text: str) -> int:
    value = _parse_int(text)
    if value <= 0:
        raise ValueError(f"must be a positive integer, got {value}")
    return value


def _parse_port(text: str) -> int:
    value = _parse_int(text)
    if not 0 <= value <= 65535:
        raise ValueError(f"not a TCP port: {value}")
    return value


def _parse_ratio(text: str) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        raise ValueError(f"not a number: {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"must be a ratio between 0 and 1, got {value}")
    return value


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "yes", "1", "on"):
        return True
    if lowered in ("false", "no", "0", "off"):
        return False
    raise ValueError(f"not a boolean: {text!r} (expected true or false)")


def _parse_str(text: str) -> str:
    return text.strip()


def _parse_list(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _parse_size_list(text: str) -> tuple[int, ...]:
    return tuple(parse_size(part) for part in _parse_list(text))


MIN_PARTITION_SIZE = 1 << 20


def _partition_size(text: str) -> int:
    """A shard is at least 1 MiB: tiny partitions mean millions of shards for one file."""
    value = parse_size(text)
    if value < MIN_PARTITION_SIZE:
        raise ValueError(f"must be at least 1MiB, got {text!r}")
    return value


def _parse_duration_allow_zero(text: str) -> float:
    value = parse_duration(text)
    if value < 0:
        raise ValueError(f"must not be negative, got {text!r}")
    return value


def _parse_positive_duration(text: str) -> float:
    value = parse_duration(text)
    if value <= 0:
        raise ValueError(f"must be a positive duration, got {text!r}")
    return value


def _http_url(text: str) -> str:
    """An ``http(s)://host[:port][/path]`` URL, without a trailing slash; empty: unset."""
    value = text.strip().rstrip("/")
    if not value:
        return ""
    scheme, sep, rest = value.partition("://")
    if not sep or scheme.lower() not in ("http", "https") or not rest or rest[0] == "/":
        raise ValueError(f"not an http:// or https:// URL with a host: {text!r}")
    return value


_AZURE_ACCOUNT = re.compile(r"^[a-z0-9]{3,24}$")


def _azure_account(text: str) -> str:
    value = text.strip()
    if value and not _AZURE_ACCOUNT.match(value):
        raise ValueError(f"{value!r} is not an Azure storage account name (3 to 24 lowercase "
                         "letters and digits)")
    return value


def _base64_secret(text: str) -> str:
    """A base64 key such as an Azure account key. Errors never repeat the value."""
    value = text.strip()
    if value:
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"not base64 ({len(value)} characters; a storage account key is "
                             "the 88-character base64 string from the portal)") from None
    return value


def _enum(*choices: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        value = text.strip().upper()
        if value not in choices:
            raise ValueError(f"{text!r} is not one of {', '.join(choices)}")
        return value

    return parse


@dataclass(frozen=True)
class PropertyKey(Generic[T]):
    name: str
    parse: Callable[[str], T]
    default: str | None
    description: str
    secret: bool = False  # a bad value is reported without repeating it

    @property
    def env_name(self) -> str:
        return self.name.upper().replace(".", "_").replace("-", "_")


PROPERTIES: dict[str, PropertyKey[Any]] = {}


def _key(
    name: str, parse: Callable[[str], T], default: str | None, description: str,
    secret: bool = False,
) -> PropertyKey[T]:
    key = PropertyKey(name, parse, default, description, secret)
    PROPERTIES[name] = key
    return key


@dataclass(frozen=True)
class PropertyTemplate:
    """A family of keys with a variable part, such as Alluxio's per-account Azure keys."""

    pattern: re.Pattern[str]
    example: str
    parse: Callable[[str], Any]
    description: str
    secret: bool = False


# fs.azure.account.key.<account>.blob.core.windows.net, as in Alluxio's Azure Blob and
# ABFS docs (Hadoop's name): the account, the service (blob or dfs) and the cloud's suffix.
AZURE_ACCOUNT_KEY_TEMPLATE = PropertyTemplate(
    re.compile(r"^fs\.azure\.account\.key\.([a-z0-9]{3,24})\.(blob|dfs)\.([a-z0-9.-]+)$"),
    "fs.azure.account.key.<account>.blob.core.windows.net",
    _base64_secret,
    "Account key of one Azure storage account (never logged or returned); names the "
    "account, and another cloud's suffix (blob.core.chinacloudapi.cn, ...) gives the "
    "endpoint. Several accounts need alluxio.underfs.azure.account.name.",
    secret=True,
)
TEMPLATES: tuple[PropertyTemplate, ...] = (AZURE_ACCOUNT_KEY_TEMPLATE,)


def _template_of(name: str) -> PropertyTemplate | None:
    return next((t for t in TEMPLATES if t.pattern.match(name)), None)


class Keys:
    """Typed handles for every property. ``config[Keys.JOB_BATCH_SIZE]`` is an ``int``."""

    WORK_DIR = _key(
        "alluxio.work.dir", _parse_str, "~/.alluxiojob", "Base directory for default paths."
    )
    # --- coordinator -----------------------------------------------------------------
    COORDINATOR_HOSTNAME = _key(
        "alluxio.coordinator.hostname", _parse_str, "localhost", "Coordinator host."
    )
    COORDINATOR_REST_PORT = _key(
        "alluxio.coordinator.rest.port", _parse_port, "19999", "Coordinator REST API port."
    )
    COORDINATOR_ID = _key(
        "alluxio.coordinator.id",
        _parse_str,
        "",
        "Coordinator identity in the job store; defaults to hostname:rest.port. In etcd mode "
        "one live process per id.",
    )
    FAILURE_DETECTION_TIMEOUT = _key(
        "alluxio.coordinator.failure.detection.timeout",
        _parse_positive_duration,
        "15s",
        "The coordinator lease TTL: time before a silent coordinator is considered failed "
        "and its jobs reclaimed.",
    )
    ETCD_MAX_RETRIES = _key(
        "alluxio.coordinator.scheduler.etcd.max.retries",
        _parse_int,
        "2",
        "Max retries for etcd operations before giving up.",
    )
    ETCD_READ_TIMEOUT = _key(
        "alluxio.coordinator.scheduler.etcd.read.timeout",
        _parse_positive_duration,
        "10s",
        "Timeout for reading from etcd.",
    )
    ETCD_WRITE_TIMEOUT = _key(
        "alluxio.coordinator.scheduler.etcd.write.timeout",
        _parse_positive_duration,
        "15s",
        "Timeout for writing to etcd.",
    )
    SCHEDULER_INTERVAL = _key(
        "alluxio.coordinator.scheduler.interval.time",
        _parse_positive_duration,
        "2s",
        "Scheduling interval: housekeeping such as reclaim, retention and gauges.",
    )
    JOB_ETCD_PATH = _key(
        "alluxio.coordinator.scheduler.job.etcd.path",
        _parse_str,
        "/alluxio/jobs/",
        "Key prefix of the job metadata.",
    )
    JOB_ETCD_POLL_INTERVAL = _key(
        "alluxio.coordinator.scheduler.job.etcd.poll.interval",
        _parse_positive_duration,
        "1s",
        "How often coordinators look for waiting jobs (±20% jitter).",
    )
    JOB_ETCD_ENDPOINTS = _key(
        "alluxio.coordinator.scheduler.job.etcd.endpoints",
        _parse_list,
        "",
        "A separate etcd cluster for job metadata; defaults to alluxio.etcd.endpoints.",
    )
    MAX_TASKS_PER_WORKER = _key(
        "alluxio.coordinator.scheduler.max.tasks.per.worker",
        _parse_positive_int,
        "3",
        "Tasks each coordinator keeps in flight on one worker.",
    )
    RUNNING_JOB_CAPACITY = _key(
        "alluxio.coordinator.scheduler.running.job.capacity",
        _parse_positive_int,
        "100",
        "Jobs one coordinator runs at once.",
    )
    WAITING_JOB_CAPACITY = _key(
        "alluxio.coordinator.scheduler.waiting.job.capacity",
        _parse_positive_int,
        "300000",
        "Waiting jobs past which a submission is rejected.",
    )
    META_STORE_TYPE = _key(
        "alluxio.coordinator.job.meta.store.type",
        _enum("ROCKS", "ETCD"),
        "ROCKS",
        "Job store backend: ROCKS (single coordinator) or ETCD (HA).",
    )
    META_STORE_DIR = _key(
        "alluxio.coordinator.job.meta.store.dir",
        _parse_str,
        "${alluxio.work.dir}/metastore",
        "RocksDB job store directory.",
    )
    ETCD_ENDPOINTS = _key(
        "alluxio.etcd.endpoints", _parse_list, "",
        "etcd cluster, e.g. http://host:2379; comma separated, failed over in order."
    )
    # --- jobs ------------------------------------------------------------------------
    JOB_BATCH_SIZE = _key(
        "alluxio.job.batch.size", _parse_positive_int, "200", "Files per task (--batch-size)."
    )
    JOB_CLEANUP_INTERVAL = _key(
        "alluxio.job.cleanup.interval",
        _parse_positive_duration,
        "1H",
        "Interval between removals of finished jobs past retention.",
    )
    JOB_RETENTION_TIME = _key(
        "alluxio.job.retention.time",
        _parse_positive_duration,
        "7d",
        "How long finished jobs stay in history.",
    )
    JOB_RETRY_MAX_ATTEMPTS = _key(
        "alluxio.job.retry.max.attempts",
        _parse_positive_int,
        "3",
        "Attempts per file before it counts as failed.",
    )
    JOB_RETRY_BACKOFF = _key(
        "alluxio.job.retry.backoff",
        _parse_positive_duration,
        "500ms",
        "First retry delay; doubles per attempt.",
    )
    JOB_FAILURE_COUNT_THRESHOLD = _key(
        "alluxio.job.failure.count.threshold",
        _parse_int,
        "100",
        "A job fails early when failed files exceed this count and the ratio threshold "
        "(both must be passed); -1 disables.",
    )
    JOB_FAILURE_RATIO_THRESHOLD = _key(
        "alluxio.job.failure.ratio.threshold",
        _parse_ratio,
        "0.05",
        "A job fails early when the failed-file ratio exceeds this and the count threshold.",
    )
    JOB_SHARD_COUNT = _key(
        "alluxio.job.shard.count",
        _parse_non_negative_int,
        "0",
        "Shards a new job is split into, at its top-level entries (subdirectories of a "
        "local tree, common prefixes of an object store), so that several coordinators, "
        "or one coordinator several times over, list and dispatch it side by side. "
        "0: choose (up to 8, when the top level has several entries); 1: never shard. "
        "A manifest or template job is split into line or index ranges instead (see "
        "alluxio.job.shard.source.files). Jobs with --verify or --bandwidth are not "
        "sharded.",
    )
    JOB_SHARD_SOURCE_FILES = _key(
        "alluxio.job.shard.source.files",
        _parse_positive_int,
        "10000",
        "Fewest files in a shard of a manifest or template job: a job naming fewer than "
        "twice as many runs whole. Each shard reopens the manifest and rereads the part "
        "of a data file before its range, so tiny shards cost more than they save.",
    )
    JOB_SHARD_SPLIT_KEYS = _key(
        "alluxio.job.shard.split.keys",
        _parse_non_negative_int,
        "100000",
        "A shard of a listed job (a key range, prefix group or subdirectory) that has "
        "listed this many files since it was claimed, or last split, is split: it keeps "
        "its range up to a cut, and the rest becomes a new shard that any coordinator, or "
        "another slot of this one, claims (at most 60 shards a job). The cut halves what "
        "lies ahead on a local tree, and is the last key listed on an object store. "
        "0: never split.",
    )
    JOB_SHARD_CONCURRENCY = _key(
        "alluxio.job.shard.concurrency",
        _parse_positive_int,
        "4",
        "Shards, of any job, one coordinator runs at once.",
    )
    JOB_FAILURE_LIST_MAX = _key(
        "alluxio.job.failure.list.max",
        _parse_positive_int,
        "1000",
        "Failed files kept per job.",
    )
    JOB_TASK_TIMEOUT = _key(
        "alluxio.job.task.timeout",
        _parse_positive_duration,
        "10min",
        "Deadline of one task on a worker; past it the task's files fail as TASK_TIMEOUT "
        "(retried). Coordinators wait the same plus 10% (at least 5 s) for the answer. Set "
        "it alike on coordinators and workers.",
    )
    CLUSTER_TOKEN = _key(
        "alluxio.job.cluster.token",
        _parse_str,
        "",
        "The cluster secret every client presents (prefer .token.file; setting both stops "
        "startup); unset: loopback peers only.",
    )
    CLUSTER_TOKEN_FILE = _key(
        "alluxio.job.cluster.token.file",
        _parse_str,
        "",
        "File holding the cluster secret, readable by the service user only.",
    )
    TLS_CERT_FILE = _key(
        "alluxio.job.tls.cert.file",
        _parse_str,
        "",
        "PEM certificate (chain) served on the REST API, worker HTTP and websocket ports.",
    )
    TLS_KEY_FILE = _key(
        "alluxio.job.tls.key.file", _parse_str, "", "PEM private key of the certificate."
    )
    TLS_CA_FILE = _key(
        "alluxio.job.tls.ca.file",
        _parse_str,
        "",
        "PEM CA bundle clients verify the services' certificates against; once this or a "
        "certificate is set, clients use https and wss.",
    )
    PATH_ALLOWLIST = _key(
        "alluxio.job.path.allowlist",
        _parse_list,
        "${alluxio.dora.client.ufs.root}",
        "URI prefixes every job source, destination and read-through must lie under; "
        "empty: no confinement.",
    )
    UFS_ROOT = _key(
        "alluxio.dora.client.ufs.root",
        _parse_str,
        "",
        "Root UFS that relative job paths resolve under.",
    )
    # --- under file systems ------------------------------------------------------------
    S3_ACCESS_KEY = _key(
        "s3a.accessKeyId", _parse_str, "",
        "S3 access key id; empty: the standard AWS environment variables, web identity, "
        "container or instance credentials (profiles in ~/.aws/config are not read).",
    )
    S3_SECRET_KEY = _key(
        "s3a.secretKey", _parse_str, "", "S3 secret key (never logged or returned).",
        secret=True,
    )
    S3_ENDPOINT = _key(
        "alluxio.underfs.s3.endpoint", _parse_str, "",
        "S3 endpoint URL (http:// is allowed); empty: AWS for the region.",
    )
    S3_REGION = _key(
        "alluxio.underfs.s3.region", _parse_str, "",
        "S3 region; empty: AWS_REGION / AWS_DEFAULT_REGION, else us-east-1.",
    )
    S3_DISABLE_DNS_BUCKETS = _key(
        "alluxio.underfs.s3.disable.dns.buckets", _parse_bool, "false",
        "Path-style requests (endpoint/bucket/key) instead of virtual-hosted bucket names.",
    )
    AZURE_ACCOUNT_NAME = _key(
        "alluxio.underfs.azure.account.name", _azure_account, "",
        "Azure storage account of az:// URIs; empty: the account of the one "
        "fs.azure.account.key.<account>.blob.core.windows.net key, else "
        "AZURE_STORAGE_ACCOUNT_NAME.",
    )
    AZURE_ACCOUNT_KEY = _key(
        "fs.azure.account.key", _base64_secret, "",
        "Azure storage account key (never logged or returned); a per-account "
        "fs.azure.account.key.<account>.blob.core.windows.net wins over it; empty: the "
        "Azure environment variables, SAS or managed identity. Base64.",
        secret=True,
    )
    AZURE_ENDPOINT = _key(
        "alluxio.underfs.azure.endpoint", _http_url, "",
        "Blob service URL (http:// is allowed), e.g. an emulator's "
        "http://127.0.0.1:10000/devstoreaccount1; empty: https://<account>.blob.<suffix>.",
    )
    UFS_MAX_RETRIES = _key(
        "alluxio.underfs.s3.max.error.retry", _parse_int, "10",
        "Retries (with exponential backoff from 100 ms) of a failed object-store request, "
        "any store.",
    )
    UFS_READ_SIZE = _key(
        "alluxio.underfs.object.store.multi.range.chunk.size", _partition_size, "256MiB",
        "Bytes one GET reads: a larger object is fetched as ranged GETs of this size, in "
        "parallel; a smaller one in one GET.",
    )
    WORKER_UFS_REQUESTS_MAX = _key(
        "alluxio.worker.job.ufs.requests.max", _parse_positive_int, "256",
        "Object-store requests a worker keeps in flight, split over its pool processes.",
    )
    # --- worker ----------------------------------------------------------------------
    WORKER_HOSTNAME = _key("alluxio.worker.hostname", _parse_str, "localhost", "Worker host.")
    WORKER_RPC_PORT = _key(
        "alluxio.worker.rpc.port", _parse_port, "29999", "Worker websocket task port."
    )
    WORKER_WEB_PORT = _key(
        "alluxio.worker.web.port", _parse_port, "30000", "Worker HTTP port (/metrics, /healthz)."
    )
    PAGE_STORE_DIRS = _key(
        "alluxio.worker.page.store.dirs",
        _parse_list,
        "${alluxio.work.dir}/cache",
        "Cache directories.",
    )
    PAGE_STORE_SIZES = _key(
        "alluxio.worker.page.store.sizes",
        _parse_size_list,
        "",
        "Capacity of each cache directory; empty means unlimited.",
    )
    EXECUTOR_THREADS_MAX = _key(
        "alluxio.worker.job.load.executor.threads.max",
        _parse_positive_int,
        "2048",
        "Upper bound of the worker's load pool (capped to what the host can use).",
    )
    PARTITION_SIZE = _key(
        "alluxio.worker.load.file.partition.size",
        _partition_size,
        "256MiB",
        "Shard size of local files, for splitting work across the worker's process pool "
        "(at least 1MiB).",
    )
    MEMBERSHIP_TYPE = _key(
        "alluxio.worker.membership.manager.type",
        _enum("STATIC", "ETCD"),
        "STATIC",
        "Worker membership: STATIC file or ETCD registration.",
    )
    STATIC_CONFIG_FILE = _key(
        "alluxio.worker.static.config.file",
        _parse_str,
        "${alluxio.work.dir}/workers",
        "File of host:port lines (STATIC membership).",
    )
    WORKER_READ_CHECKSUM_MAX = _key(
        "alluxio.worker.read.checksum.max.size",
        parse_size,
        "1MiB",
        "A cached file up to this size is checked against its checksum on every read "
        "(it is read whole anyway); larger ones by length only. 0: length only.",
    )
    WORKER_SCRUB_INTERVAL = _key(
        "alluxio.worker.cache.scrub.interval",
        _parse_duration_allow_zero,
        "0",
        "How often the worker rereads every cached file against its checksum, evicting "
        "the corrupt ones (0: never; alluxiojob fs check runs it on demand).",
    )
    WORKER_PIN_TIME = _key(
        "alluxio.worker.job.cache.pin.time",
        _parse_duration_allow_zero,
        "10min",
        "Files of a job that sent a task this recently are not evicted to make room.",
    )
    WORKER_ID = _key(
        "alluxio.worker.id",
        _parse_str,
        "",
        "Worker identity on the hash ring; defaults to hostname:rpc.port.",
    )
    # --- the S3 API on every worker (docs/reading-the-cache.md) ---
    S3_API_ENABLED = _key(
        "alluxio.worker.s3.api.enabled", _parse_bool, "false",
        "Serve the cache through an S3-compatible API (path-style) on every worker. Without "
        "S3 key pairs it accepts loopback peers only.",
    )
    S3_PORT = _key(
        "alluxio.worker.rest.port", _parse_port, "29998",
        "Plain-HTTP port of the worker's S3 API.",
    )
    S3_HTTPS_PORT = _key(
        "alluxio.worker.s3.https.port", _parse_port, "29996",
        "HTTPS port of the worker's S3 API (with alluxio.worker.s3.tls.enabled), using "
        "alluxio.job.tls.cert.file and .key.file.",
    )
    S3_TLS_ENABLED = _key(
        "alluxio.worker.s3.tls.enabled", _parse_bool, "false",
        "Also serve the S3 API over HTTPS on alluxio.worker.s3.https.port.",
    )
    S3_ONLY_HTTPS = _key(
        "alluxio.worker.s3.only.https.access", _parse_bool, "false",
        "Serve the S3 API over HTTPS only: the plain port is not opened.",
    )
    S3_REDIRECT = _key(
        "alluxio.worker.s3.redirect.enabled", _parse_bool, "false",
        "A request for a file another worker owns is answered 307 to the owner instead of "
        "being proxied. Only for clients that follow redirects to another host.",
    )
    S3_ONLY_CACHE = _key(
        "alluxio.worker.s3.only.read.cache.data.enabled", _parse_bool, "false",
        "A file that is not cached is NoSuchKey, instead of being read from the UFS.",
    )
    S3_READ_TYPE = _key(
        "alluxio.user.file.readtype.default", _enum("CACHE", "NO_CACHE"), "CACHE",
        "S3 API read-through of a miss: CACHE also loads the file into the cache (as a "
        "LOAD does); NO_CACHE only streams it.",
    )
    S3_SIGNATURE_VALIDATION = _key(
        "alluxio.worker.s3.signature.validation.enabled", _parse_bool, "true",
        "Check SigV4 signatures against the configured key pairs. false needs "
        "alluxio.worker.s3.simple.auth.acknowledged=true as well.",
    )
    S3_SIMPLE_AUTH_ACK = _key(
        "alluxio.worker.s3.simple.auth.acknowledged", _parse_bool, "false",
        "Accept that with signature validation off (SIMPLE mode) anyone who can reach the "
        "S3 port reads every bucket.",
    )
    S3_CREDENTIALS = _key(
        "alluxio.worker.s3.privileged.users.credentials", _parse_str, "",
        "S3 key pairs as a JSON map of access key to secret key (prefer "
        "alluxio.worker.s3.credentials.file).",
        secret=True,
    )
    S3_CREDENTIALS_FILE = _key(
        "alluxio.worker.s3.credentials.file", _parse_str, "",
        "File holding the S3 key pairs as a JSON map of access key to secret key; it must "
        "be readable by the service user only (mode 600).",
    )
    S3_BUCKETS = _key(
        "alluxio.worker.s3.bucket.mounts", _parse_list, "",
        "Named buckets: name=URI pairs, comma-separated (data=file:///data/sets, "
        "deep=s3://b/deep/prefix). Any other bucket B is s3://B.",
    )
    ALLUXIO_HTTP_ENABLED = _key(
        "alluxio.worker.http.server.enabled", _parse_bool, "false",
        "With the S3 API on, also serve Alluxio's worker HTTP API for alluxiofs (/v1/node, "
        "/v1/info, /v1/files, /v1/load) on alluxio.worker.http.server.port.",
    )
    ALLUXIO_HTTP_PORT = _key(
        "alluxio.worker.http.server.port", _parse_port, "28080",
        "Port of Alluxio's worker HTTP API (alluxiofs); it accepts the peers the S3 API "
        "accepts without a signature: loopback ones, or any in SIMPLE mode.",
    )
    S3_MAX_INFLIGHT = _key(
        "alluxio.worker.s3.max.inflight.requests", _parse_positive_int, "256",
        "S3 requests served at once by one worker; past it a request is answered 503 "
        "SlowDown.",
    )


@dataclass(frozen=True)
class Config:
    """Parsed, validated properties. Immutable once loaded."""

    values: Mapping[str, Any]
    raw: Mapping[str, str]
    warnings: tuple[str, ...] = field(default=())

    def __getitem__(self, key: PropertyKey[T]) -> T:
        value: T = self.values[key.name]
        return value

    def templated(self, template: PropertyTemplate) -> dict[str, tuple[re.Match[str], Any]]:
        """The keys set in ``template``'s family: name -> (its match, its parsed value)."""
        found: dict[str, tuple[re.Match[str], Any]] = {}
        for name in self.raw:
            match = template.pattern.match(name)
            if match is not None and name not in PROPERTIES:
                found[name] = (match, self.values[name])
        return found

    def azure_account_keys(self) -> dict[str, tuple[str, str]]:
        """Per-account Azure keys: account -> (key, the cloud's DNS suffix)."""
        return {match.group(1): (value, match.group(3))
                for match, value in self.templated(AZURE_ACCOUNT_KEY_TEMPLATE).values()}

    def with_overrides(self, overrides: Mapping[str, str]) -> Config:
        merged = dict(self.raw)
        merged.update(overrides)
        return build_config(merged, sources={k: "override" for k in overrides})


def read_properties_file(path: Path) -> dict[str, str]:
    """Read a Java-style properties file: ``key=value`` or ``key value``, ``#`` comments."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"property file not found: {path}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read property file {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        bad_line = exc.object[: exc.start].count(b"\n") + 1
        raise ConfigError(
            f"property file {path} is not UTF-8 text: byte 0x{exc.object[exc.start]:02x} "
            f"at line {bad_line}"
        ) from None
    result: dict[str, str] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", "!")):
            continue
        # As in Java: the key ends at the first '=', ':' or whitespace.
        match = re.match(r"^([^=:\s]+)\s*[=:\s]\s*(.*)$", stripped)
        if match is None:
            raise ConfigError(f"{path}:{lineno}: expected key=value, got {stripped!r}")
        result[match.group(1)] = match.group(2).strip()
    return result


def parse_define(text: str) -> tuple[str, str]:
    """Parse one ``-D key=value``."""
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise ConfigError(f"bad -D option {text!r}: expected -D key=value")
    return name.strip(), value.strip()


def closest_key(name: str) -> str | None:
    matches = difflib.get_close_matches(name, PROPERTIES.keys(), n=1, cutoff=0.75)
    return matches[0] if matches else None


def _expand(value: str, raw: Mapping[str, str], depth: int = 0) -> str:
    """Expand ``${other.key}`` references and a leading ``~``."""
    if depth > 8:
        raise ValueError("property references nest too deeply")
    out = value
    while "${" in out:
        start = out.index("${")
        end = out.find("}", start)
        if end < 0:
            raise ValueError(f"unterminated ${{ in {value!r}")
        ref = out[start + 2 : end]
        if ref in raw:
            replacement = raw[ref]
        elif ref in PROPERTIES and PROPERTIES[ref].default is not None:
            replacement = PROPERTIES[ref].default or ""
        else:
            raise ValueError(f"unknown property reference ${{{ref}}}")
        out = out[:start] + _expand(replacement, raw, depth + 1) + out[end + 1 :]
    return os.path.expanduser(out) if out.startswith("~") else out


def build_config(raw: Mapping[str, str], sources: Mapping[str, str] | None = None) -> Config:
    """Validate ``raw`` (explicitly set properties) against the registry."""
    sources = sources or {}
    warnings: list[str] = []
    values: dict[str, Any] = {}
    for name in raw:
        template = None if name in PROPERTIES else _template_of(name)
        if template is not None:
            try:
                values[name] = template.parse(_expand(raw[name], raw))
            except (ValueError, ArithmeticError) as exc:
                raise ConfigError(_invalid(name, raw[name], template.secret, sources, exc)) \
                    from None
        elif name not in PROPERTIES:
            hint = closest_key(name)
            where = f" (from {sources[name]})" if name in sources else ""
            message = f"unknown property {name}{where}"
            if hint:
                message += f"; did you mean {hint}?"
            warnings.append(message)
    for name, key in PROPERTIES.items():
        text = raw.get(name, key.default)
        if text is None:
            values[name] = None
            continue
        try:
            values[name] = key.parse(_expand(text, raw))
        except (ValueError, ArithmeticError) as exc:
            raise ConfigError(_invalid(name, text, key.secret, sources, exc)) from None
    config = Config(values=values, raw=dict(raw), warnings=tuple(warnings))
    _check_azure(config, sources)
    return config


def _invalid(name: str, text: str, secret: bool, sources: Mapping[str, str],
             exc: BaseException) -> str:
    where = f" (from {sources[name]})" if name in sources else ""
    shown = "(a secret, not shown)" if secret else repr(text)
    return f"invalid value {shown} for {name}{where}: {exc}"


def _check_azure(config: Config, sources: Mapping[str, str]) -> None:
    """Several per-account keys and no account named: which one az:// means is unknown."""
    accounts = sorted(config.azure_account_keys())
    if len(accounts) > 1 and not config[Keys.AZURE_ACCOUNT_NAME]:
        raise ConfigError(
            f"keys for several Azure storage accounts ({', '.join(accounts)}) and no "
            f"{Keys.AZURE_ACCOUNT_NAME.name}: set it to the account az:// URIs are in")


def default_conf_file(environ: Mapping[str, str]) -> Path | None:
    conf_dir = environ.get("ALLUXIO_CONF_DIR")
    if conf_dir:
        candidate = Path(conf_dir) / "alluxio-site.properties"
        if candidate.is_file():
            return candidate
    return None


def load_config(
    conf_file: Path | None = None,
    defines: Iterable[str] = (),
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Merge defaults < site file < ``ALLUXIO_*`` environment < ``-D`` and validate."""
    environ = os.environ if environ is None else environ
    raw: dict[str, str] = {}
    sources: dict[str, str] = {}
    path = conf_file if conf_file is not None else default_conf_file(environ)
    if path is not None:
        for name, value in read_properties_file(path).items():
            raw[name] = value
            sources[name] = str(path)
    for name, key in PROPERTIES.items():
        if key.env_name in environ:
            raw[name] = environ[key.env_name]
            sources[name] = f"environment variable {key.env_name}"
    for text in defines:
        name, value = parse_define(text)
        raw[name] = value
        sources[name] = f"-D {name}"
    return build_config(raw, sources)
