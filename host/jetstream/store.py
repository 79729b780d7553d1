"""Stream storage: the interface both stores implement and the semantics they share, as nats-server `server/store.go`.

Owns: the storage settings (`StoreConfig`), the stored message and state types, the store errors (texts equal to
nats-server's, because they reach clients inside API errors), the subject index, and every rule about sequences,
limits, purges and expiry. `memstore.py` and `filestore.py` only say where a message lives; the rules are
written once, here, in `StreamStore`, so the two stores cannot drift apart.

Rules:
1. Sequences only grow. `last_seq` never goes back, not after deletes, purges, compaction or a restart; `first_seq` is
   the lowest stored message, or `last_seq + 1` when there is none (nats-server `memstore.go` `updateFirstSeq`).
2. No hidden clock: a message's timestamp comes from the `ts` argument or from the clock injected at construction;
   expiry runs only when the owner calls `expire(now)`, and `next_expiry()` says when that is due.
3. Limits are enforced on every store (nats-server `storeRawMsg`): discard "new" refuses with ErrMaxMsgs/ErrMaxBytes/
   ErrMaxMsgsPerSubject before anything is written; discard "old" drops the oldest after the write. The per-subject
   limit always drops the oldest message of that subject, whatever the discard policy.
4. One event loop, no threads: no method awaits or blocks on anything but local disk IO, so every method is atomic
   with respect to the asyncio loop that owns the store. Not thread-safe.
5. Subjects are `str` (nats-server's `string`); headers and payloads are `bytes`. A store keeps what it is given: the
   stream layer validates subjects, parses `Nats-TTL` and applies rollups before calling `store_msg`.
"""

from __future__ import annotations

import heapq
import time
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

from host.gotime import NS, format_duration

DISCARD_OLD = "old"
DISCARD_NEW = "new"
SYNC_ALWAYS = "always"
# nats-server's default sync_interval (`defaultSyncInterval`, filestore.go): what a power cut can lose. See
# docs/jetstream-store.md for what each setting loses on kill -9 and on a power cut.
DEFAULT_SYNC_INTERVAL = 120.0
# nats-server picks 4 MiB (`defaultMediumBlockSize`) for KV-like streams and 8 MiB for large ones; a Python store
# reads a whole block when it rebuilds an index, so the smaller one keeps restarts short.
DEFAULT_BLOCK_SIZE = 4 << 20
MAX_BLOCK_SIZE = 1 << 30
# A message with this TTL is never expired, not even by max_age (ADR-43 `Nats-TTL: never`).
TTL_NEVER = -1

# Headers of a subject delete marker (ADR-43 "Limit Tombstones"; nats-server `handleRemovalOrSdm`).
HDR_MARKER_REASON = "Nats-Marker-Reason"
MARKER_REASON_MAX_AGE = "MaxAge"



# Errors: nats-server `server/store.go` sentinels, same texts.


class StoreError(Exception):
    """Base of the store errors; `str(err)` is nats-server's text."""

    text = "store error"

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail or self.text)


class ErrStoreClosed(StoreError):
    text = "store is closed"


class ErrStoreMsgNotFound(StoreError):
    """The sequence is within the stream but holds no message (deleted, purged, expired, never stored)."""

    text = "no message found"


class ErrStoreEOF(StoreError):
    """The sequence is past the last one, or nothing matches from there on."""

    text = "stream store EOF"


class ErrMaxMsgs(StoreError):
    text = "maximum messages exceeded"


class ErrMaxBytes(StoreError):
    text = "maximum bytes exceeded"


class ErrMaxMsgsPerSubject(StoreError):
    text = "maximum messages per subject exceeded"


class ErrMsgTooLarge(StoreError):
    text = "message too large"


class ErrTooManyResults(StoreError):
    text = "too many matching results for request"


class ErrBadMsg(StoreError):
    """A record on disk failed its checksum when read (filestore `errBadMsg`)."""

    text = "malformed or corrupt message"


class ErrNoAckPolicy(StoreError):
    text = "ack policy is none"


class ErrStoreOldUpdate(StoreError):
    text = "old update ignored"


class ErrCorruptState(StoreError):
    text = "consumer state is corrupt"


# Types


@dataclass
class StoreConfig:
    """Storage settings of one stream: the limits of nats-server's StreamConfig plus the file store's knobs.

    Limits use nats-server's conventions: a count or size <= 0 means unlimited (streams send -1).
    """

    name: str = ""
    store_dir: str | None = None  # file store: this stream's directory (msgs/ and obs/ live under it)
    max_msgs: int = -1
    max_bytes: int = -1
    max_age: float = 0.0  # seconds; 0 = no age limit
    max_msgs_per_subject: int = -1
    max_msg_size: int = -1  # header + payload bytes
    discard: str = DISCARD_OLD
    discard_new_per_subject: bool = False  # nats-server DiscardNewPer: discard new also refuses per subject
    allow_msg_ttl: bool = False
    subject_delete_marker_ttl: int = 0  # seconds; > 0 (with allow_msg_ttl) leaves a marker when age removes a subject
    first_seq: int = 0  # a new store starts at this sequence (StreamConfig.FirstSeq)
    # File store only.
    block_size: int = DEFAULT_BLOCK_SIZE
    sync: str | float = DEFAULT_SYNC_INTERVAL  # "always", or seconds between fsyncs
    cache_bytes: int = 4 << 20  # recently written/read messages kept decoded

    def validate(self) -> None:
        if self.discard not in (DISCARD_OLD, DISCARD_NEW):
            raise ValueError(f"discard must be {DISCARD_OLD!r} or {DISCARD_NEW!r}, not {self.discard!r}")
        if self.max_age < 0:
            raise ValueError("max_age must be >= 0")
        if not 64 <= self.block_size <= MAX_BLOCK_SIZE:
            raise ValueError(f"block_size must be within 64..{MAX_BLOCK_SIZE}")
        if self.sync != SYNC_ALWAYS and (isinstance(self.sync, str) or self.sync <= 0):
            raise ValueError(f"sync must be {SYNC_ALWAYS!r} or a positive number of seconds")
        if self.subject_delete_marker_ttl < 0:
            raise ValueError("subject_delete_marker_ttl must be >= 0")

    @property
    def markers(self) -> bool:
        """Subject delete markers are on (nats-server requires AllowMsgTTL for SubjectDeleteMarkerTTL)."""
        return self.allow_msg_ttl and self.subject_delete_marker_ttl > 0


