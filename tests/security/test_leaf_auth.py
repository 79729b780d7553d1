"""Leafnode connections authenticated by the client users (no `leafnodes { authorization }`): nats-server
(auth.go isLeafNodeAuthorized) then checks a leaf's CONNECT as a client's, binds the user's account and applies
the user's permissions from the leaf's side: `publish` is what the leaf may send into the hub, `subscribe` what it
may be sent (leafnode.go swaps them on the hub's copy). A leaf that breaks them is told and cut off."""

from __future__ import annotations

import json

import pytest

from tests.compat.harness import Raw, free_port, pub

LEAF_USERS_CONF = """\
leafnodes {{ listen: 127.0.0.1:{port} }}
accounts {{
  A {{ users = [ {{ user: leaf, password: lp, permissions: {{ publish: "up.>", subscribe: ["down.>", "hub.q"] }} }}
               {{ user: app, password: ap }} ] }}
  B {{ users = [ {{ user: other, password: op }} ] }}
}}
"""


@pytest.fixture
def hub(fresh):
    port = free_port()
    s = fresh(LEAF_USERS_CONF.format(port=port))
    s.leaf_port = port
    return s


def _leaf(hub, **creds) -> Raw:
    r = Raw(hub.leaf_port)
    opts = {"name": "rawleaf", "headers": True, "protocol": 1, "version": "2.15.1", **creds}
    r.send(b"CONNECT " + json.dumps(opts).encode() + b"\r\nPING\r\n")
    return r


def _leaf_in(hub, **creds) -> Raw:
    r = _leaf(hub, **creds)
    r.connect_info = json.loads(r.expect(rb"INFO (\{.*?\}) ?\r\n").group(1))
    r.hub_interest = set(r.expect(rb"((?:LS\+ [^\r]*\r\n)*)PONG\r\n").group(1).decode().split("\r\n")) - {""}
    return r


@pytest.mark.parametrize("creds", [{}, {"user": "leaf", "pass": "wrong"}, {"user": "nobody", "pass": "lp"}],
                         ids=["none", "wrong-pass", "unknown-user"])
def test_leaf_needs_the_client_credentials(hub, creds):
    with _leaf(hub, **creds) as r:
        r.expect_err("Authorization Violation")
        r.expect_closed()


def test_leaf_is_bound_to_its_users_account(hub):
    with _leaf_in(hub, user="other", **{"pass": "op"}) as r, hub.client(user="app", **{"pass": "ap"}) as app:
        assert r.connect_info["remote_account"] == "B"
        app.send(b"SUB up.x 1\r\n")
        app.sync()
        r.send(b"PING\r\n")
        r.expect(rb"PONG\r\n")  # no LS+ up.x: that interest is in account A


def test_leaf_user_permissions_filter_interest_and_messages(hub):
    with hub.client(user="app", **{"pass": "ap"}) as app:
        app.send(b"SUB up.x 1\r\nSUB elsewhere 2\r\n")
        app.sync()
        with _leaf_in(hub, user="leaf", **{"pass": "lp"}) as r:
            assert r.connect_info["remote_account"] == "A"
            # the hub tells the leaf only of interest the leaf may publish to
            assert "LS+ up.x" in r.hub_interest and "LS+ elsewhere" not in r.hub_interest
            r.send(b"LS+ down.>\r\nLS+ hub.q\r\nPING\r\n")
            r.expect(rb"PONG\r\n")
            app.send(pub("down.a", b"1") + pub("hub.q", b"2"))
            app.sync()
            r.expect(rb"LMSG down\.a 1\r\n1\r\nLMSG hub\.q 1\r\n2\r\n")
            r.send(b"LMSG up.x 2\r\nhi\r\nPING\r\n")
            r.expect(rb"PONG\r\n")
            app.expect(rb"MSG up\.x 1 2\r\nhi\r\n")


def test_leaf_wildcard_interest_gets_only_what_it_may_receive(hub):
    with hub.client(user="app", **{"pass": "ap"}) as app, _leaf_in(hub, user="leaf", **{"pass": "lp"}) as r:
        r.send(b"LS+ >\r\nPING\r\n")
        r.expect(rb"PONG\r\n")
        app.send(pub("secret", b"s") + pub("down.b", b"d"))
        app.sync()
        r.expect(rb"LMSG down\.b 1\r\nd\r\n")


def test_leaf_publish_outside_its_permissions_is_cut_off(hub):
    with hub.client(user="app", **{"pass": "ap"}) as app, _leaf_in(hub, user="leaf", **{"pass": "lp"}) as r:
        app.send(b"SUB > 1\r\n")
        app.sync()
        # a wildcard interest that covers subjects the leaf may publish to is told to it (canSubscribe's
        # ReverseMatch for leafs)
        r.expect(rb"LS\+ >\r\n")
        r.send(b"LMSG secret 1\r\nx\r\n")
        r.expect_err('Permissions Violation for Publish to "secret"')
        r.expect_closed()
        assert app.msgs_until_pong() == []


def test_leaf_subscription_outside_its_permissions_is_cut_off(hub):
    with _leaf_in(hub, user="leaf", **{"pass": "lp"}) as r:
        r.send(b"LS+ secret\r\n")
        r.expect_err('Permissions Violation for Subscription to "secret"')
        r.expect_closed()
