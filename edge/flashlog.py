# edge/flashlog.py — an append-only log of CRC-framed records in segment files, for flash.
#
# Used by the store-and-forward queue (edge/leaf/forward.py) and the KV cache. Runs on MicroPython
# (littlefs on ESP32, VfsPosix on the unix port) and on CPython. Contract: notes/flashlog-contract.md;
# design and numbers: docs/forward.md. Rules this file keeps:
# 1. One log = one directory. Segment files are named by the sequence of their first record
#    ("%012x.log"); a segment holds at most segment_size bytes (whole 4 KB erase blocks, less
#    littlefs's per-block pointers), so reclaiming a segment frees whole blocks. A record never spans
#    two segments, so record n of a segment has sequence base + n and no sequence is stored.
# 2. Record = length (2 bytes, little endian) + payload + CRC-32 of both (4 bytes).
# 3. append() only buffers (in RAM, bounded by the caller's group commit); flush() writes the buffer
#    with one write per record and one flush (littlefs: one lfs_file_sync, about one 4 KB erase;
#    CPython: also fsync). durable_seq moves only after that returns, so a record reported durable
#    is on flash. Each flushed append on littlefs costs about one erase: batch them (maybe_flush).
# 4. Recovery on open scans the newest segment only (the older ones were flushed and closed before
#    rotation) and keeps its intact prefix; littlefs has no truncate, so after a torn or corrupt
#    tail, or after a failed write, the next append starts a new segment and the bad bytes stay
#    unread. replay() stops a segment at its first bad record. `damaged` is the first sequence recovery
#    cut off (0: none): a torn write on POSIX, or flash damage (records that were durable, maybe already
#    used by the caller).
# 5. A failed flush loses the buffered records (never reported durable): their sequences are
#    burned (the next segment starts after them, and the mark records the floor) and returned in
#    the exception (lost_first, lost_last), so a sequence is never used for two different records.
#    burn(upto) does the same on request: a caller that may have used sequences the log lost to damage
#    (the forward queue: sent, maybe stored at the hub) moves numbering past them.
# 6. Reclaim state lives in two small mark files written alternately ("mark0"/"mark1": generation,
#    first_seq, floor, bytes_written, caller's meta, CRC); the newer intact one wins at open, so a
#    torn mark write falls back to the previous one. On littlefs a mark under ~100 bytes is inlined
#    in the directory's metadata: a rewrite costs about 100 bytes programmed, not an erase.
# 7. Files are always closed explicitly (littlefs leaves it to the GC finalizer otherwise).

import binascii
import os
import struct

from edge.compat import ticks_diff, ticks_ms

BLOCK_SIZE = 4096
MAX_RECORD = 65535
_OVERHEAD = 6  # length + CRC
_MARK_MAGIC = b"FLM1"
_MARK_HEAD = "<4sQQQQB"  # magic, generation, first_seq, floor, bytes_written, len(meta)
_MARK_HEAD_SIZE = struct.calcsize(_MARK_HEAD)
_MAX_META = 200
_fsync = getattr(os, "fsync", None)


class FlashLogError(Exception):
    # lost_first/lost_last: the sequences a failed flush lost (0, 0 when none were lost).
    def __init__(self, msg, lost_first=0, lost_last=0):
        super().__init__(msg)
        self.lost_first = lost_first
        self.lost_last = lost_last


class FlashLogFull(FlashLogError):
    pass


def _sync(f):
    f.flush()
    if _fsync is not None and hasattr(f, "fileno"):
        _fsync(f.fileno())


def _makedirs(path):
    parts = path.split("/")
    cur = ""
    for i, part in enumerate(parts):
        cur = part if i == 0 else cur + "/" + part
        if not part:
            continue
        try:
            os.mkdir(cur)
        except OSError as e:
            if e.args[0] != 17:  # EEXIST
                raise


def _is_file(path):
    try:
        return os.stat(path)[0] & 0x8000
    except OSError:
        return False


