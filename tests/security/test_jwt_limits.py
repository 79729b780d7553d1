"""JWT limits end to end, against nats-server and our hub: an account JWT's `limits` (conn, subs, payload, leaf and
the JetStream ones, flat or tiered) and a user JWT's own `subs` / `payload`, with the server's `max_subscriptions` /
`max_payload` below them. Scenarios after nats-server's jwt_test.go TestJWTAccountLimitsSubs,
...SubsButServerOverrides, ...MaxPayload, ...MaxPayloadButServerOverrides, ...MaxConns, TestJWTJetStreamMaxStore and
jetstream_test.go TestJetStreamTieredLimits (nats-reference more/README.md §E3); the tests are our own.

What a missing claim means is nats-io/jwt's decoding: in a v2 JWT a missing integer is 0 (a user without `subs`
may not subscribe, an account without `conn` admits no one), in a v1 user JWT it is no limit.
"""

from __future__ import annotations

import base64
import json

import pytest

from tests.compat.harness import Raw, api_error, free_port, js_api, run
from tests.jwtmint import Key, Operator, encode_jwt, encode_v1


def sig(key: Key, nonce: str) -> str:
    return base64.urlsafe_b64encode(key.sign(nonce.encode())).rstrip(b"=").decode()


def login(srv, user, port: int | None = None) -> Raw:
    """A Raw client through CONNECT + PING/PONG and the INFO after it, as `user` (a tests.jwtmint User)."""
    r = Raw(port or srv.port)
    try:
        r.handshake(jwt=user.jwt, sig=sig(user.key, r.info["nonce"]))
    except BaseException:
        r.close()
        raise
    return r


def subs_until_error(r: Raw, n: int) -> list[str]:
    """Send n SUBs and a PING; the -ERR texts before the PONG."""
    r.send(b"".join(b"SUB s.%d %d\r\n" % (i, i) for i in range(n)))
    return [f[1] for f in r.frames_until_pong() if f[0] == "-ERR"]


MAX_SUBS_ERR = "'maximum subscriptions exceeded'"


class Core:
    """One operator: account SUBS (subs 3), PAY (payload 8), CONN (conn 2), LEAF (leaf 1), OPEN (no limits),
    EMPTY, whose `limits` claim is `{}` as a hand-written JWT may have it, and NOBEARER (disallow_bearer)."""

    def __init__(self) -> None:
        self.op = Operator()
        self.subs = self.op.account("SUBS", limits={"subs": 3})
        self.pay = self.op.account("PAY", limits={"payload": 8})
        self.conn = self.op.account("CONN", limits={"conn": 2})
        self.leaf = self.op.account("LEAF", limits={"leaf": 1})
        self.open = self.op.account("OPEN")
        self.empty = self.op.account("EMPTY", nsc_defaults=False)
        self.no_bearer = self.op.account("NOBEARER", limits={"disallow_bearer": True})
        self.leaf_ports: dict[str, int] = {}  # per side: both sides' shared servers run at once

    def conf(self, extra: str = "") -> str:
        return self.op.server_conf([self.subs, self.pay, self.conn, self.leaf, self.open, self.empty,
                                     self.no_bearer]) + extra


@pytest.fixture(scope="module")
def core_accounts():
    return Core()


@pytest.fixture
def core(shared, core_accounts, side):
    port = core_accounts.leaf_ports.setdefault(side, free_port())
    s = shared(config=core_accounts.conf(f"leafnodes {{ listen: 127.0.0.1:{port} }}\n"))
    s.leaf_port = port
    return s


# ---- account limits -------------------------------------------------------------------------------------------


def test_account_subs_limit_is_per_connection(core, core_accounts):
    user = core_accounts.subs.user("u")
    with login(core, user) as c1, login(core, user) as c2:
        assert subs_until_error(c1, 4) == [MAX_SUBS_ERR]
        # the fourth SUB was dropped and the connection stays; the other connection has its own three
        c1.send(b"PUB s.3 1\r\nx\r\nPUB s.0 1\r\ny\r\n")
        assert [(m.sid, m.payload) for m in c1.msgs_until_pong()] == [("0", b"y")]
        assert subs_until_error(c2, 3) == []


def test_server_max_subscriptions_below_the_account_wins(fresh, core_accounts):
    s = fresh(core_accounts.conf("max_subscriptions: 2\n"))
    with login(s, core_accounts.subs.user("u")) as c:
        assert subs_until_error(c, 3) == [MAX_SUBS_ERR]


