"""nkeys and decentralized (JWT) authentication (nats-server `nkey.go`, `jwt.go`, `accounts.go` resolvers).

Owns: checking an nkey signature over the connection's nonce, decoding and verifying nats-io JWTs (v2 claims), the
account resolvers (`resolver: MEMORY` with `resolver_preload`, and the directory resolver `resolver { type: full|cache,
dir }`), and turning a CONNECT with `jwt` + `sig` into a User of a JWT account.

Rules it keeps:
1. A JWT is trusted only through a chain of signatures ending at the configured operator: the account JWT signed by the
   operator (or one of its signing keys), the user JWT by the account (or one of the account's signing keys, naming it
   in `issuer_account`). Every link is verified each time it is loaded.
2. Fail closed: a claim this hub cannot enforce (`src`, `times`, a scoped signing key's template) refuses the user
   rather than letting it in with fewer restrictions than its issuer wrote (docs/security.md).
3. An account's quotas from its claims go into opts.AccountLimits and nowhere else; the hub account of a JWT account is
   named by its public key, as nats-server names it.

`nkeys` (nats-io's package, over PyNaCl) is imported when the configuration first needs it (`require_nkeys`), so a hub
without the `hub` extra runs until a config asks for nkeys, and then says in one line what to install.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from host.opts import (
    AccountConfig,
    AccountLimits,
    Export,
    Import,
    Options,
    OptionsError,
    Permissions,
    ResponsePermission,
    User,
)
from host.subject_transform import Mapping, MappingError
from host.sublist import is_valid_subject

if TYPE_CHECKING:
    from host.accounts import Account
    from host.server import Server

log = logging.getLogger("natsedge.hub")

JWT_HEADER_TYPES = ("JWT", "jwt")
JWT_ALG_V2 = "ed25519-nkey"  # nats-io/jwt v2: ed25519 over `header.claims`
JWT_ALG_V1 = "ed25519"  # v1 (nsc before 2.0, still in the field): ed25519 over the claims part alone
# account JWT pushes to the directory resolver, from the system account (nats-server events.go accUpdateEventSubjNew,
# accClaimsReqSubj)
CLAIMS_UPDATE_ACCOUNT = b"$SYS.REQ.ACCOUNT.*.CLAIMS.UPDATE"
CLAIMS_UPDATE = b"$SYS.REQ.CLAIMS.UPDATE"
JWT_FILE_EXT = ".jwt"  # nats-server dirstore.go fileExtension: the directory resolver's files are <account>.jwt

# nkey prefixes (nats-io/nkeys): the first base32 character of a public key says what it is.
PREFIX_OPERATOR = "O"
PREFIX_ACCOUNT = "A"
PREFIX_USER = "U"

# JWT account claim `limits` key -> AccountLimits field (nats-io/jwt OperatorLimits: NatsLimits, AccountLimits,
# JetStreamLimits). `data`, `imports`, `exports`, `wildcards` are not quotas nats-server enforces per connection
# (nats-reference more/README.md §E) and have no field. nats-io/jwt decodes a missing key as 0 (its fields are
# `omitempty` integers with no defaults when an account JWT is read), and nats-server applies that 0.
_CLAIM_CORE_LIMITS = {
    "conn": "max_connections",
    "subs": "max_subscriptions",
    "payload": "max_payload",
    "leaf": "max_leafnodes",
}
# nats-server updateAccountClaimsWithRefresh: memory/disk/streams/consumers as written (0 stays 0); the max stream
# bytes and max_ack_pending of 0 (or below) mean no limit (its toUnlimited).
_CLAIM_JS_LIMITS = {
    "mem_storage": "js_max_memory",
    "disk_storage": "js_max_storage",
    "streams": "js_max_streams",
    "consumer": "js_max_consumers",
}
_CLAIM_JS_UNLIMITED_AT_ZERO = {
    "max_ack_pending": "js_max_ack_pending",
    "mem_max_stream_bytes": "js_memory_max_stream_bytes",
    "disk_max_stream_bytes": "js_storage_max_stream_bytes",
}
# The JetStream tier of a stream on this hub: it runs no JetStream cluster, so every stream has one replica
# (nats-server tierName(1)).
JS_TIER = "R1"
_INT32_MAX = (1 << 31) - 1
_INT32_MIN = -(1 << 31)


class JwtError(ValueError):
    """A JWT or nkey that does not decode or verify; str() says why in one line."""


def require_nkeys() -> None:
    """Import what signature checks need now, so a missing package is reported at start-up (host/tools/needs.py maps
    the ModuleNotFoundError to `pip install 'natsedge[hub]'`), never in a connection's callback."""
    import nacl.signing  # noqa: F401
    import nkeys  # noqa: F401


