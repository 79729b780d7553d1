"""host/parser.py: the hub's next_batch() runs (CPython only; the cases both parsers share are in test_proto.py)."""

from edge.proto import (
    ERR_MAX_CONTROL_LINE,
    ERR_UNKNOWN_OP,
    KIND_CLIENT,
    KIND_LEAF,
    KIND_ROUTE,
    KIND_SERVER,
    MAX_CONTROL_LINE,
    OP_CLOSED,
    OP_LMSG,
    OP_MSG,
    OP_PING,
    OP_PONG,
    OP_PUB,
    OP_RMSG,
    OP_SUB,
    RemoteProtocolError,
    encode_headers,
    encode_pub,
)
from host.parser import OP_ACCOUNT_INTEREST, OP_PUB_RUN, decode_tail, encode_tail
from host.parser import HubParser as Parser
from tests.unit.test_proto import (
    KIND_NAMES,
    MP,
    H,
    _expand,
    _parsable_streams,
    _run,
)


def test_next_batch_matches_next_event_on_every_client_stream():
    # (also covered inside the vector test; here with the run structure itself checked)
    n_runs = 0
    for t, s in _parsable_streams():
        if s.kind != KIND_CLIENT:
            continue
        r = _run(KIND_CLIENT, [s.data], batch=True)
        assert r.error is None, t.name
        n_runs += len([ev for ev in r.events if ev[0] == OP_PUB_RUN])
        assert _expand(r.events) == _run(KIND_CLIENT, [s.data]).events, t.name
    assert n_runs >= 20, n_runs


def test_runs_merge_consecutive_same_subject_frames():
    data = (
        b"PUB foo 1\r\na\r\nPUB foo 2\r\nbc\r\nPUB foo r 1\r\nd\r\n"  # one run of 3
        b"PUB bar 1\r\ne\r\n"  # another subject
        b"HPUB bar 12 13\r\nNATS/1.0\r\n\r\nf\r\n"  # same subject, but headers: a new run
        b"PUB foo 0\r\n\r\nPING\r\nPUB foo 1\r\ng\r\n"  # an op between two frames ends the run
    )
    p = Parser(KIND_CLIENT)
    p.receive_data(data)
    got = p.next_batch()
    assert got == [
        (OP_PUB_RUN, b"foo", False, [b" 1\r\na\r\n", b" 2\r\nbc\r\n", b" r 1\r\nd\r\n"], 4),
        (OP_PUB_RUN, b"bar", False, [b" 1\r\ne\r\n"], 1),
        (OP_PUB_RUN, b"bar", True, [b" 12 13\r\nNATS/1.0\r\n\r\nf\r\n"], 13),
        (OP_PUB_RUN, b"foo", False, [b" 0\r\n\r\n"], 0),
        (OP_PING,),
        (OP_PUB_RUN, b"foo", False, [b" 1\r\ng\r\n"], 1),
    ]
    assert p.next_batch() == []
    assert p.pending() == 0


def test_run_pieces_make_valid_msg_frames():
    # The router writes b"MSG subj sid".join([b"", *pieces]); a client parser must read back the payloads.
    # Only canonical lines form runs; odd spacing or a bare LF comes out as a single OP_PUB event.
    data = b"".join(
        (
            encode_pub("s.1", b"one"),
            encode_pub("s.1", b"two\r\nlines", "_INBOX.x"),
            encode_pub("s.1", b""),
            b"PUB  s.1\t 5\r\nthree\r\n",
            b"PUB s.1 4\nfour\r\n",
        )
    )
    p = Parser(KIND_CLIENT)
    p.receive_data(data)
    evs = p.next_batch()
    assert len(evs) == 3 and evs[0][0] == OP_PUB_RUN and len(evs[0][3]) == 3
    assert evs[1] == (OP_PUB, b"s.1", None, None, b"three")
    assert evs[2] == (OP_PUB, b"s.1", None, None, b"four")
    frames = b"MSG s.1 42".join([b""] + evs[0][3])
    r = _run(KIND_SERVER, [frames])
    assert r.events == [
        (OP_MSG, b"s.1", b"42", None, None, b"one"),
        (OP_MSG, b"s.1", b"42", b"_INBOX.x", None, b"two\r\nlines"),
        (OP_MSG, b"s.1", b"42", None, None, b""),
        (OP_CLOSED,),
    ]
    hdr = encode_headers([("A", "1")])
    p = Parser(KIND_CLIENT)
    p.receive_data(encode_pub("h", b"p1", None, hdr) + encode_pub("h", b"p2", "rr", hdr))
    runs = p.next_batch()
    assert len(runs) == 1 and runs[0][2] is True
    frames = b"HMSG h 7".join([b""] + runs[0][3])
    r = _run(KIND_SERVER, [frames])
    assert r.events == [(OP_MSG, b"h", b"7", None, hdr, b"p1"), (OP_MSG, b"h", b"7", b"rr", hdr, b"p2"), (OP_CLOSED,)]