def test_account_payload_limit_is_advertised_and_cut(core, core_accounts):
    with login(core, core_accounts.pay.user("u")) as c:
        assert c.connect_info["max_payload"] == 8
        c.send(b"SUB p 1\r\nPUB p 8\r\n12345678\r\n")
        assert [m.payload for m in c.msgs_until_pong()] == [b"12345678"]
        c.send(b"PUB p 9\r\n123456789\r\n")
        c.expect_err("Maximum Payload Violation")
        c.expect_closed()


def test_server_max_payload_below_the_account_wins(fresh, core_accounts):
    s = fresh(core_accounts.conf("max_payload: 4\n"))
    with login(s, core_accounts.pay.user("u")) as c:
        assert c.connect_info["max_payload"] == 4


def test_account_conn_limit_cuts_the_newest(core, core_accounts):
    user = core_accounts.conn.user("u")
    with login(core, user) as c1, login(core, user) as c2:
        r = Raw(core.port)
        with r:
            r.connect(jwt=user.jwt, sig=sig(user.key, r.info["nonce"]))
            r.send(b"PING\r\n")
            r.expect_err("maximum account active connections exceeded")
            r.expect_closed()
        c1.sync()
        c2.sync()


def test_account_without_conn_claim_admits_no_one(core, core_accounts):
    user = core_accounts.empty.user("u")
    with Raw(core.port) as r:
        r.connect(jwt=user.jwt, sig=sig(user.key, r.info["nonce"]))
        r.send(b"PING\r\n")
        r.expect_err("maximum account active connections exceeded")
        r.expect_closed()


def test_account_disallow_bearer_refuses_bearer_users(core, core_accounts):
    bearer = core_accounts.no_bearer.user("bearer", bearer=True)
    with Raw(core.port) as r:
        r.connect(jwt=bearer.jwt)
        r.send(b"PING\r\n")
        r.expect_err("Authorization Violation")
        r.expect_closed()
    # a user that signs the nonce is let in
    with login(core, core_accounts.no_bearer.user("signer")) as c:
        c.sync()


def leaf_connect(port: int, user) -> Raw:
    r = Raw(port)
    r.send(b'CONNECT {"name":"edge","headers":true,"protocol":1,"jwt":"%s","sig":"%s"}\r\nPING\r\n' % (
        user.jwt.encode(), sig(user.key, r.info["nonce"]).encode()))
    return r


def test_account_leaf_limit(core, core_accounts):
    user = core_accounts.leaf.user("leaf")
    with leaf_connect(core.leaf_port, user) as first:
        first.expect(rb"(?:INFO [^\r]*\r\n|LS\+ [^\r]*\r\n)*PONG\r\n")
        with leaf_connect(core.leaf_port, user) as second:
            # a JWT leaf passes authentication and is refused when it joins its account (a leaf of a config user is
            # refused inside authentication with 'Authorization Violation', test_quotas.py)
            second.expect_err("maximum account active connections exceeded")
            second.expect_closed()
        first.send(b"PING\r\n")
        first.expect(rb"(?:LS\+ [^\r]*\r\n)*PONG\r\n")


def test_leaf_user_limits(core, core_accounts):
    # a leaf's user JWT limits its interest (LS+) and its messages as a client's; the leaf's INFO still advertises
    # the server's max_payload
    user = core_accounts.open.user("leafy", subs=1, payload=4)
    with leaf_connect(core.leaf_port, user) as leaf:
        info = leaf.expect(rb"(?:LS\+ [^\r]*\r\n)*INFO (\{[^\r]*\}) ?\r\n(?:LS\+ [^\r]*\r\n)*PONG\r\n").group(1)
        assert b'"max_payload":1048576' in info
        leaf.send(b"LS+ a\r\nLS+ b\r\nPING\r\n")
        leaf.expect(rb"-ERR 'maximum subscriptions exceeded'\r\nPONG\r\n")
        leaf.send(b"LMSG a 5\r\n12345\r\nPING\r\n")
        leaf.expect_err("Maximum Payload Violation")
        leaf.expect_closed()


# ---- user JWT limits ------------------------------------------------------------------------------------------


def test_user_subs_limit_below_the_account(core, core_accounts):
    with login(core, core_accounts.subs.user("two", subs=2)) as c:
        assert subs_until_error(c, 3) == [MAX_SUBS_ERR]


def test_account_subs_limit_below_the_user(core, core_accounts):
    with login(core, core_accounts.subs.user("ten", subs=10)) as c:
        assert subs_until_error(c, 4) == [MAX_SUBS_ERR]


def test_user_payload_limit(core, core_accounts):
    with login(core, core_accounts.open.user("p16", payload=16)) as c:
        assert c.connect_info["max_payload"] == 16
        c.send(b"PUB p 17\r\n" + b"x" * 17 + b"\r\n")
        c.expect_err("Maximum Payload Violation")
        c.expect_closed()


