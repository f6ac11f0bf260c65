"""One conformance suite for both job-store backends: RocksDB and a real etcd.

Tests taking the ``kv``/``jobs``/``backend`` fixtures run once per backend. The etcd
server is shared by the session, so each test works under its own ``prefix``. Tests
that stop or pause etcd start their own server.
"""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Protocol

import httpx
import pytest
import trio

from alluxiojob.core.errors import (
    CapacityExceeded,
    Fenced,
    JobServiceError,
    NotFound,
    Unavailable,
)
from alluxiojob.core.job import JobOptions, JobRecord, JobType
from alluxiojob.core.progress import Counters, Progress
from alluxiojob.core.states import JobEvent, JobState
from alluxiojob.store.etcd import EtcdKVStore
from alluxiojob.store.jobs import FailureRecord, JobStore, OwnedJob, SubmitOutcome
from alluxiojob.store.kv import Compare, Delete, KVStore, Put
from alluxiojob.store.rocks import RocksKVStore
from alluxiojob.testing.etcd import EtcdServer, free_port

TEST_TIMEOUT = 30.0  # every async test runs under trio.fail_after(TEST_TIMEOUT)
CAPACITY = 1000
OPTIONS = JobOptions()


class Backend(Protocol):
    """The ``backend`` fixture (conftest.py): opens stores over the same storage."""

    def open(self) -> KVStore: ...


async def put(kv: KVStore, key: bytes, value: bytes = b"v") -> int:
    revision = await kv.txn([], [Put(key, value)])
    assert revision is not None
    return revision


async def submit(jobs: JobStore, path: str, capacity: int = CAPACITY) -> tuple[str, SubmitOutcome]:
    job, outcome = await jobs.submit(JobType.LOAD, path, "", OPTIONS, capacity)
    return job.id, outcome


async def claim_one(jobs: JobStore, owner: str) -> OwnedJob:
    claimed = await jobs.claim_waiting(owner, 1)
    assert len(claimed) == 1
    return claimed[0]


# ====================================================================== KV layer
async def test_get_put_roundtrip(kv: KVStore, prefix: str) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        key = prefix.encode() + b"k"
        assert await kv.get(key) is None
        revision = await put(kv, key, b"hello")
        entry = await kv.get(key)
        assert entry is not None
        assert (entry.key, entry.value, entry.revision) == (key, b"hello", revision)
        # Empty values and arbitrary bytes survive (etcd omits empty values in JSON).
        binary = bytes(range(256))
        await kv.txn([], [Put(key, b""), Put(key + b"\xff\x00bin", binary)])
        assert (await kv.get(key)) is not None
        assert (await kv.get(key)).value == b""  # type: ignore[union-attr]
        assert (await kv.get(key + b"\xff\x00bin")).value == binary  # type: ignore[union-attr]


async def test_scan_order_start_after_limit_count(kv: KVStore, prefix: str) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        base = prefix.encode()
        inside = [base + b"a/" + name for name in (b"c", b"a", b"b\xff", b"b", b"\xff\xff", b"d")]
        outside = [base + b"a.", base + b"a0", base + b"a", base + b"b/x"]
        for key in inside + outside:  # one txn each, in no particular order
            await put(kv, key, key[len(base) :])
        scan_prefix = base + b"a/"
        expected = sorted(inside)

        entries = await kv.scan(scan_prefix)
        assert [e.key for e in entries] == expected
        assert all(e.value == e.key[len(base) :] for e in entries)

        assert [e.key for e in await kv.scan(scan_prefix, limit=2)] == expected[:2]
        after = expected[2]
        assert [e.key for e in await kv.scan(scan_prefix, start_after=after)] == expected[3:]
        assert [e.key for e in await kv.scan(scan_prefix, start_after=after, limit=1)] == [
            expected[3]
        ]
        # start_after need not exist, may sort before the prefix, or after everything.
        between = scan_prefix + b"bb"
        assert [e.key for e in await kv.scan(scan_prefix, start_after=between)] == [
            k for k in expected if k > between
        ]
        assert [e.key for e in await kv.scan(scan_prefix, start_after=base)] == expected
        assert await kv.scan(scan_prefix, start_after=expected[-1]) == []
        assert await kv.scan(scan_prefix, start_after=base + b"z") == []

        # Paging with start_after visits every key exactly once.
        paged: list[bytes] = []
        start: bytes | None = None
        while page := await kv.scan(scan_prefix, start_after=start, limit=4):
            paged += [e.key for e in page]
            start = page[-1].key
        assert paged == expected

        assert await kv.count(scan_prefix) == len(inside)
        assert await kv.count(base) == len(inside) + len(outside)
        assert await kv.count(base + b"nothing/") == 0
        assert await kv.scan(base + b"nothing/") == []


