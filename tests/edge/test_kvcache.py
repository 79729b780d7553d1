"""The offline KV cache (edge/kvcache) on real MicroPython edges against a JetStream hub (nats-server and ours).

Scenarios of issue 6: offline reads after a reboot with the hub down; two and three partitioned edges plus
hub-side writes converging per policy (lww, hub_wins, callback) with every conflict reported; TTL on edge and hub;
SIGKILL during a sync leaving a consistent cache. The edges are driven through their LAN port by
tests/edge/kvcache_app.py; the hub bucket is read and written with nats-py.
"""

from __future__ import annotations

import asyncio
import json

import nats
import pytest

from tests.compat.harness import free_port, run
from tests.edge.edgeharness import Edge, JsHub
from tests.edge.kvharness import (
    APP_PATH,
    Gate,
    ctl,
    edge_dump,
    edge_idle,
    hub_dump,
    hub_value,
    kv_edge_config,
    start_edge,
    wait_for,
)

# The frozen32 variants of the partition tests run at 60 KB, where after the heal a fragmented heap used to have no
# free block of 0.6-1 KB for the test app's answer to its LAN client (14 failures in 40 runs of the four on main
# 9e3e241, 4 in 40 after the KV session and parser changes). Since a big payload is written to the link in parts
# (edge/proto.py PARTS_FROM), test_partitioned_edges_converge_per_policy passed 20 of 20 rounds in each of its
# three variants and runs without xfail. test_two_buckets_each_with_its_policy failed about 1 run in 10: both
# buckets' sessions asked for STREAM.INFO at once after the heal and the second ~1 KB reply found no free block
# (MemoryError in the uplink's read, at every reconnect); since those requests go one bucket at a time
# (edge/kvcache/sync.py Sync._api) it passed 20 of 20 runs, and 30 of 30 of a copy that printed the edge's output,
# and runs without xfail (docs/benchmarks.md).


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


@pytest.fixture
def gates():
    made = []

    def make(port):
        g = Gate(port)
        made.append(g)
        return g

    yield make
    for g in made:
        g.close()


async def bucket(hub: JsHub, name: str = "b"):
    nc = await nats.connect(hub.url)
    js = nc.jetstream(timeout=5)
    kv = await js.create_key_value(bucket=name, direct=True, limit_marker_ttl=1)
    return nc, kv


@pytest.mark.device
def test_offline_reads_after_reboot_with_hub_down(side, jshub, started, tmp_path):
    work = tmp_path / "e1"
    cfg = kv_edge_config("e1", free_port(), jshub.leaf_port, {"b": {"policy": "lww"}})

    async def online_phase():
        nc, kv = await bucket(jshub)
        for i in range(20):
            await kv.put(f"cfg.k{i}", f"v{i}".encode())
        await kv.delete("cfg.k3")
        edge = start_edge(cfg, work, started)
        edge.wait_line(r"kv synced bucket=b", timeout=10)
        await ctl(edge, "put", key="local.a", value="made-online")
        await wait_for(lambda: edge_idle(edge), 10, "the local write to reach the hub")
        assert (await kv.get("local.a")).value == b"made-online"
        # An explicit flush, so that what the edge logged about local.a (its write, then the hub's revision of it)
        # is on flash before the stop below: the group commit alone may come after it (flush_ms).
        await ctl(edge, "put", key="local.b", value="flushed", flush=True)
        await nc.close()
        return edge

    edge = run(online_phase(), 40)
    edge.stop()
    jshub.stop()
    expected = {f"cfg.k{i}": f"v{i}" for i in range(20) if i != 3}
    expected["local.a"] = "made-online"
    expected["local.b"] = "flushed"

    async def offline_phase(round_no):
        e = start_edge(cfg, work, started)
        dump = await edge_dump(e)
        assert dump == expected
        st = (await ctl(e, "status"))["buckets"]["b"]
        assert not st["online"] and st["last_sync_rev"] >= 21
        assert (await ctl(e, "get", key="cfg.k3"))["value"] is None
        # Durable on return with an explicit flush; else once the group commit (flush_ms, 50 ms) wrote it to flash.
        written = st["flash_written"]
        await ctl(e, "put", key=f"offline.{round_no}", value=f"written-offline-{round_no}", flush=round_no == 1)
        if round_no != 1:
            async def on_flash():
                return (await ctl(e, "status"))["buckets"]["b"]["flash_written"] > written

            await wait_for(on_flash, 5, "the group commit to write the offline put to flash")
        expected[f"offline.{round_no}"] = f"written-offline-{round_no}"
        e.stop()  # SIGTERM ends MicroPython at once: only what is on flash survives

    run(offline_phase(1), 30)
    run(offline_phase(2), 30)

    async def heal():
        jshub.start()
        e = start_edge(cfg, work, started)
        assert (await edge_dump(e)) == expected
        await wait_for(lambda: edge_idle(e), 20, "the offline writes to reach the hub")
        nc, kv = await bucket(jshub)
        assert await hub_dump(kv) == expected
        await nc.close()

    run(heal(), 40)


