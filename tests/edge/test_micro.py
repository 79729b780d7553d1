"""NATS Micro services on the edge (edge/micro) with real edge processes, against nats-server and our hub.

The edges run tests/edge/microapp.py (service "calc"). Clients are nats-py 2.16: raw `$SRV.PING/INFO/STATS` requests
that collect every answer (nats-py has no discovery client; its `nats.micro` models parse the answers), a nats-py
`nats.micro` service next to the edge's, requests with error headers, stats, a queue group across two edges, a LAN
client discovering locally, `svc.stop()`. The in-process API and the validation texts are in
tests/edge/test_micro_api.py, run here under MicroPython too; the heap per service and per endpoint on the 32-bit
frozen build is measured at the end (docs/workloads.md).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import nats
import nats.micro
import pytest
from nats.micro.service import ServiceInfo, ServicePing, ServiceStats

from tests.compat.harness import collect, run, wait_until
from tests.edge import frozen
from tests.edge.edgeharness import REPO, Runtime, edge_config, free_port, micropython, set_runtime

APP_DIR = str(REPO / "tests" / "edge")
ENDPOINTS = {("echo", "echo", "q"), ("who", "who", "q"), ("slow", "slow", "q"), ("fail", "math.fail", "mq"),
             ("boom", "math.boom", "mq")}


def _edge(edges, name, hub=None, listen=True):
    cfg = edge_config(name, listen=free_port() if listen else None, hub_port=hub.leaf_port if hub else None)
    cfg["app"] = "microapp"
    e = edges(cfg, extra_path=APP_DIR)
    e.svc_id = e.wait_line(r"^edge: micro ready id=(\w+)", timeout=10).group(1)
    return e


def _wait_routed(hub, *subjects):
    hub.wait_leaf_subs("$SRV.PING", "$SRV.INFO.calc", "$SRV.STATS.calc", *subjects, timeout=10)


async def discover(nc, subject: str, n: int) -> list[dict]:
    """Discovery as `nats micro` does it: one request, every answer collected (here: until n came)."""
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    await nc.publish(subject, b"", reply=inbox)
    msgs = await collect(sub, n, timeout=5)
    await sub.unsubscribe()
    return [json.loads(m.data) for m in msgs]


@pytest.fixture
def cpython_edge():
    set_runtime(Runtime("cpython", sys.executable, cpython=True))
    yield
    set_runtime(None)


@pytest.mark.device
def test_discovery_through_the_hub_next_to_a_nats_py_service(hub, edges):
    discovery_scenario(hub, edges)


def test_discovery_through_the_hub_with_a_cpython_edge(hub, edges, cpython_edge):
    discovery_scenario(hub, edges)


def discovery_scenario(hub, edges):
    e = _edge(edges, "e1", hub)
    _wait_routed(hub, "echo", "math.fail")

    async def body():
        nc = await nats.connect(hub.url, allow_reconnect=False)
        py = await nats.micro.add_service(nc, name="pysvc", version="0.1.0", description="nats-py")
        await py.add_endpoint(name="pyecho", handler=lambda req: req.respond(req.data))
        await nc.flush()
        pings = await discover(nc, "$SRV.PING", 2)
        assert sorted(p["name"] for p in pings) == ["calc", "pysvc"], pings
        edge_ping = next(p for p in pings if p["name"] == "calc")
        assert ServicePing.from_dict(edge_ping).id == e.svc_id
        assert edge_ping == {"type": "io.nats.micro.v1.ping_response", "name": "calc", "id": e.svc_id,
                             "version": "1.2.3", "metadata": {"edge": "e1"}}
        for verb in ("PING", "INFO", "STATS"):
            for subject in (f"$SRV.{verb}.calc", f"$SRV.{verb}.calc.{e.svc_id}"):
                (d,) = await discover(nc, subject, 1)
                assert d["id"] == e.svc_id and d["type"] == f"io.nats.micro.v1.{verb.lower()}_response", d
        (info,) = await discover(nc, "$SRV.INFO.calc", 1)
        si = ServiceInfo.from_dict(info)  # nats-py's own model reads what the edge sends
        assert si.description == "edge calculator" and si.metadata == {"edge": "e1"}
        assert {(ep.name, ep.subject, ep.queue_group) for ep in si.endpoints} == ENDPOINTS
        assert next(ep for ep in si.endpoints if ep.name == "echo").metadata == {"kind": "echo"}
        assert next(ep for ep in si.endpoints if ep.name == "who").metadata is None
        (stats,) = await discover(nc, "$SRV.STATS.calc", 1)
        ss = ServiceStats.from_dict(stats)
        assert ss.id == e.svc_id and {ep.name for ep in ss.endpoints} == {n for n, _, _ in ENDPOINTS}
        assert all(ep.num_requests == 0 and ep.last_error == "" for ep in ss.endpoints)
        infos = await discover(nc, "$SRV.INFO", 2)
        assert sorted(i["name"] for i in infos) == ["calc", "pysvc"]
        heap = int((await nc.request("microctl.e1", b"heap", timeout=3)).data)
        await py.stop()
        await nc.close()
        return heap

    heap = run(body())
    assert e.alive()
    if not e.runtime.cpython:  # the live heap of the whole edge with the service, after gc.collect()
        ready = int(re.search(r"heap=(\d+)", next(ln for ln in e.lines if ln.startswith("edge: ready "))).group(1))
        print(f"{e.runtime.name}: edge heap {ready} B at ready, {heap} B with calc (5 endpoints) after discovery")
        assert heap > 0


def test_requests_error_headers_and_stats_through_the_hub(hub, edges):
    e = _edge(edges, "e1", hub)
    _wait_routed(hub, "echo", "who", "slow", "math.fail", "math.boom")

    async def body():
        nc = await nats.connect(hub.url, allow_reconnect=False)
        for i in range(3):
            assert (await nc.request("echo", b"%d" % i, timeout=3)).data == b"%d" % i
        assert (await nc.request("who", b"", timeout=3)).data == b"e1"
        assert (await nc.request("slow", b"x", timeout=3)).data == b"slow:x"
        r = await nc.request("math.fail", b"", timeout=3)
        assert r.data == b"" and r.headers == {"Nats-Service-Error": "teapot", "Nats-Service-Error-Code": "418"}
        r = await nc.request("math.boom", b"", timeout=3)
        assert r.data == b"" and r.headers == {"Nats-Service-Error": "ValueError('kaput')",
                                               "Nats-Service-Error-Code": "500"}
        (stats,) = await discover(nc, "$SRV.STATS.calc", 1)
        by = {ep["name"]: ep for ep in stats["endpoints"]}
        assert {n: (ep["num_requests"], ep["num_errors"]) for n, ep in by.items()} == {
            "echo": (3, 0), "who": (1, 0), "slow": (1, 0), "fail": (1, 1), "boom": (1, 1)}
        assert by["fail"]["last_error"] == "418:teapot" and by["boom"]["last_error"] == "ValueError('kaput')"
        for ep in by.values():
            n = ep["num_requests"]
            assert ep["average_processing_time"] == ep["processing_time"] // n and ep["data"] is None, ep
        await nc.close()

    run(body())
    assert e.count(r"Traceback") == 1  # the unhandled ValueError is logged on the device, once


def test_queue_group_across_two_edges_and_a_nats_py_service_serves_each_request_once(hub, edges):
    a = _edge(edges, "ea", hub)
    b = _edge(edges, "eb", hub)
    n = 60

    def both_routed():
        leafs = hub.leafz()
        return len(leafs) == 2 and all("who" in {s.split()[0] for s in lf.get("subscriptions_list") or []}
                                       for lf in leafs)

    wait_until(both_routed, 10, msg="both edges' endpoints at the hub")

    async def body():
        nc = await nats.connect(hub.url, allow_reconnect=False)
        # nats-py's instance of the same service, in the same queue group "q"
        py = await nats.micro.add_service(nc, name="calc", version="1.2.3", metadata={"edge": "py"})
        await py.add_endpoint(name="who", handler=lambda req: req.respond(b"py"))
        await nc.flush()
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox)
        for i in range(n):
            await nc.publish("who", b"%d" % i, reply=inbox)
        answers = await collect(sub, n, timeout=10)
        # STATS goes out after every request, on the same connections: a request served twice is counted by now.
        stats = await discover(nc, "$SRV.STATS.calc", 3)
        served = {s["metadata"]["edge"]: next(ep for ep in s["endpoints"] if ep["name"] == "who")["num_requests"]
                  for s in stats}
        pings = await discover(nc, "$SRV.PING.calc", 3)
        await py.stop()
        await nc.close()
        return answers, served, pings, py.id

    answers, served, pings, py_id = run(body())
    assert sorted(served) == ["ea", "eb", "py"] and sum(served.values()) == n, served
    assert sorted(m.data.decode() for m in answers) == sorted(k for k, v in served.items() for _ in range(v))
    assert {p["id"] for p in pings} == {a.svc_id, b.svc_id, py_id}  # discovery is never a queue group


def test_lan_client_discovers_and_calls_locally(edges):
    e = _edge(edges, "lan1")

    async def body():
        nc = await nats.connect(e.url, allow_reconnect=False)
        (ping,) = await discover(nc, "$SRV.PING", 1)
        assert ping["id"] == e.svc_id and ping["name"] == "calc"
        (info,) = await discover(nc, f"$SRV.INFO.calc.{e.svc_id}", 1)
        assert {(ep["name"], ep["subject"], ep["queue_group"]) for ep in info["endpoints"]} == ENDPOINTS
        assert (await nc.request("echo", b"local", timeout=3)).data == b"local"
        r = await nc.request("math.fail", b"", timeout=3)
        assert r.headers == {"Nats-Service-Error": "teapot", "Nats-Service-Error-Code": "418"}
        (stats,) = await discover(nc, "$SRV.STATS", 1)
        by = {ep["name"]: ep for ep in stats["endpoints"]}
        assert by["echo"]["num_requests"] == 1 and by["fail"]["num_errors"] == 1
        await nc.close()

    run(body())


def test_stop_removes_the_service_at_the_hub(hub, edges):
    _edge(edges, "e1", hub)
    _wait_routed(hub, "echo")

    async def body():
        nc = await nats.connect(hub.url, allow_reconnect=False)
        py = await nats.micro.add_service(nc, name="pysvc", version="0.1.0")
        await nc.flush()
        assert sorted(p["name"] for p in await discover(nc, "$SRV.PING", 2)) == ["calc", "pysvc"]
        assert (await nc.request("microctl.e1", b"stop", timeout=3)).data == b"stopped"
        wait_until(lambda: not {"$SRV.PING", "echo", "math.fail"} & hub.leaf_subs(), 10,
                   msg="the stopped service's subscriptions to leave the hub")
        # The hub holds none of the edge's $SRV interest now: a PING finds nats-py's service only.
        assert [p["name"] for p in await discover(nc, "$SRV.PING", 1)] == ["pysvc"]
        with pytest.raises(nats.errors.NoRespondersError):
            await nc.request("echo", b"", timeout=3)
        await py.stop()
        await nc.close()

    run(body())


def test_micro_api_suite_passes_on_micropython():
    # tests/edge/test_micro_api.py under the real micropython, as tests/edge/test_edge_mp.py runs test_edge_api.py
    from tests.edge.test_edge_mp import _test_functions

    expected = _test_functions(REPO / "tests" / "edge" / "test_micro_api.py")
    env = dict(os.environ, MICROPYPATH=f"{REPO}:.frozen")
    proc = subprocess.run([micropython(), "-X", "heapsize=2M", "tests/mp/run_unit.py", "tests.edge.test_micro_api"],
                          cwd=str(REPO), env=env, capture_output=True, text=True, timeout=100)
    passed = re.findall(r"^PASS (\w+)", proc.stdout, re.M)
    failed = re.findall(r"^FAIL (\w+): (.*)$", proc.stdout, re.M)
    assert not failed, f"failed on MicroPython: {failed}\n{proc.stderr[-3000:]}"
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(passed) == expected


# Heap of a service and of an endpoint on the 32-bit frozen build (an ESP32's pointer size, code in flash), after
# gc.collect(), inside a function (no globals growing between the readings): a Leaf as the edge makes it (tables
# presized for max_subscriptions), a first service without metadata (it also makes the $SRV nodes of the leaf's
# subject tree that later services share), a second one, then N_ENDPOINTS endpoints with short names on the first.
# Measured 2026-12-07: 1,264 B for the first service, 1,376 B for the next, 230 B per endpoint (docs/workloads.md).
HEAP_PROBE = """
import gc
from edge.leaf.broker import Leaf
from edge.micro import service


