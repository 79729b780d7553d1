# edge/kvcache/store.py — one bucket's local copy: entries in RAM, every change in the flash log
# (edge/flashlog.py), compacted into a snapshot file.
#
# On flash, in <data>/kv/<bucket>/: `log/` (a FlashLog: one record per change) and `snap` (the whole state at
# one log sequence). Start-up loads the snapshot and replays the log records after it. Rules this file keeps:
# 1. Every change is one log record, written before the change is visible, so what start-up rebuilds is
#    always a state the cache really passed through, whichever flash operation a power cut interrupts. A change is
#    durable once the log has flushed it (group commit: flush_every records or flush_ms).
# 2. Compaction writes the snapshot to `snap.tmp`, flushes it, renames it over `snap` (atomic on littlefs and
#    POSIX), and only then lets the log reclaim the records it covers. The log is flushed first, so no sequence
#    number the snapshot covers can be handed out again after a crash. A snapshot whose CRC does not match is
#    ignored as a whole.
# 3. Bounds: at most max_keys entries and max_bytes of keys + values in RAM. Clean entries (copies of hub data)
#    are evicted least recently used first; dirty entries (local writes not yet on the hub) never are: when only
#    they are left, a local write fails with KVError and a hub change is left out of the cache (it stays on the hub).
# 4. Hub changes are logged for every key, cached or not, so an evicted entry can never come back stale on replay.
# 5. An entry whose TTL ran out is gone for get() at once and removed by sweep(); replay skips it.

import binascii
import gc
import os
import struct
import sys

from edge.flashlog import FlashLog, FlashLogFull
from edge.kvcache import hlc
from edge.subjects import presized

# record kinds
R_SET = 1  # clean value from the hub: rev, exp
R_DEL = 2  # the hub removed the key (DEL, PURGE, TTL marker): rev
R_LOCAL = 3  # a local write: flags = op; base, expect, exp, ttl, hlc, value
R_CLEAN = 4  # the local write reached the hub as revision rev
R_SYNC = 5  # everything on the hub up to rev has been applied
R_DROP = 6  # the local write was given up (the hub's version won a conflict, or its TTL ran out)
R_RESET = 7  # the hub bucket was recreated: clean entries and the watermark are gone

F_OUT_OF_ORDER = 1  # R_SET/R_DEL flag: a single get, not part of the in-order stream (the watermark stays)

OP_PUT = 0
OP_DEL = 1
OP_PURGE = 2

# kind, flags, key length, hlc length, rev/base, expect, exp_ms, ttl_s
_HEAD = "<BBBBQQQI"
_HEAD_LEN = 32

_SNAP_MAGIC = b"EKV1"
GC_EVERY = 64  # changes between collections (see _churn)
PRESIZE_MAX = 1024  # largest max_keys whose table is allocated at start (see Store.__init__)


class KVError(Exception):
    pass


def encode(kind, key=b"", rev=0, exp=0, value=b"", flags=0, expect=0, ttl=0, stamp=b""):
    return struct.pack(_HEAD, kind, flags, len(key), len(stamp), rev, expect, exp, ttl) + key + stamp + value


def decode(rec):
    # -> (kind, flags, key str, rev, expect, exp, ttl, hlc str, value bytes)
    if len(rec) < _HEAD_LEN:
        raise KVError("short record")
    kind, flags, klen, hlen, rev, expect, exp, ttl = struct.unpack_from(_HEAD, rec, 0)
    i = _HEAD_LEN + klen
    if i + hlen > len(rec):
        raise KVError("bad record lengths")
    return (kind, flags, bytes(rec[_HEAD_LEN:i]).decode(), rev, expect, exp, ttl, bytes(rec[i : i + hlen]).decode(),
            bytes(rec[i + hlen :]))


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def _mkdirs(path):
    cur = ""
    for part in path.split("/"):
        cur = cur + "/" + part if cur or path[:1] == "/" else part
        if part and not _exists(cur):
            os.mkdir(cur)


def _fsync(f):
    f.flush()
    fileno = getattr(f, "fileno", None)  # littlefs files have none: their flush is the durability point
    fsync = getattr(os, "fsync", None)
    if fileno is not None and fsync is not None:
        fsync(fileno())


