"""Sharded jobs across coordinators: one metadata-only LOAD with 1, 2 and 3 coordinators
on one etcd, and per coordinator the files it ran and its CPU per file.

``python scripts/bench_shards.py [--files N] [--dirs D] [--shards S] [--coordinators 1,2,3]
[--idle SECONDS] [--workdir DIR] [--json FILE]``. Each
round starts its own etcd (fsync on), coordinators and two workers on loopback, runs one
LOAD of the same generated tree (``--dirs`` top-level directories), and stops them. The
files a coordinator ran are the shards it finished (``job stat -v``'s owners); its CPU is
that of its process, read from /proc before the submission and after the job's end.

etcd's load: its ``/metrics`` read before the submission and after the job's end (and
over an idle window of ``--idle`` seconds before, to tell the job's load from the
cluster's heartbeats and polls): the gRPC messages it received by method, the bytes it
received and sent from clients, and its MVCC puts, ranges, deletes and transactions.
After the job, every key in etcd by kind, with the size of its value: the shard records
(``shard/<job>/<n>``) are the figure that must stay small, whatever the job's size.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
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


METRICS = ("etcd_network_client_grpc_received_bytes_total",
           "etcd_network_client_grpc_sent_bytes_total", "etcd_mvcc_put_total",
           "etcd_mvcc_range_total", "etcd_mvcc_delete_total", "etcd_mvcc_txn_total")
_SAMPLE = re.compile(r'^(\w+)(?:\{(.*)\})? (\S+)$')


def etcd_metrics(url: str) -> dict[str, float]:
    """Counters of ``METRICS``, and ``grpc:<method>`` (gRPC messages received by method)."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=30) as answer:
        text = answer.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if not match:
            continue
        name, labels, value = match.groups()
        if name in METRICS:
            out[name] = out.get(name, 0.0) + float(value)
        elif name == "grpc_server_msg_received_total":
            method = re.search(r'grpc_method="(\w+)"', labels or "")
            key = f"grpc:{method.group(1) if method else '?'}"
            out[key] = out.get(key, 0.0) + float(value)
    return out


def delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v != before.get(k, 0.0)}


def etcd_keys(url: str) -> dict[str, list[int]]:
    """Every key's value size, by kind (the key's segments with the ids left out)."""
    everything = base64.b64encode(b"\0").decode()  # from the first key to the last
    body: dict[str, object] = {"key": everything, "range_end": everything}
    answer = request(f"{url}/v3/kv/range", body)
    kinds: dict[str, list[int]] = {}
    for kv in answer.get("kvs") or []:  # type: ignore[attr-defined]
        key = base64.b64decode(kv["key"]).decode(errors="replace")
        kind = "/".join(p for p in key.split("/")
                        if p and not re.fullmatch(r"[0-9a-f-]{8,}|\d+", p))
        kinds.setdefault(kind, []).append(len(base64.b64decode(kv.get("value", ""))))
    return kinds


def one_round(base: Path, tree: Path, coordinators: int, shards: int,
              idle: float) -> tuple[list[dict[str, object]], dict[str, object]]:
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
            quiet = etcd_metrics(etcd.url)
            time.sleep(idle)
            etcd_before = etcd_metrics(etcd.url)
            idle_load = {k: v / idle for k, v in delta(etcd_before, quiet).items()}
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
            etcd_load = delta(etcd_metrics(etcd.url), etcd_before)
            keys = etcd_keys(etcd.url)
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
                     "job_s": round(seconds, 1), "state": report["job"]["state"],  # type: ignore[index]
                     "load1": os.getloadavg()[0]})
    done = sum(files.values())
    etcd_row: dict[str, object] = {
        "coordinators": coordinators, "shards": len(report.get("shards") or []),  # type: ignore[arg-type]
        "files": done, "job_s": round(seconds, 1),
        "during_job": {k: round(v) for k, v in sorted(etcd_load.items())},
        "idle_per_s": {k: round(v, 1) for k, v in sorted(idle_load.items())},
        "job_minus_idle_per_1000_files": {
            k: round((v - idle_load.get(k, 0.0) * seconds) / done * 1000, 2)
            for k, v in sorted(etcd_load.items())} if done else {},
        "keys": {kind: {"count": len(sizes), "bytes_max": max(sizes),
                        "bytes_total": sum(sizes)} for kind, sizes in sorted(keys.items())},
    }
    return rows, etcd_row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--dirs", type=int, default=12)
    parser.add_argument("--shards", type=int, default=12)
    parser.add_argument("--coordinators", default="1,2,3")
    parser.add_argument("--idle", type=float, default=10.0)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    results: list[object] = []
    with tempfile.TemporaryDirectory(dir=args.workdir) as scratch:
        root = Path(scratch)
        # under --workdir, the tree is kept and reused by the next run with the same sizes
        place = args.workdir / f"tree-{args.files}-{args.dirs}" if args.workdir else root / "tree"
        tree = make_small(place, args.files, args.dirs, 1).path
        for count in (int(c) for c in args.coordinators.split(",")):
            rows, etcd_row = one_round(root / f"round{count}", tree, count, args.shards,
                                       args.idle)
            for row in rows:
                print(json.dumps(row), flush=True)
            print(json.dumps({"etcd": etcd_row}), flush=True)
            results.append({"coordinators": rows, "etcd": etcd_row})
            if args.json:
                args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
