"""no_auth_user: a client without credentials becomes that user, and every other client is still authenticated.

nats-server (server.go createClient, auth.go processClientOrLeafAuthentication) keeps authentication on when
no_auth_user is set and only leaves `auth_required` out of the INFO it sends: credentials that are given are
checked (a wrong password fails, it never falls back to no_auth_user), the user's account and permissions apply,
and the authentication timer runs. A first operation other than CONNECT authenticates the client as no_auth_user
(parser.go: "allow non CONNECT protos as our first", for telnet demos), with that user's permissions.
"""

from __future__ import annotations

import json

import pytest

from tests.compat.harness import pub, run, settle

# The configuration of issue 14, as found by nats.py's NoAuthUserClientTest.
NO_AUTH_CONF = """\
accounts {
  a { users = [ { user: 'foo', pass: 'foo',
                  permissions: { subscribe: { allow: ["foo", "_INBOX.>"], deny: ["bar"] },
                                 publish:   { allow: ["foo", "_INBOX.>"], deny: ["bar"] } } } ] }
  b { users = [ { user: 'bar', pass: 'bar', permissions: { subscribe: { allow: ["bar"], deny: [">"] },
                                                          publish:   { allow: ["bar"], deny: [">"] } } } ] }
  c { users = [ { user: 'carl', pass: 'carl' } ] }
}
no_auth_user = "foo"
authorization { timeout: 1 }
"""


def _login(s, user: str | None, password: str | None = None):
    creds = {} if user is None else {"user": user, "pass": password}
    return s.client(**creds)


def test_info_hides_auth_required(shared):
    s = shared(NO_AUTH_CONF)
    with s.raw() as c:
        assert "auth_required" not in c.info


def test_credentials_are_checked_and_their_permissions_apply(shared):
    # bar's deny of ">" wins over its allow of "bar": bar may do nothing at all.
    s = shared(NO_AUTH_CONF)
    with _login(s, "bar", "bar") as c:
        assert c.connect_info["remote_account"] == "b"
        c.send(b"SUB foo 1\r\n" + pub("foo", b"x") + b"SUB bar 2\r\n" + pub("bar", b"y") + b"PING\r\n")
        c.expect(rb"-ERR 'Permissions Violation for Subscription to \"foo\"'\r\n"
                 rb"-ERR 'Permissions Violation for Publish to \"foo\"'\r\n"
                 rb"-ERR 'Permissions Violation for Subscription to \"bar\"'\r\n"
                 rb"-ERR 'Permissions Violation for Publish to \"bar\"'\r\n"
                 rb"PONG\r\n")


def test_no_credentials_become_no_auth_user(shared):
    s = shared(NO_AUTH_CONF)
    with _login(s, None) as c:
        assert c.connect_info["remote_account"] == "a"
        assert c.connect_info["auth_required"] is True  # the INFO after CONNECT says it
        c.send(b"SUB bar 1\r\nSUB elsewhere 2\r\n" + pub("bar", b"x") + b"SUB foo 3\r\n" + pub("foo", b"y")
               + b"PING\r\n")
        c.expect(rb"-ERR 'Permissions Violation for Subscription to \"bar\"'\r\n"
                 rb"-ERR 'Permissions Violation for Subscription to \"elsewhere\"'\r\n"
                 rb"-ERR 'Permissions Violation for Publish to \"bar\"'\r\n"
                 rb"MSG foo 3 1\r\ny\r\nPONG\r\n")


def test_no_auth_user_lands_in_its_account(shared):
    # Before the fix the hub put every client in the global account: carl (account c) saw what anyone published.
    s = shared(NO_AUTH_CONF)
    with _login(s, None) as anon, _login(s, "foo", "foo") as foo, _login(s, "carl", "carl") as carl:
        anon.send(b"SUB foo 1\r\n")
        anon.sync()
        carl.send(b"SUB foo 1\r\n")
        carl.sync()
        foo.send(pub("foo", b"same-account"))
        foo.sync()
        anon.expect(rb"MSG foo 1 12\r\nsame-account\r\n")
        carl.send(pub("foo", b"from-c"))
        assert [m.payload for m in carl.msgs_until_pong()] == [b"from-c"]
        assert anon.msgs_until_pong() == []


