"""Fixtures for the edge tests.

Hub-facing tests take a `side` parameter: `nats` (the Go nats-server) and `hub` (our hub). Choose with
NATSEDGE_COMPAT_SERVERS=nats (or hub, or nats,hub), as for tests/compat.
"""

from __future__ import annotations

import pytest

from tests.compat.harness import selected_sides
from tests.edge.edgeharness import Edge, Hub, Proxy, build_mpy_tree


def pytest_generate_tests(metafunc):
    if "side" in metafunc.fixturenames:
        sides = selected_sides(metafunc.config)
        metafunc.parametrize("side", sides, ids=sides)


@pytest.fixture
def edges(tmp_path):
    """start(cfg, **kw) -> a running Edge process; all are stopped by PID at teardown."""
    started: list[Edge] = []

    def start(cfg, wait=True, **kw):
        e = Edge(cfg, tmp_path / f"edge-{len(started)}", **kw)
        started.append(e)
        return e.start(wait=wait)

    yield start
    for e in started:
        e.stop()


@pytest.fixture
def hub(side, tmp_path):
    h = Hub(side, tmp_path / f"hub-{side}")
    yield h.start()
    h.stop()


@pytest.fixture
def hubs(side, tmp_path):
    """start(extra_conf="", files=None) -> a running Hub of this side with extra leafnodes settings."""
    started: list[Hub] = []

    def start(extra="", files=None):
        h = Hub(side, tmp_path / f"hub-{side}-{len(started)}", extra=extra, files=files)
        started.append(h)
        return h.start()

    start.side = side
    yield start
    for h in started:
        h.stop()


@pytest.fixture
def proxies():
    made: list[Proxy] = []

    def make(target_port):
        p = Proxy(target_port)
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()


@pytest.fixture(scope="session")
def mpy_tree(tmp_path_factory):
    """The edge compiled to .mpy, as shipped to a device: (path for MICROPYPATH, {file: size})."""
    d = tmp_path_factory.mktemp("mpy")
    sizes = build_mpy_tree(d)
    return str(d), sizes
