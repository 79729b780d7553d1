"""TLS on routes (`cluster { tls { cert_file, key_file, ca_file, verify } }`), held to nats-server 2.15.1 on every
side (nats, hub, mixed-nats, mixed-hub; tests/cluster/conftest.py).

What nats-server does, and these tests check on both servers (docs/cluster.md, "TLS on routes"):
- the route port says nothing in plain text: the TLS handshake comes first, the INFO (with `tls_required` and
  `tls_verify`) only inside TLS;
- TLS on routes is mutual: a peer without a certificate, or with one the CA file does not trust, is refused
  (whatever `verify` says), and a dialler refuses a peer whose certificate it cannot verify for 127.0.0.1;
- a node without TLS never joins a TLS cluster, in either direction; a refused route is logged as
  "TLS route handshake error" and never appears in /routez.

Certificates are made for the module (tests/certs.py, no openssl command): a CA, a node certificate it signs
(IP SAN 127.0.0.1, for server and client use, shared by every node), one it signs for another host name only, and
a certificate from another CA.
"""

from __future__ import annotations

import json
import re
import socket
import ssl
import time

import pytest

from tests import certs as certlib
from tests.compat.harness import wait_until

from .harness import Node, node_side, route_url
from .test_routing import _expect_once_each, _queue_run, sub, uniq

REFUSED = re.compile(r"TLS route handshake error")


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    d = tmp_path_factory.mktemp("route-certs")
    for ca in ("ca", "otherca"):
        certlib.cert(d, ca, cn=f"natsedge test {ca}", ca=True, ca_key_usage=True)
    for name, ca in (("node", "ca"), ("rogue", "otherca")):
        certlib.cert(d, name, issuer=ca, sans=["localhost", "127.0.0.1"], server_client=True, ca=False)
    # signed by the CA, but for another host only
    certlib.cert(d, "nameless", issuer="ca", sans=["elsewhere.example"], server_client=True, ca=None)
    return d


def tls_block(certs, cert: str = "node", ca: str = "ca", verify: bool = False) -> str:
    extra = ", verify: true" if verify else ""
    return (f'  tls {{ cert_file: "{certs / f"{cert}.pem"}", key_file: "{certs / f"{cert}-key.pem"}", '
            f'ca_file: "{certs / f"{ca}.pem"}"{extra} }}')


def outsider(kind: str, name: str, tmp_path, cluster_extra: str, routes: list[int]) -> Node:
    """A node that is not part of the cluster, dialling the given route ports; stopped by the caller."""
    n = Node(kind, name, tmp_path / name, cluster_extra=cluster_extra)
    n.workdir.mkdir()
    n.assign_ports()
    n.routes = [route_url(p) for p in routes]
    return n


def tls_info(port: int, certs, cert: str = "node") -> dict:
    """The route INFO read over a TLS connection made with `cert`."""
    ctx = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    ctx.load_cert_chain(str(certs / f"{cert}.pem"), str(certs / f"{cert}-key.pem"))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s, \
            ctx.wrap_socket(s, server_hostname="127.0.0.1") as t:
        buf = b""
        while b"\r\n" not in buf:
            data = t.recv(4096)
            assert data, f"connection closed before the INFO; got {buf!r}"
            buf += data
    line = buf.split(b"\r\n", 1)[0]
    assert line.startswith(b"INFO "), line
    return json.loads(line[5:])


