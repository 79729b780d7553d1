"""edge/kvcache/cborcodec.py against CPython's cbor2, on CPython and on the MicroPython unix port.

The built-in codec is what a device without micropython-lib's cbor2 uses: its bytes must be what cbor2 reads, and
it must read what cbor2 writes (including the half/single floats and indefinite lengths cbor2 can produce).
"""

from __future__ import annotations

import binascii
import math
import os
import subprocess
import sys
from pathlib import Path

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.kvcache import cborcodec
from edge.kvcache.cborcodec import CBORError

REPO = Path(__file__).resolve().parents[2]

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**64), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.binary(max_size=64)
    | st.text(max_size=32)
)
map_keys = st.text(max_size=8) | st.integers(-1000, 1000)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(map_keys, inner, max_size=6),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(values)
def test_roundtrip_both_ways_with_cbor2(v):
    ours = cborcodec.dumps(v)
    assert cbor2.loads(ours) == v
    assert cborcodec.loads(cbor2.dumps(v)) == v
    assert cborcodec.loads(ours) == v


@pytest.mark.parametrize("v", [0, 23, 24, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**64 - 1, -1, -24, -25, -(2**64),
                               "", "é€𝄞", b"", b"\x00" * 300, [], {}, [1, [2, [3]]], {"a": {"b": None}}])
def test_same_bytes_as_cbor2_for_definite_items(v):
    # cbor2 writes the shortest head, as we do: the encodings are identical byte for byte.
    assert cborcodec.dumps(v) == cbor2.dumps(v)


def test_reads_cbor2_half_single_floats_and_indefinite_lengths():
    for x in (0.0, -0.0, 1.5, 65504.0, 5.960464477539063e-08, 3.4028234663852886e38, float("inf"), float("-inf"),
              0.1):
        got = cborcodec.loads(cbor2.dumps(x, canonical=True))  # canonical: the smallest float that is exact
        assert got == x and math.copysign(1, got) == math.copysign(1, x)
    assert math.isnan(cborcodec.loads(cbor2.dumps(float("nan"), canonical=True)))
    # indefinite-length text, bytes, array, map (RFC 8949 appendix A examples)
    assert cborcodec.loads(bytes.fromhex("7f657374726561646d696e67ff")) == "streaming"
    assert cborcodec.loads(bytes.fromhex("5f42010243030405ff")) == b"\x01\x02\x03\x04\x05"
    assert cborcodec.loads(bytes.fromhex("9f018202039f0405ffff")) == [1, [2, 3], [4, 5]]
    assert cborcodec.loads(bytes.fromhex("bf61610161629f0203ffff")) == {"a": 1, "b": [2, 3]}
    # a tag stands for its item (here a date/time string, tag 0)
    assert cborcodec.loads(bytes.fromhex("c074323031332d30332d32315432303a30343a30305a")) == "2013-03-21T20:04:00Z"
    assert cborcodec.loads(bytes.fromhex("f7")) is None  # undefined


@pytest.mark.parametrize("hexdata, why", [
    ("", "truncated"),
    ("18", "truncated"),
    ("1c", "reserved"),
    ("5a00010000", "truncated"),  # a 64 KB byte string announced, nothing follows
    ("9bffffffffffffffff", "array of"),  # 2**64-1 items announced: refused before allocating
    ("bbffffffffffffffff", "map of"),
    ("ff", "unexpected break"),
    ("62c328", "UTF-8"),
    ("0001", "trailing"),
    ("a1a0a0", "map key"),
    ("9f" * 40, "nesting"),
    ("81" * 40 + "00", "nesting"),
    ("5f01ff", "chunk"),
    ("fc", "reserved simple"),
])
def test_bad_input_raises_cbor_error(hexdata, why):
    with pytest.raises(CBORError, match=why):
        cborcodec.loads(bytes.fromhex(hexdata))
    assert issubclass(CBORError, ValueError)


def test_unencodable_values_raise_cbor_error():
    with pytest.raises(CBORError, match="cannot encode"):
        cborcodec.dumps({"x": object()})
    with pytest.raises(CBORError, match="64-bit"):
        cborcodec.dumps(2**64)
    deep = []
    for _ in range(40):
        deep = [deep]
    with pytest.raises(CBORError, match="nesting"):
        cborcodec.dumps(deep)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.binary(max_size=64))
def test_random_bytes_never_crash(data):
    try:
        cborcodec.loads(data)
    except CBORError:
        pass


def test_cbor_helper_prefers_cbor2_on_cpython():
    from edge.kvcache import cbor

    assert cbor.dumps is cbor2.dumps and cbor.loads is cbor2.loads


# A MicroPython process decodes what cbor2 wrote and writes it back with the built-in codec; cbor2 must read the
# same values again. The script reads hex lines on stdin and answers one hex line (or ERR ...) each.
_MP_SCRIPT = r"""
import sys, binascii
from edge.kvcache import cborcodec
for line in sys.stdin:
    line = line.strip()
    if not line:
        continue
    try:
        v = cborcodec.loads(binascii.unhexlify(line))
        sys.stdout.write(binascii.hexlify(cborcodec.dumps(v)).decode() + "\n")
    except ValueError as e:
        sys.stdout.write("ERR " + str(e) + "\n")
"""


def test_micropython_codec_reads_and_writes_cbor2_bytes():
    import random

    rnd = random.Random(6)

    def make(depth=0):
        k = rnd.randrange(9 if depth < 3 else 6)
        if k == 0:
            return rnd.randrange(-(2**63), 2**63)
        if k == 1:
            return rnd.choice([None, True, False, 0, -1, 23, 24, 2**32])
        if k == 2:
            return os.urandom(rnd.randrange(40))
        if k == 3:
            return "".join(rnd.choice("aé€x𝄞 ") for _ in range(rnd.randrange(12)))
        if k == 4:
            return rnd.choice([0.5, -2.25, 1e300, 3.14159, float("inf")])
        if k == 5:
            return rnd.randrange(300)
        if k in (6, 7):
            return [make(depth + 1) for _ in range(rnd.randrange(5))]
        return {f"k{i}": make(depth + 1) for i in range(rnd.randrange(5))}

    vals = [make() for _ in range(200)]
    lines = [binascii.hexlify(cbor2.dumps(v)).decode() for v in vals]
    lines += ["9b" + "ff" * 8, "62c328"]  # bad input must come back as errors, not a crash
    mp = Path(sys.executable).parent / "micropython"
    proc = subprocess.run([str(mp), "-X", "heapsize=2M", "-c", _MP_SCRIPT], input="\n".join(lines) + "\n",
                          capture_output=True, text=True, timeout=60, cwd=str(REPO),
                          env=dict(os.environ, MICROPYPATH=str(REPO) + ":.frozen"))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.splitlines()
    assert len(out) == len(lines)
    for v, line in zip(vals, out, strict=False):
        assert cbor2.loads(binascii.unhexlify(line)) == v
    assert out[-2].startswith("ERR array of") and out[-1].startswith("ERR text string is not UTF-8")
