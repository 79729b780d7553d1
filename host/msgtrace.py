"""Message tracing (NATS 2.11, ADR-41) in the hub, as nats-server `msgtrace.go`.

A message whose headers hold `Nats-Trace-Dest` (or a sampled W3C `traceparent`, when its account has `msg_trace`)
is traced: the server it passes through sends one JSON event to the trace destination, in the publisher's account,
listing what happened to it here: `in` (where it came from), `sm` (the subject a subject mapping gave it),
`se`/`si` (stream exports, service imports it crossed), `js` (stored in a stream), one `eg` per delivery target.
The names, kinds and error texts are edge/trace.py's, shared with the edge broker.

Rules kept here:
1. Tracing starts only at the ingress of a connection (client PUB/HPUB, leaf LMSG, route RMSG), never for the hub's
   own publishes: `traced` is the one test on a header frame's path (one substring test per frame); a traced frame
   then leaves the fast lanes and goes, frame by frame, through host/delivery.py's general path with a MsgTrace,
   which records each target there. Delivery itself exists once, in host/delivery.py.
2. Trace-only (`Nats-Trace-Only: true`): clients get nothing but are listed; links whose peer speaks the tracing
   protocol (proto >= 3) still get the message, so the next server traces it; other links get an `eg` error.
3. A copy forwarded to a link carries `Nats-Trace-Hop` (edge/trace.py next_hop); `hops` counts those copies.
4. The event is sent once everything it lists is done: delivery, and the stream's store step (synchronous here).
"""

from __future__ import annotations

import logging
import random
import time
from typing import Any

from edge import trace as names
from edge.proto import encode_err
from host import errors, snappy
from host.gotime import time_text
from host.headers import HDR_LINE, hdr_set
from host.jetstream.gojson import dumps
from host.sublist import is_valid_literal_subject

log = logging.getLogger("natsedge.hub")

# The names only the hub's events use (the shared ones are edge/trace.py's; the edge's bundle carries only those).
ROUTER = 1  # connection kinds (nats-server client.go), next to edge/trace.py's CLIENT and LEAF
GATEWAY = 2
SYSTEM = 3
JETSTREAM = 5
ACCOUNT = 6
SUBJECT_MAPPING = "sm"  # event types, next to edge/trace.py's in, js, eg
STREAM_EXPORT = "se"
SERVICE_IMPORT = "si"
PUB_DENIED = names.NOT_DELIVERED + "publish denied for this subject"  # egress errors
SUB_DENIED = names.NOT_DELIVERED + "subscription denies this subject"
SUB_CLOSED = names.NOT_DELIVERED + "subscription is closed"
CLIENT_CLOSED = names.NOT_DELIVERED + "client is closed"
AUTO_UNSUB = names.NOT_DELIVERED + "auto-unsubscribe exceeded"

TRACE_DEST = names.DEST.encode()  # what `traced` looks for in a header frame
TRACEPARENT = b"traceparent"  # W3C header: traced when sampled and the account has msg_trace
MSG_TRACE_PROTO = names.PROTO  # a link peer at this level traces what it is forwarded
TRACE_DISABLED = names.DISABLED.encode()
_ACCEPT_ENCODING = "accept-encoding"
_GW_REPLY_PREFIX = b"_GR_."  # nats-server gwReplyPrefix: reserved, never a trace destination
_NRG_PREFIX = b"$NRG."  # nats-server clientNRGPrefix: the system account's only

# Connection kinds as events number them (host classes -> edge/trace.py kinds).
KINDS = {"Client": names.CLIENT, "Router": ROUTER, "Gateway": GATEWAY, "Leafnode": names.LEAF}

# The hub's InternalHandler callbacks that take part in a trace (JetStream streams) read the trace of the message
# they are given here: set around their call by host/delivery.py, None otherwise (delivery never awaits, so one
# message is traced at a time).
active: MsgTrace | None = None


def traced(acc: Any, pieces: list[bytes]) -> bool:
    """Whether a run of header frames (host/parser.py pieces) may hold a traced frame: one substring test per frame;
    in an account with `msg_trace`, also a `traceparent` in any case."""
    if acc.trace_dest is None:
        for piece in pieces:
            if TRACE_DEST in piece:
                return True
        return False
    for piece in pieces:
        if TRACE_DEST in piece or TRACEPARENT in piece.lower():
            return True
    return False


