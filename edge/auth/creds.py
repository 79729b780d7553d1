# edge/auth/creds.py — the uplink's nkey and JWT credentials: read a .creds or seed file, sign the hub's nonce.
#
# The leafnode CONNECT carries `jwt` + `sig` (a .creds file, hub.creds) or `nkey` + `sig` (a seed, hub.nkey);
# `sig` is the Ed25519 signature of the INFO `nonce`, base64url without padding (nats-reference README 1.4,
# nats-server leafnode.go sendLeafConnect).
# Rules this file keeps:
# 1. The seed is read from its file before each dial and at each connect, and dropped at once: at rest the
#    edge holds the file's path, the public key it derived, a SHA-256 of the seed that key belongs to and,
#    between prepare() and the CONNECT, one signature commitment (as secret as the seed; used once).
# 2. The public key is always derived from the seed, never taken from the JWT: signing one nonce under two
#    public keys would give the private key away. A JWT whose subject is another key is refused here.
# 3. Every problem is one line that names the key and its file ("creds: hub.creds PATH: ..."), returned by
#    prepare() and fields() for the uplink to log before it retries (the file may be fixed or rotated).
# 4. On CPython the signature comes from PyNaCl when it is installed (the library under nkeys, as on the
#    hub), else, and always on MicroPython, from edge/auth/ed25519.py, imported only for each call.

import binascii
import hashlib
import json
import os

from edge.compat import drop_module

_B32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
_PREFIX_SEED = 18 << 3  # "S..."
_PREFIX_USER = 20 << 3  # "U..."


class CredsError(Exception):
    pass


def crc16(data):
    # CRC-16/XMODEM (poly 0x1021, init 0), as nkeys' crc16.go
    crc = 0
    for b in data:
        crc ^= b << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021 if crc & 0x8000 else crc << 1) & 0xFFFF
    return crc


def _b32decode(text):
    # RFC 4648 base32 without padding -> bytes; None on a character outside the alphabet.
    out = bytearray()
    acc = bits = 0
    for ch in text:
        v = _B32.find(ch)
        if v < 0:
            return None
        acc = (acc << 5) | v
        bits += 5
        if bits >= 8:
            bits -= 8
            out.append((acc >> bits) & 0xFF)
    return bytes(out)


def _b32encode(data):
    out = []
    acc = bits = 0
    for b in data:
        acc = (acc << 8) | b
        bits += 8
        while bits >= 5:
            bits -= 5
            out.append(_B32[(acc >> bits) & 31])
    if bits:
        out.append(_B32[(acc << (5 - bits)) & 31])
    return "".join(out)


def decode_seed(text, where):
    # An nkey user seed ("SU...", 58 characters) -> its 32 raw bytes.
    raw = _b32decode(text)
    if raw is None or len(raw) != 36 or crc16(raw[:34]) != raw[34] | raw[35] << 8:
        raise CredsError("%s: not an nkey seed (bad base32, length or checksum)" % where)
    if raw[0] & 0xF8 != _PREFIX_SEED or ((raw[0] & 7) << 5 | raw[1] >> 3) != _PREFIX_USER:
        raise CredsError("%s: not a user seed (SU...)" % where)
    return raw[2:34]


def encode_public(pub):
    # 32 raw bytes -> the user public key "U..." (56 characters)
    raw = bytes([_PREFIX_USER]) + pub
    c = crc16(raw)
    return _b32encode(raw + bytes([c & 0xFF, c >> 8]))


def _blocks(text):
    # The values of a decorated file ("-----BEGIN ...-----" / value / "------END ...------"), in order.
    out = []
    lines = text.split("\n")
    for i in range(len(lines) - 1):
        line = lines[i].strip()
        if line[:3] == "---" and "BEGIN" in line:
            out.append(lines[i + 1].strip())
    return out


def _read(path, where):
    try:
        with open(path) as f:
            return f.read()
    except OSError as e:
        raise CredsError("%s: cannot read (errno %s)" % (where, e.args[0]))
    except ValueError:  # UnicodeError: not a text file
        raise CredsError("%s: not a text file" % where)


