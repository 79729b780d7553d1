"""edge/proto.py rule 5 on CPython, with MemoryError injected: a message the heap cannot hold is skipped whole
(next_event() raises MemoryError once for it) and parsing goes on after it; a control line cannot be skipped.
The real thing, a hub message too big for a 60 KB heap, is tests/edge/test_edge_frozen.py's."""

from __future__ import annotations

import pytest

from edge.proto import KIND_LEAF, OP_LMSG, Parser, RemoteProtocolError

AFTER = b"LMSG after 2\r\nok\r\n"


def _events(p: Parser) -> list:
    out = []
    while True:
        try:
            ev = p.next_event()
        except MemoryError:
            out.append("nomem")
            continue
        if ev is None:
            return out
        out.append(ev)


def _feed(p: Parser, data: bytes, step: int = 256) -> list:
    out = []
    for i in range(0, len(data), step):
        p.receive_data(data[i : i + step])
        out += _events(p)
    return out


def _after(events: list) -> bool:  # the last event is the frame after the skipped one
    return events[-1] == (OP_LMSG, b"after", None, None, None, b"ok")


@pytest.mark.parametrize("hdr", [False, True])
def test_payload_whose_pieces_cannot_be_joined_is_skipped(monkeypatch, hdr):
    payload = bytes(range(256)) * 3
    block = b"NATS/1.0\r\nA: b\r\n\r\n"
    frame = (b"HMSG big %d %d\r\n%s%s\r\n" % (len(block), len(block) + len(payload), block, payload) if hdr
             else b"LMSG big %d\r\n%s\r\n" % (len(payload), payload))
    cut = Parser._cut
    fails = []

    def tight(self, n, keep=True):
        if keep and n == len(payload) and not fails:  # the payload's join: after the header's, when there is one
            fails.append(n)
            raise MemoryError
        return cut(self, n, keep)

    monkeypatch.setattr(Parser, "_cut", tight)
    p = Parser(KIND_LEAF)
    events = _feed(p, frame + AFTER + frame)
    assert fails == [len(payload)]
    assert events[0] == "nomem" and events[1] == (OP_LMSG, b"after", None, None, None, b"ok")
    assert events[2][-1] == payload and len(events) == 3  # the same frame again, with memory: whole


class _NoRoomFor(bytes):
    """bytes whose slices of one length fail as MicroPython's would with no free block that size."""

    size = 0

    def __getitem__(self, k):
        if isinstance(k, slice) and (k.stop or 0) - (k.start or 0) == self.size:
            raise MemoryError
        return bytes.__getitem__(self, k)


def test_payload_in_the_buffer_that_cannot_be_sliced_is_skipped():
    data = _NoRoomFor(b"LMSG a 77\r\n" + b"x" * 77 + b"\r\n" + AFTER)
    data.size = 77
    p = Parser(KIND_LEAF)
    p.receive_data(data)
    events = _events(p)
    assert events[0] == "nomem" and _after(events) and len(events) == 2


def test_read_that_could_not_be_copied_skips_the_awaited_message():
    # edge/leaf/link.py hands over a memoryview of its buffer when it had no memory for the copy.
    payload = b"p" * 1000
    data = b"LMSG big 1000\r\n" + payload + b"\r\n" + AFTER
    p = Parser(KIND_LEAF)
    events = _feed(p, data[:256])  # the control line and the first piece
    assert events == []
    p.receive_data(memoryview(bytearray(data[256:512])))  # no memory to copy this one
    events = _events(p)
    assert events == ["nomem"]
    assert _feed(p, data[512:], 200) == [(OP_LMSG, b"after", None, None, None, b"ok")]
    assert _feed(p, data) == [(OP_LMSG, b"big", None, None, None, payload), (OP_LMSG, b"after", None, None, None,
                                                                             b"ok")]


def test_control_line_without_memory_fails_the_parser():
    p = Parser(KIND_LEAF)
    p.receive_data(b"LMSG a 1\r\nx\r\n")
    assert _events(p)[0][1] == b"a"
    with pytest.raises(RemoteProtocolError, match="no memory"):
        p.receive_data(memoryview(bytearray(b"LMSG b 1\r\nx\r\n")))
    with pytest.raises(RemoteProtocolError):
        p.next_event()
