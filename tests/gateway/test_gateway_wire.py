"""The gateway port on the wire: a fake gateway "FA" (this test) against nats-server 2.15.1 and against our hub,
the scenario of shared/nats-reference/more/live/gw_raw_transcript.txt.

The server under test is cluster "B". FA dials B's gateway port (B's inbound: B sends interest there, FA sends
messages) and B dials FA back at the URL FA names (B's outbound: B sends messages there, FA sends interest). Checked:
- the INFO flags;
- interest-only mode from the start: queue interest, then the account's plain interest between the gateway_cmd 2
  and 3 INFOs;
- optimistic mode on B's outbound (FA's INFO there lacks gateway_iom), RS- honoured, until FA switches the account;
  then interest only;
- queue overflow to FA for the group with no local member;
- reply mapping both ways: B's recent requester's reply goes out as `_GR_.<B>.<server>.<reply>` and its answer
  comes back under it; FA's mapped reply reaches B's client stripped and the answer goes back mapped;
- the queue names on an inbound RMSG;
- RS+ sent the wrong way closes the link with no -ERR.
"""

from __future__ import annotations

import base64
import json
import re
import socket
import time

import pytest

from host.gateway import gw_hash
from host.gotime import parse_duration
from tests.cluster.test_route_wire import dial_route
from tests.compat.harness import ALL_SIDES, Raw, Server, free_port, pub, wait_until

FA_ID = "NFAKEGATEWAY00000000000000000000000000000000000000000001"
G = base64.b64encode(b"$G").decode()  # "JEc=": the account named by the gateway_cmd INFOs


@pytest.fixture(params=ALL_SIDES)
def node(request):
    gport = free_port()
    srv = Server(request.param, config=f"server_name: gB\ngateway {{ name: B, listen: 127.0.0.1:{gport} }}\n")
    request.addfinalizer(srv.stop)
    srv.start()
    srv.gateway_port = gport
    return srv


def fa_info(port: int, iom: bool = True) -> bytes:
    """FA's INFO; iom False: FA does not switch its accounts to interest-only at once (a server before 2.9), so B
    starts in optimistic mode towards it."""
    info = {"server_id": FA_ID, "server_name": "fa", "version": "2.15.1", "proto": 3, "host": "127.0.0.1",
            "port": port, "headers": True, "max_payload": 1048576, "gateway": "FA",
            "gateway_urls": [f"127.0.0.1:{port}"], "gateway_nrp": True}
    if iom:
        info["gateway_iom"] = True
    return b"INFO " + json.dumps(info).encode() + b"\r\n"


def cmd_info(cmd: int, name: str = "FA") -> bytes:
    # (nats-server closes the link if a later INFO names another gateway: "Failing connection to gateway")
    return b'INFO {"gateway":"%s","gateway_cmd":%d,"gateway_cmd_payload":"%s"}\r\n' % (name.encode(), cmd, G.encode())


def line(r: Raw) -> bytes:
    return r.expect(rb"[^\n]*\n").group(0)


def seen(r: Raw, pattern: bytes) -> bytes:
    """Skip lines (nats-server announces its $SYS interest too) up to one matching `pattern`; return it."""
    while True:
        got = line(r)
        if re.fullmatch(pattern, got):
            return got


def is_cmd(got: bytes, cmd: int, payload: str) -> bool:
    if not got.startswith(b"INFO "):
        return False
    info = json.loads(got[5:])
    return info.get("gateway_cmd") == cmd and info.get("gateway_cmd_payload") == payload


def pong(r: Raw) -> None:
    r.send(b"PING\r\n")
    seen(r, rb"PONG\r\n")


