"""Bad input to the JetStream API and to ack/flow-control subjects: a clear typed error (or, where nats-server
gives none, silence), never a crash or a hang. Both servers.
"""

from __future__ import annotations

import json
import random

import pytest

from .harness import api_error, js_api, js_client, run

API = "$JS.API"
ZERO = "0001-01-01T00:00:00Z"


def setup_stream(srv, name: str):
    async def body():
        async with js_client(srv) as (nc, _js):
            if "error" in await js_api(nc, f"{API}.STREAM.INFO.{name}"):
                resp = await js_api(nc, f"{API}.STREAM.CREATE.{name}",
                                    {"name": name, "subjects": [f"{name.lower()}.>"]})
                assert "error" not in resp, resp
                await nc.request(f"{name.lower()}.a", b"x", timeout=2)
                resp = await js_api(nc, f"{API}.CONSUMER.CREATE.{name}.C",
                                    {"stream_name": name, "config": {"name": "C", "durable_name": "C",
                                                                     "ack_policy": "explicit"}})
                assert "error" not in resp, resp

    run(body())


# (API subject, response type, extra fields nats-server adds to the error reply)
BODY_ENDPOINTS = [
    ("STREAM.CREATE.BX2", "stream_create_response", {}),
    ("STREAM.UPDATE.BX1", "stream_update_response", {}),
    ("STREAM.INFO.BX1", "stream_info_response", {"total": 0, "offset": 0, "limit": 0}),
    ("STREAM.NAMES", "stream_names_response", {"total": 0, "offset": 0, "limit": 0, "streams": None}),
    ("STREAM.LIST", "stream_list_response", {"total": 0, "offset": 0, "limit": 0, "streams": []}),
    ("STREAM.PURGE.BX1", "stream_purge_response", {"purged": 0}),
    ("STREAM.MSG.GET.BX1", "stream_msg_get_response", {}),
    ("STREAM.MSG.DELETE.BX1", "stream_msg_delete_response", {}),
    ("CONSUMER.CREATE.BX1.D", "consumer_create_response", {}),
    ("CONSUMER.DURABLE.CREATE.BX1.D", "consumer_create_response", {}),
    ("CONSUMER.NAMES.BX1", "consumer_names_response", {"total": 0, "offset": 0, "limit": 0, "consumers": []}),
    ("CONSUMER.LIST.BX1", "consumer_list_response", {"total": 0, "offset": 0, "limit": 0, "consumers": []}),
    ("CONSUMER.PAUSE.BX1.C", "consumer_pause_response", {"paused": False, "pause_until": ZERO}),
]


@pytest.mark.parametrize("body", [b"{", b"[1,2]", b'{"name": 5}'], ids=["truncated", "array", "wrong-type"])
def test_malformed_json_bodies(jsrv, body):
    setup_stream(jsrv, "BX1")

    async def check():
        async with js_client(jsrv) as (nc, _js):
            for subject, typ, extra in BODY_ENDPOINTS:
                resp = await js_api(nc, f"{API}.{subject}", body)
                code, err_code, desc = api_error(resp)
                assert (code, err_code) == (400, 10025), (subject, resp)
                assert desc.startswith("invalid JSON: "), (subject, desc)
                expected = {"type": f"io.nats.jetstream.api.v1.{typ}",
                            "error": {"code": 400, "err_code": 10025, "description": desc}, **extra}
                assert resp == expected, subject
            # nothing changed
            info = await js_api(nc, f"{API}.STREAM.INFO.BX1")
            assert info["state"]["messages"] == 1 and info["state"]["consumer_count"] == 1
            assert api_error(await js_api(nc, f"{API}.STREAM.INFO.BX2"))[1] == 10059

    run(check())


def test_body_on_bodyless_requests(jsrv):
    setup_stream(jsrv, "BX1")

    async def check():
        async with js_client(jsrv) as (nc, _js):
            for subject, typ in (("CONSUMER.INFO.BX1.C", "consumer_info_response"),
                                 ("CONSUMER.DELETE.BX1.C", "consumer_delete_response")):
                resp = await js_api(nc, f"{API}.{subject}", {"x": 1})
                assert resp == {"type": f"io.nats.jetstream.api.v1.{typ}",
                                "error": {"code": 400, "err_code": 10038,
                                          "description": "expected an empty request payload"}}, subject
            assert "error" not in await js_api(nc, f"{API}.CONSUMER.INFO.BX1.C")

    run(check())


