"""The fleet dashboard: one HTML page (no external JS or CSS) and one JSON endpoint, `/state.json`.

Served by `natsedge sim --dashboard HOST:PORT` (hub + the simulator's own figures per edge), or on its own by
`natsedge dashboard --monitor URL [--nats URL]` for any hub: then edges come from the hub's `/leafz` and from what
edges publish about themselves on `$EDGE.<name>.<kind>` (sim/edgestatus.py). The page polls `/state.json` every 1.5 s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from sim.client import Client, parse_url
from sim.edgestatus import SUBJECT as STATUS_SUBJECT
from sim.edgestatus import EdgeStatus, split_subject
from sim.hub import http_get

_MAX_REQUEST = 8192
MAX_STATUS_EDGES = 1000  # standalone: edge names kept from $EDGE.*.* (a bound against a noisy hub)


class HubMonitor:
    """The hub's monitoring endpoints, fetched at most once a second however many pages poll."""

    def __init__(self, url: str, ttl: float = 1.0) -> None:
        self.url = url.rstrip("/")
        self.ttl = ttl
        self._at = 0.0
        self._view: dict[str, Any] = {}
        self._inflight: asyncio.Future[dict[str, Any]] | None = None

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
        out: dict[str, Any] = {"monitor": self.url, "reachable": varz is not None}
        if isinstance(varz, dict):
            out["server"] = {k: varz.get(k) for k in (
                "server_name", "version", "uptime", "connections", "total_connections", "leafnodes", "in_msgs",
                "out_msgs", "in_bytes", "out_bytes", "slow_consumers", "subscriptions", "mem", "cpu")}
        if isinstance(leafz, dict):
            out["leafs"] = [{k: leaf.get(k) for k in ("name", "ip", "port", "rtt", "in_msgs", "out_msgs",
                                                     "subscriptions")} for leaf in leafz.get("leafs") or []]
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


