# edge/kvcache/cache.py — the offline KV cache's API (`kv = leaf.kv("bucket")`) and the manager of the
# configured buckets: local reads and writes, watchers, conflict reports, status, housekeeping.
#
# Rules this file keeps:
# 1. Reads and writes are local and never wait for the hub: get() answers from the cache, put() is logged on
#    flash and returns; edge/kvcache/sync.py carries writes to the hub and hub changes back.
# 2. Values are bytes; keys follow the NATS KV rules (letters, digits, - / _ = .; no leading or trailing dot).
#    Bad keys, values and TTLs raise KVError, with the key named.
# 3. Watch callbacks run in one task, in the order of the changes; at most max_events wait, more are dropped
#    and counted (the leaf's slow-consumer policy). A coroutine callback is awaited.
# 4. Every conflict is counted, kept in a short list (the last MAX_RECENT), printed as an "edge: kv conflict"
#    line and published as JSON on $EDGE.<edge name>.kv.conflict (docs/kvcache.md lists the fields).

import asyncio
import json
import sys

from edge import subjects
from edge.compat import ticks_diff, ticks_ms
from edge.kvcache import hlc
from edge.kvcache.store import OP_DEL, OP_PURGE, OP_PUT, KVError, Store

MAX_RECENT = 8
OPS = ("PUT", "DEL", "PURGE")
POLICIES = ("hub_wins", "lww", "callback")


def _valid_key(key):
    if not key or key[0] == "." or key[-1] == "." or len(key) > 255:
        return False
    for c in key:
        if not (c.isalpha() or c.isdigit() or c in "-/_=.") or ord(c) > 127:
            return False
    return ".." not in key


class Entry:
    # What entry(), watch callbacks and conflict callbacks see.
    def __init__(self, bucket, key, value, revision, op, dirty=False, expires=0):
        self.bucket = bucket
        self.key = key
        self.value = value
        self.revision = revision
        self.op = op
        self.dirty = dirty
        self.expires = expires  # wall ms since 1970, 0 = never

    def __repr__(self):
        return "<Entry %s.%s rev=%d %s %r%s>" % (self.bucket, self.key, self.revision, self.op, self.value,
                                                 " dirty" if self.dirty else "")


class Watch:
    def __init__(self, kv, pattern, cb):
        self.kv = kv
        self.pattern = pattern
        self.cb = cb

    def stop(self):
        if self in self.kv.watchers:
            self.kv.watchers.remove(self)


