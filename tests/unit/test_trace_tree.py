"""host/tools/trace_tree.py: the `natsedge trace` tree built from nats-server 2.15.1's own trace events (tests/vectors:
a leaf hop, a route hop, a gateway hop, single-server events with queue subscribers, trace-only, JetStream and no
subscribers), the hop linking and what is missing, and the decoding of gzip and snappy-framed events."""

from __future__ import annotations

import gzip
import json
import re
import zlib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge import proto
from host.snappy import SnappyError, block, crc32c, frame, masked_crc32c, unframe
from host.tools.trace_tree import (
    INDENT,
    MAX_EVENT_BYTES,
    TraceDecodeError,
    complete,
    decode_event,
    duration,
    hop_of,
    missing_hops,
    tree_lines,
    ts_ns,
)

VECTORS = Path(__file__).resolve().parents[1] / "vectors"  # nats-server 2.15.1 captures (tests/vectors/README.md)


def vector(name: str) -> list[dict[str, Any]]:
    path = VECTORS / "trace" / name
    assert path.is_file(), f"vectors missing: {path}"
    events = json.loads(path.read_text())["events"]
    return [e.get("event", e) for e in events]  # the single-server file wraps each event with its subject


def gateway_events() -> list[dict[str, Any]]:
    """The two events of more/trace_gw_results.txt: pretty-printed JSON after each `EVENT MSG` line."""
    path = VECTORS / "more" / "trace_gw_results.txt"
    assert path.is_file(), f"vectors missing: {path}"
    blocks = re.findall(r"^EVENT MSG [^\n]*\n(\{.*?\n\})\n", path.read_text(), re.S | re.M)
    return [json.loads(b) for b in blocks]


def untimed(lines: list[str]) -> list[str]:
    return [re.sub(r" \([^()]* (us|ms|s)(?: after the hop)?\)", "", ln) for ln in lines]