async def test_txn_compare_success_and_failure(kv: KVStore, prefix: str) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        key, other = prefix.encode() + b"k", prefix.encode() + b"other"
        r1 = await put(kv, key, b"one")
        r2 = await kv.txn([Compare(key, r1)], [Put(key, b"two")])
        assert r2 is not None
        assert r2 > r1
        # A stale revision fails, and nothing in the transaction is applied.
        assert await kv.txn([Compare(key, r1)], [Put(key, b"three"), Put(other, b"x")]) is None
        entry = await kv.get(key)
        assert entry is not None
        assert (entry.value, entry.revision) == (b"two", r2)
        assert await kv.get(other) is None
        # Every compare must hold.
        assert await kv.txn([Compare(key, r2), Compare(other, 12345)], [Delete(key)]) is None
        assert await kv.get(key) is not None
        r3 = await kv.txn([Compare(key, r2), Compare(other, 0)], [Delete(key), Put(other, b"y")])
        assert r3 is not None
        assert r3 > r2
        assert await kv.get(key) is None
        # A transaction without operations reports whether its compares held.
        assert await kv.txn([Compare(other, r3)], []) is not None
        assert await kv.txn([Compare(other, r2)], []) is None


async def test_revision_zero_means_absent(kv: KVStore, prefix: str) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        key = prefix.encode() + b"k"
        created = await kv.txn([Compare(key, 0)], [Put(key, b"first")])
        assert created is not None
        assert await kv.txn([Compare(key, 0)], [Put(key, b"second")]) is None
        assert (await kv.get(key)).value == b"first"  # type: ignore[union-attr]
        assert await kv.txn([Compare(key, created)], [Delete(key)]) is not None
        assert await kv.txn([Compare(key, created)], [Put(key, b"zombie")]) is None
        assert await kv.txn([Compare(key, 0)], [Put(key, b"again")]) is not None
        assert (await kv.get(key)).value == b"again"  # type: ignore[union-attr]


async def test_prefix_delete(kv: KVStore, prefix: str) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        base = prefix.encode()
        doomed = [base + b"d/1", base + b"d/2", base + b"d/\xff\xff"]
        kept = [base + b"d", base + b"d0", base + b"e/1", base + b"c/1"]
        await kv.txn([], [Put(k, b"x") for k in doomed + kept])
        assert await kv.txn([], [Delete(base + b"d/", prefix=True)]) is not None
        assert await kv.scan(base + b"d/") == []
        assert [e.key for e in await kv.scan(base)] == sorted(kept)
        # A plain delete removes one key only; deleting an absent key is not an error.
        await kv.txn([], [Delete(base + b"d"), Delete(base + b"missing")])
        assert [e.key for e in await kv.scan(base)] == sorted(set(kept) - {base + b"d"})


async def test_revisions_increase(kv: KVStore, prefix: str) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        base = prefix.encode()
        revisions = [await put(kv, base + b"k%d" % i) for i in range(5)]
        assert revisions == sorted(set(revisions))
        both = await kv.txn([], [Put(base + b"x", b"1"), Put(base + b"y", b"2")])
        assert both is not None
        assert both > revisions[-1]
        x, y = await kv.get(base + b"x"), await kv.get(base + b"y")
        k0 = await kv.get(base + b"k0")
        assert x is not None
        assert y is not None
        assert k0 is not None
        assert x.revision == y.revision == both
        assert k0.revision == revisions[0]  # untouched keys keep their revision


# ====================================================================== JobStore
async def test_submit_persists_before_returning(backend: Backend, prefix: str) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        kv = backend.open()
        job, outcome = await JobStore(kv, prefix=prefix).submit(
            JobType.LOAD, "s3://bucket/data", "", OPTIONS, CAPACITY
        )
        assert outcome is SubmitOutcome.CREATED
        await kv.aclose()
        reopened = JobStore(backend.open(), prefix=prefix)  # a new process would see it
        assert (await reopened.get(job.id)).job == job
        assert (await reopened.find(JobType.LOAD, "s3://bucket/data")).job.id == job.id
        assert await reopened.waiting_count() == 1


