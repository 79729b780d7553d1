"""edge/kvcache: store (flash log + snapshot), HLC, hub message parsing, conflict decisions, API checks, config.

Plain test functions: pytest runs them on CPython, tests/unit/test_kvcache_mp.py runs the same functions on
MicroPython (a POSIX folder, then littlefs on an emulated ESP32 flash partition: tests/mp/kvcache_lfs.py sets BASE
to the mounted volume). No pytest imports, no fixtures: MicroPython has neither.
"""

import asyncio
import binascii
import os

from edge.kvcache import hlc
from edge.kvcache.cache import KVCache
from edge.kvcache.config import check_kv
from edge.kvcache.store import OP_DEL, OP_PURGE, OP_PUT, R_LOCAL, R_SET, KVError, Store, decode, encode
from edge.kvcache.sync import Headers, _headers, rfc3339_ms, start, ttl_ms
from edge.leaf.broker import Leaf
from edge.leaf.config import ConfigError
from edge.proto import encode_headers

BASE = ["/tmp"]  # where each test makes its own folder; the littlefs runner points it at the mount


def _tmpdir(tag):
    path = f"{BASE[0]}/kvs-{tag}-{binascii.hexlify(os.urandom(4)).decode()}"
    _rmtree(path)
    return path


def _rmtree(path):
    try:
        names = os.listdir(path)
    except OSError:
        return
    for n in names:
        p = path + "/" + n
        if os.stat(p)[0] & 0x4000:
            _rmtree(p)
        else:
            os.remove(p)
    os.rmdir(path)


def _raises(exc, fn, *args):
    try:
        fn(*args)
    except exc as e:
        return str(e)
    raise AssertionError(f"{exc.__name__} not raised")


class _Wall:
    # A settable wall clock (ms) for TTL and HLC tests.
    def __init__(self, ms=1_700_000_000_000):
        self.ms = ms

    def __call__(self):
        return self.ms


def _state(s):
    # Everything a store holds, comparable across a reopen.
    out = {}
    for k, e in s.entries.items():
        d = s.dirty.get(k)
        out[k] = (e[0], e[1], e[2], tuple(d) if d else None)
    return out, s.last_rev


# ---- records, HLC, parsing ------------------------------------------------------------------------

def test_records_round_trip():
    rec = encode(R_LOCAL, b"a.b", 7, 123, b"val\x00", OP_PURGE, 5, 9, b"1-2-e1")
    assert decode(rec) == (R_LOCAL, OP_PURGE, "a.b", 7, 5, 123, 9, "1-2-e1", b"val\x00")
    assert decode(encode(R_SET, b"k", 3, 0, b""))[:4] == (R_SET, 0, "k", 3)
    assert "short" in _raises(KVError, decode, b"\x01\x00")
    assert "lengths" in _raises(KVError, decode, encode(R_SET, b"kkkk")[:33])


def test_hlc_is_monotonic_and_ordered_across_nodes():
    wall = _Wall(1000)
    a = hlc.Clock("a", wall)
    s1 = a.now()
    s2 = a.now()  # same ms: the counter moves
    wall.ms = 500  # the wall clock goes back (an ESP32 before NTP)
    s3 = a.now()
    assert s1 < s2 < s3 and s3[0] == 1000
    a.observe((5000, 7, "b"))  # a stamp from elsewhere pulls the clock forward
    s4 = a.now()
    assert s4 > (5000, 7, "b") and s4[2] == "a"
    assert hlc.parse(hlc.format(s4)) == s4
    assert hlc.parse("12-3-node-with-dashes") == (12, 3, "node-with-dashes")
    for bad in ("", "x-1-a", "1-y-a", "12"):
        assert hlc.parse(bad) is None
    # ties on time and counter break on the node name, the same way everywhere
    assert (10, 0, "e1") < (10, 0, "e2") and (10, 0, "") < (10, 0, "e1")


def test_rfc3339_and_nats_ttl():
    assert rfc3339_ms("1970-01-01T00:00:00Z") == 0
    assert rfc3339_ms("2026-11-26T07:33:06.338283717Z") == 1795678386338
    assert rfc3339_ms("2026-11-26T08:33:06.5+01:00") == 1795678386500
    assert rfc3339_ms("2000-02-29T00:00:01Z") == 951782401000
    assert rfc3339_ms("garbage") == 0
    assert ttl_ms("5") == 5000 and ttl_ms("2s") == 2000 and ttl_ms("1h30m") == 5400000 and ttl_ms("500ms") == 500
    assert ttl_ms("1.5s") == 1500 and ttl_ms(None) == 0 and ttl_ms("never") == 0 and ttl_ms("5x") == 0


