# edge/leaf/fwdconfig.py — the "forward" and "forward_settings" config keys (edge/leaf/forward.py).
#
# Called by edge/leaf/config.py only when the config has them (startup-only, as config.py). Same
# rules as config.py: every error names the key (`forward[1].policy`), times are seconds in the file and
# integer milliseconds after check() (max_age stays whole seconds: records carry wall-clock seconds).

from edge import subjects
from edge.compat import small_heap
from edge.leaf.confcheck import fail, js_domain, number, unknown_keys

POLICIES = ("reject", "drop_oldest", "drop_newest")
_NAME_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-"

# key: (default, minimum, kind); kind "int", "num" (int or float), "ms" (seconds in, ms out)
SETTINGS = {
    "rate": (0, 0, "num"),  # messages/s for all queues together; 0 = no limit
    "byte_rate": (0, 0, "num"),  # bytes/s; 0 = no limit
    "jitter": (1, 0, "ms"),  # longest random wait after a link comes up, before the first send
    "max_inflight": (32, 1, "int"),  # sends per queue awaiting their PubAck
    "ack_timeout": (5, 0.05, "ms"),  # no PubAck (or API answer) for this long: retry with backoff
    "status": (30, 0, "ms"),  # status message period; 0 = off
    # Group commit. A littlefs sync copies the partly filled last 4 KB block, so a flush should carry several KB
    # (docs/forward.md: at 16 records / 4 KB, 128 B records cost 1.8 bytes of flash per byte stored).
    "flush_every": (64, 1, "int"),  # flush after this many records ...
    "flush_interval": (0.05, 0.001, "ms"),  # ... or once the oldest buffered record waited this long ...
    "flush_bytes": (8192, 64, "int"),  # ... or this many bytes are buffered
    "dedup_scan": (1000, 0, "int"),  # most stream messages a lookup reads
}
# Defaults on a small heap (edge.compat.small_heap): the group-commit buffer holds its records in RAM until the
# flush, up to flush_bytes (~1.3x that in heap); 8 KB of it is too much of a 60 KB heap. Explicit values win.
SMALL_HEAP_SETTINGS = {"flush_every": 16, "flush_bytes": 2048}
QUEUE_KEYS = ("subjects", "stream", "name", "priority", "max_age", "max_bytes", "segment_size", "policy", "coalesce",
              "domain")


def _token(v, path, what):
    if not isinstance(v, str) or not v or len(v) > 64:
        fail(path, what, v)
    for c in v:
        if c not in _NAME_CHARS:
            fail(path, what, v)
    return v


def _queue(d, i, max_payload):
    p = "forward[%d]" % i
    if not isinstance(d, dict):
        fail(p, "an object", d)
    unknown_keys(d, QUEUE_KEYS, p + ".")
    subs = d.get("subjects")
    if isinstance(subs, str):
        subs = [subs]
    if not isinstance(subs, list) or not subs:
        fail(p + ".subjects", "a subject or a non-empty list of subjects", subs)
    for s in subs:
        if not isinstance(s, str) or not subjects.valid(s.encode()) or s[:1] == "$" or s[:7] == "_INBOX.":
            fail(p + ".subjects", 'subjects (wildcards allowed, not "$..." or "_INBOX...")', s)
    stream = _token(d.get("stream"), p + ".stream", "a stream name (letters, digits, _ and -)")
    name = _token(d.get("name", stream), p + ".name", "a queue name (letters, digits, _ and -)")
    seg = number(d, "segment_size", p + ".segment_size", 16384, 4096, "int")
    if seg % 4096:
        fail(p + ".segment_size", "a multiple of 4096", seg)
    least = 4096
    while least - 8 * (least // 4096) - 6 < max_payload + 2048:  # a record: payload, subject, headers, framing
        least += 4096
    if seg < least:
        fail(p + ".segment_size", "at least %d (limits.max_payload + 2 KB, in 4 KB blocks)" % least, seg)
    max_bytes = number(d, "max_bytes", p + ".max_bytes", 262144, 2 * seg, "int")
    policy = d.get("policy", "reject")
    if policy not in POLICIES:
        fail(p + ".policy", " or ".join('"%s"' % x for x in POLICIES), policy)
    coalesce = d.get("coalesce", False)
    if not isinstance(coalesce, bool):
        fail(p + ".coalesce", "true or false", coalesce)
    max_age = number(d, "max_age", p + ".max_age", 0, 0, "num")
    q = {"subjects": subs, "stream": stream, "name": name, "priority": number(d, "priority", p + ".priority",
         0, -1000, "int"), "max_age": int(max_age + 0.999), "max_bytes": max_bytes, "segment_size": seg,
         "policy": policy, "coalesce": coalesce}
    domain = js_domain(d, p + ".domain")
    if domain is not None:
        q["domain"] = domain  # (only when set: the frozen 32-bit heap keeps every queue's dict)
    return q


def check_forward(queues, settings, edge_name, limits):
    # -> (list of queue dicts, settings dict), or ConfigError.
    if not isinstance(queues, list) or not queues:
        fail("forward", "a non-empty list of queues", queues)
    for c in ".*>":
        if c in edge_name:
            fail("name", 'a name without ".", "*" or ">" (it is a subject token with "forward")', edge_name)
    out = []
    names = []
    for i, d in enumerate(queues):
        q = _queue(d, i, limits["max_payload"])
        if q["name"] in names:
            fail("forward[%d].name" % i, "a name no other queue has (set \"name\" when two share a stream)",
                 q["name"])
        names.append(q["name"])
        out.append(q)
    if settings is None:
        settings = {}
    if not isinstance(settings, dict):
        fail("forward_settings", "an object", settings)
    unknown_keys(settings, SETTINGS, "forward_settings.")
    st = {}
    small = small_heap()
    for key in SETTINGS:
        default, low, kind = SETTINGS[key]
        if small and key in SMALL_HEAP_SETTINGS:
            default = SMALL_HEAP_SETTINGS[key]
        st[key] = number(settings, key, "forward_settings." + key, default, low, kind)
    return out, {"rate": st["rate"], "byte_rate": st["byte_rate"], "jitter_ms": st["jitter"],
                 "max_inflight": st["max_inflight"], "ack_timeout_ms": st["ack_timeout"], "status_ms": st["status"],
                 "flush_every": st["flush_every"], "flush_ms": st["flush_interval"],
                 "flush_bytes": st["flush_bytes"], "dedup_scan": st["dedup_scan"]}
