"""Message tracing on one server (nats-reference README §5, more/README.md §C), run against nats-server and the hub
with raw sockets: the events a trace destination gets, field by field in tests/trace/harness.py's normal form, and
what subscribers get. Where nats-server's events were captured (vectors/trace/trace_events_single_server.json, the
capture's server: account APP, no_auth_user, msg_trace to trace.ext), the same scenario must give the same events."""

from __future__ import annotations

import base64
import json

import pytest

from edge import trace as names
from host import msgtrace
from tests.compat.harness import Server, hpub, pub, read_msg, selected_sides

from .harness import event_of, events_until_pong, normal, trace_headers, traced_pub, vector_events, wait_events

SIDES = selected_sides()

# The capture's server (nats-reference vectors/configs/js_server.conf), on free ports.
APP_CONF = """server_name: js1
accounts {
  APP: {
    jetstream: enabled
    users: [ { user: app, password: app } ]
    msg_trace: { dest: "trace.ext", sampling: 100 }
  }
}
no_auth_user: app
"""

# Two accounts: A imports a service and a stream of B, with or without allow_trace (ALLOW is replaced).
IMPORTS_CONF = """server_name: imp
accounts {
  A: {
    users: [ { user: a, password: a } ]
    imports: [
      { service: { account: B, subject: "svc.>" } }
      { stream: { account: B, subject: "feed.>" }, allow_trace: ALLOW }
    ]
  }
  B: {
    users: [ { user: b, password: b } ]
    exports: [ { service: "svc.>", allow_trace: ALLOW }, { stream: "feed.>" } ]
  }
}
"""


@pytest.fixture(params=SIDES)
def side(request):
    return request.param


@pytest.fixture
def start(side, tmp_path, request):
    """Start a server of this side with a config (stopped by PID at the end of the test)."""

    def run(config: str | None = None, jetstream: bool = False) -> Server:
        srv = Server(side, config=config, jetstream=jetstream, workdir=tmp_path)
        request.addfinalizer(srv.stop)
        return srv.start()

    return run


def _vector(i: int) -> dict:
    return normal(vector_events("trace_events_single_server.json")[i])


def _capture_client(srv: Server):
    """The capture's one connection: named ref-capture, subscribed to the trace destinations and to
    traced.subject plainly and in queue group `workers` (so it traces its own publishes)."""
    c = srv.client(name="ref-capture")
    c.send(b"SUB trace.inbox 20\r\nSUB trace.ext 21\r\nSUB traced.subject 22\r\nSUB traced.subject workers 23\r\n")
    c.sync()
    return c


def _split(msgs) -> tuple[list[dict], list]:
    """Messages of the capture client: events (on the trace destinations) and the rest."""
    events = [event_of(m) for m in msgs if m.subject.startswith("trace.")]
    return events, [m for m in msgs if not m.subject.startswith("trace.")]


def test_plain_and_queue_subscriber_match_the_capture(start):
    with _capture_client(start(APP_CONF)) as c:
        c.send(traced_pub("traced.subject", "trace.inbox"))
        events, delivered = _split(c.msgs_until_pong())
        if not events:
            events = wait_events(c, 1)
        assert [normal(e) for e in events] == [_vector(0)]
        # the message is delivered with its trace header, to the plain and the queue subscription
        assert sorted(m.sid for m in delivered) == ["22", "23"]
        assert all(m.hdr == trace_headers("trace.inbox") and m.payload == b"hello" for m in delivered)


def test_trace_only_delivers_nothing_but_lists_the_subscribers(start):
    with _capture_client(start(APP_CONF)) as c:
        c.send(traced_pub("traced.subject", "trace.inbox", b"hello", (names.ONLY, "true")))
        msgs = c.msgs_until_pong()
        events, delivered = _split(msgs)
        if not events:
            events = wait_events(c, 1)
        assert delivered == []
        assert [normal(e) for e in events] == [_vector(1)]


def test_no_subscribers_gives_the_ingress_only_twice(start):
    # Twice: a subject known to have no interest must still be traced (the hub's parser drops frames to such
    # subjects, but never a frame with headers).
    with _capture_client(start(APP_CONF)) as c:
        for _ in range(2):
            c.send(traced_pub("nobody.listens", "trace.inbox", b"x"))
            events, delivered = _split(c.msgs_until_pong())
            if not events:
                events = wait_events(c, 1)
            assert [normal(e) for e in events] == [_vector(4)]
            assert delivered == []


