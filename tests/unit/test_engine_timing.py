"""The job engine on trio's autojump clock: the real runner, reconciler, worker client and
worker session loop, over the in-memory store and in-process workers (no sockets, no
processes, no real sleeps). Retries, backoff, worker-down detection, task deadlines,
cancel, lease expiry and reclaims take milliseconds here."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from alluxiojob.config import Config, Keys, build_config
from alluxiojob.coordinator.housekeeping import Reconciler
from alluxiojob.coordinator.membership import Membership
from alluxiojob.coordinator.metrics import CoordinatorMetrics
from alluxiojob.coordinator.runner import JobRunner
from alluxiojob.coordinator.workers import WorkerClient, WorkerTimeout
from alluxiojob.core.job import JobOptions, JobType
from alluxiojob.core.progress import TaskStatus
from alluxiojob.core.reasons import Reason
from alluxiojob.core.states import JobState
from alluxiojob.protocol.codec import (
    FileEntry,
    FileResult,
    FileStatus,
    TaskBatch,
    TaskOp,
    TaskOptions,
    TaskResult,
)
from alluxiojob.security.token import ClusterToken
from alluxiojob.store.jobs import JobStore, OwnedJob
from alluxiojob.store.kv import Put
from alluxiojob.store.liveness import LeaseRegistration
from alluxiojob.testing.kv import MemoryKVStore
from alluxiojob.testing.worker import TEST_TOKEN, InProcessWorker

pytestmark = pytest.mark.timeout(60)
WALL_EPOCH = 1_700_000_000.0


def wall_clock() -> float:
    """The store's wall clock, advancing with trio's (autojump) clock."""
    return WALL_EPOCH + trio.current_time()


def coordinator_config(**properties: str) -> Config:
    return build_config({
        "alluxio.job.retry.backoff": "500ms",
        "alluxio.job.retry.max.attempts": "3",
        "alluxio.coordinator.failure.detection.timeout": "3s",
        **properties,
    })


@dataclass
class Script:
    """A worker's behaviour: per-file failures to give before succeeding, and a log."""

    failures: dict[str, list[Reason]] = field(default_factory=dict)
    hang: bool = False
    attempts: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    cancelled: int = 0
    served: int = 0

    async def run(self, batch: TaskBatch) -> TaskResult:
        try:
            if self.hang:
                await trio.sleep_forever()
            await trio.sleep(0.01)  # a little work
        except trio.Cancelled:
            self.cancelled += 1
            raise
        results = []
        for f in batch.files:
            self.attempts[f.path].append(trio.current_time())
            pending = self.failures.get(f.path)
            if pending:
                results.append(FileResult(f.path, FileStatus.FAILED, 0, pending.pop(0), "x"))
            else:
                results.append(FileResult(f.path, FileStatus.OK, f.length))
                self.served += 1
        return TaskResult(batch.task_id, tuple(results))


@dataclass
class Engine:
    store: JobStore
    kv: MemoryKVStore
    membership: Membership
    workers: dict[str, InProcessWorker]
    config: Config


async def until(condition: Callable[[], bool], step: float = 0.01) -> None:
    """Poll ``condition`` in trio time (the autojump clock makes this cost nothing)."""
    while not condition():  # noqa: ASYNC110 - the condition has no event to wait on
        await trio.sleep(step)


def make_tree(root: Path, count: int) -> list[str]:
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = root / f"f{i:03d}"
        path.write_bytes(b"x" * (i + 1))
        paths.append(f"file://{path}")
    return paths


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    """An autojump clock that jumps only after 50 ms of real idleness.

    The runner lists the UFS and the workers read files in threads. A clock that jumps
    the instant every task waits skips trio time while such a thread works (every
    periodic timer fires in turn), and the deadlines of a test pass before the thread
    returns. pytest-trio runs a test on the clock any of its fixtures returns.
    """
    return trio.testing.MockClock(autojump_threshold=0.05)


