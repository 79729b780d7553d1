"""HPUB/HMSG, request-reply and no-responders (raw sockets and nats-py)."""

from __future__ import annotations

import pytest

from .harness import async_wait_until, collect, hpub, msg_re, pub, run, settle

HDRS = b"NATS/1.0\r\nX-Key: v1\r\nX-Key: v2\r\nOther: x\r\n\r\n"


def test_hpub_hmsg_multi_value_headers_exact(srv):
    # vector client/01: HPUB foo rep 44 51
    with srv.client() as c:
        c.send(b"SUB foo 1\r\n" + hpub("foo", HDRS, b"payload", reply="rep") + b"PING\r\n")
        c.expect(rb"HMSG foo 1 rep 44 51\r\n" + HDRS.replace(b".", rb"\.") + rb"payload\r\nPONG\r\n")


def test_hpub_header_bytes_preserved(srv):
    # odd but legal spacing, case and ordering must survive byte for byte
    hdrs = b"NATS/1.0\r\nb-key:  spaced value \r\nA-KEY: 1\r\na-key: 2\r\nUtf8: \xc3\xa9t\xc3\xa9\r\n\r\n"
    with srv.client() as s, srv.client() as p:
        s.send(b"SUB hx 5\r\n")
        s.sync()
        p.send(hpub("hx", hdrs, b"\x00\r\nbody"))
        p.sync()
        msgs = s.msgs_until_pong()
        assert len(msgs) == 1
        m = msgs[0]
        assert m.op == "HMSG" and m.hdr == hdrs and m.payload == b"\x00\r\nbody"


def test_hpub_headers_only(srv):
    hdrs = b"NATS/1.0\r\nA: b\r\n\r\n"
    with srv.client() as c:
        c.send(b"SUB ho 1\r\n" + hpub("ho", hdrs) + b"PING\r\n")
        c.expect(f"HMSG ho 1 {len(hdrs)} {len(hdrs)}\r\n".encode() + hdrs + b"\r\nPONG\r\n")


def test_headers_stripped_for_client_without_headers(srv):
    with srv.client(headers=False) as old, srv.client() as p:
        old.send(b"SUB strip 1\r\n")
        old.sync()
        p.send(hpub("strip", HDRS, b"payload", reply="r"))
        p.sync()
        old.expect(msg_re("strip", "1", b"payload", reply="r") + rb"")
        old.sync()


def test_headers_stripped_empty_payload(srv):
    with srv.client(headers=False) as old, srv.client() as p:
        old.send(b"SUB strip0 1\r\n")
        old.sync()
        p.send(hpub("strip0", b"NATS/1.0\r\nA: b\r\n\r\n"))
        p.sync()
        old.expect(rb"MSG strip0 1 0\r\n\r\n")


def test_hpub_from_client_without_headers_closes(srv):
    with srv.client(headers=False) as c:
        c.send(b"HPUB foo 12 14\r\nNATS/1.0\r\n\r\nhi\r\n")
        data = c.expect_closed()
        assert b"MSG" not in data


def test_hpub_header_size_larger_than_total_closes(srv):
    with srv.client() as c:
        c.send(b"HPUB foo 10 5\r\n")
        assert c.expect_closed() == b""


def test_request_reply_raw(srv):
    with srv.client() as responder, srv.client() as requester:
        responder.send(b"SUB svc.echo 1\r\n")
        responder.sync()
        requester.send(b"SUB _INBOX.r1 9\r\n" + pub("svc.echo", b"ping?", reply="_INBOX.r1"))
        requester.sync()
        m = responder.expect(rb"MSG svc\.echo 1 (_INBOX\.r1) 5\r\nping\?\r\n")
        responder.send(pub(m.group(1).decode(), b"pong!") + b"PING\r\n")
        responder.expect(rb"PONG\r\n")
        requester.expect(msg_re("_INBOX.r1", "9", b"pong!"))


def test_no_responders_raw_exact(srv):
    # vector client/03
    with srv.client(no_responders=True) as c:
        c.send(b"SUB _INBOX.abc 7\r\n" + pub("service.nobody", b"hi", reply="_INBOX.abc") + b"PING\r\n")
        c.expect(rb"HMSG _INBOX\.abc 7 46 46\r\nNATS/1\.0 503\r\nNats-Subject: service\.nobody\r\n\r\n\r\n"
                 rb"PONG\r\n")


def test_no_responders_header_length_tracks_subject(srv):
    subject = "svc.a.much.longer.subject.name"
    hdr = f"NATS/1.0 503\r\nNats-Subject: {subject}\r\n\r\n".encode()
    assert len(hdr) == 32 + len(subject)
    with srv.client(no_responders=True) as c:
        c.send(b"SUB in.* 1\r\n" + hpub(subject, b"NATS/1.0\r\nA: b\r\n\r\n", b"xyz", reply="in.x") + b"PING\r\n")
        c.expect(f"HMSG in.x 1 {len(hdr)} {len(hdr)}\r\n".encode().replace(b".", rb"\.")
                 + hdr.replace(b".", rb"\.") + rb"\r\nPONG\r\n")


