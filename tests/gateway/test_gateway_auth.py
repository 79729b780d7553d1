"""`gateway { authorization { user, password } }`, on every side: servers whose gateway URLs carry no credentials
send their own (as nats-server), so the super-cluster forms; a gateway that sends wrong ones gets nats-server's
-ERR 'Authorization Violation' and is closed."""

from __future__ import annotations

import pytest

from tests.compat.harness import ALL_SIDES, Raw, Server, free_port

from .test_gateway_wire import FA_ID, fa_info
from .test_supercluster import across

AUTH = "  authorization { user: gu, password: gp }"


def test_supercluster_with_gateway_authorization(super_cluster):
    sc = super_cluster(gateway_extra=AUTH)
    across(sc.a[0], sc.b[0], "auth.ab")
    across(sc.b[0], sc.a[0], "auth.ba")


@pytest.mark.parametrize("kind", ALL_SIDES)
def test_wrong_gateway_credentials_are_refused(kind, request):
    gport = free_port()
    srv = Server(kind, config=f"server_name: gB\ngateway {{ name: B, listen: 127.0.0.1:{gport}\n{AUTH}\n}}\n")
    request.addfinalizer(srv.stop)
    srv.start()
    r = Raw(gport)
    try:
        r.send(b'CONNECT {"echo":false,"verbose":false,"pedantic":false,"tls_required":false,"headers":true,'
               b'"name":"' + FA_ID.encode() + b'","gateway":"FA","user":"gu","pass":"nope"}\r\n' + fa_info(1) +
               b"PING\r\n")
        r.expect_err("Authorization Violation")
        r.expect_closed()
    finally:
        r.close()
