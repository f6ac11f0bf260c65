"""The bucket operations: ListBuckets, HeadBucket, GetBucketLocation, ListObjects(V2).

Any worker answers them alike, from the UFS (``listing.py``); a bucket is served only
when its root lies inside ``alluxio.job.path.allowlist``.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Mapping

import trio

from alluxiojob.core.reasons import Reason
from alluxiojob.security.paths import PathAllowlist, literal_location
from alluxiojob.ufs import UfsError, ufs_for
from alluxiojob.ufs.local import to_local_path
from alluxiojob.ufs.settings import UfsSettings
from alluxiojob.worker.s3 import xml
from alluxiojob.worker.s3.buckets import MOUNTS_KEY, Bucket, BucketTable
from alluxiojob.worker.s3.errors import S3Error
from alluxiojob.worker.s3.listing import Listing, list_bucket

MAX_KEYS = 1000
REGION = "us-east-1"
_LIMITER = trio.CapacityLimiter(16)  # listings at once: each may walk a directory tree


def encode_token(marker: str) -> str:
    return base64.urlsafe_b64encode(marker.encode("utf-8")).decode()


def decode_token(token: str) -> str:
    try:
        return base64.urlsafe_b64decode(token.encode("ascii")).decode("utf-8")
    except (binascii.Error, UnicodeError, ValueError):
        raise S3Error("InvalidArgument", "The continuation token provided is incorrect") \
            from None


class BucketOps:
    def __init__(self, table: BucketTable, allowlist: PathAllowlist,
                 ufs_settings: UfsSettings) -> None:
        self.table = table
        self.allowlist = allowlist
        self.ufs_settings = ufs_settings

    def check_bucket(self, bucket: Bucket) -> None:
        """Blocking: the bucket's root lies inside the allowlist."""
        if not self.allowlist.admits(bucket.root):
            hint = "" if bucket.mounted else (
                f"; to serve part of it, name that prefix in {MOUNTS_KEY}")
            raise S3Error("AccessDenied", f"bucket {bucket.name} ({bucket.root}) lies outside "
                          f"{self.allowlist.describe()}{hint}", f"/{bucket.name}")

    def bucket_names(self) -> list[str]:
        names = set(self.table.mounts)
        for prefix in self.allowlist.prefixes:
            try:
                where = literal_location(prefix)
            except UfsError:
                continue
            if where.scheme == "s3" and not where.parts and where.authority:
                names.add(where.authority)
        return sorted(names)

    async def list_buckets(self) -> bytes:
        return xml.list_buckets(self.bucket_names())

    async def head_bucket(self, bucket: Bucket) -> None:
        def check() -> None:
            self.check_bucket(bucket)
            if bucket.root.startswith("file://"):
                if not os.path.isdir(to_local_path(bucket.root) or "/"):
                    raise S3Error("NoSuchBucket", "The specified bucket does not exist",
                                  f"/{bucket.name}")
                return
            try:
                found = ufs_for(bucket.root, self.ufs_settings).exists(bucket.root)
            except UfsError:
                found = False
            if not found:
                raise S3Error("NoSuchBucket", "The specified bucket does not exist",
                              f"/{bucket.name}")

        await trio.to_thread.run_sync(check, limiter=_LIMITER)

    async def location(self, bucket: Bucket) -> bytes:
        await trio.to_thread.run_sync(self.check_bucket, bucket)
        return xml.bucket_location(REGION)

    async def list_objects(self, bucket: Bucket, query: Mapping[str, str], v2: bool) -> bytes:
        prefix = query.get("prefix", "")
        delimiter = query.get("delimiter", "")
        encoding = query.get("encoding-type", "")
        if encoding not in ("", "url"):
            raise S3Error("InvalidArgument", "Invalid Encoding Method specified in Request")
        try:
            max_keys = int(query.get("max-keys", str(MAX_KEYS)))
        except ValueError:
            raise S3Error("InvalidArgument", "max-keys must be an integer") from None
        if max_keys < 0:
            raise S3Error("InvalidArgument", "max-keys must not be negative")
        max_keys = min(max_keys, MAX_KEYS)
        token = query.get("continuation-token", "") if v2 else ""
        start_after = query.get("start-after", "") if v2 else ""
        marker = query.get("marker", "") if not v2 else (decode_token(token) if token
                                                          else start_after)

        def run() -> Listing:
            self.check_bucket(bucket)
            if bucket.root.startswith("file://") and not os.path.isdir(
                    to_local_path(bucket.root) or "/"):
                raise S3Error("NoSuchBucket", "The specified bucket does not exist",
                              f"/{bucket.name}")
            try:
                return list_bucket(bucket, prefix, delimiter, marker, max_keys,
                                   self.ufs_settings, self.allowlist.admits)
            except UfsError as exc:
                code = "AccessDenied" if exc.reason is Reason.PERMISSION_DENIED else "NoSuchBucket"
                raise S3Error(code, str(exc), f"/{bucket.name}") from None

        listing = await trio.to_thread.run_sync(run, limiter=_LIMITER)
        url = encoding == "url"
        if v2:
            return xml.list_objects_v2(
                bucket.name, listing, prefix=prefix, delimiter=delimiter, max_keys=max_keys,
                url=url, start_after=start_after, token=token,
                next_token=encode_token(listing.last), owner=query.get("fetch-owner") == "true")
        return xml.list_objects_v1(bucket.name, listing, prefix=prefix, delimiter=delimiter,
                                   max_keys=max_keys, url=url, marker=marker)