# ---- partitions ------------------------------------------------------------------------------------

def expected_after_heal(policy: str, n: int) -> dict[str, str | None]:
    edges = [f"e{i}" for i in range(n)]
    if policy == "lww":
        exp = {"k0": f"seed,e{n - 1}", "k3": "seed,hub", "k4": f"seed,e{n - 1}"}
    elif policy == "hub_wins":  # edges heal in order: e0 reaches the hub first
        exp = {"k0": "seed,e0", "k3": "seed,hub", "k4": "seed,hub"}
    else:  # the callback merges comma-separated sets
        exp = {"k0": ",".join(sorted(edges + ["seed"])), "k3": ",".join(sorted(edges + ["hub", "seed"])),
               "k4": ",".join(sorted(edges + ["hub", "seed"]))}
    exp.update({"k1": "seed,e0", "k2": None})
    for i in range(n):
        exp[f"own{i}"] = f"e{i}"
    return exp


async def partition_scenario(side, jshub, started, gates, tmp_path, policy, n):
    nc, kv = await bucket(jshub)
    for k in ("k0", "k1", "k2", "k3", "k4"):
        await kv.put(k, b"seed")
    reports: list[dict] = []

    async def on_report(m):
        reports.append(json.loads(m.data))

    await nc.subscribe("$EDGE.*.kv.conflict", cb=on_report)
    edges, gs = [], []
    for i in range(n):
        g = gates(jshub.leaf_port)
        cfg = kv_edge_config(f"e{i}", free_port(), g.port, {"b": {"policy": policy}})
        gs.append(g)
        edges.append(start_edge(cfg, tmp_path / f"e{i}", started))
    for e in edges:
        e.wait_line(r"kv synced bucket=b", timeout=15)
        assert (await ctl(e, "get", key="k0"))["value"] == "seed"
    for g in gs:
        g.partition()
    for e in edges:
        await wait_for(lambda e=e: ctl_offline(e), 10, "the edge to notice the partition")

    async def each(fn):
        for i, e in enumerate(edges):
            await fn(i, e)
            await asyncio.sleep(0.03)  # distinct HLC wall times, in this order

    await each(lambda i, e: ctl(e, "put", key="k0", value=f"seed,e{i}"))
    await ctl(edges[0], "put", key="k1", value="seed,e0")
    await ctl(edges[1], "delete", key="k2")
    await each(lambda i, e: ctl(e, "put", key="k3", value=f"seed,e{i}"))
    await asyncio.sleep(0.03)  # the hub's writes come later in wall time than the edges' k3 ...
    await kv.put("k3", b"seed,hub")
    await kv.put("k4", b"seed,hub")
    await asyncio.sleep(0.03)  # ... and earlier than their k4
    await each(lambda i, e: ctl(e, "put", key="k4", value=f"seed,e{i}"))
    await each(lambda i, e: ctl(e, "put", key=f"own{i}", value=f"e{i}"))
    for e in edges:  # still partitioned: reads are local writes
        st = (await ctl(e, "status"))["buckets"]["b"]
        assert not st["online"] and st["dirty"] >= 4
    for i, (e, g) in enumerate(zip(edges, gs, strict=True)):
        g.heal()
        await wait_for(lambda e=e: edge_idle(e), 20, f"edge e{i} to push its offline writes")
    exp = {k: v for k, v in expected_after_heal(policy, n).items() if v is not None}

    async def converged():
        dumps = [await edge_dump(e) for e in edges]
        hub = await hub_dump(kv)
        return hub == exp and all(d == exp for d in dumps) and (hub, dumps)

    await wait_for(converged, 20, f"every edge and the hub to hold {exp}")
    for e in edges:
        assert await edge_idle(e)
    # conflicts: reported to the hub and kept locally, on the contested keys only
    contested = {"k0", "k3", "k4"}

    async def reported():
        return {r["key"] for r in reports} >= contested

    await wait_for(reported, 5, "conflict reports")
    assert {r["key"] for r in reports} <= contested
    for r in reports:
        assert r["policy"] == policy and r["bucket"] == "b" and r["edge"] in {f"e{i}" for i in range(n)}
        assert r["winner"] in ("hub", "edge", "merged") and r["hub_rev"] > 0 and r["local_hlc"] and r["hub_hlc"]
        if policy == "hub_wins":
            assert r["winner"] == "hub"
        elif policy == "callback":
            assert r["winner"] == "merged"
        else:  # lww: the later stamp won
            assert (r["winner"] == "edge") == (_stamp(r["local_hlc"]) > _stamp(r["hub_hlc"]))
    local = 0
    for e in edges:
        st = await ctl(e, "status")
        recent = (await ctl(e, "recent"))["recent"]
        local += st["conflicts"]
        assert st["conflicts"] == len([r for r in reports if r["edge"] == e.cfg["name"]])
        assert len(recent) == min(8, st["conflicts"])
    assert local == len(reports)
    await nc.close()


