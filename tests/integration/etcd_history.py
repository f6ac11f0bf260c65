"""etcd's history of the job keys, and the audit of who wrote what.

The chaos run reads etcd through its own JSON gateway, independently of the job store's
client, and replays every change under the job prefix since revision 1 (the run never
compacts). ``audit_owner_writes`` is pure: events in, problems out.
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx

from alluxiojob.store.records import unpack_record

OWNED = {"RUNNING", "VERIFYING"}
JOB_PREFIX = "/alluxio/jobs/"
SENTINEL = JOB_PREFIX + "~chaos-history-end"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _prefix_end(prefix: bytes) -> bytes:
    return prefix[:-1] + bytes([prefix[-1] + 1])


class EtcdGateway:
    """etcd's own JSON gateway, read by the checker independently of the job store."""

    def __init__(self, url: str) -> None:
        self.url = url

    def put(self, key: str, value: bytes) -> None:
        body = {"key": _b64(key.encode()), "value": _b64(value)}
        httpx.post(f"{self.url}/v3/kv/put", json=body, timeout=5).raise_for_status()

    def scan(self, prefix: str, timeout: float = 2.0) -> list[tuple[str, bytes, int]]:
        raw = prefix.encode()
        body = {"key": _b64(raw), "range_end": _b64(_prefix_end(raw))}
        answer = httpx.post(f"{self.url}/v3/kv/range", json=body, timeout=timeout)
        answer.raise_for_status()
        return [(base64.b64decode(kv["key"]).decode(), base64.b64decode(kv.get("value", "")),
                 int(kv.get("mod_revision", 0))) for kv in answer.json().get("kvs", ())]

    def history(self, prefix: str, timeout: float = 120.0) -> list[HistoryEvent]:
        """Every change under ``prefix`` since revision 1, in order (needs no compaction).

        A sentinel key is written first, with a value of its own; the watch replays
        history up to that write.
        """
        nonce = os.urandom(16)
        self.put(SENTINEL, nonce)
        raw = prefix.encode()
        body = {"create_request": {"key": _b64(raw), "range_end": _b64(_prefix_end(raw)),
                                   "start_revision": "1"}}
        events: list[HistoryEvent] = []
        deadline = time.monotonic() + timeout
        with httpx.stream("POST", f"{self.url}/v3/watch", json=body,
                          timeout=httpx.Timeout(10, read=30)) as answer:
            answer.raise_for_status()
            for line in answer.iter_lines():
                if time.monotonic() > deadline:
                    raise TimeoutError(f"etcd history not read within {timeout}s")
                if not line.strip():
                    continue
                result = json.loads(line).get("result", {})
                if result.get("compact_revision") not in (None, "0"):
                    raise RuntimeError("etcd history was compacted; cannot audit it")
                for event in result.get("events", ()):
                    kv = event["kv"]
                    key = base64.b64decode(kv["key"]).decode(errors="replace")
                    if key == SENTINEL:
                        if base64.b64decode(kv.get("value", "")) == nonce:
                            return events
                        continue
                    events.append(HistoryEvent(
                        int(kv.get("mod_revision", 0)), event.get("type", "PUT"), key,
                        base64.b64decode(kv.get("value", ""))))
        raise RuntimeError("etcd's watch ended before the end of its history")


@dataclass(frozen=True)
class HistoryEvent:
    revision: int
    type: str  # PUT or DELETE
    key: str
    value: bytes


def audit_owner_writes(events: Iterable[HistoryEvent], prefix: str = JOB_PREFIX) -> list[str]:
    """Writes to a job's records accepted from a coordinator that did not own the job.

    A ``progress/<id>`` write must come from the owner the job record names just before
    it (its ``writer``); a ``failures/<id>/…`` write must happen while the job is owned;
    a job's move from RUNNING/VERIFYING to SUCCEEDED/FAILED must carry its owner's
    progress in the same transaction (revision). A shard record (``shard/<id>/<n>``)
    written RUNNING or DONE under an owner must be that owner's: either its claim (the
    shard waited, and the same transaction removed its ``shardq/`` entry) or a write
    after one, while the shard was still RUNNING under that owner.
    """
    jobs: dict[str, dict[str, Any]] = {}
    shards: dict[str, dict[str, Any]] = {}
    problems: list[str] = []
    by_revision: dict[int, list[HistoryEvent]] = {}
    for event in events:
        by_revision.setdefault(event.revision, []).append(event)
    for revision in sorted(by_revision):
        batch = by_revision[revision]
        before = dict(jobs)  # the job records as they were just before this transaction
        progress_writers: dict[str, str] = {}
        dequeued = {event.key[len(prefix):].partition("/")[2] for event in batch
                    if event.type == "DELETE" and event.key[len(prefix):].startswith("shardq/")}
        for event in batch:
            kind, _, rest = event.key[len(prefix):].partition("/")
            job_id = rest.split("/", 1)[0]
            if kind == "shard":
                problems += _audit_shard(revision, rest, event, shards, dequeued)
                continue
            if event.type == "DELETE":
                if kind == "job":
                    jobs.pop(job_id, None)
                continue
            if kind == "job":
                jobs[job_id] = unpack_record(event.value)
            elif kind == "progress":
                writer = str(unpack_record(event.value).get("writer", ""))
                progress_writers[job_id] = writer
                prior = before.get(job_id)
                if prior is None or prior["state"] not in OWNED or prior["owner"] != writer:
                    held = "no record" if prior is None else \
                        f"{prior['state']} owned by {prior['owner'] or 'nobody'}"
                    problems.append(f"revision {revision}: progress of job {job_id} written "
                                    f"by {writer or 'an unnamed writer'} while the job was "
                                    f"{held}")
            elif kind == "failures":
                prior = before.get(job_id)
                if prior is None or prior["state"] not in OWNED:
                    state = "gone" if prior is None else prior["state"]
                    problems.append(f"revision {revision}: failure record of job {job_id} "
                                    f"written while the job was {state}")
        for job_id, record in jobs.items():
            prior = before.get(job_id)
            if (prior is not None and prior is not record and prior["state"] in OWNED
                    and record["state"] in ("SUCCEEDED", "FAILED")
                    and progress_writers.get(job_id) != prior["owner"]):
                problems.append(f"revision {revision}: job {job_id} became {record['state']} "
                                f"without the progress of its owner {prior['owner']}")
    return problems


