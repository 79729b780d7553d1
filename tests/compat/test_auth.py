"""Authentication (token, user/password, users list), permissions and accounts."""

from __future__ import annotations

import json
import time

import pytest

from .harness import collect, pub, run, settle

TOKEN_CONF = "authorization { token: s3cr3t }\n"
USERPASS_CONF = "authorization { user: a, password: b, timeout: 1 }\n"
PERMS_CONF = """\
authorization {
  users = [
    { user: alice, password: secret }
    { user: bob, password: pw, permissions: {
        publish: { allow: ["ok.>", "_INBOX.>"], deny: ["ok.secret"] }
        subscribe: { allow: ["ok.>", "_INBOX.>"], deny: ["ok.hidden"] } } }
    { user: carol, password: pw2, permissions: { publish: ["c.>"], subscribe: "c.in" } }
  ]
}
"""
ACCOUNTS_CONF = """\
accounts {
  A: {
    users: [{user: a, password: a}]
    exports: [
      {stream: "events.>"}
      {service: "svc.>"}
    ]
  }
  B: {
    users: [{user: b, password: b}]
    imports: [
      {stream: {account: A, subject: "events.>"}, prefix: "from_a"}
      {service: {account: A, subject: "svc.echo"}}
      {service: {account: A, subject: "svc.time"}, to: "time.now"}
    ]
  }
  C: {
    users: [{user: c, password: c}]
    imports: [
      {stream: {account: A, subject: "events.>"}, to: "a_events.>"}
    ]
  }
  D: {
    users: [{user: d, password: d}, {user: d2, password: d2}]
  }
}
"""


# ---------------------------------------------------------------------------------------------- token


def test_token_info_auth_required(shared):
    s = shared(TOKEN_CONF)
    with s.raw() as c:
        assert c.info["auth_required"] is True
        assert "nonce" not in c.info


def test_token_raw_ok(shared):
    s = shared(TOKEN_CONF)
    with s.client(auth_token="s3cr3t") as c:
        c.send(b"SUB t 1\r\n" + pub("t", b"ok") + b"PING\r\n")
        c.expect(rb"MSG t 1 2\r\nok\r\nPONG\r\n")


def test_token_wrong(shared):
    s = shared(TOKEN_CONF)
    with s.raw() as c:
        c.connect(auth_token="nope")
        c.expect_err("Authorization Violation")
        assert c.expect_closed() == b""


def test_token_nats_py(shared):
    s = shared(TOKEN_CONF)

    async def body():
        nc = await s.nc(token="s3cr3t")
        try:
            sub = await nc.subscribe("tok")
            await settle(nc)
            await nc.publish("tok", b"x")
            (m,) = await collect(sub, 1)
            assert m.data == b"x"
        finally:
            await nc.close()
        errors = []
        with pytest.raises(Exception, match="Authorization Violation"):
            await s.nc(token="wrong", errors=errors)

    run(body())


# ---------------------------------------------------------------------------------------------- user/password


def test_user_password_ok(shared):
    s = shared(USERPASS_CONF)
    with s.raw() as c:
        assert c.info["auth_required"] is True
        c.handshake(user="a", **{"pass": "b"})
        assert c.connect_info["remote_account"] == "$G"
        c.send(b"SUB up 1\r\n" + pub("up", b"1") + b"PING\r\n")
        c.expect(rb"MSG up 1 1\r\n1\r\nPONG\r\n")


def test_user_password_wrong(shared):
    # vector client/20
    s = shared(USERPASS_CONF)
    with s.raw() as c:
        c.send(b'CONNECT {"verbose":false,"protocol":1,"user":"a","pass":"wrong"}\r\n')
        c.expect_err("Authorization Violation")
        assert c.expect_closed() == b""


def test_user_missing_credentials(shared):
    s = shared(USERPASS_CONF)
    with s.raw() as c:
        c.send(b'CONNECT {"verbose":false,"protocol":1}\r\n')
        c.expect_err("Authorization Violation")
        c.expect_closed()


def test_auth_required_first_op_not_connect(shared):
    # vector client/21
    s = shared(USERPASS_CONF)
    with s.raw() as c:
        c.send(b"PING\r\n")
        c.expect_err("Authorization Violation")
        assert c.expect_closed() == b""


