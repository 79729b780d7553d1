"""Smoke test for `natsedge bench --edge` (host/tools/bench_edge.py): structure and plumbing only, never speed.

Runs the edge bench with a small message count against nats-server and our hub: a MicroPython edge from the .mpy
bundle, both scenarios. Checks positive rates, zero loss and that the heap figures are there.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest

from host.tools import bench, bench_edge, benchlib, firmware_cmd


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="natsedge bench")
    bench.add_arguments(parser)
    return parser.parse_args(list(argv))


@pytest.fixture(scope="module")
def tools() -> None:
    # Both are dev dependencies: missing tools are a broken setup, not a reason to skip.
    try:
        benchlib.find_nats_server()
        bench_edge.find_micropython()
    except benchlib.BenchError as exc:
        pytest.fail(str(exc))


def test_edge_options_parse() -> None:
    a = _args("--edge", "--hub", "nats", "--count", "50", "--sizes", "16,128", "--runs", "2")
    cfg = bench_edge.config_from_args(a)
    assert cfg.hubs == ["nats"] and cfg.count == 50 and cfg.sizes == [16, 128] and cfg.runs == 2
    assert bench_edge.config_from_args(_args("--edge")).hubs == ["nats", "hub"]
    with pytest.raises(benchlib.BenchError):
        bench_edge.config_from_args(_args("--edge", "--compare"))
    with pytest.raises(SystemExit):
        _args("--edge", "--hub", "kafka")


def _run(tmp_path: Path, capsys: pytest.CaptureFixture[str], hub: str) -> tuple[dict[str, Any], str, int]:
    out = tmp_path / f"edge-{hub}.json"
    args = _args("--edge", "--hub", hub, "--count", "300", "--sizes", "16", "--runs", "1", "--json", str(out), "-q")
    rc = bench.run(args)
    captured = capsys.readouterr()
    assert out.exists(), captured
    return json.loads(out.read_text()), captured.out, rc


def _check(report: dict[str, Any], table: str, rc: int, hub: str) -> None:
    assert rc == 0, (table, report["hubs"])
    assert "local pub -> local sub" in table and "local pub -> hub sub" in table and "heapsize=" in table
    try:
        firmware_cmd.find_mpy_cross(None)
        assert report["code"]["code"] == "mpy"  # the edge ran from the .mpy bundle, as shipped
    except firmware_cmd.FirmwareError:
        assert report["code"]["code"] == "source"
    assert report["code"]["app_code_heap"] > 0
    [h] = report["hubs"]
    assert h["hub"] == hub and h["errors"] == [], h["edge_lines"]
    assert h["edge_ready_heap"] > 0 and h["app_done_heap"] > 0
    assert "micropython" in h["edge_command"] and "-m edge" in h["edge_command"]
    assert sorted(r["scenario"] for r in report["results"]) == ["hub", "local"]
    for r in report["results"]:
        m = r["metrics"]
        assert r["error"] is None, r
        assert r["hub"] == hub and r["size"] == 16
        assert m["msgs_per_s"] > 0 and m["n"] == 300
        assert m["received"] == 300 and m["lost"] == 0
        assert 0 < m["heap_idle"] <= m["heap_peak"] and m["heap_after"] > 0 and m["edge_cpu"] >= 0
        if r["scenario"] == "hub":
            assert m["uplink_dropped"] == 0 and m["acked"] and m["forwarded"] >= 300
        else:
            assert m["cb_dropped"] == 0
    assert len(report["summary"]) == 2
    for row in report["summary"]:
        assert row["failed"] == 0 and row["lost"] == 0 and row["msgs_per_s"] > 0 and row["heap_peak"] > 0


@pytest.mark.timeout(60)
def test_edge_bench_nats_server(tools: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _check(*_run(tmp_path, capsys, "nats"), "nats")


@pytest.mark.timeout(60)
def test_edge_bench_hub(tools: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report, table, rc = _run(tmp_path, capsys, "hub")
    _check(report, table, rc, "hub")
