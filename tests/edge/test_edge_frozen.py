"""Device fitness: the edge frozen into a 32-bit MicroPython unix port (tests/edge/frozen.py), inside
`-X heapsize=60000`, with 4 LAN clients and 20 subscriptions, in four configurations:

- lan:     the LAN listener only;
- uplink:  + a leafnode uplink to nats-server (traffic LAN <-> LAN, LAN -> hub, hub -> LAN);
- forward: + a store-and-forward queue on emulated flash (littlefs on a FileFlash image, as on an ESP32); every
           client also publishes 50 records to it, which must all reach the hub stream;
- kv:      + a KV bucket synced with the hub (tests/edge/kvcache_app.py frozen in): 20 hub keys before the start,
           20 written by the hub while connected, 20 written on the edge, all of which must reach the other side.

Each stats line (every 50 ms) reports gc.mem_alloc() right after gc.collect(), and `peak`, the highest such figure
so far: the high-water mark of live heap. Figures per configuration (bytes): `ready` (the `edge: ready` line, after
start-up), `steady` (after the traffic), `peak`, `free` (gc.mem_free() at the end). The test asserts that the
scenario ran to the end in the 60 KB heap with no MemoryError and that the peak keeps 20 % of it free (FACTS.md
section 9: exhausting the heap with sockets registered can crash the VM); forward + KV runs, but its 20 % is an
expected failure for now (KV_HEADROOM). The slow test bisects the smallest
-X heapsize each configuration runs in. Figures are printed (pytest -s) and recorded as user properties; the table
is in docs/benchmarks.md:

    pytest -s -m frozen32 tests/edge/test_edge_frozen.py            # the table (build: about 25 s the first time)
    pytest -s -m "frozen32 and slow" tests/edge/test_edge_frozen.py # the smallest heap of each (about 3 min)

Also here: a hub message too big for the 60 KB heap is dropped and counted (stats `nomem`), and the link stays
(edge/proto.py rule 5, edge/leaf/uplink.py rule 8).
"""

from __future__ import annotations

import json
import re
import subprocess

import nats
import pytest

from tests.compat.harness import Raw, run
from tests.edge import frozen
from tests.edge.edgeharness import JsHub, Runtime, edge_config, free_port, set_runtime, wait_until
from tests.edge.fwdharness import FwdEdge, add_stream, stream_last_seq
from tests.edge.test_edge_heap import MSGS, N_CLIENTS, SUBS_PER_CLIENT, _stats, exchange, lan_clients

pytestmark = pytest.mark.frozen32

CONFIGS = ["lan", "uplink", "forward", "kv"]
KV_KEYS = 20
IMAGE_BLOCKS = 96  # 384 KB of emulated flash
HEADROOM = 0.8  # the peak may take at most this share of the heap


@pytest.fixture
def frozen_runtime(frozen32_binary):
    rt = Runtime("frozen32", frozen32_binary, heapsize=str(frozen.HEAPSIZE), frozen=True)
    set_runtime(rt)
    yield rt
    set_runtime(None)


@pytest.fixture
def hub(tmp_path):
    h = JsHub("nats", tmp_path / "hub", monitor=True)
    yield h.start()
    h.stop()


def _config(kind: str, hub_port: int | None) -> dict:
    cfg = {"name": "heap", "listen": f"127.0.0.1:{free_port()}", "hub": None, "stats": 0.05,
           "limits": {"max_connections": N_CLIENTS, "max_subscriptions": 32, "ping_interval": 5,
                      "min_free_heap": 4096, "reconnect_min": 0.05, "reconnect_max": 0.5}}
    if kind != "lan":
        cfg["hub"] = {"url": f"nats-leaf://127.0.0.1:{hub_port}"}
    if kind in ("forward", "kv"):
        cfg["data"] = "/flash/data"
        cfg["forward"] = [{"subjects": ["fwd.>"], "stream": "FWD"}]
        cfg["forward_settings"] = {"jitter": 0, "status": 0.5}
    if kind == "kv":
        cfg["app"] = "kvcache_app"
        cfg["kv"] = {"buckets": {"b": {"policy": "lww", "max_keys": 64}}}
    return cfg


