"""Account quotas (nats-reference more/README.md §E) against nats-server and our hub: the config keys, the exact -ERR
texts, which connection is cut, and JetStream's per-account limits with their 100xx errors and usage figures.

Each scenario runs once per side (`nats`, `hub`; NATSEDGE_COMPAT_SERVERS picks; the fixtures come from
tests/security/conftest.py), on servers the test starts on free 127.0.0.1 ports and stops by PID.
"""

from __future__ import annotations

import json

import pytest

from tests.compat.harness import Raw, api_error, free_port, js_api, nats_connect, run, wait_until

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


def test_account_max_subscriptions_zero_cuts_the_connection(fresh):
    s = fresh("accounts { Z: { users: [{user: z, password: z}], limits: { max_subs: 0 } } }\n", monitor=True)
    with Raw(s.port) as r:
        r.connect(user="z", **{"pass": "z"})
        r.send(b"PING\r\n")
        # the -ERR, and the close a moment later: the PING is still answered (nats-server sends the -ERR from another
        # goroutine, so it may come before or after the PONG)
        lines = r.expect_closed().split(b"\r\n")
        err = b"-ERR 'maximum subscriptions exceeded'"
        assert err in lines
        lines.remove(err)
        assert len(lines) == 3 and lines[0] == b"PONG" and lines[1].startswith(b"INFO ") and lines[2] == b""
    wait_until(lambda: s.http_get("/connz?state=closed")["connections"], msg="the closed connection listed")
    assert s.http_get("/connz?state=closed")["connections"][-1]["reason"] == "Maximum Subscriptions Exceeded"


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


# ---- limits lowered under live connections: a pushed account JWT ------------------------------------------------


def test_lowered_max_connections_cuts_the_newest(pushed):
    c1, c2, c3 = pushed.connect("one"), pushed.connect("two"), pushed.connect("three")
    try:
        pushed.acc.limits["conn"] = 1
        pushed.push()
        for newer in (c2, c3):
            newer.expect_err("maximum account active connections exceeded")
            newer.expect_closed()
        c1.sync()  # the oldest stays
    finally:
        for c in (c1, c2, c3):
            c.close()


def test_lowered_max_subscriptions_cuts_a_connection_over_it(pushed):
    with pushed.connect("many") as many, pushed.connect("few") as few:
        many.send(b"SUB a 1\r\nSUB b 2\r\nSUB c 3\r\n")
        many.sync()
        few.send(b"SUB a 1\r\n")
        few.sync()
        pushed.acc.limits["subs"] = 2
        pushed.push()
        many.expect_err("maximum subscriptions exceeded")
        many.expect_closed()
        # under the new limit: the connection stays, and its next SUB past the limit is refused
        few.send(b"SUB b 2\r\nSUB c 3\r\nPING\r\n")
        few.expect(rb"-ERR 'maximum subscriptions exceeded'\r\nPONG\r\n")


# ---- JetStream per-account limits (§E2) ------------------------------------------------------------------------

JS_CONF = """
jetstream { max_memory_store: 64MB, max_file_store: 64MB }
accounts {
  A: { users: [{user: a, password: a}],
       jetstream: {max_memory: 2KB, max_file: 4KB, max_streams: 2, max_consumers: 1} }
  B: { users: [{user: b, password: b}],
       jetstream: {max_mem: 1MB, store: 1MB, max_bytes_required: true, mem_max_stream_bytes: 1000,
                   disk_max_stream_bytes: 2000, max_ack_pending: 5} }
  C: { users: [{user: c, password: c}] }
}
"""
API = "$JS.API"
ERR_STREAMS = (400, 10027, "maximum number of streams reached")
ERR_CONSUMERS = (400, 10026, "maximum consumers limit reached")
ERR_MEMORY = (500, 10028, "insufficient memory resources available")
ERR_STORAGE = (500, 10047, "insufficient storage resources available")


@pytest.fixture
def jsq(fresh):
    return fresh(JS_CONF, monitor=True, jetstream=True)


def stream(name: str, storage: str = "file", **cfg) -> dict:
    return {"name": name, "subjects": [name.lower()], "storage": storage, **cfg}


async def connect(srv, user: str):
    return await nats_connect(srv, user=user, password=user)


