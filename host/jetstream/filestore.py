"""File storage for streams and consumers, as nats-server `server/filestore.go` (a simpler format, same ideas).

Owns: the on-disk layout of one stream (`<store_dir>/msgs/`, `<store_dir>/obs/`), the record format, appends and
syncs, deletes, recovery after a crash, and the in-memory index that locates a message without reading it. The
rules about sequences and limits are `StreamStore`'s (store.py). docs/jetstream-store.md describes the format
and what each `sync` setting loses on kill -9 and on a power cut.

Rules:
1. Message blocks are append-only: `msgs/<n>.blk` gets records at its end and nothing else, except `erase_msg`
   (rewrites one record in place, same length) and block compaction (a new file renamed over the old one).
   Blocks roll at `block_size`; block numbers only grow.
2. A delete is an entry in the block's own `<n>.dlt` file, so a block and the record of its deletes go away
   together. A block with no live message left is unlinked (the block first, then its .dlt); the last block is
   never removed or rewritten while it is the write head, so the highest sequence always stays on disk.
3. Purge and compact write `msgs/state.json` (first sequence floor, last sequence) atomically *before* removing
   anything, so a crash half way leaves records that recovery knows to ignore.
4. Recovery trusts checksums, not lengths: every record has a header CRC and a body CRC. A damaged tail (nothing
   valid after it) is cut off the file; damage followed by valid records is reported, its bytes skipped, and the
   valid records after it kept. Recovery never raises on bad data: it reports (`FileStore.recovery`) and logs.
5. sync "always": `store_msg`, `remove_msg`, `purge` and `compact` return only after the bytes they wrote are
   fsynced ("acked means on disk"); `group_commit()` shares one fsync among several stores. sync N seconds: data
   is written to the OS at once (a kill -9 loses nothing) and fsynced at most N seconds later, or at `sync()`.
   Removals made by limits and age are synced lazily in both modes: recovery re-applies the limits.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import shutil
import struct
import sys
import time
import zlib
from array import array
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from host.jetstream.store import (
    SYNC_ALWAYS,
    ConsumerStore,
    ErrBadMsg,
    ErrCorruptState,
    ErrMsgTooLarge,
    StoreConfig,
    StoredMsg,
    StoreError,
    StreamStore,
    decode_consumer_state,
    encode_consumer_state,
)

log = logging.getLogger("natsedge.filestore")

# Record: header (42 bytes) + header CRC32 + subject + headers + payload + body CRC32 (chained from the header CRC).
#   magic u16, version u8, flags u8, total length u32, seq u64, ts i64 (ns), ttl i64 (s), subject len u16,
#   headers len u32, payload len u32.
_REC = struct.Struct("<HBBIQqqHII")
_U32 = struct.Struct("<I")
_MAGIC = 0x524E  # b"NR" on disk
_MAGIC_BYTES = _MAGIC.to_bytes(2, "little")
_VERSION = 1
_HEAD = _REC.size + 4
_OVERHEAD = _HEAD + 4
_F_ERASED = 1
_HBIT = 1 << 31  # in the in-memory length: the record has headers (their size counts 4 more bytes)
_MAX_RECORD = _HBIT - 1
# Delete entry in <n>.dlt: seq u64 + CRC32 of those 8 bytes.
_DLT = struct.Struct("<QI")
_Q = struct.Struct("<Q")
# Block index <n>.idx, a cache of one sealed block's slots: ignored unless its size and checksum match.
_IDX_MAGIC = b"NSIX"
_IDX = struct.Struct("<4sBBxxQQII")
_NO_SID = 0xFFFFFFFF
_LITTLE = sys.byteorder == "little"
assert array("I").itemsize == 4 and array("q").itemsize == 8

_crc = zlib.crc32
_fdatasync = getattr(os, "fdatasync", os.fsync)  # macOS has no fdatasync
_MAX_READ_FDS = 16
_MAX_DLT_FDS = 64
WRITE_CACHE_IDLE = 10_000  # writes without any read after which new writes stop going into the read cache


def file_msg_size(slen: int, hlen: int, dlen: int) -> int:
    """nats-server `fileStoreMsgSizeRaw`: the bytes a message counts for in a file stream (its record size there)."""
    if hlen == 0:
        return 22 + slen + dlen + 8
    return 22 + slen + 4 + hlen + dlen + 8


def _acct_size(rec_len: int) -> int:
    """file_msg_size from our in-memory length word (our record is 20 bytes longer, 16 with headers)."""
    if rec_len & _HBIT:
        return (rec_len & _MAX_RECORD) - 16
    return rec_len - 20


def atomic_write(path: str, data: bytes) -> None:
    """Replace path with data so a crash leaves the old file or the new one, never a mix: temp + fsync + rename."""
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        _write_all(fd, [data], len(data))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    _fsync_dir(os.path.dirname(path))


def _fsync_dir(path: str) -> None:
    fd = os.open(path or ".", os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, parts: list[bytes], total: int) -> None:
    n = os.writev(fd, parts)
    if n < total:
        rest = memoryview(b"".join(parts))[n:]
        while rest:
            rest = rest[os.write(fd, rest):]


def _parse_head(buf: bytes, pos: int, n: int) -> tuple[int, int, int, int, int, int, int, int] | None:
    """(flags, total, seq, ts, ttl, slen, hlen, dlen) of a record whose header checks out, else None."""
    if pos + _HEAD > n:
        return None
    magic, ver, flags, total, seq, ts, ttl, slen, hlen, dlen = _REC.unpack_from(buf, pos)
    if magic != _MAGIC or ver != _VERSION or total != _OVERHEAD + slen + hlen + dlen:
        return None
    if _crc(memoryview(buf)[pos:pos + _REC.size]) != _U32.unpack_from(buf, pos + _REC.size)[0]:
        return None
    return flags, total, seq, ts, ttl, slen, hlen, dlen


def _body_ok(buf: bytes, pos: int, total: int) -> bool:
    hc = _U32.unpack_from(buf, pos + _REC.size)[0]
    end = pos + total - 4
    return _crc(memoryview(buf)[pos + _HEAD:end], hc) == _U32.unpack_from(buf, end)[0]


@dataclass
class RecoveryReport:
    """What opening a file store found. `clean` is False after a crash cut a torn tail or damage was skipped."""

    blocks: int = 0
    indexed: int = 0  # blocks loaded from their .idx instead of being scanned
    records: int = 0  # records scanned
    truncated: list[tuple[str, int, int]] = field(default_factory=list)  # (file, offset, bytes cut)
    errors: list[str] = field(default_factory=list)  # damage found and skipped
    lost: list[int] = field(default_factory=list)  # sequences whose records were found damaged or torn

    @property
    def clean(self) -> bool:
        return not self.truncated and not self.errors


class _Block:
    """One message block in memory: per sequence slot (seq - first) its offset, record length (0 = no live
    message), timestamp and subject. 24 bytes and a pointer per message; payloads stay on disk."""

    __slots__ = ("index", "first", "offs", "lens", "tss", "subjs", "ttls", "live", "live_bytes", "size", "head")

    def __init__(self, index: int, first: int) -> None:
        self.index = index
        self.first = first
        self.offs = array("I")
        self.lens = array("I")
        self.tss = array("q")
        self.subjs: list[str | None] = []
        self.ttls: dict[int, int] = {}  # seq -> ttl, for records stored with one
        self.live = 0
        self.live_bytes = 0
        self.size = 0
        self.head = 0  # no live slot before this one (a hint that only moves forward)

    @property
    def end(self) -> int:
        """One past the last slot's sequence."""
        return self.first + len(self.lens)

    def add_slot(self, seq: int, off: int, rec_len: int, ts: int, subject: str | None, ttl: int) -> None:
        while self.first + len(self.lens) < seq:  # a gap: skipped or lost sequences
            self.offs.append(0)
            self.lens.append(0)
            self.tss.append(0)
            self.subjs.append(None)
        self.offs.append(off)
        self.lens.append(rec_len)
        self.tss.append(ts)
        self.subjs.append(subject)
        if ttl:
            self.ttls[seq] = ttl
        if rec_len:
            self.live += 1
            self.live_bytes += rec_len & _MAX_RECORD

    def kill(self, slot: int) -> None:
        rl = self.lens[slot]
        if rl:
            self.lens[slot] = 0
            self.subjs[slot] = None
            self.ttls.pop(self.first + slot, None)
            self.live -= 1
            self.live_bytes -= rl & _MAX_RECORD