def test_next_batch_runs_across_reads_and_partial_payloads():
    data = b"PUB foo 5\r\nhello\r\n" * 3
    p = Parser(KIND_CLIENT)
    p.receive_data(data[:25])  # first frame, then a partial one
    assert p.next_batch() == [(OP_PUB_RUN, b"foo", False, [b" 5\r\nhello\r\n"], 5)]
    assert p.next_batch() == []
    p.receive_data(data[25:])
    assert p.next_batch() == [(OP_PUB_RUN, b"foo", False, [b" 5\r\nhello\r\n", b" 5\r\nhello\r\n"], 10)]


def test_pub_line_cache_overflow_keeps_results_exact():
    # More distinct PUB lines than the parser's line cache holds (4,096): it is cleared and refilled without
    # changing any result. Fed in reads of 300 frames. On MicroPython a cached line costs ~210 bytes of heap
    # (4,096 of them ~860 KB: next_batch() is the hub's API, the edge uses next_event()), so it stays below the
    # clear there and checks results only.
    p = Parser(KIND_CLIENT)
    total = 0
    n = 1200 if MP else 4400
    for start in list(range(0, n, 300)) + [0, 300]:  # the last two reads repeat lines seen before
        frames = []
        expected = []
        for i in range(start, start + 300):
            payload = b"%d" % i
            frames.append(b"PUB s.%d %d\r\n%s\r\n" % (i, len(payload), payload))
            expected.append((OP_PUB, b"s.%d" % i, None, None, payload))
        p.receive_data(b"".join(frames))
        assert _expand(p.next_batch()) == expected, start
        total += len(expected)
    assert p.pending() == 0
    assert MP or total > 4096


def test_bug_next_batch_keeps_the_run_before_an_error():
    # BUG: edge/proto.py _batch() raises while a run is still in `pieces` (not yet appended to `out`), so
    # next_batch() drops the valid PUB frames that came before the bad bytes in the same read, although its
    # contract (and next_event()) deliver them first. Repro: b"PUB foo 1\r\na\r\nFOO\r\n" -> next_batch() raises
    # at once; expected [(OP_PUB_RUN, b"foo", False, [b" 1\r\na\r\n"], 1)], then the error on the next call.
    for tail, wire in (
        (b"FOO\r\n", ERR_UNKNOWN_OP),  # general-path error
        (b"PUB foo 1\r\nab\r\n", ERR_UNKNOWN_OP),  # cached line, payload too long
        (b"PUB foo 1\r\n", None),  # ... and EOF mid-frame
        (b"PUB " + b"x" * (MAX_CONTROL_LINE + 20), ERR_MAX_CONTROL_LINE),  # partial line over the limit
        (b"x" * (MAX_CONTROL_LINE + 20), ERR_UNKNOWN_OP),  # ... whose first word is no verb
    ):
        p = Parser(KIND_CLIENT)
        p.receive_data(b"PUB foo 1\r\na\r\n" + tail)
        if tail == b"PUB foo 1\r\n":
            p.receive_data(b"")
        got = []
        err = None
        try:
            got = p.next_batch()
            p.next_batch()
        except RemoteProtocolError as e:
            err = e
        assert _expand(got) == [(OP_PUB, b"foo", None, None, b"a")], (tail[:20], got)
        assert err is not None and err.wire == wire, (tail[:20], err)