def test_js_account_limits_and_usage(jsq):
    async def body():
        nc = await connect(jsq, "a")
        try:
            info = await js_api(nc, f"{API}.INFO")
            assert info["limits"] == {"max_memory": 2048, "max_storage": 4096, "max_streams": 2, "max_consumers": 1,
                                      "max_ack_pending": -1, "memory_max_stream_bytes": -1,
                                      "storage_max_stream_bytes": -1, "max_bytes_required": False}
            assert (info["memory"], info["storage"], info["reserved_memory"], info["reserved_storage"]) == (0, 0, 0, 0)
            # a reservation over the account's limit, and a stream that allows more consumers than the account
            r = await js_api(nc, f"{API}.STREAM.CREATE.M1", stream("M1", "memory", max_bytes=4096))
            assert api_error(r) == ERR_MEMORY
            r = await js_api(nc, f"{API}.STREAM.CREATE.F1", stream("F1", max_bytes=4097))
            assert api_error(r) == ERR_STORAGE
            r = await js_api(nc, f"{API}.STREAM.CREATE.M1", stream("M1", "memory", max_consumers=5))
            assert api_error(r) == ERR_CONSUMERS
            assert "error" not in await js_api(nc, f"{API}.STREAM.CREATE.M1", stream("M1", "memory"))
            # 17 messages of 2 + 100 + 16 bytes fit in 2 KB, the 18th does not
            acks = [json.loads((await nc.request("m1", b"y" * 100, timeout=2)).data) for _ in range(18)]
            assert [a.get("seq") for a in acks[:17]] == list(range(1, 18))
            assert acks[17] == {"error": {"code": 400, "err_code": 10002,
                                          "description": "resource limits exceeded for account"},
                                "stream": "M1", "seq": 0}
            r = await js_api(nc, f"{API}.STREAM.CREATE.F1", stream("F1", max_bytes=1000))
            assert "error" not in r
            assert api_error(await js_api(nc, f"{API}.STREAM.CREATE.F2", stream("F2"))) == ERR_STREAMS
            # re-creating an existing stream is not a new one
            assert "error" not in await js_api(nc, f"{API}.STREAM.CREATE.F1", stream("F1", max_bytes=1000))
            # an update re-checks the reservation, without the stream's own old one
            assert api_error(await js_api(nc, f"{API}.STREAM.UPDATE.F1", stream("F1", max_bytes=4097))) == ERR_STORAGE
            assert "error" not in await js_api(nc, f"{API}.STREAM.UPDATE.F1", stream("F1", max_bytes=4096))
            assert "error" not in await js_api(nc, f"{API}.STREAM.UPDATE.F1", stream("F1", max_bytes=1000))
            # max_consumers counts per stream
            c1 = {"stream_name": "M1", "config": {"durable_name": "C1", "ack_policy": "explicit"}}
            assert "error" not in await js_api(nc, f"{API}.CONSUMER.CREATE.M1.C1", c1)
            c2 = {"stream_name": "M1", "config": {"durable_name": "C2", "ack_policy": "explicit"}}
            assert api_error(await js_api(nc, f"{API}.CONSUMER.CREATE.M1.C2", c2)) == ERR_CONSUMERS
            c3 = {"stream_name": "F1", "config": {"durable_name": "C3", "ack_policy": "explicit"}}
            assert "error" not in await js_api(nc, f"{API}.CONSUMER.CREATE.F1.C3", c3)
            await nc.request("f1", b"z" * 10, timeout=2)
            info = await js_api(nc, f"{API}.INFO")
            assert (info["memory"], info["storage"]) == (17 * 118, 22 + 2 + 10 + 8)
            assert (info["reserved_memory"], info["reserved_storage"], info["streams"], info["consumers"]) == \
                (0, 1000, 2, 2)
            return info
        finally:
            await nc.close()

    run(body())
    detail = jsq.http_get("/jsz?accounts=true")["account_details"]
    a = next(d for d in detail if d["name"] == "A")
    assert (a["memory"], a["storage"], a["reserved_memory"], a["reserved_storage"]) == (17 * 118, 42, 2048, 4096)


def test_js_max_bytes_required_and_max_stream_bytes(jsq):
    async def body():
        nc = await connect(jsq, "b")
        try:
            r = await js_api(nc, f"{API}.STREAM.CREATE.X", stream("X"))
            assert api_error(r) == (400, 10113, "account requires a stream config to have max bytes set")
            r = await js_api(nc, f"{API}.STREAM.CREATE.X", stream("X", "memory", max_bytes=1001))
            assert api_error(r) == (400, 10122, "stream max bytes exceeds account limit max stream bytes")
            r = await js_api(nc, f"{API}.STREAM.CREATE.X", stream("X", max_bytes=2001))
            assert api_error(r) == (400, 10122, "stream max bytes exceeds account limit max stream bytes")
            assert "error" not in await js_api(nc, f"{API}.STREAM.CREATE.X", stream("X", max_bytes=2000))
            # the account's max_ack_pending: the default for a new consumer and its upper bound
            r = await js_api(nc, f"{API}.CONSUMER.CREATE.X.D1",
                             {"stream_name": "X", "config": {"durable_name": "D1", "ack_policy": "explicit"}})
            assert r["config"]["max_ack_pending"] == 5
            r = await js_api(nc, f"{API}.CONSUMER.CREATE.X.D2", {"stream_name": "X", "config": {
                "durable_name": "D2", "ack_policy": "explicit", "max_ack_pending": 6}})
            assert api_error(r) == (400, 10121, "consumer max ack pending exceeds system limit of 5")
            info = await js_api(nc, f"{API}.INFO")
            assert info["limits"] == {"max_memory": 1 << 20, "max_storage": 1 << 20, "max_streams": -1,
                                      "max_consumers": -1, "max_ack_pending": 5, "memory_max_stream_bytes": 1000,
                                      "storage_max_stream_bytes": 2000, "max_bytes_required": True}
        finally:
            await nc.close()

    run(body())


def test_js_account_without_jetstream(jsq):
    async def body():
        nc = await connect(jsq, "c")
        try:
            assert api_error(await js_api(nc, f"{API}.INFO")) == (503, 10039, "JetStream not enabled for account")
        finally:
            await nc.close()

    run(body())
    assert [d["name"] for d in jsq.http_get("/jsz?accounts=true")["account_details"]] == ["A", "B"]


def test_accountz_shows_connections_and_subscriptions(core):
    before = core.http_get("/accountz?acc=A")["account_detail"]
    assert (before["client_connections"], before["leafnode_connections"]) == (0, 0)
    with login(core, "a") as c, leaf_login(core) as leaf:
        leaf.expect(rb"INFO [^\r]*\r\n(?:LS\+ [^\r]*\r\n)*PONG\r\n")
        c.send(b"SUB x 1\r\nSUB y 2\r\n")
        c.sync()
        d = core.http_get("/accountz?acc=A")["account_detail"]
        assert (d["account_name"], d["jetstream_enabled"]) == ("A", False)
        assert (d["client_connections"], d["leafnode_connections"]) == (1, 1)
        assert d["subscriptions"] == before["subscriptions"] + 2
    status, body = core.http_get("/accountz?acc=NOPE", raw=True)
    assert status == 400 and b"Account NOPE does not exist" in body
