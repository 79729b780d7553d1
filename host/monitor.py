"""Monitoring HTTP endpoints with nats-server's JSON field names (nats-server `monitor.go`).

/varz, /connz, /subsz, /healthz, /accountz, /routez, /gatewayz, /leafz; GET only, JSON bodies. A tiny
HTTP/1.1 server on asyncio streams: monitoring is low-rate and must never block the router.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import resource
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from host.gateway import Gateway, url_hostport
from host.gotime import format_duration
from host.leafnode import leaf_json
from host.subject_transform import Mapping
from host.sublist import Subscription

if TYPE_CHECKING:
    from host.client import Client
    from host.route import Router
    from host.server import Server

_MAX_REQUEST = 8192


def rfc3339(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def go_duration(seconds: float) -> str:
    """Render like Go's time.Duration rounded to seconds, as nats-server's uptime ("1h2m3s")."""
    s = int(seconds)
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    out = ""
    if d:
        out += f"{d}d"
    if d or h:
        out += f"{h}h"
    if d or h or m:
        out += f"{m}m"
    return out + f"{s}s"


def conn_info(server: Server, c: Client, subs: bool = False, detail: bool = False) -> dict[str, Any]:
    now = datetime.datetime.now(datetime.UTC).timestamp()
    t = c.transport
    info: dict[str, Any] = {
        "cid": c.cid,
        "kind": c.kind,
        "type": "nats",
        "ip": c.ip,
        "port": c.port,
        "start": rfc3339(c.start),
        "last_activity": rfc3339(c.last_activity),
        "rtt": "0s",
        "uptime": go_duration(now - c.start),
        "idle": go_duration(now - c.last_activity),
        "pending_bytes": t.get_write_buffer_size() if t is not None and not t.is_closing() else 0,
        "in_msgs": c.in_msgs,
        "out_msgs": c.out_msgs,
        "in_bytes": c.in_bytes,
        "out_bytes": c.out_bytes,
        "subscriptions": len(c.subs),
    }
    if c.name:
        info["name"] = c.name
    if c.lang:
        info["lang"] = c.lang
    if c.version:
        info["version"] = c.version
    if c.user:
        info["authorized_user"] = c.user
    if c.account is not None:
        info["account"] = c.account.name
    if subs and c.subs:
        if detail:
            info["subscriptions_list_detail"] = [_sub_detail(s) for s in c.subs.values()]
        else:
            info["subscriptions_list"] = [s.subject.decode(errors="replace") for s in c.subs.values()]
    return info


def _sub_detail(s: Subscription) -> dict[str, Any]:
    d: dict[str, Any] = {
        "account": s.conn.account.name if s.conn is not None and s.conn.account else "",
        "subject": s.subject.decode(errors="replace"),
        "sid": s.sid.decode(errors="replace"),
        "msgs": s.delivered,
        "cid": s.conn.cid if s.conn is not None else 0,
    }
    if s.queue:
        d["qgroup"] = s.queue.decode(errors="replace")
    if s.max is not None:
        d["max"] = s.max
    return d


def _rss() -> int:
    try:
        with open(f"/proc/{os.getpid()}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def varz(server: Server, q: dict[str, list[str]]) -> dict[str, Any]:
    o = server.opts
    now = datetime.datetime.now(datetime.UTC).timestamp()
    ru = resource.getrusage(resource.RUSAGE_SELF)
    cpu_s = ru.ru_utime + ru.ru_stime
    return {
        "server_id": server.id,
        "server_name": server.name,
        "version": server._info_base.get("version"),
        "proto": 1,
        "go": server._info_base.get("go"),
        "host": o.host,
        "port": server.client_port,
        "auth_required": server.auth_required,
        "max_connections": o.max_connections,
        "ping_interval": int(o.ping_interval * 1e9),
        "ping_max": o.ping_max,
        "http_host": o.http_host or o.host,
        "http_port": server.http_port,
        "http_base_path": "",
        "https_port": 0,
        "auth_timeout": o.auth_timeout,
        "max_control_line": o.max_control_line,
        "max_payload": o.max_payload,
        "max_pending": o.max_pending,
        "cluster": _cluster_varz(server),
        "gateway": _gateway_varz(server),
        "leaf": {"host": o.leafnodes.host, "port": server.leaf_port} if o.leafnodes.port else {},
        "mqtt": {},
        "websocket": {},
        "jetstream": server.js.varz() if server.js is not None else {},
        "tls_timeout": o.tls_timeout,
        "write_deadline": int(o.write_deadline * 1e9),
        "start": rfc3339(server.start_time),
        "now": rfc3339(now),
        "uptime": go_duration(now - server.start_time),
        "mem": _rss(),
        "cores": os.cpu_count() or 1,
        "gomaxprocs": 1,
        "cpu": round(100.0 * cpu_s / max(now - server.start_time, 1e-3), 2),
        "connections": len(server.clients),
        "total_connections": server.total_connections,
        "routes": len(server.routes),
        "remotes": 0,
        "leafnodes": len(server.leafs),
        "in_msgs": server.in_msgs,
        "out_msgs": server.out_msgs,
        "in_bytes": server.in_bytes,
        "out_bytes": server.out_bytes,
        "slow_consumers": server.slow_consumers,
        "stale_connections": server.stale_connections,
        "subscriptions": server.num_subscriptions(),
        "http_req_stats": dict(server.http_req_stats),
        "config_load_time": rfc3339(server.config_load_time),
        "system_account": "$SYS",
        "slow_consumer_stats": {"clients": server.slow_consumers, "routes": 0, "gateways": 0, "leafs": 0},
        **({"connect_urls": server.connect_urls} if server.connect_urls else {}),
        **({"tls_required": True, "tls_verify": o.tls_verify} if server.client_tls is not None else {}),
    }


def _cluster_varz(server: Server) -> dict[str, Any]:
    co = server.opts.cluster
    if not co.enabled:
        return {}
    out: dict[str, Any] = {
        "name": server.cluster_name,
        "addr": co.host,
        "cluster_port": server.cluster_port,
        "auth_timeout": co.auth_timeout or server.opts.auth_timeout,
        "tls_timeout": co.tls_timeout,
    }
    if server.route_tls is not None:
        out["tls_required"] = out["tls_verify"] = True
    if co.routes:
        out["urls"] = [u.split("://", 1)[-1].rsplit("@", 1)[-1].rstrip("/") for u in co.routes]
    return out


def _gateway_varz(server: Server) -> dict[str, Any]:
    """nats-server's varz `gateway`: this cluster's gateway port and every remote cluster we dial (configured or
    implicit) with its URLs."""
    go = server.opts.gateway
    if not go.enabled:
        return {}
    out: dict[str, Any] = {
        "name": server.gateway_name,
        "host": go.host,
        "port": server.gateway_port,
        "auth_timeout": go.auth_timeout or server.opts.auth_timeout,
        "tls_timeout": go.tls_timeout,
    }
    if server.gateway_tls is not None:
        out["tls_required"] = out["tls_verify"] = True
    if go.advertise:
        out["advertise"] = go.advertise
    if go.connect_retries:
        out["connect_retries"] = go.connect_retries
    if go.reject_unknown_cluster:
        out["reject_unknown"] = True
    remotes = [{"name": name, "urls": [url_hostport(u) for u in d.urls]}
               for name, d in sorted(server.gateway_dialers.items())]
    if remotes:
        out["gateways"] = remotes
    return out


def gatewayz(server: Server, q: dict[str, list[str]]) -> dict[str, Any]:
    """/gatewayz (nats-server Gatewayz): the outbound connection to each remote cluster, the inbound ones from each."""
    configured = {g.name for g in server.opts.gateway.gateways}
    out: dict[str, Any] = {"server_id": server.id,
                           "now": rfc3339(datetime.datetime.now(datetime.UTC).timestamp())}
    if not server.gateway_name:
        return out
    out["name"] = server.gateway_name
    out["host"] = server.opts.gateway.host
    out["port"] = server.gateway_port
    out["outbound_gateways"] = {
        name: {"configured": name in configured, "connection": gateway_json(gw)}
        for name, gw in sorted(server.gateways_out.items())}
    inbound: dict[str, list[dict[str, Any]]] = {}
    for gw in sorted(server.gateways_in.values(), key=lambda x: x.cid):
        inbound.setdefault(gw.gateway_name, []).append({"configured": False, "connection": gateway_json(gw)})
    out["inbound_gateways"] = inbound
    return out


def gateway_json(gw: Gateway) -> dict[str, Any]:
    now = time.time()
    return {
        "cid": gw.cid,
        "kind": "Gateway",
        "ip": gw.ip,
        "port": gw.port,
        "start": rfc3339(gw.start),
        "last_activity": rfc3339(gw.last_activity),
        "rtt": format_duration(int(gw.rtt * 1e6) * 1000),  # Go's Duration, to the µs as nats-server measures it
        "uptime": go_duration(now - gw.start),
        "idle": go_duration(now - gw.last_activity),
        "pending_bytes": gw.transport.get_write_buffer_size() if gw.transport is not None else 0,
        "in_msgs": gw.in_msgs,
        "out_msgs": gw.out_msgs,
        "in_bytes": gw.in_bytes,
        "out_bytes": gw.out_bytes,
        "subscriptions": len(gw.remote_subs),
        "name": gw.remote_id,
    }


def _int(q: dict[str, list[str]], key: str, default: int) -> int:
    try:
        return int(q[key][0])
    except (KeyError, ValueError, IndexError):
        return default


def connz(server: Server, q: dict[str, list[str]]) -> dict[str, Any]:
    subs_arg = q.get("subs", [""])[0].lower()
    subs = subs_arg in ("1", "true", "detail")
    detail = subs_arg == "detail"
    state = q.get("state", ["open"])[0].lower()
    offset = max(_int(q, "offset", 0), 0)
    limit = max(_int(q, "limit", 1024), 0)
    conns: list[dict[str, Any]]
    if state == "closed":
        conns = []
        for ci in server.closed:
            d = dict(ci.conn)
            d["stop"] = rfc3339(ci.stop)
            d["reason"] = ci.reason
            if not subs:
                d.pop("subscriptions_list", None)
            conns.append(d)
    else:
        conns = [conn_info(server, c, subs, detail) for c in sorted(server.clients.values(), key=lambda c: c.cid)]
        if state == "any":
            conns += [dict(ci.conn, stop=rfc3339(ci.stop), reason=ci.reason) for ci in server.closed]
    sort = q.get("sort", [""])[0]
    if sort in ("in_msgs", "out_msgs", "in_bytes", "out_bytes", "subs", "pending"):
        key = {"subs": "subscriptions", "pending": "pending_bytes"}.get(sort, sort)
        conns.sort(key=lambda d: d.get(key, 0), reverse=True)
    total = len(conns)
    page = conns[offset : offset + limit]
    return {
        "server_id": server.id,
        "now": rfc3339(datetime.datetime.now(datetime.UTC).timestamp()),
        "num_connections": len(page),
        "total": total,
        "offset": offset,
        "limit": limit,
        "connections": page,
    }


def subsz(server: Server, q: dict[str, list[str]]) -> dict[str, Any]:
    inserts = removes = matches = hits = cache = 0
    fanouts: list[int] = []
    for acc in server.accounts.values():
        sl = acc.sublist
        inserts += sl.inserts
        removes += sl.removes
        matches += sl.matches
        hits += sl.cache_hits
        cache += sl.cache_count()
        fanouts.extend(len(r.psubs) + len(r.qsubs) for r in sl.cache.values())
    lookups = matches + hits
    out: dict[str, Any] = {
        "server_id": server.id,
        "now": rfc3339(datetime.datetime.now(datetime.UTC).timestamp()),
        "num_subscriptions": server.num_subscriptions(),
        "num_cache": cache,
        "num_inserts": inserts,
        "num_removes": removes,
        "num_matches": lookups,
        "cache_hit_rate": (hits / lookups) if lookups else 0.0,
        "max_fanout": max(fanouts, default=0),
        "avg_fanout": (sum(fanouts) / len(fanouts)) if fanouts else 0.0,
    }
    if q.get("subs", [""])[0].lower() in ("1", "true", "detail"):
        offset = max(_int(q, "offset", 0), 0)
        limit = max(_int(q, "limit", 1024), 0)
        test = q.get("test", [""])[0].encode()
        subs = []
        for acc in server.accounts.values():
            for s in acc.sublist.all():
                if s.conn is None:
                    continue
                if test and not acc.sublist.match(test).psubs.__contains__(s):
                    continue
                subs.append(_sub_detail(s))
        out.update(total=len(subs), offset=offset, limit=limit, subscriptions_list=subs[offset : offset + limit])
    else:
        out.update(total=0, offset=0, limit=1024)
    return out


def healthz(server: Server, q: dict[str, list[str]]) -> tuple[int, dict[str, Any]]:
    if server.shutting_down:
        return 503, {"status": "unavailable", "error": "server is shutting down"}
    return 200, {"status": "ok"}


def accountz(server: Server, q: dict[str, list[str]]) -> dict[str, Any] | tuple[int, dict[str, Any]]:
    """The account list, or with `?acc=NAME` that account's usage (nats-server Accountz / AccountInfo)."""
    out: dict[str, Any] = {
        "server_id": server.id,
        "now": rfc3339(datetime.datetime.now(datetime.UTC).timestamp()),
        "system_account": "$SYS",
    }
    name = q.get("acc", [""])[0]
    if not name:
        out["accounts"] = sorted(server.accounts)
        return out
    acc = server.accounts.get(name)
    if acc is None:
        return 400, {"error": f"Account {name} does not exist"}
    leafs = len(acc.leafs)
    out["account_detail"] = {
        "account_name": acc.name,
        "update_time": rfc3339(server.config_load_time),
        "expired": False,
        "complete": True,
        "jetstream_enabled": acc.js is not None,
        "leafnode_connections": leafs,
        "client_connections": len(acc.clients) - leafs,
        "subscriptions": acc.sublist.count,
    }
    if acc.mappings is not None:
        # as nats-server's ExtMap: per source its destinations with their cumulative weights (the share mapped onto
        # the source itself included), keys sorted as Go writes a map
        out["account_detail"]["mappings"] = {m.src: mapping_json(m)
                                             for m in sorted(acc.mappings.mappings, key=lambda m: m.src)}
    out["account_detail"]["name_tag"] = acc.name
    return out


