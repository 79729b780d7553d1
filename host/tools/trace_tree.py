"""Message-trace events (NATS 2.11, ADR-41) as an indented tree: the part of `natsedge trace` without IO.

Every server a traced message crosses publishes one event (JSON) to the message's `Nats-Trace-Dest`. This module
decodes such a message (`decode_event`: plain, gzip, or snappy framing as nats-server sends when the publisher asked
with `Accept-Encoding`), links the events into the path the message took and renders that path as lines
(`tree_lines`), for the command, the dashboard's trace view and the tests.

Rules it keeps:
1. Linking, as ADR-41 "Sorting": an egress with `hop` H leads to the event whose `request.header` has
   `Nats-Trace-Hop: [H]`; the origin's event has no such header. An event's `hops` is the number of copies it
   forwarded, numbered `<its hop>.1` .. `<its hop>.<hops>` (`1` .. `<hops>` at the origin; edge/trace.py next_hop).
2. Pure: events in, lines out. Nothing here reads a clock; durations are differences of the events' own timestamps
   (`ts`), so a hop between two machines shows their clocks' skew too.
3. Bad input is reported, never raised past `decode_event` (TraceDecodeError, one line): an event missing fields
   renders with what it has.
"""

from __future__ import annotations

import json
import re
import zlib
from datetime import datetime
from typing import Any

from edge import proto, trace
from edge.leaf.msgtrace import FORWARD_PREFIX  # an edge's forward queue as the `js` step's stream
from host import msgtrace, snappy

MAX_EVENT_BYTES = 8 << 20  # a decompressed event larger than this is refused (a compression bomb, not a trace)
MAX_HOPS = 1000  # hops one event may announce; a larger `hops` is not a server's count and is not waited for

KIND_NAMES = {trace.CLIENT: "client", msgtrace.ROUTER: "route", msgtrace.GATEWAY: "gateway", msgtrace.SYSTEM: "system",
              trace.LEAF: "leafnode", msgtrace.JETSTREAM: "JetStream", msgtrace.ACCOUNT: "account"}
# The connection id's label per kind, as the servers' monitoring names them (cid, rid, gid, lid).
ID_LABELS = {trace.CLIENT: "cid", msgtrace.ROUTER: "rid", msgtrace.GATEWAY: "gid", trace.LEAF: "lid"}
# What an egress line starts with, per kind; "--X" for an egress or step with an error.
ARROWS = {trace.CLIENT: "--C", msgtrace.ROUTER: "-->", msgtrace.GATEWAY: "==>", trace.LEAF: "~~>",
          msgtrace.JETSTREAM: "--J"}
ERROR_ARROW = "--X"
LEGEND = "Legend: client --C  route -->  gateway ==>  leafnode ~~>  JetStream --J  error --X"
INDENT = "    "


class TraceDecodeError(ValueError):
    pass


# ---- decoding ----------------------------------------------------------------------------------------------------


def decode_event(hdr: bytes | None, payload: bytes) -> dict[str, Any]:
    """One message received on the trace destination -> its event. `Content-Encoding: gzip` or `snappy` (nats-server
    answers `Accept-Encoding` so, events.go) is undone first; `identity` or none is plain JSON."""
    encoding = ""
    if hdr:
        try:
            _status, _desc, pairs = proto.decode_headers(hdr)
        except proto.ProtocolError as e:
            raise TraceDecodeError(f"bad header block: {e}") from None
        encoding = next((v.lower() for k, v in pairs if k.lower() == "content-encoding"), "")
    if encoding == "gzip":
        data = _gunzip(payload)
    elif encoding == "snappy":
        data = _unsnappy(payload)
    elif encoding in ("", "identity"):
        data = bytes(payload)
    else:
        raise TraceDecodeError(f"unknown Content-Encoding {encoding!r}")
    try:
        event = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise TraceDecodeError(f"not JSON: {e}") from None
    if not isinstance(event, dict):
        raise TraceDecodeError("not a trace event (a JSON object)")
    return event


def _unsnappy(data: bytes) -> bytes:
    try:
        return snappy.unframe(data, MAX_EVENT_BYTES)
    except snappy.SnappyError as e:
        raise TraceDecodeError(str(e)) from None