def test_user_payload_above_the_account_takes_the_account(core, core_accounts):
    with login(core, core_accounts.pay.user("p16", payload=16)) as c:
        assert c.connect_info["max_payload"] == 8


def test_server_max_payload_below_the_user_wins(fresh, core_accounts):
    s = fresh(core_accounts.conf("max_payload: 4\nmax_subscriptions: 1\n"))
    with login(s, core_accounts.open.user("big", payload=16, subs=10)) as c:
        assert c.connect_info["max_payload"] == 4
        assert subs_until_error(c, 2) == [MAX_SUBS_ERR]


def test_user_data_claim_is_not_a_limit(core, core_accounts):
    # nats-server reads no data limit: with `data: 1` a 100-byte message passes
    user = core_accounts.open.user("data1")
    user.jwt = encode_jwt(core_accounts.open.key, user.public, "data1",
                          {"type": "user", "pub": {}, "sub": {}, "subs": -1, "payload": -1, "data": 1})
    with login(core, user) as c:
        c.send(b"SUB d 1\r\nPUB d 100\r\n" + b"x" * 100 + b"\r\n")
        assert [len(m.payload) for m in c.msgs_until_pong()] == [100]


def test_v2_user_without_subs_and_payload_claims_has_zero(core, core_accounts):
    user = core_accounts.open.user("bare", subs=None, payload=None)
    with Raw(core.port) as r:
        r.connect(jwt=user.jwt, sig=sig(user.key, r.info["nonce"]))
        r.send(b"PING\r\n")
        # the -ERR (sent at once; nats-server sends it from another goroutine, so before or after the PONG) and
        # the close 20 ms later; the INFO after the PONG advertises max_payload 0
        lines = r.expect_closed().split(b"\r\n")
        err = b"-ERR " + MAX_SUBS_ERR.encode()
        assert err in lines
        lines.remove(err)
        assert lines[0] == b"PONG" and lines[1].startswith(b"INFO ") and b'"max_payload":0' in lines[1]


def test_v1_user_without_subs_and_payload_claims_is_unlimited(fresh):
    op_key, acc_key, user_key = Key("operator"), Key("account"), Key("user")
    op = encode_v1(op_key, op_key.public, "old-op", "operator")
    acc = encode_v1(op_key, acc_key.public, "old-acc", "account",
                    {"limits": {"subs": -1, "conn": -1, "payload": -1, "leaf": -1}})
    user = encode_v1(acc_key, user_key.public, "old-user", "user", {"pub": {}, "sub": {}})
    s = fresh(config=f"operator: {op}\nresolver: MEMORY\nresolver_preload: {{ {acc_key.public}: {acc} }}\n")
    with Raw(s.port) as r:
        r.handshake(jwt=user, sig=sig(user_key, r.info["nonce"]))
        assert r.connect_info["max_payload"] == 1048576
        assert subs_until_error(r, 20) == []


def test_user_jwt_without_a_claims_version_is_refused(core, core_accounts):
    user = core_accounts.open.user("versionless")
    head, _, _ = user.jwt.split(".")
    claims = {"jti": "X", "iat": 1, "iss": core_accounts.open.public, "name": "versionless", "sub": user.public,
              "nats": {"type": "user", "pub": {}, "sub": {}, "subs": -1, "payload": -1}}
    body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    signature = core_accounts.open.key.sign(f"{head}.{body}".encode())
    user.jwt = f"{head}.{body}." + base64.urlsafe_b64encode(signature).rstrip(b"=").decode()
    with Raw(core.port) as r:
        r.connect(jwt=user.jwt, sig=sig(user.key, r.info["nonce"]))
        r.send(b"PING\r\n")
        r.expect_err("Authorization Violation")


