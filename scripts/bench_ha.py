"""HA scheduler benchmark: submit-to-RUNNING latency, claims/s with 3 coordinators, and
the same etcd server's raw transaction rate, measured side by side in one run.

Run by ``scripts/bench`` after the speed part (``--ha-only`` for this part alone), or
directly: ``python scripts/bench_ha.py`` (the flags of ``scripts/bench --help``). It starts
its own etcd (fsync on, as in production) and coordinators on loopback, and stops them.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import bench_args
import httpx
import trio
from bench_common import free_ports

from alluxiojob.core.job import JobOptions, JobType
from alluxiojob.store.etcd import EtcdKVStore
from alluxiojob.store.jobs import JobStore
from alluxiojob.store.kv import Compare, Put
from alluxiojob.testing.etcd import EtcdServer

POLL = "100ms"  # queue poll of the claiming coordinators: all three keep trying


def raw_txn_rate(url: str, count: int, concurrency: int) -> float:
    """Compare-and-swap txns/s through the coordinators' own etcd client, no job logic.

    Each of ``concurrency`` clients is its own ``EtcdKVStore`` (its own gRPC channel),
    as each coordinator is, driven from one trio task.
    """
    run = time.time_ns()

    async def main() -> float:
        stores = [EtcdKVStore([url], read_timeout=10, write_timeout=10, max_retries=2)
                  for _ in range(concurrency)]
        try:
            async def one(worker: int) -> None:
                kv = stores[worker]
                key = f"/bench/raw/{run}/{worker}".encode()
                revision = 0
                for i in range(count // concurrency):
                    applied = await kv.txn([Compare(key, revision)], [Put(key, str(i).encode())])
                    assert applied is not None
                    revision = applied

            started = time.perf_counter()
            async with trio.open_nursery() as nursery:
                for worker in range(concurrency):
                    nursery.start_soon(one, worker)
            return (count // concurrency) * concurrency / (time.perf_counter() - started)
        finally:
            for kv in stores:
                await kv.aclose()

    return trio.run(main)


def seed_jobs(url: str, prefix: str, dirs: list[Path]) -> None:
    async def main() -> None:
        kv = EtcdKVStore([url], read_timeout=10, write_timeout=10, max_retries=2)
        store = JobStore(kv, prefix=prefix)
        try:
            for d in dirs:
                await store.submit(JobType.LOAD, f"file://{d}", "", JobOptions(), 10**9)
        finally:
            await kv.aclose()

    trio.run(main)


def list_jobs(url: str, prefix: str) -> list[dict[str, object]]:
    async def main() -> list[dict[str, object]]:
        kv = EtcdKVStore([url], read_timeout=10, write_timeout=10, max_retries=2)
        try:
            return [job.to_wire() for job in await JobStore(kv, prefix=prefix).list_jobs()]
        finally:
            await kv.aclose()

    return trio.run(main)


def launch_coordinator(
    root: Path, index: int, etcd_url: str, prefix: str, poll: str = "1s"
) -> tuple[subprocess.Popen[bytes], int]:
    """Start a coordinator process without waiting for it (see ``wait_healthy``)."""
    port = free_ports(1)[0]
    log = open(root / f"coordinator{index}.log", "wb")
    workers = root / "workers"
    workers.touch()
    proc = subprocess.Popen(
        [sys.executable, "-m", "alluxiojob.cli.main", "coordinator",
         "-D", "alluxio.coordinator.job.meta.store.type=ETCD",
         "-D", f"alluxio.etcd.endpoints={etcd_url}",
         "-D", f"alluxio.coordinator.scheduler.job.etcd.path={prefix}",
         "-D", f"alluxio.coordinator.scheduler.job.etcd.poll.interval={poll}",
         "-D", f"alluxio.coordinator.rest.port={port}",
         "-D", "alluxio.coordinator.hostname=127.0.0.1",
         "-D", f"alluxio.work.dir={root / f'work{index}'}",
         "-D", f"alluxio.worker.static.config.file={workers}",
         "-D", "alluxio.coordinator.scheduler.running.job.capacity=100000"],
        stdout=log, stderr=subprocess.STDOUT)
    return proc, port


def wait_healthy(root: Path, index: int, port: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise SystemExit(f"coordinator {index} did not start; see {root}/coordinator{index}.log")


def etcd_requests(port: int) -> int:
    """Job-store requests this coordinator made (alluxio_scheduler_job_access_etcd)."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return int(sum(float(line.split()[-1]) for line in text.splitlines()
                   if line.startswith("alluxio_scheduler_job_access_etcd_total{")))


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def main() -> None:
    options = bench_args.parse()  # every part's flags; this part uses its own
    jobs_wanted = options.ha_jobs or (100 if options.quick else 600)

    root = Path(tempfile.mkdtemp(prefix="alluxiojob-bench-ha."))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        with EtcdServer(data_dir=root / "etcd") as etcd:
            raw_1 = statistics.median(raw_txn_rate(etcd.url, 500, 1) for _ in range(3))
            raw_3 = statistics.median(raw_txn_rate(etcd.url, 600, 3) for _ in range(3))

            # Claims/s: 3 coordinators are started and paused (SIGSTOP), waiting jobs on
            # empty dirs are queued, and the coordinators resume together (SIGCONT), all
            # polling the same full queue.
            dirs = []
            for i in range(jobs_wanted):
                d = root / "empty" / f"d{i}"
                d.mkdir(parents=True)
                dirs.append(d)
            prefix = "/bench/claims/jobs/"
            launched = [launch_coordinator(root, i, etcd.url, prefix, POLL)
                        for i in range(3)]
            procs = [proc for proc, _ in launched]
            for i, (_, port) in enumerate(launched):
                wait_healthy(root, i, port)
            for proc in procs:
                proc.send_signal(signal.SIGSTOP)
            try:
                seed_jobs(etcd.url, prefix, dirs)
            finally:
                for proc in procs:
                    proc.send_signal(signal.SIGCONT)
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                jobs = list_jobs(etcd.url, prefix)
                if all(j["state"] == "SUCCEEDED" for j in jobs):
                    break
                time.sleep(0.5)
            requests = sum(etcd_requests(port) for _, port in launched)
            starts = sorted(float(j["started_at"]) for j in jobs)  # type: ignore[arg-type]
            ends = sorted(float(j["finished_at"]) for j in jobs)  # type: ignore[arg-type]
            claims_per_s = (len(starts) - 1) / (starts[-1] - starts[0])
            finished_per_s = len(ends) / (ends[-1] - starts[0])
            by_owner: dict[str, int] = {}
            per_claims: dict[str, int] = {}
            for j in jobs:
                key = str(j["claims"])
                per_claims[key] = per_claims.get(key, 0) + 1
            for index in range(3):
                log = (root / f"coordinator{index}.log").read_text(errors="replace")
                by_owner[f"coordinator{index}"] = log.count('"job started"')
            stop(procs)
            procs = []

            # Submit-to-RUNNING: one coordinator idle, submissions through its REST API.
            prefix = "/bench/latency/jobs/"
            proc, port = launch_coordinator(root, 9, etcd.url, prefix)
            procs = [proc]
            wait_healthy(root, 9, port)
            # One client with keep-alive, as a program that submits jobs would hold: a new
            # connection for every poll would load the coordinator's event loop with TCP
            # and HTTP set-up while it claims (it measured about twice the latency).
            latencies = []
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
                for i in range(options.ha_latency_samples):
                    d = root / "latency" / f"d{i}"
                    d.mkdir(parents=True)
                    job_id = client.post("/api/v1/master/submit_job/load",
                                         json={"path": str(d)}).json()["id"]
                    while True:
                        job = client.get(f"/api/v1/master/job/{job_id}").json()["job"]
                        if job["started_at"]:
                            latencies.append(job["started_at"] - job["created_at"])
                            break
                        time.sleep(0.01)
            stop(procs)
            procs = []

        latencies.sort()
        figures = {
            "etcd_raw_txn_per_s_1_client": raw_1,
            "etcd_raw_txn_per_s_3_clients": raw_3,
            "claims_per_s_3_coordinators": claims_per_s,
            "claims_to_raw_txn_ratio": claims_per_s / raw_3,
            "jobs_finished_per_s_3_coordinators": finished_per_s,
            "etcd_requests_per_job": requests / len(jobs),
            "jobs": len(starts),
            "claims_per_job": per_claims,
            "jobs_run_per_coordinator": by_owner,
            "submit_to_running_ms_median": statistics.median(latencies) * 1000,
            "submit_to_running_ms_p95": latencies[max(0, int(len(latencies) * 0.95) - 1)] * 1000,
        }
        print("\nHA scheduler (3 coordinators, one etcd, fsync on)")
        print(f"  etcd raw CAS txn/s, 1 client          {raw_1:8.0f}")
        print(f"  etcd raw CAS txn/s, 3 clients         {raw_3:8.0f}")
        print(f"  job claims/s, 3 coordinators          {claims_per_s:8.1f}   "
              f"({len(starts)} jobs, claimed once each: {per_claims == {'1': len(starts)}})")
        print(f"  claims/s ÷ raw txn/s (3 clients)      {claims_per_s / raw_3:8.3f}")
        print(f"  jobs finished/s (claim to SUCCEEDED)  {finished_per_s:8.1f}")
        print(f"  etcd requests per job, all included   {requests / len(jobs):8.2f}")
        print(f"  jobs run by each coordinator          {sorted(by_owner.values())}")
        median, p95 = figures["submit_to_running_ms_median"], figures["submit_to_running_ms_p95"]
        print(f"  submit → RUNNING, median / p95        {median:6.1f} ms / {p95:.1f} ms")
        if options.ha_json:
            options.ha_json.write_text(json.dumps(figures, indent=2))
    finally:
        stop(procs)
        if os.environ.get("KEEP") != "1":
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