async def test_submit_active_job_is_already_running(jobs: JobStore) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        job_id, outcome = await submit(jobs, "/data")
        assert outcome is SubmitOutcome.CREATED
        assert await submit(jobs, "/data") == (job_id, SubmitOutcome.ALREADY_RUNNING)
        await claim_one(jobs, "coord-a")
        assert await submit(jobs, "/data") == (job_id, SubmitOutcome.ALREADY_RUNNING)
        assert await jobs.waiting_count() == 0
        # Another type on the same path is another job.
        other, _ = await jobs.submit(JobType.FREE, "/data", "", OPTIONS, CAPACITY)
        assert other.id != job_id


async def test_stop_then_submit_resumes(jobs: JobStore) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        running_id, _ = await submit(jobs, "/running")
        owned = await claim_one(jobs, "coord-a")
        assert owned.job.id == running_id
        await jobs.save_progress(owned, Progress(committed=Counters(files_processed=7)))

        waiting_id, _ = await submit(jobs, "/waiting")
        stopped = await jobs.stop(JobType.LOAD, "/waiting")
        assert stopped.state is JobState.STOPPED
        assert await jobs.waiting_count() == 0
        assert await jobs.claim_waiting("coord-a", 10) == []
        assert await submit(jobs, "/waiting") == (waiting_id, SubmitOutcome.RESUMED)
        assert (await jobs.get(waiting_id)).job.state is JobState.WAITING

        assert (await jobs.stop(JobType.LOAD, "/running")).state is JobState.STOPPED
        assert await submit(jobs, "/running") == (running_id, SubmitOutcome.RESUMED)
        assert (await jobs.get_progress(running_id)).committed.files_processed == 7
        # A resumed job joins the end of the queue.
        claimed = [o.job.id for o in await jobs.claim_waiting("coord-b", 10)]
        assert claimed == [waiting_id, running_id]


@pytest.mark.parametrize("event", [JobEvent.SUCCEED, JobEvent.FAIL])
async def test_submit_after_final_state_creates_new_job(jobs: JobStore, event: JobEvent) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        first_id, _ = await submit(jobs, "/data")
        await jobs.transition(await claim_one(jobs, "coord-a"), event)
        second_id, outcome = await submit(jobs, "/data")
        assert outcome is SubmitOutcome.CREATED
        assert second_id != first_id
        assert (await jobs.find(JobType.LOAD, "/data")).job.id == second_id
        assert (await jobs.get(first_id)).job.state in (JobState.SUCCEEDED, JobState.FAILED)


async def test_claims_are_fifo(jobs: JobStore) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        ids = [(await submit(jobs, f"/p{i}"))[0] for i in range(6)]
        first = await jobs.claim_waiting("coord-a", 2)
        assert [o.job.id for o in first] == ids[:2]
        assert all(o.job.state is JobState.RUNNING and o.job.owner == "coord-a" for o in first)
        rest = await jobs.claim_waiting("coord-b", 10)
        assert [o.job.id for o in rest] == ids[2:]
        assert await jobs.claim_waiting("coord-c", 10) == []


async def test_waiting_capacity(jobs: JobStore) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        await submit(jobs, "/a", capacity=2)
        await submit(jobs, "/b", capacity=2)
        with pytest.raises(CapacityExceeded) as info:
            await submit(jobs, "/c", capacity=2)
        assert "alluxio.coordinator.scheduler.waiting.job.capacity" in str(info.value)
        with pytest.raises(NotFound):
            await jobs.find(JobType.LOAD, "/c")
        # Resubmitting a waiting job is not a new waiting job.
        assert (await submit(jobs, "/a", capacity=2))[1] is SubmitOutcome.ALREADY_RUNNING
        await jobs.claim_waiting("coord-a", 1)
        assert (await submit(jobs, "/c", capacity=2))[1] is SubmitOutcome.CREATED


