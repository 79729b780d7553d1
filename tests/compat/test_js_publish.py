"""Publishing into streams: PubAck wire form, Nats-Msg-Id dedup, Nats-Expected-* checks, rollups, per-message TTL
and subject delete markers. Raw sockets where the exact bytes matter, nats-py elsewhere; both servers.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time

import pytest

from .harness import api_error, hpub, js_api, js_client, pub, read_msg, run, wait_until

API = "$JS.API"


async def create(nc, name: str, **cfg) -> dict:
    cfg.setdefault("subjects", [f"{name.lower()}.>"])
    resp = await js_api(nc, f"{API}.STREAM.CREATE.{name}", {"name": name, **cfg})
    assert "error" not in resp, resp
    return resp


async def publish(nc, subject: str, payload: bytes = b"x", headers: dict | None = None) -> dict:
    reply = await nc.request(subject, payload, headers=headers, timeout=2)
    return json.loads(reply.data)


async def state(nc, name: str) -> dict:
    return (await js_api(nc, f"{API}.STREAM.INFO.{name}"))["state"]


async def get(nc, name: str, **req) -> dict:
    return (await js_api(nc, f"{API}.STREAM.MSG.GET.{name}", req)).get("message")


def hdr_block(*lines: str) -> bytes:
    return ("NATS/1.0\r\n" + "".join(f"{line}\r\n" for line in lines) + "\r\n").encode()


def make_stream(srv, name: str, **cfg):
    async def body():
        async with js_client(srv) as (nc, _js):
            await create(nc, name, **cfg)

    run(body())


def raw_publish(raw, subject: str, payload: bytes, headers: bytes | None = None) -> bytes:
    """Publish with a reply inbox on a raw connection; return the exact reply payload."""
    raw.send(b"SUB _INBOX.rawpub 77\r\n")
    if headers is None:
        raw.send(pub(subject, payload, reply="_INBOX.rawpub"))
    else:
        raw.send(hpub(subject, headers, payload, reply="_INBOX.rawpub"))
    msg = read_msg(raw)
    raw.send(b"UNSUB 77\r\n")
    assert (msg.op, msg.subject, msg.sid) == ("MSG", "_INBOX.rawpub", "77"), msg
    return msg.payload


# --------------------------------------------------------------------------------------------------
# PubAck


def test_puback_exact_wire(jsrv):
    make_stream(jsrv, "PA1")
    with jsrv.client() as c:
        c.send(b"SUB _INBOX.pa1 5\r\n" + pub("pa1.x", b"hello", reply="_INBOX.pa1"))
        c.expect(rb'MSG _INBOX\.pa1 5 24\r\n\{"stream":"PA1","seq":1\}\r\n')
        c.send(pub("pa1.y", b"", reply="_INBOX.pa1"))
        c.expect(rb'MSG _INBOX\.pa1 5 24\r\n\{"stream":"PA1","seq":2\}\r\n')


def test_publish_without_reply_is_stored_but_not_acked(jsrv):
    make_stream(jsrv, "PA2")
    with jsrv.client() as c:
        c.send(b"SUB pa2.> 2\r\n" + pub("pa2.a", b"quiet"))
        msgs = c.msgs_until_pong()
        # only our own publish comes back through the plain subscription; no PubAck arrives
        assert [(m.subject, m.reply, m.payload) for m in msgs] == [("pa2.a", None, b"quiet")]
        time.sleep(0.2)  # proves a negative: no late PubAck
        assert c.msgs_until_pong() == []

    async def stored():
        async with js_client(jsrv) as (nc, _js):
            return (await state(nc, "PA2"))["messages"]

    wait_until(lambda: run(stored()) == 1, timeout=3, msg="unacked publish stored")


def test_publish_to_subject_without_stream(jsrv):
    async def body():
        import nats.js.errors

        async with js_client(jsrv) as (_nc, js):
            with pytest.raises(nats.js.errors.NoStreamResponseError):
                await js.publish("pa3.nostream", b"x")

    run(body())


def test_nats_py_puback_fields(jsrv):
    async def body():
        async with js_client(jsrv) as (nc, js):
            await create(nc, "PA4")
            ack = await js.publish("pa4.a", b"1")
            assert (ack.stream, ack.seq, ack.duplicate) == ("PA4", 1, None)
            ack = await js.publish("pa4.a", b"2", stream="PA4")
            assert ack.seq == 2

    run(body())


# --------------------------------------------------------------------------------------------------
# dedup


def test_msg_id_dedup_duplicate_form(jsrv):
    make_stream(jsrv, "PD1")
    with jsrv.client() as c:
        h = hdr_block("Nats-Msg-Id: m-1")
        assert raw_publish(c, "pd1.a", b"o1", h) == b'{"stream":"PD1","seq":1}'
        assert raw_publish(c, "pd1.a", b"o1", h) == b'{"stream":"PD1","seq":1,"duplicate": true}'
        # the same id on another subject of the stream is a duplicate as well
        assert raw_publish(c, "pd1.b", b"other", h) == b'{"stream":"PD1","seq":1,"duplicate": true}'
        assert raw_publish(c, "pd1.a", b"o2", hdr_block("Nats-Msg-Id: m-2")) == b'{"stream":"PD1","seq":2}'

    async def body():
        async with js_client(jsrv) as (nc, js):
            ack = await js.publish("pd1.a", b"again", headers={"Nats-Msg-Id": "m-2"})
            assert (ack.seq, ack.duplicate) == (2, True)
            st = await state(nc, "PD1")
            assert (st["messages"], st["last_seq"]) == (2, 2)

    run(body())


def test_dedup_window_expires(jsrv):
    async def body():
        async with js_client(jsrv) as (nc, js):
            resp = await create(nc, "PD2", duplicate_window=1_000_000_000)
            assert resp["config"]["duplicate_window"] == 1_000_000_000
            assert (await js.publish("pd2.a", b"x", headers={"Nats-Msg-Id": "w"})).seq == 1
            assert (await js.publish("pd2.a", b"x", headers={"Nats-Msg-Id": "w"})).duplicate is True
            deadline = time.monotonic() + 4
            while True:
                await asyncio.sleep(0.2)
                ack = await js.publish("pd2.a", b"x", headers={"Nats-Msg-Id": "w"})
                if not ack.duplicate:
                    break
                assert time.monotonic() < deadline, "the id never left the duplicate window"
            assert ack.seq == 2

    run(body())


# --------------------------------------------------------------------------------------------------
# Nats-Expected-*


def error_ack(stream: str, code: int, err_code: int, description: str) -> bytes:
    body = {"error": {"code": code, "err_code": err_code, "description": description}, "stream": stream, "seq": 0}
    return json.dumps(body, separators=(",", ":")).encode()


def test_expected_stream(jsrv):
    make_stream(jsrv, "PE1")
    with jsrv.client() as c:
        assert raw_publish(c, "pe1.a", b"x", hdr_block("Nats-Expected-Stream: PE1")) == b'{"stream":"PE1","seq":1}'
        assert raw_publish(c, "pe1.a", b"x", hdr_block("Nats-Expected-Stream: WRONG")) == \
            error_ack("PE1", 400, 10060, "expected stream does not match")


def test_expected_last_sequence(jsrv):
    make_stream(jsrv, "PE2")
    with jsrv.client() as c:
        assert raw_publish(c, "pe2.a", b"x", hdr_block("Nats-Expected-Last-Sequence: 0")) == \
            b'{"stream":"PE2","seq":1}'
        assert raw_publish(c, "pe2.b", b"x", hdr_block("Nats-Expected-Last-Sequence: 1")) == \
            b'{"stream":"PE2","seq":2}'
        assert raw_publish(c, "pe2.a", b"x", hdr_block("Nats-Expected-Last-Sequence: 1")) == \
            error_ack("PE2", 400, 10071, "wrong last sequence: 2")


def test_expected_last_subject_sequence(jsrv):
    make_stream(jsrv, "PE3")
    with jsrv.client() as c:
        seq0 = hdr_block("Nats-Expected-Last-Subject-Sequence: 0")
        assert raw_publish(c, "pe3.a", b"x", seq0) == b'{"stream":"PE3","seq":1}'
        assert raw_publish(c, "pe3.b", b"x", seq0) == b'{"stream":"PE3","seq":2}'
        # 0 means "no message on this subject yet"
        assert raw_publish(c, "pe3.a", b"x", seq0) == error_ack("PE3", 400, 10071, "wrong last sequence: 1")
        assert raw_publish(c, "pe3.a", b"x", hdr_block("Nats-Expected-Last-Subject-Sequence: 1")) == \
            b'{"stream":"PE3","seq":3}'
        assert raw_publish(c, "pe3.b", b"x", hdr_block("Nats-Expected-Last-Subject-Sequence: 3")) == \
            error_ack("PE3", 400, 10071, "wrong last sequence: 2")
        # the check may name another (wildcard) subject
        h = hdr_block("Nats-Expected-Last-Subject-Sequence: 3", "Nats-Expected-Last-Subject-Sequence-Subject: pe3.*")
        assert raw_publish(c, "pe3.c", b"x", h) == b'{"stream":"PE3","seq":4}'
        h = hdr_block("Nats-Expected-Last-Subject-Sequence: 3", "Nats-Expected-Last-Subject-Sequence-Subject: pe3.*")
        assert raw_publish(c, "pe3.c", b"x", h) == error_ack("PE3", 400, 10071, "wrong last sequence: 4")


def test_expected_last_msg_id(jsrv):
    make_stream(jsrv, "PE4")
    with jsrv.client() as c:
        assert raw_publish(c, "pe4.a", b"x", hdr_block("Nats-Msg-Id: m-2")) == b'{"stream":"PE4","seq":1}'
        assert raw_publish(c, "pe4.a", b"x", hdr_block("Nats-Expected-Last-Msg-Id: m-2")) == \
            b'{"stream":"PE4","seq":2}'
        # the previous message had no id: the actual value in the error is empty
        assert raw_publish(c, "pe4.a", b"x", hdr_block("Nats-Expected-Last-Msg-Id: nope")) == \
            error_ack("PE4", 400, 10070, "wrong last msg ID: ")
        assert raw_publish(c, "pe4.a", b"x", hdr_block("Nats-Msg-Id: m-3")) == b'{"stream":"PE4","seq":3}'
        assert raw_publish(c, "pe4.a", b"x", hdr_block("Nats-Expected-Last-Msg-Id: m-2")) == \
            error_ack("PE4", 400, 10070, "wrong last msg ID: m-3")


def test_request_headers_are_stored_with_the_message(jsrv):
    async def body():
        async with js_client(jsrv) as (nc, _js):
            await create(nc, "PE5")
            hdrs = {"Nats-Expected-Stream": "PE5", "Nats-Msg-Id": "id-1", "X-App": "v"}
            assert await publish(nc, "pe5.a", b"body", headers=hdrs) == {"stream": "PE5", "seq": 1}
            msg = await get(nc, "PE5", seq=1)
            stored = base64.b64decode(msg["hdrs"])
            assert stored.startswith(b"NATS/1.0\r\n") and stored.endswith(b"\r\n\r\n")
            lines = stored.split(b"\r\n")[1:-2]
            assert sorted(lines) == [b"Nats-Expected-Stream: PE5", b"Nats-Msg-Id: id-1", b"X-App: v"]

    run(body())


def test_failed_expectation_stores_nothing(jsrv):
    async def body():
        import nats.js.errors

        async with js_client(jsrv) as (nc, js):
            await create(nc, "PE6")
            await js.publish("pe6.a", b"1")
            with pytest.raises(nats.js.errors.APIError) as exc:
                await js.publish("pe6.a", b"2", headers={"Nats-Expected-Last-Sequence": "5"})
            assert (exc.value.code, exc.value.err_code) == (400, 10071)
            with pytest.raises(nats.js.errors.APIError) as exc:
                await js.publish("pe6.a", b"3", stream="OTHER")
            assert exc.value.err_code == 10060
            st = await state(nc, "PE6")
            assert (st["messages"], st["last_seq"]) == (1, 1)

    run(body())


# --------------------------------------------------------------------------------------------------
# rollup


def test_rollup_sub_and_all(jsrv):
    async def body():
        async with js_client(jsrv) as (nc, _js):
            await create(nc, "PR1", allow_rollup_hdrs=True)
            for s in ("a", "a", "b", "a", "b"):
                await publish(nc, f"pr1.{s}")
            ack = await publish(nc, "pr1.a", b"snap", headers={"Nats-Rollup": "sub"})
            assert ack == {"stream": "PR1", "seq": 6}
            st = (await js_api(nc, f"{API}.STREAM.INFO.PR1", {"subjects_filter": ">"}))["state"]
            assert st["subjects"] == {"pr1.a": 1, "pr1.b": 2} and st["messages"] == 3
            ack = await publish(nc, "pr1.c", b"all", headers={"Nats-Rollup": "all"})
            assert ack == {"stream": "PR1", "seq": 7}
            st = await state(nc, "PR1")
            assert (st["messages"], st["first_seq"], st["last_seq"]) == (1, 7, 7)
            msg = await get(nc, "PR1", seq=7)
            assert base64.b64decode(msg["hdrs"]) == b"NATS/1.0\r\nNats-Rollup: all\r\n\r\n"

    run(body())


def test_rollup_errors(jsrv):
    async def body():
        async with js_client(jsrv) as (nc, _js):
            await create(nc, "PR2")
            await create(nc, "PR3", allow_rollup_hdrs=True)
            assert await publish(nc, "pr2.a", headers={"Nats-Rollup": "sub"}) == {
                "error": {"code": 500, "err_code": 10111, "description": "rollup not permitted"},
                "stream": "PR2", "seq": 0}
            assert await publish(nc, "pr3.a", headers={"Nats-Rollup": "bogus"}) == {
                "error": {"code": 500, "err_code": 10111, "description": 'rollup value invalid: "bogus"'},
                "stream": "PR3", "seq": 0}
            assert (await state(nc, "PR2"))["messages"] == 0
            assert (await state(nc, "PR3"))["messages"] == 0

    run(body())


# --------------------------------------------------------------------------------------------------
# per-message TTL and subject delete markers


def test_msg_ttl_disabled_10166(jsrv):
    make_stream(jsrv, "PT1")
    with jsrv.client() as c:
        assert raw_publish(c, "pt1.a", b"x", hdr_block("Nats-TTL: 5s")) == \
            error_ack("PT1", 400, 10166, "per-message TTL is disabled")


def test_msg_ttl_values(jsrv):
    make_stream(jsrv, "PT2", allow_msg_ttl=True)
    with jsrv.client() as c:
        seq = 0
        for good in ("2", "5s", "never", "1h", "1"):
            seq += 1
            assert raw_publish(c, "pt2.a", b"x", hdr_block(f"Nats-TTL: {good}")) == \
                f'{{"stream":"PT2","seq":{seq}}}'.encode(), good
        for bad in ("abc", "500ms", "0", "-1", "0.5"):
            assert raw_publish(c, "pt2.a", b"x", hdr_block(f"Nats-TTL: {bad}")) == \
                error_ack("PT2", 400, 10165, "invalid per-message TTL"), bad


def test_msg_ttl_cannot_be_disabled_again(jsrv):
    async def body():
        async with js_client(jsrv) as (nc, _js):
            resp = await create(nc, "PT3", allow_msg_ttl=True)
            assert resp["config"]["allow_msg_ttl"] is True
            assert resp["config"]["metadata"]["_nats.req.level"] == "1"
            resp = await js_api(nc, f"{API}.STREAM.UPDATE.PT3", {"name": "PT3", "subjects": ["pt3.>"]})
            assert resp == {"type": "io.nats.jetstream.api.v1.stream_update_response",
                            "error": {"code": 500, "err_code": 10052,
                                      "description": "message TTL status can not be disabled"}}

    run(body())


def test_msg_ttl_expiry_observed(jsrv):
    async def body():
        async with js_client(jsrv) as (nc, js):
            await create(nc, "PT4", allow_msg_ttl=True)
            await js.publish("pt4.short", b"gone soon", msg_ttl=1)
            await publish(nc, "pt4.keep", b"stays")
            await publish(nc, "pt4.never", b"forever", headers={"Nats-TTL": "never"})
            msg = await get(nc, "PT4", seq=1)
            assert base64.b64decode(msg["hdrs"]) == b"NATS/1.0\r\nNats-TTL: 1\r\n\r\n"
            deadline = time.monotonic() + 4
            while (await state(nc, "PT4"))["messages"] != 2:
                assert time.monotonic() < deadline, "TTL'd message never expired"
                await asyncio.sleep(0.1)
            st = await state(nc, "PT4")
            assert (st["first_seq"], st["last_seq"]) == (2, 3)
            assert api_error(await js_api(nc, f"{API}.STREAM.MSG.GET.PT4", {"seq": 1}))[1] == 10037

    run(body())


def test_msg_ttl_never_outlives_max_age(jsrv):
    async def body():
        async with js_client(jsrv) as (nc, _js):
            await create(nc, "PT5", allow_msg_ttl=True, max_age=1_000_000_000)
            await publish(nc, "pt5.a", b"aging")
            await publish(nc, "pt5.b", b"pinned", headers={"Nats-TTL": "never"})
            deadline = time.monotonic() + 4
            while (await state(nc, "PT5"))["messages"] != 1:
                assert time.monotonic() < deadline, "max_age never removed the plain message"
                await asyncio.sleep(0.1)
            msg = await get(nc, "PT5", last_by_subj="pt5.b")
            assert msg["seq"] == 2 and base64.b64decode(msg["data"]) == b"pinned"

    run(body())


def test_subject_delete_marker_config(jsrv):
    async def body():
        async with js_client(jsrv) as (nc, _js):
            resp = await js_api(nc, f"{API}.STREAM.CREATE.PM1",
                                {"name": "PM1", "subjects": ["pm1.>"], "subject_delete_marker_ttl": 500_000_000})
            assert resp == {"type": "io.nats.jetstream.api.v1.stream_create_response",
                            "error": {"code": 500, "err_code": 10052,
                                      "description": "subject delete marker TTL must be at least 1 second"}}
            resp = await create(nc, "PM1", max_age=2_000_000_000, subject_delete_marker_ttl=1_000_000_000)
            cfg = resp["config"]
            # markers imply TTLs and rollups
            assert (cfg["allow_msg_ttl"], cfg["allow_rollup_hdrs"], cfg["subject_delete_marker_ttl"]) == \
                (True, True, 1_000_000_000)
            assert cfg["duplicate_window"] == 2_000_000_000

    run(body())


@pytest.mark.parametrize("cause", ["max_age", "msg_ttl"])
def test_subject_delete_marker_placed(jsrv, cause):
    name = "PM2" if cause == "max_age" else "PM3"
    subj = f"{name.lower()}.k"

    async def body():
        async with js_client(jsrv) as (nc, _js):
            if cause == "max_age":
                await create(nc, name, max_age=1_000_000_000, subject_delete_marker_ttl=1_000_000_000)
                await publish(nc, subj, b"v")
            else:
                await create(nc, name, allow_msg_ttl=True, subject_delete_marker_ttl=1_000_000_000)
                await publish(nc, subj, b"v", headers={"Nats-TTL": "1s"})
            deadline = time.monotonic() + 4
            while True:
                msg = await get(nc, name, last_by_subj=subj)
                if msg and msg["seq"] == 2:
                    break
                assert time.monotonic() < deadline, f"no marker; last {msg!r}"
                await asyncio.sleep(0.05)
            assert msg["subject"] == subj and "data" not in msg
            hdr = base64.b64decode(msg["hdrs"])
            assert hdr == b"NATS/1.0\r\nNats-Marker-Reason: MaxAge\r\nNats-TTL: 1s\r\nNats-Rollup: sub\r\n\r\n", hdr
            # the marker expires by its own TTL
            while (await state(nc, name))["messages"]:
                assert time.monotonic() < deadline + 3, "marker never expired"
                await asyncio.sleep(0.1)
            st = await state(nc, name)
            assert (st["first_seq"], st["last_seq"]) == (3, 2)

    run(body())
