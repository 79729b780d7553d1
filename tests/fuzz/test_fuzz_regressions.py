"""The bugs the fuzz runs found, each held by the input that found it (or its smallest form).

Plain test functions: pytest runs them on CPython, tests/fuzz/test_fuzz_mp.py runs them on the MicroPython unix port
(tests/mp/run_unit.py). No pytest imports, no fixtures.
"""

import binascii
import os

from edge.flashlog import FlashLog
from edge.kvcache import cborcodec
from edge.kvcache.cborcodec import CBORError
from edge.kvcache.store import OP_PUT, Store
from edge.leaf import config
from edge.leaf.confcheck import ConfigError
from tests.unit.test_flashlog import _payload, _segments, _tmpdir


def test_cbor_map_key_holding_an_array_of_arrays():
    # cbor_decode input 2295 (seed 1) held a map whose key is [[...]]: TypeError (unhashable list), not a value.
    assert cborcodec.loads(binascii.unhexlify("a181810000")) == {((0,),): 0}
    found = ("a1656b65793435a462343419015f781f78787878787878787878787878787878787878787878787878787878787833"
             "58243d0ae9bffbbabb9ad80f3138343436373434303733373039353531363136818181818181818181818181818181"
             "818181818105ea37656f6fb71e7e67bb0ac488043f425677bd09873f21e81e19ffff80656100623332f6")
    try:
        cborcodec.loads(binascii.unhexlify(found))
    except CBORError:
        pass
    try:
        cborcodec.loads(binascii.unhexlify("a181a1000000"))  # a map inside the array key: refused as before
    except CBORError as e:
        assert "map key" in str(e)
    else:
        raise AssertionError("a map inside a map key was taken")


def test_cbor_nan_and_infinities_are_written_as_cbor2_writes_them():
    # cbor_roundtrip input 24 (seed 1): -inf came out as a float64, cbor2 writes f9fc00 (docs/kvcache.md promises
    # byte-identical output).
    assert cborcodec.dumps([float("-inf"), float("inf"), float("nan")]) == binascii.unhexlify("83f9fc00f97c00f97e00")
    back = cborcodec.loads(cborcodec.dumps(float("nan")))
    assert back != back


def test_edge_config_file_that_is_not_utf8_is_a_config_error():
    # edge_config_file input 0 (seed 1): a 0xff byte in the file gave a UnicodeDecodeError traceback (CPython and
    # MicroPython alike).
    path = _tmpdir("conf") + ".json"
    with open(path, "wb") as f:
        f.write(b'{"name": "e1", "data": "d\xff"}')
    try:
        config.load(path)
    except ConfigError as e:
        assert str(e) == f"config: {path} is not UTF-8 text", str(e)
    else:
        raise AssertionError("a config file that is not UTF-8 was taken")
    finally:
        os.remove(path)


def test_flashlog_segment_without_an_intact_record_is_not_appended_to():
    # flashlog input 15 (seed 1): the newest segment held only the torn start of its first record. Reopened, the
    # log named its next segment after that first sequence, the same file, so appends went behind the garbage and
    # were gone at the following reopen.
    path = _tmpdir("torn-first")
    log = FlashLog(path, segment_size=4096, max_bytes=4 * 4096)
    for i in range(1, 4):
        log.append(_payload(i))
    log.close()
    with open(f"{path}/{4:012x}.log", "wb") as f:
        f.write(b"\x40\x00" + b"torn")  # record 4 announced with 64 bytes, cut after 4
    log = FlashLog(path, segment_size=4096, max_bytes=4 * 4096)
    seqs = [log.append(_payload(i)) for i in (5, 6)]
    log.close()
    assert seqs == [5, 6]  # sequence 4 is burned
    log = FlashLog(path, segment_size=4096, max_bytes=4 * 4096)
    assert [(s, p) for s, p in log.replay()] == [(1, _payload(1)), (2, _payload(2)), (3, _payload(3)),
                                                  (5, _payload(5)), (6, _payload(6))]
    assert _segments(path) == [f"{1:012x}.log", f"{4:012x}.log", f"{5:012x}.log"]
    log.close()


