"""Stream `republish` and `subject_transform` (nats-server stream.go checkStreamCfg and processJetStreamMsg): the
config checks and how the config is written back, the republished message and its headers (full and headers only),
the transform applied before the store, and the implicit republish a transform makes of `>` to `>`. Both servers.
"""

from __future__ import annotations

import base64
import json

from nats.errors import TimeoutError as NatsTimeout

from .harness import RFC3339_NS, api_error, js_api, js_client, run
from .test_js_consumers import API, consumer


async def create(nc, name: str, **cfg) -> dict:
    return await js_api(nc, f"{API}.STREAM.CREATE.{name}", {"name": name, **cfg})


async def stored_subject(nc, stream_name: str, seq: int) -> str:
    resp = await js_api(nc, f"{API}.STREAM.MSG.GET.{stream_name}", {"seq": seq})
    return resp["message"]["subject"]


def test_republish_config_checks(jsrv):
    async def body():
        async with js_client(jsrv) as (nc, _js):
            resp = await create(nc, "RPC1", subjects=["rpc1.>"], republish={"dest": "out1.>"})
            assert resp["config"]["republish"] == {"src": ">", "dest": "out1.>"}
            resp = await create(nc, "RPC2", subjects=["rpc2.>"],
                                republish={"src": "rpc2.a", "dest": "out2.a", "headers_only": True})
            assert resp["config"]["republish"] == {"src": "rpc2.a", "dest": "out2.a", "headers_only": True}
            assert api_error(await create(nc, "RPC3", subjects=["rpc3.>"], republish={"dest": "rpc3.x"})) == (
                500, 10052, "stream configuration for republish destination forms a cycle")
            assert api_error(await create(nc, "RPC4", subjects=["rpc4.>"],
                                          republish={"src": "rpc4.*", "dest": "out4.>"})) == (
                500, 10052, "stream configuration for republish with transform from 'rpc4.*' to 'out4.>' not valid")
            assert api_error(await create(nc, "RPC5", subjects=["rpc5.>"], republish={"dest": "out5.>"},
                                          pedantic=True)) == (
                400, 10157, "pedantic mode: republish source can not be empty")

    run(body())


def test_republish_headers_and_sequences(jsrv):
    async def body():
        async with js_client(jsrv) as (nc, _js):
            assert "error" not in await create(nc, "RPM", subjects=["rpm.>"], republish={"src": "rpm.>",
                                                                                         "dest": "rpmout.>"})
            sub = await nc.subscribe("rpmout.>")
            await nc.flush()
            await nc.request("rpm.a", b"one", headers={"X-App": "1"}, timeout=2)
            await nc.request("rpm.b", b"two", timeout=2)
            await nc.request("rpm.a", b"three", timeout=2)
            got = [await sub.next_msg(timeout=2) for _ in range(3)]
            # the source's `>` carries the rest of the subject over
            assert [(m.subject, m.data) for m in got] == [("rpmout.a", b"one"), ("rpmout.b", b"two"),
                                                         ("rpmout.a", b"three")]
            for m in got:
                assert RFC3339_NS.match(m.headers.pop("Nats-Time-Stamp"))
            assert [m.headers for m in got] == [
                {"X-App": "1", "Nats-Stream": "RPM", "Nats-Subject": "rpm.a", "Nats-Sequence": "1",
                 "Nats-Last-Sequence": "0"},
                {"Nats-Stream": "RPM", "Nats-Subject": "rpm.b", "Nats-Sequence": "2", "Nats-Last-Sequence": "0"},
                {"Nats-Stream": "RPM", "Nats-Subject": "rpm.a", "Nats-Sequence": "3", "Nats-Last-Sequence": "1"},
            ]
            # the republished copy is not stored again, and nothing else was
            info = await js_api(nc, f"{API}.STREAM.INFO.RPM")
            assert info["state"]["messages"] == 3

    run(body())


def test_republish_headers_only_and_source_filter(jsrv):
    async def body():
        async with js_client(jsrv) as (nc, _js):
            assert "error" not in await create(nc, "RPH", subjects=["rph.>"], republish={
                "src": "rph.keep.*", "dest": "rphout.{{wildcard(1)}}", "headers_only": True})
            sub = await nc.subscribe("rphout.>")
            await nc.flush()
            await nc.request("rph.skip.x", b"not republished", timeout=2)
            await nc.request("rph.keep.k1", b"12345", timeout=2)
            m = await sub.next_msg(timeout=2)
            assert (m.subject, m.data) == ("rphout.k1", b"")
            assert (m.headers["Nats-Msg-Size"], m.headers["Nats-Sequence"], m.headers["Nats-Subject"]) == (
                "5", "2", "rph.keep.k1")
            try:
                extra = await sub.next_msg(timeout=0.3)
            except NatsTimeout:
                extra = None
            assert extra is None

    run(body())


def test_subject_transform_applies_before_the_store(jsrv):
    async def body():
        async with js_client(jsrv) as (nc, _js):
            resp = await create(nc, "STX", subjects=["stx.in.*", "stx.other"],
                                subject_transform={"src": "stx.in.*", "dest": "stx.out.{{wildcard(1)}}.x"})
            assert resp["config"]["subject_transform"] == {"src": "stx.in.*", "dest": "stx.out.{{wildcard(1)}}.x"}
            for subject in ("stx.in.a", "stx.other", "stx.in.b"):
                ack = json.loads((await nc.request(subject, b"m", timeout=2)).data)
                assert "error" not in ack, ack
            assert [await stored_subject(nc, "STX", seq) for seq in (1, 2, 3)] == [
                "stx.out.a.x", "stx.other", "stx.out.b.x"]
            # consumers see the stored subjects
            resp = await consumer(nc, "STX", "C", filter_subject="stx.out.*.x")
            assert resp["num_pending"] == 2

    run(body())


