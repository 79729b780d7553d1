"""host/jetstream/stream.py and host/jetstream/jetstream.py without a running hub: stream config checks and defaults,
request decoding with Go's strictness, header helpers, Go durations and per-message TTLs, subject overlap, JSON as Go
writes it.

Expected values are nats-server 2.15.1's (vectors/js/02, 04, 12, 40 and answers captured with `nats-server -js`)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from host.gotime import parse_duration, rfc3339
from host.headers import hdr_append, hdr_get, hdr_remove
from host.jetstream.errors import ApiError
from host.jetstream.gojson import decode_request, dumps, is_empty_request, is_json_object_or_array
from host.jetstream.store import TTL_NEVER
from host.jetstream.stream import Stream, parse_msg_ttl
from host.jetstream.stream_config import STREAM_CONFIG_SCHEMA, check_config, subjects_collide, update_check
from host.jetstream.versioning import set_static_stream_metadata
from host.sublist import Sublist, Subscription

JSA = SimpleNamespace(streams={})  # check_config reads the account's streams (origins of mirrors and sources)

# vectors/js/12: the config nats-server answers for a stream created with name and subjects only (minus metadata).
DEFAULTS = {
    "name": "NOTTL", "subjects": ["nottl.>"], "retention": "limits", "max_consumers": -1, "max_msgs": -1,
    "max_bytes": -1, "max_age": 0, "max_msgs_per_subject": -1, "max_msg_size": -1, "discard": "old",
    "storage": "file", "num_replicas": 1, "duplicate_window": 120000000000, "compression": "none",
    "allow_direct": False, "mirror_direct": False, "sealed": False, "deny_delete": False, "deny_purge": False,
    "allow_rollup_hdrs": False, "consumer_limits": {}, "allow_msg_ttl": False,
}


def check(**req) -> dict:
    return check_config(req, JSA)


def error_of(**req) -> tuple[int, int, str]:
    with pytest.raises(ApiError) as e:
        check_config(req, JSA)
    return e.value.code, e.value.err_code, e.value.description


# ---- config defaults and key order ------------------------------------------------------------------------------


def test_defaults_and_key_order_match_vector_12():
    # what nats-py sends for add_stream(name=, subjects=) (vector 12 request)
    req = {"name": "NOTTL", "subjects": ["nottl.>"], "discard": "old", "discard_new_per_subject": False,
           "max_msgs_per_subject": -1, "max_msg_size": -1, "no_ack": False, "duplicate_window": 0, "sealed": False,
           "deny_delete": False, "deny_purge": False, "allow_rollup_hdrs": False, "max_age": 0}
    cfg = check_config(req, JSA)
    assert cfg == DEFAULTS
    assert list(cfg) == list(DEFAULTS)  # Go's field order
    set_static_stream_metadata(cfg)
    assert cfg["metadata"] == {"_nats.req.level": "0"}


def test_response_metadata_is_sorted_and_versioned():
    cfg = check(name="S", metadata={"zeta": "1", "alpha": "2", "_nats.ver": "forged"})
    set_static_stream_metadata(cfg)
    stream = Stream.__new__(Stream)  # only what _config_out reads
    stream.config, stream.jsa = cfg, SimpleNamespace(server=SimpleNamespace(version="2.15.1"))
    meta = stream._config_out(dynamic=True)["metadata"]
    assert list(meta) == sorted(meta)
    assert meta["alpha"] == "2" and meta["_nats.req.level"] == "0"
    assert meta["_nats.ver"] != "forged" and meta["_nats.level"].isdigit()
    assert "_nats.ver" not in cfg["metadata"]  # only responses carry the server's stamps


def test_subjects_default_to_the_name():
    assert check(name="ORDERS")["subjects"] == ["ORDERS"]


def test_duplicate_window_follows_max_age():
    assert check(name="S", max_age=1_000_000_000)["duplicate_window"] == 1_000_000_000
    assert check(name="S", max_age=3600 * 10**9)["duplicate_window"] == 120 * 10**9
    assert error_of(name="S", max_age=10**9, duplicate_window=2 * 10**9) == (
        500, 10052, "duplicates window can not be larger then max age")


def test_subject_delete_markers_turn_on_ttl_and_rollups():
    # vector 40: allow_rollup_hdrs false in the request, true in the answer; req.level 1
    cfg = check(name="EPH", subjects=["eph.>"], max_age=10**9, allow_msg_ttl=True,
                subject_delete_marker_ttl=2 * 10**9)
    assert cfg["allow_rollup_hdrs"] is True and cfg["allow_msg_ttl"] is True
    assert cfg["subject_delete_marker_ttl"] == 2 * 10**9
    assert list(cfg)[-2:] == ["allow_msg_ttl", "subject_delete_marker_ttl"]
    set_static_stream_metadata(cfg)
    assert cfg["metadata"]["_nats.req.level"] == "1"
    assert error_of(name="S", subject_delete_marker_ttl=500_000_000) == (
        500, 10052, "subject delete marker TTL must be at least 1 second")


def test_limits_normalize_to_minus_one():
    cfg = check(name="S", max_msgs=0, max_bytes=-7, max_msg_size=0, max_consumers=-3, max_msgs_per_subject=0)
    assert [cfg[k] for k in ("max_msgs", "max_bytes", "max_msg_size", "max_consumers", "max_msgs_per_subject")] == [
        -1, -1, -1, -1, -1]
    with pytest.raises(ApiError) as e:
        check_config({"name": "S", "max_msgs": -7}, JSA, pedantic=True)
    assert (e.value.err_code, e.value.description) == (10157, "pedantic mode: max_msgs must be set to -1")


@pytest.mark.parametrize("req, expected", [
    ({"name": "a.b"}, "stream name is required and can not contain '.', '*', '>', '\\', '/'"),
    ({"name": ""}, "stream name is required and can not contain '.', '*', '>', '\\', '/'"),
    ({"name": "S", "max_age": -1}, "max age can not be negative"),
    ({"name": "S", "max_age": 50_000_000}, "max age needs to be >= 100ms"),
    ({"name": "S", "deny_purge": True, "allow_rollup_hdrs": True}, "roll-ups require the purge permission"),
    ({"name": "S", "discard_new_per_subject": True}, "discard new per subject requires discard new policy to be set"),
    ({"name": "S", "discard": "new", "discard_new_per_subject": True},
     "discard new per subject requires max msgs per subject > 0"),
    ({"name": "S", "subjects": ["a.*", "a.b"]}, 'subject "a.*" overlaps with "a.b"'),
    ({"name": "S", "subjects": ["a", "a"]}, 'subject "a" overlaps with "a"'),  # the overlap check comes first
    ({"name": "S", "subjects": ["a..b"]}, "invalid subject"),
    ({"name": "S", "subjects": [">"]}, "capturing all subjects requires no-ack to be true"),
    ({"name": "S", "subjects": ["$JS.API.>"]}, "subjects that overlap with jetstream api require no-ack to be true"),
    ({"name": "S", "subjects": ["$SYS.>"]}, "subjects that overlap with system api require no-ack to be true"),
    ({"name": "S", "num_replicas": 7}, "maximum replicas is 5"),
    ({"name": "S", "sources": [{"name": "O", "consumer": {"name": "C", "deliver_subject": "d"}}]},
     "durable consumers of sources and mirrors are not supported by this server"),
])
def test_invalid_configs_10052(req, expected):
    assert error_of(**req) == (500, 10052, expected)


def test_event_subjects_may_overlap_the_api_namespace():
    assert check(name="S", subjects=["$JS.EVENT.>"])["subjects"] == ["$JS.EVENT.>"]
    assert check(name="S", subjects=["$SYS.ACCOUNT.>"])["subjects"] == ["$SYS.ACCOUNT.>"]


def test_update_rules():
    old = check(name="S", allow_msg_ttl=True, deny_delete=True)
    with pytest.raises(ApiError, match="can not change storage type"):
        update_check(old, check(name="S", allow_msg_ttl=True, deny_delete=True, storage="memory"))
    with pytest.raises(ApiError, match="message TTL status can not be disabled"):
        update_check(old, check(name="S", deny_delete=True))
    with pytest.raises(ApiError, match="can not cancel deny message deletes"):
        update_check(old, check(name="S", allow_msg_ttl=True))
    with pytest.raises(ApiError, match="to/from workqueue"):
        update_check(check(name="S"), check(name="S", retention="workqueue"))
    # limits <-> interest is allowed
    assert update_check(check(name="S"), check(name="S", retention="interest"))["retention"] == "interest"
    sealed = update_check(check(name="S", max_age=10**9), check(name="S", max_age=10**9, sealed=True))
    assert (sealed["max_age"], sealed["discard"], sealed["deny_delete"], sealed["deny_purge"]) == (0, "new", True,
                                                                                                 True)
    with pytest.raises(ApiError, match="can not unseal"):
        update_check(sealed, check(name="S"))


# ---- request decoding as Go's strict encoding/json -------------------------------------------------------------


def decode_error(body: bytes) -> str:
    with pytest.raises(ApiError) as e:
        decode_request(body, STREAM_CONFIG_SCHEMA, "StreamConfigRequest")
    assert (e.value.code, e.value.err_code) == (400, 10025)
    return e.value.description


def test_decode_errors_with_nats_server_texts():
    # texts captured from nats-server 2.15.1
    assert decode_error(b'{"name":"B","bogus":1}') == 'invalid JSON: json: unknown field "bogus"'
    assert decode_error(b'{"name":"B","retention":"bogus"}') == 'invalid JSON: can not unmarshal "\\"bogus\\""'
    assert decode_error(b'{"max_msgs":"x"}') == ("invalid JSON: json: cannot unmarshal string into Go struct field "
                                                "StreamConfigRequest.max_msgs of type int64")
    assert decode_error(b"[1]") == ("invalid JSON: json: cannot unmarshal array into Go value of type "
                                    "server.StreamConfigRequest")
    assert decode_error(b"{not json").startswith("invalid JSON: ")
    assert decode_error(b'{"max_msg_size": 4294967296}').endswith("of type int32")
    assert decode_error(b'{"max_msgs": 5.0}') == ("invalid JSON: json: cannot unmarshal number 5.0 into Go struct "
                                                 "field StreamConfigRequest.max_msgs of type int64")
    assert decode_error(b'{"consumer_limits": {"max_ack_pending": true}}').endswith(
        "StreamConfigRequest.consumer_limits.max_ack_pending of type int")


def test_decode_accepts_empty_null_and_unknown_when_lenient():
    assert decode_request(b"", STREAM_CONFIG_SCHEMA, "X") == {}
    assert decode_request(b"null", STREAM_CONFIG_SCHEMA, "X") == {}
    assert decode_request(b'{"name":"A","max_age":null}', STREAM_CONFIG_SCHEMA, "X") == {"name": "A"}
    assert decode_request(b'{"seq":3,"other":1}', {"seq": "uint64"}, "X", strict=False) == {"seq": 3}


def test_request_body_predicates():
    assert is_empty_request(b"") and is_empty_request(b"{}") and is_empty_request(b' { } ')
    assert not is_empty_request(b'{"a":1}') and not is_empty_request(b"x")
    assert is_json_object_or_array(b" {") and is_json_object_or_array(b"[]") and not is_json_object_or_array(b"1")


# ---- JSON and times as Go writes them ---------------------------------------------------------------------------


def test_dumps_escapes_like_go():
    assert dumps({"s": ["a.>", "<&>"], "n": 1}) == b'{"s":["a.\\u003e","\\u003c\\u0026\\u003e"],"n":1}'
    assert json.loads(dumps({"u": "é"})) == {"u": "é"} and "é".encode() in dumps({"u": "é"})


def test_rfc3339_trims_trailing_zeros():
    assert rfc3339(0) == "0001-01-01T00:00:00Z"
    assert rfc3339(1_795_678_387_146_943_550) == "2026-11-26T07:33:07.14694355Z"
    assert rfc3339(1_795_678_387_000_000_000) == "2026-11-26T07:33:07Z"


# ---- headers ---------------------------------------------------------------------------------------------------


HDR = b"NATS/1.0\r\nNats-Msg-Id:  m-1\r\nNats-Msg-Id-Other: x\r\nnats-ttl: 5s\r\n\r\n"


def test_hdr_get_is_case_sensitive_and_exact():
    assert hdr_get(HDR, b"\r\nNats-Msg-Id:") == b"m-1"  # leading spaces skipped
    assert hdr_get(HDR, b"\r\nNats-TTL:") is None  # names are case-sensitive on the server side
    assert hdr_get(HDR, b"\r\nNats-Msg-Id-Other:") == b"x"
    assert hdr_get(b"NATS/1.0\r\nX-Nats-Msg-Id: 1\r\n\r\n", b"\r\nNats-Msg-Id:") is None


def test_hdr_remove_and_append():
    h = hdr_remove(HDR, b"\r\nNats-Msg-Id:")
    assert h == b"NATS/1.0\r\nNats-Msg-Id-Other: x\r\nnats-ttl: 5s\r\n\r\n"
    assert hdr_remove(b"NATS/1.0\r\nA: 1\r\n\r\n", b"\r\nA:") is None
    assert hdr_append(None, b"Nats-TTL: 2\r\n") == b"NATS/1.0\r\nNats-TTL: 2\r\n\r\n"
    assert hdr_append(b"NATS/1.0\r\nA: 1\r\n\r\n", b"B: 2\r\n") == b"NATS/1.0\r\nA: 1\r\nB: 2\r\n\r\n"


# ---- durations and TTLs ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, ns", [
    ("1h30m", 5400 * 10**9), ("2.5s", 2_500_000_000), ("300ms", 300_000_000), ("0", 0), ("1us", 1000),
    ("1µs", 1000), ("-1s", -(10**9)), ("1h1m1s1ms", 3661_001_000_000),
])
def test_go_durations(text, ns):
    assert parse_duration(text) == ns


@pytest.mark.parametrize("text", ["", "1", "1x", "s", "1.s.", "--1s", "1 s"])
def test_go_durations_refused(text):
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize("value, seconds", [
    (b"2", 2), (b"5s", 5), (b"1500ms", 1), (b"1h", 3600), (b"never", TTL_NEVER), (b"NEVER", TTL_NEVER),
])
def test_msg_ttl_values(value, seconds):
    # vector 11: "2", "5s" and "never" are accepted
    assert parse_msg_ttl(value) == seconds


@pytest.mark.parametrize("value", [b"abc", b"0", b"0s", b"500ms", b"-1", b"-5s", b"1.5"])
def test_msg_ttl_invalid(value):
    with pytest.raises(ValueError):
        parse_msg_ttl(value)


# ---- subjects ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("a, b, collide", [
    ("a.b", "a.b", True), ("a.b", "a.c", False), ("a.*", "a.b", True), ("a.>", "a.b.c", True),
    ("a.*", "a.b.c", False), ("a.*.c", "a.b.*", True), ("a.*", "b.*", False), ("a.>", "*.b", True),
    ("a.b.>", "a.*", False), (">", "x", True), ("*.*", "a.>", True), ("a.*.c", "a.*.d", False),
])
def test_subjects_collide(a, b, collide):
    assert subjects_collide(a, b) is collide
    assert subjects_collide(b, a) is collide


# ---- PubAck routing: one trie walk per reply prefix -------------------------------------------------------------

_TOKENS = ["a", "b", "*", ">"]


@given(subs=st.lists(st.lists(st.sampled_from(_TOKENS), min_size=1, max_size=4), max_size=8),
       prefix=st.lists(st.sampled_from(["a", "b"]), min_size=1, max_size=3))
@settings(max_examples=300, deadline=None)
def test_match_any_last_agrees_with_match(subs, prefix):
    """Whenever Sublist.match_any_last(P) answers, it is exactly what match(P.t) finds, for every token t."""
    sl = Sublist()
    for i, toks in enumerate(subs):
        if ">" in toks[:-1]:
            continue  # not a valid subscription
        sl.insert(Subscription(object(), ".".join(toks).encode(), b"q" if i % 3 == 0 else None, b"%d" % i))
    p = ".".join(prefix).encode()
    got = sl.match_any_last(p)
    literal_lasts = {t[-1] for t in subs if t[-1] not in ("*", ">")}
    for t in ["a", "b", "zz"]:
        want = sl.match(p + b"." + t.encode())
        if got is None:
            continue
        assert {id(x) for x in got.psubs} == {id(x) for x in want.psubs}
        assert sorted(sorted(id(x) for x in g) for g in got.qsubs) == sorted(sorted(id(x) for x in g)
                                                                          for g in want.qsubs)
    if not literal_lasts:
        assert got is not None  # without literal last tokens the answer never depends on t


# ---- sync "always": one fsync per read batch, before the batch's PubAcks leave -----------------------------------


class _RecordingTransport:
    """Stands in for the socket of an in-process client: records what the hub writes, in order with fsyncs."""

    def __init__(self, events: list) -> None:
        self.events = events

    def write(self, data: bytes) -> None:
        self.events.append(("write", data))

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, key: str):
        return ("127.0.0.1", 1)

    def set_write_buffer_limits(self, high: int) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass


def test_sync_always_batch_shares_one_fsync_before_its_acks(tmp_path, monkeypatch):
    import asyncio

    import host.jetstream.filestore
    from host.client import Client
    from host.opts import Options
    from host.server import Server

    events: list = []
    real = host.jetstream.filestore._fdatasync
    monkeypatch.setattr(host.jetstream.filestore, "_fdatasync", lambda fd: (events.append(("fsync", fd)), real(fd)))

    async def body():
        opts = Options(jetstream=True, store_dir=str(tmp_path), js_sync_interval="always")
        server = Server(opts)
        server.loop = asyncio.get_running_loop()
        server.js.start()
        try:
            c = Client(server)
            c.connection_made(_RecordingTransport(events))
            c.data_received(b'CONNECT {"verbose":false,"pedantic":false,"headers":true}\r\nSUB _r.* 1\r\n')
            cfg = b'{"name":"SA","subjects":["sa.*"]}'
            c.data_received(b"PUB $JS.API.STREAM.CREATE.SA _r.0 %d\r\n%s\r\n" % (len(cfg), cfg))
            events.clear()
            c.data_received(b"".join(b"PUB sa.%d _r.%d 2\r\nhi\r\n" % (i % 3, i + 1) for i in range(20)))
            kinds = [k for k, _ in events]
            assert kinds == ["fsync", "write"]  # one fsync for the 20 messages, then all 20 PubAcks in one write
            acks = events[1][1]
            assert acks.count(b'{"stream":"SA","seq":') == 20 and b'"seq":20}' in acks
            assert server.js.accounts["$G"].streams["SA"].store.total_msgs == 20
        finally:
            server.js.stop()

    asyncio.run(body())
