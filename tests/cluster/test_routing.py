"""Routing parity across a 3-node cluster: interest, wildcards, queue groups, request/reply, no responders,
headers, one hop. The same scenarios run against nats-server and our hub (tests/cluster/conftest.py).

Roles: A = n2, B = n3, C = n1. In the "seed" topology n2 and n3 are configured with n1's route only, so the A-B
route exists only because of gossip (an implicit route): every A -> B check there also proves that route.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter

import nats
import pytest

from tests.compat.harness import collect, hpub, nats_connect, pub, run, settle, wait_until

from .harness import flush, next_msg, read_until, warm_up

BOTH = pytest.mark.parametrize("topology", ["mesh", "seed"])


def roles(cluster):
    return cluster[1], cluster[2], cluster[0]


def uniq(prefix: str) -> str:
    return f"{prefix}.{uuid.uuid4().hex[:10]}"


def sub(node, *subs: str, **connect):
    """A raw client on node with SUBs (`"subject [queue] sid"`) in place."""
    r = node.client(**connect)
    r.send("".join(f"SUB {s}\r\n" for s in subs).encode())
    flush(r)
    return r


def real(msgs, warm=b"warm"):
    return [m for m in msgs if m.payload != warm]


def next_real(raw, timeout=5.0):
    """The next message that is not a warm-up."""
    while True:
        m = next_msg(raw, timeout)
        if m.payload != b"warm":
            return m


# ---------------------------------------------------------------------------------------------- interest


@BOTH
def test_interest_propagates_and_is_withdrawn(cluster):
    """Sub on B, pub on A: arrives, in order. Remote interest counts as interest (no 503 for a request); after the
    unsubscribe A's server learns the interest is gone (its requests get 503 again)."""
    a, b, _ = roles(cluster)
    subject = uniq("ip")

    async def body():
        na = await nats_connect(a)
        nb = await nats_connect(b)
        try:
            with pytest.raises(nats.errors.NoRespondersError):
                await na.request(subject, b"", timeout=2)
            sub = await nb.subscribe(subject)
            await settle(nb)
            deadline = time.monotonic() + 5
            while True:  # interest travels B -> A asynchronously: publish until the first one crosses
                await na.publish(subject, b"warm")
                await na.flush()
                try:
                    await sub.next_msg(timeout=0.05)
                    break
                except nats.errors.TimeoutError:
                    assert time.monotonic() < deadline, "interest never reached A"
            for i in range(10):
                await na.publish(subject, str(i).encode())
            await na.flush()
            got = []
            while len(got) < 10:
                m = await sub.next_msg(timeout=3)
                if m.data != b"warm":
                    got.append(m.data)
            assert got == [str(i).encode() for i in range(10)]
            # a subscriber that does not answer: the request times out, it does not bounce with 503
            with pytest.raises(nats.errors.TimeoutError):
                await na.request(subject, b"silent", timeout=0.3)
            await sub.unsubscribe()
            await settle(nb)
            deadline = time.monotonic() + 5
            while True:
                try:
                    await na.request(subject, b"", timeout=0.2)
                except nats.errors.NoRespondersError:
                    break
                except nats.errors.TimeoutError:
                    pass
                assert time.monotonic() < deadline, "A still sees B's interest after the unsubscribe"
        finally:
            await na.close()
            await nb.close()

    run(body())


@BOTH
def test_wildcards_cross_routes(cluster):
    """`*` on B and `>` on C, publishes on A: each node gets exactly what its wildcard matches."""
    a, b, c = roles(cluster)
    base = uniq("wc")
    rb = sub(b, f"{base}.*.x 1")
    rc = sub(c, f"{base}.> 7")
    pa = a.client()
    warm_up(pa, f"{base}.w.x", [rb, rc])
    marker = f"{base}.m.x"
    pa.send(pub(f"{base}.a.x", b"1") + pub(f"{base}.b.y.z", b"2") + pub(f"{base}.c.x", b"3")
            + pub(f"{base}.x", b"4") + pub(f"{base}.d.x.y", b"5") + pub(marker, b"end"))
    got_b = [(m.subject, m.sid, m.payload) for m in real(read_until(rb, marker))]
    got_c = [(m.subject, m.sid, m.payload) for m in real(read_until(rc, marker))]
    assert got_b == [(f"{base}.a.x", "1", b"1"), (f"{base}.c.x", "1", b"3")]
    assert got_c == [(f"{base}.a.x", "7", b"1"), (f"{base}.b.y.z", "7", b"2"), (f"{base}.c.x", "7", b"3"),
                     (f"{base}.x", "7", b"4"), (f"{base}.d.x.y", "7", b"5")]
    for r in (rb, rc, pa):
        r.close()