def _gunzip(data: bytes) -> bytes:
    d = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)  # gzip framing
    try:
        out = d.decompress(data, MAX_EVENT_BYTES + 1)
    except zlib.error as e:
        raise TraceDecodeError(f"bad gzip data: {e}") from None
    if len(out) > MAX_EVENT_BYTES:
        raise TraceDecodeError(f"gzip event larger than {MAX_EVENT_BYTES} bytes")
    if not d.eof:
        raise TraceDecodeError("truncated gzip data")
    return out




# ---- linking -----------------------------------------------------------------------------------------------------


def _obj(v: Any) -> dict[str, Any]:
    """A field that should be a JSON object; {} when an event has something else there."""
    return v if isinstance(v, dict) else {}


def _header(event: dict[str, Any], name: str) -> list[Any] | None:
    hdr = _obj(event.get("request")).get("header")
    if not isinstance(hdr, dict):
        return None
    for k, v in hdr.items():
        if isinstance(k, str) and k.lower() == name.lower():
            return v if isinstance(v, list) else [v]
    return None


def hop_of(event: dict[str, Any]) -> str:
    """The event's place in the trace: its `Nats-Trace-Hop`, "" for the origin."""
    v = _header(event, trace.HOP)
    return str(v[0]) if v else ""


def steps(event: dict[str, Any]) -> list[dict[str, Any]]:
    got = event.get("events")
    return [s for s in got if isinstance(s, dict)] if isinstance(got, list) else []


def expected_hops(event: dict[str, Any]) -> list[str]:
    """The hops this event forwarded to and whose server will send an event: numbered from its `hops`, and any `hop`
    of its egresses, less the egresses with an error (a peer that does not trace got the copy, or got nothing:
    nats-server numbers the hop all the same, client.go deliverMsg)."""
    n = event.get("hops")
    own = hop_of(event)
    counted = isinstance(n, int) and not isinstance(n, bool) and 0 < n <= MAX_HOPS
    out = [trace.next_hop(own, i) for i in range(1, n + 1)] if counted else []
    silent = []
    for s in steps(event):
        h = s.get("hop")
        if s.get("type") != trace.EGRESS or not isinstance(h, str) or not h:
            continue
        if s.get("error"):
            silent.append(h)
        elif h not in out:
            out.append(h)
    return [h for h in out if h not in silent]


def awaits_ack(event: dict[str, Any]) -> bool:
    """An edge's event for a traced message it stored in a forward queue (a `js` step for the stream
    `forward:<queue>`, without error, not trace-only): the edge sends a second event, with the same hop, once the
    hub acknowledged the record (docs/tracing.md, "Store-and-forward")."""
    return not trace_only(event) and any(
        s.get("type") == trace.JETSTREAM_EVENT and isinstance(s.get("stream"), str)
        and s["stream"].startswith(FORWARD_PREFIX) and not s.get("error") for s in steps(event))


def missing_hops(events: list[dict[str, Any]]) -> list[str]:
    """Hops announced by some event whose own event is not among `events`; ["(origin)"] stands for the origin's."""
    have = {hop_of(e) for e in events}
    missing = [] if "" in have or not events else ["(origin)"]
    for e in events:
        missing += [h for h in expected_hops(e) if h not in have and h not in missing]
    return missing


def unacknowledged(events: list[dict[str, Any]]) -> list[str]:
    """Hops ("(origin)" for "") where an edge stored the message in a forward queue and its event for the hub's
    acknowledgement is not among `events` (awaits_ack)."""
    by_hop: dict[str, list[dict[str, Any]]] = {}
    for e in events:
        by_hop.setdefault(hop_of(e), []).append(e)
    return [hop or "(origin)" for hop, group in by_hop.items() if all(awaits_ack(e) for e in group)]


def complete(events: list[dict[str, Any]]) -> bool:
    """Every server the message reached has answered: the origin's event is here, each hop announced too, and an
    edge that stored it in a forward queue has sent its event for the hub's acknowledgement."""
    return bool(events) and not missing_hops(events) and not unacknowledged(events)


# ---- rendering ---------------------------------------------------------------------------------------------------

_TS = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)$")


