"""JetStream state across restarts of the same store directory: a clean stop (SIGTERM) keeps messages, sequences,
dedup ids and consumer ack state; kill -9 during heavy publishing loses no acknowledged message. Both servers.
"""

from __future__ import annotations

import asyncio
import base64
import json
import signal

import pytest
from nats.js.api import ConsumerConfig

from .harness import api_error, eventually, js_api, js_client, kv_history, kv_keys, run

API = "$JS.API"


async def consumer_state(nc, stream: str, name: str) -> tuple:
    i = await js_api(nc, f"{API}.CONSUMER.INFO.{stream}.{name}")
    assert "error" not in i, i
    return (i["delivered"]["stream_seq"], i["delivered"]["consumer_seq"], i["ack_floor"]["stream_seq"],
            i["num_ack_pending"], i["num_pending"])


def test_clean_restart_keeps_state(fresh):
    srv = fresh(jetstream=True)

    async def before():
        async with js_client(srv) as (nc, js):
            resp = await js_api(nc, f"{API}.STREAM.CREATE.R1", {"name": "R1", "subjects": ["r1.>"],
                                                                "duplicate_window": 60_000_000_000})
            assert "error" not in resp, resp
            for i in range(10):
                ack = await js.publish(f"r1.{i % 3}", f"m{i}".encode(), headers={"Nats-Msg-Id": f"id-{i}"})
                assert ack.seq == i + 1
            await js_api(nc, f"{API}.STREAM.MSG.DELETE.R1", {"seq": 10})
            resp = await js_api(nc, f"{API}.STREAM.CREATE.M1", {"name": "M1", "subjects": ["m1.>"],
                                                                "storage": "memory"})
            assert "error" not in resp, resp
            await js.publish("m1.a", b"volatile")
            sub = await js.pull_subscribe("r1.>", durable="D", stream="R1")
            msgs = await sub.fetch(4, timeout=2)
            for m in msgs[:3]:
                await m.ack_sync()
            await js.add_consumer("R1", durable_name="D2", ack_policy="explicit", filter_subject="r1.1")
            info = await js_api(nc, f"{API}.STREAM.INFO.R1")
            return info, await consumer_state(nc, "R1", "D")

    info, cstate = run(before())
    assert cstate == (4, 4, 3, 1, 5)
    srv.stop()
    assert srv.proc.returncode is not None
    srv.start()

    async def after():
        async with js_client(srv) as (nc, js):
            again = await js_api(nc, f"{API}.STREAM.INFO.R1")
            assert again["config"] == info["config"] and again["created"] == info["created"]
            assert again["state"] == info["state"]
            assert (again["state"]["messages"], again["state"]["first_seq"], again["state"]["last_seq"],
                    again["state"]["num_deleted"], again["state"]["consumer_count"]) == (9, 1, 10, 1, 2)
            msg = (await js_api(nc, f"{API}.STREAM.MSG.GET.R1", {"seq": 5}))["message"]
            assert (msg["subject"], base64.b64decode(msg["data"])) == ("r1.1", b"m4")
            assert base64.b64decode(msg["hdrs"]) == b"NATS/1.0\r\nNats-Msg-Id: id-4\r\n\r\n"
            # dedup ids survive
            ack = await js.publish("r1.0", b"again", headers={"Nats-Msg-Id": "id-3"})
            assert (ack.seq, ack.duplicate) == (4, True)
            # sequences continue after the last one (even though seq 10 was deleted)
            assert (await js.publish("r1.0", b"new")).seq == 11
            # consumer ack state survives
            await eventually(lambda: consumer_state(nc, "R1", "D"), (4, 4, 3, 1, 6))
            sub = await js.pull_subscribe_bind("D", "R1")
            rest = await sub.fetch(10, timeout=2)
            assert [m.metadata.sequence.stream for m in rest] == [5, 6, 7, 8, 9, 11]
            assert (await js.consumer_info("R1", "D2")).num_pending == 3
            # memory streams do not survive a restart
            assert api_error(await js_api(nc, f"{API}.STREAM.INFO.M1")) == (404, 10059, "stream not found")

    run(after())


PAYLOAD_LEN = len(b"payload-000000-") * 8


async def publish_until_killed(srv, first: int, target: int, acked: dict[int, bytes]) -> None:
    """Publish to K1 with 128 requests in flight and SIGKILL the server once `target` more acks arrived.
    Every acknowledged (seq, payload) goes into `acked`."""
    async with js_client(srv) as (nc, _js):
        resp = await js_api(nc, f"{API}.STREAM.CREATE.K1", {"name": "K1", "subjects": ["k1.>"],
                                                            "allow_direct": True})
        assert "error" not in resp, resp
        window = asyncio.Semaphore(128)
        killed = asyncio.Event()
        goal = len(acked) + target

        async def one(i: int):
            payload = f"payload-{i:06d}-".encode() * 8
            try:
                reply = await nc.request(f"k1.{i % 7}", payload, timeout=2)
                ack = json.loads(reply.data)
                if "error" not in ack:
                    assert ack["seq"] not in acked, ack
                    acked[ack["seq"]] = payload
            except Exception:  # connection lost mid-flight: not acknowledged, so not promised
                pass
            finally:
                window.release()
            if len(acked) >= goal and not killed.is_set():
                killed.set()
                srv.signal(signal.SIGKILL)

        tasks = []
        i = first
        while not killed.is_set():
            await window.acquire()
            if nc.is_closed:
                break
            tasks.append(asyncio.create_task(one(i)))
            i += 1
        # acks already on the wire are read within moments; whatever is still waiting then never gets one
        await asyncio.sleep(0.3)
        for t in tasks:
            if not t.done():
                t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        # the kill hit while publishes were in flight
        assert i - first > target, (i - first, target)
    srv.proc.wait(timeout=5)
    assert srv.proc.returncode == -signal.SIGKILL
    assert len(acked) >= goal


