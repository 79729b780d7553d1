"""The fleet dashboard in a real browser: headless Chromium (tests/cdp.py) loads the page of a running `natsedge sim`
and the test reads the rendered DOM, as a person would read the page.

Chromium is a system package: `make test` installs it (the Makefile's `chromium` target) or stops with the command
to run. Outside make, a missing Chromium fails these tests with that command; they do not skip.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cdp import INSTALL, CDPError, Chromium, chromium_binary
from tests.compat.harness import Raw, free_port, nats_server_binary, pub

REPO = Path(__file__).resolve().parents[2]

# make run's fleet (a forward queue per edge into the stream SIM), smaller and faster: 3 edges at 5 msgs/s, the
# forward queues' status every second, and one partition long enough for a backlog to build up on edge-1.
SCENARIO: dict[str, Any] = {
    "name": "browser",
    "edges": 3,
    "duration": 0,
    "publish": [{"subject": "sim.{edge}.tele", "rate": 5, "size": 32}],
    "requests": {"subject": "sim.{edge}.svc", "rate": 0.5, "timeout": 1},
    "stream": {"name": "SIM", "subjects": ["sim.*.tele"]},
    "edge": {"config": {"forward": [{"subjects": ["sim.*.tele"], "stream": "SIM"}], "forward_settings": {"status": 1}}},
    "faults": [{"type": "partition", "at": 2, "for": 4, "edges": ["edge-1"], "mode": "blackhole"}],
}
RAW_JSON = re.compile(r'[{\[]\s*"|"\s*:')  # what a JSON dump in a cell would show

# The edge table as the page renders it: header -> cell text, one dict per edge row.
ROWS_JS = """(() => { const t = document.getElementById("edges");
  const head = [...t.querySelectorAll("tr:first-child th")].map(th => th.textContent);
  return [...t.querySelectorAll("tr.edge")].map(tr => { const row = {};
    [...tr.children].forEach((td, i) => { row[head[i]] = td.textContent; });
    const sub = tr.nextElementSibling; row.reports = sub && sub.className === "sub" ? sub.textContent : null;
    return row; }); })()"""
CARDS_JS = """Object.fromEntries([...document.querySelectorAll("#hub .card")].map(c =>
  [c.querySelector("span").textContent, c.querySelector("b").textContent]))"""
CHARTS_JS = """[...document.querySelectorAll("#charts .chart")].map(c => ({
  title: c.querySelector(".title").textContent,
  series: [...c.querySelectorAll("path[data-series]")].map(p => ({name: p.dataset.series,
    points: Number(p.dataset.points), max: Number(p.dataset.max)}))}))"""
CELLS_JS = """[...document.querySelectorAll("td")].map(td => td.textContent)"""
# nothing wider than the window: the page itself, and every table inside its box
FITS_JS = """document.documentElement.scrollWidth <= window.innerWidth &&
  [...document.querySelectorAll("table")].every(t => t.getBoundingClientRect().right <= window.innerWidth)"""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _natsedge(*args: str) -> list[str]:
    return [sys.executable, "-m", "host.tools.cli", *args]


def _number(text: str) -> float:
    m = re.fullmatch(r"(-?[\d.]+)([kMG]?)", text.strip())
    assert m, f"not a number: {text!r}"
    return float(m.group(1)) * {"": 1, "k": 1e3, "M": 1e6, "G": 1e9}[m.group(2)]


def _processes_in(folder: Path) -> list[int]:
    """PIDs of live processes whose working directory is inside `folder` (the edges run in their state folders)."""
    found = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if os.readlink(d / "cwd").startswith(str(folder)):
                    found.append(int(d.name))
            except OSError:
                pass
    return found


def _stop(proc: subprocess.Popen[Any], workdir: Path | None = None) -> None:
    """SIGINT (the simulator then stops its hub and edges), SIGKILL if it hangs, then any process left in workdir."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for pid in _processes_in(workdir) if workdir is not None else []:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Chromium]:
    if chromium_binary() is None:
        pytest.fail(f"the dashboard's browser test needs Chromium: {INSTALL}  (make test installs it when root; "
                    "or set CHROMIUM=/path/to/chromium)")
    with Chromium(tmp_path / "chromium") as b:
        yield b


