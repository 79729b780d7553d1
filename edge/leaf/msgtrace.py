# edge/leaf/msgtrace.py — the edge broker as a server on a traced path (NATS 2.11 message tracing, ADR-41).
#
# Loaded on the first message whose headers carry Nats-Trace-Dest (broker.py route()'s one header check), never
# before: an edge that sees no traced message pays nothing for this file. Names and numbers shared with the hub
# are in edge/trace.py; docs/tracing.md ("Edge") says what the edge's events look like.
# Rules this file keeps:
# 1. One event per traced message in nats-server's format (msgtrace.go MsgTraceEvent): the `server` block (the
#    edge's name, also as id and cluster, as a standalone nats-server leaf names itself), `request` (every header,
#    each value a list, case kept; msgsize = header + payload bytes), `hops` (uplink copies, left out when 0) and
#    the events: `in` first, then one `eg` per local subscriber and per uplink copy, and `js` for a forward queue.
#    Only the six event types nats-server's MsgTraceEvents.UnmarshalJSON knows are used; it refuses others.
# 2. Who is who: the in-process API (the app, and the edge's own parts that publish through it) is kind CLIENT,
#    cid 0, name "app"; a LAN client is kind CLIENT with its cid and CONNECT name; the hub link is kind LEAF with
#    the uplink's cid and the hub's server_name. The account is "$G": the edge has one.
# 3. As nats-server initMsgTrace: a Nats-Trace-Dest of "trace disabled", or a message with
#    Nats-Trace-Origin-Account, is not traced; a dest that is not a valid literal subject is not traced either, and
#    then a trace-only message is not processed at all. A dest the publisher may not publish to (_GR_., $NRG., a
#    LAN user's publish permissions) is refused: the message is not processed, a LAN client gets nats-server's
#    -ERR 'Permissions Violation for Publish to "<dest>"', the app a LeafError.
#    Trace-only (Nats-Trace-Only true/1/on): local subscribers get nothing but are listed; the hub still gets the
#    message when its INFO says proto >= 3 (nats-server server.go MsgTraceProto), else the `eg` carries
#    trace.NO_SUPPORT and nothing is sent. traceparent alone does not trace here (it needs an account's
#    msg_trace, which the edge has not).
# 4. Events go to local subscribers of the destination at once and are written straight to the hub link (no
#    interest check: the hub drops what nobody there wants, and a trace inbox's interest may not have reached
#    the edge yet). While the link is down or its output is full, they wait in a buffer of at most
#    max_trace_events events and max_trace_bytes bytes (limits in the config); when it is full the OLDEST
#    event is dropped and counted in `dropped` (a user re-running a trace wants the newest). Buffered events
#    go out when the link is up again, or at the uplink's next tick when its output was full (uplink.py calls
#    flush()).
# 5. Store-and-forward (forward.py): a traced record gets one event when it is on flash (`js` with stream
#    "forward:<queue>") and one when the hub acknowledged it (`eg` LEAF hop, `js` with the hub's stream and an
#    extra "seq"; Go's decoder ignores the extra field). At most MAX_AWAITING such traces wait per edge; past
#    that the oldest waiting one is dropped and counted.

import json
import time

from edge import proto, subjects, trace
from edge.compat import const
from edge.leaf.broker import VERSION, LeafError

APP_NAME = "app"  # how the in-process API shows in events (rule 2)
ACCOUNT = "$G"
FORWARD_PREFIX = "forward:"  # the `js` stream name of a forward queue's flash store (rule 5)
MAX_AWAITING = const(4)


def only(hdr):
    # True when a header block asks for trace-only (forward.py asks before it stores a record).
    for k, v in _pairs(hdr):
        if k == trace.ONLY:
            return trace.is_only(v)
    return False


def _pairs(hdr):
    try:
        return proto.decode_headers(hdr)[2]
    except proto.ProtocolError:
        return ()


