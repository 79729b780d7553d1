"""Message tracing in the edge broker (edge/leaf/msgtrace.py), sans socket, on CPython and MicroPython.

Runs under pytest (CPython) and under the real `micropython` through tests/mp/run_unit.py
(tests/edge/test_edge_mp.py does that), as tests/edge/test_edge_api.py: plain test_* functions, bare asserts,
no pytest import, no reliance on dict order. The hub's side is bytes fed through edge/proto.py's Parser into
Uplink._event(); what the edge sends is read from a fake link.
"""

import json

from edge import proto, trace
from edge.leaf.broker import Leaf, LeafError
from tests.edge.test_edge_api import _hub_says, _wired, run, until

DEST_HDR = {"Nats-Trace-Dest": "tr.x"}


def _linked(leaf, hub_proto=3):
    # A leaf whose uplink is up, to a hub "thub" (INFO proto hub_proto) that has interest in a.>.
    up, link = _wired(leaf)
    up.up = True
    up.hub_name = "thub"
    up.hub_proto = hub_proto
    up.cid = leaf.new_cid()
    _hub_says(up, link, b"LS+ a.>\r\n")
    return up, link


def _frames(data):
    # [(subject, hdr pairs or None, payload)] of the LMSG/HMSG frames the edge wrote.
    p = proto.Parser(proto.KIND_LEAF)
    p.receive_data(data)
    out = []
    while True:
        ev = p.next_event()
        if ev is None:
            return out
        if ev[0] == proto.OP_LMSG:
            pairs = proto.decode_headers(ev[4])[2] if ev[4] is not None else None
            out.append((ev[1], pairs, ev[5]))


def _events(frames):
    return [json.loads(f[2]) for f in frames if f[0] == b"tr.x"]


def _strip(ev):
    # An event entry without its timestamp.
    return {k: v for k, v in ev.items() if k != "ts"}


def in_loop(test):
    # Local callbacks are queued for the leaf's dispatcher task: the test body runs inside an event loop.
    async def body():
        test()

    def wrapped():
        run(body())

    return wrapped


@in_loop
def test_app_publish_event_lists_ingress_local_and_uplink_egress():
    leaf = Leaf("edge1")
    got = []
    leaf.subscribe("a.b", got.append)
    leaf.subscribe("a.*", got.append, queue="q")
    up, link = _linked(leaf)
    link.take()
    assert leaf.publish("a.b", b"hello", headers=DEST_HDR) == 3
    frames = _frames(link.take())
    msg = [f for f in frames if f[0] == b"a.b"]
    assert msg == [(b"a.b", [("Nats-Trace-Dest", "tr.x"), ("Nats-Trace-Hop", "1")], b"hello")]
    evs = _events(frames)
    assert len(evs) == 1
    e = evs[0]
    srv = e["server"]
    assert srv["name"] == "edge1" and srv["id"] == "edge1" and srv["jetstream"] is False and srv["seq"] == 1
    assert srv["time"].endswith("Z") and srv["time"][4] == "-"
    hdr = proto.encode_headers(DEST_HDR)
    assert e["request"] == {"header": {"Nats-Trace-Dest": ["tr.x"]}, "msgsize": len(hdr) + 5}
    assert e["hops"] == 1
    ev = [_strip(x) for x in e["events"]]
    assert ev[0] == {"type": "in", "kind": trace.CLIENT, "cid": 0, "name": "app", "acc": "$G", "subj": "a.b"}
    assert ev[1] == {"type": "eg", "kind": trace.CLIENT, "cid": 0, "name": "app", "sub": "a.b"}
    assert ev[2] == {"type": "eg", "kind": trace.CLIENT, "cid": 0, "name": "app", "sub": "a.*", "queue": "q"}
    assert ev[3] == {"type": "eg", "kind": trace.LEAF, "cid": up.cid, "name": "thub", "hop": "1"}
    assert len(ev) == 4
    assert leaf.tracer.sent == 1 and leaf.tracer.dropped == 0
    leaf.close()


