"""Smoke tests for `natsedge bench` (host/tools/bench.py): structure and plumbing only, never speed."""

from __future__ import annotations

import argparse
import json
import math
import random
from pathlib import Path
from typing import Any

import pytest

from host.tools import bench, bench_js, benchlib


@pytest.fixture(scope="module")
def nats_server_binary() -> str:
    try:
        return benchlib.find_nats_server()
    except benchlib.BenchError as exc:
        pytest.fail(str(exc))


def _tiny(**kw: Any) -> benchlib.BenchConfig:
    base: dict[str, Any] = dict(sizes=[128], duration=0.3, warmup=0.1, runs=1, idle_conns=200)
    base.update(kw)
    return benchlib.BenchConfig(**base)


def _summary(report: dict[str, Any], scenario: str, metric: str) -> dict[str, Any]:
    rows = [r for r in report["summary"] if r["scenario"] == scenario and r["metric"] == metric]
    assert rows, f"no summary row for {scenario}/{metric}"
    return rows[0]


def test_msg_counter_handles_arbitrary_chunking() -> None:
    rng = random.Random(7)
    pool = benchlib.payload_pool(rng, 4096)
    for _ in range(200):
        stream = bytearray()
        msgs = pings = 0
        for _ in range(rng.randrange(1, 120)):
            r = rng.random()
            if r < 0.05:  # async INFO: its JSON may contain upper-case M that must not count
                stream += b'INFO {"server_id":"NMXM","server_name":"MAIN","nested":{"M":1}}\r\n'
            elif r < 0.12:
                stream += b"PING\r\n"
                pings += 1
            elif r < 0.15:
                stream += b"PONG\r\n"
            else:
                n = rng.randrange(0, 40)
                reply = b" bench.r.p0b1.0000000a.%x" % rng.randrange(999) if rng.random() < 0.3 else b""
                stream += b"MSG bench.s.%d %d%s %d\r\n" % (rng.randrange(8), 1, reply, n) + pool[:n] + b"\r\n"
                msgs += 1
        counter = benchlib.MsgCounter()
        seen_pings = pos = 0
        buf = bytearray(64)
        while pos < len(stream):
            piece = stream[pos : pos + rng.randrange(1, 40)]
            pos += len(piece)
            buf[:] = piece + b"M" * (64 - len(piece))  # stale bytes past n must be ignored
            seen_pings += counter.feed(buf, len(piece))
        assert counter.count == msgs
        assert seen_pings == pings
    with pytest.raises(benchlib.BenchError, match="Slow Consumer"):
        data = bytearray(b"MSG a 1 1\r\nx\r\n-ERR 'Slow Consumer Detected'\r\n")
        benchlib.MsgCounter().feed(data, len(data))


def test_load_mix_is_varied_and_protocol_safe() -> None:
    epoch = bytearray(b"00000000")
    batches = benchlib.build_batches(128, benchlib.LoadMix(batch_bytes=64 * 1024), 1, "p0b", epoch)
    first = b"".join(batches[0].parts)
    epoch[:] = b"00000001"
    second = b"".join(batches[0].parts)
    assert first != second  # reply subjects change on every pass
    frames = first.split(b"PUB ")[1:]
    subjects = {f.split(b" ")[0] for f in frames}
    sizes = {int(f.split(b"\r\n")[0].split(b" ")[-1]) for f in frames}
    replies = [f for f in frames if len(f.split(b"\r\n")[0].split(b" ")) == 3]
    assert len(subjects) == 8 and len(sizes) > 10
    assert 0.1 < len(replies) / len(frames) < 0.4
    assert len({f.split(b" ")[1] for f in replies}) == len(replies)  # each reply subject is unique
    body = first.replace(b"PUB ", b"").replace(b"PING\r\n", b"")
    assert not any(c in body for c in (b"M", b"P", b"-", b"{"))  # payloads can never look like protocol
    assert batches[0].msgs == len(frames) and batches[0].nbytes == len(first) - len(b"PING\r\n")