def test_header_lookup_in_raw_blocks():
    st, h = _headers(b"NATS/1.0 204 EOB\r\nNats-Num-Pending: 9\r\nNats-Last-Sequence: 3\r\n\r\n")
    assert st == 204 and h.get("Nats-Num-Pending") == "9" and h.get("Nats-Last-Sequence") == "3"
    st, h = _headers(encode_headers({"Nats-Subject": "$KV.b.k", "KV-Operation": "DEL", "Nats-TTL": "5s"}))
    assert st is None and h.get("Nats-Subject") == "$KV.b.k" and h.get("KV-Operation") == "DEL"
    assert "Nats-TTL" in h and "Nats-Marker-Reason" not in h and h.get("Edge-HLC", "none") == "none"
    assert h.get("TTL") is None  # whole names only
    assert _headers(None)[0] is None and _headers(b"HTTP/1.1 200")[0] == 0
    assert _headers(b"NATS/1.0 404 No Messages\r\n\r\n")[0] == 404


# ---- the store ------------------------------------------------------------------------------------

def test_local_writes_survive_reopen():
    p = _tmpdir("reopen")
    wall = _Wall()
    s = Store(p, wall=wall)
    s.local_write("a", OP_PUT, b"1", 0, "1-0-e")
    s.local_write("b", OP_PUT, b"2", 10, "1-1-e")
    s.local_write("c", OP_PUT, b"3", 0, "1-2-e")
    s.local_write("c", OP_DEL, None, 0, "1-3-e")
    s.local_write("d", OP_PURGE, None, 0, "1-4-e")
    before = _state(s)
    s.close()
    s = Store(p, wall=wall)
    assert _state(s) == before
    assert s.get("a")[0] == b"1" and s.get("b")[0] == b"2" and s.get("c") is None and s.get("d") is None
    assert s.dirty["c"][0] == OP_DEL and s.dirty["d"][0] == OP_PURGE and s.max_stamp == (1, 4, "e")
    wall.ms += 11000  # b's TTL runs out: gone for get() at once, dropped (not pushed) on flash by sweep()
    assert s.get("b") is None and "b" in s.dirty
    assert s.sweep() == ["b"] and "b" not in s.dirty
    s.close()
    s = Store(p, wall=wall)
    assert "b" not in s.entries and s.get("a")[0] == b"1"
    s.close()


def test_unflushed_writes_are_lost_only_as_a_whole_tail():
    p = _tmpdir("tail")
    s = Store(p, flush_every=1000, flush_ms=60000)
    s.local_write("a", OP_PUT, b"1", 0, "1-0-e")
    s.flush()
    s.local_write("b", OP_PUT, b"2", 0, "1-1-e")  # buffered only: a power cut now loses it
    s.log._buf = []  # what a power cut leaves: nothing of the buffer reached flash
    s.log._buf_bytes = 0
    s.log.last_seq = s.log.durable_seq
    s2 = Store(p)
    assert s2.get("a")[0] == b"1" and s2.get("b") is None
    s2.close()


def test_hub_changes_move_the_watermark_only_in_order():
    p = _tmpdir("hub")
    s = Store(p)
    s.hub_set("a", b"1", 5, 0)
    s.hub_set("b", b"2", 9, 0, in_order=False)  # a single get: the revisions between are not applied
    assert s.last_rev == 5
    s.hub_del("a", 7)
    s.saw(8)
    s.mark_synced()
    assert s.last_rev == 8 and s.get("a") is None and s.get("b")[0] == b"2"
    s.close()
    s = Store(p)
    assert s.last_rev == 8 and s.get("b")[1] == 9 and "a" not in s.entries
    s.forget_hub()  # the bucket was recreated on the hub
    assert s.last_rev == 0 and not s.entries
    s.close()
    s = Store(p)
    assert s.last_rev == 0 and not s.entries
    s.close()


