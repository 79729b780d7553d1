"""Operator mode (decentralized JWT auth), the same scenarios against nats-server and our hub.

A user's creds file connects (nats-py `user_credentials=`), its JWT permissions are enforced with nats-server's
texts, and every broken link of the trust chain (signature, unknown or forged account, expiry, revocation, missing
nonce signature) is an 'Authorization Violation'. Accounts are isolated unless their claims export and import;
accounts load from `resolver: MEMORY` + `resolver_preload` and from the directory resolver. Leafnodes authenticate
the same way, in both directions. Config errors carry nats-server's texts.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time

import nats
import pytest

from host import jwt as hubjwt
from host.opts import Options
from tests.compat.harness import Raw, Server, async_wait_until, free_port, refuses_to_start, run, wait_until
from tests.jwtmint import Key, Operator, encode_jwt, encode_v1


def sig(key: Key, nonce: str) -> str:
    return base64.urlsafe_b64encode(key.sign(nonce.encode())).rstrip(b"=").decode()


class Tenants:
    """An operator with accounts A (a signing key, revocations, limits) and B (imports A's `feed.>`), C (nothing
    shared), and D which no server is told about."""

    def __init__(self) -> None:
        self.op = Operator()
        self.sk = Key("account")
        self.A = self.op.account("A", signing_keys=[self.sk], limits={"subs": 100, "payload": 4096, "conn": 10},
                                 exports=[{"name": "feed", "subject": "feed.>", "type": "stream"}])
        self.B = self.op.account("B", imports=[{"name": "feed", "subject": "feed.>", "account": self.A.public,
                                                "type": "stream"}])
        self.C = self.op.account("C")
        self.D = self.op.account("D")
        self.user = self.A.user("u", pub_allow=["ok.>", "feed.>", "_INBOX.>"], sub_allow=["ok.>", "_INBOX.>"],
                                sub_deny=["ok.secret"])
        self.revoked = self.A.user("revoked")
        self.A.revocations = {self.revoked.public: int(time.time()) + 60}
        self.A.sign()
        self.b_user = self.B.user("b")
        self.c_user = self.C.user("c")

    def conf(self) -> str:
        return self.op.server_conf([self.A, self.B, self.C])


@pytest.fixture(scope="module")
def tenants():
    return Tenants()


@pytest.fixture
def opsrv(shared, tenants):
    return shared(config=tenants.conf())


def creds_file(tmp_path, user) -> str:
    p = tmp_path / f"{user.name}.creds"
    p.write_text(user.creds())
    return str(p)


def jwt_connect(srv, jwt: str, key: Key | None) -> Raw:
    r = Raw(srv.port)
    r.connect(jwt=jwt, sig=sig(key, r.info["nonce"]) if key is not None else None)
    r.send(b"PING\r\n")
    return r


def test_user_creds_connect_into_its_account(opsrv, tenants):
    with Raw(opsrv.port) as r:
        assert r.info["auth_required"] is True and r.info["nonce"]
        r.handshake(jwt=tenants.user.jwt, sig=sig(tenants.user.key, r.info["nonce"]))
        assert r.connect_info["remote_account"] == tenants.A.public


def test_jwt_permissions_are_enforced(opsrv, tenants):
    with Raw(opsrv.port) as r:
        r.handshake(jwt=tenants.user.jwt, sig=sig(tenants.user.key, r.info["nonce"]))
        r.send(b"SUB ok.x 1\r\nSUB ok.secret 2\r\nSUB other 3\r\nPUB ok.x 1\r\na\r\nPUB other 1\r\nb\r\n")
        frames = r.frames_until_pong()
        errs = [f[1] for f in frames if f[0] == "-ERR"]
        assert errs == ["'Permissions Violation for Subscription to \"ok.secret\"'",
                        "'Permissions Violation for Subscription to \"other\"'",
                        "'Permissions Violation for Publish to \"other\"'"]
        assert [f[1].payload for f in frames if f[0] == "MSG"] == [b"a"]


def test_user_signed_by_an_account_signing_key(opsrv, tenants):
    user = tenants.A.user("scoped-free", signer=tenants.sk)
    with jwt_connect(opsrv, user.jwt, user.key) as r:
        r.expect(rb"PONG\r\n")


def test_bearer_token_needs_no_signature(opsrv, tenants):
    user = tenants.A.user("bearer", bearer=True)
    with jwt_connect(opsrv, user.jwt, None) as r:
        r.expect(rb"PONG\r\n")


def _refused(t: Tenants) -> dict:
    """Each case: (user JWT, key that signs the nonce or None)."""
    stranger = t.D.user("d")
    forged = t.A.user("forged")
    not_the_account = Key("account")
    forged_jwt = encode_jwt(not_the_account, forged.public, "forged",
                            {"type": "user", "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1})
    claims_a = encode_jwt(not_the_account, forged.public, "claims-a",
                          {"type": "user", "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1,
                           "issuer_account": t.A.public})
    other_operator = Operator().account("A2").user("x")
    expired = t.A.user("expired", expires=int(time.time()) - 5)
    good = t.user
    head, claims, _ = good.jwt.split(".")
    tampered = head + "." + claims + "." + base64.urlsafe_b64encode(b"\0" * 64).rstrip(b"=").decode()
    return {
        "signed by another key": (good.jwt, stranger.key),
        "no signature": (good.jwt, None),
        "unknown account": (stranger.jwt, stranger.key),
        "issuer is not an account": (forged_jwt, forged.key),
        "issuer_account without its signing key": (claims_a, forged.key),
        "account of another operator": (other_operator.jwt, other_operator.key),
        "expired": (expired.jwt, expired.key),
        "revoked": (t.revoked.jwt, t.revoked.key),
        "tampered JWT signature": (tampered, good.key),
        "not a JWT": ("not.a.jwt", good.key),
    }


@pytest.mark.parametrize("case", ["signed by another key", "no signature", "unknown account",
                                  "issuer is not an account", "issuer_account without its signing key",
                                  "account of another operator", "expired",
                                  "revoked", "tampered JWT signature", "not a JWT"])
def test_broken_trust_chain_is_an_authorization_violation(opsrv, tenants, case):
    jwt, key = _refused(tenants)[case]
    with jwt_connect(opsrv, jwt, key) as r:
        r.expect_err("Authorization Violation")
        r.expect_closed()


def test_user_and_password_are_refused_in_operator_mode(opsrv):
    with Raw(opsrv.port) as r:
        r.connect(user="a", **{"pass": "b"})
        r.send(b"PING\r\n")
        r.expect_err("Authorization Violation")


def test_accounts_are_isolated_except_what_claims_export_and_import(opsrv, tenants, tmp_path):
    async def body():
        a = await opsrv.nc(user_credentials=creds_file(tmp_path, tenants.user))
        b = await opsrv.nc(user_credentials=creds_file(tmp_path, tenants.b_user))
        c = await opsrv.nc(user_credentials=creds_file(tmp_path, tenants.c_user))
        got: dict[str, list[bytes]] = {"b.feed": [], "b.ok": [], "c.feed": [], "c.ok": []}

        def keep(key):
            async def cb(msg):
                got[key].append(msg.data)
            return cb

        for nc, name in ((b, "b"), (c, "c")):
            await nc.subscribe("feed.>", cb=keep(f"{name}.feed"))
            await nc.subscribe("ok.>", cb=keep(f"{name}.ok"))
            await nc.flush()
        for i in range(3):
            await a.publish("feed.x", b"f%d" % i)
            await a.publish("ok.x", b"o%d" % i)
        await a.flush()
        await async_wait_until(lambda: len(got["b.feed"]) == 3, msg="B's imported feed")
        # a's messages are all processed (B has the last); a PONG to C comes after anything queued for it before
        await b.flush()
        await c.flush()
        for nc in (a, b, c):
            await nc.close()
        return got

    got = run(body())
    assert got == {"b.feed": [b"f0", b"f1", b"f2"], "b.ok": [], "c.feed": [], "c.ok": []}


def test_directory_resolver_loads_account_files(fresh, tenants, tmp_path):
    jwt_dir = tmp_path / "jwt"
    jwt_dir.mkdir()
    (jwt_dir / f"{tenants.A.public}.jwt").write_text(tenants.A.jwt)
    (jwt_dir / f"{tenants.op.system.public}.jwt").write_text(tenants.op.system.jwt)
    s = fresh(config=f"operator: {tenants.op.jwt}\nsystem_account: {tenants.op.system.public}\n"
                     f"resolver {{ type: full, dir: \"{jwt_dir}\" }}\n")
    with Raw(s.port) as r:
        r.handshake(jwt=tenants.user.jwt, sig=sig(tenants.user.key, r.info["nonce"]))
        assert r.connect_info["remote_account"] == tenants.A.public
    with jwt_connect(s, tenants.b_user.jwt, tenants.b_user.key) as r:
        r.expect_err("Authorization Violation")  # B has no file


def test_operator_from_a_file(fresh, tenants, tmp_path):
    (tmp_path / "op.jwt").write_text(tenants.op.jwt + "\n")
    conf = tenants.conf().replace(f"operator: {tenants.op.jwt}", f"operator: \"{tmp_path / 'op.jwt'}\"")
    s = fresh(config=conf)
    with Raw(s.port) as r:
        r.handshake(jwt=tenants.user.jwt, sig=sig(tenants.user.key, r.info["nonce"]))


@pytest.mark.parametrize("extra, text", [
    # without a resolver nats-server falls back to the operator JWT's account_server_url (none here) and fails to
    # fetch from it; the hub has no URL resolver and says what to configure
    ("no resolver", {"nats": "could not fetch", "hub": "operators require an account resolver to be configured"}),
    ("accounts { X: {} }\n", "operators do not allow Accounts to be configured directly"),
    ("authorization { users = [ { user: a, password: b } ] }\n", "operators do not allow users to be configured "
                                                                  "directly"),
    ("other system account", "system_account in config and operator JWT must be identical"),
])
def test_operator_config_errors_have_nats_server_texts(side, fresh, tenants, extra, text):
    conf = tenants.conf()
    if extra == "no resolver":
        conf = f"operator: {tenants.op.jwt}\n"
    elif extra == "other system account":
        conf = conf.replace(f"system_account: {tenants.op.system.public}", f"system_account: {tenants.A.public}")
    else:
        conf += extra
    out = refuses_to_start(fresh, conf)
    assert (text[side] if isinstance(text, dict) else text) in out


def test_connection_ends_when_the_user_jwt_expires(opsrv, tenants):
    user = tenants.A.user("short", expires=int(time.time()) + 2)
    with Raw(opsrv.port) as r:
        r.handshake(jwt=user.jwt, sig=sig(user.key, r.info["nonce"]))
        r.expect_err("User Authentication Expired", timeout=10)
        r.expect_closed()


def test_pushed_account_update_is_stored_and_cuts_revoked_users(fresh, tmp_path):
    op = Operator()
    acc = op.account("A")
    victim, keeper, admin = acc.user("victim"), acc.user("keeper"), op.system.user("admin")
    jwt_dir = tmp_path / "jwt"
    jwt_dir.mkdir()
    for a in (acc, op.system):
        (jwt_dir / f"{a.public}.jwt").write_text(a.jwt)
    s = fresh(config=f"operator: {op.jwt}\nsystem_account: {op.system.public}\n"
                     f"resolver {{ type: full, dir: \"{jwt_dir}\" }}\n", monitor=True)
    v = jwt_connect(s, victim.jwt, victim.key)
    k = jwt_connect(s, keeper.jwt, keeper.key)
    for r in (v, k):
        r.expect(rb"PONG\r\nINFO [^\r]*\r\n")  # and the connect_info INFO
    acc.revocations = {victim.public: int(time.time()) + 5}
    acc.sign()

    async def push():
        nc = await s.nc(user_credentials=creds_file(tmp_path, admin))
        good = await nc.request(f"$SYS.REQ.ACCOUNT.{acc.public}.CLAIMS.UPDATE", acc.jwt.encode(), timeout=5)
        bad = await nc.request(f"$SYS.REQ.ACCOUNT.{acc.public}.CLAIMS.UPDATE", b"garbage", timeout=5)
        await nc.close()
        return json.loads(good.data), json.loads(bad.data)

    good, bad = run(push())
    assert good["data"] == {"account": acc.public, "code": 200, "message": "jwt updated"}
    assert bad["error"]["account"] == "n/a" and bad["error"]["code"] == 500
    assert bad["error"]["description"].startswith("jwt update resulted in error - ")
    v.expect_err("User Authentication Revoked")
    v.expect_closed()
    k.sync()  # the keeper's connection is untouched
    k.close()
    assert (jwt_dir / f"{acc.public}.jwt").read_text().strip() == acc.jwt
    wait_until(lambda: "Credentials Revoked" in [c.get("reason") for c in
                                                 s.http_get("/connz?state=closed")["connections"]],
               msg="the revoked connection in /connz?state=closed")
    with jwt_connect(s, victim.jwt, victim.key) as r:
        r.expect_err("Authorization Violation")


def test_v1_jwts_are_accepted(fresh):
    op_key, acc_key, user_key = Key("operator"), Key("account"), Key("user")
    op = encode_v1(op_key, op_key.public, "old-op", "operator")
    acc = encode_v1(op_key, acc_key.public, "old-acc", "account", {"limits": {"subs": -1, "conn": -1}})
    user = encode_v1(acc_key, user_key.public, "old-user", "user", {"pub": {"allow": ["v1.>"]}, "sub": {}})
    s = fresh(config=f"operator: {op}\nresolver: MEMORY\nresolver_preload: {{ {acc_key.public}: {acc} }}\n")
    with Raw(s.port) as r:
        r.handshake(jwt=user, sig=sig(user_key, r.info["nonce"]))
        assert r.connect_info["remote_account"] == acc_key.public
        r.send(b"PUB other 0\r\n\r\n")
        assert r.frames_until_pong() == [("-ERR", "'Permissions Violation for Publish to \"other\"'")]


# ---- leafnodes ----------------------------------------------------------------------------------------------------


def _leaf_traffic(hub_url: str, hub_creds: str, leaf_url: str, leaf_kw: dict) -> list[bytes]:
    """A message published on the leaf side reaches a subscriber at the hub, in the creds' account."""
    async def body():
        hub = await nats.connect(hub_url, user_credentials=hub_creds, allow_reconnect=False)
        got: list[bytes] = []

        async def cb(msg):
            got.append(msg.data)

        await hub.subscribe("ok.leaf", cb=cb)
        await hub.flush()
        leaf = await nats.connect(leaf_url, allow_reconnect=False, **leaf_kw)
        deadline = time.monotonic() + 10
        while not got and time.monotonic() < deadline:  # interest crosses the leaf link asynchronously
            await leaf.publish("ok.leaf", b"from the leaf")
            await leaf.flush()
            await asyncio.sleep(0.05)
        await leaf.close()
        await hub.close()
        return got

    return run(body(), timeout=30)


