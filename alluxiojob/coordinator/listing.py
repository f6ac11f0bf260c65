"""Listing a job's files: the UFS walk or the job's source, in pages, resumed on errors.

The runner (``runner.py``) feeds each listed file to its ledger; this module only
reads: it walks in a worker thread, never follows a symlink out of the path allowlist,
and checks, when a file was not found, whether the job's roots are gone altogether.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Iterator
from functools import partial

import structlog
import trio

from alluxiojob.config import Config
from alluxiojob.coordinator.sources import open_source
from alluxiojob.core.errors import describe_error
from alluxiojob.core.job import JobRecord, JobType
from alluxiojob.core.reasons import Reason
from alluxiojob.core.text import printable
from alluxiojob.security.paths import PathAllowlist
from alluxiojob.ufs import ufs_for
from alluxiojob.ufs.base import UfsError, UfsFile
from alluxiojob.ufs.settings import UfsSettings

log = structlog.get_logger("alluxiojob.coordinator")

LISTING_ATTEMPTS = 5  # unexpected listing errors in a row at one place fail the job
LISTING_BACKOFF = 0.5  # first wait before such a listing is resumed
LIST_PAGE = 1000  # files listed per call into the listing thread


class JobFailed(Exception):
    pass


async def list_pages(
    job: JobRecord,
    config: Config,
    after: tuple[str, ...],
    *,
    walk_start: Callable[[tuple[str, ...]], tuple[str, ...]],
    past_end: Callable[[tuple[str, ...]], bool],
    on_totals: Callable[[int, int], None],
    walk_until: tuple[str, ...] = (),
    count: bool = True,
    page_size: int = LIST_PAGE,
) -> AsyncGenerator[list[UfsFile], None]:
    """The job's files after ``after``, in pages, up to the first one ``past_end``.

    ``walk_start`` gives where a walk resumed after ``after`` starts (a shard's range
    may start later); a source that knows its totals (an index file, an inventory, a
    template) reports them to ``on_totals(files, bytes)`` first, unless ``count`` is
    false (a resumed job, or a shard counted at its plan, knows its totals); such a
    source ends at ``walk_until`` (``()``: its end). A page holds ``page_size`` files.
    """
    ufs = ufs_for(job.path, UfsSettings.from_config(config))
    allowlist = PathAllowlist.from_config(config)

    def follow_link(path: str) -> bool:
        """Walks never follow a symlink out of alluxio.job.path.allowlist."""
        if allowlist.admits(path):
            return True
        log.warning("not following a symlink that leads outside the allowlist",
                    path=path, allowlist=allowlist.describe())
        return False

    def walk(after: tuple[str, ...]) -> Iterator[UfsFile]:
        return ufs.walk(job.path, walk_start(after),
                        follow_link if allowlist.enabled else None)

    if job.options.source:  # an index file, an inventory, a template
        source = await trio.to_thread.run_sync(partial(open_source, job, config, count=count))
        if count:
            on_totals(source.files_total, source.bytes_total)

        def source_walk(after: tuple[str, ...]) -> Iterator[UfsFile]:
            return source.entries(walk_start(after), walk_until)

        walk = source_walk

    walker = walk(after)

    def next_page() -> list[UfsFile]:
        out: list[UfsFile] = []
        for item in walker:
            if past_end(item.parts):
                break
            out.append(item)
            if len(out) >= page_size:
                break
        return out

    # An unexpected error (a UfsError fails the job at once) resumes the walk after
    # the last file listed; one that recurs there fails the job, naming it, rather
    # than hold a running slot for good.
    attempts, backoff = 0, LISTING_BACKOFF
    while True:
        try:
            files = await trio.to_thread.run_sync(next_page)
        except UfsError:
            raise
        except Exception as exc:
            attempts += 1
            place = printable("/".join(after)) or "the start"
            if attempts >= LISTING_ATTEMPTS:
                raise JobFailed(f"listing {printable(job.path)} failed {attempts} "
                                f"times after {place}: {describe_error(exc)}") from None
            log.warning("listing failed; resuming it", after=place, attempts=attempts,
                        error=describe_error(exc))
            await trio.sleep(backoff)
            backoff *= 2
            walker = walk(after)
            continue
        if files:
            after, attempts, backoff = files[-1].parts, 0, LISTING_BACKOFF
            yield files
        if len(files) < page_size:  # the walk is over
            return


def destination(job: JobRecord, ufs_file: UfsFile) -> str:
    """COPY/MOVE: the file's place under the destination, mirroring the source tree."""
    if not job.dst:
        return ""
    if not ufs_file.parts:  # the job's path is a single file
        return job.dst
    return job.dst.rstrip("/") + "/" + "/".join(ufs_file.parts)


async def check_roots(job: JobRecord, config: Config) -> None:
    """A file was not found: if its bucket, container or the job's path is gone, no
    other file can be done either, so raise ``JobFailed``, naming what is gone."""
    settings = UfsSettings.from_config(config)
    for uri in filter(None, (job.path, job.dst)):
        try:
            there = await trio.to_thread.run_sync(ufs_for(uri, settings).exists, uri)
        except UfsError as exc:
            if exc.reason == Reason.UFS_NOT_FOUND:  # the bucket or container
                raise JobFailed(str(exc)) from None
            continue  # cannot tell: the files' own failures count
        # A destination is made as it is written; a MOVE empties its source.
        if (not there and uri == job.path and not job.options.source
                and job.type is not JobType.MOVE):
            raise JobFailed(f"{printable(uri)} no longer exists")
