"""Path confinement (``alluxio.job.path.allowlist``) and source/destination overlap.

Both take URIs. A local one (a plain absolute path or ``file://``) is judged by where it
really is: ``os.path.realpath`` resolves ``..`` and every symlink of the part that
exists, and overlap also compares ``(st_dev, st_ino)``, so that a bind mount or a
symlink cannot make one directory look like two. Any other URI (``s3://bucket/key``) is
judged by its normalized components, and must lie inside under both its literal and its
``..``-resolved reading. Matching is by whole path components: ``/data`` does not admit
``/database``.

Everything here that touches a local path blocks: call it from a thread.
"""

from __future__ import annotations

import functools
import os
import posixpath
from collections.abc import Iterable
from dataclasses import dataclass

from alluxiojob.config import Config, ConfigError, Keys
from alluxiojob.core.reasons import Reason
from alluxiojob.ufs.base import UfsError
from alluxiojob.ufs.uri import parse_uri

ALLOWLIST_KEY = Keys.PATH_ALLOWLIST.name


@dataclass(frozen=True)
class Location:
    """A URI as comparable parts: ``("file", "", ("data", "x"))`` or ``("s3", "b", ...)``."""

    scheme: str
    authority: str
    parts: tuple[str, ...]

    def within(self, other: Location) -> bool:
        """``self`` is ``other`` or lies under it, by whole components."""
        return ((self.scheme, self.authority) == (other.scheme, other.authority)
                and self.parts[: len(other.parts)] == other.parts)


def _components(path: str) -> tuple[str, ...]:
    return tuple(p for p in path.split("/") if p)


@functools.lru_cache(maxsize=1024)
def literal_location(uri: str) -> Location:
    """Components as written (``.`` and empty ones dropped, ``..`` kept). Pure, and
    remembered: one request asks it of its file and of its bucket's root (the same few
    roots, request after request) several times."""
    parsed = parse_uri(uri)
    if parsed.local:
        return Location("file", "", tuple(p for p in _components(parsed.local_path)
                                          if p != "."))
    if not parsed.scheme:
        raise UfsError(Reason.INVALID_PATH, f"not an absolute path or URI: {uri!r}")
    return Location(parsed.scheme, parsed.bucket,
                    tuple(p for p in _components(parsed.key) if p != "."))


def resolved_location(uri: str) -> Location:
    """Where ``uri`` really is: realpath for local paths, ``..`` resolved for the others."""
    return _resolve(literal_location(uri))


def _resolve(literal: Location) -> Location:
    """Where a literal location really is (blocking for a local one: ``realpath``)."""
    if literal.scheme == "file":
        real = os.path.realpath("/" + "/".join(literal.parts))
        return Location("file", "", _components(real))
    normalized = posixpath.normpath("/" + "/".join(literal.parts))
    return Location(literal.scheme, literal.authority, _components(normalized))


class PathNotAllowed(UfsError):
    def __init__(self, message: str) -> None:
        super().__init__(Reason.PERMISSION_DENIED, message)


class PathAllowlist:
    """The prefixes every job path must lie under; an empty list confines nothing."""

    def __init__(self, prefixes: Iterable[str]) -> None:
        self.prefixes = tuple(prefixes)
        literals: list[Location] = []
        for prefix in self.prefixes:
            try:
                literals.append(literal_location(prefix))
            except UfsError:
                raise ConfigError(f"{ALLOWLIST_KEY}: {prefix!r} is neither an absolute path "
                                  "nor a URI such as s3://bucket/prefix") from None
        # Parsed once. A local prefix is resolved (realpath) at each check, so that a
        # symlink on its way is followed as it is now; an object prefix, once.
        self._literals = tuple(literals)
        self._objects_resolved = {i: _resolve(literal) for i, literal in enumerate(literals)
                                  if literal.scheme != "file"}
        self._literal_prefixes = tuple(p for p in literals if ".." not in p.parts)

    @classmethod
    def from_config(cls, config: Config) -> PathAllowlist:
        prefixes: tuple[str, ...] = config[Keys.PATH_ALLOWLIST]
        return cls(prefixes)

    @property
    def enabled(self) -> bool:
        return bool(self.prefixes)

    def describe(self) -> str:
        return f"{ALLOWLIST_KEY}={','.join(self.prefixes)}"

    def admits(self, uri: str) -> bool:
        """Blocking. True when ``uri`` lies under a prefix, once resolved."""
        if not self.enabled:
            return True
        try:
            literal = literal_location(uri)
            where = _resolve(literal)
        except (UfsError, ValueError, OSError):
            return False
        for i, prefix in enumerate(self._literals):
            allowed = self._objects_resolved.get(i) or _resolve(prefix)
            if not where.within(allowed):
                continue
            if where.scheme == "file" or literal.within(prefix):
                return True
        return False

    def admits_literally(self, uri: str) -> bool:
        """Pure string logic, no I/O: True when ``uri``, as written and with ``..``
        resolved, lies under a prefix as written. Symlinks are not followed, so this
        says nothing of where a local path leads now: it suits a copy already cached
        (admitted by ``admits`` when it was loaded), and a False calls for ``admits``."""
        if not self.enabled:
            return True
        try:
            literal = literal_location(uri)
        except (UfsError, ValueError):
            return False
        if ".." in literal.parts:
            return False
        return any(literal.within(where) for where in self._literal_prefixes)

    def check(self, uri: str, what: str = "path") -> None:
        """Blocking. Raises ``PathNotAllowed`` (``PERMISSION_DENIED``) naming the prefixes."""
        if not self.admits(uri):
            raise PathNotAllowed(f"{what} {uri} lies outside the allowed prefixes "
                                 f"({self.describe()})")


def _identity(path: str) -> tuple[int, int] | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_dev, info.st_ino


def _existing_ancestors(path: str) -> list[str]:
    """``path`` and each of its parents, up to ``/``."""
    out = [path]
    while path != "/":
        path = os.path.dirname(path)
        out.append(path)
    return out


def transfer_overlap(src: str, dst: str) -> str | None:
    """Blocking. Why a COPY/MOVE from ``src`` to ``dst`` would touch its own source.

    None when they are apart. Refused: the destination is the source, lies inside it, or
    contains it, after resolving symlinks and, for local paths, by ``(st_dev, st_ino)``
    of every existing ancestor (a bind mount or a hard link is the same object).
    """
    source, target = resolved_location(src), resolved_location(dst)
    if target.within(source):
        return (f"the destination {dst} is or lies inside the source {src}"
                + ("" if target == literal_location(dst) else " (after resolving symlinks)"))
    if source.within(target):
        return f"the destination {dst} contains the source {src}"
    if source.scheme != "file" or target.scheme != "file":
        return None
    real_src = "/" + "/".join(source.parts)
    real_dst = "/" + "/".join(target.parts)
    src_id = _identity(real_src)
    if src_id is not None:
        for ancestor in _existing_ancestors(real_dst):
            if _identity(ancestor) == src_id:
                return (f"the destination {dst} is or lies inside the source {src} "
                        "(the same directory or file under another name)")
    dst_id = _identity(real_dst)
    if dst_id is not None:
        for ancestor in _existing_ancestors(real_src):
            if _identity(ancestor) == dst_id:
                return (f"the destination {dst} contains the source {src} "
                        "(the same directory under another name)")
    return None
