"""`natsedge trace SUBJECT [PAYLOAD]`: send one traced message and print the path it took, like `nats trace`.

The message goes out with `Nats-Trace-Dest: <a fresh inbox>` (and `Nats-Trace-Only: true` with --only, so no client
gets it); every server on its path (edge, leaf, hub, route, gateway, stream) publishes its event to that inbox, and
the events are shown as a tree (host/tools/trace_tree.py) or, with --json, as one JSON array. Waiting stops once
every hop an event announced has its event, else at --timeout.

Exit status: 0 when a trace came back; 1 with a one-line error when none did, when the server cannot be reached, or
for bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import secrets
import sys
from dataclasses import dataclass, field
from typing import Any, NoReturn

from edge import proto, subjects, trace
from host.tools.trace_tree import TraceDecodeError, complete, decode_event, tree_lines
from sim.client import Client, NotConnected, parse_url

PROG = "natsedge trace"
DEFAULT_SERVER = "nats://127.0.0.1:4222"
DEFAULT_TIMEOUT = 2.0
MAX_EVENTS = 1000  # events kept per trace; a trace inbox someone floods costs no more than this
# Events may come compressed: nats-server answers with `Content-Encoding: snappy` (events.go); the smaller events
# matter on an edge's uplink.
ACCEPT_ENCODING = "snappy"


@dataclass
class TraceResult:
    inbox: str
    events: list[dict[str, Any]] = field(default_factory=list)
    bad: list[str] = field(default_factory=list)  # messages on the inbox that were not events, one line each
    dropped: int = 0  # events past MAX_EVENTS

    @property
    def complete(self) -> bool:
        return complete(self.events)


def subject_error(subject: str) -> str | None:
    """Why `subject` cannot be traced, or None."""
    if subjects.valid(subject.encode(), wildcards=False):
        return None
    return f"invalid subject {subject!r}: a traced message needs a literal subject (no spaces, no wildcards)"


def no_events(subject: str, timeout: float) -> str:
    return (f"no trace event came back within {timeout:g} s (tracing needs NATS 2.11 or later on the server, and "
            f"permission to publish to {subject!r} and to the inbox)")


def trace_headers(inbox: str, only: bool) -> bytes:
    pairs = [(trace.DEST, inbox), ("Accept-Encoding", ACCEPT_ENCODING)]
    if only:
        pairs.append((trace.ONLY, "true"))
    return proto.encode_headers(pairs)


async def trace_message(client: Client, subject: str, payload: bytes, only: bool, timeout: float) -> TraceResult:
    """Publish one traced message on a connected `client` and collect the events until the trace is complete or
    `timeout` (s) has passed. Raises NotConnected or TimeoutError when the connection fails before the publish."""
    result = TraceResult("_INBOX." + secrets.token_hex(11))
    arrived = asyncio.Event()

    def on_event(_subject: bytes, _reply: bytes | None, hdr: bytes | None, data: bytes) -> None:
        if len(result.events) >= MAX_EVENTS:
            result.dropped += 1
            return
        try:
            result.events.append(decode_event(hdr, data))
        except TraceDecodeError as e:
            result.bad.append(str(e))
        arrived.set()

    sid = client.subscribe(result.inbox, on_event)
    try:
        await client.flush(timeout)  # the inbox is subscribed before the first event can be sent to it
        client.publish(subject, payload, hdr=trace_headers(result.inbox, only))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not result.complete:
            left = deadline - loop.time()
            if left <= 0:
                break
            arrived.clear()
            try:
                await asyncio.wait_for(arrived.wait(), left)
            except TimeoutError:
                break
    finally:
        client.unsubscribe(sid)
    return result


# ---- the command -------------------------------------------------------------------------------------------------


def _timeout(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds: {text!r}")
    return value


def _one_line_error(message: str) -> NoReturn:
    # argparse's own error() prints the usage too and exits 2; this command's contract is one line and status 1
    print(f"{PROG}: {message}", file=sys.stderr)
    sys.exit(1)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.error = _one_line_error  # type: ignore[method-assign]
    p.add_argument("subject", metavar="SUBJECT", help="the subject to send the traced message to")
    p.add_argument("payload", metavar="PAYLOAD", nargs="?", default="", help="the message's payload (default: empty)")
    p.add_argument("--server", default=DEFAULT_SERVER, metavar="URL",
                   help=f"the server to publish to, an edge's LAN port or a hub (default {DEFAULT_SERVER})")
    p.add_argument("--only", action="store_true",
                   help="trace only (Nats-Trace-Only): servers report where it would go, no client receives it")
    p.add_argument("--timeout", type=_timeout, default=DEFAULT_TIMEOUT, metavar="S",
                   help=f"how long to wait for the servers' events (default {DEFAULT_TIMEOUT:g} s)")
    p.add_argument("--json", action="store_true", help="print the raw events as one JSON array")


def check_server_url(url: str) -> str:
    """The URL as the client dials it, or ValueError with what is wrong with it."""
    if "://" in url and not url.lower().startswith("nats://"):
        raise ValueError(f"--server {url!r}: only nats:// URLs are supported (no TLS or websocket)")
    if "@" in url.partition("://")[2].partition("/")[0]:
        raise ValueError(f"--server {url!r}: credentials in the URL are not supported")
    parse_url(url)
    return url


def run(args: argparse.Namespace) -> int:
    bad = subject_error(args.subject)
    if bad:
        return _fail(bad)
    try:
        check_server_url(args.server)
    except ValueError as e:
        return _fail(str(e))
    try:
        return asyncio.run(_trace(args))
    except KeyboardInterrupt:
        return _fail("interrupted")


def _fail(message: str) -> int:
    print(f"{PROG}: {message}", file=sys.stderr)
    return 1


async def _trace(args: argparse.Namespace) -> int:
    client = Client(args.server, name=PROG)
    client.start()
    try:
        if not await client.wait_first_dial(args.timeout):
            return _fail(f"cannot connect to {args.server}: {_line(client.last_error)}")
        try:
            result = await trace_message(client, args.subject, args.payload.encode(), args.only, args.timeout)
        except (NotConnected, TimeoutError):
            return _fail(f"lost the connection to {args.server}: {_line(client.last_error) or 'no answer'}")
    finally:
        await client.close()
    for text in result.bad:
        print(f"{PROG}: not a trace event on {result.inbox}: {_line(text)}", file=sys.stderr)
    if not result.events:
        return _fail(no_events(args.subject, args.timeout))
    if args.json:
        print(json.dumps(result.events, indent=2))
    else:
        print("\n".join(tree_lines(result.events)))
    if result.dropped:
        print(f"{PROG}: {result.dropped} more events dropped (more than {MAX_EVENTS})", file=sys.stderr)
    return 0


def _line(text: str) -> str:
    return " ".join(text.split())
