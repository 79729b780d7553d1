"""What the dashboard computes for its page, without processes: the hub's rates between its own fetches, the history
the charts draw, the frozen 32-bit heap reference, and the edge figures the simulator reads from an edge's output."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from sim import dashboard
from sim.dashboard import CHART_EDGES, History, HubMonitor, frozen32_reference
from sim.fleet import Edge
from sim.procs import ProcessTable
from sim.scenario import Scenario


class FakeHub:
    """Answers HubMonitor's GETs from counters the test sets; a clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.varz: dict[str, Any] = {"in_msgs": 0, "out_msgs": 0, "in_bytes": 0, "out_bytes": 0}
        self.leafs: list[dict[str, Any]] = []

    async def get(self, path: str) -> Any:
        if path == "/varz":
            return dict(self.varz)
        if path == "/leafz":
            return {"leafs": [dict(x) for x in self.leafs]}
        return None


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> FakeHub:
    fake = FakeHub()
    monkeypatch.setattr(dashboard.time, "monotonic", lambda: fake.now)
    monkeypatch.setattr(HubMonitor, "_get", lambda self, path: fake.get(path))
    return fake


def test_hub_rates_come_from_the_counters_between_fetches(hub: FakeHub) -> None:
    mon = HubMonitor("http://hub:8222", ttl=0.5)

    async def go() -> None:
        hub.varz.update(in_msgs=100, out_msgs=300)
        first = await mon.view()
        assert first["rates"] is None  # one fetch: no rate yet (the page shows "-")
        hub.now += 2.0
        hub.varz.update(in_msgs=120, out_msgs=340, in_bytes=2000, out_bytes=4000)
        v = await mon.view()
        assert v["rates"] == {"in_msgs": 10.0, "out_msgs": 20.0, "in_bytes": 1000.0, "out_bytes": 2000.0}
        assert v["rates_interval_s"] == 2.0
        # A poll within the cache period gets the same view: the rate stays what it was. (The page used to divide
        # two polls' counters itself: two polls inside one cache period had equal counters and read 0 msgs/s.)
        hub.now += 0.2
        hub.varz.update(in_msgs=999)
        assert (await mon.view())["rates"]["in_msgs"] == 10.0
        # a restarted hub counts from 0 again: no rate for that interval rather than a negative one
        hub.now += 1.0
        hub.varz.update(in_msgs=5, out_msgs=5, in_bytes=50, out_bytes=50)
        assert (await mon.view())["rates"] == dict.fromkeys(("in_msgs", "out_msgs", "in_bytes", "out_bytes"))
        hub.now += 1.0
        hub.varz.update(in_msgs=15)
        assert (await mon.view())["rates"]["in_msgs"] == 10.0

    asyncio.run(go())


def test_leaf_rates_per_connection(hub: FakeHub) -> None:
    mon = HubMonitor("http://hub:8222", ttl=0.5)

    async def go() -> None:
        hub.leafs = [{"name": "edge-0", "ip": "127.0.0.1", "port": 5000, "in_msgs": 10, "out_msgs": 0}]
        await mon.view()
        hub.now += 1.0
        hub.leafs[0]["in_msgs"] = 15
        (leaf,) = (await mon.view())["leafs"]
        assert leaf["rates"]["in_msgs"] == 5.0
        # the edge reconnected: a new connection (another port) with counters from 0 has no rate yet
        hub.now += 1.0
        hub.leafs = [{"name": "edge-0", "ip": "127.0.0.1", "port": 5001, "in_msgs": 30, "out_msgs": 0}]
        (leaf,) = (await mon.view())["leafs"]
        assert leaf["rates"] is None

    asyncio.run(go())


def _state(rates: dict[str, float] | None, edges: dict[str, int | None]) -> dict[str, Any]:
    return {"hub": {"rates": rates, "leafs": [{"name": n, "rates": {"in_msgs": 2.0}} for n in edges]},
            "edges": [{"name": n, "backlog": b} for n, b in edges.items()]}


