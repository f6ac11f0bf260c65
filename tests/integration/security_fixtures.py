"""What the security tests share: a token file, certificates, a non-loopback address,
raw sockets and memory readings of real processes."""

from __future__ import annotations

import os
import random
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from tests.integration.cluster import Service


def token_file(root: Path, token: str = "tok-" + "7" * 32, mode: int = 0o600) -> Path:
    path = root / "cluster.token"
    path.write_text(token + "\n")
    path.chmod(mode)
    return path


def tls_files(root: Path) -> dict[str, str]:
    """A test CA and a certificate for 127.0.0.1/localhost, as site-file properties."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    paths = {name: root / f"{name}.pem" for name in ("cert", "key", "ca")}
    cert.cert_chain_pems[0].write_to_path(str(paths["cert"]))
    cert.private_key_pem.write_to_path(str(paths["key"]))
    ca.cert_pem.write_to_path(str(paths["ca"]))
    return {f"alluxio.job.tls.{name}.file": str(path) for name, path in paths.items()}


def peak_rss(service: Service) -> int:
    """The process's peak resident set (VmHWM), in bytes."""
    assert service.proc is not None
    for line in Path(f"/proc/{service.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc status")


def read_until_closed(sock: socket.socket, limit: int = 1 << 16) -> bytes:
    """Everything the server sends until it closes (bounded by the socket's timeout)."""
    data = b""
    while len(data) < limit:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    return data


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)


@pytest.fixture
def outside_address() -> Iterator[str]:
    """A second, non-loopback address of this host.

    It goes on a dummy interface, or, where the kernel has no dummy driver (some
    containers), on ``lo`` itself: either way, connecting to it from this host uses it
    as the source address, so a service bound to it (or to 0.0.0.0) sees a peer that is
    not loopback. The address is taken from 198.18.0.0/15, the range set aside for
    benchmarking, so it shadows no real host.
    """
    if os.geteuid() != 0:
        pytest.skip("needs root to add a non-loopback address (ip addr add)")
    name = f"ajsec{random.randrange(1 << 20):05x}"
    address = f"198.{random.choice((18, 19))}.{random.randrange(256)}.{random.randrange(1, 255)}"
    made_link = _ip("link", "add", name, "type", "dummy").returncode == 0
    device = name if made_link else "lo"
    try:
        for step in (["addr", "add", f"{address}/32", "dev", device],
                     ["link", "set", device, "up"]):
            done = _ip(*step)
            if done.returncode != 0:
                pytest.skip(f"cannot add a non-loopback address (ip {' '.join(step)}: "
                            f"{done.stderr.strip()})")
        yield address
    finally:
        if made_link:
            _ip("link", "del", name)
        else:
            _ip("addr", "del", f"{address}/32", "dev", "lo")
