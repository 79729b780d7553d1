# edge/auth/ed25519.py — an Ed25519 signer (RFC 8032) and the SHA-512 it needs, in plain Python ints.
#
# MicroPython has neither: its hashlib stops at sha256 (FACTS.md §1) and there is no Ed25519 library. The
# edge signs one hub nonce per connect (edge/auth/creds.py), so this is about small, not fast.
# Rules this file keeps:
# 1. Sign only: no verification, no key generation. Public keys are computed from the seed (public()).
#    sign() is RFC 8032's deterministic signature. commit() + sign(pre=...) split it so that both scalar
#    multiplications happen before the message is known (the hub's nonce): the nonce r is then
#    SHA-512(prefix || fresh noise) instead of SHA-512(prefix || message), which verifies the same way
#    (a verifier cannot tell how r was chosen) and stays safe with a weak random source as long as a
#    commitment is used for one message only.
# 2. Nothing big at rest: the SHA-512 round constants are one bytes literal (in flash when frozen); the
#    working state of a signature (a few dozen 256-bit ints) is freed when sign() returns. Import this
#    module only when credentials are configured; creds.py drops it again after use.
# 3. Arithmetic is on Python ints (MicroPython's are arbitrary-precision): points in extended twisted
#    Edwards coordinates (X, Y, Z, T), the formulas of RFC 8032 §5.1.4 (a = -1), one reduction mod p per
#    product.

import struct

_P = (1 << 255) - 19
_L = (1 << 252) + 27742317777372353535851937790883648493
_D2 = 16295367250680780974490674513165176452449235426866156013048779062215315747161  # 2*d mod p
_BX = 15112221349535400772501151409588531511454012693041857206046113283949847762202
_BY = 46316835694926478169428394003475163141307993866256225615783033603165251855960
_M64 = 0xFFFFFFFFFFFFFFFF