async def _bucket(url):
    nc = await nats.connect(url, allow_reconnect=False, connect_timeout=2)
    kv = await nc.jetstream(timeout=5).create_key_value(bucket="b", direct=True)
    return nc, kv


async def _put(url, keys):
    nc, kv = await _bucket(url)
    for k in keys:
        await kv.put(k, b"hub-" + k.encode())
    await nc.close()


async def _keys(url) -> set[str]:
    nc, kv = await _bucket(url)
    try:
        return set(await kv.keys())
    except nats.js.errors.NoKeysError:
        return set()
    finally:
        await nc.close()


def scenario(kind: str, tmp_path, hub: JsHub | None, heapsize: int) -> tuple[FwdEdge, dict]:
    """Start the frozen edge in `kind`'s configuration inside `heapsize`, run the traffic; -> (edge, figures).
    Fails (pytest) when the edge does not cope."""
    if kind in ("forward", "kv"):
        run(add_stream(hub.url, "FWD", ["fwd.>"]))
    if kind == "kv":
        run(_put(hub.url, [f"pre.{i}" for i in range(KV_KEYS)]))
    cfg = _config(kind, hub.leaf_port if hub else None)
    work = tmp_path / f"{kind}-{heapsize}"
    image = (str(work / "flash.img"), IMAGE_BLOCKS) if "data" in cfg else None
    e = FwdEdge(cfg, work, image=image)
    e.heapsize = str(heapsize)
    try:
        e.start()
        if hub:
            e.wait_line(r"uplink up", timeout=10)
        if kind == "kv":
            e.wait_line(r"kv synced bucket=b", timeout=10)
        f = _traffic(kind, e, hub)
        assert e.alive(), "the edge exited"
        assert not [ln for ln in e.lines if "MemoryError" in ln], "MemoryError in the edge's output"
        return e, f
    except BaseException:
        print(e.output())  # the edge's last lines: stats, MemoryError tracebacks
        raise
    finally:
        e.stop()


def _traffic(kind, e, hub):
    wait_until(lambda: _stats(e), 5, msg="a stats line")
    ready = int(re.search(r"heap=(\d+)", next(ln for ln in e.lines if ln.startswith("edge: ready "))).group(1))
    clients = lan_clients(e)
    h = None
    if hub:
        h = Raw(hub.srv.port)
        h.handshake()
        before = _stats(e)[-1]["hub_interest"]
        h.send(b"SUB up.> 1\r\n")
        h.sync()
        wait_until(lambda: _stats(e)[-1]["hub_interest"] > before, 5, msg="hub interest in up.>")
        subjects = [f"dev.{i}.s{j}" for i in range(N_CLIENTS) for j in range(SUBS_PER_CLIENT)]
        wait_until(lambda: _hub_routes(hub, subjects), 5, msg="the hub to route dev.* to the edge")
    if kind == "kv":  # edge-side writes through the app (its reply goes nowhere), hub-side writes while live
        req = json.dumps({"op": "bulk", "n": KV_KEYS, "prefix": "edge.", "value": "x" * 32}).encode()
        clients[-1].send(b"PUB kvctl.heap kvr %d\r\n%s\r\n" % (len(req), req))
        run(_put(hub.url, [f"live.{i}" for i in range(KV_KEYS)]))
    exchange(clients, h, forward=kind in ("forward", "kv"), timeout=15)
    if kind in ("forward", "kv"):
        wait_until(lambda: stream_last_seq(hub.url, "FWD") >= MSGS * N_CLIENTS, 20,
                   msg=f"{MSGS * N_CLIENTS} forwarded records in the hub stream")
        assert stream_last_seq(hub.url, "FWD") == MSGS * N_CLIENTS
    if kind == "kv":
        want_keys = {f"{p}.{i}" for p in ("pre", "live", "edge") for i in range(KV_KEYS)}
        wait_until(lambda: run(_keys(hub.url)) >= want_keys, 15, msg="the edge's writes in the hub bucket")
        e.wait_line(r"kv synced bucket=b", timeout=5)
    mark = len(e.lines)
    e.wait_line(r"^edge: stats .*clients=4 ", start=mark, timeout=5)
    e.wait_line(r"^edge: stats ", start=e.last_index + 1, timeout=5)
    last = _stats(e)[-1]
    for c in clients:
        c.close()
    if h:
        h.close()
    return {"ready": ready, "steady": last["heap"], "peak": max(s["peak"] for s in _stats(e)), "free": last["free"],
            "clients": last["clients"], "subs": last["subs"]}