async def verify_after_crash(srv, acked: dict[int, bytes]) -> int:
    """Every acked message is stored as acked; the stream is contiguous from 1. Returns last_seq."""
    async with js_client(srv) as (nc, _js):
        st = (await js_api(nc, f"{API}.STREAM.INFO.K1"))["state"]
        assert st["first_seq"] == 1 and st["last_seq"] >= max(acked)
        assert st["messages"] == st["last_seq"] and "num_deleted" not in st
        sub = await nc.subscribe(nc.new_inbox())
        seq = 1
        while seq <= st["last_seq"]:
            await nc.publish(f"{API}.DIRECT.GET.K1", json.dumps({"seq": seq, "batch": 500}).encode(),
                             reply=sub.subject)
            while True:
                m = await sub.next_msg(timeout=5)
                if m.headers and m.headers.get("Status") == "204":
                    break
                got = int(m.headers["Nats-Sequence"])
                assert got == seq, (got, seq)
                if got in acked:
                    assert m.data == acked[got], got
                else:  # stored but its ack was lost with the process: still a whole message of ours
                    assert m.data.startswith(b"payload-") and len(m.data) == PAYLOAD_LEN, m.data
                seq += 1
        return st["last_seq"]


def test_kill9_during_publishing_loses_no_acked_message(fresh):
    srv = fresh(jetstream=True)
    acked: dict[int, bytes] = {}
    run(publish_until_killed(srv, 0, 1500, acked), timeout=60)
    srv.start()
    run(verify_after_crash(srv, acked), timeout=60)


@pytest.mark.slow
def test_kill9_repeated_cycles(fresh):
    srv = fresh(jetstream=True)
    acked: dict[int, bytes] = {}
    for cycle in range(5):
        run(publish_until_killed(srv, cycle * 100_000, 1000, acked), timeout=60)
        srv.start()
        last = run(verify_after_crash(srv, acked), timeout=60)
        assert last >= len(acked)


def test_restart_keeps_pending_redelivery_ttls_and_kv(fresh):
    srv = fresh(jetstream=True)

    async def before():
        async with js_client(srv) as (nc, js):
            resp = await js_api(nc, f"{API}.STREAM.CREATE.R2", {"name": "R2", "subjects": ["r2.>"],
                                                                "allow_msg_ttl": True})
            assert "error" not in resp, resp
            await js.publish("r2.work", b"job")
            await js.publish("r2.ttl", b"short-lived", headers={"Nats-TTL": "2s"})
            sub = await js.pull_subscribe("r2.work", durable="W", stream="R2",
                                          config=ConsumerConfig(ack_wait=1.0))
            [m] = await sub.fetch(1, timeout=2)  # delivered, never acked
            assert m.metadata.num_delivered == 1
            kv = await js.create_key_value(bucket="rkv", history=3)
            await kv.put("a", b"1")
            await kv.put("a", b"2")
            await kv.put("b", b"x")
            await kv.delete("b")

    run(before())
    srv.stop()
    srv.start()

    async def after():
        import nats.js.errors

        async with js_client(srv) as (nc, js):
            # the unacked message comes back once its ack wait has run out
            sub = await js.pull_subscribe_bind("W", "R2")
            [m] = await sub.fetch(1, timeout=4)
            assert (m.data, m.metadata.num_delivered, m.metadata.sequence.stream) == (b"job", 2, 1)
            await m.ack_sync()
            # the TTL still runs after the restart
            deadline = asyncio.get_running_loop().time() + 5
            while (await js_api(nc, f"{API}.STREAM.INFO.R2"))["state"]["messages"] != 1:
                assert asyncio.get_running_loop().time() < deadline, "TTL'd message survived its TTL"
                await asyncio.sleep(0.1)
            kv = await js.key_value("rkv")
            assert [(e.value, e.revision) for e in await kv_history(kv, "a")] == [(b"1", 1), (b"2", 2)]
            with pytest.raises(nats.js.errors.KeyNotFoundError):
                await kv.get("b")
            with pytest.raises(nats.js.errors.KeyWrongLastSequenceError):
                await kv.create("a", b"dup")
            assert await kv.create("b", b"back") == 5
            assert await kv_keys(kv) == ["a", "b"]

    run(after(), timeout=30)