def indent_of(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def line_with(lines: list[str], text: str) -> int:
    found = [i for i, ln in enumerate(lines) if text in ln]
    assert len(found) == 1, (text, lines)
    return found[0]


# ---- trees from captured events ----------------------------------------------------------------------------------


def test_leaf_hop_tree_nests_the_hub_under_the_leaf_egress() -> None:
    events = vector("trace_events_leaf_hop.json")
    lines = tree_lines(events)
    assert lines[0] == 'Trace of a message to subject "app.x"'
    leaf = line_with(lines, 'Server "tleaf" cluster:"tleaf" version:2.15.1')
    assert lines[leaf + 1].strip() == '<-- from client cid:8 account:$G subject:"app.x"'
    egress = line_with(lines, '~~> leafnode "thub" lid:5 hop:1 (+247.3 us)')  # eg ts - in ts of tleaf's event
    hub = line_with(lines, 'Server "thub" version:2.15.1 (892.6 us after the hop)')  # thub's in ts - tleaf's eg ts
    assert hub == egress + 1 and indent_of(lines[hub]) == indent_of(lines[egress]) - 2 + len(INDENT)
    assert lines[hub + 1].strip() == '<-- from leafnode "tleaf" lid:7 account:$G subject:"app.x"'
    sub = line_with(lines, '--C client cid:8 sub:"app.x"')
    assert sub == hub + 2 and indent_of(lines[sub]) == indent_of(lines[hub]) + 2
    assert "Servers: 2   Egresses: client 1, leafnode 1" in lines
    assert not any("never answered" in ln for ln in lines)
    assert complete(events) and missing_hops(events) == []


def test_route_hop_tree_with_a_queue_subscriber() -> None:
    events = vector("trace_events_route_hop.json")
    lines = tree_lines(events)
    egress = line_with(lines, '--> route "tr2" rid:10 hop:1')
    assert lines[egress + 1].strip().startswith('Server "tr2" cluster:"tc" version:2.15.1')
    assert lines[egress + 2].strip() == '<-- from route "tr1" rid:8 account:$G subject:"app.y"'
    plain = line_with(lines, '--C client cid:10 sub:"app.y" (')
    queue = line_with(lines, '--C client cid:10 sub:"app.y" queue:"qg"')
    assert (plain, queue) == (egress + 3, egress + 4)
    assert "Servers: 2   Egresses: client 2, route 1" in lines
    assert complete(events)


def test_gateway_hop_tree() -> None:
    events = gateway_events()
    assert [e["server"]["name"] for e in events] == ["tA", "tB"]
    lines = tree_lines(events)
    egress = line_with(lines, '==> gateway "tB" gid:6 hop:1')
    assert lines[egress + 1].strip().startswith('Server "tB" cluster:"GB"')
    assert lines[egress + 2].strip() == '<-- from gateway "tA" gid:6 account:$G subject:"tr.x"'
    assert '--C client "subB" cid:8 sub:"tr.x" queue:"qq"' in lines[egress + 3]
    assert complete(events)


def test_single_server_events() -> None:
    dest, only, js, traceparent, nobody = vector("trace_events_single_server.json")
    lines = tree_lines([dest])
    assert lines[0] == 'Trace of a message to subject "traced.subject"'
    assert lines[2] == 'Server "js1" version:2.15.1'
    assert lines[3].strip() == '<-- from client "ref-capture" cid:7 account:APP subject:"traced.subject"'
    assert re.fullmatch(r' +--C client "ref-capture" cid:7 sub:"traced\.subject" \(\+\d+\.\d us\)', lines[4])
    assert lines[5].strip().startswith('--C client "ref-capture" cid:7 sub:"traced.subject" queue:"workers" (+')

    assert tree_lines([only])[0] == 'Trace of a message to subject "traced.subject" (trace only: not delivered to ' \
                                    'clients)'
    js_lines = tree_lines([js])
    stored = line_with(js_lines, '--J JetStream stream "ORDERS" subject:"orders.traced" stored (+')
    assert js_lines[stored - 1].strip().startswith("<-- from client")
    assert "Servers: 1   Egresses: none   Stored in: ORDERS" in js_lines
    # traced by the account's msg_trace and a sampled traceparent: no Nats-Trace-Dest, the same tree
    assert untimed(tree_lines([traceparent])[2:6]) == untimed(lines[2:6])
    assert "Servers: 1   Egresses: none" in tree_lines([nobody])
    assert all(complete([e]) for e in (dest, only, js, traceparent, nobody))


def test_a_trace_only_message_is_not_stored() -> None:
    js = vector("trace_events_single_server.json")[2]
    js["request"]["header"]["Nats-Trace-Only"] = ["true"]
    lines = tree_lines([js])
    assert lines[0].endswith("(trace only: not delivered to clients)")
    line_with(lines, '--J JetStream stream "ORDERS" subject:"orders.traced" would be stored (trace only) (+')
    assert "Servers: 1   Egresses: none" in lines


def test_an_event_that_names_its_own_hop_is_shown_once() -> None:
    hub = vector("trace_events_leaf_hop.json")[1]
    hub["events"].append({"type": "eg", "kind": 4, "cid": 1, "name": "loop", "hop": "1"})
    lines = tree_lines([hub])
    assert sum('Server "thub"' in ln for ln in lines) == 1


def test_order_of_arrival_does_not_change_the_tree() -> None:
    for events in (vector("trace_events_leaf_hop.json"), vector("trace_events_route_hop.json"), gateway_events()):
        assert tree_lines(list(reversed(events))) == tree_lines(events)


def test_a_hop_that_never_answered() -> None:
    origin, _hub = vector("trace_events_leaf_hop.json")
    assert not complete([origin]) and missing_hops([origin]) == ["1"]
    lines = tree_lines([origin])
    egress = line_with(lines, '~~> leafnode "thub" lid:5 hop:1')
    assert "(no event from this hop: it never answered)" in lines[egress + 1]
    assert lines[-1] == "Hops that never answered: 1"


def test_a_hop_to_a_peer_that_does_not_trace_is_not_waited_for() -> None:
    # nats-server numbers the hop of a copy to a peer below proto 3 and says in the egress that no event will come
    # from there (client.go deliverMsg); a trace-only message is not sent to it at all
    origin, _hub = vector("trace_events_leaf_hop.json")
    for error in ("Message delivered but remote does not support message tracing so no trace event generated from "
                  "there", "Not delivered because remote does not support message tracing"):
        old = json.loads(json.dumps(origin))
        old["events"][1]["error"] = error
        assert complete([old]) and missing_hops([old]) == []
        lines = tree_lines([old])
        assert any(ln.strip().startswith('--X leafnode "thub" lid:5 hop:1') and ln.endswith(error) for ln in lines)
        assert not any("never answered" in ln for ln in lines)


def edge_events() -> list[dict[str, Any]]:
    """A traced durable publish on an edge with a forward queue, in the shape docs/tracing.md ("Store-and-forward")
    gives: the edge's event when the record is on flash, the hub's event, the edge's event for the hub's PubAck."""
    server = {"name": "edge1", "id": "edge1", "cluster": "edge1", "ver": "0.1.0"}
    ingress = {"type": "in", "ts": "2026-12-07T17:51:40.010751Z", "kind": 0, "cid": 2, "name": "sensor", "acc": "$G",
               "subj": "tele.temp"}
    stored = {"server": server, "request": {"header": {"Nats-Trace-Dest": ["tr.doc"]}, "msgsize": 41},
              "events": [ingress, {"type": "js", "ts": "2026-12-07T17:51:40.010829Z", "stream": "forward:TELE",
                                   "subject": "tele.temp"}]}
    hub = vector("trace_events_single_server.json")[2]
    hub["request"]["header"]["Nats-Trace-Hop"] = ["1"]
    hub["events"][0].update(kind=4, name="edge1")
    acked = {"server": server, "request": stored["request"], "hops": 1,
             "events": [ingress, {"type": "eg", "ts": "2026-12-07T17:51:40.122976Z", "kind": 4, "cid": 1,
                                  "name": "js1", "hop": "1"},
                        {"type": "js", "ts": "2026-12-07T17:51:40.122987Z", "stream": "ORDERS",
                         "subject": "tele.temp", "seq": 1}]}
    return [stored, hub, acked]


def test_an_edge_forward_store_waits_for_its_ack_event() -> None:
    stored, hub, acked = edge_events()
    assert not complete([stored]) and not complete([stored, hub])
    lines = tree_lines([stored, hub])
    assert lines[-1] == "Stored in an edge's forward queue, no event for the hub's acknowledgement: hop (origin)"
    assert complete([stored, hub, acked]) and complete([acked, hub, stored])
    lines = tree_lines([stored, hub, acked])
    assert sum(ln.startswith('Server "edge1"') for ln in lines) == 2  # two events of one server, both at the top
    line_with(lines, '--J JetStream stream "forward:TELE" subject:"tele.temp" stored (+78.0 us)')
    egress = line_with(lines, '~~> leafnode "js1" lid:1 hop:1')
    assert lines[egress + 1].strip().startswith('Server "js1"')
    line_with(lines, '--J JetStream stream "ORDERS" subject:"tele.temp" stored seq:1')
    assert "Servers: 2   Egresses: leafnode 1   Stored in: forward:TELE, ORDERS" in lines
    only = json.loads(json.dumps(stored))
    only["request"]["header"]["Nats-Trace-Only"] = ["true"]  # not stored, so no ack event comes
    assert complete([only])


def test_an_event_whose_parent_never_answered() -> None:
    _origin, hub = vector("trace_events_leaf_hop.json")
    assert hop_of(hub) == "1"
    assert not complete([hub]) and missing_hops([hub]) == ["(origin)"]
    lines = tree_lines([hub])
    at = line_with(lines, "Events not linked to an egress above")
    assert lines[at + 1] == "hop 1:" and 'Server "thub"' in lines[at + 2]
    assert lines[-1] == "Hops that never answered: (origin)"


def test_nested_hops_are_counted_from_the_event_hops() -> None:
    # ADR-41's daisy chain: origin -> leaf (hop 1, which forwards once more: hops 1) -> its leaf (hop 1.1)
    origin, leaf = vector("trace_events_leaf_hop.json")
    middle = json.loads(json.dumps(leaf))
    middle["hops"] = 1
    middle["events"].append({"type": "eg", "ts": middle["events"][-1]["ts"], "kind": 4, "cid": 9, "name": "tleaf2",
                             "hop": "1.1"})
    assert missing_hops([origin, middle]) == ["1.1"]
    last = json.loads(json.dumps(leaf))
    last["request"]["header"]["Nats-Trace-Hop"] = ["1.1"]
    last["server"]["name"] = "tleaf2"
    assert complete([origin, middle, last])
    lines = tree_lines([last, origin, middle])
    second = line_with(lines, 'Server "thub"')
    egress = line_with(lines, '~~> leafnode "tleaf2" lid:9 hop:1.1')
    third = line_with(lines, 'Server "tleaf2"')
    assert third == egress + 1 and indent_of(lines[third]) == indent_of(lines[second]) + len(INDENT)
    assert not any("Events not linked" in ln for ln in lines)


def test_errors_and_other_steps_render() -> None:
    event = {"server": {"name": "s1", "cluster": "c", "domain": "d", "ver": "2.15.1"},
             "request": {"header": {"Nats-Trace-Dest": ["t"]}},
             "events": [
                 {"type": "in", "kind": 0, "cid": 3, "acc": "A", "subj": "x", "error": "Permissions Violation"},
                 {"type": "sm", "to": "y"},
                 {"type": "si", "acc": "B", "from": "y", "to": "z"},
                 {"type": "se", "acc": "C", "to": "w"},
                 {"type": "js", "stream": "S", "subject": "z", "nointerest": True},
                 {"type": "js", "stream": "S2", "subject": "z", "error": "no space"},
                 {"type": "eg", "kind": 0, "cid": 4, "acc": "B", "sub": "z",
                  "error": "Not delivered because of no echo"},
                 {"type": "xx", "what": 1}]}
    lines = [ln.strip() for ln in tree_lines([event])]
    assert 'Server "s1" cluster:"c" domain:"d" version:2.15.1' in lines
    assert '--X from client cid:3 account:A subject:"x" error: Permissions Violation' in lines
    assert '--- subject mapped to "y"' in lines
    assert '--- service import to account B "y" -> "z"' in lines
    assert '--- stream export to account C subject:"w"' in lines
    assert '--J JetStream stream "S" subject:"z" not stored: no interest' in lines
    assert '--X JetStream stream "S2" subject:"z" not stored error: no space' in lines
    assert '--X client cid:4 account:B sub:"z" error: Not delivered because of no echo' in lines
    assert '--- xx {"what": 1}' in lines
    assert "Servers: 1   Egresses: none" in lines


@settings(max_examples=200, deadline=None)
@given(st.lists(st.dictionaries(st.sampled_from(["server", "request", "hops", "events", "x", "type", "kind", "hop",
                                                 "header", "ts", "cid", "name", "error"]),
                                st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5)
                                             | st.sampled_from(["in", "eg", "js", "sm", "1", "1.1"]),
                                             lambda c: st.lists(c, max_size=3)
                                             | st.dictionaries(st.sampled_from(["type", "kind", "hop", "ts", "x",
                                                                              "header", "Nats-Trace-Hop", "in",
                                                                              "eg", "js", "error", "sub"]),
                                                               c, max_size=4),
                                             max_leaves=8)), max_size=4))