def test_v1_account_has_no_jetstream(fresh):
    op_key, acc_key, sys_key, user_key = Key("operator"), Key("account"), Key("account"), Key("user")
    op = encode_v1(op_key, op_key.public, "old-op", "operator")
    acc = encode_v1(op_key, acc_key.public, "old-acc", "account", {"limits": {
        "subs": -1, "conn": -1, "payload": -1, "leaf": -1, "mem_storage": -1, "disk_storage": -1}})
    system = encode_v1(op_key, sys_key.public, "SYS", "account", {"limits": {"conn": -1}})
    user = encode_v1(acc_key, user_key.public, "old-user", "user", {"pub": {}, "sub": {}})
    # JetStream in operator mode needs a system account
    s = fresh(config=f"operator: {op}\nsystem_account: {sys_key.public}\nresolver: MEMORY\n"
                     f"resolver_preload: {{ {acc_key.public}: {acc}\n {sys_key.public}: {system} }}\n",
              jetstream=True)
    with Raw(s.port) as r:
        r.handshake(jwt=user, sig=sig(user_key, r.info["nonce"]))
        r.send(b"SUB _INBOX.info 1\r\nPUB $JS.API.INFO _INBOX.info 0\r\n\r\n")
        m = r.expect(rb"MSG _INBOX.info 1 (\d+)\r\n")
        answer = json.loads(r.expect(rb"(.{%d})\r\n" % int(m.group(1))).group(1))
        assert api_error(answer) == (503, 10039, "JetStream not enabled for account")


# ---- JetStream limits from account claims ---------------------------------------------------------------------


class JsAccounts:
    """One operator: LIM with every flat JetStream limit, TIER with only an R1 tier (what nsc writes for JetStream
    limits now), R3 with only an R3 tier, and SMALL whose memory limit two messages pass."""

    def __init__(self) -> None:
        self.op = Operator()
        self.lim = self.op.account("LIM", limits={
            "mem_storage": 1 << 20, "disk_storage": 1 << 20, "streams": 2, "consumer": 1, "max_ack_pending": 100,
            "mem_max_stream_bytes": 4096, "disk_max_stream_bytes": 8192})
        self.req = self.op.account("REQ", limits={"mem_storage": 1 << 20, "disk_storage": -1,
                                                  "max_bytes_required": True})
        self.tier = self.op.account("TIER", limits={"tiered_limits": {"R1": {
            "mem_storage": 1 << 20, "disk_storage": 1 << 20, "streams": 1, "consumer": -1}}})
        self.r3 = self.op.account("R3", limits={"tiered_limits": {"R3": {
            "mem_storage": 1 << 20, "disk_storage": 1 << 20, "streams": -1, "consumer": -1}}})
        self.small = self.op.account("SMALL", limits={"mem_storage": 300, "disk_storage": 0})

    def conf(self) -> str:
        return self.op.server_conf([self.lim, self.req, self.tier, self.r3, self.small])


@pytest.fixture(scope="module")
def js_accounts():
    return JsAccounts()


@pytest.fixture
def jwt_js(shared, js_accounts):
    return shared(config=js_accounts.conf(), jetstream=True)


def js_calls(srv, tmp_path, user, calls: list[tuple[str, object]]) -> list[dict]:
    """As `user` (through its creds file and nats-py), the answers to `$JS.API` (subject, body) requests in order."""
    creds = tmp_path / f"{user.name}.creds"
    creds.write_text(user.creds())

    async def body():
        nc = await srv.nc(user_credentials=str(creds))
        try:
            return [await js_api(nc, subject, req) for subject, req in calls]
        finally:
            await nc.close()

    return run(body())


def stream(name: str, storage: str = "memory", **kw) -> tuple[str, dict]:
    return f"$JS.API.STREAM.CREATE.{name}", {"name": name, "subjects": [f"{name}.>"], "storage": storage, **kw}


def consumer(stream_name: str, name: str, **kw) -> tuple[str, dict]:
    return (f"$JS.API.CONSUMER.CREATE.{stream_name}.{name}",
            {"stream_name": stream_name, "config": {"durable_name": name, "ack_policy": "explicit", **kw}})


def test_flat_jetstream_limits_from_claims(jwt_js, js_accounts, tmp_path):
    info, s1, big_mem, big_file, s2, s3, c1, c2, c_ack = js_calls(jwt_js, tmp_path, js_accounts.lim.user("u"), [
        ("$JS.API.INFO", None),
        stream("L1", max_bytes=4096),
        stream("LBIG", max_bytes=4097),
        stream("LBIGF", "file", max_bytes=8193),
        stream("L2", max_bytes=1024),
        stream("L3", max_bytes=1024),
        consumer("L1", "C1"),
        consumer("L1", "C2"),
        consumer("L2", "CA", max_ack_pending=200),
    ])
    assert info["limits"] == {"max_memory": 1 << 20, "max_storage": 1 << 20, "max_streams": 2, "max_consumers": 1,
                              "max_ack_pending": 100, "memory_max_stream_bytes": 4096,
                              "storage_max_stream_bytes": 8192, "max_bytes_required": False}
    assert "error" not in s1 and "error" not in s2 and "error" not in c1
    assert api_error(big_mem) == (400, 10122, "stream max bytes exceeds account limit max stream bytes")
    assert api_error(big_file) == (400, 10122, "stream max bytes exceeds account limit max stream bytes")
    assert api_error(s3) == (400, 10027, "maximum number of streams reached")
    assert api_error(c2) == (400, 10026, "maximum consumers limit reached")
    assert api_error(c_ack) == (400, 10121, "consumer max ack pending exceeds system limit of 100")


