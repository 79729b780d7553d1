"""`natsedge sim` with a cluster of hubs: nodes started in nats-server config syntax and routed to each other, a node
killed by PID and started again on its ports, edges spread over the nodes, failovers and losses per edge.

The process runs use nats-server nodes (our hub reads the `cluster {}` block but does not route yet); the runs with
our hub's nodes expect to fail with the hub's own reason until it does, and then check the same as the others.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from sim import scenario as scenario_mod
from sim.fleet import Edge
from sim.hub import ManagedHub, jetstream_nodes, route_peers
from sim.procs import ProcessTable
from tests.sim.test_sim import REPO, _env, check_stopped, natsedge, pid_alive, run_sim

# 3 nodes, one edge on each (edge i starts on node i % 3), node 2 killed for 3.5 s.
KILL_SCENARIO: dict[str, Any] = {
    "name": "cluster-ci",
    "hubs": 3,
    "edges": 3,
    "duration": 11,
    "settle": 6,
    "publish": [{"subject": "sim.{edge}.tele", "rate": 10, "size": 24}],
    "requests": {"rate": 2, "timeout": 1},
    "faults": [
        {"type": "hub_kill", "at": 2.5, "node": 2},
        {"type": "hub_start", "at": 6, "node": 2},
    ],
}

# What our hub says while it reads `cluster {}` without routing (or when it refuses the block).


def check_cluster_edges(report: dict[str, Any]) -> None:
    """What must hold for every edge of a cluster run."""
    for e in report["edges"]:
        m = e["messages"]
        where = f"{e['name']}: {m}"
        assert m["published"] > 0 and m["received"] > 0, where  # every node's edges reach the simulator: routes
        assert m["received"] + m["lost"] == m["published"], where
        assert m["duplicates"] == 0 and m["unmatched"] == 0, where
        assert m["published_clean"] > 0 and m["lost_clean"] == 0, where
        assert e["unexpected_exits"] == 0 and e["stop_acked"] and e["stopped_cleanly"], e
        assert e["requests"]["ok"] > 0, e


def check_kill_run(p: subprocess.CompletedProcess[str], report: dict[str, Any] | None, tmp_path: Path,
                   kinds: list[str]) -> None:
    assert p.returncode == 0, p.stderr + p.stdout
    assert "Traceback" not in p.stderr, p.stderr
    assert report is not None
    check_stopped(report, tmp_path / "work")
    check_cluster_edges(report)
    assert report["scenario"]["hubs"] == 3 and report["scenario"]["hub_kinds"] == kinds
    assert report["hub"]["kind"] == "cluster"
    n1, n2, n3 = report["hubs"]
    assert [n["name"] for n in report["hubs"]] == ["n1", "n2", "n3"] and [n["kind"] for n in report["hubs"]] == kinds
    assert (n2["kills"], n2["starts"]) == (1, 1) and n1["kills"] == n3["kills"] == 0, report["hubs"]
    assert all(n["state"] == "stopped" for n in report["hubs"]), report["hubs"]
    assert len({n["client_url"] for n in report["hubs"]}) == 3
    assert all(n["cluster_url"].startswith("nats-route://127.0.0.1:") for n in report["hubs"])
    kill, start = report["faults"]
    assert (kill["type"], kill["node"], start["type"], start["node"]) == ("hub_kill", "n2", "hub_start", "n2")
    assert kill["pid"] != n2["pid"] and not pid_alive(kill["pid"])  # killed by PID, a new process afterwards ...
    log = (tmp_path / "work" / "hub" / "n2" / "hub.log").read_text()
    port = n2["client_url"].rsplit(":", 1)[1]
    assert log.count(f"127.0.0.1:{port}") >= 2, log[-2000:]  # ... on the same ports
    e0, e1, e2 = report["edges"]
    assert [e["hub"]["first_node"] for e in report["edges"]] == ["n1", "n2", "n3"]  # edge i starts on node i % 3
    for e in (e0, e2):  # their nodes stayed up
        assert e["disconnects"] == 0 and e["recovery"]["hub_kill"]["count"] == 0, e
        assert e["hub"]["node"] == e["hub"]["first_node"] and e["hub"]["node_switches"] == 0, e
    # edge-1 lost its node: it came back, on another node (a failover) or on n2 once started again
    assert e1["disconnects"] >= 1 and e1["recovery"]["hub_kill"]["count"] == 1, e1
    assert report["hub"]["edge_urls"] == "all nodes"
    assert e1["hub"]["node_switches"] >= 1 and e1["hub"]["node"] in ("n1", "n3"), e1["hub"]
    for e in report["edges"]:  # failovers as the edge reports them, or null when it does not
        assert e["hub"]["failovers"] is None or isinstance(e["hub"]["failovers"], int), e["hub"]
    text = p.stdout
    assert 'natsedge sim: scenario "cluster-ci": 3 edges' in text and "hub cluster" in text
    kind = {"hub": "hub", "nats-server": "nats-server"}
    assert (f"hub nodes: n1 ({kind[kinds[0]]}); n2 ({kind[kinds[1]]}, killed 1x, started again 1x); "
            f"n3 ({kind[kinds[2]]})") in text, text
    assert "uplink back after hub kill: 1 times" in text
    assert "outside fault windows: 0 of" in text


def test_cluster_of_nats_servers_node_killed_and_started(tmp_path: Path) -> None:
    p, report = run_sim(tmp_path, KILL_SCENARIO, "--hub", "nats-server", "--js", "off")
    check_kill_run(p, report, tmp_path, ["nats-server"] * 3)


@pytest.mark.parametrize("kinds", [
    "hub,hub,hub",
    pytest.param("natsedge,nats-server,natsedge", marks=pytest.mark.slow),
])
def test_cluster_with_our_hub_nodes(tmp_path: Path, kinds: str) -> None:
    """Clusters of our hubs, and mixed ones, pass as the nats-server cluster does."""
    p, report = run_sim(tmp_path, KILL_SCENARIO, "--hub", kinds, "--js", "off")
    normalized = [scenario_mod.hub_kind(k) or k for k in kinds.split(",")]
    check_kill_run(p, report, tmp_path, normalized)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_cluster_scenario_file(tmp_path: Path) -> None:
    """sim/scenarios/cluster.json as shipped, on nats-server nodes with JetStream on all three (an R1 stream) and the
    edges' store-and-forward queue: node 2 killed and started again, a partition, nothing lost."""
    doc = json.loads((REPO / "sim" / "scenarios" / "cluster.json").read_text())
    p, report = run_sim(tmp_path, doc, "--hub", "nats-server", timeout=200)
    assert p.returncode == 0, p.stderr + p.stdout
    assert report is not None
    check_stopped(report, tmp_path / "work")
    assert report["hub"]["jetstream"] is True and all(n["jetstream"] for n in report["hubs"])
    assert report["stream"].startswith("created (R1, on n"), report["stream"]
    assert report["hubs"][1]["kills"] == 1 and report["hubs"][1]["starts"] == 1
    for e in report["edges"]:
        m = e["messages"]
        assert m["duplicates"] == 0 and m["unmatched"] == 0 and m["lost_clean"] == 0, (e["name"], m)
        assert m["received"] > 0 and e["stop_acked"], e
    on_n2 = [e for e in report["edges"] if e["hub"]["first_node"] == "n2"]
    assert [e["name"] for e in on_n2] == ["edge-1", "edge-4"]
    assert all(e["recovery"]["hub_kill"]["count"] == 1 for e in on_n2), on_n2
    assert report["edges"][0]["partitions"] == 1


