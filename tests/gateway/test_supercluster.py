"""Super-clusters, the same scenarios on every side (tests/gateway/harness.py: nats, hub, mixed-nats, mixed-hub):
interest across the gateway both ways, queue overflow to the other cluster and fail-back, request/reply across
clusters, gateway loss and reconnection, implicit gateways, monitoring.

Messages are read with tests/cluster's raw helpers: a marker published after the messages of a step, on the same
connection, arrives after them on every path, so "nothing else arrived" is checked without waiting for a timeout.
Warm-up messages (payload b"warm") that were still in flight are left out.
"""

from __future__ import annotations

import pytest

from tests.cluster.harness import Node, flush, next_msg, read_until, warm_up
from tests.compat.harness import Raw, pub

N = 20

# nats-server's /gatewayz keys (captured from 2.15.1), at the top and per connection.
GATEWAYZ_KEYS = {"server_id", "now", "name", "host", "port", "outbound_gateways", "inbound_gateways"}
GATEWAYZ_CONN_KEYS = {"cid", "kind", "ip", "port", "start", "last_activity", "rtt", "uptime", "idle",
                      "pending_bytes", "in_msgs", "out_msgs", "in_bytes", "out_bytes", "subscriptions", "name"}


def payloads(msgs, subject: str) -> list[bytes]:
    return [m.payload for m in msgs if m.subject == subject and m.payload != b"warm"]


def close_all(*conns: Raw) -> None:
    for r in conns:
        r.close()


def across(src: Node, dst: Node, prefix: str) -> None:
    """Plain and queue interest of `dst`'s cluster reach `src`'s: N plain messages and one to a queue group."""
    sub, publisher = dst.client(), src.client()
    try:
        sub.send(f"SUB {prefix}.plain.* 1\r\nSUB {prefix}.queue g 2\r\nSUB {prefix}.mark 3\r\n".encode())
        flush(sub)
        warm_up(publisher, f"{prefix}.plain.w", [sub])
        warm_up(publisher, f"{prefix}.queue", [sub])
        publisher.send(b"".join(pub(f"{prefix}.plain.1", b"p%d" % i) for i in range(N)) +
                       pub(f"{prefix}.queue", b"q") + pub(f"{prefix}.mark", b"end"))
        flush(publisher)
        got = read_until(sub, f"{prefix}.mark")
        assert payloads(got, f"{prefix}.plain.1") == [b"p%d" % i for i in range(N)]
        assert payloads(got, f"{prefix}.queue") == [b"q"]
    finally:
        close_all(sub, publisher)


def test_interest_across_gateways(super_cluster):
    sc = super_cluster()
    across(sc.a[0], sc.b[0], "ab")
    across(sc.b[0], sc.a[0], "ba")


def test_new_subscribers_get_what_crosses_after_the_old_ones_left(super_cluster):
    """The same subjects twice, each time with a new subscriber connection: what crosses the gateway reaches the new
    one (the receiving server's plans for the gateway's messages follow its subscriptions)."""
    sc = super_cluster()
    for _ in range(3):
        across(sc.a[0], sc.b[0], "again")


def test_queue_overflow_and_failback(super_cluster):
    """A queue group is served in the publisher's cluster while it has a member there; with none left, by the other
    cluster; and locally again once a member is back."""
    sc = super_cluster()
    a, b = sc.a[0], sc.b[0]
    member_b, publisher = b.client(), a.client()
    member_a = a.client()
    conns = [member_b, publisher, member_a]
    try:
        member_b.send(b"SUB work g 1\r\nSUB work.mark 2\r\nSUB work.warm 3\r\n")
        flush(member_b)
        member_a.send(b"SUB work g 1\r\nSUB work.mark 2\r\n")
        flush(member_a)
        warm_up(publisher, "work.warm", [member_b])  # B's interest crossed over (its queue interest came first)

        def round_of(tag: bytes) -> tuple[list[bytes], list[bytes]]:
            publisher.send(b"".join(pub("work", tag + b"%d" % i) for i in range(N)) + pub("work.mark", b"end"))
            flush(publisher)
            got_b = payloads(read_until(member_b, "work.mark"), "work")
            got_a = payloads(read_until(member_a, "work.mark"), "work")
            return got_a, got_b

        got_a, got_b = round_of(b"local")
        assert (len(got_a), got_b) == (N, [])

        # The local member goes (its connection closes): the group overflows to cluster B.
        member_a.close()
        conns.remove(member_a)
        member_a = Raw(a.port)  # a reader of markers only, in cluster A (no member)
        member_a.handshake()
        conns.append(member_a)
        member_a.send(b"SUB work.mark 2\r\n")
        flush(member_a)
        got_a, got_b = round_of(b"remote")
        assert got_a == [] and got_b == [b"remote%d" % i for i in range(N)]

        # A member in cluster A again: served locally at once.
        member_a.send(b"SUB work g 1\r\n")
        flush(member_a)
        got_a, got_b = round_of(b"back")
        assert got_a == [b"back%d" % i for i in range(N)] and got_b == []
    finally:
        close_all(*conns)


