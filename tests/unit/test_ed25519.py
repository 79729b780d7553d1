"""edge/auth/ed25519.py and edge/auth/creds.py: SHA-512, Ed25519 signatures (RFC 8032 §7.1), nkey seeds and public
keys, .creds files and the CONNECT fields signed from them.

Plain test functions: pytest runs them on CPython, tests/unit/test_ed25519_mp.py runs the same functions on
MicroPython (no pytest imports, no fixtures: MicroPython has neither). The expected values come from RFC 8032,
FIPS 180-4 and nats-io's nkeys package (over PyNaCl), written out here because MicroPython has neither library;
test_ed25519_mp.py also compares random keys and messages against PyNaCl.
"""

import binascii
import os

from edge.auth import creds, ed25519

# RFC 8032 §7.1, TEST 1-3: (secret key, public key, message, signature)
RFC8032 = [
    ("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
     "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a", "",
     "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"),
    ("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
     "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c", "72",
     "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"),
    ("c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
     "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025", "af82",
     "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a"),
]

# nkeys.encode_seed(bytes(range(32)), PREFIX_BYTE_USER), its public key, and its signature of b"nonce"
SEED = "SUAAAAICAMCAKBQHBAEQUCYMBUHA6EARCIJRIFIWC4MBSGQ3DQOR4H776Y"
PUBLIC = "UAB2CB576PHBBPQ5ODORRZ2LYCMWPZGWGCN2KDK7DXOIMZASKUY3RLKK"
SIG_NONCE = ("f874eae1de830c754d6fc32c4d1019b5221ad2f5c0ff2b996e5c1303b253e706"
             "3398a071276c2961f8c787b85ca6d66589d6d5c3fe992f2b9b8e6ff20e4f8e09")

# A user JWT whose subject is PUBLIC (the claims matter, not the signature: the hub checks that)
_CLAIMS = b'{"sub":"' + PUBLIC.encode() + b'","nats":{"type":"user"}}'


def _b64url(data):
    return binascii.b2a_base64(data).decode().strip().rstrip("=").replace("+", "-").replace("/", "_")


JWT = "eyJ0eXAiOiJKV1QiLCJhbGciOiJlZDI1NTE5LW5rZXkifQ." + _b64url(_CLAIMS) + ".c2ln"


def _h(s):
    return binascii.unhexlify(s)


def _raises(fn, text):
    try:
        fn()
    except creds.CredsError as e:
        assert str(e) == text, str(e)
        return
    raise AssertionError("no CredsError: " + text)


def _fails(signer, text):
    # fields() returns the one-line error the uplink logs
    assert signer.fields(b"n") == "creds: " + text


def _tmpfile(text):
    path = "/tmp/creds-" + binascii.hexlify(os.urandom(4)).decode()
    with open(path, "w") as f:
        f.write(text)
    return path


def test_sha512_fips_vectors_and_block_edges():
    assert ed25519.sha512(b"abc") == _h(
        "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a"
        "2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f")
    assert ed25519.sha512(b"") == _h(
        "cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce"
        "47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e")
    two_blocks = (b"abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmn"
                  b"hijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu")
    assert ed25519.sha512(two_blocks) == _h(
        "8e959b75dae313da8cf4f72814fc143f8f7779c6eb9f7fa17299aeadb6889018"
        "501d289e4900f7e4331b99dec4b5433ac7d329eeb6dd26545e96e55b874be909")


def test_rfc8032_vectors():
    for sk, pk, msg, sig in RFC8032:
        assert ed25519.public(_h(sk)) == _h(pk)
        assert ed25519.sign(_h(sk), _h(msg)) == _h(sig)
        assert ed25519.sign(_h(sk), _h(msg), _h(pk)) == _h(sig)  # with the public key given: the same


def test_seed_decodes_and_public_key_encodes_as_nkeys():
    raw = creds.decode_seed(SEED, "x")
    assert raw == bytes(range(32))
    assert creds.encode_public(ed25519.public(raw)) == PUBLIC
    assert creds.crc16(b"123456789") == 0x31C3  # CRC-16/XMODEM check value