# ---- bad input: one line, exit 2 -------------------------------------------------------------------------------------

BAD_CLUSTER_SCENARIOS = [
    ({"hubs": 0}, '"hubs": expected an integer >= 1 and <= 7, got 0'),
    ({"hubs": "3"}, '"hubs": expected an integer >= 1 and <= 7, got "3"'),
    ({"hubs": 9}, '"hubs": expected an integer >= 1 and <= 7, got 9'),
    ({"hub_kinds": "nats-server"}, '"hub_kinds": expected null or a list of 1..7 hub kinds'),
    ({"hub_kinds": []}, '"hub_kinds": expected null or a list of 1..7 hub kinds'),
    ({"hub_kinds": ["natsedge", "go"]},
     '"hub_kinds": node 2: expected "natsedge" (or "hub") or "nats-server", got "go"'),
    ({"hubs": 3, "hub_kinds": ["nats-server"]}, '"hub_kinds": lists 1 kind for 3 hubs'),
    ({"hubs": 3, "faults": [{"type": "hub_kill", "at": 1}]}, 'fault 0: "node" is required for a hub_kill'),
    ({"hubs": 3, "faults": [{"type": "hub_start", "at": 1}]}, 'fault 0: "node" is required for a hub_start'),
    ({"hubs": 3, "faults": [{"type": "hub_kill", "at": 1, "node": 4}]},
     'fault 0: "node": hub node 4 does not exist (the run has 3 hubs, 1..3)'),
    ({"faults": [{"type": "hub_kill", "at": 1, "node": 2}]}, "hub node 2 does not exist (the run has 1 hub, 1..1)"),
    ({"hubs": 3, "faults": [{"type": "hub_kill", "at": 1, "node": 0}]}, '"node": expected an integer >= 1'),
    ({"hubs": 3, "faults": [{"type": "hub_restart", "at": 1, "node": "n2"}]}, '"node": expected an integer >= 1'),
    ({"hubs": 3, "faults": [{"type": "hub_start", "at": 1, "node": 2, "down": 1}]}, 'fault 0: unknown key "down"'),
    ({"hubs": 3, "faults": [{"type": "hub_kill", "at": 1, "node": 2, "down": -1}]}, '"down": expected a number >= 0'),
    ({"hubs": 3, "faults": [{"type": "hub_kill", "at": 1, "node": 2, "edges": [0]}]}, 'fault 0: unknown key "edges"'),
    ({"faults": [{"type": "hub_crash", "at": 1}]}, '"type": expected "partition" or "crash" or "hub_restart" or '
                                                   '"hub_kill" or "hub_start"'),
]


