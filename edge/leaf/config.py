# edge/leaf/config.py — the leaf's JSON configuration: read, check every key, fill defaults.
#
# The same file runs `natsedge edge CONFIG.json` (CPython), `micropython -m edge CONFIG.json`
# (unix port) and boards/esp32. Rules this file keeps:
# 1. Every error names the key and what was expected, e.g.
#    config: "listen": expected "host:port" or null, got 42
#    and is raised as ConfigError; callers print it and exit with code 2, never a traceback.
# 2. Unknown keys are errors (a typo must not silently fall back to a default), except the
#    top-level sections owned by other layers (OTHER_LAYERS), which are left to them.
# 3. Times are seconds in the file and integer milliseconds after load().
# 4. Nothing is started here. prepare() also imports the "app" module, so that a bad name is a
#    config error too; the runner drops this module once the config is read (it is startup-only).

import json

from edge.compat import small_heap
from edge.leaf.confcheck import ConfigError, fail, got, is_number, number, unknown_keys

OTHER_LAYERS = ("wifi", "kv", "outbox", "board")
# The checker's modules, needed once: whoever ran prepare() drops them (edge.compat.drop_module), so that their
# bytecode does not stay on the heap (~5 KB).
CHECKER_MODULES = ("edge.leaf.config", "edge.leaf.fwdconfig", "edge.auth.config", "edge.workloads.config",
                   "edge.leaf.confcheck")

# key: (default, minimum); integers, except the _SECONDS keys (seconds, int or float)
LIMITS = {
    "max_connections": (4, 0),
    "max_subscriptions": (64, 1),
    "max_payload": (8192, 1),
    "max_pending": (16384, 1),
    "max_control_line": (1024, 32),
    "max_hub_interest": (256, 1),
    "max_callbacks": (32, 1),
    "max_trace_events": (4, 0),  # trace events waiting for the hub link (edge/leaf/msgtrace.py rule 4)
    "max_trace_bytes": (2048, 0),
    "min_free_heap": (8192, 0),
    "gc_threshold": (0, 0),  # bytes allocated between collections; 0: MicroPython's own (when the heap is full)
    "ping_max": (2, 1),
    "ping_interval": (30, 0.05),
    "reconnect_min": (1, 0.001),
    "reconnect_max": (30, 0.001),
}
_SECONDS = ("ping_interval", "reconnect_min", "reconnect_max")


def _str(d, key, path, default=None, required=False):
    v = d.get(key, default)
    if v is None and not required:
        return None
    if not isinstance(v, str) or not v:
        fail(path, "a non-empty string" + ("" if required else " or null"), v)
    return v


def _host_port(value, path, default_port=None):
    # "host:port" -> (host, port)
    exp = '"host:port"' + (" or null" if default_port is None else "")
    if not isinstance(value, str):
        fail(path, exp, value)
    host, sep, port = value.rpartition(":")
    if not sep:
        host, port = value, None
    if port is None or port == "":
        if default_port is None:
            fail(path, exp, value)
        port = default_port
    elif not port.isdigit() or int(port) > 65535:
        fail(path, exp, value)
    if not host or " " in host:
        fail(path, exp, value)
    return host, int(port)


def _tls(v, path):
    # -> None (no TLS) or (ca path or None, verify)
    if v is None or v is False:
        return None
    if v is True:
        return (None, True)
    if not isinstance(v, dict):
        fail(path, 'true, false, null or {"ca": path, "verify": bool}', v)
    unknown_keys(v, ("ca", "verify"), path + ".")
    ca = _str(v, "ca", path + ".ca")
    verify = v.get("verify", True)
    if not isinstance(verify, bool):
        fail(path + ".verify", "true or false", verify)
    return (ca, verify)


