"""Sharded listing of an S3 bucket against one listing stream and `rclone lsf -R`.

``python scripts/bench_listing.py [--keys N] [--prefixes P] [--latency-ms MS]
[--shards 1,8,16] [--concurrency 0] [--checkers 8,32,64,128] [--reps 3]``

The bucket is on the bench S3 server (``alluxiojob/testing/s3_nginx.py``, nginx + Lua)
as a listing-only bucket: ``P`` prefixes ``p-NNNN/`` of ``N/P`` keys each, in its index
and not on disk (a GET would be 404; a listing needs no file). Every request waits the
added latency first (a non-blocking sleep in nginx).

"ours, S shards" is the lister as a coordinator runs a sharded job: the top level read
with one delimiter listing and split into ``S`` key ranges (``coordinator/sharding.py``:
``top_level`` and ``core/shards.py``: ``split``), then each range walked by
``ObjectStoreUfs.walk`` from its lower bound, stopping past its upper bound, in pages of
``LIST_PAGE`` (``coordinator/runner.py``), ``--concurrency`` ranges at once (0: all of
them, as coordinators with enough ``alluxio.job.shard.concurrency`` between them would).
"ours, 1 shard" is a single listing stream (``alluxio.job.shard.count=1``). `rclone lsf -R`
lists the bucket as one flat stream (its S3 backend's ListR: ``--checkers`` does not
change it); "walk" adds ``--disable ListR``, so that rclone lists each prefix with a
delimiter, ``--checkers`` prefixes at once (``--flat-checkers`` are those of the plain runs).

Reported per run: the wall time, the keys listed (each run must list all of them), the
CPU time of the lister (this process for ours, the child for rclone) and of nginx, the
requests nginx answered, and the load average. Medians over ``--reps`` repetitions,
whose order rotates.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench_common import rotations
from bench_cpu import processes_cpu

from alluxiojob.config import load_config
from alluxiojob.coordinator.runner import LIST_PAGE
from alluxiojob.coordinator.sharding import top_level
from alluxiojob.core.shards import ShardRecord, split
from alluxiojob.testing.s3_nginx import NginxS3Server
from alluxiojob.ufs import ufs_for
from alluxiojob.ufs.settings import UfsSettings

BUCKET = "listing"


def self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def list_range(path: str, config_defines: list[str], record: ShardRecord) -> int:
    """One shard's walk as a ``ShardRunner`` lists it: the count of keys."""
    config = load_config(None, config_defines, environ={})
    ufs = ufs_for(path, UfsSettings.from_config(config))
    count = in_page = 0
    for item in ufs.walk(path, record.start(())):
        if record.past_end(item.parts):
            break
        count += 1
        in_page += 1
        if in_page == LIST_PAGE:  # the runner hands a page over to the event loop
            in_page = 0
    return count


def ours(path: str, defines: list[str], shards: int, concurrency: int) -> int:
    config = load_config(None, defines, environ={})
    ranges = split(top_level(path, config), shards) if shards > 1 else [((), ())]
    records = [ShardRecord("bench", i, after, until) for i, (after, until) in enumerate(ranges)]
    with ThreadPoolExecutor(max_workers=concurrency or len(records)) as pool:
        return sum(pool.map(lambda r: list_range(path, defines, r), records))


def rclone(env: dict[str, str], checkers: int, walk: bool) -> int:
    extra = ["--disable", "ListR"] if walk else []
    result = subprocess.run(
        ["rclone", "lsf", "-R", "--files-only", "--checkers", str(checkers), *extra,
         f"bench:{BUCKET}"],
        stdin=subprocess.DEVNULL, capture_output=True, env=env, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"rclone exited {result.returncode}: {result.stderr[-2000:]!r}")
    return result.stdout.count(b"\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--prefixes", type=int, default=1000)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--shards", default="1,8,16")
    parser.add_argument("--concurrency", type=int, default=0)
    parser.add_argument("--checkers", default="8,32,64,128", help="rclone's, per prefix")
    parser.add_argument("--flat-checkers", default="8,128", help="rclone's, one stream")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--nginx-workers", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    per = -(-args.keys // args.prefixes)
    rows = ((f"p-{i // per:04d}/obj-{i % per:06d}.bin", 1024, 1_700_000_000)
            for i in range(args.keys))
    runs: dict[str, list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(dir=args.workdir) as scratch:
        server = NginxS3Server(Path(scratch) / "s3", latency=args.latency_ms / 1000,
                               workers=args.nginx_workers)
        server.put_listing(BUCKET, rows)
        with server:
            defines = [f"{k}={v}" for k, v in server.properties().items()]
            # rclone's AWS SDK refuses a custom CA bundle with its own HTTP transport
            env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
            env.update({"RCLONE_CONFIG": "/dev/null", **server.rclone_env("bench")})
            path = f"s3://{BUCKET}/"
            tools = {f"ours, {s} shard{'s' if s > 1 else ''}":
                     (lambda s=s: ours(path, defines, s, args.concurrency))
                     for s in (int(x) for x in args.shards.split(",") if x)}
            for c in (int(x) for x in args.flat_checkers.split(",") if x):
                tools[f"rclone --checkers {c}"] = lambda c=c: rclone(env, c, False)
            for c in (int(x) for x in args.checkers.split(",") if x):
                tools[f"rclone --checkers {c} walk"] = lambda c=c: rclone(env, c, True)
            for order in rotations(list(tools), args.reps):
                for name in order:
                    nginx0, requests0 = processes_cpu(server.pids()), server.request_count()
                    own0, kids0 = self_cpu(), children_cpu()
                    started = time.perf_counter()
                    listed = tools[name]()
                    wall = time.perf_counter() - started
                    own = self_cpu() - own0 if name.startswith("ours") else children_cpu() - kids0
                    run = {"wall_s": wall, "keys": listed, "cpu_s": own,
                           "nginx_cpu_s": processes_cpu(server.pids()) - nginx0,
                           "requests": server.request_count() - requests0 - 1,
                           "load1": os.getloadavg()[0]}
                    if listed != args.keys:
                        raise RuntimeError(f"{name} listed {listed} keys, not {args.keys}")
                    runs.setdefault(name, []).append(run)
                    print(json.dumps({"tool": name, **{k: round(v, 3) for k, v in run.items()}}),
                          flush=True)
    medians = {name: {k: statistics.median(r[k] for r in rs) for k in rs[0]}
               for name, rs in runs.items()}
    single = medians.get("ours, 1 shard", {}).get("wall_s")
    best_rclone = min((m["wall_s"] for n, m in medians.items() if n.startswith("rclone")),
                      default=None)
    print(f"\n{args.keys:,} keys under {args.prefixes:,} prefixes, {args.latency_ms:g} ms "
          f"added per request; medians of {args.reps}")
    print(f"{'':30} {'wall s':>7} {'keys/s':>9} {'CPU s':>6} {'nginx s':>7} {'requests':>8}"
          f" {'x 1 stream':>10} {'x rclone best':>13}")
    for name, m in medians.items():
        vs_single = f"{single / m['wall_s']:.1f}" if single else "-"
        vs_rclone = f"{best_rclone / m['wall_s']:.2f}" if best_rclone else "-"
        print(f"{name:30} {m['wall_s']:7.2f} {args.keys / m['wall_s']:9,.0f} {m['cpu_s']:6.2f}"
              f" {m['nginx_cpu_s']:7.2f} {m['requests']:8.0f} {vs_single:>10} {vs_rclone:>13}")
    if args.json:
        args.json.write_text(json.dumps({"runs": runs, "medians": medians}, indent=1))


if __name__ == "__main__":
    main()