@pytest.mark.parametrize("creds", [
    {"user": "bar", "pass": "wrong"},
    {"user": "foo", "pass": "wrong"},
    {"user": "foo"},
    {"user": "nobody", "pass": "foo"},
    {"pass": "foo"},
    {"auth_token": "foo"},
], ids=["other-user-wrong-pass", "no-auth-user-wrong-pass", "no-auth-user-no-pass", "unknown-user", "pass-only",
        "token"])
def test_wrong_credentials_fail_without_fallback(shared, creds):
    s = shared(NO_AUTH_CONF)
    with s.raw() as c:
        c.connect(**creds)
        c.send(b"PING\r\n")
        c.expect_err("Authorization Violation")
        assert c.expect_closed() == b""


@pytest.mark.parametrize(("first", "answer"), [
    (pub("foo", b"x"), rb"\+OK\r\n"),
    (pub("bar", b"x"), rb"-ERR 'Permissions Violation for Publish to \"bar\"'\r\n"),
    (b"SUB bar 1\r\n", rb"-ERR 'Permissions Violation for Subscription to \"bar\"'\r\n"),
    (b"SUB foo 1\r\n", rb"\+OK\r\n"),
], ids=["pub-allowed", "pub-denied", "sub-denied", "sub-allowed"])
def test_first_op_without_connect_is_no_auth_user(shared, first, answer):
    # Before CONNECT a client is verbose: allowed operations get +OK.
    s = shared(NO_AUTH_CONF)
    with s.raw() as c:
        c.send(first)
        c.expect(answer)
        c.send(b"PING\r\n")
        c.expect(rb"PONG\r\n")


def test_auth_timer_runs(shared):
    s = shared(NO_AUTH_CONF)
    with s.raw() as c:
        c.expect_err("Authentication Timeout", timeout=4)
        assert c.expect_closed() == b""


def test_nats_py_with_and_without_credentials(shared):
    s = shared(NO_AUTH_CONF)

    async def body():
        errors: list = []
        anon = await s.nc(errors=errors)
        bar = await s.nc(user="bar", password="bar", errors=errors)
        try:
            await bar.subscribe("foo")
            await settle(anon)
            await bar.flush()
            assert [str(e) for e in errors] == ["nats: permissions violation for subscription to \"foo\""]
        finally:
            await bar.close()
            await anon.close()
        with pytest.raises(Exception, match="Authorization Violation"):
            await s.nc(user="bar", password="nope")

    run(body())


def test_varz_still_says_auth_required(shared):
    s = shared(NO_AUTH_CONF, monitor=True)
    assert s.http_get("/varz")["auth_required"] is True


def test_later_connect_authenticates_again(shared):
    """As nats-server processConnect: every CONNECT authenticates, also after the first operation made the client
    no_auth_user, and the connection's subscriptions are dropped (it may change accounts)."""
    s = shared(NO_AUTH_CONF)
    with s.raw() as c:
        c.send(b"SUB foo 1\r\n")
        c.expect(rb"\+OK\r\n")
        c.connect(user="bar", **{"pass": "bar"})
        c.send(b"SUB foo 2\r\nPING\r\n")
        c.expect(rb"-ERR 'Permissions Violation for Subscription to \"foo\"'\r\nPONG\r\n")
        info = json.loads(c.expect(rb"INFO (\{.*?\}) ?\r\n").group(1))
        assert (info["connect_info"], info["remote_account"], info["auth_required"]) == (True, "b", True)
        c.connect(user="carl", **{"pass": "wrong"})
        c.expect_err("Authorization Violation")
        assert c.expect_closed() == b""


def test_later_connect_drops_subscriptions(shared):
    s = shared(NO_AUTH_CONF)
    with _login(s, "foo", "foo") as c:
        c.send(b"SUB foo 1\r\n")
        c.connect(user="foo", **{"pass": "foo"})
        c.send(pub("foo", b"x"))
        assert c.msgs_until_pong() == []