# SHA-512 (FIPS 180-4 §4.2.3): the 80 round constants and the initial hash, big-endian 64-bit words.
_K = (b'B\x8a/\x98\xd7(\xae"q7D\x91#\xefe\xcd\xb5\xc0\xfb\xcf\xecM;/\xe9\xb5\xdb\xa5\x81\x89\xdb\xbc9V\xc2['
      b'\xf3H\xb58Y\xf1\x11\xf1\xb6\x05\xd0\x19\x92?\x82\xa4\xaf\x19O\x9b\xab\x1c^\xd5\xdam\x81\x18\xd8\x07'
      b'\xaa\x98\xa3\x03\x02B\x12\x83[\x01Epo\xbe$1\x85\xbeN\xe4\xb2\x8cU\x0c}\xc3\xd5\xff\xb4\xe2r\xbe]t\xf2'
      b'{\x89o\x80\xde\xb1\xfe;\x16\x96\xb1\x9b\xdc\x06\xa7%\xc7\x125\xc1\x9b\xf1t\xcfi&\x94\xe4\x9bi\xc1\x9e'
      b'\xf1J\xd2\xef\xbeG\x868O%\xe3\x0f\xc1\x9d\xc6\x8b\x8c\xd5\xb5$\x0c\xa1\xccw\xac\x9ce-\xe9,oY+\x02uJt'
      b'\x84\xaan\xa6\xe4\x83\\\xb0\xa9\xdc\xbdA\xfb\xd4v\xf9\x88\xda\x83\x11S\xb5\x98>QR\xeef\xdf\xab\xa81'
      b"\xc6m-\xb42\x10\xb0\x03'\xc8\x98\xfb!?\xbfY\x7f\xc7\xbe\xef\x0e\xe4\xc6\xe0\x0b\xf3=\xa8\x8f\xc2\xd5"
      b"\xa7\x91G\x93\n\xa7%\x06\xcacQ\xe0\x03\x82o\x14))g\n\x0enp'\xb7\n\x85F\xd2/\xfc.\x1b!8\\&\xc9&M,m\xfc"
      b'Z\xc4*\xedS8\r\x13\x9d\x95\xb3\xdfe\nsT\x8b\xafc\xdevj\n\xbb<w\xb2\xa8\x81\xc2\xc9.G\xed\xae\xe6\x92r'
      b',\x85\x14\x825;\xa2\xbf\xe8\xa1L\xf1\x03d\xa8\x1afK\xbcB0\x01\xc2K\x8bp\xd0\xf8\x97\x91\xc7lQ\xa3\x06'
      b'T\xbe0\xd1\x92\xe8\x19\xd6\xefR\x18\xd6\x99\x06$Ue\xa9\x10\xf4\x0e5\x85Wq *\x10j\xa0p2\xbb\xd1\xb8'
      b"\x19\xa4\xc1\x16\xb8\xd2\xd0\xc8\x1e7l\x08QA\xabS'HwL\xdf\x8e\xeb\x994\xb0\xbc\xb5\xe1\x9bH\xa89\x1c"
      b'\x0c\xb3\xc5\xc9ZcN\xd8\xaaJ\xe3A\x8a\xcb[\x9c\xcaOwc\xe3sh.o\xf3\xd6\xb2\xb8\xa3t\x8f\x82\xee]\xef'
      b'\xb2\xfcx\xa5coC\x17/`\x84\xc8x\x14\xa1\xf0\xabr\x8c\xc7\x02\x08\x1ad9\xec\x90\xbe\xff\xfa#c\x1e(\xa4'
      b"Pl\xeb\xde\x82\xbd\xe9\xbe\xf9\xa3\xf7\xb2\xc6y\x15\xc6qx\xf2\xe3rS+\xca'>\xce\xea&a\x9c\xd1\x86\xb8"
      b'\xc7!\xc0\xc2\x07\xea\xda}\xd6\xcd\xe0\xeb\x1e\xf5}O\x7f\xeen\xd1x\x06\xf0g\xaar\x17o\xba\nc}\xc5\xa2'
      b'\xc8\x98\xa6\x11?\x98\x04\xbe\xf9\r\xae\x1bq\x0b5\x13\x1cG\x1b(\xdbw\xf5#\x04}\x842\xca\xab{@\xc7$'
      b'\x93<\x9e\xbe\n\x15\xc9\xbe\xbcC\x1dg\xc4\x9c\x10\rLL\xc5\xd4\xbe\xcb>B\xb6Y\x7f)\x9c\xfce~*_\xcbo'
      b'\xab:\xd6\xfa\xeclD\x19\x8cJGX\x17')
_H0 = (0x6A09E667F3BCC908, 0xBB67AE8584CAA73B, 0x3C6EF372FE94F82B, 0xA54FF53A5F1D36F1,
       0x510E527FADE682D1, 0x9B05688C2B3E6C1F, 0x1F83D9ABFB41BD6B, 0x5BE0CD19137E2179)


def sha512(data):
    h = list(_H0)
    n = len(data)
    data = bytes(data) + b"\x80" + bytes((111 - n) % 128) + (n * 8).to_bytes(16, "big")
    for off in range(0, len(data), 128):
        w = list(struct.unpack_from(">16Q", data, off))
        for t in range(16, 80):
            x = w[t - 15]
            y = w[t - 2]
            s0 = ((x >> 1 | x << 63) ^ (x >> 8 | x << 56) ^ (x >> 7)) & _M64
            s1 = ((y >> 19 | y << 45) ^ (y >> 61 | y << 3) ^ (y >> 6)) & _M64
            w.append((w[t - 16] + s0 + w[t - 7] + s1) & _M64)
        a, b, c, d, e, f, g, hh = h
        for t in range(80):
            s1 = ((e >> 14 | e << 50) ^ (e >> 18 | e << 46) ^ (e >> 41 | e << 23)) & _M64
            t1 = hh + s1 + ((e & f) ^ ((e ^ _M64) & g)) + struct.unpack_from(">Q", _K, t * 8)[0] + w[t]
            t2 = ((a >> 28 | a << 36) ^ (a >> 34 | a << 30) ^ (a >> 39 | a << 25)) & _M64
            t2 += (a & b) ^ (a & c) ^ (b & c)
            hh = g
            g = f
            f = e
            e = (d + t1) & _M64
            d = c
            c = b
            b = a
            a = (t1 + t2) & _M64
        for i, v in enumerate((a, b, c, d, e, f, g, hh)):
            h[i] = (h[i] + v) & _M64
    return struct.pack(">8Q", *h)


