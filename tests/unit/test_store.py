"""host/jetstream/store.py, memstore.py, filestore.py: one behavioural suite run against both stores.

Every test that takes `mk` runs twice (memory, file). Time is a FakeClock, never the wall clock. File-only tests
(reopen, recovery of damaged files, on-disk layout) come after the shared ones; at the end a hypothesis state
machine drives the file store and the memory store (the model) with the same random operations, reopening the
file store now and then, and compares everything observable.
"""

from __future__ import annotations

import os
import shutil

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from host.gotime import NS, format_duration
from host.jetstream.filestore import ConsumerFileStore, FileStore, file_msg_size
from host.jetstream.memstore import MemStore, mem_msg_size
from host.jetstream.store import (
    ACK_ALL,
    ACK_EXPLICIT,
    ACK_NONE,
    DISCARD_NEW,
    TTL_NEVER,
    ConsumerState,
    ErrBadMsg,
    ErrCorruptState,
    ErrMaxBytes,
    ErrMaxMsgs,
    ErrMaxMsgsPerSubject,
    ErrMsgTooLarge,
    ErrNoAckPolicy,
    ErrStoreClosed,
    ErrStoreEOF,
    ErrStoreMsgNotFound,
    ErrTooManyResults,
    Pending,
    SequencePair,
    SimpleState,
    StoreConfig,
    StoreError,
    decode_consumer_state,
    encode_consumer_state,
    is_marker,
)

T0 = 1_700_000_000 * NS


class FakeClock:
    def __init__(self, t: int = T0) -> None:
        self.t = t

    def __call__(self) -> int:
        self.t += 1000  # every message gets its own timestamp
        return self.t

    def advance(self, seconds: float) -> int:
        self.t += int(seconds * NS)
        return self.t


class Maker:
    """Builds a store of one kind; reopen() is a restart for the file store and a no-op for memory."""

    def __init__(self, kind: str, tmp_path) -> None:
        self.kind = kind
        self.dir = str(tmp_path / "stream")
        self.clock = FakeClock()
        self.store = None

    def __call__(self, **kw):
        kw.setdefault("name", "S")
        if self.kind == "file":
            kw.setdefault("store_dir", self.dir)
            kw.setdefault("block_size", 512)  # small blocks: rolls, block removal and compaction all happen
            self.store = FileStore(StoreConfig(**kw), clock=self.clock)
        else:
            self.store = MemStore(StoreConfig(**kw), clock=self.clock)
        return self.store

    def reopen(self, s):
        if self.kind == "mem":
            return s
        cfg = s.cfg
        s.stop()
        self.store = FileStore(cfg, clock=self.clock)
        return self.store


@pytest.fixture(params=["mem", "file"])
def mk(request, tmp_path):
    m = Maker(request.param, tmp_path)
    yield m
    if m.store is not None and not m.store.closed:
        m.store.stop()


def fill(s, n, subj="foo", data=b"x"):
    return [s.store_msg(subj if isinstance(subj, str) else subj(i), None, data)[0] for i in range(n)]


def seqs_of(s, flt=">", start=1):
    out = []
    while True:
        try:
            sm, start = s.load_next_msg(flt, start)
        except ErrStoreEOF:
            return out
        out.append(sm.seq)


# -- sequences and loads


def test_sequences_start_at_one_and_grow(mk):
    s = mk()
    st0 = s.state()
    assert (st0.msgs, st0.first_seq, st0.last_seq) == (0, 0, 0)
    assert [s.store_msg("foo", None, b"a")[0] for _ in range(5)] == [1, 2, 3, 4, 5]
    st1 = s.state()
    assert (st1.msgs, st1.first_seq, st1.last_seq, st1.num_deleted, st1.num_subjects) == (5, 1, 5, 0, 1)


def test_store_and_load_round_trip_headers_payload_and_ts(mk):
    s = mk()
    seq, ts = s.store_msg("a.b", b"NATS/1.0\r\nX: 1\r\n\r\n", b"payload", ts=T0 + 5)
    assert ts == T0 + 5
    sm = s.load_msg(seq)
    assert (sm.subject, sm.hdr, sm.data, sm.seq, sm.ts) == ("a.b", b"NATS/1.0\r\nX: 1\r\n\r\n", b"payload", 1, T0 + 5)
    _, ts2 = s.store_msg("a.b", None, b"")
    assert ts2 > T0  # from the injected clock
    sm2 = s.load_msg(2)
    assert sm2.hdr is None and sm2.data == b""


def test_load_msg_not_found_inside_eof_past_the_end(mk):
    s = mk()
    fill(s, 3)
    s.remove_msg(2)
    with pytest.raises(ErrStoreMsgNotFound):
        s.load_msg(2)
    with pytest.raises(ErrStoreEOF):
        s.load_msg(4)
    assert str(ErrStoreMsgNotFound()) == "no message found" and str(ErrStoreEOF()) == "stream store EOF"


def test_delete_then_load_not_found_and_remove_twice_is_false(mk):
    s = mk()
    fill(s, 3)
    assert s.remove_msg(1) is True
    assert s.remove_msg(1) is False
    assert s.remove_msg(99) is False
    with pytest.raises(ErrStoreMsgNotFound):
        s.load_msg(1)
    st = s.state()
    assert (st.msgs, st.first_seq, st.last_seq) == (2, 2, 3)


