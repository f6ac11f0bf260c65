"""The property table of the data path: under file systems, workers, the S3 API."""

from __future__ import annotations

from alluxiojob.config.registry import (
    azure_account,
    base64_secret,
    enum,
    http_url,
    parse_bool,
    parse_duration_allow_zero,
    parse_int,
    parse_list,
    parse_port,
    parse_positive_int,
    parse_size_list,
    parse_str,
    partition_size,
    register,
)
from alluxiojob.config.units import parse_size


class WorkerKeys:
    """Keys read by workers and by the under file systems they copy from."""

    # --- under file systems ------------------------------------------------------------
    S3_ACCESS_KEY = register(
        "s3a.accessKeyId", parse_str, "",
        "S3 access key id; empty: the standard AWS environment variables, web identity, "
        "container or instance credentials (profiles in ~/.aws/config are not read).",
    )
    S3_SECRET_KEY = register(
        "s3a.secretKey", parse_str, "", "S3 secret key (never logged or returned).",
        secret=True,
    )
    S3_ENDPOINT = register(
        "alluxio.underfs.s3.endpoint", parse_str, "",
        "S3 endpoint URL (http:// is allowed); empty: AWS for the region.",
    )
    S3_REGION = register(
        "alluxio.underfs.s3.region", parse_str, "",
        "S3 region; empty: AWS_REGION / AWS_DEFAULT_REGION, else us-east-1.",
    )
    S3_DISABLE_DNS_BUCKETS = register(
        "alluxio.underfs.s3.disable.dns.buckets", parse_bool, "false",
        "Path-style requests (endpoint/bucket/key) instead of virtual-hosted bucket names.",
    )
    AZURE_ACCOUNT_NAME = register(
        "alluxio.underfs.azure.account.name", azure_account, "",
        "Azure storage account of az:// URIs; empty: the account of the one "
        "fs.azure.account.key.<account>.blob.core.windows.net key, else "
        "AZURE_STORAGE_ACCOUNT_NAME.",
    )
    AZURE_ACCOUNT_KEY = register(
        "fs.azure.account.key", base64_secret, "",
        "Azure storage account key (never logged or returned); a per-account "
        "fs.azure.account.key.<account>.blob.core.windows.net wins over it; empty: the "
        "Azure environment variables, SAS or managed identity. Base64.",
        secret=True,
    )
    AZURE_ENDPOINT = register(
        "alluxio.underfs.azure.endpoint", http_url, "",
        "Blob service URL (http:// is allowed), e.g. an emulator's "
        "http://127.0.0.1:10000/devstoreaccount1; empty: https://<account>.blob.<suffix>.",
    )
    UFS_MAX_RETRIES = register(
        "alluxio.underfs.s3.max.error.retry", parse_int, "10",
        "Retries (with exponential backoff from 100 ms) of a failed object-store request, "
        "any store.",
    )
    UFS_READ_SIZE = register(
        "alluxio.underfs.object.store.multi.range.chunk.size", partition_size, "256MiB",
        "Bytes one GET reads: a larger object is fetched as ranged GETs of this size, in "
        "parallel; a smaller one in one GET.",
    )
    WORKER_UFS_REQUESTS_MAX = register(
        "alluxio.worker.job.ufs.requests.max", parse_positive_int, "256",
        "Object-store requests a worker keeps in flight, split over its pool processes.",
    )
    # --- worker ----------------------------------------------------------------------
    WORKER_HOSTNAME = register("alluxio.worker.hostname", parse_str, "localhost", "Worker host.")
    WORKER_RPC_PORT = register(
        "alluxio.worker.rpc.port", parse_port, "29999", "Worker websocket task port."
    )
    WORKER_WEB_PORT = register(
        "alluxio.worker.web.port", parse_port, "30000", "Worker HTTP port (/metrics, /healthz)."
    )
    PAGE_STORE_DIRS = register(
        "alluxio.worker.page.store.dirs",
        parse_list,
        "${alluxio.work.dir}/cache",
        "Cache directories.",
    )
    PAGE_STORE_SIZES = register(
        "alluxio.worker.page.store.sizes",
        parse_size_list,
        "",
        "Capacity of each cache directory; empty means unlimited.",
    )
    EXECUTOR_THREADS_MAX = register(
        "alluxio.worker.job.load.executor.threads.max",
        parse_positive_int,
        "2048",
        "Upper bound of the worker's load pool (capped to what the host can use).",
    )
    PARTITION_SIZE = register(
        "alluxio.worker.load.file.partition.size",
        partition_size,
        "256MiB",
        "Shard size of local files, for splitting work across the worker's process pool "
        "(at least 1MiB).",
    )
    MEMBERSHIP_TYPE = register(
        "alluxio.worker.membership.manager.type",
        enum("STATIC", "ETCD"),
        "STATIC",
        "Worker membership: STATIC file or ETCD registration.",
    )
    STATIC_CONFIG_FILE = register(
        "alluxio.worker.static.config.file",
        parse_str,
        "${alluxio.work.dir}/workers",
        "File of host:port lines (STATIC membership).",
    )
    WORKER_READ_CHECKSUM_MAX = register(
        "alluxio.worker.read.checksum.max.size",
        parse_size,
        "1MiB",
        "A cached file up to this size is checked against its checksum on every read "
        "(it is read whole anyway); larger ones by length only. 0: length only.",
    )
    WORKER_SCRUB_INTERVAL = register(
        "alluxio.worker.cache.scrub.interval",
        parse_duration_allow_zero,
        "0",
        "How often the worker rereads every cached file against its checksum, evicting "
        "the corrupt ones (0: never; alluxiojob fs check runs it on demand).",
    )
    WORKER_PIN_TIME = register(
        "alluxio.worker.job.cache.pin.time",
        parse_duration_allow_zero,
        "10min",
        "Files of a job that sent a task this recently are not evicted to make room.",
    )
    WORKER_ID = register(
        "alluxio.worker.id",
        parse_str,
        "",
        "Worker identity on the hash ring; defaults to hostname:rpc.port.",
    )
    # --- the S3 API on every worker (docs/reading-the-cache.md) ---
    S3_API_ENABLED = register(
        "alluxio.worker.s3.api.enabled", parse_bool, "false",
        "Serve the cache through an S3-compatible API (path-style) on every worker. Without "
        "S3 key pairs it accepts loopback peers only.",
    )
    S3_PORT = register(
        "alluxio.worker.rest.port", parse_port, "29998",
        "Plain-HTTP port of the worker's S3 API.",
    )
    S3_HTTPS_PORT = register(
        "alluxio.worker.s3.https.port", parse_port, "29996",
        "HTTPS port of the worker's S3 API (with alluxio.worker.s3.tls.enabled), using "
        "alluxio.job.tls.cert.file and .key.file.",
    )
    S3_TLS_ENABLED = register(
        "alluxio.worker.s3.tls.enabled", parse_bool, "false",
        "Also serve the S3 API over HTTPS on alluxio.worker.s3.https.port.",
    )
    S3_ONLY_HTTPS = register(
        "alluxio.worker.s3.only.https.access", parse_bool, "false",
        "Serve the S3 API over HTTPS only: the plain port is not opened.",
    )
    S3_REDIRECT = register(
        "alluxio.worker.s3.redirect.enabled", parse_bool, "false",
        "A request for a file another worker owns is answered 307 to the owner instead of "
        "being proxied. Only for clients that follow redirects to another host.",
    )
    S3_ONLY_CACHE = register(
        "alluxio.worker.s3.only.read.cache.data.enabled", parse_bool, "false",
        "A file that is not cached is NoSuchKey, instead of being read from the UFS.",
    )
    S3_READ_TYPE = register(
        "alluxio.user.file.readtype.default", enum("CACHE", "NO_CACHE"), "CACHE",
        "S3 API read-through of a miss: CACHE also loads the file into the cache (as a "
        "LOAD does); NO_CACHE only streams it.",
    )
    S3_SIGNATURE_VALIDATION = register(
        "alluxio.worker.s3.signature.validation.enabled", parse_bool, "true",
        "Check SigV4 signatures against the configured key pairs. false needs "
        "alluxio.worker.s3.simple.auth.acknowledged=true as well.",
    )
    S3_SIMPLE_AUTH_ACK = register(
        "alluxio.worker.s3.simple.auth.acknowledged", parse_bool, "false",
        "Accept that with signature validation off (SIMPLE mode) anyone who can reach the "
        "S3 port reads every bucket.",
    )
    S3_CREDENTIALS = register(
        "alluxio.worker.s3.privileged.users.credentials", parse_str, "",
        "S3 key pairs as a JSON map of access key to secret key (prefer "
        "alluxio.worker.s3.credentials.file).",
        secret=True,
    )
    S3_CREDENTIALS_FILE = register(
        "alluxio.worker.s3.credentials.file", parse_str, "",
        "File holding the S3 key pairs as a JSON map of access key to secret key; it must "
        "be readable by the service user only (mode 600).",
    )
    S3_BUCKETS = register(
        "alluxio.worker.s3.bucket.mounts", parse_list, "",
        "Named buckets: name=URI pairs, comma-separated (data=file:///data/sets, "
        "deep=s3://b/deep/prefix). Any other bucket B is s3://B.",
    )
    ALLUXIO_HTTP_ENABLED = register(
        "alluxio.worker.http.server.enabled", parse_bool, "false",
        "With the S3 API on, also serve Alluxio's worker HTTP API for alluxiofs (/v1/node, "
        "/v1/info, /v1/files, /v1/load) on alluxio.worker.http.server.port.",
    )
    ALLUXIO_HTTP_PORT = register(
        "alluxio.worker.http.server.port", parse_port, "28080",
        "Port of Alluxio's worker HTTP API (alluxiofs); it accepts the peers the S3 API "
        "accepts without a signature: loopback ones, or any in SIMPLE mode.",
    )
    S3_MAX_INFLIGHT = register(
        "alluxio.worker.s3.max.inflight.requests", parse_positive_int, "256",
        "S3 requests served at once by one worker; past it a request is answered 503 "
        "SlowDown.",
    )