def _add(p, q):
    # RFC 8032 §5.1.4 point addition (add-2008-hwcd-3)
    x1, y1, z1, t1 = p
    x2, y2, z2, t2 = q
    a = (y1 - x1) * (y2 - x2) % _P
    b = (y1 + x1) * (y2 + x2) % _P
    c = t1 * _D2 % _P * t2 % _P
    d = 2 * z1 * z2 % _P
    e = b - a
    f = d - c
    g = d + c
    h = b + a
    return (e * f % _P, g * h % _P, f * g % _P, e * h % _P)


def _double(p):
    # RFC 8032 §5.1.4 point doubling (dbl-2008-hwcd)
    x1, y1, z1, _ = p
    a = x1 * x1 % _P
    b = y1 * y1 % _P
    c = 2 * z1 * z1 % _P
    h = a + b
    e = h - (x1 + y1) * (x1 + y1) % _P
    g = a - b
    f = c + g
    return (e * f % _P, g * h % _P, f * g % _P, e * h % _P)


def _base_times(n):
    # n * B, and its 32-byte encoding (RFC 8032 §5.1.2): y little-endian, the sign of x in the top bit.
    # 4-bit fixed window: the 16 multiples of B live only for this call.
    table = [(0, 1, 1, 0), (_BX, _BY, 1, _BX * _BY % _P)]
    for _ in range(14):
        table.append(_add(table[-1], table[1]))
    q = table[0]
    for shift in range(252, -1, -4):
        q = _double(_double(_double(_double(q))))
        q = _add(q, table[(n >> shift) & 15])
    zi = pow(q[2], _P - 2, _P)
    y = q[1] * zi % _P
    return (y | ((q[0] * zi % _P) & 1) << 255).to_bytes(32, "little")


def _secret(seed):
    # RFC 8032 §5.1.5: the clamped scalar and the prefix from SHA-512(seed)
    h = sha512(seed)
    a = int.from_bytes(h[:32], "little")
    return (a & ((1 << 254) - 8)) | (1 << 254), h[32:]


def public(seed):
    # The 32-byte public key of a 32-byte seed.
    return _base_times(_secret(seed)[0])


def commit(seed, noise):
    # (r, R) for one later sign(..., pre=): the costly half of a signature, before the message exists.
    # noise: fresh random bytes; never pass the result to sign() twice (rule 1).
    r = int.from_bytes(sha512(_secret(seed)[1] + noise), "little") % _L
    return r, _base_times(r)


def sign(seed, msg, pub=None, pre=None):
    # The 64-byte signature of msg (RFC 8032 §5.1.6). pub: the seed's public key when the caller has it
    # (saves one of the two scalar multiplications); it must be public(seed), never taken from elsewhere.
    # pre: commit(seed, noise), used once; then no scalar multiplication is left to do here.
    a, prefix = _secret(seed)
    if pub is None:
        pub = _base_times(a)
    if pre is None:
        r = int.from_bytes(sha512(prefix + msg), "little") % _L
        big_r = _base_times(r)
    else:
        r, big_r = pre
    k = int.from_bytes(sha512(big_r + pub + msg), "little") % _L
    return big_r + ((r + k * a) % _L).to_bytes(32, "little")
