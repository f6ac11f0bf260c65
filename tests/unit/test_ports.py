"""``free_port``: pytest-xdist workers get disjoint ports, and a process does not hand
out the same port twice in a row of calls."""

from __future__ import annotations

import socket

import pytest

from alluxiojob.testing import ports


@pytest.mark.parametrize(("worker", "count", "expected"), [
    ("", "", (0, 1)), ("gw0", "1", (0, 1)), ("gw1", "3", (1, 3)), ("gw4", "3", (1, 3)),
    ("master", "2", (0, 1)), ("gwx", "2", (0, 1)),
])
def test_the_lane_comes_from_the_xdist_worker(worker: str, count: str,
                                              expected: tuple[int, int],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTEST_XDIST_WORKER", worker)
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", count)
    assert ports.lane() == expected


def test_lanes_split_odd_and_even_ports_alike() -> None:
    for lanes in (2, 3):
        for port in range(32768, 32768 + 60):
            owners = [index for index in range(lanes) if ports.in_lane(port, (index, lanes))]
            assert len(owners) == 1
        for index in range(lanes):
            odd = [p for p in range(32769, 40000, 2) if ports.in_lane(p, (index, lanes))]
            assert len(odd) > 1000


@pytest.mark.parametrize("lanes", [(0, 2), (1, 2), (2, 3)])
def test_each_worker_gets_free_ports_of_its_own_lane(lanes: tuple[int, int],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTEST_XDIST_WORKER", f"gw{lanes[0]}")
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", str(lanes[1]))
    handed = [ports.free_port() for _ in range(50)]
    assert all(ports.in_lane(port, lanes) for port in handed)
    assert len(set(handed)) == len(handed)
    for port in handed[-5:]:  # nothing holds them: a server can bind each one
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", port))
