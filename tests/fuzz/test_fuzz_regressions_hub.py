"""The hub bugs the fuzz runs found, each held by the input that found it (CPython; the edge ones are in
tests/fuzz/test_fuzz_regressions.py, which also runs on MicroPython)."""

import pytest

from edge.proto import ERR_MAX_CONTROL_LINE, KIND_CLIENT, KIND_ROUTE, MAX_CONTROL_LINE, OP_PUB, RemoteProtocolError
from host.opts import OptionsError, load_config
from host.parser import HubParser, decode_tail, encode_tail
from tests.unit.test_proto import _expand


def test_reply_holding_a_cr_survives_the_batch_path():
    # parser input 3140 (seed 1): nats-server splits PUB arguments on space and tab only, so "ab\rcd" is a reply
    # (checked live: it delivers "MSG foo 1 ab\rcd 2"). next_batch() kept it in the piece, but decode_tail() split
    # on any whitespace and gave the frame no reply: JetStream API requests, service imports and the other
    # paths that read a piece back lost where to answer.
    data = (b"PUB $JS.API.STREAM.MSG.DELETE.ORDERS _INBOX.niASim8waqLUDBPV08QRgA.niASim8waqLUDBPV08QVtq6000 9\r\n"
            b'{"seq":2}\r\nPUB $JS.API.STREAM.MSG.DELETE.ORTERS _INBOX.niASim8waqLUDBP\r08QRgA.niASim8waqLUDBPV08QVys'
            b'014b 25\r\n{"seq":2,"no_erase":true}\r\n')
    p = HubParser(KIND_CLIENT, MAX_CONTROL_LINE, None)
    p.receive_data(data)
    evs = _expand(p.next_batch())
    assert evs[1] == (OP_PUB, b"$JS.API.STREAM.MSG.DELETE.ORTERS",
                      b"_INBOX.niASim8waqLUDBP\r08QRgA.niASim8waqLUDBPV08QVys014b", None, b'{"seq":2,"no_erase":true}')
    assert decode_tail(encode_tail(b"ab\rcd", None, b"hi"), False) == (b"ab\rcd", None, b"hi")
    assert decode_tail(encode_tail(b"ab\rcd", b"NATS/1.0\r\n\r\n", b"hi"), True) == \
        (b"ab\rcd", b"NATS/1.0\r\n\r\n", b"hi")


def test_config_error_naming_a_key_with_a_line_break_is_one_line(tmp_path):
    # conf input 7220 (seed 1): '"{\n 1e999 "port"' is a quoted key holding a line break; the unknown-field error
    # quoted it as it is, and came out on two lines.
    path = tmp_path / "fuzz.conf"
    path.write_bytes(bytes.fromhex("227b0a2031653939392022706f727422"))
    with pytest.raises(OptionsError) as e:
        load_config(str(path))
    assert str(e.value) == f'{path}:1: unknown field "{{\\n 1e999 "'


def test_route_origin_line_too_long_is_the_same_error_whole_or_split():
    # parser input 330262 (seed 1): a route's LMSG line past the control-line limit was "maximum control line
    # exceeded" when it came whole and "Unknown Protocol Operation" when its start came alone (the partial-line
    # check did not know the leaf-origin verbs). nats-server knows LMSG from a route, so the limit it is.
    line = b"LMSG origin $G subject " + b"r" * 100 + b" 0 1\r\n"
    for chunks in ([line], [line[:90], line[90:]]):
        p = HubParser(KIND_ROUTE, 4, None)  # links get 16 x 4 = 64 bytes of arguments
        with pytest.raises(RemoteProtocolError) as e:
            for c in chunks:
                p.receive_data(c)
                p.next_event()
        assert e.value.wire == ERR_MAX_CONTROL_LINE, chunks