def test_removing_the_last_message_keeps_last_seq(mk):
    s = mk()
    fill(s, 3)
    for q in (3, 1, 2):
        s.remove_msg(q)
    st = s.state()
    assert (st.msgs, st.first_seq, st.last_seq) == (0, 4, 3)
    assert s.store_msg("foo", None, b"")[0] == 4


def test_load_next_with_wildcards_and_across_deletes(mk):
    s = mk()
    subjects = ["a.b.c", "a.x.c", "a.b", "b.b.c", "a.b.c.d"]
    for subj in subjects * 2:
        s.store_msg(subj, None, b"")
    s.remove_msg(1)
    s.remove_msg(7)
    assert seqs_of(s, "a.*.c") == [2, 6]
    assert seqs_of(s, "a.>") == [2, 3, 5, 6, 8, 10]
    assert seqs_of(s, "*.b.c") == [4, 6, 9]
    assert seqs_of(s, "a.b.c") == [6]
    assert seqs_of(s, "") == [2, 3, 4, 5, 6, 8, 9, 10]
    assert seqs_of(s, ">", start=7) == [8, 9, 10]
    assert seqs_of(s, "nope.*") == []
    sm, nxt = s.load_next_msg("a.>", 4)
    assert (sm.seq, nxt) == (5, 6)


def test_load_next_wildcard_that_matches_rarely(mk):
    s = mk()
    for i in range(100):
        s.store_msg(f"noise.{i}", None, b"")
    s.store_msg("rare.one", None, b"")
    assert seqs_of(s, "rare.*") == [101]


def test_load_last_msg_literal_and_wildcards(mk):
    s = mk()
    for subj in ["k.a", "k.b", "k.a", "j.a"]:
        s.store_msg(subj, None, subj.encode())
    assert s.load_last_msg("k.a").seq == 3
    assert s.load_last_msg("k.*").seq == 3
    assert s.load_last_msg("*.a").seq == 4
    assert s.load_last_msg(">").seq == 4
    s.remove_msg(4)
    assert s.load_last_msg("").seq == 3
    with pytest.raises(ErrStoreMsgNotFound):
        s.load_last_msg("z.*")


# -- limits


def test_max_msgs_discard_old_drops_oldest(mk):
    s = mk(max_msgs=3)
    fill(s, 5)
    st = s.state()
    assert (st.msgs, st.first_seq, st.last_seq) == (3, 3, 5)


def test_max_msgs_discard_new_refuses(mk):
    s = mk(max_msgs=3, discard=DISCARD_NEW)
    fill(s, 3)
    with pytest.raises(ErrMaxMsgs) as e:
        s.store_msg("foo", None, b"")
    assert str(e.value) == "maximum messages exceeded"
    st = s.state()
    assert (st.msgs, st.first_seq, st.last_seq) == (3, 1, 3)


def test_max_bytes_discard_old_and_new(mk):
    size = mk().msg_size(3, 0, 10)
    mk.store.stop()
    s = mk(max_bytes=size * 3)
    fill(s, 5, data=b"0123456789")
    st = s.state()
    assert (st.msgs, st.bytes, st.first_seq) == (3, size * 3, 3)
    s.stop()
    shutil.rmtree(mk.dir, ignore_errors=True)
    s = mk(max_bytes=size * 3, discard=DISCARD_NEW)
    fill(s, 3, data=b"0123456789")
    with pytest.raises(ErrMaxBytes):
        s.store_msg("foo", None, b"0123456789")
    assert s.state().msgs == 3


def test_max_msgs_per_subject_drops_oldest_of_that_subject(mk):
    s = mk(max_msgs_per_subject=2)
    for subj in ["a", "b", "a", "a", "b", "a"]:
        s.store_msg(subj, None, b"")
    assert s.subjects_state() == {"a": SimpleState(2, 4, 6), "b": SimpleState(2, 2, 5)}
    assert s.state().msgs == 4


def test_discard_new_per_subject_refuses(mk):
    s = mk(max_msgs_per_subject=1, discard=DISCARD_NEW, discard_new_per_subject=True)
    s.store_msg("a", None, b"")
    with pytest.raises(ErrMaxMsgsPerSubject):
        s.store_msg("a", None, b"")
    s.store_msg("b", None, b"")
    assert s.state().msgs == 2


def test_discard_new_full_stream_still_replaces_at_subject_limit(mk):
    # nats-server storeRawMsg: a subject at its own limit replaces its oldest even when the stream is full.
    s = mk(max_msgs=2, max_msgs_per_subject=1, discard=DISCARD_NEW)
    s.store_msg("a", None, b"")
    s.store_msg("b", None, b"")
    with pytest.raises(ErrMaxMsgs):
        s.store_msg("c", None, b"")
    assert s.store_msg("a", None, b"")[0] == 3  # a refused message takes no sequence
    assert s.subjects_state() == {"a": SimpleState(1, 3, 3), "b": SimpleState(1, 2, 2)}


def test_max_msg_size(mk):
    s = mk(max_msg_size=10)
    s.store_msg("a", None, b"x" * 10)
    with pytest.raises(ErrMsgTooLarge):
        s.store_msg("a", b"NATS/1.0\r\n\r\n", b"x")
    assert s.state().msgs == 1 and s.state().last_seq == 1


