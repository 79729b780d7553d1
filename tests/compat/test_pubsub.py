"""SUB/UNSUB/PUB/MSG, subjects and wildcards, queue groups, framing details."""

from __future__ import annotations

import collections
import time

import pytest

from .harness import msg_re, pub


def test_sub_pub_msg(srv):
    with srv.client() as c:
        c.send(b"SUB foo 1\r\n" + pub("foo", b"hello") + b"PING\r\n")
        c.expect(rb"MSG foo 1 5\r\nhello\r\nPONG\r\n")


def test_pub_with_reply(srv):
    with srv.client() as c:
        c.send(b"SUB foo.bar 9\r\n" + pub("foo.bar", b"hi", reply="my.reply") + b"PING\r\n")
        c.expect(rb"MSG foo\.bar 9 my\.reply 2\r\nhi\r\nPONG\r\n")


def test_between_two_connections(srv):
    with srv.client() as s, srv.client() as p:
        s.send(b"SUB t.two abc\r\n")
        s.sync()
        p.send(pub("t.two", b"x1") + pub("t.two", b"x2", reply="r"))
        p.sync()
        s.expect(msg_re("t.two", "abc", b"x1") + msg_re("t.two", "abc", b"x2", reply="r"))


def test_one_copy_per_matching_subscription(srv):
    # vector client/01: one MSG per matching sub, in no particular order
    with srv.client() as c:
        c.send(b"SUB foo 1\r\nSUB foo q1 2\r\nSUB foo.* 3\r\nSUB foo.> 4\r\nSUB > 5\r\n")
        c.send(pub("foo", b"hello"))
        assert sorted(m.sid for m in c.msgs_until_pong()) == ["1", "2", "5"]
        c.send(pub("foo.bar", b"hi", reply="my.reply"))
        msgs = c.msgs_until_pong()
        assert sorted(m.sid for m in msgs) == ["3", "4", "5"]
        assert {(m.subject, m.reply, m.payload) for m in msgs} == {("foo.bar", "my.reply", b"hi")}
        c.send(pub("foo.bar.baz", b""))
        assert sorted(m.sid for m in c.msgs_until_pong()) == ["4", "5"]


def test_duplicate_sid_ignored(srv):
    # vector client/02b: the first subject stays
    with srv.client() as c:
        c.send(b"SUB d1 950\r\nSUB d2 950\r\n" + pub("d1", b"1") + pub("d2", b"2") + b"PING\r\n")
        c.expect(rb"MSG d1 950 1\r\n1\r\nPONG\r\n")


def test_unsub_unknown_sid_ignored(srv):
    with srv.client() as c:
        c.send(b"UNSUB 99999\r\nUNSUB 5 3\r\nPING\r\n")
        c.expect(rb"PONG\r\n")


def test_unsub_stops_delivery(srv):
    with srv.client() as c:
        c.send(b"SUB u 1\r\n" + pub("u", b"a") + b"UNSUB 1\r\n" + pub("u", b"b") + b"PING\r\n")
        c.expect(rb"MSG u 1 1\r\na\r\nPONG\r\n")


def test_unsub_with_max(srv):
    with srv.client() as c:
        c.send(b"SUB m 1\r\nUNSUB 1 3\r\n" + b"".join(pub("m", str(i).encode()) for i in range(6)))
        assert [m.payload for m in c.msgs_until_pong()] == [b"0", b"1", b"2"]
        # gone for good: a new message does not arrive either
        c.send(pub("m", b"late"))
        assert c.msgs_until_pong() == []


def test_unsub_max_counts_already_delivered(srv):
    with srv.client() as c:
        c.send(b"SUB m2 7\r\n" + pub("m2", b"a") + pub("m2", b"b"))
        assert len(c.msgs_until_pong()) == 2
        c.send(b"UNSUB 7 3\r\n" + pub("m2", b"c") + pub("m2", b"d"))
        assert [m.payload for m in c.msgs_until_pong()] == [b"c"]


def test_unsub_max_already_reached(srv):
    with srv.client() as c:
        c.send(b"SUB m3 7\r\n" + pub("m3", b"a") + pub("m3", b"b") + pub("m3", b"c"))
        assert len(c.msgs_until_pong()) == 3
        c.send(b"UNSUB 7 2\r\n" + pub("m3", b"d"))
        assert c.msgs_until_pong() == []


