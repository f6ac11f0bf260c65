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
# Only when a command runs: --help needs none of them.
COMMAND_MODULES = ["rich", "alluxiojob.config", "alluxiojob.security", "alluxiojob.ufs",
                   "obstore", "alluxiojob.client", "alluxiojob.core.report"]


def _modules_after(code: str) -> set[str]:
    # At exit: ``main`` ends the process itself, after the atexit handlers.
    script = ("import atexit, json, sys\n"
              "atexit.register(lambda: print(json.dumps(sorted(sys.modules))))\n"
              f"{code}\n")
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
    assert "pydantic" not in loaded, "typer's value conversion (alluxiojob/cli/coercion.py)"
    # The path allowlist parses URIs; the UFS implementations stay unloaded.
    assert "alluxiojob.ufs.uri" in loaded
    assert loaded.isdisjoint(["obstore", "alluxiojob.ufs.objects", "alluxiojob.ufs.local"])


# typer's help renderer imports these at its top, for markdown help and pretty
# tracebacks; the CLI uses neither (alluxiojob/cli/light_help.py).
HELP_UNUSED_MODULES = ["rich.markdown", "rich.syntax", "rich.traceback", "markdown_it",
                       "pygments", "pydantic"]


def test_help_imports_no_markdown_no_traceback_and_no_service_module() -> None:
    code = """
from alluxiojob.cli.main import main
sys.argv = ["alluxiojob", "--help"]
main()
"""
    loaded = _modules_after(code)
    assert "typer.rich_utils" in loaded  # the help page was drawn by rich
    assert loaded.isdisjoint(HELP_UNUSED_MODULES), sorted(loaded & set(HELP_UNUSED_MODULES))
    assert loaded.isdisjoint(SERVICE_MODULES), sorted(loaded & set(SERVICE_MODULES))


def test_help_is_the_same_as_typers_own_rendering() -> None:
    def help_page(entry: str, *args: str) -> tuple[int, str]:
        result = subprocess.run(
            [sys.executable, "-c", f"import sys\nfrom alluxiojob.cli.main import {entry}\n"
             f"sys.argv = ['alluxiojob', *{list(args)!r}]\n{entry}()"],
            capture_output=True, text=True, timeout=120, env={"COLUMNS": "100", "PATH": ""})
        return result.returncode, result.stdout + result.stderr

    # A bare group prints its help too (and exits 2, as typer does).
    for args in (["--help"], ["job", "load", "--help"], ["job"]):
        fast = help_page("main", *args)
        assert "Examples" in fast[1], fast
        assert "--help" in fast[1], fast
        assert fast == help_page("app", *args), args


def test_the_stand_ins_give_the_real_classes_once_used() -> None:
    code = """
from alluxiojob.cli.light_help import import_help_renderer
import_help_renderer()
import typer.rich_utils as rich_utils
assert "rich.markdown" not in sys.modules and "rich.traceback" not in sys.modules
import rich.markdown
assert hasattr(rich.markdown, "__file__")  # the real module, not the stand-in
made = rich_utils.Markdown("*a*")
assert type(made) is rich.markdown.Markdown, type(made)
try:
    raise ValueError("x")
except ValueError as exc:
    from rich.traceback import Traceback
    assert type(rich_utils.Traceback.from_exception(type(exc), exc, None)) is Traceback
"""
    loaded = _modules_after(code)
    assert "rich.traceback" in loaded