def test_auth_required_pub_before_connect(shared):
    s = shared(USERPASS_CONF)
    with s.raw() as c:
        c.send(b"SUB x 1\r\n")
        c.expect_err("Authorization Violation")
        c.expect_closed()


def test_auth_timeout(shared):
    # vector client/22: authorization.timeout = 1 s, client sends nothing
    s = shared(USERPASS_CONF)
    with s.raw() as c:
        t0 = time.monotonic()
        c.expect_err("Authentication Timeout", timeout=4)
        assert c.expect_closed() == b""
        assert time.monotonic() - t0 > 0.5


def test_user_password_nats_py(shared):
    s = shared(USERPASS_CONF)

    async def body():
        nc = await s.nc(user="a", password="b")
        try:
            resp_sub = await nc.subscribe("upy")
            await settle(nc)
            await nc.publish("upy", b"v")
            (m,) = await collect(resp_sub, 1)
            assert m.data == b"v"
        finally:
            await nc.close()
        with pytest.raises(Exception, match="Authorization Violation"):
            await s.nc(user="a", password="x")

    run(body())


# ---------------------------------------------------------------------------------------------- permissions


def test_permission_violations_exact(shared):
    # vector client/23
    s = shared(PERMS_CONF)
    with s.client(user="bob", **{"pass": "pw"}) as c:
        c.send(pub("ok.secret", b"x") + pub("other", b"x") + b"SUB other 1\r\nSUB other q 2\r\n"
               + pub("ok.a", b"x") + b"PING\r\n")
        c.expect(rb"-ERR 'Permissions Violation for Publish to \"ok\.secret\"'\r\n"
                 rb"-ERR 'Permissions Violation for Publish to \"other\"'\r\n"
                 rb"-ERR 'Permissions Violation for Subscription to \"other\"'\r\n"
                 rb"-ERR 'Permissions Violation for Subscription to \"other\" using queue \"q\"'\r\n"
                 rb"PONG\r\n")


def test_permission_violation_keeps_connection(shared):
    s = shared(PERMS_CONF)
    with s.client(user="bob", **{"pass": "pw"}) as c:
        c.send(b"SUB nope 1\r\nPING\r\n")
        c.expect(rb"-ERR 'Permissions Violation for Subscription to \"nope\"'\r\nPONG\r\n")
        c.send(b"SUB ok.x 2\r\n" + pub("ok.x", b"fine") + b"PING\r\n")
        c.expect(rb"MSG ok\.x 2 4\r\nfine\r\nPONG\r\n")


def test_permission_denied_publish_not_delivered(shared):
    s = shared(PERMS_CONF)
    with s.client(user="alice", **{"pass": "secret"}) as watcher, \
            s.client(user="bob", **{"pass": "pw"}) as bob:
        watcher.send(b"SUB > 1\r\n")
        watcher.sync()
        bob.send(pub("ok.secret", b"s") + pub("elsewhere", b"e") + pub("ok.fine", b"f"))
        bob.expect(rb"-ERR 'Permissions Violation for Publish to \"ok\.secret\"'\r\n"
                   rb"-ERR 'Permissions Violation for Publish to \"elsewhere\"'\r\n")
        bob.sync()
        msgs = watcher.msgs_until_pong()
        assert [(m.subject, m.payload) for m in msgs] == [("ok.fine", b"f")]


def test_permission_subscribe_deny_filters_wildcard_delivery(shared):
    s = shared(PERMS_CONF)
    with s.client(user="alice", **{"pass": "secret"}) as alice, \
            s.client(user="bob", **{"pass": "pw"}) as bob:
        bob.send(b"SUB ok.> 1\r\nPING\r\n")
        bob.expect(rb"PONG\r\n")
        bob.send(b"SUB ok.hidden 2\r\nPING\r\n")
        bob.expect(rb"-ERR 'Permissions Violation for Subscription to \"ok\.hidden\"'\r\nPONG\r\n")
        alice.send(pub("ok.hidden", b"h") + pub("ok.shown", b"s"))
        alice.sync()
        msgs = bob.msgs_until_pong()
        assert [(m.subject, m.payload) for m in msgs] == [("ok.shown", b"s")]


