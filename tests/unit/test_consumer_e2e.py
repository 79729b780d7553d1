"""Consumers end to end with nats-py, on the hub and on nats-server side by side (tests/compat/harness.py starts
both with `-js -sd <tmp>`): what the parity suite (tests/compat/test_js_consumers.py) does not already cover.
Every scenario asserts the same outcome on both servers.
"""

from __future__ import annotations

import asyncio
import json
import time

import nats.errors
import pytest
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, ReplayPolicy

from tests.compat.harness import Server, api_error, js_api, js_client, run, settle

API = "$JS.API"
SIDES = ("nats", "hub")


@pytest.fixture(scope="module", params=SIDES)
def jserver(request, tmp_path_factory):
    srv = Server(request.param, jetstream=True, workdir=tmp_path_factory.mktemp(f"cons-{request.param}"))
    request.addfinalizer(srv.stop)
    return srv.start()


@pytest.fixture(params=SIDES)
def own_server(request, tmp_path_factory):
    srv = Server(request.param, jetstream=True, workdir=tmp_path_factory.mktemp(f"cons-own-{request.param}"))
    request.addfinalizer(srv.stop)
    return srv.start()


async def make_stream(js, name: str, **cfg) -> None:
    await js.add_stream(name=name, subjects=[f"{name.lower()}.>"], **cfg)


async def pull(nc, stream: str, consumer: str, body: dict, inbox_sub=None, wait: float = 0.3):
    """Send one pull request from a fresh inbox; return (frames as nats-py Msgs, the subscription)."""
    sub = inbox_sub or await nc.subscribe(nc.new_inbox())
    await nc.publish(f"{API}.CONSUMER.MSG.NEXT.{stream}.{consumer}", json.dumps(body).encode(), reply=sub.subject)
    out = []
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            out.append(await sub.next_msg(timeout=max(deadline - time.monotonic(), 0.01)))
        except nats.errors.TimeoutError:
            break
    return out, sub


def status(msg) -> str | None:
    if msg.headers and "Status" in msg.headers:
        return f"{msg.headers['Status']} {msg.headers.get('Description', '')}".strip()
    return None


def test_request_limits_and_released_requests(jserver):
    async def body():
        async with js_client(jserver) as (nc, js):
            await make_stream(js, "LIM")
            resp = await js_api(nc, f"{API}.CONSUMER.CREATE.LIM.C", {"stream_name": "LIM", "config": {
                "durable_name": "C", "ack_policy": "explicit", "max_batch": 5, "max_expires": 1_000_000_000,
                "max_bytes": 100}})
            assert resp["config"]["max_batch"] == 5, resp
            got, _ = await pull(nc, "LIM", "C", {"batch": 6})
            assert [status(m) for m in got] == ["409 Exceeded MaxRequestBatch of 5"]
            got, _ = await pull(nc, "LIM", "C", {"batch": 1, "expires": 2_000_000_000})
            assert [status(m) for m in got] == ["409 Exceeded MaxRequestExpires of 1s"]
            got, _ = await pull(nc, "LIM", "C", {"batch": 1, "max_bytes": 101})
            assert [status(m) for m in got] == ["409 Exceeded MaxRequestMaxBytes of 100"]
            # a request whose requester unsubscribed is dropped
            got, sub = await pull(nc, "LIM", "C", {"batch": 1}, wait=0.05)
            assert got == []
            assert (await js.consumer_info("LIM", "C")).num_waiting == 1
            await sub.unsubscribe()
            await settle(nc)
            assert (await js.consumer_info("LIM", "C")).num_waiting == 0
            # deleting the consumer answers the requests still waiting
            got, sub = await pull(nc, "LIM", "C", {"batch": 1}, wait=0.05)
            assert await js.delete_consumer("LIM", "C")
            msg = await sub.next_msg(timeout=2)
            assert status(msg) == "409 Consumer Deleted"

    run(body())


