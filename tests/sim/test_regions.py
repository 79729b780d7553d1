"""`natsedge sim` with regions: clusters joined by gateways into a super-cluster, queue workers in each region, a
region's workers killed and started again (sim/scenarios/regions.json, docs/sim.md "Regions").

The same scenario runs on nats-server, on our hubs and mixed; the report's per-region figures must show the queue
group's rule: a region's requests are served by its own workers while they run, by the other region's while they are
killed, and by its own again once they are back, with nothing lost that a fault does not explain.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from sim import scenario as scenario_mod
from sim.regions import Region
from tests.sim.test_cluster import check_cluster_edges
from tests.sim.test_sim import REPO, check_stopped, run_sim

SHIPPED = json.loads((REPO / "sim" / "scenarios" / "regions.json").read_text())


def check_regions_run(p: subprocess.CompletedProcess[str], report: dict[str, Any] | None, tmp_path: Path,
                      kinds: list[str], east_hubs: int) -> None:
    assert p.returncode == 0, p.stderr + p.stdout
    assert "Traceback" not in p.stderr, p.stderr
    assert report is not None
    check_stopped(report, tmp_path / "work")
    check_cluster_edges(report)  # every edge's telemetry reached the simulator, across the gateway for one region
    assert report["hub"]["kind"] == "super-cluster"
    east_nodes = [f"east-n{i + 1}" for i in range(east_hubs)]
    assert [n["name"] for n in report["hubs"]] == [*east_nodes, "west-n1"]
    assert [n["kind"] for n in report["hubs"]] == kinds
    kill, start = report["faults"]
    assert (kill["type"], kill["region"], start["type"], start["region"]) == (
        "workers_kill", "east", "workers_start", "east")
    east, west = report["regions"]
    assert (east["name"], east["nodes"], west["name"], west["nodes"]) == ("east", east_nodes, "west", ["west-n1"])
    n = len(report["edges"])
    assert east["edges"] == [f"edge-{i}" for i in range(0, n, 2)] and west["edges"] == [f"edge-{i}" for i in
                                                                                        range(1, n, 2)]
    for e in report["edges"]:  # an edge uplinks to its own region's nodes
        region = east if e["name"] in east["edges"] else west
        assert e["hub"]["first_node"] in region["nodes"], e["hub"]
    # east: its own workers, then west's while they are killed, then its own again
    assert [w["local_workers"] for w in east["windows"]] == ["up", "leaving", "down", "starting", "up"]
    before, leaving, killed, starting, after = east["windows"]
    # the down window opens when every worker has left, the last up window when all are subscribed again
    assert kill["t"] <= leaving["from"] <= killed["from"] <= start["t"] <= starting["from"] <= after["from"], (
        kill, start, east["windows"])
    for w in (leaving, starting):  # the workers' transitions: served by either region, none lost unexplained
        assert w["lost"] == 0 and w["local"] + w["remote"] + w["lost_in_fault"] == w["sent"], w
    for w in (before, after):
        assert w["sent"] > 0 and w["served_by"] == {"east": w["local"]} and w["remote"] == 0, w
        assert w["local"] == w["sent"] - w["lost_in_fault"], w
    assert killed["sent"] > 0 and killed["served_by"] == {"west": killed["remote"]} and killed["local"] == 0, killed
    assert killed["remote"] == killed["sent"] - killed["lost_in_fault"], killed
    # lost: none that no fault explains; requests go one at a time, so at most the one in flight at each event
    assert east["requests"]["lost"] == 0 and east["requests"]["lost_in_fault"] <= 2, east["requests"]
    # west kept its workers: everything served there, and it served east's requests while east had none
    assert [w["local_workers"] for w in west["windows"]] == ["up"]
    assert west["requests"]["sent"] > 0 and west["requests"]["local"] == west["requests"]["sent"], west["requests"]
    assert west["requests"]["lost"] == west["requests"]["lost_in_fault"] == 0, west["requests"]
    assert west["answered"] == west["requests"]["local"] + east["requests"]["remote"]
    assert east["answered"] == east["requests"]["local"]
    assert east["workers_running"] == west["workers_running"] == SHIPPED["service"]["workers"]
    text = p.stdout
    assert f"region east ({', '.join(east_nodes)}; edges {', '.join(east['edges'])}): " in text, text
    assert f"local workers down    : {killed['sent']} sent, served by west {killed['remote']}, 0 lost" in text, text


@pytest.mark.parametrize("kinds", ["nats-server", "hub"])
def test_regions_scenario_file(tmp_path: Path, kinds: str) -> None:
    """sim/scenarios/regions.json as shipped: one server per region, all nats-server or all ours."""
    p, report = run_sim(tmp_path, SHIPPED, "--hub", kinds)
    check_regions_run(p, report, tmp_path, [kinds] * 2, 1)


@pytest.mark.slow
@pytest.mark.parametrize("kinds", ["natsedge,nats-server,natsedge", "nats-server,hub,nats-server"])
def test_regions_mixed_with_a_two_node_region(tmp_path: Path, kinds: str) -> None:
    """East a cluster of two (routes) with one node of each kind, west one server: gateways between our hub and
    nats-server both ways."""
    doc = json.loads(json.dumps(SHIPPED))
    doc.update(edges=6, duration=12)
    doc["regions"][0]["hubs"] = 2
    doc["faults"][0]["at"], doc["faults"][1]["at"] = 4, 8
    p, report = run_sim(tmp_path, doc, "--hub", kinds)
    check_regions_run(p, report, tmp_path, [scenario_mod.hub_kind(k) or k for k in kinds.split(",")], 2)


@pytest.mark.parametrize("kinds", ["nats-server", "hub"])
def test_regions_hub_of_a_region_killed_and_started(tmp_path: Path, kinds: str) -> None:
    """West's only hub killed and started again: its edges come back to it (their region's node, not east's), the
    gateway forms again (the run waits for it) and their telemetry crosses it again; east's requests stay local."""
    doc = json.loads(json.dumps(SHIPPED))
    doc.update(duration=12, faults=[{"type": "hub_kill", "at": 3, "node": 2},
                                    {"type": "hub_start", "at": 6, "node": 2}])
    p, report = run_sim(tmp_path, doc, "--hub", kinds)
    assert p.returncode == 0, p.stderr + p.stdout
    assert report is not None
    check_stopped(report, tmp_path / "work")
    check_cluster_edges(report)
    assert report["hub"]["edge_urls"] == "region's nodes"
    assert [(n["name"], n["kills"], n["starts"]) for n in report["hubs"]] == [("east-n1", 0, 0), ("west-n1", 1, 1)]
    east, west = report["regions"]
    for e in report["edges"]:
        if e["name"] in west["edges"]:  # lost their node, back on it: the only one of their region
            assert e["recovery"]["hub_kill"]["count"] == 1 and e["hub"]["node"] == "west-n1", e
        else:
            assert e["disconnects"] == 0 and e["hub"]["node"] == "east-n1", e
    assert east["requests"]["sent"] > 0 and east["requests"]["local"] == east["requests"]["sent"], east["requests"]
    assert west["requests"]["local"] > 0 and west["requests"]["lost"] == 0, west["requests"]
    assert "edges were given their region's nodes' URLs" in p.stdout


