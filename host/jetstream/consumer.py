"""JetStream consumers of the hub (nats-server `consumer.go`, in spirit): pull and push delivery, acknowledgements,
redelivery, flow control, heartbeats, pause, and durable state on disk. The config schema and checks are in
consumer_config.py, the `$JS.API.CONSUMER.>` requests in consumer_api.py, frames to subscribers in delivery.py.

How it fits (docs in notes/js-contract.md):
- jetstream.py calls `install(jsa)` when an account's JetStream starts (acks and flow-control replies arrive on
  `$JS.ACK.>` / `$JS.FC.>` subscriptions made there) and `recover(stream)` after opening a stream from disk. The
  stream tells each consumer about new messages (`on_msg`), removals (`on_purge`), shutdown (`stop`) and stream
  deletion (`delete`).
- Everything runs on the hub's event loop, synchronously: a publish stored by the stream is delivered to a waiting
  pull request or a push subscriber inside the same read batch; timers (ack wait, expiry of pull requests,
  heartbeats, inactivity, pause) come from `loop.call_later`, and flush what they queued themselves.

The model follows nats-server's consumer: `sseq` is the next stream sequence to look at, `dseq` the next delivery
(consumer) sequence, `pending` maps stream sequences delivered but not acknowledged to their first delivery sequence
and delivery time, `rdc` counts redeliveries, `rdq` queues messages to redeliver, and the ack floors (`adflr`,
`asflr`) are the highest sequences below which everything is acknowledged. `npc` is the running count of matching
messages not yet delivered (num_pending), computed from the store when the position jumps and then kept up to date
per message, so no delivery scans the stream.

Wire details are nats-server 2.15.1's (vectors/js/19-27, 35-37 and the live comparisons in tests/unit and
tests/compat): v1 ack subjects `$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>`, status-only
messages with `Nats-Pending-Messages`/`Nats-Pending-Bytes`, `Nats-Last-Consumer`/`Nats-Last-Stream`.

Priority groups (ADR-42, as nats-server 2.15.1 has them, not as the ADR says; more/README.md §B2): a pull consumer
with `priority_policy` `overflow` serves a pull that set `min_pending`/`min_ack_pending` only while either threshold
is reached; `pinned_client` gives one puller a pin id (`Nats-Pin-Id` on every message it gets) and keeps the others
waiting until the pin times out (`priority_timeout`) or is removed (CONSUMER.UNPIN); `prioritized` serves the
lowest `priority` first. Several groups are accepted but, as in nats-server, there is one pin per consumer.

Not served: pull requests whose reply crosses a service import (the requester's interest is looked up in the
consumer's own account only).
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import time
import weakref
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from host.accounts import Account, nuid
from host.delivery import deliver_as, has_interest
from host.gotime import MS, NS, ZERO_TIME, format_duration, parse_duration, rfc3339, time_text
from host.headers import hdr_append, status_header
from host.jetstream.consumer_config import CONFIG_SCHEMA, config_from, config_json, filters_of, is_subset
from host.jetstream.errors import ApiError, js_error
from host.jetstream.filestore import atomic_write
from host.jetstream.gojson import (
    GoJSONError,
    Promoted,
    decode,
    dumps,
    loads,
)
from host.jetstream.memstore import ConsumerMemStore
from host.jetstream.store import (
    ACK_ALL,
    ACK_EXPLICIT,
    ACK_NONE,
    ConsumerState,
    ConsumerStore,
    ErrStoreEOF,
    Filter,
    SequencePair,
    StoreError,
    next_pending,
)
from host.jetstream.store import Pending as StorePending
from host.jetstream.versioning import dynamic_metadata, set_static_consumer_metadata
from host.sublist import subject_matches

if TYPE_CHECKING:
    import asyncio

    from host.jetstream.jetstream import JSAccount


log = logging.getLogger("natsedge.hub")

INT64_MAX = (1 << 63) - 1
INT64_MIN = -(1 << 63)
DELETE_WAIT_DEFAULT = 5 * NS  # inactive_threshold of an ephemeral that did not set one
FC_MAX_PENDING = 32 * 1024 * 1024  # flow control window limit; the window starts at 1/16 of it
ACK_WAIT_SLACK = MS  # the ack timer fires this much after a deadline, so bursts are handled together
WAITING_CHECK_INTERVAL = NS  # at most one sweep of a full waiting queue per second
FLUSH_DELAY = 1.0  # seconds between a state change and its write to disk (file-backed durables)
INTEREST_CLEANUP_MAX = 100_000  # messages checked when a consumer of an interest stream goes away
PRIORITY_NONE = (1 << 31) - 1  # the place of a pull without priority keys in a `prioritized` queue (math.MaxInt32)

# Ack payloads.
ACK_ACK = b"+ACK"
ACK_OK = b"+OK"
ACK_NAK = b"-NAK"
ACK_PROGRESS = b"+WPI"
ACK_NEXT = b"+NXT"
ACK_TERM = b"+TERM"
TERM_REASON_REMOVED = "Unacknowledged message was deleted"

# Headers.
HDR_PENDING_MSGS = "Nats-Pending-Messages"
HDR_PENDING_BYTES = "Nats-Pending-Bytes"
HDR_LAST_CONSUMER = "Nats-Last-Consumer"
HDR_LAST_STREAM = "Nats-Last-Stream"
HDR_STALLED = "Nats-Consumer-Stalled"
HDR_MSG_SIZE = b"Nats-Msg-Size"
HDR_PIN_ID = b"Nats-Pin-Id"  # nats-server JSPullRequestNatsPinId

# Advisories and metrics.
ADV_PREFIX = "$JS.EVENT.ADVISORY.CONSUMER."
ADV_CREATED = ADV_PREFIX + "CREATED"
ADV_DELETED = ADV_PREFIX + "DELETED"
ADV_PAUSE = ADV_PREFIX + "PAUSE"
ADV_MAX_DELIVERIES = ADV_PREFIX + "MAX_DELIVERIES"
ADV_NAKED = ADV_PREFIX + "MSG_NAKED"
ADV_TERMINATED = ADV_PREFIX + "MSG_TERMINATED"
ADV_PINNED = ADV_PREFIX + "PINNED"
ADV_UNPINNED = ADV_PREFIX + "UNPINNED"
METRIC_ACK = "$JS.EVENT.METRIC.CONSUMER.ACK"
_B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


# ---- names ---------------------------------------------------------------------------------------------------------


def ephemeral_name() -> str:
    return "".join(_B62[b % 62] for b in os.urandom(8))


# ---- pull requests -----------------------------------------------------------------------------------------------

NEXT_SCHEMA = {"expires": "duration", "batch": "int", "max_bytes": "int", "no_wait": "bool",
               "idle_heartbeat": "duration", "group": Promoted("string"), "min_pending": Promoted("int64"),
               "min_ack_pending": Promoted("int64"), "id": Promoted("string"), "priority": Promoted("int")}


class NextRequest:
    """A parsed MSG.NEXT body (nats-server nextReqFromMsg): empty = batch 1 waiting for ever, a number = batch,
    JSON = {"batch", "expires", "max_bytes", "no_wait", "idle_heartbeat", priority keys}. `group` holds the
    priority keys that are set (nats-server PriorityGroup); it is None for an empty or numeric body, which
    nats-server lets past every priority group check."""

    __slots__ = ("batch", "expires", "max_bytes", "no_wait", "heartbeat", "group")

    def __init__(self, batch: int = 1, expires: int = 0, max_bytes: int = 0, no_wait: bool = False,
                 heartbeat: int = 0, group: dict[str, Any] | None = None) -> None:
        self.batch = batch
        self.expires = expires
        self.max_bytes = max_bytes
        self.no_wait = no_wait
        self.heartbeat = heartbeat
        self.group = group


def parse_next_request(payload: bytes) -> NextRequest:
    """ValueError(text) for a bad request, sent back as `400 Bad Request - <text>`."""
    body = payload.strip()
    if not body:
        return NextRequest()
    if body[:1] == b"{":
        try:
            vals = decode(loads(body), NEXT_SCHEMA, "JSApiConsumerGetNextRequest", strict=False)
        except GoJSONError as e:
            raise ValueError(str(e).rsplit(" at offset", 1)[0]) from None
        req = NextRequest(vals.get("batch", 0), vals.get("expires", 0), vals.get("max_bytes", 0),
                          vals.get("no_wait", False), vals.get("idle_heartbeat", 0))
        req.group = {k: vals[k] for k in ("group", "min_pending", "min_ack_pending", "id", "priority") if vals.get(k)}
        if req.heartbeat > 0 and req.heartbeat * 2 > req.expires:
            raise ValueError("heartbeat value too large")
        return req
    try:
        return NextRequest(batch=int(body.decode()))
    except (ValueError, UnicodeDecodeError):
        return NextRequest()


class WaitingRequest:
    """A pull request waiting for messages: `n` left of its batch, `b` bytes left (0 = no limit), `d` delivered."""

    __slots__ = ("reply", "n", "d", "b", "expires", "received", "hb", "hbt", "no_wait", "group", "priority")

    def __init__(self, reply: bytes, req: NextRequest, now: int) -> None:
        self.reply = reply
        self.n = req.batch
        self.d = 0
        self.b = req.max_bytes
        # A negative expiry is already over (nats-server adds it to the current time): answered 408 at once.
        self.expires = now + req.expires if req.expires else 0
        self.received = now
        self.hb = req.heartbeat
        self.hbt = now + req.heartbeat if req.heartbeat > 0 else 0
        self.no_wait = req.no_wait
        self.group = req.group  # priority keys; its "id" is set when this request takes a new pin
        # nats-server insertAtPosition: a request without priority keys sorts after every priority
        self.priority = req.group.get("priority", 0) if req.group is not None else PRIORITY_NONE


# ---- ack subjects --------------------------------------------------------------------------------------------------


def parse_ack_subject(subject: str) -> tuple[str, str, int, int, int, int, int] | None:
    """(stream, consumer, delivered count, stream seq, consumer seq, ts, pending) of a v1 (9 tokens) or v2 (11+
    tokens) ack subject; None when the layout or a number is wrong (nats-server ackReplyInfo). A `@<subject>`
    suffix, added when a delivery crossed a leaf link, is ignored."""
    at = subject.find("@")
    if at >= 0:
        subject = subject[:at]
    toks = subject.split(".")
    n = len(toks)
    if (n != 9 and n < 11) or toks[0] != "$JS" or toks[1] != "ACK":
        return None
    off = 2 if n == 9 else 4
    nums = toks[off + 2: off + 7]
    if not all(t.isdigit() and t.isascii() for t in nums):
        return None
    dc, sseq, dseq, ts, pending = (int(t) for t in nums)
    return toks[off], toks[off + 1], dc, sseq, dseq, ts, pending


def parse_nak_delay(arg: bytes) -> int | None:
    """The delay of `-NAK {"delay": ns}` or `-NAK <Go duration>`; None when absent or unreadable."""
    arg = arg.strip()
    if not arg:
        return None
    if arg[:1] == b"{":
        try:
            obj = json.loads(arg)
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
            return None
        if not isinstance(obj, dict):
            return None
        d = obj.get("delay", 0)
        if isinstance(d, bool) or not isinstance(d, int) or not INT64_MIN <= d <= INT64_MAX:
            return None  # not a Go time.Duration: a plain NAK, as nats-server
        return d
    try:
        return parse_duration(arg.decode())
    except (ValueError, UnicodeDecodeError):
        return None


def headers_only(hdr: bytes | None, payload: bytes) -> bytes:
    """The headers of a `headers_only` delivery: the stored headers plus `Nats-Msg-Size: <payload length>`."""
    return hdr_append(hdr, HDR_MSG_SIZE + b": %d\r\n" % len(payload))


# ---- the consumer ---------------------------------------------------------------------------------------------------


class Pending:
    """A delivered message awaiting its ack: its first delivery sequence and when it was (re)delivered (ns)."""

    __slots__ = ("dseq", "ts")

    def __init__(self, dseq: int, ts: int) -> None:
        self.dseq = dseq
        self.ts = ts


class Consumer:
    """One consumer of a stream. See the module docstring for the model; method names follow nats-server's."""

    def __init__(self, stream: Any, name: str, cfg: dict[str, Any], created: int) -> None:
        self.stream = stream
        self.jsa: JSAccount = stream.jsa
        self.account: Account = self.jsa.account
        self.server = self.jsa.server
        self.name = name
        self.cfg = cfg
        self.created = created
        self.closed = False
        self.durable = bool(cfg["durable_name"])
        self.push = bool(cfg["deliver_subject"])
        self.deliver_b = cfg["deliver_subject"].encode()
        self.ack_prefix = f"$JS.ACK.{stream.name}.{name}.".encode()
        self.fc_prefix = f"$JS.FC.{stream.name}.{name}."
        self.store: ConsumerStore = ConsumerMemStore(name, cfg["ack_policy"], cfg["max_deliver"])
        self.file_backed = False
        self._set_filters()
        # Position and ack state.
        self.sseq = 1
        self.dseq = 1
        self.adflr = 0
        self.asflr = 0
        self.pending: dict[int, Pending] = {}
        self.rdc: dict[int, int] = {}
        self.rdq: deque[int] = deque()
        self.rdq_set: set[int] = set()
        self.lss: deque[int] | None = None  # last_per_subject start: the sequences still to deliver first
        self.lss_resume = 0
        self.npc = 0
        self.npf = 0
        self.ldt = 0  # last delivery (ns), for info
        self.lat = 0  # last ack (ns), for info
        # Pull.
        self.waiting: deque[WaitingRequest] = deque()
        self.waiting_last = 0  # monotonic ns of the last request / delivery (inactivity)
        self.last_waiting_check = 0
        # Pinned client (one pin per consumer, as nats-server's currentPinId): the id, when it was given (wall ns).
        self.pin_id = ""
        self.pinned_ts = 0
        self._pin_timer: asyncio.TimerHandle | None = None
        # Push.
        self.active = False
        self.pbytes = 0
        self.maxpb = 0
        self.pblimit = 0
        self.fcid = ""
        self.fcsz = 0
        if cfg["flow_control"]:
            self.pblimit = FC_MAX_PENDING
            self.maxpb = max(FC_MAX_PENDING // 16, 1)
        # Timers.
        self._ack_timer: asyncio.TimerHandle | None = None
        self._ack_timer_end = 0  # monotonic ns
        self._delete_timer: asyncio.TimerHandle | None = None
        self._hb_timer: asyncio.TimerHandle | None = None
        self._last_activity = 0  # monotonic ns of the last push delivery (idle heartbeats)
        self._wait_timer: asyncio.TimerHandle | None = None
        self._wait_timer_at = 0
        self._pause_timer: asyncio.TimerHandle | None = None
        self._pace_timer: asyncio.TimerHandle | None = None
        self._flush_timer: asyncio.TimerHandle | None = None
        # Replay "original" and rate limits pace deliveries.
        self.replay = cfg["replay_policy"] == "original"
        self._replay_lseq = 0
        self._replay_lts = 0
        self._replay_wall = 0
        self._rate_next = 0
        self.dthresh = 0
        self._set_inactive_threshold()
        self._kicking = False
        self._kick_again = False

    # -- configuration

    def _set_filters(self) -> None:
        self.filters = filters_of(self.cfg)
        self.compiled = [Filter(f) for f in self.filters]
        self.maxdc = max(self.cfg["max_deliver"], 0)
        self.maxp = self.cfg["max_ack_pending"]
        freq = self.cfg["sample_freq"].removesuffix("%")
        self.sample_freq = int(freq) if freq.isdigit() else 0
        self._set_scan_filter()

    def _set_scan_filter(self) -> None:
        """The filter the store walks with: none when ours covers every stream subject (nats-server isFiltered),
        which spares the store a subject match per message."""
        subjects = self.stream.config.get("subjects") or []
        if len(self.filters) == 1 and subjects and all(is_subset(s, self.filters[0]) for s in subjects):
            self.scan_filter = ""
        else:
            self.scan_filter = self.filters[0] if len(self.filters) == 1 else ""

    def _set_inactive_threshold(self) -> None:
        """nats-server updateInactiveThreshold: ephemerals always expire (5 s unless set); pull consumers get up to
        a second of jitter so many do not expire at once."""
        cfg = self.cfg
        jitter = 100 * MS + random.randrange(900) * MS
        if not self.durable and cfg["inactive_threshold"] <= 0:
            self.dthresh = DELETE_WAIT_DEFAULT + jitter
            cfg["inactive_threshold"] = DELETE_WAIT_DEFAULT
        elif cfg["inactive_threshold"] > 0:
            self.dthresh = cfg["inactive_threshold"] + (jitter if not self.push else 0)
        else:
            self.dthresh = 0

    def matches(self, subject: str) -> bool:
        compiled = self.compiled
        if not compiled:
            return True
        for f in compiled:
            if f.match(subject):
                return True
        return False

    # -- start

    def select_start(self) -> None:
        """nats-server selectStartingSeqNo: where a new consumer starts, per deliver policy."""
        cfg = self.cfg
        store = self.stream.store
        st = store.state()
        first, last = st.first_seq, st.last_seq
        dp = cfg["deliver_policy"]
        if cfg["opt_start_seq"]:
            self.sseq = cfg["opt_start_seq"]
        elif dp == "all":
            self.sseq = first
        elif dp == "last":
            if not self.filters:
                self.sseq = last
            else:
                self.sseq = max(store.filtered_state(1, f).last for f in self.filters)
        elif dp == "last_per_subject":
            if int(self.stream.config.get("max_msgs_per_subject") or 0) == 1:
                self.sseq = first
            else:
                seqs = store.multi_last_seqs(self.filters or [">"])
                self.lss = deque(seqs)
                self.lss_resume = last
                self.sseq = seqs[0] if seqs else last
        elif dp == "by_start_time":
            self.sseq = store.get_seq_from_time(cfg["opt_start_time"] or 0)
            if self.filters:
                nseq = last
                for f in self.filters:
                    ss = store.filtered_state(first, f)
                    if self.sseq <= ss.first < nseq:
                        nseq = ss.first
                if self.sseq < nseq < last:
                    self.sseq = nseq
        else:  # new
            self.sseq = last + 1
        if first == 0 and cfg["opt_start_seq"] == 0:
            self.sseq = 1
        elif self.sseq > last and cfg["opt_start_seq"] == 0:
            self.sseq = last + 1
        elif self.sseq < first:
            self.sseq = first
        if self.lss is not None and not self.lss:
            self.lss = None
        self.dseq = 1
        self.adflr = 0
        self.asflr = self.sseq - 1
        if self.sseq > 0:
            self.store.set_starting(self.sseq - 1)

    def apply_state(self, state: ConsumerState) -> None:
        """Resume from stored state (recovery): positions after the last delivery, pending acks re-armed."""
        self.sseq = state.delivered.stream_seq + 1
        self.dseq = state.delivered.consumer_seq + 1
        self.adflr = state.ack_floor.consumer_seq
        self.asflr = state.ack_floor.stream_seq
        self.pending = {s: Pending(p.seq, p.ts) for s, p in state.pending.items()}
        self.rdc = dict(state.redelivered)
        last = self.stream.store.state().last_seq
        if last < self.sseq - 1:
            # The stream lost messages the consumer had seen (nats-server reconcileStateWithStream).
            log.warning("JetStream consumer '%s > %s > %s' delivered sequence %d past last stream sequence of %d",
                        self.account.name, self.stream.name, self.name, self.sseq - 1, last)
            if self.asflr > last:
                self.asflr = last
                self.adflr = max(self.dseq - 1, 0)
                self.pending.clear()
                self.rdc.clear()
            for s in [s for s in self.pending if s > last]:
                del self.pending[s]
            for s in [s for s in self.rdc if s > last]:
                del self.rdc[s]
            if not self.pending:
                self.sseq, self.dseq = self.asflr + 1, self.adflr + 1
            else:
                self.sseq = max(self.pending) + 1
                self.dseq = max(p.dseq for p in self.pending.values()) + 1

    def start(self) -> None:
        """Arm what runs on its own: num_pending, the ack timer, interest tracking, inactivity, pause."""
        self.calc_num_pending()
        if self.pending:
            self._arm_ack_timer(0)
        if self.push:
            self.active = has_interest(self.account, self.deliver_b)
            if self.cfg["idle_heartbeat"]:
                self._last_activity = time.monotonic_ns()
                self._hb_timer = self.jsa.call_later(self.cfg["idle_heartbeat"] / NS, self._heartbeat_due)
        self.waiting_last = time.monotonic_ns()
        if self.dthresh > 0 and (not self.push or not self.active):
            self._delete_timer = self.jsa.call_later(self.dthresh / NS, self._delete_if_inactive)
        self._arm_pause()
        if self.replay:
            self._replay_lseq = self.stream.store.state().last_seq

    # -- num pending

    def calc_num_pending(self) -> None:
        """num_pending from the store (nats-server streamNumPending): matching messages at or after sseq; with
        deliver last_per_subject only each subject's last one."""
        store = self.stream.store
        lps = self.cfg["deliver_policy"] == "last_per_subject"
        if self.filters:
            n = sum(store.num_pending(self.sseq, f, lps) for f in self.filters)
        else:
            n = store.num_pending(self.sseq, "", lps)
        self.npc = n
        self.npf = store.state().last_seq

    def num_pending(self) -> int:
        return self.npc if self.npc > 0 else 0

    def _checked_num_pending(self) -> int:
        """nats-server checkNumPending: never report more than the stream can still hold for us."""
        st = self.stream.store.state()
        if self.sseq > st.last_seq:
            self.npc = 0
        elif self.npc > 0:
            self.npc = min(self.npc, st.msgs, st.last_seq - self.sseq + 1)
        return self.num_pending()

    # -- contract with the stream

    def on_msg(self, seq: int, subject: str) -> None:
        """A message was stored in the stream (in sequence order)."""
        if self.closed or not self.matches(subject):
            return
        if seq > self.npf:
            self.npc += 1
        if seq < self.sseq:
            return
        if (self.push and self.active) or (not self.push and self.waiting):
            self.kick()

    def on_purge(self) -> None:
        """Messages left the stream (purge, rollup, delete, compaction, expiry): move past what is gone, drop
        pending entries whose message is gone, recount num_pending (nats-server purge + decStreamPending)."""
        if self.closed:
            return
        self._set_scan_filter()  # a stream update may have changed its subjects
        store = self.stream.store
        st = store.state()
        before = (self.sseq, self.dseq, self.adflr, self.asflr, len(self.pending), len(self.rdc))
        first = st.first_seq if st.msgs else st.last_seq + 1
        if self.sseq < first:
            self.sseq = first
        if self.lss is not None:
            while self.lss and self.lss[0] < first:
                self.lss.popleft()
            if not self.lss:
                self.lss = None
                self.sseq = max(self.sseq, self.lss_resume + 1)
        gone = [s for s in self.pending if s < first or not self._stored(s)]
        for s in sorted(gone):
            p = self.pending.pop(s)
            self.rdc.pop(s, None)
            self._rdq_remove(s)
            self._store_acks(p.dseq, s)
            self._advisory(f"{ADV_TERMINATED}.{self.stream.name}.{self.name}", {
                "type": "io.nats.jetstream.advisory.v1.terminated", "stream": self.stream.name,
                "consumer": self.name, "consumer_seq": p.dseq, "stream_seq": s, "deliveries": self._dc(s),
                "reason": TERM_REASON_REMOVED})
        for s in [s for s in self.rdc if s < first]:
            del self.rdc[s]
        if self.asflr < first - 1:
            self.asflr = first - 1
        if self.rdq:
            keep = [s for s in self.rdq if self._stored(s)]
            self.rdq = deque(keep)
            self.rdq_set = set(keep)
        if not self.pending:
            self.adflr, self.asflr = self.dseq - 1, max(self.asflr, self.sseq - 1)
        elif gone:
            self._move_floor_after_removal()
        if (self.sseq, self.dseq, self.adflr, self.asflr, len(self.pending), len(self.rdc)) != before:
            self._write_state()
        self.calc_num_pending()
        self.kick()

    def _write_state(self) -> None:
        """Store the whole position (nats-server writeStoreState): after a purge the delivered and ack floors
        jump past what is gone, which per-message updates do not express."""
        state = ConsumerState(SequencePair(max(self.dseq - 1, 0), max(self.sseq - 1, 0)),
                              SequencePair(self.adflr, self.asflr),
                              {s: StorePending(p.dseq, p.ts) for s, p in self.pending.items()}, dict(self.rdc))
        try:
            self.store.update(state)
        except (StoreError, ValueError) as e:
            log.warning("JetStream consumer '%s > %s > %s': state not stored: %s", self.account.name,
                        self.stream.name, self.name, e)
        self._schedule_flush()

    def _stored(self, seq: int) -> bool:
        try:
            self.stream.store.subject_for_seq(seq)
        except StoreError:
            return False
        return True

    def _move_floor_after_removal(self) -> None:
        low = min(self.pending)
        p = self.pending[low]
        if p.dseq - 1 > self.adflr:
            self.adflr = p.dseq - 1
        if low - 1 > self.asflr:
            self.asflr = low - 1

    def needs(self, seq: int, subject: str) -> bool:
        """Interest retention: does this consumer still need stream message `seq` (nats-server needAck)?"""
        if self.closed or not self.matches(subject):
            return False
        if self.cfg["ack_policy"] == ACK_EXPLICIT:
            need = seq > self.asflr and (seq >= self.sseq or seq in self.pending)
        else:
            need = seq > self.asflr
        return need or seq in self.rdc

    # -- the delivery loop

    def kick(self) -> None:
        """Deliver whatever can be delivered now (nats-server loopAndGatherMsgs, run to completion)."""
        if self.closed:
            return
        if self._kicking:
            self._kick_again = True
            return
        self._kicking = True
        try:
            while True:
                self._kick_again = False
                reason = self._deliver_loop()
                if not self.push:
                    self._process_waiting(reason != "max_ack_pending")
                    self._arm_wait_timer()
                if not self._kick_again or self.closed:
                    break
        finally:
            self._kicking = False
        self._flush()

    def _paused(self) -> bool:
        pu = self.cfg["pause_until"]
        return pu is not None and time.time_ns() < pu

    def _deliver_loop(self) -> str:
        """Deliver until something stops it; returns why ("eof", "max_ack_pending", "blocked")."""
        push = self.push
        while not self.closed:
            if self._paused():
                return "blocked"
            if push:
                if not self.active or (self.maxpb > 0 and self.pbytes > self.maxpb):
                    return "blocked"
            elif not self.waiting:
                return "blocked"
            nxt = self._next_msg()
            if isinstance(nxt, str):
                return nxt
            sm, dc, source = nxt
            if dc == 1:
                self.npc -= 1
            seq = sm.seq
            hdr = sm.hdr
            data = sm.data
            if self.cfg["headers_only"]:
                hdr = headers_only(hdr, data)
                data = b""
            ack = self.ack_prefix + b"%d.%d.%d.%d.%d" % (dc, seq, self.dseq, sm.ts, self.num_pending())
            subj = sm.subject.encode()
            size = len(subj) + len(ack) + (len(hdr) if hdr else 0) + len(data)
            if (self.replay or self.cfg["rate_limit_bps"]) and not self._paced(sm.ts, size):
                self._undo(seq, dc, source)
                return "blocked"
            wr = None
            if push:
                dest = self.deliver_b
            else:
                wr = self._next_waiting(size)
                if wr is None:
                    self._undo(seq, dc, source)
                    return "blocked"
                dest = wr.reply
                if self.cfg["priority_policy"] == "pinned_client":
                    hdr = hdr_append(hdr, HDR_PIN_ID + b": " + self.pin_id.encode() + b"\r\n")
            if deliver_as(self.account, self.server.internal, dest, subj, ack, hdr or None, data) == 0:
                self._undo(seq, dc, source)
                if push:
                    self.active = False
                    self._interest_lost()
                    return "blocked"
                continue
            self._delivered(seq, dc, sm.ts, size + len(dest) - len(subj))
            if wr is not None:
                if wr.n > 0 and wr.hb > 0:
                    wr.hbt = time.monotonic_ns() + wr.hb
                if wr.n <= 0 and wr.b > 0:
                    deliver_as(self.account, self.server.internal, dest, dest, None,
                                  status_header(409, "Batch Completed", (HDR_PENDING_MSGS, wr.n),
                                                (HDR_PENDING_BYTES, wr.b)), b"")
        return "blocked"

    def _next_msg(self) -> tuple[Any, int, str] | str:
        """The next message to deliver and its delivery count (nats-server getNextMsg): redeliveries first, then
        (unless max_ack_pending is reached) the last_per_subject start list, then the next matching message."""
        store = self.stream.store
        while self.rdq:
            seq = self.rdq.popleft()
            self.rdq_set.discard(seq)
            dc = self.rdc.get(seq, 0) + 2
            if self.maxdc and dc > self.maxdc:
                if dc == self.maxdc + 1:
                    self._max_deliveries_advisory(seq, dc - 1)
                p = self.pending.pop(seq, None)
                self.rdc[seq] = dc - 1
                if p is not None:
                    self.store.update_delivered(p.dseq, seq, dc, p.ts)
                    self._move_ack_floor(p.dseq, seq)
                continue
            try:
                sm = store.load_msg(seq)
            except StoreError:
                p = self.pending.get(seq)
                if p is not None:
                    self._term(seq, p.dseq, dc - 1, TERM_REASON_REMOVED)
                continue
            return sm, dc, "rdq"
        if self.maxp > 0 and len(self.pending) >= self.maxp:
            return "max_ack_pending"
        while self.lss:
            seq = self.lss.popleft()
            if not self.lss:
                self.lss = None
                self.sseq = self.lss_resume + 1
            else:
                self.sseq = seq + 1
            try:
                return store.load_msg(seq), 1, "lss"
            except StoreError:
                continue  # removed since the consumer started
        try:
            if len(self.filters) <= 1:
                sm, _ = store.load_next_msg(self.scan_filter, self.sseq)
            else:
                sm = None
                for f in self.filters:
                    try:
                        cand, _ = store.load_next_msg(f, self.sseq)
                    except ErrStoreEOF:
                        continue
                    if sm is None or cand.seq < sm.seq:
                        sm = cand
                if sm is None:
                    raise ErrStoreEOF()
        except ErrStoreEOF:
            # Like nats-server, the position moves past everything looked at.
            last = store.state().last_seq
            if self.sseq <= last:
                self.sseq = last + 1
            if self.npc != 0:
                self.npc, self.npf = 0, last
            return "eof"
        except StoreError:
            return "eof"
        self.sseq = sm.seq + 1
        return sm, 1, "next"

    def _undo(self, seq: int, dc: int, source: str) -> None:
        """A picked message was not sent: put it back where it came from."""
        if dc == 1:
            self.npc += 1
        if source == "rdq":
            if seq not in self.rdq_set:
                self.rdq.appendleft(seq)
                self.rdq_set.add(seq)
        elif source == "lss":
            if self.lss is None:
                self.lss = deque()
            self.lss.appendleft(seq)
            self.sseq = seq
        elif seq == self.sseq - 1:
            self.sseq = seq

    def _delivered(self, seq: int, dc: int, ts: int, psz: int) -> None:
        """Book a delivery (nats-server deliverMsg after the send)."""
        dseq = self.dseq
        self.dseq += 1
        now = time.time_ns()
        self.ldt = now
        if dc > 1:
            self.rdc[seq] = dc - 1
        self.store.update_delivered(dseq, seq, dc, ts)
        ap = self.cfg["ack_policy"]
        if ap == ACK_NONE:
            self.adflr = dseq
            self.asflr = seq
        else:
            self._track_pending(seq, dseq, now)
        if self.maxpb > 0:
            self.pbytes += psz
            if self._need_flow_control(psz):
                self._send_flow_control()
        mono = time.monotonic_ns()
        if self.push:
            self._last_activity = mono
        elif self.dthresh > 0:
            self.waiting_last = mono
        self._schedule_flush()
        if ap == ACK_NONE and self.stream.retention != "limits":
            self.stream.ack_msg(self, seq)

    def _track_pending(self, seq: int, dseq: int, now: int) -> None:
        p = self.pending.get(seq)
        if p is not None:
            p.ts = now  # a redelivery keeps its first delivery sequence
        else:
            self.pending[seq] = Pending(dseq, now)
        delay = self.cfg["ack_wait"]
        backoff = self.cfg["backoff"]
        if backoff:
            delay = backoff[min(max(self.rdc.get(seq, 0), 0), len(backoff) - 1)]
        self._arm_ack_timer(delay + ACK_WAIT_SLACK)

    # -- pacing: replay "original" and rate limits

    def _paced(self, ts: int, size: int) -> bool:
        """Whether the message may go now; if not, a timer resumes delivery when it may. Replay "original" keeps
        the gaps between the messages' timestamps until the consumer has caught up with what the stream held
        when it started; a rate limit spaces messages by their size."""
        mono = time.monotonic_ns()
        due = 0
        if self.replay and self._replay_lts and ts > self._replay_lts:
            due = self._replay_wall + (ts - self._replay_lts)
        rate = self.cfg["rate_limit_bps"]
        if rate and self._rate_next > due:
            due = self._rate_next
        if due - mono > MS:
            if self._pace_timer is None:
                self._pace_timer = self.jsa.call_later((due - mono) / NS, self._pace_due)
            return False
        if self.replay:
            self._replay_lts, self._replay_wall = ts, mono
            if self.sseq > self._replay_lseq:
                self.replay = False
        if rate:
            self._rate_next = max(self._rate_next, mono) + size * 8 * NS // rate
        return True

    def _pace_due(self) -> None:
        self._pace_timer = None
        self.kick()

    # -- pull requests

    def process_next_request(self, reply: bytes, payload: bytes) -> None:
        """A MSG.NEXT request (or +NXT): validate, queue, deliver (nats-server processNextMsgRequest)."""
        if self.closed or not reply:
            return
        if self.push:
            self._status(reply, 409, "Consumer is push based")
            return
        try:
            req = parse_next_request(payload)
        except ValueError as e:
            self._status(reply, 400, f"Bad Request - {e}")
            return
        cfg = self.cfg
        if cfg["max_batch"] > 0 and req.batch > cfg["max_batch"]:
            self._status(reply, 409, f"Exceeded MaxRequestBatch of {cfg['max_batch']}")
            return
        if req.expires > 0 and cfg["max_expires"] > 0 and req.expires > cfg["max_expires"]:
            self._status(reply, 409, f"Exceeded MaxRequestExpires of {format_duration(cfg['max_expires'])}")
            return
        if req.max_bytes > 0 and cfg["max_bytes"] > 0 and req.max_bytes > cfg["max_bytes"]:
            self._status(reply, 409, f"Exceeded MaxRequestMaxBytes of {cfg['max_bytes']}")
            return
        if req.group is not None:
            if (req.group.get("min_pending") or req.group.get("min_ack_pending")) and \
                    cfg["priority_policy"] != "overflow":
                self._status(reply, 400, "Bad Request - Not a Overflow Priority consumer")
                return
            if req.group.get("id") and cfg["priority_policy"] != "pinned_client":
                self._status(reply, 400, "Bad Request - Not a Pinned Client Priority consumer")
                return
            if not 0 <= req.group.get("priority", 0) <= 9:
                self._status(reply, 400, "Bad Request - Priority must be between 0 and 9")
                return
            if cfg["priority_policy"] != "none":
                group = req.group.get("group", "")
                if not group:
                    self._status(reply, 400, "Bad Request - Priority Group missing")
                    return
                if group not in cfg["priority_groups"]:
                    self._status(reply, 400, "Bad Request - Invalid Priority Group")
                    return
                if self.pin_id:
                    pin = req.group.get("id", "")
                    if pin == self.pin_id:
                        self._set_pin_timer(group)
                    elif pin:
                        self._status(reply, 423, "Nats-Pin-Id mismatch")
                        return
        now = time.monotonic_ns()
        if len(self.waiting) >= cfg["max_waiting"] and now - self.last_waiting_check > WAITING_CHECK_INTERVAL:
            self._process_waiting(False)
        if req.no_wait:
            msgs_pending = self.num_pending() + len(self.rdq)
            if msgs_pending == 0 and req.expires == 0:
                self.waiting_last = now
                self._status(reply, 404, "No Messages")
                return
            if msgs_pending > 0:
                batch_pending = self._process_waiting(False)
                if msgs_pending < batch_pending:
                    self.waiting_last = now
                    self._status(reply, 408, "Requests Pending")
                    return
        if len(self.waiting) >= cfg["max_waiting"]:
            if req.heartbeat == 0:
                self._status(reply, 409, "Exceeded MaxWaiting")
            return
        wr = WaitingRequest(reply, req, now)
        if cfg["priority_policy"] == "prioritized":
            self._insert_prioritized(wr)
        else:
            self.waiting.append(wr)
        self.waiting_last = now
        self.kick()

    def _insert_prioritized(self, wr: WaitingRequest) -> None:
        """nats-server insertAtPosition: after every request of the same or a lower (more urgent) priority."""
        waiting = self.waiting
        i = len(waiting)
        while i > 0 and waiting[i - 1].priority > wr.priority:
            i -= 1
        waiting.insert(i, wr)

    def _next_waiting(self, size: int) -> WaitingRequest | None:
        """The request the next message goes to (nats-server nextWaiting): expired ones get 408, ones whose
        max_bytes the message would pass get 409, ones nobody listens to any more are dropped. A request that
        still wants more moves to the back of the queue (of its priority, for `prioritized`).

        Priority groups: with `pinned_client` and no pin, the first request without an id takes a new pin and
        requests with a stale id get `423 Nats-Wrong-Pin-Id`; while pinned, only requests with the pin are served
        and the others wait their turn (standbys). With `overflow`, a request with thresholds is skipped while
        neither is reached; `npc + 1` counts the message being delivered, already taken off `npc`. When a whole
        round of the queue was skipped nobody gets the message."""
        waiting = self.waiting
        now = time.monotonic_ns()
        policy = self.cfg["priority_policy"]
        cycled = 0
        while waiting:
            wr = waiting[0]
            if wr.expires and now >= wr.expires:
                waiting.popleft()
                self._status(wr.reply, 408, "Request Timeout", (HDR_PENDING_MSGS, wr.n), (HDR_PENDING_BYTES, wr.b))
                continue
            pg = wr.group
            took_pin = False
            if policy == "pinned_client":
                pin = pg.get("id", "") if pg is not None else ""
                if not self.pin_id:
                    if pin:
                        waiting.popleft()
                        self._status(wr.reply, 423, "Nats-Wrong-Pin-Id", (HDR_PENDING_MSGS, wr.n),
                                     (HDR_PENDING_BYTES, wr.b))
                        continue
                    took_pin = self._assign_pin(wr)
                elif pin != self.pin_id:
                    if pin:
                        waiting.popleft()
                        self._status(wr.reply, 423, "Nats-Wrong-Pin-Id", (HDR_PENDING_MSGS, wr.n),
                                     (HDR_PENDING_BYTES, wr.b))
                        continue
                    waiting.rotate(-1)
                    cycled += 1
                    if cycled >= len(waiting):
                        return None
                    continue
            elif policy == "overflow" and pg is not None:
                min_pending, min_ack_pending = pg.get("min_pending", 0), pg.get("min_ack_pending", 0)
                if (min_pending > 0 or min_ack_pending > 0) and not (
                        0 < min_pending <= self.npc + 1 or 0 < min_ack_pending <= len(self.pending)):
                    waiting.rotate(-1)
                    cycled += 1
                    if cycled >= len(waiting):
                        return None
                    continue
            if wr.b > 0:
                if size <= wr.b:
                    wr.b -= size
                    if wr.b == 0:
                        wr.n = 1
                else:
                    waiting.popleft()
                    self._status(wr.reply, 409, "Message Size Exceeds MaxBytes", (HDR_PENDING_MSGS, wr.n),
                                 (HDR_PENDING_BYTES, wr.b))
                    if took_pin:
                        self._unassign_pin()
                    continue
            if not has_interest(self.account, wr.reply):
                waiting.popleft()
                continue
            wr.d += 1
            wr.n -= 1
            if wr.n > 0 and len(waiting) > 1:
                waiting.popleft()
                if policy == "prioritized":
                    self._insert_prioritized(wr)
                else:
                    waiting.append(wr)
            elif wr.n <= 0:
                waiting.popleft()
            return wr
        return None

    # -- pinned client

    def _assign_pin(self, wr: WaitingRequest) -> bool:
        """nats-server assignNewPinId: a new pin for a request that names a group (an empty or numeric body does
        not, and is served without taking a pin)."""
        if wr.group is None or not wr.group.get("group"):
            return False
        group = wr.group["group"]
        self.pin_id = nuid(22)
        self.pinned_ts = time.time_ns()
        wr.group["id"] = self.pin_id
        self._set_pin_timer(group)
        self._advisory(f"{ADV_PINNED}.{self.stream.name}.{self.name}", {
            "type": "io.nats.jetstream.advisory.v1.consumer_group_pinned", **self._advisory_source(),
            "group": group, "pinned_id": self.pin_id})
        return True

    def _unassign_pin(self) -> None:
        self.pin_id = ""
        self.pinned_ts = 0
        if self._pin_timer is not None:
            self._pin_timer.cancel()
            self._pin_timer = None

    def _set_pin_timer(self, group: str) -> None:
        """(Re)start the pin's `priority_timeout`: a pull carrying the pin keeps it, silence loses it."""
        if self._pin_timer is not None:
            self._pin_timer.cancel()
        self._pin_timer = self.jsa.call_later(self.cfg["priority_timeout"] / NS, lambda: self._pin_due(group))

    def _pin_due(self, group: str) -> None:
        self._pin_timer = None
        if self.closed or not self.pin_id:
            return
        self.unpin(group, "timeout")
        self._flush()

    def unpin(self, group: str, reason: str) -> None:
        """Drop the pin (CONSUMER.UNPIN: reason "admin", the timer: "timeout"); the next delivery pins again.
        nats-server sends the advisory even when nothing was pinned."""
        self._unassign_pin()
        self._advisory(f"{ADV_UNPINNED}.{self.stream.name}.{self.name}", {
            "type": "io.nats.jetstream.advisory.v1.consumer_group_unpinned", **self._advisory_source(),
            "group": group, "reason": reason})
        self.kick()

    def _advisory_source(self) -> dict[str, str]:
        """The account, stream, consumer and domain fields the pin advisories start with (account omitempty)."""
        out = {"account": self.account.name, "stream": self.stream.name, "consumer": self.name}
        if self.jsa.js.domain:
            out["domain"] = self.jsa.js.domain
        return out

    def _process_waiting(self, eos: bool) -> int:
        """Sweep the waiting requests (nats-server processWaiting): 408 for expired ones, 404 for no_wait ones at
        the end of the stream, drop those without interest, send due heartbeats. Returns the messages still
        asked for."""
        if not self.waiting:
            return 0
        now = time.monotonic_ns()
        self.last_waiting_check = now
        keep: deque[WaitingRequest] = deque()
        asked = 0
        for wr in self.waiting:
            expired = bool(wr.expires) and now >= wr.expires
            if expired:
                self._status(wr.reply, 408, "Request Timeout", (HDR_PENDING_MSGS, wr.n), (HDR_PENDING_BYTES, wr.b))
                continue
            if eos and wr.no_wait and (not wr.expires or wr.d > 0):
                self._status(wr.reply, 404, "No Messages")
                continue
            if not has_interest(self.account, wr.reply):
                continue
            asked += wr.n
            if wr.hbt and now >= wr.hbt:
                self._heartbeat(wr.reply)
                wr.hbt = now + wr.hb
            keep.append(wr)
        self.waiting = keep
        return asked

    def _arm_wait_timer(self) -> None:
        at = 0
        for wr in self.waiting:
            for t in (wr.expires, wr.hbt):
                if t and (not at or t < at):
                    at = t
        if not at:
            return
        if self._wait_timer is not None:
            if self._wait_timer_at <= at:
                return
            self._wait_timer.cancel()
        self._wait_timer_at = at
        self._wait_timer = self.jsa.call_later(max(at - time.monotonic_ns(), MS) / NS, self._wait_due)

    def _wait_due(self) -> None:
        self._wait_timer = None
        self._wait_timer_at = 0
        if self.closed:
            return
        self._process_waiting(True)
        self.kick()

    # -- acks

    def process_ack(self, dc: int, sseq: int, dseq: int, reply: bytes | None, payload: bytes) -> None:
        """A message on this consumer's ack subject (nats-server processAck)."""
        skip_reply = sseq == 0
        msg = payload
        if not msg or msg == ACK_ACK or msg == ACK_OK:
            if not self._ack(sseq, dseq, dc):
                skip_reply = True
        elif msg.startswith(ACK_NEXT):
            self._ack(sseq, dseq, dc)
            if reply:
                self.process_next_request(reply, msg[len(ACK_NEXT):])
            skip_reply = True
        elif msg.startswith(ACK_NAK):
            self._nak(sseq, dseq, dc, msg[len(ACK_NAK):])
        elif msg == ACK_PROGRESS:
            self._progress(sseq)
        elif msg.startswith(ACK_TERM):
            reason = msg[len(ACK_TERM):].strip().decode(errors="replace")
            if not self._ack(sseq, dseq, dc, term_reason=reason):
                skip_reply = True
        if reply and not skip_reply:
            deliver_as(self.account, self.server.internal, reply, reply, None, None, b"")
        self.kick()

    def _ack(self, sseq: int, dseq: int, dc: int, term_reason: str | None = None) -> bool:
        """Acknowledge (or terminate) stream message sseq; False when the ack is out of range and gets no reply
        (nats-server processAckMsg). A +TERM also sends its advisory."""
        if self.closed:
            return False
        if sseq >= self.sseq and not self.cfg["flow_control"]:
            return False
        ap = self.cfg["ack_policy"]
        acked: list[int] = []
        if ap == ACK_EXPLICIT:
            p = self.pending.pop(sseq, None)
            if p is not None:
                if term_reason is None and self.sample_freq:
                    self._sample_ack(sseq, dseq, dc, p.ts)
                dseq = p.dseq
                self._move_ack_floor(dseq, sseq)
                acked.append(sseq)
            self.rdc.pop(sseq, None)
            self._rdq_remove(sseq)
        elif ap == ACK_ALL:
            if dseq <= self.adflr or sseq <= self.asflr:
                if term_reason is not None:
                    self._term_advisory(sseq, dseq, dc, term_reason)
                return True
            self.adflr, self.asflr = dseq, sseq
            for s in [s for s in self.pending if s <= sseq]:
                del self.pending[s]
                acked.append(s)
            for s in [s for s in self.rdc if s <= sseq]:
                del self.rdc[s]
            for s in [s for s in self.rdq_set if s <= sseq]:
                self._rdq_remove(s)
            if sseq not in acked:
                acked.append(sseq)
        else:
            if term_reason is not None:
                self._term_advisory(sseq, dseq, dc, term_reason)
            return self.stream.retention != "limits"
        self._store_acks(dseq, sseq)
        if term_reason is not None:
            self._term_advisory(sseq, dseq, dc, term_reason)
        if self.stream.retention != "limits":
            for s in acked:
                self.stream.ack_msg(self, s)
        if not self.pending:
            self._cancel_ack_timer()
        return True

    def _sample_ack(self, sseq: int, dseq: int, dc: int, delivered_at: int) -> None:
        """Ack latency metrics for `sample_freq` percent of the acks (nats-server sampleAck)."""
        if self.sample_freq < 100 and random.randrange(100) > self.sample_freq:
            return
        self._advisory(f"{METRIC_ACK}.{self.stream.name}.{self.name}", {
            "type": "io.nats.jetstream.metric.v1.consumer_ack", "stream": self.stream.name, "consumer": self.name,
            "consumer_seq": dseq, "stream_seq": sseq, "ack_time": time.time_ns() - delivered_at, "deliveries": dc})

    def _store_acks(self, dseq: int, sseq: int) -> None:
        try:
            self.store.update_acks(dseq, sseq)
        except StoreError:
            pass  # not pending in the store (already acknowledged, or past max_deliver): nothing to record
        self.lat = time.time_ns()
        self._schedule_flush()

    def _term(self, sseq: int, dseq: int, dc: int, reason: str) -> None:
        self._ack(sseq, dseq, dc, term_reason=reason)

    def _term_advisory(self, sseq: int, dseq: int, dc: int, reason: str) -> None:
        body: dict[str, Any] = {"type": "io.nats.jetstream.advisory.v1.terminated", "stream": self.stream.name,
                                "consumer": self.name, "consumer_seq": dseq, "stream_seq": sseq, "deliveries": dc}
        if reason:
            body["reason"] = reason
        self._advisory(f"{ADV_TERMINATED}.{self.stream.name}.{self.name}", body)

    def _move_ack_floor(self, dseq: int, sseq: int) -> None:
        """After removing sseq from pending: raise the ack floors if it was the oldest outstanding delivery."""
        if not self.pending:
            self.adflr = self.dseq - 1
            self.asflr = self.sseq - 1
        elif dseq == self.adflr + 1:
            self.adflr, self.asflr = dseq, sseq
            nxt = next_pending(self.pending, sseq, self.sseq - 1)
            if nxt:
                p = self.pending[nxt]
                if p.dseq > 0:
                    self.adflr, self.asflr = p.dseq - 1, nxt - 1

    def _nak(self, sseq: int, dseq: int, dc: int, arg: bytes) -> None:
        if dseq <= self.adflr or dseq > self.dseq:
            return
        p = self.pending.get(sseq)
        if p is None:
            return
        self._advisory(f"{ADV_NAKED}.{self.stream.name}.{self.name}", {
            "type": "io.nats.jetstream.advisory.v1.nak", "stream": self.stream.name, "consumer": self.name,
            "consumer_seq": dseq, "stream_seq": sseq, "deliveries": dc})
        delay = parse_nak_delay(arg)
        if delay is not None:
            self._rdq_remove(sseq)
            # Due when ack_wait would have run out `delay` from now.
            p.ts = time.time_ns() - self.cfg["ack_wait"] + delay
            self.store.update_delivered(p.dseq, sseq, dc, p.ts)
            self._schedule_flush()
            if self._ack_timer is not None:
                self._arm_ack_timer(10 * MS, force=True)
            return
        if sseq not in self.rdq_set:
            self._rdq_add(sseq)

    def _progress(self, sseq: int) -> None:
        p = self.pending.get(sseq)
        if p is not None:
            p.ts = time.time_ns()
            self.store.update_delivered(p.dseq, sseq, 1, p.ts)
            self._schedule_flush()

    def _rdq_add(self, seq: int) -> None:
        self.rdq.append(seq)
        self.rdq_set.add(seq)

    def _rdq_remove(self, seq: int) -> None:
        if seq in self.rdq_set:
            self.rdq_set.discard(seq)
            try:
                self.rdq.remove(seq)
            except ValueError:
                pass

    def _dc(self, seq: int) -> int:
        """nats-server deliveryCount: the redelivery count, 1 when none (sic: one less than the deliveries after
        a redelivery, which is what nats-server compares with max_deliver)."""
        n = self.rdc.get(seq, 0)
        return n if n >= 1 else 1

    # -- ack wait, redelivery, max deliveries

    def _arm_ack_timer(self, delay_ns: int, force: bool = False) -> None:
        mono = time.monotonic_ns()
        end = mono + delay_ns
        if self._ack_timer is not None:
            if not force and self._ack_timer_end <= end:
                return
            self._ack_timer.cancel()
        self._ack_timer_end = end
        self._ack_timer = self.jsa.call_later(delay_ns / NS, self._check_pending)

    def _cancel_ack_timer(self) -> None:
        if self._ack_timer is not None:
            self._ack_timer.cancel()
            self._ack_timer = None

    def _check_pending(self) -> None:
        """The ack timer (nats-server checkPending): queue expired deliveries for redelivery, give up on those at
        max_deliver, and re-arm for the next deadline."""
        self._ack_timer = None
        if self.closed:
            return
        ack_wait = self.cfg["ack_wait"]
        if ack_wait <= 0:
            return
        backoff = self.cfg["backoff"]
        st = self.stream.store.state()
        fseq = st.first_seq
        now = time.time_ns()
        nxt = ack_wait + ACK_WAIT_SLACK
        if backoff:
            nxt = backoff[-1]
        expired: list[int] = []
        dropped = False
        for seq, p in list(self.pending.items()):
            if seq < fseq or seq <= self.asflr:
                del self.pending[seq]
                self.rdc.pop(seq, None)
                self._rdq_remove(seq)
                dropped = True
                if seq > self.asflr:
                    self.asflr = seq
                if p.dseq > self.adflr:
                    self.adflr = p.dseq
                continue
            elapsed, deadline = now - p.ts, ack_wait
            if backoff:
                dc = max(self.rdc.get(seq, 0), 0)
                nbi = dc + 1
                if dc + 1 >= len(backoff):
                    dc = len(backoff) - 1
                    nbi = dc
                deadline = backoff[dc]
                nxt = min(nxt, backoff[nbi])
            if elapsed >= deadline:
                if seq not in self.rdq_set and not self._has_max_deliveries(seq):
                    expired.append(seq)
            elif deadline - elapsed < nxt:
                nxt = deadline - elapsed
        if expired:
            expired.sort()
            for seq in expired:
                self._rdq_add(seq)
            # Later redeliveries keep their order: shift every expired timestamp by the same amount.
            off = now - self.pending[expired[0]].ts
            for seq in expired:
                p = self.pending.get(seq)
                if p is not None:
                    p.ts += off
        if self.pending:
            self._arm_ack_timer(max(nxt, 0))
        else:
            self.rdq.clear()
            self.rdq_set.clear()
            self.adflr, self.asflr = self.dseq - 1, self.sseq - 1
        if dropped:
            self._write_state()
        self.kick()

    def _has_max_deliveries(self, seq: int) -> bool:
        """nats-server hasMaxDeliveries: at the limit, send the advisory once and stop redelivering."""
        if not self.maxdc:
            return False
        dc = self._dc(seq)
        if dc < self.maxdc:
            return False
        if dc == self.maxdc:
            self._max_deliveries_advisory(seq, dc)
        p = self.pending.pop(seq, None)
        if p is not None:
            self.store.update_delivered(p.dseq, seq, dc + 1, p.ts)
            self._move_ack_floor(p.dseq, seq)
        self.rdc[seq] = dc
        return True

    def _max_deliveries_advisory(self, seq: int, deliveries: int) -> None:
        self._advisory(f"{ADV_MAX_DELIVERIES}.{self.stream.name}.{self.name}", {
            "type": "io.nats.jetstream.advisory.v1.max_deliver", "stream": self.stream.name, "consumer": self.name,
            "stream_seq": seq, "deliveries": deliveries})

    # -- push: interest, heartbeats, flow control

    def interest_changed(self) -> None:
        """Subscriptions changed on a subject that may be our deliver subject."""
        if self.closed or not self.push:
            return
        interest = has_interest(self.account, self.deliver_b)
        if interest == self.active:
            return
        self.active = interest
        if interest:
            if self._delete_timer is not None:
                self._delete_timer.cancel()
                self._delete_timer = None
            self.kick()
        else:
            self._interest_lost()

    def _interest_lost(self) -> None:
        if self.dthresh > 0 and self._delete_timer is None:
            self._delete_timer = self.jsa.call_later(self.dthresh / NS, self._delete_if_inactive)

    def _heartbeat_due(self) -> None:
        self._hb_timer = None
        if self.closed:
            return
        hb = self.cfg["idle_heartbeat"]
        idle = time.monotonic_ns() - self._last_activity
        if idle >= hb:
            if self.active:
                self._heartbeat(self.deliver_b)
                self._flush()
            self._last_activity = time.monotonic_ns()
            idle = 0
        self._hb_timer = self.jsa.call_later((hb - idle) / NS, self._heartbeat_due)

    def _heartbeat(self, dest: bytes) -> None:
        pairs: list[tuple[str, int | str]] = [(HDR_LAST_CONSUMER, self.dseq - 1), (HDR_LAST_STREAM, self.sseq - 1)]
        if self.fcid:
            pairs.append((HDR_STALLED, self.fcid))
        deliver_as(self.account, self.server.internal, dest, dest, None, status_header(100, "Idle Heartbeat", *pairs),
                   b"")

    def _need_flow_control(self, size: int) -> bool:
        if not self.fcid and self.pbytes > self.maxpb // 2:
            return True
        if self.fcid and self.pbytes - self.fcsz >= self.maxpb:
            self.fcsz += size
        return False

    def _send_flow_control(self) -> None:
        if not self.push:
            return
        rnd = random.getrandbits(62)
        tag = ""
        for _ in range(4):
            tag += _B62[rnd % 62]
            rnd //= 62
        reply = self.fc_prefix + tag
        self.fcsz, self.fcid = self.pbytes, reply
        deliver_as(self.account, self.server.internal, self.deliver_b, self.deliver_b, reply.encode(),
                      status_header(100, "FlowControl Request"), b"")

    def process_flow_control(self, subject: str) -> None:
        """A reply to our latest flow-control request: widen the window and resume."""
        if self.closed or subject != self.fcid:
            return
        if self.maxpb < self.pblimit:
            self.maxpb = min(self.maxpb * 2, self.pblimit)
        self.pbytes = max(self.pbytes - self.fcsz, 0)
        self.fcid, self.fcsz = "", 0
        self.kick()

    # -- inactivity

    def _delete_if_inactive(self) -> None:
        """nats-server deleteNotActive: an ephemeral (or a durable with inactive_threshold) nobody uses goes away."""
        self._delete_timer = None
        if self.closed:
            return
        if self.push:
            if self.active:
                return
        else:
            elapsed = time.monotonic_ns() - self.waiting_last
            if elapsed < self.dthresh:
                self._delete_timer = self.jsa.call_later((self.dthresh - elapsed) / NS, self._delete_if_inactive)
                return
            self._process_waiting(True)
            if self.waiting:
                self._delete_timer = self.jsa.call_later(self.dthresh / NS, self._delete_if_inactive)
                return
            now = time.time_ns()
            delay = 0
            backoff = self.cfg["backoff"]
            for seq, p in self.pending.items():
                wait = self.cfg["ack_wait"]
                if backoff:
                    wait = backoff[min(max(self.rdc.get(seq, 0), 0), len(backoff) - 1)]
                t = p.ts + wait + ACK_WAIT_SLACK + self.dthresh
                if t > now:
                    delay = max(delay, t - now)
            if delay > 0:
                self._delete_timer = self.jsa.call_later(delay / NS, self._delete_if_inactive)
                return
        log.debug("JetStream consumer '%s > %s > %s' deleted after inactivity", self.account.name,
                  self.stream.name, self.name)
        self.delete_consumer(advisory=True)
        self._flush()

    # -- pause

    def _arm_pause(self) -> None:
        if self._pause_timer is not None:
            self._pause_timer.cancel()
            self._pause_timer = None
        pu = self.cfg["pause_until"]
        now = time.time_ns()
        if pu is not None and pu > now:
            self._pause_timer = self.jsa.call_later((pu - now + MS) / NS, self._unpause_due)

    def _unpause_due(self) -> None:
        self._pause_timer = None
        if self.closed:
            return
        if self._paused():
            self._arm_pause()  # the loop's clock ran ahead of the wall clock
            return
        self._pause_advisory()
        self.kick()

    def _pause_advisory(self) -> None:
        pu = self.cfg["pause_until"]
        body: dict[str, Any] = {"type": "io.nats.jetstream.advisory.v1.consumer_pause", "stream": self.stream.name,
                                "consumer": self.name, "paused": pu is not None and time.time_ns() < pu,
                                "pause_until": time_text(pu)}
        self._advisory(f"{ADV_PAUSE}.{self.stream.name}.{self.name}", body)

    def set_pause(self, pause_until: int | None) -> None:
        old = self.cfg["pause_until"]
        cfg = dict(self.cfg)
        cfg["pause_until"] = pause_until
        set_static_consumer_metadata(cfg)
        self.cfg = cfg
        self.persist_meta()
        if old != pause_until:
            self._arm_pause()
            self._pause_advisory()
        self.kick()

    # -- config updates

    def update_config(self, new: dict[str, Any]) -> None:
        """Apply an allowed update (the caller checked it with update_error)."""
        old = self.cfg
        self.cfg = new
        if new["deliver_subject"] != old["deliver_subject"]:
            unwatch(self)
            self.deliver_b = new["deliver_subject"].encode()
            watch(self)
            for seq in sorted(self.pending):
                if seq not in self.rdq_set:
                    self._rdq_add(seq)
            self.active = has_interest(self.account, self.deliver_b)
        refilter = filters_of(new) != filters_of(old)
        self.store.max_deliver = new["max_deliver"]
        self._set_filters()
        if new["inactive_threshold"] != old["inactive_threshold"] or not self.durable:
            self._set_inactive_threshold()
            if self._delete_timer is not None:
                self._delete_timer.cancel()
                self._delete_timer = None
            if self.dthresh > 0 and (not self.push or not self.active):
                self._delete_timer = self.jsa.call_later(self.dthresh / NS, self._delete_if_inactive)
        if new["ack_wait"] != old["ack_wait"] and self._ack_timer is not None:
            self._arm_ack_timer(100 * MS, force=True)
        if refilter:
            self.calc_num_pending()
        self.persist_meta()
        self.kick()

    # -- reset

    def reset(self, seq: int) -> int:
        """Start over at stream sequence `seq` (0: just after the ack floor), as nats-server's consumer reset;
        ApiError 10204 when the deliver policy does not allow it. Returns the sequence it starts at."""
        cfg = self.cfg
        dp = cfg["deliver_policy"]

        def invalid(why: str) -> ApiError:
            return js_error("JSConsumerInvalidResetErr", err=why)

        if seq == 0:
            seq = self.asflr + 1
        elif dp == "by_start_sequence":
            if seq < cfg["opt_start_seq"]:
                raise invalid("below start seq")
        elif dp == "by_start_time":
            if seq < self.stream.store.get_seq_from_time(cfg["opt_start_time"] or 0):
                raise invalid("below start time")
        elif dp != "all":
            raise invalid("not allowed")
        seq = max(seq, 1)
        self.pending.clear()
        self.rdc.clear()
        self.rdq.clear()
        self.rdq_set.clear()
        self.lss = None
        self._cancel_ack_timer()
        self.sseq, self.dseq = seq, 1
        self.adflr, self.asflr = 0, seq - 1
        self.ldt = self.lat = 0
        self.store.reset(seq - 1)
        self._schedule_flush()
        if self.stream.retention == "interest":
            self._release_interest(0)
        self.calc_num_pending()
        return seq

    # -- info

    def info(self, dynamic: bool = False) -> dict[str, Any]:
        """The consumer_info body without "type" (nats-server ConsumerInfo); `dynamic` adds the server's
        metadata keys, as the create and info responses do."""
        np = self._checked_num_pending()
        st = self.store.state()
        if self.store.has_state():
            dc, ds = st.delivered.consumer_seq, st.delivered.stream_seq
        else:
            dc, ds = max(self.dseq, 1) - 1, max(self.sseq, 1) - 1
        delivered: dict[str, Any] = {"consumer_seq": dc, "stream_seq": ds}
        if self.ldt:
            delivered["last_active"] = rfc3339(self.ldt)
        ack_floor: dict[str, Any] = {"consumer_seq": st.ack_floor.consumer_seq,
                                     "stream_seq": st.ack_floor.stream_seq}
        if self.lat:
            ack_floor["last_active"] = rfc3339(self.lat)
        if not self.push:
            self._process_waiting(False)
        out: dict[str, Any] = {
            "stream_name": self.stream.name,
            "name": self.name,
            "created": rfc3339(self.created),
            "config": self.config_out(dynamic),
            "delivered": delivered,
            "ack_floor": ack_floor,
            "num_ack_pending": len(self.pending),
            "num_redelivered": 0 if self.cfg["max_deliver"] == 1 else len(self.rdc),
            "num_waiting": len(self.waiting),
            "num_pending": np,
        }
        if self.push and self.active:
            out["push_bound"] = True
        pu = self.cfg["pause_until"]
        now = time.time_ns()
        if pu is not None and now < pu:
            out["paused"] = True
            out["pause_remaining"] = pu - now
        out["ts"] = rfc3339(time.time_ns())
        if self.cfg["priority_groups"]:
            # nats-server reports the first group only, and writes the zero time when nothing is pinned
            state: dict[str, Any] = {"group": self.cfg["priority_groups"][0]}
            if self.pin_id:
                state["pinned_client_id"] = self.pin_id
            state["pinned_ts"] = rfc3339(self.pinned_ts) if self.pinned_ts else ZERO_TIME
            out["priority_groups"] = [state]
        self._flush()
        return out

    def config_out(self, dynamic: bool) -> dict[str, Any]:
        md = self.cfg["metadata"]
        return config_json(self.cfg, dynamic_metadata(md, self.server.version) if dynamic else dict(md or {}))

    # -- persistence

    def persist_meta(self) -> None:
        """Durable consumers of file streams keep their config in `<stream dir>/obs/<name>/meta.json`."""
        if not self.file_backed or self.closed:
            return
        path = os.path.join(self.stream.dir, "obs", self.name)
        os.makedirs(path, exist_ok=True)
        meta = {"stream_name": self.stream.name, "name": self.name, "created": rfc3339(self.created),
                "created_ns": self.created, "config": config_json(self.cfg)}
        atomic_write(os.path.join(path, "meta.json"), dumps(meta))

    def _schedule_flush(self) -> None:
        """File-backed state is written at most once a second (and at every stream sync and at shutdown), so a
        crash loses at most a second of acks; with sync "always" the store writes every change itself."""
        if self.file_backed and self._flush_timer is None:
            self._flush_timer = self.jsa.call_later(FLUSH_DELAY, self.flush)

    def flush(self) -> None:
        """Write the delivery and ack state to disk (called by the stream's sync timer too)."""
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        if not self.file_backed or self.closed:
            return
        try:
            self.store.flush()  # type: ignore[attr-defined]
        except (OSError, StoreError, ValueError) as e:
            log.error("JetStream consumer '%s > %s > %s': writing state failed: %s", self.account.name,
                      self.stream.name, self.name, e)

    # -- output helpers

    def _status(self, dest: bytes, code: int, text: str, *pairs: tuple[str, int | str]) -> None:
        deliver_as(self.account, self.server.internal, dest, dest, None, status_header(code, text, *pairs), b"")

    def _advisory(self, subject: str, body: dict[str, Any]) -> None:
        subj = subject.encode()
        if not has_interest(self.account, subj):
            return
        event = {"type": body.pop("type"), "id": nuid(22), "timestamp": rfc3339(time.time_ns())}
        event.update(body)
        self.jsa.publish(subj, None, None, dumps(event))

    def _flush(self) -> None:
        if self.server.reading is None:
            self.server.flush_dirty()

    # -- lifecycle

    def _cancel_timers(self) -> None:
        for name in ("_ack_timer", "_delete_timer", "_hb_timer", "_wait_timer", "_pause_timer", "_pace_timer",
                     "_flush_timer", "_pin_timer"):
            h = getattr(self, name)
            if h is not None:
                h.cancel()
                setattr(self, name, None)

    def stop(self) -> None:
        """Hub shutdown: write state, cancel timers."""
        if self.closed:
            return
        self.closed = True
        self._cancel_timers()
        try:
            self.store.stop()
        except OSError as e:
            log.error("JetStream consumer '%s > %s > %s': writing state failed: %s", self.account.name,
                      self.stream.name, self.name, e)

    def delete(self) -> None:
        """The stream is being deleted: release waiting requests and remove our state (no advisory)."""
        self.delete_consumer(advisory=False)

    def delete_consumer(self, advisory: bool) -> None:
        """Remove this consumer: 409 to waiting pull requests, the delete advisory, state files gone."""
        if self.closed:
            return
        if advisory:
            self._advisory(f"{ADV_DELETED}.{self.stream.name}.{self.name}", {
                "type": "io.nats.jetstream.advisory.v1.consumer_action", "stream": self.stream.name,
                "consumer": self.name, "action": "delete"})
        for wr in self.waiting:
            self._status(wr.reply, 409, "Consumer Deleted")
        self.waiting.clear()
        self.closed = True
        self._cancel_timers()
        if self.stream.consumers.get(self.name) is self:
            del self.stream.consumers[self.name]
        self.store.delete()
        if self.file_backed and self.stream.dir:
            shutil.rmtree(os.path.join(self.stream.dir, "obs", self.name), ignore_errors=True)
        unwatch(self)
        if self.stream.retention == "interest" and not self.stream.closed:
            self._release_interest(self.asflr + 1)

    def _release_interest(self, start: int) -> None:
        """Interest streams: drop the messages from `start` on that no consumer needs any more (nats-server
        cleanupNoInterestMessages, after a consumer went away or moved); with no consumer left, all of them."""
        stream = self.stream
        store = stream.store
        if not stream.consumers:
            if store.state().msgs:
                stream.purge(None, 0, 0)
            return
        st = store.state()
        start = max(start, st.first_seq)
        if st.last_seq - start > INTEREST_CLEANUP_MAX:
            return
        removed = False
        for seq in range(start, st.last_seq + 1):
            try:
                subject = store.subject_for_seq(seq)
            except StoreError:
                continue
            if not any(c.needs(seq, subject) for c in stream.consumers.values()):
                store.remove_msg(seq)
                removed = True
        if removed:
            for c in list(stream.consumers.values()):
                c.on_purge()


# ---- registry of push consumers by deliver subject (interest tracking) --------------------------------------------

# account -> deliver subject -> push consumers
_WATCH: weakref.WeakKeyDictionary[Account, dict[bytes, list[Consumer]]] = weakref.WeakKeyDictionary()


def watch(c: Consumer) -> None:
    _WATCH.setdefault(c.account, {}).setdefault(c.deliver_b, []).append(c)


def unwatch(c: Consumer) -> None:
    by = _WATCH.get(c.account)
    if not by:
        return
    lst = by.get(c.deliver_b)
    if lst and c in lst:
        lst.remove(c)
        if not lst:
            del by[c.deliver_b]


def _interest_hook(acc: Account) -> Callable[[bytes], None]:
    ref = weakref.ref(acc)

    def changed(subject: bytes) -> None:
        account = ref()
        by = _WATCH.get(account) if account is not None else None
        if not by:
            return
        lst = by.get(subject)
        if lst is not None:
            for c in list(lst):
                c.interest_changed()
        if b"*" in subject or b">" in subject:
            for deliver, cs in list(by.items()):
                if deliver != subject and subject_matches(subject, deliver):
                    for c in list(cs):
                        c.interest_changed()

    return changed


# ---- entry points for jetstream.py and stream.py -----------------------------------------------------------------


def install(jsa: JSAccount) -> None:
    """Subscribe the account's ack and flow-control subjects and watch deliver-subject interest."""
    acc = jsa.account

    def on_ack(src: Any, subject: bytes, reply: bytes | None, hdr: bytes | None, payload: bytes) -> bool:
        # nats-server subscribes the ack subjects per consumer, and only when acks are expected: an ack for
        # anything else reaches nobody (False: not taken, so an AckSync requester gets 503 no responders).
        info = parse_ack_subject(subject.decode(errors="replace"))
        if info is None:
            return False
        c = lookup(jsa, info[0], info[1])
        if c is None or c.cfg["ack_policy"] == ACK_NONE:
            return False
        c.process_ack(info[2], info[3], info[4], reply, payload)
        return True

    def on_fc(src: Any, subject: bytes, reply: bytes | None, hdr: bytes | None, payload: bytes) -> bool:
        text = subject.decode(errors="replace")
        toks = text.split(".")
        if len(toks) == 5:
            c = lookup(jsa, toks[2], toks[3])
        elif len(toks) >= 7:
            c = lookup(jsa, toks[4], toks[5])
        else:
            return False
        if c is None or not c.cfg["flow_control"]:
            return False
        c.process_flow_control(text)
        return True

    acc.add_internal(b"$JS.ACK.>", on_ack)
    acc.add_internal(b"$JS.FC.>", on_fc)
    acc.interest_watchers.append(_interest_hook(acc))


def lookup(jsa: JSAccount, stream: str, name: str) -> Consumer | None:
    s = jsa.streams.get(stream)
    if s is None:
        return None
    c = s.consumers.get(name)
    return c if isinstance(c, Consumer) else None


def recover(stream: Any) -> None:
    """Restore the durable consumers of a file stream from `<stream dir>/obs/*/meta.json` and their state."""
    if not stream.dir:
        return
    for name in stream.store.consumer_names():
        meta_path = os.path.join(stream.dir, "obs", name, "meta.json")
        try:
            with open(meta_path, "rb") as f:
                meta = json.loads(f.read())
            cfg = config_from(decode(meta["config"], CONFIG_SCHEMA, "ConsumerConfig"))
            created = int(meta.get("created_ns") or 0)
        except (OSError, ValueError, KeyError, TypeError, ApiError) as e:
            log.error("JetStream consumer '%s > %s > %s' not recovered: %s", stream.jsa.account.name, stream.name,
                      name, getattr(e, "description", e))
            continue
        if cfg.get("durable_name") != name:
            log.error("JetStream consumer '%s > %s > %s' not recovered: meta.json names %r", stream.jsa.account.name,
                      stream.name, name, cfg.get("durable_name"))
            continue
        c = Consumer(stream, name, cfg, created)
        try:
            c.store = stream.store.consumer_store(name, cfg["ack_policy"], cfg["max_deliver"])
            c.file_backed = True
            state = c.store.state()
        except (OSError, StoreError, ValueError) as e:
            log.error("JetStream consumer '%s > %s > %s' not recovered: %s", stream.jsa.account.name, stream.name,
                      name, e)
            continue
        if c.store.has_state():
            c.apply_state(state)
        else:
            c.select_start()
        stream.consumers[name] = c
        if c.push:
            watch(c)
        c.start()
