"""Edges fail over (issue 12 item 3): a MicroPython edge whose hub node dies moves to another node of the hub's
cluster, learnt from the `leafnode_urls` of the hub's INFO (the first one and async ones when peers join), and its
store-and-forward queue and KV cache carry on there: every acked record in the stream exactly once.

Real processes only: a cluster of 3 nodes (tests/edge/clusterharness.py) of nats-server (`nats`) or of our hub (`hub`,
the same config text), `micropython -m edge` edges, nats-py on the nodes' client ports. Our hub is skipped, with the
reason, only while it serves no routes for a `cluster {}` block; the same tests then run against it unchanged.
"""

from __future__ import annotations

import json
import re

import nats
import pytest

from tests.compat.harness import run, until_created
from tests.edge.clusterharness import Cluster
from tests.edge.edgeharness import edge_config, free_port, wait_until
from tests.edge.fwdharness import (
    HoldProxy,
    forward_config,
    msg_ids,
    payload_index,
    stream_last_seq,
    stream_messages,
    wait_drained,
)
from tests.edge.kvharness import ctl, edge_idle, hub_value, kv_edge_config, start_edge, wait_for

N_RECORDS = 600  # drained at 150/s: node 1 dies after about 100


@pytest.fixture
def clusters(side, tmp_path):
    """make(jetstream=True) -> a Cluster of 3 nodes of this side, not started; all are stopped at teardown."""
    made: list[Cluster] = []

    def make(jetstream: bool = True) -> Cluster:
        c = Cluster(side, tmp_path / f"cluster-{len(made)}", n=3, jetstream=jetstream)
        made.append(c)
        return c

    yield make
    for c in made:
        c.stop()


@pytest.fixture
def started():
    edges = []
    yield edges
    for e in edges:
        e.stop()


def _stats(edge) -> dict:
    """The edge's last `stats` line as a dict of strings."""
    for ln in reversed(list(edge.lines)):
        if ln.startswith("edge: stats "):
            return dict(p.split("=", 1) for p in ln.split()[2:] if "=" in p)
    return {}


def _up_on(edge, start: int = 0) -> list[str]:
    """host:port of every `uplink up` from line `start` on."""
    return [m.group(1) for ln in list(edge.lines)[start:] if (m := re.search(r"uplink up hub=(\S+)", ln))]


async def _nc(url):
    return await nats.connect(url, allow_reconnect=False, connect_timeout=2)


def replicas(side: str) -> int:
    """R3 on nats-server (JetStream on every node); our hubs run JetStream on one node, which refuses replicas."""
    return 3 if side == "nats" else 1


async def _add_stream(url, name, subjects, window=None, num_replicas=3):
    nc = await _nc(url)
    try:
        extra = {"duplicate_window": window} if window is not None else {}
        js = nc.jetstream(timeout=10)
        await until_created(lambda: js.add_stream(name=name, subjects=subjects, num_replicas=num_replicas, **extra))
    finally:
        await nc.close()


