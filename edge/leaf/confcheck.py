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


def number(d, key, path, default, low, kind):
    # kind "int", "num" (int or float), "ms" (seconds in, integer ms out)
    v = d.get(key, default)
    ok = not isinstance(v, bool) and isinstance(v, int if kind == "int" else (int, float)) and v >= low
    if not ok:
        fail(path, ("an integer >= %s" if kind == "int" else "a number >= %s") % low, v)
    return int(v * 1000) if kind == "ms" else v
