"""`natsedge sim`, `natsedge dashboard` and `make run`'s command, run as real processes.

Every fleet run here starts real `micropython -m edge` processes and a real hub (ours or nats-server) through the
simulator, injects partitions (both proxy modes), a crash and a hub restart, and checks the report against what
must hold: every message published while no fault touched its edge reached the hub, nothing was duplicated, each
fault shows where it should (disconnects, a second boot, reconnect times), and every process the simulator started
is gone afterwards.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from sim import scenario as scenario_mod
from tests.compat.harness import Raw, free_port, nats_server_binary, pub

REPO = Path(__file__).resolve().parents[2]
SIM_SIDE = {"hub": "hub", "nats": "nats-server"}

# 3 edges, 12 s: a blackhole partition longer than the edges' ping detection (1 s x 2), a crash, a reset
# partition and a hub restart.
CI_SCENARIO: dict[str, Any] = {
    "name": "ci",
    "edges": 3,
    "duration": 12,
    "settle": 6,
    "publish": [{"subject": "sim.{edge}.tele", "rate": 10, "size": 24}],
    "requests": {"rate": 2, "timeout": 1},
    "faults": [
        {"type": "partition", "at": 1.5, "for": 4, "edges": [0], "mode": "blackhole"},
        {"type": "crash", "at": 2.5, "edges": ["edge-1"], "down": 0.5},
        {"type": "partition", "at": 4.5, "for": 1.5, "edges": [2], "mode": "reset"},
        {"type": "hub_restart", "at": 8, "down": 0.5},
    ],
}


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def natsedge(*args: str) -> list[str]:
    return [sys.executable, "-m", "host.tools.cli", *args]


def run_sim(tmp_path: Path, scenario: dict[str, Any] | None, *args: str,
            timeout: float = 90) -> tuple[subprocess.CompletedProcess[str], dict[str, Any] | None]:
    cmd = natsedge("sim", "--quiet", "--workdir", str(tmp_path / "work"), "--report", str(tmp_path / "report.json"))
    if scenario is not None:
        path = tmp_path / "scenario.json"
        path.write_text(json.dumps(scenario))
        cmd += ["--scenario", str(path)]
    p = subprocess.run([*cmd, *args], cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=timeout)
    report_path = tmp_path / "report.json"
    return p, json.loads(report_path.read_text()) if report_path.exists() else None


def processes_in(folder: Path) -> list[int]:
    """PIDs of live processes whose working directory is inside `folder` (edges run in their state folders)."""
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cwd = os.readlink(d / "cwd")
        except OSError:
            continue
        if cwd.startswith(str(folder)):
            found.append(int(d.name))
    return found


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def check_stopped(report: dict[str, Any], workdir: Path) -> None:
    procs = report["processes"]
    assert procs["left_running"] == [], procs
    assert procs["started"] == len(procs["pids"]) > 0
    assert [p for p in procs["pids"] if pid_alive(p)] == []
    assert processes_in(workdir) == []


def check_accounting(report: dict[str, Any]) -> None:
    """What must hold for every edge of any run, faults or not."""
    for e in report["edges"]:
        m = e["messages"]
        where = f"{e['name']}: {m}"
        assert m["published"] > 0 and m["received"] > 0, where
        assert m["received"] + m["lost"] == m["published"], where
        assert m["forwarded"] + m["not_forwarded"] == m["published"], where
        assert m["duplicates"] == 0 and m["unmatched"] == 0, where
        assert m["delivered_late"] == 0, where  # no store-and-forward configured: nothing arrives unforwarded
        assert m["published_clean"] > 0, where
        assert m["lost_clean"] == 0, where  # every message published outside a fault window reached the hub
        assert e["unexpected_exits"] == 0, e
        assert e["stop_acked"] and e["stopped_cleanly"], e
        assert e["heap"]["peak"] and e["heap"]["peak"] > 0, e
        assert e["requests"]["ok"] > 0, e
    totals = report["totals"]["messages"]
    assert totals["published"] == sum(e["messages"]["published"] for e in report["edges"])


def test_ci_fleet_run(side: str, tmp_path: Path) -> None:
    p, report = run_sim(tmp_path, CI_SCENARIO, "--hub", SIM_SIDE[side], "--js", "off")
    assert p.returncode == 0, p.stderr + p.stdout
    assert "Traceback" not in p.stderr, p.stderr
    assert report is not None
    check_stopped(report, tmp_path / "work")
    check_accounting(report)
    assert report["hub"]["kind"] == SIM_SIDE[side] and report["hub"]["restarts"] == 1
    assert [f["type"] for f in report["faults"]] == ["partition", "crash", "partition", "hub_restart"]
    e0, e1, e2 = report["edges"]
    # blackhole: the edge notices through its pings, drops the link, and is back after the heal
    assert e0["partitions"] == 1 and e0["disconnects"] >= 1 and e0["recovery"]["partition"]["count"] == 1, e0
    # crash: SIGKILL, a second boot, back on the hub
    assert e1["boots"] == 2 and e1["crashes"] == 1 and e1["crashes_survived"] == 1, e1
    assert e1["exit_codes"][0] == -signal.SIGKILL and e1["recovery"]["crash"]["count"] == 1, e1
    assert [b["boot"] for b in e1["by_boot"]] == [1, 2] and all(b["received"] > 0 for b in e1["by_boot"]), e1
    # reset: the link is cut at once
    assert e2["partitions"] == 1 and e2["disconnects"] >= 1 and e2["recovery"]["partition"]["count"] == 1, e2
    # hub restart: every edge lost its link and came back
    for e in report["edges"]:
        assert e["recovery"]["hub_restart"]["count"] == 1, e
        assert e["reconnects"] >= 1 and e["connects"] == e["reconnects"] + e["boots"], e
        assert e["messages"]["lost"] > 0, e  # the faults cost messages (no store-and-forward configured)
    text = p.stdout
    assert 'natsedge sim: scenario "ci": 3 edges' in text
    assert f"processes: {report['processes']['started']} started, 0 left running" in text
    totals = report["totals"]["messages"]
    assert totals["lost_clean"] == 0
    assert f"outside fault windows: 0 of {totals['published_clean']} messages lost" in text


def test_workloads_scenario_v1_to_all_v2_to_half_broken_v3_rolled_back(tmp_path: Path) -> None:
    """sim/scenarios/workloads.json on a shorter timeline: every edge ends on the version it ran before the broken
    one (v2 on edge-0 and edge-1, v1 on the others), reported as rolled back, and says so in the report."""
    scenario = json.loads((REPO / "sim" / "scenarios" / "workloads.json").read_text())
    folder = REPO / "sim" / "scenarios"
    for step, at in zip(scenario["workloads"], (1.5, 5, 8.5), strict=True):
        step["at"] = at
        step["deploy"] = str(folder / step["deploy"])
    scenario["duration"] = 14
    p, report = run_sim(tmp_path, scenario, "--hub", "hub")
    assert p.returncode == 0, p.stderr + p.stdout
    assert report is not None
    check_stopped(report, tmp_path / "work")
    assert [(w["step"], w["version"], w["target"]) for w in report["workload_steps"]] == [
        (0, "1", ["edge-*"]), (1, "2", ["edge-0", "edge-1"]), (2, "3", ["edge-*"])]
    finals = {e["name"]: e["status"]["last"]["workloads"]["workloads"] for e in report["edges"]}
    for name, version in (("edge-0", "2"), ("edge-1", "2"), ("edge-2", "1"), ("edge-3", "1")):
        (w,) = finals[name]
        assert (w["name"], w["version"], w["state"], w["wanted"]) == ("greet", version, "rolled back", "3"), w
        assert "greet v3 is broken on purpose" in w["error"]
        assert f"workloads on {name}: greet {version} rolled back (wants 3)" in p.stdout


def test_second_boot_is_accounted_separately(tmp_path: Path) -> None:
    """A crash restarts sequence numbers at 1: the report still matches hub deliveries to the right boot."""
    scenario = {"name": "boots", "edges": 1, "duration": 5, "settle": 5, "edge": {"lan": True, "heapsize": "250K"},
                "publish": [{"subject": "sim.{edge}.a", "rate": 10, "size": 0},
                            {"subject": "sim.{edge}.b", "rate": 4, "size": 100}],
                "requests": {"rate": 0},
                "faults": [{"type": "crash", "at": 2, "edges": "all", "down": 0.2}]}
    p, report = run_sim(tmp_path, scenario, "--hub", "hub", "--js", "off")
    assert p.returncode == 0, p.stderr + p.stdout
    assert report is not None
    check_stopped(report, tmp_path / "work")
    e = report["edges"][0]
    assert e["boots"] == 2 and e["crashes_survived"] == 1
    m = e["messages"]
    assert m["duplicates"] == 0 and m["unmatched"] == 0 and m["lost_clean"] == 0, m
    # two publishers per boot: sequence numbers restart, deliveries are matched to the boot that sent them
    assert [b["boot"] for b in e["by_boot"]] == [1, 2], e["by_boot"]
    assert all(b["received"] > 0 and b["published"] >= b["received"] for b in e["by_boot"]), e["by_boot"]
    assert e["requests"]["sent"] == 0
    # the edge options reached the process: a LAN listener, and the heap size (in use + free within 250 KB)
    assert e["lan"].startswith("nats://127.0.0.1:")
    assert 0 < e["stats"]["heap"] + e["stats"]["free"] <= 250 * 1024, e["stats"]


def test_edge_dying_on_its_own_is_counted_and_restarted(tmp_path: Path) -> None:
    """An edge killed by someone else (not a scenario fault) is an unexpected exit: counted, restarted (as a
    watchdog would), reported."""
    scenario = {"name": "watchdog", "edges": 1, "duration": 6, "publish": [{"rate": 5}], "requests": {"rate": 0}}
    path = tmp_path / "scenario.json"
    path.write_text(json.dumps(scenario))
    workdir = tmp_path / "work"
    proc = subprocess.Popen(natsedge("sim", "--scenario", str(path), "--workdir", str(workdir), "--report",
                                     str(tmp_path / "report.json"), "--hub", "hub", "--js", "off"),
                            cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = Lines(proc)
    try:
        out.wait_for(r"fleet: 1 MicroPython edges started", 30)
        edge_dir = workdir / "edges" / "edge-0"
        deadline = time.monotonic() + 10
        while not processes_in(edge_dir):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        time.sleep(1.5)  # not a wait for an event: boot 1 runs a while before it dies (any moment would do)
        (victim,) = processes_in(edge_dir)
        os.kill(victim, signal.SIGKILL)
        assert proc.wait(timeout=60) == 0, "\n".join(out.lines)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out.thread.join(timeout=5)
    assert "edge-0 exited unexpectedly (code -9)" in "\n".join(out.lines)
    report = json.loads((tmp_path / "report.json").read_text())
    e = report["edges"][0]
    assert e["unexpected_exits"] == 1 and e["crashes"] == e["crashes_survived"] == 0 and e["boots"] == 2, e
    assert e["exit_codes"][0] == -signal.SIGKILL and e["stopped_cleanly"], e
    assert [b["boot"] for b in e["by_boot"]] == [1, 2] and e["by_boot"][1]["received"] > 0, e["by_boot"]
    check_stopped(report, workdir)


# ---- bad input: exit code 2, one clear line, no traceback, nothing started ------------------------------------------

BAD_SCENARIOS = [
    ({"edges": 3, "faultz": []}, 'unknown key "faultz"'),
    ({"edges": 0}, '"edges": expected an integer >= 1'),
    ({"duration": "long"}, '"duration": expected a number >= 0'),
    ({"publish": [{"subject": "a.*.b"}]}, 'publish 0: "subject": expected a literal NATS subject'),
    ({"publish": [{"rate": 0}]}, 'publish 0: "rate": expected a number > 0'),
    ({"faults": [{"type": "flood", "at": 1}]}, 'fault 0: "type": expected "partition" or "crash" or "hub_restart"'),
    ({"faults": [{"type": "partition", "at": 1, "edges": [0]}]}, 'fault 0: "for": expected a number > 0'),
    ({"faults": [{"type": "partition", "at": 1, "for": 1}]}, 'fault 0: "edges" is required'),
    ({"edges": 2, "faults": [{"type": "crash", "at": 1, "edges": [5]}]}, "edge 5 does not exist"),
    ({"faults": [{"type": "crash", "at": 1, "edges": ["kitchen"]}]}, 'no edge named "kitchen"'),
    ({"duration": 5, "faults": [{"type": "hub_restart", "at": 9}]}, '"at": 9 s is not before the end of the run'),
    ({"faults": [{"type": "partition", "at": 1, "for": 5, "every": 3, "edges": "all"}]},
     '"every" (3 s) must be longer'),
    ({"faults": [{"type": "partition", "at": 1, "for": 1, "edges": [0], "mode": "flaky"}]},
     '"mode": expected "blackhole" or "reset"'),
    ({"edge": {"config": {"name": "x"}}}, 'may not set "name"'),
    ({"edge": {"heapsize": "lots"}}, '"heapsize": expected null, a number of bytes'),
    ({"publish": [{"size": 9000}]}, "exceeds the edge's max_payload (8192)"),
    ([1, 2], "expected a JSON object at the top level"),
    ({"workloads": [{"at": 1, "name": "g"}]}, 'workload step 0: expected "deploy": "module.py" or "rollback"'),
    ({"workloads": [{"at": 1, "deploy": "nope.py", "name": "g"}]}, 'workload step 0: "deploy": cannot read'),
    ({"workloads": [{"at": 1, "deploy": "a.py"}]}, 'workload step 0: "name": expected a non-empty string'),
    ({"duration": 5, "workloads": [{"at": 7, "rollback": "g"}]}, 'workload step 0: "at": 7 s is not before the end'),
]


@pytest.mark.parametrize("doc,message", BAD_SCENARIOS, ids=[m[:30] for _, m in BAD_SCENARIOS])
def test_bad_scenario_is_a_clear_error(tmp_path: Path, doc: Any, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc))
    p = subprocess.run(natsedge("sim", "--scenario", str(path), "--workdir", str(tmp_path / "work")), cwd=tmp_path,
                       env=_env(), capture_output=True, text=True, timeout=30)
    assert p.returncode == 2, p.stdout + p.stderr
    assert message in p.stderr, p.stderr
    assert p.stderr.startswith("natsedge sim: ") and p.stderr.count("\n") == 1, p.stderr
    assert "Traceback" not in p.stderr
    assert not (tmp_path / "work").exists()  # refused before anything started


BAD_FLAGS = [
    (["--edges", "0"], "--edges: expected 1..500"),
    (["--edges", "many"], "--edges: expected an integer"),
    (["--duration", "-1"], "--duration: expected a number of seconds >= 0"),
    (["--seed", "x"], "--seed: expected an integer >= 0"),
    (["--dashboard", "host:port"], "--dashboard: expected HOST:PORT"),
    (["--js", "maybe"], "--js: invalid choice"),
    (["--hub", "ftp://x:1"], '--hub: expected "hub", "nats-server" or a nats:// URL'),
    (["--scenario", "/nonexistent/s.json"], "cannot read scenario /nonexistent/s.json"),
    (["--report", "/nonexistent/dir/r.json"], "--report: folder /nonexistent/dir does not exist"),
    (["--micropython", "/nonexistent/micropython"], "MicroPython unix binary not found"),
]


@pytest.mark.parametrize("flags,message", BAD_FLAGS, ids=[f[0] for f, _ in BAD_FLAGS])
def test_bad_flags_are_a_clear_error(tmp_path: Path, flags: list[str], message: str) -> None:
    p = subprocess.run(natsedge("sim", *flags), cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=30)
    assert p.returncode == 2, p.stdout + p.stderr
    assert message in p.stderr, p.stderr
    assert "Traceback" not in p.stderr


def test_invalid_json_and_external_hub_restart(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_text('{"edges": 3,')
    p = subprocess.run(natsedge("sim", "--scenario", str(path)), cwd=tmp_path, env=_env(), capture_output=True,
                       text=True, timeout=30)
    assert p.returncode == 2 and "is not valid JSON" in p.stderr and "Traceback" not in p.stderr, p.stderr
    path.write_text(json.dumps({"duration": 10, "faults": [{"type": "hub_restart", "at": 1}]}))
    p = subprocess.run(natsedge("sim", "--scenario", str(path), "--hub", "nats://127.0.0.1:4222"), cwd=tmp_path,
                       env=_env(), capture_output=True, text=True, timeout=30)
    assert p.returncode == 2 and "restarts the hub" in p.stderr and "Traceback" not in p.stderr, p.stderr


def test_edge_that_rejects_its_config_stops_the_run(tmp_path: Path) -> None:
    """Extra edge config goes through to the edge; when the edge refuses it, the run ends with the edge's message."""
    scenario = {"edges": 2, "duration": 10, "edge": {"config": {"forwardx": {"max": 10}}}}
    p, report = run_sim(tmp_path, scenario, "--hub", "hub", "--js", "off", timeout=60)
    assert p.returncode == 2, p.stdout + p.stderr
    assert 'config: unknown key "forwardx"' in p.stderr and "Traceback" not in p.stderr, p.stderr
    assert report is None
    assert processes_in(tmp_path / "work") == []


