# edge/kvcache/config.py — the "kv" section of the edge's JSON config, checked key by key (start-up only:
# the cache drops this module once its buckets are open).
#
#   "kv": {"buckets": {"config": {"policy": "lww"}, "state": {"policy": "hub_wins", "max_keys": 64}},
#          "dir": null, "flush_ms": 50, "flush_every": 16, "status": 10}
#
# "buckets" may also be a list of names (every setting at its default). Errors are ConfigError lines that name
# the key, as the rest of the config: config: "kv.buckets.state.policy": expected one of ..., got "first".

from edge.leaf.confcheck import ConfigError, fail, got, is_number, js_domain, number, unknown_keys

POLICIES = ("hub_wins", "lww", "callback")
# key: (default, minimum)
BUCKET_INTS = {
    "max_keys": (256, 1),
    "max_bytes": (16384, 64),
    "max_value": (1024, 1),
    "log_bytes": (65536, 16384),
}
DEFAULT_POLICY = "lww"


def _bucket_name(name, path):
    ok = isinstance(name, str) and 0 < len(name) <= 64
    if ok:
        for c in name:
            if not (c.isalpha() or c.isdigit() or c in "-_") or ord(c) > 127:
                ok = False
    if not ok:
        fail(path, "a bucket name (letters, digits, - and _)", name)


def _filter(v, path):
    if not isinstance(v, str) or not v or v[0] == "." or v[-1] == "." or ".." in v or " " in v:
        fail(path, 'a key pattern such as ">" or "device.*"', v)
    toks = v.split(".")
    for i, t in enumerate(toks):
        if (">" in t and (t != ">" or i != len(toks) - 1)) or ("*" in t and t != "*"):
            fail(path, 'a key pattern such as ">" or "device.*"', v)
    return v


def _bucket(b, path):
    if b is None:
        b = {}
    if not isinstance(b, dict):
        fail(path, "an object", b)
    unknown_keys(b, ("policy", "filter", "domain") + tuple(BUCKET_INTS), path + ".")
    policy = b.get("policy", DEFAULT_POLICY)
    if policy not in POLICIES:
        fail(path + ".policy", "one of " + ", ".join(POLICIES), policy)
    out = {"policy": policy, "filter": _filter(b.get("filter", ">"), path + ".filter")}
    domain = js_domain(b, path + ".domain")
    if domain is not None:
        out["domain"] = domain
    for key in BUCKET_INTS:
        default, low = BUCKET_INTS[key]
        out[key] = number(b, key, path + "." + key, default, low, "int")
    if out["max_value"] > out["max_bytes"]:
        fail(path + ".max_value", "at most max_bytes (%d)" % out["max_bytes"], out["max_value"])
    # flash log segments: eight per log, whole 4 KB erase blocks
    out["segment_size"] = 4096 * max(1, out["log_bytes"] // 4096 // 8)
    # a record (value, key up to 255 bytes, stamp, 32-byte head) must fit a segment (edge/flashlog.py)
    room = out["segment_size"] - 8 * (out["segment_size"] // 4096) - 6 - 32 - 255 - 96
    if out["max_value"] > room:
        fail(path + ".max_value", "at most %d with log_bytes %d (a record must fit a flash segment)" % (
            room, out["log_bytes"]), out["max_value"])
    return out


def check_kv(v):
    # The parsed "kv" value -> {"buckets": {name: settings}, "dir", "flush_ms", "flush_every"}
    if not isinstance(v, dict):
        fail("kv", "an object or null", v)
    unknown_keys(v, ("buckets", "dir", "flush_ms", "flush_every", "status"), "kv.")
    raw = v.get("buckets")
    buckets = {}
    if isinstance(raw, list):
        for i, name in enumerate(raw):
            _bucket_name(name, "kv.buckets[%d]" % i)
            buckets[name] = _bucket(None, "kv.buckets." + name)
    elif isinstance(raw, dict):
        for name in raw:
            _bucket_name(name, "kv.buckets")
            buckets[name] = _bucket(raw[name], "kv.buckets." + name)
    else:
        fail("kv.buckets", "an object of bucket settings or a list of bucket names", raw)
    if not buckets:
        raise ConfigError('config: "kv.buckets": expected at least one bucket, got %s' % got(raw))
    d = v.get("dir")
    if d is not None and (not isinstance(d, str) or not d):
        fail("kv.dir", "a folder path or null (the config's data folder + /kv)", d)
    status = v.get("status", 10)
    if not is_number(status, 0):
        fail("kv.status", "a number of seconds >= 0 (0 = off)", status)
    return {"buckets": buckets, "dir": d, "flush_ms": number(v, "flush_ms", "kv.flush_ms", 50, 1, "int"),
            "flush_every": number(v, "flush_every", "kv.flush_every", 16, 1, "int"), "status_ms": int(status * 1000)}
