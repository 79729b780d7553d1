"""The uplink on the wire against a scripted fake hub, with the leaf running in-process on CPython.

The fake hub speaks the hub side of the leafnode protocol (INFO first, records what the leaf sends, parsed
by edge/proto.py) and does what each test needs a real hub never does on cue: drop the link, report a
loop, stop answering PINGs, stop reading.
"""

from __future__ import annotations

import asyncio
import json
import re

from edge import proto
from edge.leaf import config, runner
from tests.compat.harness import free_port
from tests.edge.edgeharness import edge_config

HUB_INFO = {"server_id": "FAKEHUB", "server_name": "fake", "version": "2.15.1", "proto": 3, "headers": True,
            "auth_required": True, "max_payload": 1048576, "client_id": 7, "nonce": "abc",
            "info_on_connect": True, "leafnode_urls": []}


class FakeConn:
    def __init__(self, reader, writer):
        self.r, self.w = reader, writer
        self.events: list[tuple] = []
        self.parser = proto.Parser(proto.KIND_LEAF)
        self.reading = asyncio.Event()
        self.reading.set()
        self.closed = False

    def ops(self, op):
        return [e for e in self.events if e[0] == op]

    def send(self, data: bytes):
        self.w.write(data)

    def close(self):
        self.w.transport.abort()


class FakeHub:
    def __init__(self, answer_pings=True):
        self.port = free_port()
        self.conns: list[FakeConn] = []
        self.answer_pings = answer_pings
        self.server = None

    async def start(self):
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        return self

    async def _serve(self, reader, writer):
        c = FakeConn(reader, writer)
        self.conns.append(c)
        writer.write(proto.encode_info(HUB_INFO))
        try:
            while True:
                await c.reading.wait()
                data = await reader.read(65536)
                c.parser.receive_data(data)
                while (ev := c.parser.next_event()) is not None:
                    c.events.append(ev)
                    if ev[0] == proto.OP_PING and self.answer_pings:
                        writer.write(proto.PONG)
                    if ev[0] == proto.OP_CLOSED:
                        c.closed = True
                        return
        except (OSError, proto.RemoteProtocolError):
            c.closed = True

    def close(self):
        self.server.close()
        for c in self.conns:
            c.close()


async def until(cond, timeout=5.0, msg="condition"):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {msg}")
        await asyncio.sleep(0.005)


async def _node(hub, **limits):
    cfg = config.check(edge_config("wire", hub_port=hub.port, **limits))
    return await runner.start(cfg)


def _run(body, timeout=20):
    asyncio.run(asyncio.wait_for(body(), timeout))


def test_handshake_connect_ping_then_interest_and_again_after_reconnect():
    async def body():
        hub = await FakeHub().start()
        node = await _node(hub)
        leaf = node.leaf
        leaf.subscribe("a.b", print)
        leaf.subscribe("work", print, queue="grp")
        leaf.subscribe("work", print, queue="grp")
        leaf.subscribe("$LDS.fakehub", print)  # never advertised: it could be the hub's own
        await until(lambda: hub.conns and len(hub.conns[0].events) >= 4, msg="handshake")
        c = hub.conns[0]
        ev = c.events
        assert ev[0][0] == proto.OP_CONNECT and ev[1] == (proto.OP_PING,)
        opts = ev[0][1]
        assert "lang" not in opts and opts["headers"] is True and opts["protocol"] == 3 and opts["name"] == "wire"
        assert sorted(e[1:] for e in ev[2:4]) == [(b"a.b", None, None), (b"work", b"grp", 2)]
        c.send(b"PONG\r\nLS+ $LDS.fakehub\r\nLS+ hub.x\r\n")
        await until(lambda: node.uplink.up and node.uplink.hub_interest() == 1, msg="link up")
        c.close()  # the hub drops the link: the leaf dials again and re-sends its whole interest
        await until(lambda: len(hub.conns) == 2 and len(hub.conns[1].events) >= 4, msg="second handshake")
        ev = hub.conns[1].events
        assert [e[0] for e in ev[:4]] == [proto.OP_CONNECT, proto.OP_PING, proto.OP_LS_PLUS, proto.OP_LS_PLUS]
        assert sorted(e[1:] for e in ev[2:4]) == [(b"a.b", None, None), (b"work", b"grp", 2)]
        assert node.uplink.hub_interest() == 0  # the old hub's interest went with the old link
        for conn in hub.conns:
            assert not [e for e in conn.events if e[0] == proto.OP_LS_PLUS and e[1].startswith(b"$LDS.")]
        await node.close()
        hub.close()

    _run(body)