def test_update_config_shrinking_limits_applies_at_once(mk):
    s = mk()
    for i in range(10):
        s.store_msg(f"s.{i % 2}", None, b"x")
    s.update_config(StoreConfig(name="S", max_msgs_per_subject=3, block_size=512))
    assert s.state().msgs == 6 and s.subjects_totals() == {"s.0": 3, "s.1": 3}
    s.update_config(StoreConfig(name="S", max_msgs_per_subject=3, max_msgs=4, block_size=512))
    st = s.state()
    assert (st.msgs, st.first_seq) == (4, 7)
    size = s.msg_size(3, 0, 1)
    s.update_config(StoreConfig(name="S", max_msgs=4, max_bytes=size * 2, block_size=512))
    assert s.state().msgs == 2
    # Discard new never removes what is already stored (nats-server enforceMsgLimit).
    s.update_config(StoreConfig(name="S", max_msgs=1, discard=DISCARD_NEW, block_size=512))
    assert s.state().msgs == 2
    with pytest.raises(ErrMaxMsgs):
        s.store_msg("s.0", None, b"")


# -- expiry


def test_max_age_expires_with_controlled_now(mk):
    s = mk(max_age=10)
    s.store_msg("a", None, b"", ts=T0)
    s.store_msg("b", None, b"", ts=T0 + 5 * NS)
    s.store_msg("c", None, b"", ts=T0 + 9 * NS)
    assert s.next_expiry() == T0 + 10 * NS
    assert s.expire(T0 + 10 * NS - 1).removed == []
    assert s.expire(T0 + 15 * NS).removed == [1, 2]
    st = s.state()
    assert (st.msgs, st.first_seq) == (1, 3)
    assert s.next_expiry() == T0 + 19 * NS
    s.expire(T0 + 100 * NS)
    st = s.state()
    assert (st.msgs, st.first_seq, st.last_seq) == (0, 4, 3)
    assert s.next_expiry() == 0


def test_per_message_ttl_expiry(mk):
    s = mk(allow_msg_ttl=True)
    s.store_msg("a", None, b"", ttl=5, ts=T0)
    s.store_msg("b", None, b"", ttl=1, ts=T0)
    s.store_msg("c", None, b"", ts=T0)
    assert s.next_expiry() == T0 + 1 * NS
    assert s.expire(T0 + 1 * NS).removed == [2]
    assert s.expire(T0 + 4 * NS).removed == []
    assert s.expire(T0 + 5 * NS).removed == [1]
    assert s.state().msgs == 1


def test_ttl_ignored_unless_allowed(mk):
    s = mk()
    s.store_msg("a", None, b"", ttl=1, ts=T0)
    assert s.expire(T0 + 100 * NS).removed == []
    s.update_config(StoreConfig(name="S", allow_msg_ttl=True, block_size=512))
    assert s.expire(T0 + 100 * NS).removed == [1]


def test_ttl_never_survives_max_age(mk):
    s = mk(max_age=1, allow_msg_ttl=True)
    s.store_msg("keep", None, b"", ttl=TTL_NEVER, ts=T0)
    s.store_msg("go", None, b"", ts=T0)
    s.store_msg("late", None, b"", ts=T0 + 5 * NS)
    assert s.expire(T0 + 2 * NS).removed == [2]
    assert s.next_expiry() == T0 + 6 * NS  # the TTL_NEVER head does not make the timer spin
    assert s.expire(T0 + 10 * NS).removed == [3]
    assert [m.subject for m in map(s.load_msg, seqs_of(s))] == ["keep"]


def test_subject_delete_markers_on_age_removal(mk):
    s = mk(max_age=10, allow_msg_ttl=True, subject_delete_marker_ttl=60)
    s.store_msg("k.a", None, b"1", ts=T0)
    s.store_msg("k.a", None, b"2", ts=T0 + NS)
    s.store_msg("k.b", None, b"3", ts=T0 + 2 * NS)
    out = s.expire(T0 + 20 * NS)
    assert out.removed == [1, 2, 3]
    assert out.markers == [4, 5]  # one per subject whose last message went, none for the older k.a
    m = s.load_msg(4)
    assert (m.subject, m.data, m.ts) == ("k.a", b"", T0 + 20 * NS)
    assert m.hdr == b"NATS/1.0\r\nNats-Marker-Reason: MaxAge\r\nNats-TTL: 1m0s\r\nNats-Rollup: sub\r\n\r\n"
    assert is_marker(m.hdr)
    # Markers expire by their own TTL and leave no marker behind.
    out = s.expire(T0 + 80 * NS)
    assert out.removed == [4, 5] and out.markers == []
    assert s.state().msgs == 0


def test_go_duration_format():
    # marker TTLs are whole seconds
    got = [format_duration(x * NS) for x in (0, 5, 60, 90, 3600, 3661)]
    assert got == ["0s", "5s", "1m0s", "1m30s", "1h0m0s", "1h1m1s"]


# -- purge and compact


def test_purge_all_keeps_last_seq(mk):
    s = mk()
    fill(s, 10)
    assert s.purge() == 10
    st = s.state()
    assert (st.msgs, st.bytes, st.first_seq, st.last_seq, st.num_subjects) == (0, 0, 11, 10, 0)
    assert s.store_msg("foo", None, b"")[0] == 11


def test_purge_by_subject(mk):
    s = mk()
    fill(s, 10, subj=lambda i: f"s.{i % 3}")
    assert s.purge("s.1") == 3
    assert s.subjects_totals() == {"s.0": 4, "s.2": 3}
    assert s.purge("s.*") == 7
    assert s.state().msgs == 0