def test_history_columns_and_bounds() -> None:
    h = History(size=4)
    h.add(1.0, _state(None, {"edge-0": 0}))
    h.add(2.0, _state({"in_msgs": 5.0, "out_msgs": 7.5}, {"edge-0": 3, "edge-1": None}))
    h.add(3.0, _state({"in_msgs": 6.0, "out_msgs": 8.0}, {"edge-1": 1}))  # edge-0 gone from the state
    j = h.to_json()
    assert j["t"] == [1.0, 2.0, 3.0] and j["hub_in"] == [None, 5.0, 6.0] and j["hub_out"] == [None, 7.5, 8.0]
    assert j["edges"]["edge-0"] == {"backlog": [0, 3, None], "leaf_in": [2.0, 2.0, None]}
    assert j["edges"]["edge-1"] == {"backlog": [None, None, 1], "leaf_in": [None, 2.0, 2.0]}  # padded
    for t in (4.0, 5.0, 6.0):
        h.add(t, _state(None, {"edge-0": 1}))
    j = h.to_json()
    assert j["t"] == [3.0, 4.0, 5.0, 6.0] and all(len(c) == 4 for cols in j["edges"].values() for c in cols.values())
    json.dumps(j)
    many = History()
    many.add(0.0, _state(None, {f"e{i:03d}": i for i in range(CHART_EDGES + 5)}))
    assert len(many.to_json()["edges"]) == CHART_EDGES


def test_frozen32_reference() -> None:
    ref = frozen32_reference({"lan": False, "uplink": True, "forward": True, "kv": False})
    assert ref is not None and ref["ready"] == 22688 and "forward queue" in ref["config"]
    assert "docs/benchmarks.md" in ref["source"]
    assert frozen32_reference({"uplink": True})["ready"] == 16128  # type: ignore[index]
    assert frozen32_reference({"kv": True, "forward": True, "uplink": True})["ready"] == 34656  # type: ignore[index]
    assert frozen32_reference({}) is None and frozen32_reference(None) is None


def test_edge_reads_its_ready_heap_and_forward_status(tmp_path: Path) -> None:
    scenario = Scenario(extra_config={"forward": [{"subjects": ["sim.*.tele"], "stream": "SIM"}]})
    clock = [5.0]
    edge = Edge(0, "edge-0", scenario, tmp_path, ProcessTable(), "micropython", "nats-leaf://127.0.0.1:1", None,
                lambda: clock[0], lambda text: None)
    edge._line("edge: ready name=edge-0 listen=- hub=nats-leaf://127.0.0.1:1 heap=110512", 1)
    edge._line("edge: stats heap=118656 peak=118784 free=1954176 up=1", 1)
    status = {"edge": "edge-0", "up": False, "queues": [{"name": "SIM", "backlog": 12}, {"name": "b", "backlog": 3}]}
    edge._line("edge: fwdstatus " + json.dumps(status), 1)
    edge._line("edge: fwdstatus {not json", 1)  # ignored
    clock[0] = 6.5
    snap = edge.snapshot(clock[0])
    assert snap["heap"] == {"last": 118656, "peak": 118784, "min_free": 1954176, "ready": 110512}
    assert snap["parts"] == {"lan": False, "uplink": True, "forward": True, "kv": False}
    assert snap["backlog"] == 15 and snap["backlog_age_s"] == 1.5 and snap["forward"] == status
    # an edge whose output has no forward status: what reached the hub on $EDGE.edge-1.forward
    other = Edge(1, "edge-1", scenario, tmp_path, ProcessTable(), "micropython", "nats-leaf://127.0.0.1:1", None,
                 lambda: clock[0], lambda text: None)
    other.set_status("forward", json.dumps(dict(status, queues=[{"name": "SIM", "backlog": 4}])).encode())
    clock[0] = 7.0
    assert other.snapshot(7.0)["backlog"] == 4 and other.snapshot(7.0)["backlog_age_s"] == 0.5