def request_reply(src: Node, dst: Node, subject: str) -> None:
    """A requester on `src`, its responder in the other cluster on `dst`: the request crosses, the answer comes back
    to the requester's inbox (through `_GR_.` when nats-server mapped the reply)."""
    responder, requester = dst.client(), src.client()
    try:
        responder.send(f"SUB {subject} 1\r\n".encode())
        flush(responder)
        warm_up(requester, subject, [responder])
        requester.send(b"SUB _INBOX.rr.* 7\r\n")
        flush(requester)
        for i in range(3):
            requester.send(pub(subject, b"q%d" % i, reply=f"_INBOX.rr.{i}"))
            flush(requester)
            m = next_msg(responder)
            while m.payload == b"warm":
                m = next_msg(responder)
            assert m.payload == b"q%d" % i and m.reply and m.reply.endswith(f"_INBOX.rr.{i}")
            responder.send(pub(m.reply, b"a%d" % i))
            flush(responder)
            answer = next_msg(requester)
            assert (answer.subject, answer.sid, answer.payload) == (f"_INBOX.rr.{i}", "7", b"a%d" % i)
    finally:
        close_all(responder, requester)


def test_request_reply_across_clusters(super_cluster):
    sc = super_cluster()
    request_reply(sc.a[0], sc.b[0], "svc.ab")
    request_reply(sc.b[0], sc.a[0], "svc.ba")


def test_gateway_loss_and_reconnection(super_cluster):
    """Cluster B's server is killed and restarted on its ports: the gateways come back both ways, with the interest
    of each side (a new subscription on B, the existing ones on A)."""
    sc = super_cluster()
    a, b = sc.a[0], sc.b[0]
    sub_a = a.client()
    try:
        sub_a.send(b"SUB back.a 1\r\n")
        flush(sub_a)
        b.kill()
        b.restart()
        sc.wait_gateways()
        publisher = b.client()
        try:
            warm_up(publisher, "back.a", [sub_a])
        finally:
            publisher.close()
        across(sc.a[0], sc.b[0], "again")
    finally:
        sub_a.close()


@pytest.mark.parametrize("size", [1, 2])
def test_implicit_gateway(super_cluster, size):
    """Only A's servers list B: a server of B dials A back when a server of A connects to it (implicit, not
    configured); with 2 servers per cluster, the one no server of A happened to dial learns of A from its route
    peer (INFO gateway_cmd 1 on the route). Formation checks every server's outbound gateway."""
    sc = super_cluster(size=size, implicit=True)
    for a in sc.a:
        assert a.http_get("/gatewayz")["outbound_gateways"]["B"]["configured"] is True
    for b in sc.b:
        assert b.http_get("/gatewayz")["outbound_gateways"]["A"]["configured"] is False
        across(b, sc.a[0], f"implicit{b.name}")


def test_monitoring(super_cluster):
    sc = super_cluster()
    a, b = sc.a[0], sc.b[0]
    gz = a.http_get("/gatewayz")
    assert set(gz) == GATEWAYZ_KEYS
    assert (gz["name"], gz["port"]) == ("A", a.gateway_port)
    out = gz["outbound_gateways"]["B"]
    assert set(out["connection"]) == GATEWAYZ_CONN_KEYS
    assert out["connection"]["name"] == b.server_id and out["connection"]["kind"] == "Gateway"
    assert out["connection"]["port"] == b.gateway_port
    inbound = gz["inbound_gateways"]["B"]
    assert len(inbound) == 1 and inbound[0]["configured"] is False
    assert inbound[0]["connection"]["name"] == b.server_id
    varz = a.http_get("/varz")["gateway"]
    assert (varz["name"], varz["host"], varz["port"]) == ("A", "127.0.0.1", a.gateway_port)
    assert varz["gateways"] == [{"name": "B", "urls": [f"127.0.0.1:{b.gateway_port}"]}]


@pytest.mark.parametrize("size", [2])
def test_queue_member_in_own_cluster_wins(super_cluster, size):
    """2x2 nodes: a member on the other server of cluster A (behind a route) wins over one in cluster B; with none
    left in A, cluster B serves the group."""
    sc = super_cluster(size=size)
    a1, a2, b1 = sc.a[0], sc.a[1], sc.b[0]
    member_a2, member_b1, publisher = a2.client(), b1.client(), a1.client()
    conns = [member_a2, member_b1, publisher]
    try:
        for m in (member_a2, member_b1):
            m.send(b"SUB job g 1\r\nSUB job.mark 2\r\nSUB job.warm 3\r\n")
            flush(m)
        warm_up(publisher, "job.warm", [member_a2, member_b1])
        publisher.send(b"".join(pub("job", b"j%d" % i) for i in range(N)) + pub("job.mark", b"end"))
        flush(publisher)
        assert payloads(read_until(member_a2, "job.mark"), "job") == [b"j%d" % i for i in range(N)]
        assert payloads(read_until(member_b1, "job.mark"), "job") == []
        member_a2.send(b"UNSUB 1\r\n")
        flush(member_a2)
        warm_up(publisher, "job", [member_b1])  # A2's unsubscription reached A1: the group overflows to B
        publisher.send(b"".join(pub("job", b"k%d" % i) for i in range(N)) + pub("job.mark", b"end"))
        flush(publisher)
        assert payloads(read_until(member_b1, "job.mark"), "job") == [b"k%d" % i for i in range(N)]
        assert payloads(read_until(member_a2, "job.mark"), "job") == []
    finally:
        close_all(*conns)
