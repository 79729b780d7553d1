# edge/auth/config.py — the "authorization" config key: who may use the LAN port, and on which subjects.
#
# Called by edge/leaf/config.py only when the config has the key (startup-only, as config.py). The shape is
# nats-server's `authorization` block in JSON: a token, or one user and password, or a list of users, each with
# `permissions` {"publish": ..., "subscribe": ...}, each a list of subjects (the allow list) or
# {"allow": [...], "deny": [...]}. Every error names the key (`authorization.users[1].permissions.publish.deny[0]`).
# Bounded: at most MAX_USERS users and MAX_SUBJECTS subjects per list, so the tables fit a small heap.

from edge import subjects
from edge.leaf.confcheck import fail, unknown_keys

MAX_USERS = 16
MAX_SUBJECTS = 16


def _secret(d, key, path):
    v = d.get(key)
    if not isinstance(v, str) or not v:
        fail(path, "a non-empty string", v)
    return v.encode()


def _subjects(v, path):
    if not isinstance(v, list) or len(v) > MAX_SUBJECTS:
        fail(path, "a list of at most %d subjects" % MAX_SUBJECTS, v)
    out = []
    for i, s in enumerate(v):
        if not isinstance(s, str) or not subjects.valid(s.encode()):
            fail("%s[%d]" % (path, i), "a subject (wildcards allowed)", s)
        out.append(s.encode())
    return out


def _direction(v, path):
    # -> (allow list or None, deny list or None)
    if v is None:
        return None, None
    if isinstance(v, list):
        return _subjects(v, path), None
    if not isinstance(v, dict):
        fail(path, 'a list of subjects or {"allow": [...], "deny": [...]}', v)
    unknown_keys(v, ("allow", "deny"), path + ".")
    allow = v.get("allow")
    deny = v.get("deny")
    return (None if allow is None else _subjects(allow, path + ".allow"),
            None if deny is None else _subjects(deny, path + ".deny"))


def _permissions(v, path):
    # -> None (everything allowed) or (pub allow, pub deny, sub allow, sub deny), each None or a list
    if v is None:
        return None
    if not isinstance(v, dict):
        fail(path, 'an object {"publish": ..., "subscribe": ...}', v)
    unknown_keys(v, ("publish", "subscribe"), path + ".")
    perms = _direction(v.get("publish"), path + ".publish") + _direction(v.get("subscribe"), path + ".subscribe")
    for p in perms:
        if p is not None:
            return perms
    return None


def check_authorization(v, listen):
    # -> {"token": bytes or None, "users": {name bytes: (password bytes, permissions)}}
    if not isinstance(v, dict):
        fail("authorization", "an object or null", v)
    if listen is None:
        fail("authorization", 'null when there is no "listen" (it guards the LAN port)', v)
    unknown_keys(v, ("token", "user", "password", "users"), "authorization.")
    forms = [k for k in ("token", "user", "users") if k in v]
    if len(forms) != 1:
        fail("authorization", 'exactly one of "token", "user" (with "password") or "users"', v)
    if "password" in v and "user" not in v:
        fail("authorization.password", 'null without "user"', v["password"])
    users = {}
    if "token" in v:
        return {"token": _secret(v, "token", "authorization.token"), "users": users}
    if "user" in v:
        users[_secret(v, "user", "authorization.user")] = (_secret(v, "password", "authorization.password"), None)
        return {"token": None, "users": users}
    lst = v["users"]
    if not isinstance(lst, list) or not lst or len(lst) > MAX_USERS:
        fail("authorization.users", "a list of 1 to %d users" % MAX_USERS, lst)
    for i, u in enumerate(lst):
        path = "authorization.users[%d]" % i
        if not isinstance(u, dict):
            fail(path, 'an object {"user", "password", "permissions"}', u)
        unknown_keys(u, ("user", "password", "permissions"), path + ".")
        name = _secret(u, "user", path + ".user")
        if name in users:
            fail(path + ".user", "a name not listed before", u["user"])
        users[name] = (_secret(u, "password", path + ".password"), _permissions(u.get("permissions"),
                                                                              path + ".permissions"))
    return {"token": None, "users": users}