# ---- bad input: one line naming the key ------------------------------------------------------------------------------

BAD_REGION_SCENARIOS = [
    ({"regions": [{"name": "east"}]}, '"regions": expected a list of 2..4 regions'),
    ({"regions": [{"name": "east"}, {"name": "east"}]}, 'region 1: "name": "east" is the name of region 0 too'),
    ({"regions": [{"name": "a.b"}, {"name": "c"}]}, 'region 0: "name": expected a non-empty name of letters'),
    ({"regions": [{"name": "a", "hubs": 0}, {"name": "b"}]}, 'region 0: "hubs": expected an integer >= 1'),
    ({"regions": [{"name": "a", "size": 1}, {"name": "b"}]}, 'region 0: unknown key "size"'),
    ({"service": {"workers": 2}}, '"service": the queue workers\' service needs "regions"'),
    ({"regions": [{"name": "a"}, {"name": "b"}], "service": {"workers": 0}}, 'service: "workers": expected an '
                                                                             "integer >= 1 and <= 20, got 0"),
    ({"regions": [{"name": "a"}, {"name": "b"}], "service": {"queue": "q.x"}}, 'service: "queue": expected a queue'),
    ({"regions": [{"name": "a"}, {"name": "b"}], "service": {"subject": "w.{edge}"}}, 'service: "subject": expected '
                                                                                      "a literal subject"),
    ({"regions": [{"name": "a"}, {"name": "b"}], "stream": {"name": "S"}}, '"stream": not with "regions"'),
    ({"regions": [{"name": "a"}, {"name": "b"}], "faults": [{"type": "workers_kill", "at": 1}]},
     'fault 0: "region" is required for a workers_kill'),
    ({"regions": [{"name": "a"}, {"name": "b"}], "faults": [{"type": "workers_kill", "at": 1, "region": "c"}]},
     'fault 0: "region": no region named "c" (regions: a, b)'),
    ({"faults": [{"type": "workers_start", "at": 1, "region": "a"}]},
     'fault 0: "region": no region named "a" (the scenario has no "regions")'),
    ({"regions": [{"name": "a"}, {"name": "b"}], "hubs": 3}, '"regions": their hubs add up to 2, but the run has 3'),
    ({"regions": [{"name": "a"}, {"name": "b"}], "edges": 1}, '"edges": 1 edges for 2 regions'),
]