async def ctl_offline(e):
    return not any(b["online"] for b in (await ctl(e, "status"))["buckets"].values())


def _stamp(text: str):
    ms, c, node = text.split("-", 2)
    return int(ms), int(c), node


@pytest.mark.device(slow=True)
@pytest.mark.parametrize("policy, n", [("lww", 3), ("hub_wins", 2), ("callback", 2)])
def test_partitioned_edges_converge_per_policy(side, jshub, started, gates, tmp_path, policy, n):
    run(partition_scenario(side, jshub, started, gates, tmp_path, policy, n), 100)


@pytest.mark.slow
@pytest.mark.parametrize("policy, n", [("lww", 2), ("hub_wins", 3), ("callback", 3)])
def test_partitioned_edges_converge_per_policy_more(side, jshub, started, gates, tmp_path, policy, n):
    run(partition_scenario(side, jshub, started, gates, tmp_path, policy, n), 110)


@pytest.mark.device
def test_small_cache_evicts_clean_keys_and_fetches_them_from_the_hub(side, jshub, started, tmp_path):
    async def body():
        nc, kv = await bucket(jshub)
        for i in range(40):
            await kv.put(f"k{i:02d}", f"v{i}".encode())
        cfg = kv_edge_config("e1", free_port(), jshub.leaf_port, {"b": {"max_keys": 16}})
        e = start_edge(cfg, tmp_path / "e1", started)
        e.wait_line(r"kv synced bucket=b", timeout=10)
        st = (await ctl(e, "status"))["buckets"]["b"]
        assert st["keys"] <= 16 and st["evicted"] >= 24 and st["last_sync_rev"] == 40
        dump = await edge_dump(e)
        assert all(v == f"v{int(k[1:])}" for k, v in dump.items())
        missing = next(f"k{i:02d}" for i in range(40) if f"k{i:02d}" not in dump)
        assert (await ctl(e, "get", key=missing))["value"] is None  # get() is local only
        assert (await ctl(e, "fetch", key=missing))["value"] == f"v{int(missing[1:])}"
        assert (await ctl(e, "get", key=missing))["value"] == f"v{int(missing[1:])}"  # cached now
        assert (await ctl(e, "fetch", key="never"))["value"] is None
        evicted = [f"k{i:02d}" for i in range(40) if f"k{i:02d}" not in dump and f"k{i:02d}" != missing][-1]
        await ctl(e, "put", key=evicted, value="edge")  # a write to an evicted key: no false conflict
        await wait_for(lambda: edge_idle(e), 10, "the write to reach the hub")
        assert await hub_value(kv, evicted) == b"edge"
        await ctl(e, "purge", key=evicted)  # KV-Operation: PURGE + Nats-Rollup: sub, with the CAS header
        await ctl(e, "delete", key=missing)
        await wait_for(lambda: edge_idle(e), 10, "the purge and the delete to reach the hub")
        assert await hub_value(kv, evicted) is None and await hub_value(kv, missing) is None
        assert (await ctl(e, "status"))["conflicts"] == 0
        await nc.close()

    run(body(), 60)


