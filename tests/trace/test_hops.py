"""Message tracing across links: a leaf hop (both ends nats-server or hub, in all four pairings) and a route hop
(2-node clusters: nats-server, hub, and one of each in both orders: tests/cluster pair_kinds). Every server the
message crosses sends its own event; the copy forwarded over the link carries Nats-Trace-Hop, so the events of a
path mixing nats-server and the hub make one trace. Compared field by field with nats-server's captured events
(vectors/trace/trace_events_leaf_hop.json, trace_events_route_hop.json; their capture's raw clients sent no name)."""

from __future__ import annotations

import json

import pytest

from edge import trace as names
from host import msgtrace
from tests.cluster.harness import CLUSTER_NAME, Cluster, flush, pair_kinds
from tests.cluster.harness import selected_sides as cluster_sides
from tests.compat.harness import Raw, Server, free_port, pub, selected_sides, wait_until

from .harness import by_server, traced_pub, vector_events, wait_events

SIDES = selected_sides()
PAIRS = [(hub, leaf) for hub in SIDES for leaf in SIDES]


def _rename(event: dict, servers: dict[str, str]) -> dict:
    """A normal-form event with the server names of the capture replaced by this test's."""
    text = json.dumps(event)
    for old, new in servers.items():
        text = text.replace(f'"{old}"', f'"{new}"')
    return json.loads(text)


def _reaches(sender: Raw, subject: str, receiver: Raw) -> None:
    """Publish probes on `subject` from `sender` until `receiver` got one: the interest crossed the link."""

    def arrived():
        sender.send(pub(subject, b"probe"))
        flush(sender)  # (late probes of an earlier round may come to the sender first: kept for _drain)
        return any(m.subject == subject for m in receiver.msgs_until_pong())

    wait_until(arrived, timeout=15, interval=0.05, msg=f"interest in {subject} across the link")


def _drain(raw: Raw) -> None:
    """Read until a PING round brings nothing: probes still in flight are gone."""
    while raw.msgs_until_pong():
        pass


@pytest.fixture(params=PAIRS, ids=[f"hub_{h}-leaf_{lf}" for h, lf in PAIRS])
def leaf_pair(request, tmp_path):
    """A hub named thub and a leaf named tleaf that dials it (the capture's topology), of the given kinds."""
    hub_kind, leaf_kind = request.param
    port = free_port()
    (tmp_path / "hub").mkdir()
    (tmp_path / "leaf").mkdir()
    hub = Server(hub_kind, config=f"server_name: thub\nleafnodes {{ listen: 127.0.0.1:{port} }}\n",
                 workdir=tmp_path / "hub")
    request.addfinalizer(hub.stop)
    hub.start()
    leaf = Server(leaf_kind, config="server_name: tleaf\nleafnodes { remotes: [ { url: "
                  f'"nats-leaf://127.0.0.1:{port}" }} ] }}\n', workdir=tmp_path / "leaf")
    request.addfinalizer(leaf.stop)
    leaf.start()
    return hub, leaf


def _leaf_scene(hub: Server, leaf: Server) -> tuple[Raw, Raw, Raw]:
    """The capture's clients: a subscriber to app.x on the hub, a trace listener and a publisher on the leaf, with
    interest across the link both ways."""
    sub = hub.client(name=None)
    sub.send(b"SUB app.x 1\r\n")
    sub.sync()
    tracer = leaf.client(name=None)
    tracer.send(b"SUB trace.> 1\r\n")
    tracer.sync()
    publisher = leaf.client(name=None)
    _reaches(publisher, "app.x", sub)
    _reaches(sub, "trace.probe", tracer)
    _drain(sub)
    _drain(tracer)
    return sub, tracer, publisher


def test_leaf_hop_matches_the_capture(leaf_pair):
    hub, leaf = leaf_pair
    sub, tracer, publisher = _leaf_scene(hub, leaf)
    with sub, tracer, publisher:
        publisher.send(traced_pub("app.x", "trace.leafhub"))
        publisher.sync()
        got = by_server(wait_events(tracer, 2, "trace.leafhub"))
        want = by_server(vector_events("trace_events_leaf_hop.json"))
        assert got == want
        m = [m for m in sub.msgs_until_pong() if m.subject == "app.x"] or [_next_app(sub)]
        # delivered on the hub with the hop the leaf gave it
        assert m[0].hdr == b"NATS/1.0\r\nNats-Trace-Dest: trace.leafhub\r\nNats-Trace-Hop: 1\r\n\r\n"


