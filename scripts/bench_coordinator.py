"""The coordinator's CPU per file on a metadata-only LOAD of a tree of empty files.

``python scripts/bench_coordinator.py [--files N] [--runs R] [--profile DIR]``. Starts
one coordinator (RocksDB store) and two workers on loopback, runs R metadata-only LOADs
of the same tree (a new job each), and prints for each the coordinator's CPU per file
(from /proc, before the submission and after the job's end), the workers', the
coordinator's peak RSS during the job, and the median. ``--profile`` records the
coordinator of the last run with py-spy (as root) into a speedscope file under DIR.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from bench_common import Cluster, RssSampler, make_empty_nested
from bench_cpu import cluster_cpu


def request(url: str, body: dict[str, object] | None = None) -> dict[str, object]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as answer:
        result: dict[str, object] = json.loads(answer.read())
        return result


def one_load(cluster: Cluster, tree: Path, files: int, profile: Path | None,
             batch_size: int = 0) -> dict[str, object]:
    url = cluster.services["coordinator"].health_url.rsplit("/", 1)[0]
    roles = {name: s.proc.pid for name, s in cluster.services.items()  # type: ignore[union-attr]
             if s.proc is not None}
    spy = None
    if profile is not None:
        spy_exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        spy = subprocess.Popen([spy_exe, "record", "--format", "speedscope", "-r", "200",
                                "-o", str(profile), "--pid", str(roles["coordinator"])],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.0)
    sampler = RssSampler({"coordinator": roles["coordinator"]})
    sampler.__enter__()
    before = cluster_cpu(roles)
    job = request(f"{url}/api/v1/master/submit_job/load",
                  {"path": str(tree), "options": {"metadata_only": True,
                                                   **({"batch_size": batch_size}
                                                      if batch_size else {})}})
    started = time.monotonic()
    while True:
        report = request(f"{url}/api/v1/master/job/{job['id']}/progress")
        state = report["job"]["state"]  # type: ignore[index]
        if state in ("SUCCEEDED", "FAILED"):
            break
        time.sleep(1.0)
    seconds = time.monotonic() - started
    after = cluster_cpu(roles)
    sampler.__exit__()
    if spy is not None:
        spy.send_signal(2)
        spy.wait(timeout=120)
    return {"state": state, "job_s": round(seconds, 1),
            "coordinator_peak_rss_mib": round(sampler.peak_kib["coordinator"] / 1024, 1),
            **{f"{group}_us_per_file": round((after[group] - before[group]) / files * 1e6, 1)
               for group in ("coordinator", "worker")}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--profile", type=Path, default=None)
    parser.add_argument("--batch-size", type=int, default=0,
                        help="files per task (default: alluxio.job.batch.size)")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--tree", type=Path, default=None,
                        help="where the tree of empty files is kept between runs")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.workdir) as scratch:
        root = Path(scratch)
        tree = make_empty_nested(args.tree or root / "tree", [args.files])[0].path
        results = []
        with Cluster(root / "cluster") as cluster:
            cluster.start()
            for run in range(args.runs):
                last = run == args.runs - 1
                profile = (args.profile / f"coordinator-{int(time.time())}.speedscope.json"
                           if args.profile is not None and last else None)
                row = one_load(cluster, tree, args.files, profile, args.batch_size)
                results.append(row)
                print(json.dumps({"run": run + 1, **row}), flush=True)
        median = statistics.median(float(r["coordinator_us_per_file"])  # type: ignore[arg-type]
                                   for r in results)
        with open("/proc/loadavg") as f:
            load = f.read().split()[:3]
        print(json.dumps({"files": args.files, "coordinator_us_per_file_median": median,
                          "loadavg": load}), flush=True)


if __name__ == "__main__":
    main()