# ---------------------------------------------------------------------------------------------- queue groups


def _queue_run(publisher, subject, members, marker, n, copies=1):
    """Warm up until every member got one, publish n numbered messages and a marker, read every member up to the
    marker. Returns the per-member lists of real payloads, after checking that each warm-up was delivered exactly
    `copies` times (once per group and plain sub)."""
    sent, warm_got = warm_up(publisher, subject, members)
    publisher.send(b"".join(pub(subject, f"m{i}".encode()) for i in range(n)) + pub(marker, b"end"))
    flush(publisher)
    per_member = []
    late_warm = 0
    for r in members:
        msgs = read_until(r, marker)
        late_warm += sum(1 for m in msgs if m.payload == b"warm")
        per_member.append([m.payload for m in real(msgs)])
    assert sum(warm_got) + late_warm == sent * copies, "a warm-up message was lost or duplicated"
    return per_member


def _expect_once_each(per_member, n):
    everything = [p for got in per_member for p in got]
    counts = Counter(everything)
    dups = {p: k for p, k in counts.items() if k > 1}
    assert not dups, f"delivered more than once: {dups}"
    assert sorted(everything) == sorted(f"m{i}".encode() for i in range(n))


@BOTH
def test_queue_group_delivers_once_cluster_wide(cluster):
    """A member on every node, 60 publishes on A: each message reaches exactly one member, and every member
    (local or behind a route) gets some: nats-server picks among all members, it does not prefer local ones."""
    a, b, c = roles(cluster)
    subject, marker = uniq("qg"), uniq("qg.mark")
    members = [sub(node, f"{subject} workers 1", f"{marker} 2") for node in (a, b, c)]
    pa = a.client()
    per_member = _queue_run(pa, subject, members, marker, 60)
    _expect_once_each(per_member, 60)
    assert all(per_member), f"a member got nothing: {[len(x) for x in per_member]}"
    for r in [*members, pa]:
        r.close()


def test_two_groups_and_a_plain_sub_each_get_everything(cluster):
    """Groups g1 and g2 on the same subject, members on all nodes, plus a plain sub on C: each group gets every
    message once, the plain sub gets all of them in order."""
    a, b, c = roles(cluster)
    subject, marker = uniq("q2"), uniq("q2.mark")
    g1 = [sub(node, f"{subject} g1 1", f"{marker} 2") for node in (a, b, c)]
    g2 = [sub(node, f"{subject} g2 1", f"{marker} 2") for node in (a, b, c)]
    plain = sub(c, f"{subject} 1", f"{marker} 2")
    pa = a.client()
    n = 40
    per_member = _queue_run(pa, subject, [*g1, *g2, plain], marker, n, copies=3)
    _expect_once_each(per_member[:3], n)
    _expect_once_each(per_member[3:6], n)
    assert per_member[6] == [f"m{i}".encode() for i in range(n)]
    for r in [*g1, *g2, plain, pa]:
        r.close()


@pytest.mark.parametrize("where", ["C", "B+C"])
def test_queue_members_only_on_remote_nodes(cluster, where):
    """No member on the publishing node: the remote members still get every message exactly once."""
    a, b, c = roles(cluster)
    subject, marker = uniq("qr"), uniq("qr.mark")
    nodes = [c] if where == "C" else [b, c]
    members = [sub(node, f"{subject} remote 1", f"{marker} 2") for node in nodes]
    pa = a.client()
    n = 40
    per_member = _queue_run(pa, subject, members, marker, n)
    _expect_once_each(per_member, n)
    if where == "C":
        assert per_member[0] == [f"m{i}".encode() for i in range(n)]  # one member: all of them, in order
    else:
        assert all(per_member), f"a member got nothing: {[len(x) for x in per_member]}"
    for r in [*members, pa]:
        r.close()


# ---------------------------------------------------------------------------------------------- request/reply


