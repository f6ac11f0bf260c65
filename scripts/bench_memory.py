"""Benchmark the memory of alluxiojob's coordinator and worker as jobs grow.

Run it through ``scripts/bench`` (``--memory-only`` runs just this part; ``--no-memory``
skips it). In one run:

* generates 1,000,000 empty files in 1,000 dirs, nested so that one tree holds the 100k
  and 300k sets too;
* coordinator: for each size a fresh coordinator (same workers and store) LOADs the set
  while the VmRSS of the coordinator and of the workers is sampled every 0.2 s; the idle
  and peak RSS per size show whether memory stays flat as the job grows;
* worker: a cluster with one worker caches the sets in turn, so that worker holds 100k,
  300k, then 1M files; after each its RSS is measured idle, through a restart (startup
  recovery) and idle again.

About 15 minutes on 2 CPUs, dataset generation included. ``--quick``: sizes 20k and 100k.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import bench_args
from bench_common import (
    KIB,
    Cluster,
    Dataset,
    IncompleteJob,
    RssSampler,
    anomaly,
    log,
    make_empty_nested,
    print_table,
    run_part,
    vm_rss_kib,
)


def bench_rss(base: Path, sets: list[Dataset]) -> list[dict[str, float]]:
    rows = []
    with Cluster(base / "cluster-rss") as cluster:
        cluster.start()
        for ds in sets:
            cluster.stop(["coordinator"])
            cluster.start(["coordinator"])
            time.sleep(1.0)
            pids = {name: cluster.pid(name) for name in cluster.services}
            idle = {name: vm_rss_kib(pid) for name, pid in pids.items()}
            log(f"[rss] LOAD of {ds.files:,} empty files; coordinator idle RSS "
                f"{idle['coordinator'] / KIB:.0f} MiB")
            with RssSampler(pids) as sampler:
                try:
                    timing = cluster.load(ds)
                    wall, elapsed = timing.wall, timing.job
                except IncompleteJob as exc:
                    # The peak still counts (the job ran); the files/s would not.
                    anomaly(f"{exc} (RSS run; files/s not meaningful)")
                    wall = elapsed = float("nan")
            peak = sampler.peak_kib
            log(f"[rss]   {ds.files:,} files in {wall:.1f}s; coordinator peak "
                f"{peak['coordinator'] / KIB:.0f} MiB ({sampler.samples} samples)")
            rows.append({
                "files": ds.files,
                "wall": wall,
                "elapsed": elapsed,
                "coord_idle": idle["coordinator"] / KIB,
                "coord_peak": peak["coordinator"] / KIB,
                "worker_peak": max(peak["worker1"], peak["worker2"]) / KIB,
            })
    return rows


def print_rss_table(rows: list[dict[str, float]]) -> None:
    print_table(
        "Dataset (c) coordinator memory: LOAD of N empty files (1,000 a dir); VmRSS sampled "
        "every 0.2 s; a fresh coordinator per size",
        [("files", 10), ("load wall s", 12), ("files/s", 9), ("coord idle MiB", 15),
         ("coord peak MiB", 15), ("peak-idle MiB", 14), ("worker peak MiB*", 17)],
        ([f"{int(r['files']):,}", f"{r['wall']:.1f}", f"{r['files'] / r['wall']:,.0f}",
          f"{r['coord_idle']:.1f}", f"{r['coord_peak']:.1f}",
          f"{r['coord_peak'] - r['coord_idle']:.1f}", f"{r['worker_peak']:.1f}"]
         for r in rows))
    print("* the larger of the two workers; the caches keep every file of the earlier sizes "
          "too (the sets nest); one worker's memory per cached file is the next table")
    if len(rows) > 1:
        first, last = rows[0], rows[-1]
        growth = (last["coord_peak"] - first["coord_peak"]) / (last["files"] - first["files"])
        print(f"coordinator peak RSS growth: {growth * 1024 * 1024:.1f} bytes per extra file "
              f"({first['coord_peak']:.0f} MiB at {int(first['files']):,} -> "
              f"{last['coord_peak']:.0f} MiB at {int(last['files']):,})")
    sys.stdout.flush()


def worker_status(cluster: Cluster, name: str) -> dict[str, Any]:
    url = f"http://127.0.0.1:{cluster.web_ports[name]}/api/v1/worker/status"
    with urllib.request.urlopen(url, timeout=10) as answer:
        status: dict[str, Any] = json.loads(answer.read())
    return status


def bench_worker_rss(base: Path, sets: list[Dataset]) -> list[dict[str, float]]:
    """One worker caches the nested sets in turn, so it holds 100k, then 300k, then 1M
    files. After each: its RSS idle, then through a restart (startup recovery checks
    every file of data/ against the index) and idle again."""
    rows = []
    with Cluster(base / "cluster-worker-rss", workers=1) as cluster:
        cluster.start()
        for ds in sets:
            pid = cluster.pid("worker1")
            with RssSampler({"worker": pid}) as during_load:
                try:
                    cluster.load(ds)
                except IncompleteJob as exc:
                    anomaly(f"{exc} (worker RSS run)")
            cached = int(worker_status(cluster, "worker1")["cached_files"])
            time.sleep(1.0)
            idle = vm_rss_kib(pid)
            cluster.stop(["worker1"])

            def restarting() -> dict[str, int]:
                proc = cluster.services["worker1"].proc
                return {} if proc is None else {"worker": proc.pid}

            with RssSampler(restarting, interval=0.05) as during_recovery:
                started = time.perf_counter()
                cluster.start(["worker1"], timeout=900.0)
                recovery = time.perf_counter() - started
            time.sleep(1.0)
            after = vm_rss_kib(cluster.pid("worker1"))
            log(f"[worker rss] {cached:,} cached files: idle {idle / KIB:.0f} MiB, peak "
                f"during recovery {during_recovery.peak_kib.get('worker', 0) / KIB:.0f} MiB "
                f"({recovery:.1f}s), idle after {after / KIB:.0f} MiB")
            rows.append({
                "files": cached,
                "load_peak": during_load.peak_kib["worker"] / KIB,
                "idle": idle / KIB,
                "recovery_seconds": recovery,
                "recovery_peak": during_recovery.peak_kib.get("worker", 0) / KIB,
                "idle_after_restart": after / KIB,
            })
    return rows


def print_worker_rss_table(rows: list[dict[str, float]]) -> None:
    print_table(
        "Dataset (c) worker memory: one worker caching N files (the nested sets in turn); "
        "VmRSS of the worker process (not its pool processes), sampled every 0.2 s during "
        "the LOAD and every 0.05 s through a restart",
        [("cached files", 12), ("load peak MiB", 14), ("idle MiB", 9), ("recovery s", 11),
         ("recovery peak MiB", 18), ("idle after MiB", 15)],
        ([f"{int(r['files']):,}", f"{r['load_peak']:.1f}", f"{r['idle']:.1f}",
          f"{r['recovery_seconds']:.1f}", f"{r['recovery_peak']:.1f}",
          f"{r['idle_after_restart']:.1f}"] for r in rows))
    sys.stdout.flush()


def run(args: Any, base: Path) -> dict[str, object]:
    sizes = [20_000, 100_000] if args.quick else [100_000, 300_000, 1_000_000]
    print(f"alluxiojob bench, memory part{' (--quick)' if args.quick else ''}: "
          f"work dir {base}")
    sets = make_empty_nested(base / "data" / f"empty-{sizes[-1]}", sizes)
    rows = bench_rss(base, sets)
    print_rss_table(rows)
    worker_rows = bench_worker_rss(base, sets)
    print_worker_rss_table(worker_rows)
    return {"quick": args.quick, "rss": rows, "worker_rss": worker_rows}


def main(argv: Sequence[str] | None = None) -> int:
    args = bench_args.parse(argv)  # every part's flags; this part uses its own
    return run_part(args, ("cluster-rss", "cluster-worker-rss"), args.memory_json,
                    lambda base: run(args, base))


if __name__ == "__main__":
    sys.exit(main())
