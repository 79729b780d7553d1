"""Leafnode parity: the same leaf scenarios against nats-server and our hub.

Raw sockets play the leaf for the wire details (handshake, interest, framing, errors); a real
nats-server plays the leaf (or the hub we dial) for end-to-end traffic with nats-py clients.
"""

from __future__ import annotations

import asyncio
import json

import nats
import pytest

from .harness import Raw, Server, free_port, run, wait_until


def leaf_conf(leaf_port: int, auth: str = "") -> str:
    return f"leafnodes {{\n  listen: 127.0.0.1:{leaf_port}\n  {auth}\n}}\n"


@pytest.fixture
def hub(side, tmp_path):
    port = free_port()
    srv = Server(side, config=leaf_conf(port), monitor=True, workdir=tmp_path).start()
    srv.leaf_port = port
    yield srv
    srv.stop()


def leaf_raw(srv) -> Raw:
    return Raw(srv.leaf_port, auto_pong=True)  # reads the INFO into r.info


def leaf_connect(srv, name="rawleaf", **extra) -> Raw:
    r = leaf_raw(srv)
    opts = {"name": name, "headers": True, "protocol": 1, "version": "2.15.1", **extra}
    r.send(b"CONNECT " + json.dumps(opts).encode() + b"\r\nPING\r\n")
    info = json.loads(r.expect(rb"INFO (\{.*?\}) ?\r\n").group(1))
    assert info.get("connect_info") is True and info.get("remote_account") == "$G"
    ls = r.expect(rb"((?:LS\+ [^\r]*\r\n)*)PONG\r\n").group(1)
    r.hub_interest = set(ls.decode().split("\r\n")) - {""}
    return r


def test_leaf_info_is_what_go_leafs_need(hub):
    r = leaf_raw(hub)
    info = r.info
    assert info["client_id"] > 0
    assert "leafnode_urls" in info
    assert info.get("info_on_connect") is True
    assert info.get("auth_required") is True and info.get("nonce")
    assert info["headers"] is True
    r.close()


def test_leaf_connect_gets_lds_and_existing_interest(hub):
    with hub.client() as c:
        c.send(b"SUB pre.existing 1\r\nSUB pre.queue workers 2\r\n")
        c.sync()
        r = leaf_connect(hub)
        assert "LS+ pre.existing" in r.hub_interest
        assert "LS+ pre.queue workers 1" in r.hub_interest
        assert any(x.startswith("LS+ $LDS.") for x in r.hub_interest)
        r.close()


def test_leaf_queue_weights_are_absolute(hub):
    r = leaf_connect(hub)
    with hub.client() as a, hub.client() as b:
        a.send(b"SUB hub.q qgrp 1\r\n")
        a.sync()
        r.expect(rb"(?:PING\r\n)?LS\+ hub\.q qgrp 1\r\n")
        b.send(b"SUB hub.q qgrp 1\r\n")
        b.sync()
        r.expect(rb"(?:PING\r\n)?LS\+ hub\.q qgrp 2\r\n")
        b.send(b"UNSUB 1\r\n")
        b.sync()
        r.expect(rb"(?:PING\r\n)?LS\+ hub\.q qgrp 1\r\n")
        a.send(b"UNSUB 1\r\n")
        a.sync()
        r.expect(rb"(?:PING\r\n)?LS- hub\.q qgrp\r\n")
    r.close()


def test_hub_sends_lmsg_once_per_leaf_and_hmsg_for_headers(hub):
    r = leaf_connect(hub)
    r.send(b"LS+ leaf.foo\r\nLS+ leaf.>\r\nPING\r\n")
    r.expect(rb"PONG\r\n")
    with hub.client() as c:
        c.send(b"PUB leaf.foo 5\r\nhello\r\nPUB leaf.bar reply.1 2\r\nhi\r\n"
               b"HPUB leaf.hdr 18 21\r\nNATS/1.0\r\nA: b\r\n\r\nxyz\r\n")
        c.sync()
    r.expect(rb"(?:PING\r\n)?LMSG leaf\.foo 5\r\nhello\r\n(?:PING\r\n)?LMSG leaf\.bar reply\.1 2\r\nhi\r\n"
             rb"(?:PING\r\n)?HMSG leaf\.hdr 18 21\r\nNATS/1\.0\r\nA: b\r\n\r\nxyz\r\n")
    r.close()