@dataclass(slots=True)
class StoredMsg:
    """A stored message. Stores hand out cached instances: treat them as read-only."""

    subject: str
    hdr: bytes | None
    data: bytes
    seq: int
    ts: int  # ns since the epoch


class SimpleState(NamedTuple):
    """Messages matching a filter (nats-server SimpleState): count, first and last sequence (0 when none)."""

    msgs: int
    first: int
    last: int


@dataclass
class StreamState:
    msgs: int = 0
    bytes: int = 0
    first_seq: int = 0
    first_ts: int = 0
    last_seq: int = 0
    last_ts: int = 0
    num_deleted: int = 0
    deleted: list[int] | None = None  # only when asked for: state(deleted=True)
    num_subjects: int = 0
    consumer_count: int = 0


@dataclass
class Expired:
    """What one `expire(now)` call did: sequences removed, and subject delete markers it stored."""

    removed: list[int] = field(default_factory=list)
    markers: list[int] = field(default_factory=list)


def marker_header(ttl: int) -> bytes:
    """Headers of a subject delete marker left when max_age or a TTL removes a subject's last message."""
    return (
        f"NATS/1.0\r\n{HDR_MARKER_REASON}: {MARKER_REASON_MAX_AGE}\r\nNats-TTL: {format_duration(ttl * NS)}\r\n"
        f"Nats-Rollup: sub\r\n\r\n"
    ).encode()


def is_marker(hdr: bytes | None) -> bool:
    return bool(hdr) and HDR_MARKER_REASON.encode() in hdr  # type: ignore[operator]


class Filter:
    """A subject filter compiled once: "" and ">" match everything; `*` one token, `>` one or more trailing tokens."""

    __slots__ = ("subject", "all", "literal", "_toks")

    def __init__(self, subject: str) -> None:
        self.subject = subject
        self.all = subject in ("", ">")
        toks = subject.split(".")
        self.literal = not self.all and "*" not in toks and ">" not in toks
        self._toks = toks

    def match(self, subject: str) -> bool:
        if self.all:
            return True
        if self.literal:
            return subject == self.subject
        st = subject.split(".")
        n = len(st)
        for i, p in enumerate(self._toks):
            if p == ">":
                return n > i
            if i >= n or (p != "*" and p != st[i]):
                return False
        return len(self._toks) == n


class _Seqs:
    """The sequences of one subject, ascending; those before `head` are already removed (cheap front removal)."""

    __slots__ = ("a", "head")

    def __init__(self, a: array, head: int = 0) -> None:
        self.a = a
        self.head = head


class SubjectIndex:
    """subject -> the sequences stored under it.

    nats-server keeps a SimpleState per subject and rescans for a new first/last after removals; keeping the sequences
    themselves (8 bytes each, one int for a subject with one message, the KV case) makes first, last, "count from
    seq" and "next from seq" exact and O(log n) without touching message storage.
    """

    __slots__ = ("_d",)

    def __init__(self) -> None:
        self._d: dict[str, int | _Seqs] = {}

    def __len__(self) -> int:
        return len(self._d)

    def __contains__(self, subject: str) -> bool:
        return subject in self._d

    def clear(self) -> None:
        self._d.clear()

    def add(self, subject: str, seq: int) -> int:
        """Record seq (greater than any recorded) under subject; returns the subject's message count."""
        d = self._d
        v = d.get(subject)
        if v is None:
            d[subject] = seq
            return 1
        if type(v) is int:
            d[subject] = _Seqs(array("Q", (v, seq)))
            return 2
        v.a.append(seq)
        return len(v.a) - v.head

    def remove(self, subject: str, seq: int) -> None:
        d = self._d
        v = d[subject]
        if type(v) is int:
            del d[subject]
            return
        a, h = v.a, v.head
        if a[h] == seq:
            h += 1
            if h >= 32 and h * 2 >= len(a):
                del a[:h]
                h = 0
            v.head = h
        elif a[-1] == seq:
            a.pop()
        else:
            i = bisect_left(a, seq, h)
            if i < len(a) and a[i] == seq:
                del a[i]
        if len(a) - v.head == 1:
            d[subject] = a[v.head]

    def msgs(self, subject: str) -> int:
        v = self._d.get(subject)
        if v is None:
            return 0
        return 1 if type(v) is int else len(v.a) - v.head

    def first(self, subject: str) -> int:
        v = self._d[subject]
        return v if type(v) is int else v.a[v.head]

    def last(self, subject: str) -> int:
        v = self._d[subject]
        return v if type(v) is int else v.a[-1]

    def state(self, subject: str, start: int = 0) -> SimpleState:
        """Messages of subject at or after start."""
        v = self._d.get(subject)
        if v is None:
            return SimpleState(0, 0, 0)
        if type(v) is int:
            return SimpleState(1, v, v) if v >= start else SimpleState(0, 0, 0)
        a = v.a
        i = bisect_left(a, start, v.head)
        if i == len(a):
            return SimpleState(0, 0, 0)
        return SimpleState(len(a) - i, a[i], a[-1])

    def next_from(self, subject: str, start: int) -> int:
        """First sequence >= start, or 0."""
        v = self._d.get(subject)
        if v is None:
            return 0
        if type(v) is int:
            return v if v >= start else 0
        a = v.a
        i = bisect_left(a, start, v.head)
        return a[i] if i < len(a) else 0

    def last_upto(self, subject: str, max_seq: int) -> int:
        """Last sequence <= max_seq, or 0."""
        v = self._d.get(subject)
        if v is None:
            return 0
        if type(v) is int:
            return v if v <= max_seq else 0
        a = v.a
        i = bisect_right(a, max_seq, v.head)
        return a[i - 1] if i > v.head else 0

    def seqs(self, subject: str) -> Iterable[int]:
        v = self._d.get(subject)
        if v is None:
            return ()
        if type(v) is int:
            return (v,)
        return v.a[v.head:]

    def matching(self, flt: Filter) -> Iterable[str]:
        """Subjects the filter matches. A wildcard walks every subject (nats-server walks its subject tree)."""
        if flt.all:
            return self._d.keys()
        if flt.literal:
            return (flt.subject,) if flt.subject in self._d else ()
        return [s for s in self._d if flt.match(s)]