def _wait(browser: Chromium, what: str, check: Any, timeout: float) -> Any:
    """Poll `check()` (reading the page) until it returns something truthy; fail with the last page state."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout} s; rows {browser.evaluate(ROWS_JS)}, "
                        f"hub {browser.evaluate(CARDS_JS)}, charts {browser.evaluate(CHARTS_JS)}")
        time.sleep(0.3)


def test_sim_dashboard_in_chromium(tmp_path: Path, browser: Chromium) -> None:
    """`natsedge sim --dashboard` with a partition: the page shows each edge's state, backlog, losses and heap (with
    the frozen 32-bit reference), the hub's msgs/s while telemetry flows, charts with data, no raw JSON, nothing
    wider than the window; and it updates."""
    scenario = tmp_path / "scenario.json"
    scenario.write_text(json.dumps(SCENARIO))
    workdir = tmp_path / "work"
    port = free_port()
    log = tmp_path / "sim.log"  # a file, not a pipe nobody reads while the test drives the browser
    with open(log, "wb") as out:
        sim = subprocess.Popen(_natsedge("sim", "--scenario", str(scenario), "--hub", "hub", "--js", "auto",
                                         "--workdir", str(workdir), "--dashboard", f"127.0.0.1:{port}"),
                               cwd=tmp_path, env=_env(), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + 20
        while True:  # the dashboard listens before the edges start
            try:
                browser.navigate(url)
                break
            except CDPError:
                assert sim.poll() is None and time.monotonic() < deadline, "the simulator did not serve its page"
                time.sleep(0.3)
        browser.wait_for("window.renders >= 1", 10)

        # the partition of edge-1 (t = 2..6 s): the page says so, and a backlog builds up on it
        def partitioned() -> bool:
            rows = {r["edge"]: r for r in browser.evaluate(ROWS_JS)}
            e1 = rows.get("edge-1")
            return bool(e1 and e1["state"] == "partitioned (blackhole)" and e1["backlog"] != "-"
                        and _number(e1["backlog"]) >= 5)  # 5 msgs/s, status every second

        _wait(browser, "edge-1 partitioned, with a backlog", partitioned, 25)
        browser.screenshot(tmp_path / "dashboard-partition.png")

        def settled() -> list[dict[str, str]] | None:
            rows = browser.evaluate(ROWS_JS)
            cards = browser.evaluate(CARDS_JS)
            # healed and drained: a record or two may be in flight at the moment of a status
            ok = len(rows) == 3 and all(r["state"] == "up" and r["backlog"] in ("0", "1", "2")
                                        and r["lost"] in ("0", "1", "2") for r in rows) \
                and cards["in msgs/s"] not in ("-", "0") and cards["out msgs/s"] not in ("-", "0")
            return rows if ok else None

        rows = _wait(browser, "every edge up again, edge-1's backlog drained and nothing lost, the hub's rates "
                     "non-zero", settled, 25)

        # each edge's row: state, backlog, losses and heap, the heap beside its frozen 32-bit reference
        assert [r["edge"] for r in rows] == ["edge-0", "edge-1", "edge-2"]
        for r in rows:
            assert r["state"] == "up" and r["on hub"] == "yes", r
            assert _number(r["published"]) > 0 and _number(r["at hub"]) > 0, r
            assert re.fullmatch(r"\d+\.\d KB", r["heap"]) and re.fullmatch(r"\d+\.\d KB", r["heap peak"]), r
            assert r["frozen 32-bit at ready †"] == "22.7 KB †", r
            assert r["reports"] and "forward" in r["reports"] and "backlog" in r["reports"], r
        note = browser.evaluate("document.getElementById('heapnote').textContent")
        assert "64-bit MicroPython unix port" in note and "compiled into the heap" in note, note
        assert "frozen into a 32-bit" in note and "22.7 KB" in note and "not measured in this run" in note, note

        # the hub's rates: per second, from its counters, and non-zero while telemetry flows (3 edges x 5 msgs/s)
        cards = browser.evaluate(CARDS_JS)
        assert _number(cards["in msgs/s"]) > 5 and _number(cards["out msgs/s"]) > 5, cards

        # the page updates: the hub's message count and the simulation's clock move between two reads
        before = (cards["msgs in"], browser.evaluate("document.getElementById('meta').textContent"))
        _wait(browser, "the page to update", lambda: (
            browser.evaluate(CARDS_JS)["msgs in"], browser.evaluate("document.getElementById('meta').textContent"))
            != before and browser.evaluate(CARDS_JS)["msgs in"] != before[0], 10)

        # the charts: hub in/out, backlog and msgs/s per edge, each line with points (a sample a second); edge-1's
        # backlog shows
        def charted() -> dict[str, Any] | None:
            charts = {c["title"]: c["series"] for c in browser.evaluate(CHARTS_JS)}
            ok = len(charts) == 3 and all(len(v) >= 2 and all(s["points"] >= 3 for s in v) for v in charts.values())
            return charts if ok else None

        charts = _wait(browser, "three charts, each line with 3 points or more", charted, 15)
        assert set(charts) == {"Hub messages/s", "Backlog per edge", "Messages/s from each edge"}, charts
        assert [s["name"] for s in charts["Hub messages/s"]] == ["in", "out"], charts
        for title, series in charts.items():
            for s in series:
                assert s["points"] >= 3, (title, s)
            assert max(s["max"] for s in series) > 0, (title, series)
        assert {s["name"] for s in charts["Backlog per edge"]} == {"edge-0", "edge-1", "edge-2"}, charts
        assert next(s for s in charts["Backlog per edge"] if s["name"] == "edge-1")["max"] >= 5, charts  # 4 s x 5/s
        assert browser.evaluate("document.querySelectorAll('#charts .mark').length") >= 3  # the partition's mark

        # no cell dumps JSON, and nothing is wider than the window (1400 px)
        browser.screenshot(tmp_path / "dashboard.png")  # before the last checks: to look at when they fail
        cells = browser.evaluate(CELLS_JS)
        assert cells and [c for c in cells if RAW_JSON.search(c)] == []
        assert browser.evaluate(FITS_JS), browser.evaluate("[document.documentElement.scrollWidth, innerWidth]")
    finally:
        _stop(sim, workdir)
    text = log.read_text(errors="replace")
    assert sim.returncode == 0, text[-3000:]
    assert "0 left running" in text, text[-3000:]
    assert _processes_in(workdir) == []


def test_standalone_dashboard_renders_edge_reports(tmp_path: Path, browser: Chromium) -> None:
    """`natsedge dashboard` for a nats-server: what an edge publishes on $EDGE.<name>.<kind> shows as fields (its
    forward queues, a gap marker, a kind of its own), never as JSON, and fits the window."""
    port, http_port, dash_port = free_port(), free_port(), free_port()
    ns = subprocess.Popen([nats_server_binary(), "-a", "127.0.0.1", "-p", str(port), "-m", str(http_port)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    dash = subprocess.Popen(_natsedge("dashboard", "--monitor", f"http://127.0.0.1:{http_port}", "--nats",
                                      f"nats://127.0.0.1:{port}", "--listen", f"127.0.0.1:{dash_port}"),
                            cwd=tmp_path, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{dash_port}/"
        deadline = time.monotonic() + 20
        while True:
            try:
                browser.navigate(url)
                break
            except CDPError:
                assert dash.poll() is None and time.monotonic() < deadline, "the dashboard did not serve its page"
                time.sleep(0.3)
        browser.wait_for("window.renders >= 1 && !document.getElementById('meta').textContent.includes('unreach')")
        forward = {"edge": "kitchen-1", "up": False, "queues": [
            {"name": "tele", "stream": "TELE", "state": "down", "backlog": 7, "inflight": 0, "oldest_age": 42,
             "dropped": 2}, {"name": "alarms", "stream": "ALARMS", "backlog": 3}]}
        custom = {"uptime_s": 3600, "wifi": {"rssi": -61, "ssid": "shed"}, "sensors": ["t1", "t2"],
                  "note": "x" * 200}
        with Raw(port) as c:
            c.handshake()
            c.send(pub("$EDGE.kitchen-1.forward", json.dumps(forward).encode()))
            c.send(pub("$EDGE.kitchen-1.gap", b'{"reason": "drop_oldest", "count": 2, "first": 10, "last": 11}'))
            c.send(pub("$EDGE.kitchen-1.board", json.dumps(custom).encode()))
            c.send(pub("$EDGE.kitchen-1.workloads", json.dumps({"edge": "kitchen-1", "workloads": [
                {"name": "thermo", "version": "2", "wanted": "3", "state": "rolled back", "requests": 12, "errors": 4,
                 "heap": 4448, "error": "thermo 3: setup failed: ValueError: not today"},
                {"name": "echo", "version": "1", "wanted": "1", "state": "running", "requests": 0, "errors": 0,
                 "heap": 480, "error": None}]}).encode()))
            c.sync()
        rows = browser.wait_for(f"(() => {{ const r = {ROWS_JS}; return r.length && r[0].reports && "
                                "r[0].reports.includes('board') && r[0].reports.includes('gap') && "
                                "r[0].reports.includes('workloads') ? r : null; })()", 15)
        (row,) = rows
        assert row["edge"] == "kitchen-1" and row["state"] == "not connected" and row["backlog"] == "10", row
        text = row["reports"]
        for words in ("forward", "hub down", "queue tele (down)", "backlog 7", "oldest s 42", "dropped 2",
                      "queue alarms", "backlog 3", "gap", "reason drop_oldest", "count 2", "board", "uptime_s 3600",
                      "wifi 2 fields", "sensors 2 items", "workloads", "thermo 2 rolled back", "wants 3",
                      "requests 12", "errors 4", "heap 4448", "echo 1 running", "heap 480"):
            assert words in text, (words, text)
        assert "x" * 41 not in text  # long strings are cut
        browser.screenshot(tmp_path / "standalone.png")
        cells = browser.evaluate(CELLS_JS)
        assert [c for c in cells if RAW_JSON.search(c)] == []
        assert browser.evaluate(FITS_JS), browser.evaluate("[document.documentElement.scrollWidth, innerWidth]")
    finally:
        for p in (dash, ns):
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()


def test_standalone_dashboard_traces_a_message(tmp_path: Path, browser: Chromium) -> None:
    """The trace view: a subject typed into the form, the path of the traced message shown as natsedge trace prints
    it (server, the dashboard's own ingress, the subscribers), trace-only, and a bad subject's one-line error; the
    tree stays inside the window."""
    port, http_port, dash_port = free_port(), free_port(), free_port()
    ns = subprocess.Popen([nats_server_binary(), "-a", "127.0.0.1", "-p", str(port), "-m", str(http_port),
                           "-n", "traced-hub"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    dash = subprocess.Popen(_natsedge("dashboard", "--monitor", f"http://127.0.0.1:{http_port}", "--nats",
                                      f"nats://127.0.0.1:{port}", "--listen", f"127.0.0.1:{dash_port}"),
                            cwd=tmp_path, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                browser.navigate(f"http://127.0.0.1:{dash_port}/")
                break
            except CDPError:
                assert dash.poll() is None and time.monotonic() < deadline, "the dashboard did not serve its page"
                time.sleep(0.3)
        browser.wait_for("window.renders >= 1 && !document.getElementById('meta').textContent.includes('unreach')")
        with Raw(port) as c:
            c.handshake(name="sub-app")
            c.send(b"SUB plant.pump 1\r\nSUB plant.pump workers 2\r\n")
            c.sync()

            def trace(subject: str, only: bool) -> dict[str, Any]:
                done = browser.evaluate("window.traces || 0")
                browser.evaluate(f"""(() => {{ document.getElementById("trace-subject").value = {json.dumps(subject)};
                    document.getElementById("trace-payload").value = "on";
                    document.getElementById("trace-only").checked = {json.dumps(only)};
                    document.getElementById("trace-go").click(); }})()""")
                browser.wait_for(f"(window.traces || 0) > {done}", 15)
                return browser.evaluate("""({tree: document.getElementById("trace-tree").textContent,
                    status: document.getElementById("trace-status").textContent,
                    bad: document.getElementById("trace-status").className === "bad"})""")

            shown = trace("plant.pump", False)
            lines = [ln.strip() for ln in shown["tree"].splitlines()]
            assert lines[0] == 'Trace of a message to subject "plant.pump"', lines
            assert lines[2] == 'Server "traced-hub" version:2.15.1', lines
            assert lines[3].startswith('<-- from client "natsedge-dashboard"'), lines
            assert lines[4].startswith('--C client "sub-app"') and 'queue:"workers"' in lines[5], lines
            assert shown["status"] == "1 event" and not shown["bad"], shown
            browser.screenshot(tmp_path / "trace-view.png")
            assert browser.evaluate(FITS_JS), browser.evaluate("[document.documentElement.scrollWidth, innerWidth]")

            only = trace("plant.pump", True)
            assert only["tree"].startswith('Trace of a message to subject "plant.pump" (trace only'), only
            assert [m.payload for m in c.msgs_until_pong()] == [b"on", b"on"]  # the first trace only

            bad = trace("plant.*", False)
            assert bad["bad"] and bad["status"].startswith("invalid subject 'plant.*'") and bad["tree"] == "", bad
    finally:
        for p in (dash, ns):
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
