"""host/jetstream/consumer.py, the parts that need no stream: ack subjects, pull requests, NAK delays, durations and
times, and consumer config decoding/defaults/validation with nats-server 2.15.1's texts (captured live with
`nats-server -js`, see the expected strings below, and vectors/js/19-27, 35-37, 70)."""

from __future__ import annotations

import json

import pytest

from host.gotime import NS, format_duration, parse_duration, parse_time, time_text
from host.headers import status_header
from host.jetstream import gojson
from host.jetstream.consumer import headers_only, parse_ack_subject, parse_nak_delay, parse_next_request
from host.jetstream.consumer_config import (
    CONFIG_SCHEMA,
    apply_defaults,
    check_config,
    config_from,
    config_json,
    is_subset,
    parse_create_request,
    subjects_overlap,
    update_error,
)
from host.jetstream.errors import ApiError
from host.jetstream.gojson import GoJSONError, loads
from host.jetstream.stream_config import is_valid_asset_name
from host.jetstream.versioning import set_static_consumer_metadata


def parse_config(raw: dict) -> dict:
    """A consumer config as recovery reads it from meta.json."""
    return config_from(gojson.decode(raw, CONFIG_SCHEMA, "ConsumerConfig"))


STREAM = {"name": "S", "subjects": ["s.>"], "retention": "limits", "num_replicas": 1}


# ---- ack subjects ------------------------------------------------------------------------------------------------


def test_ack_subject_v1_from_vector_22():
    got = parse_ack_subject("$JS.ACK.ORDERS.C1.1.1.1.1795678386338283717.10")
    assert got == ("ORDERS", "C1", 1, 1, 1, 1795678386338283717, 10)
    # a redelivery (vector 23): delivered count 2, stream seq 3, consumer seq 6
    assert parse_ack_subject("$JS.ACK.ORDERS.C1.2.3.6.1795678386340093424.6")[2:5] == (2, 3, 6)


def test_ack_subject_v2_from_vector_70():
    got = parse_ack_subject("$JS.ACK.dom1.szMpdrwD.S.D.1.1.1.1795678761785004248.0")
    assert got == ("S", "D", 1, 1, 1, 1795678761785004248, 0)
    # v2 allows extra tokens after the 11th
    assert parse_ack_subject("$JS.ACK._.szMpdrwD.S.D.2.5.7.1.0.token")[:5] == ("S", "D", 2, 5, 7)


@pytest.mark.parametrize("subject", [
    "$JS.ACK.S.C.1.1.1.1",  # 8 tokens
    "$JS.ACK._.h.S.C.1.1.1.1",  # 10 tokens: neither layout
    "$JS.ACK.S.C.1.x.1.1.0",  # not a number
    "$JS.ACK.S.C.1.-1.1.1.0",
    "$JS.NAK.S.C.1.1.1.1.0",
    "",
])
def test_ack_subject_rejects_bad_layouts(subject):
    assert parse_ack_subject(subject) is None


def test_ack_subject_with_leaf_subject_suffix():
    # a delivery that crossed a leaf link carries `@<subject>` after the reply (nats-server remaps it there)
    assert parse_ack_subject("$JS.ACK.S.C.1.4.2.99.0@orders.new") == ("S", "C", 1, 4, 2, 99, 0)


# ---- pull requests -----------------------------------------------------------------------------------------------


def test_next_request_forms():
    r = parse_next_request(b"")
    assert (r.batch, r.expires, r.no_wait, r.max_bytes, r.heartbeat) == (1, 0, False, 0, 0)
    assert parse_next_request(b"  7 ").batch == 7
    assert parse_next_request(b"garbage").batch == 1  # nats-server treats anything else as batch 1
    # what nats-py's fetch(2) sends (vector 25)
    r = parse_next_request(b'{"batch": 2, "expires": 1999900000, "no_wait": true}')
    assert (r.batch, r.expires, r.no_wait) == (2, 1999900000, True)
    r = parse_next_request(b'{"batch":10,"max_bytes":40,"expires":500000000}')
    assert (r.batch, r.max_bytes, r.expires) == (10, 40, 500000000)
    r = parse_next_request(b'{"batch": 1, "expires": 2500000000, "idle_heartbeat": 1000000000}')
    assert r.heartbeat == 1000000000
    # unknown keys are ignored (the pull request is not decoded strictly)
    assert parse_next_request(b'{"batch":3,"whatever":1}').batch == 3
    # a JSON request without batch asks for nothing specific: batch 0 (one message, as nats-server)
    assert parse_next_request(b'{"expires":1000}').batch == 0


