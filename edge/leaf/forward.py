# edge/leaf/forward.py — store-and-forward: publishes to configured subjects go to a flash log first, then
# drain into a hub JetStream stream whenever the uplink is up. Loaded only when the config has "forward".
#
# Rules this file keeps (mechanism and numbers: docs/forward.md):
# 1. "Acked means on flash": a durable publish (`await leaf.publish(..., durable=True)`), a plain API
#    publish to a forwarded subject (it returns after its own flush) and a LAN client's PubAck all wait
#    until the record's flush returned. Records are sent to the hub only once on flash.
# 2. Forwarded subjects reach the hub only through their queue (never also as a live core message, which
#    a stream would store a second time). Local subscribers get every message at once, as before.
# 3. Every record has a per-queue sequence (the log's, monotonic across reboots) and goes out as a
#    JetStream publish with `Nats-Msg-Id: <edge>-<queue>-<seq>` and a reply of ours; it leaves the log
#    only after its PubAck. Before sending again what may already have been stored (records sent whose
#    PubAck never came, bounded by `send_limit`, which is on flash before any record past it is sent), the
#    queue scans the stream from the stream sequence of its last confirmed record (STREAM.MSG.GET,
#    next_by_subj) for its own message ids and skips what is there: no duplicates however long the
#    outage, where Nats-Msg-Id alone covers the stream's duplicate window only. So a sequence is never
#    reused: when the log's recovery cut records off (flash damage, a torn write), the queue burns every
#    sequence up to its send_limit, since records past the damage may have been sent (and their ids would
#    make new records look stored). Only then: burning at every boot would start a new segment per boot
#    (a device that sleeps between publishes would leave one file each time) and skip up to SEND_AHEAD
#    sequences each time. Nothing reads sequence gaps as losses (drops have gap markers), and the status
#    leaves the burned range out of the backlog.
# 4. Replay: in sequence order per queue; the highest priority queue with work goes first; a shared
#    pacing budget (messages/s, bytes/s); a random wait of up to `jitter` after each link comes up;
#    records older than max_age are dropped unsent; with coalesce only a subject's newest record is sent.
# 5. Overflow at a queue's byte budget: reject (the publisher gets QueueFull / an error PubAck),
#    drop_oldest (whole oldest segments), drop_newest (fire-and-forget publishes only; a publisher
#    waiting for a confirmation is refused instead). Drops are counted and reported to the hub as gap
#    markers on $EDGE.<name>.gap, kept (on flash, in the log's mark) until the hub has interest.
# 6. A flash error never crashes the edge: the records of the failed flush are lost (their publishers
#    are told, a flash_error gap marker goes out) and the log goes on in a new segment.
# 7. Status (backlog, oldest unsent age, drops, duplicates skipped, bytes written) from status() and
#    every `status` seconds as JSON on $EDGE.<name>.forward, to local subscribers and the hub, and as an
#    `edge: fwdstatus {...}` line on stdout.
# 8. One task runs the queues (flush timer, link sessions, lookups, sending, acks, timers); no Event
#    per record: durable waiters share one Event per flush.
# 9. A traced record (Nats-Trace-Dest, edge/leaf/msgtrace.py rule 5) gets one trace event once on flash and one
#    when its PubAck comes; it goes to the hub with Nats-Trace-Hop, so the hub's own event (the stream store)
#    follows the edge's. A trace-only publish is traced where it would go and not stored.

import asyncio
import binascii
import json
import os
import struct
import time

from edge import proto, subjects
from edge.compat import ticks_add, ticks_diff, ticks_ms
from edge.flashlog import FlashLog, FlashLogError, FlashLogFull
from edge.leaf.broker import TRACE_DEST_KEY, LeafError, log_exc
from edge.leaf.jsclient import JsClient, JsError