class MsgTrace:
    """One traced message on this server: its event, and what delivery needs to know while it fills it."""

    __slots__ = ("server", "acc", "dest", "only", "hop", "nhop", "event", "events", "ingress_acc", "compression",
                 "js")

    def __init__(self, server: Any, acc: Any, dest: bytes, only: bool, hop: str, header: dict[str, list[str]],
                 msgsize: int, ingress: dict[str, Any], compression: str) -> None:
        self.server = server
        self.acc = acc  # the account the event is published in (the publisher's)
        self.dest = dest
        self.only = only
        self.hop = hop  # the Nats-Trace-Hop this message came with ("" at the origin)
        self.nhop = ""  # the hop of the copy just forwarded, for its `eg` event
        self.ingress_acc = ingress["acc"]
        self.events: list[dict[str, Any]] = [ingress]
        request: dict[str, Any] = {"header": header}
        if msgsize:
            request["msgsize"] = msgsize
        self.event: dict[str, Any] = {"server": None, "request": request, "events": self.events}
        self.compression = compression  # "" none, else the Content-Encoding of the event
        self.js: dict[str, Any] | None = None

    # ---- events ---------------------------------------------------------------------------------------------------

    def next_hop(self) -> str:
        """A copy for the next link: counted in `hops`, its Nats-Trace-Hop for the `eg` event that follows."""
        hops = self.event.get("hops", 0) + 1
        self.event["hops"] = hops
        self.nhop = names.next_hop(self.hop, hops)
        return self.nhop

    def hop_header(self, hdr: bytes) -> bytes:
        """The header block of the copy forwarded to the next link, with its Nats-Trace-Hop (setHopHeader)."""
        return hdr_set(hdr, names.HOP.encode(), self.next_hop().encode())

    def egress(self, conn: Any, sub: Any, error: str = "") -> None:
        """An `eg` event for one delivery target (nats-server addEgressEvent)."""
        kind = KINDS[conn.kind]
        e: dict[str, Any] = {"type": names.EGRESS, "ts": _now(), "kind": kind, "cid": conn.cid}
        name = conn_name(conn)
        if name:
            e["name"] = name
        if self.nhop:
            e["hop"] = self.nhop
            self.nhop = ""
        if kind == names.CLIENT or kind == names.LEAF:
            acc = conn.account.name if conn.account is not None else ""
            if acc != self.ingress_acc:
                e["acc"] = acc
        if kind == names.CLIENT:
            e["sub"] = sub.subject.decode(errors="replace")
            if sub.queue:
                e["queue"] = sub.queue.decode(errors="replace")
        if error:
            e["error"] = error
        self.events.append(e)

    def subject_mapping(self, to: bytes) -> None:
        """The subject the message was mapped to (addSubjectMappingEvent)."""
        self.events.append({"type": SUBJECT_MAPPING, "ts": _now(), "to": to.decode(errors="replace")})

    def stream_export(self, acc_name: str, to: bytes) -> None:
        self.events.append({"type": STREAM_EXPORT, "ts": _now(), "acc": acc_name,
                            "to": to.decode(errors="replace")})

    def service_import(self, acc_name: str, from_subject: bytes, to: bytes) -> None:
        self.events.append({"type": SERVICE_IMPORT, "ts": _now(), "acc": acc_name,
                            "from": from_subject.decode(errors="replace"), "to": to.decode(errors="replace")})

    def jetstream(self, stream: str) -> None:
        """The message reached a stream (addJetStreamEvent); `stored` completes the event."""
        self.js = {"type": names.JETSTREAM_EVENT, "ts": _now(), "stream": stream}
        self.events.append(self.js)

    def stored(self, subject: str, no_interest: bool = False, error: str = "") -> None:
        """The stream's store step is done (updateJetStreamEvent / sendEventFromJetStream)."""
        js = self.js
        if js is None:
            return
        js["ts"] = _now()
        if subject:
            js["subject"] = subject
        if no_interest:
            js["nointerest"] = True
        if error:
            js["error"] = error

    def send(self) -> None:
        """Publish the event to the destination, in the publisher's account, as a plain message (compressed, with
        Content-Encoding, when the traced message asked for it in Accept-Encoding)."""
        server = self.server
        self.event["server"] = server.event_server_info()
        body = dumps(self.event)
        hdr = None
        if self.compression:
            if self.compression == "gzip":
                import gzip  # (only for events that ask for it: the hub does not load it otherwise)

                body = gzip.compress(body)
            elif self.compression == "snappy":
                body = snappy.frame(body)
            hdr = HDR_LINE + b"Content-Encoding: " + self.compression.encode() + b"\r\n\r\n"
        server.internal_publish(self.acc, self.dest, None, hdr, body)


