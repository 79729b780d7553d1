"""Fuzzing edge/proto.py's Parser with hypothesis (CPython only).

Properties, for every kind of peer and for small limits too:
1. any bytes, fed whole or in random chunks, then EOF: next_event() and next_batch() return events or raise
   RemoteProtocolError, never another exception, and always make progress (no hang);
2. next_batch() (runs expanded with decode_tail) gives exactly the events and the error of next_event();
3. valid frames (built with the encoders) followed by garbage: every valid frame comes out, in order, before
   anything the garbage causes.
Examples are derandomized so a CI run is repeatable. A failure here is a parser bug: see the test_bug_* tests in
tests/unit/test_proto.py for the ones known today.
"""

import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.proto import (
    KIND_CLIENT,
    KIND_LEAF,
    KIND_ROUTE,
    KIND_SERVER,
    MAX_CONTROL_LINE,
    MAX_PAYLOAD,
    OK,
    OP_CLOSED,
    OP_CONNECT,
    OP_ERR,
    OP_INFO,
    OP_LMSG,
    OP_LS_MINUS,
    OP_LS_PLUS,
    OP_MSG,
    OP_OK,
    OP_PING,
    OP_PONG,
    OP_PUB,
    OP_RMSG,
    OP_RS_MINUS,
    OP_RS_PLUS,
    OP_SUB,
    OP_UNSUB,
    PING,
    PONG,
    RemoteProtocolError,
    encode_connect,
    encode_err,
    encode_headers,
    encode_info,
    encode_lmsg,
    encode_ls_minus,
    encode_ls_plus,
    encode_msg,
    encode_pub,
    encode_sub,
    encode_unsub,
)
from host.parser import HubParser as Parser
from host.parser import encode_rmsg, encode_rs_minus, encode_rs_plus
from tests.unit.test_proto import _expand

KINDS = (KIND_CLIENT, KIND_SERVER, KIND_LEAF, KIND_ROUTE)
LIMITS = ((MAX_CONTROL_LINE, MAX_PAYLOAD), (24, 16), (4, 0), (MAX_CONTROL_LINE, None))
# FUZZ_EXAMPLES=5000 for a deeper local run; CI keeps the default (about 15 s for the three properties).
FUZZ = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "300")),
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

# Pieces of protocol, so that random input reaches past the verb lookup into sizes, payloads, JSON and headers.
TOKENS = (
    b"PUB ",
    b"HPUB ",
    b"SUB ",
    b"UNSUB ",
    b"MSG ",
    b"HMSG ",
    b"LMSG ",
    b"RMSG ",
    b"LS+ ",
    b"LS- ",
    b"RS+ ",
    b"RS- ",
    b"CONNECT ",
    b"INFO ",
    b"PING",
    b"PONG",
    b"+OK",
    b"-ERR ",
    b"pub ",
    b"hpub ",
    b"foo",
    b"foo.bar",
    b"$G",
    b"q",
    b"|",
    b"+",
    b" ",
    b"  ",
    b"\t",
    b"\r\n",
    b"\r\n",
    b"\n",
    b"\r",
    b"0",
    b"1",
    b"2",
    b"5",
    b"12",
    b"999999999",
    b"-1",
    b"{}",
    b'{"a":1}',
    b"{",
    b"[",
    b"]",
    b'"',
    b"'",
    b"NATS/1.0\r\n\r\n",
    b"NATS/1.0 503\r\n",
    b"\xff",
    b"\xc3\xa9",
    b"\x00",
    b"\x0b",
    b"hello",
)
protocolish = st.lists(st.one_of(st.sampled_from(TOKENS), st.binary(max_size=6)), max_size=40).map(b"".join)
VERBS = (
    b"PUB",
    b"HPUB",
    b"SUB",
    b"UNSUB",
    b"MSG",
    b"HMSG",
    b"LMSG",
    b"RMSG",
    b"LS+",
    b"LS-",
    b"RS+",
    b"RS-",
    b"CONNECT",
    b"INFO",
    b"PING",
    b"PONG",
    b"+OK",
    b"-ERR",
    b"pub",
    b"Msg",
)
ARGS = (b"foo", b"r", b"q", b"$G", b"|", b"+", b"0", b"1", b"3", b"10", b"'", b"{}", b"[", b"\xff", b"-1", b"01")
arg = st.one_of(st.sampled_from(ARGS), st.binary(min_size=1, max_size=4))
line = st.tuples(
    st.sampled_from(VERBS),
    st.lists(st.tuples(st.sampled_from((b" ", b" ", b"\t", b"  ")), arg).map(b"".join), max_size=5).map(b"".join),
    st.sampled_from((b"\r\n", b"\r\n", b"\n", b"")),
    st.one_of(st.just(b""), st.binary(max_size=6).map(lambda b: b + b"\r\n")),
).map(b"".join)
lines = st.lists(line, max_size=6).map(b"".join)
cut_points = st.lists(st.integers(min_value=0, max_value=400), max_size=8)