def test_bad_seeds_are_one_line_errors():
    bad = "not an nkey seed (bad base32, length or checksum)"
    _raises(lambda: creds.decode_seed(SEED[:-1] + ("A" if SEED[-1] != "A" else "B"), "f"), "f: " + bad)
    _raises(lambda: creds.decode_seed(SEED[:20], "f"), "f: " + bad)
    _raises(lambda: creds.decode_seed(SEED.lower(), "f"), "f: " + bad)
    # a valid account seed (SA...) is not a user seed
    raw = bytes([18 << 3, 0]) + bytes(32)
    c = creds.crc16(raw)
    account_seed = creds._b32encode(raw + bytes([c & 0xFF, c >> 8]))
    _raises(lambda: creds.decode_seed(account_seed, "f"), "f: not a user seed (SU...)")


def test_nkey_fields_from_inline_seed_and_seed_file():
    want = {"nkey": PUBLIC, "sig": _b64url(_h(SIG_NONCE))}
    assert creds.Signer("nkey", SEED).fields(b"nonce") == want
    path = _tmpfile("\n  " + SEED + "\n")
    try:
        s = creds.Signer("nkey", path)
        assert s.fields(b"nonce") == want
        assert s.fields(b"nonce") == want  # the second time with the cached public key: the same
        assert s.where() == "hub.nkey " + path and creds.Signer("nkey", SEED).where() == "hub.nkey (inline seed)"
    finally:
        os.remove(path)


def test_creds_file_fields_and_errors():
    text = (f"-----BEGIN NATS USER JWT-----\n{JWT}\n------END NATS USER JWT------\n\n"
            f"-----BEGIN USER NKEY SEED-----\n{SEED}\n------END USER NKEY SEED------\n")
    path = _tmpfile(text)
    try:
        assert creds.Signer("creds", path).fields(b"nonce") == {"jwt": JWT, "sig": _b64url(_h(SIG_NONCE))}
        with open(path, "w") as f:
            f.write(text.replace(SEED, "SUAM" + SEED[4:]))
        _fails(creds.Signer("creds", path), "hub.creds " + path + ": not an nkey seed (bad base32, length or checksum)")
        with open(path, "w") as f:
            f.write(JWT + "\n")
        _fails(creds.Signer("creds", path),
               "hub.creds " + path + ": not a .creds file (needs a user JWT and a seed block)")
        with open(path, "w") as f:
            f.write(text.replace(JWT, "abc.def"))
        _fails(creds.Signer("creds", path), "hub.creds " + path + ": the JWT is malformed")
    finally:
        os.remove(path)
    _fails(creds.Signer("creds", path), "hub.creds " + path + ": cannot read (errno 2)")
    # prepare(), before dialling, reads the file too: a broken one is reported before any connection is made
    assert creds.Signer("creds", path).prepare() == "creds: hub.creds " + path + ": cannot read (errno 2)"


def test_creds_whose_jwt_names_another_key_are_refused():
    other = "UAB2CB576PHBBPQ5ODORRZ2LYCMWPZGWGCN2KDK7DXOIMZASKUY3RLKK".replace("UAB2", "UAC2")
    jwt = JWT.split(".")[0] + "." + _b64url(_CLAIMS.replace(PUBLIC.encode(), other.encode())) + ".c2ln"
    path = _tmpfile(f"-----BEGIN NATS USER JWT-----\n{jwt}\n------END------\n-----BEGIN USER NKEY SEED-----\n{SEED}\n")
    try:
        _fails(creds.Signer("creds", path),
               f"hub.creds {path}: the JWT is for another key than the seed ({PUBLIC})")
    finally:
        os.remove(path)


def test_prepared_signer_spends_its_commitment_on_one_nonce():
    s = creds.Signer("nkey", SEED)
    s.prepare()
    pre = s._pre
    if pre is None:  # CPython with PyNaCl: nothing to prepare, the library signs fast
        assert s.fields(b"nonce") == {"nkey": PUBLIC, "sig": _b64url(_h(SIG_NONCE))}
        return
    sig = s.fields(b"nonce")["sig"]
    assert sig != _b64url(_h(SIG_NONCE)) and s._pre is None  # the commitment was used, and only once
    assert sig[:42] == _b64url(pre[1])[:42]  # R of the signature is the commitment's
    assert s.fields(b"nonce")["sig"] == _b64url(_h(SIG_NONCE))  # nothing prepared: the deterministic signature
    s.prepare()
    s._same_seed(bytes(32))  # the file now holds another seed: what was derived from the old one is dropped
    assert s._pre is None and s._pub is None