def test_flashlog_reader_past_a_corrupt_reclaimed_record_does_not_renumber():
    # flashlog input 19 (seed 1): a reader starting after a corrupt record (already reclaimed) read on from where
    # the failed read had left the file, and handed out the next records under the wrong sequences.
    path = _tmpdir("renumber")
    log = FlashLog(path, segment_size=4096, max_bytes=4 * 4096)
    for i in range(1, 7):
        log.append(_payload(i, 1000))  # 4 to a segment: 1..4 in the first, 5 and 6 in the second
    log.flush()
    log.reclaim(2)
    log.close()
    seg = f"{path}/{1:012x}.log"
    with open(seg, "rb") as f:
        data = f.read()
    at = 1006 + 10  # inside the payload of record 2
    with open(seg, "wb") as f:
        f.write(data[:at] + bytes((data[at] ^ 1,)) + data[at + 1:])
    log = FlashLog(path, segment_size=4096, max_bytes=4 * 4096)
    # 3 and 4 lie behind the damage in their segment: the reader cannot find them, and moves on to the next one
    assert list(log.replay()) == [(5, _payload(5, 1000)), (6, _payload(6, 1000))]
    log.close()


def test_cbor_text_that_is_not_utf8_is_refused_on_micropython_too():
    # cbor_decode input 8194 (seed 1) on MicroPython: an overlong form (e0 82 ac) in a text string was taken
    # there and refused on CPython. Also surrogates and code points past U+10FFFF.
    for bad in ("69e082ac75726fe19a9b", "63eda080", "63edbfbf", "64f4908080", "62c0af", "65f880808080"):
        try:
            cborcodec.loads(binascii.unhexlify(bad))
        except CBORError as e:
            assert "UTF-8" in str(e), str(e)
        else:
            raise AssertionError(f"text {bad} taken")
    assert cborcodec.loads(binascii.unhexlify("6be282ac75726fe19a9bc3a9")) == "\u20acuro\u169b\u00e9"
    assert cborcodec.loads(binascii.unhexlify("64f09f9880")) == "\U0001f600"


def test_edge_config_number_that_is_infinite_is_a_config_error():
    # edge_config_file input 6046 (seed 1): "reconnect_min": 11e999 reads as infinity, and int(inf * 1000) was an
    # OverflowError traceback. The same for every time and size taken as a float.
    inf = float("inf")
    for extra, key in (({"limits": {"reconnect_min": inf}}, "limits.reconnect_min"), ({"stats": inf}, "stats"),
                       ({"kv": {"buckets": ["b"], "status": inf}}, "kv.status"),
                       ({"forward": [{"subjects": ["a.>"], "stream": "S", "max_age": inf}]}, "forward[0].max_age")):
        d = {"name": "e1"}
        d.update(extra)
        try:
            config.check(d)
        except ConfigError as e:
            assert str(e).startswith(f'config: "{key}": expected a number'), str(e)
        else:
            raise AssertionError(f"infinite {key} taken")


def test_kv_snapshot_with_a_damaged_record_length_is_ignored_without_reading_it():
    # kv_recovery input 217 (seed 1) on MicroPython: a flipped byte in a record length of the snapshot asked
    # f.read() for 2,768,240,673 bytes: MemoryError, and the bucket did not open.
    path = _tmpdir("kvsnap")
    st = Store(path, max_keys=8, segment_size=4096, log_bytes=4 * 4096)
    st.local_write("a", OP_PUT, b"1", 0, "1-0-e")
    st.compact()
    st.close()
    with open(path + "/snap", "rb") as f:
        data = f.read()
    with open(path + "/snap", "wb") as f:
        f.write(data[:12] + b"\xf0\xff\xff\xa4" + data[16:])  # the first record's length
    st = Store(path, max_keys=8, segment_size=4096, log_bytes=4 * 4096)
    assert st.snap_seq == 0 and st.get("a") is None  # ignored as a whole, as a snapshot with a bad CRC is
    st.close()