def test_pushes_clean_or_rebase_by_stamp():
    p = _tmpdir("push")
    s = Store(p)
    s.hub_set("k", b"hub", 4, 0)
    s.local_write("k", OP_PUT, b"v1", 0, "10-0-e")
    assert s.dirty["k"][1:3] == (4, 4)  # base and expect: the hub revision the write started from
    s.local_write("k", OP_PUT, b"v2", 0, "11-0-e")  # a second write before the push: same base
    assert s.dirty["k"][1:3] == (4, 4)
    s.pushed("k", 6, "10-0-e")  # the first write reached the hub: the second follows it without a conflict
    assert s.dirty["k"][1:] == (6, 6, "11-0-e", 0) and s.get("k")[0] == b"v2"
    s.pushed("k", 5, "10-0-e")  # a stale answer changes nothing
    assert s.dirty["k"][2] == 6
    s.pushed("k", 7, "11-0-e")
    assert "k" not in s.dirty and s.get("k")[:2] == [b"v2", 7]
    s.local_write("gone", OP_DEL, None, 0, "12-0-e")
    s.pushed("gone", 8, "12-0-e")
    assert "gone" not in s.entries
    s.local_write("lost", OP_PUT, b"x", 0, "13-0-e")
    s.drop_local("lost")
    s.close()
    s = Store(p)
    assert s.get("k")[:2] == [b"v2", 7] and not s.dirty and "lost" not in s.entries
    s.close()


def test_bounds_evict_clean_entries_least_recently_used():
    p = _tmpdir("bound")
    s = Store(p, max_keys=8, max_bytes=4096)
    for i in range(8):
        s.hub_set(f"k{i}", b"v", i + 1, 0)
    s.get("k0")  # recently used: stays
    s.local_write("mine", OP_PUT, b"x", 0, "1-0-e")
    assert len(s.entries) <= 8 and "k0" in s.entries and "k1" not in s.entries and s.evicted >= 1
    for i in range(8, 30):
        s.hub_set(f"k{i}", b"v", i + 1, 0)
    assert len(s.entries) <= 8 and "mine" in s.entries and s.get("mine")[0] == b"x"
    # max_bytes: a big value pushes clean ones out
    s.hub_set("big", b"B" * 4000, 100, 0)
    assert s.bytes <= 4096 and "big" in s.entries and "mine" in s.entries
    s.close()


def test_a_cache_full_of_unsynced_writes_refuses_more():
    p = _tmpdir("full")
    s = Store(p, max_keys=3)
    for i in range(3):
        s.local_write(f"d{i}", OP_PUT, b"x", 0, f"1-{i}-e")
    assert "cache full" in _raises(KVError, s.local_write, "d9", OP_PUT, b"x", 0, "1-9-e")
    s.local_write("d1", OP_PUT, b"y", 0, "1-10-e")  # an existing key still takes writes
    assert not s.hub_set("h", b"v", 1, 0) and s.skipped == 1 and "h" not in s.entries
    s.close()


def test_compaction_bounds_the_log_and_keeps_the_state():
    p = _tmpdir("compact")
    s = Store(p, max_keys=64, max_bytes=8192, log_bytes=16384, segment_size=4096, flush_every=4)
    for i in range(600):
        k = f"k{i % 40}"
        if i % 7 == 0:
            s.local_write(k, OP_PUT, b"local-%d" % i, 0, f"{i}-0-e")
        else:
            s.hub_set(k, b"hub-%d" % i, i + 1, 0)
        s.maybe_flush(0)
    assert s.snap_seq > 0 and s.log.size_bytes <= 16384
    before = _state(s)
    s.close()
    s = Store(p, max_keys=64, max_bytes=8192, log_bytes=16384, segment_size=4096)
    assert _state(s) == before
    s.close()


def test_a_corrupt_snapshot_is_ignored_not_fatal():
    p = _tmpdir("badsnap")
    s = Store(p, log_bytes=16384, segment_size=4096)
    s.hub_set("a", b"1", 1, 0)
    s.compact()
    s.hub_set("b", b"2", 2, 0)
    s.close()
    with open(p + "/snap", "rb") as f:
        data = bytearray(f.read())
    data[20] ^= 0xFF
    with open(p + "/snap", "wb") as f:
        f.write(data)
    s = Store(p, log_bytes=16384, segment_size=4096)
    assert "a" not in s.entries  # covered only by the bad snapshot
    assert s.get("b")[0] == b"2"
    s.close()


# ---- conflict decisions (edge/kvcache/sync.py, without a hub link) ---------------------------------

def _bucket(tag, policy, resolver=None):
    leaf = Leaf("e1")
    cache = KVCache(leaf, check_kv({"buckets": {"b": {"policy": policy}}, "dir": _tmpdir(tag)}), "unused")
    kv = leaf.kv("b")
    if resolver is not None:
        kv.on_conflict(resolver)
    sync = start(leaf, [kv], lambda s: None)[0]
    return cache, kv, sync


