# edge/leaf/stats.py — the periodic "edge: stats ..." line, imported only when the config sets
# "stats" (seconds between lines). Figures: heap = gc.mem_alloc() right after gc.collect(), peak =
# the highest such figure so far, free = gc.mem_free(); then counters of the listener, the broker
# and the uplink (nomem: hub messages dropped for want of memory, edge/leaf/uplink.py rule 8), which hub URL it
# dials (hub_url, "-" without a hub) and how often it moved to another (failovers), and message tracing's events
# sent to the hub and dropped from its buffer (edge/leaf/msgtrace.py).
# Tests and fleet tools parse the key=value pairs.

import asyncio
import gc

from edge.compat import mem_alloc, mem_free

_peak = 0


def stats_line(node):
    global _peak
    gc.collect()
    heap = mem_alloc()
    if heap > _peak:
        _peak = heap
    leaf = node.leaf
    lst = node.listener
    up = node.uplink
    tr = leaf.tracer
    return ("stats heap=%d peak=%d free=%d clients=%d subs=%d interest=%d hub_interest=%d fwd=%d drop=%d "
            "recv=%d nomem=%d cb_drop=%d refused=%d slow=%d up=%d failovers=%d trace_sent=%d trace_drop=%d "
            "hub_url=%s" % (
                heap, _peak, mem_free(), len(lst.clients) if lst else 0, leaf.subs.count, len(leaf.interest),
                up.hub_interest() if up else 0, up.forwarded if up else 0, up.dropped if up else 0,
                up.received if up else 0, up.nomem if up else 0, leaf.cb_dropped, lst.refused if lst else 0,
                lst.slow if lst else 0, 1 if up and up.up else 0, up.failovers if up else 0, tr.sent if tr else 0,
                tr.dropped if tr else 0,
                up.url() if up else "-"))


async def stats_loop(node, ms, log):
    while True:
        log(stats_line(node))
        await asyncio.sleep(ms / 1000)