async def test_concurrent_claims_take_each_job_once(jobs: JobStore) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        ids = {(await submit(jobs, f"/job{i}"))[0] for i in range(30)}
        claims: dict[str, list[str]] = {}

        async def claimer(owner: str) -> None:
            mine = claims.setdefault(owner, [])
            while batch := await jobs.claim_waiting(owner, 3):
                mine += [o.job.id for o in batch]
                await trio.lowlevel.checkpoint()

        async with trio.open_nursery() as nursery:
            for n in range(6):
                nursery.start_soon(claimer, f"coord-{n}")

        everything = [job_id for taken in claims.values() for job_id in taken]
        assert sorted(everything) == sorted(ids)  # each exactly once
        for owner, taken in claims.items():
            for job_id in taken:
                job = (await jobs.get(job_id)).job
                assert (job.state, job.owner, job.claims) == (JobState.RUNNING, owner, 1)
        assert await jobs.waiting_count() == 0


async def test_fencing_after_reclaim(jobs: JobStore) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        job_id, _ = await submit(jobs, "/data")
        old = await claim_one(jobs, "coord-a")
        await jobs.save_progress(old, Progress(committed=Counters(files_processed=1)))
        reclaimed = await jobs.reclaim_orphans(lambda owner: owner != "coord-a")
        assert [j.id for j in reclaimed] == [job_id]
        new = await claim_one(jobs, "coord-b")
        assert new.job.claims == 2
        mine = Progress(committed=Counters(files_processed=5), checkpoint=("dir", "f5"))
        await jobs.save_progress(new, mine)
        assert (await jobs.get_progress(job_id)).writer == "coord-b"  # signed by the owner

        with pytest.raises(Fenced):
            await jobs.save_progress(old, Progress(committed=Counters(files_processed=99)))
        with pytest.raises(Fenced):
            await jobs.transition(old, JobEvent.SUCCEED)
        assert await jobs.get_progress(job_id) == mine
        assert (await jobs.get_progress(job_id)).writer == "coord-b"
        current = (await jobs.get(job_id)).job
        assert (current.state, current.owner) == (JobState.RUNNING, "coord-b")
        # The new owner's writes still go through.
        done = await jobs.transition(new, JobEvent.SUCCEED, progress=mine)
        assert done.job.state is JobState.SUCCEEDED


async def test_fencing_after_stop(jobs: JobStore) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        job_id, _ = await submit(jobs, "/data")
        owned = await claim_one(jobs, "coord-a")
        progress = Progress(committed=Counters(files_processed=3))
        await jobs.save_progress(owned, progress)
        await jobs.stop(JobType.LOAD, "/data")
        with pytest.raises(Fenced):
            await jobs.save_progress(owned, Progress(committed=Counters(files_processed=4)))
        with pytest.raises(Fenced):
            await jobs.transition(owned, JobEvent.FAIL, error="late")
        assert (await jobs.get(job_id)).job.state is JobState.STOPPED
        assert await jobs.get_progress(job_id) == progress


async def test_progress_and_failures_roundtrip(jobs: JobStore) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        job_id, _ = await submit(jobs, "/data")
        assert await jobs.get_progress(job_id) == Progress()
        owned = await claim_one(jobs, "coord-a")
        progress = Progress(
            live=Counters(files_listed=10, bytes_listed=1000, files_processed=6, files_failed=2),
            committed=Counters(files_processed=4, bytes_processed=400),
            checkpoint=("dir", "sub", "f4"),
            listing_done=True,
            active_seconds=12.5,
            recent_rate=33.0,
            verify_passes=1,
            files_repaired=2,
            workers=("w1", "w2"),
        )
        failures = [
            FailureRecord("/data/z/ü.bin", "NOT_FOUND", "gone", 1.5),
            FailureRecord("/data/a", "IO", "read error", 2.0),
            FailureRecord("/data/m", "TIMEOUT", "slow", 3.0),
        ]
        await jobs.save_progress(owned, progress, failures)
        assert await jobs.get_progress(job_id) == progress
        listed = await jobs.list_failures(job_id)
        assert listed == sorted(failures, key=lambda f: f.path.encode())
        assert len(await jobs.list_failures(job_id, limit=2)) == 2

        await jobs.save_progress(owned, progress, cleared=["/data/a"])
        assert [f.path for f in await jobs.list_failures(job_id)] == ["/data/m", "/data/z/ü.bin"]