def mapping_json(m: Mapping) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [{"subject": tr.dest, "weight": w} for w, tr in m.dests]
    for cluster, dests in m.cluster_dests.items():
        out += [{"subject": tr.dest, "weight": w, "cluster": cluster} for w, tr in dests]
    return out


def routez(server: Server, q: dict[str, list[str]]) -> dict[str, Any]:
    subs = q.get("subs", [""])[0].lower() in ("1", "true", "detail")
    routes = [route_json(r, subs) for r in sorted(server.routes.values(), key=lambda x: x.cid)]
    return {"server_id": server.id, "server_name": server.name,
            "now": rfc3339(datetime.datetime.now(datetime.UTC).timestamp()),
            "num_routes": len(routes), "routes": routes}


def route_json(r: Router, subs: bool = False) -> dict[str, Any]:
    now = time.time()
    out: dict[str, Any] = {
        "rid": r.cid,
        "remote_id": r.remote_id,
        "remote_name": r.remote_name,
        "did_solicit": r.dialer is not None,
        "is_configured": r.dialer is not None and r.dialer.explicit,
        "ip": r.ip,
        "port": r.port,
        "start": rfc3339(r.start),
        "last_activity": rfc3339(r.last_activity),
        "rtt": go_duration(r.rtt),
        "uptime": go_duration(now - r.start),
        "idle": go_duration(now - r.last_activity),
        "pending_size": r.transport.get_write_buffer_size() if r.transport is not None else 0,
        "in_msgs": r.in_msgs,
        "out_msgs": r.out_msgs,
        "in_bytes": r.in_bytes,
        "out_bytes": r.out_bytes,
        "subscriptions": len(r.remote_subs),
    }
    if subs and r.remote_subs:
        out["subscriptions_list"] = sorted({s.subject.decode(errors="replace") for s in r.remote_subs.values()})
    out["compression"] = "off"
    return out


