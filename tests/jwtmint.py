"""Operators, accounts and users for decentralized-auth tests, minted as `nsc` would (nats-io/jwt v2 claims).

The tests need JWTs without the `nsc` tool: `Operator()` makes an operator key and JWT, `op.account("A", limits=...)`
an account signed by it, `acc.user("u", pub_allow=[...])` a user signed by the account, and `user.creds()` the text
of a `.creds` file. `op.server_conf(accounts)` is the `operator`/`system_account`/`resolver: MEMORY` configuration
that nats-server (and the hub) load. Keys come from `nkeys` (nats-io's Python package, over PyNaCl).

A JWT is `base64url(header) "." base64url(claims) "." base64url(ed25519 signature of the first two parts)`, without
padding; the header is `{"typ":"JWT","alg":"ed25519-nkey"}`; `jti` is a hash of the claims (servers do not check
it), `iss` the signer's public key, `sub` the subject's.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from typing import Any

import nkeys

_HEADER = {"typ": "JWT", "alg": "ed25519-nkey"}
_PREFIX = {"operator": nkeys.PREFIX_BYTE_OPERATOR, "account": nkeys.PREFIX_BYTE_ACCOUNT,
           "user": nkeys.PREFIX_BYTE_USER, "server": nkeys.PREFIX_BYTE_SERVER}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Key:
    """An nkey pair: `public` (O…, A…, U…) and `seed` (SO…, SA…, SU…) as strings."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.seed = nkeys.encode_seed(os.urandom(32), _PREFIX[kind]).decode()
        self._kp = nkeys.from_seed(self.seed.encode())
        self.public = self._kp.public_key.decode()

    def sign(self, data: bytes) -> bytes:
        return self._kp.sign(data)


def encode_jwt(signer: Key, subject: str, name: str, nats: dict[str, Any], *, expires: int | None = None,
               issued_at: int | None = None) -> str:
    claims: dict[str, Any] = {"jti": "", "iat": int(time.time()) if issued_at is None else issued_at,
                              "iss": signer.public, "name": name, "sub": subject, "nats": {**nats, "version": 2}}
    if expires is not None:
        claims["exp"] = expires
    claims["jti"] = base64.b32encode(hashlib.sha256(json.dumps(claims).encode()).digest()).rstrip(b"=").decode()
    signing_input = _b64(json.dumps(_HEADER).encode()) + "." + _b64(json.dumps(claims).encode())
    return signing_input + "." + _b64(signer.sign(signing_input.encode()))


def decode_claims(token: str) -> dict[str, Any]:
    """The claims of a JWT, unverified (for assertions in tests)."""
    part = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def creds_text(jwt: str, seed: str) -> str:
    """A `.creds` file as nsc writes it."""
    return (f"-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n"
            "************************* IMPORTANT *************************\n"
            "NKEY Seed printed below can be used to sign and prove identity.\n"
            "NKEYs are sensitive and should be treated as secrets.\n\n"
            f"-----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n\n"
            "*************************************************************\n")


def encode_v1(signer: Key, subject: str, name: str, kind: str, nats: dict[str, Any] | None = None) -> str:
    """A nats-io/jwt v1 token (nsc before 2.0): `type` at the top level, the signature over the claims part alone."""
    claims: dict[str, Any] = {"jti": "V1" + subject[:20], "iat": int(time.time()), "iss": signer.public,
                              "name": name, "sub": subject, "type": kind}
    if nats is not None:
        claims["nats"] = nats
    part = _b64(json.dumps(claims).encode())
    return _b64(b'{"typ":"jwt","alg":"ed25519"}') + "." + part + "." + _b64(signer.sign(part.encode()))


def _perms(allow: list[str] | None, deny: list[str] | None) -> dict[str, list[str]]:
    p: dict[str, list[str]] = {}
    if allow is not None:
        p["allow"] = allow
    if deny:
        p["deny"] = deny
    return p


