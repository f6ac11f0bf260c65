"""The shipped Grafana dashboard and Prometheus alert rules, against a real Prometheus.

A real Prometheus (Debian's package) scrapes a real cluster (etcd job store, so the
store latency has samples) during a LOAD that overflows the workers' small caches: some
files fail with CACHE_FULL and the job ends FAILED. Then every query of the dashboard and
every alert expression goes through Prometheus's HTTP API: each must parse, each
dashboard query must return data, every rule must evaluate cleanly, and the job-failed
alert must fire.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from alluxiojob.testing.etcd import EtcdServer
from tests.integration.browser import chromium
from tests.integration.cluster import Cluster, wait_for
from tests.integration.prometheus import (
    ALERT_TESTS,
    ALERTS,
    DASHBOARD,
    EXAMPLE_CONFIG,
    PrometheusServer,
    binary,
    console_page,
)

pytestmark = pytest.mark.timeout(300)

# Grafana's built-in variables, as Grafana would expand them for a short time range.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "1s", "$__range": "5m"}


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) for every target of every panel of the dashboard."""
    dashboard = json.loads(DASHBOARD.read_text())
    queries = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for name, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(name, value)
            assert "$" not in expr, f"unknown variable in {panel['title']!r}: {expr}"
            queries.append((panel["title"], expr))
    return queries


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


# ---------------------------------------------------------------------- promtool
def test_promtool_checks_the_rules_and_their_unit_tests() -> None:
    promtool = binary("promtool")
    for command in (["check", "rules", str(ALERTS)],
                    ["test", "rules", str(ALERT_TESTS)],
                    ["check", "config", "--syntax-only", str(EXAMPLE_CONFIG)]):
        result = subprocess.run([promtool, *command], capture_output=True, text=True,
                                timeout=60)
        assert result.returncode == 0, f"promtool {' '.join(command)}:\n{result.stdout}" \
                                       f"{result.stderr}"


def test_the_dashboard_covers_what_operators_watch() -> None:
    titles = {title for title, _ in dashboard_queries()}
    for wanted in ("Jobs by state", "Files per second", "Bytes per second",
                   "File failures by reason", "Tasks per worker", "Cache used per worker",
                   "Scheduler claims, reclaims and polls per second", "Job store latency"):
        assert wanted in titles
    names = {rule["alert"] for rule in alert_rules()}
    assert names == {"AlluxioJobFailed", "AlluxioWorkerDown", "AlluxioWorkerDisconnected",
                     "AlluxioJobsReclaimed", "AlluxioWaitingQueueNearCapacity",
                     "AlluxioWorkerCacheNearlyFull"}


# ---------------------------------------------------------------------- real Prometheus
@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[EtcdServer]:
    with EtcdServer(data_dir=tmp_path / "etcd") as server:
        yield server


@pytest.fixture
def scraped(cluster_factory, etcd: EtcdServer,  # type: ignore[no-untyped-def]
            tmp_path: Path) -> Iterator[tuple[Cluster, PrometheusServer]]:
    binary("prometheus")
    # A cluster token: Prometheus must present it, from a credentials file, as a bearer.
    token = "prometheus-test-" + os.urandom(8).hex()
    token_file = tmp_path / "cluster.token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    cluster: Cluster = cluster_factory(**{
        "alluxio.coordinator.job.meta.store.type": "ETCD",
        "alluxio.etcd.endpoints": etcd.url,
        "alluxio.worker.page.store.sizes": "256KiB",
        "alluxio.job.cluster.token": token,
    })
    cluster.add_worker(s3=True)  # the S3 API's panels need its series
    cluster.add_worker(s3=True)
    cluster.add_coordinator()
    root = tmp_path / "prometheus"
    (root / "consoles").mkdir(parents=True)
    (root / "consoles" / "alluxiojob.html").write_text(
        console_page(json.loads(DASHBOARD.read_text()), "15s", 120))
    prometheus = PrometheusServer(root, {
        "alluxiojob-coordinator": [f"127.0.0.1:{c.port}" for c in cluster.coordinators],  # type: ignore[attr-defined]
        "alluxiojob-worker": [f"127.0.0.1:{w.web_port}" for w in cluster.workers],  # type: ignore[attr-defined]
    }, token_file=token_file, rule_files=(ALERTS,), consoles=root / "consoles")
    prometheus.start()
    try:
        yield cluster, prometheus
    finally:
        prometheus.stop()


def _vector(prometheus: PrometheusServer, expr: str) -> list[dict[str, Any]]:
    answer = prometheus.api("query", query=expr)
    assert answer["status"] == "success", f"{expr}: {answer}"
    result: list[dict[str, Any]] = answer["data"]["result"]
    return result


