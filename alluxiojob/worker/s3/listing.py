"""ListObjects from the UFS, in S3's order: byte order of the full key.

A listing never comes from one worker's ``data/`` (a worker caches only its share of a
dataset): it reads the bucket's UFS. Keys are yielded in byte order whatever the store:
object stores list that way; a local tree is walked with each directory's entries
sorted as keys (``name/`` for a directory), so a marker (``start-after``, the
continuation token) is just the last key or common prefix returned, and a resumed
listing skips whole subtrees before it. With the delimiter ``/``, a local subdirectory
is a common prefix without being walked, and an object store is listed one level deep.

Everything here blocks: call it from a thread.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import obstore

from alluxiojob.ufs import UfsError, ufs_for
from alluxiojob.ufs.local import to_local_path
from alluxiojob.ufs.objects import ObjectStoreUfs, split_uri
from alluxiojob.ufs.settings import UfsSettings
from alluxiojob.worker.s3.buckets import Bucket


@dataclass(frozen=True)
class ListedObject:
    key: str
    size: int
    mtime_ns: int
    etag: str


@dataclass
class Listing:
    objects: list[ListedObject] = field(default_factory=list)
    prefixes: list[str] = field(default_factory=list)
    truncated: bool = False
    last: str = ""  # the last key or common prefix returned: the next page's marker


Entry = tuple[str, ListedObject | None]  # (key, object) or (common prefix, None)


def _utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False  # a name S3 cannot carry; it is not listed
    return True


def _local_entries(root: str, rel: str, after: str, prefix: str, collapse: bool,
                   admits: Callable[[str], bool], seen: frozenset[tuple[int, int]]
                   ) -> Iterator[Entry]:
    """Keys under the directory ``root/rel`` in byte order, strictly after ``after``."""
    try:
        with os.scandir(os.path.join(root, rel) if rel else root) as it:
            found = list(it)
    except OSError:
        return
    keyed: list[tuple[str, os.DirEntry[str], bool]] = []
    for entry in found:
        if not _utf8(entry.name):
            continue
        if entry.is_symlink() and not admits(entry.path):
            continue  # a link out of the bucket or the allowlist is not part of it
        try:
            is_dir = entry.is_dir()
        except OSError:
            continue
        keyed.append((rel + entry.name + ("/" if is_dir else ""), entry, is_dir))
    keyed.sort(key=lambda item: item[0])
    for key, entry, is_dir in keyed:
        if not (key.startswith(prefix) or prefix.startswith(key)):
            continue
        if is_dir:
            if after and key <= after and not after.startswith(key):
                continue
            if collapse and key.startswith(prefix) and len(key) > len(prefix):
                if key > after:
                    yield key, None
                continue
            try:
                info = entry.stat()
            except OSError:
                continue
            ident = (info.st_dev, info.st_ino)
            if ident in seen:
                continue  # a link back up the tree
            yield from _local_entries(root, key, after, prefix, collapse, admits,
                                      seen | {ident})
            continue
        if key <= after or not key.startswith(prefix):
            continue
        try:
            info = entry.stat()
        except OSError:
            continue
        if stat.S_ISREG(info.st_mode):
            yield key, ListedObject(key, info.st_size, info.st_mtime_ns, "")


def _object_meta(meta: Any, skip: int) -> ListedObject:
    modified = meta.get("last_modified")
    mtime_ns = int(modified.timestamp() * 1e9) if modified is not None else 0
    return ListedObject(meta["path"][skip:], meta["size"], mtime_ns,
                        meta.get("e_tag") or "")


def _object_entries(ufs: ObjectStoreUfs, root: str, after: str, prefix: str,
                    collapse: bool) -> Iterator[Entry]:
    _, bucket, base = split_uri(root)
    store = ufs.store(bucket)
    base = base.strip("/")
    skip = len(base) + 1 if base else 0
    full_prefix = (base + "/" if base else "") + prefix
    # object_store matches prefixes by whole path segments: list the prefix's directory
    directory = full_prefix.rsplit("/", 1)[0] if "/" in full_prefix else ""
    try:
        if collapse:
            result = obstore.list_with_delimiter(store, prefix=directory or None)
            entries: list[Entry] = [(p[skip:] + "/", None) for p in result["common_prefixes"]]
            entries += [(m["path"][skip:], _object_meta(m, skip)) for m in result["objects"]]
            entries.sort(key=lambda item: item[0])
            for key, obj in entries:
                if key > after and key.startswith(prefix) and len(key) > len(prefix) - (
                        0 if obj is not None else 0):
                    yield key, obj
            return
        offset = (base + "/" + after if base else after) if after else None
        previous = ""
        for batch in obstore.list(store, prefix=directory or None, offset=offset,
                                  chunk_size=1000):
            for meta in batch:
                obj = _object_meta(meta, skip)
                # object_store lists a directory marker "d/" as "d": out of order, a
                # repeat, or (when empty) no object at all, as ObjectStoreUfs.walk says
                if not obj.key or obj.key <= previous or (
                        obj.size == 0 and not ufs.is_object(store, meta["path"])):
                    continue
                previous = obj.key
                if obj.key.startswith(prefix) and obj.key > after:
                    yield obj.key, obj
    except UfsError:
        raise
    except Exception as exc:
        raise ufs.error(exc, root, "cannot list") from None


def list_bucket(bucket: Bucket, prefix: str, delimiter: str, after: str, max_keys: int,
                settings: UfsSettings | None, admits: Callable[[str], bool]) -> Listing:
    """One page of a listing: at most ``max_keys`` keys and common prefixes."""
    collapse = delimiter == "/"
    if bucket.root.startswith("file://"):
        root = to_local_path(bucket.root) or "/"
        real_root = os.path.realpath(root)

        def inside(path: str) -> bool:
            """A link stays in the bucket (and the allowlist) once resolved."""
            real = os.path.realpath(path)
            return (real == real_root or real.startswith(real_root.rstrip("/") + "/")) \
                and admits(path)

        source = _local_entries(root, "", after, prefix, collapse, inside, frozenset())
    else:
        ufs = ufs_for(bucket.root, settings)
        assert isinstance(ufs, ObjectStoreUfs)
        source = _object_entries(ufs, bucket.root, after, prefix, collapse)
    listing = Listing()
    count = 0
    for key, obj in source:
        if delimiter and obj is not None:
            cut = key.find(delimiter, len(prefix))
            if cut >= 0:
                key, obj = key[: cut + len(delimiter)], None
                if key <= after or (listing.prefixes and listing.prefixes[-1] == key):
                    continue
        if count == max_keys:
            listing.truncated = True
            break
        if obj is None:
            listing.prefixes.append(key)
        else:
            listing.objects.append(obj)
        listing.last = key
        count += 1
    return listing
