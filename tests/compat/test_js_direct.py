"""Direct Get (`$JS.API.DIRECT.GET.<stream>[.<subject>]`): the reply is the stored message as HMSG, batches end
with `204 EOB`, statuses are header-only messages. Exact bytes over raw sockets; nats-py for its own API.
"""

from __future__ import annotations

import json
import re

import pytest

from .harness import js_api, js_client, pub, read_msg, run

API = "$JS.API"
TS = rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z"


def make_stream(srv, name: str, msgs, **cfg):
    """Create `name` (subjects `<name>.>`, allow_direct unless given) holding `msgs`: (subject, payload, headers)."""

    async def body():
        async with js_client(srv) as (nc, _js):
            cfg.setdefault("allow_direct", True)
            resp = await js_api(nc, f"{API}.STREAM.CREATE.{name}", {"name": name, "subjects": [f"{name.lower()}.>"],
                                                                   **cfg})
            assert "error" not in resp, resp
            for subject, payload, headers in msgs:
                reply = await nc.request(subject, payload, headers=headers, timeout=2)
                assert "error" not in json.loads(reply.data)

    run(body())


def direct(raw, stream: str, body: bytes | dict = b"", subject: str | None = None):
    """Send one direct-get request with the reply inbox `r.dg` (subscribed with sid 9)."""
    if isinstance(body, dict):
        body = json.dumps(body).encode()
    target = f"{API}.DIRECT.GET.{stream}" + (f".{subject}" if subject else "")
    raw.send(pub(target, body, reply="r.dg"))


def stored_headers(msg) -> tuple[bytes, dict]:
    """Split a direct-get HMSG into (status line, {header: value}) keeping order."""
    lines = msg.hdr.split(b"\r\n")
    assert lines[-2:] == [b"", b""], msg.hdr
    out = {}
    for line in lines[1:-2]:
        k, _, v = line.partition(b": ")
        out[k.decode()] = v.decode()
    return lines[0], out


def open_raw(srv):
    c = srv.client()
    c.send(b"SUB r.dg 9\r\n")
    c.sync()
    return c


def test_single_get_exact(jsrv):
    make_stream(jsrv, "DG1", [("dg1.new", b"o1", None), ("dg1.new", b"o2", {"Nats-Msg-Id": "m-1"})])
    with open_raw(jsrv) as c:
        direct(c, "DG1", {"seq": 1})
        m = read_msg(c)
        assert (m.op, m.subject, m.sid, m.reply, m.payload) == ("HMSG", "r.dg", "9", None, b"o1")
        assert re.fullmatch(rb"NATS/1\.0\r\nNats-Stream: DG1\r\nNats-Subject: dg1\.new\r\nNats-Sequence: 1\r\n"
                            rb"Nats-Time-Stamp: " + TS + rb"\r\n\r\n", m.hdr), m.hdr
        # the original headers come first, then the server's
        direct(c, "DG1", {"seq": 2})
        m = read_msg(c)
        status, hdrs = stored_headers(m)
        assert status == b"NATS/1.0" and m.payload == b"o2"
        assert list(hdrs) == ["Nats-Msg-Id", "Nats-Stream", "Nats-Subject", "Nats-Sequence", "Nats-Time-Stamp"]
        assert (hdrs["Nats-Msg-Id"], hdrs["Nats-Sequence"]) == ("m-1", "2")


def test_last_by_subject_forms(jsrv):
    make_stream(jsrv, "DG2", [("dg2.a", b"a1", None), ("dg2.b", b"b1", None), ("dg2.a", b"a2", {"X": "y"})])
    with open_raw(jsrv) as c:
        direct(c, "DG2", subject="dg2.a")
        m = read_msg(c)
        _, hdrs = stored_headers(m)
        assert m.payload == b"a2" and hdrs["Nats-Sequence"] == "3" and hdrs["X"] == "y"
        assert "Nats-Num-Pending" not in hdrs
        direct(c, "DG2", {"last_by_subj": "dg2.b"})
        m = read_msg(c)
        assert m.payload == b"b1" and stored_headers(m)[1]["Nats-Subject"] == "dg2.b"
        direct(c, "DG2", {"seq": 1, "next_by_subj": "dg2.b"})
        assert read_msg(c).payload == b"b1"
        # the subject form takes no body
        direct(c, "DG2", {"seq": 1}, subject="dg2.a")
        c.expect(rb"HMSG r\.dg 9 28 28\r\nNATS/1\.0 408 Bad Request\r\n\r\n\r\n")


