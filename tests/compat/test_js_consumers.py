"""JetStream consumers: create/update/info/names/list/delete and their errors, pull requests and statuses, ack kinds,
redelivery, ack and deliver policies, filters, pending counts, push consumers (heartbeats, flow control), ordered
consumers and pause/resume. Both servers; raw sockets where the exact wire matters, nats-py elsewhere.
"""

from __future__ import annotations

import asyncio
import json
import re
import time

import pytest
from nats.js.api import ConsumerConfig

from .harness import RFC3339_NS, api_error, eventually, js_api, js_client, pub, read_msg, run, strip_versions

API = "$JS.API"
ACK_RE = re.compile(r"^\$JS\.ACK\.([^.]+)\.([^.]+)\.(\d+)\.(\d+)\.(\d+)\.(\d{19})\.(\d+)$")


def ack_info(reply: str) -> dict:
    """The tokens of a v1 ack subject: stream, consumer, delivered count, stream seq, consumer seq, ts, pending."""
    m = ACK_RE.match(reply or "")
    assert m, f"not a v1 ack subject: {reply!r}"
    s, c, dc, sseq, cseq, ts, pending = m.groups()
    return {"stream": s, "consumer": c, "delivered": int(dc), "sseq": int(sseq), "cseq": int(cseq), "ts": int(ts),
            "pending": int(pending)}


def default_consumer(name: str, durable: bool = True, **changes) -> dict:
    cfg = {"name": name, "deliver_policy": "all", "ack_policy": "explicit", "ack_wait": 30_000_000_000,
           "max_deliver": -1, "replay_policy": "instant", "max_waiting": 512, "max_ack_pending": 1000,
           "num_replicas": 0, "metadata": {"_nats.req.level": "0"}}
    if durable:
        cfg["durable_name"] = name
    else:
        cfg["inactive_threshold"] = 5_000_000_000
    cfg.update(changes)
    return cfg


async def stream(nc, name: str, msgs=(), **cfg) -> None:
    """Create stream `name` on `<name>.>` and publish `msgs` (subject suffix, payload) in order."""
    cfg.setdefault("subjects", [f"{name.lower()}.>"])
    resp = await js_api(nc, f"{API}.STREAM.CREATE.{name}", {"name": name, **cfg})
    assert "error" not in resp, resp
    for suffix, payload in msgs:
        ack = json.loads((await nc.request(f"{name.lower()}.{suffix}", payload, timeout=2)).data)
        assert "error" not in ack, ack


async def consumer(nc, stream_name: str, name: str, **cfg) -> dict:
    """Create a durable pull consumer (CONSUMER.CREATE.<stream>.<name>) with `cfg` on top of explicit acks."""
    config = {"name": name, "durable_name": name, "ack_policy": "explicit", **cfg}
    resp = await js_api(nc, f"{API}.CONSUMER.CREATE.{stream_name}.{name}", {"stream_name": stream_name,
                                                                             "config": config})
    assert "error" not in resp, resp
    return resp


async def cinfo(nc, stream_name: str, name: str) -> dict:
    return await js_api(nc, f"{API}.CONSUMER.INFO.{stream_name}.{name}")


async def _num_pending(nc, stream_name: str) -> int:
    return (await cinfo(nc, stream_name, "C"))["num_pending"]


class Puller:
    """Pull requests from nats-py with an inbox of our own, so status messages are visible as such."""

    def __init__(self, nc, stream_name: str, name: str):
        self.nc, self.subject = nc, f"{API}.CONSUMER.MSG.NEXT.{stream_name}.{name}"
        self.sub = None

    async def request(self, **req):
        if self.sub is None:
            self.inbox = self.nc.new_inbox()
            self.sub = await self.nc.subscribe(self.inbox)
        await self.nc.publish(self.subject, json.dumps(req).encode() if req else b"", reply=self.inbox)

    async def take(self, timeout: float = 2.0, batch: int = 0):
        """(messages, status) up to the first status message (404/408/409), until `batch` messages came (when
        given), or until `timeout` passes quietly."""
        msgs = []
        while not batch or len(msgs) < batch:
            try:
                m = await self.sub.next_msg(timeout=timeout)
            except Exception:  # nats.errors.TimeoutError: nothing more within timeout
                return msgs, None
            status = (m.headers or {}).get("Status")
            if status and not m.data and m.reply in (None, ""):
                if status == "100":
                    continue
                return msgs, (status, m.headers.get("Description"))
            msgs.append(m)
        return msgs, None

    async def fetch(self, batch: int = 10):
        """no_wait pull: everything available now (up to `batch`)."""
        await self.request(batch=batch, no_wait=True)
        msgs, status = await self.take(batch=batch)
        assert status in (("404", "No Messages"), ("408", "Request Timeout")) or len(msgs) == batch, status
        return msgs


def seqs(msgs) -> list[int]:
    return [ack_info(m.reply)["sseq"] for m in msgs]


# --------------------------------------------------------------------------------------------------
# create / info / names / list / delete


def test_create_durable_exact_info(jsrv):
    async def body():
        async with js_client(jsrv) as (nc, _js):
            await stream(nc, "CA1", [("a", b"1"), ("b", b"2"), ("a", b"3")])
            resp = await consumer(nc, "CA1", "D1", filter_subject="ca1.a")
            assert resp["type"] == "io.nats.jetstream.api.v1.consumer_create_response"
            assert set(resp) == {"type", "stream_name", "name", "created", "config", "delivered", "ack_floor",
                                 "num_ack_pending", "num_redelivered", "num_waiting", "num_pending", "ts"}
            assert RFC3339_NS.match(resp["created"]) and RFC3339_NS.match(resp["ts"])
            assert (resp["stream_name"], resp["name"]) == ("CA1", "D1")
            assert strip_versions(resp["config"]) == default_consumer("D1", filter_subject="ca1.a")
            assert resp["delivered"] == {"consumer_seq": 0, "stream_seq": 0}
            assert resp["ack_floor"] == {"consumer_seq": 0, "stream_seq": 0}
            assert (resp["num_ack_pending"], resp["num_redelivered"], resp["num_waiting"], resp["num_pending"]) == \
                (0, 0, 0, 2)
            info = await cinfo(nc, "CA1", "D1")
            assert info["type"] == "io.nats.jetstream.api.v1.consumer_info_response"
            assert info["created"] == resp["created"] and info["config"] == resp["config"]
            # the stream counts it
            st = await js_api(nc, f"{API}.STREAM.INFO.CA1")
            assert st["state"]["consumer_count"] == 1

    run(body())


def test_create_legacy_durable_via_nats_py(jsrv):
    async def body():
        async with js_client(jsrv) as (nc, js):
            await stream(nc, "CA2", [("a", b"1")])
            # nats-py's add_consumer(durable_name=...) uses $JS.API.CONSUMER.DURABLE.CREATE
            info = await js.add_consumer("CA2", durable_name="LEG", ack_policy="explicit", max_deliver=5,
                                         filter_subject="ca2.>")
            assert (info.name, info.config.durable_name, info.config.max_deliver, info.num_pending) == \
                ("LEG", "LEG", 5, 1)
            resp = await js_api(nc, f"{API}.CONSUMER.DURABLE.CREATE.CA2.OTHER",
                                {"stream_name": "CA2",
                                 "config": {"durable_name": "NOTOTHER", "ack_policy": "explicit"}})
            assert resp == {"type": "io.nats.jetstream.api.v1.consumer_create_response",
                            "error": {"code": 400, "err_code": 10017,
                                      "description": "consumer name in subject does not match durable name in "
                                                     "request"}}

    run(body())