def test_bench_suite_against_nats_server(nats_server_binary: str) -> None:
    cfg = _tiny()
    cmd = benchlib.default_nats_cmd(nats_server_binary, jetstream=True)
    with benchlib.ServerProcess("nats-server", cmd).start() as srv:
        report = bench.run_suite(srv.url, cfg, server_pid=srv.pid, label="nats-server")
    assert [r["error"] for r in report["results"] if r["error"]] == []
    assert {r["scenario"] for r in report["results"]} == set(bench.SCENARIOS) - set(bench.COMPARE_ONLY)
    for scen in ("pub", "pubsub1", "pubsub4", *bench.JS_SCENARIOS):
        headline = bench.METRICS[scen][0][0]
        assert _summary(report, scen, headline)["median"]["nats-server"] > 0
    for r in report["results"]:
        m = r["metrics"]
        if r["scenario"] == "pubsub4":
            assert len(m["per_subscriber_msgs_per_s"]) == 4 and min(m["per_subscriber_msgs_per_s"]) > 0
        if r["scenario"] == "reqrep":
            assert 0 < m["p50_us"] <= m["p99_us"] and m["samples"] > 0
        if r["scenario"] == "idle":
            assert m["held"] == 200 and m["all_held"] and math.isfinite(m["kib_per_conn"])
    assert "nats-server" in bench.format_table(report)


def test_compare_mode_with_hub_cmd_override(nats_server_binary: str) -> None:
    # both sides are nats-server here; the real --compare runs the hub as the second server
    cfg = _tiny(scenarios=["pubsub1", "reqrep"], sizes=[16], duration=0.2)
    cmd = benchlib.default_nats_cmd(nats_server_binary)
    report = bench.run_compare(cfg, cmd, cmd)
    assert [r["error"] for r in report["results"] if r["error"]] == []
    assert {r["server"] for r in report["results"]} == {"nats-server", "hub"}
    row = _summary(report, "reqrep", "p50_us")
    assert row["ratio"] is not None and row["ratio"] > 0
    assert _summary(report, "pubsub1", "msgs_per_s")["ratio"] > 0
    assert "hub/nats" in bench.format_table(report)


def test_cli_url_mode_writes_json(nats_server_binary: str, tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    out = tmp_path / "bench.json"
    with benchlib.ServerProcess("nats-server", benchlib.default_nats_cmd(nats_server_binary)).start() as srv:
        argv = ["--url", srv.url, "--scenarios", "pub,idle", "--sizes", "16", "--duration", "0.2"]
        argv += ["--warmup", "0.1", "--runs", "1", "--json", str(out), "-q"]
        assert bench.run(parser.parse_args(argv)) == 0  # idle is skipped without --server-pid
    report = json.loads(out.read_text())
    assert [r["scenario"] for r in report["results"]] == ["pub"]
    assert report["results"][0]["metrics"]["msgs_per_s"] > 0


def test_self_check_runs() -> None:
    report = bench.run_self_check(_tiny(sizes=[16], duration=0.2))
    assert [r["error"] for r in report["results"] if r["error"]] == []
    for scen in ("pub", "pubsub1"):
        assert _summary(report, scen, "msgs_per_s")["median"]["null-server"] > 0


def test_server_that_fails_to_start_is_reported() -> None:
    with pytest.raises(benchlib.BenchError, match="exited with status"):
        benchlib.ServerProcess("broken", ["/bin/sh", "-c", "echo boom {port}; exit 3"]).start(timeout=5)


def test_js_sourcing_scenarios_compare_both_servers(nats_server_binary: str) -> None:
    lag, catchup = ("js_source_lag", "js_leaf_source_lag"), ("js_source_catchup", "js_leaf_source_catchup")
    cfg = _tiny(scenarios=[*lag, *catchup])
    report = bench.run_compare(
        cfg, benchlib.default_nats_cmd(nats_server_binary, True), benchlib.default_hub_cmd(True)
    )
    assert [r["error"] for r in report["results"] if r["error"]] == []
    ran = {(r["server"], r["scenario"]) for r in report["results"]}
    assert ran == {(s, c) for s in ("nats-server", "hub") for c in (*lag, *catchup)}
    for r in report["results"]:
        m = r["metrics"]
        if r["scenario"] in lag:
            assert m["samples"] > 0 and 0 < m["p50_us"] <= m["p90_us"] <= m["p99_us"]
        else:
            assert m["messages"] == bench_js.CATCHUP_MSGS and m["msgs_per_s"] > 0
    for scen in lag:
        for metric in ("p50_us", "p90_us", "p99_us"):
            assert _summary(report, scen, metric)["ratio"] > 0
    for scen in catchup:
        assert _summary(report, scen, "msgs_per_s")["ratio"] > 0
    assert "js_leaf_source_catchup" in bench.format_table(report)
