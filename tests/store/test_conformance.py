"""One conformance suite for both job-store backends: RocksDB and a real etcd.

Tests taking the ``kv``/``jobs``/``backend`` fixtures run once per backend. The etcd
server is shared by the session, so each test works under its own ``prefix``. Tests
that stop or pause etcd start their own server.
"""

from __future__ import annotations

import socket
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
from alluxiojob.core.reasons import Reason
from alluxiojob.core.states import JobEvent, JobState
from alluxiojob.store.etcd import EtcdKVStore
from alluxiojob.store.job_queue import claim_order
from alluxiojob.store.jobs import (
    FailureRecord,
    JobStore,
    OwnedJob,
    SubmitOutcome,
)
from alluxiojob.store.kv import Compare, Delete, KVStore, Put
from alluxiojob.store.rocks import RocksKVStore
from alluxiojob.testing.etcd import EtcdCluster, EtcdServer
from alluxiojob.testing.ports import free_port
from tests.store.tcp_proxy import TcpProxy

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


async def test_txn_each_applies_each_independently(kv: KVStore, prefix: str) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        base = prefix.encode()
        held = await put(kv, base + b"held", b"1")
        results = await kv.txn_each([
            ([Compare(base + b"held", held)], [Put(base + b"a", b"a"), Delete(base + b"held")]),
            ([Compare(base + b"missing", 7)], [Put(base + b"b", b"b")]),  # fails alone
            ([Compare(base + b"c", 0)], [Put(base + b"c", b"c")]),
        ])
        assert results[1] is None
        assert results[0] is not None
        assert results[0] == results[2]  # one atomic step, one revision
        assert results[0] > held
        assert [e.key for e in await kv.scan(base)] == [base + b"a", base + b"c"]
        assert (await kv.get(base + b"a")).revision == results[0]  # type: ignore[union-attr]
        # Compares see the state before the batch: the second txn does not see the first.
        again = await kv.txn_each([
            ([Compare(base + b"c", results[0])], [Put(base + b"d", b"d")]),
            ([Compare(base + b"d", 0)], [Put(base + b"e", b"e")]),
        ])
        assert None not in again
        assert await kv.txn_each([]) == []
        assert await kv.txn_each([([Compare(base + b"zz", 3)], [Put(base + b"zz", b"")])]) == [
            None
        ]


async def test_probe_of_a_healthy_store(kv: KVStore) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        await kv.probe()


class CountingKV:
    """A real store, counting the round trips made through it."""

    def __init__(self, inner: KVStore) -> None:
        self.inner = inner
        self.supports_leases = inner.supports_leases
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> object:
        method = getattr(self.inner, name)

        async def counted(*args: object, **kwargs: object) -> object:
            self.calls.append(name)
            return await method(*args, **kwargs)

        return counted


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


async def test_waiting_capacity_is_exact_under_concurrent_submissions(
    backend: Backend, backend_kind: tuple[str, EtcdServer | None], prefix: str
) -> None:
    """64 submitters at once against a capacity of 50: exactly 50 get in."""
    with trio.fail_after(TEST_TIMEOUT * 2):
        clients = 4 if backend_kind[0] == "etcd" else 1  # RocksDB: one process only
        stores = [JobStore(backend.open(), prefix=prefix) for _ in range(clients)]
        outcomes: list[str] = []

        async def submitter(n: int) -> None:
            try:
                await submit(stores[n % clients], f"/concurrent/{n}", capacity=50)
                outcomes.append("created")
            except CapacityExceeded as exc:
                outcomes.append("full" if "the waiting queue is full" in str(exc) else str(exc))

        async with trio.open_nursery() as nursery:
            for n in range(64):
                nursery.start_soon(submitter, n)
        assert outcomes.count("created") == 50
        assert outcomes.count("full") == 14
        assert await stores[0].waiting_count() == 50
        assert len(await stores[0].list_jobs()) == 50


async def test_claim_is_one_scan_and_one_transaction(kv: KVStore, prefix: str) -> None:
    """The waiting entry carries the job record: no read of each job before claiming."""
    with trio.fail_after(TEST_TIMEOUT):
        setup = JobStore(kv, prefix=prefix)
        ids = [(await submit(setup, f"/p{i}"))[0] for i in range(10)]
        counting = CountingKV(kv)
        claimed = await JobStore(counting, prefix=prefix).claim_waiting(  # type: ignore[arg-type]
            "coord-a", 10
        )
        assert [o.job.id for o in claimed] == ids
        assert counting.calls == ["scan", "txn_each"]
        for owned in claimed:  # the revision handed out is the one that fences the owner
            await setup.save_progress(owned, Progress())


