"""The hub's JetStream as a process, driven by nats-py: what the cross-server parity suite does not cover because it
needs a restart, a leaf, a config file or a look at the disk. Recovery after restart (messages, deletes, dedupe
window, last Msg-Id, updated subjects), a damaged stream directory, publishes arriving over a leaf link, storage
limits, accounts without JetStream, requests without a reply, `sync_interval: always`, /jsz and /varz."""

from __future__ import annotations

import asyncio
import json
import subprocess
import textwrap

import nats
import pytest

from tests.compat.harness import (
    Raw,
    Server,
    api_error,
    free_port,
    js_api,
    nats_server_binary,
    run,
    stop_process,
)

API = "$JS.API"


def hub(tmp_path, config: str | None = None, monitor: bool = False, store=None) -> Server:
    s = Server("hub", config=config, monitor=monitor, jetstream=True, workdir=tmp_path,
               store_dir=store or tmp_path / "store")
    return s.start()


async def connect(s: Server, user: str | None = None):
    auth = f"{user}:{user}@" if user else ""
    return await nats.connect(f"nats://{auth}127.0.0.1:{s.port}", allow_reconnect=False)


async def ack(nc, subject: str, payload: bytes = b"x", headers: dict | None = None) -> dict:
    return json.loads((await nc.request(subject, payload, headers=headers, timeout=2)).data)


async def create(nc, name: str, **cfg) -> dict:
    cfg.setdefault("subjects", [f"{name.lower()}.>"])
    resp = await js_api(nc, f"{API}.STREAM.CREATE.{name}", {"name": name, **cfg})
    assert "error" not in resp, resp
    return resp


def test_file_stream_survives_restart(tmp_path):
    s = hub(tmp_path)
    try:
        async def before():
            nc = await connect(s)
            await create(nc, "R", max_msgs_per_subject=3)
            await create(nc, "RM", storage="memory")
            for i in range(5):
                assert (await ack(nc, "r.a", b"m%d" % i, {"Nats-Msg-Id": f"id-{i}"}))["seq"] == i + 1
            await ack(nc, "rm.a")
            assert (await js_api(nc, f"{API}.STREAM.MSG.DELETE.R", {"seq": 4}))["success"] is True
            resp = await js_api(nc, f"{API}.STREAM.UPDATE.R",
                                {"name": "R", "subjects": ["r.>", "r2.*"], "max_msgs_per_subject": 3,
                                 "description": "updated"})
            await nc.close()
            return resp

        updated = run(before())
        s.stop()
        s.start()

        async def after():
            nc = await connect(s)
            names = await js_api(nc, f"{API}.STREAM.NAMES")
            assert names["streams"] == ["R"]  # a memory stream does not outlive the process, as in nats-server
            info = await js_api(nc, f"{API}.STREAM.INFO.R", {"deleted_details": True})
            assert info["config"] == updated["config"] and info["created"] == updated["created"]
            st = info["state"]
            assert (st["messages"], st["first_seq"], st["last_seq"], st["deleted"]) == (2, 3, 5, [4])
            assert st["bytes"] == updated["state"]["bytes"]
            # the dedupe window is rebuilt from the stored messages...
            assert await ack(nc, "r.a", b"again", {"Nats-Msg-Id": "id-4"}) == {"stream": "R", "seq": 5,
                                                                                  "duplicate": True}
            # ... so an id whose message is gone (per-subject limit) is new again
            assert (await ack(nc, "r.a", b"again", {"Nats-Msg-Id": "id-1"}))["seq"] == 6
            err = await ack(nc, "r.a", b"x", {"Nats-Expected-Last-Msg-Id": "id-4"})
            assert err["error"]["description"] == "wrong last msg ID: id-1"
            assert await ack(nc, "r2.b") == {"stream": "R", "seq": 7}  # the subject added by the update
            await nc.close()

        run(after())
    finally:
        s.stop()