def test_sampled_traceparent_goes_to_the_account_destination(start):
    with _capture_client(start(APP_CONF)) as c:
        tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-"
        c.send(hpub("traced.subject", f"NATS/1.0\r\ntraceparent: {tp}01\r\n\r\n".encode(), b"w3c"))
        c.send(hpub("traced.subject", f"NATS/1.0\r\ntraceparent: {tp}00\r\n\r\n".encode(), b"w3c-unsampled"))
        msgs = c.msgs_until_pong()
        events, delivered = _split(msgs)
        if not events:
            events = wait_events(c, 1)
        assert [normal(e) for e in events] == [_vector(3)]
        # both delivered as published (the unsampled one untouched), to both subscriptions
        assert sorted((m.sid, m.payload) for m in delivered) == [
            ("22", b"w3c"), ("22", b"w3c-unsampled"), ("23", b"w3c"), ("23", b"w3c-unsampled")]
        assert all(b"Nats-Trace-Dest" not in m.hdr for m in delivered)


def _js_request(c, subject: str, body: dict) -> dict:
    c.send(b"SUB _INBOX.api 90\r\n" + pub(subject, json.dumps(body).encode(), reply="_INBOX.api"))
    m = read_msg(c)
    c.send(b"UNSUB 90\r\n")
    return json.loads(m.payload)


def test_jetstream_store_matches_the_capture_and_is_stored_untraced(start):
    srv = start(APP_CONF, jetstream=True)
    with _capture_client(srv) as c:
        created = _js_request(c, "$JS.API.STREAM.CREATE.ORDERS", {"name": "ORDERS", "subjects": ["orders.>"]})
        assert created.get("config", {}).get("name") == "ORDERS", created
        c.send(b"SUB _INBOX.ack 30\r\n" + hpub("orders.traced", trace_headers("trace.inbox"), b"js", "_INBOX.ack"))
        msgs = c.msgs_until_pong() + c.msgs_until_pong()
        while len(_split(msgs)[0]) < 1 or len(_split(msgs)[1]) < 1:  # on a busy machine either may come later
            msgs.append(read_msg(c, 5.0))
        events, acks = _split(msgs)
        assert [normal(e) for e in events] == [_vector(2)]
        assert [json.loads(m.payload)["seq"] for m in acks if m.sid == "30"] == [1]
        # stored with tracing switched off, so a consumer delivering it starts no trace
        got = _js_request(c, "$JS.API.STREAM.MSG.GET.ORDERS", {"seq": 1})
        stored_hdr = base64.b64decode(got["message"]["hdrs"])
        assert b"Nats-Trace-Dest: trace disabled\r\n" in stored_hdr
        # trace-only: listed, not stored
        c.send(hpub("orders.traced", trace_headers("trace.inbox", (names.ONLY, "true")), b"js2"))
        events = events_until_pong(c) or wait_events(c, 1)
        js = [e for e in normal(events[0])["events"] if e["type"] == "js"]
        assert js == [{"type": "js", "stream": "ORDERS", "subject": "orders.traced"}]
        info = _js_request(c, "$JS.API.STREAM.INFO.ORDERS", {})
        assert info["state"]["messages"] == 1


@pytest.mark.parametrize("dest", ["_GR_.x.y", "$NRG.x"])
def test_reserved_destination_is_a_publish_violation_and_nothing_is_delivered(start, dest):
    with start().client() as c:
        c.send(b"SUB app.x 1\r\nSUB > 2\r\n")
        c.sync()
        c.send(traced_pub("app.x", dest))
        c.expect_err(f'Permissions Violation for Publish to "{dest}"')
        assert c.msgs_until_pong() == []


def test_destination_outside_publish_permissions_is_refused(start):
    conf = 'authorization { users: [ { user: u, password: p, permissions: { publish: "app.>" } } ] }\n'
    srv = start(conf)
    with srv.client(user="u", **{"pass": "p"}) as c:
        c.send(b"SUB app.x 1\r\n")
        c.sync()
        c.send(traced_pub("app.x", "trace.x"))
        c.expect_err('Permissions Violation for Publish to "trace.x"')
        assert c.msgs_until_pong() == []