async def test_old_style_and_orphaned_waiting_entries(kv: KVStore, prefix: str) -> None:
    """Entries without the record (older versions) are claimed; entries whose job is
    gone are dropped instead of blocking the head of the queue."""
    with trio.fail_after(TEST_TIMEOUT):
        jobs = JobStore(kv, prefix=prefix)
        base = prefix.encode()
        old_id, _ = await submit(jobs, "/old")
        old = (await jobs.get(old_id)).job
        waiting_key = base + f"waiting/{old.seq:020d}/{old.id}".encode()
        job_key = base + f"job/{old_id}".encode()
        record = (await kv.get(job_key)).value  # type: ignore[union-attr]
        await kv.txn([], [Put(job_key, record), Put(waiting_key, b"")])  # as before
        await kv.txn([], [Put(base + b"waiting/00000000000000000001/gone", b"")])
        new_id, _ = await submit(jobs, "/new")
        claimed = await jobs.claim_waiting("coord-a", 10)
        assert [o.job.id for o in claimed] == [old_id, new_id]
        assert await jobs.waiting_count() == 0
        await jobs.save_progress(claimed[0], Progress())  # fenced on the right revision


async def test_unreadable_record_is_a_store_error(kv: KVStore, prefix: str) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        jobs = JobStore(kv, prefix=prefix)
        job_id, _ = await submit(jobs, "/data")
        await kv.txn([], [Put(prefix.encode() + f"job/{job_id}".encode(), b"\xc1garbage")])
        with pytest.raises(JobServiceError, match="unreadable") as info:
            await jobs.get(job_id)
        assert type(info.value) is JobServiceError  # a 500, not a bad argument


def test_claim_order_spreads_without_starving() -> None:
    keys = [b"waiting/%020d/job%d" % (i, i) for i in range(64)]
    assert claim_order(keys, "coord-a", 0) == list(range(64))
    orders = {owner: claim_order(keys, owner, 16) for owner in ("a:1", "b:1", "c:1")}
    for order in orders.values():
        assert sorted(order) == list(range(64))
        for rank, position in enumerate(order):
            # Nothing 16 or more positions younger goes before this entry.
            assert all(later - position < 16 for later in order[:rank])
    firsts = [set(order[:8]) for order in orders.values()]
    assert len(firsts[0] & firsts[1] & firsts[2]) < 8  # peers prefer different entries


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
            FailureRecord("/data/z/ü.bin", Reason.UFS_NOT_FOUND, "gone", 1.5),
            FailureRecord("/data/a", Reason.IO_ERROR, "read error", 2.0),
            FailureRecord("/data/m", Reason.TASK_TIMEOUT, "slow", 3.0),
        ]
        await jobs.save_progress(owned, progress, failures)
        assert await jobs.get_progress(job_id) == progress
        listed = await jobs.list_failures(job_id)
        assert listed == sorted(failures, key=lambda f: f.path.encode())
        assert len(await jobs.list_failures(job_id, limit=2)) == 2

        await jobs.save_progress(owned, progress, cleared=["/data/a"])
        assert [f.path for f in await jobs.list_failures(job_id)] == ["/data/m", "/data/z/ü.bin"]


async def test_failure_of_a_name_that_is_not_utf8(jobs: JobStore) -> None:
    """A file name that is not UTF-8 (a lone surrogate after decoding) is stored as is."""
    with trio.fail_after(TEST_TIMEOUT):
        job_id, _ = await submit(jobs, "/data")
        owned = await claim_one(jobs, "coord-a")
        odd = FailureRecord("/data/bad-\udcff.bin", Reason.INVALID_PATH, "not UTF-8", 1.0)
        await jobs.save_progress(owned, Progress(), [odd])
        assert await jobs.list_failures(job_id) == [odd]
        await jobs.save_progress(owned, Progress(), cleared=[odd.path])
        assert await jobs.list_failures(job_id) == []


