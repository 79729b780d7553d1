"""Message tracing through a MicroPython edge and a real hub: the edge's own events (edge/leaf/msgtrace.py) and how
they link with the hub's.

Real processes: `micropython -m edge` edges, nats-server (`nats`) or our hub (`hub`) with a leafnodes port, nats-py
clients on the hub and on the edge's LAN port. The trace destination's subscriber sits on the hub, as `nats trace`
would. nats-server traces too (its leaf INFO says proto 3): its event must name the edge as a LEAF ingress with the
hop the edge's egress carries.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
from pathlib import Path

import nats
import pytest

from tests.compat.harness import Server, run
from tests.edge.edgeharness import (
    JsHub,
    Runtime,
    edge_config,
    free_port,
    next_real,
    probe_until_received,
    set_runtime,
    wait_until,
)
from tests.edge.fwdharness import FwdEdge, add_stream, forward_config, stream_last_seq, wait_drained
from tests.edge.test_edge_heap import _stats

APP_DIR = str(Path(__file__).resolve().parent)  # traceapp.py


async def _nc(url, **kw):
    return await nats.connect(url, allow_reconnect=False, connect_timeout=2, **kw)


class Events:
    """The trace events arriving on a subscription of the destination (on the hub)."""

    def __init__(self):
        self.got: list[dict] = []

    async def cb(self, m):
        self.got.append(json.loads(m.data))

    async def wait(self, n, timeout=5.0):
        for _ in range(int(timeout / 0.02)):
            if len(self.got) >= n:
                return self.got
            await asyncio.sleep(0.02)
        pytest.fail(f"{len(self.got)} trace events of {n}: {self.got}")

    def of(self, server):
        return [e for e in self.got if e["server"]["name"] == server]


def _kinds(ev):
    return [(x["type"], x.get("kind")) for x in ev["events"]]


def _hub_traces(leaf_port):
    """Whether the hub traces messages too (then it sends its own event): its leaf INFO says proto 3 or more
    (nats-server MsgTraceProto), as the edge reads it. nats-server 2.15.1 does; our hub once host/ traces."""
    with socket.create_connection(("127.0.0.1", leaf_port), timeout=2) as s:
        buf = b""
        while b"\r\n" not in buf:
            chunk = s.recv(4096)
            assert chunk, "the hub closed its leafnode port before its INFO"
            buf += chunk
    return json.loads(buf.split(b"\r\n")[0][5:]).get("proto", 0) >= 3


@pytest.fixture
def edge(edges, hub):
    e = edges(edge_config("edge1", listen=free_port(), hub_port=hub.leaf_port, ping_interval=1, stats=0.1))
    e.wait_line(r"uplink up", timeout=10)
    return e


async def _crossed(pub, hub_nc, subject):
    """Until the hub's interest in `subject` has reached the edge: a probe from `pub` crosses."""
    sub = await hub_nc.subscribe(subject)
    await probe_until_received(pub, sub, subject)
    await sub.unsubscribe()
    await hub_nc.flush()  # gone at the hub before the test's own message: not one of its egresses


def _check_edge_egress_links_hub_event(edge_ev, hub_ev, hub_name, edge_name="edge1"):
    up = [x for x in edge_ev["events"] if x["type"] == "eg" and x["kind"] == 4]
    assert len(up) == 1 and up[0]["name"] == hub_name and edge_ev["hops"] == 1
    assert hub_ev["request"]["header"]["Nats-Trace-Hop"] == [up[0]["hop"]]
    ingress = hub_ev["events"][0]
    assert (ingress["type"], ingress["kind"], ingress["name"]) == ("in", 4, edge_name)


