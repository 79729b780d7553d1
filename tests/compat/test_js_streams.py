"""JetStream streams: create/update/info/delete/names/list, errors, purge, msg get/delete, limits, retention,
sealed/deny flags and storage types. Every scenario runs against nats-server and the hub (`-js -sd <tmp>`).

Each test uses its own stream names and subjects on the session-shared JetStream server (fixture `jsrv`).
"""

from __future__ import annotations

import asyncio
import base64
import json

import pytest

from .harness import RFC3339_NS, ZERO_TIME, api_error, eventually, js_api, js_client, run, strip_versions

API = "$JS.API"


def default_config(name: str, subjects: list[str], **changes) -> dict:
    """The normalized config nats-server answers for a stream created with only name and subjects."""
    cfg = {
        "name": name, "subjects": subjects, "retention": "limits", "max_consumers": -1, "max_msgs": -1,
        "max_bytes": -1, "max_age": 0, "max_msgs_per_subject": -1, "max_msg_size": -1, "discard": "old",
        "storage": "file", "num_replicas": 1, "duplicate_window": 120_000_000_000, "compression": "none",
        "allow_direct": False, "mirror_direct": False, "sealed": False, "deny_delete": False, "deny_purge": False,
        "allow_rollup_hdrs": False, "consumer_limits": {}, "allow_msg_ttl": False,
        "metadata": {"_nats.req.level": "0"},
    }
    cfg.update(changes)
    return cfg


EMPTY_STATE = {"messages": 0, "bytes": 0, "first_seq": 0, "first_ts": ZERO_TIME, "last_seq": 0, "last_ts": ZERO_TIME,
               "consumer_count": 0}


def file_size(subject: str, payload: bytes, hdr: bytes = b"") -> int:
    """Bytes a message counts for in a file stream (nats-server's fileStoreMsgSize)."""
    return 22 + len(subject) + len(payload) + 8 + (len(hdr) + 4 if hdr else 0)


def mem_size(subject: str, payload: bytes, hdr: bytes = b"") -> int:
    return 16 + len(subject) + len(payload) + len(hdr)


async def create(nc, name: str, **cfg) -> dict:
    cfg.setdefault("subjects", [f"{name.lower()}.>"])
    resp = await js_api(nc, f"{API}.STREAM.CREATE.{name}", {"name": name, **cfg})
    assert "error" not in resp, resp
    return resp


async def publish(nc, subject: str, payload: bytes = b"x", headers: dict | None = None) -> dict:
    """Publish with a reply inbox and return the decoded PubAck (or the publish error)."""
    reply = await nc.request(subject, payload, headers=headers, timeout=2)
    return json.loads(reply.data)


async def info(nc, name: str, body=None) -> dict:
    return await js_api(nc, f"{API}.STREAM.INFO.{name}", body)


async def state_of(nc, name: str, *keys: str) -> tuple:
    st = (await info(nc, name))["state"]
    return tuple(st[k] for k in keys)


def check_times(resp: dict):
    for key in ("created", "ts"):
        assert RFC3339_NS.match(resp[key]), resp[key]
    for key in ("first_ts", "last_ts"):
        assert RFC3339_NS.match(resp["state"][key]), resp["state"][key]


# --------------------------------------------------------------------------------------------------
# create / update / info / delete


def test_create_returns_normalized_config(jsrv):
    async def body():
        async with js_client(jsrv) as (nc, _js):
            resp = await js_api(nc, f"{API}.STREAM.CREATE.SC1", {"name": "SC1", "subjects": ["sc1.>"]})
            check_times(resp)
            assert set(resp) == {"type", "config", "created", "state", "ts", "did_create"}
            assert resp["type"] == "io.nats.jetstream.api.v1.stream_create_response"
            assert resp["did_create"] is True
            assert strip_versions(resp["config"]) == default_config("SC1", ["sc1.>"])
            assert resp["state"] == EMPTY_STATE

    run(body())


def test_create_identical_is_idempotent_different_is_10058(jsrv):
    async def body():
        async with js_client(jsrv) as (nc, _js):
            first = await create(nc, "SC2", max_msgs=10)
            again = await create(nc, "SC2", max_msgs=10)
            assert again["created"] == first["created"]
            assert again["config"] == first["config"]
            resp = await js_api(nc, f"{API}.STREAM.CREATE.SC2", {"name": "SC2", "subjects": ["sc2.>"], "max_msgs": 11})
            assert resp == {"type": "io.nats.jetstream.api.v1.stream_create_response",
                            "error": {"code": 400, "err_code": 10058,
                                      "description": "stream name already in use with a different configuration"}}

    run(body())


def test_create_name_mismatch_10056(jsrv):
    async def body():
        async with js_client(jsrv) as (nc, _js):
            resp = await js_api(nc, f"{API}.STREAM.CREATE.SC3", {"name": "OTHER", "subjects": ["sc3.>"]})
            assert resp == {"type": "io.nats.jetstream.api.v1.stream_create_response",
                            "error": {"code": 400, "err_code": 10056,
                                      "description": "stream name in subject does not match request"}}
            assert api_error(await info(nc, "SC3"))[1] == 10059
            assert api_error(await info(nc, "OTHER"))[1] == 10059

    run(body())


