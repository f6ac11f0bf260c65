"""A real Prometheus server (Debian's ``prometheus`` package) for integration tests.

It runs on a free loopback port with its own config and TSDB directory under the test's
tmp dir, scraping every second and evaluating rules every second, so that conditions
(a sample present, an alert firing) are reached quickly and awaited, never slept for.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.integration.cluster import free_port, wait_for

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
                 token_file: Path | None = None, rule_files: tuple[Path, ...] = ()) -> None:
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
                 "--storage.tsdb.retention.time=1h"],
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