def test_named_ephemeral_and_generated_names(jsrv):
    async def body():
        async with js_client(jsrv) as (nc, _js):
            await stream(nc, "CA3")
            resp = await js_api(nc, f"{API}.CONSUMER.CREATE.CA3.EPH",
                                {"stream_name": "CA3", "config": {"name": "EPH", "ack_policy": "explicit"}})
            # a name without durable_name is an ephemeral: 5 s inactivity threshold
            assert strip_versions(resp["config"]) == default_consumer("EPH", durable=False)
            resp = await js_api(nc, f"{API}.CONSUMER.CREATE.CA3",
                                {"stream_name": "CA3", "config": {"ack_policy": "explicit"}})
            name = resp["name"]
            assert re.fullmatch(r"[A-Za-z0-9]{8}", name), name
            cfg = strip_versions(resp["config"])
            assert "name" not in cfg and "durable_name" not in cfg
            assert cfg == {k: v for k, v in default_consumer("x", durable=False).items() if k != "name"}
            names = (await js_api(nc, f"{API}.CONSUMER.NAMES.CA3"))["consumers"]
            assert sorted(names) == sorted(["EPH", name])
            resp = await js_api(nc, f"{API}.CONSUMER.CREATE.CA3",
                                {"stream_name": "CA3", "config": {"durable_name": "X", "ack_policy": "explicit"}})
            assert api_error(resp) == (400, 10020,
                                       "consumer expected to be ephemeral but a durable name was set in request")

    run(body())


def test_create_action_create_and_update(jsrv):
    async def body():
        async with js_client(jsrv) as (nc, _js):
            await stream(nc, "CA4")
            req = {"stream_name": "CA4", "config": {"name": "A", "durable_name": "A", "ack_policy": "explicit"},
                   "action": "create"}
            first = await js_api(nc, f"{API}.CONSUMER.CREATE.CA4.A", req)
            # an identical create is fine
            again = await js_api(nc, f"{API}.CONSUMER.CREATE.CA4.A", req)
            assert again["created"] == first["created"]
            changed = {**req, "config": {**req["config"], "max_deliver": 3}}
            resp = await js_api(nc, f"{API}.CONSUMER.CREATE.CA4.A", changed)
            assert resp == {"type": "io.nats.jetstream.api.v1.consumer_create_response",
                            "error": {"code": 400, "err_code": 10148, "description": "consumer already exists"}}
            resp = await js_api(nc, f"{API}.CONSUMER.CREATE.CA4.A", {**changed, "action": "update"})
            assert resp["config"]["max_deliver"] == 3 and resp["created"] == first["created"]
            # create-or-update (no action) as well, but not every field may change
            resp = await js_api(nc, f"{API}.CONSUMER.CREATE.CA4.A",
                                {"stream_name": "CA4", "config": {"name": "A", "durable_name": "A",
                                                                  "ack_policy": "none"}})
            assert resp == {"type": "io.nats.jetstream.api.v1.consumer_create_response",
                            "error": {"code": 500, "err_code": 10012, "description": "ack policy can not be updated"}}
            resp = await js_api(nc, f"{API}.CONSUMER.CREATE.CA4.B",
                                {"stream_name": "CA4", "config": {"name": "B", "ack_policy": "explicit"},
                                 "action": "update"})
            assert resp == {"type": "io.nats.jetstream.api.v1.consumer_create_response",
                            "error": {"code": 400, "err_code": 10149, "description": "consumer does not exist"}}

    run(body())


def test_create_request_errors(jsrv):
    async def body():
        async with js_client(jsrv) as (nc, _js):
            await stream(nc, "CA5")
            typ = "io.nats.jetstream.api.v1.consumer_create_response"
            resp = await js_api(nc, f"{API}.CONSUMER.CREATE.CA5.B.ca5.x",
                                {"stream_name": "CA5", "config": {"name": "B", "ack_policy": "explicit",
                                                                  "filter_subject": "ca5.y"}})
            assert resp == {"type": typ, "error": {
                "code": 400, "err_code": 10131,
                "description": "Consumer create request did not match filtered subject from create subject"}}
            resp = await js_api(nc, f"{API}.CONSUMER.CREATE.CA5.B",
                                {"stream_name": "CA5", "config": {"name": "B", "durable_name": "C",
                                                                  "ack_policy": "explicit"}})
            assert resp == {"type": typ, "error": {
                "code": 400, "err_code": 10017,
                "description": "consumer name in subject does not match durable name in request"}}
            resp = await js_api(nc, f"{API}.CONSUMER.CREATE.CA5.B",
                                {"stream_name": "OTHER", "config": {"name": "B", "ack_policy": "explicit"}})
            assert resp == {"type": typ, "error": {
                "code": 400, "err_code": 10056, "description": "stream name in subject does not match request"}}
            resp = await js_api(nc, f"{API}.CONSUMER.CREATE.CA5NOPE.B",
                                {"stream_name": "CA5NOPE", "config": {"name": "B", "ack_policy": "explicit"}})
            assert resp == {"type": typ, "error": {"code": 404, "err_code": 10059, "description": "stream not found"}}
            resp = await js_api(nc, f"{API}.CONSUMER.CREATE.CA5.B", b"{bad")
            assert resp["type"] == typ and api_error(resp)[:2] == (400, 10025)
            assert api_error(resp)[2].startswith("invalid JSON: ")
            resp = await js_api(nc, f"{API}.CONSUMER.CREATE.CA5.B",
                                {"stream_name": "CA5", "config": {"name": "B", "ack_policy": "explicit",
                                                                  "filter_subjects": ["ca5.a", "ca5.*"]}})
            assert resp == {"type": typ, "error": {
                "code": 400, "err_code": 10138, "description": "consumer subject filters cannot overlap"}}
            resp = await js_api(nc, f"{API}.CONSUMER.CREATE.CA5.B",
                                {"stream_name": "CA5", "config": {"name": "B", "ack_policy": "explicit",
                                                                  "deliver_policy": "by_start_sequence"}})
            assert resp == {"type": typ, "error": {
                "code": 400, "err_code": 10094,
                "description": "consumer delivery policy is deliver by start sequence, but optional start sequence "
                               "is not set"}}
            resp = await js_api(nc, f"{API}.CONSUMER.CREATE.CA5.B",
                                {"stream_name": "CA5", "config": {"name": "B", "ack_policy": "explicit",
                                                                  "idle_heartbeat": 1_000_000_000}})
            assert resp == {"type": typ, "error": {
                "code": 400, "err_code": 10088,
                "description": "consumer idle heartbeat requires a push based consumer"}}
            assert (await js_api(nc, f"{API}.CONSUMER.NAMES.CA5"))["total"] == 0

    run(body())


