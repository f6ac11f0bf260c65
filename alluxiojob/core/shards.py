"""Shards: the parts of one job that coordinators list and dispatch side by side. No I/O.

Theory of operation
-------------------
A UFS walk yields a job's files in a total order of their ``parts`` (names sorted at
each level for local trees; one part, the relative key in byte order, for object
stores). A shard is a range of that order: the files whose parts are strictly after
``after`` and at most ``until`` (an empty ``after`` is the start, an empty ``until``
the end). The boundaries are placed between top-level entries, so every file of a
directory, or under a common prefix, falls in one shard.

The ranges are contiguous and cover the whole order, whatever was listed when they
were computed: a file that appears later still falls in exactly one shard.

A shard's walk starts at ``after`` (or its checkpoint, whichever is later) and stops at
the first file past ``until``. The shards of a job add up to the job: ``merge`` sums
their progress into the one report users see.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from alluxiojob.core.progress import RECENT_TASKS_MAX, Counters, Progress

HIGHEST = "\U0010ffff"
"""Sorts after every name a file can have: ``(name, HIGHEST)`` follows every file under
``name``, and ``key + HIGHEST`` every key that starts with ``key``."""


class ShardState(enum.StrEnum):
    WAITING = "WAITING"  # claimable
    RUNNING = "RUNNING"  # its owner lists and dispatches it
    DONE = "DONE"  # every file of it is final


@dataclass(frozen=True)
class ShardRecord:
    """What the store keeps under ``shard/<job id>/<n>``: small, no per-file data."""

    job_id: str
    index: int
    after: tuple[str, ...] = ()  # exclusive lower bound; () = the start
    until: tuple[str, ...] = ()  # inclusive upper bound; () = the end
    state: ShardState = ShardState.WAITING
    owner: str = ""
    progress: Progress = field(default_factory=Progress)
    claims: int = 0  # how many times a coordinator took it: tells one claim from the next

    def to_wire(self) -> dict[str, Any]:
        return {"job_id": self.job_id, "index": self.index, "after": list(self.after),
                "until": list(self.until), "state": self.state.value, "owner": self.owner,
                "progress": self.progress.to_wire(), "claims": self.claims}

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> ShardRecord:
        return cls(
            job_id=str(data["job_id"]),
            index=int(data["index"]),
            after=tuple(str(p) for p in data.get("after") or ()),
            until=tuple(str(p) for p in data.get("until") or ()),
            state=ShardState(str(data.get("state", ShardState.WAITING.value))),
            owner=str(data.get("owner", "")),
            progress=Progress.from_wire(data.get("progress") or {}),
            claims=int(data.get("claims", 0)),
        )

    def summary(self) -> dict[str, Any]:
        """What ``job stat -v`` and the progress report show of the shard."""
        live = self.progress.live
        return {"index": self.index, "state": self.state.value, "owner": self.owner,
                "files_listed": live.files_listed, "files_processed": live.files_processed,
                "files_skipped": live.files_skipped, "files_failed": live.files_failed,
                "bytes_processed": live.bytes_processed}

    def start(self, checkpoint: tuple[str, ...]) -> tuple[str, ...]:
        """Where the shard's walk resumes: after its checkpoint, never before its range."""
        return max(checkpoint, self.after)

    def past_end(self, parts: tuple[str, ...]) -> bool:
        return bool(self.until) and parts > self.until

    def holds(self, parts: tuple[str, ...]) -> bool:
        """Whether a file at ``parts`` falls in the shard's range."""
        return parts > self.after and not self.past_end(parts)

    def cut(self, at: tuple[str, ...], index: int) -> tuple[ShardRecord, ShardRecord] | None:
        """The shard cut after ``at`` (a file it listed): itself up to ``at``, and a new
        WAITING shard ``index`` from there to its end; None when ``at`` is not inside the
        range (a cut there would leave one side empty). Every file of the range falls in
        exactly one of the two."""
        if not self.holds(at) or at == self.until:
            return None
        return (replace(self, until=at),
                ShardRecord(self.job_id, index, after=at, until=self.until))


def top_level_bound(name: str, *, object_store: bool) -> tuple[str, ...]:
    """The last place in the walk's order of a top-level entry and everything under it.

    Local trees: the entry ``name`` (a file or a directory). Object stores: a key
    ``name``, or every key under the common prefix ``name`` (which ends with ``/``).
    """
    if object_store:
        return (name + HIGHEST,) if name.endswith("/") else (name,)
    return (name, HIGHEST)


def split(bounds: Sequence[tuple[str, ...]], target: int) -> list[tuple[tuple[str, ...],
                                                                          tuple[str, ...]]]:
    """The ``(after, until)`` ranges of at most ``target`` shards over top-level entries
    whose bounds (``top_level_bound``) are ``bounds``, in the walk's order.

    Entries are grouped in runs of nearly equal length; the first range starts at the
    beginning and the last ends at the end, so together they cover every file.
    """
    ordered = sorted(set(bounds))
    count = max(1, min(target, len(ordered)))
    ranges: list[tuple[tuple[str, ...], tuple[str, ...]]] = []
    after: tuple[str, ...] = ()
    for i in range(count):
        last = (len(ordered) * (i + 1)) // count - 1
        until = () if i == count - 1 else ordered[last]
        ranges.append((after, until))
        after = until
    return ranges


def ahead_cut(position: tuple[str, ...], until: tuple[str, ...],
              names: Callable[[tuple[str, ...]], Sequence[str]]) -> tuple[str, ...] | None:
    """Where to split a local tree's shard that has listed up to ``position`` so that
    both sides keep about half of what lies ahead, or None (then it splits at
    ``position``, handing over the rest).

    ``names(parent)`` gives the names in the directory ``parent`` (parts under the
    job's root). At the shallowest level of ``position``'s ancestry where at least two
    entries follow ``position``'s own and lie wholly inside the range, the cut falls
    after the first half of them: the owner keeps those, the new shard the rest."""
    for depth in range(len(position)):
        parent, own = position[:depth], position[depth]
        later = sorted(name for name in names(parent) if name > own
                       and (not until or (*parent, name, HIGHEST) < until))
        if len(later) >= 2:
            return (*parent, later[len(later) // 2 - 1], HIGHEST)
    return None


def merge(shards: Sequence[Progress]) -> Progress:
    """One job's progress from its shards': counters and known totals summed, the
    listing done once every shard's is, the time that of the longest shard."""
    if not shards:
        return Progress()
    live = committed = Counters()
    workers: list[str] = []
    for progress in shards:
        live += progress.live
        committed += progress.committed
        workers += [w for w in progress.workers if w not in workers]
    tasks = sorted((t for p in shards for t in p.tasks), key=lambda t: t.started_at)
    return Progress(
        live=live,
        committed=committed,
        listing_done=all(p.listing_done for p in shards),
        files_total=sum(p.files_total for p in shards),
        bytes_total=sum(p.bytes_total for p in shards),
        active_seconds=max(p.active_seconds for p in shards),
        recent_rate=sum(p.recent_rate for p in shards),
        verify_passes=max(p.verify_passes for p in shards),
        files_repaired=sum(p.files_repaired for p in shards),
        workers=tuple(workers),
        tasks=tuple(tasks[-RECENT_TASKS_MAX:]),
    )

