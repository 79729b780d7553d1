"""Account quotas (nats-reference more/README.md §E) against nats-server and our hub: the config keys, the exact -ERR
texts, which connection is cut, and JetStream's per-account limits with their 100xx errors and usage figures.

Each scenario runs once per side (`nats`, `hub`; NATSEDGE_COMPAT_SERVERS picks), on servers the test starts on free
127.0.0.1 ports and stops by PID.
"""

from __future__ import annotations

import json

import pytest

from tests.compat import conftest as compat
from tests.compat.harness import Raw, free_port, wait_until

# The parity suite's two sides and its private-server fixture (tests/compat/conftest.py).
pytest_generate_tests = compat.pytest_generate_tests
fresh = compat.fresh

CORE_CONF = """
accounts {
  A: { users: [{user: a, password: a}],
       limits: {max_connections: 2, max_subscriptions: 2, max_payload: 100, max_leafnodes: 1} }
  B: { users: [{user: b, password: b}] }
}
leafnodes { listen: 127.0.0.1:%d, authorization { user: leafy, password: s3cret, account: A } }
"""


@pytest.fixture
def core(fresh):
    port = free_port()
    s = fresh(CORE_CONF % port, monitor=True)
    s.leaf_port = port
    return s


def login(srv, user: str) -> Raw:
    return srv.client(user=user, **{"pass": user})


def refused(srv, user: str, text: str) -> bytes:
    """Connect as `user`, expecting INFO, then `-ERR '<text>'` and the close; returns what came after the -ERR."""
    r = Raw(srv.port)
    try:
        r.connect(user=user, **{"pass": user})
        r.send(b"PING\r\n")
        r.expect_err(text)
        return r.expect_closed()
    finally:
        r.close()


def test_max_connections_cuts_the_one_over_the_limit(core):
    a1, a2 = login(core, "a"), login(core, "a")
    try:
        assert refused(core, "a", "maximum account active connections exceeded") == b""
        closed = core.http_get("/connz?state=closed")["connections"]
        assert closed[-1]["reason"] == "Maximum Account Connections Exceeded"
        # the limit is the account's: B is not touched, and A's connections stay
        with login(core, "b") as b:
            b.sync()
        a1.sync()
        a2.sync()
        a1.close()
        holder = {}

        def admitted():
            r = Raw(core.port)
            r.connect(user="a", **{"pass": "a"})
            r.send(b"PING\r\n")
            m = r.expect(rb"(PONG\r\n|-ERR '[^']*'\r\n)")
            if m.group(1).startswith(b"PONG"):
                holder["a3"] = r
                return True
            r.close()
            return False

        wait_until(admitted, timeout=3, interval=0.05, msg="a freed slot of A taken again")
        holder["a3"].close()
    finally:
        a1.close()
        a2.close()


def test_max_subscriptions_is_per_connection_and_keeps_it(core):
    with login(core, "a") as c1, login(core, "a") as c2:
        c1.send(b"SUB s1 1\r\nSUB s2 2\r\nSUB s3 3\r\nPING\r\n")
        c1.expect(rb"-ERR 'maximum subscriptions exceeded'\r\nPONG\r\n")
        # the third SUB was dropped, the connection still works
        c1.send(b"PUB s1 4\r\nfour\r\nPUB s3 5\r\nthree\r\n")
        assert [(m.sid, m.payload) for m in c1.msgs_until_pong()] == [("1", b"four")]
        # a second connection of the account has its own two
        c2.send(b"SUB s1 1\r\nSUB s2 2\r\nPING\r\n")
        c2.expect(rb"PONG\r\n")


def test_server_max_subscriptions_below_the_account_wins(fresh):
    s = fresh("max_subscriptions: 1\n" + CORE_CONF % free_port())
    with login(s, "a") as c:
        c.send(b"SUB s1 1\r\nSUB s2 2\r\nPING\r\n")
        c.expect(rb"-ERR 'maximum subscriptions exceeded'\r\nPONG\r\n")


def test_max_payload_is_advertised_and_cut(core):
    with login(core, "a") as c, login(core, "b") as b:
        assert c.info["max_payload"] == 1048576  # the first INFO comes before the account is known
        assert c.connect_info["max_payload"] == 100
        assert b.connect_info["max_payload"] == 1048576
        c.send(b"SUB big 1\r\nPUB big 100\r\n" + b"x" * 100 + b"\r\n")
        assert [len(m.payload) for m in c.msgs_until_pong()] == [100]
        c.send(b"PUB big 101\r\n" + b"x" * 101 + b"\r\n")
        c.expect_err("Maximum Payload Violation")
        assert c.expect_closed() == b""
        assert core.http_get("/connz?state=closed")["connections"][-1]["reason"] == \
            "Maximum Message Payload Exceeded"


def test_max_payload_in_the_read_that_carries_connect(core):
    r = Raw(core.port)
    with r:
        r.send(b'CONNECT {"verbose":false,"protocol":1,"user":"a","pass":"a"}\r\nPUB x 101\r\n' + b"x" * 101 +
               b"\r\nPING\r\n")
        r.expect_err("Maximum Payload Violation")
        r.expect_closed()


def leaf_login(srv) -> Raw:
    r = Raw(srv.leaf_port)
    r.send(b'CONNECT {"name":"edge","user":"leafy","pass":"s3cret","headers":true,"protocol":1}\r\nPING\r\n')
    return r


def test_max_leafnodes_and_leafs_count_as_connections(core):
    leaf = leaf_login(core)
    with leaf:
        info = json.loads(leaf.expect(rb"INFO (\{.*?\}) ?\r\n").group(1))
        assert info["remote_account"] == "A"
        leaf.expect(rb"(?:LS\+ [^\r]*\r\n)*PONG\r\n")
        second = leaf_login(core)
        with second:
            # nats-server registers an accepted leaf with its account while authenticating it
            second.expect_err("Authorization Violation")
            second.expect_closed()
        # the leaf is one of A's two connections: one client still fits, a second does not
        with login(core, "a"):
            refused(core, "a", "maximum account active connections exceeded")


@pytest.mark.parametrize("body, error", [
    ("limits: { max_conns: 2 }", 'Unknown field "max_conns" parsing account limits'),
    ("jetstream: { max_mem: 1MB, max_streamz: 2 }", 'unknown field "max_streamz"'),
    ("jetstream: maybe", "Expected 'enabled' or 'disabled' for string value, got 'maybe'"),
])
def test_bad_account_limits_are_config_errors(fresh, body, error):
    s = fresh("accounts { A: { users: [{user: a, password: a}], " + body + " } }\n", wait=False)
    s.spawn()
    assert s.proc.wait(timeout=10) != 0
    out = s.output()
    assert error in out, out
    assert len([ln for ln in out.splitlines() if error in ln]) == 1