@pytest.fixture
async def engine_factory(tmp_path: Path) -> AsyncIterator[Callable[..., object]]:
    made: list[InProcessWorker] = []
    async with trio.open_nursery() as nursery:

        async def make(scripts: dict[str, Script], config: Config,
                       worker_properties: dict[str, str] | None = None) -> Engine:
            workers = {
                worker_id: InProcessWorker(worker_id, script.run,
                                           tmp_path / f"cache-{worker_id.replace(':', '-')}",
                                           worker_properties)
                for worker_id, script in scripts.items()
            }
            made.extend(workers.values())
            listing = tmp_path / "workers"
            listing.write_text("".join(f"{w}\n" for w in workers))

            def make_client(worker_id: str, on_down_change: Callable[[], None]) -> WorkerClient:
                return WorkerClient(
                    worker_id, worker_id, ClusterToken(TEST_TOKEN), "coordinator-test",
                    config[Keys.MAX_TASKS_PER_WORKER], config[Keys.FAILURE_DETECTION_TIMEOUT],
                    task_timeout=config[Keys.JOB_TASK_TIMEOUT],
                    connector=workers[worker_id].connector,
                    on_down_change=on_down_change,
                )

            membership = Membership(make_client, listing)
            await nursery.start(membership.run)
            kv = MemoryKVStore()
            return Engine(JobStore(kv, clock=wall_clock), kv, membership, workers, config)

        yield make
        nursery.cancel_scope.cancel()
    for worker in made:
        worker.close()


async def run_job(engine: Engine, path: Path, **options: object) -> OwnedJob:
    job, _ = await engine.store.submit(JobType.LOAD, f"file://{path}", "",
                                       JobOptions(**options), 100)  # type: ignore[arg-type]
    [owned] = await engine.store.claim_waiting("coordinator-test", 1)
    await JobRunner(owned, engine.store, engine.membership, engine.config).run()
    return await engine.store.get(job.id)


# ------------------------------------------------------------------------ retry and backoff


async def test_retries_back_off_and_then_succeed(
    autojump_clock: trio.testing.MockClock, engine_factory: Callable[..., object], tmp_path: Path
) -> None:
    files = make_tree(tmp_path / "data", 4)
    script = Script(failures={files[1]: [Reason.UFS_CHANGED, Reason.WORKER_RPC_FAILED]})
    engine = await engine_factory({"127.0.0.1:1": script}, coordinator_config())  # type: ignore[operator]
    with trio.fail_after(30):
        owned = await run_job(engine, tmp_path / "data")
    assert owned.job.state is JobState.SUCCEEDED, owned.job.error
    times = script.attempts[files[1]]
    assert len(times) == 3, "two retryable failures, then success"
    first, second = times[1] - times[0], times[2] - times[1]
    # backoff 500 ms, doubling, ±20% jitter; plus the scripted 10 ms of work and the
    # dispatch (a few ms of trio time at most)
    assert 0.4 <= first <= 0.6 + 0.05, first
    assert 0.8 <= second <= 1.2 + 0.05, second
    progress = await engine.store.get_progress(owned.job.id)
    assert progress.live.files_processed == 4
    assert progress.live.subtasks_failed == 2
    assert progress.live.files_failed == 0


async def test_attempts_are_bounded_and_the_reason_is_kept(
    autojump_clock: trio.testing.MockClock, engine_factory: Callable[..., object], tmp_path: Path
) -> None:
    files = make_tree(tmp_path / "data", 3)
    script = Script(failures={files[0]: [Reason.IO_ERROR] * 5,
                              files[2]: [Reason.PERMISSION_DENIED]})
    engine = await engine_factory({"127.0.0.1:1": script}, coordinator_config())  # type: ignore[operator]
    with trio.fail_after(30):
        owned = await run_job(engine, tmp_path / "data")
    assert owned.job.state is JobState.FAILED
    assert "2 files failed" in owned.job.error
    assert len(script.attempts[files[0]]) == 3, "alluxio.job.retry.max.attempts=3"
    assert len(script.attempts[files[2]]) == 1, "PERMISSION_DENIED is not retried"
    failures = {f.path: f.reason for f in await engine.store.list_failures(owned.job.id)}
    assert failures == {files[0]: Reason.IO_ERROR, files[2]: Reason.PERMISSION_DENIED}