def test_create_bad_json_10025(jsrv):
    async def body():
        async with js_client(jsrv) as (nc, _js):
            resp = await js_api(nc, f"{API}.STREAM.CREATE.SC4", b"{not json")
            assert resp["type"] == "io.nats.jetstream.api.v1.stream_create_response"
            code, err_code, desc = api_error(resp)
            assert (code, err_code) == (400, 10025)
            # the parser's own detail follows the prefix (Go and Python word it differently)
            assert desc.startswith("invalid JSON: ") and len(desc) > len("invalid JSON: ")
            assert set(resp) == {"type", "error"}

    run(body())


def test_create_overlapping_subjects_10065(jsrv):
    async def body():
        async with js_client(jsrv) as (nc, _js):
            await create(nc, "SC5", subjects=["sc5.>"])
            for subjects in (["sc5.a"], ["sc5.*.b"], ["sc5b.ok", "sc5.x.>"], ["sc5.>"]):
                resp = await js_api(nc, f"{API}.STREAM.CREATE.SC5B", {"name": "SC5B", "subjects": subjects})
                assert resp == {"type": "io.nats.jetstream.api.v1.stream_create_response",
                                "error": {"code": 400, "err_code": 10065,
                                          "description": "subjects overlap with an existing stream"}}, subjects
            await create(nc, "SC5B", subjects=["sc5b.>"])
            # a catch-all is refused before any overlap check
            resp = await js_api(nc, f"{API}.STREAM.CREATE.SC5C", {"name": "SC5C", "subjects": [">"]})
            assert api_error(resp) == (500, 10052, "capturing all subjects requires no-ack to be true")

    run(body())


def test_update_changes_config_and_keeps_messages(jsrv):
    async def body():
        async with js_client(jsrv) as (nc, _js):
            created = await create(nc, "SU1")
            for _ in range(3):
                await publish(nc, "su1.a")
            resp = await js_api(nc, f"{API}.STREAM.UPDATE.SU1",
                                {"name": "SU1", "subjects": ["su1.>", "su1b.*"], "max_msgs": 2,
                                 "description": "updated"})
            assert resp["type"] == "io.nats.jetstream.api.v1.stream_update_response"
            assert set(resp) == {"type", "config", "created", "state", "ts"}
            assert resp["created"] == created["created"]
            assert strip_versions(resp["config"]) == default_config("SU1", ["su1.>", "su1b.*"], max_msgs=2,
                                                                    description="updated")
            # the new limit applies at once: the oldest message goes
            assert resp["state"]["messages"] == 2 and resp["state"]["first_seq"] == 2
            assert resp["state"]["last_seq"] == 3
            ack = await publish(nc, "su1b.x")
            assert ack == {"stream": "SU1", "seq": 4}

    run(body())


def test_update_errors(jsrv):
    async def body():
        async with js_client(jsrv) as (nc, _js):
            await create(nc, "SU2")
            resp = await js_api(nc, f"{API}.STREAM.UPDATE.SU2NOPE", {"name": "SU2NOPE", "subjects": ["su2nope"]})
            assert resp == {"type": "io.nats.jetstream.api.v1.stream_update_response",
                            "error": {"code": 404, "err_code": 10059, "description": "stream not found"}}
            resp = await js_api(nc, f"{API}.STREAM.UPDATE.SU2",
                                {"name": "SU2", "subjects": ["su2.>"], "storage": "memory"})
            assert resp == {"type": "io.nats.jetstream.api.v1.stream_update_response",
                            "error": {"code": 500, "err_code": 10052,
                                      "description": "stream configuration update can not change storage type"}}
            resp = await js_api(nc, f"{API}.STREAM.UPDATE.SU2", {"name": "OTHER", "subjects": ["su2.>"]})
            assert resp == {"type": "io.nats.jetstream.api.v1.stream_update_response",
                            "error": {"code": 400, "err_code": 10056,
                                      "description": "stream name in subject does not match request"}}

    run(body())


def test_info_state_and_subjects_filter(jsrv):
    async def body():
        async with js_client(jsrv) as (nc, _js):
            await create(nc, "SI1")
            await publish(nc, "si1.a", b"x")
            await publish(nc, "si1.b", b"yy")
            await publish(nc, "si1.a", b"z")
            resp = await info(nc, "SI1")
            check_times(resp)
            assert resp["type"] == "io.nats.jetstream.api.v1.stream_info_response"
            assert {k: resp[k] for k in ("total", "offset", "limit")} == {"total": 0, "offset": 0, "limit": 0}
            state = dict(resp["state"])
            assert state.pop("first_ts") <= state.pop("last_ts")
            size = file_size("si1.a", b"x") * 2 + file_size("si1.b", b"yy")
            assert state == {"messages": 3, "bytes": size, "first_seq": 1, "last_seq": 3, "num_subjects": 2,
                             "consumer_count": 0}
            resp = await info(nc, "SI1", {"subjects_filter": "si1.*"})
            assert resp["state"]["subjects"] == {"si1.a": 2, "si1.b": 1}
            assert (resp["total"], resp["offset"]) == (2, 0)
            resp = await info(nc, "SI1", {"subjects_filter": "si1.b"})
            assert resp["state"]["subjects"] == {"si1.b": 1}
            assert resp["total"] == 1

    run(body())