def _size(path):
    # Bytes of a regular file; 0 when missing (or not a file).
    try:
        st = os.stat(path)
    except OSError:
        return 0
    return st[6] if st[0] & 0x8000 else 0


def _record_crc(head, payload):
    return binascii.crc32(payload, binascii.crc32(head)) & 0xFFFFFFFF


def _read_record(f):
    # -> payload, or None at the end of the intact records (EOF, torn or corrupt record, read error).
    try:
        head = f.read(2)
        if not head or len(head) < 2:
            return None
        n = head[0] | (head[1] << 8)
        body = f.read(n + 4)
    except OSError:
        return None
    if body is None or len(body) < n + 4:
        return None
    payload = body[:n]
    crc = body[n] | (body[n + 1] << 8) | (body[n + 2] << 16) | (body[n + 3] << 24)
    if crc != _record_crc(head, payload):
        return None
    return payload


class FlashLog:
    def __init__(self, path, segment_size=16384, max_bytes=262144, flush_every=16, flush_ms=50, flush_bytes=4096):
        if segment_size < BLOCK_SIZE or segment_size % BLOCK_SIZE:
            raise FlashLogError("segment_size must be a multiple of %d, got %d" % (BLOCK_SIZE, segment_size))
        if max_bytes < segment_size:
            raise FlashLogError("max_bytes (%d) must be at least segment_size (%d)" % (max_bytes, segment_size))
        self.path = path.rstrip("/") or "/"
        self.segment_size = segment_size
        # littlefs keeps up to 8 bytes of list pointers per block inside the file's blocks (on average
        # fewer): leaving room for them keeps a full segment inside segment_size // 4096 blocks.
        self.capacity = segment_size - 8 * (segment_size // BLOCK_SIZE)
        self.max_bytes = max_bytes
        self.flush_every = flush_every
        self.flush_ms = flush_ms
        self.flush_bytes = flush_bytes
        self.segs = []  # [base seq, bytes on flash] per segment file, oldest first; the last is active
        self._f = None  # append handle of the active segment
        self._buf = []  # records appended, not yet written
        self._buf_bytes = 0
        self._t_pending = 0  # ticks of the first buffered record
        self._fresh = False  # the next append starts a new segment
        self.first_seq = 1
        self.last_seq = 0
        self.durable_seq = 0
        self.size_bytes = 0
        self.bytes_written = 0
        self.flushes = 0
        self.errors = 0
        self.meta = b""
        self._mark_gen = 0
        self._floor = 1  # no sequence below it may be handed out again
        self.damaged = 0  # the first sequence recovery cut off the newest segment (0: none)
        self._open()

    # ---- open and recovery ---------------------------------------------------------------------

    def _seg_path(self, base):
        return "%s/%012x.log" % (self.path, base)

    def _open(self):
        _makedirs(self.path)
        self._read_marks()
        bases = []
        for name in os.listdir(self.path):
            if len(name) == 16 and name[12:] == ".log":
                try:
                    bases.append(int(name[:12], 16))
                except ValueError:
                    pass
        bases.sort()
        for b in bases:
            self.segs.append([b, _size(self._seg_path(b))])
        last = max(self._floor, self.first_seq) - 1
        if self.segs:
            base, size = self.segs[-1]
            n, good = self._scan(base)
            if good < size:
                self._fresh = True  # torn or corrupt tail: never append after it
                self.damaged = base + n
                # A new segment is named by its first sequence: after a file without a single intact record
                # that would be this file again, and appends would land behind its garbage, unreadable. Its
                # first sequence is burned instead (found by tests/fuzz, test_fuzz_regressions.py).
                n = max(n, 1)
            if base + n - 1 < last:
                self._fresh = True  # sequences after its records were burned: numbering goes on elsewhere
            last = max(last, base + n - 1)
        self.last_seq = self.durable_seq = last
        self.first_seq = min(max(self.first_seq, self.segs[0][0] if self.segs else 1), last + 1)
        while len(self.segs) > 1 and self.segs[1][0] <= self.first_seq:
            self._remove(self.segs.pop(0))  # a reclaim cut short before its deletions
        self.size_bytes = 0
        for s in self.segs:
            self.size_bytes += s[1]
        if not self.bytes_written:
            self.bytes_written = self.size_bytes  # no mark yet: at least what is on flash was written

    def _scan(self, base):
        # -> (intact records, their bytes) of one segment.
        n = good = 0
        try:
            with open(self._seg_path(base), "rb") as f:
                while True:
                    p = _read_record(f)
                    if p is None:
                        break
                    n += 1
                    good += len(p) + _OVERHEAD
        except OSError:
            pass
        return n, good

    def _read_marks(self):
        best = None
        for slot in (0, 1):
            try:
                with open("%s/mark%d" % (self.path, slot), "rb") as f:
                    data = f.read()
            except OSError:
                continue
            if len(data) < _MARK_HEAD_SIZE + 4:
                continue
            body, crc = data[:-4], struct.unpack("<I", data[-4:])[0]
            if binascii.crc32(body) & 0xFFFFFFFF != crc:
                continue
            magic, gen, first, floor, written, n = struct.unpack(_MARK_HEAD, body[:_MARK_HEAD_SIZE])
            if magic != _MARK_MAGIC or len(body) != _MARK_HEAD_SIZE + n:
                continue
            if best is None or gen > best[0]:
                best = (gen, first, floor, written, body[_MARK_HEAD_SIZE:], slot)
        if best is not None:
            self._mark_gen, self.first_seq, self._floor, self.bytes_written, self.meta, _ = best

    def _write_mark(self):
        gen = self._mark_gen + 1
        size = _MARK_HEAD_SIZE + len(self.meta) + 4  # counted in the figure it carries
        body = struct.pack(_MARK_HEAD, _MARK_MAGIC, gen, self.first_seq, self._floor,
                           self.bytes_written + size, len(self.meta)) + self.meta
        data = body + struct.pack("<I", binascii.crc32(body) & 0xFFFFFFFF)
        try:
            with open("%s/mark%d" % (self.path, gen & 1), "wb") as f:
                f.write(data)
                _sync(f)
        except OSError as e:
            self.errors += 1
            raise FlashLogError("mark write failed (errno %s)" % e.args[0])
        self._mark_gen = gen
        self.bytes_written += size

    # ---- appending -----------------------------------------------------------------------------

    def append(self, payload):
        n = len(payload)
        if n > MAX_RECORD or n + _OVERHEAD > self.capacity:
            raise FlashLogError("record of %d bytes is larger than the log takes (%d)"
                                % (n, min(MAX_RECORD, self.capacity - _OVERHEAD)))
        size = n + _OVERHEAD
        if self.size_bytes + self._buf_bytes + size > self.max_bytes:
            raise FlashLogFull("log full (%d of %d bytes)" % (self.size_bytes + self._buf_bytes, self.max_bytes))
        if self._fresh or not self.segs or self.segs[-1][1] + self._buf_bytes + size > self.capacity:
            self.flush()  # what belongs to the old segment goes there first
            self._close_handle()
            self.segs.append([self.last_seq + 1, 0])
            self._fresh = False
        head = struct.pack("<H", n)
        rec = head + payload + struct.pack("<I", _record_crc(head, payload))
        if not self._buf:
            self._t_pending = ticks_ms()
        self._buf.append(rec)
        self._buf_bytes += size
        self.last_seq += 1
        return self.last_seq

    @property
    def pending(self):
        return len(self._buf)

    def maybe_flush(self, now_ms=None):
        # Group commit: flush once flush_every records or flush_bytes are buffered, or the oldest
        # buffered record waited flush_ms. True if it flushed.
        if not self._buf:
            return False
        if now_ms is None:
            now_ms = ticks_ms()
        if (len(self._buf) >= self.flush_every or self._buf_bytes >= self.flush_bytes
                or ticks_diff(now_ms, self._t_pending) >= self.flush_ms):
            self.flush()
            return True
        return False

    def flush(self):
        if not self._buf:
            return
        seg = self.segs[-1]
        try:
            if self._f is None:
                self._f = open(self._seg_path(seg[0]), "ab")
            for rec in self._buf:
                self._f.write(rec)
            _sync(self._f)
        except OSError as e:
            self._write_failed(e)
        seg[1] += self._buf_bytes
        self.size_bytes += self._buf_bytes
        self.bytes_written += self._buf_bytes
        self.flushes += 1
        self._buf = []
        self._buf_bytes = 0
        self.durable_seq = self.last_seq

    def _write_failed(self, e):
        # The buffered records are lost; the file keeps what its last sync wrote (littlefs) or some
        # prefix of this write (POSIX). Burn their sequences, start the next append in a new segment.
        lost_first, lost_last = max(self.durable_seq, self._floor - 1) + 1, self.last_seq
        self.errors += 1
        self._buf = []
        self._buf_bytes = 0
        self._close_handle()
        seg = self.segs[-1]
        path = self._seg_path(seg[0])
        real = _size(path)
        self.size_bytes += real - seg[1]
        seg[1] = real
        if not real and _is_file(path):  # nothing of it reached flash: no empty file per failure
            try:
                os.remove(path)
                self.segs.pop()
            except OSError:
                pass
        self._fresh = True
        self._floor = self.last_seq + 1
        try:
            self._write_mark()  # the burned sequences stay burned after a reboot, if the flash allows
        except FlashLogError:
            pass
        errno = e.args[0] if e.args else 0
        cls = FlashLogFull if errno == 28 else FlashLogError
        raise cls("flash write failed (errno %s): records %d..%d lost" % (errno, lost_first, lost_last),
                  lost_first, lost_last)

    def _close_handle(self):
        f = self._f
        self._f = None
        if f is not None:
            try:
                f.close()
            except OSError:
                pass

    def burn(self, upto_seq):
        # No sequence <= upto_seq is handed out: the next append starts a new segment above it (rule 1), and the
        # floor goes into the mark. A failed mark write is counted, not raised: until the next append the log
        # still holds what made the caller burn, and after it the new segment's name carries the floor.
        if upto_seq <= self.last_seq:
            return
        self.flush()
        if self.first_seq > self.last_seq:
            self.first_seq = upto_seq + 1  # nothing kept: nothing below the floor either
        self.last_seq = self.durable_seq = upto_seq
        self._floor = upto_seq + 1
        self._fresh = True
        try:
            self._write_mark()
        except FlashLogError:
            pass

    # ---- reading -------------------------------------------------------------------------------

    def replay(self, from_seq=0):
        # Yields (seq, payload) of the intact flushed records with seq >= from_seq, in order, one
        # record in memory at a time.
        r = Reader(self, from_seq)
        try:
            while True:
                item = r.next()
                if item is None:
                    return
                yield item
        finally:
            r.close()

    def reader(self, from_seq=0):
        return Reader(self, from_seq)

    def first_segment_end(self):
        # The last sequence held by the oldest segment (reclaiming up to it frees that segment).
        if len(self.segs) > 1:
            return self.segs[1][0] - 1
        return self.last_seq

    # ---- reclaiming ----------------------------------------------------------------------------

    def reclaim(self, upto_seq, meta=None):
        # Records <= upto_seq are no longer needed: the mark is written (with `meta`, the caller's
        # bytes, when given), then whole segments below are deleted. The active segment goes too once
        # it is covered and at least half full (an emptied queue does not churn files).
        if upto_seq >= self.first_seq:
            self.first_seq = min(upto_seq, self.last_seq) + 1
        if meta is not None:
            if len(meta) > _MAX_META:
                raise FlashLogError("meta of %d bytes: at most %d" % (len(meta), _MAX_META))
            self.meta = bytes(meta)
        self._write_mark()
        while len(self.segs) > 1 and self.segs[1][0] <= self.first_seq:
            self._remove(self.segs.pop(0))
        if (len(self.segs) == 1 and not self._buf and self.last_seq < self.first_seq
                and self.segs[0][1] * 2 >= self.capacity):
            self._close_handle()
            self._remove(self.segs.pop())  # the mark written above holds first_seq = last_seq + 1

    def _remove(self, seg):
        try:
            os.remove(self._seg_path(seg[0]))
        except OSError as e:
            if e.args[0] != 2:  # ENOENT: already gone
                self.errors += 1
                self.segs.insert(0, seg)
                raise FlashLogError("cannot delete segment %x (errno %s)" % (seg[0], e.args[0]))
        self.size_bytes -= seg[1]

    # ---- the rest ------------------------------------------------------------------------------

    def stats(self):
        return {"first_seq": self.first_seq, "last_seq": self.last_seq, "durable_seq": self.durable_seq,
                "segments": len(self.segs), "size_bytes": self.size_bytes, "bytes_written": self.bytes_written,
                "pending": len(self._buf), "flushes": self.flushes, "errors": self.errors}

    def close(self):
        try:
            self.flush()
        finally:
            self._close_handle()


class Reader:
    # A cursor over a log's flushed records that follows appends: next() returns (seq, payload) or
    # None when nothing more is on flash yet. A littlefs handle shows only what was synced when it was
    # opened (measured: tests/mp/flashlog_lfs.py), so an end seen on a handle older than the last flush
    # is checked again on a fresh one, and the file is closed at the end and reopened at the same offset.
    # Invariant: while _base >= 0, _off is the offset of record `seq` in segment _base.
    def __init__(self, log, from_seq=0):
        self.log = log
        self.seq = max(from_seq, log.first_seq)
        self._f = None
        self._base = -1
        self._off = 0
        self._opened = -1  # log.flushes when the open file was opened

    def _open(self):
        log = self.log
        segs = log.segs
        if self.seq < log.first_seq:
            self.seq = log.first_seq
            self._base = -1
        i = len(segs) - 1
        while i >= 0 and segs[i][0] > self.seq:
            i -= 1
        if i < 0:
            if not segs:
                return False
            i = 0
            self.seq = segs[0][0]
        base = segs[i][0]
        try:
            f = open(log._seg_path(base), "rb")
        except OSError:
            if i + 1 < len(segs):  # an unreadable segment: skip it
                self.seq = segs[i + 1][0]
                self._base = -1
                return self._open()
            return False
        self._f = f
        self._opened = log.flushes
        if base == self._base:
            f.seek(self._off)
            return True
        self._base = base
        self._off = 0
        s = base
        while s < self.seq:
            p = _read_record(f)
            if p is None:
                # A record on the way is not intact: back to its start (the failed read moved the handle past
                # it, and the next record read there would pass for this sequence), where next() finds it so
                # and moves on to the next segment.
                f.seek(self._off)
                break
            self._off += len(p) + _OVERHEAD
            s += 1
        self.seq = s
        return True

    def next(self):
        log = self.log
        while True:
            if self.seq > log.durable_seq:
                self.close()
                return None
            if self._f is None and not self._open():
                return None
            p = _read_record(self._f)
            if p is not None:
                seq = self.seq
                self.seq += 1
                self._off += len(p) + _OVERHEAD
                return seq, p
            self.close()
            if self._opened != log.flushes:
                continue  # opened before the last flush: littlefs shows a handle only what was synced then
            # the end of this segment's intact records: on to the next segment, or wait for more
            nxt = None
            for s in log.segs:
                if s[0] > self._base:
                    nxt = s[0]
                    break
            if nxt is None:
                # the newest segment is read to its end: sequences up to durable_seq not in it were burned
                if self.seq <= log.durable_seq:
                    self.seq = log.durable_seq + 1
                    self._base = -1
                return None
            self.seq = max(self.seq, nxt)
            self._base = -1

    def close(self):
        f = self._f
        self._f = None
        if f is not None:
            try:
                f.close()
            except OSError:
                pass