def test_damaged_stream_directory_does_not_stop_the_others(tmp_path):
    s = hub(tmp_path)
    try:
        async def fill():
            nc = await connect(s)
            for name in ("GOOD", "BAD"):
                await create(nc, name)
                await ack(nc, f"{name.lower()}.a")
            await nc.close()

        run(fill())
        s.stop()
        meta = tmp_path / "store" / "jetstream" / "$G" / "streams" / "BAD" / "meta.json"
        assert meta.exists()
        meta.write_bytes(b"{garbage")
        s.start()

        async def check():
            nc = await connect(s)
            assert (await js_api(nc, f"{API}.STREAM.NAMES"))["streams"] == ["GOOD"]
            assert (await js_api(nc, f"{API}.STREAM.INFO.GOOD"))["state"]["messages"] == 1
            assert await ack(nc, "good.b") == {"stream": "GOOD", "seq": 2}
            await nc.close()

        run(check())
        assert "could not recover stream '$G > BAD'" in s.output()

        async def recreate():
            # the name can be used again; the damaged files are kept aside, not deleted
            nc = await connect(s)
            await create(nc, "BAD")
            assert await ack(nc, "bad.x") == {"stream": "BAD", "seq": 1}
            await nc.close()

        run(recreate())
        kept = [p.name for p in meta.parent.parent.iterdir() if p.name.startswith("BAD.unrecovered-")]
        assert len(kept) == 1 and (meta.parent.parent / kept[0] / "meta.json").read_bytes() == b"{garbage"
        s.stop()
        s.start()

        async def after_restart():
            nc = await connect(s)
            assert (await js_api(nc, f"{API}.STREAM.NAMES"))["streams"] == ["BAD", "GOOD"]
            assert (await js_api(nc, f"{API}.STREAM.INFO.BAD"))["state"]["messages"] == 1
            await nc.close()

        run(after_restart())
    finally:
        s.stop()