@pytest.mark.device
def test_lan_publish_is_traced_on_the_edge_and_the_hub(hub, edge, side, edge_runtime):
    heap = []  # the stats line before the traced message, and the first one after its event went
    traces = _hub_traces(hub.leaf_port)

    async def body():
        h = await _nc(hub.url)
        events = Events()
        await h.subscribe("tr.lan", cb=events.cb)
        at_hub = await h.subscribe("app.x")
        pub = await _nc(edge.url, name="pubber")
        lsub = await _nc(edge.url, name="lsub")
        local = await lsub.subscribe("app.x")
        await lsub.flush()
        await _crossed(pub, h, "app.x")
        heap.append(_stats(edge)[-1])
        await pub.publish("app.x", b"hello", headers={"Nats-Trace-Dest": "tr.lan"})
        await pub.flush()
        m = await next_real(at_hub)
        assert (m.data, m.headers) == (b"hello", {"Nats-Trace-Dest": "tr.lan", "Nats-Trace-Hop": "1"})
        assert (await next_real(local)).data == b"hello"
        got = await events.wait(2 if traces else 1)
        e = events.of("edge1")[0]
        hdr = b"NATS/1.0\r\nNats-Trace-Dest: tr.lan\r\n\r\n"  # nats-py's header block
        assert e["request"] == {"header": {"Nats-Trace-Dest": ["tr.lan"]}, "msgsize": len(hdr) + len(b"hello")}
        assert _kinds(e) == [("in", 0), ("eg", 0), ("eg", 4)]
        ingress, local_eg, up_eg = e["events"]
        assert (ingress["name"], ingress["acc"], ingress["subj"]) == ("pubber", "$G", "app.x") and ingress["cid"] > 0
        assert (local_eg["name"], local_eg["sub"]) == ("lsub", "app.x") and local_eg["cid"] not in (0, ingress["cid"])
        hub_name = hub.srv.http_get("/varz")["server_name"]
        assert up_eg["hop"] == "1" and up_eg["name"] == hub_name
        if traces:
            hub_ev = events.of(hub_name)[0]
            _check_edge_egress_links_hub_event(e, hub_ev, hub_name)
            assert [(x["type"], x["kind"], x.get("sub")) for x in hub_ev["events"][1:]] == [("eg", 0, "app.x")]
        assert len(got) == (2 if traces else 1)
        for c in (h, pub, lsub):
            await c.close()

    run(body())
    wait_until(lambda: "trace_sent=1 " in edge.lines[-1], 5, msg="trace_sent=1 in the stats line")
    heap.append(_stats(edge)[-1])
    # what the first traced message costs (msgtrace.py loaded, the tracer made): printed with pytest -s
    print(f"{edge_runtime.name} heap before the first traced message {heap[0]['heap']}, after {heap[1]['heap']} "
          f"(peak {heap[1]['peak']}, free {heap[1]['free']})")


def test_app_publish_is_traced_as_the_app(hubs, edges, side):
    hub = hubs()
    traces = _hub_traces(hub.leaf_port)
    e = edges(edge_config("edge1", hub_port=hub.leaf_port, ping_interval=1) | {"app": "traceapp"}, extra_path=APP_DIR)
    e.wait_line(r"uplink up", timeout=10)
    hub.wait_leaf_subs("app.x", "ctl.trace")

    async def body():
        h = await _nc(hub.url)
        events = Events()
        await h.subscribe("tr.app", cb=events.cb)
        at_hub = await h.subscribe("app.x")
        await h.flush()
        await h.publish("ctl.trace", b"tr.app")
        m = await at_hub.next_msg(timeout=5)
        assert m.headers == {"Nats-Trace-Dest": "tr.app", "Nats-Trace-Hop": "1"}
        await events.wait(2 if traces else 1)
        ev = events.of("edge1")[0]
        assert _kinds(ev) == [("in", 0), ("eg", 0), ("eg", 4)]
        assert (ev["events"][0]["cid"], ev["events"][0]["name"]) == (0, "app")
        assert (ev["events"][1]["cid"], ev["events"][1]["name"], ev["events"][1]["sub"]) == (0, "app", "app.x")
        hub_name = hub.srv.http_get("/varz")["server_name"]
        if traces:
            _check_edge_egress_links_hub_event(ev, events.of(hub_name)[0], hub_name)
        await h.close()

    run(body())
    e.wait_line(r"^edge: app got 1$")