def test_bug_next_batch_reports_eof_mid_payload():
    # BUG: when a PUB line takes the batch fast path (a line-cache hit) and its payload is incomplete, _batch()
    # stops with `if end + 2 > n: break` and never looks at EOF. After receive_data(b"") next_batch() returns []
    # forever, where next_event() raises RemoteProtocolError("peer closed mid-frame") (wire None). Repro:
    # Parser(KIND_CLIENT); receive_data(b"PUB foo 5\r\nhel"); receive_data(b""); next_batch() -> [] (again and again).
    for data in (
        b"PUB foo 5\r\nhel",
        b"PUB foo 5\r\n",
        b"PUB foo r 5\r\nhello\r",
        b"HPUB foo 2 5\r\nhe",
        b"pub foo 5\nh",
    ):
        for batch in (False, True):
            r = _run(KIND_CLIENT, [data], batch)
            assert r.error is not None and r.error.wire is None, (data, batch, r.events)


def test_bug_next_batch_refuses_pub_from_non_client_peers():
    # BUG (since a14b522): the inline PUB fast path added to Parser._batch() does not check self.kind, so
    # next_batch() on a server, leaf or route connection turns b"PUB foo 1\r\nx\r\n" into an OP_PUB_RUN, while
    # next_event() refuses the verb (-ERR 'Unknown Protocol Operation'). The older path (_pub_line) returned None
    # for every kind but KIND_CLIENT.
    for kind in (KIND_SERVER, KIND_LEAF, KIND_ROUTE):
        for data in (b"PUB foo 1\r\nx\r\n", b"PUB foo r 1\r\nx\r\n"):
            for batch in (False, True):
                r = _run(kind, [data], batch, eof=False)
                assert r.error is not None and r.error.wire == ERR_UNKNOWN_OP, (KIND_NAMES[kind], batch, r.events)


def test_encode_tail_is_a_piece():
    for reply, hdr, payload in ((None, None, b"x"), (b"r", None, b""), (None, H, b"p"), (b"r", H, b"\r\n")):
        piece = encode_tail(reply, hdr, payload)
        assert decode_tail(piece, hdr is not None) == (reply, hdr, payload)
        p = Parser(KIND_CLIENT)
        p.receive_data((b"HPUB s" if hdr is not None else b"PUB s") + piece)
        run = p.next_batch()
        assert run == [(OP_PUB_RUN, b"s", hdr is not None, [piece], len(payload) + len(hdr or b""))]


def test_next_batch_counts_frames_to_dropped_subjects():
    # The router lists subjects with no interest in parser.drop: reply-less frames to them are only
    # counted; frames with a reply (and other subjects) still come out.
    p = Parser(KIND_CLIENT)
    p.receive_data(b"PUB a 1\r\nx\r\nPUB b 2\r\nyy\r\n")
    first = p.next_batch()
    assert [ev[1] for ev in first] == [b"a", b"b"]
    p.drop[b"a"] = True
    p.receive_data(b"PUB a 1\r\nx\r\nPUB a r 1\r\nz\r\nPUB b 2\r\nyy\r\nPUB a 1\r\nx\r\n")
    evs = p.next_batch()
    assert [(ev[1], len(ev[3])) for ev in evs] == [(b"a", 1), (b"b", 1)]
    assert decode_tail(evs[0][3][0], False) == (b"r", None, b"z")
    assert p.dropped == 2 and p.dropped_bytes == 2


def test_next_batch_drops_reply_frames_only_when_asked():
    p = Parser(KIND_CLIENT)
    p.drop[b"a"] = True
    p.receive_data(b"PUB a r 1\r\nz\r\n")
    assert len(p.next_batch()) == 1 and p.dropped == 0
    p.drop_replies = True
    p.receive_data(b"PUB a r 1\r\nz\r\nPUB b r 1\r\nz\r\n")
    evs = p.next_batch()
    assert [ev[1] for ev in evs] == [b"b"] and p.dropped == 1


