"""A pool process that dies while the worker warms its pool up never stops the worker."""

from __future__ import annotations

import os
import signal

import trio
import trio_parallel

from alluxiojob.worker.pool import ExecutorStats, Pool


def _die() -> None:
    """Run in a pool process: what a kill -9 during its start looks like to the parent."""
    os.kill(os.getpid(), signal.SIGKILL)


def test_a_pool_process_killed_while_it_starts_is_logged_not_raised() -> None:
    async def main() -> int:
        with trio.fail_after(60):
            async with trio_parallel.cache_scope(idle_timeout=60.0, grace_period=2.0):
                pool = Pool(2, ExecutorStats())
                await pool.warm_up(_die)  # before the fix: BrokenWorkerError, the worker gone
                # The pool still runs work: the next call starts a fresh process.
                return await trio_parallel.run_sync(os.getpid, limiter=pool.limiter)

    assert trio.run(main) != os.getpid()
