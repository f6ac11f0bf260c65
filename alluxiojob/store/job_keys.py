"""The job store's key layout: where each record of a job lives, and its codecs.

Key layout under the job prefix (``alluxio.coordinator.scheduler.job.etcd.path``):

==============================  ==========================================================
``job/<uuid>``                  msgpack ``JobRecord``
``key/<identity>``              uuid of the current job for (type, path)
``waiting/<seq>/<uuid>``        FIFO index of WAITING jobs (seq: submit time, ns); its
                                value is the job record written in the same transaction
``meta/waiting-added``          rewritten by every transaction that adds to the index
``progress/<uuid>``             msgpack ``Progress``: counters and the resume checkpoint
``failures/<uuid>/<path>``      msgpack ``{reason, message, time}``, bounded per job
==============================  ==========================================================

A sharded job's ``shard/`` and ``shardq/`` keys are described in ``store/shards.py``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from alluxiojob.core.errors import JobServiceError
from alluxiojob.core.job import JobRecord
from alluxiojob.core.progress import FailureRecord, Progress
from alluxiojob.store.kv import Delete, Entry, Op, Put
from alluxiojob.store.records import pack_record, unpack_record

MAX_TXN_OPS = 100  # below etcd's default --max-txn-ops of 128


@dataclass(frozen=True)
class OwnedJob:
    """A job and the revision its owner's next write must compare against."""

    job: JobRecord
    revision: int


class JobKeys:
    """The keys of every job record under one prefix."""

    def __init__(self, prefix: str) -> None:
        self._prefix = prefix.encode()

    def k(self, *parts: str) -> bytes:
        return self._prefix + "/".join(parts).encode()

    def job(self, job_id: str) -> bytes:
        return self.k("job", job_id)

    def identity(self, identity: str) -> bytes:
        return self.k("key", identity)

    def waiting(self, job: JobRecord) -> bytes:
        return self.k("waiting", f"{job.seq:020d}", job.id)

    def added(self) -> bytes:
        return self.k("meta", "waiting-added")

    def progress(self, job_id: str) -> bytes:
        return self.k("progress", job_id)

    def failures(self, job_id: str) -> bytes:
        return self.k("failures", job_id, "")

    def enqueue(self, job: JobRecord, packed: bytes) -> list[Op]:
        """The puts that (re)queue ``job`` whose record is ``packed``: its record, its
        queue entry holding the same record, and the mark of an addition to the queue."""
        return [
            Put(self.job(job.id), packed),
            Put(self.waiting(job), packed),
            Put(self.added(), job.id.encode()),
        ]

    def shard_deletes(self, job_id: str) -> list[Op]:
        """A job's shard records and queue entries (``store/shards.py``)."""
        return [Delete(self.k("shard", job_id, ""), prefix=True),
                Delete(self.k("shardq", job_id, ""), prefix=True)]

    def failure_chunks(self, job_id: str, failures: Iterable[FailureRecord],
                       cleared: Iterable[str] = ()) -> list[list[Op]]:
        """The writes of new and resolved failures, in chunks a transaction takes with
        one more op; the last chunk (always there, maybe empty) is for that op."""
        changes: dict[bytes, Op] = {}
        for failure in failures:
            key = self.failures(job_id) + path_bytes(failure.path)
            changes[key] = Put(
                key,
                pack_record(
                    {"reason": failure.reason.value, "message": failure.message,
                     "time": failure.time}
                ),
            )
        for path in cleared:
            key = self.failures(job_id) + path_bytes(path)
            changes[key] = Delete(key)
        ops = list(changes.values())
        size = MAX_TXN_OPS - 1
        return [ops[i:i + size] for i in range(0, len(ops), size)] or [[]]


def decode_job(entry: Entry) -> JobRecord:
    try:
        return JobRecord.from_wire(unpack_record(entry.value))
    except Exception as exc:
        raise JobServiceError(
            f"the job record at {entry.key!r} is unreadable: {exc}"
        ) from None


def pack_progress(owned: OwnedJob, progress: Progress) -> bytes:
    """Progress signed with its writer: an audit of the store's history (the chaos
    run's double-owner check) can then tell whether the writer owned the job."""
    return pack_record(replace(progress, writer=owned.job.owner).to_wire())


def job_id_of(entry: Entry, raw: bytes | None = None) -> str:
    """The job id an identity pointer (or a waiting key's last part) holds."""
    try:
        return (entry.value if raw is None else raw).decode("ascii")
    except UnicodeDecodeError:
        raise JobServiceError(f"the job store entry {entry.key!r} is unreadable") from None


def path_bytes(path: str) -> bytes:
    """A file path as a key part; names that are not UTF-8 round-trip as they came."""
    return path.encode("utf-8", "surrogateescape")