class Dashboard:
    def __init__(self, state: Callable[[], Awaitable[dict[str, Any]]], host: str, port: int) -> None:
        self.state = state
        self.host = host
        self.port = port
        self.requests = 0
        self._server: asyncio.AbstractServer | None = None

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host
        return f"http://{host}:{self.port}/"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port, limit=_MAX_REQUEST)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
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
                path = words[1].split("?", 1)[0]
                if path in ("/", "/index.html"):
                    status, ctype, body = 200, "text/html; charset=utf-8", PAGE.encode()
                elif path == "/state.json":
                    status, ctype = 200, "application/json"
                    body = json.dumps(await self.state()).encode()
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

    dash = Dashboard(state, *listen)
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

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>natsedge fleet</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:1.2em;color:#222;background:#fafafa}
h1{font-size:1.3em;margin:0 0 .3em} h2{font-size:1.05em;margin:1.2em 0 .4em}
.meta{color:#666} .bad{color:#b00020} .ok{color:#1b7f3b} .warn{color:#a36200}
table{border-collapse:collapse;background:#fff;box-shadow:0 0 0 1px #ddd}
th,td{padding:.25em .6em;text-align:right;border-bottom:1px solid #eee;white-space:nowrap}
th{background:#f0f0f0;font-weight:600} td:first-child,th:first-child{text-align:left}
.cards{display:flex;flex-wrap:wrap;gap:.6em} .card{background:#fff;box-shadow:0 0 0 1px #ddd;padding:.5em .8em}
.card b{display:block;font-size:1.3em} code{font-size:.9em;color:#444}
.status{max-width:28em;overflow:hidden;text-overflow:ellipsis;text-align:left}
#events{font-family:ui-monospace,monospace;font-size:12px;white-space:pre;background:#fff;padding:.5em;
box-shadow:0 0 0 1px #ddd;max-height:18em;overflow:auto}
</style></head><body>
<h1>natsedge fleet</h1><div class="meta" id="meta">loading…</div>
<h2>Hub</h2><div class="cards" id="hub"></div>
<div id="nodes"></div>
<div id="js"></div>
<h2>Edges</h2><table id="edges"></table>
<h2>Events</h2><div id="events"></div>
<script>
"use strict";
let last = null;
function el(tag, text, cls) { const e = document.createElement(tag); if (text !== undefined && text !== null)
  e.textContent = String(text); if (cls) e.className = cls; return e; }
function fmt(n) { if (n === null || n === undefined) return "-"; if (typeof n !== "number") return String(n);
  if (Math.abs(n) >= 1e9) return (n / 1e9).toFixed(2) + "G"; if (Math.abs(n) >= 1e6) return (n / 1e6).toFixed(2) + "M";
  if (Math.abs(n) >= 1e4) return (n / 1e3).toFixed(1) + "k"; return String(Math.round(n * 100) / 100); }
function card(parent, label, value, cls) { const c = el("div", null, "card"); c.appendChild(el("b", value, cls));
  c.appendChild(el("span", label)); parent.appendChild(c); }
function table(t, head, rows) { t.replaceChildren(); const tr = el("tr");
  head.forEach(h => tr.appendChild(el("th", h))); t.appendChild(tr); rows.forEach(r => { const row = el("tr");
  r.forEach(c => { if (c instanceof Node) { const td = el("td"); td.appendChild(c); row.appendChild(td); }
  else row.appendChild(el("td", c)); }); t.appendChild(row); }); }
function rate(now, prev, key, dt) { if (!prev || !dt) return null; const a = now[key], b = prev[key];
  return (typeof a === "number" && typeof b === "number") ? (a - b) / dt : null; }
function render(s) {
  const sim = s.sim || {}, hub = s.hub || {}, srv = hub.server || {};
  let meta = s.source === "sim" ? `scenario ${sim.scenario} · ${sim.phase} · t=${sim.t}s` +
    (sim.duration ? ` of ${sim.duration}s` : " (until Ctrl-C)") : "hub view";
  meta += ` · ${hub.description || hub.monitor || ""}`;
  if (sim.stream && sim.stream !== "not configured") meta += ` · stream: ${sim.stream}`;
  document.getElementById("meta").textContent = meta;
  const h = document.getElementById("hub"); h.replaceChildren();
  if (hub.reachable === false) card(h, "monitoring", "unreachable", "bad");
  const dt = last ? (s._at - last._at) / 1000 : 0, prev = last && last.hub && last.hub.server;
  card(h, "server", srv.server_name ? srv.server_name.slice(0, 12) : "-");
  card(h, "version", srv.version || "-"); card(h, "uptime", srv.uptime || "-");
  card(h, "connections", fmt(srv.connections)); card(h, "leafnodes", fmt(srv.leafnodes));
  card(h, "msgs in", fmt(srv.in_msgs)); card(h, "msgs out", fmt(srv.out_msgs));
  card(h, "in msgs/s", fmt(rate(srv, prev, "in_msgs", dt)));
  card(h, "out msgs/s", fmt(rate(srv, prev, "out_msgs", dt)));
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
  const leafs = {}; (hub.leafs || []).forEach(l => { leafs[l.name] = l; });
  const rows = (s.edges || []).map(e => {
    const m = e.messages || {}, q = e.requests || {}, hp = e.heap || {};
    let state = e.state || "-"; if (e.partitioned) state = "partitioned (" + e.partitioned + ")";
    const cls = e.partitioned || state === "crashed" || state === "exited" || state === "failed" ? "bad"
      : (e.link_up ? "ok" : "warn");
    const st = el("span", state, cls);
    const es = e.status || null;
    const status = es ? JSON.stringify(es.last) : "-";
    const sc = el("div", status, "status"); sc.title = status;
    const leaf = leafs[e.name] || e.leaf, hn = e.hub || {};
    const node = cluster ? [hn.node ? hn.node + (e.link_up ? "" : "?") : "-", fmt(hn.node_switches),
      fmt(hn.failovers)] : [];
    return [e.name, st, leaf ? "yes" : "no", ...node, fmt(e.boots), fmt(m.published), fmt(m.received), fmt(m.lost),
      fmt(m.not_forwarded), fmt(es ? es.backlog : null), fmt(e.reconnects),
      q.sent !== undefined ? `${q.ok}/${q.sent}` : "-",
      e.crashes !== undefined ? `${e.crashes_survived}/${e.crashes}` : "-", fmt(hp.last), fmt(hp.peak),
      es ? es.age_s + "s" : "-", sc];
  });
  table(document.getElementById("edges"), ["edge", "state", cluster ? "on " + nodes[0].name : "on hub",
    ...(cluster ? ["node", "node switches", "failovers"] : []), "boots", "published", "at hub", "lost",
    "not fwd", "backlog", "reconnects", "req ok", "crashes ok", "heap", "heap peak", "status age", "status"], rows);
  document.getElementById("events").textContent =
    (s.events || []).slice().reverse().map(e => `${e.t.toFixed(2).padStart(8)}s  ${e.text}`).join("\\n");
  last = s;
}
async function tick() {
  try { const r = await fetch("/state.json", {cache: "no-store"}); const s = await r.json(); s._at = Date.now();
    render(s); }
  catch (err) { document.getElementById("meta").textContent = "dashboard unreachable: " + err; }
  setTimeout(tick, 1500);
}
tick();
</script></body></html>
"""