def test_leaf_frames_without_queue_names_make_runs():
    p = Parser(KIND_LEAF)
    p.receive_data(b"LMSG foo 1\r\na\r\nLMSG foo r 1\r\nb\r\nHMSG foo 12 13\r\nNATS/1.0\r\n\r\nc\r\n"
                   b"LMSG foo + r q1 1\r\nd\r\nLMSG foo | q1 q2 1\r\ne\r\nPUB foo 1\r\nf\r\n")
    evs = p.next_batch()
    assert evs[:4] == [
        (OP_PUB_RUN, b"foo", False, [b" 1\r\na\r\n", b" r 1\r\nb\r\n"], 2),
        (OP_PUB_RUN, b"foo", True, [b" 12 13\r\nNATS/1.0\r\n\r\nc\r\n"], 13),
        (OP_LMSG, b"foo", b"r", [b"q1"], None, b"d"),
        (OP_LMSG, b"foo", None, [b"q1", b"q2"], None, b"e"),
    ]
    assert len(evs) == 4 and p.error is not None and p.error.wire == ERR_UNKNOWN_OP  # PUB is no leaf verb


def test_route_frames_without_queue_names_make_runs_keyed_by_account_and_subject():
    p = Parser(KIND_ROUTE)
    p.receive_data(b"RMSG $G foo 1\r\na\r\nRMSG $G foo r 1\r\nb\r\nRMSG acc2 foo 1\r\nc\r\n"
                   b"HMSG $G foo 12 13\r\nNATS/1.0\r\n\r\nd\r\nHMSG $G foo r 12 13\r\nNATS/1.0\r\n\r\ne\r\n"
                   b"RMSG $G foo + r q1 1\r\nf\r\nRMSG $G foo | q1 q2 1\r\ng\r\nRMSG $G 1\r\nh\r\n")
    evs = p.next_batch()
    assert evs == [
        (OP_PUB_RUN, b"$G foo", False, [b" 1\r\na\r\n", b" r 1\r\nb\r\n"], 2),
        (OP_PUB_RUN, b"acc2 foo", False, [b" 1\r\nc\r\n"], 1),
        (OP_PUB_RUN, b"$G foo", True, [b" 12 13\r\nNATS/1.0\r\n\r\nd\r\n", b" r 12 13\r\nNATS/1.0\r\n\r\ne\r\n"], 26),
        (OP_RMSG, b"$G", b"foo", b"r", [b"q1"], None, b"f"),
        (OP_RMSG, b"$G", b"foo", None, [b"q1", b"q2"], None, b"g"),
    ]
    assert p.error is not None  # "RMSG $G 1": no subject


class _Plan:
    def __init__(self, targets, htargets=None):
        self.targets, self.htargets, self.msgs, self.bytes = targets, htargets, 0, 0


def test_runs_with_a_plan_are_delivered_by_the_parser_in_order():
    p = Parser(KIND_CLIENT)
    out = []
    plan = p.plans[b"foo"] = _Plan([(out, b"MSG foo 1")])
    p.receive_data(b"PUB foo 1\r\na\r\nPUB foo r 1\r\nb\r\nPUB bar 1\r\nc\r\nPUB foo 1\r\nd\r\n"
                   b"HPUB foo 12 13\r\nNATS/1.0\r\n\r\ne\r\nPUB foo 1\r\nf\r\n")
    evs = p.next_batch()
    # foo's first run goes straight to the plan's output list; from bar's event on, runs are events, so a
    # subscriber of both sees them in the order they were published.
    assert out == [b"MSG foo 1".join([b"", b" 1\r\na\r\n", b" r 1\r\nb\r\n"])]
    assert p.used == [plan] and (plan.msgs, plan.bytes) == (2, 2)
    assert [(ev[1], ev[2], len(ev[3])) for ev in evs] == [(b"bar", False, 1), (b"foo", False, 1), (b"foo", True, 1),
                                                          (b"foo", False, 1)]
    p.used.clear()
    plan.msgs = plan.bytes = 0
    del out[:]
    p.receive_data(b"PUB foo 1\r\ng\r\nHPUB foo 12 13\r\nNATS/1.0\r\n\r\nh\r\nPUB foo 1\r\ni\r\n")
    evs = p.next_batch()
    assert out == [b"MSG foo 1", b" 1\r\ng\r\n"]  # no header targets in the plan: the header frame is an event
    assert [(ev[1], ev[2]) for ev in evs] == [(b"foo", True), (b"foo", False)]
    assert (plan.msgs, plan.bytes) == (1, 1)


