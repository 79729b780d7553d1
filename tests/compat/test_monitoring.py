"""HTTP monitoring (-m PORT): /varz /connz /subsz /healthz."""

from __future__ import annotations

import json

from .harness import pub, run, settle, wait_until


def _conn(srv, cid, query=""):
    connz = srv.http_get("/connz" + query)
    for c in connz["connections"]:
        if c["cid"] == cid:
            return c
    return None


def test_healthz(srv):
    status, body = srv.http_get("/healthz", raw=True)
    assert status == 200
    assert json.loads(body) == {"status": "ok"}


def test_unknown_path_404(srv):
    status, _ = srv.http_get("/definitely-not-an-endpoint", raw=True)
    assert status == 404


def test_varz_identity_fields(srv):
    with srv.raw() as c:
        info = c.info
    varz = srv.http_get("/varz")
    assert varz["server_id"] == info["server_id"]
    assert varz["version"] == info["version"]
    assert varz["proto"] == 1
    assert varz["host"] == "127.0.0.1"
    assert varz["port"] == srv.port
    assert varz["max_payload"] == 1048576
    assert varz["max_control_line"] == 4096
    assert varz["max_connections"] == 65536
    assert varz["max_pending"] == 64 * 1024 * 1024
    assert varz["ping_max"] == 2
    assert varz["ping_interval"] == 120_000_000_000  # nanoseconds
    assert varz["http_port"] == srv.http_port
    for key in ("connections", "total_connections", "in_msgs", "out_msgs", "in_bytes", "out_bytes",
                "subscriptions", "slow_consumers"):
        assert isinstance(varz[key], int) and not isinstance(varz[key], bool), key
    for key in ("start", "now", "uptime"):
        assert isinstance(varz[key], str), key


def test_varz_counters_after_traffic(fresh):
    s = fresh(monitor=True)
    base = wait_until(lambda: (v := s.http_get("/varz"))["connections"] == 0 and v, msg="probe gone")
    assert base["in_msgs"] == 0 and base["out_msgs"] == 0
    assert base["in_bytes"] == 0 and base["out_bytes"] == 0
    with s.client() as sub, s.client() as p:
        sub.send(b"SUB cnt 1\r\nSUB cnt.> 2\r\nSUB > 3\r\n")
        sub.sync()
        p.send(pub("cnt", b"hello") + pub("cnt", b"world") + pub("cnt.x", b"12345") + pub("none", b""))
        p.sync()
        assert len(sub.msgs_until_pong()) == 7

        def settled():
            v = s.http_get("/varz")
            return v if (v["in_msgs"], v["out_msgs"]) == (4, 7) else None

        varz = wait_until(settled, timeout=3, msg="varz counters")
        assert varz["in_bytes"] == 15
        assert varz["out_bytes"] == 30  # six 5-byte copies and one empty one
        assert varz["connections"] == 2
        assert varz["total_connections"] >= 2
        assert varz["subscriptions"] - base["subscriptions"] == 3


def test_connz_basic(srv):
    with srv.client(name="conn-a") as a:
        a.send(b"SUB x.1 1\r\nSUB x.2 2\r\n")
        a.sync()
        cid = a.info["client_id"]
        connz = srv.http_get("/connz")
        assert connz["num_connections"] >= 1
        assert isinstance(connz["total"], int)
        assert connz["offset"] == 0
        assert connz["limit"] == 1024
        c = _conn(srv, cid)
        assert c is not None
        assert c["name"] == "conn-a"
        assert c["lang"] == "python-raw"
        assert c["version"] == "0.0.1"
        assert c["subscriptions"] == 2
        assert c["ip"] == "127.0.0.1"
        assert c["port"] == a.sock.getsockname()[1]
        assert "subscriptions_list" not in c


def test_connz_subs_list(srv):
    with srv.client(name="conn-subs") as a:
        a.send(b"SUB s.one 1\r\nSUB s.two q 2\r\nSUB s.> 3\r\n")
        a.sync()
        c = _conn(srv, a.info["client_id"], "?subs=1")
        assert sorted(c["subscriptions_list"]) == ["s.>", "s.one", "s.two"]


