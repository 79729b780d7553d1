"""Queue-group preference by origin (shared/nats-reference/more/README.md A1), on a 2-node cluster A = n1, B = n2
with a leafnode port on each node (on mixed sides one nats-server and one hub, in both orders: `pair_kinds`).

Members: L, a raw leaf on A's leafnode port that sends `LS+ <subject> grp 1` (no cluster name in its CONNECT);
CA, a client member on A; CB, a client member on B. What nats-server 2.15.1 does, measured first on a nats-server
cluster, and required of every side:

  * a message published on A: a local client member or a member behind the route wins over the leaf member
    (A1.2), chosen among themselves at random; the leaf gets the message only when no other member is left;
  * a message published on B: the route delivers it to A, where a local client member wins over the leaf, which
    is the fallback (A1.3);
  * a message published on B while B has a client member of its own: B's member gets every message, never the
    leaf behind A. nats-server A tells B of the leaf's interest as `LS+ _ $G <subject> grp 1` (an origin
    "_" for a leaf without a cluster name, sent to peers that announce `lnoc`/`ln` in their route INFO and
    CONNECT), and B treats a routed queue member with an origin as a fallback only. To a peer without `lnoc` it
    sends a plain `RS+ $G <subject> grp 1` instead.

Every phase publishes numbered messages and then a marker (a plain subscription on each member's connection), so
each member is read up to the marker and counted exactly.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter

import pytest

from tests.compat.harness import free_port, pub, wait_until

from .harness import Cluster, flush, next_msg, pair_kinds
from .leaf import RawLeaf

N = 40


@pytest.fixture(scope="module")
def _leaf_clusters(request):
    pool: dict[str, Cluster] = {}

    def stop():
        for c in pool.values():
            c.stop()

    request.addfinalizer(stop)
    return pool


@pytest.fixture
def lc(side, _leaf_clusters, tmp_path_factory) -> Cluster:
    """A formed 2-node cluster of this side, each node with `leafnodes { listen }` (node.leaf_port); shared by the
    tests of this module, which use their own subjects."""
    c = _leaf_clusters.get(side)
    if c is not None and c.alive():
        return c
    if c is not None:
        c.stop()
    c = Cluster(side, 2, tmp_path_factory.mktemp(f"leaf-cluster-{side}"), kinds=pair_kinds(side))
    for n in c:
        n.leaf_port = free_port()
        n.extra_conf = f"leafnodes {{ listen: 127.0.0.1:{n.leaf_port} }}"
    _leaf_clusters[side] = c  # before start: a failed start is stopped too
    c.start()
    return c


class Member:
    """A client or leaf connection: payloads it got, by subject (read in PING rounds or up to a marker)."""

    def __init__(self, name: str, conn, subject: str, marker: str):
        self.name, self.conn, self.subject, self.marker = name, conn, subject, marker
        self.leaf = isinstance(conn, RawLeaf)
        self.seen: list[tuple[str, bytes, list[str]]] = []  # (subject, payload, queues named on an LMSG)

    @classmethod
    def client(cls, name: str, node, subject: str, marker: str):
        r = node.client()
        r.send(f"SUB {marker} 1\r\nSUB {subject} grp 2\r\n".encode())
        flush(r)
        return cls(name, r, subject, marker)

    @classmethod
    def leaf_on(cls, name: str, node, subject: str, marker: str):
        lf = RawLeaf(node.leaf_port, name=f"rawleaf-{uuid.uuid4().hex[:6]}")
        lf.sub(marker)
        lf.sub(subject, "grp", 1)
        return cls(name, lf, subject, marker)

    def unsubscribe(self):
        if self.leaf:
            self.conn.unsub(self.subject, "grp")
        else:
            self.conn.send(b"UNSUB 2\r\n")
            flush(self.conn)

    def round(self):
        """Whatever arrived, up to the answer to a PING."""
        if self.leaf:
            self.seen += [(m.subject, m.payload, m.queues) for m in self.conn.msgs_until_pong()]
        else:
            self.seen += [(f[1].subject, f[1].payload, []) for f in self.conn.frames_until_pong()
                          if f[0] in ("MSG", "HMSG")]

    def until_marker(self, payload: bytes, timeout: float = 5.0):
        deadline = time.monotonic() + timeout
        while not self.got(self.marker, payload):
            if self.leaf:
                msgs = self.conn.read_until(self.marker, payload, timeout=max(deadline - time.monotonic(), 0.1))
                self.seen += [(m.subject, m.payload, m.queues) for m in msgs]
                self.seen.append((self.marker, payload, []))
            else:
                m = next_msg(self.conn, max(deadline - time.monotonic(), 0.1))
                self.seen.append((m.subject, m.payload, []))

    def got(self, subject: str, payload: bytes) -> bool:
        return any(s == subject and p == payload for s, p, _q in self.seen)

    def tagged(self, tag: str) -> list[bytes]:
        return [p for s, p, _q in self.seen if s == self.subject and p.startswith(tag.encode())]

    def close(self):
        self.conn.close()


class Scene:
    """One subject with its queue group `grp`, a marker subject, publishers on A and B, and the members."""

    def __init__(self, cluster: Cluster):
        self.a, self.b = cluster
        base = f"qo.{uuid.uuid4().hex[:8]}"
        self.subject, self.marker = f"{base}.work", f"{base}.mark"
        self.pubs = {"A": self.a.client(), "B": self.b.client()}
        self.members: list[Member] = []
        self.n = 0

    def client(self, name: str, node) -> Member:
        m = Member.client(name, node, self.subject, self.marker)
        self.members.append(m)
        return m

    def leaf(self, name: str, node) -> Member:
        m = Member.leaf_on(name, node, self.subject, self.marker)
        self.members.append(m)
        return m

    def reach(self, where: str, member: Member, subject: str | None = None):
        """Publish probes from `where` until `member` gets one: interest (the marker's, or with `subject` the
        queue group's, then through this member) has crossed the route."""
        subject = subject or self.marker
        p = self.pubs[where]
        prefix = f"probe-{uuid.uuid4().hex[:6]}-".encode()
        k = 0

        def arrived():
            nonlocal k
            p.send(pub(subject, prefix + str(k).encode()))
            k += 1
            flush(p)
            member.round()
            return any(s == subject and x.startswith(prefix) for s, x, _q in member.seen)

        wait_until(arrived, timeout=10, interval=0.02,
                   msg=f"a message on {subject} published on {where} reaching {member.name}")

    def markers_reach_everyone(self):
        for where in ("A", "B"):
            for m in self.members:
                self.reach(where, m)

    def run(self, where: str, readers: list[Member]) -> dict[str, int]:
        """Publish N numbered messages on `where`, then a marker; read every reader to the marker. Checks each
        message was delivered exactly once among the readers; returns the count per reader."""
        self.n += 1
        tag = f"r{self.n}-"
        end = f"end-{self.n}".encode()
        p = self.pubs[where]
        p.send(b"".join(pub(self.subject, f"{tag}{i}".encode()) for i in range(N)) + pub(self.marker, end))
        flush(p)
        for m in readers:
            m.until_marker(end)
        got = {m.name: m.tagged(tag) for m in readers}
        counts = Counter(x for ps in got.values() for x in ps)
        assert max(counts.values(), default=1) == 1, f"delivered twice: {[x for x, k in counts.items() if k > 1]}"
        lost = N - len(counts)
        assert not lost, f"{lost} of {N} published on {where} reached no member: " \
                         f"{ {k: len(v) for k, v in got.items()} }"
        for m in readers:
            if m.leaf:
                named = {tuple(q) for s, x, q in m.seen if s == self.subject and x.startswith(tag.encode())}
                assert named <= {("grp",)}, f"LMSGs to the leaf name the groups {named}, want | grp"
        return {k: len(v) for k, v in got.items()}

    def close(self):
        for m in self.members:
            m.close()
        for p in self.pubs.values():
            p.close()


@pytest.fixture
def scene(lc):
    s = Scene(lc)
    yield s
    s.close()


def test_route_member_beats_leaf_member(scene):
    """Published on A, leaf member L on A and client member CB on B: every message goes to CB over the route; once
    CB unsubscribes, every one goes to L (as `LMSG <subject> | grp`)."""
    s = scene
    L, CB = s.leaf("L", s.a), s.client("CB", s.b)
    s.markers_reach_everyone()
    s.reach("A", CB, s.subject)  # A knows B's member
    assert s.run("A", [L, CB]) == {"L": 0, "CB": N}
    CB.unsubscribe()
    s.reach("A", L, s.subject)  # A forgot B's member
    assert s.run("A", [L, CB]) == {"L": N, "CB": 0}


def test_local_member_beats_leaf_member(scene):
    """Published on A: with L and a client member CA on A, CA gets everything; with CB on B as well, CA and CB
    share the messages (each gets some) and L still none; after CA leaves too, L gets everything."""
    s = scene
    L, CA = s.leaf("L", s.a), s.client("CA", s.a)
    s.markers_reach_everyone()
    assert s.run("A", [L, CA]) == {"L": 0, "CA": N}
    CB = s.client("CB", s.b)
    s.markers_reach_everyone()
    s.reach("A", CB, s.subject)
    got = s.run("A", [L, CA, CB])
    assert got["L"] == 0 and got["CA"] > 0 and got["CB"] > 0, got
    CB.unsubscribe()
    CA.unsubscribe()
    s.reach("A", L, s.subject)
    assert s.run("A", [L, CA, CB]) == {"L": N, "CA": 0, "CB": 0}


def test_routed_message_prefers_local_member_then_leaf(scene):
    """Published on B with no member on B: the route takes it to A, where the local client member CA wins over the
    leaf member L (A1.3); after CA unsubscribes, L gets every message."""
    s = scene
    L = s.leaf("L", s.a)
    s.markers_reach_everyone()
    s.reach("B", L, s.subject)  # B knows the leaf's interest on A
    CA = s.client("CA", s.a)
    s.markers_reach_everyone()
    assert s.run("B", [L, CA]) == {"L": 0, "CA": N}
    CA.unsubscribe()
    s.reach("B", L, s.subject)
    assert s.run("B", [L, CA]) == {"L": N, "CA": 0}


def test_client_member_beats_leaf_member_behind_a_route(scene):
    """Published on B: first with the leaf member L on A alone (L gets them: B knows the leaf's interest); then
    with a client member CB on B too: CB gets every message, L none (nats-server: the leaf's interest reaches B
    as `LS+ _ $G <subject> grp 1`, a routed member with an origin, which is only the fallback)."""
    s = scene
    L = s.leaf("L", s.a)
    s.markers_reach_everyone()
    s.reach("B", L, s.subject)
    assert s.run("B", [L]) == {"L": N}
    CB = s.client("CB", s.b)
    s.markers_reach_everyone()
    assert s.run("B", [L, CB]) == {"L": 0, "CB": N}
    CB.unsubscribe()
    assert s.run("B", [L, CB]) == {"L": N, "CB": 0}
