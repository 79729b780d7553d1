"""Client authentication and publish/subscribe permissions (nats-server `auth.go`).

Authentication maps a CONNECT to a User (and so to an account) or refuses it. Permission checks
are cached per subject in PermissionCache, so the publish hot path pays one dict lookup per
subject run, never a wildcard match per message.
"""

from __future__ import annotations

import hmac
from typing import Any

from host.jwt import Trust, authenticate_nkey, verify_nonce
from host.opts import GLOBAL_ACCOUNT, Options, Permissions, User
from host.sublist import subject_matches

_PERM_CACHE_MAX = 1024
REPLIES_MAX = 4096  # reply subjects an allow_responses client may answer, kept at once (nats-server replyPermLimit)


class PermissionCache:
    """Publish allow/deny lists, with a bounded per-subject verdict cache (client.go pubAllowedFullCheck)."""

    __slots__ = ("allow", "deny", "_cache")

    def __init__(self, allow: list[bytes] | None, deny: list[bytes] | None) -> None:
        self.allow = allow
        self.deny = deny
        self._cache: dict[bytes, bool] = {}

    def check(self, subject: bytes) -> bool:
        v = self._cache.get(subject)
        if v is None:
            v = self._decide(subject)
            if len(self._cache) >= _PERM_CACHE_MAX:
                self._cache.clear()
            self._cache[subject] = v
        return v

    def denies(self, subject: bytes) -> bool:
        """Whether the deny list itself matches (not only a missing allow)."""
        return any(_perm_matches(d, subject) for d in self.deny or ())

    def _decide(self, subject: bytes) -> bool:
        ok = True
        if self.allow is not None:
            ok = any(_perm_matches(a, subject) for a in self.allow)
        if ok and self.deny:
            ok = not any(_perm_matches(d, subject) for d in self.deny)
        return ok


class SubscribePermission:
    """Subscribe allow/deny lists whose entries may name a queue group ("subject queue"), as nats-server's
    canSubscribeInternal: an entry without a queue matches any subscription to its subjects, and once entries with
    queues match a queue subscription, its queue must be one of theirs (allow) or none of theirs (deny)."""

    __slots__ = ("allow", "allow_queues", "deny", "deny_queues", "_denied")

    def __init__(self, allow: list[bytes] | None, deny: list[bytes] | None) -> None:
        # nats-server setPermissions: an empty subscribe allow list restricts nothing.
        self.allow, self.allow_queues = _split_queues(allow) if allow else (None, [])
        self.deny, self.deny_queues = _split_queues(deny) if deny else ([], [])
        self._denied: dict[tuple[bytes, bytes | None], bool] = {}

    def check(self, subject: bytes, queue: bytes | None = None) -> bool:
        if self.allow is not None:
            ok = any(_perm_matches(a, subject) for a in self.allow)
            if queue:
                named = [q for s, q in self.allow_queues if _perm_matches(s, subject)]
                if named:
                    ok = any(_queue_matches(queue, q) for q in named)
            if not ok:
                return False
        if any(_perm_matches(d, subject) for d in self.deny):
            return False
        if queue:
            return not any(_queue_matches(queue, q) for s, q in self.deny_queues if _perm_matches(s, subject))
        return True

    def denies(self, subject: bytes, queue: bytes | None) -> bool:
        """Does a deny entry match this literal subject (for this queue)? nats-server filters deliveries of
        wildcard and queue subscriptions with it (client.go checkDenySub), so `SUB ok.>` misses a denied
        `ok.hidden`."""
        key = (subject, queue)
        v = self._denied.get(key)
        if v is None:
            v = any(subject_matches(d, subject) for d in self.deny) or (
                bool(queue) and any(subject_matches(s, subject) and _queue_matches(queue, q)  # type: ignore[arg-type]
                                    for s, q in self.deny_queues))
            if len(self._denied) >= _PERM_CACHE_MAX:
                self._denied.clear()
            self._denied[key] = v
        return v

    def has_deny(self) -> bool:
        return bool(self.deny or self.deny_queues)