def test_gateway_wire(node):
    fa_listen = socket.create_server(("127.0.0.1", 0))
    fa_port = fa_listen.getsockname()[1]
    fa_listen.settimeout(10)
    c = node.client(headers=True)
    conns = [c]
    try:
        c.send(b"SUB plain.x 1\r\nSUB work wq 2\r\n")
        c.sync()

        # FA dials B: B's INFO, then FA's CONNECT, INFO and PING.
        gw_in = Raw(node.gateway_port)
        conns.append(gw_in)
        info = gw_in.info
        assert info["gateway"] == "B" and info["server_name"] == "gB"
        assert info["gateway_nrp"] is True and info["gateway_iom"] is True and info["headers"] is True
        assert info["gateway_url"] == f"127.0.0.1:{node.gateway_port}"
        gw_in.send(b'CONNECT {"echo":false,"verbose":false,"pedantic":false,"tls_required":false,"headers":true,'
                   b'"name":"' + FA_ID.encode() + b'","gateway":"FA"}\r\n')
        gw_in.send(fa_info(fa_port))
        gw_in.send(b"PING\r\n")

        # Interest-only from the start: queue interest (weight 1), then $G's plain interest between the markers.
        order = []
        while True:
            got = line(gw_in)
            if got == b"RS+ $G work wq 1\r\n":
                order.append("queue")
            elif is_cmd(got, 2, G):
                order.append("start")
            elif got == b"RS+ $G plain.x\r\n":
                order.append("plain")
            elif is_cmd(got, 3, G):
                order.append("complete")
                break
        assert order == ["queue", "start", "plain", "complete"]  # (the PONG comes somewhere among them)

        # Later interest changes: RS+ on the first subscriber, RS- on the last.
        c.send(b"SUB new.plain 3\r\nSUB work other 4\r\n")
        c.sync()
        seen(gw_in, rb"RS\+ \$G new\.plain\r\n")
        seen(gw_in, rb"RS\+ \$G work other 1\r\n")
        c.send(b"UNSUB 4\r\n")
        c.sync()
        seen(gw_in, rb"RS- \$G work other\r\n")

        # B dials FA back (implicit gateway): FA's INFO first, then B's CONNECT naming its gateway.
        sock, _ = fa_listen.accept()
        gw_out = Raw(0, sock=sock, read_info=False)
        conns.append(gw_out)
        gw_out.send(fa_info(fa_port, iom=False))
        connect = json.loads(seen(gw_out, rb"CONNECT \{.*\}\r\n")[8:])
        assert connect["gateway"] == "B" and connect["echo"] is False
        pong(gw_out)

        # Optimistic mode: what B publishes goes to FA, but for what FA said no to (RS-).
        c.send(b"PUB foo.x 2\r\nhi\r\n")
        c.sync()
        seen(gw_out, rb"RMSG \$G foo\.x 2\r\n")
        assert line(gw_out) == b"hi\r\n"
        gw_out.send(b"RS- $G foo.x\r\n")
        pong(gw_out)
        c.send(b"PUB foo.x 2\r\nh2\r\nPUB foo.y 2\r\nh3\r\n")
        c.sync()
        assert line(gw_out) == b"RMSG $G foo.y 2\r\n"
        assert line(gw_out) == b"h3\r\n"

        # FA switches $G to interest-only: only subjects it named go to it.
        gw_out.send(cmd_info(2) + b"RS+ $G bar.>\r\n" + cmd_info(3) + b"RS+ $G work remoteonly 1\r\n")
        pong(gw_out)
        c.send(b"PUB foo.z 2\r\nh4\r\nPUB bar.1 2\r\nh5\r\n")
        c.sync()
        assert line(gw_out) == b"RMSG $G bar.1 2\r\n"
        assert line(gw_out) == b"h5\r\n"

        # Queue overflow: wq has a local member; remoteonly has none here, so FA gets the message for it.
        c.send(b"PUB work 2\r\nq1\r\n")
        c.expect(rb"MSG work 2 2\r\nq1\r\n")
        assert line(gw_out) == b"RMSG $G work | remoteonly 2\r\n"
        assert line(gw_out) == b"q1\r\n"

        # A request to FA; its answer comes back to B's gateway reply subject and reaches the requester.
        c.send(b"SUB _INBOX.r1 9\r\nPUB bar.2 _INBOX.r1 2\r\nhi\r\n")
        c.sync()
        # Its reply is mapped, the requester's subscription being recent: _GR_.<hash of B>.<hash of the server id>.
        routed = b"_GR_." + gw_hash("B") + b"." + gw_hash(info["server_id"]) + b"._INBOX.r1"
        assert line(gw_out) == b"RMSG $G bar.2 " + routed + b" 2\r\n"
        assert line(gw_out) == b"hi\r\n"
        gw_in.send(b"RMSG $G " + routed + b" 3\r\nyes\r\n")
        c.expect(rb"MSG _INBOX\.r1 9 3\r\nyes\r\n")

        # FA's request with its mapped reply: the client sees the reply stripped, and its answer goes back to FA
        # under the mapped one. Messages to plain.x came from FA before (the hub delivers the next ones to it on
        # the fast path), and the request shares a run with one of them.
        fa_routed = b"_GR_." + gw_hash("FA") + b"." + gw_hash(FA_ID) + b".fa.reply.1"
        gw_in.send(b"RMSG $G plain.x 2\r\np0\r\n")
        c.expect(rb"MSG plain\.x 1 2\r\np0\r\n")
        pong(gw_in)
        gw_in.send(b"RMSG $G plain.x 2\r\np1\r\nRMSG $G plain.x " + fa_routed + b" 2\r\nrq\r\n")
        c.expect(rb"MSG plain\.x 1 2\r\np1\r\n")
        c.expect(rb"MSG plain\.x 1 fa\.reply\.1 2\r\nrq\r\n")
        c.send(b"PUB fa.reply.1 3\r\nans\r\n")
        assert line(gw_out) == b"RMSG $G " + fa_routed + b" 3\r\n"
        assert line(gw_out) == b"ans\r\n"

        # An inbound RMSG reaches plain subscribers and only the queue groups it names.
        gw_in.send(b"RMSG $G work | wq 2\r\ng1\r\nRMSG $G work 2\r\ng2\r\nRMSG $G plain.x 2\r\ng4\r\n")
        c.expect(rb"MSG work 2 2\r\ng1\r\n")
        c.expect(rb"MSG plain\.x 1 2\r\ng4\r\n")

        # RS+ on B's inbound connection (it carries messages from FA, interest goes the other way): closed, no -ERR.
        gw_in.send(b"RS+ $G bad.sub\r\nPING\r\n")
        rest = gw_in.expect_closed()
        assert b"-ERR" not in rest
    finally:
        for r in conns:
            r.close()
        fa_listen.close()