def _next_app(raw: Raw):
    from tests.compat.harness import read_msg

    return read_msg(raw)


def test_trace_only_crosses_the_leaf_and_delivers_nothing(leaf_pair):
    hub, leaf = leaf_pair
    sub, tracer, publisher = _leaf_scene(hub, leaf)
    with sub, tracer, publisher:
        publisher.send(traced_pub("app.x", "trace.only", b"hello", (names.ONLY, "true")))
        publisher.sync()
        got = by_server(wait_events(tracer, 2, "trace.only"))
        assert got["tleaf"]["events"] == [
            {"type": "in", "kind": names.CLIENT, "acc": "$G", "subj": "app.x"},
            {"type": "eg", "kind": names.LEAF, "name": "thub", "hop": "1"},
        ]
        assert got["thub"]["request"]["header"] == {names.DEST: ["trace.only"], names.ONLY: ["true"],
                                                     names.HOP: ["1"]}
        assert got["thub"]["events"] == [
            {"type": "in", "kind": names.LEAF, "name": "tleaf", "acc": "$G", "subj": "app.x"},
            {"type": "eg", "kind": names.CLIENT, "sub": "app.x"},
        ]
        assert sub.msgs_until_pong() == []


ROUTE_SIDES = [s for s in cluster_sides() if s in ("nats", "hub", "mixed-nats", "mixed-hub")]


@pytest.fixture(params=ROUTE_SIDES)
def route_pair(request, tmp_path) -> Cluster:
    c = Cluster(request.param, 2, tmp_path, kinds=pair_kinds(request.param))
    request.addfinalizer(c.stop)
    return c.start()


def _route_scene(c: Cluster) -> tuple[Raw, Raw]:
    """The capture's clients: on n2 a plain and a queue subscriber to app.y (one connection); on n1 one connection
    that listens to trace.> and publishes."""
    sub = c[1].client(name=None)
    sub.send(b"SUB app.y 1\r\nSUB app.y qg 2\r\n")
    sub.sync()
    tracer = c[0].client(name=None)
    tracer.send(b"SUB trace.> 1\r\n")
    tracer.sync()
    _reaches(tracer, "app.y", sub)
    _reaches(sub, "trace.probe", tracer)
    _drain(sub)
    _drain(tracer)
    return sub, tracer


def test_route_hop_matches_the_capture(route_pair):
    sub, tracer = _route_scene(route_pair)
    with sub, tracer:
        tracer.send(traced_pub("app.y", "trace.route", b"hi"))
        got = by_server(wait_events(tracer, 2, "trace.route"))
        want = {new: _rename(e, {"tr1": "n1", "tr2": "n2", "tc": CLUSTER_NAME}) for new, e in
                zip(("n1", "n2"), (by_server(vector_events("trace_events_route_hop.json"))[k] for k in ("tr1", "tr2")),
                    strict=True)}
        assert got == want
        msgs = []
        wait_until(lambda: msgs.extend(m for m in sub.msgs_until_pong() if m.subject == "app.y") or len(msgs) >= 2,
                   timeout=5, msg="both subscriptions on n2")
        assert sorted(m.sid for m in msgs) == ["1", "2"]
        assert all(m.hdr == b"NATS/1.0\r\nNats-Trace-Dest: trace.route\r\nNats-Trace-Hop: 1\r\n\r\n" for m in msgs)


