"""Buckets of the S3 API: a bucket is a named UFS prefix.

With no configuration, bucket ``B`` is the cached view of ``s3://B``, so a client only
changes its endpoint URL. ``alluxio.worker.s3.bucket.mounts`` names other prefixes
(``data=file:///data/sets``, ``deep=s3://b/deep/prefix``). A key becomes a URI by one
join under its bucket's root; a key with an empty, ``.`` or ``..`` component, or a NUL,
is refused before any path is built. Pure: the allowlist, which may touch the local
file system, is checked by the caller (from a thread).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from alluxiojob.config import ConfigError, Keys
from alluxiojob.ufs import UfsError, resolve_path
from alluxiojob.worker.s3.errors import S3Error

MOUNTS_KEY = Keys.S3_BUCKETS.name
_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.\-_]{1,62}$")


@dataclass(frozen=True)
class Bucket:
    name: str
    root: str  # a normalized URI, no trailing slash: s3://b/deep/prefix, file:///data/sets
    mounted: bool

    def uri(self, key: str) -> str:
        """The UFS URI of ``key``; ``S3Error`` for a key that could leave the bucket."""
        check_key(key)
        return f"{self.root}/{key}" if self.root != "file://" else f"file:///{key}"

    def key_of(self, uri: str) -> str:
        """The key of a URI under this bucket's root (the inverse of ``uri``)."""
        base = self.root + "/" if self.root != "file://" else "file:///"
        if not uri.startswith(base):
            raise ValueError(f"{uri} is not under {self.root}")
        return uri[len(base):]


def check_key(key: str) -> None:
    if not key:
        raise S3Error("InvalidArgument", "an object key must not be empty")
    if "\x00" in key:
        raise S3Error("InvalidArgument", "an object key must not contain a NUL byte")
    for part in key.split("/"):
        if part in ("", ".", ".."):
            raise S3Error("AccessDenied", f"the key {key!r} has an empty, '.' or '..' "
                          "component: keys may not leave their bucket")


def _bucket_name(name: str, where: str) -> str:
    if not _BUCKET_NAME.match(name) or ".." in name:
        raise ConfigError(f"{where}: {name!r} is not a bucket name (3 to 63 lowercase "
                          "letters, digits, '.', '-' or '_')")
    return name


class BucketTable:
    def __init__(self, mounts: Iterable[str]) -> None:
        self.mounts: dict[str, Bucket] = {}
        for item in mounts:
            name, sep, uri = item.partition("=")
            if not sep or not uri.strip():
                raise ConfigError(f"{MOUNTS_KEY}: expected name=URI, got {item!r}")
            name = _bucket_name(name.strip(), MOUNTS_KEY)
            if name in self.mounts:
                raise ConfigError(f"{MOUNTS_KEY}: bucket {name!r} is named twice")
            try:
                root = resolve_path(uri.strip(), "")
            except UfsError as exc:
                raise ConfigError(f"{MOUNTS_KEY}: bucket {name!r}: {exc}") from None
            self.mounts[name] = Bucket(name, root.rstrip("/") or root, mounted=True)

    def locate(self, uri: str) -> tuple[Bucket, str] | None:
        """(bucket, key) that names ``uri``: the mount with the longest root holding it,
        else the default bucket of an ``s3://`` URI; None when no bucket does."""
        best: Bucket | None = None
        for bucket in self.mounts.values():
            base = bucket.root + "/" if bucket.root != "file://" else "file:///"
            if uri.startswith(base) and (best is None or len(bucket.root) > len(best.root)):
                best = bucket
        if best is not None:
            return best, best.key_of(uri)
        if uri.startswith("s3://"):
            name, _, key = uri[len("s3://"):].partition("/")
            if _BUCKET_NAME.match(name) and name not in self.mounts:
                return Bucket(name, f"s3://{name}", mounted=False), key
        return None

    def resolve(self, name: str) -> Bucket:
        """The bucket ``name``: a mount, or else ``s3://name``."""
        mounted = self.mounts.get(name)
        if mounted is not None:
            return mounted
        if not _BUCKET_NAME.match(name) or ".." in name:
            raise S3Error("InvalidBucketName", f"{name!r} is not a valid bucket name",
                          f"/{name}")
        return Bucket(name, f"s3://{name}", mounted=False)
