"""Figures for docs/kvcache.md, measured on real MicroPython processes (printed; run with -s):

* catch-up after a partition: N keys changed on the hub while the edge was cut off, then healed;
  the first sync of a fresh edge against a bucket of N keys. Bounded variant (1,000 keys) in the default run;
  `-m slow` for 10,000 keys. Only correctness is asserted (every key arrives with its value); the times are printed.
* heap per cached key (clean and dirty) and the heap the kv modules take when imported from .mpy files.
Flash bytes per put come from tests/mp/kvcache_lfs.py (littlefs on an emulated ESP32 flash partition).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import time

import nats
import pytest

from tests.compat.harness import free_port, run
from tests.edge.edgeharness import REPO, JsHub, micropython, mpy_cross
from tests.edge.kvharness import Gate, ctl, edge_idle, kv_edge_config, start_edge, wait_for


@pytest.fixture
def jshub(side, tmp_path):
    h = JsHub(side, tmp_path / f"hub-{side}")
    yield h.start()
    h.stop()


@pytest.fixture
def started():
    edges = []
    yield edges
    for e in edges:
        e.stop()


async def _fill(nc, n: int, tag: str):
    # n distinct keys, published without waiting for each PubAck, then confirmed by the stream's count.
    js = nc.jetstream(timeout=10)
    before = (await js.stream_info("KV_b")).state.last_seq
    for i in range(n):
        await nc.publish(f"$KV.b.dev.{i:05d}", f"{tag}-{i}".encode())
        if i % 1000 == 999:
            await nc.flush()
    await nc.flush()
    deadline = time.monotonic() + 30
    while (await js.stream_info("KV_b")).state.last_seq < before + n:
        assert time.monotonic() < deadline, "the hub did not store every key"
        await asyncio.sleep(0.05)
    return before + n


def catch_up(side, jshub, started, tmp_path, n: int):
    gate = Gate(jshub.leaf_port)
    cfg = kv_edge_config("e1", free_port(), gate.port, {"b": {"max_keys": n + 100, "max_bytes": 64 * (n + 100),
                                                              "log_bytes": max(65536, 160 * n)}})
    heap = "16M" if n > 2000 else "4M"

    async def body():
        nc = await nats.connect(jshub.url)
        js = nc.jetstream(timeout=5)
        await js.create_key_value(bucket="b", direct=True)
        e = start_edge(cfg, tmp_path / "e1", started, heapsize=heap)
        e.wait_line(r"kv synced bucket=b", timeout=10)
        gate.partition()
        await wait_for(lambda: _offline(e), 10, "the edge to notice the partition")
        last = await _fill(nc, n, "v1")
        start = len(e.lines)
        t0 = time.monotonic()
        gate.heal()
        m = e.wait_line(r"kv synced bucket=b rev=(\d+) keys=(\d+) dirty=0 msgs=(\d+) ms=(\d+)", timeout=120,
                        start=start)
        wall = time.monotonic() - t0  # includes the reconnect backoff (at most 0.3 s here)
        assert int(m.group(1)) == last and int(m.group(2)) == n and int(m.group(3)) == n
        for i in (0, n // 2, n - 1):
            assert (await ctl(e, "get", key=f"dev.{i:05d}"))["value"] == f"v1-{i}"
        st = (await ctl(e, "status"))["buckets"]["b"]
        assert st["keys"] == n and st["last_sync_rev"] == last
        # a fresh edge: its first sync of the whole bucket
        e2 = start_edge(dict(cfg, name="e2", listen=f"127.0.0.1:{free_port()}",
                             hub={"url": f"nats-leaf://127.0.0.1:{jshub.leaf_port}"}), tmp_path / "e2", started,
                        heapsize=heap)
        m2 = e2.wait_line(r"kv synced bucket=b rev=(\d+) keys=(\d+) dirty=0 msgs=(\d+) ms=(\d+)", timeout=120)
        assert int(m2.group(2)) == n
        await wait_for(lambda: edge_idle(e2), 10, "the fresh edge to be idle")
        await nc.close()
        print(f"\nkv catch-up [{side}], {n} keys changed while partitioned: edge-measured {m.group(4)} ms, "
              f"heal to synced {wall * 1000:.0f} ms; first sync of a fresh edge: {m2.group(4)} ms "
              f"(micropython -X heapsize={heap})")

    try:
        run(body(), 110)
    finally:
        gate.close()


async def _offline(e):
    return not (await ctl(e, "status"))["buckets"]["b"]["online"]


def test_catch_up_1000_changed_keys(side, jshub, started, tmp_path):
    catch_up(side, jshub, started, tmp_path, 1000)


@pytest.mark.slow
def test_catch_up_10000_changed_keys(side, jshub, started, tmp_path):
    catch_up(side, jshub, started, tmp_path, 10000)


# ---- heap -------------------------------------------------------------------------------------------

_HEAP_SCRIPT = r"""
import gc, sys
sys.path.append(".frozen")
import asyncio
from edge import proto, subjects, compat, flashlog
from edge.leaf import broker
gc.collect()
a0 = gc.mem_alloc()
from edge.kvcache import cache, store, sync, hlc
gc.collect()
code = gc.mem_alloc() - a0
N = 1000
def fresh(tag):
    return store.Store("kvheap-" + tag, max_keys=N, max_bytes=1 << 20, log_bytes=1 << 20,
                       segment_size=65536)