class Store:
    # entries: key -> [value (None: a dirty delete), rev, exp_ms (0: none), last use]
    # dirty: key -> (op, base, expect, hlc text, ttl_s): a tuple, one 16-byte block less than a list on MicroPython
    #   base: the newest hub revision this write knew of (a hub version above it is a conflict);
    #   expect: the revision the compare-and-set names (the key's last revision on the hub, 0 = none).
    def __init__(self, path, max_keys=256, max_bytes=16384, log_bytes=65536, segment_size=8192, flush_every=16,
                 flush_ms=50, wall=hlc.wall_ms):
        self.path = path
        self.max_keys = max_keys
        self.max_bytes = max_bytes
        self.wall = wall
        # Sized for max_keys at start, while the heap is whole: a dict grown later needs one contiguous
        # block of ~16 bytes per slot, which a fragmented MicroPython heap may not have (MemoryError). Only up
        # to PRESIZE_MAX: the presized table is full of deleted-slot markers, and a lookup of a missing key
        # probes through them to a free slot, so its cost grows with the table (measured on the unix port:
        # 111 us per get+set with 10,000 slots against 21 us for a plain dict). Bigger caches live on boards
        # with PSRAM, where a late resize finds its block.
        self.entries = presized(max_keys) if max_keys <= PRESIZE_MAX else {}
        self.dirty = {}
        self.bytes = 0
        self.last_rev = 0  # sync watermark: every hub change up to this revision is applied
        self.max_stamp = None  # highest HLC stamp recovered (the clock starts above it)
        self.evicted = 0
        self.skipped = 0  # hub changes left out because only dirty entries were cached
        self.tick = 0
        self.snap_seq = 0
        self._log_bytes = log_bytes
        self._synced_rev = 0  # last_rev as last written in an R_SYNC record
        self._changes = 0
        _mkdirs(path)
        self.log = FlashLog(path + "/log", segment_size=segment_size, max_bytes=log_bytes, flush_every=flush_every,
                            flush_ms=flush_ms)
        self._open()

    # ---- start-up -------------------------------------------------------------------------------

    def _open(self):
        self.snap_seq = self._load_snapshot()
        for seq, rec in self.log.replay(self.snap_seq + 1):
            if seq > self.snap_seq:
                self._replay(rec)
        self.sweep()

    def _snap_records(self, f, crc, left):
        # Yields the records of an open snapshot file after its header, updating crc[0]. left: the file's bytes
        # after the header. A length past them is refused before reading: a damaged one asks for gigabytes
        # (found by fuzzing: MemoryError on MicroPython).
        while True:
            n = f.read(4)
            if len(n) < 4:
                return
            left -= 4
            ln = struct.unpack("<I", n)[0]
            if ln == 0xFFFFFFFF:  # the trailer marker
                return
            if ln > left:
                raise KVError("truncated snapshot")
            left -= ln
            rec = f.read(ln)
            if len(rec) < ln:
                raise KVError("truncated snapshot")
            crc[0] = binascii.crc32(rec, binascii.crc32(n, crc[0]))
            yield rec

    def _load_snapshot(self):
        p = self.path + "/snap"
        try:
            size = os.stat(p)[6]
        except OSError:
            return 0  # no snapshot
        try:
            with open(p, "rb") as f:  # pass 1: check the CRC without keeping anything
                head = f.read(12)
                if len(head) < 12 or head[:4] != _SNAP_MAGIC:
                    raise KVError("bad snapshot header")
                crc = [binascii.crc32(head)]
                for _ in self._snap_records(f, crc, size - 12):
                    pass
                tail = f.read(4)
                if len(tail) < 4 or struct.unpack("<I", tail)[0] != crc[0] & 0xFFFFFFFF:
                    raise KVError("snapshot CRC mismatch")
            with open(p, "rb") as f:  # pass 2: apply
                head = f.read(12)
                crc = [0]
                for rec in self._snap_records(f, crc, size - 12):
                    self._replay(rec)
            return struct.unpack("<Q", head[4:12])[0]
        except (KVError, OSError, ValueError) as e:
            sys.stdout.write("edge: kv %s: snapshot ignored (%s)\n" % (p, e))  # one write: a whole line
            self.entries.clear()
            self.dirty = {}
            self.bytes = 0
            self.last_rev = 0
            return 0

    def _replay(self, rec):
        self._churn()
        kind, flags, key, rev, expect, exp, ttl, stamp, value = decode(rec)
        if kind == R_SET:
            self._set_clean(key, value, rev, exp, not flags & F_OUT_OF_ORDER)
        elif kind == R_DEL:
            self._remove(key)
            if not flags & F_OUT_OF_ORDER:
                self._saw(rev)
        elif kind == R_RESET:
            self._reset()
        elif kind == R_LOCAL:
            self._set_dirty(key, flags, value, rev, expect, exp, stamp, ttl)
            st = hlc.parse(stamp)
            if st is not None and (self.max_stamp is None or st > self.max_stamp):
                self.max_stamp = st
        elif kind == R_CLEAN:
            self._clean(key, rev)
        elif kind == R_DROP:
            if key in self.dirty:
                del self.dirty[key]
                self._remove(key)
        elif kind == R_SYNC:
            self._saw(rev)
        self._bound(None)

    # ---- the RAM index ---------------------------------------------------------------------------

    def _saw(self, rev):
        if rev > self.last_rev:
            self.last_rev = rev

    def _remove(self, key):
        e = self.entries.pop(key, None)
        if e is not None:
            self.bytes -= len(key) + (len(e[0]) if e[0] is not None else 0)
        self.dirty.pop(key, None)

    def _put_entry(self, key, value, rev, exp):
        old = self.entries.get(key)
        if old is not None:
            self.bytes -= len(key) + (len(old[0]) if old[0] is not None else 0)
        self.tick += 1
        self.entries[key] = [value, rev, exp, self.tick]
        self.bytes += len(key) + (len(value) if value is not None else 0)

    def _set_clean(self, key, value, rev, exp, in_order):
        self.dirty.pop(key, None)
        self._put_entry(key, value, rev, exp)
        if in_order:
            self._saw(rev)

    def _set_dirty(self, key, op, value, base, expect, exp, stamp, ttl):
        self._put_entry(key, None if op != OP_PUT else value, expect, exp)
        self.dirty[key] = (op, base, expect, stamp, ttl)

    def _clean(self, key, rev):
        d = self.dirty.pop(key, None)
        if d is None:
            return
        if d[0] != OP_PUT:
            self._remove(key)
        else:
            e = self.entries.get(key)
            if e is not None:
                e[1] = rev

    def _bound(self, keep):
        # Evict clean entries, least recently used first, until within max_keys and max_bytes.
        # keep: a key that must stay (the one being written). Returns False if that is impossible.
        while len(self.entries) > self.max_keys or self.bytes > self.max_bytes:
            victims = self._lru_clean(max(1, len(self.entries) // 8), keep)
            if not victims:
                return False
            for k in victims:
                self._remove(k)
                self.evicted += 1
        return True

    def _lru_clean(self, n, keep):
        # The n least recently used clean entries (one pass; a small sorted list).
        out = []
        for k, e in self.entries.items():
            if k in self.dirty or k == keep:
                continue
            if len(out) < n:
                out.append((e[3], k))
                out.sort()
            elif e[3] < out[-1][0]:
                out[-1] = (e[3], k)
                out.sort()
        return [k for _, k in out]

    def _churn(self):
        # Every change leaves garbage around the few hundred bytes it keeps. MicroPython allocates next-fit
        # until a collection, so a long catch-up or replay without one scatters the entries over the whole
        # heap until no 4 KB block is free (measured: MemoryError with 1.5 of 2 MB free). A collection restarts
        # allocation at the lowest free block, so what stays packs together. Costs ~0.6 ms per 450 KB live.
        self._changes += 1
        if not self._changes % GC_EVERY:
            gc.collect()

    def _append(self, rec):
        self._churn()
        try:
            self.log.append(rec)
        except FlashLogFull:
            self.compact()
            self.log.append(rec)  # still full after compaction: FlashLogFull reaches the caller
        self.log.maybe_flush()  # the log buffers in RAM: a long catch-up must not pile records up there

    # ---- reads ------------------------------------------------------------------------------------

    def get(self, key):
        # -> the live entry list, or None (absent, a dirty delete, or its TTL ran out). An expired entry stays for
        # sweep() to remove, so that its watchers always hear of the expiry (cache.py), whichever comes first.
        e = self.entries.get(key)
        if e is None:
            return None
        if e[2] and e[2] <= self.wall():
            return None
        self.tick += 1
        e[3] = self.tick
        return e if e[0] is not None else None

    def _expire(self, key):
        if key in self.dirty:
            self._append(encode(R_DROP, key.encode()))
        self._remove(key)

    def sweep(self):
        # Drop every entry whose TTL ran out; returns their keys.
        now = self.wall()
        gone = [k for k, e in self.entries.items() if e[2] and e[2] <= now]
        for k in gone:
            self._expire(k)
        return gone

    # ---- changes --------------------------------------------------------------------------------

    def local_write(self, key, op, value, ttl, stamp, base=None, expect=None):
        # A write made on this edge (online or not): dirty until the hub has it. base/expect: given when the
        # write resolves a conflict with hub revision base.
        if base is None:
            d = self.dirty.get(key)
            e = self.entries.get(key)
            if d is not None:
                base, expect = d[1], d[2]  # still the hub state the first unsynced write started from
            elif e is not None:
                base = expect = e[1]
            else:  # not cached: every hub version up to the watermark was known (and evicted, or deleted)
                base, expect = self.last_rev, 0
        exp = self.wall() + ttl * 1000 if ttl else 0
        if key not in self.entries and len(self.entries) >= self.max_keys:
            victims = self._lru_clean(1, key)
            if not victims:
                raise KVError("cache full: %d keys, all with unsynced local writes" % len(self.entries))
            self._remove(victims[0])
            self.evicted += 1
        self._append(encode(R_LOCAL, key.encode(), base, exp, value if op == OP_PUT else b"", op, expect, ttl,
                            stamp.encode()))
        self._set_dirty(key, op, value, base, expect, exp, stamp, ttl)
        self._bound(key)  # over max_bytes with only dirty entries left: the write stands, it is logged

    def rebase(self, key, base, expect):
        # The local write won a conflict against hub revision `base`: push it over that revision.
        d = self.dirty[key]
        e = self.entries[key]
        self._append(encode(R_LOCAL, key.encode(), base, e[2], e[0] if d[0] == OP_PUT else b"", d[0], expect, d[4],
                            d[3].encode()))
        self.dirty[key] = (d[0], base, expect, d[3], d[4])
        e[1] = expect

    def pushed(self, key, rev, stamp):
        # The hub stored our write `stamp` as revision rev (its PubAck, or its echo).
        d = self.dirty.get(key)
        if d is None or rev <= d[2]:
            return
        if d[3] == stamp:
            self._append(encode(R_CLEAN, key.encode(), rev))
            self._clean(key, rev)
        else:  # an earlier write of ours; the newer one follows it without a conflict
            self.rebase(key, max(d[1], rev), rev)

    def drop_local(self, key):
        if key in self.dirty:
            self._append(encode(R_DROP, key.encode()))
            del self.dirty[key]
            self._remove(key)

    def hub_set(self, key, value, rev, exp, in_order=True):
        # A value from the hub, for a key that is not dirty. Returns False if it was left out (no room).
        self._append(encode(R_SET, key.encode(), rev, exp, value, 0 if in_order else F_OUT_OF_ORDER))
        self._set_clean(key, value, rev, exp, in_order)
        if not self._bound(key):
            self._remove(key)
            self.skipped += 1
            return False
        return True

    def hub_del(self, key, rev, in_order=True):
        self._append(encode(R_DEL, key.encode(), rev, 0, b"", 0 if in_order else F_OUT_OF_ORDER))
        self._remove(key)
        if in_order:
            self._saw(rev)

    def forget_hub(self):
        # The hub bucket is not the one we synced with: keep only local writes, based on nothing.
        self._append(encode(R_RESET))
        self._reset()

    def _reset(self):
        for key in [k for k in self.entries if k not in self.dirty]:
            self._remove(key)
        for key, d in self.dirty.items():
            self.dirty[key] = (d[0], 0, 0, d[3], d[4])
            self.entries[key][1] = 0
        self.last_rev = 0
        self._synced_rev = 0

    def saw(self, rev):
        # A hub revision that changed nothing here (a stale or foreign message): the watermark still moves.
        self._saw(rev)

    def mark_synced(self):
        if self.last_rev != self._synced_rev:
            self._append(encode(R_SYNC, b"", self.last_rev))
            self._synced_rev = self.last_rev

    def flush(self):
        self.log.flush()

    def maybe_flush(self, now_ms):
        self.log.maybe_flush(now_ms)
        if self.log.size_bytes > self._log_bytes // 2:
            self.compact()

    # ---- compaction ------------------------------------------------------------------------------

    def compact(self):
        self.log.flush()
        covered = self.log.last_seq
        tmp = self.path + "/snap.tmp"
        with open(tmp, "wb") as f:
            head = _SNAP_MAGIC + struct.pack("<Q", covered)
            f.write(head)
            crc = binascii.crc32(head)
            recs = [encode(R_SYNC, b"", self.last_rev)]
            for key, e in self.entries.items():
                kb = key.encode()
                d = self.dirty.get(key)
                if d is None:
                    recs.append(encode(R_SET, kb, e[1], e[2], e[0]))
                else:
                    recs.append(encode(R_LOCAL, kb, d[1], e[2], e[0] if d[0] == OP_PUT else b"", d[0], d[2], d[4],
                                       d[3].encode()))
                if len(recs) >= 16:
                    crc = self._write_recs(f, recs, crc)
            crc = self._write_recs(f, recs, crc)
            f.write(struct.pack("<II", 0xFFFFFFFF, crc & 0xFFFFFFFF))
            _fsync(f)
        os.rename(tmp, self.path + "/snap")
        self._synced_rev = self.last_rev
        self.snap_seq = covered
        self.log.reclaim(covered)

    def _write_recs(self, f, recs, crc):
        for rec in recs:
            n = struct.pack("<I", len(rec))
            f.write(n)
            f.write(rec)
            crc = binascii.crc32(rec, binascii.crc32(n, crc))
        recs.clear()
        return crc

    def close(self):
        self.log.flush()
        self.log.close()

    def stats(self):
        return {"keys": len(self.entries), "dirty": len(self.dirty), "bytes": self.bytes, "last_rev": self.last_rev,
                "evicted": self.evicted, "skipped": self.skipped, "log_bytes": self.log.size_bytes,
                "flash_written": self.log.bytes_written}
