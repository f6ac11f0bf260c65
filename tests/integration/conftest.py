from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.cluster import Cluster
from tests.integration.security_fixtures import outside_address  # noqa: F401 (a fixture)


@pytest.fixture
def cluster_factory(tmp_path: Path) -> Iterator[object]:
    made: list[Cluster] = []

    def make(**properties: str) -> Cluster:
        cluster = Cluster(tmp_path / f"cluster{len(made)}", dict(properties))
        made.append(cluster)
        return cluster

    yield make
    for cluster in made:
        cluster.stop_all()


@pytest.fixture
def cluster(cluster_factory) -> Cluster:  # type: ignore[no-untyped-def]
    """One coordinator and two workers, partition size lowered to its minimum, 1MiB."""
    c: Cluster = cluster_factory(**{"alluxio.worker.load.file.partition.size": "1MiB"})
    c.add_worker()
    c.add_worker()
    c.add_coordinator()
    return c
