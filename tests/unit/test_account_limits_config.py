"""An account's `limits { ... }` and `jetstream { ... }` blocks (nats-reference more/README.md §E1, §E2): every key and
alias lands in AccountLimits, unset values stay -1, and a bad key or value is one error line naming it."""

from __future__ import annotations

import pytest

from host.opts import AccountLimits, OptionsError, load_config


def limits_of(tmp_path, body: str) -> AccountLimits:
    p = tmp_path / "hub.conf"
    p.write_text("accounts { A: { users: [{user: a, password: a}], " + body + " } }\n")
    return load_config(str(p)).accounts["A"].limits


@pytest.mark.parametrize("key, field", [
    ("max_connections", "max_connections"), ("max_conn", "max_connections"),
    ("max_subscriptions", "max_subscriptions"), ("max_subs", "max_subscriptions"),
    ("max_payload", "max_payload"), ("max_pay", "max_payload"),
    ("max_leafnodes", "max_leafnodes"), ("MAX_LEAFS", "max_leafnodes"),
])
def test_core_limit_keys(tmp_path, key, field):
    lim = limits_of(tmp_path, f"limits: {{ {key}: 7 }}")
    assert getattr(lim, field) == 7
    assert [f for f, v in vars(lim).items() if v != getattr(AccountLimits(), f)] == [field]


@pytest.mark.parametrize("keys, field", [
    (("max_memory", "max_mem", "mem", "memory"), "js_max_memory"),
    (("max_store", "max_file", "max_disk", "store", "disk"), "js_max_storage"),
    (("max_streams", "streams"), "js_max_streams"),
    (("max_consumers", "consumers"), "js_max_consumers"),
    (("mem_max_stream_bytes", "memory_max_stream_bytes"), "js_memory_max_stream_bytes"),
    (("disk_max_stream_bytes", "store_max_stream_bytes"), "js_storage_max_stream_bytes"),
    (("max_ack_pending",), "js_max_ack_pending"),
])
def test_jetstream_limit_aliases(tmp_path, keys, field):
    for key in keys:
        lim = limits_of(tmp_path, f"jetstream: {{ {key}: 2KB }}")
        assert getattr(lim, field) == 2048, key
        assert [f for f, v in vars(lim).items() if v != getattr(AccountLimits(), f)] == [field]


@pytest.mark.parametrize("key", ["max_bytes_required", "max_stream_bytes", "max_bytes"])
def test_max_bytes_required_aliases(tmp_path, key):
    assert limits_of(tmp_path, f"jetstream: {{ {key}: true }}").js_max_bytes_required is True


def test_jetstream_map_enables_with_all_limits_unset(tmp_path):
    p = tmp_path / "hub.conf"
    p.write_text("accounts { A: { jetstream: { cluster_traffic: owner } }, B: { jetstream: disabled } }\n")
    o = load_config(str(p))
    assert o.accounts["A"].jetstream is True and o.accounts["A"].limits == AccountLimits()
    assert o.accounts["B"].jetstream is False


@pytest.mark.parametrize("body, error", [
    ("limits: { max_foo: 1 }", 'Unknown field "max_foo" parsing account limits'),
    ("limits: { max_conn: many }", 'field "max_conn": expected an integer'),
    ("limits: 5", 'field "limits": expected a map'),
    ("jetstream: { max_mem: lots }", 'Expected a parseable size for "max_mem"'),
    ("jetstream: { max_bytes: 5 }", 'Expected a parseable bool for "max_bytes"'),
    ("jetstream: { cluster_traffic: nobody }", "Expected 'system' or 'owner' string value"),
    ("jetstream: { streamz: 1 }", 'unknown field "streamz"'),
    ("jetstream: 5", "Expected map, bool or string to define JetStream"),
])
def test_bad_values_are_one_line_naming_the_key(tmp_path, body, error):
    with pytest.raises(OptionsError) as e:
        limits_of(tmp_path, body)
    assert error in str(e.value) and "\n" not in str(e.value)
    assert str(e.value).startswith(str(tmp_path / "hub.conf") + ":1:")