def test_info_not_found_10059(jsrv):
    async def body():
        async with js_client(jsrv) as (nc, _js):
            resp = await info(nc, "SI2NOPE")
            assert resp == {"type": "io.nats.jetstream.api.v1.stream_info_response",
                            "error": {"code": 404, "err_code": 10059, "description": "stream not found"},
                            "total": 0, "offset": 0, "limit": 0}

    run(body())


def test_info_deleted_details(jsrv):
    async def body():
        async with js_client(jsrv) as (nc, _js):
            await create(nc, "SI3")
            for _ in range(4):
                await publish(nc, "si3.a")
            for seq in (2, 3):
                resp = await js_api(nc, f"{API}.STREAM.MSG.DELETE.SI3", {"seq": seq})
                assert resp == {"type": "io.nats.jetstream.api.v1.stream_msg_delete_response", "success": True}
            resp = await info(nc, "SI3", {"deleted_details": True})
            assert resp["state"]["num_deleted"] == 2 and resp["state"]["deleted"] == [2, 3]
            assert resp["state"]["messages"] == 2
            plain = await info(nc, "SI3")
            assert plain["state"]["num_deleted"] == 2 and "deleted" not in plain["state"]

    run(body())


def test_delete_and_delete_not_found(jsrv):
    async def body():
        async with js_client(jsrv) as (nc, js):
            await create(nc, "SD1")
            await publish(nc, "sd1.a")
            resp = await js_api(nc, f"{API}.STREAM.DELETE.SD1")
            assert resp == {"type": "io.nats.jetstream.api.v1.stream_delete_response", "success": True}
            assert api_error(await info(nc, "SD1"))[:2] == (404, 10059)
            resp = await js_api(nc, f"{API}.STREAM.DELETE.SD1")
            assert resp == {"type": "io.nats.jetstream.api.v1.stream_delete_response",
                            "error": {"code": 404, "err_code": 10059, "description": "stream not found"}}
            # the subjects are free again: a new stream may take them
            await create(nc, "SD1B", subjects=["sd1.>"])
            assert await js.find_stream_name_by_subject("sd1.q") == "SD1B"

    run(body())


def test_names_and_list_with_subject_filter(jsrv):
    async def body():
        async with js_client(jsrv) as (nc, js):
            await create(nc, "SN1", subjects=["sn.one.>"])
            await create(nc, "SN2", subjects=["sn.two.*"])
            await create(nc, "SN3", subjects=["sn.three"], storage="memory")
            resp = await js_api(nc, f"{API}.STREAM.NAMES", {"subject": "sn.two.x"})
            assert resp == {"type": "io.nats.jetstream.api.v1.stream_names_response", "total": 1, "offset": 0,
                            "limit": 1024, "streams": ["SN2"]}
            resp = await js_api(nc, f"{API}.STREAM.NAMES", {"subject": "sn.>"})
            assert sorted(resp["streams"]) == ["SN1", "SN2", "SN3"] and resp["total"] == 3
            resp = await js_api(nc, f"{API}.STREAM.NAMES", {"subject": "nomatch.sn"})
            assert resp == {"type": "io.nats.jetstream.api.v1.stream_names_response", "total": 0, "offset": 0,
                            "limit": 1024, "streams": None}
            resp = await js_api(nc, f"{API}.STREAM.LIST", {"subject": "sn.three"})
            assert resp["type"] == "io.nats.jetstream.api.v1.stream_list_response"
            assert (resp["total"], resp["offset"], resp["limit"]) == (1, 0, 256)
            [item] = resp["streams"]
            assert item["config"] == default_config("SN3", ["sn.three"], storage="memory")
            assert item["state"] == EMPTY_STATE
            resp = await js_api(nc, f"{API}.STREAM.LIST", {"subject": "nomatch.sn"})
            assert resp == {"type": "io.nats.jetstream.api.v1.stream_list_response", "total": 0, "offset": 0,
                            "limit": 256, "streams": []}
            # all names: the shared server holds other tests' streams too
            resp = await js_api(nc, f"{API}.STREAM.NAMES", {"offset": 0})
            assert {"SN1", "SN2", "SN3"} <= set(resp["streams"]) and resp["total"] == len(resp["streams"])
            names = [s.config.name for s in await js.streams_info()]
            assert {"SN1", "SN2", "SN3"} <= set(names)

    run(body())


def test_malformed_api_subject_gets_no_reply(jsrv):
    async def body():
        import nats.errors

        async with js_client(jsrv) as (nc, _js):
            with pytest.raises(nats.errors.TimeoutError):
                await nc.request(f"{API}.STREAM.INFO", b"", timeout=0.5)

    run(body())


# --------------------------------------------------------------------------------------------------
# purge


async def filled(nc, name: str, subjects=("a", "b", "a", "b", "a")) -> None:
    await create(nc, name)
    for i, s in enumerate(subjects):
        ack = await publish(nc, f"{name.lower()}.{s}", f"m{i + 1}".encode())
        assert ack == {"stream": name, "seq": i + 1}