def test_trace_only_crosses_the_route_and_delivers_nothing(route_pair):
    sub, tracer = _route_scene(route_pair)
    with sub, tracer:
        tracer.send(traced_pub("app.y", "trace.route", b"hi", (names.ONLY, "true")))
        got = by_server(wait_events(tracer, 2, "trace.route"))
        assert got["n1"]["hops"] == 1
        assert got["n1"]["events"][1:] == [{"type": "eg", "kind": msgtrace.ROUTER, "name": "n2", "hop": "1"}]
        assert got["n2"]["events"] == [
            {"type": "in", "kind": msgtrace.ROUTER, "name": "n1", "acc": "$G", "subj": "app.y"},
            {"type": "eg", "kind": names.CLIENT, "sub": "app.y", "queue": "qg"},
            {"type": "eg", "kind": names.CLIENT, "sub": "app.y"},
        ]
        assert sub.msgs_until_pong() == []



@pytest.fixture(params=SIDES)
def leaf_port_server(request, tmp_path):
    port = free_port()
    srv = Server(request.param, config=f"server_name: hubside\nleafnodes {{ listen: 127.0.0.1:{port} }}\n",
                 workdir=tmp_path)
    request.addfinalizer(srv.stop)
    srv.start()
    srv.leaf_port = port  # type: ignore[attr-defined]
    return srv


def _raw_leaf(srv: Server, protocol: int) -> Raw:
    """A raw leaf (as tests/compat/test_leafnode.py's) that says `protocol` in its CONNECT and wants app.x."""
    r = Raw(srv.leaf_port, auto_pong=True)
    opts = {"name": "rawleaf", "headers": True, "protocol": protocol, "version": "2.15.1"}
    r.send(b"CONNECT " + json.dumps(opts).encode() + b"\r\nLS+ app.x\r\nPING\r\n")
    r.expect(rb".*?PONG\r\n")
    return r


@pytest.mark.parametrize("protocol", [1, 3])
@pytest.mark.parametrize("only", [False, True])
def test_leaf_below_the_tracing_protocol(leaf_port_server, protocol, only):
    # A leaf that did not announce protocol 3 gets a traced message (with an `eg` error: it will send no event of
    # its own), but never a trace-only one; a leaf at 3 gets both, with the hop header.
    srv = leaf_port_server
    leaf = _raw_leaf(srv, protocol)
    with leaf, srv.client(name="pub") as c:
        c.send(b"SUB trace.x 1\r\n")
        extra = ((names.ONLY, "true"),) if only else ()
        c.send(traced_pub("app.x", "trace.x", b"v", *extra))
        events = wait_events(c, 1, "trace.x")
        eg = by_server(events)["hubside"]["events"][1:]
        refused = only and protocol < 3
        error = names.NO_SUPPORT if refused else names.DELIVERED_NO_SUPPORT if protocol < 3 else None
        want = {"type": "eg", "kind": names.LEAF, "name": "rawleaf", "hop": "1"}
        if error:
            want["error"] = error
        assert eg == [want]
        leaf.send(b"PING\r\n")
        frames = leaf.expect(rb"(.*?)PONG\r\n").group(1)  # (LS+ for the trace destination comes first)
        if refused:
            assert b"app.x" not in frames
        else:
            assert b"HMSG app.x " in frames and b"Nats-Trace-Hop: 1\r\n" in frames


CHAINS = [k for k in (("nats", "nats", "nats"), ("hub", "hub", "hub"), ("hub", "nats", "hub"), ("nats", "hub", "nats"))
          if set(k) <= set(SIDES)]


