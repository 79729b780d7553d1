"""TLS on gateways (`gateway { tls { cert_file, key_file, ca_file } }`), on every side: as on routes (host/tls.py),
the handshake comes first and is mutual; the super-cluster forms and carries traffic both ways over it. Certificates
and the tls block are tests/cluster/test_route_tls.py's."""

from __future__ import annotations

from tests.cluster.test_route_tls import certs, tls_block  # noqa: F401 (certs is a fixture)

from .test_supercluster import across


def test_supercluster_over_tls(super_cluster, certs):  # noqa: F811
    sc = super_cluster(gateway_extra=tls_block(certs))
    for n in sc.nodes:
        assert n.http_get("/varz")["gateway"].get("tls_required") is True
    across(sc.a[0], sc.b[0], "tls.ab")
    across(sc.b[0], sc.a[0], "tls.ba")
