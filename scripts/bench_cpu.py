"""CPU time per process group, from ``/proc/<pid>/stat``: what each side of a run spent.

A bench run reads a snapshot before and after a timed run and prints the difference per
file. The groups of an alluxiojob cluster are the coordinator (with anything under it),
the workers' own processes (the event loop and its threads), and the workers' pool
processes (everything under a worker, including pool processes that exited and were
reaped: the kernel adds their time to the worker's "children" fields). The reference
tools are measured by ``getrusage(RUSAGE_CHILDREN)`` of the bench itself, since they are
its children and are reaped when they exit; a server (nginx, moto) as its process tree.
"""

from __future__ import annotations

import os
import resource
from collections.abc import Iterable, Iterator, Mapping

CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_stats() -> Iterator[tuple[int, list[str]]]:
    """(pid, the fields of /proc/<pid>/stat after the name) of every live process; after
    the name: state ppid pgrp session ... utime(11) stime(12) cutime cstime."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                yield int(entry), f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue


def process_table() -> dict[int, tuple[int, float, float]]:
    """pid -> (parent pid, own CPU s, reaped children's CPU s) of every live process."""
    return {pid: (int(fields[1]), (int(fields[11]) + int(fields[12])) / CLK_TCK,
                  (int(fields[13]) + int(fields[14])) / CLK_TCK)
            for pid, fields in proc_stats()}


def descendants(table: Mapping[int, tuple[int, float, float]], pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for child, (parent, _, _) in table.items():
        children.setdefault(parent, []).append(child)
    found, frontier = [], [pid]
    while frontier:
        below = children.get(frontier.pop(), [])
        found.extend(below)
        frontier.extend(below)
    return found


def split_tree(table: Mapping[int, tuple[int, float, float]], pid: int) -> tuple[float, float]:
    """(CPU of ``pid`` itself, CPU of everything under it, live or reaped)."""
    if pid not in table:
        return 0.0, 0.0
    _, own, reaped = table[pid]
    below = reaped
    for child in descendants(table, pid):
        _, child_own, child_reaped = table[child]
        below += child_own + child_reaped
    return own, below


def cluster_cpu(roles: Mapping[str, int]) -> dict[str, float]:
    """CPU seconds so far of an alluxiojob cluster's groups; ``roles`` maps a service name
    ("coordinator", "worker1", ...) to its pid."""
    table = process_table()
    groups = {"coordinator": 0.0, "worker": 0.0, "pool": 0.0}
    for name, pid in roles.items():
        own, below = split_tree(table, pid)
        if name.startswith("worker"):
            groups["worker"] += own
            groups["pool"] += below
        else:
            groups["coordinator"] += own + below
    return groups


def processes_cpu(pids: Iterable[int]) -> float:
    """CPU seconds of these processes, each with everything under it."""
    table = process_table()
    return sum(sum(split_tree(table, pid)) for pid in pids)


def children_cpu() -> float:
    """CPU seconds of this process's reaped children (the reference tools it ran)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def minus(after: Mapping[str, float], before: Mapping[str, float]) -> dict[str, float]:
    return {k: after[k] - before.get(k, 0.0) for k in after}


def micros_per(seconds: float, count: int) -> str:
    """CPU seconds as µs per file, for a table cell."""
    return f"{seconds * 1e6 / count:,.0f}" if count else "-"