def test_live_burst_of_hub_writes_reaches_the_edge(side, jshub, started, tmp_path):
    # 3,000 hub writes while the edge is live: they come through the push consumer (flow control answered),
    # in order, with no gap.
    async def body():
        nc, kv = await bucket(jshub)
        cfg = kv_edge_config("e1", free_port(), jshub.leaf_port, {"b": {"max_keys": 4000, "max_bytes": 200000}})
        # 3,000 cached keys are far past a device budget; the unix port's default 2 MB heap fragmented once on a
        # 16 KB allocation while paging the dump (CI, 2026-11-26), so this test gives the edge room.
        e = start_edge(cfg, tmp_path / "e1", started, heapsize="8M")
        e.wait_line(r"kv synced bucket=b", timeout=10)
        start = len(e.lines)
        for i in range(3000):
            await nc.publish(f"$KV.b.live.{i:04d}", f"v{i}".encode())
        await nc.flush()

        async def arrived():
            st = (await ctl(e, "status"))["buckets"]["b"]
            return st["keys"] == 3000 and st["last_sync_rev"] == 3000

        await wait_for(arrived, 30, "3,000 live hub writes on the edge")
        dump = await edge_dump(e)
        assert dump == {f"live.{i:04d}": f"v{i}" for i in range(3000)}
        if not any("uplink down" in ln for ln in e.lines[start:]):  # a loaded machine may drop the link
            assert not any("kv sync bucket=b: consumer" in ln for ln in e.lines[start:]), e.output()
        await nc.close()

    run(body(), 60)


@pytest.mark.device(slow=True)
def test_two_buckets_each_with_its_policy(side, jshub, started, gates, tmp_path):
    async def body():
        nc, cfg_kv = await bucket(jshub, "cfg")
        _, st_kv = await bucket(jshub, "st")
        await cfg_kv.put("mode", b"seed")
        await st_kv.put("mode", b"seed")
        g = gates(jshub.leaf_port)
        e = start_edge(kv_edge_config("e1", free_port(), g.port, {"cfg": {"policy": "hub_wins"},
                                                                   "st": {"policy": "lww"}}), tmp_path / "e1", started)
        e.wait_line(r"kv synced bucket=cfg", timeout=10)
        e.wait_line(r"kv synced bucket=st", timeout=10)
        g.partition()
        await wait_for(lambda: ctl_offline(e), 10, "the edge to notice the partition")
        await cfg_kv.put("mode", b"hub-early")
        await st_kv.put("mode", b"hub-early")
        await asyncio.sleep(0.05)  # not a wait for an event: the edge's writes get a later wall time (lww)
        await ctl(e, "put", bucket="cfg", key="mode", value="edge-late")
        await ctl(e, "put", bucket="st", key="mode", value="edge-late")
        g.heal()

        async def settled():
            a = (await ctl(e, "get", bucket="cfg", key="mode"))["value"]
            b = (await ctl(e, "get", bucket="st", key="mode"))["value"]
            return (a, b, await hub_value(cfg_kv, "mode"), await hub_value(st_kv, "mode")) == (
                "hub-early", "edge-late", b"hub-early", b"edge-late")

        await wait_for(settled, 15, "hub_wins in cfg and lww in st")
        st = (await ctl(e, "status"))["buckets"]
        assert st["cfg"]["conflicts"] == 1 and st["st"]["conflicts"] == 1
        await nc.close()

    run(body(), 60)


# ---- TTL -----------------------------------------------------------------------------------------

@pytest.mark.device
def test_ttl_key_disappears_on_edge_and_hub(side, jshub, started, tmp_path):
    async def body():
        nc, kv = await bucket(jshub)
        statuses = []

        async def on_status(m):
            statuses.append(json.loads(m.data))

        await nc.subscribe("$EDGE.e1.kv", cb=on_status)
        e = start_edge(kv_edge_config("e1", free_port(), jshub.leaf_port, {"b": {}}, status=0.3), tmp_path / "e1",
                       started)
        e.wait_line(r"kv synced bucket=b", timeout=10)
        await ctl(e, "watch", pattern=">")
        await ctl(e, "put", key="short", value="edge-ttl", ttl=2)
        await ctl(e, "put", key="long", value="stays")
        await wait_for(lambda: edge_idle(e), 10, "the TTL write to reach the hub")
        entry = await kv.get("short")
        assert entry.value == b"edge-ttl"
        await _put_ttl(nc, "hubshort", b"hub-ttl", 2)
        await wait_for(lambda: _edge_value(e, "hubshort", "hub-ttl"), 5, "the hub's TTL key on the edge")

        async def gone():
            edge_short = (await ctl(e, "get", key="short"))["value"]
            edge_hub = (await ctl(e, "get", key="hubshort"))["value"]
            hub = await hub_dump(kv)
            return edge_short is None and edge_hub is None and "short" not in hub and "hubshort" not in hub
        await wait_for(gone, 10, "both TTL keys (2 s) to disappear on the edge and on the hub", interval=0.2)
        assert await hub_value(kv, "short") is None and await hub_value(kv, "hubshort") is None
        assert (await ctl(e, "get", key="long"))["value"] == "stays"
        assert (await kv.get("long")).value == b"stays"
        events = (await ctl(e, "events"))["events"]
        assert ["PUT", "short", "edge-ttl"] in events and ["DEL", "short", None] in events
        assert ["PUT", "hubshort", "hub-ttl"] in events and ["DEL", "hubshort", None] in events
        # the cache's status reaches the hub beside the other $EDGE.<name>.<kind> messages (every 0.3 s: wait for
        # one sent after the TTL keys went)
        async def one_key():
            return statuses and statuses[-1]["buckets"]["b"]["keys"] == 1
        await wait_for(one_key, 5, "a status with one key")
        last = statuses[-1]["buckets"]["b"]
        assert last["online"] and last["keys"] == 1 and last["dirty"] == 0 and last["last_sync_rev"] >= 3
        assert {"conflicts", "synced", "evicted", "flash_bytes", "flash_written"} <= set(last)
        await nc.close()

    run(body(), 60)