def _jwt_subject(jwt, where):
    parts = jwt.split(".")
    if len(parts) != 3:
        raise CredsError("%s: the JWT is malformed" % where)
    body = parts[1].replace("-", "+").replace("_", "/")
    try:
        claims = json.loads(binascii.a2b_base64(body + "=" * (-len(body) % 4)))
        return claims["sub"]
    except (ValueError, KeyError, TypeError):
        raise CredsError("%s: the JWT is malformed" % where)


def _nacl():
    try:
        from nacl.signing import SigningKey  # CPython with PyNaCl: the hub's library, in C
    except ImportError:
        return None  # MicroPython, or CPython without PyNaCl: edge/auth/ed25519.py
    return SigningKey


def _pure(fn, *args):
    # One call into edge/auth/ed25519.py, which leaves memory again afterwards (rule 4).
    from edge.auth import ed25519

    try:
        return getattr(ed25519, fn)(*args)
    finally:
        drop_module("edge.auth.ed25519")


class Signer:
    # hub.creds (kind "creds") or hub.nkey (kind "nkey": a seed file, or the seed itself) -> CONNECT fields.
    def __init__(self, kind, source):
        self.kind = kind
        self.source = source
        self._seed_hash = None  # SHA-256 of the seed that _pub and _pre belong to
        self._pub = None
        self._pre = None  # ed25519.commit() for one signature, made before dialling

    def _inline(self):
        return self.kind == "nkey" and self.source[:2] == "SU" and "/" not in self.source

    def where(self):
        # What errors name: the key and its file, never a seed given inline.
        return "hub.%s %s" % (self.kind, "(inline seed)" if self._inline() else self.source)

    def _load(self):
        # -> (user JWT or None, raw seed); raises CredsError.
        where = self.where()
        jwt = None
        if self._inline():
            seed = self.source
        else:
            text = _read(self.source, where)
            items = _blocks(text)
            if self.kind == "nkey":  # a seed file: the seed alone, or decorated as in a .creds file
                seed = items[-1] if items else text.strip()
            elif len(items) < 2:
                raise CredsError("%s: not a .creds file (needs a user JWT and a seed block)" % where)
            else:
                jwt, seed = items[0], items[1]
            text = items = None
        return jwt, decode_seed(seed, where)

    def _same_seed(self, seed):
        h = hashlib.sha256(seed).digest()
        if h != self._seed_hash:  # first use, or the file changed: nothing derived before applies
            self._seed_hash, self._pub, self._pre = h, None, None

    def refused(self):
        # What the uplink adds to the hub's -ERR 'Authorization Violation'.
        return " (%s: wrong, expired or revoked?)" % self.where()

    def prepare(self):
        # Before dialling: check the file, and on MicroPython do both scalar multiplications (public key,
        # commitment) now, so that the CONNECT follows the hub's INFO at once (an ESP32 needs seconds for
        # them, nats-server gives a leaf 2 s to send its CONNECT). -> None, or the one-line error.
        try:
            self._prepare()
        except CredsError as e:
            return "creds: %s" % e

    def fields(self, nonce):
        # -> {"jwt": ..., "sig": ...} or {"nkey": ..., "sig": ...}, or the one-line error (a str).
        try:
            return self._fields(nonce)
        except CredsError as e:
            return "creds: %s" % e

    def _prepare(self):
        jwt, seed = self._load()
        if _nacl() is not None:
            return
        self._same_seed(seed)
        if self._pub is None:
            self._pub = _pure("public", seed)
        if self._pre is None:
            self._pre = _pure("commit", seed, os.urandom(32))

    def _fields(self, nonce):
        jwt, seed = self._load()
        self._same_seed(seed)
        key = _nacl()
        if key is not None:
            key = key(seed)
            sig, self._pub = key.sign(nonce).signature, bytes(key.verify_key)
        else:
            pre, self._pre = self._pre, None  # a commitment signs one nonce, never two
            if self._pub is None:
                self._pub = _pure("public", seed)
            sig = _pure("sign", seed, nonce, self._pub, pre)
        seed = key = None
        upub = encode_public(self._pub)
        sig = binascii.b2a_base64(sig, newline=False).decode().rstrip("=").replace("+", "-").replace("/", "_")
        if jwt is None:
            return {"nkey": upub, "sig": sig}
        if _jwt_subject(jwt, self.where()) != upub:
            raise CredsError("%s: the JWT is for another key than the seed (%s)" % (self.where(), upub))
        return {"jwt": jwt, "sig": sig}
