"""The "forward" and "forward_settings" config keys: defaults, and one clear line naming the key for bad input
(edge/leaf/fwdconfig.py through edge/leaf/config.py), on CPython and from a real MicroPython start."""

from __future__ import annotations

import json
import subprocess

import pytest

from edge.leaf.config import ConfigError, check
from tests.edge.edgeharness import REPO, micropython

BASE = {"name": "e1"}
Q = {"subjects": ["tele.>"], "stream": "TELE"}


def _check(**extra):
    return check({**BASE, **extra})


def test_defaults():
    cfg = _check(forward=[Q])
    assert cfg["forward"] == [{"subjects": ["tele.>"], "stream": "TELE", "name": "TELE", "priority": 0, "max_age": 0,
                               "max_bytes": 262144, "segment_size": 16384, "policy": "reject", "coalesce": False}]
    assert cfg["forward_settings"] == {"rate": 0, "byte_rate": 0, "jitter_ms": 1000, "max_inflight": 32,
                                       "ack_timeout_ms": 5000, "status_ms": 30000, "flush_every": 64, "flush_ms": 50,
                                       "flush_bytes": 8192, "dedup_scan": 1000}
    assert _check()["forward"] is None


def test_small_heap_defaults_and_explicit_values_win(monkeypatch):
    # On MicroPython with a GC heap under edge.compat.SMALL_HEAP, the group commit defaults to 16 records / 2 KB.
    from edge.leaf import fwdconfig

    monkeypatch.setattr(fwdconfig, "small_heap", lambda: True)
    st = _check(forward=[Q])["forward_settings"]
    assert (st["flush_every"], st["flush_bytes"], st["flush_ms"]) == (16, 2048, 50)
    st = _check(forward=[Q], forward_settings={"flush_every": 64, "flush_bytes": 8192})["forward_settings"]
    assert (st["flush_every"], st["flush_bytes"]) == (64, 8192)


def test_values_are_converted():
    cfg = _check(forward=[{**Q, "subjects": "a.*", "name": "q1", "priority": 5, "max_age": 2.5, "policy": "drop_oldest",
                           "coalesce": True, "segment_size": 8192, "max_bytes": 16384, "domain": "cloud"}],
                 forward_settings={"rate": 10.5, "jitter": 0.25, "flush_interval": 0.01, "status": 0},
                 limits={"max_payload": 1024})
    q = cfg["forward"][0]
    assert (q["subjects"], q["name"], q["priority"], q["max_age"], q["policy"], q["coalesce"], q["domain"]) == (
        ["a.*"], "q1", 5, 3, "drop_oldest", True, "cloud")
    st = cfg["forward_settings"]
    assert (st["rate"], st["jitter_ms"], st["flush_ms"], st["status_ms"]) == (10.5, 250, 10, 0)


@pytest.mark.parametrize("extra,message", [
    ({"forward": []}, 'config: "forward": expected a non-empty list of queues, got []'),
    ({"forward": {"subjects": "a"}}, 'config: "forward": expected a non-empty list of queues'),
    ({"forward": [{**Q, "polcy": "x"}]}, 'config: unknown key "forward[0].polcy"'),
    ({"forward": [{"stream": "S"}]}, 'config: "forward[0].subjects": expected a subject or a non-empty list'),
    ({"forward": [{**Q, "subjects": ["a b"]}]}, 'config: "forward[0].subjects": expected subjects'),
    ({"forward": [{**Q, "subjects": ["$JS.API.>"]}]}, 'config: "forward[0].subjects": expected subjects'),
    ({"forward": [{**Q, "subjects": ["_INBOX.x"]}]}, 'config: "forward[0].subjects"'),
    ({"forward": [{"subjects": ["a"]}]}, 'config: "forward[0].stream": expected a stream name'),
    ({"forward": [{**Q, "stream": "A.B"}]}, 'config: "forward[0].stream": expected a stream name'),
    ({"forward": [{**Q, "name": "x/y"}]}, 'config: "forward[0].name": expected a queue name'),
    ({"forward": [Q, {**Q, "subjects": ["b"]}]}, 'config: "forward[1].name": expected a name no other queue has'),
    ({"forward": [{**Q, "policy": "drop"}]},
     'config: "forward[0].policy": expected "reject" or "drop_oldest" or "drop_newest", got "drop"'),
    ({"forward": [{**Q, "coalesce": 1}]}, 'config: "forward[0].coalesce": expected true or false, got 1'),
    ({"forward": [{**Q, "segment_size": 5000}]}, 'config: "forward[0].segment_size": expected a multiple of 4096'),
    ({"forward": [{**Q, "segment_size": 8192}]},
     'config: "forward[0].segment_size": expected at least 12288 (limits.max_payload + 2 KB, in 4 KB blocks)'),
    ({"forward": [{**Q, "max_bytes": 20000}]}, 'config: "forward[0].max_bytes": expected an integer >= 32768'),
    ({"forward": [{**Q, "max_age": -1}]}, 'config: "forward[0].max_age": expected a number >= 0, got -1'),
    ({"forward": [{**Q, "priority": True}]}, 'config: "forward[0].priority": expected an integer >= -1000'),
    ({"forward": [{**Q, "domain": "a.b"}]},
     'config: "forward[0].domain": expected a JetStream domain name (not "." "*" ">" or spaces), got "a.b"'),
    ({"forward": [{**Q, "domain": ""}]}, 'config: "forward[0].domain": expected a JetStream domain name'),
    ({"forward": [{**Q, "domain": 7}]}, 'config: "forward[0].domain": expected a JetStream domain name'),
    ({"forward": [Q], "forward_settings": {"rate": "fast"}},
     'config: "forward_settings.rate": expected a number >= 0, got "fast"'),
    ({"forward": [Q], "forward_settings": {"max_inflight": 0}},
     'config: "forward_settings.max_inflight": expected an integer >= 1, got 0'),
    ({"forward": [Q], "forward_settings": {"jiter": 1}}, 'config: unknown key "forward_settings.jiter"'),
    ({"forward": [Q], "forward_settings": []}, 'config: "forward_settings": expected an object, got []'),
    ({"forward_settings": {}}, 'config: "forward": expected a non-empty list of queues, got null'),
])
def test_bad_input_names_the_key(extra, message):
    with pytest.raises(ConfigError) as err:
        _check(**extra)
    assert str(err.value).startswith(message), str(err.value)


def test_edge_name_must_be_a_subject_token_with_forward():
    with pytest.raises(ConfigError) as err:
        check({"name": "site.1", "forward": [Q]})
    assert str(err.value).startswith('config: "name": expected a name without "."')
    assert check({"name": "site.1"})["forward"] is None  # without "forward" the name is free as before


def test_micropython_edge_exits_2_with_one_line(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"name": "e1", "forward": [{**Q, "policy": "sometimes"}]}))
    proc = subprocess.run([micropython(), "-m", "edge", str(path)], cwd=str(tmp_path), capture_output=True, text=True,
                          timeout=20, env={"MICROPYPATH": f"{REPO}:.frozen"})
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        'config: "forward[0].policy": expected "reject" or "drop_oldest" or "drop_newest", got "sometimes"']
