"""Under file systems. ``ufs_for`` picks the implementation for a URI.

Handles are cached per process and per settings, so that an object store's client (its
connection pool, its credentials) is built once and reused by every call.

The implementations are imported by the first ``ufs_for`` that needs them: a process
that only parses URIs (the CLI, through the path allowlist) never loads obstore.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from alluxiojob.core.reasons import Reason
from alluxiojob.ufs.base import UfsError, UfsFile, UfsStat, UnderFileSystem
from alluxiojob.ufs.settings import UfsSettings
from alluxiojob.ufs.uri import UfsUri, parse_uri

if TYPE_CHECKING:
    from alluxiojob.ufs.local import LocalUfs
    from alluxiojob.ufs.objects import ObjectStoreUfs

_LOCAL: LocalUfs | None = None
_handles: dict[tuple[str, UfsSettings], ObjectStoreUfs] = {}
_lock = threading.Lock()


def __getattr__(name: str) -> Any:
    if name == "LocalUfs":
        from alluxiojob.ufs.local import LocalUfs

        return LocalUfs
    if name == "ObjectStoreUfs":
        from alluxiojob.ufs.objects import ObjectStoreUfs

        return ObjectStoreUfs
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _local() -> LocalUfs:
    global _LOCAL
    from alluxiojob.ufs.local import LocalUfs

    _LOCAL = LocalUfs()
    return _LOCAL


def scheme_of(path: str) -> str:
    return parse_uri(path).scheme


def is_local(uri: str) -> bool:
    return scheme_of(uri) == "file"


def ufs_for(path: str | UfsUri, settings: UfsSettings | None = None) -> UnderFileSystem:
    """The UFS of ``path`` (a URI, or one parsed already)."""
    scheme = path.scheme if isinstance(path, UfsUri) else scheme_of(path)
    if scheme == "file":
        return _LOCAL or _local()
    from alluxiojob.ufs.objects import OBJECT_SCHEMES, ObjectStoreUfs

    if scheme in OBJECT_SCHEMES:
        key = (scheme, settings or UfsSettings())
        with _lock:
            handle = _handles.get(key)
            if handle is None:
                handle = _handles[key] = ObjectStoreUfs(scheme, key[1])
            return handle
    raise UfsError(
        Reason.INVALID_PATH,
        f"unsupported UFS scheme {scheme!r} in {str(path)!r}; supported: local paths, file://, "
        + ", ".join(f"{s}://" for s in OBJECT_SCHEMES),
    )


def resolve_path(path: str, ufs_root: str) -> str:
    """Resolve a user-given job path (relative paths go under ``ufs_root``) to a URI."""
    if not path:
        raise UfsError(Reason.INVALID_PATH, "empty path")
    if "://" not in path and not path.startswith("/"):
        if not ufs_root:
            raise UfsError(
                Reason.INVALID_PATH,
                f"relative path {path!r} needs alluxio.dora.client.ufs.root to be set",
            )
        path = ufs_root.rstrip("/") + "/" + path
    parsed = parse_uri(path)  # once: both the UFS and its normal form come from it
    return ufs_for(parsed).normalize(parsed)


__all__ = ["LocalUfs", "ObjectStoreUfs", "UfsError", "UfsFile", "UfsSettings", "UfsStat",
           "UfsUri", "UnderFileSystem", "is_local", "parse_uri", "resolve_path", "scheme_of",
           "ufs_for"]