def test_reply_per_frame_runs_read_only_the_tail():
    # A new line to the subject of the frame before is read from its tail; it must give what _control gives.
    for kind, verb in ((KIND_CLIENT, b"PUB"), (KIND_LEAF, b"LMSG")):
        frames = [verb + b" s.1 _I.%d %d\r\n" % (k, k % 3) + b"x" * (k % 3) + b"\r\n" for k in range(50)]
        data = b"".join(frames) + verb + b" s.1 a\tb 1\r\nx\r\n"
        p = Parser(kind)
        p.receive_data(data)
        evs = p.next_batch()
        assert len(evs) == 1 and len(evs[0][3]) == 50, KIND_NAMES[kind]
        assert [decode_tail(x, False)[0] for x in evs[0][3]] == [b"_I.%d" % k for k in range(50)]
        assert p.error is not None  # the tab separates: one argument too many


def test_reply_per_frame_frames_to_a_subject_without_interest_are_counted():
    p = Parser(KIND_CLIENT)
    p.drop[b"s.1"] = True
    p.drop_replies = True
    p.receive_data(b"".join(b"PUB s.1 _I.%d 2\r\nxy\r\n" % k for k in range(60)) + b"PUB s.2 _I.1 1\r\nz\r\n"
                   + b"PUB s.1 _I.x 1\r\nz\r\nPUB s.1 a b 1\r\nz\r\n")
    evs = p.next_batch()
    assert [(ev[1], len(ev[3])) for ev in evs] == [(b"s.2", 1)]
    assert (p.dropped, p.dropped_bytes) == (61, 121)
    assert p.error is not None and p.error.wire is None  # PUB with one argument too many: a silent close


def test_pieces_are_canonical_whatever_the_spacing():
    # Extra spaces are legal between arguments (Parser._control skips empty ones); a piece is copied to subscribers
    # as it is, so a line with them must not become a piece: the event path writes the frame anew.
    for kind, verb in ((KIND_CLIENT, b"PUB"), (KIND_LEAF, b"LMSG")):
        for line in (verb + b" s  1", verb + b" s r  1", verb + b" s  r 1", verb + b"  s 1"):
            p = Parser(kind)
            p.receive_data(b"PING\r\n" + line + b"\r\nx\r\n")  # PING first: no line cache or look-back involved
            evs = p.next_batch()
            assert [ev[0] for ev in evs][1:] != [OP_PUB_RUN], (KIND_NAMES[kind], line)
            p = Parser(kind)
            p.receive_data(verb + b" s 1\r\nx\r\n" + line + b"\r\nx\r\n")  # after a plain frame to the same subject
            evs = p.next_batch()
            assert all(b"  " not in piece for ev in evs if ev[0] == OP_PUB_RUN for piece in ev[3]), (kind, line)


def test_ping_and_pong_do_not_end_direct_delivery():
    # A PING asks for a PONG after what came before it; runs after it may still be delivered on the spot. A SUB may
    # make interest, so runs after it go to the router in order.
    p = Parser(KIND_CLIENT)
    out = []
    plan = p.plans[b"foo"] = _Plan([(out, b"MSG foo 1")])
    p.receive_data(b"PUB foo 1\r\na\r\nPING\r\nPUB foo 1\r\nb\r\nPONG\r\nPUB foo 1\r\nc\r\n"
                   b"SUB x 1\r\nPUB foo 1\r\nd\r\n")
    evs = p.next_batch()
    assert out == [b"MSG foo 1", b" 1\r\na\r\n", b"MSG foo 1", b" 1\r\nb\r\n", b"MSG foo 1", b" 1\r\nc\r\n"]
    assert plan.msgs == 3
    assert [ev[0] for ev in evs] == [OP_PING, OP_PONG, OP_SUB, OP_PUB_RUN]