@pytest.mark.parametrize("doc,message", BAD_CLUSTER_SCENARIOS, ids=[m[:40] for _, m in BAD_CLUSTER_SCENARIOS])
def test_bad_cluster_scenario_is_a_clear_error(tmp_path: Path, doc: Any, message: str) -> None:
    # parse + validate in-process (what the command runs first), then one command line for the message's form
    with pytest.raises(scenario_mod.ScenarioError) as err:
        s = scenario_mod.parse(doc)
        scenario_mod.resolve_hubs(s, None, None)
        scenario_mod.validate(s)
    assert message in str(err.value) and "\n" not in str(err.value), str(err.value)


BAD_CLUSTER_FLAGS = [
    (["--hubs", "0"], "--hubs: expected 1..7"),
    (["--hubs", "three"], "--hubs: expected an integer"),
    (["--hub", "hub,go"], "--hub: unknown hub kind 'go' in 'hub,go'"),
    (["--hub", "hub,,hub"], "--hub: unknown hub kind '' in 'hub,,hub'"),
    (["--hubs", "2", "--hub", "hub,hub,nats-server"], "--hub lists 3 kinds but --hubs is 2"),
    (["--hubs", "3", "--hub", "nats://127.0.0.1:4222"], "--hub nats://127.0.0.1:4222: an external hub is one server"),
]