def ts_ns(text: Any) -> int | None:
    """RFC 3339 with nanoseconds, as Go writes time.Time -> ns since the epoch (None when it is not that)."""
    m = _TS.match(text) if isinstance(text, str) else None
    if m is None:
        return None
    zone = "+00:00" if m.group(3) == "Z" else m.group(3)
    try:
        seconds = int(datetime.fromisoformat(m.group(1) + zone).timestamp())
    except ValueError:
        return None
    return seconds * 1_000_000_000 + int((m.group(2) or "0").ljust(9, "0"))


def duration(ns: int) -> str:
    if abs(ns) < 1_000_000:
        return f"{ns / 1000:.1f} us"
    if abs(ns) < 1_000_000_000:
        return f"{ns / 1_000_000:.2f} ms"
    return f"{ns / 1_000_000_000:.3f} s"


def _q(v: Any) -> str:
    return json.dumps(v) if isinstance(v, str) else str(v)


def _kind(step: dict[str, Any]) -> int | None:
    kind = step.get("kind")
    return kind if isinstance(kind, int) and not isinstance(kind, bool) else None


def _conn(step: dict[str, Any]) -> str:
    """`route "tr2" rid:10` from a step's kind, name and connection id."""
    kind = _kind(step)
    words = [KIND_NAMES.get(kind, f"kind {step.get('kind')}")]
    if step.get("name"):
        words.append(_q(step["name"]))
    if step.get("cid") is not None:
        words.append(f"{ID_LABELS.get(kind, 'cid')}:{step['cid']}")
    return " ".join(words)


def _server(event: dict[str, Any]) -> str:
    srv = _obj(event.get("server"))
    words = [f"Server {_q(srv.get('name') or srv.get('id') or '?')}"]
    if srv.get("cluster"):
        words.append(f"cluster:{_q(srv['cluster'])}")
    if srv.get("domain"):
        words.append(f"domain:{_q(srv['domain'])}")
    if srv.get("ver"):
        words.append(f"version:{srv['ver']}")
    return " ".join(words)


def trace_only(event: dict[str, Any]) -> bool:
    """The traced message had `Nats-Trace-Only` (every server gets the header with the message)."""
    values = _header(event, trace.ONLY) or [None]
    return isinstance(values[0], str) and trace.is_only(values[0])


def _step(step: dict[str, Any], since: int | None, only: bool) -> tuple[str, str | None]:
    """(line, hop) for one step of a server's event; `since` is the server's ingress time, for the +offset; `only`:
    a trace-only message, which a stream does not store (its js step says where it would have been stored)."""
    kind, err = step.get("type"), step.get("error")
    if kind == trace.INGRESS:
        line = f"<-- from {_conn(step)} account:{step.get('acc', '?')} subject:{_q(step.get('subj', '?'))}"
    elif kind == msgtrace.SUBJECT_MAPPING:
        line = f"--- subject mapped to {_q(step.get('to', '?'))}"
    elif kind == msgtrace.STREAM_EXPORT:
        line = f"--- stream export to account {step.get('acc', '?')} subject:{_q(step.get('to', '?'))}"
    elif kind == msgtrace.SERVICE_IMPORT:
        line = (f"--- service import to account {step.get('acc', '?')} {_q(step.get('from', '?'))} -> "
                f"{_q(step.get('to', '?'))}")
    elif kind == trace.JETSTREAM_EVENT:
        what = ("not stored: no interest" if step.get("nointerest") else "not stored" if err
                else "would be stored (trace only)" if only else "stored")
        line = (f"{ARROWS[msgtrace.JETSTREAM]} JetStream stream {_q(step.get('stream', '?'))} "
                f"subject:{_q(step.get('subject', '?'))} {what}")
        if step.get("seq") is not None:  # an edge's event for the hub's PubAck: the stream sequence it gave
            line += f" seq:{step['seq']}"
    elif kind == trace.EGRESS:
        line = f"{ARROWS.get(_kind(step), '-->')} {_conn(step)}"
        if step.get("acc"):
            line += f" account:{step['acc']}"
        if step.get("sub"):
            line += f" sub:{_q(step['sub'])}"
        if step.get("queue"):
            line += f" queue:{_q(step['queue'])}"
        if step.get("hop"):
            line += f" hop:{step['hop']}"
    else:
        line = f"--- {kind or 'step'} {json.dumps({k: v for k, v in step.items() if k not in ('type', 'ts')})}"
    at = ts_ns(step.get("ts"))
    if kind != trace.INGRESS and since is not None and at is not None:
        line += f" (+{duration(at - since)})"
    if err:
        line = f"{ERROR_ARROW}{line[3:]} error: {err}"
    hop = step.get("hop") if kind == trace.EGRESS and isinstance(step.get("hop"), str) else None
    return line, hop


