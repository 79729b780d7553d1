"""Client authentication and publish/subscribe permissions (nats-server `auth.go`).

Authentication maps a CONNECT to a User (and so to an account) or refuses it. Permission checks
are cached per subject in PermissionCache, so the publish hot path pays one dict lookup per
subject run, never a wildcard match per message.
"""

from __future__ import annotations

import hmac
from typing import Any

from host.jwt import Trust, authenticate_nkey
from host.opts import GLOBAL_ACCOUNT, Options, Permissions, User
from host.sublist import subject_matches

_PERM_CACHE_MAX = 1024


class PermissionCache:
    """allow/deny lists for one direction, with a bounded per-subject verdict cache."""

    __slots__ = ("allow", "deny", "_cache", "_denied")

    def __init__(self, allow: list[bytes] | None, deny: list[bytes] | None) -> None:
        self.allow = allow
        self.deny = deny
        self._cache: dict[bytes, bool] = {}
        self._denied: dict[bytes, bool] = {}

    def denies(self, subject: bytes) -> bool:
        """Does a deny entry match this literal subject? nats-server filters deliveries of wildcard
        subscriptions with it (client.go checkDenySub), so `SUB ok.>` misses a denied `ok.hidden`."""
        v = self._denied.get(subject)
        if v is None:
            v = bool(self.deny) and any(subject_matches(d, subject) for d in self.deny or ())
            if len(self._denied) >= _PERM_CACHE_MAX:
                self._denied.clear()
            self._denied[subject] = v
        return v

    def check(self, subject: bytes) -> bool:
        v = self._cache.get(subject)
        if v is None:
            v = self._decide(subject)
            if len(self._cache) >= _PERM_CACHE_MAX:
                self._cache.clear()
            self._cache[subject] = v
        return v

    def _decide(self, subject: bytes) -> bool:
        ok = True
        if self.allow is not None:
            ok = any(_perm_matches(a, subject) for a in self.allow)
        if ok and self.deny:
            ok = not any(_perm_matches(d, subject) for d in self.deny)
        return ok


def _perm_matches(pattern: bytes, subject: bytes) -> bool:
    # A subscription subject may itself be a wildcard: nats-server allows `SUB foo.*` under an
    # allow of `foo.>`, i.e. the requested subject must be a subset of the permission.
    if b"*" in subject or b">" in subject:
        return _subset(subject, pattern)
    return subject_matches(pattern, subject)


def _subset(sub: bytes, pattern: bytes) -> bool:
    st = sub.split(b".")
    pt = pattern.split(b".")
    for i, p in enumerate(pt):
        if p == b">":
            return len(st) > i
        if i >= len(st):
            return False
        s = st[i]
        if p == b"*":
            if s == b">":
                return False
            continue
        if s != p:
            return False
    return len(st) == len(pt)


class ClientPermissions:
    __slots__ = ("pub", "sub", "allow_responses")

    def __init__(self, p: Permissions) -> None:
        self.pub = PermissionCache(p.pub_allow, p.pub_deny) if (p.pub_allow is not None or p.pub_deny) else None
        self.sub = PermissionCache(p.sub_allow, p.sub_deny) if (p.sub_allow is not None or p.sub_deny) else None
        self.allow_responses = p.allow_responses


def _eq(a: str | None, b: Any) -> bool:
    return a is not None and isinstance(b, str) and hmac.compare_digest(a.encode(), b.encode())


def authenticate(opts: Options, connect: dict[str, Any], nonce: str = "", trust: Trust | None = None) -> User | None:
    """The user this CONNECT authenticates as; None means 'Authorization Violation'. `nonce` is the one this
    connection's INFO carried, for nkey and JWT signatures; `trust` is operator mode's (host/jwt.py)."""
    if trust is not None:
        return trust.authenticate(connect, nonce)
    users = list(opts.users)
    for acc in opts.accounts.values():
        users.extend(acc.users)
    if connect.get("nkey") is not None and any(u.nkey for u in users):
        u = authenticate_nkey(users, connect, nonce)
        if u is not None and u.permissions is None and opts.default_permissions is not None:
            return User(account=u.account, permissions=opts.default_permissions, nkey=u.nkey)
        return u
    if not (opts.token or opts.username or users):
        return User(account=GLOBAL_ACCOUNT, permissions=opts.default_permissions)
    if opts.token:
        if _eq(opts.token, connect.get("auth_token")):
            return User(token=opts.token, permissions=opts.default_permissions)
        return None
    if opts.username:
        if _eq(opts.username, connect.get("user")) and _eq(opts.password or "", connect.get("pass", "")):
            return User(username=opts.username, permissions=opts.default_permissions)
        return None
    name = connect.get("user")
    if name is None and opts.no_auth_user:
        name = opts.no_auth_user
        for u in users:
            if u.username == name:
                return u
        return None
    for u in users:
        if _eq(u.username, name) and _eq(u.password or "", connect.get("pass", "")):
            if u.permissions is None and opts.default_permissions is not None:
                return User(u.username, u.password, None, u.account, opts.default_permissions)
            return u
    return None


def auth_required(opts: Options) -> bool:
    if opts.operator_jwts:
        return True
    if opts.no_auth_user:
        return False
    return bool(opts.token or opts.username or opts.users or any(a.users for a in opts.accounts.values()))


def nonce_required(opts: Options) -> bool:
    """INFO carries a nonce when nkey users or operators are configured (nats-server nkey.go nonceRequired)."""
    return bool(opts.operator_jwts) or any(u.nkey for u in opts.users) or any(
        u.nkey for a in opts.accounts.values() for u in a.users)
