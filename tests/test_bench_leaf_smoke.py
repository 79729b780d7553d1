"""Smoke tests for the leaf scenarios of `natsedge bench` (host/tools/bench_leaf.py): plumbing only, never speed."""

from __future__ import annotations

import pytest

from host.tools import bench, bench_leaf, benchlib


def test_leaf_batches_are_lmsg_frames_of_the_core_mix() -> None:
    epoch = bytearray(b"00000000")
    batch = benchlib.build_batches(128, benchlib.LoadMix(batch_bytes=32 * 1024), 1, "l0b", epoch, b"LMSG")[0]
    data = b"".join(batch.parts)
    assert b"PUB " not in data and data.count(b"LMSG ") == batch.msgs
    assert batch.nbytes == len(data) - len(b"PING\r\n")
    frames = data.split(b"LMSG ")[1:]
    assert len({f.split(b" ")[0] for f in frames}) == 8  # bench.s.0 .. bench.s.7
    assert any(len(f.split(b"\r\n")[0].split(b" ")) == 3 for f in frames)  # some carry a reply subject
    epoch[:] = b"00000001"
    assert b"".join(batch.parts) != data  # and those change on every pass


def test_leaf_connect_frame_is_a_leaf_not_a_client() -> None:
    frame = bench_leaf.leaf_connect_frame("bench-leaf-0")
    assert frame.startswith(b"CONNECT {") and frame.endswith(b"}\r\n") and b'"lang"' not in frame


def test_leaf_scenarios_against_nats_server_and_hub() -> None:
    try:
        binary = bench.find_nats_server()
    except bench.BenchError as exc:
        pytest.fail(str(exc))
    cfg = bench.BenchConfig(scenarios=["leaf1", "leaf4"], sizes=[128], duration=0.3, warmup=0.1, runs=1)
    report = bench.run_compare(cfg, bench.default_nats_cmd(binary), bench.default_hub_cmd())
    assert [r["error"] for r in report["results"] if r["error"]] == []
    assert {(r["server"], r["scenario"]) for r in report["results"]} == {
        (s, scen) for s in ("nats-server", "hub") for scen in ("leaf1", "leaf4")
    }
    for r in report["results"]:
        m = r["metrics"]
        assert m["msgs_per_s"] > 0 and m["offered_msgs_per_s"] > 0
        assert len(m["per_subscriber_msgs_per_s"]) == (4 if r["scenario"] == "leaf4" else 1)
    for row in report["summary"]:
        assert row["median"]["nats-server"] > 0 and row["median"]["hub"] > 0 and row["ratio"] > 0
    assert "leaf4" in bench.format_table(report)
