"""Pull-consumer priority groups (ADR-42 as nats-server 2.15.1 has them; more/README.md §B2): config checks and
consumer info, the pull-request statuses with their exact texts, `overflow` with `min_pending`/`min_ack_pending`,
a two-region work queue, `pinned_client` (pin ids, 423s, standbys, UNPIN, the pin moving after its timeout) with
its advisories, and `prioritized`. Both servers, nats-py clients with inboxes of our own so statuses are visible.
"""

from __future__ import annotations

import json

import nats
import pytest

from .harness import ZERO_TIME, Server, api_error, eventually, free_port, js_api, js_client, run, wait_until
from .test_js_consumers import API, Puller, consumer, seqs, stream


async def pull_status(p: Puller, **req) -> tuple[str, str] | None:
    await p.request(**req)
    msgs, status = await p.take()
    assert not msgs, [m.data for m in msgs]
    return status


async def pull_one(p: Puller, **req):
    """One message for a batch-1 pull (fails on a status instead)."""
    await p.request(batch=1, **req)
    msgs, status = await p.take(batch=1)
    assert status is None and len(msgs) == 1, (status, msgs)
    return msgs[0]


# --------------------------------------------------------------------------------------------------
# config


def test_priority_config_errors(jsrv):
    cases = [
        ({"priority_policy": "overflow"},
         (400, 10159, "Setting PriorityPolicy requires at least one PriorityGroup to be set")),
        ({"priority_policy": "overflow", "priority_groups": ["bad name"]},
         (400, 10162, "Valid priority group name must match A-Z, a-z, 0-9, -_/=)+ and may not exceed 16 characters")),
        ({"priority_policy": "overflow", "priority_groups": ["a" * 17]},
         (400, 10162, "Valid priority group name must match A-Z, a-z, 0-9, -_/=)+ and may not exceed 16 characters")),
        ({"priority_policy": "pinned_client", "priority_groups": [""]},
         (400, 10161, "Group name cannot be an empty string")),
        ({"priority_groups": ["jobs"]}, (400, 10196, "consumer can not have priority groups when policy is none")),
        ({"priority_timeout": 5_000_000_000}, (400, 10197, "PinnedTTL cannot be set when PriorityPolicy is none")),
        ({"deliver_subject": "pg.push", "priority_policy": "overflow", "priority_groups": ["jobs"]},
         (400, 10178, "priority groups can not be used with push consumers")),
        ({"priority_policy": "bogus", "priority_groups": ["a"]},
         (400, 10025, 'invalid JSON: unknown priority policy: "bogus"')),
    ]

    async def body():
        async with js_client(jsrv) as (nc, _js):
            await stream(nc, "PGCFG")
            for i, (extra, want) in enumerate(cases):
                cfg = {"name": f"E{i}", "ack_policy": "explicit", **extra}
                resp = await js_api(nc, f"{API}.CONSUMER.CREATE.PGCFG.E{i}", {"stream_name": "PGCFG", "config": cfg})
                assert api_error(resp) == want, (extra, resp)

    run(body())


def test_priority_config_accepted_and_info(jsrv):
    async def body():
        async with js_client(jsrv) as (nc, _js):
            await stream(nc, "PGACC", [("x", b"1")])
            # several groups, and overflow with ack none: both refused by the ADR, accepted by nats-server
            resp = await consumer(nc, "PGACC", "TWO", ack_policy="none", priority_policy="overflow",
                                  priority_groups=["a", "b"])
            assert resp["config"]["priority_groups"] == ["a", "b"]
            assert resp["config"]["priority_policy"] == "overflow"
            assert "priority_timeout" not in resp["config"]
            assert resp["config"]["metadata"]["_nats.req.level"] == "1"
            assert resp["priority_groups"] == [{"group": "a", "pinned_ts": ZERO_TIME}]
            resp = await consumer(nc, "PGACC", "PIN", priority_policy="pinned_client", priority_groups=["jobs"])
            assert resp["config"]["priority_timeout"] == 120_000_000_000
            assert resp["priority_groups"] == [{"group": "jobs", "pinned_ts": ZERO_TIME}]
            plain = await consumer(nc, "PGACC", "PLAIN")
            assert "priority_groups" not in plain and "priority_policy" not in plain["config"]

    run(body())


# --------------------------------------------------------------------------------------------------
# pull requests