def test_subject_transform_config_errors(jsrv):
    async def body():
        async with js_client(jsrv) as (nc, _js):
            assert api_error(await create(nc, "STE1", subjects=["ste1.>"],
                                          subject_transform={"src": "ste1..x", "dest": "a.>"})) == (
                400, 10155, "stream transform source: invalid subject ste1..x")
            assert api_error(await create(nc, "STE2", subjects=["ste2.*"],
                                          subject_transform={"src": "ste2.*", "dest": "a.{{nope(1)}}"})) == (
                400, 10156, "stream transform: invalid mapping destination: unknown function in {{nope(1)}}")
            assert api_error(await create(nc, "STE3", subjects=["ste3.*"],
                                          subject_transform={"src": "ste3.*", "dest": "a.$2"}))[1] == 10156

    run(body())


def test_transform_with_republish_everything_is_implicit(jsrv):
    async def body():
        async with js_client(jsrv) as (nc, _js):
            resp = await create(nc, "STI", subjects=["sti.>"], subject_transform={"src": "sti.>", "dest": "stiout.>"},
                                republish={"src": ">", "dest": ">"})
            assert resp["config"]["republish"] == {"src": "stiout.>", "dest": "stiout.>"}
            sub = await nc.subscribe("stiout.>")
            await nc.flush()
            await nc.request("sti.a", b"x", timeout=2)
            m = await sub.next_msg(timeout=2)
            assert (m.subject, m.headers["Nats-Subject"]) == ("stiout.a", "stiout.a")

    run(body())


def test_kv_republish(jsrv):
    """nats.py's KVTest::test_kv_republish: a bucket whose puts are republished, in full and headers only."""

    async def body():
        import nats.js.api

        async with js_client(jsrv) as (nc, js):
            kv = await js.create_key_value(bucket="RPKV", republish=nats.js.api.RePublish(src=">", dest="rpkv.>"))
            assert (await js.stream_info("KV_RPKV")).config.republish is not None
            sub = await nc.subscribe("rpkv.>")
            await nc.flush()
            await kv.put("hello.world", b"Hello World!")
            m = await sub.next_msg(timeout=2)
            assert (m.subject, m.data) == ("rpkv.$KV.RPKV.hello.world", b"Hello World!")
            assert "Nats-Msg-Size" not in m.headers
            # the put is stored in the bucket as well
            got = await js_api(nc, f"{API}.STREAM.MSG.GET.KV_RPKV", {"last_by_subj": "$KV.RPKV.hello.world"})
            assert base64.b64decode(got["message"]["data"]) == b"Hello World!"
            kv = await js.create_key_value(bucket="RPKVH", republish=nats.js.api.RePublish(
                src=">", dest="rpkvh.>", headers_only=True))
            sub = await nc.subscribe("rpkvh.>")
            await nc.flush()
            await kv.put("hello.world", b"Hello World!")
            m = await sub.next_msg(timeout=2)
            assert m.data == b""
            assert (m.headers["Nats-Sequence"], m.headers["Nats-Msg-Size"], m.headers["Nats-Stream"]) == (
                "1", "12", "KV_RPKVH")

    run(body())


def test_empty_destinations_are_kept_and_change_nothing(jsrv):
    """nats-server builds no transform for an empty `dest` (NewSubjectTransform), and writes the config back as
    given."""

    async def body():
        async with js_client(jsrv) as (nc, _js):
            resp = await create(nc, "STN", subjects=["stn.>"], subject_transform={"src": "stn.a", "dest": ""},
                                republish={"src": "stn.>", "dest": ""})
            assert (resp["config"]["subject_transform"], resp["config"]["republish"]) == (
                {"src": "stn.a", "dest": ""}, {"src": "stn.>", "dest": ""})
            ack = json.loads((await nc.request("stn.a", b"x", timeout=2)).data)
            assert ack["seq"] == 1
            assert await stored_subject(nc, "STN", 1) == "stn.a"

    run(body())


def test_transform_and_republish_survive_a_restart(fresh, tmp_path):
    async def publish(srv, create: bool):
        async with js_client(srv) as (nc, _js):
            if create:
                assert "error" not in await create_stream(nc)
            sub = await nc.subscribe("strout.>")
            await nc.flush()
            ack = json.loads((await nc.request("str.x", b"1", timeout=2)).data)
            m = await sub.next_msg(timeout=2)
            return ack["seq"], m.subject, m.headers["Nats-Subject"], m.headers["Nats-Last-Sequence"]

    def create_stream(nc):
        return create(nc, "STR", subjects=["str.*"], subject_transform={"src": "str.*", "dest": "strt.$1"},
                      republish={"src": "strt.>", "dest": "strout.>"})

    store = tmp_path / "store"
    first = fresh(jetstream=True, store_dir=store)
    assert run(publish(first, True)) == (1, "strout.x", "strt.x", "0")
    first.stop()
    again = fresh(jetstream=True, store_dir=store)
    assert run(publish(again, False)) == (2, "strout.x", "strt.x", "1")