def test_next_request_priority_keys():
    # an empty or numeric body has no priority group at all (nats-server: a nil PriorityGroup skips the checks)
    assert parse_next_request(b"").group is None
    assert parse_next_request(b"3").group is None
    # any JSON body has one, empty when no priority key is set ("Priority Group missing" on a grouped consumer)
    assert parse_next_request(b'{"batch":1}').group == {}
    r = parse_next_request(b'{"batch":1,"group":"jobs","min_pending":10,"min_ack_pending":0,"id":"P","priority":2}')
    assert r.group == {"group": "jobs", "min_pending": 10, "id": "P", "priority": 2}


@pytest.mark.parametrize("body,text", [
    (b'{"batch":1,"idle_heartbeat":1000}', "heartbeat value too large"),
    (b'{"batch":1,"expires":1000,"idle_heartbeat":600}', "heartbeat value too large"),
    (b'{"batch":"x"}', "json: cannot unmarshal string into Go struct field JSApiConsumerGetNextRequest.batch "
                       "of type int"),
    (b'{"expires":1.5}', "json: cannot unmarshal number 1.5 into Go struct field "
                         "JSApiConsumerGetNextRequest.expires of type time.Duration"),
    (b'{"batch":', "unexpected end of JSON input"),
])
def test_next_request_errors(body, text):
    with pytest.raises(ValueError) as e:
        parse_next_request(body)
    assert str(e.value) == text


def test_nak_delay_forms():
    assert parse_nak_delay(b' {"delay": 2000000000}') == 2 * NS  # nats-py nak(delay=2)
    assert parse_nak_delay(b" 1.5s") == 1_500_000_000
    assert parse_nak_delay(b" 1m30s") == 90 * NS
    assert parse_nak_delay(b"") is None
    assert parse_nak_delay(b" soon") is None  # a plain NAK, as nats-server treats an unreadable delay
    assert parse_nak_delay(b' {"delay":"x"}') is None
    # out of time.Duration's range: a plain NAK (a stored delivery time must stay encodable)
    assert parse_nak_delay(b' {"delay": 1000000000000000000000000}') is None
    assert parse_nak_delay(b" 99999999999h") is None
    assert parse_nak_delay(b' {"delay": -1}') == -1


# ---- durations and times -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ns,text", [
    (0, "0s"), (1, "1ns"), (1500, "1.5µs"), (100 * 1_000_000, "100ms"), (NS, "1s"), (1_500_000_000, "1.5s"),
    (60 * NS, "1m0s"), (90 * NS, "1m30s"), (3600 * NS, "1h0m0s"), (79200 * NS, "22h0m0s"), (-2 * NS, "-2s"),
])
def test_go_duration(ns, text):
    assert format_duration(ns) == text
    assert parse_duration(text) == ns


def test_times_as_go_writes_them():
    assert time_text(None) == "0001-01-01T00:00:00Z"
    assert time_text(0) == "1970-01-01T00:00:00Z"  # not Go's zero time: a resume by an epoch time keeps it
    assert time_text(parse_time("2099-01-01T00:00:00.5Z")) == "2099-01-01T00:00:00.5Z"
    # an offset is turned into UTC (vector: pause_until 2099-01-01T00:00:00+02:00)
    assert time_text(parse_time("2099-01-01T00:00:00+02:00")) == "2098-12-31T22:00:00Z"
    assert parse_time("0001-01-01T00:00:00Z") is None
    assert parse_time("1960-01-01T00:00:00Z") < 0
    with pytest.raises(ValueError) as e:
        parse_time("bad")
    assert str(e.value) == 'parsing time "bad" as "2006-01-02T15:04:05Z07:00": cannot parse "bad" as "2006"'


# ---- subjects and names ---------------------------------------------------------------------------------------------


def test_subject_relations():
    assert is_subset("a.b", "a.*") and is_subset("a.b.c", "a.>") and is_subset("a.*", "a.>")
    assert not is_subset("a.>", "a.*") and not is_subset("a", "a.>") and not is_subset("b.x", "a.*")
    assert subjects_overlap("a.*", "*.b") and subjects_overlap("a.>", "a.b.c") and not subjects_overlap("a.b", "a.c")
    assert not subjects_overlap("a.*", "a.b.c")
    assert is_valid_asset_name("C1")
    assert not any(is_valid_asset_name(n) for n in ("a.b", "a b", "a/b"))
    assert not is_valid_asset_name("")


# ---- config decoding, defaults and checks ---------------------------------------------------------------------------


