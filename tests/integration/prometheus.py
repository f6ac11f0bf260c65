"""A real Prometheus server (Debian's ``prometheus`` package) for integration tests.

It runs on a free loopback port with its own config and TSDB directory under the test's
tmp dir, scraping every second and evaluating rules every second, so that conditions
(a sample present, an alert firing) are reached quickly and awaited, never slept for.
"""

from __future__ import annotations

import html
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from alluxiojob.testing.ports import free_port
from tests.integration.cluster import wait_for

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
DASHBOARD = DEPLOY / "grafana" / "alluxiojob-dashboard.json"
ALERTS = DEPLOY / "prometheus" / "alluxiojob-alerts.yml"
EXAMPLE_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
ALERT_TESTS = DEPLOY / "prometheus" / "alluxiojob-alerts.test.yml"

MISSING = ("{tool} is not installed: it comes with Debian's 'prometheus' package, which "
           "scripts/test installs (as root, with apt-get)")


def binary(tool: str) -> str:
    """The path of ``prometheus`` or ``promtool``; skips the test, saying why, if absent."""
    found = shutil.which(tool) or (f"/usr/bin/{tool}" if Path(f"/usr/bin/{tool}").exists()
                                   else None)
    if found is None:
        pytest.skip(MISSING.format(tool=tool))
    return found


class PrometheusServer:
    def __init__(self, root: Path, scrape: dict[str, list[str]], *,
                 token_file: Path | None = None, rule_files: tuple[Path, ...] = (),
                 consoles: Path | None = None) -> None:
        self.consoles = consoles
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = root / "prometheus.yml"
        jobs: list[dict[str, Any]] = []
        for job, targets in scrape.items():
            entry: dict[str, Any] = {"job_name": job, "static_configs": [{"targets": targets}]}
            if token_file is not None:
                entry["authorization"] = {"type": "Bearer",
                                          "credentials_file": str(token_file)}
            jobs.append(entry)
        self.config.write_text(yaml.safe_dump({
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s",
                       "evaluation_interval": "1s"},
            "rule_files": [str(path) for path in rule_files],
            "scrape_configs": jobs,
        }))
        self.log_path = root / "prometheus.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [binary("prometheus"), f"--config.file={self.config}",
                 f"--storage.tsdb.path={self.root / 'tsdb'}",
                 f"--web.listen-address=127.0.0.1:{self.port}",
                 "--storage.tsdb.retention.time=1h",
                 *([f"--web.console.templates={self.consoles}",
                    f"--web.console.libraries={self.consoles}"] if self.consoles else [])],
                stdout=log, stderr=subprocess.STDOUT,
            )

        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"prometheus exited with {self.proc.returncode}:\n"
                                     + self.log_path.read_text(errors="replace")[-3000:])
            return httpx.get(f"{self.url}/-/ready", timeout=2).status_code == 200

        wait_for(ready, 60, "prometheus to be ready", interval=0.2)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def api(self, path: str, **params: Any) -> dict[str, Any]:
        """GET an HTTP API path; the parsed body, whatever its status (errors included)."""
        response = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=10)
        body: dict[str, Any] = response.json()
        return body

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


# ---------------------------------------------------------------------- a picture
GRAFANA_TO_PROMETHEUS_UNITS = {"bytes": "B", "Bps": "B/s", "ms": " ms", "percentunit": ""}


def console_page(dashboard: dict[str, Any], rate_interval: str, seconds: int) -> str:
    """The dashboard's panels as a Prometheus console page, each query graphed.

    Grafana itself cannot run here, so this draws the same queries with Prometheus's
    own console library (Rickshaw graphs), in the dashboard's rows, to show what the
    dashboard shows, over the last ``seconds``. ``$__rate_interval`` becomes
    ``rate_interval``, as Grafana would expand it.
    """
    head = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<link rel="icon" href="data:,">
<title>alluxiojob dashboard (Prometheus console)</title>
<link rel="stylesheet" href="/classic/static/rickshaw/rickshaw.min.css">
<link rel="stylesheet" href="/classic/static/css/prom_console.css">
<script src="/classic/static/d3/d3.min.js"></script>
<script src="/classic/static/rickshaw/rickshaw.min.js"></script>
<script src="/classic/static/jquery/jquery.min.js"></script>
<script>var PATH_PREFIX = "";</script>
<script src="/classic/static/js/prom_console.js"></script>
<style>
body { font: 13px system-ui, sans-serif; margin: 12px; background: #f4f5f7; }
h1 { font-size: 17px; margin: 0 0 2px; } p.note { margin: 0 0 10px; color: #555; }
h2 { font-size: 14px; margin: 14px 0 6px; }
.row { display: flex; gap: 10px; flex-wrap: wrap; }
.panel { background: #fff; border: 1px solid #d8dbe0; border-radius: 4px; padding: 6px; }
.panel h3 { font-size: 12px; margin: 0 0 4px; }
</style></head><body>
<h1>alluxiojob dashboard, drawn by Prometheus</h1>
<p class="note">The queries of deploy/grafana/alluxiojob-dashboard.json, panel by panel,
graphed by Prometheus's console library; Grafana itself is not installable here.</p>
"""
    parts = [head]
    scripts = []
    row_open = False
    for index, panel in enumerate(dashboard["panels"]):
        if panel["type"] == "row":
            if row_open:
                parts.append("</div>")
            parts.append(f"<h2>{html.escape(panel['title'])}</h2><div class=\"row\">")
            row_open = True
            continue
        width = int(panel["gridPos"]["w"] / 24 * 1380) - 70
        exprs, names = [], []
        for target in panel["targets"]:
            expr = target["expr"].replace("$__rate_interval", rate_interval)
            exprs.append(expr)
            names.append(target["legendFormat"].replace("{{", "[[").replace("}}", "]]"))
        unit = GRAFANA_TO_PROMETHEUS_UNITS.get(panel["fieldConfig"]["defaults"]["unit"], "")
        parts.append(f'<div class="panel"><h3>{html.escape(panel["title"])}</h3>'
                     f'<div id="panel{index}"></div></div>')
        formatter = ("PromConsole.NumberFormatter.humanize1024" if unit.startswith("B")
                     else "PromConsole.NumberFormatter.humanizeNoSmallPrefix")
        scripts.append(
            f"new PromConsole.Graph({{node: document.querySelector('#panel{index}'), "
            f"expr: {json.dumps(exprs)}, name: {json.dumps(names)}, duration: {seconds}, "
            f"width: {max(width, 200)}, height: 150, "
            f"renderer: {json.dumps('area' if 'Jobs by state' in panel['title'] else 'line')}, "
            f"yUnits: {json.dumps(unit)}, yAxisFormatter: {formatter}, "
            f"yHoverFormatter: {formatter}, min: 0}});")
    if row_open:
        parts.append("</div>")
    parts.append("<script>\n" + "\n".join(scripts) + "\n</script></body></html>\n")
    return "\n".join(parts)
