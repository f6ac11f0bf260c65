"""A command's exit skips the interpreter's teardown (``alluxiojob/cli/quick_exit.py``)
and loses nothing: the exit status, buffered output, ``atexit`` handlers, and threads
Python would wait for are all as with Python's own exit. Each case runs in a fresh
interpreter."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest


def _run(code: str, stdout: int = subprocess.PIPE) -> subprocess.CompletedProcess[str]:
    """``code`` in a fresh interpreter whose stdout is buffered, as it is by default."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    return subprocess.run([sys.executable, "-c", code], stdout=stdout, stderr=subprocess.PIPE,
                          text=True, timeout=120, env=env)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_a_command_keeps_its_status_its_output_and_the_atexit_handlers() -> None:
    code = f"""
import atexit, sys
atexit.register(lambda: print("handler ran", flush=False))
sys.stdout.write("buffered, no newline; ")
from alluxiojob.cli.main import main
sys.argv = ["alluxiojob", "job", "list", "-D", "alluxio.coordinator.hostname=127.0.0.1",
            "-D", "alluxio.coordinator.rest.port={_closed_port()}"]
main()
print("never printed")
"""
    result = _run(code)
    assert result.returncode == 5, result.stderr  # the coordinator is unreachable
    assert result.stdout == "buffered, no newline; handler ran\n"
    assert "cannot reach the coordinator" in result.stderr


def test_an_atexit_handler_runs_once() -> None:
    code = """
import atexit
from alluxiojob.cli.quick_exit import exit_now
atexit.register(lambda: print("once"))
exit_now(3)
"""
    result = _run(code)
    assert (result.returncode, result.stdout) == (3, "once\n"), result.stderr


def test_a_running_thread_is_waited_for_as_python_does() -> None:
    code = """
import threading
from alluxiojob.cli.quick_exit import exit_now
go = threading.Event()
def late() -> None:
    go.wait()
    print("thread done")
threading.Thread(target=late).start()
go.set()
exit_now(0)
"""
    result = _run(code)
    assert (result.returncode, result.stdout) == (0, "thread done\n"), result.stderr


@pytest.mark.parametrize(("code", "status"), [(None, 0), (0, 0), (2, 2), (True, 1)])
def test_the_status_is_systemexits(code: object, status: int) -> None:
    result = _run(f"from alluxiojob.cli.quick_exit import exit_now\nexit_now({code!r})")
    assert result.returncode == status, result.stderr


def test_a_text_status_is_printed_as_python_does() -> None:
    result = _run("from alluxiojob.cli.quick_exit import exit_now\nexit_now('bye')")
    assert (result.returncode, result.stderr) == (1, "bye\n")


def test_output_to_a_closed_pipe_ends_as_with_pythons_exit() -> None:
    """Python's exit cannot flush stdout either, says so and exits 120."""

    def with_closed_stdout(ending: str) -> subprocess.CompletedProcess[str]:
        read_end, write_end = os.pipe()
        os.close(read_end)
        try:
            return _run("import sys\nfrom alluxiojob.cli.quick_exit import exit_now\n"
                        f"sys.stdout.write('x' * 100)\n{ending}", stdout=write_end)
        finally:
            os.close(write_end)

    quick = with_closed_stdout("exit_now(0)")
    python = with_closed_stdout("raise SystemExit(0)")
    assert quick.returncode == python.returncode == 120, (quick.stderr, python.stderr)
    assert "BrokenPipeError" in quick.stderr