def test_connz_message_counters(srv):
    with srv.client(name="counter") as a:
        a.send(b"SUB cm 1\r\n" + pub("cm", b"abc") + pub("cm", b"de"))
        assert len(a.msgs_until_pong()) == 2
        cid = a.info["client_id"]

        def counted():
            c = _conn(srv, cid)
            return c if c and (c["in_msgs"], c["out_msgs"]) == (2, 2) else None

        c = wait_until(counted, timeout=3, msg="connz counters")
        assert c["in_bytes"] == 5 and c["out_bytes"] == 5


def test_connz_num_connections_tracks_open_clients(fresh):
    s = fresh(monitor=True)
    wait_until(lambda: s.http_get("/connz")["num_connections"] == 0, msg="probe connection gone")
    a, b = s.client(), s.client()
    try:
        connz = s.http_get("/connz")
        assert connz["num_connections"] == 2
        assert sorted(c["cid"] for c in connz["connections"]) == sorted(
            [a.info["client_id"], b.info["client_id"]])
    finally:
        a.close()
    wait_until(lambda: s.http_get("/connz")["num_connections"] == 1, msg="close noticed")
    b.close()


def test_connz_closed_client_reason(srv):
    a = srv.client(name="closer")
    cid = a.info["client_id"]
    a.close()

    def closed():
        for c in srv.http_get("/connz?state=closed")["connections"]:
            if c["cid"] == cid:
                return c
        return None

    c = wait_until(closed, timeout=3, msg="closed connection listed")
    assert c["reason"] == "Client Closed"
    assert c["name"] == "closer"
    assert "stop" in c


def test_connz_shows_nats_py_client(srv):
    async def body():
        nc = await srv.nc(name="py-client")
        try:
            await nc.subscribe("py.mon.a")
            await nc.subscribe("py.mon.b")
            await settle(nc)
            conns = [c for c in srv.http_get("/connz?subs=1")["connections"] if c.get("name") == "py-client"]
            assert len(conns) == 1
            c = conns[0]
            assert c["lang"] == "python3"
            assert "py.mon.a" in c["subscriptions_list"] and "py.mon.b" in c["subscriptions_list"]
        finally:
            await nc.close()

    run(body())


def test_subsz(fresh):
    s = fresh(monitor=True)  # private server: no subscriptions of other tests are still going away
    before = s.http_get("/subsz")["num_subscriptions"]
    with s.client() as a:
        a.send(b"SUB sz.1 1\r\nSUB sz.2 2\r\nSUB sz.3 g 3\r\n")
        a.sync()
        assert s.http_get("/subsz")["num_subscriptions"] == before + 3
        a.send(b"UNSUB 1\r\n")
        a.sync()
        assert s.http_get("/subsz")["num_subscriptions"] == before + 2
    wait_until(lambda: s.http_get("/subsz")["num_subscriptions"] == before, msg="subs removed on close")


def test_subsz_subscriptions_list(srv):
    with srv.client() as a:
        a.send(b"SUB szl.one 1\r\nSUB szl.two grp 2\r\n")
        a.sync()
        subsz = srv.http_get("/subsz?subs=1")
        mine = {x["subject"]: x for x in subsz["subscriptions_list"] if x["subject"].startswith("szl.")}
        assert set(mine) == {"szl.one", "szl.two"}
        assert mine["szl.two"]["qgroup"] == "grp"
        assert "qgroup" not in mine["szl.one"]
        assert mine["szl.one"]["sid"] == "1" and mine["szl.one"]["cid"] == a.info["client_id"]
        assert mine["szl.one"]["account"] == "$G"


def test_varz_reflects_config(fresh):
    s = fresh("max_payload: 2048\nmax_connections: 50\nmax_control_line: 1024\n"
              'ping_interval: "30s"\nping_max: 4\n', monitor=True)
    varz = s.http_get("/varz")
    assert varz["max_payload"] == 2048
    assert varz["max_connections"] == 50
    assert varz["max_control_line"] == 1024
    assert varz["ping_interval"] == 30_000_000_000
    assert varz["ping_max"] == 4
