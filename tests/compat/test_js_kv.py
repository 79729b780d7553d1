"""Key-value buckets through nats-py's KeyValue API (ADR-8 on top of JetStream), against both servers."""

from __future__ import annotations

import asyncio
import base64
import time

import nats.js.errors
import pytest

from .harness import js_api, js_client, kv_history, kv_keys, run, strip_versions

API = "$JS.API"


async def initial_entries(w, n: int) -> list:
    """The watcher's first n entries and its "initial values done" marker (None). nats-py may queue that marker
    ahead of entries already on their way (see harness.kv_retry_no_keys); the entries' delta (pending) says where the
    server put the end, so the order of the marker itself is not asserted."""
    entries, marker = [], False
    while len(entries) < n or not marker:
        e = await w.updates(timeout=2)
        if e is None:
            assert not marker, "two initial-values markers"
            marker = True
        else:
            entries.append(e)
    return entries


def test_create_bucket_stream_config(jsrv):
    async def body():
        async with js_client(jsrv) as (nc, js):
            kv = await js.create_key_value(bucket="kv1", history=5, description="cfg")
            assert kv._stream == "KV_kv1"
            info = await js_api(nc, f"{API}.STREAM.INFO.KV_kv1")
            cfg = strip_versions(info["config"])
            assert cfg == {
                "name": "KV_kv1", "description": "cfg", "subjects": ["$KV.kv1.>"], "retention": "limits",
                "max_consumers": -1, "max_msgs": -1, "max_bytes": -1, "max_age": 0, "max_msgs_per_subject": 5,
                "max_msg_size": -1, "discard": "new", "storage": "file", "num_replicas": 1,
                "duplicate_window": 120_000_000_000, "compression": "none", "allow_direct": False,
                "mirror_direct": False, "sealed": False, "deny_delete": True, "deny_purge": False,
                "allow_rollup_hdrs": True, "consumer_limits": {}, "allow_msg_ttl": True,
                "metadata": {"_nats.req.level": "1"}}
            again = await js.key_value("kv1")
            assert again._direct is False
            with pytest.raises(nats.js.errors.BucketNotFoundError):
                await js.key_value("kv1nope")

    run(body())


def test_put_get_and_revisions(jsrv):
    async def body():
        async with js_client(jsrv) as (_nc, js):
            kv = await js.create_key_value(bucket="kv2", history=3)
            assert await kv.put("a", b"1") == 1
            assert await kv.put("b", b"x") == 2
            assert await kv.put("a", b"2") == 3
            e = await kv.get("a")
            assert (e.key, e.value, e.revision, e.bucket) == ("a", b"2", 3, "kv2")
            assert (await kv.get("a", revision=1)).value == b"1"
            with pytest.raises(nats.js.errors.KeyNotFoundError):
                await kv.get("a", revision=2)  # revision 2 belongs to another key
            with pytest.raises(nats.js.errors.KeyNotFoundError):
                await kv.get("missing")
            assert await kv.put("dots.in/key_=-", b"ok") == 4
            assert (await kv.get("dots.in/key_=-")).value == b"ok"

    run(body())


def test_create_only_if_absent(jsrv):
    async def body():
        async with js_client(jsrv) as (_nc, js):
            kv = await js.create_key_value(bucket="kv3")
            assert await kv.create("k", b"first") == 1
            with pytest.raises(nats.js.errors.KeyWrongLastSequenceError) as exc:
                await kv.create("k", b"second")
            assert "wrong last sequence: 1" in str(exc.value)
            await kv.delete("k")
            # a deleted key may be created again
            assert await kv.create("k", b"again") == 3
            await kv.purge("k")
            assert await kv.create("k", b"after purge") == 5
            assert (await kv.get("k")).value == b"after purge"

    run(body())


