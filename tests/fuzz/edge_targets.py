"""Fuzz targets for the edge code, under MicroPython and CPython: the CBOR codec, the flash-log reader, the KV
store's recovery from its log and snapshot, and the JSON config. No pytest, no typing: tests/fuzz/mp_fuzz.py runs
them on the MicroPython unix port and tests/fuzz/test_fuzz_edge.py on CPython, with the same seeds and the same
inputs (tests/fuzz/fuzzcore.py rule 1).

Each make_* returns (gen, target, allowed): gen(rng) draws an input, target(input) runs it and asserts the
target's properties, allowed is the tuple of error types bad input may raise.
"""

import binascii
import json
import os
import struct

from edge.flashlog import FlashLog, FlashLogError
from edge.kvcache import cborcodec
from edge.kvcache.cborcodec import CBORError
from edge.kvcache.store import OP_PUT, Store
from edge.leaf import config
from edge.leaf.confcheck import ConfigError
from tests.fuzz.fuzzcore import Rng, byte_inputs
from tests.unit.test_flashlog import _rmtree

# ---- CBOR ----------------------------------------------------------------------------------------------------

# Edge values of each type the codec writes (rule 1 of edge/kvcache/cborcodec.py).
_INTS = (0, 1, 23, 24, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**63, 2**64 - 1, -1, -24, -25, -256, -257,
         -(2**32), -(2**63), -(2**64))
_FLOATS = (0.0, -0.0, 0.5, -2.25, 1e300, -1e-300, 5e-324, float("inf"), float("-inf"), float("nan"))
_TEXTS = ("", "a", "é", "€uro", "𝄞", "a\x00b", "key", "x" * 30)


def cbor_value(rng, depth=0):
    # A value of the codec's types, nested up to MAX_DEPTH + 2 levels (deeper than the codec takes: it must refuse).
    k = rng.below(10 if depth <= cborcodec.MAX_DEPTH + 1 else 7)
    if k == 0:
        return rng.choice(_INTS)
    if k == 1:
        return (rng.next() << 32 | rng.next()) - (1 << 63)
    if k == 2:
        return rng.choice(_FLOATS) if rng.chance(2) else struct.unpack("<d", rng.raw(8))[0]
    if k == 3:
        return rng.raw(rng.below(40))
    if k == 4:
        return rng.choice(_TEXTS) + "".join(chr(0x20 + rng.below(0x3000)) for _ in range(rng.below(6)))
    if k == 5:
        return rng.choice((None, True, False))
    if k == 6:
        return rng.below(1000)
    if k in (7, 8):
        return [cbor_value(rng, depth + 1) for _ in range(rng.below(5))]
    d = {}
    for _ in range(rng.below(5)):
        key = rng.choice(_TEXTS) + str(rng.below(100)) if rng.chance(2) else rng.choice(_INTS)
        d[key] = cbor_value(rng, depth + 1)
    return d


def _depth(v):
    # How deep the deepest item sits (the top value at 0), as the codec counts against MAX_DEPTH.
    if isinstance(v, list):
        return 1 + max([_depth(x) for x in v] or [-1])
    if isinstance(v, dict):
        return 1 + max([max(_depth(k), _depth(x)) for k, x in v.items()] or [-1])
    return 0


def same(a, b):
    # Equality where NaN equals NaN and 0.0 differs from -0.0: what a round trip must keep.
    if isinstance(a, float) and isinstance(b, float):
        if a != a:
            return b != b
        return a == b and str(a) == str(b)
    if type(a) is type(b) and isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(a[i], b[i]) for i in range(len(a)))
    if isinstance(a, dict) and isinstance(b, dict):
        # a NaN key (or a tuple key holding one) is found by same(), not by lookup: NaN is not equal to itself
        return len(a) == len(b) and all(same(a[k], b[k]) if k in b else
                                        any(same(k, kb) and same(a[k], b[kb]) for kb in b) for k in a)
    return type(a) is type(b) and a == b