@pytest.mark.parametrize("flags,message", BAD_CLUSTER_FLAGS, ids=[" ".join(f) for f, _ in BAD_CLUSTER_FLAGS])
def test_bad_cluster_flags_are_a_clear_error(tmp_path: Path, flags: list[str], message: str) -> None:
    p = subprocess.run(natsedge("sim", "--workdir", str(tmp_path / "work"), *flags), cwd=tmp_path, env=_env(),
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 2, p.stdout + p.stderr
    assert message in p.stderr and "Traceback" not in p.stderr, p.stderr
    if not p.stderr.startswith("usage:"):  # argparse's own errors come after its usage text, as for every flag
        assert p.stderr.startswith("natsedge sim: ") and p.stderr.count("\n") == 1, p.stderr
    assert not (tmp_path / "work").exists()


@pytest.mark.parametrize("doc,flags,message", [
    ({"hubs": 3, "hub_kinds": ["nats-server"] * 3}, ["--hubs", "2"],
     "--hubs 2: the scenario's \"hub_kinds\" lists 3 kinds"),
    ({"hubs": 3, "faults": [{"type": "hub_kill", "at": 1, "node": 2}]}, ["--hubs", "1"],
     'fault 0: "node": hub node 2 does not exist (the run has 1 hub, 1..1)'),
    ({"faults": [{"type": "hub_kill", "at": 1, "node": 1}]}, ["--hub", "nats://127.0.0.1:4222"],
     "the scenario has hub faults (hub_kill), which needs a hub started by the simulator"),
    ({"hubs": 2}, ["--hub", "nats://127.0.0.1:4222"], "an external hub is one server"),
    ({"hubs": 2, "hub_kinds": ["nats-server", "natsedge", "hub"]}, [], '"hub_kinds": lists 3 kinds for 2 hubs'),
], ids=["hubs-vs-kinds", "node-gone", "external-kill", "external-cluster", "kinds-count"])
def test_cluster_scenario_and_flags_together(tmp_path: Path, doc: Any, flags: list[str], message: str) -> None:
    path = tmp_path / "s.json"
    path.write_text(json.dumps(doc))
    p = subprocess.run(natsedge("sim", "--scenario", str(path), "--workdir", str(tmp_path / "work"), *flags),
                       cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=30)
    assert p.returncode == 2, p.stdout + p.stderr
    assert message in p.stderr and p.stderr.count("\n") == 1 and "Traceback" not in p.stderr, p.stderr
    assert not (tmp_path / "work").exists()


# ---- no processes ---------------------------------------------------------------------------------------------------


def test_cluster_scenario_keys_and_flags() -> None:
    doc = json.loads((REPO / "sim" / "scenarios" / "cluster.json").read_text())
    s = scenario_mod.parse(doc)
    scenario_mod.resolve_hubs(s, None, None)
    scenario_mod.validate(s)
    assert s.hubs == 3 and s.hub_kinds == ["hub"] * 3  # the file leaves the kinds to --hub; ours by default
    assert [(f.type, f.node) for f in s.faults if f.type.startswith("hub")] == [("hub_kill", 2), ("hub_start", 2)]
    assert scenario_mod.parse(s.to_json()).to_json() == s.to_json()  # the report's copy reads back
    s = scenario_mod.parse({"hub_kinds": ["natsedge", "nats-server", "hub"]})
    assert s.hubs == 3 and s.hub_kinds == ["hub", "nats-server", "hub"]  # hubs follows hub_kinds; natsedge = hub
    scenario_mod.resolve_hubs(s, None, ["nats-server"])
    assert s.hub_kinds == ["nats-server"] * 3  # --hub KIND: every node
    s = scenario_mod.parse({})
    scenario_mod.resolve_hubs(s, None, ["hub", "nats-server"])
    assert (s.hubs, s.hub_kinds) == (2, ["hub", "nats-server"])  # --hub K1,K2: one per node
    s = scenario_mod.parse({})
    scenario_mod.resolve_hubs(s, 3, None)
    assert (s.hubs, s.hub_kinds) == (3, ["hub"] * 3)
    s = scenario_mod.parse({"hubs": 2, "faults": [{"type": "hub_kill", "at": 1, "node": 2, "down": None},
                                                  {"type": "hub_kill", "at": 2, "node": 1, "down": 3},
                                                  {"type": "hub_restart", "at": 3, "node": 2}]})
    assert [f.down for f in s.faults] == [None, 3.0, 1.0]
    assert [f.describe() for f in s.faults] == ["hub node 2 kill (SIGKILL)",
                                                "hub node 1 kill (SIGKILL, restart after 3 s)",
                                                "hub node 2 restart (down 1 s)"]
    assert scenario_mod.parse(s.to_json()).to_json() == s.to_json()


def test_jetstream_placement_rule() -> None:
    assert jetstream_nodes(["nats-server"] * 3) == [0, 1, 2]  # a JetStream cluster
    assert jetstream_nodes(["hub"] * 3) == [0]  # ours do not replicate: node 1 only
    assert jetstream_nodes(["hub", "nats-server", "hub"]) == [0]
    assert jetstream_nodes(["nats-server", "hub", "nats-server"]) == [1]  # never a lone nats-server


def test_route_peers_by_name_or_id(tmp_path: Path) -> None:
    nodes = [ManagedHub("hub", tmp_path / f"n{i}", ProcessTable(), name=f"n{i}") for i in (1, 2, 3)]
    nodes[2].server_id = "NCID3"
    # nats-server: a pool of routes per peer, named both ways
    routez = {"routes": [{"remote_id": "NXID2", "remote_name": "n2"}] * 3 + [{"remote_id": "NCID3"}]}
    assert route_peers(routez, nodes) == {"n2", "n3"}
    assert route_peers({"routes": [{"remote_id": "n1"}, {"remote_name": "NCID3"}, {"remote_id": "other"}]},
                       nodes) == {"n1", "n3"}
    assert route_peers({"num_routes": 0, "routes": []}, nodes) == set() == route_peers({}, nodes)
    assert route_peers({"routes": [None, 3, {"remote_name": 7}]}, nodes) == set()


def test_node_config_is_nats_server_syntax_and_our_hub_reads_it(tmp_path: Path) -> None:
    node = ManagedHub("hub", tmp_path / "n2", ProcessTable(), name="n2")
    node.cluster_port, node.routes = 16222, [16221, 16223]
    text = node.config_text()
    assert "server_name: n2\n" in text
    assert ("cluster {\n  name: sim\n  listen: 127.0.0.1:16222\n"
            "  routes: [nats-route://127.0.0.1:16221, nats-route://127.0.0.1:16223]\n}") in text
    assert f"leafnodes {{\n  listen: 127.0.0.1:{node.leaf_port}\n  no_advertise: true\n}}" in text
    conf = tmp_path / "n2.conf"
    conf.write_text(text)
    p = subprocess.run(natsedge("hub", "-t", "-c", str(conf)), cwd=tmp_path, env=_env(), capture_output=True,
                       text=True, timeout=30)
    assert p.returncode == 0 and "is valid" in p.stderr, p.stderr
    single = ManagedHub("nats-server", tmp_path / "hub", ProcessTable())
    assert single.config_text() == f"leafnodes {{\n  listen: 127.0.0.1:{single.leaf_port}\n}}\n"  # as before


class _Running:
    pid = 1
    returncode = None


def test_edge_node_and_failovers_from_its_lines(tmp_path: Path) -> None:
    """Which node an edge is on comes from the address of its `uplink up hub=...` line; failovers and hub_url from
    its stats line or status messages when it reports them, else null."""

    async def go() -> None:
        events: list[str] = []
        node_of = {"127.0.0.1:5001": "n1", "127.0.0.1:5002": "n2", "127.0.0.1:7422": "n1"}
        e = Edge(0, "edge-0", scenario_mod.Scenario(), tmp_path, ProcessTable(), "micropython",
                 ["nats-leaf://127.0.0.1:5001", "nats-leaf://127.0.0.1:5002"], None, lambda: 1.0, events.append,
                 node_of)
        e.proc = _Running()  # type: ignore[assignment]
        snap = e.snapshot(1.0)["hub"]
        assert snap == {"urls": ["nats-leaf://127.0.0.1:5001", "nats-leaf://127.0.0.1:5002"], "first_node": "n1",
                        "node": None, "node_switches": 0, "failovers": None, "hub_url": None}
        e._line("edge: uplink up hub=127.0.0.1:5001", 1)
        e.node_lost("hub_kill", 0.5)
        e._line("edge: uplink down reason=closed by hub", 1)
        e._line("edge: uplink up hub=nats-leaf://127.0.0.1:5002", 1)
        e._line("edge: stats heap=1 peak=2 free=3 failovers=1 hub_url=nats-leaf://127.0.0.1:5002", 1)
        snap = e.snapshot(1.0)["hub"]
        assert (snap["node"], snap["node_switches"], snap["failovers"]) == ("n2", 1, 1), snap
        assert snap["hub_url"] == "nats-leaf://127.0.0.1:5002"
        assert e.recovery["hub_kill"] == [0.5] and not e.node_wait
        e.set_status("status", json.dumps({"failovers": 2, "hub_url": "nats-leaf://127.0.0.1:7422"}).encode())
        e._line("edge: uplink up hub=127.0.0.1:7422", 1)
        snap = e.snapshot(1.0)["hub"]
        assert (snap["node"], snap["node_switches"], snap["failovers"]) == ("n1", 2, 2), snap
        e._line("edge: uplink up hub=10.0.0.9:1", 1)  # an address the simulator does not know
        assert e.snapshot(1.0)["hub"]["node"] is None
        e._line("edge: uplink up", 1)  # no address at all: nothing known, nothing broken
        assert e.snapshot(1.0)["hub"]["node"] is None

    asyncio.run(go())