def test_untraced_message_loads_no_tracer():
    leaf = Leaf("edge1")
    up, link = _linked(leaf)
    leaf.publish("a.b", b"x", headers={"Other": "1"})
    leaf.publish("a.b", b"x")
    assert leaf.tracer is None
    assert _frames(link.take()) == [(b"a.b", [("Other", "1")], b"x"), (b"a.b", None, b"x")]


@in_loop
def test_trace_only_lists_local_subscribers_but_delivers_to_none():
    leaf = Leaf("edge1")
    got = []
    leaf.subscribe("a.b", got.append)
    up, link = _linked(leaf)
    link.take()
    leaf.publish("a.b", b"x", headers={"Nats-Trace-Dest": "tr.x", "Nats-Trace-Only": "true"})
    frames = _frames(link.take())
    assert not leaf._cbq and not got
    # the hub traces too (proto 3): it still gets the message, marked trace-only
    assert [f for f in frames if f[0] == b"a.b"] == [
        (b"a.b", [("Nats-Trace-Dest", "tr.x"), ("Nats-Trace-Only", "true"), ("Nats-Trace-Hop", "1")], b"x")]
    ev = [_strip(x) for x in _events(frames)[0]["events"]]
    assert [x["type"] for x in ev] == ["in", "eg", "eg"] and "error" not in ev[1] and "error" not in ev[2]


def test_hub_without_tracing_gets_no_trace_only_message():
    leaf = Leaf("edge1")
    up, link = _linked(leaf, hub_proto=1)
    link.take()
    leaf.publish("a.b", b"x", headers={"Nats-Trace-Dest": "tr.x", "Nats-Trace-Only": "on"})
    frames = _frames(link.take())
    assert [f[0] for f in frames] == [b"tr.x"]
    e = _events(frames)[0]
    assert _strip(e["events"][1]) == {"type": "eg", "kind": trace.LEAF, "cid": up.cid, "name": "thub", "hop": "1",
                                      "error": trace.NO_SUPPORT}
    # not trace-only: delivered, with nats-server's hint that no event will come from there
    leaf.publish("a.b", b"y", headers=DEST_HDR)
    frames = _frames(link.take())
    assert [f[0] for f in frames] == [b"a.b", b"tr.x"]
    assert _events(frames)[0]["events"][1]["error"] == trace.DELIVERED_NO_SUPPORT


def test_message_from_hub_is_traced_as_leaf_ingress():
    async def body():
        leaf = Leaf("edge1")
        got = []
        leaf.subscribe("down.x", got.append)
        up, link = _linked(leaf)
        link.take()
        hdr = b"NATS/1.0\r\nNats-Trace-Dest: tr.x\r\nNats-Trace-Hop: 1\r\n\r\n"
        _hub_says(up, link, b"HMSG down.x %d %d\r\n%shi\r\n" % (len(hdr), len(hdr) + 2, hdr))
        await until(lambda: got)
        e = _events(_frames(link.take()))[0]
        assert e["request"]["header"] == {"Nats-Trace-Dest": ["tr.x"], "Nats-Trace-Hop": ["1"]}
        assert "hops" not in e
        ev = [_strip(x) for x in e["events"]]
        assert ev == [{"type": "in", "kind": trace.LEAF, "cid": up.cid, "name": "thub", "acc": "$G", "subj": "down.x"},
                      {"type": "eg", "kind": trace.CLIENT, "cid": 0, "name": "app", "sub": "down.x"}]
        # trace-only from the hub: listed, not delivered
        hdr = b"NATS/1.0\r\nNats-Trace-Dest: tr.x\r\nNats-Trace-Only: 1\r\nNats-Trace-Hop: 1\r\n\r\n"
        _hub_says(up, link, b"HMSG down.x %d %d\r\n%sho\r\n" % (len(hdr), len(hdr) + 2, hdr))
        e = _events(_frames(link.take()))[0]
        assert [x["type"] for x in e["events"]] == ["in", "eg"]
        assert len(got) == 1 and not leaf._cbq
        leaf.close()

    run(body())