def now():
    # RFC 3339 in UTC with microseconds, as Go's time.Time decodes it.
    ns = time.time_ns()
    t = time.gmtime(ns // 1000000000)
    return "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ" % (t[0], t[1], t[2], t[3], t[4], t[5], ns // 1000 % 1000000)


def set_hop(hdr, hop):
    # The header block with Nats-Trace-Hop set to hop (replaced when present), as nats-server setHeader.
    key = b"\r\n" + trace.HOP.encode() + b":"
    i = hdr.find(key)
    if i >= 0:
        j = hdr.find(b"\r\n", i + 2)
        return hdr[:i] + key + b" " + hop.encode() + hdr[j:]
    return hdr[:-2] + trace.HOP.encode() + b": " + hop.encode() + b"\r\n\r\n"


def _who(owner):
    # (cid, name) of a subscription's owner or of a message's origin (rule 2).
    cid = getattr(owner, "cid", None)
    if cid is None:
        return 0, APP_NAME
    return cid, getattr(owner, "name", None)


class MsgTrace:
    # One traced message's event, built while route() handles it.
    def __init__(self, tracer, dest, header, size, tonly, hop, ingress):
        self.tracer = tracer
        self.dest = dest
        self.header = header
        self.size = size
        self.only = tonly
        self.hop = hop  # Nats-Trace-Hop of the incoming copy ("" at the origin)
        self.hops = 0
        self.events = [ingress]
        self.held = False  # a forward queue sends it once the record is on flash

    def _add(self, ev):
        ev["ts"] = now()
        self.events.append(ev)
        return ev

    def egress(self, sub, err=None):
        cid, name = _who(sub.owner)
        ev = {"type": trace.EGRESS, "kind": trace.CLIENT, "cid": cid}
        if name:
            ev["name"] = name
        ev["sub"] = sub.subject.decode()
        if sub.queue is not None:
            ev["queue"] = sub.queue.decode()
        if err:
            ev["error"] = err
        self._add(ev)

    def no_echo(self, sub):
        self.egress(sub, trace.NO_ECHO)

    def to_hub(self, up, hdr):
        # An uplink copy: the `eg` entry, and the header block to send (None: trace-only, the hub cannot trace).
        self.hops += 1
        hop = trace.next_hop(self.hop, self.hops)
        supported = up.hub_proto >= trace.PROTO
        ev = self._add({"type": trace.EGRESS, "kind": trace.LEAF, "cid": up.cid, "name": up.hub_name, "hop": hop})
        if not supported:
            ev["error"] = trace.NO_SUPPORT if self.only else trace.DELIVERED_NO_SUPPORT
        if self.only and not supported:
            return None
        return set_hop(hdr, hop)

    def body(self, events=None, hops=None):
        t = self.tracer
        t.seq += 1
        ev = {"server": {"name": t.leaf.name, "host": t.host, "id": t.leaf.name, "cluster": t.leaf.name,
                         "ver": VERSION, "jetstream": False, "flags": 0, "seq": t.seq, "time": now()},
              "request": {"header": self.header, "msgsize": self.size}}
        hops = self.hops if hops is None else hops
        if hops:
            ev["hops"] = hops
        ev["events"] = self.events if events is None else events
        return json.dumps(ev).encode()

    def send(self):
        self.tracer.publish(self.dest, self.body())


class Tracer:
    # The leaf's tracing: starts a MsgTrace per traced message, sends events, buffers them while the link is down.
    def __init__(self, leaf, max_events=4, max_bytes=2048, host=""):
        self.leaf = leaf
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.host = host
        self.echo = True  # as an origin in leaf.route(): an app subscribed to a destination gets the events
        self.pending = []  # (dest, body), oldest first
        self.pending_bytes = 0
        self.awaiting = []  # [queue, record seq, MsgTrace]: forward records traced until the hub acks them
        self.seq = 0
        self.sent = 0
        self.dropped = 0

    def begin(self, subject, hdr, payload, origin):
        # -> a MsgTrace; None: not traced, deliver as usual; False: not traced and not processed (rule 3).
        header = {}
        for k, v in _pairs(hdr):
            lst = header.get(k)
            if lst is None:
                header[k] = [v]
            else:
                lst.append(v)
        dest = header.get(trace.DEST)
        tonly = trace.ONLY in header and trace.is_only(header[trace.ONLY][0])
        if dest is None or dest[0] == trace.DISABLED or trace.ORIGIN_ACCOUNT in header:
            return False if tonly and dest is None else None
        dest = dest[0]
        bdest = dest.encode()
        if not subjects.valid(bdest, False):
            return False if tonly else None
        denied = bdest[:5] == b"_GR_." or bdest[:5] == b"$NRG."
        perms = getattr(origin, "perms", None)  # a LAN user's permissions (listener.py, edge/auth/lanauth.py)
        if perms is not None and not denied:
            denied = origin.lst.auth.pub_denied(perms, bdest) is not None
        if denied:
            # as nats-server allowedToPublishOnMsgTraceDest: the publisher is told, the message is not processed
            if origin is self.leaf:
                raise LeafError("trace destination %s: publish not allowed" % dest)
            if origin is not self.leaf.uplink:
                origin.write(b"-ERR 'Permissions Violation for Publish to \"" + bdest + b"\"'\r\n")
            return False
        up = self.leaf.uplink
        hop = ""
        if origin is up:
            ingress = {"type": trace.INGRESS, "kind": trace.LEAF, "cid": up.cid, "name": up.hub_name}
            hop = header.get(trace.HOP, ("",))[0]
        else:
            cid, name = _who(origin)
            ingress = {"type": trace.INGRESS, "kind": trace.CLIENT, "cid": cid}
            if name:
                ingress["name"] = name
        ingress["acc"] = ACCOUNT
        ingress["subj"] = subject.decode()
        ingress["ts"] = now()
        return MsgTrace(self, dest, header, len(hdr) + len(payload), tonly, hop, ingress)

    # ---- sending -------------------------------------------------------------------------------

    def publish(self, dest, body):
        bdest = dest.encode()
        self.leaf.route(bdest, None, None, body, self, None, True)
        self.pending.append((bdest, body))
        self.pending_bytes += len(body)
        self.flush()
        # what the link did not take waits, within the bounds (rule 4)
        while self.pending and (len(self.pending) > self.max_events or self.pending_bytes > self.max_bytes):
            self.pending_bytes -= len(self.pending.pop(0)[1])
            self.dropped += 1

    def flush(self):
        # Buffered events to the hub link, oldest first, while it is up and takes them.
        up = self.leaf.uplink
        link = up.link if up is not None and up.up else None
        while self.pending and link is not None:
            dest, body = self.pending[0]
            if not link.write(proto.encode_lmsg(dest, body)):
                return
            self.pending.pop(0)
            self.pending_bytes -= len(body)
            self.sent += 1

    # ---- store-and-forward (rule 5) --------------------------------------------------------------

    def stored(self, q, seq, mt, err=None):
        # A forward queue took a traced message: seq 0 = not stored (trace-only, or refused: err says why). The
        # event waits for the flush unless the record is on flash already.
        subject = mt.events[0]["subj"]
        js = mt._add({"type": trace.JETSTREAM_EVENT, "stream": FORWARD_PREFIX + q.name, "subject": subject})
        if err:
            js["error"] = err
        if not seq or err:
            return
        mt.held = seq > q.log.durable_seq
        if len(self.awaiting) >= MAX_AWAITING:
            old = self.awaiting.pop(0)[2]
            if old.held:
                old.held = False
                old.send()  # its flash event goes now; its ack event is dropped
            self.dropped += 1
        self.awaiting.append([q, seq, mt])

    def on_flash(self, q, durable_seq, lost):
        # After a flush of q: the store events of records now on flash (or lost, lost(seq) True) go out.
        for a in self.awaiting:
            mt = a[2]
            if a[0] is q and mt.held and a[1] <= durable_seq:
                mt.held = False
                if lost(a[1]):
                    mt.events[-1]["error"] = "flash write failed"  # the queue's `js` entry: stored() added it last
                    a[0] = None  # no ack will come
                mt.send()
        self.awaiting = [a for a in self.awaiting if a[0] is not None]

    def on_ack(self, q, seq, stream, stream_seq, err):
        # The hub's PubAck of a traced record: the second event (the copy sent to the hub, and where it is stored).
        for a in self.awaiting:
            if a[0] is q and a[1] == seq and not a[2].held:
                self.awaiting.remove(a)
                mt = a[2]
                up = self.leaf.uplink
                hop = trace.next_hop(mt.hop, 1)
                ev = [mt.events[0], {"type": trace.EGRESS, "ts": now(), "kind": trace.LEAF, "cid": up.cid,
                                     "name": up.hub_name, "hop": hop}]
                js = {"type": trace.JETSTREAM_EVENT, "ts": now(), "stream": stream, "subject": mt.events[0]["subj"]}
                if err:
                    js["error"] = err
                else:
                    js["seq"] = stream_seq
                ev.append(js)
                self.publish(mt.dest, mt.body(ev, 1))
                return
