"""Fleet runs take a `side` parameter: `nats` (the simulator starts nats-server) and `hub` (it starts our hub).

Choose with NATSEDGE_COMPAT_SERVERS=nats (or hub, or nats,hub), as for tests/compat and tests/edge.
"""

from __future__ import annotations

from tests.compat.harness import selected_sides


def pytest_generate_tests(metafunc):
    if "side" in metafunc.fixturenames:
        sides = selected_sides(metafunc.config)
        metafunc.parametrize("side", sides, ids=sides)
