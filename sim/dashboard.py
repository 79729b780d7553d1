"""The fleet dashboard: one HTML page (no external JS or CSS) and one JSON endpoint, `/state.json`.

Served by `natsedge sim --dashboard HOST:PORT` (hub + the simulator's own figures per edge), or on its own by
`natsedge dashboard --monitor URL [--nats URL]` for any hub: then edges come from the hub's `/leafz` and from what
edges publish about themselves on `$EDGE.<name>.<kind>` (sim/edgestatus.py). The page polls `/state.json` every 1.5 s.

Rates are computed here, not in the page: HubMonitor divides the change of the hub's `/varz` and `/leafz` counters
between two of its own fetches by the time between them. (The page used to divide two polls' counters by its own
clock; two polls inside one cache period then got the same counters and read 0 msgs/s while telemetry flowed.)
While the dashboard runs it samples the state every second into a bounded history (hub rates, each edge's backlog
and its leaf connection's rate) that the page draws as charts, so they show the last minutes however late it opens.

The trace view (`/trace.json?subject=S&payload=P&only=1`) sends one traced message through the dashboard's own
connection to the hub, as `natsedge trace` does (host/tools/trace_cmd.py), and answers the tree's lines.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

from host.tools.trace_cmd import no_events, subject_error, trace_message
from host.tools.trace_tree import tree_lines
from sim.client import Client, NotConnected, parse_url
from sim.edgestatus import SUBJECT as STATUS_SUBJECT
from sim.edgestatus import EdgeStatus, split_subject
from sim.hub import http_get

_MAX_REQUEST = 8192
MAX_STATUS_EDGES = 1000  # standalone: edge names kept from $EDGE.*.* (a bound against a noisy hub)
SAMPLE_S = 1.0  # history: one sample a second ...
HISTORY = 300  # ... for the last 5 minutes
CHART_EDGES = 12  # edges with a line in the per-edge charts (the first ones by order)
RATE_KEYS = ("in_msgs", "out_msgs", "in_bytes", "out_bytes")
TRACE_TIMEOUT = 2.0  # s the trace view waits for the servers' events, as `natsedge trace` by default
MAX_TRACES = 2  # traces running at once; a page clicking faster gets "busy" rather than more inboxes

# The heap an edge needs frozen into a 32-bit MicroPython (code in flash, 4-byte pointers, as on an ESP32), per
# configuration: `edge: ready heap=` of the MicroPython v1.28 unix port built -m32 with firmware/manifest.py frozen in
# (docs/benchmarks.md, "Edge frozen into a 32-bit MicroPython", heap per configuration, 2026-12-07; 22,688 with the
# forward queue's data in a folder, as the simulated edges keep it, is given in the text below the table). Reference
# figures measured there, not by the simulator: shown beside the simulated edges' heap, which is that of the
# 64-bit unix port with the edge's code loaded into the heap.
FROZEN32_READY: list[tuple[str, str, int]] = [  # (the edge's most demanding part, what was measured, bytes)
    ("kv", "LAN + uplink + forward queue + KV cache, data on littlefs", 34656),
    ("forward", "LAN + uplink + forward queue, data in a folder", 22688),
    ("uplink", "LAN + uplink", 16128),
    ("lan", "LAN only", 14032),
]
FROZEN32_SOURCE = 'docs/benchmarks.md, "Edge frozen into a 32-bit MicroPython", heap per configuration (2026-12-07)'


def frozen32_reference(parts: dict[str, bool] | None) -> dict[str, Any] | None:
    """The reference row for an edge running `parts` ({"lan": .., "uplink": .., "forward": .., "kv": ..})."""
    for key, what, ready in FROZEN32_READY:
        if parts and parts.get(key):
            return {"ready": ready, "config": what, "source": FROZEN32_SOURCE}
    return None


def _rates(now: dict[str, Any], before: dict[str, Any] | None, dt: float) -> dict[str, float | None] | None:
    """Per-second change of each counter in RATE_KEYS; None for a counter that went down (a restarted hub or a new
    leaf connection) or is missing."""
    if before is None or dt <= 0:
        return None
    out: dict[str, float | None] = {}
    for k in RATE_KEYS:
        a, b = now.get(k), before.get(k)
        ok = isinstance(a, int | float) and isinstance(b, int | float) and a >= b
        out[k] = round((a - b) / dt, 2) if ok else None  # type: ignore[operator]
    return out


class HubMonitor:
    """The hub's monitoring endpoints, fetched at most twice a second however many pages poll."""

    def __init__(self, url: str, ttl: float = 0.5) -> None:
        self.url = url.rstrip("/")
        self.ttl = ttl
        self._at = 0.0
        self._view: dict[str, Any] = {}
        self._inflight: asyncio.Future[dict[str, Any]] | None = None
        self._last_counts: tuple[float, dict[str, Any], dict[str, dict[str, Any]]] | None = None

    async def view(self) -> dict[str, Any]:
        if time.monotonic() - self._at < self.ttl:
            return self._view
        if self._inflight is None:
            self._inflight = asyncio.ensure_future(self._fetch())
        fut = self._inflight
        try:
            self._view = await asyncio.shield(fut)
        finally:
            if fut.done():
                self._inflight = None
        self._at = time.monotonic()
        return self._view

    async def _get(self, path: str) -> Any:
        try:
            status, body = await http_get(self.url + path, 2)
        except (OSError, TimeoutError, ValueError) as e:
            raise ConnectionError(str(e) or type(e).__name__) from None
        return body if status == 200 else None

    async def _fetch(self) -> dict[str, Any]:
        try:
            varz = await self._get("/varz")
            leafz = await self._get("/leafz")
            jsz = await self._get("/jsz?streams=true")
        except ConnectionError as e:
            return {"monitor": self.url, "reachable": False, "error": str(e)}
        at = time.monotonic()  # the counters' time: after /varz and /leafz came back
        out: dict[str, Any] = {"monitor": self.url, "reachable": varz is not None}
        before = self._last_counts
        dt = at - before[0] if before is not None else 0.0
        if isinstance(varz, dict):
            out["server"] = {k: varz.get(k) for k in (
                "server_name", "version", "uptime", "connections", "total_connections", "leafnodes", "in_msgs",
                "out_msgs", "in_bytes", "out_bytes", "slow_consumers", "subscriptions", "mem", "cpu")}
            out["rates"] = _rates(out["server"], before[1] if before else None, dt)
            out["rates_interval_s"] = round(dt, 2) if out["rates"] is not None else None
        leaf_counts: dict[str, dict[str, Any]] = {}
        if isinstance(leafz, dict):
            out["leafs"] = []
            for leaf in leafz.get("leafs") or []:
                row = {k: leaf.get(k) for k in ("name", "ip", "port", "rtt", "in_msgs", "out_msgs", "subscriptions")}
                key = f"{row['name']}@{row['ip']}:{row['port']}"  # a new connection starts its counters again
                row["rates"] = _rates(row, (before[2] if before else {}).get(key), dt)
                leaf_counts[key] = row
                out["leafs"].append(row)
        if isinstance(varz, dict):
            self._last_counts = (at, out["server"], leaf_counts)
        out["jetstream"] = _jetstream(jsz)
        return out


