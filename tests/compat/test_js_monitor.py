"""/jsz and /healthz?js-enabled-only on a JetStream server: counts and the basic shape, against both servers."""

from __future__ import annotations

import json

from .harness import RFC3339_NS, js_api, js_client, run

API = "$JS.API"
TOP_KEYS = {"memory", "storage", "reserved_memory", "reserved_storage", "accounts", "ha_assets", "api", "server_id",
            "now", "config", "limits", "streams", "consumers", "messages", "bytes"}


def file_size(subject: str, payload: bytes) -> int:
    return 22 + len(subject) + len(payload) + 8


def mem_size(subject: str, payload: bytes) -> int:
    return 16 + len(subject) + len(payload)


def populate(srv):
    async def body():
        async with js_client(srv) as (nc, js):
            for name, storage in (("JF", "file"), ("JM", "memory")):
                resp = await js_api(nc, f"{API}.STREAM.CREATE.{name}",
                                    {"name": name, "subjects": [f"{name.lower()}.>"], "storage": storage})
                assert "error" not in resp, resp
            await js.publish("jf.a", b"one")
            await js.publish("jf.b", b"two!")
            await js.publish("jm.a", b"mem")
            await js.add_consumer("JF", durable_name="D", ack_policy="explicit")
            # one failing request for the error counter
            assert "error" in await js_api(nc, f"{API}.STREAM.INFO.NOPE")

    run(body())


def test_jsz_counts(fresh):
    srv = fresh(monitor=True, jetstream=True)
    empty = srv.http_get("/jsz")
    assert TOP_KEYS <= set(empty)
    assert (empty["streams"], empty["consumers"], empty["messages"], empty["bytes"]) == (0, 0, 0, 0)
    assert RFC3339_NS.match(empty["now"]) and empty["server_id"] == srv.info["server_id"]
    assert empty["config"]["store_dir"] == str(srv.store_dir / "jetstream")
    assert empty["config"]["sync_interval"] == 120_000_000_000
    populate(srv)
    jsz = srv.http_get("/jsz")
    file_bytes = file_size("jf.a", b"one") + file_size("jf.b", b"two!")
    memory_bytes = mem_size("jm.a", b"mem")
    assert (jsz["streams"], jsz["consumers"], jsz["messages"], jsz["bytes"]) == (2, 1, 3, file_bytes + memory_bytes)
    assert (jsz["memory"], jsz["storage"], jsz["accounts"]) == (memory_bytes, file_bytes, 1)
    assert jsz["api"]["errors"] == empty["api"]["errors"] + 1
    # stream creates, publishes' INFO lookups and the consumer create all count as API calls
    assert jsz["api"]["total"] >= empty["api"]["total"] + 4
    assert "account_details" not in jsz


def test_jsz_stream_and_consumer_detail(fresh):
    srv = fresh(monitor=True, jetstream=True)
    populate(srv)
    jsz = srv.http_get("/jsz?streams=true&consumers=true&config=true")
    [acc] = jsz["account_details"]
    assert (acc["name"], acc["id"]) == ("$G", "$G")
    assert (acc["memory"], acc["storage"]) == (jsz["memory"], jsz["storage"])
    streams = sorted(acc["stream_detail"], key=lambda s: s["name"])
    assert [s["name"] for s in streams] == ["JF", "JM"]
    jf, jm = streams
    assert RFC3339_NS.match(jf["created"])
    assert jf["config"]["subjects"] == ["jf.>"] and jm["config"]["storage"] == "memory"
    assert (jf["state"]["messages"], jf["state"]["consumer_count"], jm["state"]["messages"]) == (2, 1, 1)
    [c] = jf["consumer_detail"]
    assert (c["stream_name"], c["name"], c["num_pending"], c["config"]["durable_name"]) == ("JF", "D", 2, "D")
    assert "consumer_detail" not in jm or jm["consumer_detail"] == []
    plain = srv.http_get("/jsz?streams=true")
    [acc] = plain["account_details"]
    assert all("config" not in s and "consumer_detail" not in s for s in acc["stream_detail"])


def test_healthz_js_enabled_only(fresh):
    srv = fresh(monitor=True, jetstream=True)
    status, body = srv.http_get("/healthz?js-enabled-only=true", raw=True)
    assert status == 200 and json.loads(body) == {"status": "ok"}


def test_account_info_exact_on_a_fresh_server(fresh):
    srv = fresh(jetstream=True)

    async def body():
        async with js_client(srv) as (nc, _js):
            first = await js_api(nc, f"{API}.INFO")
            level = first["api"].pop("level")
            assert isinstance(level, int) and level >= 1
            assert first == {
                "type": "io.nats.jetstream.api.v1.account_info_response", "memory": 0, "storage": 0,
                "reserved_memory": 0, "reserved_storage": 0, "streams": 0, "consumers": 0,
                "limits": {"max_memory": -1, "max_storage": -1, "max_streams": -1, "max_consumers": -1,
                           "max_ack_pending": -1, "memory_max_stream_bytes": -1, "storage_max_stream_bytes": -1,
                           "max_bytes_required": False},
                "api": {"total": 0, "errors": 0}}
            resp = await js_api(nc, f"{API}.STREAM.CREATE.AF", {"name": "AF", "subjects": ["af.>"],
                                                                "max_bytes": 4096})
            assert "error" not in resp
            resp = await js_api(nc, f"{API}.STREAM.CREATE.AM", {"name": "AM", "subjects": ["am.>"],
                                                                "storage": "memory", "max_bytes": 2048})
            assert "error" not in resp
            assert "error" in await js_api(nc, f"{API}.STREAM.INFO.NOPE")
            await nc.request("af.x", b"12345", timeout=2)
            after = await js_api(nc, f"{API}.INFO")
            # max_bytes is reserved up front; the api counters cover the requests before this one
            assert (after["reserved_storage"], after["reserved_memory"]) == (4096, 2048)
            assert (after["streams"], after["consumers"], after["storage"], after["memory"]) == \
                (2, 0, file_size("af.x", b"12345"), 0)
            assert (after["api"]["total"], after["api"]["errors"]) == (4, 1)

    run(body())


def test_domain_prefixed_api_and_domain_in_info(fresh):
    # nats.py's AccountLimitsTest talks to a server with `jetstream { domain }` through $JS.<domain>.API
    srv = fresh('jetstream { domain: "dom1" }\n', monitor=True, jetstream=True)
    assert srv.info["domain"] == "dom1"

    async def body():
        async with js_client(srv) as (nc, _js):
            info = await js_api(nc, "$JS.dom1.API.INFO")
            assert info["domain"] == "dom1" and "error" not in info
            resp = await js_api(nc, "$JS.dom1.API.STREAM.CREATE.DOM", {"name": "DOM", "subjects": ["dom.>"]})
            assert resp["config"]["name"] == "DOM" and "domain" not in resp
            ack = json.loads((await nc.request("dom.x", b"1", timeout=2)).data)
            assert ack == {"stream": "DOM", "domain": "dom1", "seq": 1}
            info = await js_api(nc, f"{API}.STREAM.INFO.DOM")
            assert (info["state"]["messages"], info["domain"]) == (1, "dom1")

    run(body())
    assert srv.http_get("/jsz")["config"]["domain"] == "dom1"


def test_invalid_domain_is_a_config_error(fresh):
    srv = fresh('jetstream { domain: "a.b" }\n', jetstream=True, wait=False)
    srv.spawn()
    assert srv.proc.wait(timeout=10) != 0
    assert "invalid domain name: may not contain ., * or >" in srv.output()