def test_info_names_list_delete(jsrv):
    async def body():
        async with js_client(jsrv) as (nc, js):
            await stream(nc, "CA6", [("a", b"1")])
            for name in ("C2", "C1", "C3"):
                await consumer(nc, "CA6", name)
            resp = await js_api(nc, f"{API}.CONSUMER.NAMES.CA6", {"offset": 0})
            assert resp == {"type": "io.nats.jetstream.api.v1.consumer_names_response", "total": 3, "offset": 0,
                            "limit": 1024, "consumers": ["C1", "C2", "C3"]}
            resp = await js_api(nc, f"{API}.CONSUMER.LIST.CA6")
            assert resp["type"] == "io.nats.jetstream.api.v1.consumer_list_response"
            assert (resp["total"], resp["offset"], resp["limit"]) == (3, 0, 256)
            assert sorted(c["name"] for c in resp["consumers"]) == ["C1", "C2", "C3"]
            assert all(c["num_pending"] == 1 and c["stream_name"] == "CA6" for c in resp["consumers"])
            assert sorted(c.name for c in await js.consumers_info("CA6")) == ["C1", "C2", "C3"]
            not_found = {"code": 404, "err_code": 10014, "description": "consumer not found"}
            assert await cinfo(nc, "CA6", "NOPE") == {"type": "io.nats.jetstream.api.v1.consumer_info_response",
                                                      "error": not_found}
            resp = await js_api(nc, f"{API}.CONSUMER.DELETE.CA6.C2")
            assert resp == {"type": "io.nats.jetstream.api.v1.consumer_delete_response", "success": True}
            resp = await js_api(nc, f"{API}.CONSUMER.DELETE.CA6.C2")
            assert resp == {"type": "io.nats.jetstream.api.v1.consumer_delete_response", "error": not_found}
            assert (await js_api(nc, f"{API}.CONSUMER.NAMES.CA6"))["consumers"] == ["C1", "C3"]
            assert (await js_api(nc, f"{API}.STREAM.INFO.CA6"))["state"]["consumer_count"] == 2
            resp = await js_api(nc, f"{API}.CONSUMER.NAMES.CA6NOPE")
            assert resp == {"type": "io.nats.jetstream.api.v1.consumer_names_response",
                            "error": {"code": 404, "err_code": 10059, "description": "stream not found"},
                            "total": 0, "offset": 0, "limit": 0, "consumers": []}

    run(body())


def test_stream_delete_removes_consumers(jsrv):
    async def body():
        async with js_client(jsrv) as (nc, _js):
            await stream(nc, "CA7", [("a", b"1")])
            await consumer(nc, "CA7", "GONE")
            assert (await js_api(nc, f"{API}.STREAM.DELETE.CA7"))["success"] is True
            await stream(nc, "CA7")
            assert api_error(await cinfo(nc, "CA7", "GONE"))[1] == 10014

    run(body())


# --------------------------------------------------------------------------------------------------
# pull requests and statuses (raw wire)


def raw_pull_setup(srv, name: str, msgs, **cfg):
    async def body():
        async with js_client(srv) as (nc, _js):
            await stream(nc, name, msgs)
            await consumer(nc, name, "C", **cfg)

    run(body())


def test_pull_delivery_and_ack_subject_wire(jsrv):
    raw_pull_setup(jsrv, "CP1", [("new", b"o1"), ("paid", b"p1")])
    with jsrv.client() as c:
        c.send(b"SUB r.pull 7\r\n" + pub(f"{API}.CONSUMER.MSG.NEXT.CP1.C", b'{"batch":5,"expires":500000000}',
                                         reply="r.pull"))
        before = time.time_ns()
        m1 = read_msg(c)
        m2 = read_msg(c)
        assert (m1.op, m1.subject, m1.sid, m1.payload) == ("MSG", "cp1.new", "7", b"o1")
        assert (m2.subject, m2.payload) == ("cp1.paid", b"p1")
        a1, a2 = ack_info(m1.reply), ack_info(m2.reply)
        assert {k: a1[k] for k in ("stream", "consumer", "delivered", "sseq", "cseq", "pending")} == \
            {"stream": "CP1", "consumer": "C", "delivered": 1, "sseq": 1, "cseq": 1, "pending": 1}
        assert (a2["sseq"], a2["cseq"], a2["pending"]) == (2, 2, 0)
        # the timestamp token is the message's store time in ns
        assert abs(a1["ts"] - before) < 60 * 1_000_000_000
        c.expect(rb"HMSG r\.pull 7 81 81\r\nNATS/1\.0 408 Request Timeout\r\nNats-Pending-Messages: 3\r\n"
                 rb"Nats-Pending-Bytes: 0\r\n\r\n\r\n", timeout=3)


def test_pull_no_wait_404(jsrv):
    raw_pull_setup(jsrv, "CP2", [])
    with jsrv.client() as c:
        c.send(b"SUB r.pull 7\r\n" + pub(f"{API}.CONSUMER.MSG.NEXT.CP2.C", b'{"batch":1,"no_wait":true}',
                                         reply="r.pull"))
        c.expect(rb"HMSG r\.pull 7 28 28\r\nNATS/1\.0 404 No Messages\r\n\r\n\r\n")


def test_pull_expires_408(jsrv):
    raw_pull_setup(jsrv, "CP3", [])
    with jsrv.client() as c:
        c.send(b"SUB r.pull 7\r\n" + pub(f"{API}.CONSUMER.MSG.NEXT.CP3.C", b'{"batch":4,"expires":300000000}',
                                         reply="r.pull"))
        c.sync()
        assert c.msgs_until_pong() == []
        c.expect(rb"HMSG r\.pull 7 81 81\r\nNATS/1\.0 408 Request Timeout\r\nNats-Pending-Messages: 4\r\n"
                 rb"Nats-Pending-Bytes: 0\r\n\r\n\r\n", timeout=3)


def test_pull_max_bytes_409(jsrv):
    raw_pull_setup(jsrv, "CP4", [("a", b"x" * 100)])
    with jsrv.client() as c:
        c.send(b"SUB r.pull 7\r\n" + pub(f"{API}.CONSUMER.MSG.NEXT.CP4.C",
                                         b'{"batch":10,"max_bytes":40,"expires":500000000}', reply="r.pull"))
        c.expect(rb"HMSG r\.pull 7 97 97\r\nNATS/1\.0 409 Message Size Exceeds MaxBytes\r\n"
                 rb"Nats-Pending-Messages: 10\r\nNats-Pending-Bytes: 40\r\n\r\n\r\n")


def test_pull_empty_body_waits_for_a_message(jsrv):
    raw_pull_setup(jsrv, "CP5", [])
    with jsrv.client() as c, jsrv.client() as p:
        c.send(b"SUB r.pull 7\r\n" + pub(f"{API}.CONSUMER.MSG.NEXT.CP5.C", b"", reply="r.pull"))
        c.sync()
        time.sleep(0.3)  # proves a negative: no status and no message comes back while the request waits
        assert c.msgs_until_pong() == []
        p.send(pub("cp5.late", b"here"))
        m = read_msg(c, timeout=3)
        assert (m.subject, m.payload, ack_info(m.reply)["sseq"]) == ("cp5.late", b"here", 1)


def test_pull_idle_heartbeat(jsrv):
    raw_pull_setup(jsrv, "CP6", [])
    with jsrv.client() as c:
        c.send(b"SUB r.pull 7\r\n" + pub(f"{API}.CONSUMER.MSG.NEXT.CP6.C",
                                         b'{"batch":1,"expires":1200000000,"idle_heartbeat":400000000}',
                                         reply="r.pull"))
        hb = (rb"HMSG r\.pull 7 75 75\r\nNATS/1\.0 100 Idle Heartbeat\r\nNats-Last-Consumer: 0\r\n"
              rb"Nats-Last-Stream: 0\r\n\r\n\r\n")
        c.expect(hb, timeout=2)
        c.expect(hb, timeout=2)
        c.expect(rb"(" + hb + rb")?HMSG r\.pull 7 81 81\r\nNATS/1\.0 408 Request Timeout\r\n", timeout=3)