def test_purge_up_to_seq_is_exclusive(mk):
    s = mk()
    fill(s, 10, subj=lambda i: f"s.{i % 2}")
    assert s.purge(seq=1) == 0
    assert s.purge("s.0", seq=6) == 3  # 1, 3, 5 (not 6's neighbour 7)
    assert seqs_of(s, "s.0") == [7, 9]
    assert s.purge(seq=5) == 2  # everything below 5: 2 and 4
    assert s.state().first_seq == 6


def test_purge_keep(mk):
    s = mk()
    fill(s, 10, subj=lambda i: f"s.{i % 2}")
    assert s.purge("s.1", keep=2) == 3
    assert seqs_of(s, "s.1") == [8, 10]
    assert s.purge(keep=3) == 4
    assert seqs_of(s) == [8, 9, 10]
    assert s.purge(keep=5) == 0


def test_purge_wildcard_keep_counts_all_matching(mk):
    s = mk()
    fill(s, 6, subj=lambda i: f"w.{i % 2}")
    assert s.purge("w.*", keep=1) == 5
    assert seqs_of(s) == [6]


def test_compact(mk):
    s = mk()
    fill(s, 10)
    assert s.compact(4) == 3
    st = s.state()
    assert (st.msgs, st.first_seq) == (7, 4)
    assert s.compact(2) == 0
    s.remove_msg(5)
    assert s.compact(6) == 1
    assert s.compact(20) == 5
    st = s.state()
    assert (st.msgs, st.first_seq, st.last_seq) == (0, 20, 19)
    assert s.store_msg("foo", None, b"")[0] == 20


def test_erase(mk):
    s = mk()
    fill(s, 3, data=b"secret-bytes")
    assert s.erase_msg(2) is True
    assert s.erase_msg(2) is False
    with pytest.raises(ErrStoreMsgNotFound):
        s.load_msg(2)
    assert s.load_msg(3).data == b"secret-bytes"


def test_state_deleted_list(mk):
    s = mk()
    fill(s, 8)
    for q in (2, 5, 6):
        s.remove_msg(q)
    st = s.state(deleted=True)
    assert (st.num_deleted, st.deleted) == (3, [2, 5, 6])
    s.remove_msg(1)
    st = s.state(deleted=True)
    assert (st.first_seq, st.deleted, st.num_deleted) == (3, [5, 6], 2)  # 2 is below first_seq now


# -- counting


def test_num_pending_filters_and_last_per_subject(mk):
    s = mk()
    for subj in ["a.1", "a.2", "b.1", "a.1", "a.2", "a.1"]:
        s.store_msg(subj, None, b"")
    assert s.num_pending(1) == 6
    assert s.num_pending(3, "a.*") == 3
    assert s.num_pending(1, "a.1") == 3
    assert s.num_pending(5, "a.1") == 1
    assert s.num_pending(1, ">", last_per_subject=True) == 3
    assert s.num_pending(1, "a.*", last_per_subject=True) == 2
    assert s.num_pending(6, "a.*", last_per_subject=True) == 1  # a.2's last (5) is before 6
    assert s.num_pending(7) == 0
    s.remove_msg(6)
    assert s.num_pending(1, "a.1") == 2
    assert s.filtered_state(2, "a.*") == SimpleState(3, 2, 5)


def test_multi_last_seqs(mk):
    s = mk()
    for subj in ["kv.a", "kv.b", "kv.a", "other", "kv.c", "kv.b"]:
        s.store_msg(subj, None, b"")
    assert s.multi_last_seqs(["kv.*"]) == [3, 5, 6]
    assert s.multi_last_seqs(["kv.*"], max_seq=4) == [2, 3]
    assert s.multi_last_seqs(["kv.a", "other", "kv.a"]) == [3, 4]
    assert s.multi_last_seqs([">"]) == [3, 4, 5, 6]
    with pytest.raises(ErrTooManyResults):
        s.multi_last_seqs(["kv.*"], max_allowed=2)
    assert s.multi_last_seqs(["none.*"]) == []


def test_subjects_state_and_totals(mk):
    s = mk()
    for subj in ["x.a", "x.b", "x.a", "y"]:
        s.store_msg(subj, None, b"")
    assert s.subjects_state("x.*") == {"x.a": SimpleState(2, 1, 3), "x.b": SimpleState(1, 2, 2)}
    assert s.subjects_totals() == {"x.a": 2, "x.b": 1, "y": 1}
    s.remove_msg(1)
    assert s.subjects_state("x.a") == {"x.a": SimpleState(1, 3, 3)}


def test_get_seq_from_time(mk):
    s = mk()
    for i in range(10):
        s.store_msg("t", None, b"", ts=T0 + i * NS)
    s.remove_msg(5)
    assert s.get_seq_from_time(T0) == 1
    assert s.get_seq_from_time(T0 + 4 * NS) == 6  # 5 is gone
    assert s.get_seq_from_time(T0 + 3 * NS + 1) == 6
    assert s.get_seq_from_time(T0 + 9 * NS) == 10
    assert s.get_seq_from_time(T0 + 99 * NS) == 11


def test_first_seq_and_skip_msgs(mk):
    s = mk(first_seq=100)
    st = s.state()
    assert (st.first_seq, st.last_seq) == (100, 99)
    assert s.store_msg("a", None, b"")[0] == 100
    s.skip_msgs(101, 5)
    assert s.store_msg("a", None, b"")[0] == 106
    st = s.state()
    assert (st.msgs, st.first_seq, st.last_seq, st.num_deleted) == (2, 100, 106, 5)
    s = mk.reopen(s)
    assert s.store_msg("a", None, b"")[0] == 107


