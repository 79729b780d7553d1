"""Permissions that must not silently stop applying: queue-qualified entries, allow_responses, default permissions
(of the authorization block and of an account), token and single-user authorization, users of accounts beside
users of the authorization block. Each case runs against nats-server and our hub with the exact -ERR texts."""

from __future__ import annotations

import time

import pytest

from tests.compat.harness import pub, refuses_to_start

QUEUE_CONF = """\
authorization { users = [
  { user: q, password: q, permissions: { subscribe: { allow: ["work q", "work.* pool.*", "plain"],
                                                      deny: ["plain blocked"] } } }
  { user: mixed, password: m, permissions: { subscribe: ["mixed", "mixed only"] } }
] }
"""


def _sub_answers(c, lines: list[bytes]) -> list[str]:
    """Send SUB lines one by one; what each got: "ok" or the -ERR text."""
    out = []
    for line in lines:
        c.send(line + b"\r\n")
        frames = c.frames_until_pong()
        out.append("ok" if not frames else frames[0][1])
    return out


def test_queue_qualified_subscribe_permissions(shared):
    s = shared(QUEUE_CONF)
    with s.client(user="q", **{"pass": "q"}) as c:
        got = _sub_answers(c, [b"SUB work 1", b"SUB work q 2", b"SUB work r 3", b"SUB work.x pool.a 4",
                               b"SUB work.x pool 5", b"SUB plain 6", b"SUB plain any 7", b"SUB plain blocked 8"])
    assert got == [
        "'Permissions Violation for Subscription to \"work\"'",
        "ok",
        "'Permissions Violation for Subscription to \"work\" using queue \"r\"'",
        "ok",
        "'Permissions Violation for Subscription to \"work.x\" using queue \"pool\"'",
        "ok",
        "ok",
        "'Permissions Violation for Subscription to \"plain\" using queue \"blocked\"'",
    ]


def test_queue_entry_beside_plain_entry_restricts_queues(shared):
    # As nats-server canSubscribe: once an allow entry names queues for a subject, only those queues may subscribe.
    s = shared(QUEUE_CONF)
    with s.client(user="mixed", **{"pass": "m"}) as c:
        got = _sub_answers(c, [b"SUB mixed 1", b"SUB mixed only 2", b"SUB mixed other 3"])
    assert got == ["ok", "ok", "'Permissions Violation for Subscription to \"mixed\" using queue \"other\"'"]


def test_queue_in_publish_permission_is_a_config_error(fresh):
    out = refuses_to_start(fresh, 'authorization { users = [ { user: a, password: a,\n'
                                  '  permissions: { publish: ["x q"] } } ] }\n')
    assert 'subject "x q" is not a valid subject' in out


RESPONSES_CONF = """\
authorization { users = [
  { user: req, password: req }
  { user: svc, password: svc, permissions: { subscribe: "svc.>", allow_responses: true } }
  { user: svc2, password: svc2, permissions: { subscribe: "svc.>", allow_responses: { max: 2 } } }
  { user: svc3, password: svc3, permissions: { subscribe: "svc.>", publish: { allow: "free" },
                                                 allow_responses: { max: 1, expires: "300ms" } } }
] }
"""


def _request(req, subject: str, reply: str):
    req.send(pub(subject, b"?", reply=reply))


def test_allow_responses_one_reply_only(shared):
    s = shared(RESPONSES_CONF)
    with s.client(user="req", **{"pass": "req"}) as req, s.client(user="svc", **{"pass": "svc"}) as svc:
        req.send(b"SUB inbox.> 1\r\n")
        req.sync()
        svc.send(b"SUB svc.a 1\r\n")
        svc.sync()
        _request(req, "svc.a", "inbox.1")
        svc.expect(rb"MSG svc\.a 1 inbox\.1 1\r\n\?\r\n")
        svc.send(pub("inbox.1", b"r1") + pub("inbox.1", b"r2") + pub("inbox.2", b"x") + pub("other", b"y"))
        svc.expect(rb"-ERR 'Permissions Violation for Publish to \"inbox\.1\"'\r\n"
                   rb"-ERR 'Permissions Violation for Publish to \"inbox\.2\"'\r\n"
                   rb"-ERR 'Permissions Violation for Publish to \"other\"'\r\n")
        svc.sync()
        assert [(m.subject, m.payload) for m in req.msgs_until_pong()] == [("inbox.1", b"r1")]


def test_allow_responses_max(shared):
    s = shared(RESPONSES_CONF)
    with s.client(user="req", **{"pass": "req"}) as req, s.client(user="svc2", **{"pass": "svc2"}) as svc:
        req.send(b"SUB inbox.> 1\r\n")
        req.sync()
        svc.send(b"SUB svc.b 1\r\n")
        svc.sync()
        _request(req, "svc.b", "inbox.m")
        svc.expect(rb"MSG svc\.b 1 inbox\.m 1\r\n\?\r\n")
        svc.send(pub("inbox.m", b"1") + pub("inbox.m", b"2") + pub("inbox.m", b"3"))
        svc.expect(rb"-ERR 'Permissions Violation for Publish to \"inbox\.m\"'\r\n")
        svc.sync()
        assert [m.payload for m in req.msgs_until_pong()] == [b"1", b"2"]