def _ingress_ns(event: dict[str, Any]) -> int | None:
    for s in steps(event):
        if s.get("type") == trace.INGRESS:
            return ts_ns(s.get("ts"))
    return None


class _Renderer:
    def __init__(self, events: list[dict[str, Any]]) -> None:
        self.by_hop: dict[str, list[dict[str, Any]]] = {}
        for e in events:
            self.by_hop.setdefault(hop_of(e), []).append(e)
        self.shown: set[int] = set()
        self.lines: list[str] = []
        self.egress_counts: dict[str, int] = {}
        self.streams: list[str] = []  # streams that stored it, in order of appearance

    def server(self, event: dict[str, Any], depth: int, left_at: int | None) -> None:
        self.shown.add(id(event))
        pad = INDENT * depth
        since = _ingress_ns(event)
        only = trace_only(event)
        head = pad + _server(event)
        if left_at is not None and since is not None:
            head += f" ({duration(since - left_at)} after the hop)"
        self.lines.append(head)
        for s in steps(event):
            line, hop = _step(s, since, only)
            self.lines.append(pad + "  " + line)
            if s.get("type") == trace.EGRESS and not s.get("error"):
                name = KIND_NAMES.get(_kind(s), "other")
                self.egress_counts[name] = self.egress_counts.get(name, 0) + 1
            if s.get("type") == trace.JETSTREAM_EVENT and not (s.get("error") or s.get("nointerest") or only):
                stream = str(s.get("stream", "?"))
                if stream not in self.streams:  # an edge's ack event repeats the hub's stream
                    self.streams.append(stream)
            if hop is None:
                continue
            nexts = self.by_hop.get(hop) or []
            for n in nexts:
                if id(n) not in self.shown:  # an event naming its own hop as an egress is shown once, not forever
                    self.server(n, depth + 1, ts_ns(s.get("ts")))
            if not nexts and not s.get("error"):  # with an error no event is expected from there
                self.lines.append(pad + INDENT + "  (no event from this hop: it never answered)")


def tree_lines(events: list[dict[str, Any]]) -> list[str]:
    """The path of a traced message as indented lines: each server with its steps, the next server's event nested
    under the egress that reached it, then a summary (egress counts, the streams that stored it, hops that never
    answered)."""
    if not events:
        return ["No trace events."]
    r = _Renderer(events)
    origins = r.by_hop.get("") or []
    first = origins[0] if origins else events[0]
    ingress = next((s for s in steps(first) if s.get("type") == trace.INGRESS), {})
    only = bool(origins) and trace_only(first)
    title = f"Trace of a message to subject {_q(ingress.get('subj', '?'))}"
    r.lines += [title + (" (trace only: not delivered to clients)" if only else ""), ""]
    for e in origins:
        r.server(e, 0, None)
    rest = [e for e in events if id(e) not in r.shown]
    if rest:
        r.lines += ["", "Events not linked to an egress above (their parent never answered):"]
        for e in sorted(rest, key=hop_of):
            r.lines.append(f"hop {hop_of(e) or '(origin)'}:")
            r.server(e, 1, None)
    servers = len({json.dumps(_obj(e.get("server")).get("id") or _obj(e.get("server")).get("name"))
                   for e in events})
    counts = ", ".join(f"{k} {n}" for k, n in sorted(r.egress_counts.items())) or "none"
    r.lines += ["", LEGEND, "", f"Servers: {servers}   Egresses: {counts}" +
                (f"   Stored in: {', '.join(r.streams)}" if r.streams else "")]
    missing = missing_hops(events)
    if missing:
        r.lines.append("Hops that never answered: " + ", ".join(missing))
    waiting = unacknowledged(events)
    if waiting:
        r.lines.append("Stored in an edge's forward queue, no event for the hub's acknowledgement: hop "
                       + ", ".join(waiting))
    return r.lines