def test_pull_on_push_consumer_409(jsrv):
    async def body():
        async with js_client(jsrv) as (nc, _js):
            await stream(nc, "CP7")
            resp = await js_api(nc, f"{API}.CONSUMER.CREATE.CP7.P",
                                {"stream_name": "CP7", "config": {"name": "P", "deliver_subject": "dl.cp7",
                                                                  "ack_policy": "explicit"}})
            assert "max_waiting" not in resp["config"] and resp["config"]["deliver_subject"] == "dl.cp7"
            reply = await nc.request(f"{API}.CONSUMER.MSG.NEXT.CP7.P", b'{"batch":1}', timeout=2)
            assert reply.headers["Status"] == "409" and reply.headers["Description"] == "Consumer is push based"
            assert reply.data == b""

    run(body())


def test_nats_py_fetch_and_metadata(jsrv):
    async def body():
        import nats.errors

        async with js_client(jsrv) as (nc, js):
            await stream(nc, "CP8", [("a", f"m{i}".encode()) for i in range(5)])
            sub = await js.pull_subscribe("cp8.a", durable="F", stream="CP8")
            msgs = await sub.fetch(3, timeout=2)
            assert [m.data for m in msgs] == [b"m0", b"m1", b"m2"]
            md = msgs[2].metadata
            assert (md.sequence.stream, md.sequence.consumer, md.num_delivered, md.num_pending, md.stream,
                    md.consumer) == (3, 3, 1, 2, "CP8", "F")
            for m in msgs:
                await m.ack()
            msgs = await sub.fetch(5, timeout=1)
            assert [m.data for m in msgs] == [b"m3", b"m4"]
            for m in msgs:
                await m.ack_sync()
            with pytest.raises(nats.errors.TimeoutError):
                await sub.fetch(1, timeout=0.5)
            info = await js.consumer_info("CP8", "F")
            assert (info.delivered.stream_seq, info.ack_floor.stream_seq, info.num_ack_pending, info.num_pending) == \
                (5, 5, 0, 0)

    run(body())


# --------------------------------------------------------------------------------------------------
# ack kinds


async def pulled(nc, name: str, n: int, **cfg):
    """Stream `name` with n messages on `<name>.a`, durable consumer C with `cfg`, a Puller for it."""
    await stream(nc, name, [("a", f"m{i + 1}".encode()) for i in range(n)])
    await consumer(nc, name, "C", **cfg)
    return Puller(nc, name, "C")


def test_ack_advances_ack_floor(jsrv):
    async def body():
        async with js_client(jsrv) as (nc, _js):
            p = await pulled(nc, "CK1", 3)
            msgs = await p.fetch(3)
            assert seqs(msgs) == [1, 2, 3]
            await nc.request(msgs[0].reply, b"+ACK", timeout=2)
            await nc.request(msgs[2].reply, b"", timeout=2)  # an empty payload is an ack too
            info = await cinfo(nc, "CK1", "C")
            assert info["ack_floor"]["stream_seq"] == 1 and info["ack_floor"]["consumer_seq"] == 1
            assert info["num_ack_pending"] == 1
            await nc.request(msgs[1].reply, b"+ACK", timeout=2)
            info = await cinfo(nc, "CK1", "C")
            assert (info["ack_floor"]["stream_seq"], info["num_ack_pending"]) == (3, 0)
            assert RFC3339_NS.match(info["ack_floor"]["last_active"])

    run(body())


def test_ack_sync_gets_empty_reply(jsrv):
    raw_pull_setup(jsrv, "CK2", [("a", b"1")])
    with jsrv.client() as c:
        c.send(b"SUB r.pull 7\r\nSUB r.ack 8\r\n" + pub(f"{API}.CONSUMER.MSG.NEXT.CK2.C", b'{"batch":1}',
                                                        reply="r.pull"))
        m = read_msg(c)
        c.send(pub(m.reply, b"+ACK", reply="r.ack"))
        c.expect(rb"MSG r\.ack 8 0\r\n\r\n")


def test_nak_redelivers_with_count(jsrv):
    async def body():
        async with js_client(jsrv) as (nc, _js):
            p = await pulled(nc, "CK3", 2)
            first = await p.fetch(1)
            await nc.request(first[0].reply, b"-NAK", timeout=2)
            again = await p.fetch(2)
            infos = [ack_info(m.reply) for m in again]
            assert [(i["sseq"], i["delivered"], i["cseq"]) for i in infos] == [(1, 2, 2), (2, 1, 3)]
            info = await cinfo(nc, "CK3", "C")
            assert (info["num_redelivered"], info["num_ack_pending"]) == (1, 2)

    run(body())


def test_nak_with_delay(jsrv):
    async def body():
        async with js_client(jsrv) as (nc, _js):
            p = await pulled(nc, "CK4", 1)
            [m] = await p.fetch(1)
            await nc.request(m.reply, b'-NAK {"delay": 800000000}', timeout=2)
            t0 = time.monotonic()
            assert await p.fetch(1) == []
            await p.request(batch=1, expires=3_000_000_000)
            msgs, status = await p.take(timeout=3, batch=1)
            assert status is None and len(msgs) == 1
            assert time.monotonic() - t0 >= 0.6
            assert ack_info(msgs[0].reply)["delivered"] == 2

    run(body())


def test_wpi_extends_ack_wait(jsrv):
    async def body():
        async with js_client(jsrv) as (nc, _js):
            p = await pulled(nc, "CK5", 1, ack_wait=1_000_000_000)
            [m] = await p.fetch(1)
            t0 = time.monotonic()
            # timed on purpose: +WPI at 0.6 s, then a look past the first deadline (1 s) proves a negative
            await asyncio.sleep(0.6)
            await nc.request(m.reply, b"+WPI", timeout=2)
            await asyncio.sleep(max(0.0, 1.25 - (time.monotonic() - t0)))
            # past the original deadline: still in progress, nothing redelivered
            assert await p.fetch(1) == []
            await p.request(batch=1, expires=2_000_000_000)
            msgs, _ = await p.take(timeout=3, batch=1)
            assert len(msgs) == 1 and ack_info(msgs[0].reply)["delivered"] == 2

    run(body())


def test_term_stops_redelivery(jsrv):
    async def body():
        async with js_client(jsrv) as (nc, _js):
            p = await pulled(nc, "CK6", 2, ack_wait=500_000_000)
            [m1, m2] = await p.fetch(2)
            await nc.request(m1.reply, b"+TERM no longer needed", timeout=2)
            await nc.request(m2.reply, b"+ACK", timeout=2)
            await asyncio.sleep(0.8)  # proves a negative: past ack_wait (0.5 s), neither message comes back
            assert await p.fetch(1) == []
            info = await cinfo(nc, "CK6", "C")
            assert (info["ack_floor"]["stream_seq"], info["num_ack_pending"], info["num_redelivered"]) == (2, 0, 0)

    run(body())


def test_nxt_acks_and_delivers_next(jsrv):
    raw_pull_setup(jsrv, "CK7", [("a", b"1"), ("a", b"2"), ("a", b"3"), ("a", b"4")])
    with jsrv.client() as c:
        c.send(b"SUB r.pull 7\r\nSUB r.next 8\r\n" + pub(f"{API}.CONSUMER.MSG.NEXT.CK7.C", b'{"batch":1}',
                                                         reply="r.pull"))
        m = read_msg(c)
        assert m.payload == b"1"
        c.send(pub(m.reply, b"+NXT", reply="r.next"))
        m = read_msg(c)
        assert (m.sid, m.payload) == ("8", b"2")
        c.send(pub(m.reply, b'+NXT {"batch":2}', reply="r.next"))
        assert [read_msg(c).payload for _ in range(2)] == [b"3", b"4"]

    async def check():
        async with js_client(jsrv) as (nc, _js):
            info = await cinfo(nc, "CK7", "C")
            assert (info["ack_floor"]["stream_seq"], info["num_ack_pending"]) == (2, 2)

    run(check())