@pytest.mark.device
def test_trace_only_delivers_nothing_on_the_edge_or_the_hub(hub, edge, side):
    traces = _hub_traces(hub.leaf_port)
    async def body():
        h = await _nc(hub.url)
        events = Events()
        await h.subscribe("tr.only", cb=events.cb)
        at_hub = await h.subscribe("only.x")
        pub = await _nc(edge.url, name="pubber")
        local = await pub.subscribe("only.x")
        await _crossed(pub, h, "only.x")
        await pub.publish("only.x", b"traced", headers={"Nats-Trace-Dest": "tr.only", "Nats-Trace-Only": "true"})
        await pub.publish("only.x", b"after")
        await pub.flush()
        # the plain message that follows is the first each subscriber gets (probes aside): the traced one never came
        for sub in (local, at_hub):
            assert (await next_real(sub)).data == b"after"
        await events.wait(2 if traces else 1)
        ev = events.of("edge1")[0]
        assert ev["request"]["header"]["Nats-Trace-Only"] == ["true"]
        assert _kinds(ev) == [("in", 0), ("eg", 0), ("eg", 4)]  # listed, though not delivered
        assert all("error" not in x for x in ev["events"]) == traces
        if traces:
            hub_name = hub.srv.http_get("/varz")["server_name"]
            _check_edge_egress_links_hub_event(ev, events.of(hub_name)[0], hub_name)
        for c in (h, pub):
            await c.close()

    run(body())


def test_message_from_the_hub_is_traced_on_the_edge(hub, edge, side):
    traces = _hub_traces(hub.leaf_port)
    async def body():
        h = await _nc(hub.url)
        events = Events()
        await h.subscribe("tr.down", cb=events.cb)
        lsub = await _nc(edge.url, name="lsub")
        local = await lsub.subscribe("down.x")
        await lsub.flush()
        hub.wait_leaf_subs("down.x")
        await h.publish("down.x", b"hi", headers={"Nats-Trace-Dest": "tr.down"})
        m = await local.next_msg(timeout=3)
        assert m.data == b"hi"
        await events.wait(2 if traces else 1)
        ev = events.of("edge1")[0]
        hub_name = hub.srv.http_get("/varz")["server_name"]
        assert _kinds(ev) == [("in", 4), ("eg", 0)] and "hops" not in ev
        assert (ev["events"][0]["name"], ev["events"][0]["subj"]) == (hub_name, "down.x")
        assert (ev["events"][1]["name"], ev["events"][1]["sub"]) == ("lsub", "down.x")
        if traces:
            hub_ev = events.of(hub_name)[0]
            up = [x for x in hub_ev["events"] if x["type"] == "eg" and x["kind"] == 4]
            assert len(up) == 1 and up[0]["name"] == "edge1"
            assert ev["request"]["header"]["Nats-Trace-Hop"] == [up[0]["hop"]]
        # trace-only from the hub: the edge (CONNECT protocol 3) gets it to trace, its subscriber does not
        events.got.clear()
        await h.publish("down.x", b"only", headers={"Nats-Trace-Dest": "tr.down", "Nats-Trace-Only": "true"})
        await h.publish("down.x", b"after")
        assert (await local.next_msg(timeout=3)).data == b"after"
        await events.wait(2 if traces else 1)
        ev = events.of("edge1")[0]
        assert _kinds(ev) == [("in", 4), ("eg", 0)] and ev["request"]["header"]["Nats-Trace-Only"] == ["true"]
        for c in (h, lsub):
            await c.close()

    run(body())