def _audit_shard(revision: int, name: str, event: HistoryEvent,
                 shards: dict[str, dict[str, Any]], dequeued: set[str]) -> list[str]:
    """The shard write ``event`` (``name``: ``<job id>/<n>``) against the record before."""
    if event.type == "DELETE":
        shards.pop(name, None)
        return []
    prior, record = shards.get(name), unpack_record(event.value)
    shards[name] = record
    if record["state"] == "WAITING":
        return []
    owner = record["owner"]
    claimed = prior is not None and prior["state"] == "WAITING" and name in dequeued
    kept = prior is not None and prior["state"] == "RUNNING" and prior["owner"] == owner
    if claimed or kept:
        return []
    held = "no record" if prior is None else \
        f"{prior['state']} owned by {prior['owner'] or 'nobody'}"
    return [f"revision {revision}: shard {name} written {record['state']} by {owner} "
            f"while it was {held}"]


@dataclass
class JobEnds:
    """What etcd's history tells of each job's final state and of its shards."""

    final_writes: dict[str, int] = field(default_factory=dict)  # job id -> final writes
    problems: list[str] = field(default_factory=list)
    sharded_jobs: int = 0
    shards: int = 0
    shard_claims: int = 0  # a shard claimed again after a fault counts once more
    spread_jobs: int = 0  # sharded jobs whose shards ran under 2 or more coordinators
    failed_early: int = 0  # FAILED with shards left unfinished: an error fenced them


def audit_job_ends(events: Iterable[HistoryEvent], prefix: str = JOB_PREFIX) -> JobEnds:
    """Each job record written with a final state how many times, and whether every shard
    of a job was DONE when it SUCCEEDED (and stayed DONE), or when it FAILED for its
    failed files; a job FAILED by an error (a listing error, too many failures) fences
    its other shards, which are counted, not flagged."""
    ends = JobEnds()
    shards: dict[str, dict[str, str]] = {}  # job id -> shard number -> state
    owners: dict[str, set[str]] = {}
    final: dict[str, dict[str, Any]] = {}  # job id -> its final record
    by_revision: dict[int, list[HistoryEvent]] = {}
    for event in events:
        by_revision.setdefault(event.revision, []).append(event)
    for revision in sorted(by_revision):
        batch = by_revision[revision]
        for event in batch:  # the last shard's DONE and the job's end share a transaction
            kind, _, rest = event.key[len(prefix):].partition("/")
            if kind != "shard" or event.type == "DELETE":
                continue
            job_id, _, number = rest.partition("/")
            record = unpack_record(event.value)
            prior = shards.setdefault(job_id, {}).get(number)
            if record["state"] == "RUNNING" and prior != "RUNNING":
                ends.shard_claims += 1
                owners.setdefault(job_id, set()).add(str(record["owner"]))
            shards[job_id][number] = str(record["state"])
        for event in batch:
            kind, _, job_id = event.key[len(prefix):].partition("/")
            if kind != "job" or event.type == "DELETE":
                continue
            record = unpack_record(event.value)
            if record["state"] not in ("SUCCEEDED", "FAILED", "STOPPED"):
                continue
            ends.final_writes[job_id] = ends.final_writes.get(job_id, 0) + 1
            final[job_id] = record
            undone = sorted(n for n, state in shards.get(job_id, {}).items() if state != "DONE")
            if not undone:
                continue
            if record["state"] == "SUCCEEDED" or "files failed; see" in str(record["error"]):
                ends.problems.append(f"revision {revision}: job {job_id} became "
                                     f"{record['state']} with shards {undone} not DONE")
            elif record["state"] == "FAILED":
                ends.failed_early += 1
    for job_id, states in shards.items():
        ends.sharded_jobs += 1
        ends.shards += len(states)
        ends.spread_jobs += len(owners.get(job_id, ())) >= 2
        ended = final.get(job_id)
        undone = sorted(n for n, state in states.items() if state != "DONE")
        if ended is not None and ended["state"] == "SUCCEEDED" and undone:
            ends.problems.append(f"job {job_id} SUCCEEDED, and its shards {undone} were "
                                 "written again since")
    return ends


__all__ = ["JOB_PREFIX", "OWNED", "EtcdGateway", "HistoryEvent", "JobEnds", "audit_job_ends",
           "audit_owner_writes"]