def decode(cfg: dict) -> dict:
    return parse_config(cfg)


def normalized(raw: dict, stream: dict | None = None, durable_subject: str = "") -> dict:
    cfg = parse_config(raw)
    if durable_subject:
        cfg["name"] = durable_subject
    set_static_consumer_metadata(cfg)
    apply_defaults(cfg, stream or STREAM, False)
    check_config(cfg, stream or STREAM)
    return cfg


def test_defaults_durable_pull_as_vector_19():
    # vector 19: C1 created by nats-py's add_consumer(durable_name=...)
    raw = {"durable_name": "C1", "deliver_policy": "all", "ack_policy": "explicit", "ack_wait": 30000000000,
           "max_deliver": 5, "filter_subject": "orders.>", "replay_policy": "instant", "idle_heartbeat": 0,
           "inactive_threshold": 0}
    got = config_json(normalized(raw, durable_subject="C1"))
    assert got == {"durable_name": "C1", "name": "C1", "deliver_policy": "all", "ack_policy": "explicit",
                   "ack_wait": 30000000000, "max_deliver": 5, "filter_subject": "orders.>",
                   "replay_policy": "instant", "max_waiting": 512, "max_ack_pending": 1000, "num_replicas": 0,
                   "metadata": {"_nats.req.level": "0"}}


def test_defaults_ack_none_and_kv_push_consumer():
    # ack none: no ack_wait, no max_ack_pending (vector 19, the generated ephemeral)
    got = config_json(normalized({"ack_policy": "none", "inactive_threshold": 10000000000}))
    assert got == {"deliver_policy": "all", "ack_policy": "none", "max_deliver": -1, "replay_policy": "instant",
                   "max_waiting": 512, "inactive_threshold": 10000000000, "num_replicas": 0,
                   "metadata": {"_nats.req.level": "0"}}
    # the consumer nats-py's kv.keys() asks for (vector 35): push, so no max_waiting; headers_only kept
    raw = {"deliver_policy": "last_per_subject", "ack_policy": "none", "ack_wait": 79200000000000, "max_deliver": 1,
           "filter_subject": "$KV.cfg.>", "replay_policy": "instant", "flow_control": True,
           "idle_heartbeat": 5000000000, "headers_only": True, "deliver_subject": "_INBOX.x",
           "inactive_threshold": 300000000000, "num_replicas": 1, "mem_storage": True}
    kv = {"name": "KV_cfg", "subjects": ["$KV.cfg.>"], "retention": "limits", "num_replicas": 1}
    got = config_json(normalized(raw, kv))
    assert list(got) == ["deliver_policy", "ack_policy", "ack_wait", "max_deliver", "filter_subject",
                         "replay_policy", "flow_control", "headers_only", "deliver_subject", "idle_heartbeat",
                         "inactive_threshold", "num_replicas", "mem_storage", "metadata"]
    assert got["ack_wait"] == 79200000000000 and got["num_replicas"] == 1 and got["mem_storage"] is True


def test_backoff_sets_ack_wait_and_pause_sets_required_level():
    cfg = normalized({"durable_name": "B", "ack_policy": "explicit", "backoff": [NS, 2 * NS], "max_deliver": 3})
    assert cfg["ack_wait"] == NS
    cfg = parse_config({"durable_name": "P", "pause_until": "2099-01-01T00:00:00Z"})
    set_static_consumer_metadata(cfg)
    assert cfg["metadata"] == {"_nats.req.level": "1"}
    assert config_json(cfg)["pause_until"] == "2099-01-01T00:00:00Z"


def test_metadata_dynamic_keys_dropped_and_sorted():
    cfg = parse_config({"metadata": {"zz": "1", "aa": "2", "_nats.ver": "9.9.9", "_nats.level": "7"}})
    set_static_consumer_metadata(cfg)
    assert list(config_json(cfg)["metadata"]) == ["_nats.req.level", "aa", "zz"]