def test_events_wait_while_the_link_is_down_and_overflow_is_counted(hubs, edges, proxies, side):
    hub = hubs()
    proxy = proxies(hub.leaf_port)
    e = edges(edge_config("edge1", listen=free_port(), hub_port=proxy.port, ping_interval=1, stats=0.1,
                          max_trace_events=2))
    e.wait_line(r"uplink up", timeout=10)

    async def body():
        h = await _nc(hub.url)
        events = Events()
        await h.subscribe("tr.buf", cb=events.cb)
        await h.flush()
        mark = len(e.lines)
        proxy.close()  # the edge cannot dial the hub any more
        e.wait_line(r"uplink down", start=mark)
        pub = await _nc(e.url, name="pubber")
        for i in range(3):
            await pub.publish(f"buf.{i}", b"x", headers={"Nats-Trace-Dest": "tr.buf"})
        await pub.flush()
        wait_until(lambda: "trace_drop=1 " in e.lines[-1], 5, msg="trace_drop=1 in the stats line")
        assert "trace_sent=0 " in e.lines[-1]
        proxies(hub.leaf_port, proxy.port)
        e.wait_line(r"uplink up", start=mark, timeout=10)
        got = await events.wait(2)
        # the oldest event went; the two newest came, in order, with nothing but their ingress
        assert [ev["events"][0]["subj"] for ev in got] == ["buf.1", "buf.2"]
        assert [_kinds(ev) for ev in got] == [[("in", 0)], [("in", 0)]]
        for c in (h, pub):
            await c.close()

    run(body(), timeout=30)
    wait_until(lambda: "trace_sent=2 trace_drop=1 " in e.lines[-1], 5, msg="trace_sent=2 in the stats line")


@pytest.fixture
def jshub(side, tmp_path):
    h = JsHub(side, tmp_path / f"hub-{side}")
    yield h
    h.stop()


@pytest.mark.device
def test_forward_queue_traces_the_flash_store_and_the_hub_ack(jshub, fwd_edges, side):
    jshub.start()
    traces = _hub_traces(jshub.leaf_port)
    run(add_stream(jshub.url, "TELE", ["tele.>"]))
    e: FwdEdge = fwd_edges(forward_config("e1", jshub.leaf_port, [{"subjects": ["tele.>"], "stream": "TELE"}],
                                          listen=free_port(), app="traceapp"))
    e.start()
    e.wait_line(r"uplink up", timeout=10)
    n_hub = 1 if traces else 0  # the hub's own event per stored record

    def check(stored, acked, name, cid, subject, seq):
        assert _kinds(stored) == [("in", 0), ("js", None)] and "hops" not in stored
        assert (stored["events"][0]["name"], stored["events"][0]["cid"] > 0) == (name, cid)
        assert {k: v for k, v in stored["events"][1].items() if k != "ts"} == {
            "type": "js", "stream": "forward:TELE", "subject": subject}
        assert _kinds(acked) == [("in", 0), ("eg", 4), ("js", None)] and acked["hops"] == 1
        assert acked["events"][0] == stored["events"][0]  # the same ingress
        assert {k: v for k, v in acked["events"][2].items() if k != "ts"} == {
            "type": "js", "stream": "TELE", "subject": subject, "seq": seq}

    async def body():
        h = await _nc(jshub.url)
        events = Events()
        await h.subscribe("tr.fwd", cb=events.cb)
        await h.flush()
        # a LAN client's JetStream publish
        nc = await _nc(e.url, name="sensor")
        ack = await nc.jetstream(timeout=3).publish("tele.t", b"21.5", headers={"Nats-Trace-Dest": "tr.fwd"})
        assert (ack.stream, ack.seq) == ("TELE", 1)  # the edge's PubAck: on flash
        await events.wait(2 + n_hub)
        stored, acked = events.of("e1")
        check(stored, acked, "sensor", True, "tele.t", 1)
        hub_name = acked["events"][1]["name"]
        if traces:
            hub_ev = events.of(hub_name)[0]
            _check_edge_egress_links_hub_event(acked, hub_ev, hub_name, "e1")
            assert [(x["type"], x.get("stream")) for x in hub_ev["events"][1:]] == [("js", "TELE")]
        # the app's durable publish (traceapp.py)
        events.got.clear()
        e.wait_line(r"^edge: app finished")
        await h.publish("ctl.fwd", b"tr.fwd")
        await events.wait(2 + n_hub)
        e.wait_line(r"^edge: app stored 2$")
        stored, acked = events.of("e1")
        check(stored, acked, "app", False, "tele.app", 2)
        assert len(events.of(hub_name)) == n_hub
        # trace-only: traced where it would go, not stored
        events.got.clear()
        await nc.publish("tele.t", b"only", headers={"Nats-Trace-Dest": "tr.fwd", "Nats-Trace-Only": "true"})
        await nc.flush()
        (only,) = await events.wait(1)
        assert _kinds(only) == [("in", 0), ("js", None)] and only["events"][1]["stream"] == "forward:TELE"
        for c in (h, nc):
            await c.close()

    run(body())
    wait_drained(e)
    assert stream_last_seq(jshub.url, "TELE") == 2  # the trace-only record was not stored