def fa_connect() -> bytes:
    return (b'CONNECT {"echo":false,"verbose":false,"pedantic":false,"tls_required":false,"headers":true,'
            b'"name":"' + FA_ID.encode() + b'","gateway":"FA"}\r\n')


def test_client_connect_on_gateway_port(node):
    r = Raw(node.gateway_port)
    try:
        r.send(b'CONNECT {"verbose":false,"pedantic":false,"lang":"python"}\r\nPING\r\n')
        r.expect_err("attempted to connect to gateway port")
        r.expect_closed()
    finally:
        r.close()


@pytest.mark.parametrize("kind", ALL_SIDES)
def test_unknown_cluster_rejected(kind, request):
    gport = free_port()
    srv = Server(kind, config=f"server_name: gB\ngateway {{ name: B, listen: 127.0.0.1:{gport}, "
                              f"reject_unknown_cluster: true }}\n")
    request.addfinalizer(srv.stop)
    srv.start()
    r = Raw(gport)
    try:
        r.send(fa_connect() + fa_info(1) + b"PING\r\n")
        r.expect_err('Connection to gateway "B" rejected')
        r.expect_closed()
    finally:
        r.close()


@pytest.mark.parametrize("kind", ALL_SIDES)
def test_dialled_gateway_with_another_name_is_refused(kind, request):
    """B dials "FA" and finds a gateway that calls itself "C": -ERR naming all three, and the link closes."""
    fa_listen = socket.create_server(("127.0.0.1", 0))
    fa_listen.settimeout(10)
    fa_port = fa_listen.getsockname()[1]
    srv = Server(kind, config=f"server_name: gB\ngateway {{ name: B, listen: 127.0.0.1:{free_port()}, "
                              f'gateways: [{{name: FA, url: "nats://127.0.0.1:{fa_port}"}}] }}\n')
    request.addfinalizer(srv.stop)
    srv.start()
    try:
        sock, _ = fa_listen.accept()
        r = Raw(0, sock=sock, read_info=False)
        try:
            r.send(fa_info(fa_port).replace(b'"gateway": "FA"', b'"gateway": "C"'))
            r.expect_err('Connection from "B" rejected, wanted to connect to "FA", this is "C"')
            r.expect_closed()
        finally:
            r.close()
    finally:
        fa_listen.close()