def decode_public_key(public: str, prefixes: str) -> bytes:
    """The 32 raw ed25519 bytes of an nkey public key whose kind is one of `prefixes` ("A", "OA", ...)."""
    import nkeys

    if not isinstance(public, str) or not public or public[0] not in prefixes:
        raise JwtError(f"not a public {'/'.join(prefixes)} nkey: {str(public)[:60]!r}")
    try:
        raw = base64.b32decode(public + "=" * (-len(public) % 8))
    except (binascii.Error, ValueError):
        raise JwtError(f"invalid nkey encoding: {public[:60]!r}") from None
    if len(raw) != 35:
        raise JwtError(f"invalid nkey length: {public[:60]!r}")
    body, crc = raw[:-2], raw[-2:]
    if nkeys.crc16_checksum(body) != crc:
        raise JwtError(f"invalid nkey checksum: {public[:60]!r}")
    return body[1:]


def verify(public: str, data: bytes, sig: bytes) -> bool:
    """Is `sig` the ed25519 signature of `data` by the holder of `public` (an nkey)?"""
    import nacl.exceptions
    import nacl.signing

    try:
        raw = decode_public_key(public, PREFIX_OPERATOR + PREFIX_ACCOUNT + PREFIX_USER + "N")
        nacl.signing.VerifyKey(raw).verify(data, sig)
        return True
    except (JwtError, nacl.exceptions.BadSignatureError, ValueError, TypeError):
        return False


def decode_sig(text: Any) -> bytes | None:
    """CONNECT `sig`: base64url without padding, or standard base64 (nats-server accepts both)."""
    if not isinstance(text, str) or not text:
        return None
    for decode in (base64.urlsafe_b64decode, base64.b64decode):
        try:
            return decode(text + "=" * (-len(text) % 4))
        except (binascii.Error, ValueError):
            continue
    return None


def verify_nonce(public: str, nonce: str, sig_text: Any) -> bool:
    """CONNECT `sig` checked against the nonce this connection's INFO carried."""
    sig = decode_sig(sig_text)
    return sig is not None and bool(nonce) and verify(public, nonce.encode(), sig)


def _b64json(part: str) -> Any:
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def decode_jwt(token: Any) -> dict[str, Any]:
    """The claims of a JWT whose signature verifies against its own `iss`; JwtError otherwise. Whether `iss` is
    trusted is the caller's question."""
    if not isinstance(token, str) or token.count(".") != 2:
        raise JwtError("not a JWT (expected three dot-separated parts)")
    head_b64, claims_b64, sig_b64 = token.split(".")
    try:
        header = _b64json(head_b64)
        claims = _b64json(claims_b64)
        sig = base64.urlsafe_b64decode(sig_b64 + "=" * (-len(sig_b64) % 4))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise JwtError("not a JWT (a part is not base64url JSON)") from None
    if not isinstance(header, dict) or header.get("typ") not in JWT_HEADER_TYPES \
            or header.get("alg") not in (JWT_ALG_V2, JWT_ALG_V1):
        raise JwtError(f"unsupported JWT header {header!r}")
    if not isinstance(claims, dict) or not isinstance(claims.get("iss"), str) or not isinstance(claims.get("sub"), str):
        raise JwtError("JWT claims need iss and sub")
    signed = claims_b64 if header["alg"] == JWT_ALG_V1 else head_b64 + "." + claims_b64
    if not verify(claims["iss"], signed.encode(), sig):
        raise JwtError("JWT signature does not verify")
    if not isinstance(claims.get("nats", {}), dict):
        raise JwtError("JWT nats claims must be an object")
    if claim_version(claims) not in (1, 2):
        # nats-io/jwt loadClaims reads v1 (a top-level `type`) and v2 (`nats.version`) claims only
        raise JwtError(f"unsupported JWT claims version {claim_version(claims)}")
    return claims


