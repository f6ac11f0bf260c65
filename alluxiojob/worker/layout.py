"""Where a UFS file lives under a cache dir's ``data/``, and back. Pure: no I/O.

* A local file keeps its path: ``/a/b`` is ``data/a/b``. A top directory named like an
  object-store scheme (``s3``, ``gs``, ``az``), followed by any ``%``, gets one more
  ``%``: ``/s3/x`` is ``data/s3%/x``, so it never meets an object.
* An object is ``data/<scheme>/<bucket>/<key>``, its key encoded component by component
  so that a file system can hold what an object store allows, a key ``a`` beside keys
  under ``a/``: in every component ``%`` becomes ``%25`` (and NUL ``%00``); a component
  that is a directory gets a trailing ``%`` (which no encoded leaf ends with); a leaf
  ``.`` or ``..`` becomes ``%2E`` or ``%2E%2E``. So ``s3://b/a`` is ``data/s3/b/a`` and
  ``s3://b/a/x%y`` is ``data/s3/b/a%/x%25y``. A component longer than the file system
  allows fails that file (``INVALID_PATH``).

The encoding is deterministic and one to one, so ``uri_of_relpath`` inverts it. That
is what lets a worker check each file of ``data/`` against its index at startup without
holding a list of either in memory, and what makes ``index_key`` canonical: ``/a/b``
and ``file:///a//b`` are one file, under one index key.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from alluxiojob.core.reasons import Reason
from alluxiojob.ufs.base import UfsError

OBJECT_SCHEME_DIRS = ("s3", "gs", "az")
NAME_MAX = 255


def _encode_key(key: str, uri: str) -> list[str]:
    components = key.split("/")
    encoded = []
    for i, component in enumerate(components):
        name = component.replace("%", "%25").replace("\x00", "%00")
        if i < len(components) - 1:
            name += "%"  # a directory: never equal to a leaf's name
        elif name in (".", ".."):
            name = name.replace(".", "%2E")
        if len(os.fsencode(name)) > NAME_MAX:
            raise UfsError(Reason.INVALID_PATH, f"a component of the key {key!r} of {uri} is "
                           f"longer than the {NAME_MAX} bytes a cache file name can hold")
        encoded.append(name)
    return encoded


def cache_relpath(uri: str) -> str:
    """Where ``uri`` lives under ``data/`` (see the module doc); rejects escapes."""
    scheme, sep, rest = uri.partition("://")
    if not sep:
        scheme, rest = "file", uri
    if scheme != "file":
        bucket, _, key = rest.partition("/")
        if (not bucket or not key or key.endswith("/") or bucket in (".", "..")
                or "\x00" in bucket):
            raise UfsError(Reason.INVALID_PATH, f"not a cacheable object: {uri!r}")
        return "/".join([scheme, bucket, *_encode_key(key, uri)])
    parts = [p for p in rest.split("/") if p]
    if not parts or any(p in (".", "..") for p in parts) or "\x00" in rest:
        raise UfsError(Reason.INVALID_PATH, f"not a cacheable path: {uri!r}")
    if parts[0].rstrip("%") in OBJECT_SCHEME_DIRS:
        parts[0] += "%"
    return "/".join(parts)


def _unescape(name: str) -> str:
    if "%" not in name:
        return name
    out: list[str] = []
    i = 0
    while i < len(name):
        if name[i] != "%":
            out.append(name[i])
            i += 1
            continue
        code = name[i + 1:i + 3]
        if code == "25":
            out.append("%")
        elif code == "00":
            out.append("\x00")
        else:
            raise ValueError(f"{name!r} is not an encoded key component")
        i += 3
    return "".join(out)


def uri_of_relpath(relpath: str) -> str:
    """The URI whose cache file is ``data/<relpath>``; ``ValueError`` if none has it."""
    parts = relpath.split("/")
    if any(not p for p in parts):
        raise ValueError(f"{relpath!r} has an empty component")
    if parts[0] in OBJECT_SCHEME_DIRS:
        if len(parts) < 3:
            raise ValueError(f"{relpath!r} names no object")
        scheme, bucket, *encoded = parts
        key = []
        for component in encoded[:-1]:
            if not component.endswith("%"):
                raise ValueError(f"{relpath!r}: directory {component!r} lacks its '%'")
            key.append(_unescape(component[:-1]))
        leaf = encoded[-1]
        if leaf in ("%2E", "%2E%2E"):
            key.append(leaf.replace("%2E", "."))
        elif leaf.endswith("%"):
            raise ValueError(f"{relpath!r} ends with a directory component")
        else:
            key.append(_unescape(leaf))
        return f"{scheme}://{bucket}/" + "/".join(key)
    if parts[0].rstrip("%") in OBJECT_SCHEME_DIRS:
        parts[0] = parts[0][:-1]
    if any(p in (".", "..") for p in parts):
        raise ValueError(f"{relpath!r} has a '.' or '..' component")
    return "file:///" + "/".join(parts)


@dataclass(frozen=True, slots=True)
class CacheName:
    """A URI's place in a cache dir: its file under ``data/`` and its index key."""

    relpath: str
    key: str


def cache_name(uri: str) -> CacheName:
    """``uri``'s cache relative path and index key, from one ``cache_relpath``: what the
    worker computes once per file and carries (raises ``UfsError`` as it does)."""
    relpath = cache_relpath(uri)
    if _canonical(uri):
        return CacheName(relpath, uri)
    scheme = relpath.partition("/")[0]
    if scheme in OBJECT_SCHEME_DIRS and uri.startswith(scheme + "://"):
        # An object's encoding is one to one and keeps scheme, bucket and key as they
        # are written: its URI is its canonical name.
        return CacheName(relpath, uri)
    return CacheName(relpath, uri_of_relpath(relpath))


def _canonical(uri: str) -> bool:
    if uri.startswith("file:///") and "//" not in uri[8:] and "/." not in uri \
            and "\x00" not in uri and not uri.endswith("/"):
        top = uri[8:].split("/", 1)[0]
        return bool(top) and top.rstrip("%") not in OBJECT_SCHEME_DIRS
    return False


def index_key(uri: str) -> str:
    """The canonical name of ``uri`` in a cache index; raises ``UfsError`` as
    ``cache_relpath`` does."""
    if _canonical(uri):
        return uri  # already canonical: the common case, without a round trip
    return uri_of_relpath(cache_relpath(uri))