def test_origin_account_header_switches_tracing_off(start):
    with start().client() as c:
        c.send(b"SUB app.x 1\r\nSUB trace.> 2\r\n")
        c.sync()
        c.send(traced_pub("app.x", "trace.x", b"hi", (names.ORIGIN_ACCOUNT, "A")))
        msgs = c.msgs_until_pong()
        assert [(m.subject, m.payload) for m in msgs] == [("app.x", b"hi")]
        # (the header moved to the end, as nats-server's setHeader writes it)
        assert msgs[0].hdr == b"NATS/1.0\r\nNats-Trace-Origin-Account: A\r\nNats-Trace-Dest: trace disabled\r\n\r\n"


def test_no_echo_is_an_egress_error(start):
    srv = start("server_name: echo\n")
    with srv.client(name="tracer") as t, srv.client(name="quiet", echo=False) as c:
        t.send(b"SUB trace.x 1\r\n")
        t.sync()
        c.send(b"SUB app.x 1\r\n")
        c.send(traced_pub("app.x", "trace.x"))
        assert c.msgs_until_pong() == []
        events = events_until_pong(t) or wait_events(t, 1)
        assert normal(events[0])["events"] == [
            {"type": "in", "kind": 0, "name": "quiet", "acc": "$G", "subj": "app.x"},
            {"type": "eg", "kind": 0, "name": "quiet", "sub": "app.x", "error": names.NO_ECHO},
        ]


@pytest.mark.parametrize("accept,encoding", [("gzip", "gzip"), ("br", "identity"), ("snappy", "snappy"),
                                             ("S2, gzip", "snappy")])
def test_event_compression_follows_accept_encoding(start, accept, encoding):
    with start().client() as c:
        c.send(b"SUB trace.x 1\r\n")
        c.sync()
        c.send(traced_pub("app.x", "trace.x", b"z", ("Accept-Encoding", accept)))
        msgs = c.msgs_until_pong() or [read_msg(c)]
        assert msgs[0].hdr == f"NATS/1.0\r\nContent-Encoding: {encoding}\r\n\r\n".encode()
        event = normal(event_of(msgs[0]))
        assert event["request"]["header"]["Accept-Encoding"] == [accept]
        assert [e["type"] for e in event["events"]] == ["in"]


def _import_events(srv: Server, subject: str, only: bool) -> tuple[list[dict], list]:
    """Publish a traced message as account A's user to `subject`; B's user listens on svc.> and feed.>, A's on
    feed.> and the trace destination. The events, and what both subscribers got."""
    a = srv.client(name="a-user", user="a", **{"pass": "a"})
    b = srv.client(name="b-user", user="b", **{"pass": "b"})
    try:
        b.send(b"SUB svc.> 1\r\nSUB feed.> 2\r\n")
        b.sync()
        a.send(b"SUB trace.a 1\r\nSUB feed.> 2\r\n")
        a.sync()
        extra = ((names.ONLY, "true"),) if only else ()
        a.send(traced_pub(subject, "trace.a", b"q", *extra))
        a_msgs = a.msgs_until_pong()
        events = [m for m in a_msgs if m.subject == "trace.a"]
        got = [m for m in a_msgs if m.subject != "trace.a"] + b.msgs_until_pong()
        evs = [event_of(m) for m in events] or wait_events(a, 1)
        return evs, got
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("allow", [True, False])
@pytest.mark.parametrize("only", [False, True])
def test_service_import_event_and_allow_trace(start, allow, only):
    srv = start(IMPORTS_CONF.replace("ALLOW", "true" if allow else "false"))
    events, got = _import_events(srv, "svc.x", only)
    assert len(events) == 1
    ev = normal(events[0])
    assert ev["events"][:2] == [
        {"type": "in", "kind": 0, "name": "a-user", "acc": "A", "subj": "svc.x"},
        {"type": "si", "acc": "B", "from": "svc.x", "to": "svc.x"},
    ]
    if allow:
        # the trace goes on into B: its subscriber is an egress, in another account than the ingress
        assert ev["events"][2:] == [{"type": "eg", "kind": 0, "name": "b-user", "acc": "B", "sub": "svc.>"}]
    else:
        assert ev["events"][2:] == []
    delivered = [(m.subject, m.hdr) for m in got]
    if only:
        assert delivered == []
    elif allow:
        # the destination became a response subject of B that leads back to A's trace.a
        assert len(delivered) == 1 and b"Nats-Trace-Dest: _R_." in delivered[0][1]
    else:
        assert len(delivered) == 1 and b"Nats-Trace-Dest: trace disabled\r\n" in delivered[0][1]