def test_permission_list_and_string_forms(shared):
    s = shared(PERMS_CONF)
    with s.client(user="carol", **{"pass": "pw2"}) as c:
        c.send(b"SUB c.in 1\r\nSUB c.out 2\r\n" + pub("c.in", b"1") + pub("d", b"2") + b"PING\r\n")
        c.expect(rb"-ERR 'Permissions Violation for Subscription to \"c\.out\"'\r\n"
                 rb"MSG c\.in 1 1\r\n1\r\n"
                 rb"-ERR 'Permissions Violation for Publish to \"d\"'\r\n"
                 rb"PONG\r\n")


def test_permission_user_without_permissions_unrestricted(shared):
    s = shared(PERMS_CONF)
    with s.client(user="alice", **{"pass": "secret"}) as c:
        c.send(b"SUB anything.at.all 1\r\n" + pub("anything.at.all", b"z") + b"PING\r\n")
        c.expect(rb"MSG anything\.at\.all 1 1\r\nz\r\nPONG\r\n")


def test_permission_nats_py_request_with_inbox(shared):
    s = shared(PERMS_CONF)

    async def body():
        svc = await s.nc(user="alice", password="secret")
        bob = await s.nc(user="bob", password="pw")
        try:
            async def handler(msg):
                await msg.respond(b"granted")

            await svc.subscribe("ok.service", cb=handler)
            await settle(svc)
            resp = await bob.request("ok.service", b"?", timeout=2)
            assert resp.data == b"granted"
        finally:
            await bob.close()
            await svc.close()

    run(body())


# ---------------------------------------------------------------------------------------------- accounts


def _acc(s, user):
    return s.client(user=user, **{"pass": user})


def test_accounts_remote_account_in_info(shared):
    s = shared(ACCOUNTS_CONF)
    for user, account in (("a", "A"), ("b", "B"), ("d2", "D")):
        with s.raw() as c:
            assert c.info["auth_required"] is True
            c.connect(user=user, **{"pass": user})
            c.send(b"PING\r\n")
            m = c.expect(rb"PONG\r\nINFO (\{[^\r\n]*\}) \r\n")
            info = json.loads(m.group(1))
            assert info["connect_info"] is True
            assert info["remote_account"] == account


def test_accounts_isolation(shared):
    s = shared(ACCOUNTS_CONF)
    with _acc(s, "a") as a, _acc(s, "b") as b:
        a.send(b"SUB iso 1\r\nSUB > 2\r\n")
        a.sync()
        b.send(b"SUB iso 1\r\n" + pub("iso", b"from-b"))
        b.expect(rb"MSG iso 1 6\r\nfrom-b\r\n")
        b.sync()
        assert a.msgs_until_pong() == []
        a.send(pub("iso", b"from-a"))
        assert sorted(m.sid for m in a.msgs_until_pong()) == ["1", "2"]
        assert b.msgs_until_pong() == []


def test_accounts_same_account_users_share(shared):
    s = shared(ACCOUNTS_CONF)
    with _acc(s, "d") as d1, s.client(user="d2", **{"pass": "d2"}) as d2:
        d1.send(b"SUB shared.x 1\r\n")
        d1.sync()
        d2.send(pub("shared.x", b"hello"))
        d2.sync()
        d1.expect(rb"MSG shared\.x 1 5\r\nhello\r\n")


def test_accounts_stream_import_prefix(shared):
    s = shared(ACCOUNTS_CONF)
    with _acc(s, "a") as a, _acc(s, "b") as b:
        b.send(b"SUB from_a.events.> 1\r\nSUB events.> 2\r\n")
        b.sync()
        a.send(pub("events.x", b"e1") + pub("events.y.z", b"e2") + pub("notexported", b"n"))
        a.sync()
        msgs = b.msgs_until_pong()
        assert [(m.subject, m.sid, m.payload) for m in msgs] == [("from_a.events.x", "1", b"e1"),
                                                               ("from_a.events.y.z", "1", b"e2")]


def test_accounts_stream_import_to(shared):
    s = shared(ACCOUNTS_CONF)
    with _acc(s, "a") as a, _acc(s, "c") as c:
        c.send(b"SUB > 1\r\n")
        c.sync()
        a.send(pub("events.x", b"e1") + pub("other", b"o"))
        a.sync()
        msgs = c.msgs_until_pong()
        assert [(m.subject, m.payload) for m in msgs] == [("a_events.x", b"e1")]


