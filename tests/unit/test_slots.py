"""Pool slots shared in turn between jobs, and bandwidth paid for in the parent."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from alluxiojob.worker.slots import MIN_PIECE, FairSlots, Pacer, piece_size


async def test_a_job_that_arrives_later_gets_the_next_free_slot(
        autojump_clock: trio.testing.MockClock) -> None:
    slots = FairSlots(1)
    order: list[str] = []

    async def use(job: str, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        task_status.started()
        async with slots.slot(job):
            order.append(job)
            await trio.sleep(1)

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            for _ in range(4):
                await nursery.start(use, "busy")
            await trio.testing.wait_all_tasks_blocked()
            await nursery.start(use, "late")
    # FIFO would give "late" the last turn; taking turns, it waits for one "busy" shard.
    assert order == ["busy", "busy", "late", "busy", "busy"]


async def test_turns_alternate_between_jobs_with_waiters(
        autojump_clock: trio.testing.MockClock) -> None:
    slots = FairSlots(1)
    order: list[str] = []

    async def use(job: str) -> None:
        async with slots.slot(job):
            order.append(job)
            await trio.sleep(1)

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            for _ in range(6):
                nursery.start_soon(use, "a")
            await trio.testing.wait_all_tasks_blocked()
            for _ in range(3):
                nursery.start_soon(use, "b")
    assert order == ["a", "a", "b", "a", "b", "a", "b", "a", "a"]
    assert slots.free == 1
    assert slots.waiting == 0


async def test_a_cancelled_waiter_leaves_no_slot_behind() -> None:
    slots = FairSlots(1)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            held = trio.Event()
            done = trio.Event()

            async def holder() -> None:
                async with slots.slot("a"):
                    held.set()
                    await done.wait()

            nursery.start_soon(holder)
            await held.wait()
            with trio.move_on_after(1):
                async with slots.slot("b"):
                    pytest.fail("the slot was held")
            assert slots.waiting == 0
            done.set()
        assert slots.free == 1
        async with slots.slot("c"):
            assert slots.free == 0
    assert slots.free == 1


async def test_bandwidth_is_paid_before_the_bytes_and_shared_by_tasks(
        autojump_clock: trio.testing.MockClock) -> None:
    pacer = Pacer(rate=1000)
    start = trio.current_time()
    await pacer.pay(500)
    assert trio.current_time() - start == pytest.approx(0.5)
    async with trio.open_nursery() as nursery:
        for _ in range(4):
            nursery.start_soon(pacer.pay, 500)
    assert trio.current_time() - start == pytest.approx(2.5), "four halves after the first"
    await trio.sleep(10)  # idle time earns no credit for a burst
    before = trio.current_time()
    await pacer.pay(1000)
    assert trio.current_time() - before == pytest.approx(1.0)


def test_pieces_are_a_quarter_second_within_bounds() -> None:
    assert piece_size(1, 1 << 20) == MIN_PIECE
    assert piece_size(4 << 20, 256 << 20) == 1 << 20
    assert piece_size(1 << 40, 256 << 20) == 256 << 20


async def test_a_cancelled_payment_is_refunded(autojump_clock: trio.testing.MockClock) -> None:
    pacer = Pacer(rate=1000)
    start = trio.current_time()
    with trio.move_on_after(1):
        await pacer.pay(10_000)  # ten seconds' worth, abandoned after one
    await pacer.pay(1000)
    assert trio.current_time() - start == pytest.approx(2.0), "only its own second"