def test_ack_wait_redelivery(jsrv):
    async def body():
        async with js_client(jsrv) as (nc, js):
            await stream(nc, "CK8", [("a", b"1")])
            sub = await js.pull_subscribe("ck8.a", durable="C", stream="CK8", config=ConsumerConfig(ack_wait=0.5))
            [m] = await sub.fetch(1, timeout=2)
            assert m.metadata.num_delivered == 1
            # a lingering pull (batch 1, expires = timeout) gets the redelivery once ack_wait (0.5 s) passes
            [again] = await sub.fetch(1, timeout=3)
            assert (again.data, again.metadata.num_delivered, again.metadata.sequence.stream) == (b"1", 2, 1)
            info = await js.consumer_info("CK8", "C")
            assert (info.num_redelivered, info.num_ack_pending, info.delivered.consumer_seq) == (1, 1, 2)
            await again.ack_sync()
            # num_redelivered counts the redelivered messages still pending
            info = await js.consumer_info("CK8", "C")
            assert (info.num_redelivered, info.num_ack_pending, info.ack_floor.stream_seq) == (0, 0, 1)

    run(body())


def test_max_deliver(jsrv):
    async def body():
        async with js_client(jsrv) as (nc, _js):
            p = await pulled(nc, "CK9", 3, ack_wait=400_000_000, max_deliver=2)
            assert seqs(await p.fetch(10)) == [1, 2, 3]
            # a waiting pull gets the three redeliveries once ack_wait (0.4 s) passes, then its 408
            await p.request(batch=10, expires=1_500_000_000)
            msgs, status = await p.take(timeout=3)
            assert [(ack_info(m.reply)["sseq"], ack_info(m.reply)["delivered"]) for m in msgs] == \
                [(1, 2), (2, 2), (3, 2)]
            assert status == ("408", "Request Timeout")
            await asyncio.sleep(0.3)
            # no third delivery
            await p.request(batch=10, expires=300_000_000)
            msgs, status = await p.take()
            assert msgs == [] and status == ("408", "Request Timeout")
            info = await cinfo(nc, "CK9", "C")
            assert info["delivered"]["consumer_seq"] == 6 and info["delivered"]["stream_seq"] == 3
            assert (info["num_ack_pending"], info["num_redelivered"], info["num_pending"]) == (0, 3, 0)

    run(body())


# --------------------------------------------------------------------------------------------------
# ack policies


def test_ack_policy_all(jsrv):
    async def body():
        async with js_client(jsrv) as (nc, _js):
            p = await pulled(nc, "CL1", 4, ack_policy="all")
            msgs = await p.fetch(4)
            await nc.request(msgs[2].reply, b"+ACK", timeout=2)
            info = await cinfo(nc, "CL1", "C")
            assert info["config"]["ack_policy"] == "all"
            assert (info["ack_floor"]["stream_seq"], info["ack_floor"]["consumer_seq"], info["num_ack_pending"]) == \
                (3, 3, 1)

    run(body())


def test_ack_policy_none(jsrv):
    async def body():
        async with js_client(jsrv) as (nc, _js):
            p = await pulled(nc, "CL2", 3, ack_policy="none")
            info = await cinfo(nc, "CL2", "C")
            assert strip_versions(info["config"]) == {
                "durable_name": "C", "name": "C", "deliver_policy": "all", "ack_policy": "none", "max_deliver": -1,
                "replay_policy": "instant", "max_waiting": 512, "num_replicas": 0,
                "metadata": {"_nats.req.level": "0"}}
            msgs = await p.fetch(2)
            assert seqs(msgs) == [1, 2]
            info = await cinfo(nc, "CL2", "C")
            assert (info["ack_floor"]["stream_seq"], info["num_ack_pending"], info["num_pending"]) == (2, 0, 1)

    run(body())


# --------------------------------------------------------------------------------------------------
# deliver policies, filters, pending counts


DELIVER_CASES = {
    "all": ({}, [1, 2, 3, 4, 5]),
    "last": ({"deliver_policy": "last"}, [5]),
    "new": ({"deliver_policy": "new"}, [6]),
    "by_start_sequence": ({"deliver_policy": "by_start_sequence", "opt_start_seq": 3}, [3, 4, 5]),
    "by_start_time": ({"deliver_policy": "by_start_time"}, [4, 5]),
    "last_per_subject": ({"deliver_policy": "last_per_subject", "filter_subject": "cd{n}.>"}, [3, 4, 5]),
}


@pytest.mark.parametrize("policy", list(DELIVER_CASES))
def test_deliver_policies(jsrv, policy):
    cfg, expected = DELIVER_CASES[policy]
    n = list(DELIVER_CASES).index(policy)
    name = f"CD{n}"

    async def body():
        async with js_client(jsrv) as (nc, _js):
            await stream(nc, name, [("a", b"a1"), ("b", b"b1"), ("a", b"a2"), ("c", b"c1"), ("b", b"b2")])
            config = {k: (v.format(n=n) if isinstance(v, str) else v) for k, v in cfg.items()}
            if policy == "by_start_time":
                t4 = (await js_api(nc, f"{API}.STREAM.MSG.GET.{name}", {"seq": 4}))["message"]["time"]
                config["opt_start_time"] = t4
            resp = await consumer(nc, name, "C", **config)
            assert resp["config"]["deliver_policy"] == config.get("deliver_policy", "all")
            if policy == "new":
                assert resp["num_pending"] == 0
                await nc.request(f"{name.lower()}.d", b"d1", timeout=2)
                # nats-server tells its consumers of a stored message off the publisher's path: a no_wait pull
                # right after the PubAck may come first
                await eventually(lambda: _num_pending(nc, name), 1)
            else:
                assert resp["num_pending"] == len(expected)
            p = Puller(nc, name, "C")
            assert seqs(await p.fetch(10)) == expected

    run(body())


def test_filter_subject_and_subjects(jsrv):
    async def body():
        async with js_client(jsrv) as (nc, _js):
            await stream(nc, "CF1", [(s, s.encode()) for s in ("a", "b", "c", "a", "b", "c", "d")])
            one = await consumer(nc, "CF1", "ONE", filter_subject="cf1.b")
            many = await consumer(nc, "CF1", "MANY", filter_subjects=["cf1.a", "cf1.c"])
            assert "filter_subject" not in many["config"] and many["config"]["filter_subjects"] == ["cf1.a", "cf1.c"]
            assert (one["num_pending"], many["num_pending"]) == (2, 4)
            assert seqs(await Puller(nc, "CF1", "ONE").fetch(10)) == [2, 5]
            got = await Puller(nc, "CF1", "MANY").fetch(10)
            assert seqs(got) == [1, 3, 4, 6]
            assert [ack_info(m.reply)["pending"] for m in got] == [3, 2, 1, 0]
            # new messages on filtered subjects only raise pending for the consumers that match
            await nc.request("cf1.c", b"c", timeout=2)
            await nc.request("cf1.x", b"x", timeout=2)
            async def pendings():
                return ((await cinfo(nc, "CF1", "MANY"))["num_pending"], (await cinfo(nc, "CF1", "ONE"))["num_pending"])

            await eventually(pendings, (1, 0))

    run(body())