def make_cbor_roundtrip():
    # decode(encode(x)) == x for generated values; a value nested deeper than MAX_DEPTH is refused on encode.
    def target(v):
        deep = _depth(v) > cborcodec.MAX_DEPTH
        if deep:
            cborcodec.dumps(v)  # must raise CBORError
        data = cborcodec.dumps(v)
        assert not deep, "a value nested deeper than MAX_DEPTH was encoded"
        back = cborcodec.loads(data)
        assert same(back, v), f"round trip changed the value: {back!r}"

    def gen(rng):
        v = cbor_value(rng)
        for _ in range(cborcodec.MAX_DEPTH - 2 + rng.below(6) if rng.chance(16) else 0):
            v = [v] if rng.chance(2) else {"k": v}  # around the nesting bound, on both sides of it
        return v

    return gen, target, (CBORError,)


def cbor_seeds():
    # Bytes the codec writes, for values of every type and shape, and the RFC 8949 appendix A forms it reads
    # (indefinite lengths, half and single floats, tags) that other encoders write.
    rng = Rng(8949)
    out = []
    while len(out) < 64:
        v = cbor_value(rng)
        if _depth(v) <= cborcodec.MAX_DEPTH:
            out.append(cborcodec.dumps(v))
    for h in ("7f657374726561646d696e67ff", "5f42010243030405ff", "9f018202039f0405ffff",
              "bf61610161629f0203ffff", "c074323031332d30332d32315432303a30343a30305a", "f93c00", "fa47c35000",
              "f97e00", "f7", "d82076687474703a2f2f7777772e6578616d706c652e636f6d"):
        out.append(binascii.unhexlify(h))
    return out


def make_cbor_decode(seeds):
    # Any bytes: a value or CBORError. A value it read is written back and read again to the same value.
    def target(data):
        v = cborcodec.loads(data)
        again = cborcodec.loads(cborcodec.dumps(v))
        assert same(again, v), f"re-encoding what was read changed it: {v!r} -> {again!r}"

    return byte_inputs(seeds, (b"\x9f", b"\xbf", b"\xff", b"\x5f", b"\x7f", b"\x1b" + b"\xff" * 8, b"\xc0",
                               b"\xf9", b"\xfa", b"\xfb", b"\x81" * 20, b"\xa1")), target, (CBORError,)


# ---- the flash log --------------------------------------------------------------------------------------------


def read_tree(path, prefix=""):
    # {name: bytes} of every file under a folder, names relative to it ("log/mark0")
    files = {}
    for name in os.listdir(path):
        p = path + "/" + name
        if os.stat(p)[0] & 0x4000:
            files.update(read_tree(p, prefix + name + "/"))
        else:
            with open(p, "rb") as f:
                files[prefix + name] = f.read()
    return files


def build_logs(rng, work, count):
    # Logs written by edge/flashlog.py itself: random payloads, flushes, rotations, reclaims (marks).
    # -> [(files {name: bytes}, records {seq: payload}, first_seq, spans {segment name: [(seq, start, end)]})]
    logs = []
    for k in range(count):
        path = f"{work}/seed{k}"
        _rmtree(path)
        log = FlashLog(path, segment_size=4096, max_bytes=8 * 4096, flush_every=1000, flush_bytes=1 << 20)
        records = {}
        for _ in range(5 + rng.below(60)):
            size = rng.below(1200) if rng.chance(8) else rng.below(120)
            payload = rng.raw(size)
            try:
                records[log.append(payload)] = payload
            except FlashLogError:
                log.reclaim(log.first_segment_end())
                continue
            if rng.chance(4):
                log.flush()
            if rng.chance(12):
                log.flush()
                log.reclaim(log.first_seq + rng.below(8), rng.raw(rng.below(20)))
        first = log.first_seq
        log.close()
        files = read_tree(path)
        _rmtree(path)
        logs.append((files, records, first, segment_spans(files)))
    return logs


SEED_LOGS = 12  # logs (and KV buckets) written per run, each damaged again and again