def test_priority_pull_request_statuses(jsrv):
    async def body():
        async with js_client(jsrv) as (nc, _js):
            await stream(nc, "PGREQ", [("a", b"m0")])
            await consumer(nc, "PGREQ", "OV", priority_policy="overflow", priority_groups=["jobs"])
            await consumer(nc, "PGREQ", "PLAIN")
            ov, plain = Puller(nc, "PGREQ", "OV"), Puller(nc, "PGREQ", "PLAIN")
            exp = 500_000_000
            assert await pull_status(ov, batch=1, expires=exp) == ("400", "Bad Request - Priority Group missing")
            assert await pull_status(ov, batch=1, expires=exp, group="nope") == (
                "400", "Bad Request - Invalid Priority Group")
            assert await pull_status(ov, batch=1, expires=exp, group="jobs", id="X") == (
                "400", "Bad Request - Not a Pinned Client Priority consumer")
            assert await pull_status(ov, batch=1, expires=exp, group="jobs", priority=10) == (
                "400", "Bad Request - Priority must be between 0 and 9")
            assert await pull_status(plain, batch=1, expires=exp, min_pending=1) == (
                "400", "Bad Request - Not a Overflow Priority consumer")
            assert await pull_status(plain, batch=1, expires=exp, min_ack_pending=1) == (
                "400", "Bad Request - Not a Overflow Priority consumer")
            assert await pull_status(plain, batch=1, expires=exp, id="X") == (
                "400", "Bad Request - Not a Pinned Client Priority consumer")
            # a priority on an overflow consumer is ignored; a group on a consumer without groups too
            assert (await pull_one(ov, expires=exp, group="jobs", priority=3)).data == b"m0"
            assert (await pull_one(plain, expires=exp, group="whatever")).data == b"m0"

    run(body())


# --------------------------------------------------------------------------------------------------
# overflow


def test_overflow_min_pending_and_min_ack_pending(jsrv):
    async def body():
        async with js_client(jsrv) as (nc, _js):
            await stream(nc, "PGOV", [("a", b"m0"), ("a", b"m1"), ("a", b"m2")])
            await consumer(nc, "PGOV", "OV", priority_policy="overflow", priority_groups=["jobs"])
            p = Puller(nc, "PGOV", "OV")
            exp = 500_000_000
            # 3 pending: a threshold of 4 is not reached, the pull waits and times out with its batch left
            assert await pull_status(p, batch=1, expires=exp, group="jobs", min_pending=4) == (
                "408", "Request Timeout")
            m0 = await pull_one(p, expires=exp, group="jobs", min_pending=3)
            assert m0.data == b"m0"
            # 2 pending, 1 unacknowledged
            assert await pull_status(p, batch=1, expires=exp, group="jobs", min_pending=3, min_ack_pending=2) == (
                "408", "Request Timeout")
            assert (await pull_one(p, expires=exp, group="jobs", min_ack_pending=1)).data == b"m1"
            # either threshold is enough (nats-server#7794): 1 pending, 2 unacknowledged
            assert (await pull_one(p, expires=exp, group="jobs", min_pending=5, min_ack_pending=2)).data == b"m2"
            info = await js_api(nc, f"{API}.CONSUMER.INFO.PGOV.OV")
            assert (info["num_pending"], info["num_ack_pending"]) == (0, 3)
            assert info["priority_groups"] == [{"group": "jobs", "pinned_ts": ZERO_TIME}]

    run(body())


def test_overflow_empty_and_numeric_bodies_skip_group_checks(jsrv):
    async def body():
        async with js_client(jsrv) as (nc, _js):
            await stream(nc, "PGOVB", [("a", b"m0"), ("a", b"m1")])
            await consumer(nc, "PGOVB", "OV", priority_policy="overflow", priority_groups=["jobs"])
            p = Puller(nc, "PGOVB", "OV")
            p.inbox = nc.new_inbox()
            p.sub = await nc.subscribe(p.inbox)
            for body_bytes, want in ((b"", b"m0"), (b"1", b"m1")):
                await nc.publish(p.subject, body_bytes, reply=p.inbox)
                msgs, status = await p.take(batch=1)
                assert status is None and [m.data for m in msgs] == [want]

    run(body())