class User:
    def __init__(self, account: Account, name: str, *, pub_allow: list[str] | None = None,
                 pub_deny: list[str] | None = None, sub_allow: list[str] | None = None,
                 sub_deny: list[str] | None = None, subs: int | None = -1, payload: int | None = -1,
                 expires: int | None = None, bearer: bool = False, issued_at: int | None = None,
                 signer: Key | None = None) -> None:
        """`subs` / `payload` None leaves the claim out (what a hand-written or third-party JWT may do)."""
        self.account = account
        self.name = name
        self.key = Key("user")
        nats: dict[str, Any] = {"pub": _perms(pub_allow, pub_deny), "sub": _perms(sub_allow, sub_deny),
                                "data": -1, "type": "user"}
        for claim, value in (("subs", subs), ("payload", payload)):
            if value is not None:
                nats[claim] = value
        if bearer:
            nats["bearer_token"] = True
        signer = signer or account.key
        if signer is not account.key:
            nats["issuer_account"] = account.public  # signed by one of the account's signing keys
        self.jwt = encode_jwt(signer, self.key.public, name, nats, expires=expires, issued_at=issued_at)

    @property
    def public(self) -> str:
        return self.key.public

    def creds(self) -> str:
        return creds_text(self.jwt, self.key.seed)


class Account:
    def __init__(self, operator: Operator, name: str, *, limits: dict[str, Any] | None = None,
                 exports: list[dict[str, Any]] | None = None, imports: list[dict[str, Any]] | None = None,
                 revocations: dict[str, int] | None = None, signing_keys: list[Key] | None = None,
                 nsc_defaults: bool = True, mappings: dict[str, list[dict[str, Any]]] | None = None) -> None:
        """`limits` go over the ones nsc writes for an account without limits (all -1); `nsc_defaults=False` makes
        them the whole `limits` claim."""
        self.operator = operator
        self.name = name
        self.key = Key("account")
        defaults = {"subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1, "wildcards": True,
                    "conn": -1, "leaf": -1} if nsc_defaults else {}
        self.limits = {**defaults, **(limits or {})}
        self.exports = exports or []
        self.imports = imports or []
        self.revocations = dict(revocations or {})
        self.signing_keys = list(signing_keys or [])
        self.mappings = mappings or {}  # nats-io/jwt Mapping: source -> [{subject, weight, cluster}]
        self.jwt = ""
        self.sign()

    @property
    def public(self) -> str:
        return self.key.public

    def sign(self) -> str:
        """(Re)issue the account JWT from the current fields (after changing limits or revocations)."""
        nats: dict[str, Any] = {"limits": self.limits, "default_permissions": {"pub": {}, "sub": {}},
                                "type": "account"}
        if self.exports:
            nats["exports"] = self.exports
        if self.imports:
            nats["imports"] = self.imports
        if self.revocations:
            nats["revocations"] = self.revocations
        if self.signing_keys:
            nats["signing_keys"] = [k.public for k in self.signing_keys]
        if self.mappings:
            nats["mappings"] = self.mappings
        self.jwt = encode_jwt(self.operator.key, self.public, self.name, nats)
        return self.jwt

    def user(self, name: str, **kw: Any) -> User:
        return User(self, name, **kw)


class Operator:
    def __init__(self, name: str = "OP") -> None:
        self.name = name
        self.key = Key("operator")
        self.system = Account(self, "SYS")
        self.jwt = encode_jwt(self.key, self.key.public, name,
                              {"type": "operator", "system_account": self.system.public})

    def account(self, name: str, **kw: Any) -> Account:
        return Account(self, name, **kw)

    def server_conf(self, accounts: list[Account], resolver: str = "MEMORY") -> str:
        """`operator`, `system_account` and a memory resolver preloaded with the system account and `accounts`."""
        preload = "\n".join(f"  {a.public}: {a.jwt}" for a in [self.system, *accounts])
        return (f"operator: {self.jwt}\nsystem_account: {self.system.public}\n"
                f"resolver: {resolver}\nresolver_preload: {{\n{preload}\n}}\n")