def _split_queues(entries: list[bytes]) -> tuple[list[bytes], list[tuple[bytes, bytes]]]:
    """Plain subjects, and (subject, queue) pairs of the queue-qualified entries."""
    plain: list[bytes] = []
    queued: list[tuple[bytes, bytes]] = []
    for e in entries:
        parts = e.split()
        if len(parts) == 2:
            queued.append((parts[0], parts[1]))
        else:
            plain.append(e)
    return plain, queued


def _queue_matches(queue: bytes, pattern: bytes) -> bool:
    # As nats-server queueMatches: the literal name first ('*' and '>' are valid in queue names), then the queue
    # entry as a wildcard over the queue name.
    return queue == pattern or ((b"*" in pattern or b">" in pattern) and _perm_matches(pattern, queue))


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
    """A connection's permissions: publish (with the reply subjects allow_responses opened, client.go
    responseAllowed) and subscribe."""

    __slots__ = ("pub", "sub", "responses", "replies")

    def __init__(self, p: Permissions) -> None:
        self.pub = PermissionCache(p.pub_allow, p.pub_deny) if (p.pub_allow is not None or p.pub_deny) else None
        self.sub = SubscribePermission(p.sub_allow, p.sub_deny) if (p.sub_allow or p.sub_deny) else None
        self.responses = p.allow_responses
        # reply subject -> [time it was seen, responses published]; only with allow_responses
        self.replies: dict[bytes, list[float]] | None = {} if p.allow_responses is not None else None

    def can_publish(self, subject: bytes, now: float) -> bool:
        if self.pub is None or self.pub.check(subject):
            return True
        replies = self.replies
        if replies is None:
            return False
        seen = replies.get(subject)
        if seen is None:
            return False
        rp = self.responses
        assert rp is not None
        seen[1] += 1
        if (rp.max_msgs > 0 and seen[1] > rp.max_msgs) or (rp.expires > 0 and now - seen[0] > rp.expires):
            del replies[subject]
            return False
        return True

    def track_reply(self, reply: bytes, now: float) -> None:
        """A message with this reply subject was delivered: allow_responses lets the client answer it."""
        replies = self.replies
        if replies is None or (self.pub is not None and self.pub.check(reply)):
            return
        if len(replies) >= REPLIES_MAX:
            self._prune(now)
        replies[reply] = [now, 0.0]

    def _prune(self, now: float) -> None:
        """Drop used-up and expired reply permissions (client.go pruneReplyPerms); if none are, the oldest half, so
        a subscriber flooded with requests it never answers keeps a bounded table."""
        rp = self.responses
        replies = self.replies
        assert rp is not None and replies is not None
        for k in [k for k, (t, n) in replies.items()
                  if (rp.max_msgs > 0 and n >= rp.max_msgs) or (rp.expires > 0 and now - t > rp.expires)]:
            del replies[k]
        if len(replies) >= REPLIES_MAX:
            for k in list(replies)[:REPLIES_MAX // 2]:
                del replies[k]


class LeafPermissions:
    """A leaf user's permissions on the hub's side of the link (nats-server leafnode.go, which swaps publish and
    subscribe on the hub's copy): `publish` is what the leaf may send into the hub, and which of the account's
    interest the hub tells it; `subscribe` is what the hub may send to it, and which literal interest it may
    declare. A leaf that sends or declares outside them is cut off."""

    __slots__ = ("send", "receive", "advertise_allow", "advertise_deny")

    def __init__(self, p: Permissions) -> None:
        self.send = PermissionCache(p.pub_allow, p.pub_deny) if (p.pub_allow is not None or p.pub_deny) else None
        # Queue-qualified subscribe entries say nothing about what a leaf receives (nats-server counts plain
        # matches only), and an empty subscribe allow list restricts nothing.
        allow = _split_queues(p.sub_allow)[0] if p.sub_allow else None
        deny = _split_queues(p.sub_deny)[0] if p.sub_deny else None
        self.receive = PermissionCache(allow, deny) if (allow is not None or deny) else None
        self.advertise_allow = p.pub_allow
        self.advertise_deny = p.pub_deny or []

    def may_send(self, subject: bytes) -> bool:
        return self.send is None or self.send.check(subject)

    def may_receive(self, subject: bytes) -> bool:
        return self.receive is None or self.receive.check(subject)

    def may_advertise(self, subject: bytes) -> bool:
        """Interest the leaf may hear of: subjects it may publish to; a wildcard interest also when it covers one of
        them (nats-server canSubscribeInternal's ReverseMatch for leafs)."""
        allow = self.advertise_allow
        if allow is not None:
            wild = b"*" in subject or b">" in subject
            if not any(_perm_matches(a, subject) or (wild and _subset(a, subject)) for a in allow):
                return False
        return not any(_perm_matches(d, subject) for d in self.advertise_deny)


def _eq(a: str | None, b: Any) -> bool:
    return a is not None and isinstance(b, str) and hmac.compare_digest(a.encode(), b.encode())


def all_users(opts: Options) -> list[User]:
    """The users of the authorization block and of every account (nats-server keeps them in one table)."""
    users = list(opts.users)
    for acc in opts.accounts.values():
        users.extend(acc.users)
    return users


def auth_configured(opts: Options) -> bool:
    """Is authentication on: operator mode, a token, a user, or users anywhere. With no_auth_user it stays on
    (server.go createClient): only the INFO a client gets says `auth_required` no more (info_auth_required)."""
    if opts.operator_jwts:
        return True
    return bool(opts.token or opts.username or opts.users or any(a.users for a in opts.accounts.values()))


def authenticate_leaf(opts: Options, connect: dict[str, Any], nonce: str = "",
                      trust: Trust | None = None) -> User | None:
    """The user a leaf's CONNECT authenticates as (its account; permissions for client and JWT users), None to
    refuse.

    As nats-server isLeafNodeAuthorized: in operator mode the leaf's user JWT signs `nonce`; else
    `leafnodes { authorization }` takes precedence (its single user, nkey or token binds its `account`, its users
    their own); without it, the leaf is checked as a client is (authenticate), and with no authentication at all it
    lands in the leafnodes' account.
    """
    if trust is not None:
        return trust.authenticate(connect, nonce, "LEAFNODE")
    lo = opts.leafnodes
    name = connect.get("user")
    password = connect.get("pass") or ""
    if lo.nkey:
        ok = connect.get("nkey") == lo.nkey and verify_nonce(lo.nkey, nonce, connect.get("sig"))
        return User(nkey=lo.nkey, account=lo.account) if ok else None
    if lo.token:
        return User(token=lo.token, account=lo.account) if _eq(lo.token, connect.get("auth_token")) else None
    if lo.username:
        ok = _eq(lo.username, name) and _eq(lo.password or "", password)
        return User(username=lo.username, account=lo.account) if ok else None
    if lo.users:
        for u in lo.users:
            if _eq(u.username, name):
                return User(username=u.username, account=u.account) if _eq(u.password or "", password) else None
        return None
    if auth_configured(opts):
        return authenticate(opts, connect, nonce)
    return User(account=lo.account)


# Attribute names of a certificate subject as nats-server writes a distinguished name (Go pkix).
_DN_NAMES = {"commonName": "CN", "organizationName": "O", "organizationalUnitName": "OU", "countryName": "C",
             "localityName": "L", "stateOrProvinceName": "ST", "streetAddress": "STREET", "postalCode": "POSTALCODE",
             "serialNumber": "SERIALNUMBER", "domainComponent": "DC", "userId": "UID"}


def user_from_cert(users: list[User], peercert: dict[str, Any]) -> User | None:
    """verify_and_map (nats-server checkClientTLSCertSubject): the user named by the certificate's e-mail SANs,
    then its DNS SANs, then its URI SANs, then whose name is the certificate's subject as a distinguished name
    ("CN=app,O=acme": the same attributes in any order)."""
    sans = peercert.get("subjectAltName", ())
    by_name = {u.username: u for u in users if u.username}
    for kind in ("email", "DNS", "URI"):
        for k, v in sans:
            if k == kind and v in by_name:
                return by_name[v]
    subject = {(_DN_NAMES.get(k, k), v) for rdn in peercert.get("subject", ()) for k, v in rdn}
    for u in users:
        if u.username and _parse_dn(u.username) == subject:
            return u
    return None


def _parse_dn(text: str) -> set[tuple[str, str]] | None:
    """"CN=app, O=acme" -> {("CN", "app"), ("O", "acme")}; None when it is not a distinguished name. Escaped
    commas ("\\,") stay in their value."""
    parts: list[str] = []
    cur = ""
    escaped = False
    for ch in text:
        if escaped:
            cur += ch
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch in ",+":
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    out = set()
    for part in parts:
        k, eq, v = part.partition("=")
        if not eq or not k.strip():
            return None
        out.add((k.strip().upper(), v.strip()))
    return out


def info_auth_required(opts: Options) -> bool:
    """What INFO tells clients: nothing about authentication when no_auth_user lets them in without credentials."""
    return auth_configured(opts) and not opts.no_auth_user


def nonce_required(opts: Options) -> bool:
    """INFO carries a nonce when nkey users or operators are configured (nats-server nkey.go nonceRequired)."""
    return bool(opts.operator_jwts) or any(u.nkey for u in opts.users) or any(
        u.nkey for a in opts.accounts.values() for u in a.users)


def authenticate(opts: Options, connect: dict[str, Any], nonce: str = "", trust: Trust | None = None,
                 peercert: dict[str, Any] | None = None) -> User | None:
    """The user this CONNECT authenticates as; None means 'Authorization Violation'. `nonce` is the one this
    connection's INFO carried, for nkey and JWT signatures; `trust` is operator mode's (host/jwt.py).

    As nats-server processClientOrLeafAuthentication: an nkey is checked first; then with verify_and_map the
    client certificate names the user (peercert: ssl's getpeercert()); no_auth_user stands in only for a CONNECT
    that carries no user, password, token or nkey at all (an nkey no_auth_user needs no signature); a user name or
    nkey that is given must exist and its password or signature match (never a fall back to no_auth_user); without
    users, the token or the single user/password of the authorization block.
    """
    if trust is not None:
        return trust.authenticate(connect, nonce)
    if not auth_configured(opts):
        return User(account=GLOBAL_ACCOUNT)
    name = connect.get("user")
    password = connect.get("pass")
    token = connect.get("auth_token")
    nkey = connect.get("nkey")
    users = all_users(opts)
    anonymous = opts.no_auth_user and not (name or password or token or nkey)
    if any(u.nkey for u in users):
        if anonymous:
            for u in users:
                if u.nkey is not None and u.nkey == opts.no_auth_user:
                    return u
        if nkey:
            return authenticate_nkey(users, connect, nonce)
    if users and opts.tls_map:
        return user_from_cert(users, peercert) if peercert else None
    if users:
        if anonymous:
            name = opts.no_auth_user
            for u in users:
                if u.username == name:
                    password = u.password
        if name:
            for u in users:
                if _eq(u.username, name):
                    return u if _eq(u.password or "", password or "") else None
            return None
    if opts.token:
        return User(token=opts.token) if _eq(opts.token, token) else None
    if opts.username:
        if _eq(opts.username, name) and _eq(opts.password or "", password or ""):
            return User(username=opts.username)
    return None
