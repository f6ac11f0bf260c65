"""A progress request that waits (``coordinator/waiting.py``): it answers on the job's
next state change, after its cap, and at once past the number of waiting requests.

A real ``JobStore`` over the in-memory KV store, on trio's virtual clock: the waits are
read on that clock, never on the wall.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing

from alluxiojob.coordinator.waiting import WAIT_TICK, StateWaiter, wait_param
from alluxiojob.core.errors import InvalidArgument
from alluxiojob.core.job import JobOptions, JobRecord, JobType
from alluxiojob.core.states import JobEvent, JobState
from alluxiojob.store.job_keys import OwnedJob
from alluxiojob.store.jobs import JobStore
from alluxiojob.testing.kv import MemoryKVStore


@pytest.fixture
def clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


async def _running(store: JobStore) -> OwnedJob:
    await store.submit(JobType.LOAD, "file:///data", "", JobOptions(), 100)
    [owned] = await store.claim_waiting("me", 1)
    assert owned.job.state is JobState.RUNNING
    return owned


async def test_a_waiting_request_answers_when_the_job_ends(
        clock: trio.testing.MockClock) -> None:
    store = JobStore(MemoryKVStore())
    owned = await _running(store)
    waiter = StateWaiter(store, cap=60.0)
    answers: list[JobRecord] = []

    async def ask() -> None:
        answers.append(await waiter.until_changed(owned.job, 60.0))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ask)
        await trio.sleep(10.0)  # virtual: the request waits through many ticks
        assert answers == []
        assert waiter.waiting == 1
        ended = trio.current_time()
        await store.transition(owned, JobEvent.SUCCEED)
    assert [job.state for job in answers] == [JobState.SUCCEEDED]
    assert trio.current_time() - ended <= WAIT_TICK
    assert waiter.waiting == 0


async def test_a_state_change_made_here_wakes_the_request_without_a_tick(
        clock: trio.testing.MockClock) -> None:
    """The job's write through this store wakes the request: no virtual time passes
    between the change and the answer, for each change (RUNNING, then SUCCEEDED)."""
    store = JobStore(MemoryKVStore())
    await store.submit(JobType.LOAD, "file:///data", "", JobOptions(), 100)
    [waiting] = await store.list_jobs()
    waiter = StateWaiter(store, cap=60.0)
    answers: list[tuple[JobState, float]] = []

    async def ask(job: JobRecord) -> None:
        answer = await waiter.until_changed(job, 60.0)
        answers.append((answer.state, trio.current_time()))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ask, waiting)
        await trio.sleep(1.0)
        claimed_at = trio.current_time()
        [owned] = await store.claim_waiting("me", 1)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ask, owned.job)
        await trio.sleep(1.0)
        ended_at = trio.current_time()
        await store.transition(owned, JobEvent.SUCCEED)
    assert answers == [(JobState.RUNNING, claimed_at), (JobState.SUCCEEDED, ended_at)]


async def test_a_change_by_another_store_is_read_on_the_tick(
        clock: trio.testing.MockClock) -> None:
    """Another coordinator's write (another store over the same KV) wakes nothing here:
    the request reads the record on its tick and answers within one."""
    kv = MemoryKVStore()
    here, there = JobStore(kv), JobStore(kv)
    owned = await _running(there)
    waiter = StateWaiter(here, cap=60.0)
    answers: list[JobRecord] = []

    async def ask() -> None:
        answers.append(await waiter.until_changed(owned.job, 60.0))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ask)
        await trio.sleep(1.0)
        ended = trio.current_time()
        await there.transition(owned, JobEvent.FAIL, error="boom")
    assert [(job.state, job.error) for job in answers] == [(JobState.FAILED, "boom")]
    assert 0 < trio.current_time() - ended <= WAIT_TICK


async def test_a_waiting_request_answers_after_its_cap(clock: trio.testing.MockClock) -> None:
    store = JobStore(MemoryKVStore())
    owned = await _running(store)
    waiter = StateWaiter(store, cap=1.0)
    asked = trio.current_time()
    job = await waiter.until_changed(owned.job, 3600.0)
    assert job.state is JobState.RUNNING
    assert 1.0 <= trio.current_time() - asked <= 1.0 + WAIT_TICK
    # A shorter wait than the cap is kept.
    asked = trio.current_time()
    await waiter.until_changed(owned.job, 0.25)
    assert trio.current_time() - asked <= 0.25 + WAIT_TICK


async def test_past_the_limit_and_for_a_settled_job_it_answers_at_once(
        clock: trio.testing.MockClock) -> None:
    store = JobStore(MemoryKVStore())
    owned = await _running(store)
    waiter = StateWaiter(store, cap=60.0, limit=1)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter.until_changed, owned.job, 60.0)
        await trio.testing.wait_all_tasks_blocked()
        assert waiter.waiting == 1
        asked = trio.current_time()
        job = await waiter.until_changed(owned.job, 60.0)
        assert job.state is JobState.RUNNING
        assert trio.current_time() == asked
        nursery.cancel_scope.cancel()
    assert waiter.waiting == 0
    settled = (await store.transition(owned, JobEvent.SUCCEED)).job
    asked = trio.current_time()
    assert await waiter.until_changed(settled, 60.0) is settled
    assert trio.current_time() == asked


@pytest.mark.parametrize("raw", ["soon", "-1", "nan", "-inf", ["1"]])
def test_a_bad_wait_is_named(raw: object) -> None:
    with pytest.raises(InvalidArgument, match="wait must be a number of seconds"):
        wait_param({"wait": raw})


def test_wait_is_seconds_and_absent_is_none() -> None:
    assert wait_param({}) == 0.0
    assert wait_param({"wait": ""}) == 0.0
    assert wait_param({"wait": "0.5"}) == 0.5
    assert wait_param({"wait": "1e400"}) == float("inf")  # a JSON number; the cap bounds it
