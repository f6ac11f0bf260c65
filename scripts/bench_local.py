"""Benchmark alluxiojob LOAD of local files against ``cp -r`` and ``rclone copy``.

Run it through ``scripts/bench`` (which prepares .venv and rclone; ``--local-only`` runs
just this part). In one run:

* generates the datasets once, in a temp dir on the same file system as the caches:
  (a) small files: 20,000 x 4 KiB in 100 dirs;
  (b) large files: 4 x 256 MiB (1 GiB); the workers run with a partition size of a
      quarter of a file (64 MiB) so that each file spans several partitions;
* starts 1 coordinator + 2 workers once (loopback, random ports);
* runs one warm-up of every tool (not timed; it also checks every tool's output), then
  N paired repetitions (default 3): in each, every tool copies the same source once, in
  an order that rotates between repetitions, so each tool runs first, second and last
  in turn. Before each alluxiojob LOAD the path is FREEd, so every LOAD really copies.
  Before every timed run the previous output is removed, then ``sync`` runs and the page
  cache is dropped (where the kernel allows it; ``--warm`` keeps it), all untimed, so no
  tool pays for another's write-back or gains from its cached pages;
* times each run to its exit and, on the same clock, until its writes are on disk
  (``syncfs`` right after it exits: "+sync"), which for a gigabyte is what the disk can
  do, not what the page cache absorbs;
* prints, per dataset: median/min/max seconds, files/s and MiB/s, and the ratios
  other_time / alluxiojob_time (the median of the per-repetition ratios with their
  range: > 1 means alluxiojob is faster); and the CPU per file of each process group
  (the coordinator, the workers' own processes, their pool processes, the CLI) beside
  cp's and rclone's (``scripts/bench_cpu.py``), which, unlike the times, hardly depends
  on what else the machine is doing.

Timings: ``cp -r SRC DST``; for the small files also a parallel copy,
``cd SRC && find . -type f -print0 | xargs -0 -P 8 -n 64 cp --parents -t DST`` (8 ``cp``
processes of 64 files each at a time), after ``mkdir -p`` of every directory of the tree
in ``DST`` (the parallel ``cp``s would race to make them), all in the one timed shell;
``rclone copy --transfers 8 --checkers 8 SRC DST`` (rclone's defaults otherwise, so it
also verifies each file's checksum after copying it; no config file);
``alluxiojob job load --path SRC --wait`` wall time, CLI start-up and its progress
polling included, and submit-to-SUCCEEDED as the coordinator recorded it (the job
record's ``finished_at - created_at``), which leaves out the CLI's own start-up.

``--quick``: 2,000 small files, 4 x 64 MiB (16 MiB partitions).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import bench_args
import bench_cpu
from bench_common import (
    KIB,
    MIB,
    BenchError,
    Cluster,
    Dataset,
    IncompleteJob,
    Timing,
    anomaly,
    can_drop_caches,
    log,
    make_large,
    make_small,
    print_table,
    quiesce,
    ratio_text,
    rotations,
    run_part,
    run_timed,
    tool_versions,
    tree_stats,
)

# The parallel copy of the small files: the same command in every run.
PARALLEL_COPY = ('mkdir -p "$2" && cd "$1" && '
                 'find . -type d -print0 | (cd "$2" && xargs -0 mkdir -p) && '
                 'find . -type f -print0 | xargs -0 -P 8 -n 64 cp --parents -t "$2"')
PARALLEL_LABEL = "find | xargs -P 8 -n 64 cp"


@dataclass
class ToolTimes:
    exited: list[float] = field(default_factory=list)
    synced: list[float] = field(default_factory=list)

    def add(self, timing: Timing) -> None:
        self.exited.append(timing.exited)
        self.synced.append(timing.synced)


def bench_dataset(ds: Dataset, cluster: Cluster, out: Path, reps: int, rclone: str | None,
                  drop: bool) -> dict[str, object]:
    rclone_env = {**os.environ, "RCLONE_CONFIG": "/dev/null"}
    out.mkdir(parents=True, exist_ok=True)
    # CPU seconds of the last run of each tool, by process group (bench_cpu).
    last_cpu: dict[str, dict[str, float]] = {}

    def copy_tool(name: str, cmd: Callable[[Path], list[str]],
                  env: dict[str, str] | None = None) -> Callable[[bool], Timing]:
        def run(check: bool) -> Timing:
            dst = out / name
            shutil.rmtree(dst, ignore_errors=True)
            quiesce(drop)
            cpu = bench_cpu.children_cpu()
            timing = run_timed(cmd(dst), env, synced=out)
            last_cpu[name] = {name: bench_cpu.children_cpu() - cpu}
            if check:
                got = tree_stats(dst)
                if got != (ds.files, ds.nbytes):
                    raise BenchError(f"{name} copied {got}, expected {(ds.files, ds.nbytes)}")
            shutil.rmtree(dst, ignore_errors=True)
            return timing
        return run

    job_elapsed: list[float] = []
    job_synced: list[float] = []  # the job's time plus the write-back after the CLI exited

    def alluxiojob_run(check: bool, attempts: int = 3) -> Timing:
        for attempt in range(1, attempts + 1):
            if cluster.cached(ds.path)[0]:
                cluster.free(ds)
            quiesce(drop)
            roles = {n: cluster.pid(n) for n in cluster.services}
            groups, cli = bench_cpu.cluster_cpu(roles), bench_cpu.children_cpu()
            try:
                timing = cluster.load(ds, synced=cluster.base)
            except IncompleteJob as exc:
                # Not a valid timing: the job stopped early. Measure again.
                anomaly(f"{exc} (attempt {attempt}/{attempts}; timing discarded)")
                if attempt == attempts:
                    raise
                continue
            last_cpu["alluxiojob"] = {**bench_cpu.minus(bench_cpu.cluster_cpu(roles), groups),
                                      "cli": bench_cpu.children_cpu() - cli}
            job_elapsed.append(timing.job)
            job_synced.append(timing.job + timing.synced - timing.wall)
            got = cluster.cached(ds.path)
            if got != (ds.files, ds.nbytes):
                raise BenchError(f"alluxiojob cached {got}, expected {(ds.files, ds.nbytes)}")
            cluster.free(ds)
            return Timing(timing.wall, timing.synced)
        raise AssertionError("unreachable")

    tools: dict[str, Callable[[bool], Timing]] = {
        "cp": copy_tool("cp", lambda dst: ["cp", "-r", os.fspath(ds.path), os.fspath(dst)]),
    }
    if ds.name == "small":
        tools["parallel"] = copy_tool("parallel", lambda dst: [
            "sh", "-c", PARALLEL_COPY, "sh", os.fspath(ds.path), os.fspath(dst)])
    if rclone:
        tools["rclone"] = copy_tool(
            "rclone",
            lambda dst: [rclone, "copy", "--transfers", "8", "--checkers", "8",
                         os.fspath(ds.path), os.fspath(dst)],
            rclone_env,
        )
    tools["alluxiojob"] = alluxiojob_run

    log(f"[{ds.name}] warm-up: one untimed run of each tool, outputs checked")
    for name, run in tools.items():
        took = run(True)
        log(f"[{ds.name}]   warm-up {name}: {took.exited:.2f}s (+sync {took.synced:.2f}s)")
    job_elapsed.clear()
    job_synced.clear()

    results = {name: ToolTimes() for name in tools}
    cpu: dict[str, list[dict[str, float]]] = {name: [] for name in tools}
    for rep, order in enumerate(rotations(list(tools), reps)):
        for name in order:
            results[name].add(tools[name](rep == 0))
            cpu[name].append(last_cpu[name])
        log(f"[{ds.name}] rep {rep + 1}/{reps} (order {', '.join(order)}; load average "
            f"{os.getloadavg()[0]:.1f}): "
            + ", ".join(f"{n} {results[n].exited[-1]:.2f}s (+sync {results[n].synced[-1]:.2f}s)"
                        for n in tools)
            + f", alluxiojob job elapsed {job_elapsed[-1]:.2f}s")
    return {
        "dataset": ds,
        "times": {name: r.exited for name, r in results.items()},
        "synced": {name: r.synced for name, r in results.items()},
        "job_elapsed": list(job_elapsed),
        "job_synced": list(job_synced),
        "cpu": cpu,
    }


def print_cpu_table(result: dict[str, object], reps: int) -> None:
    """CPU per file by process group: the cluster's coordinator, workers, pool processes
    and the CLI, beside cp's and rclone's (medians of the repetitions)."""
    ds: Dataset = result["dataset"]  # type: ignore[assignment]
    cpu: dict[str, list[dict[str, float]]] = result["cpu"]  # type: ignore[assignment]
    groups = ("coordinator", "worker", "pool", "cli")
    rows = []
    for tool, records in cpu.items():
        cells = [bench_cpu.micros_per(statistics.median(r[g] for r in records), ds.files)
                 if g in records[0] else "-" for g in groups]
        total = statistics.median(sum(r.values()) for r in records)
        rows.append([tool, *cells, bench_cpu.micros_per(total, ds.files)])
    print_table(f"CPU per file, µs (median of {reps}; from /proc and getrusage)",
                [("tool", 34), ("coordinator", 11), ("worker", 8), ("pool", 8), ("cli", 8),
                 ("total", 8)], rows, label_first=True)


def print_speed_table(result: dict[str, object], reps: int) -> None:
    ds: Dataset = result["dataset"]  # type: ignore[assignment]
    times: dict[str, list[float]] = result["times"]  # type: ignore[assignment]
    synced: dict[str, list[float]] = result["synced"]  # type: ignore[assignment]
    job_elapsed: list[float] = result["job_elapsed"]  # type: ignore[assignment]
    job_synced: list[float] = result["job_synced"]  # type: ignore[assignment]
    others = [("cp", "cp -r")] + ([("parallel", PARALLEL_LABEL)] if "parallel" in times
                                   else [])
    others += [("rclone", "rclone copy")] if "rclone" in times else []
    rows: list[tuple[str, Sequence[float]]] = []
    for key, label in others:
        rows += [(label, times[key]), (f"{label} +sync", synced[key])]
    rows += [("alluxiojob load --wait (wall)", times["alluxiojob"]),
             ("alluxiojob load --wait +sync", synced["alluxiojob"]),
             ("alluxiojob submit→SUCCEEDED", job_elapsed),
             ("alluxiojob submit→SUCCEEDED +sync", job_synced)]
    mib = ds.nbytes / MIB
    print_table(
        f"Dataset ({'a' if ds.name == 'small' else 'b'}) {ds.name} files: {ds.title}, "
        f"{mib:,.1f} MiB, median of {reps} paired repetitions",
        [("tool", 34), ("median s", 9), ("min s", 8), ("max s", 8), ("files/s", 10),
         ("MiB/s", 9)],
        ([name, f"{statistics.median(values):.3f}", f"{min(values):.3f}",
          f"{max(values):.3f}", f"{ds.files / statistics.median(values):,.0f}",
          f"{mib / statistics.median(values):.1f}"] for name, values in rows),
        label_first=True)
    print("ratio = other_time / alluxiojob_time: median of the paired ratios [their range]; "
          "> 1: alluxiojob is faster")
    print(f"  {'':<19} {'wall':<20} {'submit→SUCCEEDED':<20} {'wall +sync':<20} "
          f"{'submit→SUCCEEDED +sync':<22}")
    for key, _ in others:
        print(f"  alluxiojob/{key:<8} {ratio_text(times[key], times['alluxiojob']):<20} "
              f"{ratio_text(times[key], job_elapsed):<20} "
              f"{ratio_text(synced[key], synced['alluxiojob']):<20} "
              f"{ratio_text(synced[key], job_synced):<22}")
    print("  (+sync: until the tool's writes were on disk; for the job, its submit→SUCCEEDED "
          "plus the write-back timed after the CLI exited; the other tools' +sync rows "
          "are their own)")
    if "rclone" not in times:
        print("  alluxiojob/rclone   skipped: rclone is not installed")
    sys.stdout.flush()


def run(args: argparse.Namespace, base: Path) -> dict[str, object]:
    if args.quick:
        small_files, large_size, partition = 2_000, 64 * MIB, "16MiB"
    else:
        small_files, large_size, partition = 20_000, 256 * MIB, "64MiB"
    drop = not args.warm and can_drop_caches()
    rclone = shutil.which("rclone")
    results: dict[str, object] = {"quick": args.quick, "reps": args.reps,
                                  "caches_dropped": drop}
    print(f"alluxiojob bench, local part{' (--quick)' if args.quick else ''}: "
          f"{tool_versions()}")
    print(f"work dir (datasets, copies and caches on one file system): {base}")
    print("before every timed run: sync, and "
          + ("the page cache dropped" if drop else
             "the page cache kept (--warm)" if args.warm else
             "the page cache kept (dropping it needs root)"))
    if not rclone:
        print("NOTE: rclone is not installed (apt-get install rclone as root); the rclone "
              "timings and ratios are skipped")
    sys.stdout.flush()
    data = base / "data"
    data.mkdir(exist_ok=True)
    small = make_small(data / f"small-{small_files}", small_files, 100, 4 * KIB)
    large = make_large(data / f"large-{large_size // MIB}m", 4, large_size)
    with Cluster(base / "cluster",
                 [f"alluxio.worker.load.file.partition.size={partition}"]) as cluster:
        log(f"starting 1 coordinator + 2 workers (partition size {partition}) in "
            f"{cluster.base}")
        cluster.start()
        print(f"cluster: 1 coordinator + 2 workers on 127.0.0.1, "
              f"alluxio.worker.load.file.partition.size={partition} (other properties default)")
        cli_times = []
        for _ in range(3):
            started = time.perf_counter()
            cluster.cli("job", "list")
            cli_times.append(time.perf_counter() - started)
        results["cli_round_trip"] = statistics.median(cli_times)
        print(f"CLI round trip (alluxiojob job list, median of 3): "
              f"{results['cli_round_trip']:.3f}s; part of every LOAD wall time, as is "
              "--wait's progress polling")
        speed = []
        for ds in (small, large):
            speed.append(bench_dataset(ds, cluster, base / "out", args.reps, rclone, drop))
            print_speed_table(speed[-1], args.reps)
            print_cpu_table(speed[-1], args.reps)
    results["speed"] = [
        {"dataset": ds.name, "files": ds.files, "bytes": ds.nbytes, "times": r["times"],
         "synced": r["synced"], "job_elapsed": r["job_elapsed"], "job_synced": r["job_synced"],
         "cpu": r["cpu"]}
        for ds, r in zip((small, large), speed, strict=True)]
    return results


def main(argv: Sequence[str] | None = None) -> int:
    args = bench_args.parse(argv)  # every part's flags; this part uses its own
    return run_part(args, ("cluster", "out"), args.json, lambda base: run(args, base))


if __name__ == "__main__":
    sys.exit(main())