def test_any_json_objects_render_without_raising(events: list[dict[str, Any]]) -> None:
    lines = tree_lines(events)
    assert lines and all(isinstance(ln, str) for ln in lines)
    complete(events)


def test_an_absurd_hops_count_is_not_waited_for() -> None:
    origin = vector("trace_events_route_hop.json")[1]
    assert missing_hops([{**origin, "hops": 10**18}]) == missing_hops([{**origin, "hops": True}]) == ["(origin)"]


def test_timestamps_and_durations() -> None:
    a = ts_ns("2026-11-26T07:34:02.797456232Z")
    assert a is not None and a % 1_000_000_000 == 797456232
    assert ts_ns("2026-11-26T08:34:02.797456232+01:00") == a
    assert ts_ns("2026-11-26T07:34:02Z") == a - 797456232
    assert ts_ns("2026-11-26T07:34:02.5Z") == a - 797456232 + 500_000_000
    assert ts_ns("yesterday") is None and ts_ns(5) is None and ts_ns("2026-13-40T07:34:02Z") is None
    assert (duration(6_600), duration(2_500_000), duration(3_000_000_000)) == ("6.6 us", "2.50 ms", "3.000 s")


# ---- decoding ----------------------------------------------------------------------------------------------------


def test_plain_and_gzip_events_decode() -> None:
    event = vector("trace_events_route_hop.json")[0]
    body = json.dumps(event).encode()
    assert decode_event(None, body) == event
    assert decode_event(proto.encode_headers([("Content-Encoding", "identity")]), body) == event
    assert decode_event(proto.encode_headers([("Content-Encoding", "gzip")]), gzip.compress(body)) == event