def test_nats_server_leaf_with_credentials_joins_an_operator_mode_hub(side, tenants, tmp_path):
    # `side` is the hub here, in operator mode; a real nats-server leaf dials it with a creds file.
    leaf_port = free_port()
    (tmp_path / "hub").mkdir()
    (tmp_path / "leaf").mkdir()
    hub = Server(side, config=tenants.conf() + f"leafnodes {{ listen: 127.0.0.1:{leaf_port} }}\n", monitor=True,
                 workdir=tmp_path / "hub")
    leaf = Server("nats", config=f'server_name: goleaf\nleafnodes {{ remotes [ {{ url: "nats-leaf://127.0.0.1:'
                  f'{leaf_port}", credentials: "{creds_file(tmp_path, tenants.A.user("leaf"))}" }} ] }}\n',
                  workdir=tmp_path / "leaf")
    try:
        hub.start()
        leaf.start()
        wait_until(lambda: hub.http_get("/leafz")["leafnodes"] == 1, timeout=10, msg="leaf connected")
        assert hub.http_get("/leafz")["leafs"][0]["account"] == tenants.A.public
        got = _leaf_traffic(hub.url, creds_file(tmp_path, tenants.user), leaf.url, {})
        assert got and set(got) == {b"from the leaf"}
    finally:
        leaf.stop()
        hub.stop()


