"""Object store buckets through nats-py's ObjectStore API (ADR-20 on top of JetStream), against both servers: what
`natsedge workload deploy` stores code in (docs/workloads.md), and the direct gets an edge fetches chunks with."""

from __future__ import annotations

import base64
import hashlib

import nats.js.api
import nats.js.errors
import pytest

from .harness import js_api, js_client, run, strip_versions

API = "$JS.API"


def test_create_bucket_stream_config(jsrv):
    async def body():
        async with js_client(jsrv) as (nc, js):
            await js.create_object_store("ob1", description="code")
            info = await js_api(nc, f"{API}.STREAM.INFO.OBJ_ob1")
            cfg = strip_versions(info["config"])
            assert cfg["subjects"] == ["$O.ob1.C.>", "$O.ob1.M.>"]
            assert (cfg["discard"], cfg["allow_direct"], cfg["allow_rollup_hdrs"], cfg["max_consumers"]) == (
                "new", True, True, -1)
            again = await js.object_store("ob1")
            assert again._name == "ob1"
            with pytest.raises(nats.js.errors.BucketNotFoundError):
                await js.object_store("ob1nope")

    run(body())


def test_put_get_in_chunks_info_list_delete(jsrv):
    async def body():
        async with js_client(jsrv) as (_nc, js):
            obs = await js.create_object_store("ob2")
            data = bytes(range(256)) * 20 + b"tail"  # 5,124 B: five full chunks of 1 KB and a short one
            meta = nats.js.api.ObjectMeta(name="app.py", options=nats.js.api.ObjectMetaOptions(max_chunk_size=1024))
            info = await obs.put("app.py", data, meta=meta)
            assert (info.size, info.chunks) == (len(data), 6)
            got = await obs.get("app.py")
            assert got.data == data
            assert got.info.digest == "SHA-256=" + base64.urlsafe_b64encode(
                hashlib.sha256(data).digest()).decode()
            await obs.put("other", b"x")
            names = sorted(i.name for i in await obs.list())
            assert names == ["app.py", "other"]
            again = await obs.put("app.py", b"v2")  # a new version replaces the old chunks (purged by nuid)
            assert (await obs.get("app.py")).data == b"v2"
            assert again.nuid != info.nuid
            await obs.delete("other")
            with pytest.raises(nats.js.errors.ObjectNotFoundError):  # a deleted object reads as absent
                await obs.get("other")
            st = await obs.status()
            assert st.bucket == "ob2"

    run(body())


def test_chunks_fetched_by_direct_get_batch(jsrv):
    # What an edge does (edge/workloads): the chunks of one object, in order, from one batched direct get on the
    # chunk subject, ending with a 204 EOB.
    async def body():
        async with js_client(jsrv) as (nc, js):
            obs = await js.create_object_store("ob3")
            data = b"".join(b"%04d" % i for i in range(700))  # 2,800 B
            meta = nats.js.api.ObjectMeta(name="m", options=nats.js.api.ObjectMetaOptions(max_chunk_size=1000))
            info = await obs.put("m", data, meta=meta)
            inbox = nc.new_inbox()
            sub = await nc.subscribe(inbox)
            await nc.publish(f"{API}.DIRECT.GET.OBJ_ob3", b'{"seq": 1, "batch": 10, "next_by_subj": "$O.ob3.C.%s"}'
                             % info.nuid.encode(), reply=inbox)
            parts, statuses = [], []
            while True:
                m = await sub.next_msg(timeout=2)
                if m.headers and m.headers.get("Status"):
                    statuses.append(m.headers["Status"])
                    break
                assert m.headers["Nats-Subject"] == f"$O.ob3.C.{info.nuid}"
                parts.append(m.data)
            assert b"".join(parts) == data and [len(p) for p in parts] == [1000, 1000, 800]
            assert statuses == ["204"]

    run(body())