async def test_many_failures_in_one_save(jobs: JobStore) -> None:
    """alluxio.job.failure.list.max (1000) failures may be saved at once; etcd allows
    only 128 operations per transaction by default."""
    with trio.fail_after(TEST_TIMEOUT):
        job_id, _ = await submit(jobs, "/data")
        owned = await claim_one(jobs, "coord-a")
        failures = [FailureRecord(f"/data/f{i:04d}", Reason.IO_ERROR, "x" * 200, 1.0)
                    for i in range(1000)]
        progress = Progress(committed=Counters(files_failed=1000))
        await jobs.save_progress(owned, progress, failures)
        assert await jobs.get_progress(job_id) == progress
        assert [f.path for f in await jobs.list_failures(job_id)] == [f.path for f in failures]
        cleared = [f.path for f in failures[:400]]
        await jobs.save_progress(owned, progress, cleared=cleared)
        assert len(await jobs.list_failures(job_id)) == 600
        # A path named twice (etcd rejects a key twice in one txn): the last word wins.
        again = FailureRecord("/data/f0999", Reason.TASK_TIMEOUT, "again", 2.0)
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
            [FailureRecord("/data/bad", Reason.IO_ERROR, "boom", 1.0)],
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
                owned, Progress(), [FailureRecord(path + "/x", Reason.IO_ERROR, "boom", now[0])]
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
        "alluxio.etcd.endpoints": "127.0.0.1:2379, http://10.0.0.2:2379/, https://etcd-3",
        "alluxio.coordinator.scheduler.etcd.read.timeout": "2s",
        "alluxio.coordinator.scheduler.etcd.write.timeout": "500ms",
        "alluxio.coordinator.scheduler.etcd.max.retries": "4",
    })
    store = EtcdKVStore.from_config(config)
    assert store.endpoints == (
        "http://127.0.0.1:2379", "http://10.0.0.2:2379", "https://etcd-3:2379"
    )
    assert (store.read_timeout, store.write_timeout, store.max_retries) == (2.0, 0.5, 4)
    job_etcd = config.with_overrides(
        {"alluxio.coordinator.scheduler.job.etcd.endpoints": "jobs-etcd:2379"}
    )
    assert EtcdKVStore.from_config(job_etcd).endpoints == ("http://jobs-etcd:2379",)
    with pytest.raises(InvalidArgument, match="alluxio.etcd.endpoints"):
        EtcdKVStore([])
    for bad in ("ftp://host:2379", "http://host:99999", "http://host:2379/v3"):
        with pytest.raises(InvalidArgument, match="invalid etcd endpoint"):
            EtcdKVStore([bad])


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
        assert await etcd_kv.get(key) is not None
        while True:  # until the lease expires and takes the key with it
            if await etcd_kv.get(key) is None:
                break
            await trio.sleep(0.1)
        assert await etcd_kv.keep_alive(lease) is False


async def test_etcd_unreachable_raises_unavailable(dead_endpoint: str) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        kv = EtcdKVStore([dead_endpoint], read_timeout=0.5, write_timeout=0.5, max_retries=2)
        try:
            with pytest.raises(Unavailable) as info:
                await kv.get(b"/k")
            assert f"http://{dead_endpoint}" in str(info.value)
            assert "Connection refused" in str(info.value)
            with pytest.raises(Unavailable):
                await kv.txn([Compare(b"/k", 0)], [Put(b"/k", b"v")])
            with pytest.raises(Unavailable):
                await kv.grant_lease(5)
            with pytest.raises(Unavailable):
                await kv.probe()
        finally:
            await kv.aclose()


async def test_etcd_silent_endpoint_times_out(silent_endpoint: str) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        kv = EtcdKVStore([silent_endpoint], read_timeout=0.2, write_timeout=0.3, max_retries=1)
        try:
            with pytest.raises(Unavailable) as info:
                await kv.scan(b"/k")
            assert silent_endpoint in str(info.value)
            assert "no answer within 0.2s" in str(info.value)
        finally:
            await kv.aclose()