async def _put_ttl(nc, key, value, ttl):
    ack = await nc.request(f"$KV.b.{key}", value, headers={"Nats-TTL": str(ttl)}, timeout=3)
    assert json.loads(ack.data)["seq"] > 0


async def _edge_value(e, key, value):
    return (await ctl(e, "get", key=key))["value"] == value


# ---- power cuts ------------------------------------------------------------------------------------

def test_sigkill_during_sync_leaves_a_consistent_cache(side, jshub, started, tmp_path):
    # Kill -9 the edge while it catches up 1500 hub keys, then while it pushes 300 offline writes; after each
    # kill the cache read offline holds only values the hub really had (or the edge wrote), and once the link
    # is back every edge key equals the hub's.
    work = tmp_path / "e1"
    port = free_port()

    async def body():
        nc, kv = await bucket(jshub)
        js = nc.jetstream()
        for i in range(1500):
            await js.publish(f"$KV.b.h{i}", f"hub{i}".encode())
        online = kv_edge_config("e1", port, jshub.leaf_port, {"b": {"max_keys": 4000, "max_bytes": 200000}})
        offline = dict(online, hub=None)
        for delay in (0.05, 0.15, 0.3):
            e = start_edge(online, work, started)
            e.wait_line(r"uplink up", timeout=10)
            await asyncio.sleep(delay)  # timed on purpose: kills at three points of the catch-up
            e.proc.kill()
            e.proc.wait()
            e = start_edge(offline, work, started)
            dump = await edge_dump(e)
            assert all(v == f"hub{k[1:]}" for k, v in dump.items()), "a cached value the hub never had"
            e.stop()
        e = start_edge(offline, work, started)
        await ctl(e, "bulk", n=300, prefix="o", value="offline")
        e.stop()
        e = start_edge(online, work, started)
        e.wait_line(r"kv synced bucket=b", timeout=20)
        await asyncio.sleep(0.05)  # timed on purpose: the kill lands while the 300 offline writes are pushed
        e.proc.kill()
        e.proc.wait()
        e = start_edge(offline, work, started)
        dump = await edge_dump(e)
        assert all(v == (f"hub{k[1:]}" if k[0] == "h" else "offline") for k, v in dump.items())
        assert sum(1 for k in dump if k[0] == "o") == 300  # offline writes survive the kill, pushed or not
        e.stop()
        e = start_edge(online, work, started)
        await wait_for(lambda: edge_idle(e), 30, "the edge to finish its sync")
        expected = {f"h{i}": f"hub{i}" for i in range(1500)}
        expected.update({f"o{i}": "offline" for i in range(300)})
        assert await edge_dump(e) == expected
        assert await hub_dump(kv) == expected
        st = (await ctl(e, "status"))["buckets"]["b"]
        assert st["conflicts"] == 0 and st["dirty"] == 0
        await nc.close()

    run(body(), 110)


def test_bad_kv_config_is_a_one_line_error(tmp_path):
    # Checked with the rest of the config before anything starts: exit code 2, the key named, no traceback.
    cfg = kv_edge_config("e1", free_port(), None, {"b": {"policy": "first-come"}})
    e = Edge(cfg, tmp_path / "bad", extra_path=APP_PATH).start(wait=False)
    try:
        assert e.proc.wait(timeout=10) == 2
        e._thread.join(timeout=2)
        assert e.lines == ['config: "kv.buckets.b.policy": expected one of hub_wins, lww, callback, got "first-come"']
    finally:
        e.stop()
