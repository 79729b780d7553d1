# edge/leaf/runner.py — build a leaf from its config and run it: LAN listener, hub uplink with its
# retry policy, the user's app, periodic stats.
#
# Rules this file keeps:
# 1. Optional parts are imported only when the config asks for them (no listener code without
#    "listen", no uplink code without "hub"), so a small device pays only for what it runs.
# 2. Status goes to stdout as lines starting "edge: ", their parts separated by a space; tests and fleet tools read
#    them. print() writes each part on its own (MicroPython), which costs no joined copy of a long line; each edge
#    has its stdout to itself, so the parts of a line stay together, but a kill (a power cut) can end the output
#    inside a line: readers take only lines that end in a newline, or ignore a status they cannot parse.
# 3. main() returns 2 with a one-line message for a bad config or app, never a traceback.
# 4. limits.gc_threshold is set before anything else is built, so what stays packs at the bottom of the heap.

import asyncio
import gc
import sys

from edge.compat import drop_module, mem_alloc
from edge.leaf import link
from edge.leaf.broker import Leaf, log_exc


def log(*parts):
    # The parts are printed one by one, not joined first: joining the forward queue's ~500-byte status (its second
    # part) took another contiguous block of that size, the allocation that failed in a 60 KB heap.
    print("edge:", *parts)


class Node:
    # The running pieces of one leaf; close() stops them all.
    def __init__(self, leaf):
        self.leaf = leaf
        self.listener = None
        self.uplink = None
        self.kv = None  # edge/kvcache, when the config has a "kv" section
        self.forwarder = None  # edge/leaf/forward.py, when the config has "forward"
        self.tasks = []

    async def close(self):
        if self.uplink is not None:
            self.uplink.stopped = True
        for t in self.tasks:
            t.cancel()
        self.tasks = []
        if self.kv is not None:
            self.kv.close()
        if self.listener is not None:
            self.listener.close()
        if self.forwarder is not None:
            self.forwarder.close()  # buffered records to flash, acks to the mark
        self.leaf.close()
        await asyncio.sleep(0)


async def start(cfg, app=None):
    lim = cfg["limits"]
    if hasattr(gc, "threshold"):  # MicroPython only (CPython has none); -1: MicroPython's own policy
        gc.threshold(lim["gc_threshold"] or -1)
    link.init()  # the shared read buffer, allocated before the heap fragments
    leaf = Leaf(cfg["name"], lim["max_subscriptions"], lim["max_payload"], lim["max_callbacks"])
    trace_limits = (lim["max_trace_events"], lim["max_trace_bytes"], cfg["listen"][0] if cfg["listen"] else "")
    if trace_limits != Leaf.trace_limits:
        leaf.trace_limits = trace_limits
    node = Node(leaf)
    if cfg.get("forward"):
        from edge.leaf.forward import Forwarder  # its reply subscription exists before the uplink dials

        node.forwarder = Forwarder(leaf, cfg["name"], cfg["data"], cfg["forward"], cfg["forward_settings"], log=log)
        node.tasks.append(asyncio.create_task(node.forwarder.run()))
    if cfg["listen"] is not None:
        from edge.leaf.listener import Listener

        auth = cfg["authorization"]
        if auth is not None:
            from edge.auth.lanauth import LanAuth  # only edges with LAN credentials pay for it

            auth = LanAuth(auth["token"], auth["users"])
        host, port = cfg["listen"]
        node.listener = Listener(leaf, host, port, lim["max_connections"], lim["max_payload"], lim["max_pending"],
                                 lim["max_control_line"], lim["ping_max"], lim["min_free_heap"], log=log, auth=auth)
        await node.listener.start()
    hub = cfg["hub"]
    if hub is not None:
        from edge.leaf.robust import Backoff, keep_up
        from edge.leaf.uplink import Uplink

        signer = None
        if hub["signer"] is not None:
            from edge.auth.creds import Signer  # only edges with nkey/JWT credentials pay for it

            signer = Signer(*hub["signer"])
        node.uplink = Uplink(leaf, hub["urls"], cfg["name"], hub["token"], lim["max_payload"], lim["max_pending"],
                             lim["ping_max"], lim["max_hub_interest"], log=log, signer=signer)
        backoff = Backoff(lim["reconnect_min"], lim["reconnect_max"])
        node.tasks.append(asyncio.create_task(keep_up(node.uplink, backoff, log)))
    if cfg["kv"] is not None:
        from edge.kvcache.cache import KVCache  # after the uplink: its sync tasks need it

        node.kv = KVCache(leaf, cfg["kv"], cfg["data"], log)
        node.tasks.extend(node.kv.start())
    if cfg["workloads"] is not None:
        from edge.workloads.engine import Engine  # after the KV cache: the desired state is read through it

        node.tasks.append(asyncio.create_task(Engine(leaf, cfg["workloads"], cfg["data"], log).run()))
    node.tasks.append(asyncio.create_task(_housekeeping(node, lim["ping_interval"])))
    if cfg["stats"]:
        from edge.leaf.stats import stats_loop

        node.tasks.append(asyncio.create_task(stats_loop(node, cfg["stats"], log)))
    gc.collect()
    listen = "%s:%d" % cfg["listen"] if cfg["listen"] else "-"
    url = "-" if hub is None else hub["url"] if isinstance(hub["url"], str) else ",".join(hub["url"])
    log("ready name=%s listen=%s hub=%s heap=%d" % (cfg["name"], listen, url, mem_alloc()))
    if app is not None:
        node.tasks.append(asyncio.create_task(_run_app(app, leaf)))
    return node


async def _housekeeping(node, ms):
    # One task for every periodic job: pings and stale checks of LAN clients and of the hub link.
    while True:
        await asyncio.sleep(ms / 1000)
        if node.listener is not None:
            node.listener.tick()
        if node.uplink is not None:
            node.uplink.tick()


async def _run_app(app, leaf):
    try:
        await app.main(leaf)
        log("app finished")
    except Exception as e:  # the device code failing must not stop the broker
        log("app failed: %r" % e)
        log_exc(e)


async def serve(cfg, app=None, stop=None):
    node = await start(cfg, app)
    cfg = app = None  # noqa: F841 (the parsed config, ~1 KB, is not needed once the leaf runs)
    try:
        if stop is None:
            while True:
                await asyncio.sleep(3600)
        await stop.wait()
    finally:
        await node.close()


def _serve_once(box):
    # main()'s frame must not keep the config alive for the life of the leaf: it hands it over in
    # a list, emptied here, so that only serve() holds it (and lets go of it once started).
    cfg = box.pop(0)
    return serve(cfg, box.pop(0))


def main(argv):
    from edge.leaf.config import CHECKER_MODULES, prepare

    r = prepare(argv)
    prepare = None
    for name in CHECKER_MODULES:
        drop_module(name)
    if isinstance(r, str):
        sys.stderr.write(r + "\n")
        return 2
    box = list(r)
    r = None
    try:
        asyncio.run(_serve_once(box))
    except KeyboardInterrupt:
        pass
    except OSError as e:
        sys.stderr.write("edge: cannot start: %s\n" % (e,))
        return 1
    return 0