async def _two_region_work_queue(home, remote_nc, stream_name: str, remote_api: str = API) -> None:
    """The cross-region failover shape: home workers pull with the group only and are always served; a remote
    worker (pulling through `remote_api`) keeps a pull open with `min_pending` and gets messages only while the
    backlog reaches it."""
    prefix = stream_name.lower()
    await stream(home, stream_name, retention="workqueue")
    await consumer(home, stream_name, "JOBS", priority_policy="overflow", priority_groups=["jobs"])
    local, remote = Puller(home, stream_name, "JOBS"), Puller(remote_nc, stream_name, "JOBS")
    remote.subject = f"{remote_api}.CONSUMER.MSG.NEXT.{stream_name}.JOBS"
    await remote.request(batch=100, expires=30_000_000_000, group="jobs", min_pending=5)
    await remote_nc.flush()
    await eventually(lambda: _num_waiting(home, stream_name), 1)
    # a backlog of 3 stays below the remote threshold: the home worker takes all of it
    for i in range(3):
        await home.request(f"{prefix}.job.{i}", b"%d" % i, timeout=2)
    await local.request(batch=3, expires=5_000_000_000, group="jobs")
    got, status = await local.take(batch=3)
    assert [m.data for m in got] == [b"0", b"1", b"2"], status
    for m in got:
        await m.ack_sync()
    # the home workers stall while 10 jobs arrive: the remote worker is served while 5 or more wait
    for i in range(3, 13):
        await home.request(f"{prefix}.job.{i}", b"%d" % i, timeout=2)
    remote_got, status = await remote.take(batch=6)
    assert status is None and [m.data for m in remote_got] == [b"%d" % i for i in range(3, 9)]
    info = await js_api(home, f"{API}.CONSUMER.INFO.{stream_name}.JOBS")
    assert (info["num_pending"], info["num_waiting"]) == (4, 1)
    # below the threshold the remote worker gets nothing more; the home worker drains the rest
    await local.request(batch=4, expires=5_000_000_000, group="jobs")
    got, status = await local.take(batch=4)
    assert [m.data for m in got] == [b"%d" % i for i in range(9, 13)], status
    assert set(seqs(got)).isdisjoint(seqs(remote_got))
    extra, status = await remote.take(timeout=0.3)
    assert extra == [] and status is None


async def _num_waiting(nc, stream_name: str) -> int:
    return (await js_api(nc, f"{API}.CONSUMER.INFO.{stream_name}.JOBS"))["num_waiting"]


def test_two_region_work_queue(jsrv):
    async def body():
        async with js_client(jsrv) as (home, _js), js_client(jsrv) as (remote_nc, _js2):
            await _two_region_work_queue(home, remote_nc, "PGWQ")

    run(body())


@pytest.mark.parametrize("remote_side", ["nats", "hub"])
def test_two_region_work_queue_across_a_leafnode(side, remote_side, fresh, tmp_path):
    """The remote region is a leaf server without JetStream (nats-server or our hub): its worker's pulls and the
    messages they get cross the leafnode link to the home server (`side`), which holds the stream. Across a
    leafnode the API is reached through the home server's JetStream domain (`$JS.home.API`), as nats-server
    denies `$JS.API.>` there."""
    leaf_port = free_port()
    home = fresh(config=f"leafnodes {{ listen: 127.0.0.1:{leaf_port} }}\njetstream {{ domain: home }}\n",
                 monitor=True, jetstream=True)
    (tmp_path / "remote").mkdir()
    remote = Server(remote_side, config=f'server_name: remote\nleafnodes {{ remotes [ {{ url: '
                    f'"nats-leaf://127.0.0.1:{leaf_port}" }} ] }}\n', workdir=tmp_path / "remote")
    try:
        remote.start()
        wait_until(lambda: home.http_get("/leafz")["leafnodes"] == 1, timeout=10, msg="remote leaf connected")

        async def body():
            async with js_client(home) as (home_nc, _js):
                remote_nc = await nats.connect(remote.url)
                try:
                    await _two_region_work_queue(home_nc, remote_nc, "PGWQL", remote_api="$JS.home.API")
                finally:
                    await remote_nc.close()

        run(body(), timeout=40)
    finally:
        remote.stop()


# --------------------------------------------------------------------------------------------------
# pinned client