class FileStore(StreamStore):
    kind = "file"
    msg_size = staticmethod(file_msg_size)

    def __init__(self, cfg: StoreConfig, clock: Callable[[], int] = time.time_ns) -> None:
        if not cfg.store_dir:
            raise ValueError("FileStore needs cfg.store_dir")
        super().__init__(cfg, clock)
        self._dir = cfg.store_dir
        self._mdir = os.path.join(self._dir, "msgs")
        self._blocks: list[_Block] = []
        self._firsts: list[int] = []
        self._by_index: dict[int, _Block] = {}
        self._wblk: _Block | None = None
        self._wfd = -1
        self._next_index = 1
        self._floor = 0  # no record below this sequence is live (purge/compact), from state.json
        self._rfds: OrderedDict[int, int] = OrderedDict()
        self._dfds: OrderedDict[int, int] = OrderedDict()
        self._cache: OrderedDict[int, StoredMsg] = OrderedDict()
        self._cache_used = 0
        # Writes go into the cache only while something reads this store (consumers, gets): a stream that only
        # ingests would pay for every insert and evict for nothing. A read turns it on; WRITE_CACHE_IDLE writes
        # without a read turn it off.
        self._cache_writes = True
        self._writes_unread = 0
        self._pending_dlt: dict[int, bytearray] = {}
        self._durable_dlt: set[int] = set()
        self._empty: set[int] = set()
        self._to_compact: set[int] = set()
        self._must: set[int] = set()  # fds to fsync before returning (sync always)
        self._lazy: set[int] = set()  # fds to fsync at the next sync()/interval
        self._dir_dirty = False
        self._group = 0
        self._last_sync = clock()
        self._sync_always = False
        self._sync_ns = 0
        self._sync_settings()
        self.bytes_written = 0
        self.recovery = RecoveryReport()
        os.makedirs(self._mdir, exist_ok=True)
        os.makedirs(os.path.join(self._dir, "obs"), exist_ok=True)
        # One writer per directory: a second FileStore (another hub, or a stale one in this process) would
        # interleave appends. The OS drops the lock when the process dies, kill -9 included.
        self._lock_fd = os.open(os.path.join(self._mdir, "lock"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self._lock_fd)
            raise StoreError(f"store directory {self._dir} is in use by another store") from None
        self._recover()

    # -- paths and fds

    def _path(self, index: int, ext: str) -> str:
        return os.path.join(self._mdir, f"{index}.{ext}")

    def _read_fd(self, blk: _Block) -> int:
        if blk is self._wblk:
            return self._wfd
        fd = self._rfds.get(blk.index)
        if fd is not None:
            self._rfds.move_to_end(blk.index)
            return fd
        fd = os.open(self._path(blk.index, "blk"), os.O_RDONLY)
        self._rfds[blk.index] = fd
        if len(self._rfds) > _MAX_READ_FDS:
            _, old = self._rfds.popitem(last=False)
            self._close_fd(old)
        return fd

    def _dlt_fd(self, blk: _Block) -> int:
        fd = self._dfds.get(blk.index)
        if fd is not None:
            self._dfds.move_to_end(blk.index)
            return fd
        path = self._path(blk.index, "dlt")
        if not os.path.exists(path):
            self._dir_dirty = True
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._dfds[blk.index] = fd
        if len(self._dfds) > _MAX_DLT_FDS:
            _, old = self._dfds.popitem(last=False)
            if old in self._must or old in self._lazy:
                _fdatasync(old)
            self._close_fd(old)
        return fd

    def _close_fd(self, fd: int) -> None:
        self._must.discard(fd)
        self._lazy.discard(fd)
        os.close(fd)

    def _close_block_fds(self, blk: _Block) -> None:
        fd = self._rfds.pop(blk.index, None)
        if fd is not None:
            self._close_fd(fd)
        fd = self._dfds.pop(blk.index, None)
        if fd is not None:
            self._close_fd(fd)
        if blk is self._wblk:
            self._close_fd(self._wfd)
            self._wblk, self._wfd = None, -1

    def _dirty(self, fd: int, must: bool) -> None:
        if must and self.cfg.sync == SYNC_ALWAYS:
            self._must.add(fd)
        else:
            self._lazy.add(fd)

    # -- recovery

    def _recover(self) -> None:
        rep = self.recovery
        names = os.listdir(self._mdir)
        for name in names:
            if name.endswith(".tmp"):
                os.unlink(os.path.join(self._mdir, name))
        floor_first, floor_last, floor_ts = self._read_state()
        indexes = sorted(int(n[:-4]) for n in names if n.endswith(".blk") and n[:-4].isdigit())
        have = set(indexes)
        for name in names:
            stem, _, ext = name.partition(".")
            if ext in ("dlt", "idx") and stem.isdigit() and int(stem) not in have:
                os.unlink(os.path.join(self._mdir, name))
        self._floor = floor_first
        prev = 0  # highest sequence seen in earlier blocks
        last_rec = last_ts = 0
        for i, index in enumerate(indexes):
            blk = self._load_block(index, i == len(indexes) - 1, prev)
            self._next_index = index + 1
            rep.blocks += 1
            if blk.lens:
                prev = blk.end - 1
                last_rec, last_ts = prev, blk.tss[-1]
            else:
                blk.first = prev + 1  # keeps the block list sorted by first sequence
            self._blocks.append(blk)
            self._firsts.append(blk.first)
            self._by_index[index] = blk
        if floor_last > last_rec:
            last_rec, last_ts = floor_last, floor_ts
        self._last, self._last_ts = last_rec, last_ts
        for blk in self._blocks:
            for slot, rl in enumerate(blk.lens):
                if rl:
                    seq = blk.first + slot
                    self._track(seq, blk.subjs[slot], blk.tss[slot], _acct_size(rl), blk.ttls.get(seq, 0))
        if self._msgs == 0:
            self._first = self._last + 1 if (self._last or self._floor) else 0
        # The last block is the write head again; its .idx goes stale with the first append.
        if self._blocks:
            w = self._blocks[-1]
            if not w.lens:
                w.first = self._last + 1
                self._firsts[-1] = w.first
            self._wblk, self._wfd = w, os.open(self._path(w.index, "blk"), os.O_RDWR)
            os.lseek(self._wfd, w.size, os.SEEK_SET)
            self._unlink(self._path(w.index, "idx"))
        for blk in self._blocks[:-1]:
            if blk.live == 0:
                self._empty.add(blk.index)
        if not self._blocks and not os.path.exists(self._state_path()) and self.cfg.first_seq > 1:
            self._floor = self.cfg.first_seq
            self._first, self._last = self.cfg.first_seq, self.cfg.first_seq - 1
            self._persist_floor()
        for msg in rep.errors:
            log.warning("filestore %s: %s", self._dir, msg)
        for name, off, n in rep.truncated:
            log.warning("filestore %s: cut %d bytes of torn tail at %s offset %d", self._dir, n, name, off)
        self._enforce_limits()
        self._commit(False)

    def _state_path(self) -> str:
        return os.path.join(self._mdir, "state.json")

    def _read_state(self) -> tuple[int, int, int]:
        try:
            with open(self._state_path(), "rb") as f:
                d = json.loads(f.read())
            return int(d["first_seq"]), int(d["last_seq"]), int(d["last_ts"])
        except FileNotFoundError:
            return 0, 0, 0
        except (ValueError, KeyError, TypeError) as e:
            self.recovery.errors.append(f"state.json unreadable ({e}); purge floor ignored")
            return 0, 0, 0

    def _load_block(self, index: int, is_last: bool, prev: int) -> _Block:
        path = self._path(index, "blk")
        size = os.path.getsize(path)
        blk = self._read_idx(index, size, prev)
        if blk is None:
            blk = self._scan_block(index, path, size, is_last, prev)
        else:
            self.recovery.indexed += 1
        self._apply_dlt(blk)
        if self._floor > blk.first:
            for slot in range(min(self._floor - blk.first, len(blk.lens))):
                blk.kill(slot)
        return blk

    def _scan_block(self, index: int, path: str, size: int, is_last: bool, prev: int) -> _Block:
        rep = self.recovery
        name = os.path.basename(path)
        with open(path, "rb") as f:
            buf = f.read()
        n = len(buf)
        blk = _Block(index, 0)
        pos = 0
        while pos < n:
            h = _parse_head(buf, pos, n)
            if h is not None and pos + h[1] <= n and _body_ok(buf, pos, h[1]):
                flags, total, seq, ts, ttl, slen, hlen, dlen = h
                if seq <= prev:
                    rep.errors.append(f"{name}: record at offset {pos} has sequence {seq} <= {prev}; skipped")
                else:
                    if not blk.lens:
                        blk.first = seq
                    subj = None
                    rl = 0
                    if not flags & _F_ERASED:
                        s0 = pos + _HEAD
                        subj = sys.intern(buf[s0:s0 + slen].decode(errors="replace"))
                        rl = total | (_HBIT if hlen else 0)
                    blk.add_slot(seq, pos, rl, ts, subj, ttl if rl else 0)
                    prev = seq
                    rep.records += 1
                pos += total
                continue
            # Damage at pos: find the next record whose header and body check out. The sequences between the
            # last good record and the next one are what the damage held.
            nxt = self._resync(buf, pos + 1, n)
            if nxt >= 0:
                rep.lost.extend(range(prev + 1, _REC.unpack_from(buf, nxt)[4]) if blk.lens or prev else ())
            elif h is not None and h[2] > prev:
                rep.lost.append(h[2])
            if nxt < 0:
                rep.truncated.append((name, pos, n - pos))
                if not is_last:
                    rep.errors.append(f"{name}: damaged tail of {n - pos} bytes at offset {pos} cut")
                with open(path, "r+b") as f:
                    f.truncate(pos)
                    f.flush()
                    os.fsync(f.fileno())
                n = pos
                break
            rep.errors.append(f"{name}: damaged bytes at offsets {pos}..{nxt} skipped")
            pos = nxt
        blk.size = n
        return blk

    @staticmethod
    def _resync(buf: bytes, start: int, n: int) -> int:
        i = buf.find(_MAGIC_BYTES, start)
        while i >= 0:
            h = _parse_head(buf, i, n)
            if h is not None and i + h[1] <= n and _body_ok(buf, i, h[1]):
                return i
            i = buf.find(_MAGIC_BYTES, i + 1)
        return -1

    def _apply_dlt(self, blk: _Block) -> None:
        path = self._path(blk.index, "dlt")
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return
        whole = len(data) - len(data) % _DLT.size
        for off in range(0, whole, _DLT.size):
            seq, c = _DLT.unpack_from(data, off)
            if _crc(data[off:off + 8]) != c:
                self.recovery.errors.append(f"{blk.index}.dlt: damaged entry at offset {off} skipped")
                continue
            slot = seq - blk.first
            if 0 <= slot < len(blk.lens):
                blk.kill(slot)
        if whole != len(data):  # a torn delete entry: that delete was never acknowledged
            self.recovery.truncated.append((os.path.basename(path), whole, len(data) - whole))
            with open(path, "r+b") as f:
                f.truncate(whole)

    def _read_idx(self, index: int, size: int, prev: int) -> _Block | None:
        try:
            with open(self._path(index, "idx"), "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return None
        try:
            if len(data) < _IDX.size + 4 or _crc(memoryview(data)[:-4]) != _U32.unpack_from(data, len(data) - 4)[0]:
                return None
            magic, ver, little, bsize, first, nslots, nsubj = _IDX.unpack_from(data, 0)
            if magic != _IDX_MAGIC or ver != 1 or bool(little) != _LITTLE or bsize != size or first <= prev:
                return None
            pos = _IDX.size
            names: list[str] = []
            for _ in range(nsubj):
                ln = int.from_bytes(data[pos:pos + 2], "little")
                names.append(sys.intern(data[pos + 2:pos + 2 + ln].decode()))
                pos += 2 + ln
            blk = _Block(index, first)
            for arr, width in ((blk.offs, 4), (blk.lens, 4), (blk.tss, 8)):
                arr.frombytes(data[pos:pos + nslots * width])
                pos += nslots * width
            sids = array("I")
            sids.frombytes(data[pos:pos + nslots * 4])
            pos += nslots * 4
            nttl = _U32.unpack_from(data, pos)[0]
            pos += 4
            for _ in range(nttl):
                seq, ttl = struct.unpack_from("<Qq", data, pos)
                blk.ttls[seq] = ttl
                pos += 16
            blk.subjs = [None if s == _NO_SID else names[s] for s in sids]
        except (IndexError, ValueError, struct.error, UnicodeDecodeError):
            return None
        blk.size = size
        for rl in blk.lens:
            if rl:
                blk.live += 1
                blk.live_bytes += rl & _MAX_RECORD
        return blk

    def _write_idx(self, blk: _Block) -> None:
        """Cache a sealed block's slots so the next start need not scan it. Not fsynced: it is checked on load."""
        sids = array("I")
        ids: dict[str, int] = {}
        for s in blk.subjs:
            if s is None:
                sids.append(_NO_SID)
            else:
                sids.append(ids.setdefault(s, len(ids)))
        parts = [_IDX.pack(_IDX_MAGIC, 1, int(_LITTLE), blk.size, blk.first, len(blk.lens), len(ids))]
        for s in ids:
            b = s.encode()
            parts.append(len(b).to_bytes(2, "little") + b)
        parts += [blk.offs.tobytes(), blk.lens.tobytes(), blk.tss.tobytes(), sids.tobytes()]
        ttls = {s: t for s, t in blk.ttls.items() if 0 <= s - blk.first < len(blk.lens) and blk.lens[s - blk.first]}
        parts.append(_U32.pack(len(ttls)))
        parts += [struct.pack("<Qq", s, t) for s, t in ttls.items()]
        data = b"".join(parts)
        path = self._path(blk.index, "idx")
        with open(path + ".tmp", "wb") as f:
            f.write(data + _U32.pack(_crc(data)))
        os.replace(path + ".tmp", path)

    @staticmethod
    def _unlink(path: str) -> None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass

    # -- primitives

    def _locate(self, seq: int) -> tuple[_Block, int] | None:
        i = bisect_right(self._firsts, seq) - 1
        if i < 0:
            return None
        blk = self._blocks[i]
        slot = seq - blk.first
        if slot >= len(blk.lens):
            return None
        return blk, slot

    def _stored(self, seq: int) -> tuple[_Block, int, int] | None:
        """The block, slot and record length (with its flag bits) of a message still stored."""
        loc = self._locate(seq)
        if loc is None:
            return None
        blk, slot = loc
        rl = blk.lens[slot]
        return (blk, slot, rl) if rl else None

    def _put(self, seq: int, ts: int, subject: str, sb: bytes, hdr: bytes, data: bytes, ttl: int) -> None:
        # The per-message write path of every file stream: kept flat (no helper calls but the write) on purpose.
        slen, hlen, dlen = len(sb), len(hdr), len(data)
        total = _OVERHEAD + slen + hlen + dlen
        if slen > 0xFFFF or total > _MAX_RECORD:
            raise ErrMsgTooLarge()
        blk = self._wblk
        if blk is None or seq != blk.first + len(blk.lens) or (blk.size and blk.size + total > self.cfg.block_size):
            if blk is not None and not blk.lens:
                blk.first = seq
                self._firsts[-1] = seq
            else:
                blk = self._new_block(seq)
        head = _REC.pack(_MAGIC, _VERSION, 0, total, seq, ts, ttl, slen, hlen, dlen)
        hc = _crc(head)
        bc = _crc(data, _crc(hdr, _crc(sb, hc)) if hlen else _crc(sb, hc))
        fd = self._wfd
        off = blk.size
        try:
            if os.writev(fd, [head, _U32.pack(hc), sb, hdr, data, _U32.pack(bc)]) != total:
                raise OSError(errno.EIO, "short write")
        except OSError:
            os.ftruncate(fd, off)  # leave no partial record behind a failed write (ENOSPC)
            os.lseek(fd, off, os.SEEK_SET)
            raise
        subject = sys.intern(subject)
        blk.offs.append(off)
        blk.lens.append(total | _HBIT if hlen else total)
        blk.tss.append(ts)
        blk.subjs.append(subject)
        if ttl:
            blk.ttls[seq] = ttl
        blk.live += 1
        blk.live_bytes += total
        blk.size = off + total
        self.bytes_written += total
        if self._sync_always:
            self._must.add(fd)
        else:
            self._lazy.add(fd)
        # _cache_put inlined: a new sequence is never cached yet.
        cost = dlen + hlen + 96
        budget = self.cfg.cache_bytes
        if self._cache_writes and cost * 4 <= budget:
            self._writes_unread += 1
            if self._writes_unread > WRITE_CACHE_IDLE:
                self._cache_writes = False
            cache = self._cache
            cache[seq] = StoredMsg(subject, hdr or None, data, seq, ts)
            used = self._cache_used + cost
            while used > budget:
                _, ev = cache.popitem(last=False)
                used -= len(ev.data) + len(ev.hdr or b"") + 96
            self._cache_used = used

    def _new_block(self, seq: int) -> _Block:
        if self._wblk is not None:
            self._seal(self._wblk)
        index = self._next_index
        self._next_index += 1
        fd = os.open(self._path(index, "blk"), os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        blk = _Block(index, seq)
        self._blocks.append(blk)
        self._firsts.append(seq)
        self._by_index[index] = blk
        self._wblk, self._wfd = blk, fd
        self._dir_dirty = True
        return blk

    def _seal(self, blk: _Block) -> None:
        """The write head becomes read-only: make its bytes durable, cache its index, keep its fd for reads."""
        self._flush_dlt()
        fd = self._wfd
        _fdatasync(fd)
        self._must.discard(fd)
        self._lazy.discard(fd)
        self._write_idx(blk)
        self._wblk, self._wfd = None, -1
        self._rfds[blk.index] = fd
        if len(self._rfds) > _MAX_READ_FDS:
            _, old = self._rfds.popitem(last=False)
            self._close_fd(old)
        if blk.live == 0:
            self._empty.add(blk.index)

    def _drop(self, seq: int, durable: bool) -> None:
        loc = self._locate(seq)
        assert loc is not None
        blk, slot = loc
        blk.kill(slot)
        self._uncache(seq)
        self._pending_dlt.setdefault(blk.index, bytearray()).extend(_DLT.pack(seq, _crc(_Q.pack(seq))))
        if durable:
            self._durable_dlt.add(blk.index)
        if blk is not self._wblk:
            if blk.live == 0:
                self._empty.add(blk.index)
            elif self._wants_compaction(blk):
                self._to_compact.add(blk.index)

    def _wants_compaction(self, blk: _Block) -> bool:
        """A sealed block is rewritten when most bytes between its first live record and its end are dead.
        Dead records in front of the first live one do not count: limits and age remove messages from the front,
        and those go with the whole block for free; rewriting for them would write every block twice."""
        if blk is self._wblk or not blk.live:
            return False
        lens, h = blk.lens, blk.head
        while not lens[h]:
            h += 1
        blk.head = h
        return blk.live_bytes * 2 < blk.size - blk.offs[h]

    def _drop_below(self, seq: int) -> None:
        self._floor = max(self._floor, seq)
        self._persist_floor()
        for blk in list(self._blocks):
            if blk.first >= seq:
                break
            if blk.end <= seq:
                self._remove_block(blk, ordered=False)
                continue
            for slot in range(seq - blk.first):
                if blk.lens[slot]:
                    blk.kill(slot)
                    self._uncache(blk.first + slot)
            if self._wants_compaction(blk):
                self._to_compact.add(blk.index)

    def _drop_all(self) -> None:
        self._floor = self._last + 1
        self._persist_floor()
        for blk in list(self._blocks):
            self._remove_block(blk, ordered=False)
        self._cache.clear()
        self._cache_used = 0

    def _persist_floor(self) -> None:
        data = json.dumps({"first_seq": self._floor, "last_seq": self._last, "last_ts": self._last_ts}).encode()
        atomic_write(self._state_path(), data)

    def _remove_block(self, blk: _Block, ordered: bool = True) -> None:
        """Unlink a block and its delete file. ordered: the block's deletes may be all that hides its records, so
        the block's unlink must be durable before its .dlt goes (else a power cut could bring records back)."""
        self._close_block_fds(blk)
        self._unlink(self._path(blk.index, "blk"))
        if ordered and os.path.exists(self._path(blk.index, "dlt")):
            _fsync_dir(self._mdir)
        self._unlink(self._path(blk.index, "dlt"))
        self._unlink(self._path(blk.index, "idx"))
        i = self._blocks.index(blk)
        del self._blocks[i]
        del self._firsts[i]
        del self._by_index[blk.index]
        self._pending_dlt.pop(blk.index, None)
        self._durable_dlt.discard(blk.index)
        self._empty.discard(blk.index)
        self._to_compact.discard(blk.index)
        for seq in range(blk.first, blk.end):
            self._uncache(seq)
        self._dir_dirty = True

    def _compact_block(self, blk: _Block) -> None:
        """Rewrite a sealed block with its live records only (nats-server compacts blocks the same way)."""
        fd = self._read_fd(blk)
        buf = os.pread(fd, blk.size, 0)
        out = bytearray()
        offs = array("I")
        for slot, rl in enumerate(blk.lens):
            if rl:
                off, ln = blk.offs[slot], rl & _MAX_RECORD
                offs.append(len(out))
                out += buf[off:off + ln]
            else:
                offs.append(0)
        path = self._path(blk.index, "blk")
        self._unlink(self._path(blk.index, "idx"))
        atomic_write(path, bytes(out))
        self.bytes_written += len(out)
        self._close_block_fds(blk)
        self._unlink(self._path(blk.index, "dlt"))
        blk.offs, blk.size = offs, len(out)
        self._write_idx(blk)

    def _get(self, seq: int) -> StoredMsg | None:
        self._writes_unread = 0
        self._cache_writes = True
        sm = self._cache.get(seq)
        if sm is not None:
            self._cache.move_to_end(seq)
            return sm
        loc = self._stored(seq)
        if loc is None:
            return None
        blk, slot, rl = loc
        rl &= _MAX_RECORD
        buf = os.pread(self._read_fd(blk), rl, blk.offs[slot])
        h = _parse_head(buf, 0, len(buf))
        if h is None or h[1] != rl or h[2] != seq or not _body_ok(buf, 0, rl):
            # Damage in a block trusted through its .idx shows up here. Report it and drop the message, so a
            # consumer sees this error once and then moves past it, instead of failing on it forever.
            err = f"{blk.index}.blk: record of sequence {seq} at offset {blk.offs[slot]} fails its checksum"
            log.error("filestore %s: %s; message dropped", self._dir, err)
            self.recovery.errors.append(err)
            self.recovery.lost.append(seq)
            self._remove(seq, True)
            self._commit(True)
            raise ErrBadMsg(f"malformed or corrupt message: {err}")
        flags, total, _seq, ts, _ttl, slen, hlen, dlen = h
        if flags & _F_ERASED:
            return None
        p = _HEAD + slen
        subj = blk.subjs[slot] or buf[_HEAD:p].decode(errors="replace")
        sm = StoredMsg(subj, buf[p:p + hlen] if hlen else None, buf[p + hlen:p + hlen + dlen], seq, ts)
        self._cache_put(sm)
        return sm

    def _info(self, seq: int) -> tuple[str, int, int] | None:
        loc = self._stored(seq)
        if loc is None:
            return None
        blk, slot, rl = loc
        return blk.subjs[slot], blk.tss[slot], _acct_size(rl)  # type: ignore[return-value]

    def _next_live(self, seq: int) -> int:
        if seq > self._last:
            return 0
        i = max(bisect_right(self._firsts, seq) - 1, 0)
        for blk in self._blocks[i:]:
            if not blk.live:
                continue
            lens = blk.lens
            j = max(seq - blk.first, 0)
            n = len(lens)
            while j < n:
                if lens[j]:
                    return blk.first + j
                j += 1
        return 0

    def _prev_live(self, seq: int) -> int:
        i = bisect_right(self._firsts, seq) - 1
        while i >= 0:
            blk = self._blocks[i]
            if blk.live:
                lens = blk.lens
                j = min(seq - blk.first, len(lens) - 1)
                while j >= 0:
                    if lens[j]:
                        return blk.first + j
                    j -= 1
            i -= 1
        return 0

    # -- cache

    def _cache_put(self, sm: StoredMsg) -> None:
        cost = len(sm.data) + len(sm.hdr or b"") + 96
        budget = self.cfg.cache_bytes
        if cost * 4 > budget:
            return
        old = self._cache.pop(sm.seq, None)
        if old is not None:
            self._cache_used -= len(old.data) + len(old.hdr or b"") + 96
        self._cache[sm.seq] = sm
        self._cache_used += cost
        while self._cache_used > budget:
            _, ev = self._cache.popitem(last=False)
            self._cache_used -= len(ev.data) + len(ev.hdr or b"") + 96

    def _uncache(self, seq: int) -> None:
        sm = self._cache.pop(seq, None)
        if sm is not None:
            self._cache_used -= len(sm.data) + len(sm.hdr or b"") + 96

    # -- commit and sync

    def _flush_dlt(self) -> None:
        if not self._pending_dlt:
            return
        pending, self._pending_dlt = self._pending_dlt, {}
        durable, self._durable_dlt = self._durable_dlt, set()
        for index, buf in pending.items():
            blk = self._by_index.get(index)
            if blk is None or (blk.live == 0 and blk is not self._wblk):
                continue  # the block itself is about to go
            fd = self._dlt_fd(blk)
            os.write(fd, buf)
            self.bytes_written += len(buf)
            self._dirty(fd, index in durable)

    def _commit(self, durable: bool) -> None:
        if self._pending_dlt:
            self._flush_dlt()
        if self._empty:
            for index in sorted(self._empty):
                blk = self._by_index.get(index)
                if blk is not None and blk.live == 0 and blk is not self._wblk:
                    self._remove_block(blk)
            self._empty.clear()
        if self._to_compact:
            for index in sorted(self._to_compact):
                blk = self._by_index.get(index)
                if blk is not None and self._wants_compaction(blk):
                    self._compact_block(blk)
            self._to_compact.clear()
        if self._sync_always:
            if (self._must or self._dir_dirty) and not self._group:
                self._sync_must()
        elif self._must or self._lazy or self._dir_dirty:
            if self._clock() - self._last_sync >= self._sync_ns:
                self.sync()

    def _sync_must(self) -> None:
        for fd in self._must:
            _fdatasync(fd)
        self._must.clear()
        if self._dir_dirty:
            _fsync_dir(self._mdir)
            self._dir_dirty = False

    def sync(self) -> None:
        """fsync everything written so far, lazily-synced deletes included (the interval timer calls this)."""
        self._check()
        self._flush_dlt()
        self._must |= self._lazy
        self._lazy.clear()
        self._sync_must()
        self._last_sync = self._clock()

    @contextmanager
    def group_commit(self) -> Iterator[None]:
        self._group += 1
        try:
            yield
        finally:
            self._group -= 1
            if not self._group and not self._closed and self.cfg.sync == SYNC_ALWAYS:
                self._sync_must()

    # -- overrides

    def erase_msg(self, seq: int) -> bool:
        """Delete seq and overwrite its record on disk (subject, headers and payload zeroed, flagged erased)."""
        self._check()
        loc = self._stored(seq)
        if loc is None:
            return False
        blk, slot, rl = loc
        rl, off = rl & _MAX_RECORD, blk.offs[slot]
        own = blk is not self._wblk
        fd = os.open(self._path(blk.index, "blk"), os.O_RDWR) if own else self._wfd
        try:
            h = _parse_head(os.pread(fd, _HEAD, off), 0, _HEAD)
            if h is not None:
                _flags, total, _s, ts, ttl, slen, hlen, dlen = h
                head = _REC.pack(_MAGIC, _VERSION, _F_ERASED, total, seq, ts, ttl, slen, hlen, dlen)
                hc = _crc(head)
                body = bytes(slen + hlen + dlen)
                os.pwrite(fd, b"".join((head, _U32.pack(hc), body, _U32.pack(_crc(body, hc)))), off)
                self.bytes_written += rl
                if own:
                    _fdatasync(fd)
                else:
                    self._dirty(fd, True)
        finally:
            if own:
                os.close(fd)
        return self.remove_msg(seq)

    def update_config(self, cfg: StoreConfig) -> None:
        super().update_config(cfg)
        self._sync_settings()
        if self.cfg.sync == SYNC_ALWAYS:
            self.sync()

    def _sync_settings(self) -> None:
        """Derived once per config, not per write: is every write synced, and the interval in ns otherwise."""
        self._sync_always = self.cfg.sync == SYNC_ALWAYS
        self._sync_ns = 0 if self._sync_always else int(float(self.cfg.sync) * 1e9)

    # -- consumers

    def consumer_store(self, name: str, ack_policy: str = "explicit", max_deliver: int = -1) -> ConsumerFileStore:
        self._check()
        if not name or "/" in name or name.startswith("."):
            raise ValueError(f"bad consumer name {name!r}")
        o = ConsumerFileStore(os.path.join(self._dir, "obs", name), name, ack_policy, max_deliver,
                              self.cfg.sync == SYNC_ALWAYS)
        self.register_consumer()
        o._on_stop = self.unregister_consumer
        return o

    def consumer_names(self) -> list[str]:
        """Consumers with persisted state in this stream's directory."""
        obs = os.path.join(self._dir, "obs")
        return sorted(n for n in os.listdir(obs) if os.path.isdir(os.path.join(obs, n)))

    # -- lifecycle

    def stop(self) -> None:
        """Flush, fsync, cache the write block's index (so the next start scans nothing), close."""
        if self._closed:
            return
        self._commit(False)
        self.sync()
        if self._wblk is not None and self._wblk.lens:
            self._write_idx(self._wblk)
        for fd in list(self._rfds.values()) + list(self._dfds.values()):
            os.close(fd)
        if self._wfd >= 0:
            os.close(self._wfd)
        self._rfds.clear()
        self._dfds.clear()
        self._wblk, self._wfd = None, -1
        self._cache.clear()
        self._must.clear()
        self._lazy.clear()
        os.close(self._lock_fd)
        super().stop()

    def delete(self) -> None:
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"msgs={self._msgs} first={self._first} last={self._last}"
        return f"<FileStore {self._dir!r} blocks={len(self._blocks)} {state}>"


class ConsumerFileStore(ConsumerStore):
    """A durable consumer's state in `<store_dir>/obs/<name>/o.dat`: nats-server's encoding plus a CRC32, replaced
    atomically. With sync "always" every change is written before the call returns; otherwise the owner calls
    `flush()` (on its interval timer) and `stop()` flushes. A state file that fails its CRC is refused with
    ErrCorruptState rather than silently reset."""

    def __init__(self, path: str, name: str, ack_policy: str, max_deliver: int, sync_always: bool) -> None:
        super().__init__(name, ack_policy, max_deliver)
        self._dir = path
        self._file = os.path.join(path, "o.dat")
        self._always = sync_always
        self._dirty_state = False
        os.makedirs(path, exist_ok=True)
        try:
            with open(self._file, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            return
        if len(raw) < 6 or _crc(raw[:-4]) != _U32.unpack_from(raw, len(raw) - 4)[0]:
            raise ErrCorruptState(f"consumer state is corrupt: {self._file}")
        self._st = decode_consumer_state(raw[:-4])

    def _persist(self) -> None:
        self._dirty_state = True
        if self._always:
            self.flush()

    def flush(self) -> None:
        if not self._dirty_state:
            return
        enc = encode_consumer_state(self._st)
        atomic_write(self._file, enc + _U32.pack(_crc(enc)))
        self._dirty_state = False

    def stop(self) -> None:
        if not self._closed:
            self.flush()
        super().stop()

    def delete(self) -> None:
        self._dirty_state = False
        super().stop()
        shutil.rmtree(self._dir, ignore_errors=True)
