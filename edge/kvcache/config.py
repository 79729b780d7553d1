# edge/kvcache/config.py — the "kv" section of the edge's JSON config, checked key by key (start-up only:
# the cache drops this module once its buckets are open).
#
#   "kv": {"buckets": {"config": {"policy": "lww"}, "state": {"policy": "hub_wins", "max_keys": 64}},
#          "dir": null, "flush_ms": 50, "flush_every": 16, "status": 10}
#
# "buckets" may also be a list of names (every setting at its default). Errors are ConfigError lines that name
# the key, as the rest of the config: config: "kv.buckets.state.policy": expected one of ..., got "first".

from edge.leaf.config import ConfigError, _fail, _got

POLICIES = ("hub_wins", "lww", "callback")
# key: (default, minimum)
BUCKET_INTS = {
    "max_keys": (256, 1),
    "max_bytes": (16384, 64),
    "max_value": (1024, 1),
    "log_bytes": (65536, 16384),
}
DEFAULT_POLICY = "lww"


def _int(v, path, default, low):
    x = v.get(path.rpartition(".")[2], default)
    if isinstance(x, bool) or not isinstance(x, int) or x < low:
        _fail(path, "an integer >= %d" % low, x)
    return x


def _keys(d, allowed, prefix):
    for k in d:
        if k not in allowed:
            raise ConfigError('config: unknown key "%s%s"' % (prefix, k))


def _bucket_name(name, path):
    ok = isinstance(name, str) and 0 < len(name) <= 64
    if ok:
        for c in name:
            if not (c.isalpha() or c.isdigit() or c in "-_") or ord(c) > 127:
                ok = False
    if not ok:
        _fail(path, "a bucket name (letters, digits, - and _)", name)


def _filter(v, path):
    if not isinstance(v, str) or not v or v[0] == "." or v[-1] == "." or ".." in v or " " in v:
        _fail(path, 'a key pattern such as ">" or "device.*"', v)
    toks = v.split(".")
    for i, t in enumerate(toks):
        if (">" in t and (t != ">" or i != len(toks) - 1)) or ("*" in t and t != "*"):
            _fail(path, 'a key pattern such as ">" or "device.*"', v)
    return v


def _bucket(b, path):
    if b is None:
        b = {}
    if not isinstance(b, dict):
        _fail(path, "an object", b)
    _keys(b, ("policy", "filter") + tuple(BUCKET_INTS), path + ".")
    policy = b.get("policy", DEFAULT_POLICY)
    if policy not in POLICIES:
        _fail(path + ".policy", "one of " + ", ".join(POLICIES), policy)
    out = {"policy": policy, "filter": _filter(b.get("filter", ">"), path + ".filter")}
    for key in BUCKET_INTS:
        default, low = BUCKET_INTS[key]
        out[key] = _int(b, path + "." + key, default, low)
    if out["max_value"] > out["max_bytes"]:
        _fail(path + ".max_value", "at most max_bytes (%d)" % out["max_bytes"], out["max_value"])
    # flash log segments: eight per log, whole 4 KB erase blocks
    out["segment_size"] = 4096 * max(1, out["log_bytes"] // 4096 // 8)
    # a record (value, key up to 255 bytes, stamp, 32-byte head) must fit a segment (edge/flashlog.py)
    room = out["segment_size"] - 8 * (out["segment_size"] // 4096) - 6 - 32 - 255 - 96
    if out["max_value"] > room:
        _fail(path + ".max_value", "at most %d with log_bytes %d (a record must fit a flash segment)" % (
            room, out["log_bytes"]), out["max_value"])
    return out


def check_kv(v):
    # The parsed "kv" value -> {"buckets": {name: settings}, "dir", "flush_ms", "flush_every"}
    if not isinstance(v, dict):
        _fail("kv", "an object or null", v)
    _keys(v, ("buckets", "dir", "flush_ms", "flush_every", "status"), "kv.")
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
        _fail("kv.buckets", "an object of bucket settings or a list of bucket names", raw)
    if not buckets:
        raise ConfigError('config: "kv.buckets": expected at least one bucket, got %s' % _got(raw))
    d = v.get("dir")
    if d is not None and (not isinstance(d, str) or not d):
        _fail("kv.dir", "a folder path or null (the config's data folder + /kv)", d)
    status = v.get("status", 10)
    if isinstance(status, bool) or not isinstance(status, (int, float)) or status < 0:
        _fail("kv.status", "a number of seconds >= 0 (0 = off)", status)
    return {"buckets": buckets, "dir": d, "flush_ms": _int(v, "kv.flush_ms", 50, 1),
            "flush_every": _int(v, "kv.flush_every", 16, 1), "status_ms": int(status * 1000)}