def _jetstream(jsz: Any) -> dict[str, Any] | None:
    """nats-server's /jsz?streams=true -> totals and one row per stream; None when the hub has no /jsz."""
    if not isinstance(jsz, dict):
        return None
    streams = []
    for acc in jsz.get("account_details") or []:
        for st in (acc or {}).get("stream_detail") or []:
            state = st.get("state") or {}
            streams.append({"account": acc.get("name"), "name": st.get("name"), "messages": state.get("messages"),
                            "bytes": state.get("bytes"), "first_seq": state.get("first_seq"),
                            "last_seq": state.get("last_seq"), "consumers": state.get("consumer_count")})
    return {k: jsz.get(k) for k in ("streams", "consumers", "messages", "bytes", "memory", "storage")} | {
        "stream_list": streams}


def _num(v: Any) -> float | None:
    return v if isinstance(v, int | float) and not isinstance(v, bool) else None


class History:
    """The last HISTORY samples of what the charts show: t (the simulation's clock, else seconds since the
    dashboard started), the hub's in/out msgs/s, and per edge (the first CHART_EDGES) its backlog and the msgs/s
    the hub got from its leaf connection. Columns of numbers (None where unknown), as the page draws them."""

    def __init__(self, size: int = HISTORY) -> None:
        self.t: deque[float] = deque(maxlen=size)
        self.hub_in: deque[float | None] = deque(maxlen=size)
        self.hub_out: deque[float | None] = deque(maxlen=size)
        self.edges: dict[str, dict[str, deque[float | None]]] = {}
        self.size = size

    def add(self, t: float, state: dict[str, Any]) -> None:
        hub = state.get("hub") or {}
        rates = hub.get("rates") or {}
        self.t.append(round(t, 2))
        self.hub_in.append(_num(rates.get("in_msgs")))
        self.hub_out.append(_num(rates.get("out_msgs")))
        leaf_rate = {leaf.get("name"): (leaf.get("rates") or {}).get("in_msgs") for leaf in hub.get("leafs") or []}
        seen = set()
        for e in state.get("edges") or []:
            name = e.get("name")
            if not isinstance(name, str) or (name not in self.edges and len(self.edges) >= CHART_EDGES):
                continue
            seen.add(name)
            cols = self.edges.get(name)
            if cols is None:  # an edge first seen now: nothing known before
                n = len(self.t) - 1
                cols = self.edges[name] = {"backlog": deque([None] * n, maxlen=self.size),
                                           "leaf_in": deque([None] * n, maxlen=self.size)}
            backlog = e.get("backlog")
            if backlog is None:
                backlog = (e.get("status") or {}).get("backlog")
            cols["backlog"].append(_num(backlog))
            cols["leaf_in"].append(_num(leaf_rate.get(name)))
        for name, cols in self.edges.items():
            if name not in seen:
                cols["backlog"].append(None)
                cols["leaf_in"].append(None)

    def to_json(self) -> dict[str, Any]:
        return {"t": list(self.t), "hub_in": list(self.hub_in), "hub_out": list(self.hub_out),
                "edges": {n: {k: list(v) for k, v in cols.items()} for n, cols in self.edges.items()},
                "sample_s": SAMPLE_S}