def draw_damages(rng, files):
    # 1 to 3 damages to a folder's files, as flash gets damaged: [(file name, damage, offset, bytes)]
    names = sorted(files)
    damages = []
    for _ in range(1 + rng.below(3)):
        name = rng.choice(names)
        kind = rng.choice(("cut", "flip", "over", "add", "del", "cut", "flip"))
        damages.append((name, kind, rng.below(len(files[name]) + 1), rng.raw(1 + rng.below(12))))
    return damages


def damage(files, damages):
    # -> (the files after the damages, {name: offset of its first damaged byte}). Every damage changes the bytes
    # it touches (a flip or an overwrite never writes a byte back as it was), so a record overlapping one is corrupt.
    data = dict(files)
    damaged_at = {}
    for name, kind, at, raw in damages:
        if name not in data:
            continue
        b = data[name]
        at = min(at, len(b))
        if kind == "cut":
            data[name] = b[:at]
        elif kind in ("flip", "over") and at < len(b):
            n = 1 if kind == "flip" else min(len(raw), len(b) - at)
            data[name] = b[:at] + bytes(b[at + i] ^ (raw[i] | 1) for i in range(n)) + b[at + n:]
        elif kind == "add":
            at = len(b)
            data[name] = b + raw
        elif kind == "del":
            del data[name]
            at = 0
        damaged_at[name] = min(at, damaged_at.get(name, at))
    return data, damaged_at


def write_files(path, data):
    # The folder holds exactly these files afterwards (names may hold one "/": a subfolder). Folders are kept from
    # one input to the next: making and removing them costs more than the rest of an input.
    _remove_files(path)
    for name in sorted(data):
        parts = [path] + name.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            try:
                os.mkdir("/".join(parts[:i]))
            except OSError:
                pass  # there already
        with open(path + "/" + name, "wb") as f:
            f.write(data[name])


def _remove_files(path):
    try:
        names = os.listdir(path)
    except OSError:
        return
    for n in names:
        p = path + "/" + n
        if os.stat(p)[0] & 0x4000:
            _remove_files(p)
        else:
            os.remove(p)


def segment_spans(files):
    # {segment file: [(seq, start, end)]} of intact log files (their names hold the first sequence, rule 1 of
    # edge/flashlog.py; each record is 2 bytes of length, the payload, 4 bytes of CRC).
    spans = {}
    for name in files:
        if name[-4:] != ".log":
            continue
        b = files[name]
        seq = int(name[-16:-4], 16)
        at = 0
        spans[name] = []
        while at + 2 <= len(b):
            end = at + 6 + (b[at] | b[at + 1] << 8)
            spans[name].append((seq, at, end))
            seq += 1
            at = end
    return spans


def make_flashlog(work):
    # A log written by FlashLog, then damaged as flash gets damaged (a cut file, flipped or overwritten bytes, a
    # garbage tail, a lost file, torn marks), opened again. Properties: opening and replaying never raise; every
    # record replayed is the record written with that sequence, in order; every live record whose bytes all lie
    # before the first damage of its segment file comes back; damage is reported after every replayed record; after
    # recovery (and a burn past the damage), appends work and survive a reopen.
    # The input: (index of the seed log, [(file name, damage, offset, bytes)], whether to append after recovery).
    seed_logs = build_logs(Rng(1), work, SEED_LOGS)

    def gen(rng):
        index = rng.below(len(seed_logs))
        return index, draw_damages(rng, seed_logs[index][0]), rng.chance(4)

    def target(case):
        index, damages, append_after = case
        files, records, first, spans = seed_logs[index]
        path = work + "/case"
        data, damaged_at = damage(files, damages)
        write_files(path, data)
        must = set()
        for name in spans:
            for seq, _start, end in spans[name]:
                if seq >= first and end <= damaged_at.get(name, end):
                    must.add(seq)
        log = FlashLog(path, segment_size=4096, max_bytes=8 * 4096)
        got = _replayed(log, records)
        missing = must - {s for s, _p in got}
        assert not missing, f"records lost before the damage: {sorted(missing)}"
        top = max([s for s, _p in got] or [0])
        assert not log.damaged or log.damaged > top, f"damage reported at {log.damaged}, {top} replayed"
        if append_after:
            if log.damaged:  # as the forward queue does: sequences it may have used past the damage are burned
                log.burn(log.last_seq + 7)
                top = log.last_seq
            new = [f"after-{i}".encode() for i in range(3)]
            seqs = [log.append(p) for p in new]
            log.close()
            assert seqs[0] > top, "a new record took the sequence of a replayed (or burned) one"
            written = dict(records)
            for i in range(len(new)):
                written[seqs[i]] = new[i]
            again = _replayed(FlashLog(path, segment_size=4096, max_bytes=8 * 4096), written)
            assert again[:len(got)] == got and [s for s, _p in again[len(got):]] == seqs, \
                f"after recovery and 3 appends a reopen replays {[s for s, _p in again]}"
        else:
            log.close()

    return gen, target, (FlashLogError,)


