"""Real etcd servers for tests and benchmarks: one member, or a cluster of three.

``EtcdServer`` runs the ``etcd`` binary as a subprocess on free loopback ports with a
temporary data directory, and waits until ``/health`` reports a leader. It is plain
synchronous code (call it from async code through ``trio.to_thread.run_sync``) and a
context manager::

    with EtcdServer() as server:
        store = EtcdKVStore([server.url])
        ...
        server.stop()      # graceful; calls now fail with Unavailable
        server.start()     # same ports, same data directory: the data is still there
        server.pause()     # SIGSTOP: connections are accepted but never answered
        server.resume()

``EtcdCluster`` starts three members that form one cluster (``cluster.urls`` are their
client URLs), so a test can take a member away and see the others carry on; with two
members gone the last one has no quorum and answers nothing but errors. Elections use
10 ms heartbeats, so a cluster starts and fails over in well under a second.

Writes are fsynced as in production unless ``unsafe_no_fsync=True`` is given, which is
faster but loses acknowledged writes when the host crashes.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import weakref
from collections.abc import Sequence
from pathlib import Path

from alluxiojob.testing.ports import free_port
from alluxiojob.testing.processes import Running, reap, terminate

_NOT_FOUND = "etcd not found: run scripts/test, which installs it"


class EtcdNotFound(RuntimeError):
    """No etcd binary on PATH, next to the Python interpreter, or in /usr/bin."""


class EtcdStartError(RuntimeError):
    """etcd did not become healthy; the message carries the end of its log."""


def find_etcd(binary: str | None = None) -> str:
    """The etcd binary: ``binary``, else on PATH, next to ``sys.executable``, /usr/bin."""
    candidates = [binary] if binary else []
    on_path = shutil.which("etcd")
    if on_path:
        candidates.append(on_path)
    candidates += [str(Path(sys.executable).parent / "etcd"), "/usr/bin/etcd"]
    for candidate in candidates:
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise EtcdNotFound(_NOT_FOUND)


def _all_threads_stopped(pid: int) -> bool:
    """Whether every thread of ``pid`` is in the stopped state (Linux ``/proc``)."""
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
        states = [(task / "stat").read_text().rsplit(")", 1)[1].split()[0] for task in tasks]
    except (OSError, IndexError):
        return True  # no /proc, or the process is gone: nothing more to wait for
    return all(state in ("T", "t") for state in states)


class EtcdServer(Running):
    """One etcd member on loopback. See the module docstring."""

    def __init__(
        self,
        *,
        binary: str | None = None,
        data_dir: Path | None = None,
        unsafe_no_fsync: bool = False,
        extra_args: Sequence[str] = (),
        startup_timeout: float = 30.0,
        name: str = "test",
        initial_cluster: str = "",
    ) -> None:
        self.binary = find_etcd(binary)
        self._own_dir = data_dir is None
        self.base_dir = Path(tempfile.mkdtemp(prefix="etcd-")) if data_dir is None else data_dir
        self.data_dir = self.base_dir / "data"
        self.log_path = self.base_dir / "etcd.log"
        self.client_port = free_port()
        self.peer_port = free_port()
        while self.peer_port == self.client_port:
            self.peer_port = free_port()
        self.unsafe_no_fsync = unsafe_no_fsync
        self.extra_args = tuple(extra_args)
        self.startup_timeout = startup_timeout
        self.name = name
        self.initial_cluster = initial_cluster  # "name=peer_url,..."; empty: this one alone
        self._process: subprocess.Popen[bytes] | None = None
        self._finalizer: weakref.finalize[..., EtcdServer] | None = None
        self._paused = False
        # A directory this server made goes away with it, even if close() is never called.
        self._cleanup = (
            weakref.finalize(self, shutil.rmtree, str(self.base_dir), ignore_errors=True)
            if self._own_dir
            else None
        )

    # ------------------------------------------------------------------ properties
    @property
    def url(self) -> str:
        """The client URL, e.g. ``http://127.0.0.1:41234``."""
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def command(self) -> list[str]:
        args = [
            self.binary,
            f"--name={self.name}",
            f"--data-dir={self.data_dir}",
            f"--listen-client-urls={self.url}",
            f"--advertise-client-urls={self.url}",
            f"--listen-peer-urls={self.peer_url}",
            f"--initial-advertise-peer-urls={self.peer_url}",
            f"--initial-cluster={self.initial_cluster or f'{self.name}={self.peer_url}'}",
            "--initial-cluster-state=new",
            "--heartbeat-interval=10",
            "--election-timeout=50",
            "--log-level=warn",
        ]
        if self.unsafe_no_fsync:
            args.append("--unsafe-no-fsync")
        return args + list(self.extra_args)

    # ------------------------------------------------------------------ lifecycle
    def start(self, wait: bool = True) -> None:
        """Start etcd (on the same ports and data dir as before) and wait until healthy.

        ``wait=False`` returns at once: a cluster member is healthy only once a quorum
        of its peers runs too (see ``EtcdCluster``).
        """
        if self.running:
            return
        self.base_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self._paused = False
        self._finalizer = weakref.finalize(self, reap, self._process)
        if wait:
            try:
                self.wait_healthy()
            except BaseException:
                self.kill()
                raise

    def wait_healthy(self) -> None:
        """Wait until ``/health`` reports a leader; raises ``EtcdStartError`` otherwise."""
        deadline = time.monotonic() + self.startup_timeout
        last = "no answer yet"
        while time.monotonic() < deadline:
            process = self._process
            if process is None or process.poll() is not None:
                code = None if process is None else process.returncode
                raise EtcdStartError(f"etcd exited with code {code}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=1.0) as answer:
                    body = json.loads(answer.read())
                if str(body.get("health")).lower() == "true":
                    return
                last = str(body)
            except (OSError, ValueError) as exc:
                last = str(exc)
            time.sleep(0.02)
        raise EtcdStartError(
            f"etcd at {self.url} not healthy after {self.startup_timeout:g}s ({last}):\n"
            f"{self.log_tail()}"
        )

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def _signal(self, signum: int) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signum)

    def stop(self, timeout: float = 10.0) -> None:
        """Graceful shutdown (SIGTERM), waiting for the process; SIGKILL if it hangs."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            self.resume()
        terminate(process, timeout)
        self._forget()

    def kill(self) -> None:
        """SIGKILL: a crash. Data acknowledged with fsync on survives a ``start()``."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.kill()
            process.wait()
        self._forget()

    def _forget(self) -> None:
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        self._process = None
        self._paused = False

    def pause(self) -> None:
        """SIGSTOP: the process stays, its sockets accept, but nothing is answered.

        Returns once every thread of etcd has stopped: the signal alone is asynchronous,
        and a request sent right after it could still be answered.
        """
        self._signal(signal.SIGSTOP)
        self._paused = self.running
        if self._paused and self.pid is not None:
            deadline = time.monotonic() + 5
            while not _all_threads_stopped(self.pid) and time.monotonic() < deadline:
                time.sleep(0.005)

    def resume(self) -> None:
        if self._paused:
            self._signal(signal.SIGCONT)
            self._paused = False

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop etcd and remove the data directory if this server created it."""
        self.stop()
        if self._cleanup is not None:
            self._cleanup()


    def __repr__(self) -> str:
        state = "paused" if self._paused else "running" if self.running else "stopped"
        return f"EtcdServer({self.url}, {state}, data_dir={self.data_dir})"


class EtcdCluster(Running):
    """Three etcd members forming one cluster on loopback. See the module docstring."""

    def __init__(self, size: int = 3, *, binary: str | None = None,
                 unsafe_no_fsync: bool = False, startup_timeout: float = 30.0) -> None:
        self.members = [
            EtcdServer(binary=binary, unsafe_no_fsync=unsafe_no_fsync,
                       startup_timeout=startup_timeout, name=f"member{i}")
            for i in range(size)
        ]
        peers = ",".join(f"{m.name}={m.peer_url}" for m in self.members)
        for member in self.members:
            member.initial_cluster = peers
            member.extra_args = (*member.extra_args, "--initial-cluster-token=alluxiojob-test")

    @property
    def urls(self) -> list[str]:
        return [m.url for m in self.members]

    def start(self) -> None:
        """Start every member that is not running, then wait until each is healthy."""
        try:
            for member in self.members:
                member.start(wait=False)
            for member in self.members:
                if member.running:
                    member.wait_healthy()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for member in self.members:
            member.close()



__all__ = [
    "EtcdCluster", "EtcdNotFound", "EtcdServer", "EtcdStartError", "find_etcd",
]