@pytest.mark.parametrize("kinds", CHAINS, ids=["-".join(k) for k in CHAINS])
def test_daisy_chain_numbers_nested_hops(kinds, tmp_path, request):
    # tA is a leaf of tB, which is a leaf of tC (TestMsgTraceWithLeafNodeDaisyChain): tB forwards the copy it got as
    # hop 1 as hop 1.1.
    ports = {"tB": free_port(), "tC": free_port()}
    confs = {
        "tC": f"leafnodes {{ listen: 127.0.0.1:{ports['tC']} }}",
        "tB": f"leafnodes {{ listen: 127.0.0.1:{ports['tB']}, "
              f"remotes: [ {{ url: \"nats-leaf://127.0.0.1:{ports['tC']}\" }} ] }}",
        "tA": f"leafnodes {{ remotes: [ {{ url: \"nats-leaf://127.0.0.1:{ports['tB']}\" }} ] }}",
    }
    servers = {}
    for name, kind in zip(("tA", "tB", "tC"), kinds, strict=True):
        (tmp_path / name).mkdir()
        srv = Server(kind, config=f"server_name: {name}\n{confs[name]}\n", workdir=tmp_path / name)
        request.addfinalizer(srv.stop)
        servers[name] = srv
    for name in ("tC", "tB", "tA"):
        servers[name].start()
    with servers["tC"].client(name=None) as sub, servers["tA"].client(name=None) as tracer:
        sub.send(b"SUB app.z 1\r\n")
        sub.sync()
        tracer.send(b"SUB trace.> 1\r\n")
        tracer.sync()
        _reaches(tracer, "app.z", sub)
        _reaches(sub, "trace.probe", tracer)
        _drain(sub)
        _drain(tracer)
        tracer.send(traced_pub("app.z", "trace.chain"))
        got = by_server(wait_events(tracer, 3, "trace.chain"))
    assert {name: (e.get("hops"), e["request"]["header"].get(names.HOP), e["events"]) for name, e in got.items()} == {
        "tA": (1, None, [{"type": "in", "kind": names.CLIENT, "acc": "$G", "subj": "app.z"},
                         {"type": "eg", "kind": names.LEAF, "name": "tB", "hop": "1"}]),
        "tB": (1, ["1"], [{"type": "in", "kind": names.LEAF, "name": "tA", "acc": "$G", "subj": "app.z"},
                          {"type": "eg", "kind": names.LEAF, "name": "tC", "hop": "1.1"}]),
        "tC": (None, ["1.1"], [{"type": "in", "kind": names.LEAF, "name": "tB", "acc": "$G", "subj": "app.z"},
                               {"type": "eg", "kind": names.CLIENT, "sub": "app.z"}]),
    }


@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize("perms,error", [('{ allow: ">", deny: "app.secret" }', msgtrace.SUB_DENIED),
                                         ('{ allow: ["app.open", "_LDS.>", "$LDS.>"] }', msgtrace.PUB_DENIED)],
                         ids=["deny", "not-allowed"])
def test_leaf_whose_user_may_not_receive_the_subject_is_listed(side, perms, error, tmp_path, request):
    port = free_port()
    # a leaf authenticated as a client user: its `subscribe` permissions are what the hub may send it
    conf = (f"server_name: hubside\nleafnodes {{ listen: 127.0.0.1:{port} }}\nauthorization {{ users: [ "
            f"{{ user: l, password: l, permissions: {{ subscribe: {perms} }} }}, "
            "{ user: c, password: c } ] }\n")
    srv = Server(side, config=conf, workdir=tmp_path)
    request.addfinalizer(srv.stop)
    srv.start()
    leaf = Raw(port, auto_pong=True)
    opts = {"name": "rawleaf", "headers": True, "protocol": 3, "version": "2.15.1", "user": "l", "pass": "l"}
    leaf.send(b"CONNECT " + json.dumps(opts).encode() + b"\r\nLS+ app.>\r\nPING\r\n")
    leaf.expect(rb".*?PONG\r\n")
    with leaf, srv.client(name="pub", user="c", **{"pass": "c"}) as c:
        c.send(b"SUB trace.x 1\r\n")
        c.send(traced_pub("app.secret", "trace.x"))
        eg = by_server(wait_events(c, 1, "trace.x"))["hubside"]["events"][1:]
        assert eg == [{"type": "eg", "kind": names.LEAF, "name": "rawleaf", "hop": "1", "error": error}]


@pytest.fixture(params=SIDES)
def route_node(request, tmp_path):
    cport = free_port()
    srv = Server(request.param, config=f"server_name: n1\ncluster {{ name: c1, listen: 127.0.0.1:{cport} }}\n",
                 workdir=tmp_path)
    request.addfinalizer(srv.stop)
    srv.start()
    srv.cluster_port = cport  # type: ignore[attr-defined]
    return srv


