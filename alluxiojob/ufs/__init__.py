"""Under file systems. ``ufs_for`` picks the implementation for a URI."""

from __future__ import annotations

from alluxiojob.ufs.base import UfsError, UfsFile, UnderFileSystem
from alluxiojob.ufs.local import LocalUfs


def ufs_for(path: str) -> UnderFileSystem:
    if path.startswith("/") or path.startswith("file://"):
        return LocalUfs()
    scheme = path.split("://", 1)[0] if "://" in path else ""
    raise UfsError(
        "INVALID_PATH",
        f"unsupported UFS scheme {scheme!r} in {path!r}; supported: local paths and file://",
    )


def resolve_path(path: str, ufs_root: str) -> str:
    """Resolve a user-given job path (relative paths go under ``ufs_root``) to a URI."""
    if not path:
        raise UfsError("INVALID_PATH", "empty path")
    if "://" not in path and not path.startswith("/"):
        if not ufs_root:
            raise UfsError(
                "INVALID_PATH",
                f"relative path {path!r} needs alluxio.dora.client.ufs.root to be set",
            )
        path = ufs_root.rstrip("/") + "/" + path
    return ufs_for(path).normalize(path)


__all__ = ["LocalUfs", "UfsError", "UfsFile", "UnderFileSystem", "resolve_path", "ufs_for"]