# ------------------------------------------------------------------------ a worker goes down


async def test_a_dead_worker_hands_its_share_to_the_next_live_owner(
    autojump_clock: trio.testing.MockClock, engine_factory: Callable[..., object], tmp_path: Path
) -> None:
    make_tree(tmp_path / "data", 40)
    alive, dead = Script(), Script()
    engine = await engine_factory(  # type: ignore[operator]
        {"127.0.0.1:1": alive, "127.0.0.1:2": dead},
        coordinator_config(**{"alluxio.job.batch.size": "2"}))
    engine.workers["127.0.0.1:2"].kill()  # killed, and never restarted
    with trio.fail_after(60):
        owned = await run_job(engine, tmp_path / "data")
    assert owned.job.state is JobState.SUCCEEDED, owned.job.error
    assert alive.served == 40
    assert dead.served == 0
    client = engine.membership.client("127.0.0.1:2")
    assert client is not None
    assert client.down
    assert client.unreachable_since is not None
    assert engine.membership.placement().ring.workers == ("127.0.0.1:1",)
    # Each file has 3 attempts: had the dead worker kept its share after it was down
    # (retries fail at once against a worker known to be down), files would have failed.
    # (No bound on trio time here: the listing runs in a thread, and the autojump clock
    # moves on while it does.)
    progress = await engine.store.get_progress(owned.job.id)
    assert progress.live.files_failed == 0

    engine.workers["127.0.0.1:2"].start()
    with trio.fail_after(10):
        await until(lambda: not client.down)
    assert engine.membership.placement().ring.workers == ("127.0.0.1:1", "127.0.0.1:2")


# ------------------------------------------------------------------------ deadlines


async def test_the_worker_ends_a_task_at_its_deadline(
    autojump_clock: trio.testing.MockClock, engine_factory: Callable[..., object], tmp_path: Path
) -> None:
    script = Script(hang=True)
    engine = await engine_factory(  # type: ignore[operator]
        {"127.0.0.1:1": script}, coordinator_config(**{"alluxio.job.task.timeout": "1min"}),
        {"alluxio.job.task.timeout": "2s"})
    client = engine.membership.client("127.0.0.1:1")
    assert client is not None
    entry = FileEntry("file:///x", 1, 1)
    with trio.fail_after(10):
        started = trio.current_time()
        result = await client.call("job", TaskOp.LOAD, [entry], TaskOptions(), 5.0)
    assert trio.current_time() - started == pytest.approx(2.0, abs=0.05)
    [failed] = result.results
    assert failed.reason is Reason.TASK_TIMEOUT
    assert failed.reason.retryable
    assert "alluxio.job.task.timeout=2s" in failed.message
    assert script.cancelled == 1


async def test_a_silent_worker_cannot_hold_a_slot_for_ever(
    autojump_clock: trio.testing.MockClock, engine_factory: Callable[..., object], tmp_path: Path
) -> None:
    engine = await engine_factory(  # type: ignore[operator]
        {"127.0.0.1:1": Script(hang=True)},
        coordinator_config(**{"alluxio.job.task.timeout": "2s"}),
        {"alluxio.job.task.timeout": "1h"})  # the worker itself would wait an hour
    client = engine.membership.client("127.0.0.1:1")
    assert client is not None
    with trio.fail_after(30), pytest.raises(WorkerTimeout) as info:
        await client.call("job", TaskOp.LOAD, [FileEntry("file:///x", 1, 1)], TaskOptions(), 5.0)
    assert info.value.reason is Reason.TASK_TIMEOUT
    assert "did not answer a task in 7s" in str(info.value)


# ------------------------------------------------------------------------ stop


