"""Helpers for the test servers' child processes."""

from __future__ import annotations

import contextlib
import signal
import subprocess


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