# The shared store logic


class StreamStore:
    """A stream's messages: the nats-server StreamStore interface, with the shared semantics implemented here.

    Subclasses implement the storage primitives (`_put`, `_drop`, `_drop_below`, `_drop_all`, `_get`, `_info`,
    `_next_live`, `_prev_live`, `_persist_floor`, `_commit`) and `msg_size`, the bytes a message counts for.
    Accounting (msgs, bytes, first/last), the subject index and TTL tracking live here.
    """

    kind = "abstract"

    @staticmethod
    def msg_size(slen: int, hlen: int, dlen: int) -> int:
        raise NotImplementedError

    def __init__(self, cfg: StoreConfig, clock: Callable[[], int] = time.time_ns) -> None:
        cfg.validate()
        self.cfg = replace(cfg)
        self._clock = clock
        self._closed = False
        self._msgs = 0
        self._bytes = 0
        self._first = 0
        self._last = 0
        self._last_ts = 0
        self._subjects = SubjectIndex()
        self._ttls: list[tuple[int, int]] = []  # heap of (expires ns, seq); stale entries skipped when popped
        self._never: set[int] = set()  # seqs stored with TTL_NEVER
        self._consumers = 0

    # -- primitives (subclasses)

    def _put(self, seq: int, ts: int, subject: str, sb: bytes, hdr: bytes, data: bytes, ttl: int) -> None:
        raise NotImplementedError

    def _drop(self, seq: int, durable: bool) -> None:
        """Forget the live message seq (accounting is already done). durable: an explicit delete, which sync
        "always" must make durable before the call returns; limit and age removals are re-applied on recovery."""
        raise NotImplementedError

    def _drop_below(self, seq: int) -> None:
        """Forget every message below seq, and persist first_seq >= seq (compact)."""
        raise NotImplementedError

    def _drop_all(self) -> None:
        """Forget every message and persist first = last + 1 (purge)."""
        raise NotImplementedError

    def _get(self, seq: int) -> StoredMsg | None:
        raise NotImplementedError

    def _info(self, seq: int) -> tuple[str, int, int] | None:
        """(subject, ts, counted size) of a live message, without its payload."""
        raise NotImplementedError

    def _next_live(self, seq: int) -> int:
        """Lowest live sequence >= seq, or 0."""
        raise NotImplementedError

    def _prev_live(self, seq: int) -> int:
        """Highest live sequence <= seq, or 0."""
        raise NotImplementedError

    def _persist_floor(self) -> None:
        """Make first_seq/last_seq survive a restart when no message records them (skip_msgs, first_seq)."""

    def _commit(self, durable: bool) -> None:
        """End of a public operation: write what was deferred; sync if the policy says so."""

    # -- helpers

    def _check(self) -> None:
        if self._closed:
            raise ErrStoreClosed()

    def _track(self, seq: int, subject: str, ts: int, size: int, ttl: int) -> int:
        """Account a message that is now stored; returns its subject's message count."""
        if self._msgs == 0:
            self._first = seq
        self._msgs += 1
        self._bytes += size
        if ttl > 0:
            heapq.heappush(self._ttls, (ts + ttl * NS, seq))
        elif ttl == TTL_NEVER:
            self._never.add(seq)
        return self._subjects.add(subject, seq)

    def _remove(self, seq: int, durable: bool) -> bool:
        info = self._info(seq)
        if info is None:
            return False
        subject, _ts, size = info
        self._subjects.remove(subject, seq)
        self._msgs -= 1
        self._bytes -= size
        self._never.discard(seq)
        self._drop(seq, durable)
        if seq == self._first:
            self._first = (self._next_live(seq + 1) if self._msgs else 0) or self._last + 1
        return True

    def _reset_index(self) -> None:
        self._msgs = 0
        self._bytes = 0
        self._subjects.clear()
        self._ttls.clear()
        self._never.clear()

    def _enforce_limits(self) -> None:
        cfg = self.cfg
        if cfg.max_msgs_per_subject > 0:
            maxp = cfg.max_msgs_per_subject
            subs = self._subjects
            over = [s for s in subs.matching(Filter(">")) if subs.msgs(s) > maxp]
            for s in over:
                while subs.msgs(s) > maxp:
                    self._remove(subs.first(s), False)
        self._enforce_totals()

    def _enforce_totals(self) -> None:
        cfg = self.cfg
        if cfg.discard != DISCARD_OLD:
            return
        if cfg.max_msgs > 0:
            while self._msgs > cfg.max_msgs:
                self._remove_first()
        if cfg.max_bytes > 0:
            while self._bytes > cfg.max_bytes:
                self._remove_first()

    def _remove_first(self) -> None:
        if not self._remove(self._first, False):
            # nats-server panics here ("inconsistent state, can't find first seq msg"); looping would hang.
            raise RuntimeError(f"store {self.cfg.name!r}: first sequence {self._first} is not stored")

    # -- writing

    def store_msg(
        self, subject: str, hdr: bytes | None, data: bytes, ttl: int = 0, ts: int | None = None
    ) -> tuple[int, int]:
        """Append a message; returns (seq, ts). ttl: seconds (> 0), TTL_NEVER, or 0 for none.

        As nats-server `storeRawMsg`: with discard "new" a full stream refuses before writing (ErrMaxMsgs,
        ErrMaxBytes, ErrMaxMsgsPerSubject when discard_new_per_subject); otherwise the oldest go after the write.
        A subject at its per-subject limit may still store under discard "new": its own oldest is replaced.
        """
        self._check()
        if not subject:
            raise ValueError("empty subject")
        cfg = self.cfg
        hdr = bytes(hdr) if hdr else b""  # copies a caller's bytearray/memoryview; bytes pass through
        sb = subject.encode()
        size = self.msg_size(len(sb), len(hdr), len(data))
        if 0 < cfg.max_msg_size < len(hdr) + len(data):
            raise ErrMsgTooLarge()
        if cfg.discard == DISCARD_NEW:
            self._check_discard_new(subject, size)
        seq = self._last + 1
        if ts is None:
            ts = self._clock()
        self._put(seq, ts, subject, sb, hdr, bytes(data), ttl)
        self._last = seq
        self._last_ts = ts
        self._after_append(subject, self._track(seq, subject, ts, size, ttl))
        self._commit(True)
        return seq, ts

    def _after_append(self, subject: str, n: int) -> None:
        """Limits after a write: the subject's own limit first, then the totals (nats-server order)."""
        cfg = self.cfg
        maxp = cfg.max_msgs_per_subject
        if 0 < maxp < n:
            subs = self._subjects
            while subs.msgs(subject) > maxp:
                self._remove(subs.first(subject), False)
        if (0 < cfg.max_msgs < self._msgs) or (0 < cfg.max_bytes < self._bytes):
            self._enforce_totals()

    def _check_discard_new(self, subject: str, size: int) -> None:
        cfg = self.cfg
        maxp = cfg.max_msgs_per_subject
        at_subject_limit = maxp > 0 and self._subjects.msgs(subject) >= maxp
        if at_subject_limit and cfg.discard_new_per_subject:
            raise ErrMaxMsgsPerSubject()
        if 0 < cfg.max_msgs <= self._msgs and not at_subject_limit:
            raise ErrMaxMsgs()
        if cfg.max_bytes > 0 and self._bytes + size > cfg.max_bytes:
            if not at_subject_limit:
                raise ErrMaxBytes()
            # The subject's oldest will be replaced: is it big enough to make room?
            info = self._info(self._subjects.first(subject))
            if info is None or info[2] < size:
                raise ErrMaxBytes()

    def skip_msgs(self, seq: int, num: int, ts: int = 0) -> None:
        """Consume sequences seq .. seq+num-1 without storing anything (seq must be last_seq + 1). A `ts` becomes
        last_ts: an interest stream skipping a message nobody wants still reports when it came (nats-server
        SkipMsgNoInterest)."""
        self._check()
        if seq != self._last + 1:
            raise ValueError(f"skip_msgs: expected sequence {self._last + 1}, got {seq}")
        self._last = seq + num - 1
        if ts:
            self._last_ts = ts
        if self._msgs == 0:
            self._first = self._last + 1
        self._persist_floor()
        self._commit(True)

    @contextmanager
    def group_commit(self) -> Iterator[None]:
        """Store several messages with one sync: inside the block, sync "always" defers its fsync to the end of
        the block, so acknowledge only after it exits. No-op for the memory store."""
        yield

    def sync(self) -> None:
        """Flush everything written to stable storage (nats-server FlushAllPending + a sync). No-op in memory."""

    # -- removing

    def remove_msg(self, seq: int) -> bool:
        """Delete one message; False if there was none at seq."""
        self._check()
        removed = self._remove(seq, True)
        self._commit(True)
        return removed

    def erase_msg(self, seq: int) -> bool:
        """Delete one message and overwrite its bytes where it was stored (nats-server EraseMsg)."""
        return self.remove_msg(seq)

    def purge(self, subject: str | None = None, seq: int = 0, keep: int = 0) -> int:
        """nats-server PurgeEx: remove messages matching subject (None/""/">" = all), only those below seq
        (0 = no bound), leaving the newest `keep` of the matching ones. Returns how many were removed."""
        self._check()
        if seq == 1:
            return 0
        if not subject or subject == ">":
            if keep == 0 and seq == 0:
                return self._purge_all()
            if seq > 1 and keep == 0:
                return self.compact(seq)
            subject = ">"
        flt = Filter(subject)
        subs = self._subjects
        matching = list(subs.matching(flt))
        total = sum(subs.msgs(s) for s in matching)
        if total == 0:
            return 0
        limit = total
        if keep > 0:
            if keep >= total:
                return 0
            limit = total - keep
        upto = seq - 1 if seq > 1 else self._last
        if flt.literal:
            victims: Iterable[int] = list(subs.seqs(subject))
        else:
            victims = sorted(x for s in matching for x in subs.seqs(s))
        purged = 0
        for x in victims:
            if x > upto or purged >= limit:
                break
            if self._remove(x, True):
                purged += 1
        self._commit(True)
        return purged

    def _purge_all(self) -> int:
        purged = self._msgs
        self._reset_index()
        self._first = self._last + 1
        self._drop_all()
        self._commit(True)
        return purged

    def compact(self, seq: int) -> int:
        """Remove every message below seq (nats-server Compact). Past the end it purges, and the next message
        stored gets sequence seq. Returns how many were removed."""
        self._check()
        if seq == 0:
            return self._purge_all()
        if seq <= self._first:
            return 0
        purged = 0
        if seq <= self._last:
            x = self._first if self._msgs else 0
            while x and x < seq:
                info = self._info(x)
                if info is not None:
                    self._subjects.remove(info[0], x)
                    self._msgs -= 1
                    self._bytes -= info[2]
                    self._never.discard(x)
                    purged += 1
                x = self._next_live(x + 1)
            self._first = (self._next_live(seq) if self._msgs else 0) or self._last + 1
        else:
            purged = self._msgs
            self._reset_index()
            self._last = seq - 1
            self._first = seq
        self._drop_below(seq)
        self._commit(True)
        return purged

    # -- reading

    def load_msg(self, seq: int) -> StoredMsg:
        self._check()
        sm = self._get(seq)
        if sm is None:
            raise ErrStoreEOF() if seq > self._last else ErrStoreMsgNotFound()
        return sm

    def load_next_msg(self, filter_subject: str, start_seq: int) -> tuple[StoredMsg, int]:
        """First message at or after start_seq matching the filter; returns (msg, msg.seq + 1), the sequence to
        continue from. Raises ErrStoreEOF when nothing matches."""
        self._check()
        seq = self._next_match(Filter(filter_subject), max(start_seq, self._first))
        if not seq:
            raise ErrStoreEOF()
        sm = self._get(seq)
        if sm is None:
            raise ErrStoreMsgNotFound()
        return sm, seq + 1

    def _next_match(self, flt: Filter, start: int) -> int:
        if self._msgs == 0 or start > self._last:
            return 0
        if flt.all:
            return self._next_live(start)
        subs = self._subjects
        if flt.literal:
            return subs.next_from(flt.subject, start)
        # A wildcard: walk a few messages first (cheap when the filter matches most of them), then ask every
        # matching subject for its next sequence (cheap when it matches few). nats-server makes the same choice.
        x = self._next_live(start)
        for _ in range(32):
            if not x:
                return 0
            info = self._info(x)
            if info is not None and flt.match(info[0]):
                return x
            x = self._next_live(x + 1)
        if not x:
            return 0
        best = 0
        for s in subs.matching(flt):
            n = subs.next_from(s, x)
            if n and (not best or n < best):
                best = n
        return best

    def load_last_msg(self, filter_subject: str) -> StoredMsg:
        """The last message matching the filter (wildcards allowed); ErrStoreMsgNotFound if none."""
        self._check()
        seq = self._last_match(Filter(filter_subject))
        if not seq:
            raise ErrStoreMsgNotFound()
        sm = self._get(seq)
        if sm is None:
            raise ErrStoreMsgNotFound()
        return sm

    def _last_match(self, flt: Filter) -> int:
        if self._msgs == 0:
            return 0
        if flt.all:
            return self._prev_live(self._last)
        subs = self._subjects
        return max((subs.last(s) for s in subs.matching(flt)), default=0)

    def get_seq_from_time(self, ts: int) -> int:
        """First sequence stored at or after ts (ns); last_seq + 1 when none (nats-server GetSeqFromTime).
        Timestamps are taken to grow with sequences."""
        self._check()
        if self._msgs == 0:
            return self._last + 1
        lo, hi = self._first, self._prev_live(self._last)
        if self._ts(hi) < ts:
            return self._last + 1
        while lo < hi:
            mid = (lo + hi) // 2
            s = self._next_live(mid)
            if self._ts(s) >= ts:
                hi = mid
            else:
                lo = s + 1
        return self._next_live(lo)

    def _ts(self, seq: int) -> int:
        info = self._info(seq)
        assert info is not None
        return info[1]

    def subject_for_seq(self, seq: int) -> str:
        self._check()
        info = self._info(seq)
        if info is None:
            raise ErrStoreMsgNotFound()
        return info[0]

    # -- state

    def state(self, deleted: bool = False) -> StreamState:
        self._check()
        first, last = self._first, self._last
        st = StreamState(
            msgs=self._msgs,
            bytes=self._bytes,
            first_seq=first,
            first_ts=self._ts(first) if self._msgs else 0,
            last_seq=last,
            last_ts=self._last_ts,
            num_subjects=len(self._subjects),
            consumer_count=self._consumers,
        )
        if self._msgs:
            st.num_deleted = (last - first + 1) - self._msgs
        if deleted:
            gaps: list[int] = []
            if self._msgs:
                x = first
                while x and x <= last:
                    n = self._next_live(x + 1) or last + 1
                    gaps.extend(range(x + 1, n))
                    x = n if n <= last else 0
            st.deleted = gaps
        return st

    def filtered_state(self, start_seq: int, filter_subject: str) -> SimpleState:
        """Messages matching the filter at or after start_seq (nats-server FilteredState)."""
        self._check()
        return self._filtered(start_seq, Filter(filter_subject), False)

    def _filtered(self, start: int, flt: Filter, last_per_subject: bool) -> SimpleState:
        start = max(start, self._first)
        if self._msgs == 0 or start > self._last:
            return SimpleState(0, 0, 0)
        subs = self._subjects
        if flt.all and start <= self._first and not last_per_subject:
            return SimpleState(self._msgs, self._first, self._prev_live(self._last))
        msgs = first = last = 0
        for s in subs.matching(flt):
            if last_per_subject:
                n = subs.last(s)
                if n < start:
                    continue
                ss = SimpleState(1, n, n)
            else:
                ss = subs.state(s, start)
                if not ss.msgs:
                    continue
            msgs += ss.msgs
            if not first or ss.first < first:
                first = ss.first
            if ss.last > last:
                last = ss.last
        return SimpleState(msgs, first, last)

    def subjects_state(self, filter_subject: str = ">") -> dict[str, SimpleState]:
        """Per subject matching the filter: (msgs, first, last)."""
        self._check()
        subs = self._subjects
        return {s: subs.state(s) for s in subs.matching(Filter(filter_subject))}

    def subjects_totals(self, filter_subject: str = ">") -> dict[str, int]:
        self._check()
        subs = self._subjects
        return {s: subs.msgs(s) for s in subs.matching(Filter(filter_subject))}

    def num_pending(self, start_seq: int, filter_subject: str = "", last_per_subject: bool = False) -> int:
        """Messages a consumer starting at start_seq with this filter has yet to see; with last_per_subject only the
        last message of each subject counts (deliver policy last_per_subject)."""
        self._check()
        return self._filtered(start_seq, Filter(filter_subject), last_per_subject).msgs

    def multi_last_seqs(self, filters: list[str], max_seq: int = 0, max_allowed: int = 0) -> list[int]:
        """Sorted sequences of the last message, at or below max_seq (0 = last_seq), of every subject matching any
        filter: the 2.11 batch direct get `multi_last`. ErrTooManyResults past max_allowed (when > 0)."""
        self._check()
        if self._msgs == 0:
            return []
        if max_seq <= 0:
            max_seq = self._last
        subs = self._subjects
        seen: set[int] = set()
        for f in filters:
            for s in subs.matching(Filter(f)):
                x = subs.last_upto(s, max_seq)
                if x:
                    seen.add(x)
            if 0 < max_allowed < len(seen):
                raise ErrTooManyResults()
        return sorted(seen)

    # -- expiry

    def expire(self, now: int) -> Expired:
        """Remove what max_age and per-message TTLs expire at `now` (ns). With subject delete markers on, a
        subject whose last message expires gets a marker (reason MaxAge, TTL subject_delete_marker_ttl) stored in
        its place, as nats-server `expireMsgs` does through the stream."""
        self._check()
        cfg = self.cfg
        out = Expired()
        due: list[int] = []
        if cfg.max_age > 0 and self._msgs:
            cutoff = now - int(cfg.max_age * NS)
            x = self._first
            while x:
                info = self._info(x)
                assert info is not None
                if info[1] > cutoff:
                    break
                if not (cfg.allow_msg_ttl and x in self._never):
                    due.append(x)
                x = self._next_live(x + 1)
        if cfg.allow_msg_ttl:
            heap = self._ttls
            while heap and heap[0][0] <= now:
                due.append(heapq.heappop(heap)[1])
        if not due:
            return out
        for x in sorted(set(due)):
            info = self._info(x)
            if info is None:
                continue
            subject = info[0]
            marker = cfg.markers and self._subjects.msgs(subject) == 1 and not is_marker(self._hdr(x))
            if not self._remove(x, False):
                continue
            out.removed.append(x)
            if marker:
                seq, _ = self._store_internal(subject, marker_header(cfg.subject_delete_marker_ttl), now,
                                              cfg.subject_delete_marker_ttl)
                out.markers.append(seq)
        self._commit(False)
        return out

    def _hdr(self, seq: int) -> bytes | None:
        try:
            sm = self._get(seq)
        except ErrBadMsg:
            return None  # reported and dropped by the store
        return sm.hdr if sm is not None else None

    def _store_internal(self, subject: str, hdr: bytes, ts: int, ttl: int) -> tuple[int, int]:
        """Store a message of the store's own (a marker): no discard-new refusal, limits enforced after."""
        sb = subject.encode()
        seq = self._last + 1
        self._put(seq, ts, subject, sb, hdr, b"", ttl)
        self._last, self._last_ts = seq, ts
        self._after_append(subject, self._track(seq, subject, ts, self.msg_size(len(sb), len(hdr), 0), ttl))
        return seq, ts

    def next_expiry(self) -> int:
        """When (ns) `expire` next has something to do, or 0: the owner arms one timer for it. Never late."""
        self._check()
        cfg = self.cfg
        t = 0
        if cfg.max_age > 0 and self._msgs:
            x = self._first
            if cfg.allow_msg_ttl:
                while x and x in self._never:
                    x = self._next_live(x + 1)
            if x:
                t = self._ts(x) + int(cfg.max_age * NS)
        heap = self._ttls
        while heap and self._info(heap[0][1]) is None:
            heapq.heappop(heap)  # the message went some other way
        if cfg.allow_msg_ttl and heap:
            e = heap[0][0]
            t = min(t, e) if t else e
        return t

    # -- config and lifecycle

    def update_config(self, cfg: StoreConfig) -> None:
        """Apply new limits now (nats-server UpdateConfig): discard old trims to the new totals; a lower
        per-subject limit trims every subject. Age limits apply at the next expire(now)."""
        self._check()
        cfg.validate()
        old = self.cfg
        self.cfg = replace(cfg, store_dir=old.store_dir, first_seq=old.first_seq)
        maxp, oldp = cfg.max_msgs_per_subject, old.max_msgs_per_subject
        if maxp > 0 and (oldp <= 0 or maxp < oldp):
            self._enforce_limits()
        else:
            self._enforce_totals()
        self._commit(False)

    def register_consumer(self) -> None:
        self._consumers += 1

    def unregister_consumer(self) -> None:
        if self._consumers > 0:
            self._consumers -= 1

    def stop(self) -> None:
        self._closed = True

    def delete(self) -> None:
        self.stop()

    @property
    def closed(self) -> bool:
        return self._closed

    # Cheap reads for the stream layer's per-message path (state() builds a whole StreamState).

    @property
    def total_msgs(self) -> int:
        return self._msgs

    @property
    def total_bytes(self) -> int:
        return self._bytes

    @property
    def last_seq(self) -> int:
        return self._last


