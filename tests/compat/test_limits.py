"""Server limits: subscriptions, connections, keepalive (stale connections) and slow consumers."""

from __future__ import annotations

import socket
import time

from .harness import Raw, pub, wait_until

MAXSUBS_CONF = "max_subscriptions: 3\n"
MAXCONN_CONF = "max_connections: 2\n"
PING_CONF = 'ping_interval: "1s"\nping_max: 1\n'
SLOW_CONF = "max_pending: 65536\nmax_payload: 32768\n"


def test_max_subscriptions(shared):
    # vector client/25
    s = shared(MAXSUBS_CONF)
    with s.client() as c:
        c.send(b"SUB a 1\r\nSUB b 2\r\nSUB c 3\r\nSUB d 4\r\nPING\r\n")
        c.expect(rb"-ERR 'maximum subscriptions exceeded'\r\nPONG\r\n")
        # the connection stays and the first three subscriptions work; d was not added
        c.send(pub("a", b"1") + pub("c", b"3") + pub("d", b"4"))
        assert [(m.sid, m.payload) for m in c.msgs_until_pong()] == [("1", b"1"), ("3", b"3")]


def test_max_subscriptions_freed_by_unsub(shared):
    s = shared(MAXSUBS_CONF)
    with s.client() as c:
        c.send(b"SUB a 1\r\nSUB b 2\r\nSUB c 3\r\nUNSUB 2\r\nSUB d 4\r\n" + pub("d", b"x") + b"PING\r\n")
        c.expect(rb"MSG d 4 1\r\nx\r\nPONG\r\n")
        c.send(b"SUB e 5\r\nPING\r\n")
        c.expect(rb"-ERR 'maximum subscriptions exceeded'\r\nPONG\r\n")


def test_max_subscriptions_per_connection(shared):
    s = shared(MAXSUBS_CONF)
    with s.client() as c1, s.client() as c2:
        c1.send(b"SUB a 1\r\nSUB b 2\r\nSUB c 3\r\nPING\r\n")
        c1.expect(rb"PONG\r\n")
        c2.send(b"SUB a 1\r\nSUB b 2\r\nSUB c 3\r\nPING\r\n")
        c2.expect(rb"PONG\r\n")


def test_max_connections(fresh):
    # vector client/28: INFO, then -ERR and close for the connection over the limit
    s = fresh(MAXCONN_CONF)
    c1 = s.client()
    # the readiness probe's close may not be processed yet: retry the second client until admitted
    holder = {}

    def second():
        r = Raw(s.port)
        r.send(b'CONNECT {"verbose":false,"protocol":1}\r\nPING\r\n')
        m = r.expect(rb"(PONG\r\n|-ERR 'maximum connections exceeded'\r\n)")
        if m.group(1).startswith(b"PONG"):
            holder["c2"] = r
            return True
        r.close()
        return False

    wait_until(second, timeout=3, interval=0.05, msg="second connection admitted")
    c2 = holder["c2"]
    try:
        with s.raw() as c3:  # INFO is still sent first
            assert "client_id" in c3.info
            c3.expect_err("maximum connections exceeded")
            assert c3.expect_closed() == b""
        # existing connections are unaffected
        c1.sync()
        c2.expect(rb"INFO [^\r\n]*\r\n")
        c2.sync()
        # a freed slot can be reused
        c1.close()
        wait_until(second, timeout=3, interval=0.05, msg="slot freed after close")
        holder["c2"].close()
    finally:
        c1.close()
        c2.close()


def test_stale_connection(shared):
    # vector client/26: ping_interval 1s, ping_max 1, client never answers
    s = shared(PING_CONF)
    with s.raw(auto_pong=False) as c:
        c.send(b'CONNECT {"verbose":false,"protocol":1}\r\n')
        c.expect(rb"PING\r\n", timeout=5)
        c.expect(rb"-ERR 'Stale Connection'\r\n", timeout=5)
        assert c.expect_closed() == b""


def test_server_ping_answered_keeps_connection(shared):
    # vector client/27
    s = shared(PING_CONF)
    with s.raw(auto_pong=False) as c:
        c.send(b'CONNECT {"verbose":false,"protocol":1}\r\n')
        for _ in range(3):
            c.expect(rb"PING\r\n", timeout=5)
            c.send(b"PONG\r\n")
        c.send(b"SUB alive 1\r\n" + pub("alive", b"y"))
        c.send(b"PING\r\n")
        # a server PING may slip in between; answer it and keep looking for our MSG + PONG
        deadline = time.monotonic() + 3
        while True:
            m = c.expect(rb"(PING\r\n|MSG alive 1 1\r\ny\r\n)", timeout=max(0.1, deadline - time.monotonic()))
            if m.group(1) == b"PING\r\n":
                c.send(b"PONG\r\n")
                continue
            break
        assert not c.eof


def test_slow_consumer_disconnected_without_err(fresh):
    s = fresh(SLOW_CONF, monitor=True)
    sub = socket.create_connection(("127.0.0.1", s.port))
    try:
        sub.settimeout(2)
        sub.sendall(b'CONNECT {"verbose":false,"protocol":1,"name":"slowpoke"}\r\nSUB big 1\r\nPING\r\n')
        got = b""
        while b"PONG\r\n" not in got:
            got += sub.recv(65536)
        with s.client() as p:
            payload = b"x" * 30000
            chunk = pub("big", payload) * 10

            def closed_as_slow():
                p.send(chunk)
                p.sync(timeout=5)
                closed = s.http_get("/connz?state=closed")
                reasons = [c.get("reason", "") for c in closed["connections"] if c.get("name") == "slowpoke"]
                return reasons

            reasons = wait_until(closed_as_slow, timeout=10, interval=0.01, msg="slow consumer close")
            assert reasons[0] in ("Slow Consumer (Pending Bytes)", "Slow Consumer (Write Deadline)")
            # publisher is unaffected
            p.sync()
        # the subscriber drains what was buffered, sees EOF, and never an -ERR
        data = b""
        sub.settimeout(5)
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            try:
                d = sub.recv(1 << 20)
            except (ConnectionResetError, TimeoutError):
                break
            if not d:
                break
            data += d
        else:
            raise AssertionError("subscriber never saw the connection close")
        assert b"-ERR" not in data
        varz = s.http_get("/varz")
        assert varz["slow_consumers"] >= 1
    finally:
        sub.close()