def test_unknown_fields_and_bad_values_in_config(jsrv):
    async def check():
        async with js_client(jsrv) as (nc, _js):
            resp = await js_api(nc, f"{API}.STREAM.CREATE.BX3", {"name": "BX3", "subjects": ["bx3.>"],
                                                                 "bogus_field": 1})
            code, err_code, desc = api_error(resp)
            # strict parsing: an unknown field is refused and named
            assert (code, err_code) == (400, 10025) and desc.startswith("invalid JSON: ") and "bogus_field" in desc
            resp = await js_api(nc, f"{API}.STREAM.CREATE.BX3", {"name": "BX3", "subjects": ["bx3.>"],
                                                                 "retention": "bogus"})
            assert api_error(resp)[:2] == (400, 10025)
            resp = await js_api(nc, f"{API}.STREAM.CREATE.BX3", {"name": "BX3", "subjects": ["bx3.>"],
                                                                 "max_msgs": "ten"})
            assert api_error(resp)[:2] == (400, 10025)
            resp = await js_api(nc, f"{API}.STREAM.CREATE.BX3", {"name": "BX3", "subjects": ["bx3.>"],
                                                                 "max_age": -1})
            assert api_error(resp) == (500, 10052, "max age can not be negative")
            resp = await js_api(nc, f"{API}.STREAM.CREATE.BX3", {"name": "BX3", "subjects": ["bx3..x"]})
            assert api_error(resp) == (500, 10052, "invalid subject")
            resp = await js_api(nc, f"{API}.CONSUMER.CREATE.BX1.E",
                                {"stream_name": "BX1", "config": {"name": "E", "ack_policy": "explicit", "zzz": 1}})
            code, err_code, desc = api_error(resp)
            assert (code, err_code) == (400, 10025) and "zzz" in desc
            resp = await js_api(nc, f"{API}.CONSUMER.CREATE.BX1.E",
                                {"stream_name": "BX1", "config": {"name": "E", "ack_policy": "bogus"}})
            assert api_error(resp)[:2] == (400, 10025)
            assert api_error(await js_api(nc, f"{API}.STREAM.INFO.BX3"))[1] == 10059

    setup_stream(jsrv, "BX1")
    run(check())


def test_msg_get_bad_requests(jsrv):
    setup_stream(jsrv, "BX1")

    async def check():
        async with js_client(jsrv) as (nc, _js):
            bad = {"type": "io.nats.jetstream.api.v1.stream_msg_get_response",
                   "error": {"code": 400, "err_code": 10003, "description": "bad request"}}
            assert await js_api(nc, f"{API}.STREAM.MSG.GET.BX1", {}) == bad
            assert await js_api(nc, f"{API}.STREAM.MSG.GET.BX1", {"seq": 1, "last_by_subj": "bx1.a"}) == bad

    run(check())


def test_garbage_on_api_ack_and_fc_subjects_is_survived(jsrv):
    setup_stream(jsrv, "BX5")  # its own stream: garbage may purge it
    rng = random.Random(20261126)
    subjects = [f"{API}.{s}".replace("BX1", "BX5") for s, _t, _e in BODY_ENDPOINTS] + [
        f"{API}.CONSUMER.MSG.NEXT.BX5.C", f"{API}.DIRECT.GET.BX5", f"{API}.INFO", f"{API}.STREAM.DELETE.NOPE",
        "$JS.ACK.BX5.C.1.1.1.1.0", "$JS.ACK.BX5.C", "$JS.ACK.BX5.NOPE.1.99.1.1.0", "$JS.ACK.a.b.c.d.e.f.g.h.i.j.k",
        "$JS.FC.BX5.C.abcd", f"{API}.STREAM.CREATE", f"{API}.CONSUMER.CREATE"]
    bodies = [b"", b"\x00", b"-NAK {bad", b"+NXT {\"batch\":-5}", b"+TERM", b"-NAK {\"delay\": -1}",
              b'{"batch": 1e400}', b'{"seq": -1}', b'{"seq": 18446744073709551616}', b"\xff" * 64]
    bodies += [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300))) for _ in range(20)]

    async def blast():
        async with js_client(jsrv) as (nc, _js):
            inbox = nc.new_inbox()
            replies = await nc.subscribe(inbox)
            for subject in subjects:
                for body in bodies:
                    await nc.publish(subject, body, reply=inbox)
            await nc.flush()
            # every JSON reply is well formed; status replies have no body
            while True:
                try:
                    m = await replies.next_msg(timeout=1.0)
                except Exception:  # nats.errors.TimeoutError: the server has said all it will say
                    break
                if m.reply and m.reply.startswith("$JS.ACK."):
                    continue  # a pull (or +NXT) that read as a valid request got the stream's message
                if m.data:
                    assert isinstance(json.loads(m.data), dict), m.data[:200]
                else:
                    assert m.headers is None or "Status" in m.headers or m.headers == {}, m.headers
            # still serving; the stream and its consumer are still there (nats-server reads a non-JSON purge body
            # as "purge everything", so the message count is not checked)
            info = await js_api(nc, f"{API}.STREAM.INFO.BX5")
            assert "error" not in info and info["state"]["consumer_count"] == 1
            assert "error" not in await js_api(nc, f"{API}.CONSUMER.INFO.BX5.C")
            resp = await js_api(nc, f"{API}.STREAM.CREATE.BX4", {"name": "BX4", "subjects": ["bx4.>"]})
            assert "error" not in resp, resp
            ack = json.loads((await nc.request("bx4.a", b"ok", timeout=2)).data)
            assert ack == {"stream": "BX4", "seq": 1}

    run(blast(), timeout=60)
    assert jsrv.alive()
