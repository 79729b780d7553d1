"""Fixtures for the edge tests.

Hub-facing tests take a `side` parameter: `nats` (the Go nats-server) and `hub` (our hub). Choose with
NATSEDGE_COMPAT_SERVERS=nats (or hub, or nats,hub), as for tests/compat.

A test marked `@pytest.mark.device` runs once more with its edges on the 32-bit MicroPython build that has the
edge frozen in, inside `-X heapsize=60000` (tests/edge/frozen.py): id suffix `frozen32`, marked `frozen32`
(`pytest -m frozen32` runs them all), against nats-server only (the first selected side when nats is not
selected). `device(slow=True)` marks that variant slow as well; `device(xfail="why")` expects it may fail there
(non-strict: a heap shortfall that fragmentation makes intermittent). Without
../shared/micropython/build-unix32.sh these variants skip with one line saying why.
"""

from __future__ import annotations

import pytest

from tests.compat.harness import selected_sides
from tests.edge import frozen
from tests.edge.edgeharness import UNIX64, Edge, Hub, Proxy, Runtime, build_mpy_tree, set_runtime
from tests.edge.fwdharness import FwdEdge

FROZEN_SIDE = "nats"


def pytest_generate_tests(metafunc):
    sides = selected_sides(metafunc.config) if "side" in metafunc.fixturenames else None
    mark = metafunc.definition.get_closest_marker("device")
    if mark is None:
        if sides:
            metafunc.parametrize("side", sides, ids=sides)
        return
    marks = [pytest.mark.frozen32] + ([pytest.mark.slow] if mark.kwargs.get("slow") else [])
    if mark.kwargs.get("xfail"):  # a known shortfall at 60 KB, measured and described in docs/benchmarks.md
        marks.append(pytest.mark.xfail(reason=mark.kwargs["xfail"], strict=False))
    if sides:
        side = FROZEN_SIDE if FROZEN_SIDE in sides else sides[0]
        params = [pytest.param(s, "unix64", id=s) for s in sides]
        params.append(pytest.param(side, "frozen32", id=f"{side}-frozen32", marks=marks))
        metafunc.parametrize("side,edge_runtime", params, indirect=["edge_runtime"])
    else:
        metafunc.parametrize("edge_runtime", [pytest.param("unix64", id="unix64"),
                                              pytest.param("frozen32", id="frozen32", marks=marks)], indirect=True)


@pytest.fixture(scope="session")
def frozen32_binary():
    """The 32-bit unix port with the edge frozen in: built once per session, or taken from build/unix32/ when its
    inputs have not changed. Skips (one line, the reason) without the build script or a 32-bit toolchain."""
    try:
        binary, secs = frozen.build()
    except frozen.Unavailable as e:
        pytest.skip(str(e))
    frozen.LAST_BUILD_SECONDS = secs
    return str(binary)


@pytest.fixture(autouse=True)
def edge_runtime(request):
    """The runtime this test's edges use (edgeharness.Runtime): unix64, or frozen32 for that variant of a test marked
    `device`."""
    if getattr(request, "param", "unix64") == "unix64":
        yield UNIX64
        return
    binary = request.getfixturevalue("frozen32_binary")
    rt = Runtime("frozen32", binary, heapsize=str(frozen.HEAPSIZE), frozen=True)
    set_runtime(rt)
    yield rt
    set_runtime(None)


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
    """start(extra_conf="", files=None, top="") -> a running Hub of this side with extra leafnodes settings (and
    top-level ones)."""
    started: list[Hub] = []

    def start(extra="", files=None, top=""):
        h = Hub(side, tmp_path / f"hub-{side}-{len(started)}", extra=extra, files=files, top=top)
        started.append(h)
        return h.start()

    start.side = side
    yield start
    for h in started:
        h.stop()


@pytest.fixture
def proxies():
    made: list[Proxy] = []

    def make(target_port, port=None):
        p = Proxy(target_port, port)
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


@pytest.fixture
def fwd_edges(tmp_path):
    """make(cfg, **kw) -> a FwdEdge (tests/edge/fwdharness.py) in its own folder; every one is stopped at the end."""
    made: list[FwdEdge] = []

    def make(cfg, **kw):
        e = FwdEdge(cfg, tmp_path / f"edge-{len(made)}", **kw)
        made.append(e)
        return e

    yield make
    for e in made:
        e.stop()