def test_batch_with_pending_headers_and_eob(jsrv):
    msgs = [("dg3.a", b"a1", None), ("dg3.b", b"b1", None), ("dg3.a", b"a2", None), ("dg3.c", b"c1", None),
            ("dg3.b", b"b2", None)]
    make_stream(jsrv, "DG3", msgs)
    with open_raw(jsrv) as c:
        direct(c, "DG3", {"seq": 1, "batch": 3})
        for seq, pending, last in ((1, 4, 0), (2, 3, 1), (3, 2, 2)):
            m = read_msg(c)
            _, hdrs = stored_headers(m)
            assert m.payload == msgs[seq - 1][1]
            assert list(hdrs) == ["Nats-Stream", "Nats-Subject", "Nats-Sequence", "Nats-Time-Stamp",
                                  "Nats-Num-Pending", "Nats-Last-Sequence"]
            assert (hdrs["Nats-Sequence"], hdrs["Nats-Num-Pending"], hdrs["Nats-Last-Sequence"]) == \
                (str(seq), str(pending), str(last))
        c.expect(rb"HMSG r\.dg 9 64 64\r\nNATS/1\.0 204 EOB\r\nNats-Num-Pending: 2\r\nNats-Last-Sequence: 3\r\n"
                 rb"\r\n\r\n")
        # a filtered batch
        direct(c, "DG3", {"seq": 2, "batch": 5, "next_by_subj": "dg3.b"})
        seen = []
        for _ in range(2):
            _, hdrs = stored_headers(read_msg(c))
            seen.append((hdrs["Nats-Sequence"], hdrs["Nats-Num-Pending"], hdrs["Nats-Last-Sequence"]))
        assert seen == [("2", "1", "0"), ("5", "0", "2")]
        c.expect(rb"HMSG r\.dg 9 64 64\r\nNATS/1\.0 204 EOB\r\nNats-Num-Pending: 0\r\nNats-Last-Sequence: 5\r\n"
                 rb"\r\n\r\n")


def test_batch_max_bytes(jsrv):
    # every message counts subject + headers + payload = 7 bytes; the batch stops once max_bytes is reached
    make_stream(jsrv, "DG4", [(f"dg4.{s}", s.encode() * 2, None) for s in "abcde"])
    with open_raw(jsrv) as c:
        direct(c, "DG4", {"seq": 1, "batch": 10, "max_bytes": 15})
        assert [stored_headers(read_msg(c))[1]["Nats-Sequence"] for _ in range(3)] == ["1", "2", "3"]
        c.expect(rb"HMSG r\.dg 9 64 64\r\nNATS/1\.0 204 EOB\r\nNats-Num-Pending: 2\r\nNats-Last-Sequence: 3\r\n"
                 rb"\r\n\r\n")
        # at least one message is always sent
        direct(c, "DG4", {"seq": 1, "batch": 10, "max_bytes": 1})
        assert read_msg(c).payload == b"aa"
        c.expect(rb"HMSG r\.dg 9 64 64\r\nNATS/1\.0 204 EOB\r\nNats-Num-Pending: 4\r\nNats-Last-Sequence: 1\r\n"
                 rb"\r\n\r\n")