def _normalized(ev, names):
    """An event without what differs between runs and servers: timestamps, the server block, ids; connection
    names by role (names: actual -> role), cids by role (the name, or the kind for an unnamed one)."""
    out = {"request": ev["request"], "hops": ev.get("hops", 0), "events": []}
    for x in ev["events"]:
        y = {k: v for k, v in x.items() if k not in ("ts", "cid")}
        if "name" in y:
            y["name"] = names.get(y["name"], y["name"])
        out["events"].append(y)
    out["events"] = out["events"][:1] + sorted(out["events"][1:], key=lambda y: json.dumps(y, sort_keys=True))
    return out


def _leaf_scenario(leaf_url, hub_url, leaf_name, hub_name, traces):
    """A LAN subscriber (plain + queue) on the leaf, a subscriber on the hub, a traced publish on the leaf;
    -> the normalized events of the leaf and of the hub (None when the hub sent none; traces: it sends one)."""
    async def body():
        h = await _nc(hub_url)
        events = Events()
        await h.subscribe("tr.p", cb=events.cb)
        at_hub = await h.subscribe("app.x")
        lsub = await _nc(leaf_url, name="lsub")
        local = await lsub.subscribe("app.x")
        await lsub.subscribe("app.x", queue="q")
        pub = await _nc(leaf_url, name="pubber")
        await lsub.flush()
        await _crossed(pub, h, "app.x")
        await pub.publish("app.x", b"hello", headers={"Nats-Trace-Dest": "tr.p"})
        await pub.flush()
        assert (await next_real(at_hub)).headers["Nats-Trace-Hop"] == "1"
        assert (await next_real(local)).data == b"hello"
        await events.wait(2 if traces else 1)
        hub_ev = None
        names = {leaf_name: "LEAF", hub_name: "HUB"}
        leaf_ev = _normalized(events.of(leaf_name)[0], names)
        if events.of(hub_name):
            hub_ev = _normalized(events.of(hub_name)[0], names)
        for c in (h, lsub, pub):
            await c.close()
        return leaf_ev, hub_ev

    return run(body())


@pytest.mark.parametrize("edge_impl", ["micropython", "cpython"])
def test_edge_event_matches_a_nats_server_leaf_field_by_field(hubs, edges, side, tmp_path, edge_impl):
    # The same scenario with nats-server as the leaf and with the edge (MicroPython, or CPython: `python -m edge`);
    # only ids, timings and names may differ.
    hub = hubs()
    traces = _hub_traces(hub.leaf_port)
    hub_name = hub.srv.http_get("/varz")["server_name"]
    (tmp_path / "leaf").mkdir()
    leaf = Server("nats", config=f'server_name: tleaf\nleafnodes {{ remotes: [ {{ url: '
                                 f'"nats-leaf://127.0.0.1:{hub.leaf_port}" }} ] }}\n', workdir=tmp_path / "leaf")
    try:
        leaf.start()
        wait_until(lambda: len(hub.leafz()) == 1, 5, msg="nats-server leaf connected")
        want = _leaf_scenario(leaf.url, hub.url, "tleaf", hub_name, traces)
    finally:
        leaf.stop()
    wait_until(lambda: not hub.leafz(), 5, msg="nats-server leaf gone")
    if edge_impl == "cpython":
        set_runtime(Runtime("cpython", sys.executable, cpython=True))
    try:
        e = edges(edge_config("edge1", listen=free_port(), hub_port=hub.leaf_port, ping_interval=1))
    finally:
        set_runtime(None)
    e.wait_line(r"uplink up", timeout=10)
    got = _leaf_scenario(e.url, hub.url, "edge1", hub_name, traces)
    assert got[0] == want[0]
    assert got[1] == want[1]
    assert (want[1] is not None) == traces