def test_no_responders_for_missing_consumer_and_ack_none(jserver):
    async def body():
        async with js_client(jserver) as (nc, js):
            await make_stream(js, "NR")
            await js.publish("nr.a", b"x")
            with pytest.raises(nats.errors.NoRespondersError):
                await nc.request(f"{API}.CONSUMER.MSG.NEXT.NR.NOPE", b'{"batch":1}', timeout=1)
            await js.add_consumer("NR", ConsumerConfig(durable_name="N", ack_policy=AckPolicy.NONE))
            got, _ = await pull(nc, "NR", "N", {"batch": 1})
            assert len(got) == 1 and got[0].reply.startswith("$JS.ACK.NR.N.1.1.1.")
            # nobody listens on the ack subject of an ack-none consumer
            with pytest.raises(nats.errors.NoRespondersError):
                await nc.request(got[0].reply, b"", timeout=1)

    run(body())


def test_push_queue_group_splits_messages(jserver):
    async def body():
        async with js_client(jserver) as (nc, js):
            await make_stream(js, "PQ")
            seen: dict[str, list[bytes]] = {"a": [], "b": []}

            def cb(member):
                async def handler(msg):
                    seen[member].append(msg.data)
                    await msg.ack()
                return handler

            # nats-py: the queue name is the durable name and the deliver group
            await js.subscribe("pq.>", queue="W", cb=cb("a"), manual_ack=True)
            await js.subscribe("pq.>", queue="W", cb=cb("b"), manual_ack=True)
            for i in range(40):
                await js.publish("pq.x", b"%d" % i)
            deadline = time.monotonic() + 5
            while len(seen["a"]) + len(seen["b"]) < 40 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            both = sorted(int(x) for x in seen["a"] + seen["b"])
            assert both == list(range(40))  # every message once, to one member
            info = await js.consumer_info("PQ", "W")
            assert info.config.deliver_group == "W" and info.push_bound is True
            assert info.num_pending == 0

    run(body())


def test_interest_and_workqueue_retention(jserver):
    async def body():
        async with js_client(jserver) as (nc, js):
            await make_stream(js, "IR", retention="interest")
            a = await js.pull_subscribe("ir.>", durable="A")
            b = await js.pull_subscribe("ir.>", durable="B")
            for i in range(3):
                await js.publish("ir.x", b"%d" % i)
            for m in await a.fetch(3, timeout=2):
                await m.ack_sync()
            assert (await js.stream_info("IR")).state.messages == 3  # B still needs them
            msgs = await b.fetch(2, timeout=2)
            for m in msgs:
                await m.ack_sync()
            assert (await js.stream_info("IR")).state.messages == 1
            assert await js.delete_consumer("IR", "B")
            await settle(nc)
            assert (await js.stream_info("IR")).state.messages == 0  # only B wanted the last one

            await make_stream(js, "WQ", retention="workqueue")
            w = await js.pull_subscribe("wq.a", durable="WA")
            with pytest.raises(nats.js.errors.BadRequestError) as e:
                await js.add_consumer("WQ", ConsumerConfig(durable_name="WB", ack_policy=AckPolicy.EXPLICIT,
                                                           filter_subject="wq.>"))
            assert e.value.err_code == 10100
            await js.publish("wq.a", b"1")
            await js.publish("wq.b", b"2")
            (m,) = await w.fetch(1, timeout=2)
            await m.ack_sync()
            st = (await js.stream_info("WQ")).state
            assert (st.messages, st.first_seq) == (1, 2)

    run(body())


def test_ephemeral_pull_consumer_expires(jserver):
    async def body():
        async with js_client(jserver) as (nc, js):
            await make_stream(js, "EX")
            resp = await js_api(nc, f"{API}.CONSUMER.CREATE.EX", {"stream_name": "EX", "config": {
                "ack_policy": "explicit", "inactive_threshold": 500_000_000}})
            name = resp["name"]
            assert resp["config"]["inactive_threshold"] == 500_000_000
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                info = await js_api(nc, f"{API}.CONSUMER.INFO.EX.{name}")
                if "error" in info:
                    break
                await asyncio.sleep(0.1)
            assert api_error(info) == (404, 10014, "consumer not found")

    run(body())