SEND_AHEAD = 256  # records a queue may send past the send_limit on flash before writing a new one
MARK_MS = 1000  # least time between two mark writes for acks, drops and markers (not for send_limit)
_REC_HEAD = "<IHH"  # wall-clock seconds, subject length, header length
_EPOCH = 946684800 if time.gmtime(0)[0] == 2000 else 0  # ESP32 counts from 2000
_SANE_TIME = 1600000000  # a clock below 2020 was never set: no max_age decisions on it
_META = "<QQB"  # stream_seq, send_limit, number of gaps
_GAP = "<BQQI"  # reason, first, last, count
REASONS = ("", "drop_oldest", "drop_newest", "max_age", "flash_error", "hub_rejected")
_DROP_OLDEST, _DROP_NEWEST, _MAX_AGE, _FLASH_ERROR, _HUB_REJECTED = 1, 2, 3, 4, 5


class QueueFull(LeafError):
    pass


class Refused(LeafError):
    # A publish the queue does not take, with the JetStream error a PubAck reports for it.
    def __init__(self, msg, code=503, err_code=10077):
        super().__init__(msg)
        self.code = code
        self.err_code = err_code


def now_s():
    return int(time.time()) + _EPOCH


def _encode(t, subject, hdr, data):
    return struct.pack(_REC_HEAD, t, len(subject), len(hdr) if hdr else 0) + subject + (hdr or b"") + data


def _decode(p):
    t, sl, hl = struct.unpack_from(_REC_HEAD, p, 0)
    a = 8 + sl
    b = a + hl
    return t, p[8:a], p[a:b] if hl else None, p[b:]


def _msgid_seq(hdrs_b64, prefix):
    # The sequence in a stored message's Nats-Msg-Id when it carries our prefix, else 0.
    if not hdrs_b64:
        return 0
    try:
        h = binascii.a2b_base64(hdrs_b64)
    except ValueError:
        return 0
    i = h.find(b"Nats-Msg-Id:")
    if i < 0:
        return 0
    j = h.find(b"\r\n", i)
    v = h[i + 12 : j if j > 0 else len(h)].strip()
    if v[: len(prefix)] != prefix:
        return 0
    try:
        return int(v[len(prefix) :])
    except ValueError:
        return 0