def test_external_hub(tmp_path: Path) -> None:
    """--hub URL: the fleet uplinks to a server the simulator did not start (here nats-server with a leaf port)."""
    port, http_port, leaf_port = free_port(), free_port(), free_port()
    conf = tmp_path / "ns.conf"
    conf.write_text(f"leafnodes {{\n  listen: 127.0.0.1:{leaf_port}\n}}\n")
    ns = subprocess.Popen([nats_server_binary(), "-a", "127.0.0.1", "-p", str(port), "-m", str(http_port),
                           "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        scenario = {"edges": 2, "duration": 3, "publish": [{"rate": 5}]}
        p, report = run_sim(tmp_path, scenario, "--hub", f"nats://127.0.0.1:{port}", "--leaf-url",
                            f"nats-leaf://127.0.0.1:{leaf_port}", "--monitor-url", f"http://127.0.0.1:{http_port}")
        assert p.returncode == 0, p.stderr + p.stdout
        assert report is not None
        assert report["hub"]["kind"] == "external" and report["hub"]["jetstream"] is None
        check_accounting(report)
        check_stopped(report, tmp_path / "work")
        assert ns.poll() is None  # the simulator leaves an external hub alone
    finally:
        ns.terminate()
        ns.wait(timeout=10)


# ---- make run's command and the dashboard ---------------------------------------------------------------------------


class Lines:
    """A child's stdout, collected by a thread."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self.thread = threading.Thread(target=self._pump, daemon=True)
        self.thread.start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str]:
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for ln in list(self.lines):
                m = rx.search(ln)
                if m:
                    return m
            if self.proc.poll() is not None and not self.thread.is_alive():
                break
            time.sleep(0.05)
        pytest.fail(f"no line matching {pattern!r}:\n" + "\n".join(self.lines[-40:]))


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as r:
        assert r.status == 200
        return json.loads(r.read())


def make_run_command(ports: dict[str, int]) -> list[str]:
    """The `natsedge sim ...` line of `make run` as make would run it (from `make -n`), on our interpreter."""
    variables = [f"{k}={v}" for k, v in ports.items()]
    out = subprocess.run(["make", "-s", "-n", "-C", str(REPO), "run", *variables], capture_output=True, text=True,
                         timeout=30, check=True).stdout.replace("\\\n", " ")
    lines = [ln for ln in out.splitlines() if "natsedge sim " in ln]
    assert len(lines) == 1, out
    argv = shlex.split(lines[0])
    assert argv[0].endswith("/natsedge") and argv[1] == "sim", argv
    return natsedge(*argv[1:])


def test_make_run_serves_the_dashboard_and_stops_on_sigint(tmp_path: Path) -> None:
    ports = {"HUB_PORT": free_port(), "HUB_HTTP_PORT": free_port(), "LEAF_PORT": free_port(),
             "DASHBOARD_PORT": free_port()}
    cmd = make_run_command(ports)
    assert "sim/scenarios/demo.json" in cmd
    proc = subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            stdin=subprocess.DEVNULL)
    out = Lines(proc)
    try:
        url = out.wait_for(r"sim: dashboard: (http://\S+)", 30).group(1)
        assert url == f"http://127.0.0.1:{ports['DASHBOARD_PORT']}/"
        out.wait_for(r"fleet: 3 MicroPython edges started", 30)
        deadline = time.monotonic() + 30
        while True:
            state = get_json(url + "state.json")
            server = state["hub"].get("server") or {}
            if server.get("leafnodes") == 3 and all(e["link_up"] for e in state["edges"]) \
                    and all(e["messages"]["received"] > 0 for e in state["edges"]):
                break
            assert time.monotonic() < deadline, json.dumps(state)[:3000]
            time.sleep(0.5)
        assert state["source"] == "sim" and state["sim"]["scenario"] == "demo"
        assert [e["name"] for e in state["edges"]] == ["edge-0", "edge-1", "edge-2"]
        assert {leaf["name"] for leaf in state["hub"]["leafs"]} == {"edge-0", "edge-1", "edge-2"}
        assert server["connections"] >= 1 and server["in_msgs"] > 0
        assert state["hub"]["description"].startswith("hub ")
        with urllib.request.urlopen(url, timeout=5) as r:
            page = r.read().decode()
        assert "<script>" in page and "/state.json" in page
        assert not re.search(r"""(src|href)\s*=|<link|@import|https?://""", page)  # nothing loaded from elsewhere
        pids = [e["pid"] for e in state["edges"]]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
        out.thread.join(timeout=5)
        text = "\n".join(out.lines)
        assert "interrupted: stopping the fleet" in text
        assert 'natsedge sim: scenario "demo": 3 edges' in text and "(interrupted)" in text
        assert "started, 0 left running" in text
        assert [p for p in pids if pid_alive(p)] == []
        with pytest.raises(OSError):
            urllib.request.urlopen(url, timeout=2)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_second_ctrl_c_skips_the_flush_but_stops_everything(tmp_path: Path) -> None:
    """Ctrl-C while the hub is down starts the end, which waits for the hub to come back (here: 60 s) before the
    flush; a second Ctrl-C skips the waiting; nothing is left running."""
    scenario = {"name": "hurry", "edges": 2, "duration": 0, "settle": 30,
                "faults": [{"type": "hub_restart", "at": 0.5, "down": 60}]}
    path = tmp_path / "scenario.json"
    path.write_text(json.dumps(scenario))
    workdir = tmp_path / "work"
    proc = subprocess.Popen(natsedge("sim", "--scenario", str(path), "--workdir", str(workdir), "--js", "off"),
                            cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = Lines(proc)
    try:
        out.wait_for(r"hub restart \(down 60 s\)", 30)
        proc.send_signal(signal.SIGINT)
        out.wait_for(r"interrupted: stopping the fleet", 10)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=25) == 0, "\n".join(out.lines)  # well before the hub would be back
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out.thread.join(timeout=5)
    text = "\n".join(out.lines)
    assert "interrupted again: stopping without the flush" in text and "(interrupted)" in text, text
    assert "hub is back" not in text and "no stop reply from edge-0, edge-1" in text, text
    assert re.search(r"processes: 3 started, 0 left running", text), text
    assert processes_in(workdir) == []


def test_dashboard_command(tmp_path: Path) -> None:
    """`natsedge dashboard` alone: the hub's figures and its leafs, for any hub with a monitoring port."""
    port, http_port, leaf_port, dash_port = free_port(), free_port(), free_port(), free_port()
    conf = tmp_path / "ns.conf"
    conf.write_text(f"leafnodes {{\n  listen: 127.0.0.1:{leaf_port}\n}}\n")
    ns = subprocess.Popen([nats_server_binary(), "-a", "127.0.0.1", "-p", str(port), "-m", str(http_port), "-js",
                           "-sd", str(tmp_path / "js"), "-c", str(conf)], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
    dash = subprocess.Popen(natsedge("dashboard", "--monitor", f"http://127.0.0.1:{http_port}", "--nats",
                                     f"nats://127.0.0.1:{port}", "--listen", f"127.0.0.1:{dash_port}"),
                            cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = Lines(dash)
    try:
        url = out.wait_for(r"natsedge dashboard: (http://\S+)", 20).group(1)
        deadline = time.monotonic() + 20
        while True:
            state = get_json(url + "state.json")
            # the hub's view is fetched (and cached) apart from the observer: it may predate its connection
            if state["hub"].get("reachable") and state["sim"]["observer_connected"] \
                    and (state["hub"].get("server") or {}).get("connections", 0) >= 1:
                break
            assert time.monotonic() < deadline, state
            time.sleep(0.2)
        assert state["source"] == "hub" and state["edges"] == []
        assert state["hub"]["server"]["connections"] >= 1  # the dashboard's own $EDGE.*.* subscriber
        assert state["hub"]["jetstream"] is not None and state["hub"]["jetstream"]["stream_list"] == []
        # an edge's store-and-forward status (edge/leaf/forward.py's shape) and a gap marker, as a device sends them
        forward = {"edge": "kitchen-1", "up": False, "queues": [{"name": "tele", "backlog": 7}, {"name": "b",
                                                                                                 "backlog": 3}]}
        with Raw(port) as c:
            c.handshake()
            c.send(pub("$EDGE.kitchen-1.forward", json.dumps(forward).encode()))
            c.send(pub("$EDGE.kitchen-1.gap", b'{"reason": "drop_oldest", "count": 2}'))
            c.sync()
        deadline = time.monotonic() + 10
        while not (state["edges"] and "gap" in state["edges"][0]["status"]["counts"]):
            assert time.monotonic() < deadline, state
            time.sleep(0.2)
            state = get_json(url + "state.json")
        (edge,) = state["edges"]
        assert edge["name"] == "kitchen-1" and edge["state"] == "not connected" and not edge["link_up"]
        assert edge["status"]["backlog"] == 10 and edge["status"]["last"]["forward"] == forward
        assert edge["status"]["counts"] == {"forward": 1, "gap": 1}
        dash.send_signal(signal.SIGINT)
        assert dash.wait(timeout=10) == 0
    finally:
        for p in (dash, ns):
            if p.poll() is None:
                p.terminate()
                p.wait(timeout=10)


def test_dashboard_bad_flags(tmp_path: Path) -> None:
    p = subprocess.run(natsedge("dashboard", "--monitor", "http://127.0.0.1:1", "--listen", "x:y"), cwd=tmp_path,
                       env=_env(), capture_output=True, text=True, timeout=30)
    assert p.returncode == 2 and "expected HOST:PORT" in p.stderr and "Traceback" not in p.stderr, p.stderr


# ---- scenario parsing (no processes) --------------------------------------------------------------------------------


def test_scenario_defaults_and_selectors() -> None:
    s = scenario_mod.parse({})
    scenario_mod.validate(s)
    assert s.edges == 3 and s.duration == 30 and s.publish[0].subject == "sim.{edge}.tele"
    s = scenario_mod.parse({"edges": 5, "publish": [{"subject": "a.{edge}", "edges": [0, "edge-2"]}],
                            "faults": [{"type": "crash", "at": 1, "edges": {"random": 2}}]})
    scenario_mod.validate(s)
    assert [p.subject for p in s.publishers_for("edge-2")] == ["a.{edge}"] and s.publishers_for("edge-1") == []
    import random

    picks = [s.select(s.faults[0].edges, random.Random(7)) for _ in range(2)]
    assert picks[0] == picks[1] and len(picks[0]) == 2  # the seed decides
    assert s.select("all", random.Random(0)) == [f"edge-{i}" for i in range(5)]
    assert scenario_mod.parse(s.to_json()).to_json() == s.to_json()  # the report's copy reads back


# ---- soak -----------------------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_fleet_soak(side: str, tmp_path: Path) -> None:
    """10 edges for 90 s with random partitions of both kinds, crashes and two hub restarts."""
    scenario = {
        "name": "soak", "edges": 10, "duration": 90, "settle": 10, "seed": 7,
        "publish": [{"subject": "sim.{edge}.tele", "rate": 5, "size": 64},
                    {"subject": "sim.{edge}.slow", "rate": 0.5, "size": 512}],
        "requests": {"rate": 1, "timeout": 1},
        "faults": [
            {"type": "partition", "at": 5, "every": 12, "for": 5, "edges": {"random": 3}, "mode": "blackhole"},
            {"type": "partition", "at": 9, "every": 15, "for": 2, "edges": {"random": 2}, "mode": "reset"},
            {"type": "crash", "at": 7, "every": 10, "edges": {"random": 2}, "down": 1},
            {"type": "hub_restart", "at": 30, "every": 40, "down": 1},
        ],
    }
    p, report = run_sim(tmp_path, scenario, "--hub", SIM_SIDE[side], "--js", "off", timeout=300)
    assert p.returncode == 0, p.stderr + p.stdout
    assert report is not None
    check_stopped(report, tmp_path / "work")
    check_accounting(report)
    t = report["totals"]
    assert report["hub"]["restarts"] == 2
    assert t["crashes"] >= 10 and t["crashes_survived"] == t["crashes"], t
    assert t["partitions"] >= 10 and t["recovery_partition"]["count"] + t["partitions_link_survived"] >= 1, t