def test_drop_lane_counts_repeated_lines_and_hands_on_the_rest():
    p = Parser(KIND_CLIENT)
    p.receive_data(b"PUB a 1\r\nx\r\nPUB a 2\r\nxy\r\n")
    p.next_batch()  # both lines are cached now
    p.drop[b"a"] = True
    frames = [b"PUB a 1\r\nx\r\n", b"PUB a 2\r\nxy\r\n"] * 30
    p.receive_data(b"".join(frames) + b"PUB b 1\r\nz\r\nPUB a 1\r\nx\r\nPUB a 2\r\nx")
    evs = p.next_batch()
    assert [(ev[1], len(ev[3])) for ev in evs] == [(b"b", 1)]
    assert (p.dropped, p.dropped_bytes) == (61, 91)
    p.receive_data(b"y\r\n")  # the last frame's payload arrives
    assert p.next_batch() == [] and (p.dropped, p.dropped_bytes) == (62, 93)


def test_link_frames_with_a_consumer_ack_reply_are_events():
    # `$JS.ACK...@<subject>` is mapped back by the receiving server (host/delivery.py deliver_link_msg), so such frames
    # are not runs the parser may deliver raw.
    ack = b"$JS.ACK.S.c.1.1.1.1700000000000000000.0"
    cases = ((KIND_ROUTE, b"RMSG $G ", (OP_RMSG, b"$G", b"d.in")), (KIND_LEAF, b"LMSG ", (OP_LMSG, b"d.in")))
    for kind, verb, head in cases:
        p = Parser(kind)
        p.receive_data(verb + b"d.in " + ack + b"@s.x 1\r\na\r\n" + verb + b"d.in " + ack + b"@s.x 1\r\nb\r\n")
        evs = p.next_batch()
        assert evs == [head + (ack + b"@s.x", None, None, b"a"), head + (ack + b"@s.x", None, None, b"b")], evs


def _reply_lane_streams(verb):
    # Frames to one subject, each with its own reply, all lines as long as the one before (the lane reads them so),
    # first of one size (a stretch the lane matches at once), then 7/8/9 (same digits, another size token), and at
    # the end of the stretch one oddity each: lines as long whose reply holds a tab, a second space, a \n, an "@" or
    # a \r (part of the reply); another subject; a size that is no number; a payload not followed by CRLF.
    def f(reply, size=8, subj=b"s.1"):
        return verb + b" " + subj + b" " + reply + b" %d\r\n" % size + b"y" * size + b"\r\n"

    base = [f(b"_I.%03d" % k, 8 if k < 8 else 7 + k % 3) for k in range(14)]  # the same size, then others
    odd = [f(b"_I.\t01"), f(b"_I. 01"), verb + b" s.1 _I\n001 8\r\nyyyyyyyy\r\n", f(b"_I.001", subj=b"s.2"),
           verb + b" s.1 _I.001 8x\r\nyyyyyyyy\r\n", verb + b" s.1 _I.001 8\r\nyyyyyyyyy\r\n",
           verb + b" s.1 _I.001 8\r\nyyyyyyyyy\n", f(b"_I.@01"), f(b"_I.\r01")]
    for o in odd:
        yield b"".join(base[:6]) + o + b"".join(base[6:])
    short = [f(b"%c" % (97 + k)) for k in range(8)]  # one-byte replies: "+" and "|" name queues on a link
    for o in (b"+", b"|", b"@"):
        yield b"".join(short[:6]) + f(o) + b"".join(short[6:])