def chunks(parts: list[tuple[int, bytes]]) -> bytes:
    return b"".join(bytes([t]) + len(b).to_bytes(3, "little") + b for t, b in parts)


def test_crc32c_check_value() -> None:
    assert crc32c(b"123456789") == 0xE3069283  # the CRC-32C (Castagnoli) check value
    assert masked_crc32c(b"123456789") == ((((0xE3069283 >> 15) | (0xE3069283 << 17)) + 0xA282EAD8) & 0xFFFFFFFF)


def test_snappy_blocks() -> None:
    # length 13 (varint), literal "abc" (tag (3-1)<<2), copy-1 of 10 bytes at offset 3 (an overlapping run)
    assert block(bytes([13, 2 << 2, *b"abc", 1 | ((10 - 4) << 2), 3])) == b"abcabcabcabca"
    # a copy-2: 5 bytes at offset 4; a literal with a 1-byte length (60 + 1 bytes... here 61)
    lit = bytes(range(61))
    assert block(bytes([66, 60 << 2, 60]) + lit + bytes([2 | (4 << 2), 4, 0])) == lit + lit[-4:] + lit[-4:-3]
    # a copy-4
    assert block(bytes([6, 1 << 2, *b"xy", 3 | (3 << 2), 2, 0, 0, 0])) == b"xyxyxy"
    for bad in (b"", bytes([5, 2 << 2, *b"ab"]),  # truncated literal
                bytes([4, 0, *b"a", 1 | (0 << 2), 9]),  # offset past the start
                bytes([3, 2 << 2, *b"abc", 1, 3]),  # longer than its length
                bytes([9, 2 << 2, *b"abc"]),  # shorter than its length
                bytes([0xFF, 0xFF, 0xFF, 0xFF, 0xFF])):  # a length that never ends
        with pytest.raises(SnappyError):
            block(bad)