def test_accounts_stream_import_is_one_way(shared):
    s = shared(ACCOUNTS_CONF)
    with _acc(s, "a") as a, _acc(s, "b") as b:
        a.send(b"SUB > 1\r\n")
        a.sync()
        b.send(pub("events.x", b"b1") + pub("from_a.events.x", b"b2"))
        b.sync()
        assert a.msgs_until_pong() == []


def test_accounts_service_import_request_reply(shared):
    s = shared(ACCOUNTS_CONF)

    async def body():
        a = await s.nc(user="a", password="a")
        b = await s.nc(user="b", password="b")
        try:
            seen = []

            async def handler(msg):
                seen.append((msg.subject, msg.reply))
                await msg.respond(b"echo:" + msg.data)

            await a.subscribe("svc.echo", cb=handler)
            await settle(a)
            for i in range(3):
                resp = await b.request("svc.echo", f"r{i}".encode(), timeout=2)
                assert resp.data == f"echo:r{i}".encode()
            assert [subj for subj, _ in seen] == ["svc.echo"] * 3
            assert all(reply for _, reply in seen)
        finally:
            await b.close()
            await a.close()

    run(body())


def test_accounts_service_import_to_raw(shared):
    s = shared(ACCOUNTS_CONF)
    with _acc(s, "a") as a, _acc(s, "b") as b:
        a.send(b"SUB svc.time 1\r\n")
        a.sync()
        b.send(b"SUB my.inbox 5\r\n" + pub("time.now", b"what time?", reply="my.inbox"))
        b.sync()
        # the server maps the reply into an internal _R_ subject and adds a Nats-Request-Info header
        # naming the requesting account (rtt varies)
        m = a.expect(rb"HMSG svc\.time 1 (_R_\.\S+) (\d+) (\d+)\r\n"
                     rb"(NATS/1\.0\r\nNats-Request-Info: \{\"acc\":\"B\",\"rtt\":\d+\}\r\n\r\n)what time\?\r\n")
        assert int(m.group(2)) == len(m.group(4)) and int(m.group(3)) == len(m.group(4)) + 10
        reply = m.group(1).decode()
        a.send(pub(reply, b"noon"))
        a.sync()
        b.expect(rb"MSG my\.inbox 5 4\r\nnoon\r\n")


def test_accounts_service_not_imported_is_invisible(shared):
    s = shared(ACCOUNTS_CONF)
    with _acc(s, "a") as a, _acc(s, "b") as b:
        a.send(b"SUB svc.other 1\r\n")
        a.sync()
        b.send(b"SUB b.inbox 5\r\n" + pub("svc.other", b"?", reply="b.inbox"))
        b.sync()
        assert a.msgs_until_pong() == []


def test_accounts_unknown_user(shared):
    s = shared(ACCOUNTS_CONF)
    with s.raw() as c:
        c.connect(user="zed", **{"pass": "zed"})
        c.expect_err("Authorization Violation")
        c.expect_closed()


def test_accounts_service_import_responder_without_headers(shared):
    # a responder that did not announce headers gets a plain MSG: the request-info header is stripped
    s = shared(ACCOUNTS_CONF)
    with s.client(user="a", headers=False, **{"pass": "a"}) as a, _acc(s, "b") as b:
        a.send(b"SUB svc.echo 1\r\n")
        a.sync()
        b.send(b"SUB b.in 2\r\n" + pub("svc.echo", b"q", reply="b.in"))
        b.sync()
        m = a.expect(rb"MSG svc\.echo 1 (_R_\.\S+) 1\r\nq\r\n")
        a.send(pub(m.group(1).decode(), b"answer"))
        a.sync()
        b.expect(rb"MSG b\.in 2 6\r\nanswer\r\n")


def test_accounts_service_reply_is_single_use(shared):
    # the mapped reply subject routes one response back to the requester, not more
    s = shared(ACCOUNTS_CONF)
    with _acc(s, "a") as a, _acc(s, "b") as b:
        a.send(b"SUB svc.echo 1\r\n")
        a.sync()
        b.send(b"SUB b.once 2\r\n" + pub("svc.echo", b"q", reply="b.once"))
        b.sync()
        m = a.expect(rb"HMSG svc\.echo 1 (_R_\.\S+) \d+ \d+\r\n.*?\r\n\r\nq\r\n")
        reply = m.group(1).decode()
        a.send(pub(reply, b"first") + pub(reply, b"second"))
        a.sync()
        assert [x.payload for x in b.msgs_until_pong()] == [b"first"]
