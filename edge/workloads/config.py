# edge/workloads/config.py — the "workloads" section of the edge config and the top-level "tags" (start-up only).
#
#   "tags": ["kitchen", "floor-2"],
#   "workloads": {"bucket": "workloads", "dir": null, "max_flash": 32768, "status": 10}
#
# The desired state is read through the offline KV cache: when the "kv" section does not name the bucket, it is
# added with policy hub_wins (the edge never writes it) and a max_value that holds a state with its previous version.
# Errors are ConfigError lines naming the key, as the rest of the config.

from edge.leaf.confcheck import fail, is_number, number, unknown_keys

STATE_MAX_VALUE = 2048


def _name(v, path, what):
    ok = isinstance(v, str) and 0 < len(v) <= 32
    if ok:
        for c in v:
            if not (c < "\x7f" and (c.isalpha() or c.isdigit() or c in "-_")):
                ok = False
    if not ok:
        fail(path, what + " (1-32 of A-Z, a-z, 0-9, - and _)", v)
    return v


def check_workloads(d, kv):
    # The whole config's "tags" and "workloads" -> (settings or None, the raw "kv" value with the state bucket in it)
    tags = d.get("tags")
    if tags is None:
        tags = []
    if not isinstance(tags, list):
        fail("tags", "a list of tags", tags)
    for i, t in enumerate(tags):
        _name(t, "tags[%d]" % i, "a tag")
    v = d.get("workloads")
    if v is None:
        return None, kv
    if v is True:
        v = {}
    if not isinstance(v, dict):
        fail("workloads", "an object, true or null", v)
    unknown_keys(v, ("bucket", "dir", "max_flash", "status"), "workloads.")
    bucket = _name(v.get("bucket", "workloads"), "workloads.bucket", "a bucket name")
    path = v.get("dir")
    if path is not None and (not isinstance(path, str) or not path):
        fail("workloads.dir", "a folder path or null (the config's data folder + /wl)", path)
    status = v.get("status", 10)
    if not is_number(status, 0):
        fail("workloads.status", "a number of seconds >= 0 (0 = only on change)", status)
    out = {"bucket": bucket, "dir": path, "max_flash": number(v, "max_flash", "workloads.max_flash", 32768, 1, "int"),
           "status_ms": int(status * 1000), "tags": tags}
    if kv is None:
        kv = {"buckets": {}}
    elif isinstance(kv, dict):
        kv = dict(kv)
    else:
        return out, kv  # the kv checker names what is wrong with it
    buckets = kv.get("buckets")
    if isinstance(buckets, list):
        buckets = dict((b, None) for b in buckets)
    if isinstance(buckets, dict) and bucket not in buckets:
        buckets = dict(buckets)
        buckets[bucket] = {"policy": "hub_wins", "max_value": STATE_MAX_VALUE, "max_bytes": 8 * STATE_MAX_VALUE,
                           "max_keys": 32}
        kv["buckets"] = buckets
    return out, kv