def test_closed_store_refuses(mk):
    s = mk()
    fill(s, 1)
    s.stop()
    for call in (lambda: s.store_msg("a", None, b""), lambda: s.load_msg(1), s.state):
        with pytest.raises(ErrStoreClosed):
            call()


def test_group_commit_stores_all(mk):
    s = mk(sync="always")
    with s.group_commit():
        seqs = fill(s, 5)
    assert seqs == [1, 2, 3, 4, 5]
    s = mk.reopen(s)
    assert s.state().msgs == 5


def test_msg_size_matches_nats_server():
    assert mem_msg_size(3, 0, 10) == 29  # memStoreMsgSize
    assert file_msg_size(3, 0, 10) == 43 and file_msg_size(3, 5, 10) == 52  # fileStoreMsgSizeRaw


# -- reopen (file store): everything survives a restart


def test_reopen_keeps_messages_deletes_and_purge_floor(tmp_path):
    m = Maker("file", tmp_path)
    s = m(max_msgs_per_subject=3, allow_msg_ttl=True)
    for i in range(30):
        s.store_msg(f"k.{i % 4}", b"NATS/1.0\r\n\r\n" if i % 5 == 0 else None, bytes([i]) * i, ttl=7 if i == 26 else 0)
    s.remove_msg(28)
    s.purge("k.1")
    before = s.state(deleted=True)
    subjects = s.subjects_state()
    msgs = {q: s.load_msg(q) for q in seqs_of(s)}
    s = m.reopen(s)
    assert s.recovery.clean
    assert s.state(deleted=True) == before
    assert s.subjects_state() == subjects
    assert {q: s.load_msg(q) for q in seqs_of(s)} == msgs
    assert s.expire(msgs[27].ts + 7 * NS).removed == [27]  # the TTL survived
    s.purge()
    s = m.reopen(s)
    st = s.state()
    assert (st.msgs, st.first_seq, st.last_seq) == (0, 31, 30)
    assert s.store_msg("k.0", None, b"")[0] == 31
    s.compact(50)
    s = m.reopen(s)
    st = s.state()
    assert (st.first_seq, st.last_seq) == (50, 49)
    s.stop()


def test_reopen_after_removing_the_newest_keeps_last_seq(tmp_path):
    m = Maker("file", tmp_path)
    s = m()
    fill(s, 5)
    s.remove_msg(5)
    s.remove_msg(4)
    s = m.reopen(s)
    st = s.state()
    assert (st.msgs, st.first_seq, st.last_seq) == (3, 1, 5)
    assert s.store_msg("foo", None, b"")[0] == 6
    s.stop()


def test_reopen_scans_when_the_block_index_is_stale(tmp_path):
    m = Maker("file", tmp_path)
    s = m(block_size=300)
    fill(s, 20, data=b"y" * 40)
    s = m.reopen(s)
    assert s.recovery.indexed == s.recovery.blocks and s.recovery.records == 0
    s.stop()
    idx = sorted(n for n in os.listdir(os.path.join(m.dir, "msgs")) if n.endswith(".idx"))
    with open(os.path.join(m.dir, "msgs", idx[0]), "r+b") as f:
        f.seek(30)
        f.write(b"\xff\xff")
    s = FileStore(s.cfg, clock=m.clock)
    assert s.recovery.indexed == s.recovery.blocks - 1 and s.recovery.records > 0
    assert seqs_of(s) == list(range(1, 21)) and s.recovery.clean
    s.stop()


def test_emptied_blocks_are_unlinked_and_purge_removes_files(tmp_path):
    m = Maker("file", tmp_path)
    s = m(block_size=200, max_msgs=5)
    fill(s, 40, data=b"z" * 50)
    blks = [n for n in os.listdir(os.path.join(m.dir, "msgs")) if n.endswith(".blk")]
    assert len(blks) == 5 and min(int(n[:-4]) for n in blks) == 36  # one ~100-byte record per block
    s.purge()
    assert [n for n in os.listdir(os.path.join(m.dir, "msgs")) if n.endswith((".blk", ".dlt"))] == []
    s.stop()


def test_interior_deletes_compact_sealed_blocks(tmp_path):
    m = Maker("file", tmp_path)
    s = m(block_size=1000)
    fill(s, 30, data=b"q" * 60)
    first_blk = os.path.join(m.dir, "msgs", "1.blk")
    size = os.path.getsize(first_blk)
    for q in range(2, 9):
        s.remove_msg(q)
    assert os.path.getsize(first_blk) < size / 2
    assert not os.path.exists(os.path.join(m.dir, "msgs", "1.dlt"))
    assert seqs_of(s)[:3] == [1, 9, 10]
    s = m.reopen(s)
    assert seqs_of(s)[:3] == [1, 9, 10] and s.load_msg(9).data == b"q" * 60
    s.stop()


def test_erase_overwrites_the_bytes_on_disk(tmp_path):
    m = Maker("file", tmp_path)
    s = m(block_size=1 << 20)
    s.store_msg("a", None, b"TOP-SECRET-PAYLOAD")
    s.store_msg("a", None, b"public")
    s.erase_msg(1)
    with open(os.path.join(m.dir, "msgs", "1.blk"), "rb") as f:
        assert b"TOP-SECRET" not in f.read()
    s = m.reopen(s)
    assert seqs_of(s) == [2] and s.recovery.clean
    s.stop()