def test_no_responders_not_sent_without_option(srv):
    with srv.client(no_responders=False) as c:
        c.send(b"SUB _INBOX.n 7\r\n" + pub("service.nobody", b"hi", reply="_INBOX.n"))
        assert c.msgs_until_pong() == []


def test_no_responders_requires_own_reply_subscription(srv):
    with srv.client(no_responders=True) as c, srv.client() as other:
        other.send(b"SUB _INBOX.elsewhere 1\r\n")
        other.sync()
        c.send(pub("service.nobody", b"hi", reply="_INBOX.elsewhere"))
        assert c.msgs_until_pong() == []
        assert other.msgs_until_pong() == []


def test_no_responders_not_sent_when_subscriber_exists(srv):
    with srv.client(no_responders=True) as c, srv.client() as svc:
        svc.send(b"SUB service.here 1\r\n")
        svc.sync()
        c.send(b"SUB _INBOX.h 7\r\n" + pub("service.here", b"hi", reply="_INBOX.h"))
        assert c.msgs_until_pong() == []
        svc.expect(rb"MSG service\.here 1 _INBOX\.h 2\r\nhi\r\n")


def test_nats_py_request_reply(srv):
    async def body():
        svc = await srv.nc()
        cli = await srv.nc()
        try:
            async def handler(msg):
                await msg.respond(b"re:" + msg.data)

            await svc.subscribe("rr.echo", cb=handler)
            await settle(svc)
            for i in range(5):
                resp = await cli.request("rr.echo", f"m{i}".encode(), timeout=2)
                assert resp.data == f"re:m{i}".encode()
        finally:
            await cli.close()
            await svc.close()

    run(body())


def test_nats_py_request_with_headers(srv):
    async def body():
        svc = await srv.nc()
        cli = await srv.nc()
        try:
            async def handler(msg):
                await svc.publish(msg.reply, msg.data[::-1], headers={"Echo": msg.headers.get("X-In", "?")})

            await svc.subscribe("rr.hdr", cb=handler)
            await settle(svc)
            resp = await cli.request("rr.hdr", b"abc", timeout=2, headers={"X-In": "v1"})
            assert resp.data == b"cba"
            assert resp.headers == {"Echo": "v1"}
        finally:
            await cli.close()
            await svc.close()

    run(body())


def test_nats_py_no_responders(srv):
    import nats.errors

    async def body():
        nc = await srv.nc()
        try:
            with pytest.raises(nats.errors.NoRespondersError):
                await nc.request("nobody.listens.here", b"x", timeout=2)
        finally:
            await nc.close()

    run(body())


def test_nats_py_pubsub_queue_and_order(srv):
    async def body():
        subs_nc = [await srv.nc() for _ in range(3)]
        pub_nc = await srv.nc()
        try:
            got = []
            for nc in subs_nc:
                async def cb(msg):
                    got.append(int(msg.data))
                await nc.subscribe("py.q", queue="g", cb=cb)
                await settle(nc)
            ordered = await pub_nc.subscribe("py.q")
            await settle(pub_nc)
            for i in range(300):
                await pub_nc.publish("py.q", str(i).encode())
            msgs = await collect(ordered, 300)
            assert [int(m.data) for m in msgs] == list(range(300))
            await async_wait_until(lambda: len(got) >= 300, timeout=3, msg="queue deliveries")
            assert sorted(got) == list(range(300))
        finally:
            for nc in subs_nc + [pub_nc]:
                await nc.close()

    run(body())


def test_nats_py_headers_roundtrip(srv):
    async def body():
        nc = await srv.nc()
        try:
            sub = await nc.subscribe("py.h")
            await settle(nc)
            await nc.publish("py.h", b"data", headers={"A": "1", "B-Two": "two words"})
            (m,) = await collect(sub, 1)
            assert m.data == b"data"
            assert m.headers == {"A": "1", "B-Two": "two words"}
        finally:
            await nc.close()

    run(body())


def test_nats_py_large_message(srv):
    async def body():
        nc = await srv.nc()
        try:
            assert nc.max_payload == 1048576
            sub = await nc.subscribe("py.big")
            await settle(nc)
            data = bytes(range(256)) * 4000
            await nc.publish("py.big", data)
            (m,) = await collect(sub, 1)
            assert m.data == data
        finally:
            await nc.close()

    run(body())


def test_nats_py_auto_unsubscribe(srv):
    async def body():
        nc = await srv.nc()
        try:
            sub = await nc.subscribe("py.auto")
            await sub.unsubscribe(limit=3)
            await settle(nc)
            for i in range(6):
                await nc.publish("py.auto", str(i).encode())
            msgs = await collect(sub, 3)
            assert [m.data for m in msgs] == [b"0", b"1", b"2"]
        finally:
            await nc.close()

    run(body())
