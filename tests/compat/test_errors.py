"""Protocol errors: exact -ERR texts and whether the connection is closed."""

from __future__ import annotations

import pytest

from .harness import hpub, pub, run


def test_unknown_op_closes(srv):
    # vector client/05
    with srv.client() as c:
        c.send(b"FOO bar\r\n")
        c.expect_err("Unknown Protocol Operation")
        assert c.expect_closed() == b""


def test_unknown_op_before_connect(srv):
    with srv.raw() as c:
        c.send(b"HELLO\r\n")
        c.expect_err("Unknown Protocol Operation")
        c.expect_closed()


def test_payload_longer_than_announced(srv):
    # vector client/11
    with srv.client() as c:
        c.send(b"SUB foo 1\r\nPUB foo 2\r\nhello\r\n")
        c.expect_err("Unknown Protocol Operation")
        assert c.expect_closed() == b""


def test_pub_missing_size_closes_silently(srv):
    # vector client/09
    with srv.client() as c:
        c.send(b"PUB foo\r\n")
        assert c.expect_closed() == b""


@pytest.mark.parametrize("line", [b"PUB foo abc\r\n", b"PUB foo -1\r\n", b"PUB foo rep extra 1\r\nx\r\n",
                                  b"SUB foo\r\n", b"SUB foo bar baz 1\r\n"],
                         ids=["pub-bad-size", "pub-negative-size", "pub-too-many-args", "sub-no-sid",
                              "sub-too-many-args"])
def test_bad_arguments_close_silently(srv, line):
    with srv.client() as c:
        c.send(line)
        assert c.expect_closed() == b""


def test_max_payload_violation_default(srv):
    # vector client/06: checked on the control line, before any payload
    with srv.client() as c:
        c.send(b"PUB foo 2000000\r\n")
        c.expect_err("Maximum Payload Violation")
        assert c.expect_closed() == b""


def test_max_payload_exactly_allowed(shared):
    s = shared("max_payload: 64\n")
    assert s.info["max_payload"] == 64
    with s.client() as c:
        c.send(b"SUB a 1\r\n" + pub("a", b"x" * 64) + b"PING\r\n")
        c.expect(b"MSG a 1 64\r\n" + b"x" * 64 + rb"\r\nPONG\r\n")


def test_max_payload_small_via_config(shared):
    # vector client/24
    s = shared("max_payload: 64\n")
    with s.client() as c:
        assert c.info["max_payload"] == 64
        c.send(b"PUB a 65\r\n")
        c.expect_err("Maximum Payload Violation")
        assert c.expect_closed() == b""


def test_max_payload_counts_headers(shared):
    s = shared("max_payload: 64\n")
    with s.client() as c:
        hdr = b"NATS/1.0\r\nK: " + b"v" * 40 + b"\r\n\r\n"
        c.send(hpub("a", hdr, b"y" * (65 - len(hdr))))
        c.expect_err("Maximum Payload Violation")
        c.expect_closed()


def test_max_payload_nats_py_client_side(shared):
    import nats.errors

    s = shared("max_payload: 64\n")

    async def body():
        nc = await s.nc()
        try:
            assert nc.max_payload == 64
            with pytest.raises(nats.errors.MaxPayloadError):
                await nc.publish("a", b"z" * 65)
        finally:
            await nc.close()

    run(body())


def test_max_control_line_exceeded(srv):
    # vector client/07
    with srv.client() as c:
        c.send(b"SUB " + b"a" * 5000 + b" 1\r\n")
        c.expect_err("maximum control line exceeded")
        assert c.expect_closed() == b""


def test_max_control_line_exceeded_without_newline(srv):
    with srv.client() as c:
        c.send(b"PUB " + b"a" * 8000)
        c.expect_err("maximum control line exceeded")
        c.expect_closed()


def test_long_control_line_under_limit_ok(srv):
    subject = "s." + "a" * 3000
    with srv.client() as c:
        c.send(f"SUB {subject} 1\r\n".encode() + pub(subject, b"ok") + b"PING\r\n")
        msgs = c.msgs_until_pong()
        assert [m.subject for m in msgs] == [subject]


def test_max_control_line_via_config(shared):
    s = shared("max_control_line: 256\n")
    with s.client() as c:
        c.send(b"SUB " + b"b" * 200 + b" 1\r\nPING\r\n")
        c.expect(rb"PONG\r\n")
        c.send(b"SUB " + b"c" * 300 + b" 2\r\n")
        c.expect_err("maximum control line exceeded")
        c.expect_closed()


def test_empty_line_is_unknown_op(srv):
    with srv.client() as c:
        c.send(b"\r\n")
        c.expect_err("Unknown Protocol Operation")
        c.expect_closed()


def test_unsub_without_args(srv):
    with srv.client() as c:
        c.send(b"UNSUB\r\n")
        c.expect_err("Unknown Protocol Operation")
        c.expect_closed()


def test_server_survives_random_garbage_on_many_connections(srv):
    # Random bytes (with protocol-looking fragments mixed in) on 60 connections: each is answered or
    # closed, and the server keeps serving a well-behaved client.
    import random
    import socket

    rnd = random.Random(2026)
    words = [b"PUB ", b"SUB ", b"HPUB ", b"UNSUB ", b"CONNECT ", b"PING", b"\r\n", b" ", b"foo", b"1", b"-1",
             b"{", b"}", b"NATS/1.0", b"LS+ ", b"RMSG ", b"\x00", b"\xff", b"9999999999"]
    for _ in range(60):
        with socket.create_connection(("127.0.0.1", srv.port), timeout=2) as s:
            s.recv(65536)  # INFO
            data = b"".join(rnd.choice(words) if rnd.random() < 0.7 else bytes([rnd.randrange(256)])
                            for _ in range(rnd.randrange(1, 200)))
            try:
                s.sendall(data)
                s.settimeout(0.05)
                s.recv(65536)
            except OSError:
                pass
    with srv.client() as c:
        c.send(b"SUB ok 1\r\n" + pub("ok", b"alive"))
        assert [m.payload for m in c.msgs_until_pong()] == [b"alive"]