async def test_many_failures_in_one_save(jobs: JobStore) -> None:
    """alluxio.job.failure.list.max (1000) failures may be saved at once; etcd allows
    only 128 operations per transaction by default."""
    with trio.fail_after(TEST_TIMEOUT):
        job_id, _ = await submit(jobs, "/data")
        owned = await claim_one(jobs, "coord-a")
        failures = [FailureRecord(f"/data/f{i:04d}", "IO", "x" * 200, 1.0) for i in range(1000)]
        progress = Progress(committed=Counters(files_failed=1000))
        await jobs.save_progress(owned, progress, failures)
        assert await jobs.get_progress(job_id) == progress
        assert [f.path for f in await jobs.list_failures(job_id)] == [f.path for f in failures]
        cleared = [f.path for f in failures[:400]]
        await jobs.save_progress(owned, progress, cleared=cleared)
        assert len(await jobs.list_failures(job_id)) == 600
        # A path named twice (etcd rejects a key twice in one txn): the last word wins.
        again = FailureRecord("/data/f0999", "TIMEOUT", "again", 2.0)
        await jobs.save_progress(owned, progress, [again, failures[0]], cleared=["/data/f0000"])
        listed = await jobs.list_failures(job_id)
        assert len(listed) == 600
        assert listed[-1] == again
        await jobs.stop(JobType.LOAD, "/data")
        with pytest.raises(Fenced):
            await jobs.save_progress(owned, Progress(), failures)
        assert len(await jobs.list_failures(job_id)) == 600


async def test_rerun_failed_job_starts_over(jobs: JobStore) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        job_id, _ = await submit(jobs, "/data")
        owned = await claim_one(jobs, "coord-a")
        await jobs.save_progress(
            owned,
            Progress(committed=Counters(files_processed=3, files_failed=1)),
            [FailureRecord("/data/bad", "IO", "boom", 1.0)],
        )
        await jobs.transition(owned, JobEvent.FAIL, error="too many failures")
        rerun = await jobs.rerun(job_id)
        assert (rerun.state, rerun.error, rerun.id) == (JobState.WAITING, "", job_id)
        assert await jobs.get_progress(job_id) == Progress()
        assert await jobs.list_failures(job_id) == []
        assert await jobs.waiting_count() == 1
        assert (await claim_one(jobs, "coord-b")).job.id == job_id
        with pytest.raises(Fenced):
            await jobs.save_progress(owned, Progress())  # the old claim is stale


async def test_rerun_stopped_job_keeps_progress(jobs: JobStore) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        job_id, _ = await submit(jobs, "/data")
        owned = await claim_one(jobs, "coord-a")
        progress = Progress(committed=Counters(files_processed=3))
        await jobs.save_progress(owned, progress)
        await jobs.stop(JobType.LOAD, "/data")
        assert (await jobs.rerun(job_id)).state is JobState.WAITING
        assert await jobs.get_progress(job_id) == progress


async def test_delete_expired(kv: KVStore, prefix: str) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        now = [1000.0]
        jobs = JobStore(kv, prefix=prefix, clock=lambda: now[0])

        async def finish(path: str, event: JobEvent) -> str:
            job_id, _ = await submit(jobs, path)
            owned = await claim_one(jobs, "coord-a")
            await jobs.save_progress(
                owned, Progress(), [FailureRecord(path + "/x", "IO", "boom", now[0])]
            )
            await jobs.transition(owned, event)
            return job_id

        old_ok = await finish("/old-ok", JobEvent.SUCCEED)
        old_failed = await finish("/old-failed", JobEvent.FAIL)
        now[0] = 1900.0
        recent = await finish("/recent", JobEvent.SUCCEED)
        waiting, _ = await submit(jobs, "/waiting")
        now[0] = 2000.0

        assert await jobs.delete_expired(retention_seconds=500) == 2
        for gone in (old_ok, old_failed):
            with pytest.raises(NotFound):
                await jobs.get(gone)
            assert await jobs.list_failures(gone) == []
        with pytest.raises(NotFound):
            await jobs.find(JobType.LOAD, "/old-ok")
        assert (await jobs.get(recent)).job.state is JobState.SUCCEEDED
        assert len(await jobs.list_failures(recent)) == 1
        assert (await jobs.get(waiting)).job.state is JobState.WAITING
        assert await jobs.delete_expired(retention_seconds=500) == 0
        # A new job for a deleted path is a fresh submission.
        assert (await submit(jobs, "/old-ok"))[1] is SubmitOutcome.CREATED