class Queue:
    # One "forward" entry: its log, its place in the stream, its counters.
    api = "$JS.API."  # the JetStream API that has the stream; a queue with a "domain" has its own

    def __init__(self, index, cfg, edge, data, st):
        self.index = index
        self.name = cfg["name"]
        self.stream = cfg["stream"]
        self.bstream = cfg["stream"].encode()
        if "domain" in cfg:
            self.api = "$JS.%s.API." % cfg["domain"]  # nats-server maps it to that domain's API, across leafnodes
        self.patterns = [p.encode() for p in cfg["subjects"]]
        self.priority = cfg["priority"]
        self.max_age = cfg["max_age"]
        self.policy = cfg["policy"]
        self.coalesce = cfg["coalesce"]
        self.msgid = ("%s-%s-" % (edge, self.name)).encode()
        self.log = FlashLog(data + "/fwd/" + self.name, cfg["segment_size"], cfg["max_bytes"], st["flush_every"],
                            st["flush_ms"], st["flush_bytes"])
        self.stream_seq = 0  # stream sequence of the last confirmed record (where a lookup starts)
        self.send_limit = 0  # no record past it is sent before a new limit is on flash
        self.gaps = []  # [reason, first, last, count]: drops the hub has not heard of yet
        self._load_meta(self.log.meta)
        self.sent_hi = min(self.send_limit, self.log.last_seq)  # records up to here may be in the stream
        self.hole = None  # (first, last): sequences without a record, not backlog (recovery cut them or burned them)
        if self.log.damaged:
            self.log.burn(self.send_limit)  # rule 3: records past the damage may have been sent
            self.hole = (self.log.damaged, self.log.last_seq)
        self.acked = self.log.first_seq - 1  # every record <= acked is stored in the stream or dropped
        self.sent = []  # in sequence order: seq in flight, -seq settled (acked or skipped) behind one in flight
        self.sseq = {}  # seq -> stream seq, for settled entries not yet at the head
        self.n_infl = 0
        self.reader = None
        self.held = None  # (seq, payload) read, not sent yet
        self.found = None  # lookup result: bitmap of records already in the stream, for found_lo..found_hi
        self.found_lo = self.found_hi = 0
        self.ready = False  # prepared for the current link (stream checked, lookup done)
        self.retry_at = ticks_ms()
        self.backoff = 1000
        self.t_progress = 0
        self.t_sent = 0
        self.t_mark = 0
        self.dirty = False
        self.state = "offline"
        self.lost = []  # recent (first, last) ranges lost by failed flushes, for durable waiters
        self.latest = {}  # coalesce: subject -> newest seq in the backlog
        self.published = self.duplicates = self.dup_skipped = 0
        self.dropped = self.expired = self.coalesced = self.rejected = self.hub_rejected = 0
        self.lookups = self.lookup_incomplete = self.errors = self.stalls = 0
        if self.coalesce:
            for seq, p in self.log.replay(self.acked + 1):
                self.note_latest(_decode(p)[1], seq)

    def _load_meta(self, meta):
        if len(meta) < 17:
            return
        self.stream_seq, self.send_limit, n = struct.unpack_from(_META, meta, 0)
        for i in range(n):
            self.gaps.append(list(struct.unpack_from(_GAP, meta, 17 + 21 * i)))

    def meta(self):
        out = struct.pack(_META, self.stream_seq, self.send_limit, len(self.gaps))
        for g in self.gaps:
            out += struct.pack(_GAP, g[0], g[1], g[2], g[3])
        return out

    def note_latest(self, subject, seq):
        if subject in self.latest or len(self.latest) < 256:  # bounded: past it, new subjects are not coalesced
            self.latest[subject] = seq

    def add_gap(self, reason, first, last, count):
        # One pending marker per reason: a new drop widens it.
        for g in self.gaps:
            if g[0] == reason:
                g[1] = min(g[1], first)
                g[2] = max(g[2], last)
                g[3] += count
                break
        else:
            self.gaps.append([reason, first, last, count])
        self.dirty = True

    def backlog(self):
        n = self.log.durable_seq - self.acked
        h = self.hole
        if h is not None:
            n -= max(0, h[1] - max(h[0] - 1, self.acked))
        return max(0, n)

    def oldest_age(self, now):
        for _, p in self.log.replay(self.acked + 1):
            t = _decode(p)[0]
            return max(0, now - t) if t >= _SANE_TIME and now >= _SANE_TIME else 0
        return 0

    def status(self, now):
        lg = self.log
        return {"name": self.name, "stream": self.stream, "state": self.state, "backlog": self.backlog(),
                "oldest_age": self.oldest_age(now), "inflight": self.n_infl, "first_seq": self.acked + 1,
                "last_seq": lg.last_seq, "published": self.published, "duplicates": self.duplicates,
                "dup_skipped": self.dup_skipped, "dropped": self.dropped, "expired": self.expired,
                "coalesced": self.coalesced, "rejected": self.rejected, "hub_rejected": self.hub_rejected,
                "gaps_pending": len(self.gaps), "lookups": self.lookups, "lookup_incomplete": self.lookup_incomplete,
                "stalls": self.stalls, "errors": self.errors + lg.errors, "bytes_written": lg.bytes_written,
                "size_bytes": lg.size_bytes}