def _hub_routes(hub, subjects) -> bool:
    leafs = hub.srv.http_get("/leafz?subs=1")["leafs"]
    held = {s.split()[0] for s in leafs[0].get("subscriptions_list") or []} if leafs else set()
    return set(subjects) <= held


def test_every_module_the_firmware_freezes_imports_from_the_frozen_build(frozen32_binary, tmp_path):
    # MICROPYPATH=.frozen only, in an empty folder: each import can only come from the binary.
    mods = [str(f.relative_to(base)).removesuffix(".py").removesuffix("/__init__").replace("/", ".")
            for kind, path, base in frozen.firmware_entries()
            for f in (sorted((base / path).rglob("*.py")) if kind == "package" else [base / path])
            if f.name != "__main__.py"]  # `-m edge` runs the leaf
    assert "edge.leaf.runner" in mods and "edge.kvcache.cache" in mods and "edgeboard" in mods
    probe = (f"for m in {mods!r}:\n"
             "    try:\n        __import__(m)\n        print('ok', m)\n"
             "    except ImportError as e:\n        print('err', m, e)\n")
    out = subprocess.run([frozen32_binary, "-X", f"heapsize={frozen.HEAPSIZE}", "-c", probe], cwd=str(tmp_path),
                         env={"MICROPYPATH": ".frozen"}, capture_output=True, text=True, timeout=20)
    # This build has no TLS (build-unix32.sh builds without submodules): edge/leaf/tls.py is frozen, found, and
    # stops at its `import ssl`; an ESP32 firmware has ssl.
    want = [f"ok {m}" if m != "edge.leaf.tls" else "err edge.leaf.tls no module named 'ssl'" for m in mods]
    assert out.stdout.splitlines() == want, out.stdout + out.stderr


# Forward + KV runs in the 60 KB heap (asserted like the others), but keeps less than 20 % of it free: its live peak was
# 52.7-53.0 KB on main c3f6ae3 (docs/benchmarks.md, "Heap per configuration"), against the 48,000 bytes HEADROOM
# allows, with 48.4-49.1 KB live at steady. That check is reported as an expected failure while the peak is over (the
# day it fits, the test passes); the run itself is not excused. Until the forward queue stopped joining its ~500-byte
# status line (edge/leaf/runner.py log), a run beside a busy unit suite failed on that join 3 times in 8.
KV_HEADROOM = "forward + KV with 4 clients, 20 subscriptions and 60 keys keeps less than 20 % of a 60 KB heap free"


@pytest.mark.parametrize("kind", CONFIGS)
def test_heap_high_water_in_60k(kind, frozen_runtime, tmp_path, request, record_property):
    hub = request.getfixturevalue("hub") if kind != "lan" else None
    e, f = scenario(kind, tmp_path, hub, frozen.HEAPSIZE)
    assert f["clients"] == N_CLIENTS and f["subs"] >= N_CLIENTS * SUBS_PER_CLIENT
    for k, v in f.items():
        record_property(k, v)
    print(f"frozen32 heap, {kind}, -X heapsize={frozen.HEAPSIZE} (bytes):", f)
    if kind == "kv" and f["peak"] > HEADROOM * frozen.HEAPSIZE:
        pytest.xfail(f"{KV_HEADROOM}: peak {f['peak']} B (docs/benchmarks.md)")
    assert f["peak"] <= HEADROOM * frozen.HEAPSIZE, f


@pytest.mark.parametrize("heapsize,limits,want", [("60000", {}, 4096), ("60000", {"gc_threshold": 0}, -1),
                                                  ("60000", {"gc_threshold": 8192}, 8192), ("400000", {}, -1)])