def test_max_bytes_required_from_claims(jwt_js, js_accounts, tmp_path):
    info, without, with_bytes = js_calls(jwt_js, tmp_path, js_accounts.req.user("u"), [
        ("$JS.API.INFO", None), stream("Q1"), stream("Q2", max_bytes=1000)])
    # missing streams/consumer claims are 0, which JetStream reads as no limit; max stream bytes missing: -1
    assert info["limits"] == {"max_memory": 1 << 20, "max_storage": -1, "max_streams": 0, "max_consumers": 0,
                              "max_ack_pending": -1, "memory_max_stream_bytes": -1, "storage_max_stream_bytes": -1,
                              "max_bytes_required": True}
    assert api_error(without) == (400, 10113, "account requires a stream config to have max bytes set")
    assert "error" not in with_bytes


def test_memory_storage_limit_from_claims(jwt_js, js_accounts, tmp_path):
    # a memory message counts len(subject) + len(payload) + 16 = 4 + 100 + 16 = 120 bytes: two fit in 300
    user = js_accounts.small.user("u")
    creds = tmp_path / "small.creds"
    creds.write_text(user.creds())

    async def body():
        nc = await jwt_js.nc(user_credentials=str(creds))
        try:
            created = await js_api(nc, *stream("M"))
            acks = [await js_api(nc, "M.x", b"x" * 100) for _ in range(3)]
            file_stream = await js_api(nc, *stream("F", "file"))
            return created, acks, file_stream
        finally:
            await nc.close()

    created, acks, file_stream = run(body())
    assert "error" not in created
    assert [a.get("seq") for a in acks[:2]] == [1, 2]
    assert acks[2] == {"error": {"code": 400, "err_code": 10002, "description": "resource limits exceeded for account"},
                       "stream": "M", "seq": 0}
    # disk_storage 0: no file storage at all
    assert api_error(file_stream) == (500, 10047, "insufficient storage resources available")


ZERO_LIMITS = {"max_memory": 0, "max_storage": 0, "max_streams": 0, "max_consumers": 0, "max_ack_pending": 0,
               "memory_max_stream_bytes": 0, "storage_max_stream_bytes": 0, "max_bytes_required": False}


def tier_limits(streams: int) -> dict:
    return {"max_memory": 1 << 20, "max_storage": 1 << 20, "max_streams": streams, "max_consumers": -1,
            "max_ack_pending": -1, "memory_max_stream_bytes": -1, "storage_max_stream_bytes": -1,
            "max_bytes_required": False}


def test_tiered_r1_limits_apply(jwt_js, js_accounts, tmp_path):
    t1, t2, info = js_calls(jwt_js, tmp_path, js_accounts.tier.user("u"), [
        stream("T1", max_bytes=1000), stream("T2"), ("$JS.API.INFO", None)])
    assert "error" not in t1
    assert api_error(t2) == (400, 10027, "maximum number of streams reached")
    # the totals at the top with limits all 0; per tier its usage and limits
    assert info["limits"] == ZERO_LIMITS
    assert (info["streams"], info["reserved_memory"]) == (1, 1000)
    assert info["tiers"] == {"R1": {"memory": 0, "storage": 0, "reserved_memory": 1000, "reserved_storage": 0,
                                    "streams": 1, "consumers": 0, "limits": tier_limits(1)}}


def test_tiered_limits_without_r1_refuse_streams(jwt_js, js_accounts, tmp_path):
    info, r1 = js_calls(jwt_js, tmp_path, js_accounts.r3.user("u"), [("$JS.API.INFO", None), stream("X1")])
    assert info["limits"] == ZERO_LIMITS
    assert info["tiers"] == {"R3": {"memory": 0, "storage": 0, "reserved_memory": 0, "reserved_storage": 0,
                                    "streams": 0, "consumers": 0, "limits": tier_limits(-1)}}
    assert api_error(r1) == (400, 10120, "no JetStream default or applicable tiered limit present")


def test_pushed_disallow_bearer_cuts_bearer_users(pushed):
    with pushed.connect("bearer", bearer=True) as bearer, pushed.connect("signer") as signer:
        pushed.acc.limits["disallow_bearer"] = True
        pushed.push()
        bearer.expect_err("Authorization Violation")
        bearer.expect_closed()
        signer.sync()