async def test_stopping_a_job_cancels_its_tasks_on_the_worker(
    autojump_clock: trio.testing.MockClock, engine_factory: Callable[..., object], tmp_path: Path
) -> None:
    make_tree(tmp_path / "data", 6)
    script = Script(hang=True)
    engine = await engine_factory({"127.0.0.1:1": script}, coordinator_config(  # type: ignore[operator]
        **{"alluxio.job.batch.size": "2"}))
    job, _ = await engine.store.submit(JobType.LOAD, f"file://{tmp_path / 'data'}", "",
                                       JobOptions(), 100)
    [owned] = await engine.store.claim_waiting("coordinator-test", 1)
    runner = JobRunner(owned, engine.store, engine.membership, engine.config)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            scope = trio.CancelScope()

            async def run() -> None:
                with scope:
                    await runner.run()

            nursery.start_soon(run)
            await until(lambda: runner.ledger.in_flight == 3)  # max.tasks.per.worker
            await engine.store.stop(JobType.LOAD, job.path)
            scope.cancel()  # what the REST API's stop does through the scheduler
        await until(lambda: script.cancelled == 3)  # the Cancel reached the worker's session
    records = runner.ledger.recent_tasks()
    assert [r.status for r in records] == [TaskStatus.CANCELLED] * 3


# ------------------------------------------------------------------------ leases and reclaims


