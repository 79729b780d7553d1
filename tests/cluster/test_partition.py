"""Partition and heal: a 2-node cluster whose routes run only through TCP proxies the test controls.

n1 lists no routes; n2 lists one, the port of proxy P1, which forwards to n1's route port. Each node advertises its
own proxy as its route URL (`cluster { advertise }`: P1 for n1, P2 -> n2's route port for n2), so a node that
dials the other on its own goes through a proxy too. That matters on mixed-nats: when its route to our hub (a
"no pool" route for nats-server) closes, nats-server n1 redials the hub's advertised URL itself although it never
dialled that route; without P2 it would bypass the partition. Cutting closes both ends of every connection through
the proxies and refuses new ones (accepted and reset at once, counted), so redials fail until the heal. On mixed
sides the two nodes are one nats-server and one hub, in both orders (`pair_kinds`: mixed-nats = nats n1 + hub n2,
mixed-hub = hub n1 + nats n2).

Mirrors nats-server's TestRouteResendsLocalSubsOnReconnect: interest made while the route was down is sent when it
comes back.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
import uuid
from collections import Counter

import pytest

from tests.compat.harness import Raw, pub, wait_until

from .harness import Node, flush, next_msg, pair_kinds, route_url, warm_up


class RouteProxy:
    """A threaded TCP proxy on 127.0.0.1 to one target port. `cut()` closes both sides of every connection through
    it and resets each new one as soon as it is accepted (`refused` counts them); `heal()` forwards again."""

    def __init__(self, target_port: int):
        self.target = ("127.0.0.1", target_port)
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=64)
        self.listener.settimeout(0.05)
        self.port = self.listener.getsockname()[1]
        self.accepted = 0  # connections forwarded to the target
        self.accepted_at_cut = 0
        self.refused = 0  # connections reset while cut
        self._cut = False
        self._closed = False
        self._lock = threading.Lock()
        self._socks: set[socket.socket] = set()
        self._thread = threading.Thread(target=self._accept_loop, name=f"route-proxy-{self.port}", daemon=True)
        self._thread.start()

    @property
    def connections(self) -> int:
        """Forwarded connections still open (two sockets each)."""
        with self._lock:
            return len(self._socks) // 2

    def cut(self):
        with self._lock:
            self._cut = True
            self.accepted_at_cut = self.accepted  # (read under the lock: a dial may be in flight at the cut)
            socks = list(self._socks)
        for s in socks:
            self._kill(s)

    def heal(self):
        with self._lock:
            self._cut = False

    def close(self):
        self._closed = True
        self.cut()
        self._thread.join(timeout=2)
        self.listener.close()

    def _accept_loop(self):
        while not self._closed:
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(None)
            if self._cut or self._closed:
                self._reset(conn)
                continue
            try:
                up = socket.create_connection(self.target, timeout=2)
                up.settimeout(None)
            except OSError:
                self._reset(conn)
                continue
            with self._lock:
                if self._cut:
                    self.refused += 1
                    for s in (conn, up):
                        s.close()
                    continue
                self.accepted += 1
                self._socks.update((conn, up))
            for src, dst in ((conn, up), (up, conn)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _reset(self, conn: socket.socket):
        with self._lock:
            self.refused += 1
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close sends RST
        conn.close()

    def _pump(self, src: socket.socket, dst: socket.socket):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            self._kill(src)
            self._kill(dst)

    def _kill(self, s: socket.socket):
        with self._lock:
            if s not in self._socks:
                return
            self._socks.discard(s)
        try:
            s.shutdown(socket.SHUT_RDWR)  # wakes the pump blocked in recv; the peer sees FIN
        except OSError:
            pass
        s.close()


class Proxies:
    """The proxies in front of each node, cut and healed together."""

    def __init__(self, proxies: list[RouteProxy]):
        self.proxies = proxies

    def cut(self):
        for p in self.proxies:
            p.cut()

    @property
    def accepted_at_cut(self) -> int:
        return sum(p.accepted_at_cut for p in self.proxies)

    def heal(self):
        for p in self.proxies:
            p.heal()

    @property
    def accepted(self) -> int:
        return sum(p.accepted for p in self.proxies)

    @property
    def refused(self) -> int:
        return sum(p.refused for p in self.proxies)


def sub(node, *subs: str, **connect):
    r = node.client(**connect)
    r.send("".join(f"SUB {s}\r\n" for s in subs).encode())
    flush(r)
    return r


class Seen:
    """Every message a raw client got, by subject (frames are read in PING rounds or up to a marker)."""

    def __init__(self, raw):
        self.raw = raw
        self.payloads: dict[str, list[bytes]] = {}

    def _note(self, m):
        self.payloads.setdefault(m.subject, []).append(m.payload)
        return m

    def round(self) -> list:
        return [self._note(f[1]) for f in self.raw.frames_until_pong() if f[0] in ("MSG", "HMSG")]

    def until(self, subject: str, payload: bytes, timeout: float = 5.0):
        """Read until (`subject`, `payload`) has been seen (now or before)."""
        while not self.got(subject, payload):
            self._note(next_msg(self.raw, timeout))

    def got(self, subject: str, payload: bytes) -> bool:
        return payload in self.payloads.get(subject, [])


def arrives(publisher, subject: str, receiver: Seen, payload: bytes) -> bool:
    publisher.send(pub(subject, payload))
    flush(publisher)
    receiver.round()
    return receiver.got(subject, payload)


def no_responders(inbox: str, sid: str, subject: str) -> bytes:
    hdr = f"NATS/1.0 503\r\nNats-Subject: {subject}\r\n\r\n".encode()
    return f"HMSG {inbox} {sid} {len(hdr)} {len(hdr)}\r\n".encode() + hdr + b"\r\n"


def test_partition_and_heal(side, fresh_cluster):
    """Before the cut: messages both ways, n1's request answered by n2's responder. The cut: both nodes drop the
    route, n1's requests bounce with 503, redials are refused, and what is published meanwhile on either side is
    lost (never delivered after the heal) while n1's own queue member takes all of n1's queue messages. The heal:
    the route comes back through a proxy between the same two servers, subscriptions made on either node during
    the partition get the other node's messages, the old ones too, requests are answered again, and a queue group
    with a member made during the partition delivers every message exactly once, published on either node."""
    c = fresh_cluster(size=2, topology="seed", start=False, kinds=pair_kinds(side))
    c.plan()
    n1, n2 = c
    proxies = [RouteProxy(n.cluster_port) for n in c]
    try:
        for n, p in zip(c, proxies, strict=True):
            n.cluster_extra = f"  advertise: 127.0.0.1:{p.port}"
        n2.routes = [route_url(proxies[0].port)]
        c.launch_nodes([n1, n2])
        c.wait_formed()
        assert sum(p.connections for p in proxies) >= 1  # the route crosses a proxy
        ids = (n1.server_id, n2.server_id)
        _partition_and_heal(c, Proxies(proxies), ids)
    finally:
        for p in proxies:
            p.close()


def _partition_and_heal(c, proxy: Proxies, ids: tuple[str, str]):
    n1, n2 = c
    base = f"pt.{uuid.uuid4().hex[:8]}"
    d1, d2, svc, work = f"{base}.d1", f"{base}.d2", f"{base}.svc", f"{base}.work"
    inbox = f"_INBOX.{base}"
    s1 = Seen(sub(n1, f"{d1} 1", f"{work} w 2", f"{base}.mark 3"))  # qa: a queue member on n1
    s2 = Seen(sub(n2, f"{d2} 1", f"{work} w 2", f"{base}.mark 3"))  # qb: one on n2
    responder = Seen(sub(n2, f"{svc} 1"))
    req = Seen(sub(n1, f"{inbox} 1", headers=True, no_responders=True))
    p1, p2 = n1.client(), n2.client()

    # ---- before: both ways
    wait_until(lambda: arrives(p1, d2, s2, b"before"), timeout=5, msg="n1 -> n2 before the cut")
    wait_until(lambda: arrives(p2, d1, s1, b"before"), timeout=5, msg="n2 -> n1 before the cut")
    warm_up(req.raw, svc, [responder.raw], payload=b"warm")
    req.raw.send(pub(svc, b"q1", reply=inbox))
    flush(req.raw)
    responder.until(svc, b"q1")
    responder.raw.send(pub(inbox, b"a1"))
    flush(responder.raw)
    req.until(inbox, b"a1")

    # ---- cut
    proxy.cut()
    accepted_before = proxy.accepted_at_cut

    def dropped() -> bool:
        left = {n.name: [(r["remote_name"], r["ip"], r["port"], r["did_solicit"]) for r in n.routez()["routes"] or []]
                for n in (n1, n2)}
        assert not any(left.values()), f"routes left (remote, ip, port, did_solicit): {left}"
        return True

    failure = None
    try:
        wait_until(dropped, timeout=10, msg="both nodes drop the route")
    except pytest.fail.Exception as exc:
        failure = str(exc)
    if failure:
        ports = ", ".join(f"{n.name} listens on {n.cluster_port} and advertises {p.port}"
                          for n, p in zip(c, proxy.proxies, strict=True))
        pytest.fail(f"{failure}\n{ports}\n{c.log_tails(3000)}", pytrace=False)

    def bounced() -> bool:
        req.raw.send(pub(svc, b"during", reply=inbox))
        frames = [f[1].raw for f in req.raw.frames_until_pong() if f[0] in ("MSG", "HMSG")]
        return no_responders(inbox, "1", svc) in frames

    wait_until(bounced, timeout=5, interval=0.05, msg="a request from n1 to n2's responder gets 503")

    # The partition holds while n2 keeps redialling (about once a second; nats-server redials each connection of
    # its pool): for 1.5 s and at least two refused redials, everything published meanwhile, both ways and to the
    # queue group, is dropped, every request bounces, and neither node has a route.
    refused_at_cut = proxy.refused
    cut_at = time.monotonic()
    sent = 0

    def partitioned_for_two_redials() -> bool:
        nonlocal sent
        p1.send(pub(d2, f"during-{sent}".encode()) + pub(work, f"during-{sent}".encode()))
        p2.send(pub(d1, f"during-{sent}".encode()))
        flush(p1)
        flush(p2)
        sent += 1
        assert bounced(), "a request from n1 during the partition was not answered with 503"
        assert n1.route_peers() == set() and n2.route_peers() == set(), "a route came back through the cut"
        return proxy.refused >= refused_at_cut + 2 and time.monotonic() - cut_at >= 1.5

    wait_until(partitioned_for_two_redials, timeout=15, interval=0.1, msg="two refused redials of the cut route")
    assert proxy.accepted == accepted_before

    # interest made during the partition, on both sides, plus a second queue member on n2
    late1 = Seen(sub(n1, f"{base}.late1 1"))
    late2 = Seen(sub(n2, f"{base}.late2 1"))
    qc = Seen(sub(n2, f"{work} w 1", f"{base}.mark 2"))

    # ---- heal
    proxy.heal()
    c.wait_formed(timeout=15)
    assert (n1.server_id, n2.server_id) == ids
    assert proxy.accepted > accepted_before, "the route came back through a proxy"

    wait_until(lambda: arrives(p1, f"{base}.late2", late2, b"after"), timeout=5,
               msg="n1 -> a subscription made on n2 during the partition")
    wait_until(lambda: arrives(p2, f"{base}.late1", late1, b"after"), timeout=5,
               msg="n2 -> a subscription made on n1 during the partition")
    wait_until(lambda: arrives(p1, d2, s2, b"after"), timeout=5, msg="n1 -> n2's old subscription")
    wait_until(lambda: arrives(p2, d1, s1, b"after"), timeout=5, msg="n2 -> n1's old subscription")

    # nothing published during the partition shows up late: each publisher's marker comes after it
    p1.send(pub(f"{base}.mark", b"end-p1"))
    flush(p1)
    p2.send(pub(f"{base}.mark", b"end-p2"))
    flush(p2)
    for seen in (s1, s2):
        seen.until(f"{base}.mark", b"end-p1")
        seen.until(f"{base}.mark", b"end-p2")
    qc.until(f"{base}.mark", b"end-p1")

    def during(seen, subject):
        return [p for p in seen.payloads.get(subject, []) if p.startswith(b"during")]

    crossed = {"d1 on n1": during(s1, d1), "d2 on n2": during(s2, d2),
               "work on n2": during(s2, work) + during(qc, work)}
    assert not any(crossed.values()), f"messages published during the partition crossed after the heal: {crossed}"
    # meanwhile n1's own queue member took every one of n1's queue messages
    assert during(s1, work) == [f"during-{i}".encode() for i in range(sent)]
    assert sent >= 3

    # request/reply works again
    def answered() -> bool:
        req.raw.send(pub(svc, b"q2", reply=inbox))
        flush(req.raw)
        responder.round()
        if not responder.got(svc, b"q2"):
            return False
        responder.raw.send(pub(inbox, b"a2"))
        flush(responder.raw)
        req.round()
        return req.got(inbox, b"a2")

    wait_until(answered, timeout=5, interval=0.05, msg="n1's request answered by n2 after the heal")
    assert during(responder, svc) == [], "a request made during the partition reached the responder"

    # queue group: members qa (n1), qb (n2, from before) and qc (n2, made during the partition)
    members = [s1, s2, qc]
    warm_up(p1, work, [m.raw for m in members[1:]], payload=b"qwarm")  # n1 knows n2's 2 members again
    n = 60
    for k, publisher in enumerate((p1, p2)):
        tag = f"q{k}-"
        publisher.send(b"".join(pub(work, f"{tag}{i}".encode()) for i in range(n)) +
                       pub(f"{base}.mark", f"qend{k}".encode()))
        flush(publisher)
        for m in members:
            m.until(f"{base}.mark", f"qend{k}".encode())
        per = [[p for p in m.payloads.get(work, []) if p.startswith(tag.encode())] for m in members]
        counts = Counter(p for got in per for p in got)
        assert sorted(counts) == sorted(f"{tag}{i}".encode() for i in range(n)), \
            f"publisher n{k + 1}: lost {n - len(counts)} queue messages"
        assert max(counts.values()) == 1, f"publisher n{k + 1}: duplicates {[p for p, x in counts.items() if x > 1]}"
        if k == 0:
            assert per[1] or per[2], f"n1's publishes never reached n2's members: {[len(x) for x in per]}"

    for r in (s1, s2, qc, responder, req, late1, late2):
        r.raw.close()
    p1.close()
    p2.close()


def test_route_info_carries_the_advertised_host_port(side, tmp_path):
    """`cluster { advertise: H:P }` puts H and P in the route INFO's `host` and `port` as well as in `ip`
    (nats-server setRouteInfoHostPortAndIP): nats-server builds the URL of a route it accepted from `host`:`port`,
    and redials that URL when a "no pool" route (one to our hub) closes, so the partition above relies on it."""
    for kind in dict.fromkeys(pair_kinds(side)):
        n = Node(kind, "n1", tmp_path / kind, cluster_extra="  advertise: 127.0.0.1:4999")
        n.workdir.mkdir()
        n.assign_ports()
        try:
            n.launch()
            n.ready()
            with Raw(n.cluster_port) as r:
                got = {k: r.info.get(k) for k in ("host", "port", "ip")}
            assert got == {"host": "127.0.0.1", "port": 4999, "ip": "nats-route://127.0.0.1:4999/"}, \
                f"{kind} (listening on {n.cluster_port}): {got}"
        finally:
            n.stop()