async def test_list_jobs_filters(jobs: JobStore) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        load_a, _ = await submit(jobs, "/a")
        load_b, _ = await submit(jobs, "/b")
        free, _ = await jobs.submit(JobType.FREE, "/c", "", OPTIONS, CAPACITY)
        owned_a = await claim_one(jobs, "coord-a")
        owned_b = await claim_one(jobs, "coord-b")
        assert {owned_a.job.id, owned_b.job.id} == {load_a, load_b}

        def ids(records: list[JobRecord]) -> set[str]:
            return {r.id for r in records}

        assert ids(await jobs.list_jobs()) == {load_a, load_b, free.id}
        assert ids(await jobs.list_jobs(state=JobState.RUNNING)) == {load_a, load_b}
        assert ids(await jobs.list_jobs(state=JobState.WAITING)) == {free.id}
        assert ids(await jobs.list_jobs(job_type=JobType.FREE)) == {free.id}
        assert ids(await jobs.list_jobs(owner="coord-a")) == {owned_a.job.id}
        assert ids(await jobs.list_jobs(state=JobState.WAITING, owner="coord-a")) == set()
        assert ids(await jobs.list_jobs(state=JobState.RUNNING, job_type=JobType.LOAD,
                                        owner="coord-b")) == {owned_b.job.id}


# ====================================================================== etcd only
@pytest.fixture
async def etcd_kv(etcd_server: EtcdServer) -> AsyncIterator[EtcdKVStore]:
    store = EtcdKVStore([etcd_server.url], read_timeout=5, write_timeout=5, max_retries=1)
    yield store
    await store.aclose()


@pytest.fixture
def dead_endpoint() -> str:
    """host:port where nothing listens."""
    return f"127.0.0.1:{free_port()}"