async def test_lease_expiry_lets_a_peer_reclaim_the_job(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    kv = MemoryKVStore()
    store = JobStore(kv, clock=wall_clock)
    job, _ = await store.submit(JobType.LOAD, "file:///data", "", JobOptions(), 100)
    ttl, interval = 3.0, 0.5
    metrics = CoordinatorMetrics()
    requeued: list[float] = []
    scans = 0
    reclaim_orphans = store.reclaim_orphans

    async def counting(is_alive: Callable[[str], bool]) -> list[object]:
        nonlocal scans
        scans += 1
        return await reclaim_orphans(is_alive)  # type: ignore[return-value]

    store.reclaim_orphans = counting  # type: ignore[assignment,method-assign]
    dead_kv = kv.reopen()
    dead = LeaseRegistration(dead_kv, "/alluxio/coordinators/a", b"a", ttl)
    live = LeaseRegistration(kv.reopen(), "/alluxio/coordinators/b", b"b", ttl)
    reconciler = Reconciler(store, "b", interval, metrics,
                            lambda: requeued.append(trio.current_time()),
                            liveness=live, kv=kv, peers_prefix="/alluxio/coordinators/")
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            scope = trio.CancelScope()

            async def coordinator_a() -> None:
                with scope:
                    await dead.run()

            nursery.start_soon(coordinator_a)
            await nursery.start(live.run)
            await trio.sleep(0.1)
            [owned] = await store.claim_waiting("a", 1)
            await nursery.start(reconciler.run)
            await trio.sleep(5 * interval)
            assert (await store.get(job.id)).job.state is JobState.RUNNING
            scans_while_all_live = scans
            await trio.sleep(10 * interval)
            assert scans == scans_while_all_live, "no job scan while no peer disappears"

            # Coordinator a dies: its lease is no longer refreshed, nor revoked (a clean
            # stop revokes it; a crash cannot).
            await dead_kv.aclose()
            scope.cancel()
            died = trio.current_time()
            await until(lambda: bool(requeued))
            nursery.cancel_scope.cancel()
    waited = requeued[0] - died
    # Its key lasts until the lease ends (at most the TTL after the last refresh),
    # then one reconcile interval (±20%) at most.
    assert ttl * 2 / 3 <= waited <= ttl + interval * 1.2 + 0.01, waited
    back = (await store.get(job.id)).job
    assert back.state is JobState.WAITING
    assert back.owner == ""
    assert owned.job.claims == 1
    [claimed] = await store.claim_waiting("b", 1)
    assert claimed.job.claims == 2


async def test_a_restarted_coordinator_requeues_its_own_jobs_before_claiming(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = JobStore(MemoryKVStore(), clock=wall_clock)
    job, _ = await store.submit(JobType.LOAD, "file:///data", "", JobOptions(), 100)
    await store.claim_waiting("me", 1)
    woken: list[bool] = []
    reconciler = Reconciler(store, "me", 2.0, CoordinatorMetrics(), lambda: woken.append(True))
    async with trio.open_nursery() as nursery:
        await nursery.start(reconciler.run)
        assert (await store.get(job.id)).job.state is JobState.WAITING
        assert woken == [True]
        nursery.cancel_scope.cancel()


async def test_the_store_outage_is_retried_by_the_reconciler(
    autojump_clock: trio.testing.MockClock,
) -> None:
    kv = MemoryKVStore()
    store = JobStore(kv, clock=wall_clock)
    job, _ = await store.submit(JobType.LOAD, "file:///data", "", JobOptions(), 100)
    await store.claim_waiting("me", 1)
    kv.outage(5.0)
    reconciler = Reconciler(store, "me", 2.0, CoordinatorMetrics(), lambda: None)
    async with trio.open_nursery() as nursery:
        await nursery.start(reconciler.run)  # starts even though the store is down
        await trio.sleep(4.0)
        assert kv.calls > 1, "tried while the store was down"
        await trio.sleep(4.0)
        nursery.cancel_scope.cancel()
    assert (await store.get(job.id)).job.state is JobState.WAITING


def test_memory_leases_expire_on_the_trio_clock() -> None:
    async def main() -> None:
        kv = MemoryKVStore()
        lease = await kv.grant_lease(2.0)
        await kv.txn([], [Put(b"k", b"v", lease)])
        await trio.sleep(1.5)
        assert await kv.keep_alive(lease)
        await trio.sleep(1.5)
        assert await kv.get(b"k") is not None, "refreshed at 1.5 s: lives to 3.5 s"
        await trio.sleep(2.5)
        assert await kv.get(b"k") is None
        assert not await kv.keep_alive(lease)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


# ------------------------------------------------------------------------ fencing of tasks


async def test_a_runner_paused_past_its_claim_sends_no_task_until_it_confirms_the_job(
    autojump_clock: trio.testing.MockClock, engine_factory: Callable[..., object], tmp_path: Path
) -> None:
    """A coordinator paused past its lease (here: trio's clock jumps 10 s at once) may
    have lost its job to a peer. Before it sends another task it confirms the claim with
    a fenced write, which tells it the job is gone; it sends nothing after the pause."""
    make_tree(tmp_path / "data", 60)
    script = Script()
    engine: Engine = await engine_factory(  # type: ignore[operator]
        {"127.0.0.1:1": script},
        coordinator_config(**{"alluxio.coordinator.job.meta.store.type": "ETCD"}))
    job, _ = await engine.store.submit(JobType.LOAD, f"file://{tmp_path / 'data'}", "",
                                       JobOptions(batch_size=1), 100)
    [owned] = await engine.store.claim_waiting("coordinator-a", 1)
    runner = JobRunner(owned, engine.store, engine.membership, engine.config)
    client = engine.membership.client("127.0.0.1:1")
    assert client is not None
    sent: list[float] = []
    call = client.call

    async def recording_call(*args: Any, **kwargs: Any) -> TaskResult:
        sent.append(trio.current_time())
        return await call(*args, **kwargs)

    client.call = recording_call  # type: ignore[method-assign]
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(runner.run)
            await until(lambda: script.served >= 5)
            # Meanwhile its lease ran out: a peer took the job over.
            await engine.store.reclaim_orphans(lambda owner: owner != "coordinator-a")
            [taken] = await engine.store.claim_waiting("coordinator-b", 1)
            autojump_clock.jump(10)  # the pause ends now, 10 s later
            resumed = trio.current_time()
    assert taken.job.id == job.id
    assert [t for t in sent if t >= resumed] == [], "no task sent after the pause"
    assert script.served < 60
    assert (await engine.store.get(job.id)).job.owner == "coordinator-b"