# Texts captured from nats-server 2.15.1 for the same requests (tmp probe against `nats-server -js`).
DECODE_ERRORS = [
    ({"name": "Q", "ack_policy": "bogus"}, 'invalid JSON: can not unmarshal "\\"bogus\\""'),
    ({"name": "Q", "ack_wait": "x"}, "invalid JSON: json: cannot unmarshal string into Go struct field "
                                     "CreateConsumerRequest.config.ack_wait of type time.Duration"),
    ({"name": "Q", "ack_wait": 1.5}, "invalid JSON: json: cannot unmarshal number 1.5 into Go struct field "
                                     "CreateConsumerRequest.config.ack_wait of type time.Duration"),
    ({"name": "Q", "opt_start_seq": -1}, "invalid JSON: json: cannot unmarshal number -1 into Go struct field "
                                         "CreateConsumerRequest.config.opt_start_seq of type uint64"),
    ({"name": 3}, "invalid JSON: json: cannot unmarshal number into Go struct field "
                  "CreateConsumerRequest.config.name of type string"),
    ({"name": "Q", "flow_control": 1}, "invalid JSON: json: cannot unmarshal number into Go struct field "
                                       "CreateConsumerRequest.config.flow_control of type bool"),
    ({"name": "Q", "opt_start_time": "bad"}, 'invalid JSON: parsing time "bad" as "2006-01-02T15:04:05Z07:00": '
                                             'cannot parse "bad" as "2006"'),
    ({"name": "P", "max_batch": -5, "unknown_field": 1}, 'invalid JSON: json: unknown field "unknown_field"'),
]


@pytest.mark.parametrize("raw,text", DECODE_ERRORS)
def test_decode_errors(raw, text):
    with pytest.raises(ApiError) as e:
        parse_create_request(json.dumps({"stream_name": "S", "config": raw}).encode())
    assert (e.value.code, e.value.err_code, e.value.description) == (400, 10025, text)


def test_syntax_errors_as_go_writes_them():
    with pytest.raises(GoJSONError) as e:
        loads(b"{bad")
    assert str(e.value) == "invalid character 'b' looking for beginning of object key string at offset 2"
    with pytest.raises(GoJSONError) as e:
        loads(b'{"a":')
    assert str(e.value) == "unexpected end of JSON input"
    assert loads(b"  ") is None


CHECK_ERRORS = [
    ({"name": "Q", "deliver_policy": "by_start_sequence"}, STREAM,
     (400, 10094, "consumer delivery policy is deliver by start sequence, but optional start sequence is not set")),
    ({"name": "Q", "deliver_policy": "all", "opt_start_seq": 4}, STREAM,
     (400, 10094, "consumer delivery policy is deliver all, but optional start sequence is also set")),
    ({"name": "Q", "deliver_policy": "last_per_subject"}, STREAM,
     (400, 10094, "consumer delivery policy is deliver last per subject, but optional filter subject is not set")),
    ({"name": "Q", "flow_control": True, "deliver_subject": "d"}, STREAM,
     (400, 10108, "consumer with flow control also needs heartbeats")),
    ({"name": "a.b"}, STREAM, (500, 10052, "consumer name can not contain '.', '*', '>', '\\', '/'")),
    ({"name": "Q", "filter_subject": "a..b"}, STREAM, (500, 10052, "invalid subject")),
    ({"name": "Q", "filter_subjects": ["a.>", "a.b"]}, STREAM, (400, 10138, "consumer subject filters cannot overlap")),
    ({"name": "Q", "filter_subjects": ["a", ""]}, STREAM,
     (400, 10139, "consumer filter in FilterSubjects cannot be empty")),
    ({"name": "Q", "filter_subject": "a", "filter_subjects": ["b"]}, STREAM,
     (400, 10136, "consumer cannot have both FilterSubject and FilterSubjects specified")),
    ({"name": "Q", "sample_freq": "x"}, STREAM,
     (400, 10095, 'failed to parse consumer sampling configuration: strconv.Atoi: parsing "x": invalid syntax')),
    ({"name": "Q", "deliver_subject": "s.x"}, STREAM, (400, 10081, "consumer deliver subject forms a cycle")),
    ({"name": "Q", "deliver_subject": "d.*"}, STREAM, (400, 10079, "consumer deliver subject has wildcards")),
    ({"name": "P", "ack_policy": "explicit", "deliver_subject": "dd", "idle_heartbeat": 50000000}, STREAM,
     (400, 10083, "consumer idle heartbeat needs to be >= 100ms")),
    ({"name": "P", "deliver_subject": "dd", "max_ack_pending": 5}, STREAM,
     (400, 10082, "consumer requires ack policy for max ack pending")),
    ({"name": "P", "idle_heartbeat": NS}, STREAM,
     (400, 10088, "consumer idle heartbeat requires a push based consumer")),
    ({"name": "P", "max_expires": 10}, STREAM, (400, 10115, "consumer max request expires needs to be >= 1ms")),
    ({"name": "P", "ack_policy": "explicit", "backoff": [NS, NS, NS], "max_deliver": 2}, STREAM,
     (400, 10116, "max deliver is required to be > length of backoff values")),
    ({"name": "P", "num_replicas": 3}, STREAM, (400, 10126, "consumer config replica count exceeds parent stream")),
    ({"name": "P", "durable_name": "Q"}, STREAM,
     (400, 10132, "Consumer Durable and Name have to be equal if both are provided")),
    ({"name": "P"}, {**STREAM, "retention": "workqueue"},
     (400, 10084, "consumer in pull mode requires explicit ack policy on workqueue stream")),
    ({"name": "P", "ack_policy": "explicit", "max_ack_pending": 50},
     {**STREAM, "consumer_limits": {"max_ack_pending": 10}},
     (400, 10121, "consumer max ack pending exceeds system limit of 10")),
]


