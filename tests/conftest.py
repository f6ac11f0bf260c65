"""Fixtures and hooks for the whole suite.

Every test runs under ``no_blocking_calls_on_the_loop``: alluxiojob code that makes a
blocking call (a file read, ``os.stat``, ``time.sleep``, a blocking socket) on the trio
event loop fails the test (``alluxiojob/testing/blocking.py``). Tests of processes
started with subprocess are not affected: the guard sees only this process.

The fast tier (``scripts/test --fast``, that is ``pytest -m fast``) is every test under
``tests/unit`` and ``tests/store``, marked here, and the few end-to-end tests marked
``@pytest.mark.fast`` in ``tests/integration``.

Under pytest-xdist (``scripts/test`` runs the suite in 2 processes) the slowest files
are collected first, so they start first; a serial run keeps the usual order.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from alluxiojob.testing import blocking

TESTS = Path(__file__).parent
FAST_DIRECTORIES = (TESTS / "unit", TESTS / "store")


# The slowest test files, slowest first, measured with ``--durations`` (setup, call and
# teardown of every test of the file). Under pytest-xdist whole files go to the workers in
# collection order (``--dist loadfile``), so these start first and the many short files
# fill in at the end instead of one long file running on alone.
SLOWEST_FIRST = (
    "tests/integration/test_ha.py",  # 137 s under -n 2, on a machine at load average 7
    "tests/integration/test_s3.py",
    "tests/integration/test_data_path.py",
    "tests/integration/test_security.py",
    "tests/integration/test_shards.py",
    "tests/integration/test_engine.py",
    "tests/integration/test_s3_api.py",
    "tests/integration/test_manifests.py",
    "tests/integration/test_edge_cases.py",
    "tests/integration/test_load_free.py",  # 46 s
)


def run_order(path: Path) -> tuple[int, int]:
    """Where a test file goes under pytest-xdist: the measured slowest first, then the
    other end-to-end files, then ``tests/store`` and ``tests/unit``."""
    relative = path.relative_to(TESTS.parent).as_posix()
    if relative in SLOWEST_FIRST:
        return 0, SLOWEST_FIRST.index(relative)
    if path.is_relative_to(TESTS / "integration"):
        return 1, 0
    return 2, 0


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if any(item.path.is_relative_to(directory) for directory in FAST_DIRECTORIES):
            item.add_marker(pytest.mark.fast)
    if hasattr(config, "workerinput"):  # a pytest-xdist worker: only its order is used
        items.sort(key=lambda item: run_order(item.path))  # stable: a file keeps its order


@pytest.fixture(autouse=True)
def no_blocking_calls_on_the_loop() -> Iterator[None]:
    with blocking.guard() as found:
        yield
    assert not found, "blocking calls on the trio event loop:\n" + "\n".join(found)
