"""The edge's LAN port with "authorization": a token, a user and password, or users with permissions.

Each scenario runs twice with the same `authorization` object: on nats-server's client port (its config takes the
object as JSON) and on a MicroPython edge's LAN port; the -ERR texts, which connection is closed and which
messages arrive must be the same. Clients are raw sockets (exact bytes) and nats-py.
"""

from __future__ import annotations

import json

import nats
import pytest

from tests.compat.harness import Raw, Server, hpub, run
from tests.edge.edgeharness import edge_config, free_port

TARGETS = ["nats-server", "edge"]

SENSOR_PERMS = {"publish": {"allow": ["site.>"], "deny": ["site.secret"]},
                "subscribe": {"allow": ["cmd.>", "_INBOX.>"], "deny": ["cmd.secret"]}}
USERS = {"users": [
    {"user": "sensor", "password": "pw1", "permissions": SENSOR_PERMS},
    {"user": "admin", "password": "pw2"},
    # the example (user bar): an allow list with a deny-all behind it
    {"user": "bar", "password": "bar", "permissions": {"subscribe": {"allow": ["bar"], "deny": [">"]},
                                                     "publish": {"allow": ["bar"], "deny": [">"]}}},
    # the list shorthand: publish only to these
    {"user": "lister", "password": "pw3", "permissions": {"publish": ["a.b", "a.c"]}},
]}


@pytest.fixture
def lan(request, tmp_path, edges):
    """start(authorization, **limits) -> the port of a server that guards it with `authorization`."""
    def start(auth: dict, **limits) -> int:
        if request.param == "nats-server":
            (tmp_path / "nats").mkdir()
            srv = Server("nats", config="authorization: " + json.dumps(auth) + "\n", workdir=tmp_path / "nats")
            request.addfinalizer(srv.stop)
            return srv.start().port
        cfg = edge_config("lan1", listen=free_port(), **limits)
        cfg["authorization"] = auth
        return edges(cfg).port

    return start


def _closed_with(raw: Raw, text: str):
    raw.expect_err(text)
    raw.expect_closed()


@pytest.mark.parametrize("lan", TARGETS, indirect=True)
def test_token_first_op_must_be_connect_with_it(lan):
    port = lan({"token": "s3cret"})
    r = Raw(port)
    assert r.info["auth_required"] is True
    r.connect(auth_token="wrong")
    _closed_with(r, "Authorization Violation")
    for first in (b"PING\r\n", b"SUB x 1\r\n", b"PUB x 1\r\na\r\n"):
        r = Raw(port)
        r.send(first)
        _closed_with(r, "Authorization Violation")
    r = Raw(port)
    r.connect(user="u", **{"pass": "s3cret"})
    _closed_with(r, "Authorization Violation")
    r = Raw(port).handshake(auth_token="s3cret")
    r.sync()
    r.close()


@pytest.mark.parametrize("lan", TARGETS, indirect=True)
def test_user_and_password(lan):
    port = lan({"user": "dev", "password": "pw"})
    for opts in ({"user": "dev", "pass": "nope"}, {"user": "other", "pass": "pw"}, {}, {"auth_token": "pw"}):
        r = Raw(port)
        r.connect(**opts)
        _closed_with(r, "Authorization Violation")
    r = Raw(port).handshake(user="dev", **{"pass": "pw"})
    r.sync()
    r.close()

    async def body():
        nc = await nats.connect(f"nats://dev:pw@127.0.0.1:{port}", allow_reconnect=False)
        sub = await nc.subscribe("t")
        await nc.publish("t", b"x")
        assert (await sub.next_msg(timeout=2)).data == b"x"
        await nc.close()
        with pytest.raises(Exception, match="Authorization Violation"):
            await nats.connect(f"nats://dev:bad@127.0.0.1:{port}", allow_reconnect=False, max_reconnect_attempts=0)

    run(body())


@pytest.mark.parametrize("lan", ["nats-server"], indirect=True)
def test_permission_violations_on_nats_server(lan):
    _permission_violations_have_nats_server_texts_and_keep_the_connection(lan(USERS))


@pytest.mark.device  # also inside the frozen 32-bit edge's 60 KB heap
@pytest.mark.parametrize("lan", ["edge"], indirect=True)
def test_permission_violations_on_the_edge(lan):
    _permission_violations_have_nats_server_texts_and_keep_the_connection(lan(USERS))


