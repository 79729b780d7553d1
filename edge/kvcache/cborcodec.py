# edge/kvcache/cborcodec.py — a small CBOR (RFC 8949) codec for KV values, used where no `cbor2`
# module is installed (a device without micropython-lib's cbor2). edge/kvcache/cbor.py picks it.
#
# Rules this file keeps:
# 1. Types: int (within 64 bits), bytes/bytearray, str, list/tuple, dict, bool, None, float. Floats are
#    written as float64, NaN and the infinities as half floats (as CPython cbor2 does by default); half, single
#    and double are read. Tags are read by returning the tagged item (its meaning is left to the caller);
#    undefined and other simple values are read as None.
# 2. Bad input raises CBORError (a ValueError), never anything else: every length is checked against the
#    bytes that are left before anything is allocated, and nesting is bounded (MAX_DEPTH), so a short hostile
#    value can neither exhaust the heap nor the stack.
# 3. Indefinite-length strings, arrays and maps are read (other encoders write them); never written.

import struct

MAX_DEPTH = 16
_INF = float("inf")


class CBORError(ValueError):
    pass


def _head(out, major, n):
    m = major << 5
    if n < 24:
        out.append(m | n)
    elif n < 0x100:
        out.append(m | 24)
        out.append(n)
    elif n < 0x10000:
        out.append(m | 25)
        out.extend(struct.pack(">H", n))
    elif n < 0x100000000:
        out.append(m | 26)
        out.extend(struct.pack(">I", n))
    elif n < 0x10000000000000000:
        out.append(m | 27)
        out.extend(struct.pack(">Q", n))
    else:
        raise CBORError("integer out of the 64-bit range")


def _enc(out, v, depth):
    if depth > MAX_DEPTH:
        raise CBORError("nesting deeper than %d" % MAX_DEPTH)
    if v is None:
        out.append(0xF6)
    elif v is True:
        out.append(0xF5)
    elif v is False:
        out.append(0xF4)
    elif isinstance(v, int):
        if v >= 0:
            _head(out, 0, v)
        else:
            _head(out, 1, -1 - v)
    elif isinstance(v, float):
        if v != v:
            out.extend(b"\xf9\x7e\x00")  # NaN and the infinities as half floats, as cbor2 writes them
        elif v in (_INF, -_INF):
            out.extend(b"\xf9\x7c\x00" if v > 0 else b"\xf9\xfc\x00")
        else:
            out.append(0xFB)
            out.extend(struct.pack(">d", v))
    elif isinstance(v, (bytes, bytearray, memoryview)):
        _head(out, 2, len(v))
        out.extend(v)
    elif isinstance(v, str):
        b = v.encode()
        _head(out, 3, len(b))
        out.extend(b)
    elif isinstance(v, (list, tuple)):
        _head(out, 4, len(v))
        for x in v:
            _enc(out, x, depth + 1)
    elif isinstance(v, dict):
        _head(out, 5, len(v))
        for k in v:
            _enc(out, k, depth + 1)
            _enc(out, v[k], depth + 1)
    else:
        raise CBORError("cannot encode %s" % type(v).__name__)


def dumps(v):
    out = bytearray()
    _enc(out, v, 0)
    return bytes(out)


_BREAK = object()


