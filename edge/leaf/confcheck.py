# edge/leaf/confcheck.py — what the checkers of the JSON config's sections share: the error and its wording.
#
# The sections' checkers (edge/leaf/config.py, edge/leaf/fwdconfig.py, edge/kvcache/config.py) import this
# and not each other's helpers, so their imports point one way: config.py -> a section -> confcheck.py.
# Startup-only, as they are: the runner drops it once the config is read.

import json


class ConfigError(Exception):
    pass


def got(v):
    try:
        return json.dumps(v)
    except (TypeError, ValueError):
        return repr(v)


def fail(key, expected, value):
    raise ConfigError('config: "%s": expected %s, got %s' % (key, expected, got(value)))


def unknown_keys(d, allowed, prefix):
    for k in d:
        if k not in allowed:
            raise ConfigError('config: unknown key "%s%s"' % (prefix, k))


def is_number(v, low, kind="num"):
    # An int (kind "int") or an int or float (else), >= low and finite: JSON's 1e999 reads as infinity, which no
    # time or size can be (found by fuzzing: int(inf * 1000) was an OverflowError traceback).
    return (not isinstance(v, bool) and isinstance(v, int if kind == "int" else (int, float)) and v >= low
            and v - v == 0)


def js_domain(d, path):
    # The "domain" key of a forward queue or a KV bucket: the JetStream domain whose stream or bucket it targets
    # (its API is `$JS.<domain>.API`, reached across the hub's leafnodes), or None for the hub's own JetStream.
    v = d.get("domain")
    if v is None:
        return None
    if not isinstance(v, str) or not v or len(v) > 64:
        fail(path, 'a JetStream domain name (not "." "*" ">" or spaces)', v)
    for c in v:
        if c in ".*> \t\r\n":
            fail(path, 'a JetStream domain name (not "." "*" ">" or spaces)', v)
    return v


def number(d, key, path, default, low, kind):
    # kind "int", "num" (int or float), "ms" (seconds in, integer ms out)
    v = d.get(key, default)
    if not is_number(v, low, kind):
        fail(path, ("an integer >= %s" if kind == "int" else "a number >= %s") % low, v)
    return int(v * 1000) if kind == "ms" else v
