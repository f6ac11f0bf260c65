"""FREE: remove files from the cache (and from its index). Only the cache is touched,
so FREE is not confined by the allowlist."""

from __future__ import annotations

import trio

from alluxiojob.core.rows import FileEntry, FileResult, FileStatus
from alluxiojob.ufs.base import UfsError
from alluxiojob.worker.cache import Cache
from alluxiojob.worker.layout import CacheName, cache_name


async def free(cache: Cache, files: tuple[FileEntry, ...]) -> tuple[list[FileResult], int]:
    """Each file's result (OK with the bytes freed, SKIPPED when it was not cached, or
    FAILED for a name that cannot be cached), and how many files were freed."""
    results: list[FileResult] = []
    by_dir: dict[int, list[tuple[str, CacheName]]] = {}
    for f in files:
        try:
            name = cache_name(f.path)  # each URI parsed once, here
        except UfsError as exc:
            results.append(FileResult(f.path, FileStatus.FAILED, 0, exc.reason,
                                      str(exc)))
            continue
        by_dir.setdefault(cache.dir_index(name.key), []).append((f.path, name))
    freed: dict[str, int] = {}
    for index, named in by_dir.items():
        removed = await trio.to_thread.run_sync(cache.dirs[index].remove_named, named,
                                                limiter=cache.limiter)
        freed.update(removed)
    for f in files:
        if f.path in freed:
            results.append(FileResult(f.path, FileStatus.OK, freed[f.path]))
        elif not any(r.path == f.path for r in results):
            results.append(FileResult(f.path, FileStatus.SKIPPED, 0))
    return results, len(freed)
