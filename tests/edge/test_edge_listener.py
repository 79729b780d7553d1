"""The edge's LAN listener: nats-py and raw sockets against a real MicroPython edge process (no hub).

Error texts and the order of +OK/-ERR follow nats-server's captured vectors (tests/vectors/client/*),
which the raw-socket cases quote.
"""

from __future__ import annotations

import asyncio
import socket

import nats
import pytest
from nats.errors import NoRespondersError

from tests.compat.harness import Raw, collect, run
from tests.edge.edgeharness import edge_config, free_port, wait_until


@pytest.fixture
def edge(edges):
    return edges(edge_config("lan", listen=free_port(), max_connections=4, max_subscriptions=16,
                             max_payload=1024, max_pending=8192))


async def _nc(edge, **kw):
    return await nats.connect(edge.url, allow_reconnect=False, connect_timeout=2, **kw)


@pytest.mark.device
def test_nats_py_pub_sub_wildcards_and_headers_through_the_edge(edge):
    async def body():
        a, b = await _nc(edge), await _nc(edge)
        s1 = await a.subscribe("sensors.*.temp")
        s2 = await a.subscribe("sensors.>")
        await a.flush()
        await b.publish("sensors.k1.temp", b"21.5", headers={"Unit": "C"})
        await b.publish("sensors.k1.hum", b"40")
        m1 = (await collect(s1, 1))[0]
        assert m1.data == b"21.5" and m1.headers == {"Unit": "C"} and m1.subject == "sensors.k1.temp"
        assert sorted(m.data for m in await collect(s2, 2)) == [b"21.5", b"40"]
        await a.close()
        await b.close()

    run(body())


@pytest.mark.device
def test_queue_group_across_lan_clients_delivers_each_message_once(edge):
    async def body():
        ncs = [await _nc(edge) for _ in range(3)]
        got: list[bytes] = []

        async def cb(m):
            got.append(m.data)

        for nc in ncs[:2]:
            await nc.subscribe("work", queue="w", cb=cb)
            await nc.flush()
        for i in range(100):
            await ncs[2].publish("work", b"%d" % i)
        await ncs[2].flush()
        wait = asyncio.get_running_loop().time() + 5
        while len(got) < 100 and asyncio.get_running_loop().time() < wait:
            await asyncio.sleep(0.01)
        assert sorted(got) == sorted(b"%d" % i for i in range(100))
        for nc in ncs:
            await nc.close()

    run(body())


@pytest.mark.device
def test_request_reply_and_no_responders_between_lan_clients(edge):
    async def body():
        svc, cli = await _nc(edge), await _nc(edge)

        async def handler(m):
            await m.respond(b"pong:" + m.data)

        await svc.subscribe("svc.ping", cb=handler)
        await svc.flush()
        r = await cli.request("svc.ping", b"1", timeout=2)
        assert r.data == b"pong:1"
        with pytest.raises(NoRespondersError):
            await cli.request("svc.nobody", b"x", timeout=2)
        await svc.close()
        await cli.close()

    run(body())


@pytest.mark.device
def test_connection_cap_refuses_with_nats_server_error(edge):
    raws = [Raw(edge.port) for _ in range(4)]
    for r in raws:
        r.handshake()
    extra = Raw(edge.port)  # INFO first, then the -ERR and a close, as nats-server (vectors/client/28)
    extra.expect_err("maximum connections exceeded")
    extra.expect_closed()
    raws.pop().close()
    wait_until(lambda: _accepts(edge.port), 3, msg="a slot to free up")
    for r in raws:
        r.close()


def _accepts(port):
    r = Raw(port)
    try:
        r.handshake()
        return True
    except BaseException:  # the -ERR path fails the expectation
        return False
    finally:
        r.close()


