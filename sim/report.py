"""The end-of-run report: one JSON document (docs/sim.md lists its fields) and the same figures as text."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sim.runner import Simulation

REPORT_VERSION = 1
RECOVERY_KINDS = ("partition", "crash", "hub_restart", "hub_kill")
MESSAGE_KEYS = ("published", "received", "forwarded", "not_forwarded", "lost_in_flight", "delivered_late", "lost",
                "published_clean", "lost_clean", "duplicates", "unmatched")


def _summary(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"count": 0, "max_s": None, "mean_s": None}
    return {"count": len(values), "max_s": round(max(values), 3), "mean_s": round(sum(values) / len(values), 3)}


def build(sim: Simulation) -> dict[str, Any]:
    now = sim.clock()
    edges = []
    for e in sim.edges:
        d = e.snapshot(now)
        d["exit_codes"] = list(e.exit_codes)
        d["stop_acked"] = e.stop_acked
        d["stopped_cleanly"] = bool(e.exit_codes) and e.exit_codes[-1] == 0
        d["recovery"] = {k: _summary(v) for k, v in e.recovery.items()}
        edges.append(d)
    totals: dict[str, Any] = {"messages": dict.fromkeys(MESSAGE_KEYS, 0),
                              "requests": {"sent": 0, "ok": 0, "timeout": 0, "no_responders": 0}}
    for d in edges:
        for k in MESSAGE_KEYS:
            totals["messages"][k] += d["messages"][k]
        for k in totals["requests"]:
            totals["requests"][k] += d["requests"][k]
    for k in ("connects", "reconnects", "disconnects", "crashes", "crashes_survived", "unexpected_exits",
              "partitions", "partitions_link_survived"):
        totals[k] = sum(d[k] for d in edges)
    peaks = [d["heap"]["peak"] for d in edges if d["heap"]["peak"] is not None]
    totals["heap_peak_max"] = max(peaks) if peaks else None
    for kind in RECOVERY_KINDS:
        totals[f"recovery_{kind}"] = _summary([x for e in sim.edges for x in e.recovery[kind]])
    totals["node_switches"] = sum(d["hub"]["node_switches"] for d in edges)
    reported = [d["hub"]["failovers"] for d in edges if d["hub"]["failovers"] is not None]
    totals["failovers"] = sum(reported) if reported else None
    hub = sim.hub
    return {
        "report_version": REPORT_VERSION,
        "scenario": sim.scenario.to_json(),
        "started_at": sim.started_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "run_seconds": round(sim.run_seconds, 2),
        "interrupted": sim.interrupted,
        "hub": {
            "kind": hub.kind if hub else None,
            "client_url": hub.client_url if hub else None,
            "leaf_url": hub.leaf_url if hub else None,
            "monitor_url": hub.monitor_url if hub else None,
            "jetstream": hub.jetstream if hub else None,
            "restarts": hub.restarts if hub else 0,
            "note": hub.note if hub else "",
            "edge_urls": _edge_urls(sim),
        },
        "hubs": [n.node_json() for n in hub.nodes] if hub else [],
        "stream": sim.stream_status,
        "faults": list(sim.fault_log),
        "workload_steps": list(sim.workload_log),
        "regions": _regions(sim),
        "totals": totals,
        "edges": edges,
        "processes": {"started": len(sim.procs.started), "pids": sim.procs.pids(),
                      "left_running": sim.procs.left_running()},
        "errors": list(sim.errors),
    }


def _edge_urls(sim: Simulation) -> str:
    if sim.hub is None or len(sim.hub.nodes) == 1:
        return "one"
    if sim.regions:
        return "region's nodes" if sim.edge_url_lists else "first node of their region only"
    return "all nodes" if sim.edge_url_lists else "first node only"


def _regions(sim: Simulation) -> list[dict[str, Any]]:
    """Per region (scenarios with "regions"): its nodes, edges, workers and what its requests got (sim/regions.py)."""
    if not sim.regions:
        return []
    fault_times = [f["t"] for f in sim.fault_log if f["type"] not in ("partition", "crash")]
    nodes = sim.hub.nodes if sim.hub else []
    out = []
    for name, region in sim.regions.items():
        edges = [e.name for e in sim.edges if sim.scenario.region_of_edge(e.index) == name]
        out.append(region.report([n.name for n in nodes if getattr(n, "region", None) == name], edges, fault_times,
                                 sim.run_seconds))
    return out


def _regions_text(regions: list[dict[str, Any]]) -> list[str]:
    """Per region: its requests (served locally, by another region, lost), whole run and per worker window."""
    out = []
    for g in regions:
        q = g["requests"]
        out.append(f"region {g['name']} ({', '.join(g['nodes'])}; edges {', '.join(g['edges']) or '-'}): "
                   f"{q['sent']} requests, {q['local']} served locally, {q['remote']} by another region, "
                   f"{q['lost']} lost" + (f" (+{q['lost_in_fault']} in fault windows)" if q["lost_in_fault"] else "")
                   + f"; its workers answered {g['answered']}")
        for w in g["windows"]:
            by = ", ".join(f"{k} {v}" for k, v in w["served_by"].items()) or "-"
            out.append(f"  {w['from']:7.2f}..{w['to']:7.2f} s, local workers {w['local_workers']:8}: "
                       f"{w['sent']} sent, served by {by}, {w['lost']} lost"
                       + (f" (+{w['lost_in_fault']} in fault windows)" if w["lost_in_fault"] else ""))
    return out


def _n(v: Any) -> str:
    return "-" if v is None else str(v)


def text(r: dict[str, Any]) -> str:
    s = r["scenario"]
    h = r["hub"]
    js = {True: "JetStream on", False: "JetStream off", None: "JetStream unknown"}[h["jetstream"]]
    out = [f'natsedge sim: scenario "{s["name"]}": {len(r["edges"])} edges, {r["run_seconds"]:g} s'
           + (" (interrupted)" if r["interrupted"] else "") + f", hub {h['kind']} ({js}), seed {s['seed']}"]
    kinds: dict[str, int] = {}
    for f in r["faults"]:
        kinds[f["type"]] = kinds.get(f["type"], 0) + 1
    out.append("faults: " + (", ".join(f"{n} {k}" for k, n in kinds.items()) if kinds else "none")
               + (f"; hub restarts done: {h['restarts']}" if h["restarts"] else ""))
    if s.get("stream"):
        out.append(f"stream {s['stream']['name']}: {r['stream']}")
    head = ("edge", "boots", "published", "at hub", "lost", "in flight", "not fwd", "late", "dup", "reconn",
            "recover max s", "crashes ok", "req ok/sent", "heap peak")
    rows = [head]
    for e in r["edges"]:
        m = e["messages"]
        rec = [v["max_s"] for v in e["recovery"].values() if v["max_s"] is not None]
        rows.append((e["name"], str(e["boots"]), str(m["published"]), str(m["received"]), str(m["lost"]),
                     str(m["lost_in_flight"]), str(m["not_forwarded"]), str(m["delivered_late"]), str(m["duplicates"]),
                     str(e["reconnects"]), _n(max(rec) if rec else None), f"{e['crashes_survived']}/{e['crashes']}",
                     f"{e['requests']['ok']}/{e['requests']['sent']}", _n(e["heap"]["peak"])))
    t = r["totals"]
    m = t["messages"]
    rows.append(("total", "", str(m["published"]), str(m["received"]), str(m["lost"]), str(m["lost_in_flight"]),
                 str(m["not_forwarded"]), str(m["delivered_late"]), str(m["duplicates"]), str(t["reconnects"]),
                 "", f"{t['crashes_survived']}/{t['crashes']}", f"{t['requests']['ok']}/{t['requests']['sent']}",
                 _n(t["heap_peak_max"])))
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    for row in rows:
        out.append("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))))
    out.append(f"outside fault windows: {m['lost_clean']} of {m['published_clean']} messages lost"
               + ("" if not m["lost_clean"] else "  <-- losses no fault explains"))
    if m["unmatched"]:
        out.append(f"delivered but never published: {m['unmatched']}")
    hubs = r.get("hubs") or []
    if len(hubs) > 1:
        out.extend(_cluster_text(r))
    out.extend(_regions_text(r.get("regions") or []))
    for kind in RECOVERY_KINDS:
        v = t[f"recovery_{kind}"]
        if v["count"]:
            out.append(f"uplink back after {kind.replace('_', ' ')}: {v['count']} times, mean {v['mean_s']} s, "
                       f"max {v['max_s']} s")
    if t["partitions_link_survived"]:
        out.append(f"partitions the link survived (shorter than ping detection): {t['partitions_link_survived']}")
    down = [e["name"] for e in r["edges"] if e["state"] == "crashed"]
    unclean = [e["name"] for e in r["edges"] if not e["stopped_cleanly"] and e["state"] != "crashed"]
    if down:
        out.append(f"down at the end (crashed, restart not yet due): {', '.join(down)}")
    if unclean:
        out.append(f"edges that did not exit cleanly at the end: {', '.join(unclean)}")
    if t["unexpected_exits"]:
        out.append(f"unexpected edge exits: {t['unexpected_exits']}")
    for w in r.get("workload_steps", []):
        out.append(f"workload step {w['step']} at {w['t']:g} s: " + (f"{w['name']} {w['version']} to "
                   f"{','.join(w['target'])}" if "error" not in w else f"{w['name']}: {w['error']}"))
    if r.get("workload_steps"):
        for e in r["edges"]:
            out.append(f"workloads on {e['name']}: {_workloads_text(e)}")
    p = r["processes"]
    out.append(f"processes: {p['started']} started, {len(p['left_running'])} left running"
               + (f" ({p['left_running']})" if p["left_running"] else ""))
    for err in r["errors"]:
        out.append(f"error: {err}")
    return "\n".join(out)


def _workloads_text(e: dict[str, Any]) -> str:
    """An edge's last $EDGE.<name>.workloads report (edge/workloads/engine.py) in words."""
    rep = ((e.get("status") or {}).get("last") or {}).get("workloads")
    if not isinstance(rep, dict) or not isinstance(rep.get("workloads"), list):
        return "no report"
    parts = []
    for w in rep["workloads"]:
        text = f"{w.get('name')} {w.get('version')} {w.get('state')}"
        if w.get("wanted") != w.get("version"):
            text += f" (wants {w.get('wanted')})"
        parts.append(text)
    return ", ".join(parts) or "none"


