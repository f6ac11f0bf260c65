"""A listing that cannot go on ends its job, naming why, instead of holding it RUNNING.

A chain of nested directories deeper than Python's recursion limit hung its job: the
walk recursed, the runner took the RecursionError for a passing fault, resumed the job
from its checkpoint every 5 s, and met it again, for good.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trio

from alluxiojob.config import build_config
from alluxiojob.coordinator.listing import LISTING_ATTEMPTS
from alluxiojob.coordinator.membership import Membership
from alluxiojob.coordinator.runner import JobRunner
from alluxiojob.core.job import JobOptions, JobType
from alluxiojob.core.states import JobState
from alluxiojob.store.jobs import JobStore
from alluxiojob.store.rocks import RocksKVStore
from alluxiojob.ufs.base import UfsFile
from alluxiojob.ufs.local import LocalUfs
from tests.deep_trees import make_chain, remove_tree
from tests.integration.cluster import Cluster
from tests.integration.test_runner_store_writes import client_factory

pytestmark = pytest.mark.timeout(300)


def test_deep_trees_end_their_jobs(cluster: Cluster, tmp_path: Path) -> None:
    deep, deeper = tmp_path / "deep", tmp_path / "deeper"
    try:
        deep.mkdir()
        make_chain(deep, 1000)
        (deep / "z").write_bytes(b"beside the chain")
        job = cluster.submit("load", str(deep))
        report = cluster.wait_state(job["id"], "SUCCEEDED")
        assert report["files"]["processed"] == 2
        assert report["bytes"]["processed"] == len(b"deep") + len(b"beside the chain")

        deeper.mkdir()
        make_chain(deeper, 5000)  # its file's path is longer than any the kernel takes
        job = cluster.submit("load", str(deeper))
        report = cluster.wait_state(job["id"], "FAILED")
        assert "File name too long" in report["job"]["error"], report["job"]["error"]
    finally:
        cluster.stop_all()
        for path in (deep, deeper, cluster.root):  # the caches hold the chain too
            remove_tree(path)


def walk_failing_at(name: str, times: int) -> tuple[Callable[..., Iterator[UfsFile]],
                                                     list[tuple[str, ...]]]:
    """``LocalUfs.walk`` raising RecursionError on reaching ``name``, the first ``times``
    times; and the resume points it was called with."""
    real = LocalUfs.walk
    calls: list[tuple[str, ...]] = []

    def walk(self: LocalUfs, uri: str, after: tuple[str, ...] = (),
             follow_link: Callable[[str], bool] | None = None) -> Iterator[UfsFile]:
        calls.append(after)
        for item in real(self, uri, after, follow_link):
            if item.parts[-1] == name and len(calls) <= times:
                raise RecursionError("maximum recursion depth exceeded")
            yield item

    return walk, calls


@pytest.mark.parametrize("times", [2, 1000])
async def test_a_listing_error_resumes_then_fails_the_job_if_it_recurs(
        cluster_factory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,  # type: ignore[no-untyped-def]
        times: int) -> None:
    cluster: Cluster = cluster_factory()
    cluster.add_worker()
    src = tmp_path / "src"
    src.mkdir()
    for i in range(30):
        (src / f"f{i:02d}").write_bytes(os.urandom(100))
    walk, calls = walk_failing_at("f20", times)
    monkeypatch.setattr(LocalUfs, "walk", walk)
    config = build_config({"alluxio.worker.static.config.file": str(cluster.workers_file)})
    store = JobStore(RocksKVStore(tmp_path / "rocks"))
    with trio.fail_after(100):
        async with trio.open_nursery() as nursery:
            membership = Membership(client_factory(config), cluster.workers_file)
            await nursery.start(membership.run)
            job, _ = await store.submit(JobType.LOAD, f"file://{src}", "",
                                        JobOptions(batch_size=5), 10)
            [owned] = await store.claim_waiting("test", 1)
            await JobRunner(owned, store, membership, config).run()
            nursery.cancel_scope.cancel()
    final = (await store.get(job.id)).job
    progress = await store.get_progress(job.id)
    await store.kv.aclose()
    # The files of the page that failed were never handed on: the walk resumes after the
    # last file listed before it, here from the start.
    if times < LISTING_ATTEMPTS:  # a passing fault: every file once
        assert final.state is JobState.SUCCEEDED, final.error
        assert progress.live.files_processed == 30
        assert calls == [()] * (times + 1)
    else:
        assert final.state is JobState.FAILED
        assert (f"failed {LISTING_ATTEMPTS} times after the start: RecursionError: maximum "
                "recursion depth exceeded") in final.error, final.error
        assert calls == [()] * LISTING_ATTEMPTS
