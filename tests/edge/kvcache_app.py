# The device app of the KV cache tests (tests/edge/test_kvcache*.py), run by a MicroPython edge with
# `"app": "kvcache_app"`: it serves requests on `kvctl.<edge name>` (reached through the edge's LAN port, so
# the test can drive the cache while the hub link is down) and answers with JSON.
#
#   {"op": "put", "key": k, "value": "text", "ttl": 2, "bucket": "b", "flush": true} -> {}
#   {"op": "get"|"fetch"|"delete"|"purge", "key": k}                   -> {"value": text or null} / {}
#   {"op": "bulk", "n": 300, "prefix": "p", "value": "x"}               -> {}     (n puts, then a flush)
#   {"op": "dump", "start": 0, "count": 200}  -> {"page": {key: value text}, "total": n}   (sorted keys)
#   {"op": "status"} -> the cache status;   {"op": "recent"} -> the recent conflict reports
#   {"op": "heap"}   -> {"alloc": gc.mem_alloc(), "free": gc.mem_free()} after a collect
#   {"op": "watch", "pattern": p} starts collecting changes; {"op": "events"} -> [[op, key, value], ...]
# A bucket with policy "callback" gets a resolver that merges comma-separated sets (union, sorted).

import gc
import json

from edge.leaf.broker import log_exc

events = []


def merge(key, local, hub):
    items = set()
    for v in (local, hub):
        if v:
            for x in v.decode().split(","):
                if x:
                    items.add(x)
    return ",".join(sorted(items)).encode()


async def main(leaf):
    cache = leaf.kvcache
    for name in cache.buckets:
        kv = leaf.kv(name)
        if kv.policy == "callback":
            kv.on_conflict(merge)

    def text(v):
        return v.decode() if v is not None else None

    def on_change(entry):
        events.append([entry.op, entry.key, text(entry.value)])

    async def ctl(msg):
        try:
            req = json.loads(msg.data)
            op = req["op"]
            kv = leaf.kv(req.get("bucket", "b")) if op not in ("status", "recent", "heap", "events") else None
            out = {}
            if op == "put":
                kv.put(req["key"], req["value"].encode(), req.get("ttl"))
                if req.get("flush"):
                    kv.flush()
            elif op == "get":
                out = {"value": text(kv.get(req["key"]))}
            elif op == "fetch":
                out = {"value": text(await kv.fetch(req["key"]))}
            elif op == "delete":
                kv.delete(req["key"])
            elif op == "purge":
                kv.purge(req["key"])
            elif op == "bulk":
                for i in range(req["n"]):
                    kv.put(req["prefix"] + str(i), req["value"].encode())
                kv.flush()
            elif op == "dump":  # one page of the sorted keys: a big reply needs a big contiguous block
                keys = kv.keys()
                start = req.get("start", 0)
                for k in keys[start : start + req.get("count", 200)]:
                    out[k] = text(kv.get(k))
                out = {"page": out, "total": len(keys)}
            elif op == "status":
                out = cache.status()
            elif op == "recent":
                out = {"recent": cache.recent}
            elif op == "heap":
                gc.collect()
                out = {"alloc": gc.mem_alloc(), "free": gc.mem_free()}
            elif op == "watch":
                kv.watch(req["pattern"], on_change)
            elif op == "events":
                out = {"events": events}
            else:
                out = {"error": "unknown op " + op}
        except Exception as e:  # the test reads the error; the traceback goes to the edge's output
            out = {"error": repr(e)}
            log_exc(e)
        msg.respond(json.dumps(out))

    leaf.subscribe("kvctl." + leaf.name, ctl)