@pytest.mark.parametrize("proto", [2, 3])
@pytest.mark.parametrize("only", [False, True])
def test_route_peer_below_the_tracing_protocol(route_node, proto, only):
    # TestMsgTraceWithRouteToOldServer: a route peer whose INFO says proto 2 gets a traced message with an `eg` note,
    # a trace-only one never; at proto 3 it gets both.
    from tests.cluster.test_route_wire import PEER_ID, peer_info, seen

    info = json.loads(peer_info()[5:])
    info["proto"] = proto
    peer = Raw(route_node.cluster_port)
    peer.send(b'CONNECT {"echo":true,"verbose":false,"pedantic":false,"tls_required":false,"headers":true,'
              b'"name":"' + PEER_ID.encode() + b'","cluster":"c1"}\r\n')
    peer.send(b"INFO " + json.dumps(info).encode() + b"\r\nRS+ $G app.x\r\nPING\r\n")
    seen(peer, rb"PONG\r\n")
    with peer, route_node.client(name="pub") as c:
        c.send(b"SUB trace.x 1\r\n")
        extra = ((names.ONLY, "true"),) if only else ()
        c.send(traced_pub("app.x", "trace.x", b"r", *extra))
        eg = by_server(wait_events(c, 1, "trace.x"))["n1"]["events"][1:]
        want = {"type": "eg", "kind": msgtrace.ROUTER, "name": "rawpeer", "hop": "1"}
        refused = only and proto < 3
        if proto < 3:
            want["error"] = names.NO_SUPPORT if only else names.DELIVERED_NO_SUPPORT
        assert eg == [want]
        peer.send(b"PING\r\n")
        frames = peer.expect(rb"(.*?)PONG\r\n").group(1)
        assert (b"HMSG $G app.x " in frames) is not refused


ACCOUNTS = """accounts {
  A: { users: [ { user: a, password: a } ], imports: [ { service: { account: B, subject: "svc.>" } } ] }
  B: { users: [ { user: b, password: b } ], exports: [ { service: "svc.>", allow_trace: true } ] }
}
no_auth_user: a"""  # (the cluster harness checks traffic with clients that give no credentials)


@pytest.mark.parametrize("side", ROUTE_SIDES)
def test_service_import_across_a_route_brings_every_event_back(side, request, tmp_path):
    # A's user on n1 calls B's service, answered on n2; the export allows tracing, so n2's event (published in B
    # to the response subject n1 put in Nats-Trace-Dest) comes back to A's destination through n1.
    c = Cluster(side, 2, tmp_path, kinds=pair_kinds(side), extra_conf=ACCOUNTS)
    request.addfinalizer(c.stop)
    c.start()
    a = c[0].client(name="a-user", user="a", **{"pass": "a"})
    b = c[1].client(name="b-user", user="b", **{"pass": "b"})
    with a, b:
        b.send(b"SUB svc.> 1\r\n")
        b.sync()
        a.send(b"SUB trace.a 1\r\nSUB _INBOX.a 2\r\n")
        a.sync()

        def answered():
            # an untraced request first: B's interest has crossed and the response path works
            a.send(pub("svc.warm", b"w", reply="_INBOX.a"))
            flush(a)
            for m in b.msgs_until_pong():
                b.send(pub(m.reply, b"ok"))
            flush(b)
            return any(m.subject == "_INBOX.a" for m in a.msgs_until_pong())

        wait_until(answered, timeout=15, interval=0.1, msg="the service across the route")
        a.send(traced_pub("svc.x", "trace.a", b"q"))
        got = by_server(wait_events(a, 2, "trace.a"))
    assert got["n1"]["events"] == [
        {"type": "in", "kind": names.CLIENT, "name": "a-user", "acc": "A", "subj": "svc.x"},
        {"type": "si", "acc": "B", "from": "svc.x", "to": "svc.x"},
        {"type": "eg", "kind": msgtrace.ROUTER, "name": "n2", "hop": "1"},
    ]
    assert got["n2"]["events"] == [
        {"type": "in", "kind": msgtrace.ROUTER, "name": "n1", "acc": "B", "subj": "svc.x"},
        {"type": "eg", "kind": names.CLIENT, "name": "b-user", "sub": "svc.>"},
    ]
    assert got["n2"]["request"]["header"][names.HOP] == ["1"]
    assert got["n2"]["request"]["header"][names.DEST][0].startswith("_R_.")