def test_update_compare_and_set(jsrv):
    async def body():
        async with js_client(jsrv) as (_nc, js):
            kv = await js.create_key_value(bucket="kv4", history=2)
            r1 = await kv.put("k", b"v1")
            await kv.put("other", b"o")
            r2 = await kv.update("k", b"v2", last=r1)
            assert r2 == 3
            with pytest.raises(nats.js.errors.KeyWrongLastSequenceError) as exc:
                await kv.update("k", b"stale", last=r1)
            assert "wrong last sequence: 3" in str(exc.value)
            with pytest.raises(nats.js.errors.KeyWrongLastSequenceError):
                await kv.update("new", b"x", last=1)
            assert (await kv.get("k")).value == b"v2"

    run(body())


def test_delete_and_purge_markers(jsrv):
    async def body():
        async with js_client(jsrv) as (nc, js):
            kv = await js.create_key_value(bucket="kv5", history=10)
            for v in (b"1", b"2", b"3"):
                await kv.put("k", v)
            await kv.delete("k")
            with pytest.raises(nats.js.errors.KeyNotFoundError):
                await kv.get("k")
            hist = await kv_history(kv, "k")
            assert [(e.value, e.operation) for e in hist] == [(b"1", None), (b"2", None), (b"3", None), (b"", "DEL")]
            # the marker is a stored message with the KV-Operation header
            msg = (await js_api(nc, f"{API}.STREAM.MSG.GET.KV_kv5", {"last_by_subj": "$KV.kv5.k"}))["message"]
            assert base64.b64decode(msg["hdrs"]) == b"NATS/1.0\r\nKV-Operation: DEL\r\n\r\n" and "data" not in msg
            await kv.purge("k")
            hist = await kv_history(kv, "k")
            assert [(e.revision, e.operation) for e in hist] == [(5, "PURGE")]
            msg = (await js_api(nc, f"{API}.STREAM.MSG.GET.KV_kv5", {"seq": 5}))["message"]
            assert base64.b64decode(msg["hdrs"]) == b"NATS/1.0\r\nKV-Operation: PURGE\r\nNats-Rollup: sub\r\n\r\n"
            st = (await js_api(nc, f"{API}.STREAM.INFO.KV_kv5"))["state"]
            assert (st["messages"], st["first_seq"], st["last_seq"]) == (1, 5, 5)

    run(body())


def test_history_limit(jsrv):
    async def body():
        async with js_client(jsrv) as (_nc, js):
            kv = await js.create_key_value(bucket="kv6", history=2)
            for i in range(5):
                await kv.put("k", str(i).encode())
            await kv.put("j", b"j")
            hist = await kv_history(kv, "k")
            assert [(e.value, e.revision) for e in hist] == [(b"3", 4), (b"4", 5)]
            # delta counts the entries still to come
            assert [e.delta for e in hist] == [1, 0]
            assert (await kv.status()).values == 3

    run(body())


def test_keys(jsrv):
    async def body():
        async with js_client(jsrv) as (_nc, js):
            kv = await js.create_key_value(bucket="kv7", history=3)
            with pytest.raises(nats.js.errors.NoKeysError):
                await kv.keys()
            for k in ("a", "b", "c", "d.e"):
                await kv.put(k, b"v")
            await kv.put("a", b"v2")
            await kv.delete("b")
            await kv.purge("c")
            assert await kv_keys(kv) == ["a", "d.e"]

    run(body())


def test_watch_initial_values_then_live_updates(jsrv):
    async def body():
        async with js_client(jsrv) as (_nc, js):
            kv = await js.create_key_value(bucket="kv8", history=5)
            await kv.put("a", b"a1")
            await kv.put("b", b"b1")
            await kv.put("a", b"a2")
            w = await kv.watchall()
            initial = await initial_entries(w, 2)
            # last value per key, in sequence order
            assert [(e.key, e.value, e.revision, e.operation, e.delta) for e in initial] == \
                [("b", b"b1", 2, None, 1), ("a", b"a2", 3, None, 0)]
            await kv.put("c", b"c1")
            await kv.delete("a")
            e = await w.updates(timeout=2)
            assert (e.key, e.value, e.revision, e.operation, e.delta) == ("c", b"c1", 4, None, 0)
            e = await w.updates(timeout=2)
            assert (e.key, e.revision, e.operation) == ("a", 5, "DEL")
            await w.stop()

    run(body())


