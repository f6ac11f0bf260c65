"""The CLI starts light: ``alluxiojob --help`` and a ``job list`` round trip import only
what they use.

Every ``--progress`` call, script loop and ``--wait`` pays the CLI's start-up, and most of
it is imports. Each check runs in a fresh interpreter and reads ``sys.modules``, which
does not depend on how busy the machine is (unlike a timing).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys

# Imported by the services, never by a command that only talks to a coordinator.
SERVICE_MODULES = ["trio", "trio_websocket", "hypercorn", "starlette", "structlog",
                   "prometheus_client", "msgpack", "rocksdict", "httpx",
                   "alluxiojob.coordinator", "alluxiojob.worker", "alluxiojob.logs"]
# Only when a command runs: --help needs none of them. (The path allowlist of the
# security settings brings the UFS package, and obstore with it: a few milliseconds.)
COMMAND_MODULES = ["rich", "alluxiojob.config", "alluxiojob.security", "alluxiojob.ufs",
                   "obstore", "alluxiojob.client", "alluxiojob.core.report"]


def _modules_after(code: str) -> set[str]:
    script = (f"import json, sys\n{code}\n"
              "print(json.dumps(sorted(sys.modules)))\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stdout.splitlines()[-1]))


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_importing_the_cli_imports_no_service_and_no_command_module() -> None:
    loaded = _modules_after("import alluxiojob.cli.main")
    assert "typer" in loaded
    assert loaded.isdisjoint(SERVICE_MODULES), sorted(loaded & set(SERVICE_MODULES))
    assert loaded.isdisjoint(COMMAND_MODULES), sorted(loaded & set(COMMAND_MODULES))


def test_a_round_trip_imports_no_service_module() -> None:
    code = f"""
from alluxiojob.cli.main import app
try:
    app(["job", "list", "-D", "alluxio.coordinator.hostname=127.0.0.1",
         "-D", "alluxio.coordinator.rest.port={_closed_port()}"])
except SystemExit as exc:
    assert exc.code == 5, exc.code  # the coordinator is unreachable: it did try
"""
    loaded = _modules_after(code)
    assert "alluxiojob.client" in loaded
    assert loaded.isdisjoint(SERVICE_MODULES), sorted(loaded & set(SERVICE_MODULES))
    assert "rich" not in loaded, "the progress bar's library, only for --wait"