def test_lmsg_from_leaf_reaches_plain_subs_and_only_named_queues(hub):
    r = leaf_connect(hub)
    with hub.client() as c:
        c.send(b"SUB hub.q 1\r\nSUB hub.q qgrp 2\r\n")
        c.sync()
        r.send(b"LMSG hub.q 5\r\nplain\r\nLMSG hub.q | qgrp 6\r\nqueued\r\n"
               b"LMSG hub.q + rr.1 qgrp 4\r\nwith\r\nPING\r\n")
        r.expect(rb"(?:.*?)PONG\r\n")
        msgs = c.msgs_until_pong()
        got = sorted((m.sid, m.payload, m.reply) for m in msgs)
        assert got == sorted([
            ("1", b"plain", None), ("1", b"queued", None), ("2", b"queued", None),
            ("1", b"with", "rr.1"), ("2", b"with", "rr.1"),
        ])
    r.close()


def test_leaf_loop_detected(hub):
    r = leaf_connect(hub)
    lds = next(x for x in r.hub_interest if x.startswith("LS+ $LDS."))[4:]
    r.send(f"LS+ {lds}\r\n".encode())
    r.expect(rb"(?:PING\r\n)?-ERR 'Loop detected for leafnode account=\"\$G\". "
             rb"Delaying attempt to reconnect for 30s'\r\n")
    r.expect_closed()


def test_client_connect_on_leaf_port_is_refused(hub):
    r = leaf_raw(hub)
    r.send(b'CONNECT {"verbose":false,"lang":"python","version":"1"}\r\n')
    r.expect(rb"-ERR 'attempted to connect to leaf node port'\r\n")
    r.expect_closed()


def test_leaf_op_before_connect_is_auth_violation(hub):
    r = leaf_raw(hub)
    r.send(b"LS+ foo\r\n")
    r.expect(rb"-ERR 'Authorization Violation'\r\n")
    r.expect_closed()


def test_leaf_auth_user_password(side, tmp_path):
    port = free_port()
    conf = leaf_conf(port, "authorization { user: leafy, password: s3cret }")
    srv = Server(side, config=conf, workdir=tmp_path).start()
    srv.leaf_port = port
    try:
        bad = leaf_raw(srv)
        bad.send(b'CONNECT {"name":"x","user":"leafy","pass":"nope"}\r\nPING\r\n')
        bad.expect(rb"-ERR 'Authorization Violation'\r\n")
        bad.expect_closed()
        good = leaf_connect(srv, user="leafy", **{"pass": "s3cret"})
        good.close()
    finally:
        srv.stop()


def test_leafz_lists_the_leaf(hub):
    r = leaf_connect(hub, name="edge-7")
    r.send(b"LS+ a.b\r\nPING\r\n")
    r.expect(rb"PONG\r\n")
    z = hub.http_get("/leafz?subs=1")
    assert z["leafnodes"] == 1
    leaf = z["leafs"][0]
    assert leaf["name"] == "edge-7" and leaf["account"] == "$G"
    assert "a.b" in leaf["subscriptions_list"]
    assert hub.http_get("/varz")["leafnodes"] == 1
    r.close()


# ---- a real nats-server leaf ----------------------------------------------------------------


async def _traffic(hub_url: str, leaf_url: str) -> dict:
    h = await nats.connect(hub_url)
    lf = await nats.connect(leaf_url)
    got_h: list[bytes] = []
    got_l: list[bytes] = []
    qh: list[bytes] = []
    ql: list[bytes] = []

    async def on_h(m):
        got_h.append(m.data)

    async def on_l(m):
        got_l.append(m.data)

    async def svc_h(m):
        await m.respond(b"hub:" + m.data)

    async def svc_l(m):
        await m.respond(b"leaf:" + m.data)

    async def q_h(m):
        qh.append(m.data)

    async def q_l(m):
        ql.append(m.data)

    await h.subscribe("to.hub", cb=on_h)
    await h.subscribe("svc.hub", cb=svc_h)
    await h.subscribe("work", queue="w", cb=q_h)
    await lf.subscribe("to.leaf", cb=on_l)
    await lf.subscribe("svc.leaf", cb=svc_l)
    await lf.subscribe("work", queue="w", cb=q_l)

    # Interest crosses the link asynchronously: probe until each side sees the other's services.
    async def reachable(nc, subj):
        try:
            await nc.request(subj, b"probe", timeout=0.3)
            return True
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError):
            return False

    for _ in range(100):
        if await reachable(lf, "svc.hub") and await reachable(h, "svc.leaf"):
            break
        await asyncio.sleep(0.05)
    out = {
        "req_leaf_to_hub": (await lf.request("svc.hub", b"q1", timeout=2)).data,
        "req_hub_to_leaf": (await h.request("svc.leaf", b"q2", timeout=2)).data,
    }
    for i in range(5):
        await lf.publish("to.hub", b"L%d" % i)
        await h.publish("to.leaf", b"H%d" % i)
    for i in range(100):
        await h.publish("work", b"h%d" % i)
        await lf.publish("work", b"l%d" % i)
    await h.flush()
    await lf.flush()
    for _ in range(200):
        if len(got_h) == 5 and len(got_l) == 5 and len(qh) + len(ql) >= 200:
            break
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.2)  # a duplicate would arrive now
    out.update(got_h=got_h, got_l=got_l, queue=sorted(qh + ql))
    await h.close()
    await lf.close()
    return out