def test_watch_single_key_and_empty_bucket(jsrv):
    async def body():
        async with js_client(jsrv) as (_nc, js):
            kv = await js.create_key_value(bucket="kv9")
            w = await kv.watch("x.*")
            assert await w.updates(timeout=2) is None  # nothing yet: the marker comes at once
            await kv.put("y.1", b"no")
            await kv.put("x.1", b"yes")
            e = await w.updates(timeout=2)
            assert (e.key, e.value, e.revision) == ("x.1", b"yes", 2)
            with pytest.raises(nats.errors.TimeoutError):
                await w.updates(timeout=0.3)
            await w.stop()
            hw = await kv.watch("x.1", include_history=True)
            [e] = await initial_entries(hw, 1)
            assert (e.key, e.revision, e.delta) == ("x.1", 2, 0)
            await hw.stop()

    run(body())


def test_purge_deletes(jsrv):
    async def body():
        async with js_client(jsrv) as (nc, js):
            kv = await js.create_key_value(bucket="kv10", history=5)
            await kv.put("keep", b"v")
            await kv.put("gone", b"v")
            await kv.delete("gone")
            await kv.put("purged", b"v")
            await kv.purge("purged")
            assert (await kv.status()).values == 4
            # purge_deletes finds the markers with a watcher; it is idempotent, so a run that met nats-py's early
            # initial-values marker (see harness.kv_retry_no_keys) is simply repeated
            deadline = time.monotonic() + 3
            while True:
                await kv.purge_deletes(olderthan=0)
                st = (await js_api(nc, f"{API}.STREAM.INFO.KV_kv10", {"subjects_filter": ">"}))["state"]
                if st["messages"] == 1 or time.monotonic() > deadline:
                    break
            assert st["subjects"] == {"$KV.kv10.keep": 1} and st["messages"] == 1
            assert await kv_keys(kv) == ["keep"]

    run(body())


def test_per_key_ttl(jsrv):
    async def body():
        async with js_client(jsrv) as (nc, js):
            kv = await js.create_key_value(bucket="kv11")
            await kv.create("short", b"v", msg_ttl=1)
            await kv.put("long", b"v")
            msg = (await js_api(nc, f"{API}.STREAM.MSG.GET.KV_kv11", {"seq": 1}))["message"]
            hdr = base64.b64decode(msg["hdrs"])
            assert b"Nats-TTL: 1\r\n" in hdr and b"Nats-Expected-Last-Subject-Sequence: 0\r\n" in hdr
            assert (await kv.get("short")).value == b"v"
            deadline = time.monotonic() + 4
            while True:
                try:
                    await kv.get("short")
                except nats.js.errors.KeyNotFoundError:
                    break
                assert time.monotonic() < deadline, "per-key TTL never expired"
                await asyncio.sleep(0.1)
            assert (await kv.get("long")).value == b"v"
            # gone means gone: create works again without a tombstone
            assert await kv.create("short", b"again") == 3

    run(body())


def test_bucket_ttl(jsrv):
    async def body():
        async with js_client(jsrv) as (nc, js):
            kv = await js.create_key_value(bucket="kv12", ttl=1)
            cfg = (await js_api(nc, f"{API}.STREAM.INFO.KV_kv12"))["config"]
            assert (cfg["max_age"], cfg["duplicate_window"]) == (1_000_000_000, 1_000_000_000)
            await kv.put("k", b"v")
            deadline = time.monotonic() + 4
            while (await kv.status()).values:
                assert time.monotonic() < deadline, "bucket TTL never expired"
                await asyncio.sleep(0.1)
            with pytest.raises(nats.js.errors.KeyNotFoundError):
                await kv.get("k")

    run(body())


def test_status(jsrv):
    async def body():
        async with js_client(jsrv) as (_nc, js):
            kv = await js.create_key_value(bucket="kv13", history=4, ttl=60)
            await kv.put("a", b"1")
            await kv.put("a", b"2")
            st = await kv.status()
            assert (st.bucket, st.values, st.history, st.ttl) == ("kv13", 2, 4, 60.0)
            assert st.stream_info.config.name == "KV_kv13"

    run(body())