async def _advisories(nc, stream_name: str, name: str):
    sub = await nc.subscribe(f"$JS.EVENT.ADVISORY.CONSUMER.*.{stream_name}.{name}")
    await nc.flush()
    return sub


async def _next_advisory(sub) -> dict:
    m = await sub.next_msg(timeout=5)
    event = json.loads(m.data)
    assert m.subject.split(".")[4] == {"io.nats.jetstream.advisory.v1.consumer_group_pinned": "PINNED",
                                       "io.nats.jetstream.advisory.v1.consumer_group_unpinned": "UNPINNED"}[
        event["type"]]
    return event


def test_pinned_client_pin_refusals_unpin_and_advisories(jsrv):
    async def body():
        async with js_client(jsrv) as (nc, _js):
            await stream(nc, "PGPIN", [("a", b"m%d" % i) for i in range(5)])
            await consumer(nc, "PGPIN", "PIN", priority_policy="pinned_client", priority_groups=["jobs"])
            adv = await _advisories(nc, "PGPIN", "PIN")
            a, b = Puller(nc, "PGPIN", "PIN"), Puller(nc, "PGPIN", "PIN")
            exp = 500_000_000
            m0 = await pull_one(a, expires=exp, group="jobs")
            pin = m0.headers["Nats-Pin-Id"]
            assert m0.data == b"m0" and len(pin) == 22
            event = await _next_advisory(adv)
            assert {k: event[k] for k in ("account", "stream", "consumer", "group", "pinned_id")} == {
                "account": "$G", "stream": "PGPIN", "consumer": "PIN", "group": "jobs", "pinned_id": pin}
            assert list(event) == ["type", "id", "timestamp", "account", "stream", "consumer", "group", "pinned_id"]
            # a wrong id is refused at once; a pull without id waits as a standby until it expires
            assert await pull_status(b, batch=1, expires=exp, group="jobs", id="WRONG") == (
                "423", "Nats-Pin-Id mismatch")
            assert await pull_status(b, batch=1, expires=exp, group="jobs") == ("408", "Request Timeout")
            m1 = await pull_one(a, expires=exp, group="jobs", id=pin)
            assert (m1.data, m1.headers["Nats-Pin-Id"]) == (b"m1", pin)
            info = await js_api(nc, f"{API}.CONSUMER.INFO.PGPIN.PIN")
            (state,) = info["priority_groups"]
            assert (state["group"], state["pinned_client_id"]) == ("jobs", pin) and state["pinned_ts"] != ZERO_TIME
            # UNPIN's errors, then UNPIN
            unpin = f"{API}.CONSUMER.UNPIN.PGPIN.PIN"
            assert api_error(await js_api(nc, unpin, {"group": "nope"})) == (
                400, 10160, "Provided priority group does not exist for this consumer")
            assert api_error(await js_api(nc, unpin, {})) == (
                400, 10025, "invalid JSON: consumer group not specified")
            assert api_error(await js_api(nc, unpin, {"group": "bad name"}))[1] == 10162
            assert api_error(await js_api(nc, f"{API}.CONSUMER.UNPIN.PGPIN.NOPE", {"group": "jobs"}))[1] == 10014
            unpinned = await js_api(nc, unpin, {"group": "jobs"})
            assert unpinned == {"type": "io.nats.jetstream.api.v1.consumer_unpin_response"}
            event = await _next_advisory(adv)
            assert (event["type"], event["group"], event["reason"]) == (
                "io.nats.jetstream.advisory.v1.consumer_group_unpinned", "jobs", "admin")
            info = await js_api(nc, f"{API}.CONSUMER.INFO.PGPIN.PIN")
            assert info["priority_groups"] == [{"group": "jobs", "pinned_ts": ZERO_TIME}]
            # the old pin is refused (with the pending counts) when a new pin is needed; a pull without id takes it
            await a.request(batch=1, expires=exp, group="jobs", id=pin)
            msgs, status = await a.take()
            assert msgs == [] and status == ("423", "Nats-Wrong-Pin-Id")
            m2 = await pull_one(b, expires=exp, group="jobs")
            new_pin = m2.headers["Nats-Pin-Id"]
            assert m2.data == b"m2" and new_pin != pin and len(new_pin) == 22
            assert (await _next_advisory(adv))["pinned_id"] == new_pin

    run(body())