class Forwarder:
    def __init__(self, leaf, name, data, queues, settings, log=None):
        self.leaf = leaf
        self.name = name
        self.log = log or (lambda *a: None)
        self.echo = True  # as an origin in leaf.route(): local subscribers see our messages
        self.rate = settings["rate"]
        self.byte_rate = settings["byte_rate"]
        self.jitter_ms = settings["jitter_ms"]
        self.max_inflight = settings["max_inflight"]
        self.ack_timeout = settings["ack_timeout_ms"]
        self.status_ms = settings["status_ms"]
        self.dedup_scan = settings["dedup_scan"]
        self.queues = [Queue(i, c, name, data, settings) for i, c in enumerate(queues)]
        self.gap_subject = ("$EDGE.%s.gap" % name).encode()
        self.status_subject = ("$EDGE.%s.forward" % name).encode()
        self.js = JsClient(leaf, self._on_ack_msg)  # PubAcks come to <inbox><queue index>.<seq>
        leaf.forwarder = self
        self._link = None
        self._ready_at = 0
        self._acks = []  # [queue, seq, reply]: LAN PubAcks waiting for their flush
        self._pub_seq = 0  # the record publish() stored, while it routes the message
        self._fev = None  # set (and dropped) after every flush: durable waiters
        self._tokens = 0.0
        self._btokens = 0.0
        self._t_refill = ticks_ms()
        self._t_status = ticks_ms()
        self.errors = 0

    # ---- taking records ------------------------------------------------------------------------

    def queue_for(self, subject):
        if subject[:1] == b"$" or subject[:7] == b"_INBOX.":
            return None  # API, system and reply subjects are never queued
        for q in self.queues:
            for p in q.patterns:
                if subjects.match(p, subject):
                    return q
        return None

    def publish(self, q, subject, reply, hdr, data, durable):
        # leaf.publish() to a forwarded subject: store, deliver locally, then either return an
        # awaitable (durable) or flush now (a plain call returns once the record is on flash).
        trace_only = False
        if hdr is not None and TRACE_DEST_KEY in hdr:
            from edge.leaf.msgtrace import only

            trace_only = only(hdr)
        seq = 0 if trace_only else self._store(q, subject, hdr, data, True)
        self._pub_seq = seq  # for take(), which route() calls with the message's trace
        n = self.leaf.route(subject, reply, hdr, data, self.leaf)
        if durable:
            return self._until_durable(q, seq)
        self._flush(q, True)
        self._check_lost(q, seq)
        return n

    def take(self, subject, reply, hdr, payload, origin, mt=None):
        # leaf.route()'s hook: True when a forward queue took the message (then it is not forwarded live).
        # mt: the message's MsgTrace when it is traced (rule 9).
        if origin is self:
            return False
        q = self.queue_for(subject)
        if q is None:
            return False
        if origin is self.leaf:  # publish() stored it already (or not: trace-only)
            if mt is not None:
                self.leaf.tracer.stored(q, self._pub_seq, mt)
            return True
        if mt is not None and mt.only:
            self.leaf.tracer.stored(q, 0, mt)
            return True
        try:
            seq = self._store(q, subject, hdr, payload, reply is not None)
        except LeafError as e:
            if mt is not None:
                self.leaf.tracer.stored(q, 0, mt, str(e))
            if reply:
                self._ack_error(reply, q, e)
            return True
        if mt is not None:
            self.leaf.tracer.stored(q, seq, mt, None if seq else "dropped: forward queue full (drop_newest)")
        if reply:
            if seq <= q.log.durable_seq:
                self._ack(reply, q, seq)
            else:
                self._acks.append([q, seq, reply])
        return True

    def _store(self, q, subject, hdr, data, confirm):
        # Append one record; -> its sequence, or 0 when drop_newest dropped it. confirm: the publisher
        # waits for a confirmation, so it is refused rather than silently dropped.
        if hdr:
            hdr = self._clean_headers(q, hdr)
        rec = _encode(now_s(), subject, hdr, data)
        log = q.log
        durable = log.durable_seq
        while True:
            try:
                seq = log.append(rec)
                break
            except FlashLogError as e:
                if e.lost_last:  # the flush before a new segment failed: this record is refused too
                    self._flush_failed(q, e)
                    self._flushed(q)
                    raise Refused(str(e))
                if not isinstance(e, FlashLogFull):
                    raise Refused(str(e), 400, 10054)  # larger than a segment holds
                if q.policy == "drop_oldest" and self._drop_oldest(q):
                    continue
                if q.policy == "drop_newest" and not confirm:
                    q.dropped += 1
                    q.add_gap(_DROP_NEWEST, log.last_seq, log.last_seq, 1)
                    return 0
                q.rejected += 1
                raise QueueFull("forward queue %s is full (%d bytes)" % (q.name, log.max_bytes))
        if q.coalesce:
            q.note_latest(subject, seq)
        if log.durable_seq != durable:
            self._flushed(q)  # append() flushed the old segment before starting a new one
        self._flush(q, False)
        return seq

    def _clean_headers(self, q, hdr):
        # Our Nats-Msg-Id replaces the publisher's; Nats-Expected-Stream is checked here, as the stream would.
        low = hdr.lower()
        if b"nats-msg-id" not in low and b"nats-expected-stream" not in low:
            return hdr
        try:
            pairs = proto.decode_headers(hdr)[2]
        except proto.ProtocolError:
            return hdr
        keep = []
        for k, v in pairs:
            lk = k.lower()
            if lk == "nats-msg-id":
                continue
            if lk == "nats-expected-stream" and v != q.stream:
                raise Refused("expected stream does not match", 400, 10060)
            keep.append((k, v))
        return proto.encode_headers(keep) if keep else None

    def _drop_oldest(self, q):
        # Free the oldest segment; its records not yet confirmed are dropped. True if flash was freed.
        log = q.log
        self._flush(q, True)
        before = log.size_bytes
        upto = log.first_segment_end()
        lo = max(log.first_seq, q.acked + 1)
        if upto < lo:
            return False
        r = q.reader
        if r is not None and r.seq <= upto:
            r.close()
            q.reader = None
        if q.held is not None and q.held[0] <= upto:
            q.held = None
        q.sent = [s for s in q.sent if -upto > s or s > upto]
        for s in list(q.sseq):
            if s <= upto:
                del q.sseq[s]
        q.n_infl = 0
        for s in q.sent:
            if s > 0:
                q.n_infl += 1
        q.acked = max(q.acked, upto)
        q.dropped += upto - lo + 1
        q.add_gap(_DROP_OLDEST, lo, upto, upto - lo + 1)
        self._mark(q)
        return log.size_bytes < before

    # ---- flushing and confirmations ------------------------------------------------------------

    def _flush(self, q, force):
        log = q.log
        if not log.pending:
            return
        try:
            if force:
                log.flush()
            elif not log.maybe_flush():
                return
        except FlashLogError as e:
            self._flush_failed(q, e)
        self._flushed(q)

    def _flush_failed(self, q, e):
        q.errors += 1
        q.lost.append((e.lost_first, e.lost_last))
        if len(q.lost) > 4:
            q.lost.pop(0)
        if e.lost_last >= e.lost_first > 0:
            q.add_gap(_FLASH_ERROR, e.lost_first, e.lost_last, e.lost_last - e.lost_first + 1)
        self.log("forward %s: %s" % (q.name, e))

    def _lost(self, q, seq):
        for lo, hi in q.lost:
            if lo <= seq <= hi:
                return True
        return False

    def _check_lost(self, q, seq):
        if self._lost(q, seq):
            raise Refused("flash write failed: record %d of queue %s lost" % (seq, q.name))

    def _flushed(self, q):
        tr = self.leaf.tracer
        if tr is not None and tr.awaiting:
            tr.on_flash(q, q.log.durable_seq, lambda seq: self._lost(q, seq))
        ev = self._fev
        if ev is not None:
            self._fev = None
            ev.set()
        if self._acks:
            keep = []
            for a in self._acks:
                if a[0] is not q:
                    keep.append(a)
                elif self._lost(q, a[1]):
                    self._ack_error(a[2], q, Refused("flash write failed"))
                elif a[1] <= q.log.durable_seq:
                    self._ack(a[2], q, a[1])
                else:
                    keep.append(a)
            self._acks = keep

    async def _until_durable(self, q, seq):
        while True:
            self._check_lost(q, seq)
            if q.log.durable_seq >= seq:
                return seq
            ev = self._fev
            if ev is None:
                ev = self._fev = asyncio.Event()
            await ev.wait()

    def _ack(self, reply, q, seq):
        self.leaf.route(reply, None, None, b'{"stream":"%s","seq":%d}' % (q.bstream, seq), self)

    def _ack_error(self, reply, q, e):
        code, err_code = (e.code, e.err_code) if isinstance(e, Refused) else (503, 10077)
        body = {"error": {"code": code, "err_code": err_code, "description": str(e)}, "stream": q.stream, "seq": 0}
        self.leaf.route(reply, None, None, json.dumps(body).encode(), self)

    # ---- the task ------------------------------------------------------------------------------

    async def run(self):
        while True:
            try:
                busy = await self._step()
            except Exception as e:  # the queues must outlive any one bad moment
                self.errors += 1
                self.log("forward error %r" % (e,))
                log_exc(e)
                busy = False
                await asyncio.sleep(1)
            await asyncio.sleep(0.002 if busy else 0.02)

    async def _step(self):
        now = ticks_ms()
        for q in self.queues:
            self._flush(q, False)
        up = self.leaf.uplink
        link = self.js.link()
        if link is not self._link:
            if self._link is not None:
                for q in self.queues:
                    self._reset(q, "offline")
            self._link = link
            if link is not None:
                self._ready_at = ticks_add(now, self._rand(self.jitter_ms + 1))
        busy = False
        if link is not None and ticks_diff(now, self._ready_at) >= 0:
            for q in self.queues:
                if not q.ready and ticks_diff(now, q.retry_at) >= 0:
                    await self._prepare(q)
                    if up.link is not link:
                        return True
            busy = self._pump(link)
            self._send_gaps(up)
            now = ticks_ms()
            for q in self.queues:
                if q.n_infl and ticks_diff(now, q.t_progress) > self.ack_timeout:
                    self._stall(q, "no PubAck in %d ms" % self.ack_timeout)
        for q in self.queues:
            if q.dirty and ticks_diff(now, q.t_mark) >= MARK_MS:
                self._mark(q)
        if self.status_ms and ticks_diff(now, self._t_status) >= self.status_ms:
            self._t_status = now
            st = json.dumps(self.status())
            self.log("fwdstatus", st)
            self.leaf.route(self.status_subject, None, None, st.encode(), self)
        return busy

    def _rand(self, n):
        return int.from_bytes(os.urandom(4), "big") % n if n > 0 else 0

    def _reset(self, q, state):
        # The link went (or the queue stalled): whatever was in flight is unconfirmed until a lookup.
        q.sent = []
        q.sseq = {}
        q.n_infl = 0
        q.held = None
        q.found = None
        if q.reader is not None:
            q.reader.close()
            q.reader = None
        q.ready = False
        q.state = state

    def _stall(self, q, why):
        q.stalls += 1
        self.log("forward %s: %s; retry in %d ms" % (q.name, why, q.backoff))
        self._reset(q, "retry: " + why)
        q.retry_at = ticks_add(ticks_ms(), q.backoff)
        q.backoff = min(q.backoff * 2, 30000)

    def _mark(self, q):
        try:
            q.log.reclaim(q.acked, q.meta())
            q.dirty = False
        except FlashLogError as e:
            q.errors += 1
            self.log("forward %s: %s" % (q.name, e))
        q.t_mark = ticks_ms()

    # ---- JetStream API over the uplink ---------------------------------------------------------

    def _on_ack_msg(self, qi, s, reply, hdr, payload):
        # A PubAck, to <inbox><queue index>.<seq>.
        try:
            q = self.queues[int(qi)]
            seq = int(s)
            d = json.loads(payload)
        except (ValueError, IndexError):
            return
        self._on_ack(q, seq, d)

    async def _prepare(self, q):
        # Before a queue sends on a new link: the stream must exist; records that may be in it already
        # are looked up (rule 3).
        q.state = "checking stream"
        try:
            info = await self.js.api(q.api + "STREAM.INFO." + q.stream, None, self.ack_timeout)
        except JsError as e:
            self._stall(q, "stream %s: %s" % (q.stream, e))
            return
        last = info.get("state", {}).get("last_seq", 0)
        if q.stream_seq > last:
            q.stream_seq = 0  # the stream was recreated: look from its start
        if q.sent_hi > q.acked:
            if not await self._lookup(q):
                self._stall(q, "lookup interrupted")
                return
        elif q.stream_seq == 0:
            q.stream_seq = last  # where a later lookup starts; on flash with the first send_limit
        q.ready = True
        q.backoff = 1000
        q.state = "up"

    async def _lookup(self, q):
        lo = q.acked + 1
        hi = q.sent_hi
        n = hi - lo + 1
        found = bytearray((n + 7) // 8)
        remaining = n
        filt = self._scan_filter(q, lo, hi)
        pos = q.stream_seq + 1
        budget = self.dedup_scan
        while remaining and budget:
            try:
                r = await self.js.api(q.api + "STREAM.MSG.GET." + q.stream, {"seq": pos, "next_by_subj": filt},
                                      self.ack_timeout)
            except JsError as e:
                if e.err is None:
                    return False
                break  # no message after pos: the rest was never stored
            m = r.get("message")
            if m is None:
                break
            budget -= 1
            pos = m["seq"] + 1
            k = _msgid_seq(m.get("hdrs"), q.msgid)
            if lo <= k <= hi:
                i = k - lo
                if not found[i >> 3] & (1 << (i & 7)):
                    found[i >> 3] |= 1 << (i & 7)
                    remaining -= 1
        # stream_seq stays where it was: it moves only with the acked prefix, or a crash before the found
        # records are settled would make the next lookup start after them
        q.found = found
        q.found_lo = lo
        q.found_hi = hi
        q.lookups += 1
        if remaining and not budget:
            q.lookup_incomplete += 1
        return True

    def _scan_filter(self, q, lo, hi):
        # The narrowest subject filter covering the unconfirmed records: their one subject, else the
        # queue's one pattern, else everything.
        subject = None
        for seq, p in q.log.replay(lo):
            if seq > hi:
                break
            s = _decode(p)[1]
            if subject is None:
                subject = s
            elif s != subject:
                subject = None
                break
        if subject is None:
            subject = q.patterns[0] if len(q.patterns) == 1 else b">"
        return subject.decode()

    def _in_stream(self, q, seq):
        f = q.found
        if f is None or not q.found_lo <= seq <= q.found_hi:
            return False
        i = seq - q.found_lo
        return f[i >> 3] & (1 << (i & 7))

    # ---- sending and PubAcks -------------------------------------------------------------------

    def _next(self, q):
        # The next record to consider, read into q.held; None when nothing is on flash to send.
        if q.held is None:
            r = q.reader
            if r is None:
                r = q.reader = q.log.reader(max(q.acked + 1, q.log.first_seq))
            q.held = r.next()
            if q.held is None and not q.sent and r.seq - 1 > q.acked:
                q.acked = r.seq - 1  # everything read is settled; the rest up to here was burned by write errors
                q.dirty = True
        return q.held

    def _pick(self):
        # Strict priority: while a queue has records to send, no lower-priority queue sends (even when
        # the higher one waits for PubAcks); equal priorities take turns.
        best = None
        level = None
        for q in self.queues:
            if not q.ready or self._next(q) is None:
                continue
            if level is not None and q.priority < level:
                continue
            if level is None or q.priority > level:
                level = q.priority
                best = None
            if q.n_infl >= self.max_inflight or len(q.sent) >= 2 * self.max_inflight:
                continue
            if best is None or ticks_diff(q.t_sent, best.t_sent) < 0:
                best = q
        return best

    def _refill(self):
        now = ticks_ms()
        dt = ticks_diff(now, self._t_refill)
        self._t_refill = now
        if self.rate:
            self._tokens = min(max(1.0, self.rate * 0.2), self._tokens + self.rate * dt / 1000)
        if self.byte_rate:
            # Bursts of 200 ms, as for messages: a frame bigger than that still goes (the bucket may go below zero,
            # and the next frames wait for the debt), so the cap needs no room for the largest payload.
            self._btokens = min(self.byte_rate * 0.2, self._btokens + self.byte_rate * dt / 1000)

    def _pump(self, link):
        self._refill()
        busy = False
        now = now_s()
        while True:
            if (self.rate and self._tokens < 1) or (self.byte_rate and self._btokens <= 0):
                return True
            q = self._pick()
            if q is None:
                return busy
            busy = True
            seq, p = q.held
            t, subject, hdr, data = _decode(p)
            skip = None
            if self._in_stream(q, seq):
                q.dup_skipped += 1
                skip = True
            elif q.coalesce and q.latest.get(subject, 0) > seq:
                q.coalesced += 1
                skip = True
            elif q.max_age and t >= _SANE_TIME and now >= _SANE_TIME and now - t > q.max_age:
                q.expired += 1
                q.add_gap(_MAX_AGE, seq, seq, 1)
                skip = True
            if skip:
                q.held = None
                self._settle(q, seq, 0, False)
                continue
            if seq > q.send_limit:
                old = q.send_limit
                q.send_limit = seq + SEND_AHEAD
                q.dirty = True
                self._mark(q)
                if q.dirty:  # the new limit is not on flash: send nothing past the old one
                    q.send_limit = old
                    self._stall(q, "send limit not on flash")
                    return True
            if hdr and TRACE_DEST_KEY in hdr:
                from edge.leaf.msgtrace import set_hop

                hdr = set_hop(hdr, "1")  # the edge's first hop (rule 9): the hub's event names it
            hdr = (hdr[:-2] if hdr else b"NATS/1.0\r\n") + b"Nats-Msg-Id: " + q.msgid + b"%d\r\n\r\n" % seq
            frame = proto.encode_lmsg(subject, data, self.js.inbox + b"%d.%d" % (q.index, seq), None, hdr)
            if not link.write(frame):
                return True  # the link's output is full: the held record goes next time
            q.held = None
            if not q.n_infl:
                q.t_progress = ticks_ms()
            q.sent.append(seq)
            q.n_infl += 1
            if seq > q.sent_hi:
                q.sent_hi = seq
            q.t_sent = ticks_ms()
            self._tokens -= 1
            self._btokens -= len(frame)

    def _on_ack(self, q, seq, d):
        if seq <= q.acked:
            return
        err = d.get("error")
        try:
            i = q.sent.index(seq)
        except ValueError:
            # an answer to a send of an earlier link: what it says stored is known stored
            if not err and q.found is not None and q.found_lo <= seq <= q.found_hi:
                j = seq - q.found_lo
                q.found[j >> 3] |= 1 << (j & 7)
            return
        tr = self.leaf.tracer
        if tr is not None and tr.awaiting:
            tr.on_ack(q, seq, d.get("stream", q.stream), d.get("seq", 0), err and err.get("description", "error"))
        if err:
            code = err.get("code", 0)
            if code == 503 or code >= 500 or err.get("err_code") in (10077, 10023, 10158):
                self._stall(q, "stream %s: %s" % (q.stream, err.get("description", "error")))
                return
            q.hub_rejected += 1
            q.add_gap(_HUB_REJECTED, seq, seq, 1)
            self.log("forward %s: record %d rejected: %s" % (q.name, seq, err.get("description", "")))
            self._settle(q, seq, 0, True, i)
        else:
            if d.get("duplicate"):
                q.duplicates += 1
            else:
                q.published += 1
            self._settle(q, seq, d.get("seq", 0), True, i)
        q.t_progress = ticks_ms()

    def _settle(self, q, seq, stream_seq, in_flight, i=-1):
        # A record is done (acked, rejected or skipped): the acked prefix moves as far as it can.
        if in_flight:
            q.sent[i] = -seq
            q.n_infl -= 1
        elif q.sent:
            q.sent.append(-seq)
        else:
            q.acked = seq
            self._acked(q, seq)
            return
        if stream_seq:
            q.sseq[seq] = stream_seq
        while q.sent and q.sent[0] < 0:
            s = -q.sent.pop(0)
            q.acked = s
            ss = q.sseq.pop(s, 0)
            if ss > q.stream_seq:
                q.stream_seq = ss
            self._acked(q, s)

    def _acked(self, q, seq):
        q.dirty = True
        if q.coalesce:
            t = q.latest
            for k in list(t):
                if t[k] <= seq:
                    del t[k]
        segs = q.log.segs
        if len(segs) > 1 and seq >= segs[1][0] - 1:
            self._mark(q)  # a whole segment is done: free it now

    def _send_gaps(self, up):
        # Markers go once the hub has interest in them (uplink.forward() says it sent one).
        for q in self.queues:
            for g in list(q.gaps):
                body = {"edge": self.name, "queue": q.name, "stream": q.stream, "reason": REASONS[g[0]],
                        "first": g[1], "last": g[2], "count": g[3], "time": now_s()}
                if not up.forward(self.gap_subject, None, None, json.dumps(body).encode(), None):
                    return
                q.gaps.remove(g)
                q.dirty = True

    # ---- status and shutdown -------------------------------------------------------------------

    def status(self):
        now = now_s()
        up = self.leaf.uplink
        return {"edge": self.name, "time": now, "up": bool(up is not None and up.up),
                "hub_url": up.url() if up is not None else None, "failovers": up.failovers if up is not None else 0,
                "queues": [q.status(now) for q in self.queues]}

    def close(self):
        for q in self.queues:
            try:
                q.log.flush()
            except FlashLogError:
                pass
            if q.dirty:
                self._mark(q)
            if q.reader is not None:
                q.reader.close()
            q.log.close()