def test_unsub_max_then_plain_sub_unaffected(srv):
    # vector client/01: sid 5 ('>') auto-removes after 1 more message
    with srv.client() as c:
        c.send(b"SUB foo 1\r\nSUB > 5\r\nPING\r\n")
        c.expect(rb"PONG\r\n")
        c.send(b"UNSUB 5 1\r\n" + pub("foo.x", b"a") + pub("foo.y", b"b") + pub("foo", b"c"))
        msgs = c.msgs_until_pong()
        assert [(m.sid, m.payload) for m in msgs] == [("5", b"a"), ("1", b"c")]


WILDCARD_CASES = [
    # (subscription, published subject, delivered?)
    ("foo", "foo", True),
    ("foo", "foo.bar", False),
    ("foo", "fo", False),
    ("foo.bar", "foo", False),
    ("*", "foo", True),
    ("*", "foo.bar", False),
    (">", "foo", True),
    (">", "foo.bar.baz", True),
    ("foo.*", "foo.bar", True),
    ("foo.*", "foo", False),
    ("foo.*", "foo.bar.baz", False),
    ("foo.>", "foo.bar", True),
    ("foo.>", "foo.bar.baz", True),
    ("foo.>", "foo", False),
    ("*.bar", "foo.bar", True),
    ("*.bar", "foo.baz", False),
    ("*.*", "a.b", True),
    ("*.*", "a.b.c", False),
    ("*.>", "a.b", True),
    ("*.>", "a", False),
    ("foo.*.baz", "foo.bar.baz", True),
    ("foo.*.baz", "foo.bar.bar", False),
    ("foo.*.>", "foo.bar.baz.qux", True),
    ("foo.*.>", "foo.bar", False),
    ("*.*.*", "a.b.c", True),
    ("a.*.c.>", "a.b.c.d.e", True),
    ("foo.*bar", "foo.*bar", True),
    ("foo.*bar", "foo.xbar", False),
    ("a.b>c", "a.b>c", True),
    ("a.b>c", "a.b.c", False),
    ("été.x", "été.x", True),
    ("Foo", "foo", False),
    ("foo-bar_baz.1$2", "foo-bar_baz.1$2", True),
]


@pytest.mark.parametrize("sub,subject,delivered", WILDCARD_CASES,
                         ids=[f"{s}|{p}" for s, p, _ in WILDCARD_CASES])
def test_wildcard_matching(srv, sub, subject, delivered):
    with srv.client() as c:
        c.send(f"SUB {sub} 1\r\n".encode() + pub(subject, b"x"))
        msgs = c.msgs_until_pong()
        if delivered:
            assert [(m.subject, m.sid, m.payload) for m in msgs] == [(subject, "1", b"x")]
        else:
            assert msgs == []


def test_literal_tokens_with_wildcard_chars(srv):
    # vector client/02b: foo.*bar and a.b>c are ordinary tokens; they do not act as wildcards
    with srv.client() as c:
        c.send(b"SUB foo.*bar 1876\r\nSUB a.b>c 1328\r\nPING\r\n")
        c.expect(rb"PONG\r\n")
        c.send(pub("foo.xbar", b"no") + pub("foo.*bar", b"yes") + pub("a.bxc", b"no") + pub("a.b>c", b"ok"))
        msgs = c.msgs_until_pong()
        assert [(m.subject, m.sid, m.payload) for m in msgs] == [("foo.*bar", "1876", b"yes"),
                                                               ("a.b>c", "1328", b"ok")]


@pytest.mark.parametrize("subject", ["foo.", ".foo", "foo..bar", "foo.>.bar", ".", ">.foo", "..", "a.>.>"])
def test_invalid_subject_keeps_connection(srv, subject):
    with srv.client() as c:
        c.send(f"SUB {subject} 3\r\nPING\r\n".encode())
        c.expect(rb"-ERR 'Invalid Subject'\r\nPONG\r\n")
        c.send(b"SUB ok 4\r\n" + pub("ok", b"still") + b"PING\r\n")
        c.expect(rb"MSG ok 4 5\r\nstill\r\nPONG\r\n")


def test_valid_subjects_accepted(srv):
    with srv.client() as c:
        for i, subject in enumerate(["*", ">", "foo.*.>", "été.x", "foo.*bar", "a.b>c", "*.*.*", "x" * 200]):
            c.send(f"SUB {subject} {i}\r\nPING\r\n".encode())
            c.expect(rb"PONG\r\n")