def _cluster_text(r: dict[str, Any]) -> list[str]:
    """A cluster run: the nodes, then per edge where it uplinked, its failovers and its losses."""
    out = []
    nodes = []
    for n in r["hubs"]:
        bits = [n["kind"] + (" + JetStream" if n["jetstream"] else "")]
        for key, word in (("kills", "killed"), ("starts", "started again"), ("restarts", "restarted")):
            if n[key]:
                bits.append(f"{word} {n[key]}x")
        if n["state"] == "killed":
            bits.append("down at the end")
        nodes.append(f"{n['name']} ({', '.join(bits)})")
    out.append(f"hub nodes: {'; '.join(nodes)}")
    urls = r["hub"].get("edge_urls")
    out.append("edges were given " + {
        "all nodes": "every node's URL (node i % N first)",
        "region's nodes": "their region's nodes' URLs (node i % N first)",
        "first node of their region only": "the URL of node i % N of their region only (their hub.url takes one URL)",
    }.get(urls, "the URL of node i % N only (their hub.url takes one URL)"))
    head = ("edge", "first node", "last node", "node switches", "failovers", "lost", "in flight", "dup",
            "back after kill max s")
    rows = [head]
    for e in r["edges"]:
        h, m = e["hub"], e["messages"]
        rows.append((e["name"], _n(h["first_node"]), _n(h["node"]), str(h["node_switches"]), _n(h["failovers"]),
                     str(m["lost"]), str(m["lost_in_flight"]), str(m["duplicates"]),
                     _n(e["recovery"]["hub_kill"]["max_s"])))
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    for row in rows:
        out.append("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))))
    return out
