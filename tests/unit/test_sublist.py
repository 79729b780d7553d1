"""Sublist: matches equal a brute-force scan, and the cache never serves a stale result."""

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from host.jetstream.stream_config import is_valid_subject as stream_subject_valid
from host.sublist import (
    Sublist,
    Subscription,
    is_valid_literal_subject,
    is_valid_subject,
    subject_matches,
)

TOKENS = [b"a", b"b", b"c", b"*", b">"]


def brute(subs, subject):
    plain = {id(s) for s in subs if s.queue is None and subject_matches(s.subject, subject)}
    queues = {}
    for s in subs:
        if s.queue is not None and subject_matches(s.subject, subject):
            queues.setdefault(s.queue, set()).add(id(s))
    return plain, queues


def as_sets(r):
    return {id(s) for s in r.psubs}, {grp[0].queue: {id(s) for s in grp} for grp in r.qsubs}


def test_subject_validity_matches_nats_server_rules():
    assert is_valid_subject(b"foo.bar")
    assert is_valid_subject(b"foo.*bar")  # wildcard only as a whole token
    assert is_valid_subject(b"a.b>c")
    assert is_valid_subject(b"foo.>")
    assert is_valid_subject("été.x".encode())
    for bad in (b"", b"foo.", b".foo", b"foo..bar", b"foo.>.bar", b"foo bar", b"foo\tbar", b"foo\rbar", b"foo\nbar",
                b"foo\fbar"):
        assert not is_valid_subject(bad), bad
        assert not stream_subject_valid(bad.decode()), bad  # JetStream's configs keep the same rule
    assert is_valid_literal_subject(b"foo.bar")
    assert not is_valid_literal_subject(b"foo.*")


def test_wildcard_matching():
    assert subject_matches(b"foo.*", b"foo.bar")
    assert not subject_matches(b"foo.*", b"foo.bar.baz")
    assert subject_matches(b"foo.>", b"foo.bar.baz")
    assert not subject_matches(b"foo.>", b"foo")
    assert subject_matches(b">", b"x")
    assert subject_matches(b"*.b.>", b"a.b.c")
    assert not subject_matches(b"foo.*bar", b"foo.xbar")  # literal token


def test_queue_groups_and_plain_subs_are_separate():
    sl = Sublist()
    p = Subscription(None, b"foo", None, b"1")
    q1 = Subscription(None, b"foo", b"g", b"2")
    q2 = Subscription(None, b"*", b"g", b"3")
    q3 = Subscription(None, b">", b"h", b"4")
    for s in (p, q1, q2, q3):
        sl.insert(s)
    r = sl.match(b"foo")
    assert r.psubs == [p]
    groups = {grp[0].queue: set(grp) for grp in r.qsubs}
    assert groups == {b"g": {q1, q2}, b"h": {q3}}


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.lists(st.sampled_from(TOKENS), min_size=1, max_size=4),
            st.sampled_from([None, b"q1", b"q2"]),
        ),
        max_size=25,
    ),
    st.lists(st.lists(st.sampled_from([b"a", b"b", b"c"]), min_size=1, max_size=4), min_size=1, max_size=10),
    st.randoms(use_true_random=False),
)
def test_match_equals_brute_force_through_inserts_and_removes(specs, pubs, rnd):
    sl = Sublist()
    live = []
    for i, (toks, q) in enumerate(specs):
        subj = b".".join(toks)
        if not is_valid_subject(subj):
            continue
        s = Subscription(None, subj, q, str(i).encode())
        sl.insert(s)
        live.append(s)
        # Interleave matches with changes so cached results are exercised, then invalidated.
        for p in pubs:
            subject = b".".join(p)
            assert as_sets(sl.match(subject)) == brute(live, subject)
    rnd.shuffle(live)
    while live:
        s = live.pop()
        assert sl.remove(s)
        for p in pubs:
            subject = b".".join(p)
            assert as_sets(sl.match(subject)) == brute(live, subject)
    assert sl.count == 0
    assert sl._root.empty()


def test_100k_subscriptions_match_and_remove():
    # The index must hold 100k subscriptions (unique subjects and shared wildcards) and still give
    # exact answers; its speed is measured by `natsedge bench`, not asserted here.
    rnd = random.Random(7)
    sl = Sublist()
    subs = []
    for i in range(100_000):
        subj = b"dev.%d.%d.temp" % (i % 1000, i)
        s = Subscription(None, subj, None, b"%d" % i)
        sl.insert(s)
        subs.append(s)
    wild = [Subscription(None, b"dev.*.*.temp", None, b"w1"), Subscription(None, b"dev.>", b"g", b"w2")]
    for s in wild:
        sl.insert(s)
    assert sl.count == 100_002
    for _ in range(1000):
        i = rnd.randrange(100_000)
        r = sl.match(b"dev.%d.%d.temp" % (i % 1000, i))
        assert r.psubs[0] is subs[i] or r.psubs[1] is subs[i]
        assert len(r.psubs) == 2 and len(r.qsubs) == 1
    for s in subs[:50_000]:
        assert sl.remove(s)
    r = sl.match(b"dev.1.1.temp")
    assert [s.sid for s in r.psubs] == [b"w1"]
    assert sl.count == 50_002