async def trace_view(client: Client | None, query: dict[str, list[str]]) -> dict[str, Any]:
    """What the page's trace view shows for `subject`, `payload` and `only` from the query: the tree's lines and the
    raw events, or an error in one line."""
    subject = (query.get("subject") or [""])[0].strip()
    payload = (query.get("payload") or [""])[0]
    only = (query.get("only") or [""])[0] in ("1", "true", "on")
    out: dict[str, Any] = {"subject": subject, "only": only, "lines": [], "events": [], "error": None}
    if client is None:
        out["error"] = "the dashboard has no connection to the hub: start it with --nats URL"
        return out
    out["error"] = subject_error(subject)
    if out["error"]:
        return out
    if not client.connected:
        out["error"] = f"not connected to the hub: {client.last_error or 'connecting'}"
        return out
    try:
        result = await trace_message(client, subject, payload.encode(), only, TRACE_TIMEOUT)
    except (NotConnected, TimeoutError):
        out["error"] = f"lost the connection to the hub: {client.last_error or 'no answer'}"
        return out
    out["events"] = result.events
    if result.events:
        out["lines"] = tree_lines(result.events)
    else:
        out["error"] = no_events(subject, TRACE_TIMEOUT)
    return out


class Dashboard:
    def __init__(self, state: Callable[[], Awaitable[dict[str, Any]]], host: str, port: int,
                 sample_s: float = SAMPLE_S, hub_client: Client | None = None) -> None:
        """hub_client: the connection the trace view publishes on (None: the view says it has none)."""
        self.state = state
        self.host = host
        self.port = port
        self.requests = 0
        self.sample_s = sample_s
        self.history = History()
        self._started = time.monotonic()
        self._server: asyncio.AbstractServer | None = None
        self._sampler: asyncio.Task[None] | None = None
        self.hub_client = hub_client
        self._traces = 0  # running now (MAX_TRACES)

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host
        return f"http://{host}:{self.port}/"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port, limit=_MAX_REQUEST)
        self.port = self._server.sockets[0].getsockname()[1]
        self._started = time.monotonic()
        self._sampler = asyncio.create_task(self._sample())

    async def _sample(self) -> None:
        while True:
            try:
                self.sample(await self.state())
            except Exception:  # noqa: BLE001 - a failed sample is a gap in the charts, not the end of the page
                pass
            await asyncio.sleep(self.sample_s)

    def sample(self, state: dict[str, Any]) -> None:
        t = (state.get("sim") or {}).get("t")
        self.history.add(t if isinstance(t, int | float) else time.monotonic() - self._started, state)

    async def page_state(self) -> dict[str, Any]:
        state = await self.state()
        state["history"] = self.history.to_json()
        for e in state.get("edges") or []:
            if isinstance(e, dict) and isinstance(e.get("parts"), dict):
                e["frozen32"] = frozen32_reference(e["parts"])
        return state

    async def trace(self, query: dict[str, list[str]]) -> dict[str, Any]:
        if self._traces >= MAX_TRACES:
            return {"lines": [], "events": [], "error": "busy: another trace is running, try again"}
        self._traces += 1
        try:
            return await trace_view(self.hub_client, query)
        finally:
            self._traces -= 1

    async def close(self) -> None:
        if self._sampler is not None:
            self._sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sampler
            self._sampler = None
        if self._server is not None:
            self._server.close()
            try:
                await asyncio.wait_for(self._server.wait_closed(), 1)
            except TimeoutError:
                pass

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            words = head.split(b"\r\n", 1)[0].decode("latin-1").split()
            self.requests += 1
            if len(words) != 3 or words[0] not in ("GET", "HEAD"):
                status, ctype, body = 405, "text/plain", b"only GET\n"
            else:
                path, _, query = words[1].partition("?")
                if path in ("/", "/index.html"):
                    status, ctype, body = 200, "text/html; charset=utf-8", PAGE.encode()
                elif path == "/state.json":
                    status, ctype = 200, "application/json"
                    body = json.dumps(await self.page_state()).encode()
                elif path == "/trace.json":
                    status, ctype = 200, "application/json"
                    body = json.dumps(await self.trace(parse_qs(query))).encode()
                else:
                    status, ctype, body = 404, "text/plain", b"not found\n"
            reason = {200: "OK", 404: "Not Found", 405: "Method Not Allowed"}[status]
            writer.write(f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                         f"Cache-Control: no-store\r\nConnection: close\r\n\r\n".encode()
                         + (body if words[0] != "HEAD" else b""))
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, IndexError):
            pass
        finally:
            writer.close()


# ---- standalone: `natsedge dashboard` --------------------------------------------------------------------------


class _StatusBoard:
    """Edges heard on `$EDGE.<name>.<kind>`, bounded in number."""

    def __init__(self) -> None:
        self.edges: dict[str, EdgeStatus] = {}

    def on_status(self, subject: bytes, reply: bytes | None, hdr: bytes | None, payload: bytes) -> None:
        parts = split_subject(subject)
        if parts is None:
            return
        st = self.edges.get(parts[0])
        if st is None:
            if len(self.edges) >= MAX_STATUS_EDGES:
                return
            st = self.edges[parts[0]] = EdgeStatus()
        st.update(parts[1], payload, time.monotonic())


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--monitor", required=True, metavar="URL", help="the hub's monitoring URL, e.g. http://127.0.0.1:8222")
    p.add_argument("--nats", metavar="URL",
                   help="the hub's client URL, to hear edges on $EDGE.<name>.<kind> (optional)")
    p.add_argument("--listen", default="127.0.0.1:8080", metavar="HOST:PORT", help="where to serve the page")


