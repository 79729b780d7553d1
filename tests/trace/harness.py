"""Message-tracing test helpers: traced publishes, the events a trace destination received, and one normal form of
an event so nats-server's and the hub's can be compared field by field.

The normal form drops what differs by run or by server build: timestamps, connection ids, the server block's ids,
times, sequence numbers and build facts (`ver`, `flags`, `feature_flags`, `jetstream`, `host`); it keeps everything
else, the server's name included. Egress events keep their order within a target kind but are sorted, since
nats-server and the hub walk a subject's subscribers in different orders.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from host import snappy
from tests.compat.harness import Raw, hpub, read_msg

VECTORS = Path(__file__).resolve().parents[1] / "vectors"
_DROPPED = ("ts", "cid")
_SERVER_KEPT = ("name", "cluster")


def trace_headers(dest: str, *extra: tuple[str, str]) -> bytes:
    """A header block with Nats-Trace-Dest and the given (name, value) lines."""
    lines = [f"Nats-Trace-Dest: {dest}", *(f"{k}: {v}" for k, v in extra)]
    return ("NATS/1.0\r\n" + "".join(line + "\r\n" for line in lines) + "\r\n").encode()


def traced_pub(subject: str, dest: str, payload: bytes = b"hello", *extra: tuple[str, str]) -> bytes:
    return hpub(subject, trace_headers(dest, *extra), payload)


def event_of(msg) -> dict:
    """The JSON event of a message received on a trace destination (gzip and snappy bodies are opened)."""
    body = msg.payload
    if msg.hdr and b"Content-Encoding: gzip" in msg.hdr:
        body = gzip.decompress(body)
    elif msg.hdr and b"Content-Encoding: snappy" in msg.hdr:
        body = snappy.unframe(body, 1 << 20)
    return json.loads(body)


def events_until_pong(raw: Raw) -> list[dict]:
    return [event_of(m) for m in raw.msgs_until_pong()]


def wait_events(raw: Raw, n: int, dest: str | None = None, timeout: float = 5.0) -> list[dict]:
    """The next `n` events on a raw connection subscribed to a trace destination: every message, or only those on
    `dest` (others, such as late interest probes, skipped); fails after `timeout`."""
    out: list[dict] = []
    while len(out) < n:
        m = read_msg(raw, timeout)
        if dest is None or m.subject == dest:
            out.append(event_of(m))
    return out


def normal(event: dict) -> dict:
    """An event in the normal form of the module docstring."""
    out = {k: v for k, v in event.items() if k not in ("server", "events")}
    out["server"] = {k: v for k, v in event["server"].items() if k in _SERVER_KEPT}
    entries = [{k: v for k, v in e.items() if k not in _DROPPED} for e in event["events"]]
    head = [e for e in entries if e["type"] != "eg"]
    egress = sorted((e for e in entries if e["type"] == "eg"), key=lambda e: json.dumps(e, sort_keys=True))
    out["events"] = head + egress
    return out


def by_server(events: list[dict]) -> dict[str, dict]:
    """Normal forms keyed by server name (one event per server a message crossed)."""
    out = {}
    for e in events:
        n = normal(e)
        out[n["server"]["name"]] = n
    return out


def vector_events(name: str) -> list[dict]:
    """The events of a captured trace vector (vectors/trace/<name>)."""
    doc = json.loads((VECTORS / "trace" / name).read_text())
    return [e.get("event", e) for e in doc["events"]]