def test_leaf_with_bad_credentials_is_refused(side, tenants, tmp_path):
    leaf_port = free_port()
    (tmp_path / "hub").mkdir()
    hub = Server(side, config=tenants.conf() + f"leafnodes {{ listen: 127.0.0.1:{leaf_port} }}\n",
                 workdir=tmp_path / "hub").start()
    try:
        stranger = tenants.D.user("leaf")
        with Raw(leaf_port) as r:
            r.send(b'CONNECT {"name":"rawleaf","headers":true,"protocol":1,"jwt":"%s","sig":"%s"}\r\nPING\r\n'
                   % (stranger.jwt.encode(), sig(stranger.key, r.info["nonce"]).encode()))
            r.expect_err("Authorization Violation")
    finally:
        hub.stop()


def test_leaf_remote_with_credentials_dials_an_operator_mode_nats_server(side, tenants, tmp_path):
    # `side` is the leaf here: it dials a real nats-server in operator mode with `credentials: file.creds`.
    leaf_port = free_port()
    (tmp_path / "gohub").mkdir()
    (tmp_path / "leaf").mkdir()
    gohub = Server("nats", config=tenants.conf() + f"leafnodes {{ listen: 127.0.0.1:{leaf_port} }}\n", monitor=True,
                   workdir=tmp_path / "gohub")
    leaf = Server(side, config=f'leafnodes {{ remotes [ {{ url: "nats-leaf://127.0.0.1:{leaf_port}", credentials: '
                  f'"{creds_file(tmp_path, tenants.A.user("leaf"))}" }} ] }}\n', workdir=tmp_path / "leaf")
    try:
        gohub.start()
        leaf.start()
        wait_until(lambda: gohub.http_get("/leafz")["leafnodes"] == 1, timeout=10, msg="leaf connected")
        assert gohub.http_get("/leafz")["leafs"][0]["account"] == tenants.A.public
        got = _leaf_traffic(gohub.url, creds_file(tmp_path, tenants.user), leaf.url, {})
        assert got and set(got) == {b"from the leaf"}
    finally:
        leaf.stop()
        gohub.stop()