def _chunks(data, cuts):
    out = []
    prev = 0
    for c in sorted(set(c for c in cuts if 0 < c < len(data))):
        out.append(data[prev:c])
        prev = c
    out.append(data[prev:])
    return out


def _feed(kind, limits, chunks, batch):
    """-> (events, error). Anything but RemoteProtocolError propagates and fails the test."""
    p = Parser(kind, limits[0], limits[1])
    evs = []
    err = None
    total = sum(len(c) for c in chunks)
    try:
        for chunk in list(chunks) + [b""]:
            p.receive_data(chunk)
            # Each operation consumes at least one byte, so more calls than bytes means the parser is stuck.
            for _ in range(total + 3):
                got = p.next_batch() if batch else p.next_event()
                if not got:
                    break
                got = got if batch else [got]
                evs.extend(got)
                if got[-1] == (OP_CLOSED,):
                    break
            else:
                raise AssertionError("no progress: the parser keeps returning events without consuming input")
            if evs[-1:] == [(OP_CLOSED,)]:
                break
    except RemoteProtocolError as e:
        err = e
        for _ in range(2):  # sticky, whichever method is called next
            for method in (p.next_event, p.next_batch):
                try:
                    method()
                except RemoteProtocolError as e2:
                    assert e2 is e
                else:
                    raise AssertionError("error not sticky") from None
    if err is None:
        assert evs[-1:] == [(OP_CLOSED,)], "EOF without (OP_CLOSED,) and without an error"
    return evs, err


# ---- valid frames, then garbage --------------------------------------------------------------------------------

# Tokens without whitespace (edge/proto.py's encoders refuse space, tab, CR, LF; \x0b and \x0c are left out
# because of the separator bug pinned in test_proto.py::test_bug_vertical_tab_and_form_feed_are_not_separators).
token = st.one_of(
    st.sampled_from((b"foo", b"foo.bar", b"a.*", b"a.>", b"_INBOX.x1", b"$G", b"q1", "été".encode())),
    st.text(alphabet="abcXYZ019.*>_-$:", min_size=1, max_size=10).map(str.encode),
)
payload = st.binary(max_size=24)
headers = st.one_of(
    st.none(),
    st.sampled_from(
        (
            encode_headers([("K", "v")]),
            encode_headers([("A", "1"), ("A", "2")]),
            encode_headers([], 503),
            encode_headers([("Nats-Subject", "x")], 404, "Message Not Found"),
        )
    ),
)
maybe = st.one_of(st.none(), token)
queues = st.one_of(st.none(), st.lists(token, min_size=1, max_size=3))
sid = st.integers(min_value=1, max_value=99999).map(lambda n: b"%d" % n)
JSON = {"verbose": False, "name": "fuzz", "headers": True, "n": 3}


@st.composite
def client_frame(draw):
    c = draw(st.integers(0, 5))
    if c == 0:
        s, q, i = draw(token), draw(maybe), draw(sid)
        return encode_sub(s, i, q), (OP_SUB, s, q, i)
    if c == 1:
        i, m = draw(sid), draw(st.one_of(st.none(), st.integers(0, 1000)))
        return encode_unsub(i, m), (OP_UNSUB, i, m)
    if c == 2:
        return draw(
            st.sampled_from(((PING, (OP_PING,)), (PONG, (OP_PONG,)), (encode_connect(JSON), (OP_CONNECT, JSON))))
        )
    s, r, h, p = draw(token), draw(maybe), draw(headers), draw(payload)
    return encode_pub(s, p, r, h), (OP_PUB, s, r, h, p)


@st.composite
def server_frame(draw):
    c = draw(st.integers(0, 4))
    if c == 0:
        return draw(st.sampled_from(((PING, (OP_PING,)), (PONG, (OP_PONG,)), (OK, (OP_OK,)))))
    if c == 1:
        text = draw(st.sampled_from(("Invalid Subject", 'Permissions Violation for Publish to "a"')))
        return draw(st.sampled_from(((encode_err(text), (OP_ERR, text)), (encode_info(JSON), (OP_INFO, JSON)))))
    s, i, r, h, p = draw(token), draw(sid), draw(maybe), draw(headers), draw(payload)
    return encode_msg(s, i, p, r, h), (OP_MSG, s, i, r, h, p)


