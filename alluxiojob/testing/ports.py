"""Free TCP ports on loopback for the servers tests start (etcd, S3, Azurite, services).

A port is found free here, then a server started later binds it: until then another
caller could get the same port. Two guards keep the suite's own callers apart:
- a process never hands out a port it handed out recently (a cluster asks for several
  ports before it starts anything);
- under pytest-xdist, each worker process only hands out ports of its own lane
  (``PYTEST_XDIST_WORKER`` ``gwN``, ``PYTEST_XDIST_WORKER_COUNT`` lanes), so test files
  running side by side never get the same port.
"""

from __future__ import annotations

import os
import socket
from collections import deque

_RECENT: deque[int] = deque(maxlen=512)
_TRIES = 1000


def lane() -> tuple[int, int]:
    """``(this process's lane, number of lanes)``; ``(0, 1)`` outside pytest-xdist."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = os.environ.get("PYTEST_XDIST_WORKER_COUNT", "")
    if worker.startswith("gw") and worker[2:].isdigit() and count.isdigit() and int(count) > 1:
        return int(worker[2:]) % int(count), int(count)
    return 0, 1


def in_lane(port: int, lanes: tuple[int, int]) -> bool:
    """Whether ``port`` belongs to lane ``lanes[0]`` of ``lanes[1]``. Ports pair up by
    ``port // 2``: the kernel hands out odd ports to ``bind`` and even ones to
    ``connect``, so ``port % lanes`` would leave a lane empty."""
    index, count = lanes
    return (port // 2) % count == index


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now, not handed out by this
    process lately, and in this pytest-xdist worker's lane."""
    lanes = lane()
    for _ in range(_TRIES):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if port not in _RECENT and in_lane(port, lanes):
            _RECENT.append(port)
            return port
    raise RuntimeError(f"no free port in lane {lanes[0]} of {lanes[1]} after {_TRIES} tries")
