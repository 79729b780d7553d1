"""Fixtures for the super-cluster parity suite: every scenario runs once per side (`nats`, `hub`, `mixed-nats`,
`mixed-hub`: tests/gateway/harness.py).

Choose the sides with `NATSEDGE_GATEWAY_SIDES=nats,hub` or `--gateway-sides=...` when tests/gateway is given on the
command line. Each test starts its own super-cluster (`super_cluster`), stopped by PID when the test ends, pass or
fail.
"""

from __future__ import annotations

import pytest

from .harness import SuperCluster, selected_sides


def pytest_addoption(parser):
    parser.addoption("--gateway-sides", action="store", default=None,
                     help="comma-separated sides for tests/gateway: nats,hub,mixed-nats,mixed-hub "
                          "(env NATSEDGE_GATEWAY_SIDES)")


def pytest_generate_tests(metafunc):
    if "side" in metafunc.fixturenames:
        sides = selected_sides(metafunc.config)
        metafunc.parametrize("side", sides, ids=sides)


@pytest.fixture
def super_cluster(side, tmp_path_factory, request):
    """Return a function that builds and starts a super-cluster of this side, stopped by PID at test end."""

    def make(size: int = 1, **kw) -> SuperCluster:
        sc = SuperCluster(side, tmp_path_factory.mktemp(f"super-{side}"), size=size, **kw)
        request.addfinalizer(sc.stop)
        return sc.start()

    return make