def test_purge_all(jsrv):
    async def body():
        async with js_client(jsrv) as (nc, _js):
            await filled(nc, "SP1")
            resp = await js_api(nc, f"{API}.STREAM.PURGE.SP1", {})
            assert resp == {"type": "io.nats.jetstream.api.v1.stream_purge_response", "success": True, "purged": 5}
            state = (await info(nc, "SP1"))["state"]
            assert (state["messages"], state["bytes"], state["first_seq"], state["last_seq"]) == (0, 0, 6, 5)
            assert await publish(nc, "sp1.a") == {"stream": "SP1", "seq": 6}
            resp = await js_api(nc, f"{API}.STREAM.PURGE.SP1")  # empty body purges everything as well
            assert resp["purged"] == 1

    run(body())


def test_purge_filter_keep_and_seq(jsrv):
    async def body():
        async with js_client(jsrv) as (nc, _js):
            await filled(nc, "SP2", subjects=("a", "b", "a", "b", "a", "c", "a"))
            resp = await js_api(nc, f"{API}.STREAM.PURGE.SP2", {"filter": "sp2.a", "keep": 1})
            assert resp == {"type": "io.nats.jetstream.api.v1.stream_purge_response", "success": True, "purged": 3}
            resp = await js_api(nc, f"{API}.STREAM.PURGE.SP2", {"filter": "sp2.b"})
            assert resp["purged"] == 2
            st = (await info(nc, "SP2", {"subjects_filter": ">"}))["state"]
            assert st["subjects"] == {"sp2.a": 1, "sp2.c": 1} and st["first_seq"] == 6
            # seq: remove everything below seq (exclusive)
            resp = await js_api(nc, f"{API}.STREAM.PURGE.SP2", {"seq": 7})
            assert resp["purged"] == 1
            st = (await info(nc, "SP2"))["state"]
            assert (st["messages"], st["first_seq"], st["last_seq"]) == (1, 7, 7)
            resp = await js_api(nc, f"{API}.STREAM.PURGE.SP2", {"keep": 5})
            assert resp["purged"] == 0

    run(body())


def test_purge_errors(jsrv):
    async def body():
        async with js_client(jsrv) as (nc, _js):
            await create(nc, "SP3")
            resp = await js_api(nc, f"{API}.STREAM.PURGE.SP3", b"{bad")
            assert resp["type"] == "io.nats.jetstream.api.v1.stream_purge_response" and resp["purged"] == 0
            assert api_error(resp)[:2] == (400, 10025)
            resp = await js_api(nc, f"{API}.STREAM.PURGE.SP3NOPE", {})
            assert resp == {"type": "io.nats.jetstream.api.v1.stream_purge_response",
                            "error": {"code": 404, "err_code": 10059, "description": "stream not found"},
                            "purged": 0}

    run(body())


# --------------------------------------------------------------------------------------------------
# message get / delete


def test_msg_get_seq_last_and_next_by_subject(jsrv):
    async def body():
        async with js_client(jsrv) as (nc, _js):
            await create(nc, "SG1")
            await publish(nc, "sg1.new", b"o1")
            await publish(nc, "sg1.new", b"o2")
            await publish(nc, "sg1.paid", b"p1")
            await publish(nc, "sg1.new", b"o3", headers={"Nats-Msg-Id": "m-1"})
            resp = await js_api(nc, f"{API}.STREAM.MSG.GET.SG1", {"seq": 1})
            assert resp["type"] == "io.nats.jetstream.api.v1.stream_msg_get_response"
            msg = resp["message"]
            assert RFC3339_NS.match(msg.pop("time"))
            assert msg == {"subject": "sg1.new", "seq": 1, "data": base64.b64encode(b"o1").decode()}
            msg = (await js_api(nc, f"{API}.STREAM.MSG.GET.SG1", {"last_by_subj": "sg1.new"}))["message"]
            assert msg["seq"] == 4 and base64.b64decode(msg["data"]) == b"o3"
            assert base64.b64decode(msg["hdrs"]) == b"NATS/1.0\r\nNats-Msg-Id: m-1\r\n\r\n"
            msg = (await js_api(nc, f"{API}.STREAM.MSG.GET.SG1", {"seq": 2, "next_by_subj": "sg1.paid"}))["message"]
            assert (msg["subject"], msg["seq"], msg["data"]) == ("sg1.paid", 3, base64.b64encode(b"p1").decode())
            msg = (await js_api(nc, f"{API}.STREAM.MSG.GET.SG1", {"seq": 2, "next_by_subj": "sg1.*"}))["message"]
            assert msg["seq"] == 2
            not_found = {"type": "io.nats.jetstream.api.v1.stream_msg_get_response",
                         "error": {"code": 404, "err_code": 10037, "description": "no message found"}}
            assert await js_api(nc, f"{API}.STREAM.MSG.GET.SG1", {"seq": 99}) == not_found
            assert await js_api(nc, f"{API}.STREAM.MSG.GET.SG1", {"last_by_subj": "sg1.none"}) == not_found
            assert await js_api(nc, f"{API}.STREAM.MSG.GET.SG1", {"seq": 4, "next_by_subj": "sg1.paid"}) == not_found

    run(body())