def test_publishes_over_a_leaf_link_are_stored(tmp_path):
    """An edge reaches the hub as a leaf: its publishes (with and without reply) land in the hub's stream."""
    leaf_port = free_port()
    s = hub(tmp_path, config=f"leafnodes {{ port: {leaf_port} }}\n")
    port = free_port()
    conf = tmp_path / "leaf.conf"
    conf.write_text(f'port: {port}\nleafnodes {{ remotes: [ {{ url: "nats-leaf://127.0.0.1:{leaf_port}" }} ] }}\n')
    leaf = subprocess.Popen([nats_server_binary(), "-a", "127.0.0.1", "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        async def body():
            nc = await connect(s)
            await create(nc, "LEAFS")
            # retry until the Go leaf has linked and learned the hub's interest in the stream subject
            lc = None
            for _ in range(50):
                try:
                    lc = await nats.connect(f"nats://127.0.0.1:{port}", allow_reconnect=False)
                    ack1 = json.loads((await lc.request("leafs.a", b"from leaf", timeout=0.5)).data)
                    break
                except (nats.errors.NoRespondersError, nats.errors.TimeoutError, OSError):
                    if lc is not None:
                        await lc.close()
                        lc = None
                    await asyncio.sleep(0.1)
            else:
                pytest.fail("leaf never delivered to the hub's stream")
            assert ack1 == {"stream": "LEAFS", "seq": 1}
            await lc.publish("leafs.b", b"no reply")
            await lc.flush()
            ack3 = await lc.jetstream().publish("leafs.c", b"js")
            assert (ack3.stream, ack3.seq) == ("LEAFS", 3)
            info = await js_api(nc, f"{API}.STREAM.INFO.LEAFS", {"subjects_filter": ">"})
            assert info["state"]["subjects"] == {"leafs.a": 1, "leafs.b": 1, "leafs.c": 1}
            await lc.close()
            await nc.close()

        run(body())
    finally:
        stop_process(leaf)
        s.stop()


def test_storage_limits(tmp_path):
    s = hub(tmp_path, config="jetstream { max_memory_store: 1000, max_file_store: 2000 }\n")
    try:
        async def body():
            nc = await connect(s)
            resp = await js_api(nc, f"{API}.STREAM.CREATE.F", {"name": "F", "subjects": ["f.>"], "max_bytes": 5000})
            assert api_error(resp) == (500, 10047, "insufficient storage resources available")
            resp = await js_api(nc, f"{API}.STREAM.CREATE.M",
                                {"name": "M", "subjects": ["m.>"], "storage": "memory", "max_bytes": 5000})
            assert api_error(resp) == (500, 10028, "insufficient memory resources available")
            await create(nc, "M", storage="memory", max_bytes=600)
            resp = await js_api(nc, f"{API}.STREAM.CREATE.M2",
                                {"name": "M2", "subjects": ["m2.>"], "storage": "memory", "max_bytes": 600})
            assert api_error(resp)[1] == 10028  # 600 of the 1000 bytes are reserved already
            await create(nc, "F")
            # 133 bytes a message: the 16th passes the 2000 byte limit, the 17th is refused
            for i in range(16):
                assert (await ack(nc, "f.x", b"x" * 100))["seq"] == i + 1
            assert await ack(nc, "f.x", b"x" * 100) == {
                "error": {"code": 503, "err_code": 10023, "description": "insufficient resources"},
                "stream": "F", "seq": 0}
            info = await js_api(nc, f"{API}.INFO")
            assert (info["storage"], info["reserved_memory"]) == (16 * 133, 600)
            await nc.close()

        run(body())
    finally:
        s.stop()


def test_accounts_without_jetstream(tmp_path):
    conf = textwrap.dedent("""
        accounts {
          A { jetstream: enabled, users: [{user: a, password: a}] }
          B { users: [{user: b, password: b}] }
        }
    """)
    s = hub(tmp_path, config=conf)
    try:
        async def body():
            a = await connect(s, "a")
            b = await connect(s, "b")
            await create(a, "X", subjects=["x"], allow_direct=True)
            assert (await ack(a, "x"))["seq"] == 1
            not_enabled = {"code": 503, "err_code": 10039, "description": "JetStream not enabled for account"}
            assert await js_api(b, f"{API}.INFO") == {"type": "io.nats.jetstream.api.v1.account_info_response",
                                                      "error": not_enabled}
            assert await js_api(b, f"{API}.STREAM.NAMES") == {
                "type": "io.nats.jetstream.api.v1.stream_names_response", "error": not_enabled, "total": 0,
                "offset": 0, "limit": 0, "streams": None}
            with pytest.raises(nats.errors.NoRespondersError):
                await b.request(f"{API}.DIRECT.GET.X", b'{"seq":1}', timeout=1)
            # B's "x" is its own subject space: nothing stores it
            with pytest.raises(nats.errors.NoRespondersError):
                await b.request("x", b"y", timeout=1)
            await a.close()
            await b.close()

        run(body())
    finally:
        s.stop()


def test_api_request_without_reply_is_carried_out(tmp_path):
    s = hub(tmp_path)
    try:
        async def body():
            nc = await connect(s)
            await nc.publish(f"{API}.STREAM.CREATE.NR", json.dumps({"name": "NR", "subjects": ["nr"]}).encode())
            await nc.flush()
            for _ in range(50):
                if (await js_api(nc, f"{API}.STREAM.NAMES"))["streams"] == ["NR"]:
                    break
                await asyncio.sleep(0.02)
            else:
                pytest.fail("stream was not created")
            await nc.close()

        run(body())
    finally:
        s.stop()


def test_sync_always(tmp_path):
    s = hub(tmp_path, config="jetstream { sync_interval: always }\n", monitor=True)
    try:
        async def body():
            nc = await connect(s)
            await create(nc, "SA")
            js = nc.jetstream()
            acks = await asyncio.gather(*[js.publish("sa.x", b"%d" % i) for i in range(50)])
            assert sorted(a.seq for a in acks) == list(range(1, 51))
            await nc.close()

        run(body())
        assert s.http_get("/jsz")["config"]["sync_always"] is True
        s.stop()
        s.start()

        async def after():
            nc = await connect(s)
            assert (await js_api(nc, f"{API}.STREAM.INFO.SA"))["state"]["messages"] == 50
            await nc.close()

        run(after())
    finally:
        s.stop()


def test_jsz_and_varz(tmp_path):
    s = hub(tmp_path, monitor=True)
    try:
        async def body():
            nc = await connect(s)
            await create(nc, "MON")
            await ack(nc, "mon.a", b"hello")
            resp = await js_api(nc, f"{API}.CONSUMER.CREATE.MON.D",
                                {"stream_name": "MON", "config": {"name": "D", "ack_policy": "explicit"}})
            assert "error" not in resp, resp
            await nc.close()

        run(body())
        size = 22 + len("mon.a") + len(b"hello") + 8
        jsz = s.http_get("/jsz")
        assert {k: jsz[k] for k in ("memory", "storage", "accounts", "streams", "consumers", "messages", "bytes",
                                    "total")} == {"memory": 0, "storage": size, "accounts": 1, "streams": 1,
                                                  "consumers": 1, "messages": 1, "bytes": size, "total": 1}
        assert jsz["api"]["total"] >= 2 and jsz["config"]["store_dir"].endswith("jetstream")
        assert jsz["config"]["sync_interval"] == 120_000_000_000 and "account_details" not in jsz
        acc = s.http_get("/jsz?accounts=true")["account_details"]
        assert [a["name"] for a in acc] == ["$G"] and "stream_detail" not in acc[0]
        assert acc[0]["reserved_memory"] == 2**64 - 1  # no account limits: nats-server's unsigned -1
        [sd] = s.http_get("/jsz?streams=true")["account_details"][0]["stream_detail"]
        assert sd["name"] == "MON" and "config" not in sd and "consumer_detail" not in sd
        assert sd["state"]["messages"] == 1 and sd["cluster"]["leader"]
        [sd] = s.http_get("/jsz?consumers=true&config=true")["account_details"][0]["stream_detail"]
        assert sd["config"]["name"] == "MON" and sd["config"]["metadata"] == {"_nats.req.level": "0"}
        [cd] = sd["consumer_detail"]
        assert cd["name"] == "D" and cd["num_pending"] == 1 and "config" in cd
        [sd] = s.http_get("/jsz?consumers=true")["account_details"][0]["stream_detail"]
        assert "config" not in sd["consumer_detail"][0]
        varz = s.http_get("/varz")["jetstream"]
        assert varz["stats"]["storage"] == size and varz["config"]["max_storage"] > 0
    finally:
        s.stop()


def test_odd_publishes_get_errors_not_crashes(tmp_path):
    """A subject that is not UTF-8, and headers that are not, reach the stream without breaking the connection."""
    s = hub(tmp_path)
    try:
        async def setup():
            nc = await connect(s)
            await create(nc, "ODD")
            await nc.close()

        run(setup())
        raw = Raw(s.port)
        raw.send(b'CONNECT {"verbose":false,"pedantic":false,"headers":true,"protocol":1}\r\nSUB _r.* 1\r\n')
        raw.send(b"PUB odd.\xff _r.1 1\r\nx\r\n")
        m = raw.expect(rb"MSG _r\.1 1 (\d+)\r\n")
        body = json.loads(raw.expect(rb"(.{%d})\r\n" % int(m.group(1))).group(1))
        assert body == {"error": {"code": 503, "err_code": 10077, "description": "subject is not valid UTF-8"},
                        "stream": "ODD", "seq": 0}
        hdr = b"NATS/1.0\r\nNats-Msg-Id: \xff\xfe\r\nNats-Expected-Stream: \xff\r\n\r\n"
        raw.send(b"HPUB odd.a _r.2 %d %d\r\n%sy\r\n" % (len(hdr), len(hdr) + 1, hdr))
        m = raw.expect(rb"MSG _r\.2 1 (\d+)\r\n")
        body = json.loads(raw.expect(rb"(.{%d})\r\n" % int(m.group(1))).group(1))
        assert body["error"]["err_code"] == 10060  # the expected stream does not match
        raw.send(b"PUB odd.b _r.3 1\r\nz\r\n")
        m = raw.expect(rb"MSG _r\.3 1 (\d+)\r\n")
        assert json.loads(raw.expect(rb"(.{%d})\r\n" % int(m.group(1))).group(1)) == {"stream": "ODD", "seq": 1}
        raw.sock.close()
    finally:
        s.stop()