def test_non_pedantic_wildcard_publish_is_literal(srv):
    # vector client/02b: PUB w.* reaches w.*, w.> and >
    with srv.client() as c:
        c.send(b"SUB w.* 900\r\nSUB w.> 901\r\nSUB w.x 902\r\n")
        c.send(pub("w.*", b"x") + pub("w.>", b"y"))
        msgs = c.msgs_until_pong()
        assert sorted((m.subject, m.sid) for m in msgs) == [("w.*", "900"), ("w.*", "901"),
                                                            ("w.>", "900"), ("w.>", "901")]


def test_queue_group_single_connection(srv):
    with srv.client() as c:
        c.send(b"SUB qg g1 1\r\nSUB qg g1 2\r\nSUB qg g1 3\r\nSUB qg g2 4\r\nSUB qg g2 5\r\nSUB qg 6\r\n")
        c.send(b"".join(pub("qg", str(i).encode()) for i in range(100)))
        msgs = c.msgs_until_pong()
        by_group = collections.defaultdict(list)
        for m in msgs:
            group = {"1": "g1", "2": "g1", "3": "g1", "4": "g2", "5": "g2", "6": "plain"}[m.sid]
            by_group[group].append(int(m.payload))
        for group in ("g1", "g2", "plain"):
            assert sorted(by_group[group]) == list(range(100)), group
        assert len(msgs) == 300


def test_queue_group_across_connections(srv):
    members = [srv.client() for _ in range(3)]
    plain = srv.client()
    pubc = srv.client()
    try:
        for i, m in enumerate(members):
            m.send(f"SUB work workers w{i}\r\n".encode())
            m.sync()
        plain.send(b"SUB work p\r\n")
        plain.sync()
        pubc.send(b"".join(pub("work", str(i).encode()) for i in range(100)))
        pubc.sync()
        got = []
        for m in members:
            got += [int(x.payload) for x in m.msgs_until_pong()]
        assert sorted(got) == list(range(100))
        assert sorted(int(x.payload) for x in plain.msgs_until_pong()) == list(range(100))
    finally:
        for c in members + [plain, pubc]:
            c.close()


def test_queue_member_unsub_others_take_over(srv):
    with srv.client() as c:
        c.send(b"SUB qq g 1\r\nSUB qq g 2\r\nUNSUB 1\r\n")
        c.send(b"".join(pub("qq", str(i).encode()) for i in range(20)))
        msgs = c.msgs_until_pong()
        assert {m.sid for m in msgs} == {"2"} and len(msgs) == 20


def test_queue_group_with_reply_and_wildcard(srv):
    with srv.client() as c:
        c.send(b"SUB svc.* grp 1\r\nSUB svc.> grp 2\r\n")
        c.send(pub("svc.a", b"r", reply="inbox.1"))
        msgs = c.msgs_until_pong()
        assert len(msgs) == 1 and msgs[0].reply == "inbox.1" and msgs[0].subject == "svc.a"


def test_zero_length_payload(srv):
    with srv.client() as c:
        c.send(b"SUB z 1\r\nPUB z 0\r\n\r\nPING\r\n")
        c.expect(rb"MSG z 1 0\r\n\r\nPONG\r\n")


def test_payload_with_crlf_and_binary(srv):
    payload = b"line1\r\nPING\r\nMSG x 1 2\r\n" + bytes(range(256)) + b"\r\n\r\n"
    with srv.client() as c:
        c.send(b"SUB bin 1\r\n" + pub("bin", payload) + b"PING\r\n")
        c.expect(msg_re("bin", "1", payload) + rb"PONG\r\n")


def test_case_insensitive_ops_and_separators(srv):
    with srv.raw() as c:
        c.send(b'connect {"verbose":false,"protocol":0}\r\n')
        c.send(b"sub\tfoo   1\r\nSuB  foo\t \tq1 \t2\r\n")
        c.send(b"pub\tfoo   3\r\nabc\r\nPuB foo  rep\t\t2\r\nhi\r\nping\r\n")
        frames = c.frames_until_pong()  # answers the lower-case ping above
        assert c.msgs_until_pong() == []
        assert sorted((f[1].sid, f[1].reply or "", f[1].payload) for f in frames) == [
            ("1", "", b"abc"), ("1", "rep", b"hi"), ("2", "", b"abc"), ("2", "rep", b"hi")]
        c.send(b"UnSuB 1\r\nunsub\t2\r\n" + pub("foo", b"gone") + b"pInG\r\n")
        c.expect(rb"PONG\r\n")


