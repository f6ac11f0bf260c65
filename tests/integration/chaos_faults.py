"""The chaos run's faults: kills, pauses, a filling cache, a source changed mid-load.

A mixin of ``ChaosRun`` (tests/integration/chaos.py), which owns the cluster, etcd, the
report and the lanes. Faults are drawn from the seed; a process under a fault is not
chosen again until it is restored; kills of a coordinator start a failover watch.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from alluxiojob.store.records import unpack_record
from alluxiojob.testing.etcd import EtcdServer, EtcdStartError
from tests.integration.chaos_lanes import Lane, MiB, sha256_bytes, sha256_file
from tests.integration.cluster import Cluster, Service
from tests.integration.etcd_history import JOB_PREFIX, OWNED, EtcdGateway

if TYPE_CHECKING:
    from tests.integration.chaos import ChaosConfig, Report

FAULT_KINDS = (
    "kill_coordinator", "stop_coordinator", "kill_shard_owner", "stop_shard_owner",
    "kill_worker", "stop_worker", "kill_etcd", "stop_etcd", "fill_cache", "change_source",
)
FAULT_WEIGHTS = (2, 2, 3, 3, 3, 3, 1, 1, 1, 2)


class FaultsMixin:
    """Injects and restores faults; ``ChaosRun`` provides what is declared here."""

    cfg: ChaosConfig
    report: Report
    started: float
    fault_rng: random.Random
    faulted: set[str]
    faulted_lock: threading.Lock
    timers: list[threading.Thread]
    checkers: list[threading.Thread]
    lanes: list[Lane]
    etcd: EtcdServer | None
    gateway: EtcdGateway | None
    filler: Path
    filler_busy: bool
    tmp: Path

    def log(self, message: str) -> None: ...

    def request(self, method: str, path: str, timeout: float = 5.0,
                **kwargs: Any) -> httpx.Response | None: ...

    def services(self) -> dict[str, Service]: ...

    def _cluster(self) -> Cluster: ...

    def _inject_faults(self) -> None:
        deadline = time.monotonic() + self.cfg.duration  # from the first fault on
        injected = 0
        while injected < self.cfg.faults and time.monotonic() < deadline:
            time.sleep(self.fault_rng.uniform(0.2, 2 * self.cfg.mean_gap - 0.2))
            self._check_crashes()
            kind = self.fault_rng.choices(FAULT_KINDS, FAULT_WEIGHTS)[0]
            try:
                done = getattr(self, f"_fault_{kind}")()
            except Exception as exc:
                self.report.add(self.report.anomalies,
                                f"fault {kind} could not be injected: {exc!r}")
                done = False
            if done:
                injected += 1
                self.report.faults[kind] += 1
        if injected < self.cfg.faults:
            self.log(f"duration reached after {injected} of {self.cfg.faults} faults")

    def _claim(self, name: str) -> bool:
        with self.faulted_lock:
            if name in self.faulted:
                return False
            self.faulted.add(name)
            return True

    def _release(self, name: str) -> None:
        with self.faulted_lock:
            self.faulted.discard(name)

    def _later(self, delay: float, action: Callable[[], None], name: str) -> None:
        def run() -> None:
            time.sleep(delay)
            try:
                action()
            except Exception:
                self.report.add(self.report.anomalies,
                                f"restoring {name} failed: {traceback.format_exc(limit=3)}")
            finally:
                self._release(name)

        thread = threading.Thread(target=run, daemon=True, name=f"restore-{name}")
        self.timers.append(thread)
        thread.start()

    def _pick_service(self, kind: str) -> Service | None:
        c = self._cluster()
        pool = c.coordinators if kind == "coordinator" else c.workers
        for service in self.fault_rng.sample(pool, len(pool)):
            if service.alive and self._claim(service.name):
                return service
        return None

    def _restart(self, service: Service) -> None:
        """Start a killed service again; retry while it exits (e.g. etcd still down)."""
        for _ in range(30):
            service.start(wait=False)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                assert service.proc is not None
                if service.proc.poll() is not None:
                    break
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(service.health_url, timeout=1).status_code == 200:
                        self.log(f"{service.name} restarted")
                        return
                time.sleep(0.1)
            else:
                return  # running, not yet healthy (etcd down?): it will get there
            self.log(f"{service.name} exited with {service.proc.returncode} at start; "
                     "starting it again")
            time.sleep(1)
        self.report.add(self.report.anomalies, f"{service.name} would not start again")

    def _kill(self, kind: str, service: Service | None = None) -> bool:
        service = service or self._pick_service(kind)
        if service is None:
            return False
        owned = self._owned_jobs(service) if kind == "coordinator" else {}
        shards = self._running_shards(service) if kind == "coordinator" else {}
        killed_at = time.monotonic()
        service.kill()
        delay = self.fault_rng.uniform(0.5, 6.0)
        self.log(f"SIGKILL {service.name}; restart in {delay:.1f}s")
        if owned:
            self._watch_failover(service.name, owned, killed_at)
        if shards:
            self._watch_shard_failover(service.name, shards, killed_at)
        self._later(delay, lambda: self._restart(service), service.name)
        return True

    def _stop(self, kind: str, service: Service | None = None) -> bool:
        service = service or self._pick_service(kind)
        if service is None:
            return False
        service.signal(signal.SIGSTOP)
        delay = self.fault_rng.uniform(0.5, 2.5 * self.cfg.detection_timeout)
        self.log(f"SIGSTOP {service.name}; SIGCONT in {delay:.1f}s")

        def cont() -> None:
            service.signal(signal.SIGCONT)
            self.log(f"SIGCONT {service.name}")

        self._later(delay, cont, service.name)
        return True

    def _fault_kill_coordinator(self) -> bool:
        return self._kill("coordinator")

    def _fault_stop_coordinator(self) -> bool:
        return self._stop("coordinator")

    def _fault_kill_shard_owner(self) -> bool:
        return self._kill("coordinator", self._shard_owner())

    def _fault_stop_shard_owner(self) -> bool:
        return self._stop("coordinator", self._shard_owner())

    def _shard_owner(self) -> Service | None:
        """A live coordinator running some shards of a running job now (read from etcd),
        jobs whose shards several coordinators run first; None when none does."""
        running: dict[str, set[str]] = {}  # job id -> owners of its RUNNING shards
        for (job_id, _index), (state, owner, _claims) in self._shards_now().items():
            if state == "RUNNING":
                running.setdefault(job_id, set()).add(owner)
        coordinators = {self._coordinator_id(s): s for s in self._cluster().coordinators}
        for job_id in sorted(running, key=lambda j: (-len(running[j]), j)):
            owners = sorted(running[job_id])
            for owner in self.fault_rng.sample(owners, len(owners)):
                service = coordinators.get(owner)
                if service is not None and service.alive and self._claim(service.name):
                    self.log(f"{service.name} runs shards of job {job_id} "
                             f"({len(owners)} coordinators do)")
                    return service
        return None

    def _shards_now(self) -> dict[tuple[str, int], tuple[str, str, int]]:
        """(job id, shard) -> (state, owner, claims) of every shard of a job not ended."""
        assert self.gateway is not None
        try:
            jobs = self.gateway.scan(JOB_PREFIX + "job/", timeout=1.0)
            shards = self.gateway.scan(JOB_PREFIX + "shard/", timeout=1.0)
        except httpx.HTTPError:
            return {}  # etcd is down
        live = {key.rsplit("/", 1)[-1] for key, value, _ in jobs
                if unpack_record(value)["state"] in ("RUNNING", "WAITING")}
        found: dict[tuple[str, int], tuple[str, str, int]] = {}
        for _key, value, _rev in shards:
            shard = unpack_record(value)
            if shard["job_id"] in live:
                found[shard["job_id"], int(shard["index"])] = (
                    str(shard["state"]), str(shard["owner"]), int(shard.get("claims", 0)))
        return found

    def _running_shards(self, service: Service) -> dict[tuple[str, int], int]:
        me = self._coordinator_id(service)
        return {key: claims for key, (state, owner, claims) in self._shards_now().items()
                if state == "RUNNING" and owner == me}

    def _watch_shard_failover(self, name: str, held: dict[tuple[str, int], int],
                              killed_at: float) -> None:
        """From the kill until each shard it ran is claimed again, DONE, or its job ended."""
        def watch() -> None:
            waiting = dict(held)
            deadline = killed_at + 180
            while waiting and time.monotonic() < deadline:
                shards = self._shards_now()
                for key, claims in list(waiting.items()):
                    now = shards.get(key)  # None: its job ended
                    if now is None or now[0] == "DONE" or (now[0] == "RUNNING"
                                                           and now[2] > claims):
                        del waiting[key]
                time.sleep(0.1)  # a scan of every shard record: not too often
            took = time.monotonic() - killed_at
            if waiting:
                self.log(f"shard failover of {name}: {len(waiting)} shards not claimed again")
                self.report.add(self.report.anomalies, f"{len(waiting)} shards of {name} "
                                f"not claimed again within 180 s: {sorted(waiting)}")
                return
            with self.report.lock:
                self.report.shard_failovers.append(took)
            self.log(f"shard failover of {name}: {len(held)} shards claimed again, DONE or "
                     f"ended within {took:.2f}s")

        thread = threading.Thread(target=watch, daemon=True, name=f"shard-failover-{name}")
        self.checkers.append(thread)
        thread.start()

    def _fault_kill_worker(self) -> bool:
        return self._kill("worker")

    def _fault_stop_worker(self) -> bool:
        return self._stop("worker")

    def _fault_kill_etcd(self) -> bool:
        etcd = self.etcd
        if etcd is None or not etcd.running or not self._claim("etcd"):
            return False
        etcd.kill()
        delay = self.fault_rng.uniform(0.5, 5.0)
        self.log(f"SIGKILL etcd; restart in {delay:.1f}s")

        def restart() -> None:
            for _ in range(10):
                try:
                    etcd.start()
                    self.log("etcd restarted")
                    return
                except EtcdStartError as exc:
                    self.log(f"etcd restart failed, again: {exc}")
            raise RuntimeError("etcd would not start again")

        self._later(delay, restart, "etcd")
        return True

    def _fault_stop_etcd(self) -> bool:
        etcd = self.etcd
        if etcd is None or not etcd.running or not self._claim("etcd"):
            return False
        etcd.pause()
        delay = self.fault_rng.uniform(0.5, 2 * self.cfg.detection_timeout)
        self.log(f"SIGSTOP etcd; SIGCONT in {delay:.1f}s")

        def cont() -> None:
            etcd.resume()
            self.log("SIGCONT etcd")

        self._later(delay, cont, "etcd")
        return True

    def _fault_fill_cache(self) -> bool:
        """LOAD files that all belong to the small cache and overflow it, then FREE them.

        Both jobs are checked like the lanes' (what does not fit must be listed failed,
        CACHE_FULL); the FREE gives the room back, since pinned files are not evicted.
        """
        if self.filler_busy:
            return False
        body = {"path": str(self.filler), "options": {"batch_size": 4}}
        answer = self.request("POST", "/api/v1/master/submit_job/load", json=body)
        if answer is None or answer.status_code != 200:
            return False
        job_id = answer.json()["id"]
        self.report.acknowledged.add(job_id)
        self.filler_busy = True
        self.log(f"fill_cache: LOAD {job_id} of {self.filler.name}")
        contents = {p.name: [sha256_file(p) or ""] for p in self.filler.iterdir()}

        def check() -> None:
            try:
                report = self._wait_final(job_id)
                if report is not None:
                    self._check_load(f"filler LOAD {job_id}", self.filler, contents,
                                     {k: 0 for k in contents}, 1, report)
                    self._free_and_check("filler", self.filler, sorted(contents))
            finally:
                self.filler_busy = False

        thread = threading.Thread(target=check, daemon=True, name="filler")
        self.checkers.append(thread)
        thread.start()
        return True

    def _fault_change_source(self) -> bool:
        """Replace a file of a running LOAD's tree, atomically, with new content."""
        lanes = [lane for lane in self.lanes if lane.load_job]
        if not lanes:
            return False
        lane = self.fault_rng.choice(lanes)
        with lane.lock:
            if not lane.load_job:
                return False
            names = sorted(lane.contents)
            big = [n for n in names if (lane.tree / n).stat().st_size > MiB]
            # Half the time a multi-partition file: its partitions are read separately.
            rel = self.fault_rng.choice(big if big and self.fault_rng.random() < 0.5 else names)
            target = lane.tree / rel
            old_size = target.stat().st_size
            data = self.fault_rng.randbytes(max(0, old_size + self.fault_rng.randint(-500, 500)))
            staging = self.tmp / f"change-{time.monotonic_ns()}"
            staging.write_bytes(data)
            os.rename(staging, target)
            lane.contents[rel].append(sha256_bytes(data))
            lane.changed.add(rel)
        self.log(f"change_source: replaced {rel!r} of lane{lane.index} "
                 f"({old_size} -> {len(data)} bytes) during LOAD {lane.load_job}")
        return True

    def _check_crashes(self) -> None:
        """A service that died without being killed is a finding; it is started again."""
        for name, service in self.services().items():
            if (name not in self.faulted and service.proc is not None
                    and service.proc.poll() is not None and self._claim(name)):
                self.report.add(self.report.anomalies,
                                f"{name} exited by itself with {service.proc.returncode}: "
                                + service.log()[-1500:])
                self._later(0, lambda s=service: self._restart(s), name)

    def _restore_all(self) -> None:
        self._check_crashes()
        for t in self.timers:
            t.join(120)
        for service in self.services().values():
            with contextlib.suppress(Exception):
                service.wait_healthy(60)
        etcd = self.etcd
        if etcd is not None and not etcd.running:
            etcd.start()

    # ------------------------------------------------------------------ failover
    def _coordinator_id(self, service: Service) -> str:
        return f"127.0.0.1:{service.port}"  # type: ignore[attr-defined]

    def _owned_jobs(self, service: Service) -> dict[str, int]:
        """Jobs the coordinator owns now, with their claim counts (read from etcd)."""
        assert self.gateway is not None
        me = self._coordinator_id(service)
        try:
            records = self.gateway.scan(JOB_PREFIX + "job/", timeout=1.0)
        except httpx.HTTPError:
            return {}  # etcd is down: this kill's failover is not measured
        owned: dict[str, int] = {}
        for key, value, _rev in records:
            job = unpack_record(value)
            if job["state"] in OWNED and job["owner"] == me:
                owned[key.rsplit("/", 1)[-1]] = int(job["claims"])
        return owned

    def _watch_failover(self, name: str, owned: dict[str, int], killed_at: float) -> None:
        assert self.gateway is not None
        gateway = self.gateway

        def watch() -> None:
            waiting = dict(owned)
            finished: set[str] = set()
            longest = 0.0
            deadline = killed_at + 180
            while waiting and time.monotonic() < deadline:
                try:
                    records = gateway.scan(JOB_PREFIX + "job/", timeout=1.0)
                except httpx.HTTPError:
                    time.sleep(0.1)
                    continue
                now = time.monotonic()
                for key, value, _rev in records:
                    job_id = key.rsplit("/", 1)[-1]
                    if job_id not in waiting:
                        continue
                    job = unpack_record(value)
                    if int(job["claims"]) > waiting[job_id] and job["state"] != "WAITING":
                        longest = max(longest, now - killed_at)
                        del waiting[job_id]
                    elif job["state"] not in OWNED and job["state"] != "WAITING":
                        # Final without a new claim: its owner finished it before the
                        # kill landed (or it was stopped); nothing to fail over.
                        finished.add(job_id)
                        del waiting[job_id]
                time.sleep(0.05)
            if waiting:
                self.log(f"failover of {name}: {len(waiting)} jobs not claimed again")
                return
            if finished:
                self.log(f"failover of {name}: {len(finished)} jobs ended by their owner "
                         f"before the kill, not measured")
            if len(finished) == len(owned):
                return
            with self.report.lock:
                self.report.failovers.append(longest)
            self.log(f"failover of {name}: {len(owned) - len(finished)} jobs claimed again after "
                     f"{longest:.2f}s")

        thread = threading.Thread(target=watch, daemon=True, name=f"failover-{name}")
        self.checkers.append(thread)
        thread.start()


__all__ = ["FAULT_KINDS", "FAULT_WEIGHTS", "FaultsMixin"]