def test_sync_always_fsyncs_every_ack_and_group_commit_shares_one(tmp_path, monkeypatch):
    import host.jetstream.filestore as fsmod

    calls = []
    monkeypatch.setattr(fsmod, "_fdatasync", lambda fd: calls.append(fd))
    m = Maker("file", tmp_path)
    s = m(block_size=1 << 20, sync="always", max_msgs=15)
    fill(s, 10)
    assert len(calls) == 10  # one per acknowledged store
    calls.clear()
    with s.group_commit():
        fill(s, 10)
        assert calls == []
    assert len(calls) == 1
    calls.clear()
    fill(s, 1)  # over max_msgs: the limit removal's .dlt entry is not fsynced, only the new message
    assert len(calls) == 1 and s.state().first_seq == 7
    calls.clear()
    s.remove_msg(10)  # an explicit delete is
    assert len(calls) == 1
    s.stop()


def test_interval_sync_fsyncs_only_when_due(tmp_path, monkeypatch):
    import host.jetstream.filestore as fsmod

    calls = []
    monkeypatch.setattr(fsmod, "_fdatasync", lambda fd: calls.append(fd))
    m = Maker("file", tmp_path)
    s = m(block_size=1 << 20, sync=2.0)
    fill(s, 5)
    s.remove_msg(1)
    assert calls == []
    m.clock.advance(3)
    fill(s, 1)
    assert len(calls) == 2  # the block and the .dlt, both written since the last sync
    calls.clear()
    s.sync()
    assert calls == []  # nothing new
    s.stop()


def test_a_directory_has_one_store_at_a_time(tmp_path):
    m = Maker("file", tmp_path)
    s = m()
    with pytest.raises(StoreError, match="in use"):
        FileStore(s.cfg)
    s.stop()
    FileStore(s.cfg).stop()


def _last_block(m):
    d = os.path.join(m.dir, "msgs")
    return os.path.join(d, max((n for n in os.listdir(d) if n.endswith(".blk")), key=lambda n: int(n[:-4])))


def test_torn_tail_is_cut_and_store_writes_on(tmp_path):
    m = Maker("file", tmp_path)
    s = m(block_size=1 << 20)
    fill(s, 10, data=b"d" * 30)
    s.stop()
    blk = _last_block(m)
    good = os.path.getsize(blk)
    for torn in (b"\x4e\x52\x01", b"\x4e\x52\x01\x00" + b"\x00" * 70):  # a partial header, a partial record
        with open(blk, "ab") as f:
            f.write(torn)
        s = FileStore(s.cfg, clock=m.clock)
        assert s.recovery.truncated == [("1.blk", good, len(torn))] and not s.recovery.errors
        assert os.path.getsize(blk) == good
        assert seqs_of(s) == list(range(1, 11))
        s.stop()
    s = FileStore(s.cfg, clock=m.clock)
    assert s.store_msg("foo", None, b"after")[0] == 11
    s = m.reopen(s)
    assert s.load_msg(11).data == b"after" and s.recovery.clean
    s.stop()


def test_truncated_last_record_is_cut(tmp_path):
    m = Maker("file", tmp_path)
    s = m(block_size=1 << 20)
    fill(s, 5, data=b"e" * 100)
    s.stop()
    blk = _last_block(m)
    os.unlink(blk[:-4] + ".idx")
    size = os.path.getsize(blk)
    os.truncate(blk, size - 7)
    s = FileStore(s.cfg, clock=m.clock)
    assert s.recovery.truncated and s.recovery.lost == [5]  # its header made it to disk, the rest did not
    assert seqs_of(s) == [1, 2, 3, 4]
    assert s.store_msg("foo", None, b"x")[0] == 5
    s.stop()


def test_damage_mid_block_is_reported_and_skipped(tmp_path):
    m = Maker("file", tmp_path)
    s = m(block_size=1 << 20)
    fill(s, 10, data=b"f" * 100)
    s.stop()
    blk = _last_block(m)
    os.unlink(blk[:-4] + ".idx")
    rec = os.path.getsize(blk) // 10
    with open(blk, "r+b") as f:  # a payload byte of record 3, then a header byte of record 6
        f.seek(2 * rec + rec - 10)
        f.write(b"\x00")
        f.seek(5 * rec + 12)
        f.write(b"\xff")
    s = FileStore(s.cfg, clock=m.clock)
    assert len(s.recovery.errors) == 2 and s.recovery.lost == [3, 6] and not s.recovery.truncated
    assert seqs_of(s) == [1, 2, 4, 5, 7, 8, 9, 10]
    assert s.load_msg(10).data == b"f" * 100
    st = s.state()
    assert (st.msgs, st.last_seq, st.num_deleted) == (8, 10, 2)
    assert s.store_msg("foo", None, b"new")[0] == 11
    s = m.reopen(s)
    assert s.load_msg(11).data == b"new"
    s.stop()


def test_damage_read_after_open_raises_bad_msg(tmp_path):
    m = Maker("file", tmp_path)
    s = m(block_size=1 << 20)
    fill(s, 3, data=b"g" * 50)
    s.stop()
    s = FileStore(s.cfg, clock=m.clock)  # loads from the .idx, so the damage below is found only on read
    with open(os.path.join(m.dir, "msgs", "1.blk"), "r+b") as f:
        f.seek(60)
        f.write(b"\x00\x01")
    s._cache.clear()
    with pytest.raises(ErrBadMsg):
        s.load_msg(1)
    # Reported and dropped: readers move past it instead of failing on it forever.
    assert s.recovery.lost == [1] and s.recovery.errors
    with pytest.raises(ErrStoreMsgNotFound):
        s.load_msg(1)
    assert seqs_of(s) == [2, 3] and s.load_msg(2).data == b"g" * 50
    s.stop()


