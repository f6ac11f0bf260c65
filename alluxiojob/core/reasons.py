"""Why a file failed: the one vocabulary shared by workers, runner, store, API and CLI.

A reason travels in task results, is stored with a job's failures and is shown by
``--file-status FAILURE``. Each one knows whether trying the file again can help: the
runner retries retryable reasons (with backoff, up to ``alluxio.job.retry.max.attempts``)
and fails the others at once.
"""

from __future__ import annotations

import enum


class Reason(enum.StrEnum):
    UFS_NOT_FOUND = "UFS_NOT_FOUND"  # the source vanished after listing
    PERMISSION_DENIED = "PERMISSION_DENIED"  # the UFS or the cache refused access
    INVALID_PATH = "INVALID_PATH"  # a name that cannot be cached or sent
    CACHE_FULL = "CACHE_FULL"  # no room, even after evicting what no running job needs
    EXISTS = "EXISTS"  # COPY/MOVE: the destination exists and --overwrite was not given
    UFS_CHANGED = "UFS_CHANGED"  # the source changed while it was read
    UFS_THROTTLED = "UFS_THROTTLED"  # the object store kept answering "slow down"
    IO_ERROR = "IO_ERROR"  # any other read or write error
    WORKER_LOST = "WORKER_LOST"  # the connection dropped while the task ran
    WORKER_NOT_REACHABLE = "WORKER_NOT_REACHABLE"  # no connection to the worker
    WORKER_RPC_FAILED = "WORKER_RPC_FAILED"  # the worker answered, but not with a result
    TASK_TIMEOUT = "TASK_TIMEOUT"  # the task passed alluxio.job.task.timeout
    CANCELLED = "CANCELLED"  # the job was stopped
    UNSUPPORTED = "UNSUPPORTED"  # the worker does not know the operation

    @property
    def retryable(self) -> bool:
        return self in _RETRYABLE

    @classmethod
    def parse(cls, text: str) -> Reason:
        """The reason named ``text``; raises ``ValueError`` for a name not in the list."""
        return cls(text)


_RETRYABLE = frozenset({
    Reason.UFS_CHANGED,
    Reason.UFS_THROTTLED,
    Reason.IO_ERROR,
    Reason.WORKER_LOST,
    Reason.WORKER_NOT_REACHABLE,
    Reason.WORKER_RPC_FAILED,
    Reason.TASK_TIMEOUT,
})