def _hub_msg(sync, key, value, rev, ts, stamp=None, op=None):
    h = {}
    if stamp:
        h["Edge-HLC"] = stamp
    if op:
        h["KV-Operation"] = op
    sync._apply("$KV.b." + key, rev, ts, Headers(encode_headers(h)), value, True)


def _run_conflict(policy, resolver=None):
    async def body():
        cache, kv, sync = _bucket("cf-" + policy, policy, resolver)
        now = hlc.wall_ms()
        _hub_msg(sync, "k", b"seed", 1, now - 5000)
        _hub_msg(sync, "other", b"o", 2, now - 5000)
        kv.put("k", b"mine")  # local write based on revision 1
        _hub_msg(sync, "k", b"older-hub", 3, now - 1000, f"{now - 1000}-0-e2")  # an older stamp than ours
        first = (kv.get("k"), dict(kv.store.dirty.get("k") and {"base": kv.store.dirty["k"][1]} or {}))
        _hub_msg(sync, "k", b"newer-hub", 4, now + 60000, f"{now + 60000}-0-e3")  # a newer stamp
        second = kv.get("k")
        await asyncio.sleep(0)
        status = kv.status()
        recent = list(cache.recent)
        cache.close()
        return first, second, status, recent

    return asyncio.run(body())


def test_lww_keeps_the_later_stamp():
    first, second, status, recent = _run_conflict("lww")
    assert first == (b"mine", {"base": 3})  # ours is later than e2's: kept, pushed over revision 3
    assert second == b"newer-hub"  # e3's is later than ours: taken, the local write dropped
    assert status["dirty"] == 0 and status["conflicts"] == 2 and status["last_sync_rev"] == 4
    assert [r["winner"] for r in recent] == ["edge", "hub"] and recent[0]["hub_rev"] == 3


def test_hub_wins_takes_the_hub_version():
    first, second, status, recent = _run_conflict("hub_wins")
    assert first == (b"older-hub", {}) and second == b"newer-hub"
    assert status["conflicts"] == 1 and [r["winner"] for r in recent] == ["hub"]


def test_callback_merges_and_pushes_the_merge():
    seen = []

    def merge(key, local, hub):
        seen.append((key, local, hub))
        return local + b"+" + hub

    first, second, status, recent = _run_conflict("callback", merge)
    assert seen[0] == ("k", b"mine", b"older-hub") and first == (b"mine+older-hub", {"base": 3})
    assert second == b"mine+older-hub+newer-hub" and status["dirty"] == 1 and status["conflicts"] == 2
    assert [r["winner"] for r in recent] == ["merged", "merged"]


def test_callback_without_resolver_holds_the_write():
    first, second, status, recent = _run_conflict("callback")
    assert first == (b"mine", {"base": 1}) and second == b"mine" and status["conflicts"] == 0 and not recent


def test_own_writes_coming_back_are_not_conflicts():
    async def body():
        cache, kv, sync = _bucket("own", "hub_wins")
        _hub_msg(sync, "k", b"seed", 1, 1000)
        kv.put("k", b"v1")
        s1 = kv.store.dirty["k"][3]
        kv.put("k", b"v2")
        _hub_msg(sync, "k", b"v1", 2, 2000, s1)  # our first write, echoed by the consumer
        assert kv.get("k") == b"v2" and kv.store.dirty["k"][1:3] == (2, 2)
        _hub_msg(sync, "k", b"v2", 3, 3000, kv.store.dirty["k"][3])
        assert "k" not in kv.store.dirty and kv.entry("k").revision == 3 and cache.conflicts == 0
        _hub_msg(sync, "k", b"", 4, 4000, None, "DEL")
        assert kv.get("k") is None
        cache.close()

    asyncio.run(body())


# ---- the API ----------------------------------------------------------------------------------------