def test_torn_delete_entry_is_cut(tmp_path):
    m = Maker("file", tmp_path)
    s = m(block_size=1 << 20, sync="always")
    fill(s, 4)
    s.remove_msg(2)
    s.stop()
    with open(os.path.join(m.dir, "msgs", "1.dlt"), "ab") as f:
        f.write(b"\x03\x00\x00")
    s = FileStore(s.cfg, clock=m.clock)
    assert s.recovery.truncated == [("1.dlt", 12, 3)]
    assert seqs_of(s) == [1, 3, 4]
    s.stop()


def test_limits_are_reapplied_when_deletes_were_lost(tmp_path):
    # Limit removals are synced lazily: if their .dlt entries are lost, opening the store removes them again.
    m = Maker("file", tmp_path)
    s = m(block_size=1 << 20, max_msgs=3)
    fill(s, 6)
    s.stop()
    os.unlink(os.path.join(m.dir, "msgs", "1.dlt"))
    s = FileStore(s.cfg, clock=m.clock)
    assert seqs_of(s) == [4, 5, 6]
    s.stop()


def test_crash_during_purge_is_finished_by_recovery(tmp_path):
    m = Maker("file", tmp_path)
    s = m(block_size=200)
    fill(s, 20, data=b"p" * 40)
    s.stop()
    saved = str(tmp_path / "saved")
    shutil.copytree(os.path.join(m.dir, "msgs"), saved)
    s = FileStore(s.cfg, clock=m.clock)
    s.purge()
    s.stop()
    # Put the blocks back as if the crash came after state.json was written but before they were unlinked.
    for n in os.listdir(saved):
        if n != "state.json":
            shutil.copy(os.path.join(saved, n), os.path.join(m.dir, "msgs", n))
    s = FileStore(s.cfg, clock=m.clock)
    st = s.state()
    assert (st.msgs, st.first_seq, st.last_seq) == (0, 21, 20)
    s.stop()


# -- consumer state


@pytest.fixture(params=["mem", "file"])
def cmk(request, tmp_path):
    m = Maker(request.param, tmp_path)
    m(sync="always")
    yield m
    if not m.store.closed:
        m.store.stop()


def test_consumer_explicit_acks_move_the_floor(cmk):
    o = cmk.store.consumer_store("dur", ACK_EXPLICIT, max_deliver=3)
    assert cmk.store.state().consumer_count == 1
    for d in range(1, 5):
        o.update_delivered(d, d + 10, 1, T0 + d)
    st = o.state()
    assert st.delivered == SequencePair(4, 14) and sorted(st.pending) == [11, 12, 13, 14]
    o.update_acks(2, 12)
    assert o.state().ack_floor == SequencePair(0, 0)
    o.update_acks(1, 11)
    assert o.state().ack_floor == SequencePair(2, 12)
    o.update_delivered(5, 13, 2, T0 + 9)  # a redelivery keeps the original delivery sequence
    st = o.state()
    assert st.pending[13] == Pending(3, T0 + 9) and st.redelivered == {13: 1}
    o.update_acks(5, 13)
    assert o.state().ack_floor == SequencePair(3, 13) and o.state().redelivered == {}
    with pytest.raises(ErrStoreMsgNotFound):
        o.update_acks(9, 99)
    o.stop()
    assert cmk.store.state().consumer_count == 0


def test_consumer_ack_all_and_ack_none(cmk):
    o = cmk.store.consumer_store("all", ACK_ALL)
    for d in range(1, 6):
        o.update_delivered(d, d, 1, T0)
    o.update_acks(3, 3)
    st = o.state()
    assert st.ack_floor == SequencePair(3, 3) and sorted(st.pending) == [4, 5]
    n = cmk.store.consumer_store("none", ACK_NONE)
    n.update_delivered(1, 7, 1, T0)
    assert n.state().ack_floor == SequencePair(1, 7) and n.state().pending == {}
    with pytest.raises(ErrNoAckPolicy):
        n.update_acks(1, 7)


def test_consumer_state_encoding_round_trip():
    st = ConsumerState(SequencePair(10, 110), SequencePair(6, 106),
                       {107: Pending(7, T0 + 3 * NS), 109: Pending(9, T0 + 5 * NS)}, {107: 2})
    back = decode_consumer_state(encode_consumer_state(st))
    assert back == st  # timestamps here are whole seconds: the encoding keeps seconds, like nats-server's
    with pytest.raises(ErrCorruptState):
        decode_consumer_state(b"\x16\x02\x80")


def test_consumer_file_state_survives_restart_and_detects_corruption(tmp_path):
    m = Maker("file", tmp_path)
    s = m(sync=5.0)
    o = s.consumer_store("dur")
    o.update_delivered(1, 1, 1, T0)
    o.update_delivered(2, 2, 1, T0)
    o.update_acks(1, 1)
    o.stop()
    s = m.reopen(s)
    assert s.consumer_names() == ["dur"]
    o = s.consumer_store("dur")
    st = o.state()
    assert st.delivered == SequencePair(2, 2) and st.ack_floor == SequencePair(1, 1) and list(st.pending) == [2]
    o.stop()
    path = os.path.join(m.dir, "obs", "dur", "o.dat")
    with open(path, "r+b") as f:
        f.seek(3)
        f.write(b"\x7f")
    with pytest.raises(ErrCorruptState):
        ConsumerFileStore(os.path.dirname(path), "dur", ACK_EXPLICIT, -1, True)
    s.stop()


