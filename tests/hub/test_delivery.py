"""The one delivery path (host/delivery.py, host/parser.py plans) against nats-server: the cases where a run the
parser delivers on its own meets the general path in one read — order, UNSUB max, echo, headers, interest made
in the same read, counters, and frames from a leafnode link. Each case runs on both servers with raw sockets."""

from __future__ import annotations

import json
import socket
import time

import pytest

from tests.compat.harness import Server, free_port, hpub, pub, selected_sides

SIDES = selected_sides()


@pytest.fixture(params=SIDES)
def server(request, tmp_path):
    srv = Server(request.param, monitor=True, workdir=tmp_path)
    request.addfinalizer(srv.stop)
    return srv.start()


@pytest.fixture(params=SIDES)
def leaf_server(request, tmp_path):
    port = free_port()
    srv = Server(request.param, config=f"leafnodes {{ listen: 127.0.0.1:{port} }}\n", workdir=tmp_path)
    request.addfinalizer(srv.stop)
    srv.start()
    srv.leaf_port = port  # type: ignore[attr-defined]
    return srv


def _warm(p, s, subjects):
    # One round trip per subject first, so the hub has learned a plan for each before the mixed read.
    for subj in subjects:
        p.send(pub(subj, b"w"))
    p.sync()
    n = 0
    while n < len(subjects):
        n += len(s.msgs_until_pong())


def test_order_kept_when_planned_and_general_runs_mix(server):
    # `a` has a plan (plain subscriber); `b` goes to a queue group (general path). One read carries both,
    # alternating: the subscriber must see them in the order they were published.
    with server.client() as s, server.client() as p:
        s.send(b"SUB a 1\r\nSUB b q 2\r\n")
        s.sync()
        _warm(p, s, ["a", "b"])
        data = b"".join(pub("a" if k % 3 else "b", b"%d" % k) for k in range(300))
        p.send(data)
        p.sync()
        got = []
        while len(got) < 300:
            got += [int(m.payload) for m in s.msgs_until_pong()]
        assert got == list(range(300))


def test_unsub_max_set_while_a_plan_is_in_use(server):
    with server.client() as s, server.client() as p:
        s.send(b"SUB c 1\r\n")
        s.sync()
        _warm(p, s, ["c", "c"])
        s.send(b"UNSUB 1 5\r\n")  # 2 delivered so far: 3 more
        s.sync()
        p.send(b"".join(pub("c", b"x") for _ in range(10)))
        p.sync()  # the hub handled all ten PUBs: whatever they delivered to s comes before s's PONG
        assert len(s.msgs_until_pong()) == 3
        p.send(pub("c", b"y"))
        p.sync()
        assert s.msgs_until_pong() == []


def test_echo_off_publisher_subscribed_to_its_subject(server):
    with server.client(echo=False) as p, server.client() as s:
        p.send(b"SUB d 1\r\n")
        s.send(b"SUB d 2\r\n")
        p.sync()
        s.sync()
        for _ in range(3):
            p.send(b"".join(pub("d", b"%d" % k) for k in range(5)))
            p.sync()
        got = []
        while len(got) < 15:
            got += s.msgs_until_pong()
        assert [m.payload for m in got] == [b"%d" % k for k in range(5)] * 3
        assert p.msgs_until_pong() == []


def test_headers_stripped_for_a_subscriber_without_them(server):
    with server.client(headers=False) as s, server.client(headers=True) as p:
        s.send(b"SUB e 1\r\n")
        s.sync()
        _warm(p, s, ["e"])
        p.send(hpub("e", b"NATS/1.0\r\nA: b\r\n\r\n", b"hi") + pub("e", b"plain")
               + hpub("e", b"NATS/1.0\r\n\r\n", b"x"))
        p.sync()
        got = []
        while len(got) < 3:
            got += s.msgs_until_pong()
        assert [(m.op, m.hdr or None, m.payload) for m in got] == [("MSG", None, b"hi"), ("MSG", None, b"plain"),
                                                                    ("MSG", None, b"x")]


def test_interest_made_in_the_same_read_as_the_publish(server):
    with server.client() as p:
        p.send(pub("f", b"nobody"))  # no interest: the hub learns to skip such frames
        p.sync()
        p.send(b"SUB f 1\r\n" + pub("f", b"me"))
        msgs = p.msgs_until_pong()
        assert [(m.subject, m.payload) for m in msgs] == [("f", b"me")]