def listen_address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "127.0.0.1", text
    if not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT or PORT, got {text!r}")
    return host or "127.0.0.1", int(port)


async def _standalone(args: argparse.Namespace, listen: tuple[str, int]) -> int:
    monitor = HubMonitor(args.monitor)
    board = _StatusBoard()
    client = None
    if args.nats:
        client = Client(args.nats, name="natsedge-dashboard")
        client.subscribe(STATUS_SUBJECT, board.on_status)
        client.start()

    async def state() -> dict[str, Any]:
        hub = await monitor.view()
        now = time.monotonic()
        names = sorted({leaf.get("name") or "?" for leaf in hub.get("leafs") or []} | set(board.edges))
        leafs = {leaf.get("name"): leaf for leaf in hub.get("leafs") or []}
        edges = []
        for n in names:
            st = board.edges.get(n)
            edges.append({"name": n, "state": "up" if n in leafs else "not connected", "link_up": n in leafs,
                          "leaf": leafs.get(n), "status": st.to_json(now) if st is not None else None})
        return {"source": "hub", "hub": hub, "edges": edges, "events": [],
                "sim": {"observer_connected": bool(client and client.connected)}}

    dash = Dashboard(state, *listen, hub_client=client)
    try:
        await dash.start()
    except OSError as e:
        print(f"natsedge dashboard: cannot listen on {listen[0]}:{listen[1]}: {e.strerror or e}", file=sys.stderr)
        if client is not None:
            await client.close()
        return 1
    print(f"natsedge dashboard: {dash.url} (hub monitoring {args.monitor})", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await dash.close()
    if client is not None:
        await client.close()
    return 0


def run(args: argparse.Namespace) -> int:
    try:
        listen = listen_address(args.listen)
        parse_url(args.monitor, 80)
        if args.nats:
            parse_url(args.nats)
    except (argparse.ArgumentTypeError, ValueError) as e:
        print(f"natsedge dashboard: {e}", file=sys.stderr)
        return 2
    return asyncio.run(_standalone(args, listen))


# ---- the page ----------------------------------------------------------------------------------------------------

PAGE = r"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>natsedge fleet</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:1.2em;color:#222;background:#fafafa}
h1{font-size:1.3em;margin:0 0 .3em} h2{font-size:1.05em;margin:1.2em 0 .4em}
.meta{color:#666} .bad{color:#b00020} .ok{color:#1b7f3b} .warn{color:#a36200}
.wrap{max-width:100%;overflow-x:auto}
table{border-collapse:collapse;background:#fff;box-shadow:0 0 0 1px #ddd}
th,td{padding:.25em .5em;text-align:right;border-bottom:1px solid #eee;white-space:nowrap;vertical-align:top}
th{white-space:normal;max-width:9em;vertical-align:bottom}
th{background:#f0f0f0;font-weight:600} td:first-child,th:first-child{text-align:left}
th[title]{text-decoration:underline dotted #aaa;cursor:help}
.cards{display:flex;flex-wrap:wrap;gap:.6em} .card{background:#fff;box-shadow:0 0 0 1px #ddd;padding:.5em .8em}
.card b{display:block;font-size:1.3em} code{font-size:.9em;color:#444}
tr.edge td{border-bottom:none} tr.sub td{padding-top:0}
td.reports{white-space:normal;text-align:left;font-size:12px;color:#333}
td.reports div{display:inline;margin-right:1.2em}
.kv{display:inline-block;margin:0 .7em 0 0;white-space:nowrap} .kv i{font-style:normal;color:#777}
.kind{font-weight:600;margin-right:.4em} .ago{color:#888}
.ref{color:#555;font-style:italic}
.note{color:#555;font-size:12px;max-width:72em;margin:.4em 0 0}
.charts{display:flex;flex-wrap:wrap;gap:.8em}
.chart{background:#fff;box-shadow:0 0 0 1px #ddd;padding:.4em .6em;flex:1 1 26em;max-width:40em;min-width:18em}
.chart .title{font-weight:600;font-size:13px} .chart .what{font-size:11px;color:#777}
.chart .legend{font-size:12px;color:#555;min-height:1.2em}
.chart .legend span{margin-right:.8em;white-space:nowrap} .chart svg{display:block;width:100%;height:auto}
.chart svg text{font:10px system-ui,sans-serif;fill:#777} .chart .empty{fill:#aaa;font-size:12px}
#events{font-family:ui-monospace,monospace;font-size:12px;white-space:pre;background:#fff;padding:.5em;
box-shadow:0 0 0 1px #ddd;max-height:18em;overflow:auto}
#trace-form label{margin-right:.8em;white-space:nowrap} #trace-form input[type=text]{font:inherit}
#trace-tree{font-family:ui-monospace,monospace;font-size:12px;white-space:pre;background:#fff;padding:.5em;
box-shadow:0 0 0 1px #ddd;overflow:auto;max-height:30em;margin:.5em 0 0} #trace-tree:empty{display:none}
</style></head><body>
<h1>natsedge fleet</h1><div class="meta" id="meta">loading…</div>
<h2>Hub</h2><div class="cards" id="hub"></div>
<div id="nodes"></div>
<div id="js"></div>
<h2>Over time</h2><div class="charts" id="charts"></div>
<h2>Edges</h2><div class="wrap"><table id="edges"></table></div>
<p class="note" id="heapnote"></p>
<h2>Trace a message</h2>
<form id="trace-form"><label>subject <input type="text" id="trace-subject" size="28" required></label>
<label>payload <input type="text" id="trace-payload" size="20"></label>
<label><input type="checkbox" id="trace-only"> trace only (no client gets it)</label>
<button type="submit" id="trace-go">Trace</button> <span id="trace-status" class="meta"></span></form>
<pre id="trace-tree"></pre>
<h2>Events</h2><div id="events"></div>
<script>
"use strict";
const SVG = (() => { const d = document.createElement("div"); d.innerHTML = "<svg></svg>";
  return d.firstChild.namespaceURI; })();  // the SVG namespace, as the HTML parser gives it (no URL in the page)
const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2",
  "#7f7f7f", "#bcbd22", "#393b79", "#637939"];
function el(tag, text, cls) { const e = document.createElement(tag); if (text !== undefined && text !== null)
  e.textContent = String(text); if (cls) e.className = cls; return e; }
function sv(tag, attrs, text) { const e = document.createElementNS(SVG, tag);
  for (const k in attrs) e.setAttribute(k, attrs[k]); if (text !== undefined) e.textContent = text; return e; }
function fmt(n) { if (n === null || n === undefined) return "-"; if (typeof n !== "number") return String(n);
  if (Math.abs(n) >= 1e9) return (n / 1e9).toFixed(2) + "G"; if (Math.abs(n) >= 1e6) return (n / 1e6).toFixed(2) + "M";
  if (Math.abs(n) >= 1e4) return (n / 1e3).toFixed(1) + "k"; return String(Math.round(n * 100) / 100); }
function kb(n) { return typeof n === "number" ? (n / 1000).toFixed(1) + " KB" : "-"; }
function card(parent, label, value, cls, title) { const c = el("div", null, "card"); c.appendChild(el("b", value, cls));
  c.appendChild(el("span", label)); if (title) c.title = title; parent.appendChild(c); return c; }
// head: [label, tooltip] pairs or labels; a cell is text, a Node, or {node, cls}
function table(t, head, rows) { t.replaceChildren(); const tr = el("tr");
  head.forEach(h => { const th = el("th", Array.isArray(h) ? h[0] : h); if (Array.isArray(h)) th.title = h[1];
    tr.appendChild(th); }); t.appendChild(tr);
  rows.forEach(r => { const row = el("tr"), sub = r.sub; if (sub) { r = r.cells; row.className = "edge"; }
    r.forEach(c => { const td = el("td");
    if (c && c.node) { td.appendChild(c.node); if (c.cls) td.className = c.cls; }
    else if (c instanceof Node) td.appendChild(c); else td.textContent = c; row.appendChild(td); });
    t.appendChild(row);
    if (sub) { const tr = el("tr", null, "sub"); tr.appendChild(el("td"));  // under the row: spans the table
      const td = el("td", null, sub.cls); td.colSpan = head.length - 1;
      if (sub.node) td.appendChild(sub.node); else td.textContent = sub; tr.appendChild(td); t.appendChild(tr); } }); }
function kv(parent, k, v, cls) { const s = el("span", null, "kv" + (cls ? " " + cls : ""));
  s.appendChild(el("i", k + " ")); s.appendChild(document.createTextNode(v)); parent.appendChild(s);
  parent.appendChild(document.createTextNode(" ")); }
// a value as words, never as JSON: scalars as they are, lists and objects by their size
function word(v) { if (v === null || v === undefined) return "-"; if (typeof v === "boolean") return v ? "yes" : "no";
  if (typeof v === "number") return fmt(v);
  if (Array.isArray(v)) return v.length + (v.length === 1 ? " item" : " items");
  if (typeof v === "object") return Object.keys(v).length + " fields"; const t = String(v);
  return t.length > 40 ? t.slice(0, 39) + "…" : t; }
// "key: value" lines of everything in an object, nested keys joined by dots (for tooltips)
function lines(v, prefix, out) { out = out || [];
  if (v !== null && typeof v === "object") { for (const k of Object.keys(v)) {
    const name = Array.isArray(v) ? (v[k] && v[k].name ? v[k].name : k) : k;
    lines(v[k], prefix ? prefix + "." + name : name, out); } }
  else out.push(prefix + ": " + (v === null ? "-" : String(v)));
  return out; }
const FWD_FIELDS = [["backlog", "backlog"], ["inflight", "in flight"], ["oldest_age", "oldest s"],
  ["dropped", "dropped"], ["expired", "expired"], ["rejected", "rejected"], ["errors", "errors"]];
function reports(e) {  // what the edge says about itself: forward queues, workloads, any other $EDGE.<name>.<kind>
  const box = el("div"), es = e.status || null, last = Object.assign({}, es ? es.last : {});
  if (e.forward) last.forward = e.forward;  // the sim's copy from the edge's own output: fresh during partitions
  const kinds = Object.keys(last).sort((a, b) => (a !== "forward") - (b !== "forward"));
  if (!kinds.length) return {node: el("span", "reports nothing about itself yet", "ago"), cls: "reports"};
  for (const kind of kinds) { const v = last[kind], line = el("div"); line.appendChild(el("span", kind, "kind"));
    line.appendChild(document.createTextNode(" "));
    if (kind === "forward" && v && Array.isArray(v.queues)) {
      if ("up" in v) kv(line, "hub", v.up ? "up" : "down", v.up ? "ok" : "warn");
      v.queues.forEach(q => {
        kv(line, "queue", (q.name || "?") + (q.state && q.state !== "up" ? " (" + q.state + ")" : ""));
        FWD_FIELDS.forEach(([k, label]) => { if (typeof q[k] === "number" && (q[k] || k === "backlog"))
          kv(line, label, fmt(q[k]), k === "backlog" || k === "inflight" || k === "oldest_age" ? "" : "warn"); }); });
    } else if (kind === "workloads" && v && Array.isArray(v.workloads)) {  // docs/workloads.md: one entry each
      if (!v.workloads.length) kv(line, "none", "-");
      v.workloads.forEach(w => {
        kv(line, word(w.name), word(w.version) + " " + word(w.state), w.state === "running" ? "" : "warn");
        if (w.wanted !== w.version) kv(line, "wants", word(w.wanted), "warn");
        kv(line, "requests", fmt(w.requests)); if (w.errors) kv(line, "errors", fmt(w.errors), "warn");
        kv(line, "heap", fmt(w.heap)); });
    } else if (v !== null && typeof v === "object") { const keys = Object.keys(v);
      keys.slice(0, 6).forEach(k => kv(line, k, word(v[k])));
      if (keys.length > 6) kv(line, "+", (keys.length - 6) + " more");
    } else line.appendChild(document.createTextNode(word(v)));
    line.title = lines(v, kind).join("\n"); box.appendChild(line); box.appendChild(document.createTextNode(" ")); }
  const age = e.backlog_age_s !== undefined && e.backlog_age_s !== null ? e.backlog_age_s : es ? es.age_s : null;
  if (age !== null && age !== undefined) box.appendChild(el("span", age + " s ago", "ago"));
  return {node: box, cls: "reports"};
}
function tlabel(t) { t = Math.round(t);
  return t >= 60 ? Math.floor(t / 60) + "m" + String(t % 60).padStart(2, "0") + "s" : t + "s"; }
// One line chart as inline SVG: x = the history's t (s), series [{name, values}], marks [{t, text}] as dashed lines.
function chart(box, title, unit, t, series, marks) {
  const W = 460, H = 150, L = 44, R = 8, T = 8, B = 18, div = el("div", null, "chart");
  div.appendChild(el("div", title, "title")); div.appendChild(el("div", unit, "what"));
  const legend = el("div", null, "legend"); div.appendChild(legend);
  const svg = sv("svg", {viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": title}); div.appendChild(svg);
  box.appendChild(div);
  const n = t.length, t0 = n ? t[0] : 0, t1 = n ? Math.max(t[n - 1], t0 + 1) : 1;
  let ymax = 0; series.forEach(s => s.values.forEach(v => { if (typeof v === "number" && v > ymax) ymax = v; }));
  ymax = ymax <= 0 ? 1 : ymax * 1.1; if (ymax > 4) ymax = Math.ceil(ymax);
  const x = v => L + (v - t0) / (t1 - t0) * (W - L - R), y = v => H - B - v / ymax * (H - T - B);
  [0, 0.5, 1].forEach(f => { const yy = y(f * ymax);
    svg.appendChild(sv("line", {x1: L, x2: W - R, y1: yy, y2: yy, stroke: f ? "#eee" : "#bbb"}));
    svg.appendChild(sv("text", {x: L - 4, y: yy + 3, "text-anchor": "end"}, fmt(Math.round(f * ymax * 10) / 10))); });
  svg.appendChild(sv("text", {x: L, y: H - 4}, "t=" + tlabel(t0)));
  svg.appendChild(sv("text", {x: W - R, y: H - 4, "text-anchor": "end"}, "t=" + tlabel(t1)));
  (marks || []).forEach(m => { if (m.t < t0 || m.t > t1) return; const g = sv("g", {class: "mark"});
    g.appendChild(sv("line", {x1: x(m.t), x2: x(m.t), y1: T, y2: H - B, stroke: "#c99", "stroke-dasharray": "3,3"}));
    g.appendChild(sv("text", {x: x(m.t) + 2, y: T + 8}, m.text[0].toUpperCase()));
    g.appendChild(sv("title", {}, `${m.t.toFixed(1)} s: ${m.text}`)); svg.appendChild(g); });
  let any = false;
  series.forEach((s, i) => { const color = COLORS[i % COLORS.length]; let d = "", pts = 0, pen = false;
    s.values.forEach((v, j) => { if (typeof v !== "number") { pen = false; return; }
      d += (pen ? "L" : "M") + x(t[j]).toFixed(1) + " " + y(v).toFixed(1) + " "; pen = true; pts++; });
    const lastv = [...s.values].reverse().find(v => typeof v === "number");
    const item = el("span", `● ${s.name} ${lastv === undefined ? "-" : fmt(lastv)}`); item.style.color = color;
    legend.appendChild(item);
    if (!pts) return; any = true;
    const path = sv("path", {d: d.trim(), fill: "none", stroke: color, "stroke-width": 1.6, "data-series": s.name,
      "data-points": pts, "data-max": Math.max(...s.values.filter(v => typeof v === "number"))});
    path.appendChild(sv("title", {}, s.name)); svg.appendChild(path);
    const j = s.values.lastIndexOf(lastv);
    svg.appendChild(sv("circle", {cx: x(t[j]).toFixed(1), cy: y(lastv).toFixed(1), r: 2.2, fill: color})); });
  if (!any) svg.appendChild(sv("text", {x: (L + W) / 2, y: H / 2, "text-anchor": "middle", class: "empty"},
    "no data yet"));
}
function charts(s) {
  const h = s.history, box = document.getElementById("charts"); box.replaceChildren();
  if (!h || !h.t) return;
  const marks = (s.events || []).filter(e => /^(partition|crash|hub |node )/.test(e.text));
  const names = Object.keys(h.edges || {});
  chart(box, "Hub messages/s", "from the hub's /varz counters; dashed: faults (P partition, C crash, H hub)", h.t,
    [{name: "in", values: h.hub_in}, {name: "out", values: h.hub_out}], marks);
  chart(box, "Backlog per edge", "messages waiting on the edge to go to the hub", h.t,
    names.map(n => ({name: n, values: h.edges[n].backlog})), marks);
  chart(box, "Messages/s from each edge", "what the hub got on its leaf connection (hub /leafz)", h.t,
    names.map(n => ({name: n, values: h.edges[n].leaf_in})), marks);
}
function render(s) {
  const sim = s.sim || {}, hub = s.hub || {}, srv = hub.server || {}, rates = hub.rates || {};
  let meta = s.source === "sim" ? `scenario ${sim.scenario} · ${sim.phase} · t=${sim.t}s` +
    (sim.duration ? ` of ${sim.duration}s` : " (until Ctrl-C)") : "hub view";
  meta += ` · ${hub.description || hub.monitor || ""}`;
  if (sim.stream && sim.stream !== "not configured") meta += ` · stream: ${sim.stream}`;
  document.getElementById("meta").textContent = meta;
  const h = document.getElementById("hub"); h.replaceChildren();
  if (hub.reachable === false) card(h, "monitoring", "unreachable", "bad");
  const per = hub.rates_interval_s ? `change of the hub's /varz counter over ${hub.rates_interval_s} s` : "";
  card(h, "server", srv.server_name ? srv.server_name.slice(0, 12) : "-");
  card(h, "version", srv.version || "-"); card(h, "uptime", srv.uptime || "-");
  card(h, "connections", fmt(srv.connections)); card(h, "leafnodes", fmt(srv.leafnodes));
  card(h, "msgs in", fmt(srv.in_msgs)); card(h, "msgs out", fmt(srv.out_msgs));
  card(h, "in msgs/s", fmt(rates.in_msgs), "", per).id = "rate-in";
  card(h, "out msgs/s", fmt(rates.out_msgs), "", per).id = "rate-out";
  card(h, "bytes in", fmt(srv.in_bytes)); card(h, "bytes out", fmt(srv.out_bytes));
  card(h, "slow consumers", fmt(srv.slow_consumers), srv.slow_consumers ? "warn" : "");
  if (hub.restarts) card(h, "hub restarts", hub.restarts, "warn");
  const nodes = hub.nodes || [], cluster = nodes.length > 1, nd = document.getElementById("nodes");
  nd.replaceChildren();
  if (cluster) { nd.appendChild(el("h2", "Hub nodes")); const t = el("table"); nd.appendChild(t);
    table(t, ["node", "kind", "state", "pid", "JetStream", "kills", "starts", "restarts", "client", "leafnodes"],
      nodes.map(n => [n.name, n.kind, el("span", n.state, n.state === "running" ? "ok" : "bad"), fmt(n.pid),
        n.jetstream ? "yes" : "no", fmt(n.kills), fmt(n.starts), fmt(n.restarts), n.client_url, n.leaf_url])); }
  const js = document.getElementById("js"); js.replaceChildren();
  if (hub.jetstream) { js.appendChild(el("h2", "JetStream"));
    const t = el("table"); js.appendChild(t);
    table(t, ["stream", "account", "messages", "bytes", "first seq", "last seq", "consumers"],
      (hub.jetstream.stream_list || []).map(x => [x.name, x.account, fmt(x.messages), fmt(x.bytes), fmt(x.first_seq),
        fmt(x.last_seq), fmt(x.consumers)]));
    if (!(hub.jetstream.stream_list || []).length) js.appendChild(el("div", "no streams", "meta")); }
  charts(s);
  const leafs = {}; (hub.leafs || []).forEach(l => { leafs[l.name] = l; });
  const eh = sim.edge_heap || null, bits = eh && eh.bits ? eh.bits + "-bit" : "";
  const where = bits ? ` (${bits} unix port, code in the heap)` : "", isSim = s.source === "sim";
  const ref = (s.edges || []).map(e => e.frozen32).find(x => x) || null;
  // [header, tooltip, cell of an edge, shown when]: the simulator's own figures only in a simulation
  const cols = [
    ["edge", null, e => e.name, true],
    ["state", null, e => { let state = e.state || "-"; if (e.partitioned) state = "partitioned (" + e.partitioned + ")";
      return el("span", state, e.partitioned || ["crashed", "exited", "failed"].includes(state) ? "bad"
        : (e.link_up ? "ok" : "warn")); }, true],
    [cluster ? "on " + nodes[0].name : "on hub", "its leaf connection is in the hub's /leafz",
      e => (leafs[e.name] || e.leaf) ? "yes" : "no", true],
    ["node", "the hub node of its link", e => { const hn = e.hub || {};
      return hn.node ? hn.node + (e.link_up ? "" : "?") : "-"; }, cluster],
    ["node switches", null, e => fmt((e.hub || {}).node_switches), cluster],
    ["failovers", "as the edge reports them", e => fmt((e.hub || {}).failovers), cluster],
    ["boots", null, e => fmt(e.boots), isSim],
    ["published", null, e => fmt((e.messages || {}).published), isSim],
    ["at hub", "its telemetry the hub delivered", e => fmt((e.messages || {}).received), isSim],
    ["lost", "published but not (yet) at the hub", e => fmt((e.messages || {}).lost), isSim],
    ["not fwd", "published while the uplink did not take it at once (queued, or no link)",
      e => fmt((e.messages || {}).not_forwarded), isSim],
    ["backlog", "messages in its forward queues, not yet acknowledged by the hub stream",
      e => fmt(e.backlog !== undefined ? e.backlog : e.status ? e.status.backlog : null), true],
    ["reconnects", null, e => fmt(e.reconnects), isSim],
    ["req ok", "requests answered / sent", e => { const q = e.requests || {};
      return q.sent !== undefined ? `${q.ok}/${q.sent}` : "-"; }, isSim],
    ["crashes ok", "back on the hub after / injected crashes",
      e => e.crashes !== undefined ? `${e.crashes_survived}/${e.crashes}` : "-", isSim],
    ["heap", "gc.mem_alloc() after gc.collect(), now" + where, e => kb((e.heap || {}).last), isSim],
    ["heap peak", "highest heap figure so far" + where, e => kb((e.heap || {}).peak), isSim],
    ["heap at ready", "heap once started, before its app" + where, e => kb((e.heap || {}).ready), isSim],
    ["frozen 32-bit at ready †", "the same edge frozen into a 32-bit MicroPython (as on an ESP32): ready heap, a " +
      "reference figure from docs/benchmarks.md, not measured here", e => { if (!e.frozen32) return "-";
      const x = el("span", kb(e.frozen32.ready) + " †", "ref");
      x.title = `reference, not measured here: ${e.frozen32.config}, ready heap; ${e.frozen32.source}`; return x; },
      isSim],
  ].filter(c => c[3]);
  table(document.getElementById("edges"), cols.map(c => c[1] ? [c[0], c[1]] : c[0]),
    (s.edges || []).map(e => ({cells: cols.map(c => c[2](e)), sub: reports(e)})));
  const note = document.getElementById("heapnote"); note.replaceChildren();
  if (s.edges && s.edges.length && eh) {
    note.textContent = `Heap columns: gc.mem_alloc() after gc.collect(), as each simulated edge reports it, on the ` +
      `${bits || "?"} MicroPython unix port with the edge's code ${eh.code}` +
      (eh.bits === 64 ? " and 8-byte pointers" : "") + ". " + (ref ? `† The same edge frozen into a 32-bit ` +
      `MicroPython (code in flash, 4-byte pointers, as on an ESP32) is ready at ${kb(ref.ready)} in the closest ` +
      `configuration measured there (${ref.config}): a reference figure from ${ref.source}, not measured in ` +
      `this run.` : ""); }
  document.getElementById("events").textContent =
    (s.events || []).slice().reverse().map(e => `${e.t.toFixed(2).padStart(8)}s  ${e.text}`).join("\n");
  window.renders = (window.renders || 0) + 1;
}
// the trace view: one traced message through the dashboard's connection to the hub, the path as natsedge trace
// prints it
document.getElementById("trace-form").addEventListener("submit", async ev => { ev.preventDefault();
  const go = document.getElementById("trace-go"), status = document.getElementById("trace-status");
  const tree = document.getElementById("trace-tree");
  const q = new URLSearchParams({subject: document.getElementById("trace-subject").value,
    payload: document.getElementById("trace-payload").value,
    only: document.getElementById("trace-only").checked ? "1" : ""});
  go.disabled = true; status.className = "meta"; status.textContent = "tracing…";
  try { const r = await fetch("/trace.json?" + q, {cache: "no-store"}), t = await r.json();
    tree.textContent = (t.lines || []).join("\n");
    status.className = t.error ? "bad" : "meta";
    status.textContent = t.error || `${t.events.length} event${t.events.length === 1 ? "" : "s"}`; }
  catch (err) { status.className = "bad"; status.textContent = "dashboard unreachable: " + err; }
  finally { go.disabled = false; window.traces = (window.traces || 0) + 1; } });
async function tick() {
  try { const r = await fetch("/state.json", {cache: "no-store"}); render(await r.json()); }
  catch (err) { document.getElementById("meta").textContent = "dashboard unreachable: " + err; }
  setTimeout(tick, 1500);
}
tick();
</script></body></html>
"""