@pytest.mark.parametrize(("doc", "error"), BAD_REGION_SCENARIOS)
def test_bad_region_scenarios_name_the_key(doc: dict[str, Any], error: str) -> None:
    with pytest.raises(scenario_mod.ScenarioError) as exc:
        s = scenario_mod.parse(doc)
        scenario_mod.resolve_hubs(s, None, None)
        scenario_mod.validate(s)
    assert error in str(exc.value) and "\n" not in str(exc.value)


def test_regions_scenario_round_trips() -> None:
    """The report's "scenario" (to_json) reads back as the same scenario, with regions or without."""
    s = scenario_mod.parse(SHIPPED)
    assert s.hubs == 2 and [r.name for r in s.regions] == ["east", "west"]
    assert [s.region_of_edge(i) for i in range(4)] == ["east", "west"] * 2
    again = scenario_mod.parse(s.to_json())
    assert again.to_json() == s.to_json()
    plain = scenario_mod.parse({"edges": 2})  # without regions, nothing of them in the report's scenario
    assert "regions" not in plain.to_json() and scenario_mod.parse(plain.to_json()).to_json() == plain.to_json()


def test_a_request_in_flight_when_the_workers_change_counts_in_the_transition() -> None:
    """Seen on nats-server: a request sent a moment before the workers began to leave reached the hub after their
    UNSUBs and was served by the other region. It counts in "leaving" (either region may serve it), as one still
    waiting when new workers subscribed counts in "starting"; one answered before a change stays where it was sent."""
    s = scenario_mod.parse(SHIPPED)
    region = Region("east", ["nats://127.0.0.1:4222"], s.service, lambda: 0.0)
    region.worker_events = [(5.0, "leaving"), (5.01, "down"), (10.0, "starting"), (10.5, "up")]
    region.requests = [
        (4.8, 4.81, "local"),          # up: answered before the workers began to leave
        (4.999, 5.02, "remote:west"),  # sent while up, answered after they left: leaving
        (5.005, 5.03, "remote:west"),  # sent while leaving, answered after down: leaving
        (7.0, 7.01, "remote:west"),    # down
        (9.99, 10.2, "local"),         # sent while down, served by a new worker: starting
        (10.49, 10.6, "local"),        # sent while starting, answered once all were up: starting
        (11.0, 11.01, "local"),        # up
    ]
    windows = region.report(["east-n1"], [], [5.0, 10.0], 16.0)["windows"]
    assert [(w["local_workers"], w["served_by"]) for w in windows] == [
        ("up", {"east": 1}), ("leaving", {"west": 2}), ("down", {"west": 1}), ("starting", {"east": 2}),
        ("up", {"east": 1})]
    assert [(w["from"], w["to"]) for w in windows] == [(0.0, 5.0), (5.0, 5.01), (5.01, 10.0), (10.0, 10.5),
                                                       (10.5, 16.0)]