def _replayed(log, records):
    got = []
    last = 0
    for seq, payload in log.replay():
        assert seq > last, f"sequence {seq} replayed after {last}"
        assert records.get(seq) == payload, f"sequence {seq} replayed with bytes that were never written there"
        got.append((seq, payload))
        last = seq
    log.close()
    return got


# ---- the edge's JSON config -----------------------------------------------------------------------------------

_JSON_VALUES = (None, True, False, 0, -1, 1, 0.001, 1.5, 1e300, 2**40, "", " ", "a", "x y", "a.b", "-", "$G",
                "0.0.0.0:4222", "host:99999", ":1", "h:", "nats://h:4222", "nats-leaf://u:p@h:7422", "tls://h",
                [], [1], ["a"], ["telemetry.>"], {}, {"a": 1}, {"url": "nats-leaf://h:7422"},
                {"subjects": ["a.>"], "stream": "S"}, {"name": "b", "filter": ">"})
_KEYS = ("name", "hub", "url", "urls", "listen", "data", "app", "limits", "forward", "forward_settings", "kv",
         "buckets", "subjects", "stream", "policy", "max_bytes", "segment_size", "priority", "coalesce", "max_age",
         "user", "password", "token", "tls", "max_payload", "ping_interval", "reconnect_min", "unknown")


def _nodes(v, out):
    out.append(v)
    if isinstance(v, dict):
        for k in sorted(v):  # not dict order: MicroPython's differs, and the inputs must not (fuzzcore rule 1)
            _nodes(v[k], out)
    elif isinstance(v, list):
        for x in v:
            _nodes(x, out)
    return out


def mutate_tree(rng, tree):
    # 1 to 3 edits of a copy of a parsed config: a value replaced by another type or an edge value, a key
    # removed, renamed or added, a list item dropped or doubled.
    tree = _copy(tree)
    for _ in range(1 + rng.below(3)):
        node = rng.choice(_nodes(tree, []))
        if isinstance(node, dict):
            keys = sorted(node)
            op = rng.below(4)
            if keys and op == 0:
                del node[rng.choice(keys)]
            elif keys and op == 1:
                k = rng.choice(keys)
                node[rng.choice(_KEYS)] = node.pop(k)
            elif keys and op == 2:
                node[rng.choice(keys)] = _copy(rng.choice(_JSON_VALUES))
            else:
                node[rng.choice(_KEYS)] = _copy(rng.choice(_JSON_VALUES))
        elif isinstance(node, list) and node:
            i = rng.below(len(node))
            if rng.chance(2):
                node.pop(i)
            else:
                node.append(_copy(node[i]))
    if not rng.chance(8):
        return tree
    return _copy(rng.choice(_JSON_VALUES))


def _copy(v):
    # A private copy: a list or map shared between inputs would carry one input's edits into the next.
    return json.loads(json.dumps(v))