def measure(n):
    leaf = Leaf("m", max_subscriptions=64)
    names = ["e%d" % i for i in range(n)]
    handler = len
    gc.collect()
    a0 = gc.mem_alloc()
    first = leaf.service("calc", "1.2.3")
    gc.collect()
    a1 = gc.mem_alloc()
    second = leaf.service("calc2", "1.2.3")
    gc.collect()
    a2 = gc.mem_alloc()
    for name in names:
        first.endpoint(name, handler)
    gc.collect()
    a3 = gc.mem_alloc()
    print("micro heap first=%d next=%d endpoint=%d" % (a1 - a0, a2 - a1, (a3 - a2) // n))
    return second


measure({n})
"""
N_ENDPOINTS = 16
SERVICE_BUDGET = 1664  # bytes: the figures above with 20 % to spare
ENDPOINT_BUDGET = 280


@pytest.mark.frozen32
def test_heap_per_service_and_per_endpoint_on_the_frozen_32bit_build(frozen32_binary, tmp_path, record_property):
    out = subprocess.run([frozen32_binary, "-X", f"heapsize={frozen.HEAPSIZE}", "-c",
                          HEAP_PROBE.format(n=N_ENDPOINTS)], cwd=str(tmp_path), env={"MICROPYPATH": ".frozen"},
                         capture_output=True, text=True, timeout=20)
    m = re.search(r"micro heap first=(\d+) next=(\d+) endpoint=(\d+)", out.stdout)
    assert m, out.stdout + out.stderr
    first, later, endpoint = (int(x) for x in m.groups())
    for k, v in (("first_service", first), ("next_service", later), ("endpoint", endpoint)):
        record_property(k, v)
    print(f"frozen32 heap: {first} B for the first service, {later} B for the next, {endpoint} B per endpoint")
    assert max(first, later) <= SERVICE_BUDGET and endpoint <= ENDPOINT_BUDGET, (first, later, endpoint)