def test_verbose_pedantic_defaults_and_error_texts(edge):
    r = Raw(edge.port)
    r.send(b"CONNECT {}\r\n")  # omitted keys: verbose and pedantic on (vectors/client/13)
    r.expect(rb"\+OK\r\n")
    r.send(b"SUB x 1\r\nPUB x 1\r\na\r\nPUB x.* 1\r\nb\r\nPING\r\n")
    r.expect(rb"\+OK\r\n\+OK\r\nMSG x 1 1\r\na\r\n-ERR 'Invalid Publish Subject'\r\n\+OK\r\nPONG\r\n")
    r.send(b"SUB a..b 2\r\nPING\r\n")
    r.expect(rb"-ERR 'Invalid Subject'\r\nPONG\r\n")
    r.send(b"UNSUB 1\r\nPUB x 1\r\nc\r\nPING\r\n")
    r.expect(rb"\+OK\r\n\+OK\r\nPONG\r\n")
    r.close()
    r = Raw(edge.port)
    r.handshake()
    r.send(b"PUB x 2000\r\n")
    r.expect_err("Maximum Payload Violation")
    r.expect_closed()
    r = Raw(edge.port)
    r.handshake()
    r.send(b"FOO bar\r\n")
    r.expect_err("Unknown Protocol Operation")
    r.expect_closed()
    r = Raw(edge.port)
    r.send(b'CONNECT {"protocol":2}\r\n')
    r.expect_err("invalid client protocol")
    r.expect_closed()
    r = Raw(edge.port)
    r.send(b'CONNECT {"verbose":false,"no_responders":true}\r\n')
    r.expect_err("no responders requires headers support")
    r.expect_closed()


def test_max_subscriptions_unsub_max_and_echo(edge):
    r = Raw(edge.port)
    r.handshake()
    r.send(b"".join(b"SUB s.%d %d\r\n" % (i, i) for i in range(16)))
    r.send(b"SUB one.more 99\r\nPING\r\n")
    r.expect(rb"-ERR 'maximum subscriptions exceeded'\r\nPONG\r\n")  # connection stays
    r.send(b"UNSUB 0 2\r\nPUB s.0 1\r\na\r\nPUB s.0 1\r\nb\r\nPUB s.0 1\r\nc\r\n")
    assert [m.payload for m in r.msgs_until_pong()] == [b"a", b"b"]
    r.close()
    r = Raw(edge.port)
    r.handshake(echo=False)
    r.send(b"SUB e 1\r\nPUB e 1\r\nx\r\n")
    assert r.msgs_until_pong() == []
    r.close()


def test_stale_lan_client_is_closed(edges):
    e = edges(edge_config("stale", listen=free_port(), ping_interval=0.1, ping_max=2))
    r = Raw(e.port, auto_pong=False)
    r.handshake()
    r.expect(rb"PING\r\nPING\r\n-ERR 'Stale Connection'\r\n", timeout=3)
    r.expect_closed()


@pytest.mark.device
def test_slow_lan_consumer_is_closed_and_others_are_not(edges):
    e = edges(edge_config("slow", listen=free_port(), max_pending=4096, max_payload=1024))
    slow = socket.create_connection(("127.0.0.1", e.port))
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.sendall(b'CONNECT {"verbose":false}\r\nSUB big 1\r\nPING\r\n')
    slow.settimeout(2)
    assert b"PONG" in _recv_until(slow, b"PONG\r\n")
    fast = Raw(e.port)
    fast.handshake()
    payload = b"x" * 1000
    for _ in range(100):  # the edge's kernel send buffer takes up to 4 MB (tcp_wmem) before ours fills
        fast.send(b"".join(b"PUB big 1000\r\n" + payload + b"\r\n" for _ in range(100)))
        fast.sync()
        if e.count("slow consumer"):
            break
    e.wait_line(r"client \d+ closed: slow consumer", timeout=5)
    fast.sync()  # the publisher is unaffected
    fast.close()
    slow.close()


def _recv_until(s, marker):
    data = b""
    while marker not in data:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    return data