def test_msg_get_via_nats_py(jsrv):
    async def body():
        import nats.js.errors

        async with js_client(jsrv) as (nc, js):
            await create(nc, "SG2")
            await js.publish("sg2.a", b"first", headers={"H": "1"})
            await js.publish("sg2.a", b"second")
            msg = await js.get_msg("SG2", seq=1)
            assert (msg.subject, msg.seq, msg.data, msg.headers) == ("sg2.a", 1, b"first", {"H": "1"})
            last = await js.get_last_msg("SG2", "sg2.a")
            assert (last.seq, last.data) == (2, b"second")
            with pytest.raises(nats.js.errors.NotFoundError):
                await js.get_msg("SG2", seq=3)

    run(body())


def test_msg_delete_and_not_found(jsrv):
    async def body():
        async with js_client(jsrv) as (nc, _js):
            await filled(nc, "SM1")
            ok = {"type": "io.nats.jetstream.api.v1.stream_msg_delete_response", "success": True}
            assert await js_api(nc, f"{API}.STREAM.MSG.DELETE.SM1", {"seq": 2}) == ok
            assert await js_api(nc, f"{API}.STREAM.MSG.DELETE.SM1", {"seq": 3, "no_erase": True}) == ok
            resp = await js_api(nc, f"{API}.STREAM.MSG.DELETE.SM1", {"seq": 2, "no_erase": True})
            assert resp == {"type": "io.nats.jetstream.api.v1.stream_msg_delete_response",
                            "error": {"code": 400, "err_code": 10043, "description": "sequence 2 not found"}}
            resp = await js_api(nc, f"{API}.STREAM.MSG.DELETE.SM1", {"seq": 3})
            assert resp == {"type": "io.nats.jetstream.api.v1.stream_msg_delete_response",
                            "error": {"code": 400, "err_code": 10043, "description": "sequence 3 not found"}}
            resp = await js_api(nc, f"{API}.STREAM.MSG.DELETE.SM1", {"seq": 9})
            assert resp == {"type": "io.nats.jetstream.api.v1.stream_msg_delete_response",
                            "error": {"code": 500, "err_code": 10057, "description": "stream store EOF"}}
            resp = await js_api(nc, f"{API}.STREAM.MSG.GET.SM1", {"seq": 2})
            assert api_error(resp) == (404, 10037, "no message found")
            st = (await info(nc, "SM1"))["state"]
            assert (st["messages"], st["num_deleted"], st["first_seq"], st["last_seq"]) == (3, 2, 1, 5)
            # deleting the first message moves first_seq
            assert await js_api(nc, f"{API}.STREAM.MSG.DELETE.SM1", {"seq": 1}) == ok
            st = (await info(nc, "SM1"))["state"]
            assert (st["messages"], st["first_seq"]) == (2, 4)
            resp = await js_api(nc, f"{API}.STREAM.MSG.DELETE.SM1", {"seq": 1})
            assert resp == {"type": "io.nats.jetstream.api.v1.stream_msg_delete_response",
                            "error": {"code": 500, "err_code": 10057, "description": "no message found"}}
            resp = await js_api(nc, f"{API}.STREAM.MSG.DELETE.SM1NOPE", {"seq": 1})
            assert api_error(resp) == (404, 10059, "stream not found")

    run(body())


# --------------------------------------------------------------------------------------------------
# limits


def test_max_msgs_discard_old(jsrv):
    async def body():
        async with js_client(jsrv) as (nc, _js):
            await create(nc, "SL1", max_msgs=3)
            for i in range(5):
                assert await publish(nc, "sl1.a", str(i).encode()) == {"stream": "SL1", "seq": i + 1}
            st = (await info(nc, "SL1"))["state"]
            assert (st["messages"], st["first_seq"], st["last_seq"]) == (3, 3, 5)

    run(body())


def test_max_msgs_and_max_bytes_discard_new(jsrv):
    async def body():
        async with js_client(jsrv) as (nc, _js):
            await create(nc, "SL2", max_msgs=2, discard="new")
            assert (await publish(nc, "sl2.a"))["seq"] == 1
            assert (await publish(nc, "sl2.a"))["seq"] == 2
            assert await publish(nc, "sl2.a") == {
                "error": {"code": 503, "err_code": 10077, "description": "maximum messages exceeded"},
                "stream": "SL2", "seq": 0}
            one = file_size("sl3.a", b"x" * 30)
            await create(nc, "SL3", max_bytes=one * 2, discard="new")
            assert (await publish(nc, "sl3.a", b"x" * 30))["seq"] == 1
            assert (await publish(nc, "sl3.a", b"x" * 30))["seq"] == 2
            assert await publish(nc, "sl3.a", b"x" * 30) == {
                "error": {"code": 503, "err_code": 10077, "description": "maximum bytes exceeded"},
                "stream": "SL3", "seq": 0}
            st = (await info(nc, "SL3"))["state"]
            assert (st["messages"], st["bytes"]) == (2, one * 2)

    run(body())