def test_multi_last_with_up_to_seq(jsrv):
    msgs = [("dg5.a", b"a1", None), ("dg5.b", b"b1", None), ("dg5.a", b"a2", None), ("dg5.c", b"c1", None),
            ("dg5.b", b"b2", None)]
    make_stream(jsrv, "DG5", msgs)
    with open_raw(jsrv) as c:
        direct(c, "DG5", {"multi_last": ["dg5.*"]})
        got = []
        for _ in range(3):
            m = read_msg(c)
            _, hdrs = stored_headers(m)
            got.append((hdrs["Nats-Sequence"], m.payload, hdrs["Nats-Num-Pending"], hdrs["Nats-Last-Sequence"]))
        # one per subject, in sequence order
        assert got == [("3", b"a2", "2", "0"), ("4", b"c1", "1", "3"), ("5", b"b2", "0", "4")]
        c.expect(rb"HMSG r\.dg 9 87 87\r\nNATS/1\.0 204 EOB\r\nNats-Num-Pending: 0\r\nNats-Last-Sequence: 5\r\n"
                 rb"Nats-UpTo-Sequence: 5\r\n\r\n\r\n")
        # a point-in-time view
        direct(c, "DG5", {"multi_last": ["dg5.*"], "up_to_seq": 4})
        got = [stored_headers(read_msg(c))[1]["Nats-Sequence"] for _ in range(3)]
        assert got == ["2", "3", "4"]
        c.expect(rb"HMSG r\.dg 9 87 87\r\nNATS/1\.0 204 EOB\r\nNats-Num-Pending: 0\r\nNats-Last-Sequence: 4\r\n"
                 rb"Nats-UpTo-Sequence: 4\r\n\r\n\r\n")
        direct(c, "DG5", {"multi_last": ["dg5.a", "dg5.c"]})
        assert [read_msg(c).payload for _ in range(2)] == [b"a2", b"c1"]
        c.expect(rb"HMSG r\.dg 9 87 87\r\nNATS/1\.0 204 EOB\r\n")


@pytest.mark.parametrize("request_body, status", [
    ({"seq": 99}, b"404 Message Not Found"),
    ({"last_by_subj": "dg6.none"}, b"404 Message Not Found"),
    ({"seq": 99, "batch": 3}, b"404 Message Not Found"),
    ({"multi_last": ["dg6.none.*"]}, b"404 No Results"),
    (b"", b"408 Empty Request"),
    (b"{bad", b"408 Malformed Request"),
], ids=["seq", "last_by_subj", "batch", "multi_last", "empty", "malformed"])
def test_status_replies(jsrv, request_body, status):
    stream = "DG6"
    make_stream_once(jsrv, stream)
    with open_raw(jsrv) as c:
        direct(c, stream, request_body)
        hdr = b"NATS/1.0 " + status + b"\r\n\r\n"
        c.expect(f"HMSG r.dg 9 {len(hdr)} {len(hdr)}\r\n".encode().replace(b".", rb"\.") + re.escape(hdr)
                 + rb"\r\n")
        c.sync()


def make_stream_once(srv, name: str):
    async def body():
        async with js_client(srv) as (nc, _js):
            if "error" in await js_api(nc, f"{API}.STREAM.INFO.{name}"):
                resp = await js_api(nc, f"{API}.STREAM.CREATE.{name}",
                                    {"name": name, "subjects": [f"{name.lower()}.>"], "allow_direct": True})
                assert "error" not in resp, resp
                await nc.request(f"{name.lower()}.x", b"1", timeout=2)

    run(body())


def test_no_direct_get_without_allow_direct(jsrv):
    make_stream(jsrv, "DG7", [("dg7.a", b"x", None)], allow_direct=False)
    with jsrv.client(no_responders=True) as c:
        c.send(b"SUB r.dg 9\r\n")
        direct(c, "DG7", {"seq": 1})
        m = read_msg(c)
        assert m.hdr.startswith(b"NATS/1.0 503\r\n") and m.payload == b""


def test_nats_py_direct_get(jsrv):
    make_stream(jsrv, "DG8", [("dg8.a", b"a1", {"K": "v"}), ("dg8.b", b"b1", None), ("dg8.a", b"a2", None)])

    async def body():
        import nats.js.errors

        async with js_client(jsrv) as (_nc, js):
            msg = await js.get_msg("DG8", seq=1, direct=True)
            assert (msg.subject, msg.seq, msg.data, msg.headers["K"]) == ("dg8.a", 1, b"a1", "v")
            msg = await js.get_msg("DG8", subject="dg8.a", direct=True)
            assert (msg.seq, msg.data) == (3, b"a2")
            msg = await js.get_msg("DG8", seq=1, next=True, subject="dg8.b", direct=True)
            assert msg.seq == 2
            with pytest.raises(nats.js.errors.NotFoundError):
                await js.get_msg("DG8", seq=10, direct=True)

    run(body())