@BOTH
def test_request_reply_across_nodes(cluster):
    """Responder on B, requester on A (nats-py): the reply finds its way back through the route."""
    a, b, _ = roles(cluster)
    subject = uniq("svc")

    async def body():
        na = await nats_connect(a)
        nb = await nats_connect(b)
        try:
            async def respond(msg):
                await msg.respond(b"re:" + msg.data)

            await nb.subscribe(subject, cb=respond)
            await settle(nb)
            deadline = time.monotonic() + 5
            while True:
                try:
                    first = await na.request(subject, b"hello", timeout=0.5)
                    break
                except (nats.errors.NoRespondersError, nats.errors.TimeoutError):
                    assert time.monotonic() < deadline, "responder on B never reachable from A"
                    await asyncio.sleep(0.05)
            assert first.data == b"re:hello"
            replies = await asyncio.gather(*(na.request(subject, f"q{i}".encode(), timeout=3) for i in range(20)))
            assert [r.data for r in replies] == [f"re:q{i}".encode() for i in range(20)]
        finally:
            await na.close()
            await nb.close()

    run(body())


def _no_responders(inbox: str, sid: str, subject: str) -> bytes:
    hdr = f"NATS/1.0 503\r\nNats-Subject: {subject}\r\n\r\n".encode()
    return f"HMSG {inbox} {sid} {len(hdr)} {len(hdr)}\r\n".encode() + hdr + b"\r\n"


def test_no_responders_and_raw_request_reply_across_nodes(cluster):
    """Raw client on A (headers, no_responders): 503 when nobody in the cluster listens; a silent plain sub on C
    counts as interest (no 503); a raw responder on B answers through the route; after its UNSUB, 503 again."""
    a, b, c = roles(cluster)
    base = uniq("nr")
    inbox = f"_INBOX.{base}"
    ra = sub(a, f"{inbox} 1", headers=True, no_responders=True)

    def replies_now(subject: str, payload: bytes = b"") -> list[bytes]:
        """Publish a request from A; the frames A's server sent back before answering the PING (a 503 is decided
        while the PUB is processed, so it comes before the PONG)."""
        ra.send(pub(subject, payload, reply=inbox))
        return [f[1].raw for f in ra.frames_until_pong() if f[0] in ("MSG", "HMSG")]

    assert replies_now(f"{base}.none") == [_no_responders(inbox, "1", f"{base}.none")]

    silent = sub(c, f"{base}.silent 1")
    warm_up(ra, f"{base}.silent", [silent])
    assert replies_now(f"{base}.silent", b"req") == []
    assert next_real(silent).reply == inbox

    responder = sub(b, f"{base}.echo 5")
    warm_up(ra, f"{base}.echo", [responder])
    ra.send(pub(f"{base}.echo", b"ping", reply=inbox))
    req = next_real(responder)
    assert (req.subject, req.sid, req.reply, req.payload) == (f"{base}.echo", "5", inbox, b"ping")
    responder.send(pub(inbox, b"pong"))
    assert next_msg(ra).raw == f"MSG {inbox} 1 4\r\npong\r\n".encode()

    responder.send(b"UNSUB 5\r\n")
    flush(responder)
    wait_until(lambda: replies_now(f"{base}.echo", b"again") == [_no_responders(inbox, "1", f"{base}.echo")],
               timeout=5, interval=0.05, msg="503 after the only responder unsubscribed")
    for r in (ra, silent, responder):
        r.close()


# ---------------------------------------------------------------------------------------------- headers


@BOTH
def test_headers_cross_a_route_intact(cluster):
    """HPUB on A arrives on B as HMSG with the very same header bytes (multi-valued keys, odd case, empty payload,
    header-only); a plain PUB stays MSG; a client on C that did not declare headers gets MSG with the payload only."""
    a, b, c = roles(cluster)
    subject = uniq("hdr")
    marker = f"{subject}.end"
    rb = sub(b, f"{subject} 1", f"{marker} 2", headers=True)
    rc = sub(c, f"{subject} 9", f"{marker} 2", headers=False)
    pa = a.client(headers=True)
    warm_up(pa, subject, [rb, rc])
    h1 = b"NATS/1.0\r\nA: b\r\nMulti: 1\r\nMulti: 2\r\nx-lower-Case: v v\r\n\r\n"
    h2 = b"NATS/1.0\r\n\r\n"
    pa.send(hpub(subject, h1, b"payload", reply="rep.1") + hpub(subject, h1) + hpub(subject, h2, b"x")
            + pub(subject, b"plain") + pub(marker, b"end"))
    got_b = [m.raw for m in real(read_until(rb, marker))]
    assert got_b == [
        f"HMSG {subject} 1 rep.1 {len(h1)} {len(h1) + 7}\r\n".encode() + h1 + b"payload\r\n",
        f"HMSG {subject} 1 {len(h1)} {len(h1)}\r\n".encode() + h1 + b"\r\n",
        f"HMSG {subject} 1 {len(h2)} {len(h2) + 1}\r\n".encode() + h2 + b"x\r\n",
        f"MSG {subject} 1 5\r\nplain\r\n".encode(),
    ]
    got_c = [m.raw for m in real(read_until(rc, marker))]
    assert got_c == [
        f"MSG {subject} 9 rep.1 7\r\npayload\r\n".encode(),
        f"MSG {subject} 9 0\r\n\r\n".encode(),
        f"MSG {subject} 9 1\r\nx\r\n".encode(),
        f"MSG {subject} 9 5\r\nplain\r\n".encode(),
    ]
    for r in (rb, rc, pa):
        r.close()


