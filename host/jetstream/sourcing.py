"""A stream's mirror and sources (nats-server `stream.go`: setupMirrorConsumer, setupSourceConsumer,
processInboundMirrorMsg, processInboundSourceMsg, retryDisconnectedSyncConsumers, startingSequenceForSources).

Each mirror or source is a SourceLink: it asks the origin stream's JetStream, through the API prefix (`$JS.API`, or
the `external.api` of a stream in another domain or account, reached over a leafnode), for an ephemeral push
consumer with flow control and heartbeats that delivers to an inbox of ours (`$JS.M.<id>` / `$JS.S.<id>`, or under
`external.deliver`). It is the same request nats-server sends, so the origin may be nats-server or the hub.

Every delivery carries its origin sequence and the consumer's delivery sequence in its ack reply. A mirror stores
each message under the origin's sequence and timestamp (gaps from expired or deleted origin messages are skipped); a
source stores it as a new message with a `Nats-Stream-Source: <name>[:<api hash>] <seq> <filters> <destinations>
<subject>` header, which is also how a source's position survives a restart. A gap in the delivery sequence (a
message lost while the link was down), a heartbeat naming another last delivery, or ten seconds without hearing from
the origin makes the link ask for a new consumer starting after the last origin sequence it stored: nothing is lost
and nothing is stored twice. Requests are throttled and backed off as nats-server does.

Subject transforms (`subject_transforms`) rewrite a message's subject before it is stored, the first whose filter
matches (host/subject_transform.py). Not done: durable sourcing consumers (`consumer`, API level 4; check_config
refuses them) and serving direct gets for a mirror (`mirror_direct`).
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from host.accounts import nuid
from host.gotime import NS, parse_time, time_text
from host.headers import hdr_append, hdr_get, hdr_remove
from host.jetstream.errors import ApiError, js_error
from host.jetstream.stream_config import source_iname, source_transforms

if TYPE_CHECKING:
    from host.accounts import Subscription
    from host.jetstream.stream import Stream

log = logging.getLogger("natsedge.hub")

SOURCE_HEARTBEAT = 1 * NS  # sourceHealthHB: the origin consumer's idle heartbeat
HEALTH_INTERVAL = 10.0  # sourceHealthCheckInterval: a link not heard from for this long is set up again
RETRY_THRESHOLD = 2.0  # sourceConsumerRetryThreshold: at most one consumer request per link in this time
RETRY_BACKOFF = 5.0  # retryBackOff: added per failure (twice), up to RETRY_MAX
RETRY_MAX = 120.0  # retryMaximum
CREATE_WAIT = 30.0  # srcConsumerWaitTime: how long a consumer create may go unanswered
ACK_WAIT = 22 * 3600 * NS  # the source consumer's ack_wait (it acks nothing)

H_STREAM_SOURCE = b"\r\nNats-Stream-Source:"
H_LAST_CONSUMER = b"\r\nNats-Last-Consumer:"
H_STALLED = b"\r\nNats-Consumer-Stalled:"
_STRIPPED_PREFIXES = (b"Nats-Expected-", b"Nats-Batch-")  # not checked again when a sourced message is stored
CONTROL_STATUS = b"NATS/1.0 100"  # idle heartbeats and flow-control requests
DRAIN_BATCH = 64  # deliveries taken per turn of the event loop (the rest wait their turn, bounded by flow control)


def _ack_info(reply: bytes) -> tuple[str, int, int, int, int, int] | None:
    """nats-server ackReplyInfo of a delivery's ack reply (v1 `$JS.ACK.<stream>.<consumer>.<dc>.<sseq>.<dseq>.<ts>.
    <pending>`, or v2 with domain and account hash first) -> (consumer, delivered count, stream seq, delivery seq,
    timestamp, pending); None for anything else."""
    tokens = reply.split(b".")
    if len(tokens) == 9:
        off = 3
    elif len(tokens) >= 11:
        off = 5
    else:
        return None
    if tokens[0] != b"$JS" or tokens[1] != b"ACK":
        return None
    try:
        nums = [int(t) for t in tokens[off + 1:off + 6]]
    except ValueError:
        return None
    return tokens[off].decode("utf-8", "replace"), nums[0], nums[1], nums[2], nums[3], nums[4]


def strip_source_headers(hdr: bytes) -> bytes | None:
    """A sourced message's headers before ours is added: a Nats-Stream-Source of an earlier hop and the request
    headers nats-server does not check again (removeHeaderIfPresent / removeHeaderIfPrefixPresent)."""
    out: bytes | None = hdr_remove(hdr, H_STREAM_SOURCE)
    for prefix in _STRIPPED_PREFIXES:
        while out is not None:
            i = out.find(b"\r\n" + prefix)
            if i < 0:
                break
            j = out.find(b"\r\n", i + 2)
            out = out[:i] + out[j:] if j >= 0 else out[:i] + b"\r\n"
            if len(out) <= len(b"NATS/1.0\r\n") + 2:
                out = None
    return out


class SourceLink:
    """One mirror or source of a stream (nats-server sourceInfo): the origin consumer it reads and its position."""

    def __init__(self, stream: Stream, cfg: dict[str, Any], mirror: bool) -> None:
        self.stream = stream
        self.cfg = cfg
        self.mirror = mirror
        self.name: str = cfg["name"]
        self.iname = source_iname(cfg)
        self.transforms = source_transforms(cfg)  # (filter, transform or None), the first match applies
        ext = cfg.get("external")
        self.api = (ext.get("api") or "$JS.API") if ext else "$JS.API"
        self.deliver_prefix = ext.get("deliver", "") if ext else ""
        self.sseq = 0  # last origin sequence stored
        self.dseq = 0  # last delivery sequence of the current consumer taken
        self.lag = 0
        self.last = 0  # time.monotonic_ns() of the last delivery or heartbeat, 0: never heard from
        self.err: ApiError | None = None
        self.cname = ""  # the current origin consumer
        self.fails = 0
        self.lreq = 0.0  # time.monotonic() of the last consumer request
        self.setup_in_progress = False
        self.recovered = False  # the position came from the stream (a restart), not from the config's start
        self._deliver_sub: Subscription | None = None
        self._reply_sub: Subscription | None = None
        self._timer: Any = None  # the scheduled setup, or the wait for a create answer
        self._health: Any = None
        # Deliveries not yet taken, in order (nats-server's inbound queue of a source): a local origin delivers
        # synchronously and by the flow-control window (up to 1 MB) at once; taking them a batch per turn of the
        # event loop keeps the server answering meanwhile. Bounded: the origin stops at the window until our
        # flow-control reply, which is sent when its request is taken from here.
        self._inbox: deque[tuple[bytes, bytes | None, bytes | None, bytes]] = deque()
        self._draining: Any = None
        self.closed = False

    # -- lifecycle

    def start(self, seq: int) -> None:
        """Begin reading the origin from stream sequence `seq` (1: from the configured start)."""
        self._health = self.stream.jsa.call_later(HEALTH_INTERVAL, self._check_health)
        self._schedule(seq)

    def stop(self) -> None:
        self.closed = True
        self._cancel()
        for h in (self._timer, self._health, self._draining):
            if h is not None:
                h.cancel()
        self._timer = self._health = self._draining = None

    def _cancel(self) -> None:
        """Stop listening to the current consumer (the origin deletes it when it notices, inactive_threshold)."""
        acc = self.stream.jsa.account
        for sub in (self._deliver_sub, self._reply_sub):
            if sub is not None:
                sub.closed = True
                acc.remove_sub(sub)
        self._deliver_sub = self._reply_sub = None
        self.cname = ""
        self.setup_in_progress = False
        self._inbox.clear()

    def _schedule(self, seq: int) -> None:
        """nats-server setupSourceConsumer: a consumer request, no sooner than RETRY_THRESHOLD after the last one,
        backed off by the failures so far, with 100-200 ms of jitter."""
        if self.closed:
            return
        if self._timer is not None:
            self._timer.cancel()
        delay = 0.0
        if self.lreq:
            delay = max(0.0, RETRY_THRESHOLD - (time.monotonic() - self.lreq))
            if self.fails:
                delay += min(RETRY_BACKOFF * self.fails * 2, RETRY_MAX)
        delay += 0.1 + random.random() * 0.1
        self._timer = self.stream.jsa.call_later(delay, lambda: self._setup(seq))

    def _retry(self) -> None:
        """Start over after the last stored origin message."""
        self._cancel()
        self._schedule(self._next_seq())

    def _next_seq(self) -> int:
        return self.stream.store.last_seq + 1 if self.mirror else self.sseq + 1

    def _check_health(self) -> None:
        """nats-server retryDisconnectedSyncConsumers: a link not heard from in HEALTH_INTERVAL starts over."""
        self._health = None
        if self.closed:
            return
        stale = time.monotonic_ns() - self.last > HEALTH_INTERVAL * NS
        if not self.setup_in_progress and (self._deliver_sub is None or stale):
            self.fails = 0
            self._retry()
        self._health = self.stream.jsa.call_later(HEALTH_INTERVAL, self._check_health)

    # -- the consumer request

    def _request(self, seq: int) -> dict[str, Any]:
        """The origin consumer's config (nats-server's fields and values, without `sourcing`: the hub has no API
        level 4 durable sourcing, so it asks as nats-server does of an origin that lacks it)."""
        stream = self.stream
        cfg = self.cfg
        meta = {"_nats.mirror.stream" if self.mirror else "_nats.src.stream": stream.name,
                "_nats.mirror.acc" if self.mirror else "_nats.src.acc": stream.jsa.account.name}
        if stream.jsa.js.domain:
            meta["_nats.mirror.domain" if self.mirror else "_nats.src.domain"] = stream.jsa.js.domain
        c: dict[str, Any] = {"name": self.cname, "deliver_subject": self.deliver_subject}
        store = stream.store
        start_time = parse_time(cfg["opt_start_time"]) if cfg.get("opt_start_time") else None
        if self.mirror:
            if store.last_seq == 0 and cfg.get("opt_start_seq"):
                c.update(deliver_policy="by_start_sequence", opt_start_seq=cfg["opt_start_seq"])
            elif store.last_seq == 0 and start_time is not None:
                c.update(deliver_policy="by_start_time", opt_start_time=cfg["opt_start_time"])
            elif store.last_seq == 0:
                c.update(deliver_policy="all")
            else:
                c.update(deliver_policy="by_start_sequence", opt_start_seq=store.last_seq + 1)
        elif seq <= 1:
            last_ts = store.state().last_ts if store.last_seq else 0
            if cfg.get("opt_start_seq"):
                c.update(deliver_policy="by_start_sequence", opt_start_seq=cfg["opt_start_seq"])
            elif start_time is not None:
                # never from before what the stream already holds
                when = time_text(last_ts) if last_ts and start_time < last_ts else cfg["opt_start_time"]
                c.update(deliver_policy="by_start_time", opt_start_time=when)
            elif store.state().first_seq > 1 and last_ts and not self.recovered:
                c.update(deliver_policy="by_start_time", opt_start_time=time_text(last_ts))
            else:
                c.update(deliver_policy="all")
        else:
            c.update(deliver_policy="by_start_sequence", opt_start_seq=seq)
        c.update(ack_policy="none", ack_wait=ACK_WAIT, max_deliver=1, idle_heartbeat=SOURCE_HEARTBEAT,
                 flow_control=True, direct=True, inactive_threshold=int(HEALTH_INTERVAL * NS), metadata=meta)
        if cfg.get("filter_subject"):
            c["filter_subject"] = cfg["filter_subject"]
        elif self.mirror and len(self.transforms) == 1:
            c["filter_subject"] = self.transforms[0][0].subject  # (nats-server: the extended create subject)
        elif self.transforms:
            c["filter_subjects"] = [f.subject for f, _ in self.transforms]
        return {"stream_name": self.name, "config": c}

    def _setup(self, seq: int) -> None:
        """nats-server trySetupSourceConsumer / setupMirrorConsumer: a new consumer on the origin."""
        self._timer = None
        if self.closed:
            return
        self._cancel()
        stream = self.stream
        acc = stream.jsa.account
        self.lreq = time.monotonic()
        self.dseq = 0
        if self.mirror:
            self.sseq = stream.store.last_seq
        kind = "M" if self.mirror else "S"
        self.deliver_subject = (f"{self.deliver_prefix}.{kind}.{nuid(10)}" if self.deliver_prefix
                                else f"$JS.{kind}.{nuid(10)}")
        self.cname = f"JS_{'MIRROR' if self.mirror else 'SRC'}_{nuid(8)}"
        req = self._request(seq)
        filt = req["config"].get("filter_subject")
        subject = f"{self.api}.CONSUMER.CREATE.{self.name}.{self.cname}" + (f".{filt}" if filt else "")
        reply = f"$JSC.R.{nuid(10)}"
        self.setup_in_progress = True
        self.err = None
        self._deliver_sub = acc.add_internal(self.deliver_subject.encode(), self._on_msg, consumer_deliveries=True)
        self._reply_sub = acc.add_internal(reply.encode(), self._on_create_reply)
        self._timer = stream.jsa.call_later(CREATE_WAIT, self._create_timed_out)
        payload = json.dumps(req, separators=(",", ":")).encode()
        if stream.jsa.publish(subject.encode(), reply.encode(), None, payload) == 0 and self.setup_in_progress:
            # nobody serves that API here (the leafnode to the origin's domain is down): try again later, with no
            # error to report (nats-server's request just times out)
            self._failed(None)

    def _create_timed_out(self) -> None:
        self._timer = None
        if self.setup_in_progress and not self.closed:
            self._failed(None)

    def _failed(self, err: ApiError | None) -> None:
        if err is not None:
            self.err = err
            log.warning("JetStream error response for create %s consumer: %s",
                        "mirror" if self.mirror else "source", err.description)
        self.fails += 1
        seq = self._next_seq()
        self._cancel()
        self._schedule(seq)

    def _on_create_reply(self, src: Any, subject: bytes, reply: bytes | None, hdr: bytes | None,
                         payload: bytes) -> None:
        if not self.setup_in_progress:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if hdr is not None and hdr.startswith(b"NATS/1.0 503"):
            self._failed(None)  # no responders: the origin's JetStream is not reachable (yet)
            return
        try:
            body = json.loads(payload)
        except ValueError:
            self._failed(js_error("JSInvalidJSONErr", err="bad consumer create response"))
            return
        e = body.get("error") if isinstance(body, dict) else None
        if e is not None or not isinstance(body, dict) or "config" not in body:
            if isinstance(e, dict):
                self._failed(ApiError(int(e.get("code", 500)), int(e.get("err_code", 0)),
                                      str(e.get("description", ""))))
            else:
                self._failed(None)
            return
        self.setup_in_progress = False
        self.fails = 0
        self.last = time.monotonic_ns()
        acc = self.stream.jsa.account
        if self._reply_sub is not None:
            self._reply_sub.closed = True
            acc.remove_sub(self._reply_sub)
            self._reply_sub = None

    # -- deliveries

    def _on_msg(self, src: Any, subject: bytes, reply: bytes | None, hdr: bytes | None, payload: bytes) -> None:
        if self.closed:
            return
        self.last = time.monotonic_ns()
        self._inbox.append((subject, reply, hdr, payload))
        if self._draining is None:
            self._draining = self.stream.jsa.call_later(0, self._drain)

    def _drain(self) -> None:
        self._draining = None
        self.stream.jsa.server.batched(self._drain_turn)  # republished copies go out once per turn
        if self._inbox and not self.closed:
            self._draining = self.stream.jsa.call_later(0, self._drain)

    def _drain_turn(self) -> None:
        inbox = self._inbox
        for _ in range(DRAIN_BATCH):
            if self.closed or not inbox:
                return
            self._take(*inbox.popleft())

    def _take(self, subject: bytes, reply: bytes | None, hdr: bytes | None, payload: bytes) -> None:
        """One delivery of the origin consumer (nats-server processInboundSourceMsg / processInboundMirrorMsg)."""
        if hdr is not None and hdr.startswith(CONTROL_STATUS) and not payload:
            self._on_control(reply, hdr)
            return
        info = _ack_info(reply) if reply else None
        if info is None:
            return
        cname, dc, sseq, dseq, ts, pending = info
        if cname != self.cname or dc > 1:
            return
        if sseq <= self.sseq:
            if dseq == self.dseq + 1:
                self.dseq += 1
            return
        if self.mirror:
            if sseq != self.sseq + 1 and dseq != self.dseq + 1:
                self._retry()  # a delivery went missing
                return
        elif dseq != self.dseq + 1:
            if dseq > self.dseq:
                self._retry()  # a delivery went missing
            return
        self.lag = pending - 1 if pending else 0
        if self._store(subject, hdr, payload, sseq, ts):
            self.dseq, self.sseq = dseq, sseq
        else:
            self._retry()

    def _on_control(self, reply: bytes | None, hdr: bytes) -> None:
        """A flow-control request (it has a reply) or an idle heartbeat (nats-server handleFlowControl)."""
        jsa = self.stream.jsa
        if reply:
            jsa.publish(reply, None, b"NATS/1.0\r\nNats-Last-Consumer: %d\r\nNats-Last-Stream: %d\r\n\r\n"
                        % (self.dseq, self.sseq), b"")
            return
        last = hdr_get(hdr, H_LAST_CONSUMER)
        if last is not None and last.isdigit() and int(last) > 0 and int(last) != self.dseq:
            self._retry()
            return
        stalled = hdr_get(hdr, H_STALLED)
        if stalled:
            jsa.publish(stalled, None, None, b"")

    def _store(self, subject: bytes, hdr: bytes | None, payload: bytes, sseq: int, ts: int) -> bool:
        stream = self.stream
        subj = subject.decode("utf-8", "replace")
        for filt, transform in self.transforms:
            if filt.match(subj):
                if transform is not None:
                    subj = transform.transform(subject.split(b".")).decode("utf-8", "replace")
                break
        if self.mirror:
            return stream.store_mirrored(subj, hdr, payload, sseq, ts)
        if hdr is not None:
            hdr = strip_source_headers(hdr)
        parts = self.iname.split(" ")
        line = b"Nats-Stream-Source: %s %d %s %s %s\r\n" % (parts[0].encode(), sseq, parts[1].encode(),
                                                            parts[2].encode(), subject)
        return stream.store_sourced(subj, hdr_append(hdr, line), payload)

    # -- reporting

    def info(self) -> dict[str, Any]:
        """nats-server StreamSourceInfo."""
        d: dict[str, Any] = {"name": self.name}
        ext = self.cfg.get("external")
        if ext is not None:
            d["external"] = {"api": ext.get("api", ""), "deliver": ext.get("deliver", "")}
        d["lag"] = self.lag
        if not self.mirror and self.sseq:
            d["seq"] = self.sseq  # nats-server 2.15.1 reports a source's last origin sequence (not a mirror's)
        d["active"] = time.monotonic_ns() - self.last if self.last else -1
        if self.err is not None:
            d["error"] = self.err.body()
        if self.cfg.get("filter_subject"):
            d["filter_subject"] = self.cfg["filter_subject"]
        if self.cfg.get("subject_transforms"):
            d["subject_transforms"] = [{"src": tr.get("src", ""), "dest": tr.get("dest", "")}
                                       for tr in self.cfg["subject_transforms"]]
        return d


def source_positions(stream: Stream, inames: set[str]) -> dict[str, int]:
    """nats-server startingSequenceForSources: the last origin sequence stored for each source, read from the
    Nats-Stream-Source headers walking back from the stream's last message until every source is found."""
    found: dict[str, int] = {}
    store = stream.store
    seq = store.last_seq
    first = store.state().first_seq
    while seq >= max(first, 1) and len(found) < len(inames):
        try:
            sm = store.load_msg(seq)
        except Exception:  # noqa: BLE001 - a deleted or unreadable message: keep walking back
            seq -= 1
            continue
        seq -= 1
        if not sm.hdr:
            continue
        value = hdr_get(sm.hdr, H_STREAM_SOURCE)
        if value is None:
            continue
        fields = value.decode("utf-8", "replace").split(" ")
        if len(fields) < 4 or not fields[1].isdigit():
            continue
        iname = f"{fields[0]} {fields[2]} {fields[3]}"
        if iname in inames and iname not in found:
            found[iname] = int(fields[1])
    return found