def test_edge_learns_every_node_and_follows_the_cluster_as_nodes_die(clusters, edges):
    c = clusters(jetstream=False)
    c.start(nodes=[0, 1])  # n3 joins later: the edge hears of it in an async INFO only
    cfg = edge_config("e1", listen=free_port(), stats=0.1, ping_interval=1)
    cfg["hub"] = {"url": c.leaf_url(0)}  # node 1 only: the others come from the hub's leafnode_urls
    e = edges(cfg)
    e.wait_line(r"uplink up hub=" + re.escape(c.leaf_addr(0)), timeout=10)
    e.wait_line(r"uplink urls n=2 learned=1", timeout=5)
    c.start(nodes=[2])
    e.wait_line(r"uplink urls n=3 learned=2", timeout=10)
    assert e.count(r"uplink up") == 1  # learnt on the same link: from an async INFO
    mark = len(e.lines)
    c.kill(0)
    e.wait_line(r"uplink up hub=", start=mark, timeout=10)
    first = _up_on(e, mark)[0]
    assert first in (c.leaf_addr(1), c.leaf_addr(2))
    mark = len(e.lines)
    c.kill(1 if first == c.leaf_addr(1) else 2)
    e.wait_line(r"uplink up hub=", start=mark, timeout=10)
    last = _up_on(e, mark)[0]
    assert last != first and last != c.leaf_addr(0)
    wait_until(lambda: _stats(e).get("failovers") == "2" and _stats(e).get("hub_url") == "nats-leaf://" + last, 5,
               msg=f"stats with failovers=2 hub_url={last} (got {_stats(e)})")
    node = c.leaf_ports.index(int(last.rsplit(":", 1)[1]))

    async def body():  # traffic both ways through the node the edge ended on
        h, le = await _nc(c.url(node)), await _nc(e.url)
        down = await le.subscribe("down.>")
        await le.flush()
        up = await h.subscribe("up.>")
        await h.flush()
        for _ in range(100):
            await h.publish("down.x", b"to-edge")
            await le.publish("up.x", b"to-hub")
            await h.flush()
            await le.flush()
            try:
                a = await down.next_msg(timeout=0.1)
                b = await up.next_msg(timeout=0.1)
                assert (a.data, b.data) == (b"to-edge", b"to-hub")
                break
            except nats.errors.TimeoutError:
                continue
        else:
            pytest.fail(f"no traffic through node n{node + 1}:\n{e.output()}")
        await h.close()
        await le.close()

    run(body())


@pytest.mark.parametrize("how", ["lost-pubacks", pytest.param("hang", marks=pytest.mark.slow)])
def test_forward_queue_drains_every_acked_record_once_across_a_node_death(side, clusters, fwd_edges, how):
    """Node 1 dies mid-drain, with records sent and their PubAcks not back: `hang`, it stops (SIGSTOP) and is killed;
    `lost-pubacks`, it stores what the edge sends but its answers are lost (a proxy swallows them), then it is killed.
    The edge moves on and asks the stream what it holds before sending those records again (forward.py rule 3), so
    none is stored twice, even when the failover takes longer than the stream's duplicate window (0.5 s in
    `lost-pubacks`; the default 2 minutes in `hang`)."""
    c = clusters().start()
    run(_add_stream(c.url(1), "TELE", ["tele.>"], 0.5 if how == "lost-pubacks" else None, replicas(side)))
    proxy = HoldProxy(c.leaf_ports[0]) if how == "lost-pubacks" else None
    try:
        _drain_across_a_node_death(c, fwd_edges, proxy)
    finally:
        if proxy is not None:
            proxy.close()


def _drain_across_a_node_death(c, fwd_edges, proxy):
    # configured with node 1 only (or the proxy in front of it): the others come from the hub's leafnode_urls
    first = f"127.0.0.1:{proxy.port}" if proxy else c.leaf_addr(0)
    cfg = forward_config("e1", None, [{"subjects": ["tele.>"], "stream": "TELE"}],
                         {"rate": 150, "max_inflight": 16, "status": 0.1}, app="fwdapp", ping_interval=1)
    cfg["hub"] = {"url": "nats-leaf://" + first}
    cfg["stats"] = 0.2
    e = fwd_edges(cfg)
    e.set_app(subjects=["tele.a", "tele.b"], count=N_RECORDS, batch=6, pause_ms=15, tag="f1")
    e.start()
    e.wait_line(r"uplink up hub=" + re.escape(first), timeout=10)
    e.wait_line(r"uplink urls n=3 learned=2", timeout=5)  # behind the proxy too: node 1 itself is not learnt
    wait_until(lambda: e.count(r'"published": [1-9][0-9][0-9]') > 0, 20, msg="a hundred records drained")
    mark = len(e.lines)
    if proxy:
        proxy.hold()
        stored = stream_last_seq(c.url(1), "TELE")
        wait_until(lambda: stream_last_seq(c.url(1), "TELE") >= stored + 8, 10, msg="records stored, PubAcks lost")
    else:
        c.freeze(0)
        wait_until(lambda: any('"inflight": 0' not in ln for ln in e.lines[mark:] if ln.startswith("edge: fwdstatus")),
                   10, msg="records in flight to the hung node")
    c.kill(0)
    e.wait_line(r"uplink up hub=", start=mark, timeout=20)
    assert _up_on(e, mark)[0] not in (first, c.leaf_addr(0))
    e.wait_line(rf"^edge: app done {N_RECORDS}$", timeout=60)
    assert not e.errors()
    st = wait_drained(e, timeout=90)
    acked = e.acked_keys()
    assert len(acked) == N_RECORDS
    msgs = run(stream_messages(c.url(1), "TELE"), 60)
    got = [payload_index(m) for m in msgs]
    assert len(got) == len(set(got)), "a record is in the stream twice"
    assert set(got) == acked
    ids = msg_ids(msgs)
    assert len(set(ids)) == len(ids) and set(ids) == {f"e1-TELE-{i}" for i in range(1, N_RECORDS + 1)}
    status = json.loads([ln for ln in e.lines if ln.startswith("edge: fwdstatus ")][-1][len("edge: fwdstatus "):])
    assert status["failovers"] >= 1 and status["hub_url"] not in ("nats-leaf://" + first, c.leaf_url(0))
    assert st["lookups"] >= 1  # the unconfirmed records were looked up on the new node
    if proxy:
        assert st["dup_skipped"] >= 1  # ... and those node 1 had stored were not sent again
    assert st["published"] + st["duplicates"] + st["dup_skipped"] >= N_RECORDS