def test_pending_counts(jsrv):
    async def body():
        async with js_client(jsrv) as (nc, _js):
            p = await pulled(nc, "CN1", 5)

            async def counts():
                i = await cinfo(nc, "CN1", "C")
                return (i["num_pending"], i["num_ack_pending"], i["delivered"]["stream_seq"],
                        i["ack_floor"]["stream_seq"])

            await eventually(counts, (5, 0, 0, 0))
            msgs = await p.fetch(3)
            await eventually(counts, (2, 3, 3, 0))
            for m in msgs[:2]:
                await nc.request(m.reply, b"+ACK", timeout=2)
            await eventually(counts, (2, 1, 3, 2))
            await nc.request("cn1.a", b"more", timeout=2)
            await eventually(counts, (3, 1, 3, 2))
            assert seqs(await p.fetch(10)) == [4, 5, 6]
            await eventually(counts, (0, 4, 6, 2))
            # a pull request left waiting in the consumer shows in num_waiting
            await p.request(batch=1, expires=2_000_000_000)

            async def waiting():
                return (await cinfo(nc, "CN1", "C"))["num_waiting"]

            await eventually(waiting, 1)

    run(body())


def test_max_ack_pending_limits_delivery(jsrv):
    async def body():
        async with js_client(jsrv) as (nc, _js):
            p = await pulled(nc, "CN2", 5, max_ack_pending=2)
            await p.request(batch=5, expires=400_000_000)
            msgs, status = await p.take()
            assert seqs(msgs) == [1, 2] and status == ("408", "Request Timeout")
            await nc.request(msgs[0].reply, b"+ACK", timeout=2)
            await p.request(batch=5, expires=400_000_000)
            msgs, status = await p.take()
            assert seqs(msgs) == [3] and status == ("408", "Request Timeout")

    run(body())


# --------------------------------------------------------------------------------------------------
# push consumers


def test_push_consumer_delivery_and_idle_heartbeat(jsrv):
    async def setup():
        async with js_client(jsrv) as (nc, _js):
            await stream(nc, "CH1", [("a", b"1"), ("b", b"2")])

    run(setup())
    with jsrv.client() as c:
        c.send(b"SUB dl.ch1 4\r\n")
        c.sync()
        body = {"stream_name": "CH1", "config": {"name": "P", "durable_name": "P", "deliver_subject": "dl.ch1",
                                                 "ack_policy": "explicit", "idle_heartbeat": 300_000_000}}
        c.send(b"SUB r.api 5\r\n" + pub(f"{API}.CONSUMER.CREATE.CH1.P", json.dumps(body).encode(), reply="r.api"))
        frames = []
        # the create reply and the first deliveries race each other
        while len([f for f in frames if f.sid == "4"]) < 2 or not [f for f in frames if f.sid == "5"]:
            frames.append(read_msg(c))
        created = json.loads(next(f for f in frames if f.subject == "r.api").payload)
        assert created["config"]["idle_heartbeat"] == 300_000_000 and created["config"]["deliver_subject"] == "dl.ch1"
        assert created["push_bound"] is True
        # deliveries keep the stored subject; only the sid says they came through dl.ch1
        msgs = [f for f in frames if f.sid == "4"]
        assert [(m.subject, m.payload, ack_info(m.reply)["sseq"]) for m in msgs] == [("ch1.a", b"1", 1),
                                                                                     ("ch1.b", b"2", 2)]
        c.expect(rb"HMSG dl\.ch1 4 75 75\r\nNATS/1\.0 100 Idle Heartbeat\r\nNats-Last-Consumer: 2\r\n"
                 rb"Nats-Last-Stream: 2\r\n\r\n\r\n", timeout=2)
        # a live message is pushed as it is stored
        c.send(pub("ch1.c", b"3"))
        m = read_msg(c)
        while m.payload == b"":  # a heartbeat may come first
            m = read_msg(c)
        assert (m.subject, m.payload, ack_info(m.reply)["sseq"]) == ("ch1.c", b"3", 3)


def test_push_consumer_flow_control(jsrv):
    async def body():
        async with js_client(jsrv) as (nc, _js):
            await stream(nc, "CH2", [("a", b"x" * 65536) for _ in range(24)])
            got = []

            async def cb(m):
                got.append(m)

            await nc.subscribe("dl.ch2", cb=cb)
            resp = await js_api(nc, f"{API}.CONSUMER.CREATE.CH2.P",
                                {"stream_name": "CH2", "config": {"name": "P", "deliver_subject": "dl.ch2",
                                                                  "ack_policy": "none", "flow_control": True,
                                                                  "idle_heartbeat": 300_000_000}})
            assert resp["config"]["flow_control"] is True

            def status(m):
                return (m.headers or {}).get("Status")

            deadline = time.monotonic() + 5
            while not any(status(m) == "100" and (m.headers or {}).get("Nats-Consumer-Stalled") for m in got):
                assert time.monotonic() < deadline, [m.headers for m in got if m.headers]
                await asyncio.sleep(0.05)
            data = [m for m in got if not status(m)]
            fc = [(i, m) for i, m in enumerate(got) if status(m) == "100" and m.reply]
            assert len(data) == 24
            # the request comes once more than 1 MiB is outstanding (the 16th 64 KiB message)
            i, fcm = fc[0]
            assert fcm.headers["Description"] == "FlowControl Request" and fcm.data == b""
            assert len([m for m in got[:i] if not status(m)]) == 16
            assert re.fullmatch(r"\$JS\.FC\.CH2\.P\.[A-Za-z0-9]+", fcm.reply), fcm.reply
            stalled = next(m for m in got if (m.headers or {}).get("Nats-Consumer-Stalled"))
            assert stalled.headers["Nats-Consumer-Stalled"] == fcm.reply
            assert stalled.headers["Description"] == "Idle Heartbeat"
            # answering the request clears the stall from later heartbeats
            await nc.publish(fcm.reply, b"")
            n = len(got)
            deadline = time.monotonic() + 3
            while not [m for m in got[n:] if status(m) == "100" and not m.reply]:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
            hb = [m for m in got[n:] if status(m) == "100" and not m.reply][-1]
            assert "Nats-Consumer-Stalled" not in hb.headers
            assert (hb.headers["Nats-Last-Consumer"], hb.headers["Nats-Last-Stream"]) == ("24", "24")

    run(body())


def test_push_subscribe_nats_py(jsrv):
    async def body():
        async with js_client(jsrv) as (nc, js):
            await stream(nc, "CH3", [("a", b"1"), ("a", b"2")])
            sub = await js.subscribe("ch3.a", durable="PS", stream="CH3")
            for expected in (b"1", b"2"):
                m = await sub.next_msg(timeout=2)
                assert m.data == expected
                await m.ack()
            await nc.request("ch3.a", b"3", timeout=2)
            m = await sub.next_msg(timeout=2)
            assert (m.data, m.metadata.sequence.stream) == (b"3", 3)
            await m.ack_sync()
            info = await js.consumer_info("CH3", "PS")
            assert info.push_bound is True and info.ack_floor.stream_seq == 3

    run(body())