class KV:
    # One bucket. Obtain it with leaf.kv("name") for a bucket listed in the config's "kv" section.
    domain = None  # the JetStream domain of the hub bucket (config "domain"), None: the hub's own
    def __init__(self, cache, name, cfg, store):
        self.cache = cache
        self.name = name
        self.policy = cfg["policy"]
        self.filter = cfg["filter"]
        if "domain" in cfg:
            self.domain = cfg["domain"]
        self.max_value = cfg["max_value"]
        self.store = store
        self.clock = cache.clock
        self.watchers = []
        self.resolver = None  # the callback policy's function
        self.conflicts = 0
        self.sync = None  # edge/kvcache/sync.py, when there is a hub

    # ---- reads ------------------------------------------------------------------------------------

    def get(self, key):
        # The value (bytes), or None when the key is absent, deleted or expired here.
        e = self.store.get(self._key(key))
        return e[0] if e is not None else None

    def entry(self, key):
        key = self._key(key)
        e = self.store.get(key)
        if e is None:
            return None
        return Entry(self.name, key, e[0], e[1], "PUT", key in self.store.dirty, e[2])

    async def fetch(self, key, timeout=2.0):
        # As get(), but a key missing here is asked of the hub when the link is up (and then cached).
        key = self._key(key)
        e = self.store.get(key)
        if e is not None or key in self.store.dirty or self.sync is None or not self.sync.online:
            return e[0] if e is not None else None
        await self.sync.fetch(key, int(timeout * 1000))
        e = self.store.get(key)
        return e[0] if e is not None else None

    def keys(self, pattern=">"):
        pat = self._pattern(pattern)
        out = []
        for k in list(self.store.entries):
            if (pat is None or subjects.match(pat, k.encode())) and self.store.get(k) is not None:
                out.append(k)
        out.sort()
        return out

    # ---- writes -----------------------------------------------------------------------------------

    def put(self, key, value, ttl=None):
        # Stores value under key here at once; the hub gets it as soon as the link allows. ttl: seconds.
        return self._write(self._key(key), OP_PUT, self._value(value), ttl)

    def create(self, key, value, ttl=None):
        key = self._key(key)
        if self.store.get(key) is not None:
            raise KVError("key %s exists" % key)
        return self._write(key, OP_PUT, self._value(value), ttl)

    def update(self, key, value, last, ttl=None):
        # Compare-and-set on the revision this edge knows (a dirty entry keeps the revision it started from).
        key = self._key(key)
        e = self.store.get(key)
        rev = e[1] if e is not None else 0
        if rev != last:
            raise KVError("key %s: wrong last revision %d (have %d)" % (key, last, rev))
        return self._write(key, OP_PUT, self._value(value), ttl)

    def delete(self, key):
        return self._write(self._key(key), OP_DEL, None, None)

    def purge(self, key):
        return self._write(self._key(key), OP_PURGE, None, None)

    def _write(self, key, op, value, ttl):
        if ttl is not None:
            if isinstance(ttl, bool) or not isinstance(ttl, int) or ttl < 1:
                raise KVError("key %s: ttl must be a whole number of seconds >= 1, got %r" % (key, ttl))
        stamp = hlc.format(self.clock.now())
        self.store.local_write(key, op, value, ttl or 0, stamp)
        self.store.maybe_flush(ticks_ms())
        e = self.store.entries.get(key)
        self.cache.changed(self, key, value, e[1] if e else 0, op)
        if self.sync is not None:
            self.sync.wake()

    def _key(self, key):
        if isinstance(key, bytes):
            key = key.decode()
        if not isinstance(key, str) or not _valid_key(key):
            raise KVError("invalid key %r" % (key,))
        return key

    def _value(self, value):
        if isinstance(value, str):
            value = value.encode()
        elif isinstance(value, (bytearray, memoryview)):
            value = bytes(value)
        elif not isinstance(value, bytes):
            raise KVError("value must be bytes, got %s" % type(value).__name__)
        if len(value) > self.max_value:
            raise KVError("value of %d bytes is over max_value (%d)" % (len(value), self.max_value))
        return value

    def _pattern(self, pattern):
        if pattern == ">":
            return None
        p = pattern.encode() if isinstance(pattern, str) else pattern
        if not subjects.valid(p, True):
            raise KVError("invalid key pattern %r" % (pattern,))
        return p

    # ---- watchers and conflicts -------------------------------------------------------------------

    def watch(self, pattern, cb):
        # cb(Entry) for every change of a matching key from now on: local writes, hub changes, expiry.
        w = Watch(self, self._pattern(pattern), cb)
        self.watchers.append(w)
        return w

    def on_conflict(self, fn):
        # The "callback" policy's resolver: fn(key, local bytes or None, hub bytes or None) -> the bytes to
        # keep (None deletes). Local writes of a "callback" bucket wait for it before they go to the hub.
        self.resolver = fn
        if self.sync is not None:
            self.sync.wake()

    async def synced(self, timeout=10.0):
        # Wait until every local write is on the hub and the hub's changes are applied; False on timeout.
        t0 = ticks_ms()
        while self.sync is None or not self.sync.idle():
            if ticks_diff(ticks_ms(), t0) > timeout * 1000:
                return False
            await asyncio.sleep(0.02)
        return True

    def flush(self):
        self.store.flush()

    def status(self):
        s = self.store
        tombstones = 0  # deletes not yet on the hub: cached, but no key
        for d in s.dirty.values():
            if d[0] != OP_PUT:
                tombstones += 1
        sync = self.sync
        return {"keys": len(s.entries) - tombstones, "dirty": len(s.dirty), "bytes": s.bytes,
                "last_sync_rev": s.last_rev, "conflicts": self.conflicts, "online": bool(sync and sync.online),
                "synced": bool(self.sync and self.sync.idle()), "evicted": s.evicted, "skipped": s.skipped,
                "flash_bytes": s.log.size_bytes, "flash_written": s.log.bytes_written}