# ---- claims as the hub reads them (hub only: nats-server has no such interface) ------------------------------------


def test_account_claims_map_into_account_limits(tenants):
    acc = tenants.op.account("L", limits={"conn": 3, "subs": 7, "payload": 512, "leaf": 2, "mem_storage": 1 << 20,
                                          "disk_storage": 2 << 20, "streams": 4, "consumer": 5,
                                          "max_ack_pending": 6, "mem_max_stream_bytes": 1000,
                                          "disk_max_stream_bytes": 2000, "max_bytes_required": True})
    opts = Options(operator_jwts=[tenants.op.jwt], resolver="MEMORY", resolver_preload={acc.public: acc.jwt})
    cfg = hubjwt.Trust(opts).account(acc.public).config()
    lim = cfg.limits
    assert (lim.max_connections, lim.max_subscriptions, lim.max_payload, lim.max_leafnodes) == (3, 7, 512, 2)
    assert (lim.js_max_memory, lim.js_max_storage, lim.js_max_streams, lim.js_max_consumers) == (1 << 20, 2 << 20, 4, 5)
    assert (lim.js_max_ack_pending, lim.js_memory_max_stream_bytes, lim.js_storage_max_stream_bytes) == (6, 1000, 2000)
    assert lim.js_max_bytes_required is True and cfg.jetstream is True
    plain = hubjwt.Trust(Options(operator_jwts=[tenants.op.jwt], resolver="MEMORY",
                                 resolver_preload={tenants.C.public: tenants.C.jwt})).account(tenants.C.public)
    assert plain.config().jetstream is False  # JetStream limits default to 0: off, as nats-io/jwt
    assert plain.config().limits.max_connections == -1


def test_claims_the_hub_cannot_enforce_refuse_the_user(tenants):
    """`src` and `times` restrict where and when a user may connect; the hub does not check them, so it refuses such
    a user rather than admit it unrestricted (nats-server would check them)."""
    opts = Options(operator_jwts=[tenants.op.jwt], resolver="MEMORY",
                   resolver_preload={tenants.A.public: tenants.A.jwt})
    trust = hubjwt.Trust(opts)
    user = tenants.A.user("src")
    nats = {"type": "user", "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1, "src": ["10.0.0.0/8"]}
    restricted = encode_jwt(tenants.A.key, user.public, "src", nats)
    assert trust.authenticate({"jwt": restricted, "sig": sig(user.key, "n0nce")}, "n0nce") is None
    plain = trust.authenticate({"jwt": user.jwt, "sig": sig(user.key, "n0nce")}, "n0nce")
    assert plain is not None and plain.account == tenants.A.public