def test_api_checks_and_watch():
    async def body():
        leaf = Leaf("e1")
        cache = KVCache(leaf, check_kv({"buckets": {"b": {"max_value": 16}}, "dir": _tmpdir("api")}), "unused")
        cache.start()
        kv = leaf.kv("b")
        events = []
        kv.watch("dev.*", lambda e: events.append((e.op, e.key, e.value)))
        for bad in ("", ".a", "a.", "a..b", "a b", "a*", "ü"):
            assert "invalid key" in _raises(KVError, kv.put, bad, b"x")
        assert "max_value" in _raises(KVError, kv.put, "k", b"x" * 17)
        assert "bytes" in _raises(KVError, kv.put, "k", 5)
        assert "ttl" in _raises(KVError, kv.put, "k", b"x", 0)
        assert "not in the kv config" in _raises(KVError, leaf.kv, "nope")
        kv.put("dev.a", "text")  # str is taken as UTF-8
        kv.create("dev.b", b"2", ttl=5)
        assert "exists" in _raises(KVError, kv.create, "dev.b", b"3")
        assert kv.entry("dev.b").expires > 0
        assert "wrong last revision" in _raises(KVError, kv.update, "dev.b", b"3", 9)
        kv.update("dev.b", b"3", 0)
        kv.put("other", b"x")
        kv.delete("dev.a")
        assert kv.keys() == ["dev.b", "other"] and kv.keys("dev.>") == ["dev.b"]
        assert kv.get("dev.a") is None and kv.entry("dev.b").dirty
        assert kv.entry("dev.b").expires == 0  # a write without a TTL replaces one with (as a new hub message)
        for _ in range(500):  # watch callbacks run in a task of their own
            if len(events) >= 4:
                break
            await asyncio.sleep(0.01)
        assert events == [("PUT", "dev.a", b"text"), ("PUT", "dev.b", b"2"), ("PUT", "dev.b", b"3"),
                          ("DEL", "dev.a", None)]
        st = cache.status()["buckets"]["b"]
        assert st["keys"] == 2 and st["dirty"] == 3 and not st["online"]
        cache.close()
        assert "no KV cache" in _raises(Exception, Leaf("x").kv, "b")

    asyncio.run(body())


def test_config_checks_name_the_key():
    ok = check_kv({"buckets": ["a", "b-2"]})
    assert ok["buckets"]["a"]["policy"] == "lww" and ok["flush_ms"] == 50 and ok["dir"] is None
    assert ok["status_ms"] == 10000
    assert "domain" not in ok["buckets"]["a"]
    full = check_kv({"buckets": {"s": {"policy": "hub_wins", "filter": "dev.*", "max_keys": 10, "domain": "cloud"}},
                     "flush_ms": 5})
    assert full["buckets"]["s"]["filter"] == "dev.*" and full["buckets"]["s"]["segment_size"] == 8192
    assert full["buckets"]["s"]["domain"] == "cloud"
    cases = [
        (5, '"kv": expected an object'),
        ({}, '"kv.buckets": expected an object of bucket settings'),
        ({"buckets": []}, "at least one bucket"),
        ({"buckets": ["a b"]}, '"kv.buckets[0]": expected a bucket name'),
        ({"buckets": {"b": {"policy": "first"}}}, '"kv.buckets.b.policy": expected one of hub_wins, lww, callback'),
        ({"buckets": {"b": {"polcy": "lww"}}}, 'unknown key "kv.buckets.b.polcy"'),
        ({"buckets": {"b": {"max_keys": 0}}}, '"kv.buckets.b.max_keys": expected an integer >= 1'),
        ({"buckets": {"b": {"max_keys": True}}}, '"kv.buckets.b.max_keys"'),
        ({"buckets": {"b": {"filter": "a.>.b"}}}, '"kv.buckets.b.filter"'),
        ({"buckets": {"b": {"domain": "a*"}}}, '"kv.buckets.b.domain": expected a JetStream domain name'),
        ({"buckets": {"b": {"domain": ["cloud"]}}}, '"kv.buckets.b.domain": expected a JetStream domain name'),
        ({"buckets": {"b": {"max_value": 99999}}}, '"kv.buckets.b.max_value": expected at most max_bytes'),
        ({"buckets": {"b": {"log_bytes": 100}}}, '"kv.buckets.b.log_bytes": expected an integer >= 16384'),
        ({"buckets": ["b"], "flush_ms": "x"}, '"kv.flush_ms"'),
        ({"buckets": ["b"], "dir": ""}, '"kv.dir"'),
        ({"buckets": ["b"], "extra": 1}, 'unknown key "kv.extra"'),
        ({"buckets": ["b"], "status": -1}, '"kv.status": expected a number of seconds >= 0'),
        ({"buckets": {"b": {"max_value": 9000, "max_bytes": 99999}}}, "a record must fit a flash segment"),
    ]
    for doc, msg in cases:
        err = _raises(ConfigError, check_kv, doc)
        assert msg in err, (doc, err)