# -- differential: the file store against the memory store


class _Model(MemStore):
    """The memory store counting bytes as the file store does, so byte limits agree."""

    msg_size = staticmethod(file_msg_size)


_SUBJECTS = ["a.x", "a.y", "b.x", "b.y.z", "c"]
_FILTERS = ["", ">", "a.*", "*.x", "b.>", "c", "a.y", "zz.*"]


class FileVsMemory(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = None

    @initialize(
        max_msgs=st.sampled_from([-1, 8, 20]),
        maxp=st.sampled_from([-1, 2, 4]),
        max_bytes=st.sampled_from([-1, 900]),
        discard=st.sampled_from(["old", "new"]),
        block=st.sampled_from([128, 400, 1 << 16]),
        sync=st.sampled_from(["always", 60.0]),
    )
    def setup(self, max_msgs, maxp, max_bytes, discard, block, sync):
        import tempfile

        self.tmp = tempfile.mkdtemp(prefix="fsm-")
        self.clock = FakeClock()
        kw = dict(name="M", max_msgs=max_msgs, max_msgs_per_subject=maxp, max_bytes=max_bytes, discard=discard,
                  allow_msg_ttl=True, max_age=30)
        self.model = _Model(StoreConfig(**kw), clock=self.clock)
        self.fs = FileStore(StoreConfig(store_dir=os.path.join(self.tmp, "s"), block_size=block, sync=sync, **kw),
                            clock=self.clock)

    def teardown(self):
        if self.tmp:
            if not self.fs.closed:
                self.fs.stop()
            shutil.rmtree(self.tmp, ignore_errors=True)

    def both(self, fn):
        results = []
        for s in (self.model, self.fs):
            try:
                results.append(("ok", fn(s)))
            except Exception as e:  # the same error type is part of the contract
                results.append(("err", type(e)))
        assert results[0] == results[1], results
        return results[0]

    @rule(subj=st.sampled_from(_SUBJECTS), n=st.integers(0, 120), hdr=st.booleans(),
          ttl=st.sampled_from([0, 0, 0, 5, TTL_NEVER]))
    def store(self, subj, n, hdr, ttl):
        data = bytes([n % 251]) * n
        ts = self.clock()
        self.both(lambda s: s.store_msg(subj, b"NATS/1.0\r\n\r\n" if hdr else None, data, ttl=ttl, ts=ts))

    @rule(k=st.integers(0, 40))
    def remove(self, k):
        seq = self.model.state().first_seq + k
        self.both(lambda s: s.remove_msg(seq))

    @rule(k=st.integers(0, 10))
    def erase(self, k):
        seq = self.model.state().first_seq + k
        self.both(lambda s: s.erase_msg(seq))

    @rule(subj=st.sampled_from([None, "a.*", "b.x", "c"]), k=st.integers(0, 10), keep=st.sampled_from([0, 0, 1, 3]))
    def purge(self, subj, k, keep):
        seq = self.model.state().first_seq + k if k else 0
        self.both(lambda s: s.purge(subj, seq=seq, keep=keep))

    @rule(k=st.integers(0, 30))
    def compact(self, k):
        seq = self.model.state().first_seq + k
        self.both(lambda s: s.compact(seq))

    @rule(secs=st.sampled_from([1, 4, 10, 31]))
    def expire(self, secs):
        now = self.clock.advance(secs)
        self.both(lambda s: (lambda e: (e.removed, e.markers))(s.expire(now)))

    @rule(maxp=st.sampled_from([-1, 1, 3]), max_msgs=st.sampled_from([-1, 5, 30]))
    def update_config(self, maxp, max_msgs):
        for s in (self.model, self.fs):
            s.update_config(replace_cfg(s.cfg, max_msgs_per_subject=maxp, max_msgs=max_msgs))

    @precondition(lambda self: self.tmp is not None)
    @rule()
    def reopen(self):
        cfg = self.fs.cfg
        self.fs.stop()
        self.fs = FileStore(cfg, clock=self.clock)
        assert self.fs.recovery.clean, self.fs.recovery

    @precondition(lambda self: self.tmp is not None)
    @invariant()
    def same_observable_state(self):
        a, b = self.model, self.fs
        assert a.state(deleted=True) == b.state(deleted=True)
        assert a.subjects_state() == b.subjects_state()
        last = a.state().last_seq
        for q in range(max(1, last - 40), last + 2):
            self.both(lambda s, q=q: s.load_msg(q))
        for f in _FILTERS:
            assert seqs_of(a, f) == seqs_of(b, f)
            assert a.num_pending(2, f) == b.num_pending(2, f)
            assert a.num_pending(1, f, True) == b.num_pending(1, f, True)
            self.both(lambda s, f=f: s.load_last_msg(f))
        assert a.multi_last_seqs(["a.*", "c"], last - 3) == b.multi_last_seqs(["a.*", "c"], last - 3)
        assert a.next_expiry() == b.next_expiry()


def replace_cfg(cfg, **kw):
    from dataclasses import replace

    return replace(cfg, **kw)


FileVsMemory.TestCase.settings = settings(
    max_examples=int(os.environ.get("STORE_FSM_EXAMPLES", "200")),
    stateful_step_count=30,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
test_file_store_matches_memory_store = FileVsMemory.TestCase
