"""Incomplete S3 multipart uploads: the parts a writer killed mid-upload leaves behind.

obstore completes, or aborts, each multipart upload it starts (``objects.write``: objects
over ``MULTIPART_THRESHOLD``), unless its process dies first (SIGKILL, out of memory,
power loss). The parts then stay in the bucket, invisible to listings and billed, until
someone aborts the upload. object_store has no call that lists uploads, so this module
asks S3 itself through boto3 (ListMultipartUploads, AbortMultipartUpload):

- ``abort_stale``: before a multipart write of a key, the uploads of exactly that key
  begun before the write are aborted. A retried file thus clears what its killed
  attempt left, whichever worker retries it. A live writer of the same key at the same
  moment (two copies of one task) loses its upload and fails its attempt; the key ends
  written once, whole.
- ``sweep``: the uploads a dead run of this worker had begun and not finished, recorded
  in its journal (``UploadJournal``), are aborted when the worker starts again, as its
  temp files are swept: a job that was stopped, or failed, before a retry leaves none.

Best effort: a store that refuses these calls (no ``s3:ListBucketMultipartUploads``
permission, an S3-compatible store without them) only keeps its leftovers, which a
bucket lifecycle rule (AbortIncompleteMultipartUpload) removes. Azure discards
uncommitted blocks by itself after 7 days; GCS is not covered.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alluxiojob.ufs.settings import UfsSettings

_clients: dict[UfsSettings, Any] = {}
_lock = threading.Lock()


def _client(settings: UfsSettings) -> Any:
    with _lock:
        client = _clients.get(settings)
        if client is None:
            import boto3
            from botocore.config import Config

            options: dict[str, Any] = {
                "region_name": settings.s3_region or "us-east-1",
                "config": Config(s3={"addressing_style": "path" if settings.s3_path_style
                                     else "auto"},
                                 retries={"max_attempts": 3, "mode": "standard"}),
            }
            if settings.s3_endpoint:
                options["endpoint_url"] = settings.s3_endpoint
            if settings.s3_access_key or settings.s3_secret_key:
                options["aws_access_key_id"] = settings.s3_access_key
                options["aws_secret_access_key"] = settings.s3_secret_key
            client = _clients[settings] = boto3.client("s3", **options)
        return client


def _uploads(client: Any, bucket: str, key: str) -> Iterator[dict[str, Any]]:
    pages = client.get_paginator("list_multipart_uploads").paginate(Bucket=bucket, Prefix=key)
    for page in pages:
        yield from page.get("Uploads", [])


def abort_stale(settings: UfsSettings, bucket: str, key: str, before: datetime) -> int:
    """Abort the incomplete uploads of exactly ``key`` begun before ``before``; how many.
    Never raises: a refused call aborts nothing."""
    aborted = 0
    try:
        client = _client(settings)
        for upload in _uploads(client, bucket, key):
            if upload["Key"] != key or upload["Initiated"] >= before:
                continue
            with contextlib.suppress(Exception):  # finished or aborted meanwhile
                client.abort_multipart_upload(Bucket=bucket, Key=key,
                                              UploadId=upload["UploadId"])
                aborted += 1
    except Exception:
        return aborted
    return aborted


class UploadJournal:
    """The multipart uploads one worker run begins, one file per run in ``directory``:
    a line when an upload begins and one when it ends (completed or failed)."""

    def __init__(self, directory: Path, run: str) -> None:
        self.directory = directory
        self.path = directory / f"{run}.jsonl"

    def _append(self, record: dict[str, str]) -> None:
        line = (json.dumps(record) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, line)  # one write of one short line: whole or not at all
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def upload(self, bucket: str, key: str) -> Iterator[None]:
        record = {"bucket": bucket, "key": key}
        self._append({**record, "begun": datetime.now(UTC).isoformat()})
        try:
            yield
        finally:
            self._append({**record, "ended": "1"})

    def sweep(self, settings: UfsSettings, started: datetime) -> int:
        """Abort what the earlier runs in this directory left unfinished: uploads of
        their keys begun before ``started`` (this run's start). Their files go."""
        aborted = 0
        for path in sorted(self.directory.glob("*.jsonl")):
            if path == self.path:
                continue
            unfinished: dict[tuple[str, str], None] = {}
            with contextlib.suppress(OSError):
                for line in path.read_text().splitlines():
                    try:
                        record = json.loads(line)
                        where = (record["bucket"], record["key"])
                    except (ValueError, KeyError, TypeError):
                        continue  # a line torn by the crash
                    if "ended" in record:
                        unfinished.pop(where, None)
                    else:
                        unfinished[where] = None
            for bucket, key in unfinished:
                aborted += abort_stale(settings, bucket, key, started)
            with contextlib.suppress(OSError):
                path.unlink()
        return aborted