def _accept_gateway(listen: socket.socket, name: str, port: int, auto_pong: bool) -> Raw:
    """A fake remote cluster `name` accepting the server's outbound gateway: INFO sent, CONNECT read."""
    sock, _ = listen.accept()
    r = Raw(0, sock=sock, read_info=False, auto_pong=auto_pong)
    info = fa_info(port).replace(b'"FA"', b'"%s"' % name.encode())
    r.send(info.replace(FA_ID.encode(), FA_ID[:-len(name)].encode() + name.encode()))  # an id of its own
    seen(r, rb"CONNECT \{.*\}\r\n")
    return r


@pytest.mark.parametrize("kind", ALL_SIDES)
def test_queue_overflow_goes_to_the_nearest_cluster(kind, request):
    """Two remote clusters, FA and FC, both with a member of group g (and none in B): the group goes to the one with
    the lower RTT. FC answers B's first PING only once B measured FA's RTT, and ten times later, so FC is the farther
    one."""
    listens = {name: socket.create_server(("127.0.0.1", 0)) for name in ("FA", "FC")}
    ports = {name: sock.getsockname()[1] for name, sock in listens.items()}
    remotes = ", ".join(f'{{name: {name}, url: "nats://127.0.0.1:{port}"}}' for name, port in ports.items())
    srv = Server(kind, monitor=True, config=f"server_name: gB\ngateway {{ name: B, listen: 127.0.0.1:{free_port()}, "
                                            f"gateways: [{remotes}] }}\n")
    request.addfinalizer(srv.stop)
    srv.start()
    conns = []
    try:
        for sock in listens.values():
            sock.settimeout(10)
        fa = _accept_gateway(listens["FA"], "FA", ports["FA"], auto_pong=True)
        conns.append(fa)
        fc = _accept_gateway(listens["FC"], "FC", ports["FC"], auto_pong=False)
        conns.append(fc)
        for r, name in ((fa, "FA"), (fc, "FC")):
            r.send(cmd_info(2, name) + b"RS+ $G mark\r\n" + cmd_info(3, name) + b"RS+ $G work g 1\r\n")

        def rtt(name: str) -> str:
            return srv.http_get("/gatewayz")["outbound_gateways"][name]["connection"]["rtt"]

        def fa_measured() -> bool:
            fa._fill(time.monotonic() + 0.05)  # reads (and so answers) B's PINGs to FA
            return rtt("FA") != "0s"

        wait_until(fa_measured, timeout=10, msg="B's RTT to FA")
        seen(fc, rb"PING\r\n")  # B's PING to FC, unanswered until now
        # FC's answer waits until its RTT can only be well over FA's (the RTT being what this test sets up).
        fa_rtt = parse_duration(rtt("FA")) / 1e9
        held = time.monotonic()
        wait_until(lambda: time.monotonic() - held > 10 * fa_rtt + 0.01, timeout=10, msg="FC's PONG held")
        fc.send(b"PONG\r\n")
        wait_until(lambda: rtt("FC") != "0s", timeout=10, msg="B's RTT to FC")

        c = srv.client()
        conns.append(c)
        c.send(b"".join(pub("work", b"w%d" % i) for i in range(10)) + pub("mark", b"end"))
        c.sync()
        def until_mark(r: Raw) -> list[bytes]:
            out = []
            while (got := line(r)) != b"RMSG $G mark 3\r\n":
                if not got.startswith((b"PING", b"INFO ")):  # (FC answers no PING by itself; B's INFO after CONNECT)
                    out.append(got)
            return out

        assert until_mark(fa) == [x for i in range(10) for x in (b"RMSG $G work | g 2\r\n", b"w%d\r\n" % i)]
        assert until_mark(fc) == []
    finally:
        for r in conns:
            r.close()
        for sock in listens.values():
            sock.close()