def test_only_publishes_with_hub_interest_leave_the_leaf():
    async def body():
        hub = await FakeHub().start()
        node = await _node(hub)
        await until(lambda: hub.conns and len(hub.conns[0].events) >= 2)
        c = hub.conns[0]
        c.send(b"LS+ wanted.>\r\nLS+ svc q 3\r\nPING\r\n")
        await until(lambda: node.uplink.hub_interest() == 2)
        leaf = node.leaf
        for s in ("nobody", "wanted", "other.x", "svc.x"):
            leaf.publish(s, b"no")
        leaf.publish("wanted.a", b"yes1")
        leaf.publish("svc", b"yes2", reply="r.1")
        await until(lambda: len(c.ops(proto.OP_LMSG)) == 2)
        await asyncio.sleep(0.05)  # proves a negative: no third LMSG
        msgs = c.ops(proto.OP_LMSG)
        assert [(m[1], m[2], m[3], bytes(m[5])) for m in msgs] == [
            (b"wanted.a", None, None, b"yes1"), (b"svc", b"r.1", [b"q"], b"yes2")]
        await node.close()
        hub.close()

    _run(body)


def test_loop_detected_delays_the_next_dial_at_least_30_s(capsys):
    async def body():
        hub = await FakeHub().start()
        node = await _node(hub, reconnect_min=0.01, reconnect_max=0.02)
        await until(lambda: hub.conns and len(hub.conns[0].events) >= 2)
        hub.conns[0].send(b"-ERR 'Loop detected for leafnode account=\"$G\". "
                          b"Delaying attempt to reconnect for 30s'\r\n")
        hub.conns[0].close()
        await until(lambda: node.uplink.loop_detected and node.uplink.link is None, msg="link closed")
        await asyncio.sleep(0.5)  # a normal retry would come after 10-20 ms
        assert len(hub.conns) == 1
        await node.close()
        hub.close()

    _run(body)
    out = capsys.readouterr().out
    delays = [int(x) for x in re.findall(r"uplink down .*retry_ms=(\d+)", out)]
    assert len(delays) == 1 and delays[0] >= 30000, out


def test_stale_link_is_dropped_and_dialled_again():
    async def body():
        hub = await FakeHub(answer_pings=False).start()
        node = await _node(hub, ping_interval=0.1, ping_max=2, reconnect_min=0.01, reconnect_max=0.02)
        await until(lambda: len(hub.conns) >= 2, timeout=5, msg="a second connection after the stale one")
        first = hub.conns[0]
        assert len(first.ops(proto.OP_PING)) >= 2  # the handshake PING and at least one from the pinger
        await node.close()
        hub.close()

    _run(body)


def test_uplink_output_is_bounded_drop_and_count_and_apublish_waits():
    async def body():
        hub = await FakeHub().start()
        node = await _node(hub, max_payload=8192, max_pending=16384)
        await until(lambda: hub.conns and len(hub.conns[0].events) >= 2)
        c = hub.conns[0]
        c.send(b"PONG\r\nLS+ bulk\r\n")
        await until(lambda: node.uplink.hub_interest() == 1 and node.uplink.up)
        # The hub stops reading (its read already under way takes at most one 64 KB chunk): kernel buffers,
        # then our 16 KB, fill up.
        c.reading.clear()
        chunk = b"z" * 8000
        for _ in range(2000):
            node.leaf.publish("bulk", chunk)
        up = node.uplink
        assert up.dropped > 0 and up.forwarded > 0 and up.forwarded + up.dropped == 2000
        assert up.link.pending() <= 16384 + 8100
        waiter = asyncio.ensure_future(node.leaf.apublish("bulk", b"after"))
        await asyncio.sleep(0.2)  # proves a negative: the waiter stays blocked
        assert not waiter.done()  # flow control: waits while the link is over half full
        c.reading.set()  # the hub reads again
        await asyncio.wait_for(waiter, 10)
        await until(lambda: any(bytes(e[5]) == b"after" for e in c.ops(proto.OP_LMSG)), timeout=10)
        assert len(c.ops(proto.OP_LMSG)) == up.forwarded
        await node.close()
        hub.close()

    _run(body, timeout=40)


def test_bad_hub_input_drops_the_link_with_a_reason(capsys):
    async def body():
        hub = await FakeHub().start()
        node = await _node(hub, reconnect_min=0.01, reconnect_max=0.02)
        await until(lambda: hub.conns and len(hub.conns[0].events) >= 2)
        hub.conns[0].send(b"BOGUS op\r\n")
        await until(lambda: len(hub.conns) >= 2, msg="a new connection")
        await node.close()
        hub.close()

    _run(body)
    assert "reason=protocol error" in capsys.readouterr().out


def test_json_config_round_trip_matches_the_documented_example():
    # docs/edge.md shows this file; it must stay valid.
    doc = json.loads((__import__("pathlib").Path(__file__).parents[2] / "docs" / "edge.md").read_text()
                     .split("```json", 1)[1].split("```", 1)[0])
    cfg = config.check(doc)
    assert cfg["name"] and cfg["hub"]["port"] == 7422 and cfg["listen"] == ("0.0.0.0", 4222)