# Consumer state: nats-server ConsumerStore (store.go) and consumerMemStore's rules (memstore.go).

ACK_NONE = "none"
ACK_ALL = "all"
ACK_EXPLICIT = "explicit"


@dataclass
class SequencePair:
    consumer_seq: int = 0
    stream_seq: int = 0


@dataclass
class Pending:
    """A delivered, unacknowledged message: its original delivery (consumer) sequence and when it was delivered."""

    seq: int
    ts: int


@dataclass
class ConsumerState:
    delivered: SequencePair = field(default_factory=SequencePair)
    ack_floor: SequencePair = field(default_factory=SequencePair)
    pending: dict[int, Pending] = field(default_factory=dict)  # stream seq -> Pending
    redelivered: dict[int, int] = field(default_factory=dict)  # stream seq -> redeliveries so far

    def copy(self) -> ConsumerState:
        return ConsumerState(
            replace(self.delivered),
            replace(self.ack_floor),
            {k: Pending(p.seq, p.ts) for k, p in self.pending.items()},
            dict(self.redelivered),
        )


def next_pending(pending: dict[int, Any], after: int, last: int) -> int:
    """The lowest key of `pending` above `after` (at most `last`), or 0. Acks mostly come in order, so walking up
    from `after` finds it at once; a long gap falls back to one pass over the keys."""
    if not pending:
        return 0
    stop = min(last, after + len(pending))
    for s in range(after + 1, stop + 1):
        if s in pending:
            return s
    if stop >= last:
        return 0
    return min((s for s in pending if s > after), default=0)