def test_max_bytes_discard_old(jsrv):
    async def body():
        async with js_client(jsrv) as (nc, _js):
            one = file_size("sl4.a", b"y" * 20)
            await create(nc, "SL4", max_bytes=one * 3)
            for i in range(5):
                assert (await publish(nc, "sl4.a", b"y" * 20))["seq"] == i + 1
            st = (await info(nc, "SL4"))["state"]
            assert (st["messages"], st["bytes"], st["first_seq"]) == (3, one * 3, 3)

    run(body())


def test_max_msg_size_10054(jsrv):
    async def body():
        async with js_client(jsrv) as (nc, _js):
            await create(nc, "SL5", max_msg_size=10)
            assert (await publish(nc, "sl5.a", b"0123456789"))["seq"] == 1
            assert await publish(nc, "sl5.a", b"0123456789A") == {
                "error": {"code": 400, "err_code": 10054, "description": "message size exceeds maximum allowed"},
                "stream": "SL5", "seq": 0}
            assert (await info(nc, "SL5"))["state"]["messages"] == 1

    run(body())


def test_max_msgs_per_subject(jsrv):
    async def body():
        async with js_client(jsrv) as (nc, _js):
            await create(nc, "SL6", max_msgs_per_subject=2)
            for s in ("a", "a", "b", "a", "b", "b", "c"):
                await publish(nc, f"sl6.{s}", s.encode())
            st = (await info(nc, "SL6", {"subjects_filter": ">"}))["state"]
            assert st["subjects"] == {"sl6.a": 2, "sl6.b": 2, "sl6.c": 1}
            assert (st["messages"], st["first_seq"], st["last_seq"], st["num_deleted"]) == (5, 2, 7, 1)

    run(body())


def test_max_msgs_per_subject_discard_new_per_subject(jsrv):
    async def body():
        async with js_client(jsrv) as (nc, _js):
            await create(nc, "SL7", max_msgs_per_subject=1, discard="new", discard_new_per_subject=True)
            assert (await publish(nc, "sl7.a"))["seq"] == 1
            assert await publish(nc, "sl7.a") == {
                "error": {"code": 503, "err_code": 10077, "description": "maximum messages per subject exceeded"},
                "stream": "SL7", "seq": 0}
            assert (await publish(nc, "sl7.b"))["seq"] == 2

    run(body())


def test_max_age_expires_messages(jsrv):
    async def body():
        async with js_client(jsrv) as (nc, _js):
            resp = await create(nc, "SL8", max_age=1_000_000_000)
            # duplicate_window defaults to min(2 min, max_age)
            assert resp["config"]["duplicate_window"] == 1_000_000_000
            await publish(nc, "sl8.a")
            await publish(nc, "sl8.b")
            assert (await info(nc, "SL8"))["state"]["messages"] == 2

            async def expired():
                return (await info(nc, "SL8"))["state"]

            deadline = asyncio.get_running_loop().time() + 4
            while True:
                st = await expired()
                if st["messages"] == 0:
                    break
                assert asyncio.get_running_loop().time() < deadline, st
                await asyncio.sleep(0.1)
            assert (st["first_seq"], st["last_seq"], st["bytes"]) == (3, 2, 0)
            assert (await publish(nc, "sl8.a"))["seq"] == 3

    run(body())


# --------------------------------------------------------------------------------------------------
# retention


def test_workqueue_retention(jsrv):
    async def body():
        async with js_client(jsrv) as (nc, js):
            resp = await create(nc, "SR1", retention="workqueue")
            assert resp["config"]["retention"] == "workqueue"
            for i in range(3):
                await publish(nc, "sr1.a", str(i).encode())
            sub = await js.pull_subscribe("sr1.a", durable="W1", stream="SR1")
            msgs = await sub.fetch(2, timeout=2)
            for m in msgs:
                await m.ack_sync()
            await eventually(lambda: state_of(nc, "SR1", "messages", "first_seq", "last_seq"), (1, 3, 3))
            # a second consumer on the same subjects is refused for a work queue
            resp = await js_api(nc, f"{API}.CONSUMER.CREATE.SR1.W2",
                                {"stream_name": "SR1", "config": {"name": "W2", "durable_name": "W2",
                                                                  "ack_policy": "explicit"}})
            assert resp == {"type": "io.nats.jetstream.api.v1.consumer_create_response",
                            "error": {"code": 400, "err_code": 10099,
                                      "description": "multiple non-filtered consumers not allowed on workqueue "
                                                     "stream"}}
            # workqueue consumers must ack explicitly
            resp = await js_api(nc, f"{API}.CONSUMER.CREATE.SR1.W3",
                                {"stream_name": "SR1", "config": {"name": "W3", "ack_policy": "none",
                                                                  "filter_subject": "sr1.b"}})
            assert api_error(resp) == (400, 10084,
                                      "consumer in pull mode requires explicit ack policy on workqueue stream")

    run(body())


