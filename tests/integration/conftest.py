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


def _start_standard(cluster: Cluster) -> Cluster:
    cluster.add_worker(start=False)
    cluster.add_worker(start=False)
    cluster.add_coordinator(start=False)
    cluster.start_all()
    return cluster


STANDARD = {"alluxio.worker.load.file.partition.size": "1MiB"}


@pytest.fixture
def cluster(cluster_factory) -> Cluster:  # type: ignore[no-untyped-def]
    """One coordinator and two workers, partition size lowered to its minimum, 1MiB."""
    return _start_standard(cluster_factory(**STANDARD))


@pytest.fixture(scope="module")
def module_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """The ``cluster`` fixture's cluster, started once for a whole module. Only for a
    module whose tests change nothing another one sees (each works on its own paths,
    counts only its own jobs, kills nothing); such a module overrides ``cluster`` with
    it."""
    made = Cluster(tmp_path_factory.mktemp("module-cluster"), dict(STANDARD))
    try:
        yield _start_standard(made)
    finally:
        made.stop_all()