def test_direct_bucket_get(jsrv):
    async def body():
        async with js_client(jsrv) as (nc, js):
            kv = await js.create_key_value(bucket="kv14", direct=True, history=3)
            assert kv._direct is True
            assert (await js_api(nc, f"{API}.STREAM.INFO.KV_kv14"))["config"]["allow_direct"] is True
            await kv.put("k", b"v1")
            await kv.put("k", b"v2")
            # nats-py reads through $JS.API.DIRECT.GET.KV_kv14.$KV.kv14.k
            e = await kv.get("k")
            assert (e.value, e.revision) == (b"v2", 2)
            assert (await kv.get("k", revision=1)).value == b"v1"
            reply = await nc.request(f"{API}.DIRECT.GET.KV_kv14.$KV.kv14.k", b"", timeout=2)
            assert reply.data == b"v2" and reply.headers["Nats-Sequence"] == "2"
            await kv.delete("k")
            with pytest.raises(nats.js.errors.KeyNotFoundError):
                await kv.get("k")
            with pytest.raises(nats.js.errors.KeyNotFoundError):
                await kv.get("never")

    run(body())


def test_delete_bucket(jsrv):
    async def body():
        async with js_client(jsrv) as (_nc, js):
            kv = await js.create_key_value(bucket="kv15")
            await kv.put("k", b"v")
            assert await js.delete_key_value("kv15") is True
            with pytest.raises(nats.js.errors.BucketNotFoundError):
                await js.key_value("kv15")

    run(body())


def test_delete_with_expected_revision(jsrv):
    async def body():
        async with js_client(jsrv) as (_nc, js):
            kv = await js.create_key_value(bucket="kv16", history=3)
            r1 = await kv.put("k", b"v1")
            await kv.put("k", b"v2")
            with pytest.raises(nats.js.errors.APIError) as exc:
                await kv.delete("k", last=r1)
            assert (exc.value.err_code, exc.value.description) == (10071, "wrong last sequence: 2")
            assert (await kv.get("k")).value == b"v2"
            assert await kv.delete("k", last=2) is True
            with pytest.raises(nats.js.errors.KeyNotFoundError):
                await kv.get("k")

    run(body())


def test_limit_marker_when_key_ages_out(jsrv):
    async def body():
        async with js_client(jsrv) as (nc, js):
            kv = await js.create_key_value(bucket="kv17", ttl=1, limit_marker_ttl=1)
            cfg = (await js_api(nc, f"{API}.STREAM.INFO.KV_kv17"))["config"]
            assert cfg["subject_delete_marker_ttl"] == 1_000_000_000
            w = await kv.watchall()
            assert await w.updates(timeout=2) is None
            await kv.put("k", b"v")
            e = await w.updates(timeout=2)
            assert (e.key, e.value, e.operation) == ("k", b"v", None)
            # the server's MaxAge marker reaches the watcher as a purge of the key
            e = await w.updates(timeout=4)
            assert (e.key, e.revision, e.operation, e.value) == ("k", 2, "PURGE", b"")
            await w.stop()

    run(body())


def test_keys_with_filters_and_watch_ignoring_deletes(jsrv):
    async def body():
        async with js_client(jsrv) as (_nc, js):
            kv = await js.create_key_value(bucket="kv18")
            for k in ("user.1", "user.2", "order.1"):
                await kv.put(k, b"v")
            await kv.delete("user.2")
            assert await kv_keys(kv, filters=["user"]) == ["user.1"]
            w = await kv.watch("user.*", ignore_deletes=True)
            [e] = await initial_entries(w, 1)
            assert e.key == "user.1"
            await kv.delete("user.1")
            await kv.put("user.3", b"v")
            e = await w.updates(timeout=2)
            assert (e.key, e.operation) == ("user.3", None)
            await w.stop()

    run(body())