def _gossip_until_pong(r: Raw) -> list[dict]:
    """The gateway_cmd 1 INFOs the server sent before its PONG."""
    found = []
    while True:
        got = line(r)
        if got == b"PONG\r\n":
            return found
        if got.startswith(b"INFO ") and json.loads(got[5:]).get("gateway_cmd") == 1:
            found.append(json.loads(got[5:]))


@pytest.mark.parametrize("kind", ALL_SIDES)
def test_route_peers_hear_of_an_implicit_gateway_once_it_is_connected(kind, request):
    """FA dials B, and B dials FA back (implicit). A route peer that joins while B's dial waits for FA's INFO hears
    nothing yet; once B's outbound to FA is registered it hears of FA (INFO gateway_cmd 1, nats-server
    forwardNewGatewayToLocalCluster), and a peer that joins later hears of it on joining
    (sendGatewayConfigsToRoute). So no peer misses FA, whenever it joins: the hub once told its routes at dial time
    and new routes only of connected gateways, and a route that came up in between never heard of the cluster
    (test_implicit_gateway[hub-2] failed so in CI)."""
    fa_listen = socket.create_server(("127.0.0.1", 0))
    fa_listen.settimeout(10)
    request.addfinalizer(fa_listen.close)
    fa_port = fa_listen.getsockname()[1]
    gport, cport = free_port(), free_port()
    srv = Server(kind, config=f"server_name: gB\ncluster {{ name: B, listen: 127.0.0.1:{cport} }}\n"
                              f"gateway {{ name: B, listen: 127.0.0.1:{gport} }}\n")
    request.addfinalizer(srv.stop)
    srv.start()
    conns: list[Raw] = []
    try:
        gw_in = Raw(gport)
        conns.append(gw_in)
        gw_in.send(fa_connect() + fa_info(fa_port) + b"PING\r\n")
        seen(gw_in, rb"PONG\r\n")
        sock, _ = fa_listen.accept()  # B's implicit dial, left waiting for FA's INFO
        gw_out = Raw(0, sock=sock, read_info=False)
        conns.append(gw_out)

        early = dial_route(cport, "NRAWPEER000000000000000000000000000000000000000000000001", "B", "early")
        conns.append(early)
        assert _gossip_until_pong(early) == []

        gw_out.send(fa_info(fa_port))
        seen(gw_out, rb"CONNECT \{.*\}\r\n")
        told = json.loads(seen(early, rb'INFO \{.*"gateway_cmd": ?1.*\} ?\r\n')[5:])
        assert (told["gateway"], told["gateway_urls"]) == ("FA", [f"127.0.0.1:{fa_port}"])

        late = dial_route(cport, "NRAWPEER000000000000000000000000000000000000000000000002", "B", "late")
        conns.append(late)
        assert [(g["gateway"], g["gateway_urls"]) for g in _gossip_until_pong(late)] == \
            [("FA", [f"127.0.0.1:{fa_port}"])]
    finally:
        for c in conns:
            c.close()