def test_events_wait_for_the_link_and_the_oldest_is_dropped():
    leaf = Leaf("edge1")
    leaf.trace_limits = (2, 4096, "")
    up, link = _linked(leaf)
    up.link = None
    up.up = False
    for i in range(3):
        assert leaf.publish("a.b", b"%d" % i, headers=DEST_HDR) == 0  # no local target, no link: traced anyway
    t = leaf.tracer
    assert len(t.pending) == 2 and t.dropped == 1 and t.sent == 0
    up.link = link
    up.up = True
    t.flush()
    evs = _events(_frames(link.take()))
    assert [e["events"][0]["subj"] for e in evs] == ["a.b", "a.b"]
    assert [e["server"]["seq"] for e in evs] == [2, 3]  # the oldest went
    assert [[x["type"] for x in e["events"]] for e in evs] == [["in"], ["in"]]
    assert t.sent == 2 and not t.pending and t.pending_bytes == 0


def test_event_over_the_byte_limit_is_dropped():
    leaf = Leaf("edge1")
    leaf.trace_limits = (4, 64, "")
    up, link = _linked(leaf)
    up.up = False
    leaf.publish("a.b", b"x", headers=DEST_HDR)
    assert leaf.tracer.dropped == 1 and not leaf.tracer.pending


@in_loop
def test_destinations_that_cannot_be_traced():
    leaf = Leaf("edge1")
    got = []
    leaf.subscribe("a.b", got.append)
    up, link = _linked(leaf)
    link.take()
    # invalid destination: not traced; trace-only is then not processed at all (nats-server)
    for dest in ("bad dest", "tr.*"):
        assert leaf.publish("a.b", b"x", headers={"Nats-Trace-Dest": dest}) == 2
        assert leaf.publish("a.b", b"x", headers={"Nats-Trace-Dest": dest, "Nats-Trace-Only": "true"}) == 0
    # a reserved destination is publish-denied: refused, whether trace-only or not
    for dest in ("_GR_.x.y", "$NRG.x"):
        try:
            leaf.publish("a.b", b"x", headers={"Nats-Trace-Dest": dest})
            raise AssertionError("published with trace destination " + dest)
        except LeafError as e:
            assert str(e) == f"trace destination {dest}: publish not allowed"
    # "trace disabled" and the pre-release origin account header: delivered, not traced
    leaf.publish("a.b", b"x", headers={"Nats-Trace-Dest": trace.DISABLED})
    leaf.publish("a.b", b"x", headers={"Nats-Trace-Dest": "tr.x", "Nats-Trace-Origin-Account": "A"})
    assert len(leaf._cbq) == 4
    assert not _events(_frames(link.take()))
    assert leaf.tracer.seq == 0  # no event was made
    leaf.close()


def test_hop_header_is_replaced_not_repeated():
    from edge.leaf.msgtrace import set_hop

    h = proto.encode_headers([("A", "1"), ("Nats-Trace-Hop", "7"), ("B", "2")])
    assert proto.decode_headers(set_hop(h, "1"))[2] == [("A", "1"), ("Nats-Trace-Hop", "1"), ("B", "2")]
    h = proto.encode_headers([("A", "1")])
    assert proto.decode_headers(set_hop(h, "1.2"))[2] == [("A", "1"), ("Nats-Trace-Hop", "1.2")]


def test_local_subscriber_of_the_destination_gets_the_event():
    async def body():
        leaf = Leaf("edge1")
        events = []
        leaf.subscribe("tr.x", events.append)
        leaf.publish("a.b", b"x", headers=DEST_HDR)
        await until(lambda: events)
        e = json.loads(events[0].data)
        assert e["events"][0]["subj"] == "a.b" and len(e["events"]) == 1
        leaf.close()

    run(body())


def test_no_buffer_still_sends_while_the_link_is_up():
    leaf = Leaf("edge1")
    leaf.trace_limits = (0, 0, "")
    up, link = _linked(leaf)
    link.take()
    leaf.publish("a.b", b"x", headers=DEST_HDR)
    assert len(_events(_frames(link.take()))) == 1 and leaf.tracer.dropped == 0
    up.up = False
    leaf.publish("a.b", b"x", headers=DEST_HDR)
    assert leaf.tracer.dropped == 1 and not leaf.tracer.pending
