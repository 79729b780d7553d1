"""Fixtures for the cluster parity suite: every scenario runs once per side (`nats`, `hub`), against a 3-node cluster
of that side.

Choose the sides with `NATSEDGE_CLUSTER_SIDES=nats` (or `hub`, or `nats,hub`, the default), or with
`--cluster-sides=nats` when tests/cluster is given on the command line.

Read-only scenarios share one cluster per (side, topology) for the session; scenarios that kill, restart or
lame-duck a node start their own (`fresh_cluster`), stopped by PID when the test ends, pass or fail.
"""

from __future__ import annotations

import pytest

from .harness import Cluster, selected_sides


def pytest_addoption(parser):
    parser.addoption("--cluster-sides", action="store", default=None,
                     help="comma-separated sides for tests/cluster: nats,hub (env NATSEDGE_CLUSTER_SIDES)")


def pytest_generate_tests(metafunc):
    if "side" in metafunc.fixturenames:
        sides = selected_sides(metafunc.config)
        metafunc.parametrize("side", sides, ids=sides)


class _Clusters:
    """Session-wide 3-node clusters keyed by (side, topology). A failed start is remembered, so a side that cannot
    cluster fails every test at once instead of paying the formation timeout per test."""

    def __init__(self, tmp_factory):
        self.tmp_factory = tmp_factory
        self.clusters: dict = {}
        self.failed: dict = {}

    def get(self, side: str, topology: str) -> Cluster:
        key = (side, topology)
        if key in self.failed:
            pytest.fail(self.failed[key], pytrace=False)
        c = self.clusters.get(key)
        if c is not None and not c.alive():
            c.stop()
            c = None
        if c is None:
            c = Cluster(side, 3, self.tmp_factory.mktemp(f"cluster-{side}-{topology}"), topology=topology)
            self.clusters[key] = c  # registered before start so a failed start is still stopped
            try:
                c.start()
            except pytest.fail.Exception as exc:
                self.failed[key] = str(exc)
                raise
        return c

    def stop_all(self):
        for c in self.clusters.values():
            c.stop()
        self.clusters.clear()


@pytest.fixture(scope="session")
def _clusters(tmp_path_factory, request):
    pool = _Clusters(tmp_path_factory)
    request.addfinalizer(pool.stop_all)
    return pool


@pytest.fixture
def topology():
    """The shared cluster's topology; tests parametrize it to run on both "mesh" and "seed"."""
    return "mesh"


@pytest.fixture
def cluster(_clusters, side, topology) -> Cluster:
    """A session-shared, formed 3-node cluster of this side. Tests use their own subjects and leave it running."""
    return _clusters.get(side, topology)


@pytest.fixture
def fresh_cluster(side, tmp_path_factory, request):
    """Return a function that builds a private cluster (started unless start=False), stopped by PID at test end."""

    def make(size: int = 3, topology: str = "mesh", start: bool = True, **kw) -> Cluster:
        c = Cluster(side, size, tmp_path_factory.mktemp(f"fresh-cluster-{side}"), topology=topology, **kw)
        request.addfinalizer(c.stop)
        if start:
            c.start()
        return c

    return make