class _Reader:
    def __init__(self, data):
        self.b = data
        self.i = 0

    def take(self, n):
        i = self.i
        if n > len(self.b) - i:
            raise CBORError("truncated input (need %d bytes at offset %d)" % (n, i))
        self.i = i + n
        return self.b[i : i + n]

    def arg(self, info):
        if info < 24:
            return info
        if info == 24:
            return self.take(1)[0]
        if info == 25:
            return struct.unpack(">H", self.take(2))[0]
        if info == 26:
            return struct.unpack(">I", self.take(4))[0]
        if info == 27:
            return struct.unpack(">Q", self.take(8))[0]
        raise CBORError("reserved additional information %d at offset %d" % (info, self.i - 1))

    def item(self, depth, allow_break=False):
        if depth > MAX_DEPTH:
            raise CBORError("nesting deeper than %d" % MAX_DEPTH)
        ib = self.take(1)[0]
        major = ib >> 5
        info = ib & 31
        if info == 31:
            return self._indefinite(major, depth, allow_break)
        if major == 7:
            return self._simple(info)
        n = self.arg(info)
        if major == 0:
            return n
        if major == 1:
            return -1 - n
        if major == 2:
            return bytes(self.take(n))
        if major == 3:
            return self._text(self.take(n))
        if major == 4:
            if n > len(self.b) - self.i:  # each item takes at least one byte
                raise CBORError("array of %d items in %d bytes" % (n, len(self.b) - self.i))
            return [self.item(depth + 1) for _ in range(n)]
        if major == 5:
            if 2 * n > len(self.b) - self.i:
                raise CBORError("map of %d pairs in %d bytes" % (n, len(self.b) - self.i))
            d = {}
            for _ in range(n):
                k = self.item(depth + 1)
                d[self._key(k)] = self.item(depth + 1)
            return d
        return self.item(depth + 1)  # major 6: a tag; the tagged item stands for itself

    def _key(self, k):
        # An array key becomes a tuple, arrays inside it too (a list cannot be a dict key).
        if isinstance(k, list):
            return tuple([self._key(x) for x in k])
        if isinstance(k, dict):
            raise CBORError("a map cannot be a map key here")
        return k

    def _text(self, b):
        b = bytes(b)
        try:
            s = b.decode()
        except UnicodeError:
            s = None
        if s is None or (len(s) != len(b) and not _strict_utf8(b)):
            raise CBORError("text string is not UTF-8")
        return s

    def _simple(self, info):
        if info == 20:
            return False
        if info == 21:
            return True
        if info < 24:  # null (22), undefined (23), unassigned simple values
            return None
        if info == 24:
            self.take(1)
            return None
        if info == 25:
            return _half(struct.unpack(">H", self.take(2))[0])
        if info == 26:
            return struct.unpack(">f", self.take(4))[0]
        if info == 27:
            return struct.unpack(">d", self.take(8))[0]
        raise CBORError("reserved simple value %d at offset %d" % (info, self.i - 1))

    def _indefinite(self, major, depth, allow_break):
        if major == 7:
            if not allow_break:
                raise CBORError("unexpected break at offset %d" % (self.i - 1))
            return _BREAK
        if major in (2, 3):
            parts = []
            while True:
                p = self.item(depth + 1, True)
                if p is _BREAK:
                    break
                if not isinstance(p, bytes if major == 2 else str):
                    raise CBORError("bad chunk in an indefinite-length string")
                parts.append(p)
            return (b"" if major == 2 else "").join(parts)
        if major == 4:
            out = []
            while True:
                x = self.item(depth + 1, True)
                if x is _BREAK:
                    return out
                out.append(x)
        if major == 5:
            d = {}
            while True:
                k = self.item(depth + 1, True)
                if k is _BREAK:
                    return d
                d[self._key(k)] = self.item(depth + 1)
        raise CBORError("indefinite length not allowed for major type %d" % major)


# (lead byte, range of second bytes that make it invalid): surrogates, overlong forms, past U+10FFFF (RFC 3629)
_LEAD_SECOND = ((0xE0, 0x80, 0xA0), (0xED, 0xA0, 0xC0), (0xF0, 0x80, 0x90), (0xF4, 0x90, 0xC0))


def _strict_utf8(b):
    # MicroPython's decode() takes overlong forms, surrogates and code points past U+10FFFF (found by fuzzing: the
    # same bytes were a CBORError on CPython); all start with one of these bytes. CPython's decode() refuses them.
    for c in b"\xc0\xc1\xf5\xf6\xf7\xf8\xf9\xfa\xfb\xfc\xfd\xfe\xff":
        if c in b:
            return False
    for lead, lo, hi in _LEAD_SECOND:
        i = b.find(bytes((lead,)))
        while i >= 0:
            if i + 1 < len(b) and lo <= b[i + 1] < hi:
                return False
            i = b.find(bytes((lead,)), i + 1)
    return True


def _half(h):
    exp = (h >> 10) & 0x1F
    mant = h & 0x3FF
    if exp == 0:
        v = mant * 2.0**-24
    elif exp == 31:
        v = float("inf") if mant == 0 else float("nan")
    else:
        v = (mant + 1024) * 2.0 ** (exp - 25)
    return -v if h & 0x8000 else v


def loads(data):
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise CBORError("expected bytes, got %s" % type(data).__name__)
    r = _Reader(bytes(data))
    v = r.item(0)
    if r.i != len(r.b):
        raise CBORError("%d bytes of trailing data" % (len(r.b) - r.i))
    return v