@pytest.mark.parametrize("raw,stream,want", CHECK_ERRORS)
def test_check_errors(raw, stream, want):
    cfg = parse_config(raw)
    set_static_consumer_metadata(cfg)
    with pytest.raises(ApiError) as e:
        apply_defaults(cfg, stream, False)
        check_config(cfg, stream)
    assert (e.value.code, e.value.err_code, e.value.description) == want


def test_pedantic_refuses_changed_values():
    cfg = parse_config({"name": "P", "max_deliver": -5})
    with pytest.raises(ApiError) as e:
        apply_defaults(cfg, STREAM, True)
    assert (e.value.err_code, e.value.description) == (10157, "pedantic mode: max_deliver must be set to -1")


def test_stream_consumer_limits_are_defaults():
    stream = {**STREAM, "consumer_limits": {"max_ack_pending": 20, "inactive_threshold": 7 * NS}}
    cfg = normalized({"name": "E", "ack_policy": "explicit"}, stream)
    assert cfg["max_ack_pending"] == 20 and cfg["inactive_threshold"] == 7 * NS


def test_update_rules_as_nats_server():
    old = normalized({"durable_name": "Q", "ack_policy": "explicit"}, durable_subject="Q")
    same = normalized({"durable_name": "Q", "ack_policy": "explicit"}, durable_subject="Q")
    assert update_error(old, same, False) is None
    new = normalized({"durable_name": "Q", "ack_policy": "all"}, durable_subject="Q")
    err = update_error(old, new, False)
    assert (err.code, err.err_code, err.description) == (500, 10012, "ack policy can not be updated")
    new = normalized({"durable_name": "Q", "ack_policy": "explicit", "deliver_policy": "new"}, durable_subject="Q")
    assert update_error(old, new, False).description == "deliver policy can not be updated"
    new = normalized({"durable_name": "Q", "ack_policy": "explicit", "max_deliver": 3, "description": "d"},
                     durable_subject="Q")
    assert update_error(old, new, False) is None
    push = normalized({"durable_name": "Q", "ack_policy": "explicit", "deliver_subject": "d1"}, durable_subject="Q")
    assert update_error(old, push, False).description == "can not update pull consumer to push based"
    moved = normalized({"durable_name": "Q", "ack_policy": "explicit", "deliver_subject": "d2"}, durable_subject="Q")
    assert update_error(push, moved, False) is None
    err = update_error(push, moved, True)  # the old deliver subject is still in use
    assert (err.err_code, err.description) == (10013, "consumer name already in use")


# ---- status messages and headers_only --------------------------------------------------------------------------------


def test_status_headers_byte_exact_as_vector_24():
    assert status_header(404, "No Messages") == b"NATS/1.0 404 No Messages\r\n\r\n"
    hdr = status_header(408, "Request Timeout", ("Nats-Pending-Messages", 1), ("Nats-Pending-Bytes", 0))
    assert hdr == b"NATS/1.0 408 Request Timeout\r\nNats-Pending-Messages: 1\r\nNats-Pending-Bytes: 0\r\n\r\n"
    assert len(hdr) == 81  # HMSG <inbox> 12 81 81
    hb = status_header(100, "Idle Heartbeat", ("Nats-Last-Consumer", 0), ("Nats-Last-Stream", 15))
    assert len(hb) == 76


def test_headers_only_as_vector_35():
    hdr = headers_only(b"NATS/1.0\r\nNats-Expected-Last-Subject-Sequence: 2\r\n\r\n", b"blue")
    assert hdr == b"NATS/1.0\r\nNats-Expected-Last-Subject-Sequence: 2\r\nNats-Msg-Size: 4\r\n\r\n"
    assert len(hdr) == 70  # HMSG $KV.cfg.color 17 $JS.ACK... 70 70
    assert headers_only(None, b"") == b"NATS/1.0\r\nNats-Msg-Size: 0\r\n\r\n"