def test_ordered_consumer(jsrv):
    async def body():
        async with js_client(jsrv) as (nc, js):
            await stream(nc, "CO1", [("a", f"{i}".encode()) for i in range(20)])
            sub = await js.subscribe("co1.a", ordered_consumer=True, stream="CO1")
            got = [await sub.next_msg(timeout=2) for _ in range(20)]
            assert [m.data for m in got] == [f"{i}".encode() for i in range(20)]
            assert [m.metadata.sequence.stream for m in got] == list(range(1, 21))
            info = await sub.consumer_info()
            cfg = info.config
            assert (cfg.ack_policy, cfg.max_deliver, cfg.mem_storage, cfg.flow_control) == ("none", 1, True, True)
            await nc.request("co1.a", b"live", timeout=2)
            m = await sub.next_msg(timeout=2)
            assert (m.data, m.metadata.sequence.stream) == (b"live", 21)

    run(body())


# --------------------------------------------------------------------------------------------------
# pause / resume


def test_pause_resume_api(jsrv):
    async def body():
        async with js_client(jsrv) as (nc, _js):
            await stream(nc, "CZ1")
            await consumer(nc, "CZ1", "C")
            until = "2099-01-01T00:00:00Z"
            resp = await js_api(nc, f"{API}.CONSUMER.PAUSE.CZ1.C", {"pause_until": until})
            assert resp["type"] == "io.nats.jetstream.api.v1.consumer_pause_response"
            assert (resp["paused"], resp["pause_until"]) == (True, until) and resp["pause_remaining"] > 0
            assert set(resp) == {"type", "paused", "pause_until", "pause_remaining"}
            info = await cinfo(nc, "CZ1", "C")
            assert info["paused"] is True and info["pause_remaining"] > 0
            assert info["config"]["pause_until"] == until
            assert info["config"]["metadata"]["_nats.req.level"] == "1"
            resp = await js_api(nc, f"{API}.CONSUMER.PAUSE.CZ1.C", {"pause_until": "1970-01-01T00:00:00Z"})
            assert resp == {"type": "io.nats.jetstream.api.v1.consumer_pause_response", "paused": False,
                            "pause_until": "1970-01-01T00:00:00Z"}
            resp = await js_api(nc, f"{API}.CONSUMER.PAUSE.CZ1.C")
            assert resp == {"type": "io.nats.jetstream.api.v1.consumer_pause_response", "paused": False,
                            "pause_until": "0001-01-01T00:00:00Z"}
            info = await cinfo(nc, "CZ1", "C")
            assert "paused" not in info and "pause_until" not in info["config"]
            resp = await js_api(nc, f"{API}.CONSUMER.PAUSE.CZ1.NOPE", {"pause_until": until})
            assert resp == {"type": "io.nats.jetstream.api.v1.consumer_pause_response",
                            "error": {"code": 404, "err_code": 10014, "description": "consumer not found"},
                            "paused": False, "pause_until": "0001-01-01T00:00:00Z"}

    run(body())


def test_pause_blocks_delivery_until_resumed(jsrv):
    async def body():
        async with js_client(jsrv) as (nc, js):
            p = await pulled(nc, "CZ2", 2)
            await js.pause_consumer("CZ2", "C", "2099-01-01T00:00:00Z")
            await p.request(batch=2, expires=1_000_000_000)

            async def waiting():
                return (await cinfo(nc, "CZ2", "C"))["num_waiting"]

            await eventually(waiting, 1)
            msgs, status = await p.take(timeout=2)
            assert msgs == [] and status == ("408", "Request Timeout")
            resp = await js.resume_consumer("CZ2", "C")
            assert resp.paused is False
            await p.request(batch=2, expires=1_000_000_000)
            msgs, _ = await p.take(batch=2)
            assert seqs(msgs) == [1, 2]

    run(body())


def test_pause_expires_by_itself(jsrv):
    async def body():
        async with js_client(jsrv) as (nc, _js):
            p = await pulled(nc, "CZ3", 1)
            until = time.time() + 1.0
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(until)) + f".{int(until % 1 * 1e9):09d}Z"
            resp = await js_api(nc, f"{API}.CONSUMER.PAUSE.CZ3.C", {"pause_until": stamp})
            assert resp["paused"] is True
            assert await p.fetch(1) == []
            await p.request(batch=1, expires=3_000_000_000)
            msgs, _ = await p.take(timeout=3, batch=1)
            assert seqs(msgs) == [1]
            assert time.time() >= until - 0.05
            info = await cinfo(nc, "CZ3", "C")
            assert "paused" not in info

    run(body())


# --------------------------------------------------------------------------------------------------
# request limits, headers_only, backoff, inactivity, queue groups, purges under a consumer


def test_pull_request_limits_409(jsrv):
    async def setup():
        async with js_client(jsrv) as (nc, _js):
            await stream(nc, "CR1", [("a", b"x" * 50)])
            resp = await consumer(nc, "CR1", "C", max_waiting=1, max_batch=2, max_expires=1_000_000_000,
                                  max_bytes=100)
            cfg = resp["config"]
            assert (cfg["max_waiting"], cfg["max_batch"], cfg["max_expires"], cfg["max_bytes"]) == \
                (1, 2, 1_000_000_000, 100)
            await stream(nc, "CR2")
            await consumer(nc, "CR2", "C", max_waiting=1)

    run(setup())
    cases = [(b'{"batch":5}', b"409 Exceeded MaxRequestBatch of 2"),
             (b'{"batch":1,"expires":5000000000}', b"409 Exceeded MaxRequestExpires of 1s"),
             (b'{"batch":1,"max_bytes":500}', b"409 Exceeded MaxRequestMaxBytes of 100")]
    with jsrv.client() as c:
        c.send(b"SUB r.pull 7\r\n")
        for body, status in cases:
            c.send(pub(f"{API}.CONSUMER.MSG.NEXT.CR1.C", body, reply="r.pull"))
            hdr = b"NATS/1.0 " + status + b"\r\n\r\n"
            c.expect(f"HMSG r.pull 7 {len(hdr)} {len(hdr)}\r\n".encode().replace(b".", rb"\.") + re.escape(hdr)
                     + rb"\r\n")
        # one request may wait on CR2's empty consumer; a second one is refused
        c.send(pub(f"{API}.CONSUMER.MSG.NEXT.CR2.C", b'{"batch":1,"expires":1000000000}', reply="r.pull"))
        c.sync()
        c.send(pub(f"{API}.CONSUMER.MSG.NEXT.CR2.C", b'{"batch":1,"expires":1000000000}', reply="r.pull"))
        c.expect(rb"HMSG r\.pull 7 36 36\r\nNATS/1\.0 409 Exceeded MaxWaiting\r\n\r\n\r\n")
        c.expect(rb"HMSG r\.pull 7 81 81\r\nNATS/1\.0 408 Request Timeout\r\nNats-Pending-Messages: 1\r\n", timeout=3)


def test_headers_only_consumer(jsrv):
    async def body():
        async with js_client(jsrv) as (nc, _js):
            await stream(nc, "CR3")
            await nc.request("cr3.a", b"hello", headers={"X": "y"}, timeout=2)
            await nc.request("cr3.a", b"", timeout=2)
            resp = await consumer(nc, "CR3", "C", headers_only=True)
            assert resp["config"]["headers_only"] is True
            msgs = await Puller(nc, "CR3", "C").fetch(2)
            assert [(m.data, dict(m.headers)) for m in msgs] == [(b"", {"X": "y", "Nats-Msg-Size": "5"}),
                                                                 (b"", {"Nats-Msg-Size": "0"})]

    run(body())