def test_allow_responses_expires_beside_publish_allow(shared):
    s = shared(RESPONSES_CONF)
    with s.client(user="req", **{"pass": "req"}) as req, s.client(user="svc3", **{"pass": "svc3"}) as svc:
        req.send(b"SUB inbox.> 1\r\nSUB free 2\r\nSUB secret 3\r\n")
        req.sync()
        svc.send(b"SUB svc.c 1\r\n")
        svc.sync()
        svc.send(pub("free", b"f") + pub("secret", b"s"))
        svc.expect(rb"-ERR 'Permissions Violation for Publish to \"secret\"'\r\n")
        _request(req, "svc.c", "secret")
        _request(req, "svc.c", "inbox.late")
        svc.expect(rb"MSG svc\.c 1 secret 1\r\n\?\r\nMSG svc\.c 1 inbox\.late 1\r\n\?\r\n")
        svc.send(pub("secret", b"answer"))
        svc.sync()
        time.sleep(0.5)  # past the 300ms the response permission lasts: no event to poll for
        svc.send(pub("inbox.late", b"too late") + b"PING\r\n")
        svc.expect(rb"-ERR 'Permissions Violation for Publish to \"inbox\.late\"'\r\nPONG\r\n")
        assert [(m.subject, m.payload) for m in req.msgs_until_pong()] == [("free", b"f"), ("secret", b"answer")]


DEFAULTS_CONF = """\
authorization {
  default_permissions: { publish: ["pub.>"], subscribe: ["sub.>", "_INBOX.>"] }
  users = [
    { user: plain, password: p }
    { user: own, password: o, permissions: { publish: "own.>" } }
  ]
}
accounts {
  A {
    default_permissions: { publish: ["a.>"] }
    users = [ { user: acc, password: a }, { user: accown, password: a, permissions: { subscribe: "x" } } ]
  }
  B { users = [ { user: bare, password: b } ] }
}
"""


@pytest.mark.parametrize(("user", "subject", "allowed"), [
    ("plain", "pub.x", True), ("plain", "own.x", False),
    ("own", "own.x", True), ("own", "pub.x", False),
    ("acc", "a.x", True), ("acc", "pub.x", False),
    ("accown", "a.x", True), ("accown", "anything", True),
    ("bare", "anything", True),
], ids=lambda v: str(v))
def test_default_permissions_by_where_the_user_is(shared, user, subject, allowed):
    """authorization's default_permissions go to its users without their own; an account's to its users without
    their own; a user's own permissions replace the default as a whole (a subscribe-only entry leaves publish
    open); users of an account without defaults are unrestricted."""
    s = shared(DEFAULTS_CONF)
    password = {"plain": "p", "own": "o", "acc": "a", "accown": "a", "bare": "b"}[user]
    with s.client(user=user, **{"pass": password}) as c:
        c.send(pub(subject, b"x") + b"PING\r\n")
        if allowed:
            c.expect(rb"PONG\r\n")
        else:
            c.expect(rb"-ERR 'Permissions Violation for Publish to \"%s\"'\r\nPONG\r\n" % subject.encode())


def test_default_permissions_without_users_restrict_nobody(shared):
    s = shared('authorization { default_permissions: { publish: "only.this" } }\n')
    with s.raw() as c:
        assert "auth_required" not in c.info
        c.handshake()
        c.send(pub("other", b"x") + b"PING\r\n")
        c.expect(rb"PONG\r\n")


@pytest.mark.parametrize("conf", [
    'authorization { token: t0k, permissions: { publish: "only.this" } }\n',
    'authorization { user: u, password: p, permissions: { publish: "only.this" } }\n',
], ids=["token", "single-user"])
def test_permissions_beside_token_or_single_user(shared, conf):
    """nats-server applies an authorization block's permissions to its users array only: a token or a single
    user/password client is not restricted by them."""
    s = shared(conf)
    creds = {"auth_token": "t0k"} if "token" in conf else {"user": "u", "pass": "p"}
    with s.client(**creds) as c:
        c.send(pub("other", b"x") + b"PING\r\n")
        c.expect(rb"PONG\r\n")


MIXED_CONF = """\
authorization { users = [ { user: top, password: t, permissions: { publish: "top.>" } } ] }
accounts { A { users = [ { user: inacc, password: i, permissions: { publish: "acc.>" } } ] } }
"""


@pytest.mark.parametrize(("user", "password", "account", "ok", "denied"), [
    ("top", "t", "$G", "top.x", "acc.x"),
    ("inacc", "i", "A", "acc.x", "top.x"),
])
def test_users_of_accounts_beside_users_of_authorization(shared, user, password, account, ok, denied):
    s = shared(MIXED_CONF)
    with s.client(user=user, **{"pass": password}) as c:
        assert c.connect_info["remote_account"] == account
        c.send(pub(ok, b"x") + pub(denied, b"x") + b"PING\r\n")
        c.expect(rb"-ERR 'Permissions Violation for Publish to \"%s\"'\r\nPONG\r\n" % denied.encode())
    with s.raw() as c:
        c.connect(user=user, **{"pass": "wrong"})
        c.expect_err("Authorization Violation")