@pytest.mark.parametrize("allow", [True, False])
@pytest.mark.parametrize("only", [False, True])
def test_stream_export_event_and_allow_trace(start, allow, only):
    srv = start(IMPORTS_CONF.replace("ALLOW", "true" if allow else "false"))
    # B's user publishes: A imports the stream
    a = srv.client(name="a-user", user="a", **{"pass": "a"})
    b = srv.client(name="b-user", user="b", **{"pass": "b"})
    try:
        b.send(b"SUB trace.b 1\r\n")
        b.sync()
        a.send(b"SUB feed.> 2\r\n")
        a.sync()
        extra = ((names.ONLY, "true"),) if only else ()
        b.send(traced_pub("feed.x", "trace.b", b"f", *extra))
        events = events_until_pong(b) or wait_events(b, 1)
        got = a.msgs_until_pong()
    finally:
        a.close()
        b.close()
    ev = normal(events[0])
    assert ev["events"][:2] == [
        {"type": "in", "kind": 0, "name": "b-user", "acc": "B", "subj": "feed.x"},
        {"type": "se", "acc": "A", "to": "feed.x"},
    ]
    if allow:
        assert ev["events"][2:] == [{"type": "eg", "kind": 0, "name": "a-user", "acc": "A", "sub": "feed.>"}]
    else:
        assert ev["events"][2:] == []
    if only:
        assert got == []
    else:
        assert len(got) == 1
        assert b"Nats-Trace-Dest: trace.b\r\n" in got[0].hdr  # untraced past the export, its headers untouched


def test_payload_over_the_limit_is_an_ingress_error(start):
    srv = start("server_name: small\nmax_payload: 64\n")
    with srv.client(name="tracer") as t, srv.client(name="big") as c:
        t.send(b"SUB trace.x 1\r\nSUB app.x 2\r\n")
        t.sync()
        c.send(traced_pub("app.x", "trace.x", b"x" * 100))
        c.expect_err("Maximum Payload Violation")
        events = wait_events(t, 1)
        assert normal(events[0])["events"] == [
            {"type": "in", "kind": 0, "name": "big", "acc": "$G", "subj": "app.x", "error": "maximum payload exceeded"},
        ]
        assert normal(events[0])["request"] == {"header": {names.DEST: ["trace.x"]}, "msgsize": 138}


def test_subject_outside_publish_permissions_is_an_ingress_error(start):
    conf = 'authorization { users: [ { user: u, password: p, permissions: { publish: "trace.>" } } ] }\n'
    srv = start(conf)
    with srv.client(user="u", name="limited", **{"pass": "p"}) as c:
        c.send(b"SUB > 1\r\n")
        c.sync()
        c.send(traced_pub("app.x", "trace.x"))
        c.expect_err('Permissions Violation for Publish to "app.x"')
        msgs = c.msgs_until_pong() or [read_msg(c)]
        assert [m.subject for m in msgs] == ["trace.x"]
        assert normal(event_of(msgs[0]))["events"] == [
            {"type": "in", "kind": 0, "name": "limited", "acc": "$G", "subj": "app.x",
             "error": 'Permissions Violation for Publish to "app.x"'},
        ]


def test_jetstream_refusal_and_no_interest_in_the_js_event(start):
    srv = start("server_name: jsx\n", jetstream=True)
    with srv.client(name="c") as c:
        c.send(b"SUB trace.x 1\r\n")
        small = _js_request(c, "$JS.API.STREAM.CREATE.SMALL",
                            {"name": "SMALL", "subjects": ["small.>"], "max_msg_size": 10})
        interest = _js_request(c, "$JS.API.STREAM.CREATE.INT",
                               {"name": "INT", "subjects": ["int.>"], "retention": "interest"})
        assert "error" not in small and "error" not in interest
        # too big, with and without a PubAck asked for; an interest stream nobody consumes
        c.send(hpub("small.x", trace_headers("trace.x"), b"x" * 50, "_INBOX.none"))
        c.send(hpub("small.x", trace_headers("trace.x"), b"x" * 50))
        c.send(hpub("int.x", trace_headers("trace.x"), b"y"))
        js = []
        while len(js) < 3:
            m = read_msg(c)
            js += [e for e in normal(event_of(m))["events"] if e["type"] == "js"]
        # (nats-server stores off the publisher's path: the events may come in another order)
        assert sorted(js, key=lambda e: e["stream"]) == [
            {"type": "js", "stream": "INT", "subject": "int.x", "nointerest": True},
            {"type": "js", "stream": "SMALL", "error": "maximum payload exceeded"},
            {"type": "js", "stream": "SMALL", "error": "maximum payload exceeded"},
        ]


