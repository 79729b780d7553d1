"""The route port on the wire: a raw peer (this test) against nats-server 2.15.1 and against our hub.

What a route peer sees (shared/nats-reference README section 3): the INFO, the CONNECT checks and their -ERR texts,
interest as RS+/RS- per account with queue weights, RMSG in both directions, queue names on RMSG, and that a
message that came over a route only reaches the queue groups it names.
"""

from __future__ import annotations

import json
import re

import pytest

from tests.compat.harness import ALL_SIDES, Raw, Server, free_port, wait_until

PEER_ID = "NRAWPEER00000000000000000000000000000000000000000000001"


@pytest.fixture(params=ALL_SIDES)
def node(request):
    cport = free_port()
    srv = Server(request.param, config=f"server_name: n1\ncluster {{ name: c1, listen: 127.0.0.1:{cport} }}\n")
    request.addfinalizer(srv.stop)
    srv.start()
    srv.cluster_port = cport
    return srv


def peer_info(port: int = 1, sid: str = PEER_ID, cluster: str = "c1", name: str = "rawpeer") -> bytes:
    info = {"server_id": sid, "server_name": name, "version": "2.15.1", "proto": 3, "host": "127.0.0.1",
            "port": port, "headers": True, "max_payload": 1048576, "cluster": cluster}
    return b"INFO " + json.dumps(info).encode() + b"\r\n"


def dial_route(port: int, sid: str = PEER_ID, cluster: str = "c1", name: str = "rawpeer") -> Raw:
    """A raw route peer dialling a route port: INFO read, CONNECT + INFO + PING sent (the PONG left to read). Two
    peers of one server need two names (isDuplicateServerName: a second route with a name the server has is refused)."""
    r = Raw(port)
    r.send(b'CONNECT {"echo":true,"verbose":false,"pedantic":false,"tls_required":false,"headers":true,'
           b'"name":"%s","cluster":"%s"}\r\n' % (sid.encode(), cluster.encode()))
    r.send(peer_info(sid=sid, cluster=cluster, name=name))
    r.send(b"PING\r\n")
    return r


def route_peer(node: Server) -> Raw:
    """A raw route peer that dialled the node, its PONG seen."""
    r = dial_route(node.cluster_port)
    seen(r, rb"PONG\r\n")
    return r


def seen(r: Raw, pattern: bytes, payload: bytes | None = None) -> None:
    """Skip what the node sends (nats-server announces its $SYS interest too) up to a line matching `pattern`,
    and check the payload line after it."""
    while True:
        line = r.expect(rb"[^\n]*\n").group(0)
        if re.fullmatch(pattern, line):
            break
    if payload is not None:
        r.expect(re.escape(payload + b"\r\n"))


def test_route_info(node):
    r = Raw(node.cluster_port)
    try:
        info = r.info
        assert info["cluster"] == "c1"
        assert info["server_name"] == "n1"
        assert info["headers"] is True
        assert info["proto"] >= 3
        assert info["port"] == node.cluster_port
        assert info["connect_urls"] == [f"127.0.0.1:{node.port}"]
        if node.side == "hub":
            # README 3.4: no pooling, no compression, no JetStream meta-group flag; the leaf-origin forms, as
            # nats-server (so leaf queue members stay a fallback across the cluster).
            for key in ("route_pool_size", "compression", "jetstream"):
                assert key not in info
        assert info["lnoc"] is True and info["lnocu"] is True
    finally:
        r.close()


def test_client_connect_on_route_port(node):
    r = Raw(node.cluster_port)
    try:
        r.send(b'CONNECT {"verbose":false,"lang":"python","version":"1"}\r\n')
        r.expect_err("attempted to connect to route port")
        r.expect_closed()
    finally:
        r.close()


def test_cluster_name_mismatch(node):
    r = Raw(node.cluster_port)
    try:
        r.send(b'CONNECT {"echo":true,"verbose":false,"pedantic":false,"tls_required":false,"headers":true,'
               b'"name":"NOTHER","cluster":"other"}\r\n')
        r.expect_err('Rejecting connection, cluster name "other" does not match "c1"')
        r.expect_closed()
    finally:
        r.close()


def test_interest_goes_out_as_rs(node):
    peer = route_peer(node)
    c = node.client(verbose=False, pedantic=False)
    try:
        c.send(b"SUB foo.* 1\r\nSUB work q 2\r\nSUB work q 3\r\nPING\r\n")
        c.expect(rb"PONG\r\n")
        seen(peer, rb"RS\+ \$G foo\.\*\r\n")
        seen(peer, rb"RS\+ \$G work q 2\r\n")  # the absolute weight: two local members
        c.send(b"UNSUB 1\r\nPING\r\n")
        c.expect(rb"PONG\r\n")
        seen(peer, rb"RS- \$G foo\.\*\r\n")
    finally:
        c.close()
        peer.close()


def test_messages_both_ways(node):
    peer = route_peer(node)
    c = node.client(verbose=False, pedantic=False, headers=True)
    try:
        # The peer's interest makes the node forward a client's message as RMSG, headers as HMSG.
        peer.send(b"RS+ $G to.peer\r\nPING\r\n")
        seen(peer, rb"PONG\r\n")
        c.send(b"PUB to.peer reply.1 2\r\nhi\r\nHPUB to.peer 12 14\r\nNATS/1.0\r\n\r\nho\r\n")
        seen(peer, rb"RMSG \$G to\.peer reply\.1 2\r\n", b"hi")
        seen(peer, rb"HMSG \$G to\.peer 12 14\r\n", b"NATS/1.0\r\n\r\nho")
        # A message from the peer reaches the node's plain subscribers.
        c.send(b"SUB from.peer 7\r\nPING\r\n")
        c.expect(rb"PONG\r\n")
        seen(peer, rb"RS\+ \$G from\.peer\r\n")
        peer.send(b"RMSG $G from.peer r.2 3\r\nabc\r\n")
        c.expect(rb"MSG from\.peer 7 r\.2 3\r\nabc\r\n")
    finally:
        c.close()
        peer.close()


def test_routed_queue_names(node):
    """A routed message reaches a queue group only when the frame names it (README A1.4)."""
    peer = route_peer(node)
    c = node.client(verbose=False, pedantic=False)
    try:
        c.send(b"SUB jobs workers 1\r\nPING\r\n")
        c.expect(rb"PONG\r\n")
        seen(peer, rb"RS\+ \$G jobs workers 1\r\n")
        peer.send(b"RMSG $G jobs 5\r\nplain\r\n")  # no queue named: plain subscribers only, none here
        peer.send(b"RMSG $G jobs | workers 6\r\nqueued\r\n")
        peer.send(b"RMSG $G jobs + rep.1 workers 7\r\nreplied\r\n")
        c.send(b"PING\r\n")
        msgs = [m.payload for m in c.msgs_until_pong()]
        wait_until(lambda: msgs.extend(m.payload for m in c.msgs_until_pong()) or len(msgs) >= 2, msg="two msgs")
        assert msgs == [b"queued", b"replied"]
    finally:
        c.close()
        peer.close()


def test_route_to_self_is_closed(node):
    r = Raw(node.cluster_port)
    try:
        sid = r.info["server_id"]
        r.send(b'CONNECT {"echo":true,"verbose":false,"pedantic":false,"tls_required":false,"headers":true,'
               b'"name":"' + sid.encode() + b'","cluster":"c1"}\r\n')
        r.send(peer_info(sid=sid))
        r.expect_closed()
    finally:
        r.close()