def test_kv_write_while_its_node_is_down_syncs_through_another_node(side, clusters, started, tmp_path):
    c = clusters().start()

    async def make_bucket():
        nc = await _nc(c.url(1))
        js = nc.jetstream(timeout=10)
        kv = await until_created(lambda: js.create_key_value(bucket="b", direct=True, replicas=replicas(side)))
        await kv.put("k0", b"v0")
        await nc.close()

    run(make_bucket())
    # configured with a list: nodes 1 and 2; node 3 is learnt
    cfg = kv_edge_config("e1", free_port(), None, {"b": {"policy": "lww"}})
    cfg["hub"] = {"url": [c.leaf_url(0), c.leaf_url(1)]}
    cfg["stats"] = 0.2
    e = start_edge(cfg, tmp_path / "e1", started)
    e.wait_line(r"uplink up hub=" + re.escape(c.leaf_addr(0)), timeout=10)
    e.wait_line(r"uplink urls n=3 learned=1", timeout=5)

    async def body():
        await wait_for(lambda: edge_idle(e), 20, "the cache in step with the hub")
        assert (await ctl(e, "get", key="k0"))["value"] == "v0"
        mark = len(e.lines)
        c.kill(0)
        await ctl(e, "put", key="k1", value="written-while-down", flush=True)
        nc = await _nc(c.url(2))
        kv = await wait_for(lambda: _bucket(nc, "b"), 30, "the bucket through node 3 (leaders re-elected)")
        await wait_for(lambda: _value_is(kv, "k1", b"written-while-down"), 40, "k1 at the hub through another node")
        assert _up_on(e, mark) and _up_on(e, mark)[0] != c.leaf_addr(0)
        await kv.put("k2", b"from-the-hub")  # and the live updates come back through the new node too
        await wait_for(lambda: _edge_value_is(e, "k2", "from-the-hub"), 20, "k2 at the edge")
        await nc.close()

    run(body(), 90)
    wait_until(lambda: _stats(e).get("failovers") == "1", 5, msg=f"failovers=1 in stats (got {_stats(e)})")


async def _bucket(nc, name):
    try:
        return await nc.jetstream(timeout=2).key_value(name)
    except (nats.errors.Error, OSError):  # no stream leader yet: the request goes unanswered
        return None


async def _value_is(kv, key, value) -> bool:
    try:
        return await hub_value(kv, key) == value
    except (nats.errors.Error, OSError):  # the bucket's leader moving: ask again
        return False


async def _edge_value_is(e, key, value) -> bool:
    return (await ctl(e, "get", key=key))["value"] == value
