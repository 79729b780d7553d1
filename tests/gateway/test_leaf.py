"""A leaf of cluster A in a super-cluster, on every side: it is told the interest of cluster B (plain and queue, as
nats-server's updateInterestForAccountOnGateway), its messages reach B's subscribers and queue groups through its
hub, and it answers a request from cluster B."""

from __future__ import annotations

import re

from tests.cluster.harness import flush, next_msg
from tests.cluster.leaf import RawLeaf
from tests.compat.harness import pub


def wait_ls(leaf: RawLeaf, *wanted: bytes) -> None:
    """Read the leaf's lines until every wanted LS+ line was seen (others skipped)."""
    left = set(wanted)
    while left:
        line = leaf.raw.expect(rb"[^\n]*\n").group(0)
        left.discard(line)


def test_leaf_reaches_the_other_cluster(super_cluster):
    sc = super_cluster(leafnodes=True)
    a, b = sc.a[0], sc.b[0]
    leaf = RawLeaf(a.leaf_port)
    member = b.client()
    try:
        member.send(b"SUB lf.svc 1\r\nSUB lf.work g 2\r\n")
        flush(member)
        wait_ls(leaf, b"LS+ lf.svc\r\n", b"LS+ lf.work g 1\r\n")

        leaf.send(b"LMSG lf.work | g 2\r\nw1\r\nLMSG lf.svc 2\r\ns1\r\n")
        got = [next_msg(member), next_msg(member)]
        assert [(m.subject, m.sid, m.payload) for m in got] == [("lf.work", "2", b"w1"), ("lf.svc", "1", b"s1")]

        # A request from cluster B to a service of the leaf: the answer finds its way back.
        leaf.sub("lf.leafsvc")
        requester = b.client()
        try:
            requester.send(b"SUB _INBOX.lf.* 5\r\n")
            flush(requester)
            for i in range(50):  # until the leaf's interest crossed to B
                requester.send(pub("lf.leafsvc", b"q", reply=f"_INBOX.lf.{i}"))
                flush(requester)
                msgs = [m for m in leaf.msgs_until_pong() if m.subject == "lf.leafsvc"]
                if msgs:
                    break
            assert msgs, "the leaf's interest did not reach cluster B"
            reply = msgs[0].reply
            assert reply is not None and re.fullmatch(r"(_GR_\.\w{6}\.\w{6}\.)?_INBOX\.lf\.\d+", reply)
            leaf.send(f"LMSG {reply} 3\r\nans\r\n".encode())
            answer = next_msg(requester)
            assert answer.payload == b"ans" and answer.subject == reply.split(".", 3)[-1] if reply.startswith("_GR_") \
                else answer.subject == reply
        finally:
            requester.close()
    finally:
        leaf.close()
        member.close()
