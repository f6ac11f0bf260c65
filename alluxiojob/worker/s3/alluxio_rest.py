"""Alluxio's worker HTTP API, as ``alluxiofs`` (Alluxio's Python client) speaks it.

On ``alluxio.worker.http.server.port`` (28080), beside the S3 API:

- ``GET /v1/node?path=URI``: the owner's ``{"Host", "HttpServerPort"}`` (the ring);
- ``GET /v1/info?path=URI``: a one-element JSON list (``mType``, ``mPath``, ``mUfsPath``,
  ``mLength``, ``mLastModificationTimeMs``…); a path that does not exist is a 500, the
  only status ``alluxiofs`` reads as "not found";
- ``GET /v1/files?path=DIR``: the entries of one directory, from the UFS;
- ``GET /v1/load?path=URI&opType=submit|progress|stop``: a LOAD, forwarded to the
  coordinator with the cluster token.

``mPath`` is the S3 API's ``/bucket/key`` of the file (percent-encoded where a URL
needs it), which ``alluxiofs`` then reads with a ranged GET on port 29998. It sends no
credentials, so this port admits what the S3 API admits unsigned: loopback peers (or
anyone in SIMPLE mode), never a cross-site browser.
"""

from __future__ import annotations

import json
import os
import stat
from typing import Any
from urllib.parse import parse_qsl, quote

import structlog
import trio

from alluxiojob.client import ApiError, CoordinatorClient
from alluxiojob.config import Config
from alluxiojob.security import Security
from alluxiojob.ufs import UfsError, is_local, resolve_path, ufs_for
from alluxiojob.ufs.local import to_local_path
from alluxiojob.ufs.settings import UfsSettings
from alluxiojob.worker.s3.app import Receive, Scope, Send, admit_unsigned, http_request
from alluxiojob.worker.s3.buckets import BucketTable
from alluxiojob.worker.s3.errors import S3Error
from alluxiojob.worker.s3.listing import list_bucket
from alluxiojob.worker.s3.metrics import S3Metrics
from alluxiojob.worker.s3.ownership import Ownership
from alluxiojob.worker.s3.settings import S3Settings

log = structlog.get_logger("alluxiojob.worker.s3")

MAX_ENTRIES = 100_000  # one directory listed at most this far
_OPS = {"/v1/node": "AlluxioNode", "/v1/info": "AlluxioInfo", "/v1/files": "AlluxioFiles",
        "/v1/load": "AlluxioLoad"}


def s3_path(bucket: str, key: str) -> str:
    """``/bucket/key`` as alluxiofs puts it in a URL (as is): percent-encoded where a URL
    path may not hold a character (a space, say)."""
    return "/" + quote(f"{bucket}/{key}", safe="/~!$&'()*+,;=:@")


class NotFound(Exception):
    pass


def _status(kind: str, name: str, s3_path: str, uri: str, length: int,
            mtime_ns: int) -> dict[str, Any]:
    return {"mType": kind, "mName": name, "mPath": s3_path, "mUfsPath": uri,
            "mLength": length, "mHumanReadableFileSize": f"{length}B",
            "mLastModificationTimeMs": mtime_ns // 1_000_000, "mCompleted": True,
            "mPersisted": True, "mInAlluxioPercentage": 0}