def _check_traffic(out: dict) -> None:
    assert out["req_leaf_to_hub"] == b"hub:q1"
    assert out["req_hub_to_leaf"] == b"leaf:q2"
    assert out["got_h"] == [b"L%d" % i for i in range(5)]
    assert out["got_l"] == [b"H%d" % i for i in range(5)]
    # a queue group spanning hub and leaf delivers each message exactly once
    assert out["queue"] == sorted([b"h%d" % i for i in range(100)] + [b"l%d" % i for i in range(100)])


def test_go_leaf_to_hub_end_to_end(hub, tmp_path):
    leaf = Server("nats", config=f'server_name: goleaf\nleafnodes {{ remotes [ {{ url: '
                  f'"nats-leaf://127.0.0.1:{hub.leaf_port}" }} ] }}\n', workdir=tmp_path / "leaf")
    (tmp_path / "leaf").mkdir()
    leaf.start()
    try:
        wait_until(lambda: hub.http_get("/leafz")["leafnodes"] == 1, timeout=10, msg="Go leaf connected")
        _check_traffic(run(_traffic(hub.url, leaf.url), timeout=30))
    finally:
        leaf.stop()


def test_spoke_solicits_nats_server_hub(side, tmp_path):
    # `side` is the spoke here: it dials a real nats-server hub (hybrid cloud: a laptop hub hanging
    # off a nats-server cluster).
    (tmp_path / "gohub").mkdir()
    port = free_port()
    gohub = Server("nats", config="server_name: gohub\n" + leaf_conf(port), monitor=True,
                   workdir=tmp_path / "gohub").start()
    spoke = Server(side, config=f'leafnodes {{ remotes [ {{ url: "nats-leaf://127.0.0.1:{port}" }} ] }}\n',
                   workdir=tmp_path).start()
    try:
        wait_until(lambda: gohub.http_get("/leafz")["leafnodes"] == 1, timeout=10, msg="spoke connected")
        _check_traffic(run(_traffic(gohub.url, spoke.url), timeout=30))
    finally:
        spoke.stop()
        gohub.stop()


def test_no_responders_not_sent_when_interest_is_behind_a_leaf(hub):
    r = leaf_connect(hub)
    r.send(b"LS+ svc.remote\r\nPING\r\n")
    r.expect(rb"PONG\r\n")
    with hub.client() as c:
        c.send(b"SUB _INBOX.x 1\r\nPUB svc.remote _INBOX.x 2\r\nhi\r\n")
        c.sync()
        assert c.msgs_until_pong() == []
    # the requester's inbox interest reaches the leaf first, then the request itself
    r.expect(rb"(?:PING\r\n)?LS\+ _INBOX\.x\r\n(?:PING\r\n)?LMSG svc\.remote _INBOX\.x 2\r\nhi\r\n")
    r.close()


def test_leaf_port_survives_random_garbage(hub):
    import random
    import socket

    rnd = random.Random(7)
    words = [b"LS+ ", b"LS- ", b"LMSG ", b"HMSG ", b"CONNECT {}", b"PING", b"\r\n", b" ", b"foo", b"| q", b"+ r",
             b"5", b"-1", b"\xff", b"INFO {}"]
    for _ in range(40):
        with socket.create_connection(("127.0.0.1", hub.leaf_port), timeout=2) as s:
            s.recv(65536)  # INFO
            data = b"".join(rnd.choice(words) for _ in range(rnd.randrange(1, 80)))
            try:
                s.sendall(data)
                s.settimeout(0.05)
                s.recv(65536)
            except OSError:
                pass
    r = leaf_connect(hub, name="after-garbage")
    r.close()
