"""The guard that fails a blocking call on the trio event loop (``testing/blocking.py``)."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest
import trio

from alluxiojob.coordinator.membership import read_static_workers
from alluxiojob.testing import blocking
from alluxiojob.ufs.local import fsync_dir


async def test_a_file_read_on_the_loop_is_caught_and_a_thread_is_not(tmp_path: Path) -> None:
    workers = tmp_path / "workers"
    workers.write_text("host:1\n")  # the test's own setup on the loop: not the guard's business
    with blocking.guard() as found:
        with pytest.raises(blocking.BlockingCallOnLoop, match="read_static_"):
            read_static_workers(workers)
        assert await trio.to_thread.run_sync(read_static_workers, workers) == ["host:1"]
    assert len(found) == 1
    assert "alluxiojob/coordinator/membership.py" in found[0]
    assert "trio.to_thread.run_sync" in found[0]


async def test_a_swallowed_call_is_still_recorded(tmp_path: Path) -> None:
    with blocking.guard() as found:
        try:
            fsync_dir(str(tmp_path))
        except Exception:  # as a reconnect loop would
            pass
    assert [call.split("(")[0] for call in found] == ["os.open"]


def test_outside_trio_nothing_is_caught(tmp_path: Path) -> None:
    (tmp_path / "workers").write_text("host:1\n")
    with blocking.guard() as found:
        assert read_static_workers(tmp_path / "workers") == ["host:1"]
    assert found == []


def _as_package_code(source: str, name: str) -> object:
    """A function whose frames look like alluxiojob's own code to the guard."""
    namespace: dict[str, object] = {}
    exec(compile(source, os.path.join(blocking.PACKAGE, "guard_probe.py"), "exec"), namespace)
    return namespace[name]


async def test_only_blocking_sockets_count() -> None:
    send = _as_package_code("def send(sock):\n    return sock.send(b'x')\n", "send")
    a, b = socket.socketpair()
    with a, b, blocking.guard() as found:
        a.setblocking(False)
        assert send(a) == 1  # type: ignore[operator]  # non-blocking, as trio's sockets
        a.setblocking(True)
        with pytest.raises(blocking.BlockingCallOnLoop, match="socket.send"):
            send(a)  # type: ignore[operator]
        assert b.recv(2) == b"x"  # the test's own call: passes
    assert len(found) == 1


def test_the_guard_puts_everything_back() -> None:
    before = (time.sleep, os.stat, os.open, open, socket.socket.__dict__.get("recv"))
    with blocking.guard():
        assert time.sleep is not before[0]
        assert socket.socket.__dict__.get("recv") is not None
    assert (time.sleep, os.stat, os.open, open, socket.socket.__dict__.get("recv")) == before


def test_every_allowance_gives_its_reason() -> None:
    for (path, function), reason in blocking.ALLOWED.items():
        assert (Path(blocking.PACKAGE) / path).is_file(), path
        assert function, path
        assert len(reason) > 20, (path, function)