def test_interest_retention(jsrv):
    async def body():
        async with js_client(jsrv) as (nc, js):
            await create(nc, "SR2", retention="interest")
            # no consumer: stored messages are not kept for anybody
            assert (await publish(nc, "sr2.a"))["seq"] == 1
            st = (await info(nc, "SR2"))["state"]
            assert (st["messages"], st["last_seq"]) == (0, 1)
            sub1 = await js.pull_subscribe("sr2.a", durable="I1", stream="SR2")
            sub2 = await js.pull_subscribe("sr2.>", durable="I2", stream="SR2")
            for i in range(2):
                await publish(nc, "sr2.a", str(i).encode())
            assert (await info(nc, "SR2"))["state"]["messages"] == 2
            for m in await sub1.fetch(2, timeout=2):
                await m.ack_sync()
            # I2 still needs both
            assert (await info(nc, "SR2"))["state"]["messages"] == 2
            [m] = await sub2.fetch(1, timeout=2)
            await m.ack_sync()
            await eventually(lambda: state_of(nc, "SR2", "messages", "first_seq"), (1, 3))
            [m] = await sub2.fetch(1, timeout=2)
            await m.ack_sync()
            await eventually(lambda: state_of(nc, "SR2", "messages"), (0,))

    run(body())


# --------------------------------------------------------------------------------------------------
# sealed, deny_delete, deny_purge; storage


def test_deny_delete_and_deny_purge(jsrv):
    async def body():
        async with js_client(jsrv) as (nc, _js):
            await create(nc, "SF1", deny_delete=True, deny_purge=True)
            await publish(nc, "sf1.a")
            resp = await js_api(nc, f"{API}.STREAM.MSG.DELETE.SF1", {"seq": 1})
            assert resp == {"type": "io.nats.jetstream.api.v1.stream_msg_delete_response",
                            "error": {"code": 500, "err_code": 10057, "description": "message delete not permitted"}}
            resp = await js_api(nc, f"{API}.STREAM.PURGE.SF1", {})
            assert resp == {"type": "io.nats.jetstream.api.v1.stream_purge_response",
                            "error": {"code": 500, "err_code": 10110, "description": "stream purge not permitted"},
                            "purged": 0}
            assert (await info(nc, "SF1"))["state"]["messages"] == 1

    run(body())


def test_sealed_stream(jsrv):
    async def body():
        async with js_client(jsrv) as (nc, _js):
            resp = await js_api(nc, f"{API}.STREAM.CREATE.SF2", {"name": "SF2", "subjects": ["sf2.>"], "sealed": True})
            assert resp == {"type": "io.nats.jetstream.api.v1.stream_create_response",
                            "error": {"code": 500, "err_code": 10052,
                                      "description": "stream configuration for create can not be sealed"}}
            await create(nc, "SF2")
            await publish(nc, "sf2.a")
            resp = await js_api(nc, f"{API}.STREAM.UPDATE.SF2", {"name": "SF2", "subjects": ["sf2.>"], "sealed": True})
            # sealing also turns on deny_delete, deny_purge and discard new
            assert strip_versions(resp["config"]) == default_config("SF2", ["sf2.>"], sealed=True, deny_delete=True,
                                                                    deny_purge=True, discard="new")
            sealed = {"code": 400, "err_code": 10109, "description": "invalid operation on sealed stream"}
            assert await publish(nc, "sf2.a") == {"error": sealed, "stream": "SF2", "seq": 0}
            assert await js_api(nc, f"{API}.STREAM.PURGE.SF2", {}) == {
                "type": "io.nats.jetstream.api.v1.stream_purge_response", "error": sealed, "purged": 0}
            assert await js_api(nc, f"{API}.STREAM.MSG.DELETE.SF2", {"seq": 1}) == {
                "type": "io.nats.jetstream.api.v1.stream_msg_delete_response", "error": sealed}
            resp = await js_api(nc, f"{API}.STREAM.UPDATE.SF2", {"name": "SF2", "subjects": ["sf2.>"]})
            assert resp == {"type": "io.nats.jetstream.api.v1.stream_update_response",
                            "error": {"code": 500, "err_code": 10052,
                                      "description": "stream configuration update can not unseal a sealed stream"}}
            assert (await info(nc, "SF2"))["state"]["messages"] == 1
            # a sealed stream can still be deleted
            assert (await js_api(nc, f"{API}.STREAM.DELETE.SF2"))["success"] is True

    run(body())


@pytest.mark.parametrize("storage", ["file", "memory"])
def test_storage_types(jsrv, storage):
    async def body():
        async with js_client(jsrv) as (nc, js):
            name = f"SS{storage.upper()}"
            resp = await create(nc, name, storage=storage)
            assert resp["config"]["storage"] == storage
            hdr = b"NATS/1.0\r\nK: v\r\n\r\n"
            await js.publish(f"{name.lower()}.a", b"one")
            await js.publish(f"{name.lower()}.b", b"two", headers={"K": "v"})
            size = file_size if storage == "file" else mem_size
            expect = size(f"{name.lower()}.a", b"one") + size(f"{name.lower()}.b", b"two", hdr)
            st = (await info(nc, name))["state"]
            assert (st["messages"], st["bytes"]) == (2, expect)
            msg = await js.get_msg(name, seq=2)
            assert (msg.data, msg.headers) == (b"two", {"K": "v"})

    run(body())


