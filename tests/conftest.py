"""Fixtures and hooks for the whole suite.

Every test runs under ``no_blocking_calls_on_the_loop``: alluxiojob code that makes a
blocking call (a file read, ``os.stat``, ``time.sleep``, a blocking socket) on the trio
event loop fails the test (``alluxiojob/testing/blocking.py``). Tests of processes
started with subprocess are not affected: the guard sees only this process.

The fast tier (``scripts/test --fast``, that is ``pytest -m fast``) is every test under
``tests/unit`` and ``tests/store``, marked here, and the few end-to-end tests marked
``@pytest.mark.fast`` in ``tests/integration``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from alluxiojob.testing import blocking

TESTS = Path(__file__).parent
FAST_DIRECTORIES = (TESTS / "unit", TESTS / "store")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if any(item.path.is_relative_to(directory) for directory in FAST_DIRECTORIES):
            item.add_marker(pytest.mark.fast)


@pytest.fixture(autouse=True)
def no_blocking_calls_on_the_loop() -> Iterator[None]:
    with blocking.guard() as found:
        yield
    assert not found, "blocking calls on the trio event loop:\n" + "\n".join(found)