@pytest.fixture
def silent_endpoint() -> Iterator[str]:
    """An endpoint that accepts connections (into its backlog) and never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_etcd_endpoints_and_config() -> None:
    from alluxiojob.config.properties import build_config
    from alluxiojob.core.errors import InvalidArgument

    config = build_config({
        "alluxio.etcd.endpoints": "127.0.0.1:2379, http://10.0.0.2:2379/",
        "alluxio.coordinator.scheduler.etcd.read.timeout": "2s",
        "alluxio.coordinator.scheduler.etcd.write.timeout": "500ms",
        "alluxio.coordinator.scheduler.etcd.max.retries": "4",
    })
    store = EtcdKVStore.from_config(config)
    assert store.endpoints == ("http://127.0.0.1:2379", "http://10.0.0.2:2379")
    assert (store.read_timeout, store.write_timeout, store.max_retries) == (2.0, 0.5, 4)
    job_etcd = config.with_overrides(
        {"alluxio.coordinator.scheduler.job.etcd.endpoints": "jobs-etcd:2379"}
    )
    assert EtcdKVStore.from_config(job_etcd).endpoints == ("http://jobs-etcd:2379",)
    with pytest.raises(InvalidArgument, match="alluxio.etcd.endpoints"):
        EtcdKVStore([])
    with pytest.raises(InvalidArgument, match="invalid etcd endpoint"):
        EtcdKVStore(["ftp://host:2379"])


async def test_etcd_leases(etcd_kv: EtcdKVStore, prefix: str) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        key = prefix.encode() + b"alive"
        lease = await etcd_kv.grant_lease(2.5)
        assert lease > 0
        assert await etcd_kv.keep_alive(lease) is True
        assert await etcd_kv.txn([], [Put(key, b"me", lease=lease)]) is not None
        assert await etcd_kv.get(key) is not None
        await etcd_kv.revoke(lease)
        assert await etcd_kv.get(key) is None
        assert await etcd_kv.keep_alive(lease) is False
        await etcd_kv.revoke(lease)  # revoking twice is harmless
        with pytest.raises(NotFound):
            await etcd_kv.txn([], [Put(key, b"me", lease=lease)])


async def test_etcd_lease_expires(etcd_kv: EtcdKVStore, prefix: str) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        key = prefix.encode() + b"alive"
        lease = await etcd_kv.grant_lease(0.2)  # rounded up to 1 s
        await etcd_kv.txn([], [Put(key, b"me", lease=lease)])
        started = trio.current_time()
        with trio.fail_after(10):
            while True:
                if await etcd_kv.get(key) is None:
                    break
                await trio.sleep(0.1)
        assert trio.current_time() - started > 0.5  # the lease did not end at once
        assert await etcd_kv.keep_alive(lease) is False


async def test_etcd_unreachable_raises_unavailable(dead_endpoint: str) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        kv = EtcdKVStore([dead_endpoint], read_timeout=0.5, write_timeout=0.5, max_retries=2)
        try:
            started = time.monotonic()
            with pytest.raises(Unavailable) as info:
                await kv.get(b"/k")
            assert f"http://{dead_endpoint}" in str(info.value)
            assert "ConnectError" in str(info.value)
            with pytest.raises(Unavailable):
                await kv.txn([Compare(b"/k", 0)], [Put(b"/k", b"v")])
            with pytest.raises(Unavailable):
                await kv.grant_lease(5)
            assert time.monotonic() - started < 3
        finally:
            await kv.aclose()


async def test_etcd_silent_endpoint_times_out(silent_endpoint: str) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        kv = EtcdKVStore([silent_endpoint], read_timeout=0.2, write_timeout=0.3, max_retries=1)
        try:
            started = time.monotonic()
            with pytest.raises(Unavailable) as info:
                await kv.scan(b"/k")
            assert silent_endpoint in str(info.value)
            assert "no answer within 0.2s" in str(info.value)
            assert 0.4 <= time.monotonic() - started < 3  # two attempts of 0.2 s
        finally:
            await kv.aclose()


async def test_etcd_failover(
    etcd_server: EtcdServer, dead_endpoint: str, silent_endpoint: str, prefix: str
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        calls: list[str] = []
        kv = EtcdKVStore(
            [dead_endpoint, silent_endpoint, etcd_server.url.removeprefix("http://")],
            read_timeout=0.3,
            write_timeout=0.3,
            max_retries=0,
            on_request=lambda kind, seconds: calls.append(kind),
        )
        try:
            key = prefix.encode() + b"k"
            assert await kv.txn([Compare(key, 0)], [Put(key, b"v")]) is not None
            # The working endpoint is remembered: no more waiting on the silent one.
            started = time.monotonic()
            for _ in range(10):
                assert (await kv.get(key)).value == b"v"  # type: ignore[union-attr]
            await kv.scan(prefix.encode())
            await kv.revoke(await kv.grant_lease(1))
            assert time.monotonic() - started < 0.3
            assert calls == ["txn"] + ["get"] * 10 + ["list", "lease", "lease"]
        finally:
            await kv.aclose()


async def test_etcd_stop_and_restart(prefix: str) -> None:
    with trio.fail_after(TEST_TIMEOUT), EtcdServer() as server:
        kv = EtcdKVStore([server.url], read_timeout=1, write_timeout=1, max_retries=1)
        try:
            key = prefix.encode() + b"k"
            revision = await kv.txn([Compare(key, 0)], [Put(key, b"kept")])
            await trio.to_thread.run_sync(server.stop)
            with pytest.raises(Unavailable, match=server.url):
                await kv.get(key)
            with pytest.raises(Unavailable, match=server.url):
                await kv.txn([], [Put(key, b"lost")])
            await trio.to_thread.run_sync(server.start)
            entry = await kv.get(key)
            assert entry is not None
            assert (entry.value, entry.revision) == (b"kept", revision)
            assert await kv.txn([Compare(key, entry.revision)], [Put(key, b"new")]) is not None
            await trio.to_thread.run_sync(server.restart)
            assert (await kv.get(key)).value == b"new"  # type: ignore[union-attr]
        finally:
            await kv.aclose()


async def test_etcd_paused_server_times_out(prefix: str) -> None:
    with trio.fail_after(TEST_TIMEOUT), EtcdServer() as server:
        kv = EtcdKVStore([server.url], read_timeout=0.3, write_timeout=0.3, max_retries=0)
        try:
            key = prefix.encode() + b"k"
            await kv.txn([], [Put(key, b"v")])
            server.pause()
            with pytest.raises(Unavailable, match="no answer within"):
                await kv.get(key)
            server.resume()
            with trio.fail_after(10):
                while True:  # the connection cut by the timeout is replaced
                    try:
                        assert (await kv.get(key)).value == b"v"  # type: ignore[union-attr]
                        break
                    except Unavailable:
                        await trio.sleep(0.05)
        finally:
            await kv.aclose()


async def test_etcd_error_answers() -> None:
    """etcd's "unavailable" answers fail over; a rejected request is not retried."""
    with trio.fail_after(TEST_TIMEOUT):
        seen: list[str] = []

        def handler(request: httpx.Request) -> httpx.Response:
            seen.append(request.url.host)
            if request.url.host in ("sick", "also-sick"):
                message = "etcdserver: no leader"
                return httpx.Response(503, json={"error": message, "code": 14, "message": message})
            message = "etcdserver: too many operations in txn request"
            return httpx.Response(400, json={"error": message, "code": 3, "message": message})

        kv = EtcdKVStore(["sick:2379", "picky:2379"], max_retries=3,
                         transport=httpx.MockTransport(handler))
        try:
            with pytest.raises(JobServiceError, match="too many operations") as info:
                await kv.txn([], [Put(b"/k", b"v")])
            assert not isinstance(info.value, Unavailable)
            assert seen == ["sick", "picky"]
        finally:
            await kv.aclose()

        seen.clear()
        kv = EtcdKVStore(["sick", "also-sick"], max_retries=1,
                         transport=httpx.MockTransport(handler))
        try:
            with pytest.raises(Unavailable, match="no leader") as unavailable:
                await kv.get(b"/k")
            assert "http://sick, http://also-sick" in str(unavailable.value)
            assert seen == ["sick", "also-sick"] * 2
        finally:
            await kv.aclose()