def test_trailing_space_and_double_space_nats_py_style(srv):
    # nats-py sends "SUB subj  sid" (empty queue), "HPUB subj  hlen tlen" and "UNSUB sid "
    with srv.client() as c:
        c.send(b"SUB sp  1\r\nSUB sp2  2\r\n")
        c.send(b"HPUB sp  12 14\r\nNATS/1.0\r\n\r\nhi\r\n")
        c.send(b"UNSUB 2 \r\n" + pub("sp2", b"x") + b"PING\r\n")
        c.expect(rb"HMSG sp 1 12 14\r\nNATS/1\.0\r\n\r\nhi\r\nPONG\r\n")


def test_lf_only_line_endings(srv):
    # the parser looks for LF and drops a preceding CR
    with srv.client() as c:
        c.send(b"SUB lf 1\nPUB lf 2\nok\r\nPING\n")
        c.expect(rb"MSG lf 1 2\r\nok\r\nPONG\r\n")


FRAME = b"PUB split.subj rep.ly 11\r\nhello world\r\n"


def test_split_writes_every_offset(srv):
    with srv.client() as c:
        c.send(b"SUB split.subj 1\r\nPING\r\n")
        c.expect(rb"PONG\r\n")
        for i in range(1, len(FRAME)):
            c.send(FRAME[:i])
            time.sleep(0.002)  # not synchronisation: lets the server see the frame in two reads
            c.send(FRAME[i:] + b"PING\r\n")
            c.expect(rb"MSG split\.subj 1 rep\.ly 11\r\nhello world\r\nPONG\r\n")


def test_byte_by_byte_pub(srv):
    with srv.client() as c:
        c.send(b"SUB split.subj 1\r\nPING\r\n")
        c.expect(rb"PONG\r\n")
        for b in FRAME + b"PING\r\n":
            c.send(bytes([b]))
            time.sleep(0.001)  # not synchronisation: one byte per read on the server side
        c.expect(rb"MSG split\.subj 1 rep\.ly 11\r\nhello world\r\nPONG\r\n")


def test_split_writes_every_offset_hpub(srv):
    frame = b"HPUB hs 18 21\r\nNATS/1.0\r\nK: v\r\n\r\nabc\r\n"
    with srv.client() as c:
        c.send(b"SUB hs 1\r\nPING\r\n")
        c.expect(rb"PONG\r\n")
        for i in range(1, len(frame)):
            c.send(frame[:i])
            time.sleep(0.002)
            c.send(frame[i:] + b"PING\r\n")
            c.expect(rb"HMSG hs 1 18 21\r\nNATS/1\.0\r\nK: v\r\n\r\nabc\r\nPONG\r\n")


def test_many_pipelined_messages_in_order(srv):
    n = 2000
    with srv.client() as s, srv.client() as p:
        s.send(b"SUB pipe 1\r\n")
        s.sync()
        p.send(b"".join(pub("pipe", str(i).encode()) for i in range(n)))
        p.sync(timeout=5)
        msgs = s.msgs_until_pong(timeout=5)
        assert [int(m.payload) for m in msgs] == list(range(n))


def test_large_payload_near_max(srv):
    payload = bytes(i % 251 for i in range(1048576))
    with srv.client() as s, srv.client() as p:
        s.send(b"SUB big 1\r\n")
        s.sync()
        p.send(pub("big", payload))
        p.sync(timeout=5)
        msgs = s.msgs_until_pong(timeout=5)
        assert len(msgs) == 1 and msgs[0].payload == payload


def test_subscription_after_publishes_with_no_interest(srv):
    # The hub skips reply-less frames to subjects nobody listens to; a new subscription must end that.
    with srv.client() as pubc, srv.client() as subc:
        pubc.send(pub("late.sub", b"lost") * 50)
        pubc.sync()
        subc.send(b"SUB late.sub 1\r\n")
        subc.sync()
        pubc.send(pub("late.sub", b"kept") * 3)
        pubc.sync()
        assert [m.payload for m in subc.msgs_until_pong()] == [b"kept"] * 3


def test_verbose_ok_for_publishes_nobody_hears(srv):
    with srv.client(verbose=True) as c:
        c.send(pub("nobody.here", b"x") * 3 + b"PING\r\n")
        c.expect(rb"\+OK\r\n\+OK\r\n\+OK\r\nPONG\r\n")