def _now() -> str:
    return time_text(time.time_ns())


def conn_name(conn: Any) -> str:
    """The name events give a connection: a link's remote server name, a client's CONNECT name (getConnName)."""
    if conn.is_link:
        return conn.remote_name or conn.name
    return conn.name


def trace_headers(hdr: bytes) -> tuple[dict[str, list[str]], bool] | None:
    """The header block as a dict (names as written, every value a list) when it triggers tracing: a
    `Nats-Trace-Dest` (not `trace disabled`) or a sampled `traceparent` (any case); with it, True when only the
    traceparent did, so the account's destination applies. None otherwise (genHeaderMapIfTraceHeadersPresent)."""
    if not hdr.startswith(HDR_LINE):
        return None
    keys: list[tuple[str, str]] = []
    dest_found = parent_found = False
    i = len(HDR_LINE)
    n = len(hdr)
    while i < n:
        colon = hdr.find(b":", i)
        if colon < 0:
            break
        key = hdr[i:colon]
        j = colon + 1
        while j < n and hdr[j] in (32, 9):
            j += 1
        nl = hdr.find(b"\r\n", j)
        if nl < 0:
            break
        end = nl
        while end > j and hdr[end - 1] in (32, 9):
            end -= 1
        val = hdr[j:end]
        if key and val:
            if not parent_found and key.lower() == TRACEPARENT:
                tk = val.split(b"-")
                if len(tk) == 4 and len(tk[3]) == 2:
                    try:
                        parent_found = int(tk[3], 16) & 1 == 1
                    except ValueError:
                        pass
            elif not dest_found and key == TRACE_DEST:
                if val == TRACE_DISABLED:
                    return None
                dest_found = True
            keys.append((key.decode(errors="replace"), val.decode(errors="replace")))
        i = nl + 2
    if not dest_found and not parent_found:
        return None
    header: dict[str, list[str]] = {}
    for k, v in keys:
        header.setdefault(k, []).append(v)
    return header, not dest_found


def _first(header: dict[str, list[str]], key: str) -> str:
    vals = header.get(key)
    return vals[0] if vals else ""


def compression_of(header: dict[str, list[str]]) -> str:
    """The Content-Encoding of the event for the traced message's Accept-Encoding (getCompressionType): matched
    by substring, in any case; "" when it asked for nothing."""
    accept = ""
    for k, v in header.items():
        if k.lower() == _ACCEPT_ENCODING:
            accept = v[0].lower()
            break
    if not accept:
        return ""
    if "snappy" in accept or "s2" in accept:
        return "snappy"
    if "gzip" in accept:
        return "gzip"
    return "identity"