def test_pause_advisory_and_replay_original(jserver):
    async def body():
        async with js_client(jserver) as (nc, js):
            await make_stream(js, "RP")
            for i in range(3):
                await js.publish("rp.x", b"%d" % i)
                await asyncio.sleep(0.3)  # timed on purpose: the gaps replay "original" must keep
            adv = await nc.subscribe("$JS.EVENT.ADVISORY.CONSUMER.PAUSE.RP.>")
            await js.add_consumer("RP", ConsumerConfig(durable_name="C", ack_policy=AckPolicy.EXPLICIT))
            resp = await js_api(nc, f"{API}.CONSUMER.PAUSE.RP.C", {"pause_until": "2099-01-01T00:00:00Z"})
            assert resp["paused"] is True
            ev = json.loads((await adv.next_msg(timeout=2)).data)
            assert (ev["type"], ev["consumer"], ev["paused"]) == ("io.nats.jetstream.advisory.v1.consumer_pause",
                                                                  "C", True)
            # replay "original" keeps the ~0.3 s gaps between the stored messages
            got = []
            sub = await js.subscribe("rp.x", cb=None, config=ConsumerConfig(replay_policy=ReplayPolicy.ORIGINAL,
                                                                             deliver_policy=DeliverPolicy.ALL))
            for _ in range(3):
                m = await sub.next_msg(timeout=3)
                got.append(time.monotonic())
                await m.ack()
            assert got[2] - got[0] > 0.4

    run(body())


def test_unacked_messages_come_back_after_a_restart(own_server):
    srv = own_server

    async def before():
        async with js_client(srv) as (nc, js):
            await make_stream(js, "RS")
            for i in range(4):
                await js.publish("rs.x", b"%d" % i)
            sub = await js.pull_subscribe("rs.>", durable="D", config=ConsumerConfig(ack_wait=1.0))
            msgs = await sub.fetch(3, timeout=2)
            await msgs[0].ack_sync()
            info = await js.consumer_info("RS", "D")
            return info.num_ack_pending, info.delivered.stream_seq

    assert run(before()) == (2, 3)
    srv.stop()
    srv.start()

    async def after():
        async with js_client(srv) as (nc, js):
            info = await js.consumer_info("RS", "D")
            assert (info.num_ack_pending, info.delivered.stream_seq, info.ack_floor.stream_seq) == (2, 3, 1)
            assert info.config.ack_wait == 1.0
            # The server's own ack_wait clock, with nothing to poll: a pull before 2 and 3 are due again would get 4
            # first, and this test checks that redeliveries come ahead of it.
            await asyncio.sleep(1.2)
            sub = await js.pull_subscribe_bind("D", "RS")
            msgs = await sub.fetch(3, timeout=3)
            return [(m.metadata.sequence.stream, m.metadata.num_delivered) for m in msgs]

    assert run(after()) == [(2, 2), (3, 2), (4, 1)]


def test_api_counters_skip_pull_requests_and_malformed_subjects(jserver):
    async def body():
        async with js_client(jserver) as (nc, js):
            await make_stream(js, "AC")
            await js.publish("ac.a", b"x")
            await js.add_consumer("AC", ConsumerConfig(durable_name="C", ack_policy=AckPolicy.EXPLICIT))
            before = (await js_api(nc, f"{API}.INFO"))["api"]
            got, _ = await pull(nc, "AC", "C", {"batch": 1})  # handled by the consumer, not an API request
            assert len(got) == 1
            for subject in (f"{API}.CONSUMER.INFO.AC", f"{API}.CONSUMER.INFO.AC.C.X"):  # no handler: no answer
                with pytest.raises(nats.errors.TimeoutError):
                    await nc.request(subject, b"", timeout=0.3)
            resp = await js_api(nc, f"{API}.CONSUMER.LIST.NOPE")
            assert resp == {"type": "io.nats.jetstream.api.v1.consumer_list_response", "error": {
                "code": 404, "err_code": 10059, "description": "stream not found"}, "total": 0, "offset": 0,
                "limit": 0, "consumers": []}
            after = (await js_api(nc, f"{API}.INFO"))["api"]
            assert (after["total"] - before["total"], after["errors"] - before["errors"]) == (2, 1)

    run(body())
