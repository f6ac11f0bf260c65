"""Sharded jobs across coordinators: one metadata-only LOAD with 1, 2 and 3 coordinators
on one etcd, and per coordinator the files it ran and its CPU per file.

``python scripts/bench_shards.py [--files N] [--dirs D] [--coordinators 1,2,3]``. Each
round starts its own etcd (fsync on), coordinators and two workers on loopback, runs one
LOAD of the same generated tree (``--dirs`` top-level directories), and stops them. The
files a coordinator ran are the shards it finished (``job stat -v``'s owners); its CPU is
that of its process, read from /proc before the submission and after the job's end.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import urllib.request
from pathlib import Path

from bench_common import Cluster, Service, free_ports, make_small
from bench_cpu import processes_cpu

from alluxiojob.testing.etcd import EtcdServer


def request(url: str, body: dict[str, object] | None = None) -> dict[str, object]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as answer:
        result: dict[str, object] = json.loads(answer.read())
        return result


def one_round(base: Path, tree: Path, coordinators: int, shards: int) -> list[dict[str, object]]:
    with EtcdServer(data_dir=base / "etcd") as etcd:
        defines = ["alluxio.coordinator.job.meta.store.type=ETCD",
                   f"alluxio.etcd.endpoints={etcd.url}",
                   f"alluxio.job.shard.count={shards}",
                   "alluxio.job.shard.concurrency=4",
                   "alluxio.coordinator.scheduler.job.etcd.poll.interval=200ms"]
        with Cluster(base / "cluster", defines) as cluster:
            ports = {"coordinator": int(cluster.services["coordinator"].health_url
                                        .rsplit(":", 1)[1].split("/")[0])}
            for i, port in enumerate(free_ports(coordinators - 1), start=2):
                name = f"coordinator{i}"
                ports[name] = port
                cluster.services[name] = Service(
                    name, ["coordinator", "-D", f"alluxio.coordinator.rest.port={port}"],
                    f"http://127.0.0.1:{port}/healthz", base / "cluster" / "logs" / f"{name}.log")
            cluster.start()
            pids = {name: cluster.services[name].proc.pid  # type: ignore[union-attr]
                    for name in ports}
            before = {name: processes_cpu([pid]) for name, pid in pids.items()}
            url = f"http://127.0.0.1:{ports['coordinator']}"
            job = request(f"{url}/api/v1/master/submit_job/load",
                          {"path": str(tree), "options": {"metadata_only": True}})
            started = time.monotonic()
            while True:
                report = request(f"{url}/api/v1/master/job/{job['id']}/progress")
                if report["job"]["state"] in ("SUCCEEDED", "FAILED"):  # type: ignore[index]
                    break
                time.sleep(0.2)
            seconds = time.monotonic() - started
            after = {name: processes_cpu([pid]) for name, pid in pids.items()}
    files: dict[str, int] = {}
    for shard in report.get("shards") or []:  # type: ignore[attr-defined]
        files[shard["owner"]] = files.get(shard["owner"], 0) + shard["files_processed"]
    rows = []
    for name, port in ports.items():
        ran = files.get(f"127.0.0.1:{port}", 0)
        cpu = after[name] - before[name]
        rows.append({"coordinators": coordinators, "coordinator": name, "files": ran,
                     "cpu_s": round(cpu, 2),
                     "cpu_us_per_file": round(cpu / ran * 1e6, 1) if ran else None,
                     "job_s": round(seconds, 1), "state": report["job"]["state"]})  # type: ignore[index]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--dirs", type=int, default=12)
    parser.add_argument("--shards", type=int, default=12)
    parser.add_argument("--coordinators", default="1,2,3")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.workdir) as scratch:
        root = Path(scratch)
        tree = make_small(root / "tree", args.files, args.dirs, 1).path
        for count in (int(c) for c in args.coordinators.split(",")):
            for row in one_round(root / f"round{count}", tree, count, args.shards):
                print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
