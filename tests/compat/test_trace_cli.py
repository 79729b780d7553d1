"""`natsedge trace` against running servers of each side (nats-server, our hub): one server with a plain and a queue
subscriber, trace-only, --json, a JetStream stream, a 2-node cluster (route hop), a leaf under a hub (leaf hop); and
the one-line errors (nothing listening, bad arguments). The command runs as a user runs it: a process, its output and
exit status read."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.cluster.harness import Cluster, warm_up

from .harness import REPO, Raw, Server, free_port, js_api, nats_connect, pub, run, wait_until

CLI_TIMEOUT = 60  # a bound on the process, far above its own --timeout


def natsedge_trace(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-m", "host.tools.cli", "trace", *args], capture_output=True, text=True,
                          env=env, timeout=CLI_TIMEOUT, stdin=subprocess.DEVNULL)


def traced(*args: str) -> list[str]:
    """Run a trace that must succeed; its output lines, stripped."""
    done = natsedge_trace(*args)
    assert done.returncode == 0, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    return [ln.strip() for ln in done.stdout.splitlines()]


def one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 1, (done.returncode, done.stdout, done.stderr)
    assert done.stdout == "" and "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("natsedge trace: "), lines
    return lines[0]


def index(lines: list[str], start: str) -> int:
    found = [i for i, ln in enumerate(lines) if ln.startswith(start)]
    assert len(found) == 1, (start, lines)
    return found[0]


def other_kind(side: str) -> str:
    return {"nats": "hub", "hub": "nats"}[side]


@pytest.fixture
def solo(side, tmp_path) -> Server:
    srv = Server(side, config="server_name: solo\n", workdir=tmp_path, jetstream=True).start()
    yield srv
    srv.stop()


def subscribers(srv: Server, subject: str) -> Raw:
    """One connection with a plain and a queue subscription on `subject` (sids 1 and 2)."""
    c = srv.client(name="sub-app")
    c.send(f"SUB {subject} 1\r\nSUB {subject} qg 2\r\n".encode())
    c.sync()
    return c


def test_single_server_subscribers_and_queue(solo):
    with subscribers(solo, "app.y") as c:
        lines = traced("app.y", "hello", "--server", solo.url)
        assert lines[0] == 'Trace of a message to subject "app.y"'
        at = index(lines, 'Server "solo"')
        assert lines[at + 1].startswith('<-- from client "natsedge trace" cid:') and "account:$G" in lines[at + 1]
        assert lines[at + 2].startswith('--C client "sub-app" cid:') and 'sub:"app.y" (+' in lines[at + 2]
        assert 'sub:"app.y" queue:"qg" (+' in lines[at + 3]
        assert "Servers: 1   Egresses: client 2" in lines
        msgs = c.msgs_until_pong()
        assert sorted(m.sid for m in msgs) == ["1", "2"] and all(m.payload == b"hello" for m in msgs)
        assert all(b"Nats-Trace-Dest: _INBOX." in m.hdr for m in msgs)  # delivered with its trace headers


def test_trace_only_delivers_nothing(solo):
    with subscribers(solo, "app.only") as c:
        lines = traced("app.only", "x", "--server", solo.url, "--only")
        assert lines[0] == 'Trace of a message to subject "app.only" (trace only: not delivered to clients)'
        assert "Servers: 1   Egresses: client 2" in lines  # where it would have gone
        with solo.client() as p:  # a message sent after the trace arrives first: the traced one never comes
            p.send(pub("app.only", b"after"))
            p.sync()
        wait_until(lambda: [m.payload for m in c.msgs_until_pong()] == [b"after"] * 2 or None, msg="'after' twice")


def test_json_prints_the_raw_events(solo):
    with subscribers(solo, "app.json"):
        done = natsedge_trace("app.json", "--server", solo.url, "--json")
    assert done.returncode == 0, done.stderr
    (event,) = json.loads(done.stdout)
    assert event["server"]["name"] == "solo"
    assert event["request"]["header"]["Nats-Trace-Dest"][0].startswith("_INBOX.")
    kinds = [(e["type"], e.get("kind")) for e in event["events"]]
    assert kinds == [("in", 0), ("eg", 0), ("eg", 0)]
    assert sorted(e.get("queue", "") for e in event["events"][1:]) == ["", "qg"]


def test_no_subscribers_still_a_trace(solo):
    lines = traced("nobody.listens", "--server", solo.url)
    assert "Servers: 1   Egresses: none" in lines and not any(ln.startswith("--C") for ln in lines)


def test_jetstream_stream_stores_it(solo):
    async def body():
        nc = await nats_connect(solo)
        try:
            resp = await js_api(nc, "$JS.API.STREAM.CREATE.ORDERS", {"name": "ORDERS", "subjects": ["orders.>"]})
            assert "error" not in resp, resp
            lines = await _in_thread(traced, "orders.new", "order-1", "--server", solo.url)
            only = await _in_thread(traced, "orders.new", "order-2", "--server", solo.url, "--only")
            info = await js_api(nc, "$JS.API.STREAM.INFO.ORDERS")
            return lines, only, info["state"]["messages"]
        finally:
            await nc.close()

    lines, only, stored = run(body(), timeout=60)
    at = index(lines, '--J JetStream stream "ORDERS" subject:"orders.new" stored')
    assert lines[at - 1].startswith('<-- from client "natsedge trace"')
    assert lines[-1].endswith("Stored in: ORDERS")
    index(only, '--J JetStream stream "ORDERS" subject:"orders.new" would be stored (trace only)')
    assert "Stored in" not in only[-1]
    assert stored == 1  # the trace-only message was not stored


async def _in_thread(fn, *args):
    import asyncio

    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


@pytest.mark.parametrize("mix", ["same", "mixed"])
def test_route_hop(side, mix, tmp_path):
    """`mixed`: n2 is the other kind of server, so one trace crosses nats-server and our hub over the route."""
    cluster = Cluster(side, 2, tmp_path, kinds=(side, side if mix == "same" else other_kind(side)))
    try:
        cluster.start()
        n1, n2 = cluster
        with Raw(n1.port) as p, subscribers(n2, "app.route") as c:
            p.handshake()
            warm_up(p, "app.route", [c])
            lines = traced("app.route", "over", "--server", n1.url)
            c.msgs_until_pong()
    finally:
        cluster.stop()
    origin = index(lines, 'Server "n1" cluster:"c1"')
    egress = index(lines, '--> route "n2" rid:')
    assert origin < egress and " hop:1 (+" in lines[egress], lines[egress]
    assert lines[egress + 1].startswith('Server "n2" cluster:"c1"') and "after the hop)" in lines[egress + 1]
    assert lines[egress + 2].startswith('<-- from route "n1" rid:') and 'subject:"app.route"' in lines[egress + 2]
    assert lines[egress + 3].startswith('--C client "sub-app"') and 'queue:"qg"' in lines[egress + 3 + 1]
    assert "Servers: 2   Egresses: client 2, route 1" in lines
    assert not any("never answered" in ln for ln in lines)


@pytest.mark.parametrize("mix", ["same", "mixed"])
def test_leaf_hop(side, mix, tmp_path):
    """`mixed`: the leaf is the other kind of server (a nats-server leaf under our hub, or our hub as a leaf of
    nats-server), so one trace crosses both."""
    leaf_kind = side if mix == "same" else other_kind(side)
    leaf_port = free_port()
    (tmp_path / "hub").mkdir()
    (tmp_path / "leaf").mkdir()
    hub = Server(side, config=f"server_name: hub1\nleafnodes {{ listen: 127.0.0.1:{leaf_port} }}\n", monitor=True,
                 workdir=tmp_path / "hub")
    leaf = Server(leaf_kind, config=f'server_name: leaf1\nleafnodes {{ remotes [ {{ url: "nats-leaf://127.0.0.1:'
                  f'{leaf_port}" }} ] }}\n', workdir=tmp_path / "leaf")
    try:
        hub.start()
        leaf.start()
        wait_until(lambda: hub.http_get("/leafz")["leafnodes"] == 1, timeout=10, msg="leaf connected")
        with Raw(leaf.port) as p, subscribers(hub, "app.leaf") as c:
            p.handshake()
            warm_up(p, "app.leaf", [c])
            lines = traced("app.leaf", "up", "--server", leaf.url)
            only = traced("app.leaf", "up", "--server", leaf.url, "--only")
            c.msgs_until_pong()
    finally:
        leaf.stop()
        hub.stop()
    for out in (lines, only):
        index(out, 'Server "leaf1"')
        egress = index(out, '~~> leafnode "hub1" lid:')
        assert out[egress + 1].startswith('Server "hub1"')
        assert out[egress + 2].startswith('<-- from leafnode "leaf1" lid:')
        assert out[egress + 3].startswith('--C client "sub-app"')
        assert "Servers: 2   Egresses: client 2, leafnode 1" in out
    assert only[0].endswith("(trace only: not delivered to clients)")


def test_nothing_listening_is_a_one_line_error():
    port = free_port()
    line = one_line_error(natsedge_trace("app.x", "--server", f"nats://127.0.0.1:{port}"))
    assert line.startswith(f"natsedge trace: cannot connect to nats://127.0.0.1:{port}: "), line


def test_a_server_that_does_not_trace_is_a_one_line_error(tmp_path):
    # a NATS server that never sends an event: a stand-in speaking just enough of the protocol (INFO, PONG)
    import socket
    import threading

    lsock = socket.create_server(("127.0.0.1", 0))
    port = lsock.getsockname()[1]

    def serve():
        conn, _ = lsock.accept()
        with conn:
            conn.sendall(b'INFO {"server_id":"X","version":"2.10.0","headers":true,"max_payload":1048576}\r\n')
            buf = b""
            while True:
                data = conn.recv(65536)
                if not data:
                    return
                buf += data
                while b"PING\r\n" in buf:
                    buf = buf.replace(b"PING\r\n", b"", 1)
                    conn.sendall(b"PONG\r\n")

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        line = one_line_error(natsedge_trace("app.x", "--server", f"127.0.0.1:{port}", "--timeout", "0.5"))
    finally:
        lsock.close()
    assert line.startswith("natsedge trace: no trace event came back within 0.5 s"), line


@pytest.mark.parametrize("args, says", [
    ((), "the following arguments are required: SUBJECT"),
    (("a.*",), "invalid subject 'a.*'"),
    (("a b",), "invalid subject 'a b'"),
    (("a..b",), "invalid subject 'a..b'"),
    (("a", "--timeout", "0"), "argument --timeout: must be more than 0 seconds"),
    (("a", "--timeout", "soon"), "argument --timeout: not a number of seconds"),
    (("a", "--server", "tls://127.0.0.1:4222"), "only nats:// URLs are supported"),
    (("a", "--server", "nats://u:p@127.0.0.1:4222"), "credentials in the URL are not supported"),
    (("a", "--server", "nats://127.0.0.1:99999"), "bad port"),
    (("a", "--frobnicate"), "unrecognized arguments: --frobnicate"),
])
def test_bad_arguments_are_one_line_errors(args, says):
    line = one_line_error(natsedge_trace(*args))
    assert says in line, line



def accounts_conf(mappings: str = "") -> str:
    """Account A exports the service svc.> with allow_trace; B (no_auth_user) imports it, with `mappings`."""
    return f"""server_name: accs