def init_msg_trace(src: Any, acc: Any, subject: bytes, hdr: bytes, msgsize: int,
                   ingress_error: str = "") -> tuple[bool, MsgTrace | None, bytes]:
    """Ingress of a message with headers from `src` (a client, leaf or route) in `acc` (initMsgTrace). Returns
    (skip, trace, hdr): skip when the message must not be processed at all (trace-only that cannot be traced, a
    refused destination); the trace, or None; the header block to go on with (rewritten to `trace disabled` where
    tracing is switched off for the servers after this one)."""
    found = trace_headers(hdr)
    if found is None:
        return False, None, hdr
    header, external = found
    kind = KINDS[src.kind]
    only = False
    dest = ""
    if not external:
        only = names.is_only(_first(header, names.ONLY) or None)
        dest = _first(header, names.DEST)
    if _first(header, names.ORIGIN_ACCOUNT):
        # A pre-release server's header: no tracing here nor after (the message goes on untraced).
        log.error("Message tracing disabled because of header %r with value=%r", names.ORIGIN_ACCOUNT,
                  _first(header, names.ORIGIN_ACCOUNT))
        if not ingress_error and not only:
            hdr = hdr_set(hdr, TRACE_DEST, TRACE_DISABLED)
        return only, None, hdr
    hop = _first(header, names.HOP) if kind != names.CLIENT else ""
    if external:
        if acc.trace_dest is None:
            return False, None, hdr
        dest = acc.trace_dest
        if kind == names.CLIENT and not sample(acc.trace_sampling):
            # Not sampled: the servers after this one must not trace it either.
            if not ingress_error:
                hdr = hdr_set(hdr, TRACE_DEST, TRACE_DISABLED)
            return False, None, hdr
    dest_b = dest.encode()
    if not is_valid_literal_subject(dest_b):
        log.error("Destination %r is not valid, won't be able to trace events", dest)
        return only, None, hdr
    if not allowed_dest(src, acc, dest_b):
        if kind == ROUTER or kind == GATEWAY:
            log.error('Publish Violation - Subject "%s"', dest)
        else:
            src.enqueue(encode_err(errors.err_pub_violation(dest_b)))
        return True, None, hdr
    ingress: dict[str, Any] = {"type": names.INGRESS, "ts": _now(), "kind": kind, "cid": src.cid}
    name = conn_name(src)
    if name:
        ingress["name"] = name
    ingress["acc"] = acc.name
    ingress["subj"] = subject.decode(errors="replace")
    if ingress_error:
        ingress["error"] = ingress_error
    return False, MsgTrace(src.server, acc, dest_b, only, hop, header, msgsize, ingress,
                           compression_of(header)), hdr


def trace_refused(src: Any, acc: Any, subject: bytes, hdrs: list[tuple[bytes, int]], error: str,
                  mapped_to: bytes | None = None) -> None:
    """Messages with headers refused at ingress (publish permissions, the payload limit): each traced one still gets
    its event, with only the `in` entry and its error (pubPermissionViolation, sendMsgTraceIngressErrEvent), and the
    `sm` entry of a mapping that made `subject` `mapped_to` before the permissions refused it.
    hdrs: (header block, message size) per message."""
    for hdr, size in hdrs:
        if TRACE_DEST in hdr or acc.trace_dest is not None:
            trace = init_msg_trace(src, acc, subject, hdr, size, error)[1]
            if trace is not None:
                if mapped_to is not None:
                    trace.subject_mapping(mapped_to)
                trace.send()


def trace_max_payload(client: Any) -> None:
    """A client's HPUB over the payload limit: its header block, as far as it was received, may ask for a trace
    (client.go processHeaderPub)."""
    line, rest = client.parser.failed_line()
    parts = line.split()
    if len(parts) not in (4, 5) or parts[0].upper() != b"HPUB" or not parts[-2].isdigit() or \
            not parts[-1].isdigit() or client.account is None:
        return
    trace_refused(client, client.account, parts[1], [(rest[: int(parts[-2])], int(parts[-1]))],
                  errors.ERR_MAX_PAYLOAD_EXCEEDED)


def allowed_dest(src: Any, acc: Any, dest: bytes) -> bool:
    """Whether `src` may have events published to `dest` (allowedToPublishOnMsgTraceDest): never a gateway reply
    subject, `$NRG.` only from the system account, and within the connection's publish permissions."""
    if dest.startswith(_GW_REPLY_PREFIX):
        return False
    if dest.startswith(_NRG_PREFIX) and not src.server.is_system_account(acc):
        return False
    if src.is_leaf:
        return src.leaf_perms is None or src.leaf_perms.may_send(dest)
    perms = src.perms
    return perms is None or perms.pub is None or perms.pub.check(dest)


def sample(sampling: int) -> bool:
    """Whether a traceparent-triggered message is traced at this sampling percentage (1-100), drawn as nats-server
    draws it (a random 0-99 up to and including `sampling`)."""
    return sampling <= 0 or sampling >= 100 or random.randrange(100) <= sampling