def test_snappy_framing() -> None:
    event = vector("trace_events_leaf_hop.json")[1]
    body = json.dumps(event).encode()
    half = len(body) // 2
    block = bytes([half]) if half < 128 else bytes([half & 0x7F | 0x80, half >> 7])
    block += bytes([61 << 2]) + (half - 1).to_bytes(2, "little") + body[:half]  # one literal, 2-byte length
    stream = chunks([(0xFF, b"sNaPpY"),
                    (0x00, masked_crc32c(body[:half]).to_bytes(4, "little") + block),
                    (0xFE, b"\0\0\0"),  # padding: skipped
                    (0x01, masked_crc32c(body[half:]).to_bytes(4, "little") + body[half:])])
    assert unframe(stream, MAX_EVENT_BYTES) == body
    assert decode_event(proto.encode_headers([("Content-Encoding", "snappy")]), stream) == event
    assert unframe(frame(body), MAX_EVENT_BYTES) == body  # what the hub writes
    bad_crc = bytearray(stream)
    bad_crc[-1] ^= 1
    for bad in (bytes(bad_crc), stream[:-3], stream[10:], chunks([(0xFF, b"S2sTwO")]), b"",
                chunks([(0xFF, b"sNaPpY"), (0x02, b"x")])):
        with pytest.raises(SnappyError):
            unframe(bad, MAX_EVENT_BYTES)


def test_bad_events_are_one_line_errors() -> None:
    gz = proto.encode_headers([("Content-Encoding", "gzip")])
    cases = [(None, b"{not json"), (None, b"[1, 2]"), (None, b"\xff\xfe"), (gz, b"not gzip"),
             (gz, gzip.compress(b"{}")[:-6]), (proto.encode_headers([("Content-Encoding", "br")]), b"{}"),
             (b"NATS/1.0 abc\r\n\r\n", b"{}")]
    for hdr, payload in cases:
        with pytest.raises(TraceDecodeError) as e:
            decode_event(hdr, payload)
        assert "\n" not in str(e.value)


def test_a_gzip_bomb_is_refused() -> None:
    bomb = zlib.compressobj(1, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    data = bomb.compress(b"\0" * (MAX_EVENT_BYTES + 1)) + bomb.flush()
    with pytest.raises(TraceDecodeError, match="larger than"):
        decode_event(proto.encode_headers([("Content-Encoding", "gzip")]), data)