def test_headers_nats_py_across_nodes(cluster):
    a, b, _ = roles(cluster)
    subject = uniq("hpy")

    async def body():
        na = await nats_connect(a)
        nb = await nats_connect(b)
        try:
            sub = await nb.subscribe(subject)
            await settle(nb)
            deadline = time.monotonic() + 5
            while True:
                await na.publish(subject, b"warm")
                await na.flush()
                try:
                    await sub.next_msg(timeout=0.05)
                    break
                except nats.errors.TimeoutError:
                    assert time.monotonic() < deadline, "interest never reached A"
            await na.publish(subject, b"data", headers={"Foo": "bar", "X-Id": "7"})
            await na.flush()
            m = (await collect(sub, 1))[0]
            while m.data == b"warm":
                m = (await collect(sub, 1))[0]
            assert (m.data, m.headers) == (b"data", {"Foo": "bar", "X-Id": "7"})
        finally:
            await na.close()
            await nb.close()

    run(body())


# ---------------------------------------------------------------------------------------------- one hop


@BOTH
def test_one_hop_every_sub_gets_exactly_one_copy(cluster):
    """A sub on every node, every node publishes: each sub gets each message exactly once. A message never crosses
    a second route (in the seed topology a node forwarding route->route would deliver duplicates)."""
    base = uniq("oh")
    marker = f"{base}.mark"
    subs = [sub(n, f"{base}.> 1") for n in cluster]
    pubs = [n.client() for n in cluster]
    for p in pubs:
        warm_up(p, f"{base}.warm", subs)
    k = 20
    for p, n in zip(pubs, cluster, strict=True):
        p.send(b"".join(pub(f"{base}.{n.name}", f"{i}".encode()) for i in range(k)) + pub(marker, b"end"))
    want = Counter((f"{base}.{n.name}", f"{i}".encode()) for n in cluster for i in range(k))
    for s, n in zip(subs, cluster, strict=True):
        got = Counter((m.subject, m.payload) for m in read_until(s, marker, count=len(cluster))
                      if m.subject != f"{base}.warm")
        assert got == want, f"{n.name}: extra {got - want}, missing {want - got}"
    # one more round of markers: no late copy (via a second hop) arrived meanwhile
    for p in pubs:
        p.send(pub(marker, b"end"))
    for s, n in zip(subs, cluster, strict=True):
        late = [m for m in read_until(s, marker, count=len(cluster)) if m.subject != f"{base}.warm"]
        assert late == [], f"{n.name} got late copies {late[:5]!r}"
    for r in [*subs, *pubs]:
        r.close()


def test_one_rmsg_per_route_for_many_subscribers(cluster):
    """Three subscribers on B, ten publishes on A: each sub gets ten, and A's route to B counts ten messages out
    (plus the marker), not thirty: the receiving server does the fan-out."""
    a, b, _ = roles(cluster)
    subject, marker = uniq("once"), uniq("once.mark")
    subs = [sub(b, f"{subject} 1", f"{marker} 2") for _ in range(3)]
    pa = a.client()
    warm_up(pa, subject, subs)
    pa.send(pub(marker, b"end"))
    for s in subs:
        read_until(s, marker)  # all warm-ups are through

    def out_to_b() -> int:
        rz = a.http_get("/routez?subs=1")
        return sum(r["out_msgs"] for r in rz["routes"]
                   if r["remote_id"] == b.server_id and subject in (r.get("subscriptions_list") or []))

    before = out_to_b()
    pa.send(b"".join(pub(subject, f"{i}".encode()) for i in range(10)) + pub(marker, b"end"))
    for s in subs:
        assert [m.payload for m in real(read_until(s, marker))] == [f"{i}".encode() for i in range(10)]
    wait_until(lambda: out_to_b() - before >= 11, timeout=3, msg="route out_msgs to catch up")
    assert out_to_b() - before == 11
    for r in [*subs, pa]:
        r.close()
