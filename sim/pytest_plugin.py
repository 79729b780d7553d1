"""natsedge's pytest plugin: test your edge app on a simulated fleet of MicroPython edges in your own CI.

Loaded by pytest through the `pytest11` entry point of the natsedge package (`pip install 'natsedge[sim]'` is all
it takes). Fixtures (docs/testing.md):

* `natsedge_hub`: a hub on free 127.0.0.1 ports with JetStream: ours, or nats-server (indirect parametrization
  `@pytest.mark.parametrize("natsedge_hub", ["natsedge", "nats-server"], indirect=True)`, or `--natsedge-hub`).
* `natsedge_fleet`: a factory, `natsedge_fleet("app", edges=3, config={...})`, that starts N MicroPython edges
  running your app module against that hub, each behind its own proxy (partitions), with crashes (power cuts).
* `natsedge_vboard`: a virtual board (`natsedge vboard`) on a pseudo-terminal, for mpremote and `natsedge deploy`.

`hub.collect(subject)` and `hub.stream_messages(stream)` give what reached the hub. Every process a fixture starts is
stopped by PID in its finalizer, also when the test fails; a failed test's report gets each edge's last output lines.
A missing extra fails the test with one line saying what to install: a check that was skipped would pass unseen.

The machinery is sim/testing.py (imported when a fixture is used, so this module costs nothing to other test runs).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import pytest

if TYPE_CHECKING:
    from sim.testing import Fleet, Hub, VBoard

_REPORTED: pytest.StashKey[list[Any]] = pytest.StashKey()
HUB_CHOICES = ("natsedge", "nats-server")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("natsedge", "natsedge fleet testing (natsedge_hub, natsedge_fleet, natsedge_vboard)")
    group.addoption("--natsedge-hub", choices=HUB_CHOICES, default=None,
                    help="the hub the natsedge_hub fixture starts when a test does not parametrize it: natsedge "
                         "(ours, the default) or nats-server")


def _fail(e: Exception) -> NoReturn:
    """Fail the test with the exception's one line (no traceback, no "during handling of" chain)."""
    __tracebackhide__ = True
    raise pytest.fail.Exception(str(e), pytrace=False) from None


def _report_on_failure(request: pytest.FixtureRequest, thing: Any) -> None:
    request.node.stash.setdefault(_REPORTED, []).append(thing)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    rep = yield
    if rep.when == "call" and rep.failed:
        for thing in item.stash.get(_REPORTED, []):
            try:
                rep.sections.extend(thing.report_sections())
            except Exception as e:  # noqa: BLE001 (the report must not fail because a section could not be made)
                rep.sections.append(("natsedge", f"(no report section: {e!r})"))
    return rep


def _hub_params(request: pytest.FixtureRequest) -> tuple[str, bool]:
    param = getattr(request, "param", None)
    kind = request.config.getoption("natsedge_hub") or "natsedge"
    js = True
    if isinstance(param, str):
        kind = param
    elif isinstance(param, dict):
        unknown = set(param) - {"kind", "jetstream"}
        if unknown:
            raise pytest.UsageError(f"natsedge_hub parameter: unknown keys {sorted(unknown)} (kind, jetstream)")
        kind = param.get("kind", kind)
        js = bool(param.get("jetstream", True))
    elif param is not None:
        raise pytest.UsageError(f"natsedge_hub parameter: expected 'natsedge', 'nats-server' or a dict, got {param!r}")
    if kind not in HUB_CHOICES:
        raise pytest.UsageError(f"natsedge_hub parameter: kind {kind!r}: expected one of {', '.join(HUB_CHOICES)}")
    return kind, js