def claim_type(claims: dict[str, Any]) -> str:
    """`operator`, `account` or `user`: in `nats.type` (v2) or at the top level (v1)."""
    t = (claims.get("nats") or {}).get("type") or claims.get("type")
    return t if isinstance(t, str) else ""


def expired(claims: dict[str, Any], now: float | None = None) -> bool:
    exp = claims.get("exp")
    return isinstance(exp, (int, float)) and exp > 0 and (now if now is not None else time.time()) > exp


def read_jwt_source(value: str) -> str:
    """`operator: ...` and the like: a JWT inline, or the path of a file holding one (plain, or decorated with nsc's
    `-----BEGIN ...-----` lines)."""
    if value.count(".") == 2 and value.startswith("eyJ"):
        return value
    try:
        with open(value, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise JwtError(f"cannot read JWT file {value}: {e.strerror}") from None
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("eyJ") and line.count(".") == 2:
            return line
    raise JwtError(f"no JWT found in {value}")


def read_creds(path: str) -> tuple[str, str]:
    """(user JWT, user seed) of a `.creds` file as nsc writes it."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise JwtError(f"cannot read credentials file {path}: {e.strerror}") from None
    jwt = seed = ""
    for line in text.splitlines():
        line = line.strip()
        if not jwt and line.startswith("eyJ") and line.count(".") == 2:
            jwt = line
        elif not seed and line.startswith("SU"):
            seed = line
    if not jwt or not seed:
        raise JwtError(f"credentials file {path}: expected a user JWT and a user seed (SU...)")
    return jwt, seed


def sign_nonce(seed: str, nonce: str) -> str:
    """CONNECT `sig` for a nonce, as clients send it (base64url without padding)."""
    import nkeys

    try:
        kp = nkeys.from_seed(seed.encode())
    except Exception as e:  # nkeys raises its own error classes and binascii errors for a bad seed
        raise JwtError(f"invalid nkey seed: {e}") from None
    return base64.urlsafe_b64encode(kp.sign(nonce.encode())).rstrip(b"=").decode()


def _subjects(v: Any) -> list[bytes] | None:
    if not isinstance(v, list) or not v:
        return None
    return [s.encode() for s in v if isinstance(s, str) and s]


def claim_permissions(nats: dict[str, Any]) -> Permissions | None:
    """`pub`/`sub` allow/deny and `resp` of user (or account default) claims; None when they restrict nothing."""
    pub = nats.get("pub") if isinstance(nats.get("pub"), dict) else {}
    sub = nats.get("sub") if isinstance(nats.get("sub"), dict) else {}
    p = Permissions(pub_allow=_subjects(pub.get("allow")), pub_deny=_subjects(pub.get("deny")),
                    sub_allow=_subjects(sub.get("allow")), sub_deny=_subjects(sub.get("deny")),
                    allow_responses=_claim_responses(nats.get("resp")))
    if p.pub_allow is None and p.pub_deny is None and p.sub_allow is None and p.sub_deny is None \
            and p.allow_responses is None:
        return None
    if p.allow_responses is not None and p.pub_allow is None:
        p.pub_allow = []  # nats-server validateResponsePermissions: no blanket publish allow
    return p


def claim_version(claims: dict[str, Any]) -> int:
    """nats-io/jwt identifier.Version: 1 when `type` is at the top level, else `nats.version` (0 when missing)."""
    if claims.get("type"):
        return 1
    v = (claims.get("nats") or {}).get("version", 0)
    return v if isinstance(v, int) and not isinstance(v, bool) else 0


def _claim_responses(resp: Any) -> ResponsePermission | None:
    """`resp: {max, ttl}` (ttl in ns); 0 or missing takes nats-server's defaults (validateResponsePermissions)."""
    if not isinstance(resp, dict):
        return None
    rp = ResponsePermission()
    n, ttl = resp.get("max"), resp.get("ttl")
    if isinstance(n, int) and not isinstance(n, bool) and n:
        rp.max_msgs = n
    if isinstance(ttl, (int, float)) and not isinstance(ttl, bool) and ttl:
        rp.expires = ttl / 1e9
    return rp


def _claim_int(v: Any, missing: int = 0) -> int:
    """An integer limit claim; `missing` for an absent or non-integer one."""
    return v if isinstance(v, int) and not isinstance(v, bool) else missing


def _clamp32(v: int) -> int:
    """nats-server clampInt64ToInt32: per-connection and account core limits are int32 there."""
    return max(_INT32_MIN, min(_INT32_MAX, v))


def js_enabled_by(lim: dict[str, Any]) -> bool:
    """nats-io/jwt OperatorLimits.IsJSEnabled: memory or disk storage not 0, in the flat limits or in any tier."""
    tiers = lim.get("tiered_limits")
    scopes = [t for t in tiers.values() if isinstance(t, dict)] if isinstance(tiers, dict) and tiers else [lim]
    return any(_claim_int(t.get("mem_storage")) != 0 or _claim_int(t.get("disk_storage")) != 0 for t in scopes)


def claim_limits(nats: dict[str, Any], version: int = 2) -> AccountLimits:
    """An account JWT's `limits` as nats-server applies them (AccountLimits, -1: none). A key the JWT lacks is 0, as
    nats-io/jwt decodes it: `conn` missing admits no connection. A v1 account JWT has no JetStream limits (nats-io/jwt
    migrates it with none). A JWT with `tiered_limits` but no R1 tier leaves `js_no_tier` set: this hub's streams are
    all R1, so nats-server's error 10120 answers them."""
    lim = nats.get("limits") if isinstance(nats.get("limits"), dict) else {}
    out = AccountLimits()
    for key, attr in _CLAIM_CORE_LIMITS.items():
        setattr(out, attr, _clamp32(_claim_int(lim.get(key))))
    if version < 2 or not js_enabled_by(lim):
        return out
    tiers = lim.get("tiered_limits")
    if isinstance(tiers, dict) and tiers:
        # nats-io/jwt loadAccount: tiered limits replace the flat ones
        for name, tier in tiers.items():
            if isinstance(tier, dict):
                out.js_tiers[name] = _set_js_limits(AccountLimits(), tier)
        if JS_TIER not in out.js_tiers:
            out.js_no_tier = True
            return out
        return _set_js_limits(out, tiers[JS_TIER])
    return _set_js_limits(out, lim)


def _set_js_limits(out: AccountLimits, js: dict[str, Any]) -> AccountLimits:
    """Fill the js_ fields of `out` from JetStream limit claims (flat, or one tier's)."""
    for key, attr in _CLAIM_JS_LIMITS.items():
        setattr(out, attr, _claim_int(js.get(key)))
    for key, attr in _CLAIM_JS_UNLIMITED_AT_ZERO.items():
        v = _claim_int(js.get(key))
        setattr(out, attr, v if v > 0 else -1)
    out.js_max_bytes_required = js.get("max_bytes_required") is True
    return out


def user_limits(claims: dict[str, Any]) -> tuple[int, int]:
    """(max subscriptions, max payload) of a user JWT, as nats-server applyAccountLimits starts from them: a v2 JWT
    without `subs` / `payload` has 0 (nats-io/jwt decodes the missing field as 0, and nats-server applies it: no
    subscription, no payload byte); a v1 JWT without them has -1 (its decoder defaults them to NoLimit). `data` is
    not read, as nats-server reads none."""
    nats = claims.get("nats") or {}
    missing = -1 if claim_version(claims) == 1 else 0
    return _clamp32(_claim_int(nats.get("subs"), missing)), _clamp32(_claim_int(nats.get("payload"), missing))


@dataclass
class AccountClaims:
    """A verified account JWT, as the hub uses it."""

    public: str
    name: str
    issuer: str
    jwt: str
    claims: dict[str, Any]
    signing_keys: set[str] = field(default_factory=set)
    scoped_keys: set[str] = field(default_factory=set)  # signing keys with a user_scope template (refused, rule 2)
    revocations: dict[str, int] = field(default_factory=dict)
    default_permissions: Permissions | None = None

    def config(self) -> AccountConfig:
        nats = self.claims.get("nats", {})
        version = claim_version(self.claims)
        cfg = AccountConfig(name=self.public, limits=claim_limits(nats, version))
        lim = nats.get("limits") if isinstance(nats.get("limits"), dict) else {}
        # nats-io/jwt: JetStream is on for an account when its memory or disk limit is not 0 (0 is the default),
        # flat or in a tier; a v1 account JWT has no JetStream
        cfg.jetstream = version >= 2 and js_enabled_by(lim)
        cfg.exports = [e for e in (_export(x) for x in nats.get("exports") or []) if e is not None]
        cfg.imports = [i for i in (_import(x) for x in nats.get("imports") or []) if i is not None]
        cfg.mappings = _mappings(nats.get("mappings"), self.public)
        return cfg

    def disallows_bearer(self) -> bool:
        """The account's `limits.disallow_bearer`: bearer user JWTs (no nonce signature) are refused."""
        lim = (self.claims.get("nats") or {}).get("limits")
        return isinstance(lim, dict) and lim.get("disallow_bearer") is True

    def revoked(self, user: str, issued_at: Any) -> bool:
        """nats-server checkUserRevoked: revoked when the revocation time is at or after the JWT's `iat`; `*` revokes
        every user issued until then."""
        iat = issued_at if isinstance(issued_at, int) else 0
        return any(k in self.revocations and self.revocations[k] >= iat for k in (user, "*"))


def _mappings(claim: Any, account: str) -> list[Mapping]:
    """An account's `mappings` claim (nats-io/jwt Mapping: source -> [{subject, weight, cluster}], a weight of 0 or
    none meaning 100), as nats-server applies them: one it cannot add is left out (logged here)."""
    out: list[Mapping] = []
    if not isinstance(claim, dict):
        return out
    for src, dests in claim.items():
        try:
            if not isinstance(dests, list) or not all(
                    isinstance(d, dict) and isinstance(d.get("subject"), str) for d in dests):
                raise MappingError("expected a list of {subject, weight, cluster}")
            weighted = []
            for d in dests:
                w = d.get("weight") or 100
                if isinstance(w, bool) or not isinstance(w, int) or not 0 <= w <= 255:
                    raise MappingError(f"weight {w!r} is not a number of 0-255")
                weighted.append((d["subject"], w, str(d.get("cluster") or "")))
            if not is_valid_subject(str(src).encode()):
                raise MappingError("invalid subject")
            out.append(Mapping(str(src), weighted))
        except MappingError as e:
            log.warning("Account %s: mapping of %r left out: %s", account, src, e)
    return out


def _export(x: Any) -> Export | None:
    if not isinstance(x, dict) or not isinstance(x.get("subject"), str) or x.get("token_req"):
        return None  # an activation-token export is not offered to anyone (no tokens here): fail closed
    return Export(subject=x["subject"].encode(), service=x.get("type") == "service")


def _import(x: Any) -> Import | None:
    if not isinstance(x, dict) or not isinstance(x.get("subject"), str) or not isinstance(x.get("account"), str):
        return None
    local = x.get("local_subject") or x.get("to") or x["subject"]
    return Import(account=x["account"], subject=x["subject"].encode(), service=x.get("type") == "service",
                  local=str(local).encode())


def account_claims(token: str, trusted: set[str], public: str | None = None) -> AccountClaims:
    """Verify an account JWT: signed by a trusted operator key, of an account key (the one expected, if given)."""
    c = decode_jwt(token)
    nats = c.get("nats") or {}
    if c["iss"] not in trusted:
        raise JwtError(f"account JWT {c['sub'][:12]}... is not signed by a trusted operator")
    if not c["sub"].startswith(PREFIX_ACCOUNT) or claim_type(c) not in ("account", ""):
        raise JwtError(f"not an account JWT: {c['sub'][:12]}...")
    if public is not None and c["sub"] != public:
        raise JwtError(f"account JWT subject {c['sub']} does not match {public}")
    ac = AccountClaims(public=c["sub"], name=str(c.get("name") or c["sub"]), issuer=c["iss"], jwt=token, claims=c)
    for k in nats.get("signing_keys") or []:
        if isinstance(k, str):
            ac.signing_keys.add(k)
        elif isinstance(k, dict) and isinstance(k.get("key"), str):
            ac.signing_keys.add(k["key"])
            ac.scoped_keys.add(k["key"])
    rev = nats.get("revocations")
    if isinstance(rev, dict):
        ac.revocations = {k: v for k, v in rev.items() if isinstance(v, int)}
    dp = nats.get("default_permissions")
    if isinstance(dp, dict):
        ac.default_permissions = claim_permissions(dp)
    _validate_mapping_weights(nats.get("mappings"))
    return ac


def _validate_mapping_weights(claim: Any) -> None:
    """nats-io/jwt Mapping.Validate's weight rules (its texts): an account JWT that breaks them is invalid as a whole
    (nats-server then refuses its users)."""
    if not isinstance(claim, dict):
        return
    for src, dests in claim.items():
        total = 0
        per_cluster: dict[str, int] = {}
        for d in dests if isinstance(dests, list) else []:
            w = (d.get("weight") if isinstance(d, dict) else 0) or 100
            if not isinstance(w, int):
                continue  # (a weight that is no number is left to _mappings, which leaves the mapping out)
            if w > 100:
                raise JwtError(f'Mapping "{src}" has a weight {w} that exceeds 100')
            cluster = d.get("cluster") or ""
            if cluster:
                per_cluster[cluster] = per_cluster.get(cluster, 0) + w
                if per_cluster[cluster] > 100:
                    raise JwtError(f'Mapping "{src}" in cluster "{cluster}" exceeds 100% among all of it\'s weighted '
                                   "to mappings")
            else:
                total += w
        if total > 100:
            raise JwtError(f'Mapping "{src}" exceeds 100% among all of it\'s weighted to mappings')


class Trust:
    """Operator mode: the trusted operator keys and the account resolver.

    Memory resolver: the preloaded account JWTs, verified at start. Directory resolver: `<dir>/<account>.jwt` files,
    read and verified when an account is first looked up (and again when the file changes, so a JWT written there
    by an operator tool takes effect at the next connection)."""

    def __init__(self, opts: Options) -> None:
        # nats-server validateTrustedOperators: its checks and texts
        if not opts.resolver:
            raise JwtError("operators require an account resolver to be configured (this hub has no URL resolver: "
                           "resolver: MEMORY with resolver_preload, or resolver { type: full, dir: ... })")
        if opts.accounts:
            raise JwtError("operators do not allow Accounts to be configured directly")
        if opts.users or opts.username or opts.token:
            raise JwtError("operators do not allow users to be configured directly")
        require_nkeys()
        self.operators: list[dict[str, Any]] = []
        self.trusted: set[str] = set()
        for src in opts.operator_jwts:
            c = decode_jwt(read_jwt_source(src))
            if not c["sub"].startswith(PREFIX_OPERATOR) or claim_type(c) not in ("operator", ""):
                raise JwtError(f"operator: not an operator JWT ({c['sub'][:12]}...)")
            if c["iss"] != c["sub"] and c["iss"] not in self.trusted:
                raise JwtError("operator: an operator JWT must be self-signed")
            if expired(c):
                raise JwtError(f"operator: the JWT of operator {c.get('name', c['sub'])!r} has expired")
            self.operators.append(c)
            self.trusted.add(c["sub"])
            self.trusted.update(k for k in (c.get("nats") or {}).get("signing_keys") or [] if isinstance(k, str))
        op_systems = [s for c in self.operators if isinstance(s := (c.get("nats") or {}).get("system_account"), str)]
        if opts.system_account and op_systems and opts.system_account not in op_systems:
            raise JwtError("system_account in config and operator JWT must be identical")
        self.system_account = opts.system_account or (op_systems[0] if op_systems else "")
        if not self.system_account and opts.resolver != "MEMORY":
            raise JwtError("using nats based account resolver - the system account needs to be specified in "
                           "configuration or the operator jwt")
        self.dir = opts.resolver_dir
        self._cache: dict[str, tuple[float, AccountClaims]] = {}  # dir resolver: account -> (file mtime, claims)
        self.preloaded: dict[str, AccountClaims] = {}
        for public, token in opts.resolver_preload.items():
            try:
                self.preloaded[public] = account_claims(read_jwt_source(token), self.trusted, public)
            except JwtError as e:
                raise JwtError(f"resolver_preload {public}: {e}") from None
        if self.dir:
            os.makedirs(self.dir, exist_ok=True)

    def known_accounts(self) -> list[AccountClaims]:
        """Every account the resolver holds now (preloaded, and each readable file of the directory)."""
        out = dict(self.preloaded)
        if self.dir:
            for name in sorted(os.listdir(self.dir)):
                if name.endswith(JWT_FILE_EXT) and name[:-len(JWT_FILE_EXT)] not in out:
                    ac = self.account(name[:-len(JWT_FILE_EXT)])
                    if ac is not None:
                        out[ac.public] = ac
        return list(out.values())

    def account(self, public: str) -> AccountClaims | None:
        """The verified claims of an account, or None (logged as nats-server logs a failed fetch)."""
        ac = self.preloaded.get(public)
        if ac is not None:
            return ac
        if self.dir and public.startswith(PREFIX_ACCOUNT) and public.isalnum():
            path = os.path.join(self.dir, public + JWT_FILE_EXT)
            try:
                mtime = os.stat(path).st_mtime
                hit = self._cache.get(public)
                if hit is not None and hit[0] == mtime:
                    return hit[1]
                with open(path, encoding="utf-8") as f:
                    ac = account_claims(f.read().strip(), self.trusted, public)
                self._cache[public] = (mtime, ac)
                return ac
            except FileNotFoundError:
                pass
            except (OSError, JwtError) as e:
                log.warning("Account fetch failed: %s", e)
                return None
        log.warning("Account fetch failed: account missing")
        return None

    def save(self, ac: AccountClaims) -> None:
        """Store a pushed account JWT in the directory resolver (written whole, then renamed into place)."""
        path = os.path.join(self.dir, ac.public + JWT_FILE_EXT)
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(ac.jwt)
        os.replace(tmp, path)
        self._cache[ac.public] = (os.stat(path).st_mtime, ac)

    def authenticate(self, connect: dict[str, Any], nonce: str, kind: str = "STANDARD") -> User | None:
        """The user a CONNECT with `jwt` (+ `sig`) authenticates as, in the JWT account it names; None refuses it
        (nats-server processClientOrLeafAuthentication, JWT branch, in its order of checks). `kind` is the connection
        type a user's `allowed_connection_types` must name: STANDARD for clients, LEAFNODE for leafs."""
        try:
            uc = decode_jwt(connect.get("jwt"))
        except JwtError as e:
            log.debug("User JWT not valid: %s", e)
            return None
        nats = uc.get("nats") or {}
        user = uc["sub"]
        if not user.startswith(PREFIX_USER) or claim_type(uc) not in ("user", ""):
            log.debug("JWT is not a user JWT")
            return None
        if expired(uc):
            log.debug("User JWT has expired")
            return None
        issuer = nats.get("issuer_account") or uc["iss"]
        acc = self.account(issuer) if isinstance(issuer, str) else None
        if acc is None:
            return None
        if expired(acc.claims):
            log.debug("Account JWT has expired")
            return None
        if uc["iss"] != acc.public and uc["iss"] not in acc.signing_keys:
            log.debug("User JWT issuer is not known")
            return None
        if uc["iss"] in acc.scoped_keys:
            log.warning("User %s signed by a scoped signing key: scope templates are not supported, refused", user)
            return None
        if nats.get("bearer_token") and acc.disallows_bearer():
            log.debug("Account does not allow bearer tokens")
            return None
        types = nats.get("allowed_connection_types")
        if isinstance(types, list) and types and kind not in types:
            log.debug("Connection type not allowed")
            return None
        if not nats.get("bearer_token"):
            if not verify_nonce(user, nonce, connect.get("sig")):
                log.debug("Signature not verified")
                return None
        if acc.revoked(user, uc.get("iat")):
            log.debug("User authentication revoked")
            return None
        if nats.get("src") or nats.get("times"):
            log.warning("User %s has src/times connect restrictions, which this hub does not enforce: refused", user)
            return None
        perms = claim_permissions(nats)
        if perms is None:
            perms = acc.default_permissions
        exp = uc.get("exp")
        max_subs, max_payload = user_limits(uc)
        return User(username=user, account=acc.public, permissions=perms,
                    issued_at=uc["iat"] if isinstance(uc.get("iat"), int) else 0,
                    expires=exp if isinstance(exp, int) and exp > 0 else 0,
                    max_subscriptions=max_subs, max_payload=max_payload, bearer=nats.get("bearer_token") is True)


def check_options(opts: Options) -> None:
    """What opts.validate cannot check without the nkeys package: nkey users' keys, leaf remotes' credentials files,
    the operator-mode trust chain. OptionsError with nats-server's text; ModuleNotFoundError without the package."""
    users = [*opts.users, *(u for a in opts.accounts.values() for u in a.users)]
    creds = [r.credentials for r in opts.leafnodes.remotes if r.credentials]
    if any(u.nkey for u in users) or creds or opts.leafnodes.nkey:
        require_nkeys()
    if opts.leafnodes.nkey:
        try:
            decode_public_key(opts.leafnodes.nkey, PREFIX_USER)
        except JwtError:
            raise OptionsError("Not a valid public nkey for leafnode authorization") from None
    for u in users:
        if u.nkey is not None:
            try:
                decode_public_key(u.nkey, PREFIX_USER)
            except JwtError:
                raise OptionsError(f"Not a valid public nkey for a user: {u.nkey[:60]!r}") from None
    for path in creds:
        try:
            read_creds(path)
        except JwtError as e:
            raise OptionsError(str(e)) from None
    trust_from_options(opts)


def trust_from_options(opts: Options) -> Trust | None:
    """The operator-mode trust of these options (None without `operator`); OptionsError for a bad one."""
    if not opts.operator_jwts:
        return None
    try:
        return Trust(opts)
    except JwtError as e:
        raise OptionsError(str(e)) from None


def install_claims_update(server: Server, trust: Trust, system: Account) -> None:
    """Serve `$SYS.REQ.ACCOUNT.<account>.CLAIMS.UPDATE` and `$SYS.REQ.CLAIMS.UPDATE` in the system account: store the
    pushed account JWT and apply it at once (nats-server DirAccResolver.Start; the answer is its
    ServerAPIClaimUpdateResponse)."""

    def update(src: Any, subject: bytes, reply: bytes | None, hdr: bytes | None, payload: bytes) -> None:
        tokens = subject.split(b".")
        expected = tokens[3].decode() if len(tokens) == 6 else None
        account, error = "n/a", ""
        try:
            claims = account_claims(bytes(payload).decode("utf-8", "replace").strip(), trust.trusted, expected)
            account = claims.public
            trust.save(claims)
            server.jwt_account(claims)
            log.debug("jwt updated - %s", account)
        except (JwtError, OSError) as e:
            error = f"jwt update resulted in error - {e}"
            log.error("jwt update resulted in error - %s - %s", account, e)
        if not reply:
            return
        resp: dict[str, Any] = {"server": server.event_server_info()}
        if error:
            resp["error"] = {"account": account, "code": 500, "description": error}
        else:
            resp["data"] = {"account": account, "code": 200, "message": "jwt updated"}
        server.internal_publish(system, reply, None, None, json.dumps(resp).encode())

    for subject in (CLAIMS_UPDATE_ACCOUNT, CLAIMS_UPDATE):
        system.add_internal(subject, update)


def authenticate_nkey(users: list[User], connect: dict[str, Any], nonce: str) -> User | None:
    """A CONNECT with `nkey` + `sig`: the configured nkey user whose key signed this connection's nonce."""
    key = connect.get("nkey")
    for u in users:
        if u.nkey is not None and u.nkey == key:
            return u if verify_nonce(key, nonce, connect.get("sig")) else None
    return None