def test_unpin_moves_a_waiting_pinned_request_aside(jsrv):
    """nats-server TestJetStreamConsumerUnpinPickDifferentRequest: a pull that took the pin and still waits for
    more is refused with 423 once the pin is gone, and a standby takes a new pin."""

    async def body():
        async with js_client(jsrv) as (nc, _js):
            await stream(nc, "PGUNP", [("a", b"m0")])
            await consumer(nc, "PGUNP", "PIN", priority_policy="pinned_client", priority_groups=["A"],
                           priority_timeout=30_000_000_000)
            first, second = Puller(nc, "PGUNP", "PIN"), Puller(nc, "PGUNP", "PIN")
            await first.request(batch=5, expires=15_000_000_000, group="A")
            msgs, _ = await first.take(batch=1)
            pin = msgs[0].headers["Nats-Pin-Id"]
            await second.request(batch=5, expires=15_000_000_000, group="A")
            assert await second.take(timeout=0.3) == ([], None)
            await js_api(nc, f"{API}.CONSUMER.UNPIN.PGUNP.PIN", {"group": "A"})
            # nothing to deliver yet: nobody is told anything
            assert await first.take(timeout=0.3) == ([], None)
            await nc.request("pgunp.a", b"m1", timeout=2)
            assert await first.take() == ([], ("423", "Nats-Wrong-Pin-Id"))
            msgs, _ = await second.take(batch=1)
            assert msgs[0].data == b"m1" and msgs[0].headers["Nats-Pin-Id"] not in ("", pin)

    run(body())


def test_pinned_client_empty_body_gets_empty_pin(jsrv):
    async def body():
        async with js_client(jsrv) as (nc, _js):
            await stream(nc, "PGPINE", [("a", b"m0")])
            await consumer(nc, "PGPINE", "PIN", priority_policy="pinned_client", priority_groups=["g"])
            p = Puller(nc, "PGPINE", "PIN")
            p.inbox = nc.new_inbox()
            p.sub = await nc.subscribe(p.inbox)
            await nc.publish(p.subject, b"", reply=p.inbox)
            msgs, status = await p.take(batch=1)
            assert status is None and [m.data for m in msgs] == [b"m0"]
            assert msgs[0].headers == {"Nats-Pin-Id": ""}
            info = await js_api(nc, f"{API}.CONSUMER.INFO.PGPINE.PIN")
            assert info["priority_groups"] == [{"group": "g", "pinned_ts": ZERO_TIME}]

    run(body())


def test_pin_moves_to_standby_after_priority_timeout(jsrv):
    async def body():
        async with js_client(jsrv) as (nc, _js):
            await stream(nc, "PGPINT", [("a", b"m0"), ("a", b"m1")])
            await consumer(nc, "PGPINT", "PIN", priority_policy="pinned_client", priority_groups=["g"],
                           priority_timeout=1_000_000_000)
            adv = await _advisories(nc, "PGPINT", "PIN")
            first, standby = Puller(nc, "PGPINT", "PIN"), Puller(nc, "PGPINT", "PIN")
            m0 = await pull_one(first, expires=500_000_000, group="g")
            pin = m0.headers["Nats-Pin-Id"]
            # the pinned client goes quiet; the standby's pull outlives the pin's timeout and takes over
            await standby.request(batch=1, expires=10_000_000_000, group="g")
            msgs, status = await standby.take(timeout=8, batch=1)
            assert status is None and msgs[0].data == b"m1"
            assert msgs[0].headers["Nats-Pin-Id"] not in ("", pin)
            events = [await _next_advisory(adv) for _ in range(3)]
            assert [e.get("pinned_id") or e["reason"] for e in events] == [
                pin, "timeout", msgs[0].headers["Nats-Pin-Id"]]

    run(body())


# --------------------------------------------------------------------------------------------------
# prioritized


def test_prioritized_serves_lowest_priority_first(jsrv):
    async def body():
        async with js_client(jsrv) as (nc, _js):
            await stream(nc, "PGPRI")
            await consumer(nc, "PGPRI", "PRI", priority_policy="prioritized", priority_groups=["g"])
            pullers = {prio: Puller(nc, "PGPRI", "PRI") for prio in (5, 1, 3)}
            for prio, p in pullers.items():
                await p.request(batch=1, expires=10_000_000_000, group="g", priority=prio)
            await nc.flush()
            for i in range(3):
                await nc.request(f"pgpri.x.{i}", b"%d" % i, timeout=2)
            got = {prio: (await p.take(batch=1))[0] for prio, p in pullers.items()}
            assert {prio: [m.data for m in msgs] for prio, msgs in got.items()} == {1: [b"0"], 3: [b"1"], 5: [b"2"]}

    run(body())