def _permission_violations_have_nats_server_texts_and_keep_the_connection(port):
    s = Raw(port).handshake(user="sensor", **{"pass": "pw1"})
    s.send(b"SUB foo 1\r\n")
    s.expect_err('Permissions Violation for Subscription to "foo"')
    s.send(b"SUB foo q 2\r\n")
    s.expect_err('Permissions Violation for Subscription to "foo" using queue "q"')
    s.send(b"SUB cmd.secret 3\r\n")
    s.expect_err('Permissions Violation for Subscription to "cmd.secret"')
    s.send(b"PUB other 2\r\nhi\r\n")
    s.expect_err('Permissions Violation for Publish to "other"')
    s.send(b"PUB site.secret 2\r\nhi\r\n")
    s.expect_err('Permissions Violation for Publish to "site.secret"')
    s.send(b"SUB cmd.* 4\r\nSUB _INBOX.x 5\r\nPUB site.t 2\r\nok\r\n")
    assert s.frames_until_pong() == []  # allowed: no error, and the connection is still there

    a = Raw(port).handshake(user="admin", **{"pass": "pw2"})
    a.send(b"SUB site.> 1\r\n")
    a.sync()
    s.send(b"PUB site.t 2\r\nok\r\nPUB site.secret 2\r\nno\r\n")
    s.expect_err('Permissions Violation for Publish to "site.secret"')
    s.sync()
    assert [(f[0], f[1].subject, f[1].payload) for f in a.frames_until_pong()] == [("MSG", "site.t", b"ok")]
    # cmd.* may not deliver what its deny list names: cmd.secret never reaches the sensor
    a.send(b"PUB cmd.secret 1\r\nx\r\nPUB cmd.go 1\r\ny\r\n")
    a.sync()
    assert [(f[0], f[1].subject, f[1].payload) for f in s.frames_until_pong()] == [("MSG", "cmd.go", b"y")]

    b = Raw(port).handshake(user="bar", **{"pass": "bar"})
    b.send(b"SUB foo 1\r\n")
    b.expect_err('Permissions Violation for Subscription to "foo"')
    b.send(b"PUB foo 1\r\nx\r\n")
    b.expect_err('Permissions Violation for Publish to "foo"')
    b.sync()

    c = Raw(port).handshake(user="lister", **{"pass": "pw3"})
    c.send(b"PUB a.b 1\r\nx\r\nPUB a.d 1\r\nx\r\n")
    c.expect_err('Permissions Violation for Publish to "a.d"')
    c.send(b"SUB anything.> 1\r\n")  # no subscribe list: everything
    assert c.frames_until_pong() == []
    for r in (s, a, b, c):
        r.close()


@pytest.mark.parametrize("lan", TARGETS, indirect=True)
def test_nats_py_sees_permission_errors_and_allowed_traffic(lan):
    port = lan(USERS)

    async def body():
        errors = []

        async def on_error(e):
            errors.append(str(e))

        sensor = await nats.connect(f"nats://sensor:pw1@127.0.0.1:{port}", allow_reconnect=False, error_cb=on_error)
        admin = await nats.connect(f"nats://admin:pw2@127.0.0.1:{port}", allow_reconnect=False)
        cmds = await sensor.subscribe("cmd.*")
        site = await admin.subscribe("site.>")
        await sensor.flush()
        await admin.flush()
        await sensor.publish("site.temp", b"21.5")
        await sensor.publish("other.temp", b"x")
        await admin.publish("cmd.secret", b"no")
        await admin.publish("cmd.reboot", b"yes")
        assert (await site.next_msg(timeout=2)).subject == "site.temp"
        assert (await cmds.next_msg(timeout=2)).subject == "cmd.reboot"
        await sensor.flush()
        assert any('permissions violation for publish to "other.temp"' in e.lower() for e in errors), errors
        assert sensor.is_connected
        await sensor.close()
        await admin.close()

    run(body())


@pytest.mark.parametrize("lan", TARGETS, indirect=True)
def test_silent_client_gets_authentication_timeout(lan):
    r = Raw(lan({"token": "t"}, ping_interval=0.5), timeout=10)  # nats-server: 2 s; the edge: its second tick
    _closed_with(r, "Authentication Timeout")