def leafz(server: Server, q: dict[str, list[str]]) -> dict[str, Any]:
    subs = q.get("subs", [""])[0].lower() in ("1", "true", "detail")
    leafs = []
    for leaf in sorted(server.leafs.values(), key=lambda x: x.cid):
        d = leaf_json(leaf)
        if subs:
            d["subscriptions_list"] = sorted(
                (s + (b" " + q if q else b"")).decode(errors="replace") for s, q in leaf.leaf_subs)
        leafs.append(d)
    return {"server_id": server.id, "now": rfc3339(datetime.datetime.now(datetime.UTC).timestamp()),
            "leafnodes": len(leafs), "leafs": leafs}


def _flag(q: dict[str, list[str]], key: str) -> bool:
    """A boolean query option as Go's strconv.ParseBool reads it (1, t, true, ... ); anything else is false."""
    return q.get(key, [""])[0] in ("1", "t", "T", "TRUE", "true", "True")


def jsz(server: Server, q: dict[str, list[str]]) -> dict[str, Any]:
    """/jsz (nats-server Jsz): ?accounts=, ?streams=, ?consumers=, ?config=, ?acc=, ?offset=, ?limit=."""
    js = server.js
    if js is None:
        zero = {"memory": 0, "storage": 0, "reserved_memory": 0, "reserved_storage": 0, "accounts": 0,
                "ha_assets": 0, "api": {"level": 0, "total": 0, "errors": 0}}
        return {**zero, "server_id": server.id, "now": rfc3339(datetime.datetime.now(datetime.UTC).timestamp()),
                "disabled": True, "config": {"max_memory": 0, "max_storage": 0}, "streams": 0, "consumers": 0,
                "messages": 0, "bytes": 0, "total": 0}
    return js.jsz(accounts=_flag(q, "accounts"), streams=_flag(q, "streams"), consumers=_flag(q, "consumers"),
                  config=_flag(q, "config"), account=q.get("acc", [""])[0], offset=_int(q, "offset", 0),
                  limit=_int(q, "limit", 1024) or 1024)