@pytest.fixture
def natsedge_hub(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Hub]:
    """A started hub: `.url` (clients), `.leaf_url`, `.collect(subject)`, `.add_stream(name, subjects)`,
    `.stream_messages(name)`, `.request()`, `.publish()`, `.monitor("leafz")`, `.restart(down, kill=)`.

    Ours by default; nats-server with `--natsedge-hub nats-server` or, per test, indirect parametrization with
    "natsedge" / "nats-server" or {"kind": ..., "jetstream": False}."""
    from host.tools.needs import MissingExtra
    from sim.testing import HarnessError, Hub

    kind, js = _hub_params(request)
    try:
        hub = Hub(tmp_path / "natsedge-hub", kind=kind, jetstream=js, what="the natsedge_hub fixture")
    except MissingExtra as e:
        _fail(e)
    _report_on_failure(request, hub)
    try:
        try:
            hub.start()
        except HarnessError as e:
            _fail(e)
        yield hub
    finally:
        hub.close()


@pytest.fixture
def natsedge_fleet(request: pytest.FixtureRequest, natsedge_hub: Hub, tmp_path: Path) -> Iterator[Callable[..., Fleet]]:
    """A factory: `natsedge_fleet(app, edges=3, *, config=None, files=None, path=(), name="edge-{i}", lan=False,
    heapsize=None, stats=1, wait="up", timeout=20)` starts `edges` MicroPython edges running `app` (a module name
    found in the test file's folder or on `path`, or a path to a .py file) against `natsedge_hub`, each behind its own
    proxy, and returns the Fleet once every edge is linked to the hub (wait="up"). Fleet: `fleet[i]`, `len(fleet)`,
    `.partition(i, mode)`, `.heal(i)`, `.crash(i, restart=True, down=0)`, `.stop(i)`, `.start(i)`, `.wait_up(...)`;
    each edge: `.lines`, `.wait_for_line(pattern)`, `.link_up`, `.boots`, `.dir`, `.data`, `.pid`."""
    from host.tools.needs import MissingExtra, micropython
    from sim.testing import Fleet

    try:
        micropython("the natsedge_fleet fixture", "sim")
    except MissingExtra as e:
        _fail(e)
    fleets: list[Fleet] = []
    here = request.path.parent

    def start(app: Any, edges: int = 3, *, wait: str | None = "up", timeout: float = 20.0, path: Any = (),
              **kw: Any) -> Fleet:
        fleet = Fleet(natsedge_hub, app, edges, workdir=tmp_path / f"natsedge-fleet-{len(fleets)}",
                      path=[here, *path], what="the natsedge_fleet fixture", **kw)
        fleets.append(fleet)
        _report_on_failure(request, fleet)
        try:
            return fleet.start(wait=wait, timeout=timeout)
        except BaseException:
            with contextlib.suppress(Exception):  # what failed is the error to show; stop what runs at once
                fleet.close()
            raise

    try:
        yield start
    finally:
        errors: list[BaseException] = []
        for fleet in reversed(fleets):
            try:
                fleet.close()
            except Exception as e:  # noqa: BLE001 (stop the others first, then report)
                errors.append(e)
        if errors:
            raise errors[0]


@pytest.fixture
def natsedge_vboard(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[VBoard]:
    """A started virtual board: `.port` (a PTY for mpremote / `natsedge deploy --port`), `.flash` (its folder),
    `.exec(code)`, `.mpremote(*args)`, `.deploy(config, *args)`. Indirect parametrization with
    {"heapsize": BYTES, "boot": False} changes the board."""
    from host.tools.needs import MissingExtra
    from sim.testing import VBoard

    param = getattr(request, "param", None) or {}
    if not isinstance(param, dict) or set(param) - {"heapsize", "boot"}:
        raise pytest.UsageError(f"natsedge_vboard parameter: expected a dict with heapsize, boot; got {param!r}")
    try:
        board = VBoard(tmp_path / "natsedge-vboard", heapsize=param.get("heapsize"), boot=param.get("boot", True),
                       what="the natsedge_vboard fixture")
    except MissingExtra as e:
        _fail(e)
    _report_on_failure(request, board)
    try:
        board.start()
        yield board
    finally:
        board.close()