def test_authorization_config_errors_are_one_line():
    from edge.leaf.config import ConfigError, check

    base = {"name": "e", "listen": "127.0.0.1:4222"}
    for auth, msg in [
        ("pw", 'config: "authorization": expected an object or null, got "pw"'),
        ({}, 'config: "authorization": expected exactly one of "token", "user" (with "password") or "users", got {}'),
        ({"token": "t", "user": "u", "password": "p"},
         'config: "authorization": expected exactly one of "token", "user" (with "password") or "users", got '
         '{"token": "t", "user": "u", "password": "p"}'),
        ({"user": "u"}, 'config: "authorization.password": expected a non-empty string, got null'),
        ({"token": "t", "password": "p"}, 'config: "authorization.password": expected null without "user", got "p"'),
        ({"users": []}, 'config: "authorization.users": expected a list of 1 to 16 users, got []'),
        ({"users": [{"user": "a", "password": "b", "perms": {}}]},
         'config: unknown key "authorization.users[0].perms"'),
        ({"users": [{"user": "a", "password": "b"}, {"user": "a", "password": "c"}]},
         'config: "authorization.users[1].user": expected a name not listed before, got "a"'),
        ({"users": [{"user": "a", "password": "b", "permissions": {"publish": {"allow": ["a..b"]}}}]},
         'config: "authorization.users[0].permissions.publish.allow[0]": expected a subject (wildcards allowed), '
         'got "a..b"'),
        ({"users": [{"user": "a", "password": "b", "permissions": {"subscribe": "x"}}]},
         'config: "authorization.users[0].permissions.subscribe": expected a list of subjects or '
         '{"allow": [...], "deny": [...]}, got "x"'),
        ({"users": [{"user": "a", "password": "b", "permissions": {"publish": {"deny": ["x"] * 17}}}]},
         'config: "authorization.users[0].permissions.publish.deny": expected a list of at most 16 subjects, got '
         + json.dumps(["x"] * 17)),
    ]:
        with pytest.raises(ConfigError) as e:
            check({**base, "authorization": auth})
        assert str(e.value) == msg
    with pytest.raises(ConfigError) as e:
        check({"name": "e", "authorization": {"token": "t"}})
    assert str(e.value) == ('config: "authorization": expected null when there is no "listen" (it guards the LAN '
                            'port), got {"token": "t"}')
    c = check({**base, "authorization": USERS})["authorization"]
    assert c["token"] is None and c["users"][b"admin"] == (b"pw2", None)
    assert c["users"][b"sensor"] == (b"pw1", ([b"site.>"], [b"site.secret"], [b"cmd.>", b"_INBOX.>"], [b"cmd.secret"]))
    assert c["users"][b"lister"] == (b"pw3", ([b"a.b", b"a.c"], None, None, None))


@pytest.mark.parametrize("lan", TARGETS, indirect=True)
def test_trace_destination_must_be_publishable(lan):
    # nats-server allowedToPublishOnMsgTraceDest: a traced publish whose Nats-Trace-Dest the user may not publish to
    # is refused with the publish -ERR for the destination, and not delivered; an allowed destination traces.
    port = lan(USERS)
    a = Raw(port).handshake(user="admin", **{"pass": "pw2"})
    a.send(b"SUB site.t 1\r\nSUB tr.> 2\r\nSUB site.trace 3\r\n")
    a.sync()
    s = Raw(port).handshake(user="sensor", **{"pass": "pw1"})
    s.send(hpub("site.t", b"NATS/1.0\r\nNats-Trace-Dest: tr.x\r\n\r\n", b"no"))
    s.expect_err('Permissions Violation for Publish to "tr.x"')
    s.send(hpub("site.t", b"NATS/1.0\r\nNats-Trace-Dest: site.trace\r\n\r\n", b"ok"))
    s.sync()
    frames = a.frames_until_pong()
    for _ in range(50):  # nats-server's event may come after the PONG on a busy machine
        if len(frames) >= 2:
            break
        frames += a.frames_until_pong()
    assert [f[1].subject for f in frames] == ["site.t", "site.trace"]
    assert frames[0][1].payload == b"ok"
    event = json.loads(frames[1][1].payload)
    assert [(x["type"], x.get("subj"), x.get("sub")) for x in event["events"]] == [
        ("in", "site.t", None), ("eg", None, "site.t")]