def make_edge_config_tree(seed_trees):
    # A parsed JSON document: the config dict, or ConfigError naming the key.
    def gen(rng):
        return mutate_tree(rng, rng.choice(seed_trees))

    return gen, config.check, (ConfigError,)


def make_edge_config_file(work, seeds):
    # The bytes of a config file: the config dict, or one ConfigError line (bad JSON, bad UTF-8 included).
    path = work + "/config.json"

    def target(data):
        with open(path, "wb") as f:
            f.write(data)
        config.load(path)

    return byte_inputs(seeds, (b"{", b"}", b"[", b"]", b'"', b":", b",", b"null", b'"name": "e"', b"\xff",
                               b"\\u0000", b"1e999")), target, (ConfigError,)


# ---- the KV store's recovery ----------------------------------------------------------------------------------

_KV = {"max_keys": 64, "max_bytes": 1 << 20, "log_bytes": 8 * 4096, "segment_size": 4096, "flush_every": 1}


def _wall():
    return 1000  # no TTLs here, and the same stamps on every run


def _kv_state(st):
    return {k: st.entries[k][0] for k in st.entries}


def build_kv_stores(rng, work, count):
    # Buckets written by edge/kvcache/store.py itself: hub values and deletes, local writes, compactions.
    # -> [(files, states {log sequence: entries once that record was written}, values {key: [values written]},
    #      snap_seq, spans {log segment file: [(seq, start, end)]})]
    out = []
    for k in range(count):
        path = f"{work}/kvseed{k}"
        _rmtree(path)
        st = Store(path, wall=_wall, **_KV)
        states = {0: {}}
        values = {}
        rev = 0
        for i in range(10 + rng.below(60)):
            key = f"k{rng.below(8)}"
            op = rng.below(8)
            value = rng.raw(rng.below(200))
            rev += 1
            if op < 3:
                st.hub_set(key, value, rev, 0)
            elif op < 4:
                st.hub_del(key, rev)
            elif op < 7:
                st.local_write(key, OP_PUT, value, 0, f"1000-{i}-e")
            else:
                st.compact()
                continue
            values.setdefault(key, []).append(value)
            st.flush()
            states[st.log.last_seq] = _kv_state(st)
        snap_seq = st.snap_seq
        st.close()
        files = read_tree(path)
        _rmtree(path)
        out.append((files, states, values, snap_seq, segment_spans(files)))
    return out


def make_kv_recovery(work):
    # A bucket written by edge/kvcache/store.py (log segments, marks, a snapshot), damaged as make_flashlog damages
    # a log, opened again. Properties: opening never raises; every value recovered is one written to its key; when
    # only the newest log segment (or a mark) was damaged, the state is the one the bucket had right after the last
    # record before the damage (or after the snapshot, if that is newer).
    # The input: (index of the seed bucket, [(file name, damage, offset, bytes)]).
    seeds = build_kv_stores(Rng(2), work, SEED_LOGS)

    def gen(rng):
        index = rng.below(len(seeds))
        return index, draw_damages(rng, seeds[index][0])

    def target(case):
        index, damages = case
        files, states, values, snap_seq, spans = seeds[index]
        data, damaged_at = damage(files, damages)
        path = work + "/kvcase"
        write_files(path, data)
        st = Store(path, wall=_wall, **_KV)
        got = _kv_state(st)
        st.close()
        for key in got:
            assert got[key] in values.get(key, []), f"{key} recovered with a value never written to it"
        segs = sorted(spans)
        newest = segs[-1] if segs else None
        if all(n == newest or n.startswith("log/mark") for n in damaged_at):
            last = int(newest[-16:-4], 16) - 1 if newest else 0
            for seq, _start, end in spans.get(newest, ()):
                if end <= damaged_at.get(newest, end):
                    last = seq
            want = states[max(last, snap_seq)]
            assert got == want, f"recovered {sorted(got)}; after record {max(last, snap_seq)}: {sorted(want)}"

    return gen, target, ()
