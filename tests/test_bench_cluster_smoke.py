"""Smoke tests for the route and gateway scenarios of `natsedge bench` (host/tools/bench_cluster.py): plumbing only,
never speed."""

from __future__ import annotations

import os
import re
import socket
import time

import pytest

from host.tools import bench, bench_cluster, benchlib


@pytest.fixture(scope="module")
def nats_server_binary() -> str:
    try:
        return benchlib.find_nats_server()
    except benchlib.BenchError as exc:
        pytest.fail(str(exc))


def _gone(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def test_cluster_conf_node2_routes_to_node1() -> None:
    node1 = bench_cluster.cluster_conf("bench-hub-node1", 6222, [])
    node2 = bench_cluster.cluster_conf("bench-hub-node2", 6223, [6222])
    assert "listen: 127.0.0.1:6222" in node1 and "routes" not in node1
    assert "listen: 127.0.0.1:6223" in node2 and "routes: [nats-route://127.0.0.1:6222]" in node2
    assert f"name: {bench_cluster.CLUSTER_NAME}" in node1 and f"name: {bench_cluster.CLUSTER_NAME}" in node2


def test_gateway_conf_node2_dials_cluster_a() -> None:
    node1 = bench_cluster.gateway_conf("bench-hub-node1", "A", 7222, [])
    node2 = bench_cluster.gateway_conf("bench-hub-node2", "B", 7223, [("A", 7222)])
    assert "name: A" in node1 and "listen: 127.0.0.1:7222" in node1 and "gateways" not in node1
    assert "name: B" in node2 and "gateways: [{name: A, url: nats://127.0.0.1:7222}]" in node2


def test_next_msg_skips_protocol_lines_and_waits_for_whole_frames() -> None:
    a, b = socket.socketpair()
    try:
        buf = bytearray(b'INFO {"connect_urls":["M"]}\r\nPING\r\nMSG benchprobe.1.0 1001 1\r\n')
        b.sendall(b"7\r\n+OK\r\nPONG\r\nMSG benchprobe.1.0 1001 2\r\n12\r\n")
        assert bench_cluster.next_msg(a, buf, time.monotonic() + 2.0) == b"7"
        assert b.recv(100) == b"PONG\r\n"  # the PING was answered
        assert bench_cluster.next_msg(a, buf, time.monotonic() + 2.0) == b"12"
        assert buf == b"" and bench_cluster.next_msg(a, buf, time.monotonic() + 0.05) is None
        b.sendall(b"-ERR 'Permissions Violation'\r\n")
        with pytest.raises(benchlib.BenchError, match="Permissions Violation"):
            bench_cluster.next_msg(a, buf, time.monotonic() + 2.0)
    finally:
        a.close()
        b.close()


def test_route_scenarios_against_nats_server_and_hub(nats_server_binary: str) -> None:
    cfg = bench.BenchConfig(scenarios=["route1", "route4"], sizes=[128], duration=0.3, warmup=0.1, runs=1)
    lines: list[str] = []
    # The commands with JetStream on, as `--compare` builds them when the list also holds a JetStream scenario: the
    # cluster nodes run without it (nats-server refuses JetStream on node 1, which has no routes configured).
    report = bench.run_compare(cfg, bench.default_nats_cmd(nats_server_binary, True), bench.default_hub_cmd(True),
                               lines.append)
    assert [r["error"] for r in report["results"] if r["error"]] == []
    assert {(r["server"], r["scenario"]) for r in report["results"]} == {
        (s, scen) for s in ("nats-server", "hub") for scen in ("route1", "route4")
    }
    for r in report["results"]:
        m = r["metrics"]
        assert m["msgs_per_s"] > 0 and m["offered_msgs_per_s"] > 0
        assert len(m["per_subscriber_msgs_per_s"]) == (4 if r["scenario"] == "route4" else 1)
        assert m["node1_cpu"] > 0 and m["node2_cpu"] > 0  # both nodes did work: the messages crossed the route
    for row in report["summary"]:
        assert row["median"]["nats-server"] > 0 and row["median"]["hub"] > 0 and row["ratio"] > 0
    assert "route4" in bench.format_table(report)
    pids = [int(p) for line in lines if line.startswith("started") for p in re.findall(r"pid (\d+)", line)]
    assert len(pids) == 4 and all(_gone(pid) for pid in pids)  # both nodes of both clusters were stopped


def test_gateway_scenarios_against_nats_server_and_hub(nats_server_binary: str) -> None:
    cfg = bench.BenchConfig(scenarios=["gw1", "gwreq"], sizes=[128], duration=0.3, warmup=0.1, runs=1)
    lines: list[str] = []
    report = bench.run_compare(cfg, bench.default_nats_cmd(nats_server_binary), bench.default_hub_cmd(), lines.append)
    assert [r["error"] for r in report["results"] if r["error"]] == []
    assert {(r["server"], r["scenario"]) for r in report["results"]} == {
        (s, scen) for s in ("nats-server", "hub") for scen in ("gw1", "gwreq")
    }
    for r in report["results"]:
        m = r["metrics"]
        assert m["node1_cpu"] > 0 and m["node2_cpu"] > 0  # both servers did work: the traffic crossed the gateway
        if r["scenario"] == "gw1":
            assert m["msgs_per_s"] > 0 and len(m["per_subscriber_msgs_per_s"]) == 1
        else:
            assert m["samples"] > 0 and 0 < m["p50_us"] <= m["p99_us"] and m["rtt_per_s"] > 0
    assert {(row["scenario"], row["metric"]) for row in report["summary"]} == {
        ("gw1", "msgs_per_s"), ("gwreq", "p50_us"), ("gwreq", "p99_us"), ("gwreq", "rtt_per_s")
    }
    for row in report["summary"]:
        assert row["median"]["nats-server"] > 0 and row["median"]["hub"] > 0 and row["ratio"] > 0
    assert "gwreq" in bench.format_table(report)
    started = [line for line in lines if line.startswith("started")]
    assert len(started) == 2 and all("super-cluster" in line for line in started)
    pids = [int(p) for line in started for p in re.findall(r"pid (\d+)", line)]
    assert len(pids) == 4 and all(_gone(pid) for pid in pids)  # both servers of both super-clusters were stopped


def test_cluster_nodes_are_stopped_when_the_start_fails(
    nats_server_binary: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster = bench_cluster.BenchCluster("nats-server", bench.default_nats_cmd(nats_server_binary))
    seen: list[int] = []

    def no_route(node1: benchlib.Endpoint, node2: benchlib.Endpoint, timeout: float = 0.0) -> None:
        seen.extend(cluster.pids)
        raise benchlib.BenchError("no route (test)")

    monkeypatch.setattr(bench_cluster, "wait_for_route", no_route)
    try:
        with pytest.raises(benchlib.BenchError, match="cluster did not start: no route"):
            cluster.start()
    finally:
        cluster.close()
    assert len(seen) == 2 and all(_gone(pid) for pid in seen)


def test_route_scenarios_are_skipped_without_compare(nats_server_binary: str) -> None:
    cfg = bench.BenchConfig(scenarios=["route1"], sizes=[128], duration=0.2, warmup=0.05, runs=1)
    lines: list[str] = []
    with benchlib.ServerProcess("nats-server", bench.default_nats_cmd(nats_server_binary)).start() as srv:
        report = bench.run_suite(srv.url, cfg, server_pid=srv.pid, log=lines.append)
    assert report["results"] == [] and any("route1: skipped" in line for line in lines)