def _url(v, path, h):
    # One hub URL -> (host, port, tls, user, password), an entry of the uplink's rotation.
    exp = '"nats-leaf://host:port"'
    if not isinstance(v, str):
        fail(path, exp, v)
    scheme, sep, rest = v.partition("://")
    if not sep or scheme not in ("nats-leaf", "nats", "tls"):
        fail(path, exp, v)
    user = password = None
    if "@" in rest:
        cred, _, rest = rest.rpartition("@")
        user, _, password = cred.partition(":")
    host, port = _host_port(rest.rstrip("/"), path, 7422)
    return (host, port, _tls(h.get("tls", scheme == "tls"), "hub.tls"),
            _str(h, "user", "hub.user", user), _str(h, "password", "hub.password", password))


def _hub(h):
    if h is None:
        return None
    if not isinstance(h, dict):
        fail("hub", "an object or null", h)
    unknown_keys(h, ("url", "user", "password", "token", "tls", "creds", "nkey"), "hub.")
    url = h.get("url")
    if isinstance(url, list) and url:
        urls = []
        for i, u in enumerate(url):
            e = _url(u, "hub.url[%d]" % i, h)
            for o in urls:
                if o[:2] == e[:2]:
                    fail("hub.url[%d]" % i, "a host:port not listed before", u)
            urls.append(e)
    elif isinstance(url, str) and url:
        urls = [_url(url, "hub.url", h)]
    else:
        fail("hub.url", '"nats-leaf://host:port" or a non-empty list of them', url)
    host, port, tls, user, password = urls[0]
    token = _str(h, "token", "hub.token")
    creds = _str(h, "creds", "hub.creds")
    nkey = _str(h, "nkey", "hub.nkey")
    for e in urls:
        if token is not None and e[3] is not None:
            fail("hub.token", "null when hub.user is set", token)
        for key, v in (("creds", creds), ("nkey", nkey)):
            if v is not None and (e[3] is not None or token is not None):
                fail("hub." + key, "null when hub.user or hub.token is set", v)
    if creds is not None and nkey is not None:
        fail("hub.nkey", "null when hub.creds is set (the .creds file holds the seed)", nkey)
    # ("creds", path) or ("nkey", seed file or seed): edge/auth/creds.py reads it at each connect
    signer = ("creds", creds) if creds is not None else ("nkey", nkey) if nkey is not None else None
    if signer is not None:
        try:
            import edge.auth.creds  # noqa: F401 (the runner's import, made here so that its absence is a config error)
        except ImportError:
            _no_package("hub." + signer[0], "auth")
    # the first URL's fields stay at the top for whoever reads one hub; the uplink dials "urls"
    return {"url": url, "urls": urls, "host": host, "port": port, "tls": tls, "user": user, "password": password,
            "token": token, "signer": signer}


def _no_package(key, pkg):
    # edge/auth, edge/workloads: optional packages of a device bundle (natsedge firmware bundle --with PKG).
    raise ConfigError('config: "%s" needs the edge.%s package, which this device lacks (natsedge firmware bundle '
                      '--with %s)' % (key, pkg, pkg))


def _limits(v):
    if v is None:
        v = {}
    if not isinstance(v, dict):
        fail("limits", "an object", v)
    unknown_keys(v, LIMITS, "limits.")
    out = {}
    for key in LIMITS:
        default, low = LIMITS[key]
        path = "limits." + key
        if key in _SECONDS:
            x = v.get(key, default)
            if not is_number(x, low):
                fail(path, "a number of seconds >= %s" % low, x)
            out[key] = int(x * 1000)
        else:
            out[key] = number(v, key, path, default, low, "int")
    if small_heap():  # a small heap's defaults; explicit values win
        # A connection's output queue of one max_payload (8 KB), not 16 KB. MicroPython's stream grows it by
        # concatenation, one contiguous block of its whole size per write; five such queues (4 LAN clients and the
        # hub link) at 16 KB are more than a 60 KB heap.
        if "max_pending" not in v:
            out["max_pending"] = out["max_payload"]
        # A collection after every 4 KB allocated. MicroPython allocates from the lowest free block after a
        # collection and otherwise goes on upwards through the garbage, so data that stays (KV entries,
        # subscriptions) gets scattered across the heap between collections and leaves no contiguous few hundred
        # bytes free (docs/benchmarks.md: the forward + KV scenario ran in 76-77 KB without, 62-64 KB with).
        if "gc_threshold" not in v:
            out["gc_threshold"] = 4096
    if out["max_payload"] > out["max_pending"]:
        fail("limits.max_payload", "at most limits.max_pending (%d)" % out["max_pending"], out["max_payload"])
    if out["reconnect_min"] > out["reconnect_max"]:
        fail("limits.reconnect_min", "at most limits.reconnect_max", v.get("reconnect_min"))
    return out