class AlluxioRestApp:
    def __init__(self, config: Config, settings: S3Settings, security: Security,
                 ownership: Ownership, ufs_settings: UfsSettings, metrics: S3Metrics) -> None:
        self.config = config
        self.settings = settings
        self.security = security
        self.ownership = ownership
        self.table: BucketTable = settings.buckets
        self.ufs_settings = ufs_settings
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = await http_request(scope, receive, send)
        if request is None:
            return
        op = _OPS.get(request.raw_path, "Unknown")
        status, body = 200, b""
        try:
            admit_unsigned(request, self.settings.mode)
            if request.method != "GET" or op == "Unknown":
                raise S3Error("NotImplemented", "this worker serves GET /v1/node, /v1/info, "
                              "/v1/files and /v1/load only")
            query = dict(parse_qsl(request.raw_query))  # form encoding: "+" is a space
            answer = await self._handle(op, query)
            body = json.dumps(answer).encode()
        except NotFound as exc:
            status, body = 500, json.dumps({"error": "NOT_FOUND", "message": str(exc)}).encode()
        except S3Error as exc:
            status = exc.status
            body = json.dumps({"error": exc.code, "message": exc.message}).encode()
        except Exception as exc:
            log.exception("Alluxio HTTP API request failed", path=request.raw_path)
            status, body = 500, json.dumps({"error": "INTERNAL", "message": repr(exc)}).encode()
        self.metrics.requests.labels(op=op, status=str(status)).inc()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    def _uri(self, query: dict[str, str]) -> str:
        try:
            uri = resolve_path(query.get("path", ""), "")
        except UfsError as exc:
            raise S3Error("InvalidArgument", str(exc)) from None
        return uri

    async def _handle(self, op: str, query: dict[str, str]) -> Any:
        uri = self._uri(query)
        if op == "AlluxioLoad":
            return await self._load(uri, query.get("opType", ""))
        allowlist = self.security.allowlist
        if not await trio.to_thread.run_sync(allowlist.admits, uri):
            raise S3Error("AccessDenied", f"{uri} lies outside {allowlist.describe()}")
        if op == "AlluxioNode":
            owner = self.ownership.owner_of(uri)
            return {"Host": owner.host, "HttpServerPort": owner.http_port}
        if op == "AlluxioInfo":
            return [await trio.to_thread.run_sync(self._info, uri)]
        return await trio.to_thread.run_sync(self._files, uri)

    def _s3_path(self, uri: str) -> str:
        found = self.table.locate(uri)
        return s3_path(found[0].name, found[1]) if found is not None else ""

    def _info(self, uri: str) -> dict[str, Any]:
        """Blocking: a file, or a directory (a local one, or a prefix with objects)."""
        name = uri.rstrip("/").rsplit("/", 1)[-1]
        if is_local(uri):
            try:
                info = os.stat(to_local_path(uri))
            except OSError:
                raise NotFound(f"{uri} does not exist") from None
            kind = "directory" if stat.S_ISDIR(info.st_mode) else "file"
            return _status(kind, name, self._s3_path(uri), uri,
                           info.st_size if kind == "file" else 0, info.st_mtime_ns)
        ufs = ufs_for(uri, self.ufs_settings)
        try:
            found = ufs.stat(uri)
            return _status("file", name, self._s3_path(uri), uri, found.length,
                           found.mtime_ns)
        except UfsError:
            pass
        try:
            if ufs.exists(uri):
                return _status("directory", name, self._s3_path(uri), uri, 0, 0)
        except UfsError:
            pass
        raise NotFound(f"{uri} does not exist")

    def _files(self, uri: str) -> list[dict[str, Any]]:
        """Blocking: one directory's files and subdirectories, from the UFS."""
        found = self.table.locate(uri.rstrip("/") + "/")
        if found is None:
            raise S3Error("InvalidArgument", f"no bucket of the S3 API holds {uri}: name its "
                          "prefix in alluxio.worker.s3.bucket.mounts")
        bucket, prefix = found
        entries: list[dict[str, Any]] = []
        after = ""
        while len(entries) < MAX_ENTRIES:
            listing = list_bucket(bucket, prefix, "/", after, 1000, self.ufs_settings,
                                  self.security.allowlist.admits)
            for obj in listing.objects:
                entries.append(_status("file", obj.key.rsplit("/", 1)[-1],
                                       s3_path(bucket.name, obj.key), bucket.uri(obj.key),
                                       obj.size, obj.mtime_ns))
            for sub in listing.prefixes:
                entries.append(_status("directory", sub.rstrip("/").rsplit("/", 1)[-1],
                                       s3_path(bucket.name, sub.rstrip("/")),
                                       bucket.uri(sub.rstrip("/")), 0, 0))
            if not listing.truncated:
                break
            after = listing.last
        return entries

    async def _load(self, uri: str, op_type: str) -> dict[str, Any]:
        """A LOAD for ``uri``, on the coordinator (with the cluster token)."""
        client = CoordinatorClient(self.config, self.security)
        try:
            if op_type == "submit":
                await trio.to_thread.run_sync(client.submit, "load", uri, "", {})
                return {"success": True}
            if op_type == "progress":
                report = await trio.to_thread.run_sync(client.progress, "load", uri)
                job = report.get("job", {})
                return {"jobState": job.get("state", ""), "jobId": job.get("id", ""),
                        "files": report.get("files", {}), "bytes": report.get("bytes", {})}
            if op_type == "stop":
                await trio.to_thread.run_sync(client.stop, "load", uri)
                return {"success": True}
        except ApiError as exc:
            if exc.status == 404:
                raise NotFound(exc.args[0] if exc.args else "no such job") from None
            raise S3Error("ServiceUnavailable", f"the coordinator answered: {exc}") from None
        finally:
            client.close()
        raise S3Error("InvalidArgument", "opType must be submit, progress or stop")
