"""JetStream in a cluster (docs/cluster.md): one JetStream node in a cluster of our hubs serves every node; a second
is refused; our hub without JetStream routes for a nats-server JetStream cluster (R3 streams, consumers, KV)."""

from __future__ import annotations

import nats
import pytest

from tests.compat.harness import run, until_created, wait_until

from .harness import Node, route_url

CONFLICT = 'natsedge hubs do not replicate streams, so one server of a cluster runs JetStream'


@pytest.fixture
def nodes(tmp_path):
    """make(side, name, jetstream, peers, start) -> a Node routed to `peers`, started unless start=False (then
    `launch(node)` starts it, with routes added meanwhile); `ready=False` does not wait for it to serve. Every node is
    stopped at the end."""
    made: list[Node] = []

    def launch(n: Node, ready: bool = True) -> Node:
        n.launch()
        if ready:
            n.ready()
        return n

    def make(side: str, name: str, jetstream: bool = False, peers: tuple[Node, ...] = (), start: bool = True,
             ready: bool = True) -> Node:
        d = tmp_path / name
        d.mkdir()
        extra = f'jetstream {{ store_dir: "{d / "js"}" }}' if jetstream else ""
        n = Node(side, name, d, extra_conf=extra)
        n.assign_ports()
        n.routes = [route_url(p.cluster_port) for p in peers]
        made.append(n)
        return launch(n, ready) if start else n

    make.launch = launch
    yield make
    for n in made:
        n.stop()


def meshed(*ns: Node) -> None:
    for n in ns:
        want = {m.server_id for m in ns if m is not n}
        wait_until(lambda n=n, want=want: want <= n.route_peers(), timeout=15, msg=f"{n.name} routed to its peers")


async def use_jetstream(url: str, replicas: int) -> None:
    """Streams, a durable pull consumer and a KV bucket, all through one client of `url`."""
    nc = await nats.connect(url, connect_timeout=2, allow_reconnect=False)
    try:
        js = nc.jetstream(timeout=5)
        await until_created(lambda: js.add_stream(name="S", subjects=["s.>"], num_replicas=replicas))
        acks = [await js.publish(f"s.{i}", b"m%d" % i) for i in range(10)]
        assert [a.seq for a in acks] == list(range(1, 11)) and {a.stream for a in acks} == {"S"}
        psub = await js.pull_subscribe("s.>", "dur")
        msgs = await psub.fetch(10, timeout=5)
        assert [m.data for m in msgs] == [b"m%d" % i for i in range(10)]
        for m in msgs:
            await m.ack()
        push = await js.subscribe("s.>", durable="push", manual_ack=True)  # deliveries cross a route to this client
        m = await push.next_msg(timeout=5)
        assert (m.subject, m.data, m.metadata.sequence.stream) == ("s.0", b"m0", 1)
        await m.ack_sync()
        kv = await js.create_key_value(bucket="kv", replicas=replicas)
        await kv.put("k", b"v1")
        assert (await kv.get("k")).value == b"v1"
    finally:
        await nc.close()


def test_one_jetstream_node_serves_a_cluster_of_our_hubs(nodes):
    n1 = nodes("hub", "n1", jetstream=True)
    n2 = nodes("hub", "n2", peers=(n1,))
    n3 = nodes("hub", "n3", peers=(n1,))
    meshed(n1, n2, n3)
    run(use_jetstream(n3.url, 1), timeout=30)
    assert n1.http_get("/jsz")["streams"] == 2  # S and the KV bucket's stream, both on n1
    assert n3.http_get("/varz")["jetstream"] == {}


def test_a_second_jetstream_node_is_refused(nodes):
    n1 = nodes("hub", "n1", jetstream=True)
    n2 = nodes("hub", "n2", jetstream=True, peers=(n1,), ready=False)
    assert n2.proc.wait(timeout=15) == 1
    assert CONFLICT in n2.output() and "shutting down" in n2.output()
    assert n1.alive()
    run(use_jetstream(n1.url, 1), timeout=30)


def nats_jetstream_cluster(nodes) -> list[Node]:
    """Three nats-server JetStream nodes, each configured with routes to the others (nats-server requires that)."""
    ss = [nodes("nats", f"s{i}", jetstream=True, start=False) for i in (1, 2, 3)]
    for s in ss:
        s.routes = [route_url(o.cluster_port) for o in ss if o is not s]
    for s in ss:
        nodes.launch(s)
    return ss


def test_our_hub_routes_for_a_nats_server_jetstream_cluster(nodes):
    ss = nats_jetstream_cluster(nodes)
    ours = nodes("hub", "h", peers=(ss[0],))
    meshed(*ss, ours)
    run(use_jetstream(ours.url, 3), timeout=60)


def test_our_jetstream_hub_does_not_join_a_nats_server_jetstream_cluster(nodes):
    s1 = nats_jetstream_cluster(nodes)[0]
    ours = nodes("hub", "h", jetstream=True, peers=(s1,), ready=False)
    assert ours.proc.wait(timeout=15) == 1
    assert CONFLICT in ours.output()
    assert s1.alive()


def test_push_consumer_delivers_across_a_route_with_the_stream_subject(nodes):
    """A push consumer on the JetStream node delivers to a subscriber on another node: the frame crosses the route as
    `RMSG $G <deliver subject> $JS.ACK...@<stream subject>` (nats-server's encoding), and the subscriber gets the
    stream subject and the ack reply, as if it were on the JetStream node."""
    n1 = nodes("hub", "n1", jetstream=True)
    n2 = nodes("hub", "n2", peers=(n1,))
    meshed(n1, n2)

    async def body():
        nc = await nats.connect(n2.url, connect_timeout=2, allow_reconnect=False)
        try:
            js = nc.jetstream(timeout=5)
            await js.add_stream(name="P", subjects=["p.>"])
            got = []
            sub = await js.subscribe("p.>", durable="pd", manual_ack=True)
            for i in range(3):
                await js.publish(f"p.{i}", b"x%d" % i)
            for _ in range(3):
                m = await sub.next_msg(timeout=5)
                got.append((m.subject, m.data, m.metadata.sequence.stream))
                await m.ack_sync()
            assert got == [("p.0", b"x0", 1), ("p.1", b"x1", 2), ("p.2", b"x2", 3)]
            info = await js.consumer_info("P", "pd")
            assert info.num_ack_pending == 0 and info.delivered.stream_seq == 3
            kv = await js.create_key_value(bucket="w")
            watcher = await kv.watchall()
            await kv.put("a", b"1")
            e = await watcher.updates(timeout=5)
            while e is None:  # the initial "no more values" marker
                e = await watcher.updates(timeout=5)
            assert (e.key, e.value) == ("a", b"1")
            await watcher.stop()
        finally:
            await nc.close()

    run(body(), timeout=30)
