"""Catch a blocking call made on the trio event loop, in tests (as anyio's tests do).

``guard()`` wraps a few calls that wait on the disk, the network or the clock
(``time.sleep``, the ``os`` stat, directory and open calls, ``fsync``, ``open``,
``subprocess.run``, and ``connect``/``recv``/``send``/``accept`` of a *blocking* socket).
A wrapped call fails with ``BlockingCallOnLoop``, and is recorded, when it is made

- on the thread running trio, inside a trio task (``trio.lowlevel.in_trio_task``): a
  call from ``trio.to_thread.run_sync`` runs on another thread and passes; and
- from alluxiojob's own code (an ``alluxiojob`` frame is on the stack), so a test's own
  setup on the loop (writing its input files) is not this guard's business.

Recorded calls fail the test at its end even when the code under test swallowed the
exception (a reconnect loop catches ``Exception``). ``ALLOWED`` lists the package
functions that may block on purpose (with all they call), each with its reason.
"""

from __future__ import annotations

import builtins
import functools
import io
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import trio

PACKAGE = str(Path(__file__).resolve().parents[1]) + os.sep
_THIS_FILE = str(Path(__file__).resolve())

# (path under alluxiojob/, function name) -> why a blocking call made by it, or by
# anything it calls, is deliberate.
# "*" allows a whole module.
ALLOWED: dict[tuple[str, str], str] = {
    ("worker/cache.py", "__init__"):
        "Cache() opens each cache dir's index and reads the worker tag; the worker builds "
        "it before trio.run (WorkerService.__init__), tests also in async tests",
    ("store/rocks.py", "__init__"):
        "RocksKVStore() opens RocksDB; the coordinator builds it before trio.run "
        "(CoordinatorService.__init__), tests also in async tests",
    ("testing/etcd.py", "*"): "test servers start and stop synchronously, by design",
    ("testing/s3.py", "*"): "test servers start and stop synchronously, by design",
    ("testing/azure.py", "*"): "test servers start and stop synchronously, by design",
    ("testing/processes.py", "*"): "test servers start and stop synchronously, by design",
}

_CALLS: tuple[tuple[Any, str], ...] = (
    (time, "sleep"),
    (os, "stat"), (os, "lstat"), (os, "listdir"), (os, "scandir"), (os, "fsync"),
    (os, "open"), (builtins, "open"), (io, "open"),
    (subprocess, "run"),
)
_SOCKET_CALLS = ("connect", "recv", "recv_into", "send", "sendall", "accept")


class BlockingCallOnLoop(RuntimeError):
    """A call that waits was made on the trio event loop by alluxiojob code."""


def _package_frames(frame: FrameType | None) -> Iterator[tuple[str, FrameType]]:
    """alluxiojob's own frames, closest first (this module's excepted), with their path."""
    while frame is not None:
        filename = frame.f_code.co_filename
        if filename.startswith(PACKAGE) and filename != _THIS_FILE:
            yield filename[len(PACKAGE):], frame
        frame = frame.f_back


class _Recorder:
    def __init__(self) -> None:
        self.found: list[str] = []

    def check(self, name: str) -> None:
        if not trio.lowlevel.in_trio_task():
            return
        frames = list(_package_frames(sys._getframe(2)))
        if not frames or any((path, f.f_code.co_name) in ALLOWED or (path, "*") in ALLOWED
                             for path, f in frames):
            return
        where, frame = frames[0]
        message = (f"{name}() on the trio event loop, from alluxiojob/{where}:{frame.f_lineno} "
                   f"({frame.f_code.co_name}); run it in trio.to_thread.run_sync")
        self.found.append(message)
        raise BlockingCallOnLoop(message)


def _wrap(recorder: _Recorder, name: str, original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        recorder.check(name)
        return original(*args, **kwargs)

    return guarded


def _wrap_socket(recorder: _Recorder, name: str,
                 original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def guarded(self: socket.socket, *args: Any, **kwargs: Any) -> Any:
        if self.gettimeout() != 0.0:  # trio's own sockets are non-blocking
            recorder.check(f"socket.{name}")
        return original(self, *args, **kwargs)

    return guarded


@contextmanager
def guard() -> Iterator[list[str]]:
    """Wrap the blocking calls; yields the list of those caught, filled as they happen."""
    recorder = _Recorder()
    saved: list[tuple[Any, str, Any]] = []
    try:
        for owner, name in _CALLS:
            original = getattr(owner, name)
            saved.append((owner, name, original))
            label = f"{getattr(owner, '__name__', owner)}.{name}"
            setattr(owner, name, _wrap(recorder, label, original))
        for name in _SOCKET_CALLS:
            original = getattr(socket.socket, name)
            saved.append((socket.socket, name, socket.socket.__dict__.get(name)))
            setattr(socket.socket, name, _wrap_socket(recorder, name, original))
        yield recorder.found
    finally:
        for owner, name, original in reversed(saved):
            if original is None:
                delattr(owner, name)  # it was inherited from _socket.socket
            else:
                setattr(owner, name, original)