ENDPOINTS = {
    "/jsz": jsz,
    "/varz": varz,
    "/connz": connz,
    "/subsz": subsz,
    "/subscriptionsz": subsz,
    "/accountz": accountz,
    "/routez": routez,
    "/gatewayz": gatewayz,
    "/leafz": leafz,
}


def handle(server: Server, target: str) -> tuple[int, Any]:
    parts = urlsplit(target)
    path = parts.path.rstrip("/") or "/"
    q = parse_qs(parts.query)
    server.http_req_stats[path] = server.http_req_stats.get(path, 0) + 1
    if path == "/healthz":
        return healthz(server, q)
    if path == "/":
        return 200, {"endpoints": sorted([*ENDPOINTS, "/healthz"])}
    fn = ENDPOINTS.get(path)
    if fn is None:
        return 404, {"error": f"unknown endpoint {path}"}
    body = fn(server, q)
    return body if isinstance(body, tuple) else (200, body)


async def _serve_http(server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        line = head.split(b"\r\n", 1)[0].decode("latin-1").split()
        if len(line) != 3 or line[0] not in ("GET", "HEAD"):
            status, body = 405, {"error": "only GET is supported"}
        else:
            status, body = handle(server, line[1])
        data = json.dumps(body, indent=2).encode()
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
                  503: "Service Unavailable"}[status]
        writer.write(
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode()
            + (data if line[0] != "HEAD" else b"")
        )
        await writer.drain()
    except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, UnicodeError,
            IndexError):
        pass
    finally:
        writer.close()


async def start_monitor(server: Server, host: str, port: int) -> tuple[asyncio.AbstractServer, int]:
    srv = await asyncio.start_server(lambda r, w: _serve_http(server, r, w), host, port, limit=_MAX_REQUEST)
    return srv, srv.sockets[0].getsockname()[1]