def _overflow_the_caches(cluster: Cluster, prometheus: PrometheusServer,
                         tmp_path: Path) -> None:
    """A LOAD of 40 files of 16 KiB into two caches of 256 KiB: some fail, CACHE_FULL."""
    wait_for(lambda: all(t["health"] == "up" for t in
                         prometheus.api("targets")["data"]["activeTargets"])
             and len(prometheus.api("targets")["data"]["activeTargets"]) == 3,
             60, "prometheus to scrape the coordinator and both workers")
    # The alert sees a failure as an increase: Prometheus must hold the counter at 0
    # before the job fails.
    wait_for(lambda: _vector(prometheus, 'alluxio_job_finished_total{state="FAILED"} == 0'),
             60, "prometheus to hold the job-failed counter at 0")
    # Likewise each worker's file counter, or a rate() over it may never see the rise.
    wait_for(lambda: len(_vector(
        prometheus, 'alluxio_worker_job_files_total{op="LOAD",status="OK"} == 0')) == 2,
             60, "prometheus to hold both workers' file counters at 0")
    src = tmp_path / "dataset"
    src.mkdir()
    for i in range(40):
        (src / f"part-{i:03d}.bin").write_bytes(bytes([i]) * 16384)
    job = cluster.submit("load", str(src), batch_size=4)
    report = cluster.wait_state(job["id"], {"FAILED", "SUCCEEDED"})
    assert report["job"]["state"] == "FAILED", "the caches should have overflowed"
    failures = cluster.progress(job["id"], file_status="FAILURE")["failures"]
    assert failures
    assert {f["reason"] for f in failures} == {"CACHE_FULL"}
    # Prometheus has seen the job's end, the workers' failures and the final failures.
    for condition in ('alluxio_job_finished_total{state="FAILED",type="LOAD"} > 0',
                      'alluxio_worker_job_failures_total{reason="CACHE_FULL"} > 0',
                      'alluxio_job_files_failed_total{reason="CACHE_FULL"} > 0',
                      'alluxio_worker_job_files_total{op="LOAD",status="OK"} > 0'):
        wait_for(lambda c=condition: _vector(prometheus, c), 60,  # type: ignore[misc]
                 f"prometheus to see {condition}")


def test_dashboard_queries_and_alerts_on_a_real_prometheus(
        scraped: tuple[Cluster, PrometheusServer], tmp_path: Path) -> None:
    cluster, prometheus = scraped

    started = time.time()
    _overflow_the_caches(cluster, prometheus, tmp_path)

    # Every dashboard query parses and returns data over the time of the test, as the
    # range queries Grafana makes.
    def range_query(expr: str) -> list[dict[str, Any]]:
        answer = prometheus.api("query_range", query=expr, start=started - 30,
                                end=time.time(), step="1s")
        assert answer["status"] == "success", f"{expr}: {answer}"
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result

    for title, expr in dashboard_queries():
        wait_for(lambda e=expr: range_query(e), 30,  # type: ignore[misc]
                 f"data for the dashboard panel {title!r}: {expr}")

    # Every alert expression parses and evaluates; every rule is healthy in Prometheus.
    for rule in alert_rules():
        _vector(prometheus, rule["expr"])

    def rules_evaluated() -> list[dict[str, Any]] | None:
        groups = prometheus.api("rules")["data"]["groups"]
        rules: list[dict[str, Any]] = [r for g in groups for r in g["rules"]]
        return rules if rules and all(r["health"] != "unknown" for r in rules) else None

    rules = wait_for(rules_evaluated, 30, "every alert rule to be evaluated")
    assert {r["name"] for r in rules} == {r["alert"] for r in alert_rules()}
    for rule in rules:
        assert rule["health"] == "ok", f"{rule['name']}: {rule.get('lastError')}"

    def firing(name: str) -> bool:
        alerts = prometheus.api("alerts")["data"]["alerts"]
        return any(a["labels"]["alertname"] == name and a["state"] == "firing"
                   for a in alerts)

    wait_for(lambda: firing("AlluxioJobFailed"), 30, "the AlluxioJobFailed alert to fire")
    assert not firing("AlluxioWorkerDown"), "both workers are up"


def test_the_dashboard_drawn_by_prometheus(scraped: tuple[Cluster, PrometheusServer],
                                           tmp_path: Path) -> None:
    """The picture in docs/operating.md: every panel's queries graphed by Prometheus itself."""
    cluster, prometheus = scraped
    _overflow_the_caches(cluster, prometheus, tmp_path)
    panels = [p for p in json.loads(DASHBOARD.read_text())["panels"] if p["type"] != "row"]
    with chromium(tmp_path) as driver:
        driver.get(prometheus.url + "/consoles/alluxiojob.html")  # type: ignore[attr-defined]
        wait_for(lambda: len(driver.find_elements(  # type: ignore[attr-defined]
            "css selector", ".panel svg")) >= len(panels), 60, "every panel drawn")
        titles = [h.text for h in driver.find_elements(  # type: ignore[attr-defined]
            "css selector", ".panel h3")]
        assert titles == [p["title"] for p in panels]
        driver.save_screenshot(str(tmp_path / "dashboard.png"))  # type: ignore[attr-defined]
        errors = [e for e in driver.get_log("browser")  # type: ignore[attr-defined]
                  if e["level"] == "SEVERE"]
        assert errors == [], errors