async def test_etcd_failover(
    etcd_server: EtcdServer, dead_endpoint: str, silent_endpoint: str, prefix: str
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        calls: list[str] = []
        kv = EtcdKVStore(
            [dead_endpoint, silent_endpoint, etcd_server.url.removeprefix("http://")],
            read_timeout=2,
            write_timeout=2,
            max_retries=0,
            on_request=lambda kind, seconds: calls.append(kind),
        )
        try:
            key = prefix.encode() + b"k"
            assert await kv.txn([Compare(key, 0)], [Put(key, b"v")]) is not None
            # The working member is remembered: 13 more calls would wait 2 s each on the
            # silent one otherwise.
            with trio.fail_after(5):
                for _ in range(10):
                    assert (await kv.get(key)).value == b"v"  # type: ignore[union-attr]
                await kv.scan(prefix.encode())
                await kv.revoke(await kv.grant_lease(1))
            assert calls == ["txn"] + ["get"] * 10 + ["list", "lease", "lease"]
        finally:
            await kv.aclose()


async def test_etcd_cluster_member_goes_away(prefix: str) -> None:
    """Three real members: the one in use is killed, then a second one (no quorum)."""
    with trio.fail_after(TEST_TIMEOUT):
        cluster = EtcdCluster()
        await trio.to_thread.run_sync(cluster.start)
        kv = EtcdKVStore(cluster.urls, read_timeout=1, write_timeout=1, max_retries=2)
        jobs = JobStore(kv, prefix=prefix)
        try:
            first, _ = await submit(jobs, "/before")
            cluster.members[0].kill()  # the member every call went to so far
            second, _ = await submit(jobs, "/after")
            assert [o.job.id for o in await jobs.claim_waiting("coord-a", 10)] == [
                first, second
            ]
            cluster.members[1].kill()  # one member left: no quorum, no answers
            with pytest.raises(Unavailable) as info:
                await submit(jobs, "/no-quorum")
            assert cluster.members[2].url in str(info.value)
            await trio.to_thread.run_sync(cluster.members[0].start)  # quorum again
            third, _ = await submit(jobs, "/healed")
            assert (await jobs.get(third)).job.state is JobState.WAITING
            assert (await jobs.get(first)).job.owner == "coord-a"
        finally:
            await kv.aclose()
            await trio.to_thread.run_sync(cluster.close)


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


async def test_etcd_cancelled_call_returns_at_once_and_closes_cleanly(prefix: str) -> None:
    """trio cancellation ends the wait even though the gRPC call blocks a thread, and
    closing the client under that abandoned call leaves no thread exception behind."""
    with trio.fail_after(TEST_TIMEOUT), EtcdServer() as server:
        kv = EtcdKVStore([server.url], read_timeout=20, write_timeout=20, max_retries=0)
        key = prefix.encode() + b"k"
        try:
            await kv.txn([], [Put(key, b"v")])
            server.pause()
            with trio.fail_after(5):  # not the 20 s read timeout
                with trio.move_on_after(0.2) as scope:
                    await kv.get(key)
                assert scope.cancelled_caught
                with trio.move_on_after(0.2):
                    await kv.txn([Compare(key, 0)], [Put(key, b"w")])
        finally:
            await kv.aclose()  # with two calls still in flight in their threads
            server.resume()
        with pytest.raises(Unavailable, match="closed"):
            await kv.get(key)


async def test_etcd_rejected_request_is_not_retried_as_unavailable(
    etcd_kv: EtcdKVStore, prefix: str
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        base = prefix.encode()
        too_many = [Put(base + b"%d" % i, b"x") for i in range(200)]  # etcd allows 128
        with pytest.raises(JobServiceError, match="too many operations") as info:
            await etcd_kv.txn([], too_many)
        assert not isinstance(info.value, Unavailable)
        assert await etcd_kv.scan(base) == []


async def test_etcd_txn_lost_answer_is_recognized(etcd_server: EtcdServer, prefix: str) -> None:
    """etcd applies a claim, the connection dies before its answer arrives, and the retry's
    compares fail: the store still reports the claim as made, and only once."""
    with trio.fail_after(TEST_TIMEOUT):
        host, port = etcd_server.url.removeprefix("http://").split(":")
        with TcpProxy(host, int(port)) as proxy:
            kv = EtcdKVStore([proxy.url], read_timeout=5, write_timeout=5, max_retries=1)
            direct = EtcdKVStore([etcd_server.url], read_timeout=5, write_timeout=5)
            try:
                key, index = prefix.encode() + b"job", prefix.encode() + b"waiting"
                await kv.txn([], [Put(index, b"")])
                entry = await kv.get(index)
                assert entry is not None

                async def cut_once_applied() -> None:
                    while True:  # until etcd has applied the claim
                        if await direct.get(key) is not None:
                            break
                        await trio.sleep(0.01)
                    proxy.cut()

                proxy.hold_answers()
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(cut_once_applied)
                    revision = await kv.txn(
                        [Compare(key, 0), Compare(index, entry.revision)],
                        [Put(key, b"claimed"), Delete(index)],
                    )
                assert proxy.held_bytes > 0  # an answer really was lost
                stored = await direct.get(key)
                assert stored is not None
                assert revision == stored.revision
                assert await direct.get(index) is None
                # A genuinely lost race is still reported as one.
                assert await kv.txn([Compare(key, 0)], [Put(key, b"other")]) is None
                assert (await kv.get(key)).value == b"claimed"  # type: ignore[union-attr]
            finally:
                await kv.aclose()
                await direct.aclose()


async def test_etcd_probe(etcd_kv: EtcdKVStore) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        await etcd_kv.probe()  # healthy: no error


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