def _put_uvarint(out: bytearray, v: int) -> None:
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)


def _put_varint(out: bytearray, v: int) -> None:
    _put_uvarint(out, (v << 1) ^ (v >> 63) if v < 0 else v << 1)


class _Reader:
    __slots__ = ("buf", "i")

    def __init__(self, buf: bytes, i: int) -> None:
        self.buf, self.i = buf, i

    def uvarint(self) -> int:
        v = shift = 0
        buf = self.buf
        while True:
            if self.i >= len(buf) or shift > 63:
                raise ErrCorruptState()
            b = buf[self.i]
            self.i += 1
            v |= (b & 0x7F) << shift
            if b < 0x80:
                return v
            shift += 7

    def varint(self) -> int:
        u = self.uvarint()
        return (u >> 1) ^ -(u & 1)


_CONSUMER_MAGIC = 22  # nats-server filestore.go `magic`
_CONSUMER_VERSION = 2
# Sequences are stored relative to the ack floor as Go's uint64 arithmetic does: one below the floor (the
# redelivery count of a message past max_deliver, kept until it leaves the stream) wraps around and back.
_U64 = (1 << 64) - 1


def encode_consumer_state(st: ConsumerState) -> bytes:
    """nats-server `encodeConsumerState` (version 2): uvarints relative to the ack floor; pending timestamps kept in
    whole seconds, relative to a base, as nats-server does (sub-second precision is not needed for redelivery)."""
    out = bytearray((_CONSUMER_MAGIC, _CONSUMER_VERSION))
    afc, afs = st.ack_floor.consumer_seq, st.ack_floor.stream_seq
    for v in (afc, afs, st.delivered.consumer_seq, st.delivered.stream_seq, len(st.pending)):
        _put_uvarint(out, v)
    if st.pending:
        base = max(p.ts for p in st.pending.values()) // NS
        _put_varint(out, base)
        for sseq, p in st.pending.items():
            _put_uvarint(out, sseq - afs)
            _put_uvarint(out, max(p.seq - afc, 0))
            _put_varint(out, base - p.ts // NS)
    _put_uvarint(out, len(st.redelivered))
    for sseq, n in st.redelivered.items():
        _put_uvarint(out, (sseq - afs) & _U64)
        _put_uvarint(out, n)
    return bytes(out)


def decode_consumer_state(buf: bytes) -> ConsumerState:
    if len(buf) < 2 or buf[0] != _CONSUMER_MAGIC or buf[1] != _CONSUMER_VERSION:
        raise ErrCorruptState()
    r = _Reader(buf, 2)
    st = ConsumerState()
    st.ack_floor = SequencePair(r.uvarint(), r.uvarint())
    st.delivered = SequencePair(r.uvarint(), r.uvarint())
    afc, afs = st.ack_floor.consumer_seq, st.ack_floor.stream_seq
    npend = r.uvarint()
    if npend:
        base = r.varint()
        for _ in range(npend):
            sseq = r.uvarint() + afs
            dseq = r.uvarint() + afc
            ts = (base - r.varint()) * NS
            st.pending[sseq] = Pending(dseq, ts)
    for _ in range(r.uvarint()):
        sseq, n = (r.uvarint() + afs) & _U64, r.uvarint()
        if n:
            st.redelivered[sseq] = n
    return st


class ConsumerStore:
    """A durable consumer's delivery and ack state, with nats-server consumerMemStore's update rules.

    `ack_policy` is "none", "all" or "explicit"; `max_deliver` <= 0 means unlimited. Subclasses persist in
    `_persist()`, called after every change.
    """

    def __init__(self, name: str, ack_policy: str = ACK_EXPLICIT, max_deliver: int = -1) -> None:
        if ack_policy not in (ACK_NONE, ACK_ALL, ACK_EXPLICIT):
            raise ValueError(f"bad ack policy {ack_policy!r}")
        self.name = name
        self.ack_policy = ack_policy
        self.max_deliver = max_deliver
        self._st = ConsumerState()
        self._closed = False
        self._on_stop: Callable[[], None] | None = None

    def _persist(self) -> None:
        pass

    def _check(self) -> None:
        if self._closed:
            raise ErrStoreClosed()

    def has_state(self) -> bool:
        return self._st.delivered.consumer_seq != 0 or self._st.delivered.stream_seq != 0

    def set_starting(self, sseq: int) -> None:
        """The consumer starts after stream sequence sseq."""
        self._check()
        self._st.delivered.stream_seq = sseq
        self._st.ack_floor.stream_seq = sseq
        self._persist()

    def reset(self, sseq: int) -> None:
        """Forget every delivery and ack; start again after stream sequence sseq (nats-server Reset)."""
        self._check()
        self._st = ConsumerState()
        self.set_starting(sseq)

    def update_starting(self, sseq: int) -> None:
        self._check()
        st = self._st
        if sseq > st.delivered.stream_seq:
            st.delivered.stream_seq = sseq
            if self.ack_policy == ACK_NONE:
                st.ack_floor.stream_seq = sseq
            self._persist()

    def update_delivered(self, dseq: int, sseq: int, dc: int, ts: int) -> None:
        """Message sseq went out as delivery dseq, for the dc-th time, at ts (ns)."""
        self._check()
        st = self._st
        if dc != 1 and self.ack_policy == ACK_NONE:
            raise ErrNoAckPolicy()
        if dseq <= st.ack_floor.consumer_seq:
            return
        if self.ack_policy != ACK_NONE:
            if sseq <= st.delivered.stream_seq:
                p = st.pending.get(sseq)
                if p is not None:
                    p.ts = ts  # keep the original delivery sequence
            else:
                st.pending[sseq] = Pending(dseq, ts)
            if dseq > st.delivered.consumer_seq:
                st.delivered.consumer_seq = dseq
            if sseq > st.delivered.stream_seq:
                st.delivered.stream_seq = sseq
            if dc > 1:
                if 0 < self.max_deliver < dc:
                    st.pending.pop(sseq, None)
                if st.redelivered.get(sseq, 0) < dc - 1:
                    st.redelivered[sseq] = dc - 1
        else:
            if dseq > st.delivered.consumer_seq:
                st.delivered.consumer_seq = st.ack_floor.consumer_seq = dseq
            if sseq > st.delivered.stream_seq:
                st.delivered.stream_seq = st.ack_floor.stream_seq = sseq
        self._persist()

    def update_acks(self, dseq: int, sseq: int) -> None:
        """Delivery dseq of stream message sseq was acknowledged. ErrStoreMsgNotFound if it was not pending."""
        self._check()
        st = self._st
        if self.ack_policy == ACK_NONE:
            raise ErrNoAckPolicy()
        st.redelivered.pop(sseq, None)
        if dseq <= st.ack_floor.consumer_seq:
            self._persist()
            return
        if sseq not in st.pending:
            self._persist()
            raise ErrStoreMsgNotFound()
        if self.ack_policy == ACK_ALL:
            st.ack_floor.consumer_seq = dseq
            st.ack_floor.stream_seq = sseq
            for s in [s for s in st.pending if s <= sseq]:
                del st.pending[s]
                st.redelivered.pop(s, None)
            self._persist()
            return
        p = st.pending.pop(sseq)
        if 0 < p.seq < dseq:
            dseq = p.seq  # the original delivery
        if not st.pending:
            st.ack_floor.consumer_seq = st.delivered.consumer_seq
            st.ack_floor.stream_seq = st.delivered.stream_seq
        elif dseq == st.ack_floor.consumer_seq + 1:
            st.ack_floor.consumer_seq = dseq
            st.ack_floor.stream_seq = sseq
            if st.delivered.consumer_seq > dseq:
                # The floor moves up to just below the next message still pending.
                low = next_pending(st.pending, sseq, st.delivered.stream_seq)
                if low and st.pending[low].seq > 0:
                    st.ack_floor.consumer_seq = st.pending[low].seq - 1
                    st.ack_floor.stream_seq = low - 1
        self._persist()

    def update(self, state: ConsumerState) -> None:
        """Replace the state (a snapshot from elsewhere); older snapshots are refused with ErrStoreOldUpdate."""
        self._check()
        if state.ack_floor.consumer_seq > state.delivered.consumer_seq:
            raise ValueError("bad ack floor for consumer")
        if state.ack_floor.stream_seq > state.delivered.stream_seq:
            raise ValueError("bad ack floor for stream")
        for s in state.pending:
            if s <= state.ack_floor.stream_seq or s > state.delivered.stream_seq:
                raise ValueError(f"bad pending entry, sequence [{s}] out of range")
        cur = self._st
        if (state.delivered.consumer_seq < cur.delivered.consumer_seq
                or state.ack_floor.stream_seq < cur.ack_floor.stream_seq):
            raise ErrStoreOldUpdate()
        self._st = state.copy()
        self._persist()

    def state(self) -> ConsumerState:
        """A copy of the state."""
        self._check()
        return self._st.copy()

    def encode(self) -> bytes:
        self._check()
        return encode_consumer_state(self._st)

    def stop(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._on_stop is not None:
            self._on_stop()

    def delete(self) -> None:
        self.stop()