def plain_bytes(port: int, wait: float = 0.5) -> bytes:
    """What the route port writes in plain text to a connection that sends nothing, within `wait` seconds."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as s:
        try:
            return s.recv(4096)
        except TimeoutError:
            return b""


def test_tls_cluster_forms_and_carries_messages(fresh_cluster, certs):
    """Three TLS nodes (with `verify: true`) form the full mesh and carry messages between every pair (the
    harness checks both before returning); a queue group with a member on every node gets each of 60 messages
    once. Every route port is silent in plain text and says tls_required and tls_verify inside TLS."""
    c = fresh_cluster(cluster_extra=tls_block(certs, verify=True))
    for n in c:
        assert plain_bytes(n.cluster_port) == b"", f"{n.side} {n.name}: plain text before the TLS handshake"
        info = tls_info(n.cluster_port, certs)
        assert info["server_id"] == n.server_id
        assert info.get("tls_required") is True and info.get("tls_verify") is True, (n.side, info)
        varz = n.http_get("/varz")["cluster"]
        assert varz.get("tls_required") is True and varz.get("tls_verify") is True, (n.side, varz)
    a, b, cc = c[1], c[2], c[0]
    subject, marker = uniq("tlsq"), uniq("tlsq.mark")
    members = [sub(node, f"{subject} workers 1", f"{marker} 2") for node in (a, b, cc)]
    pa = a.client()
    per_member = _queue_run(pa, subject, members, marker, 60)
    _expect_once_each(per_member, 60)
    assert all(per_member), f"a member got nothing: {[len(x) for x in per_member]}"
    for r in [*members, pa]:
        r.close()


def test_tls_without_verify_still_requires_a_client_certificate(fresh_cluster, certs):
    """Without `verify`, as nats-server: the route port still refuses a TLS connection without a certificate,
    and one whose certificate comes from another CA."""
    c = fresh_cluster(size=2, cluster_extra=tls_block(certs))
    for n in c:
        assert tls_info(n.cluster_port, certs)["server_id"] == n.server_id
        for cert in (None, "rogue"):
            ctx = ssl.create_default_context(cafile=str(certs / "ca.pem"))
            if cert:
                ctx.load_cert_chain(str(certs / f"{cert}.pem"), str(certs / f"{cert}-key.pem"))
            with socket.create_connection(("127.0.0.1", n.cluster_port), timeout=5) as s:
                try:
                    with ctx.wrap_socket(s, server_hostname="127.0.0.1") as t:
                        got = t.recv(4096)  # TLS 1.3: the refusal comes after the client's side of the handshake
                except (ssl.SSLError, ConnectionError):
                    got = b""
            assert got == b"", f"{n.side} {n.name} sent {got[:60]!r} to a client with certificate {cert}"
        wait_until(lambda n=n: len(REFUSED.findall(n.output())) >= 2, timeout=5, msg=f"{n.side}: logged refusals")


def test_node_without_tls_is_refused_both_ways(fresh_cluster, certs, tmp_path):
    """A TLS cluster of two; a plain node dials it, and a third TLS node dials both the cluster and the plain node.
    The TLS node joins; the plain node joins nobody: each TLS side logs a TLS route handshake error."""
    c = fresh_cluster(size=2, cluster_extra=tls_block(certs))
    plain = outsider(node_side(c.side, 2), "p1", tmp_path, "", [c[0].cluster_port])
    joiner = outsider(node_side(c.side, 0), "t1", tmp_path, tls_block(certs), [])
    joiner.routes = [route_url(c[0].cluster_port), route_url(plain.cluster_port)]
    c.nodes.append(joiner)  # stopped with the cluster
    try:
        for n in (plain, joiner):
            n.launch()
            n.ready()
        c.wait_formed()  # the TLS joiner is in the mesh (n2 learns it by gossip)
        wait_until(lambda: REFUSED.search(c[0].output()), timeout=10, msg=f"{c[0].side} refusing the plain node")
        wait_until(lambda: REFUSED.search(joiner.output()), timeout=10,
                   msg=f"{joiner.side} refusing to go on with a plain peer")
        time.sleep(1.5)  # several redials
        assert plain.route_peers() == set()
        assert all(plain.server_id not in n.route_peers() for n in c)
    finally:
        plain.stop()


def test_certificates_the_other_side_cannot_verify_are_refused(fresh_cluster, certs, tmp_path):
    """A TLS cluster of two with `verify: true`. A node whose certificate comes from another CA is refused by the
    cluster; a node that trusts only the other CA refuses the cluster's certificate. Neither route forms."""
    c = fresh_cluster(size=2, cluster_extra=tls_block(certs, verify=True))
    kind = node_side(c.side, 2)
    rogue = outsider(kind, "r1", tmp_path, tls_block(certs, cert="rogue", verify=True), [c[0].cluster_port])
    wary = outsider(kind, "r2", tmp_path, tls_block(certs, ca="otherca", verify=True), [c[0].cluster_port])
    try:
        for n in (rogue, wary):
            n.launch()
            n.ready()
        wait_until(lambda: REFUSED.search(c[0].output()), timeout=10, msg=f"{c[0].side} refusing the rogue cert")
        wait_until(lambda: REFUSED.search(wary.output()), timeout=10, msg=f"{wary.side} refusing the cluster cert")
        time.sleep(1.5)  # several redials
        for n in (rogue, wary):
            assert n.route_peers() == set(), f"{n.side} {n.name} routes to {n.route_peers()}"
        c.wait_routes()  # the cluster still has exactly its 2 members
    finally:
        rogue.stop()
        wary.stop()


def test_dialler_checks_the_address_it_dials(fresh_cluster, certs, tmp_path):
    """A node whose certificate the CA signed for another host name joins by dialling n1 (the accepting side
    checks the chain, not names). n2 learns it by gossip and dials nats-route://127.0.0.1:port: the certificate
    has no IP SAN for 127.0.0.1, so n2 refuses it and that route never forms."""
    c = fresh_cluster(size=2, cluster_extra=tls_block(certs, verify=True))
    n1, n2 = c[0], c[1]
    x = outsider(node_side(c.side, 2), "x1", tmp_path, tls_block(certs, cert="nameless", verify=True),
                 [n1.cluster_port])
    try:
        x.launch()
        x.ready()
        wait_until(lambda: x.route_peers() == {n1.server_id}, timeout=10, msg=f"{x.side} x1 routed to n1 only")
        wait_until(lambda: REFUSED.search(n2.output()), timeout=10, msg=f"{n2.side} n2 refusing x1's certificate")
        assert re.search(r"127\.0\.0\.1|IP", n2.output()[n2.output().find("TLS route handshake error"):][:400])
        time.sleep(1.5)  # gossip-driven redials
        assert x.server_id not in n2.route_peers() and n2.server_id not in x.route_peers()
        assert n1.route_peers() == {n2.server_id, x.server_id} and n1.server_id in n2.route_peers()
    finally:
        x.stop()
