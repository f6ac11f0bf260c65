"""Fixtures and hooks for the whole suite.

The fast tier (``scripts/test --fast``, that is ``pytest -m fast``) is every test under
``tests/unit`` and ``tests/store``, marked here, and the few end-to-end tests marked
``@pytest.mark.fast`` in ``tests/integration``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

TESTS = Path(__file__).parent
FAST_DIRECTORIES = (TESTS / "unit", TESTS / "store")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if any(item.path.is_relative_to(directory) for directory in FAST_DIRECTORIES):
            item.add_marker(pytest.mark.fast)
