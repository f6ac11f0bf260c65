"""Helpers for the test servers' child processes."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
import weakref
from collections.abc import Callable
from types import TracebackType
from typing import Self


def terminate(process: subprocess.Popen[bytes] | subprocess.Popen[str],
              timeout: float = 10.0) -> None:
    """SIGTERM, then wait up to ``timeout`` seconds; SIGKILL if it hangs. Always reaped."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def reap(process: subprocess.Popen[bytes]) -> None:
    """Last resort at garbage collection or interpreter exit: SIGKILL (after SIGCONT, in
    case a test paused it) and a short wait, so no server outlives its test run."""
    if process.poll() is None:
        with contextlib.suppress(OSError):
            process.send_signal(signal.SIGCONT)
            process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)


class Running:
    """``with x:`` starts ``x`` and closes it when the block ends, however it ends."""

    def start(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class ServerProcess(Running):
    """A test server in a child process, for a subclass to launch: ``_launched`` keeps
    the process (reaped by ``last_resort`` if a test forgets it), ``_await_answer`` waits
    until it answers, ``stop`` (or the end of a ``with`` block) ends it."""

    startup_timeout: float

    @property
    def url(self) -> str:
        raise NotImplementedError

    def __init__(self) -> None:
        self._process: subprocess.Popen[bytes] | None = None
        self._finalizer: weakref.finalize[..., ServerProcess] | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def _launched(self, process: subprocess.Popen[bytes],
                  last_resort: Callable[[subprocess.Popen[bytes]], None]) -> None:
        self._process = process
        self._finalizer = weakref.finalize(self, last_resort, process)

    def _await_answer(self, ping: Callable[[], object], what: str) -> None:
        """Poll ``ping`` until it stops raising ``OSError``; stop and raise, naming
        ``what`` and the log's tail, if the process exits or ``startup_timeout`` passes."""
        process = self._process
        assert process is not None, "_launched first"
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                self.stop()
                raise RuntimeError(f"{what} exited with {process.returncode}{self._log_tail()}")
            try:
                ping()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{what} at {self.url} did not answer in time{self._log_tail()}")

    def _log_tail(self) -> str:
        """What to add to a start-up error (``": " + the log's end``, or nothing)."""
        return ""

    def _after_terminate(self, process: subprocess.Popen[bytes]) -> None:
        """What else ``stop`` ends once the process itself has (nothing by default)."""

    def stop(self) -> None:
        process = self._process
        if process is None:
            return
        terminate(process)
        self._after_terminate(process)
        if self._finalizer is not None:
            self._finalizer.detach()
        self._process = None

    def close(self) -> None:
        self.stop()