def test_account_info_counts(jsrv):
    async def body():
        async with js_client(jsrv) as (nc, js):
            before = await js_api(nc, f"{API}.INFO")
            assert before["type"] == "io.nats.jetstream.api.v1.account_info_response"
            assert {"memory", "storage", "streams", "consumers", "limits", "api"} <= set(before)
            await create(nc, "SA1", storage="memory")
            await publish(nc, "sa1.a", b"abc")
            await js.pull_subscribe("sa1.a", durable="D", stream="SA1")
            after = await js_api(nc, f"{API}.INFO")
            assert after["streams"] == before["streams"] + 1
            assert after["consumers"] == before["consumers"] + 1
            assert after["memory"] == before["memory"] + mem_size("sa1.a", b"abc")
            assert after["api"]["total"] > before["api"]["total"]

    run(body())


# --------------------------------------------------------------------------------------------------
# more retention, subject changes, concurrency, large messages


def test_workqueue_filtered_consumers_must_not_overlap(jsrv):
    async def body():
        async with js_client(jsrv) as (nc, _js):
            await create(nc, "SR3", retention="workqueue")

            async def add(name, filt):
                return await js_api(nc, f"{API}.CONSUMER.CREATE.SR3.{name}",
                                    {"stream_name": "SR3", "config": {"name": name, "durable_name": name,
                                                                      "ack_policy": "explicit",
                                                                      "filter_subject": filt}})

            assert "error" not in await add("A", "sr3.a")
            assert "error" not in await add("B", "sr3.b")
            resp = await add("C", "sr3.>")
            assert resp == {"type": "io.nats.jetstream.api.v1.consumer_create_response",
                            "error": {"code": 400, "err_code": 10100,
                                      "description": "filtered consumer not unique on workqueue stream"}}

    run(body())


def test_interest_retention_consumer_delete_releases_messages(jsrv):
    async def body():
        async with js_client(jsrv) as (nc, js):
            await create(nc, "SR4", retention="interest")
            sub_a = await js.pull_subscribe("sr4.a", durable="A", stream="SR4")
            await js.pull_subscribe("sr4.a", durable="B", stream="SR4")
            for i in range(3):
                await publish(nc, "sr4.a", str(i).encode())
            for m in await sub_a.fetch(3, timeout=2):
                await m.ack_sync()
            await asyncio.sleep(0.1)  # time for a (wrong) removal to show
            assert (await info(nc, "SR4"))["state"]["messages"] == 3
            # B was the last consumer that still needed them
            assert (await js_api(nc, f"{API}.CONSUMER.DELETE.SR4.B"))["success"] is True
            await eventually(lambda: state_of(nc, "SR4", "messages", "first_seq", "last_seq", "consumer_count"),
                             (0, 4, 3, 1))

    run(body())


def test_update_removing_a_subject(jsrv):
    async def body():
        import nats.errors

        async with js_client(jsrv) as (nc, _js):
            await create(nc, "SU3", subjects=["su3.a", "su3.b"])
            assert (await publish(nc, "su3.b"))["seq"] == 1
            resp = await js_api(nc, f"{API}.STREAM.UPDATE.SU3", {"name": "SU3", "subjects": ["su3.a"]})
            assert resp["config"]["subjects"] == ["su3.a"]
            with pytest.raises(nats.errors.NoRespondersError):
                await nc.request("su3.b", b"x", timeout=1)
            assert (await publish(nc, "su3.a"))["seq"] == 2
            # the old message stays
            assert (await info(nc, "SU3"))["state"]["messages"] == 2

    run(body())


def test_concurrent_publishers_get_unique_contiguous_sequences(jsrv):
    async def body():
        async with js_client(jsrv) as (nc, _js):
            await create(nc, "SCP", storage="memory")
            conns = [await jsrv.nc() for _ in range(4)]
            try:
                async def producer(k, c):
                    seqs = []
                    for i in range(100):
                        ack = json.loads((await c.request(f"scp.p{k}", f"{k}-{i}".encode(), timeout=3)).data)
                        seqs.append(ack["seq"])
                    return seqs

                results = await asyncio.gather(*(producer(k, c) for k, c in enumerate(conns)))
            finally:
                for c in conns:
                    await c.close()
            every = sorted(s for seqs in results for s in seqs)
            assert every == list(range(1, 401))
            # each producer's own messages keep their order
            assert all(seqs == sorted(seqs) for seqs in results)
            for k, seqs in enumerate(results):
                msg = (await js_api(nc, f"{API}.STREAM.MSG.GET.SCP", {"seq": seqs[57]}))["message"]
                assert (msg["subject"], base64.b64decode(msg["data"])) == (f"scp.p{k}", f"{k}-57".encode())

    run(body())


def test_large_message_round_trip(jsrv):
    async def body():
        async with js_client(jsrv) as (nc, js):
            await create(nc, "SBIG")
            big = bytes(range(256)) * 3900  # just under the 1 MB default max_payload
            ack = await js.publish("sbig.a", big, headers={"K": "v"})
            assert ack.seq == 1
            msg = await js.get_msg("SBIG", seq=1)
            assert msg.data == big and msg.headers == {"K": "v"}
            sub = await js.pull_subscribe("sbig.a", durable="D", stream="SBIG")
            [m] = await sub.fetch(1, timeout=3)
            assert m.data == big
            st = (await info(nc, "SBIG"))["state"]
            assert st["bytes"] == file_size("sbig.a", big, b"NATS/1.0\r\nK: v\r\n\r\n")

    run(body())