accounts {{
  A {{ users: [{{user: a, password: a}}], exports: [{{service: "svc.>", allow_trace: true}}] }}
  B {{
    users: [{{user: b, password: b}}]
    imports: [{{service: {{account: A, subject: "svc.>"}}}}]
    {mappings}
  }}
}}
no_auth_user: b
"""


def traced_into_account_a(side: str, workdir, config: str, subject: str) -> list[str]:
    """Trace `subject` as account B with a subscriber on svc.x in account A; the lines, once A's subscriber got it."""
    srv = Server(side, config=config, workdir=workdir).start()
    try:
        with srv.client(user="a", name="svc-a", **{"pass": "a"}) as c:
            c.send(b"SUB svc.x 1\r\n")
            c.sync()
            lines = traced(subject, "req", "--server", srv.url)
            assert [m.payload for m in c.msgs_until_pong()] == [b"req"]
    finally:
        srv.stop()
    return lines


def test_service_import(side, tmp_path):
    lines = traced_into_account_a(side, tmp_path, accounts_conf(), "svc.x")
    at = index(lines, '<-- from client "natsedge trace"')
    assert "account:B" in lines[at] and 'subject:"svc.x"' in lines[at]
    assert lines[at + 1].startswith('--- service import to account A "svc.x" -> "svc.x" (+')
    assert lines[at + 2].startswith('--C client "svc-a" cid:') and 'account:A sub:"svc.x"' in lines[at + 2]


def test_subject_mapping_then_service_import(side, tmp_path):
    lines = traced_into_account_a(side, tmp_path, accounts_conf('mappings: {"old.x": "svc.x"}'), "old.x")
    at = index(lines, '<-- from client "natsedge trace"')
    assert "account:B" in lines[at] and 'subject:"old.x"' in lines[at]
    assert lines[at + 1].startswith('--- subject mapped to "svc.x" (+')
    assert lines[at + 2].startswith('--- service import to account A "svc.x" -> "svc.x" (+')
    assert lines[at + 3].startswith('--C client "svc-a" cid:') and 'account:A sub:"svc.x"' in lines[at + 3]