class _LoseFirstTxnAnswer(httpx.AsyncBaseTransport):
    """Delivers the first txn request to etcd, then drops etcd's answer."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.dropped = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if request.url.path == "/v3/kv/txn" and not self.dropped:
            await response.aread()
            await response.aclose()
            self.dropped += 1
            raise httpx.ReadError("connection lost after sending", request=request)
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_etcd_txn_lost_answer_is_recognized(etcd_server: EtcdServer, prefix: str) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        transport = _LoseFirstTxnAnswer()
        kv = EtcdKVStore([etcd_server.url], max_retries=1, transport=transport)
        try:
            key, index = prefix.encode() + b"job", prefix.encode() + b"waiting"
            await kv.txn([], [Put(index, b"")])
            transport.dropped = 0
            entry = await kv.get(index)
            assert entry is not None
            # Applied by the first attempt; the retry's compares fail; still a success.
            revision = await kv.txn(
                [Compare(key, 0), Compare(index, entry.revision)],
                [Put(key, b"claimed"), Delete(index)],
            )
            assert transport.dropped == 1
            stored = await kv.get(key)
            assert stored is not None
            assert revision == stored.revision
            # A genuinely lost race is still reported as one.
            transport.dropped = 0
            assert await kv.txn([Compare(key, 0)], [Put(key, b"other")]) is None
            assert (await kv.get(key)).value == b"claimed"  # type: ignore[union-attr]
        finally:
            await kv.aclose()


def test_etcd_server_helper_lifecycle() -> None:
    server = EtcdServer(unsafe_no_fsync=True)
    assert not server.running
    assert "--unsafe-no-fsync" in server.command()
    assert "--unsafe-no-fsync" not in EtcdServer().command()
    with server:
        assert server.running
        pid = server.pid
        server.kill()
        assert not server.running
        server.start()
        assert server.running
        assert server.pid != pid
        with httpx.Client() as client:
            assert client.get(f"{server.url}/health").json()["health"] == "true"
    assert not server.running
    assert not server.base_dir.exists()


# ====================================================================== RocksDB only
async def test_rocks_second_store_on_same_dir(tmp_path: Path) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        path = tmp_path / "db"
        first = RocksKVStore(path)
        try:
            with pytest.raises(Unavailable, match="another coordinator"):
                RocksKVStore(path)
        finally:
            await first.aclose()


async def test_rocks_data_persists_across_reopen(tmp_path: Path) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        path = tmp_path / "db"
        store = RocksKVStore(path)
        revision = await put(store, b"/k", b"kept")
        await store.aclose()
        store = RocksKVStore(path)
        try:
            entry = await store.get(b"/k")
            assert entry is not None
            assert (entry.value, entry.revision) == (b"kept", revision)
            assert await put(store, b"/k2") > revision  # the revision counter survived too
        finally:
            await store.aclose()