def test_priority_bad_input(jsrv):
    """Wrong JSON types in the priority keys of a pull (encoding/json names no struct for the fields of the
    embedded PriorityGroup) and bad UNPIN bodies: each gets its one-line error, as from nats-server."""
    pulls = [
        (b'{"batch":1,"group":5}', "json: cannot unmarshal number into Go struct field .group of type string"),
        (b'{"batch":1,"group":"g","min_pending":"x"}',
         "json: cannot unmarshal string into Go struct field .min_pending of type int64"),
        (b'{"batch":1,"group":"g","id":7}', "json: cannot unmarshal number into Go struct field .id of type string"),
        (b'{"batch":1,"group":"g","priority":1.5}',
         "json: cannot unmarshal number 1.5 into Go struct field .priority of type int"),
        (b'{"batch":1,"group":"","min_pending":3}', "Priority Group missing"),
    ]
    unpins = [
        (b"", "invalid JSON: unexpected end of JSON input"),
        (b'{"group":5}', "invalid JSON: json: cannot unmarshal number into Go struct field "
                         "JSApiConsumerUnpinRequest.group of type string"),
        (b"[]", "invalid JSON: json: cannot unmarshal array into Go value of type server.JSApiConsumerUnpinRequest"),
        (b"null", "invalid JSON: consumer group not specified"),
        (b'{"group":"g"', "invalid JSON: unexpected end of JSON input"),
    ]

    async def body():
        async with js_client(jsrv) as (nc, _js):
            await stream(nc, "PGBAD")
            await consumer(nc, "PGBAD", "OV", priority_policy="overflow", priority_groups=["g"])
            await consumer(nc, "PGBAD", "PIN", priority_policy="pinned_client", priority_groups=["g"])
            p = Puller(nc, "PGBAD", "OV")
            p.inbox = nc.new_inbox()
            p.sub = await nc.subscribe(p.inbox)
            for payload, text in pulls:
                await nc.publish(p.subject, payload, reply=p.inbox)
                assert await p.take() == ([], ("400", f"Bad Request - {text}")), payload
            for payload, text in unpins:
                resp = await js_api(nc, f"{API}.CONSUMER.UNPIN.PGBAD.PIN", payload)
                assert api_error(resp) == (400, 10025, text), payload
            # unknown keys are ignored; UNPIN of an overflow consumer's group is accepted too
            for name in ("PIN", "OV"):
                resp = await js_api(nc, f"{API}.CONSUMER.UNPIN.PGBAD.{name}", b'{"group":"g","x":1}')
                assert "error" not in resp, resp

    run(body())


def test_no_wait_pulls_on_priority_consumers(jsrv):
    """A no_wait pull that its threshold or the pin keeps waiting ends with 404 at the end of the stream, like a
    no_wait pull that found nothing."""

    async def body():
        async with js_client(jsrv) as (nc, _js):
            await stream(nc, "PGNW", [("x", b"0"), ("x", b"1")])
            await consumer(nc, "PGNW", "OV", priority_policy="overflow", priority_groups=["g"])
            await consumer(nc, "PGNW", "PIN", priority_policy="pinned_client", priority_groups=["g"])
            ov, pin = Puller(nc, "PGNW", "OV"), Puller(nc, "PGNW", "PIN")
            assert await pull_status(ov, batch=1, no_wait=True, group="g", min_pending=5) == ("404", "No Messages")
            await ov.request(batch=5, no_wait=True, expires=500_000_000, group="g", min_pending=2)
            msgs, status = await ov.take()
            assert ([m.data for m in msgs], status) == ([b"0"], ("404", "No Messages"))
            assert (await pull_one(pin, no_wait=True, group="g")).data == b"0"
            assert await pull_status(pin, batch=1, no_wait=True, group="g") == ("404", "No Messages")
            assert await pull_status(pin, batch=1, no_wait=True, group="g", id="bogus") == (
                "423", "Nats-Pin-Id mismatch")

    run(body())
