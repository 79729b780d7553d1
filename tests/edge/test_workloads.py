"""Workloads on MicroPython edges against nats-server and our hub (docs/workloads.md): `natsedge workload deploy`
stores the code and the desired state, the edges the target names fetch it, run it on subjects, update, roll a bad
version back, run the last good version after a reboot with the hub down; code over a flash budget is refused."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import subprocess
import sys
import threading
from pathlib import Path

import nats
import pytest

from host.tools import workload_cmd
from tests.compat.harness import free_port, run, stop_process
from tests.edge.edgeharness import REPO, Edge, JsHub, Proxy, Runtime, set_runtime

LIMITS = {"max_heap": 16384, "max_ms": 1000, "max_errors": 2}

ECHO = '''
def setup(ctx):
    ctx.subscribe("wl.%s.echo" % ctx.leaf.name, lambda msg: "{tag}:" + msg.data.decode())
'''
BROKEN_SETUP = '''
def setup(ctx):
    raise ValueError("v3 is broken")
'''
SERVICE = '''
def setup(ctx):
    svc = ctx.service("calc", "1.0.0")
    svc.endpoint("add", lambda msg: str(sum(int(x) for x in msg.data.split())))
'''
SLOW = '''
import time

def setup(ctx):
    ctx.subscribe("wl.%s.echo" % ctx.leaf.name, slow)

def slow(msg):
    time.sleep(0.3)
    return "slow"
'''
HEAVY = '''
BUF = bytearray(20000)

def setup(ctx):
    pass
'''
RAISES = '''
def setup(ctx):
    ctx.subscribe("wl.%s.echo" % ctx.leaf.name, handler)

def handler(msg):
    raise RuntimeError("kaput")
'''


class Valve(Proxy):
    """A proxy to the hub's leaf port whose hub-to-edge direction can be held to a byte budget: what is over it
    waits in the proxy until open() (the edge sees a link that has gone quiet, not one that broke)."""

    def __init__(self, target_port: int):
        self.budget: int | None = None
        self.cond = threading.Condition()
        super().__init__(target_port)

    def _pump(self, src: socket.socket, dst: socket.socket):
        down = src.getpeername()[1] == self.target_port
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                while down and data:
                    with self.cond:
                        self.cond.wait_for(lambda: self.budget is None or self.budget > 0 or self.closed)
                        n = len(data) if self.budget is None else min(self.budget, len(data))
                        if self.budget is not None:
                            self.budget -= n
                    dst.sendall(data[:n])
                    data = data[n:]
                if data:
                    dst.sendall(data)
        except OSError:
            pass
        for sock in (src, dst):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def hold(self, nbytes: int):
        with self.cond:
            self.budget = nbytes

    def open(self):
        with self.cond:
            self.budget = None
            self.cond.notify_all()

    def close(self):
        self.open()
        super().close()


@pytest.fixture
def valves():
    made: list[Valve] = []

    def make(port: int) -> Valve:
        made.append(Valve(port))
        return made[-1]

    yield make
    for v in made:
        v.close()


@pytest.fixture
def jshub(side, tmp_path):
    h = JsHub(side, tmp_path / f"hub-{side}")
    yield h.start()
    h.stop()


@pytest.fixture
def started():
    edges: list[Edge] = []
    yield edges
    for e in edges:
        e.stop()


def wl_config(name: str, hub_port: int | None, **workloads) -> dict:
    return {"name": name, "listen": f"127.0.0.1:{free_port()}", "data": "data", "tags": ["demo"],
            "hub": {"url": f"nats-leaf://127.0.0.1:{hub_port}"} if hub_port else None,
            "limits": {"reconnect_min": 0.05, "reconnect_max": 0.3},
            "workloads": {"status": 0.5, **workloads}}


def start_edge(cfg: dict, workdir: Path, started: list) -> Edge:
    e = Edge(cfg, workdir)
    started.append(e)
    return e.start()


async def deploy(nc, tmp_path: Path, source: str, version: str, target: str = "kitchen-*", **kw) -> dict:
    path = tmp_path / f"app_{version}.py"
    path.write_text(source)
    js = nc.jetstream(timeout=5)
    return await workload_cmd.deploy(nc, js, path, "echo", workload_cmd.parse_target(target), version,
                                     kw.pop("limits", LIMITS), kw.pop("max_flash", 32768), None, "6.3")


async def answer(url: str, subject: str, timeout: float = 10.0, data: bytes = b"x") -> bytes:
    """The first answer to a request on `subject` (retried while the edge's interest travels or it reloads)."""
    nc = await nats.connect(url)
    try:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            try:
                return (await nc.request(subject, data, timeout=0.5)).data
            except (nats.errors.NoRespondersError, nats.errors.TimeoutError):
                if asyncio.get_running_loop().time() > deadline:
                    raise AssertionError(f"no answer on {subject} in {timeout}s") from None
                await asyncio.sleep(0.05)
    finally:
        await nc.close()


async def report(nc, edge: str, cond, timeout: float = 10.0) -> dict:
    """The first report of `edge` on $EDGE.<edge>.workloads for which cond(workloads by name) holds."""
    got: asyncio.Queue = asyncio.Queue()

    async def on_msg(m):
        got.put_nowait(json.loads(m.data))

    sub = await nc.subscribe(f"$EDGE.{edge}.workloads", cb=on_msg)
    last = None
    try:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                raise AssertionError(f"{edge}: no report as expected in {timeout}s; last: {last}")
            try:
                last = await asyncio.wait_for(got.get(), left)
            except TimeoutError:
                continue
            by_name = {w["name"]: w for w in last["workloads"]}
            if cond(by_name):
                return by_name
    finally:
        await sub.unsubscribe()


def state_is(version: str, state: str):
    return lambda ws: "echo" in ws and (ws["echo"]["version"], ws["echo"]["state"]) == (version, state)


@pytest.mark.device
def test_deploy_update_and_bad_versions_rolled_back(side, jshub, started, tmp_path):
    async def body():
        nc = await nats.connect(jshub.url)
        try:
            st = await deploy(nc, tmp_path, ECHO.format(tag="v1"), "1")
            assert (st["version"], st["target"], st["previous"]) == ("1", ["kitchen-*"], None)
            k1 = start_edge(wl_config("kitchen-1", jshub.leaf_port), tmp_path / "k1", started)
            hall = start_edge(wl_config("hall-1", jshub.leaf_port), tmp_path / "hall", started)
            ws = await report(nc, "kitchen-1", state_is("1", "running"))
            assert await answer(jshub.url, "wl.kitchen-1.echo") == b"v1:x"
            ready = int(k1.wait_line(r"^edge: ready .* heap=(\d+)").group(1))
            print(f"{k1.runtime.name}: edge ready {ready} B, workload echo 1 takes {ws['echo']['heap']} B of heap")
            assert await report(nc, "hall-1", lambda ws: True) == {}  # not a target: reports no workload
            assert hall.count("workload echo") == 0

            await deploy(nc, tmp_path, ECHO.format(tag="v2"), "2")
            await report(nc, "kitchen-1", state_is("2", "running"))
            assert await answer(jshub.url, "wl.kitchen-1.echo") == b"v2:x"

            await deploy(nc, tmp_path, BROKEN_SETUP, "3")
            ws = await report(nc, "kitchen-1", state_is("2", "rolled back"))
            assert "v3 is broken" in ws["echo"]["error"] and ws["echo"]["wanted"] == "3"
            assert await answer(jshub.url, "wl.kitchen-1.echo") == b"v2:x"

            st4 = await deploy(nc, tmp_path, RAISES, "4")
            await report(nc, "kitchen-1", state_is("4", "running"))
            for _ in range(LIMITS["max_errors"]):  # the handler raises: no answer comes
                with pytest.raises(nats.errors.TimeoutError):
                    await nc.request("wl.kitchen-1.echo", b"x", timeout=0.5)
            ws = await report(nc, "kitchen-1", state_is("2", "rolled back"))
            assert "2 handler calls in a row raised" in ws["echo"]["error"]
            assert await answer(jshub.url, "wl.kitchen-1.echo") == b"v2:x"

            # the hub's own rollback: back to the version before the current desired one (3)
            assert not list((tmp_path / "k1" / "data" / "wl").glob(f"wl_echo_{st4['mpy']['sha256'][:12]}*"))
            back = await workload_cmd.rollback(nc.jetstream(), "echo")  # the hub wants 3 (broken): kept on 2
            assert back["version"] == "3"
            await report(nc, "kitchen-1", lambda ws: ws["echo"]["wanted"] == "3" and ws["echo"]["version"] == "2")
            await workload_cmd.rollback(nc.jetstream(), "echo")  # the hub wants 4 (broken)
            await report(nc, "kitchen-1", lambda ws: ws["echo"]["wanted"] == "4" and ws["echo"]["version"] == "2")
            await deploy(nc, tmp_path, ECHO.format(tag="v2"), "2b")  # v2's code again: wanted as it runs
            await report(nc, "kitchen-1", state_is("2b", "running"))
            assert [s["version"] for s in await workload_cmd.list_states(nc.jetstream())] == ["2b"]
            await workload_cmd.remove(nc.jetstream(), "echo")
            await report(nc, "kitchen-1", lambda ws: ws == {})
            with pytest.raises(nats.errors.NoRespondersError):
                await nc.request("wl.kitchen-1.echo", b"x", timeout=1)
            assert k1.alive()
        finally:
            await nc.close()

    run(body(), timeout=120)


@pytest.mark.device
def test_reboot_with_the_hub_down_runs_the_last_good_version(side, jshub, started, tmp_path):
    async def body():
        nc = await nats.connect(jshub.url)
        try:
            await deploy(nc, tmp_path, ECHO.format(tag="v1"), "1")
            await deploy(nc, tmp_path, ECHO.format(tag="v2"), "2")
            cfg = wl_config("kitchen-2", jshub.leaf_port)
            e = start_edge(cfg, tmp_path / "k2", started)
            await report(nc, "kitchen-2", state_is("2", "running"))
        finally:
            await nc.close()
        e.stop()
        jshub.stop()
        e = start_edge(cfg, tmp_path / "k2", started)
        e.wait_line(r"workload echo 2 running", timeout=10)
        assert await answer(e.url, "wl.kitchen-2.echo") == b"v2:x", e.output()  # a LAN client, no hub

    run(body(), timeout=60)


def test_code_over_the_flash_budget_is_refused(side, jshub, started, tmp_path):
    async def body():
        nc = await nats.connect(jshub.url)
        try:
            big = ECHO.format(tag="v1") + "BLOB = %r\n" % ("x" * 3000)
            with pytest.raises(workload_cmd.WorkloadError, match=r"the source is 3,\d{3} B, over the flash budget "
                                                                 r"of 2,048 B \(--max-flash\)"):
                await deploy(nc, tmp_path, big, "1", max_flash=2048)
            await deploy(nc, tmp_path, big, "1")  # the hub's budget allows it, this edge's does not
            # states not written by `natsedge workload`: logged and left alone, never a crash
            kv = await nc.jetstream().key_value("workloads")
            await kv.put("junk", b"not json")
            await kv.put("weird", json.dumps({"target": "kitchen-*", "version": "1"}).encode())
            e = start_edge(wl_config("kitchen-3", jshub.leaf_port, max_flash=2048), tmp_path / "k3", started)
            ws = await report(nc, "kitchen-3", lambda ws: ws.get("echo", {}).get("state") == "failed")
            assert "over workloads.max_flash 2048" in ws["echo"]["error"]
            assert e.count("workload echo 1 running") == 0
            assert sorted(ws) == ["echo"]
            assert [st["name"] for st in await workload_cmd.list_states(nc.jetstream())] == ["echo"]
            e.wait_line(r"^edge: workloads: the state of junk is not a workload state, ignored$")
            e.wait_line(r"^edge: workloads: the state of weird is not a workload state, ignored$")
            assert e.alive()
        finally:
            await nc.close()

    run(body(), timeout=60)


def test_limits_heap_and_handler_time_and_a_service_endpoint(side, jshub, started, tmp_path):
    async def body():
        nc = await nats.connect(jshub.url)
        try:
            lim = dict(LIMITS, max_ms=100)
            await deploy(nc, tmp_path, SERVICE, "1", limits=lim)
            e = start_edge(wl_config("kitchen-4", jshub.leaf_port), tmp_path / "k4", started)
            await report(nc, "kitchen-4", state_is("1", "running"))
            assert await answer(jshub.url, "add", data=b"1 2") == b"3"
            stats = json.loads((await nc.request("$SRV.STATS.calc", b"", timeout=2)).data)
            assert [(ep["name"], ep["num_requests"]) for ep in stats["endpoints"]] == [("add", 1)]
            ws = await report(nc, "kitchen-4", lambda ws: ws["echo"]["requests"] == 1)
            assert ws["echo"]["errors"] == 0 and ws["echo"]["heap"] > 0

            await deploy(nc, tmp_path, HEAVY, "2", limits=lim)  # 20,000 B of heap, over max_heap 16,384
            ws = await report(nc, "kitchen-4", state_is("1", "rolled back"))
            assert "over limits.max_heap 16384" in ws["echo"]["error"]
            assert await answer(jshub.url, "add", data=b"2 2") == b"4"

            await deploy(nc, tmp_path, SLOW, "3", limits=lim)  # a call takes 300 ms, over max_ms 100
            await report(nc, "kitchen-4", state_is("3", "running"))
            assert await answer(jshub.url, "wl.kitchen-4.echo") == b"slow"  # answered, then stopped
            ws = await report(nc, "kitchen-4", state_is("1", "rolled back"))
            assert re.search(r"a handler call took \d+ ms, over limits.max_ms 100", ws["echo"]["error"])
            assert await answer(jshub.url, "add", data=b"3 2") == b"5"
            assert e.count(r"workload echo 3 stopped: a handler call took") == 1
        finally:
            await nc.close()

    run(body(), timeout=60)


def test_power_cut_in_the_middle_of_a_code_download(side, jshub, started, valves, tmp_path):
    # The download of v2 is held after a few chunks (the valve lets 6,000 B through), the edge is killed (SIGKILL)
    # with a partial temp file on flash: it boots v1 from flash, then fetches v2 again from the start.
    big = ECHO.format(tag="v2") + "BLOB = %r\n" % ("0123456789" * 2000)  # ~20 KB: about 20 chunks
    async def body():
        nc = await nats.connect(jshub.url)
        try:
            await deploy(nc, tmp_path, ECHO.format(tag="v1"), "1")
            valve = valves(jshub.leaf_port)
            cfg = wl_config("kitchen-5", valve.port)
            e = start_edge(cfg, tmp_path / "k5", started)
            await report(nc, "kitchen-5", state_is("1", "running"))
            valve.hold(6000)
            st = await deploy(nc, tmp_path, big, "2", limits=dict(LIMITS, max_heap=65536))  # the blob is on the heap
            wl_dir = tmp_path / "k5" / "data" / "wl"
            deadline = asyncio.get_running_loop().time() + 10
            while not [p for p in wl_dir.glob("*.tmp") if p.stat().st_size > 0]:
                assert asyncio.get_running_loop().time() < deadline, f"no partial download:\n{e.output()}"
                await asyncio.sleep(0.01)
            assert await answer(e.url, "wl.kitchen-5.echo") == b"v1:x"  # the old version runs meanwhile
            e.proc.kill()
            e.stop()
            partial = list(wl_dir.glob("*.tmp"))
            assert len(partial) == 1 and 0 < partial[0].stat().st_size < st["mpy"]["size"]
            valve.open()
            e = start_edge(cfg, tmp_path / "k5", started)
            e.wait_line(r"workload echo 1 running", timeout=10)
            await report(nc, "kitchen-5", state_is("2", "running"), timeout=20)
            assert await answer(e.url, "wl.kitchen-5.echo") == b"v2:x"
            assert not list(wl_dir.glob("*.tmp"))
            assert e.count(r"workload echo 2 running") == 1
        finally:
            await nc.close()

    run(body(), timeout=90)


@pytest.fixture
def cpython_edge():
    set_runtime(Runtime("cpython", sys.executable, cpython=True))
    yield
    set_runtime(None)


def test_a_cpython_edge_runs_the_source(side, jshub, started, tmp_path, cpython_edge):
    async def body():
        nc = await nats.connect(jshub.url)
        try:
            await deploy(nc, tmp_path, ECHO.format(tag="v1"), "1", target="tag:demo")
            e = start_edge(wl_config("phone-1", jshub.leaf_port), tmp_path / "p1", started)
            await report(nc, "phone-1", state_is("1", "running"))
            assert await answer(jshub.url, "wl.phone-1.echo") == b"v1:x"
            await deploy(nc, tmp_path, BROKEN_SETUP, "2", target="tag:demo")
            await report(nc, "phone-1", state_is("1", "rolled back"))
            await deploy(nc, tmp_path, ECHO.format(tag="v3"), "3", target="tag:demo")
            await report(nc, "phone-1", state_is("3", "running"))
            assert await answer(jshub.url, "wl.phone-1.echo") == b"v3:x"
            assert sorted(p.suffix for p in (tmp_path / "p1" / "data" / "wl").glob("wl_*")) == [".py", ".py"]
            assert e.alive()

            # the same through the command line: ls, status (the edges' reports), rollback, remove
            def cli(*args: str) -> str:
                r = subprocess.run([sys.executable, "-m", "host.tools.cli", "workload", "-s", jshub.url, *args],
                                   capture_output=True, text=True, timeout=60, cwd=REPO)
                assert r.returncode == 0, r.stderr
                return r.stdout

            app = tmp_path / "cli_app.py"
            app.write_text(ECHO.format(tag="v4"))
            out = cli("deploy", str(app), "--name", "echo", "--target", "tag:demo,phone-*", "--version", "4")
            assert re.match(r"deployed echo 4 to tag:demo,phone-\*: \d+ B source, \d+ B \.mpy v6\.3, sha256 "
                            r"[0-9a-f]{12}$", out.strip()), out
            assert re.search(r"^echo +4 +tag:demo,phone-\* +3 ", cli("ls"), re.M)
            await report(nc, "phone-1", state_is("4", "running"))
            reports = json.loads(cli("status", "--wait", "1.5", "--json"))
            assert reports["phone-1"]["workloads"][0]["version"] == "4"
            assert re.search(r"^phone-1 +echo +4 +running ", cli("status", "echo", "--wait", "1.5"), re.M)
            assert cli("rollback", "echo").strip() == "echo: rolled back to 3"
            await report(nc, "phone-1", state_is("3", "running"))
            assert cli("remove", "echo").strip() == "echo: removed"
            await report(nc, "phone-1", lambda ws: ws == {})
            assert not list((tmp_path / "p1" / "data" / "wl").glob("wl_*"))
        finally:
            await nc.close()

    run(body(), timeout=60)


def test_the_hub_as_a_target_runs_host_side_functions(side, jshub, tmp_path, request):
    # `natsedge workload host`: the engine on CPython as a leaf named hub on the hub's leafnode port
    log = (tmp_path / "host.log").open("w")
    p = subprocess.Popen([sys.executable, "-m", "host.tools.cli", "workload", "host", "--hub",
                          f"nats-leaf://127.0.0.1:{jshub.leaf_port}", "--data", str(tmp_path / "host")],
                         stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    request.addfinalizer(lambda: (stop_process(p), log.close()))

    async def body():
        nc = await nats.connect(jshub.url)
        try:
            await deploy(nc, tmp_path, ECHO.format(tag="host"), "1", target="hub")
            await report(nc, "hub", state_is("1", "running"), timeout=15)
            assert await answer(jshub.url, "wl.hub.echo") == b"host:x"
        finally:
            await nc.close()

    run(body(), timeout=60)
    assert p.poll() is None, (tmp_path / "host.log").read_text()


def steady_heap(e: Edge, lines: int = 4) -> int:
    """The lowest of the edge's next `lines` "stats heap=" figures (gc.collect() then gc.mem_alloc())."""
    start = len(e.lines)
    figures = []
    for _ in range(lines):
        figures.append(int(e.wait_line(r"^edge: stats heap=(\d+)", timeout=10, start=start).group(1)))
        start = e.last_index + 1
    return min(figures)


@pytest.mark.device
def test_heap_of_the_engine_and_of_a_workload(side, jshub, started, tmp_path):
    # Two edges with the same KV cache bucket, one with the workload engine running examples/workloads/thermo.py: the
    # difference is the engine (its state, its JetStream inbox; its code too where it is not frozen) and the workload.
    async def body():
        nc = await nats.connect(jshub.url)
        try:
            thermo = (REPO / "examples" / "workloads" / "thermo.py").read_text()  # a service endpoint, a subject
            await deploy(nc, tmp_path, thermo, "1", target="with-engine")
            base_cfg = wl_config("no-engine", jshub.leaf_port)
            del base_cfg["workloads"], base_cfg["tags"]
            base_cfg["kv"] = {"buckets": {"workloads": {"policy": "hub_wins", "max_value": 2048, "max_bytes": 16384,
                                                        "max_keys": 32}}}
            base = start_edge(dict(base_cfg, stats=0.2), tmp_path / "base", started)
            e = start_edge(dict(wl_config("with-engine", jshub.leaf_port), stats=0.2), tmp_path / "wl", started)
            ws = await report(nc, "with-engine", state_is("1", "running"))
            assert await answer(jshub.url, "site.with-engine.hello") == b"thermo 1 on with-engine"
            base.wait_line(r"kv synced bucket=workloads", timeout=10)
            without, with_engine = steady_heap(base), steady_heap(e)
            print(f"{e.runtime.name}: heap without the engine {without} B, with it and thermo {with_engine} B "
                  f"(+{with_engine - without} B; the workload itself {ws['echo']['heap']} B)")
            # measured 2026-12-07 (seven runs): frozen32 +6,336 to +6,656 B, thermo itself 4,064 to 4,256 B
            # (edge.micro is frozen); unix64 +27,648 to +27,840 B, thermo 13,280 to 13,472 B (edge.micro and the
            # engine compiled from source onto the heap). The test fails 20 % above those.
            assert with_engine - without < (7987 if e.runtime.frozen else 33408)
        finally:
            await nc.close()

    run(body(), timeout=60)


def test_the_docs_example_on_three_edges(side, jshub, started, tmp_path):
    # docs/workloads.md "A complete example": examples/workloads/ as it is, but for the hub's port
    example = REPO / "examples" / "workloads"

    def cli(*args: str) -> str:
        r = subprocess.run([sys.executable, "-m", "host.tools.cli", "workload", "-s", jshub.url, *args],
                           capture_output=True, text=True, timeout=60, cwd=REPO)
        assert r.returncode == 0, r.stderr
        return r.stdout

    async def pings(nc, n: int) -> list[dict]:
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox)
        await nc.publish("$SRV.PING.thermo", b"", reply=inbox)
        out = [json.loads((await sub.next_msg(timeout=5)).data) for _ in range(n)]
        await sub.unsubscribe()
        return out

    async def body():
        edges = {}
        for name in ("kitchen-1", "kitchen-2", "hall-1"):
            cfg = json.loads((example / f"{name}.json").read_text())
            cfg["hub"]["url"] = f"nats-leaf://127.0.0.1:{jshub.leaf_port}"
            cfg["listen"] = f"127.0.0.1:{free_port()}"  # only for the test's look at each edge
            edges[name] = start_edge(cfg, tmp_path / "fleet", started)
        cli("deploy", str(example / "thermo.py"), "--name", "thermo", "--target", "kitchen-*")
        nc = await nats.connect(jshub.url)
        try:
            for name in ("kitchen-1", "kitchen-2"):
                await report(nc, name, lambda ws: ws.get("thermo", {}).get("state") == "running")
                assert await answer(jshub.url, f"thermo.{name}.c_to_f", data=b"21.5") == b"70.7"
                assert await answer(jshub.url, f"site.{name}.hello") == f"thermo 1 on {name}".encode()
            assert sorted(p["name"] for p in await pings(nc, 2)) == ["thermo", "thermo"]
            assert await report(nc, "hall-1", lambda ws: True) == {}
            v2 = tmp_path / "thermo.py"  # as the docs' second step: the service's version raised
            v2.write_text((example / "thermo.py").read_text().replace('"1.0.0"', '"1.1.0"'))
            cli("deploy", str(v2), "--name", "thermo", "--target", "kitchen-*,tag:lab")
            for name in edges:
                await report(nc, name, lambda ws: (ws.get("thermo", {}).get("version"),
                                                   ws.get("thermo", {}).get("state")) == ("2", "running"))
            assert await answer(jshub.url, "site.hall-1.hello") == b"thermo 2 on hall-1"
            assert sorted(p["version"] for p in await pings(nc, 3)) == ["1.1.0"] * 3
            table = cli("status", "thermo", "--wait", "11")  # the example's edges report every 5 s
            assert len(re.findall(r"^\S+ +thermo +2 +running ", table, re.M)) == 3, table
            assert edges["kitchen-1"].count("workload thermo: stopping") == 1  # v1's teardown
        finally:
            await nc.close()

    run(body(), timeout=90)


def test_staged_rollout_and_each_edge_back_to_its_own_last_good_version(side, jshub, started, tmp_path):
    # v1 to both kitchens, v2 to one of them (the other stays on v1: the previous target still names it), a broken
    # v3 to both: each rolls back to the version it ran. The code of v1 leaves the object store with v3's deploy.
    async def body():
        nc = await nats.connect(jshub.url)
        try:
            await deploy(nc, tmp_path, ECHO.format(tag="v1"), "1")
            for name in ("kitchen-6", "kitchen-7"):
                start_edge(wl_config(name, jshub.leaf_port), tmp_path / name, started)
                await report(nc, name, state_is("1", "running"))
            await deploy(nc, tmp_path, ECHO.format(tag="v2"), "2", target="kitchen-6")
            await report(nc, "kitchen-6", state_is("2", "running"))
            assert await answer(jshub.url, "wl.kitchen-6.echo") == b"v2:x"
            ws = await report(nc, "kitchen-7", state_is("1", "running"))
            assert ws["echo"]["wanted"] == "1"
            assert await answer(jshub.url, "wl.kitchen-7.echo") == b"v1:x"
            await deploy(nc, tmp_path, BROKEN_SETUP, "3", target="kitchen-*")
            await report(nc, "kitchen-6", state_is("2", "rolled back"))
            ws = await report(nc, "kitchen-7", state_is("1", "rolled back"))
            assert ws["echo"]["wanted"] == "3"
            assert await answer(jshub.url, "wl.kitchen-7.echo") == b"v1:x"
            obs = await nc.jetstream().object_store("workloads")
            names = sorted(i.name for i in await obs.list(ignore_deletes=True))
            assert names == ["echo/2.mpy", "echo/2.py", "echo/3.mpy", "echo/3.py"]
        finally:
            await nc.close()

    run(body(), timeout=60)