gc.collect()
a1 = gc.mem_alloc()
s = fresh("clean")
gc.collect()
a2 = gc.mem_alloc()
for i in range(N):
    s.hub_set("dev.%05d" % i, b"0123456789abcdef", i + 1, 0)
s.flush()
gc.collect()
a3 = gc.mem_alloc()
d = fresh("dirty")
gc.collect()
a4 = gc.mem_alloc()
for i in range(N):
    d.local_write("dev.%05d" % i, 0, b"0123456789abcdef", 0, "1795678386338-%d-kitchen-1" % i)
d.flush()
gc.collect()
a5 = gc.mem_alloc()
print("RESULT code=%d empty_store=%d clean_per_key=%d dirty_per_key=%d" % (
    code, a2 - a1, (a3 - a2) // N, (a5 - a4) // N))
"""


def test_heap_per_cached_key(tmp_path):
    # .mpy files, as a device ships them: the kv modules' import cost, and the heap per cached key.
    dst = tmp_path / "mpy"
    for src in [*REPO.glob("edge/*.py"), *REPO.glob("edge/leaf/*.py"), *REPO.glob("edge/kvcache/*.py")]:
        out = dst / src.relative_to(REPO).with_suffix(".mpy")
        out.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([mpy_cross(), "-o", str(out), str(src)], check=True, capture_output=True)
    proc = subprocess.run([micropython(), "-X", "heapsize=4M", "-c", _HEAP_SCRIPT], capture_output=True, text=True,
                          timeout=60, cwd=str(tmp_path), env=dict(os.environ, MICROPYPATH=f"{dst}:.frozen"))
    assert proc.returncode == 0, proc.stderr
    m = re.search(r"RESULT code=(\d+) empty_store=(\d+) clean_per_key=(\d+) dirty_per_key=(\d+)", proc.stdout)
    assert m, proc.stdout
    code, empty, clean, dirty = (int(x) for x in m.groups())
    sizes = {p.name: p.stat().st_size for p in (dst / "edge" / "kvcache").glob("*.mpy")}
    print(f"\nkv heap (unix port, 8-byte pointers): edge/kvcache modules {code} B imported from .mpy "
          f"({json.dumps(sizes)}); empty store with a table for 1000 keys {empty} B; "
          f"per cached key (10-char key, 16-byte value): clean {clean} B, dirty {dirty} B")
    assert 0 < clean < dirty < 1000 and code > 0


def _mpy_tree(dst):
    # The edge, the kv cache and the test app compiled to .mpy, as a device ships them.
    for src in [*REPO.glob("edge/*.py"), *REPO.glob("edge/leaf/*.py"), *REPO.glob("edge/kvcache/*.py")]:
        out = dst / src.relative_to(REPO).with_suffix(".mpy")
        out.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([mpy_cross(), "-o", str(out), str(src)], check=True, capture_output=True)
    subprocess.run([mpy_cross(), "-o", str(dst / "kvcache_app.mpy"), str(REPO / "tests/edge/kvcache_app.py")],
                   check=True, capture_output=True)
    return dst


@pytest.mark.slow
def test_edge_heap_with_a_kv_bucket(side, jshub, started, tmp_path):
    # A whole edge from .mpy files: LAN listener, uplink, the test app and a 64-key bucket, synced, then 20 local
    # and 20 hub writes. 225 KB of heap was the smallest of 200/225/250/300 KB that ran it (200 KB: MemoryError
    # of ~800 bytes with 44 KB free, in holes between the loaded code); this runs it with 240 KB.
    mpy = _mpy_tree(tmp_path / "mpy")

    async def body():
        nc = await nats.connect(jshub.url)
        kv = await nc.jetstream(timeout=5).create_key_value(bucket="b", direct=True)
        for i in range(64):
            await kv.put(f"dev.k{i:02d}", b"0123456789abcdef")
        cfg = kv_edge_config("e1", free_port(), jshub.leaf_port, {"b": {"max_keys": 64, "max_bytes": 4096}})
        e = start_edge(cfg, tmp_path / "e1", started, heapsize="240000", path=str(mpy))
        ready = int(e.wait_line(r"ready .* heap=(\d+)", timeout=10).group(1))
        e.wait_line(r"kv synced bucket=b", timeout=10)
        synced = (await ctl(e, "heap"))["alloc"]
        for i in range(20):
            await ctl(e, "put", key=f"dev.k{i:02d}", value="x" * 16)
            await kv.put(f"dev.k{40 + i:02d}", b"hubvalue")
        await wait_for(lambda: edge_idle(e), 10, "the writes to settle")
        after = await ctl(e, "heap")
        assert (await ctl(e, "status"))["buckets"]["b"]["keys"] == 64
        await nc.close()
        print(f"\nkv edge heap [{side}] (-X heapsize=240000, .mpy): ready {ready} B, synced {synced} B, "
              f"after 40 writes {after['alloc']} B ({after['free']} B free)")

    run(body(), 60)


_CODE_SCRIPT = r"""
import gc, sys
sys.path.append(".frozen")
import asyncio
gc.collect(); a0 = gc.mem_alloc()
from edge import proto, subjects, compat
from edge.leaf import broker, runner, listener, uplink, robust, link
gc.collect(); a1 = gc.mem_alloc()
from edge import flashlog
gc.collect(); a2 = gc.mem_alloc()
from edge.kvcache import cache, store, sync, hlc
gc.collect(); a3 = gc.mem_alloc()
print("RESULT leaf=%d flashlog=%d kvcache=%d" % (a1 - a0, a2 - a1, a3 - a2))
"""


def test_code_heap_of_the_edge_with_kv(tmp_path):
    mpy = _mpy_tree(tmp_path / "mpy")
    proc = subprocess.run([micropython(), "-X", "heapsize=1M", "-c", _CODE_SCRIPT], capture_output=True, text=True,
                          timeout=60, cwd=str(tmp_path), env=dict(os.environ, MICROPYPATH=f"{mpy}:.frozen"))
    m = re.search(r"RESULT leaf=(\d+) flashlog=(\d+) kvcache=(\d+)", proc.stdout)
    assert m, proc.stdout + proc.stderr
    leaf, flog, kvc = (int(x) for x in m.groups())
    assert leaf > 0 and flog > 0 and kvc > 0
    print(f"\ncode on the heap from .mpy: leaf (proto, broker, runner, listener, uplink) {leaf} B, "
          f"flashlog {flog} B, kvcache {kvc} B")
