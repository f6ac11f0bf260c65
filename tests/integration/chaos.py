"""A chaos run: real etcd, 3 coordinators and 3 workers on loopback, jobs, faults, checks.

Used by ``scripts/chaos`` (long runs, the figures in docs/robustness.md) and by
``tests/integration/test_chaos.py`` (a short run with a fixed seed). The faults live in
``chaos_faults.py``, the job lanes and their checks in ``chaos_lanes.py``, the reading
and audit of etcd's history in ``etcd_history.py``; this module sets up, runs and reports.

Theory of operation
-------------------
*Cluster.* One etcd holds the job store of three coordinators (HA mode). Workers use
STATIC membership: every path then has a fixed set of owners, so a FREE must reach every
worker and its result can be checked exactly; with ETCD membership a worker that is dead
past its lease leaves the ring and a FREE legitimately skips it, so a file left cached
there could not be told from a bug. One worker has a small cache
(``alluxio.worker.page.store.sizes``) so that caches really fill. Pins keep their
default (``alluxio.worker.job.cache.pin.time``, 10 minutes, longer than a run): a
shorter one lets a long-running job's files be evicted (see docs/robustness.md), which this
run would count as lost.

*Workload.* Each *lane* owns a generated tree (odd names, empty files, files spanning
several 1 MiB partitions) and runs jobs on it one after another: LOAD (sometimes with
replicas, skip-if-exists, verify or a bandwidth limit), FREE, COPY to a fresh directory,
MOVE to a fresh directory (which becomes the lane's tree). Lanes run concurrently, so
the cluster sees a stream of jobs. After each job reaches a final state its lane checks
what the job claims, at once, on the disks themselves (caches are plain files):

- LOAD: every file is cached, with a sha256 equal to a version the source had while the
  job ran, in at least ``replicas`` worker caches; no cache holds a copy that matches no
  version at all (a torn copy). A file whose source changed mid-load may keep its old
  content (the index records the old mtime, so it is stale, not fresh); the lane then
  reloads with ``skip_if_exists``, and that LOAD must cache the final content.
- FREE: no cache holds any file of the tree.
- COPY/MOVE: every file is at the destination with the right sha256 (MOVE: and gone
  from the source).
- A FAILED job is fine only where every file it did not do is listed by
  ``--file-status FAILURE`` with a reason.

While a MOVE runs its lane samples, every poll, that each source file is still in place
or already at its destination with identical content; at the end every file of every
lane must exist, with its last content, where the lane's jobs put it.

*Faults* come from the seed: SIGKILL or SIGSTOP of a coordinator, a worker or etcd
(killed ones restarted, stopped ones continued, after a random delay), a LOAD of 12 MiB
owned by the 8 MiB cache (then a FREE of it), and a source file replaced (atomically,
as object stores and most writers do) while a LOAD of it runs.

*End of run.* Faults stop, every process is back, lanes finish their current job within
the grace period. Then:

- jobs lost: acknowledged (submit answered 200) but not findable, or not final;
- double-owner writes: etcd's history of the job prefix, replayed from revision 1 with a
  watch, must show every ``progress/<id>`` write made while the job record named its
  writer (``Progress.writer``) as owner, and every failure-list write while the job was
  owned; a final SUCCEEDED/FAILED transition must carry its owner's progress;
- longest failover: from a coordinator's SIGKILL to each of its jobs claimed again.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from alluxiojob.core.ring import HashRing
from alluxiojob.testing.etcd import EtcdServer
from tests.integration.chaos_faults import FaultsMixin
from tests.integration.chaos_lanes import (
    FINAL,
    Lane,
    LanesMixin,
    MiB,
    make_lane_tree,
    sha256_file,
)
from tests.integration.cluster import Cluster, Service
from tests.integration.etcd_history import (
    JOB_PREFIX,
    EtcdGateway,
    JobEnds,
    audit_job_ends,
    audit_owner_writes,
)

SMALL_CACHE_WORKER = 2  # the worker whose cache fills (alluxio.worker.page.store.sizes)


@dataclass
class Report:
    seed: int
    faults: Counter[str] = field(default_factory=Counter)
    acknowledged: set[str] = field(default_factory=set)
    jobs_by_state: Counter[str] = field(default_factory=Counter)
    jobs_lost: list[str] = field(default_factory=list)
    files_wrong: list[str] = field(default_factory=list)
    move_lost: list[str] = field(default_factory=list)
    double_owner: list[str] = field(default_factory=list)
    counters_backwards: list[str] = field(default_factory=list)
    final_not_once: list[str] = field(default_factory=list)
    shards_unfinished: list[str] = field(default_factory=list)
    progress_reports: int = 0
    ends: JobEnds = field(default_factory=JobEnds)
    failovers: list[float] = field(default_factory=list)
    shard_failovers: list[float] = field(default_factory=list)
    stale_copies: int = 0
    anomalies: list[str] = field(default_factory=list)
    history_events: int = 0
    wall_seconds: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def lost(self) -> int:
        return (len(self.jobs_lost) + len(self.files_wrong) + len(self.move_lost)
                + len(self.double_owner))

    @property
    def failed_checks(self) -> int:
        """Lost, plus counters that went back, final states not written once, and
        shards not finished."""
        return (self.lost + len(self.counters_backwards) + len(self.final_not_once)
                + len(self.shards_unfinished))

    def add(self, bucket: list[str], message: str) -> None:
        with self.lock:
            bucket.append(message)

    def ended(self, state: str) -> None:
        with self.lock:
            self.jobs_by_state[state] += 1

    def summary(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "faults": sum(self.faults.values()),
            "faults_by_kind": dict(sorted(self.faults.items())),
            "jobs_acknowledged": len(self.acknowledged),
            "jobs_by_state": dict(sorted(self.jobs_by_state.items())),
            "jobs_lost": len(self.jobs_lost),
            "files_lost_or_wrong": len(self.files_wrong),
            "move_sources_lost": len(self.move_lost),
            "double_owner_writes": len(self.double_owner),
            "history_events_audited": self.history_events,
            "progress_reports_checked": self.progress_reports,
            "counters_backwards": len(self.counters_backwards),
            "final_state_not_written_once": len(self.final_not_once),
            "shards_unfinished": len(self.shards_unfinished),
            "sharded_jobs": self.ends.sharded_jobs,
            "sharded_jobs_on_2_or_more_coordinators": self.ends.spread_jobs,
            "shards": self.ends.shards,
            "shard_claims": self.ends.shard_claims,
            "sharded_jobs_failed_early": self.ends.failed_early,
            "longest_failover_s": round(max(self.failovers), 2) if self.failovers else None,
            "failovers_measured": len(self.failovers),
            "longest_shard_failover_s": (round(max(self.shard_failovers), 2)
                                         if self.shard_failovers else None),
            "shard_failovers_measured": len(self.shard_failovers),
            "stale_copies_reloaded": self.stale_copies,
            "anomalies": len(self.anomalies),
            "wall_s": round(self.wall_seconds, 1),
        }

    def render(self) -> str:
        s = self.summary()
        lines = [
            f"seed {s['seed']}: {s['faults']} faults "
            + ", ".join(f"{k} {v}" for k, v in s["faults_by_kind"].items()),
            f"  jobs acknowledged {s['jobs_acknowledged']} "
            f"({', '.join(f'{k} {v}' for k, v in s['jobs_by_state'].items())}), "
            f"jobs lost {s['jobs_lost']}",
            f"  files lost or wrong {s['files_lost_or_wrong']}, MOVE sources lost "
            f"{s['move_sources_lost']}, double-owner writes {s['double_owner_writes']} "
            f"(of {s['history_events_audited']} etcd events)",
            f"  sharded jobs {s['sharded_jobs']} ({s['sharded_jobs_on_2_or_more_coordinators']} "
            f"on 2+ coordinators; {s['shards']} shards, {s['shard_claims']} claims), "
            f"counters backwards {s['counters_backwards']} (of {s['progress_reports_checked']} "
            f"reports), final state not written once {s['final_state_not_written_once']}, "
            f"shards unfinished {s['shards_unfinished']}",
            f"  longest failover {s['longest_failover_s']} s over {s['failovers_measured']} "
            f"measured, longest shard failover {s['longest_shard_failover_s']} s over "
            f"{s['shard_failovers_measured']}, stale copies reloaded "
            f"{s['stale_copies_reloaded']}, "
            f"anomalies {s['anomalies']}, wall {s['wall_s']} s",
        ]
        for title, items in (("JOBS LOST", self.jobs_lost), ("FILES LOST OR WRONG",
                             self.files_wrong), ("MOVE SOURCES LOST", self.move_lost),
                             ("DOUBLE-OWNER WRITES", self.double_owner),
                             ("COUNTERS BACKWARDS", self.counters_backwards),
                             ("FINAL STATE NOT WRITTEN ONCE", self.final_not_once),
                             ("SHARDS UNFINISHED", self.shards_unfinished),
                             ("ANOMALIES", self.anomalies)):
            for item in items[:20]:
                lines.append(f"  {title}: {item}")
            if len(items) > 20:
                lines.append(f"  {title}: ... and {len(items) - 20} more")
        return "\n".join(lines)


@dataclass
class ChaosConfig:
    seed: int
    root: Path
    faults: int = 50
    duration: float = 900.0  # seconds of faults at most, even if fewer were injected
    grace: float = 180.0  # after the faults, for the jobs in flight to end
    lanes: int = 4
    mean_gap: float = 2.5  # seconds between faults, on average
    small_files: int = 22
    big_files: int = 2
    detection_timeout: float = 3.0
    log: Callable[[str], None] = print


class ChaosRun(FaultsMixin, LanesMixin):
    def __init__(self, config: ChaosConfig) -> None:
        self.cfg = config
        self.report = Report(config.seed)
        self.started = time.monotonic()
        self.fault_rng = random.Random(f"{config.seed}-faults")
        self.pick = random.Random(f"{config.seed}-pick")  # coordinator choice: not replayed
        self.stop_jobs = threading.Event()  # lanes submit nothing new
        self.hard_stop = 0.0  # monotonic deadline for the lanes' last jobs
        self.faulted: set[str] = set()  # services under a fault now
        self.faulted_lock = threading.Lock()
        self.timers: list[threading.Thread] = []
        self.lanes: list[Lane] = []
        self.etcd: EtcdServer | None = None
        self.cluster: Cluster | None = None
        self.gateway: EtcdGateway | None = None
        self.filler_busy = False
        self.checkers: list[threading.Thread] = []

    # ------------------------------------------------------------------ helpers
    def log(self, message: str) -> None:
        self.cfg.log(f"[{time.monotonic() - self.started:7.1f}s] {message}")

    def _cluster(self) -> Cluster:
        assert self.cluster is not None
        return self.cluster

    def services(self) -> dict[str, Service]:
        c = self._cluster()
        return {s.name: s for s in [*c.coordinators, *c.workers]}

    def request(self, method: str, path: str, timeout: float = 5.0,
                **kwargs: Any) -> httpx.Response | None:
        """Ask any live coordinator; None when none answered below 500."""
        c = self._cluster()
        order = [i for i, s in enumerate(c.coordinators)
                 if s.alive and s.name not in self.faulted]
        self.pick.shuffle(order)
        for i in order:
            try:
                answer = httpx.request(method, c.url(i) + path, timeout=timeout, **kwargs)
            except httpx.HTTPError:
                continue
            if answer.status_code == 500:
                self.report.add(self.report.anomalies,
                                f"HTTP 500 from coordinator{i} on {method} {path}: "
                                f"{answer.text[:300]}")
            if answer.status_code >= 500:
                continue
            return answer
        return None

    # ------------------------------------------------------------------ setup
    def setup(self) -> None:
        root = self.cfg.root
        root.mkdir(parents=True, exist_ok=True)
        self.etcd = EtcdServer(data_dir=root / "etcd")
        self.etcd.start()
        self.gateway = EtcdGateway(self.etcd.url)
        detection = self.cfg.detection_timeout
        self.cluster = Cluster(root / "cluster", {
            "alluxio.coordinator.job.meta.store.type": "ETCD",
            "alluxio.etcd.endpoints": self.etcd.url,
            "alluxio.coordinator.failure.detection.timeout": f"{detection}s",
            "alluxio.coordinator.scheduler.job.etcd.poll.interval": "200ms",
            "alluxio.coordinator.scheduler.interval.time": "500ms",
            "alluxio.coordinator.scheduler.etcd.read.timeout": "2s",
            "alluxio.coordinator.scheduler.etcd.write.timeout": "2s",
            "alluxio.worker.load.file.partition.size": "1MiB",
            "alluxio.job.retry.max.attempts": "6",
            "alluxio.job.retry.backoff": "200ms",
        })
        c = self.cluster
        c.add_worker(start=False)
        c.add_worker(start=False)
        c.add_worker(start=False, **{"alluxio.worker.page.store.sizes": "8MiB"})
        assert len(c.workers) - 1 == SMALL_CACHE_WORKER
        for _ in range(3):
            c.add_coordinator(start=False)
        for service in [*c.workers, *c.coordinators]:  # all at once: 2 cores start faster
            service.start(wait=False)
        for service in [*c.workers, *c.coordinators]:
            service.wait_healthy(120)
        ufs = root / "ufs"
        for i in range(self.cfg.lanes):
            rng = random.Random(f"{self.cfg.seed}-lane{i}")
            tree = ufs / f"lane{i}" / "g0"
            made = make_lane_tree(tree, rng, self.cfg.small_files, self.cfg.big_files)
            self.lanes.append(Lane(i, rng, tree, {k: [v] for k, v in made.items()}))
        filler = ufs / "filler"
        filler.mkdir(parents=True)
        rng = random.Random(f"{self.cfg.seed}-filler")
        ring = HashRing([f"127.0.0.1:{w.rpc_port}" for w in c.workers])  # type: ignore[attr-defined]
        small = f"127.0.0.1:{c.workers[SMALL_CACHE_WORKER].rpc_port}"  # type: ignore[attr-defined]
        made = index = 0
        while made < 12:  # 12 MiB, all owned by the 8 MiB cache
            index += 1
            path = filler / f"fill-{index:03d}.bin"
            if ring.owners(f"file://{path}", 1) == [small]:
                path.write_bytes(rng.randbytes(MiB))
                made += 1
        self.filler = filler
        self.tmp = root / "tmp"
        self.tmp.mkdir()
        self.log(f"cluster up: etcd {self.etcd.url}, coordinators "
                 f"{[s.port for s in c.coordinators]}, "  # type: ignore[attr-defined]
                 f"workers {[s.rpc_port for s in c.workers]}")  # type: ignore[attr-defined]

    def teardown(self) -> None:
        if self.cluster is not None:
            self.cluster.stop_all()
        if self.etcd is not None:
            self.etcd.resume()
            self.etcd.kill()

    # ------------------------------------------------------------------ run
    def run(self) -> Report:
        try:
            self.setup()
            lanes = [threading.Thread(target=self._lane_main, args=(lane,), daemon=True,
                                      name=f"lane{lane.index}") for lane in self.lanes]
            for t in lanes:
                t.start()
            self._inject_faults()
            self.log("faults done; restoring every process")
            for t in self.timers:
                t.join(120)
            self._restore_all()
            self.stop_jobs.set()
            self.hard_stop = time.monotonic() + self.cfg.grace
            for t in [*lanes, *self.checkers]:
                t.join(max(1.0, self.hard_stop - time.monotonic() + 30))
            self._final_checks()
        finally:
            self.report.wall_seconds = time.monotonic() - self.started
            self.teardown()
        return self.report

    # ------------------------------------------------------------------ the end
    def _final_checks(self) -> None:
        self.log("final checks")
        final: set[str] = set()
        for job_id in sorted(self.report.acknowledged):
            answer = None
            for _ in range(20):
                answer = self.request("GET", f"/api/v1/master/job/{job_id}")
                if answer is not None:
                    break
                time.sleep(0.5)
            if answer is None:
                self.report.add(self.report.anomalies, f"cannot ask about job {job_id}")
            elif answer.status_code == 404:
                self.report.add(self.report.jobs_lost, f"job {job_id} is not findable")
            elif answer.json()["job"]["state"] not in FINAL:
                job = answer.json()["job"]
                self.report.add(self.report.jobs_lost,
                                f"job {job_id} ({job['type']} {job['path']}) still "
                                f"{job['state']} (owner {job['owner'] or 'none'}) "
                                f"{self.cfg.grace:.0f}s after the faults")
            else:
                final.add(job_id)
        for lane in self.lanes:
            for rel, digest in self._current(lane).items():
                where = [p for p in lane.tree.parent.glob("g*") if sha256_file(p / rel) == digest]
                if not where:
                    self.report.add(self.report.move_lost,
                                    f"lane{lane.index}: {rel!r} with its last content is "
                                    "nowhere")
        assert self.gateway is not None
        events = self.gateway.history(JOB_PREFIX)
        self.report.history_events = len(events)
        for problem in audit_owner_writes(events):
            self.report.add(self.report.double_owner, problem)
        ends = self.report.ends = audit_job_ends(events)
        for problem in ends.problems:
            self.report.add(self.report.shards_unfinished, problem)
        for job_id in sorted(final):
            writes = ends.final_writes.get(job_id, 0)
            if writes != 1:
                self.report.add(self.report.final_not_once,
                                f"job {job_id}: its final state was written {writes} times")


__all__ = ["ChaosConfig", "ChaosRun", "Report"]