def test_counters_of_planned_deliveries(server):
    with server.client(name="sub") as s, server.client(name="pub") as p:
        s.send(b"SUB g.* 1\r\n")
        s.sync()
        p.send(b"".join(pub(f"g.{k % 4}", b"12345") for k in range(200)))
        p.sync()
        n = 0
        while n < 200:
            n += len(s.msgs_until_pong())
        conns = {c["name"]: c for c in server.http_get("/connz?subs=detail")["connections"]}
        assert (conns["pub"]["in_msgs"], conns["pub"]["in_bytes"]) == (200, 1000)
        assert (conns["sub"]["out_msgs"], conns["sub"]["out_bytes"]) == (200, 1000)
        assert conns["sub"]["subscriptions_list_detail"][0]["msgs"] == 200


def _leaf_link(port: int, want: set[bytes]) -> socket.socket:
    """A raw leafnode connection, handshaken, once the server told it the interest in `want`."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    buf = b""
    while b"\r\n" not in buf:
        buf += sock.recv(65536)
    assert buf.startswith(b"INFO ")
    sock.sendall(b"CONNECT " + json.dumps({"name": "raw-leaf", "version": "2.15.1", "headers": True,
                                            "protocol": 1}).encode() + b"\r\nPING\r\n")
    seen: set[bytes] = set()
    deadline = time.monotonic() + 10
    buf = b""
    while not want <= seen:
        assert time.monotonic() < deadline, (want, seen, buf[-300:])
        buf += sock.recv(65536)
        for line in buf.split(b"\r\n"):
            if line.startswith(b"LS+ "):
                seen.add(line.split(b" ")[1])
            elif line == b"PING":
                sock.sendall(b"PONG\r\n")
        buf = buf[buf.rfind(b"\r\n") + 2 :]
    return sock


def test_leaf_frames_reach_client_subscribers(leaf_server):
    # Runs of LMSG frames (with and without a reply, with headers) and, between them, a frame naming a queue
    # group (an event of its own) reach a plain subscriber in the order sent.
    with leaf_server.client() as s:
        s.send(b"SUB h.* 1\r\n")
        s.sync()
        link = _leaf_link(leaf_server.leaf_port, {b"h.*"})
        try:
            frames = []
            for k in range(100):
                frames.append(b"LMSG h.%d %d\r\n%d\r\n" % (k % 3, len(b"%d" % k), k))
                if k % 10 == 0:
                    frames.append(b"LMSG h.x _INBOX.%d 1\r\nr\r\n" % k)
            frames.append(b"LMSG h.q | grp 1\r\nq\r\n")
            frames.append(b"HMSG h.y 12 14\r\nNATS/1.0\r\n\r\nhd\r\n")
            link.sendall(b"".join(frames))
            got = []
            deadline = time.monotonic() + 10
            while len(got) < 113 and time.monotonic() < deadline:
                got += s.msgs_until_pong()
            payloads = [m.payload for m in got if m.subject[2:].isdigit()]
            assert payloads == [b"%d" % k for k in range(100)]
            assert [m.reply for m in got if m.subject == "h.x"] == [f"_INBOX.{k}" for k in range(0, 100, 10)]
            assert [(m.hdr, m.payload) for m in got if m.subject == "h.y"] == [(b"NATS/1.0\r\n\r\n", b"hd")]
            while not [m for m in got if m.subject == "h.q"] and time.monotonic() < deadline:
                got += s.msgs_until_pong()
            assert [m.payload for m in got if m.subject == "h.q"] == [b"q"]
        finally:
            link.close()


def test_a_second_connect_changes_echo_and_verbose_for_planned_subjects(server):
    with server.client() as p:
        p.send(b"SUB k 1\r\n")
        p.sync()
        for _ in range(3):  # the hub has a plan for `k` by now, made with echo on
            p.send(pub("k", b"e"))
            assert [m.payload for m in p.msgs_until_pong()] == [b"e"]
        p.send(b'CONNECT {"verbose":true,"pedantic":false,"echo":false}\r\nPING\r\n')
        p.expect(rb"\+OK\r\nPONG\r\n")
        p.send(pub("k", b"x") + b"PING\r\n")  # a read of its own: the plan made before would be used
        p.expect(rb"\+OK\r\nPONG\r\n")