def test_reply_lane_matches_next_event_split_at_every_offset():
    for kind, verb in ((KIND_CLIENT, b"PUB"), (KIND_LEAF, b"LMSG")):
        for data in _reply_lane_streams(verb):
            want = _run(kind, [data])
            for cut in range(len(data) + 1):
                got = _run(kind, [c for c in (data[:cut], data[cut:]) if c], batch=True)  # (b"": the peer closed)
                assert _expand(got.events, kind) == want.events, (KIND_NAMES[kind], data, cut)
                if kind == KIND_LEAF:  # a consumer's ack reply (an "@") is an event of its own, never a run's piece
                    replies = [decode_tail(x, False)[0] for ev in got.events if ev[0] == OP_PUB_RUN for x in ev[3]]
                    assert not any(b"@" in r for r in replies if r), (data, cut)
                assert (got.error is None) == (want.error is None), (KIND_NAMES[kind], data, cut)
                if want.error is not None:
                    assert got.error.wire == want.error.wire, (KIND_NAMES[kind], data, cut)


def test_reply_lane_drops_and_counts_what_next_event_gives_split_at_every_offset():
    # With no interest in s.1, the frames to it are only counted; everything else comes out as next_event() gives it.
    for data in _reply_lane_streams(b"PUB"):
        want = _run(KIND_CLIENT, [data], eof=False)
        kept = [ev for ev in want.events if ev[0] != OP_PUB or ev[1] != b"s.1"]
        n_drop = len(want.events) - len(kept)
        b_drop = sum(len(ev[4]) for ev in want.events if ev[0] == OP_PUB and ev[1] == b"s.1")
        for cut in range(len(data) + 1):
            p = Parser(KIND_CLIENT)
            p.drop[b"s.1"] = True
            p.drop_replies = True
            evs: list = []
            error = None
            try:
                for chunk in [c for c in (data[:cut], data[cut:]) if c]:
                    p.receive_data(chunk)
                    evs += p.next_batch()
            except RemoteProtocolError as e:
                error = e
            assert _expand(evs) == kept, (data, cut)
            assert (p.dropped, p.dropped_bytes) == (n_drop, b_drop), (data, cut)
            assert (error is None) == (want.error is None), (data, cut)


def test_lane_pattern_is_compiled_only_for_a_shape_that_comes_again():
    # A stream of ever new sizes or subjects must not compile a pattern per read: the first sighting only notes it.
    from host.parser import _lane_pattern

    shape = (b"PUB t.once ", 19, b"5", 5, False)  # lines of 19 bytes before the \n: a 5-byte reply
    assert _lane_pattern(*shape) is None
    pat = _lane_pattern(*shape)
    assert pat is not None and _lane_pattern(*shape) is pat
    assert pat.match(b"PUB t.once _I.01 5\r\nhello\r\n" * 2).end() == 2 * 27


def test_gateway_account_verbs_whole_and_split_at_every_offset():
    # A gateway's optimistic mode (gateway.go): `A- <account>` / `A+ <account>`, only on a gateway's parser.
    data = b"A- $G\r\na+ ACC\r\nRS- $G foo\r\n"
    for cut in range(len(data) + 1):
        p = Parser(KIND_ROUTE, gateway=True)
        events = []
        for chunk in (data[:cut], data[cut:]):
            if chunk:  # (b"" is the peer's EOF)
                p.receive_data(chunk)
                events.extend(p.next_batch())
        assert events[:2] == [(OP_ACCOUNT_INTEREST, False, b"$G"), (OP_ACCOUNT_INTEREST, True, b"ACC")], cut
    for bad in (b"A- \r\n", b"A+ a b\r\n"):
        p = Parser(KIND_ROUTE, gateway=True)
        p.receive_data(bad)
        try:
            p.next_batch()
        except RemoteProtocolError:
            continue
        assert p.error is not None, bad
    p = Parser(KIND_ROUTE)  # a route does not speak them
    p.receive_data(b"A- $G\r\n")
    try:
        p.next_batch()
    except RemoteProtocolError as e:
        assert e.wire == ERR_UNKNOWN_OP
    else:
        assert p.error is not None and p.error.wire == ERR_UNKNOWN_OP