def test_the_edge_sets_its_gc_threshold(frozen32_binary, tmp_path, heapsize, limits, want):
    """The frozen edge sets limits.gc_threshold: its app reads gc.threshold() (-1: MicroPython's own policy, none
    set). A heap under edge.compat.SMALL_HEAP (128 KB) is a small one, where the default is 4 KB."""
    (tmp_path / "gcapp.py").write_text("import gc\nimport sys\n\n\nasync def main(leaf):\n"
                                       "    sys.stdout.write('edge: app gc_threshold=%d\\n' % gc.threshold())\n")
    path = tmp_path / "edge.json"
    path.write_text(json.dumps({"name": "e1", "app": "gcapp", "limits": limits}))
    proc = subprocess.Popen([frozen32_binary, "-X", f"heapsize={heapsize}", "-m", "edge", str(path)],
                            cwd=str(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={"MICROPYPATH": f".frozen:{tmp_path}"})
    try:
        for line in proc.stdout:
            if line.startswith("edge: app gc_threshold="):
                assert line.strip() == f"edge: app gc_threshold={want}"
                break
        else:
            raise AssertionError(f"the edge ended (rc {proc.wait()}) without its app's line")
    finally:
        proc.kill()
        proc.wait()


# A hub message of BIG bytes on the frozen edge at 60 KB: its 128-byte reads (a small heap's, edge/leaf/link.py
# rule 3) fit in the heap as pieces, but joining them takes a contiguous BIG on top, and the edge with an uplink and a
# LAN client (~19 KB live) has less than 2 x BIG free: the assembly cannot succeed, however the heap lies.
BIG = 22000


def test_hub_message_too_big_for_the_heap_is_dropped_and_the_link_stays(frozen_runtime, hubs, edges):
    hub = hubs()
    e = edges(edge_config("nomem", listen=free_port(), hub_port=hub.leaf_port, stats=0.05, max_payload=32768,
                          max_pending=32768))
    e.wait_line(r"uplink up", timeout=10)
    lan = Raw(e.port)
    lan.handshake()
    lan.send(b"SUB big 1\r\n")
    lan.sync()
    hub.wait_leaf_subs("big")
    pub = Raw(hub.srv.port)
    pub.handshake()
    got = []

    def received(n):
        got.extend(m.payload for m in lan.msgs_until_pong())
        return len(got) >= n

    for n in (1, 2):  # the second: counted again, not logged again
        pub.send(b"PUB big %d\r\n%s\r\nPUB big 5\r\nafter\r\n" % (BIG, b"b" * BIG))
        pub.sync()
        try:
            wait_until(lambda n=n: received(n), 10, msg="the message after the big one")
            wait_until(lambda n=n: _stats(e)[-1]["nomem"] == n, 5, msg=f"stats nomem={n}")
        except BaseException:
            print(e.output())  # the edge's last lines: a MemoryError traceback, the uplink going down
            raise
    assert got == [b"after", b"after"]
    assert len([ln for ln in e.lines if "uplink nomem: a message dropped" in ln]) == 1, e.output()
    assert not [ln for ln in e.lines if "uplink down" in ln], e.output()
    assert e.alive()
    lan.close()
    pub.close()


@pytest.mark.slow
@pytest.mark.parametrize("kind", CONFIGS)
def test_smallest_heap_per_configuration(kind, frozen_runtime, tmp_path, request):
    hub = request.getfixturevalue("hub") if kind != "lan" else None
    lo, hi = 8000, 2 * frozen.HEAPSIZE
    _, f = scenario(kind, tmp_path, hub, hi)  # hi passes
    print(f"frozen32 heap, {kind}, -X heapsize={hi} (bytes):", f)
    if hub and kind != "uplink":
        run(_reset(hub.url))
    while hi - lo > 1024:
        mid = (lo + hi) // 2
        try:
            scenario(kind, tmp_path, hub, mid)
            ok = True
        except (pytest.fail.Exception, OSError, AssertionError):
            ok = False
        if hub and kind != "uplink":  # a fresh stream and bucket for the next try
            run(_reset(hub.url))
        (hi, lo) = (mid, lo) if ok else (hi, mid)
    print(f"frozen32 smallest -X heapsize, {kind}: between {lo} and {hi} bytes")


async def _reset(url):
    nc = await nats.connect(url, allow_reconnect=False, connect_timeout=2)
    js = nc.jetstream(timeout=5)
    for name in ("FWD", "KV_b"):
        try:
            await js.delete_stream(name)
        except nats.js.errors.NotFoundError:
            pass
    await nc.close()
