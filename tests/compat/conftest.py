"""Fixtures for the parity suite: every scenario runs once per server side (`nats`, `hub`).

Choose the sides with `NATSEDGE_COMPAT_SERVERS=nats` (or `hub`, or `nats,hub`), or with
`--compat-servers=nats` when tests/compat is given on the command line.
"""

from __future__ import annotations

import pytest

from .harness import Server, selected_sides


def pytest_addoption(parser):
    parser.addoption("--compat-servers", action="store", default=None,
                     help="comma-separated servers for tests/compat: nats,hub (env NATSEDGE_COMPAT_SERVERS)")


def pytest_generate_tests(metafunc):
    if "side" in metafunc.fixturenames:
        sides = selected_sides(metafunc.config)
        metafunc.parametrize("side", sides, ids=sides)


class _Pool:
    """Session-wide cache of servers keyed by (side, config, files, monitor)."""

    def __init__(self, tmp_factory):
        self.tmp_factory = tmp_factory
        self.servers: dict = {}
        self.failed: dict = {}

    def get(self, side, config=None, monitor=False, files=None, jetstream=False):
        key = (side, config, tuple(sorted((files or {}).items())), monitor, jetstream)
        if key in self.failed:  # do not pay a slow failing start once per test
            pytest.fail(self.failed[key], pytrace=False)
        srv = self.servers.get(key)
        if srv is not None and not srv.alive():
            srv.stop()
            srv = None
        if srv is None:
            srv = Server(side, config=config, monitor=monitor, files=files, jetstream=jetstream,
                         workdir=self.tmp_factory.mktemp(f"srv-{side}"))
            self.servers[key] = srv  # registered before start so a failed start is still stopped
            try:
                srv.start()
            except pytest.fail.Exception as exc:
                self.failed[key] = str(exc)
                raise
        return srv

    def stop_all(self):
        for srv in self.servers.values():
            srv.stop()
        self.servers.clear()


@pytest.fixture(scope="session")
def _pool(tmp_path_factory, request):
    pool = _Pool(tmp_path_factory)
    request.addfinalizer(pool.stop_all)
    return pool


@pytest.fixture
def shared(_pool, side):
    """Return a function giving a session-shared server of this side for a config."""

    def get(config=None, monitor=False, files=None, jetstream=False):
        return _pool.get(side, config=config, monitor=monitor, files=files, jetstream=jetstream)

    return get


@pytest.fixture
def srv(shared):
    """The default shared server: no config, monitoring enabled."""
    return shared(monitor=True)


@pytest.fixture
def jsrv(shared):
    """A session-shared JetStream server (`-js -sd <tmp>`, monitoring on); tests use their own stream names."""
    return shared(monitor=True, jetstream=True)


@pytest.fixture
def fresh(side, tmp_path_factory, request):
    """Return a function that starts a private server (stopped by PID when the test ends)."""

    def start(config=None, monitor=False, files=None, wait=True, jetstream=False, store_dir=None):
        s = Server(side, config=config, monitor=monitor, files=files, jetstream=jetstream, store_dir=store_dir,
                   workdir=tmp_path_factory.mktemp(f"fresh-{side}"))
        request.addfinalizer(s.stop)
        if wait:
            s.start()
        return s

    return start