class KVCache:
    # The configured buckets of one leaf. start() opens them from flash and starts their tasks.
    def __init__(self, leaf, cfg, data_dir, log=None, max_events=32):
        self.leaf = leaf
        self.log = log or (lambda s: None)
        self.clock = hlc.Clock(leaf.name)
        self.buckets = {}
        self.recent = []
        self.conflicts = 0
        self.events_dropped = 0
        self.cb_errors = 0
        self._events = []
        self._max_events = max_events
        self._evtask = None
        self.tasks = []
        self.flush_ms = cfg["flush_ms"]
        self.status_ms = cfg["status_ms"]
        self.status_subject = "$EDGE.%s.kv" % leaf.name
        self.conflict_subject = "$EDGE.%s.kv.conflict" % leaf.name
        root = cfg["dir"] or data_dir + "/kv"
        for name, bc in cfg["buckets"].items():
            store = Store(root + "/" + name, bc["max_keys"], bc["max_bytes"], bc["log_bytes"], bc["segment_size"],
                          cfg["flush_every"], cfg["flush_ms"])
            if store.max_stamp is not None:
                self.clock.observe(store.max_stamp)
            self.buckets[name] = KV(self, name, bc, store)
        leaf.kvcache = self
        # The config checker is needed once (as edge/leaf/runner.py drops edge.leaf.config).
        sys.modules.pop("edge.kvcache.config", None)
        pkg = sys.modules.get("edge.kvcache")
        if pkg is not None and "config" in dir(pkg):
            delattr(pkg, "config")

    def bucket(self, name):
        kv = self.buckets.get(name)
        if kv is None:
            raise KVError("bucket %r is not in the kv config (have %s)" % (name, ", ".join(sorted(self.buckets))))
        return kv

    def start(self):
        # Sync tasks when the leaf has an uplink; housekeeping always. Returns the tasks started.
        up = self.leaf.uplink
        if up is not None:
            from edge.kvcache import sync  # only an edge with a hub pays for the sync code

            for s in sync.start(self.leaf, self.buckets.values(), self.log):
                self.tasks.append(asyncio.create_task(s.run()))
        self.tasks.append(asyncio.create_task(self._housekeeping()))
        return self.tasks

    async def _housekeeping(self):
        # Group commit of every bucket's log, compaction, TTL expiry (once a second), the status message.
        n = 0
        since_status = 0
        while True:
            await asyncio.sleep(self.flush_ms / 1000)
            now = ticks_ms()
            n += self.flush_ms
            since_status += self.flush_ms
            for kv in self.buckets.values():
                kv.store.maybe_flush(now)
                if n >= 1000:
                    for key in kv.store.sweep():
                        self.changed(kv, key, None, 0, OP_DEL)
            if n >= 1000:
                n = 0
            if self.status_ms and since_status >= self.status_ms:
                since_status = 0
                self.publish_status()

    def publish_status(self):
        # On $EDGE.<name>.kv, beside the other layers' $EDGE.<name>.<kind> messages the dashboard reads.
        try:
            self.leaf.publish(self.status_subject, json.dumps(self.status()))
        except Exception as e:  # over max_payload with many buckets: say so, keep the cache going
            self.log("kv status not sent: %r" % (e,))

    def close(self):
        for t in self.tasks:
            t.cancel()
        self.tasks = []
        for kv in self.buckets.values():
            kv.store.close()

    def status(self):
        out = {}
        for name, kv in self.buckets.items():
            out[name] = kv.status()
        return {"buckets": out, "conflicts": self.conflicts, "events_dropped": self.events_dropped}

    # ---- change events --------------------------------------------------------------------------

    def changed(self, kv, key, value, rev, op):
        if not kv.watchers:
            return
        kb = None
        for w in kv.watchers:
            if w.pattern is not None:
                if kb is None:
                    kb = key.encode()
                if not subjects.match(w.pattern, kb):
                    continue
            if len(self._events) >= self._max_events:
                self.events_dropped += 1
                continue
            self._events.append((w, Entry(kv.name, key, value, rev, OPS[op], key in kv.store.dirty)))
            if self._evtask is None:
                self._evtask = asyncio.create_task(self._run_events())

    async def _run_events(self):
        q = self._events
        try:
            while q:
                w, entry = q.pop(0)
                try:
                    r = w.cb(entry)
                    if r is not None and hasattr(r, "send"):
                        await r
                except Exception as e:  # one failing watcher must not stop the others
                    self.cb_errors += 1
                    self.log("kv watch callback failed: %r" % (e,))
        finally:
            self._evtask = None

    def conflict(self, kv, key, winner, local_stamp, hub_stamp, hub_rev):
        kv.conflicts += 1
        self.conflicts += 1
        rep = {"edge": self.leaf.name, "bucket": kv.name, "key": key, "policy": kv.policy, "winner": winner,
               "local_hlc": local_stamp, "hub_hlc": hub_stamp, "hub_rev": hub_rev}
        self.recent.append(rep)
        if len(self.recent) > MAX_RECENT:
            self.recent.pop(0)
        self.log("kv conflict bucket=%s key=%s policy=%s winner=%s local=%s hub=%s rev=%d" % (
            kv.name, key, kv.policy, winner, local_stamp, hub_stamp, hub_rev))
        try:
            self.leaf.publish(self.conflict_subject, json.dumps(rep))
        except Exception as e:  # a report too big for max_payload must not stop the sync
            self.log("kv conflict report not sent: %r" % (e,))