@st.composite
def leaf_frame(draw):
    c = draw(st.integers(0, 4))
    s = draw(token)
    if c == 0:
        q, w = draw(maybe), draw(st.integers(1, 500))
        return encode_ls_plus(s, q, w), (OP_LS_PLUS, s, q, w if q else None)
    if c == 1:
        q = draw(maybe)
        return encode_ls_minus(s, q), (OP_LS_MINUS, s, q)
    if c == 2:
        return draw(st.sampled_from(((PING, (OP_PING,)), (encode_connect(JSON), (OP_CONNECT, JSON)))))
    r, qs, h, p = draw(maybe), draw(queues), draw(headers), draw(payload)
    return encode_lmsg(s, p, r, qs, h), (OP_LMSG, s, r, qs, h, p)


@st.composite
def route_frame(draw):
    c = draw(st.integers(0, 4))
    a, s = draw(token), draw(token)
    if c == 0:
        q, w = draw(maybe), draw(st.integers(1, 500))
        return encode_rs_plus(a, s, q, w), (OP_RS_PLUS, a, s, q, w if q else None)
    if c == 1:
        q = draw(maybe)
        return encode_rs_minus(a, s, q), (OP_RS_MINUS, a, s, q)
    if c == 2:
        return PONG, (OP_PONG,)
    r, qs, h, p = draw(maybe), draw(queues), draw(headers), draw(payload)
    return encode_rmsg(a, s, p, r, qs, h), (OP_RMSG, a, s, r, qs, h, p)


FRAMES = {KIND_CLIENT: client_frame(), KIND_SERVER: server_frame(), KIND_LEAF: leaf_frame(), KIND_ROUTE: route_frame()}
# Valid frames of every kind mixed with protocol tokens and random bytes: reaches payload, run and EOF handling.
soup = st.lists(
    st.one_of(st.one_of(*FRAMES.values()).map(lambda fe: fe[0]), st.sampled_from(TOKENS), st.binary(max_size=4)),
    max_size=12,
).map(b"".join)
any_input = st.one_of(st.binary(max_size=200), protocolish, lines, soup)


@FUZZ
@given(data=any_input, kind=st.sampled_from(KINDS), limits=st.sampled_from(LIMITS), cuts=cut_points)
def test_any_input_gives_events_or_remote_protocol_error(data, kind, limits, cuts):
    chunks = _chunks(data, cuts)
    for batch in (False, True):
        _feed(kind, limits, chunks, batch)
    _feed(kind, limits, [data[i : i + 1] for i in range(len(data))], False)


@FUZZ
@given(data=any_input, kind=st.sampled_from(KINDS), limits=st.sampled_from(LIMITS), cuts=cut_points)
def test_next_batch_agrees_with_next_event(data, kind, limits, cuts):
    chunks = _chunks(data, cuts)
    evs, err = _feed(kind, limits, chunks, False)
    bevs, berr = _feed(kind, limits, chunks, True)
    assert _expand(bevs, kind) == evs
    assert (err is None) == (berr is None)
    if err is not None:
        assert berr.wire == err.wire, (berr, err)
    whole, werr = _feed(kind, limits, [data], False)  # chunking never changes the result
    assert whole == evs and (werr is None) == (err is None)
    if err is not None:
        assert werr.wire == err.wire


@st.composite
def frames_then_garbage(draw):
    kind = draw(st.sampled_from(KINDS))
    frames = draw(st.lists(FRAMES[kind], min_size=1, max_size=8))
    garbage = draw(any_input)
    return kind, frames, garbage


@FUZZ
@given(case=frames_then_garbage(), cuts=cut_points)
def test_valid_frames_before_garbage_are_never_lost(case, cuts):
    kind, frames, garbage = case
    wire = b"".join(f for f, _ev in frames)
    expected = [ev for _f, ev in frames]
    for batch in (False, True):
        evs, err = _feed(kind, (MAX_CONTROL_LINE, MAX_PAYLOAD), _chunks(wire + garbage, cuts), batch)
        got = _expand(evs, kind) if batch else evs
        assert got[: len(expected)] == expected, ("batch" if batch else "event", err)
        if not garbage:
            assert err is None and got == expected + [(OP_CLOSED,)]
