"""Make the pictures in docs/: the web page of jobs and the dashboard, from a real run.

    .venv/bin/python scripts/screenshots.py [--out docs] [--seconds 150]

It starts an etcd, one coordinator and two workers (with 48 MiB caches) on loopback,
a Prometheus (Debian's package) that scrapes them, and runs LOAD jobs (bandwidth
limited, so they last), a FREE, and a LOAD with one file that cannot be loaded. Midway it
photographs the web page in headless Chromium, and at the end the dashboard's queries
as Prometheus's console library graphs them (Grafana does not run here). Everything is
stopped at the end. Needs the test dependencies (scripts/test installs them).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from alluxiojob.testing.etcd import EtcdServer  # noqa: E402
from tests.integration.browser import chromium  # noqa: E402
from tests.integration.cluster import Cluster, make_tree, wait_for  # noqa: E402
from tests.integration.prometheus import (  # noqa: E402
    ALERTS,
    DASHBOARD,
    PrometheusServer,
    console_page,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs")
    parser.add_argument("--seconds", type=float, default=150.0,
                        help="how long the jobs run before the dashboard is taken")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="alluxiojob-screenshots-") as tmp, \
            EtcdServer(data_dir=Path(tmp) / "etcd") as etcd:
        root = Path(tmp)
        cluster = Cluster(root / "cluster", {
            "alluxio.coordinator.job.meta.store.type": "ETCD",
            "alluxio.etcd.endpoints": etcd.url,
            "alluxio.worker.page.store.sizes": "48MiB",
        })
        consoles = root / "consoles"
        consoles.mkdir()
        (consoles / "alluxiojob.html").write_text(
            console_page(json.loads(DASHBOARD.read_text()), "30s", 240))
        prometheus: PrometheusServer | None = None
        try:
            cluster.add_worker()
            cluster.add_worker()
            cluster.add_coordinator()
            (root / "prometheus").mkdir()
            prometheus = PrometheusServer(root / "prometheus", {
                "alluxiojob-coordinator": [f"127.0.0.1:{c.port}"  # type: ignore[attr-defined]
                                           for c in cluster.coordinators],
                "alluxiojob-worker": [f"127.0.0.1:{w.web_port}"  # type: ignore[attr-defined]
                                      for w in cluster.workers],
            }, rule_files=(ALERTS,), consoles=consoles)
            prometheus.start()
            run(cluster, prometheus, root, args.out, args.seconds)
        finally:
            if prometheus is not None:
                prometheus.stop()
            cluster.stop_all()
    print(f"done in {time.monotonic() - started:.0f}s: {args.out}/web-ui.png, "
          f"{args.out}/dashboard.png")


def run(cluster: Cluster, prometheus: PrometheusServer, root: Path, out: Path,
        seconds: float) -> None:
    data = root / "data"
    sets = {}
    for name, files in (("imagenet-sample", 600), ("logs-2026-11", 400),
                        ("checkpoints", 40)):
        sets[name] = data / name
        make_tree(sets[name], files, big_size=4 << 20 if name == "checkpoints" else 0)
    broken = data / "incoming"
    make_tree(broken, 50)
    (broken / os.fsdecode(b"report-\xff.csv")).write_bytes(b"not a UTF-8 name")

    # Jobs must start after Prometheus holds every counter at 0, or it sees no increase.
    wait_for(lambda: prometheus.api(
        "query", query='alluxio_job_finished_total{state="FAILED"} == 0')["data"]["result"],
        60, "prometheus to scrape the coordinator")
    begin = time.monotonic()
    cluster.submit("load", str(sets["imagenet-sample"]), batch_size=20, bandwidth=48 << 10)
    time.sleep(15)  # the graphs get a history between the jobs
    cluster.submit("load", str(broken))
    cluster.submit("load", str(sets["checkpoints"]), replicas=2, bandwidth=256 << 10)
    logs = cluster.submit("load", str(sets["logs-2026-11"]), batch_size=50,
                          bandwidth=12 << 10)
    time.sleep(20)

    with chromium(root) as driver:
        driver.get(cluster.url() + "/ui/")  # type: ignore[attr-defined]
        row = f'#jobs tr[data-job-id="{logs["id"]}"]'
        wait_for(lambda: driver.find_elements("css selector", row),  # type: ignore[attr-defined]
                 30, "the job list")
        driver.find_element("css selector", f"{row} td.path").click()  # type: ignore[attr-defined]
        wait_for(lambda: driver.find_elements(  # type: ignore[attr-defined]
            "css selector", "#detail-summary td"), 30, "the job's details")
        time.sleep(3)  # a few refreshes: rates and ETA settle
        driver.save_screenshot(str(out / "web-ui.png"))  # type: ignore[attr-defined]

    cluster.wait_state(logs["id"], "SUCCEEDED", timeout=600)
    cluster.submit("free", str(sets["imagenet-sample"]))
    remaining = seconds - (time.monotonic() - begin)
    if remaining > 0:
        time.sleep(remaining)

    with chromium(root) as driver:
        driver.set_window_size(1440, 1380)  # type: ignore[attr-defined]
        driver.get(prometheus.url + "/consoles/alluxiojob.html")  # type: ignore[attr-defined]

        def undrawn() -> list[str]:
            return [panel.find_element("css selector", "h3").text for panel in
                    driver.find_elements("css selector", ".panel")  # type: ignore[attr-defined]
                    if not panel.find_elements("css selector", "svg")]

        wait_for(lambda: not undrawn(), 60, "every panel drawn")
        time.sleep(2)
        driver.save_screenshot(str(out / "dashboard.png"))  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