def test_backoff_redelivery_schedule(jsrv):
    async def body():
        async with js_client(jsrv) as (nc, _js):
            await stream(nc, "CR4", [("a", b"x")])
            resp = await consumer(nc, "CR4", "C", backoff=[300_000_000, 700_000_000], max_deliver=4)
            # the first backoff step becomes the ack wait
            assert (resp["config"]["ack_wait"], resp["config"]["backoff"]) == (300_000_000, [300_000_000, 700_000_000])
            p = Puller(nc, "CR4", "C")
            await p.request(batch=5, expires=2_300_000_000)
            times = []
            t0 = time.monotonic()
            for _ in range(4):
                msgs, status = await p.take(timeout=3, batch=1)
                assert status is None and len(msgs) == 1
                times.append(time.monotonic() - t0)
                p_info = ack_info(msgs[0].reply)
                assert p_info["delivered"] == len(times) and p_info["sseq"] == 1
            gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
            # 0.3 s, then 0.7 s, and the last step repeats
            assert gaps[0] >= 0.25 and gaps[1] >= 0.65 and gaps[2] >= 0.65, gaps
            assert gaps[0] < gaps[1], gaps
            msgs, status = await p.take(timeout=3)
            assert msgs == [] and status == ("408", "Request Timeout")

    run(body())


def test_ephemeral_inactive_threshold_removes_consumer(jsrv):
    async def body():
        async with js_client(jsrv) as (nc, _js):
            await stream(nc, "CR5")
            resp = await js_api(nc, f"{API}.CONSUMER.CREATE.CR5.IN",
                                {"stream_name": "CR5", "config": {"name": "IN", "ack_policy": "explicit",
                                                                  "inactive_threshold": 500_000_000}})
            assert resp["config"]["inactive_threshold"] == 500_000_000
            durable = await consumer(nc, "CR5", "DUR", inactive_threshold=500_000_000)
            assert durable["config"]["inactive_threshold"] == 500_000_000
            deadline = time.monotonic() + 4
            while "error" not in await cinfo(nc, "CR5", "IN"):
                assert time.monotonic() < deadline, "idle ephemeral consumer never went away"
                await asyncio.sleep(0.1)
            assert api_error(await cinfo(nc, "CR5", "IN"))[1] == 10014

    run(body())


def test_push_deliver_group(jsrv):
    async def body():
        async with js_client(jsrv) as (nc, _js):
            await stream(nc, "CR6")
            q1 = await nc.subscribe("dq.cr6", queue="grp")
            q2 = await nc.subscribe("dq.cr6", queue="grp")
            resp = await js_api(nc, f"{API}.CONSUMER.CREATE.CR6.Q",
                                {"stream_name": "CR6", "config": {"name": "Q", "durable_name": "Q",
                                                                  "ack_policy": "explicit", "deliver_subject": "dq.cr6",
                                                                  "deliver_group": "grp"}})
            assert resp["config"]["deliver_group"] == "grp"
            for i in range(20):
                await nc.request("cr6.a", str(i).encode(), timeout=2)
            got = []
            deadline = time.monotonic() + 3
            while len(got) < 20:
                for q in (q1, q2):
                    try:
                        got.append((q, await q.next_msg(timeout=0.05)))
                    except Exception:  # nats.errors.TimeoutError: nothing on this member right now
                        pass
                assert time.monotonic() < deadline, len(got)
            assert sorted(int(m.data) for _q, m in got) == list(range(20))
            # each message went to exactly one member of the group
            assert len({m.reply for _q, m in got}) == 20
            resp = await js_api(nc, f"{API}.CONSUMER.CREATE.CR6.W",
                                {"stream_name": "CR6", "config": {"name": "W", "ack_policy": "explicit",
                                                                  "deliver_subject": "dq.*"}})
            assert api_error(resp) == (400, 10079, "consumer deliver subject has wildcards")

    run(body())


def test_purge_moves_consumer_past_purged_messages(jsrv):
    async def body():
        async with js_client(jsrv) as (nc, _js):
            p = await pulled(nc, "CR7", 5)
            msgs = await p.fetch(2)

            async def state():
                i = await cinfo(nc, "CR7", "C")
                return (i["delivered"]["consumer_seq"], i["delivered"]["stream_seq"], i["ack_floor"]["consumer_seq"],
                        i["ack_floor"]["stream_seq"], i["num_ack_pending"], i["num_pending"])

            await eventually(state, (2, 2, 0, 0, 2, 3))
            assert (await js_api(nc, f"{API}.STREAM.PURGE.CR7", {}))["purged"] == 5
            await eventually(state, (2, 5, 2, 5, 0, 0))
            # acking a purged message is harmless
            await nc.request(msgs[0].reply, b"+ACK", timeout=2)
            await nc.request("cr7.a", b"after", timeout=2)
            [m] = await p.fetch(5)
            info = ack_info(m.reply)
            assert (m.data, info["sseq"], info["cseq"], info["pending"]) == (b"after", 6, 3, 0)

    run(body())


def test_consumer_skips_messages_removed_by_limits(jsrv):
    async def body():
        async with js_client(jsrv) as (nc, _js):
            await stream(nc, "CR8", [("a", b"0"), ("a", b"1")], max_msgs=3)
            await consumer(nc, "CR8", "C")
            for i in range(2, 6):
                await nc.request("cr8.a", str(i).encode(), timeout=2)
            async def pending():
                return (await cinfo(nc, "CR8", "C"))["num_pending"]

            await eventually(pending, 3)
            msgs = await Puller(nc, "CR8", "C").fetch(5)
            assert [(m.data, ack_info(m.reply)["sseq"], ack_info(m.reply)["cseq"]) for m in msgs] == \
                [(b"3", 4, 1), (b"4", 5, 2), (b"5", 6, 3)]

    run(body())


def test_paused_at_create_push_bound_and_paging(jsrv):
    async def body():
        async with js_client(jsrv) as (nc, _js):
            await stream(nc, "CR9", [("a", b"x")])
            resp = await consumer(nc, "CR9", "PP", pause_until="2099-01-01T00:00:00Z")
            assert (resp["paused"], resp["config"]["pause_until"]) == (True, "2099-01-01T00:00:00Z")
            assert resp["pause_remaining"] > 0 and resp["config"]["metadata"]["_nats.req.level"] == "1"
            assert await Puller(nc, "CR9", "PP").fetch(1) == []
            # a push consumer whose deliver subject nobody listens on is not bound
            resp = await consumer(nc, "CR9", "PB", deliver_subject="nobody.listens.cr9")
            assert "push_bound" not in resp and "max_waiting" not in resp["config"]
            resp = await js_api(nc, f"{API}.CONSUMER.NAMES.CR9", {"offset": 1})
            assert resp == {"type": "io.nats.jetstream.api.v1.consumer_names_response", "total": 2, "offset": 1,
                            "limit": 1024, "consumers": ["PP"]}
            # an offset past the end is clamped to the total
            resp = await js_api(nc, f"{API}.CONSUMER.LIST.CR9", {"offset": 5})
            assert resp == {"type": "io.nats.jetstream.api.v1.consumer_list_response", "total": 2, "offset": 2,
                            "limit": 256, "consumers": []}
            resp = await js_api(nc, f"{API}.STREAM.NAMES", {"subject": "cr9.>", "offset": 1})
            assert resp == {"type": "io.nats.jetstream.api.v1.stream_names_response", "total": 1, "offset": 1,
                            "limit": 1024, "streams": None}

    run(body())