def test_subscriber_whose_permissions_deny_the_subject_is_listed(start):
    conf = ('authorization { users: [ { user: u, password: p, permissions: { subscribe: { allow: "app.>", '
            'deny: "app.secret" } } }, { user: t, password: t } ] }\n')
    srv = start(conf)
    c = srv.client(user="u", name="denied", **{"pass": "p"})
    t = srv.client(user="t", name="t", **{"pass": "t"})
    with c, t:
        c.send(b"SUB app.> 1\r\n")
        c.sync()
        t.send(b"SUB trace.x 1\r\n")
        t.sync()
        t.send(traced_pub("app.secret", "trace.x"))
        events = wait_events(t, 1, "trace.x")
        assert normal(events[0])["events"] == [
            {"type": "in", "kind": 0, "name": "t", "acc": "$G", "subj": "app.secret"},
            {"type": "eg", "kind": 0, "name": "denied", "sub": "app.>", "error": msgtrace.SUB_DENIED},
        ]
        assert c.msgs_until_pong() == []


ODD_HEADERS = [
    b"NATS/1.0\r\nNats-Trace-Dest: a b\r\n\r\n",  # not a subject: logged, delivered untraced
    b"NATS/1.0\r\nNats-Trace-Dest: trace.*\r\n\r\n",  # a wildcard: the same
    b"NATS/1.0\r\nNats-Trace-Dest:\r\n\r\n",  # empty: not a trace header
    b"NATS/1.0\r\nNats-Trace-Dest:trace.odd\r\n\r\n",  # no space: traced
    b"NATS/1.0\r\nNats-Trace-Dest: trace.odd\r\nNats-Trace-Dest: trace.other\r\n\r\n",  # the first wins
    b"NATS/1.0 503\r\nNats-Trace-Dest: trace.odd\r\n\r\n",  # a status line: not traced
    b"NATS/1.0\r\nNats-Trace-Dest: trace.odd\r\nX: \xff\xfe\r\n\r\n",  # not UTF-8 elsewhere
    b"NATS/1.0\r\nno colon here\r\nNats-Trace-Dest: trace.odd\r\n\r\n",  # a line without a colon ends the parse
]


def test_odd_trace_headers_are_delivered_and_traced_as_nats_server_does(start):
    with start("server_name: odd\n").client(name="c") as c:
        c.send(b"SUB app.x 1\r\nSUB trace.> 2\r\n")
        c.sync()
        # message i has a payload of 100 * (i + 1) bytes, so its event names it by msgsize; a last traced message
        # to trace.end closes the run (nats-server sends events off the publisher's path, in order)
        for i, hdr in enumerate(ODD_HEADERS):
            c.send(hpub("app.x", hdr, b"p" * 100 * (i + 1)))
        c.send(traced_pub("app.end", "trace.end"))
        delivered, traced = [], {}
        while True:
            m = read_msg(c)
            if m.subject == "trace.end":
                break
            if m.subject == "app.x":
                delivered.append(len(m.payload) // 100 - 1)
                continue
            e = normal(event_of(m))
            k = next(k for k, h in enumerate(ODD_HEADERS) if len(h) + 100 * (k + 1) == e["request"]["msgsize"])
            traced[k] = (e["request"]["header"], [x["type"] for x in e["events"]])
        assert delivered == list(range(len(ODD_HEADERS)))
        assert traced == {
            3: ({names.DEST: ["trace.odd"]}, ["in", "eg"]),
            4: ({names.DEST: ["trace.odd", "trace.other"]}, ["in", "eg"]),
            6: ({names.DEST: ["trace.odd"], "X": ["\ufffd\ufffd"]}, ["in", "eg"]),
        }