def check(d):
    # A parsed JSON document -> the config dict with every key present.
    if not isinstance(d, dict):
        raise ConfigError("config: expected a JSON object at the top level, got %s" % got(d))
    unknown_keys(d, ("name", "hub", "listen", "authorization", "data", "app", "limits", "stats", "forward",
                     "forward_settings", "tags", "workloads") + OTHER_LAYERS, "")
    name = _str(d, "name", "name", required=True)
    if " " in name or "\t" in name:
        fail("name", "a name without spaces", name)
    listen = d.get("listen")
    if listen is not None:
        listen = _host_port(listen, "listen")
    authorization = d.get("authorization")
    if authorization is not None:
        try:
            from edge.auth.config import check_authorization  # imported only when used: start-up heap
        except ImportError:
            _no_package("authorization", "auth")
        authorization = check_authorization(authorization, listen)
    app = _str(d, "app", "app")
    if app is not None:
        for part in app.split("."):
            if not part or not (part[0].isalpha() or part[0] == "_") or " " in part:
                fail("app", "a module name or null", app)
    stats = d.get("stats", 0)
    if not is_number(stats, 0):
        fail("stats", "a number of seconds >= 0 (0 = off)", stats)
    kv = d.get("kv")
    workloads = None
    if "workloads" in d or "tags" in d:
        try:
            from edge.workloads.config import check_workloads  # optional package: imported only when used
        except ImportError:
            _no_package("workloads", "workloads")
        workloads, kv = check_workloads(d, kv)  # may add the desired state's bucket to the KV cache's
    if kv is not None:
        from edge.kvcache.config import check_kv  # optional package: imported only when the config uses it

        kv = check_kv(kv)
    limits = _limits(d.get("limits"))
    forward = forward_settings = None
    if d.get("forward") is not None or d.get("forward_settings") is not None:
        from edge.leaf.fwdconfig import check_forward  # imported only when used: start-up heap

        forward, forward_settings = check_forward(d.get("forward"), d.get("forward_settings"), name, limits)
    return {"name": name, "hub": _hub(d.get("hub")), "listen": listen, "authorization": authorization,
            "data": _str(d, "data", "data", "data"),
            "app": app, "limits": limits, "stats": int(stats * 1000), "kv": kv, "forward": forward,
            "forward_settings": forward_settings, "workloads": workloads}


def load(path):
    try:
        with open(path) as f:
            text = f.read()
    except OSError as e:
        raise ConfigError("config: cannot read %s: %s" % (path, e))
    except ValueError:  # UnicodeError (MicroPython's has no message)
        raise ConfigError("config: %s is not UTF-8 text" % path)
    try:
        d = json.loads(text)
    except ValueError as e:
        raise ConfigError("config: %s is not valid JSON: %s" % (path, e))
    return check(d)


def import_app(name):
    mod = __import__(name)
    for part in name.split(".")[1:]:
        mod = getattr(mod, part)
    if not hasattr(mod, "main"):
        raise ImportError("module has no main(leaf)")
    return mod


def prepare(argv):
    # Command-line arguments -> (cfg, app module or None), or an error line to print (exit code 2).
    if len(argv) != 1:
        return "usage: edge CONFIG.json"
    try:
        cfg = load(argv[0])
    except ConfigError as e:
        return str(e)
    app = None
    if cfg["app"]:
        try:
            app = import_app(cfg["app"])
        except ImportError as e:
            return 'config: "app": cannot import "%s": %s' % (cfg["app"], e)
    return cfg, app
