"""Super-cluster harness: two clusters, "A" and "B", joined by gateways (docs/supercluster.md).

Built on tests/cluster/harness.py: each cluster is a `Cluster` (1 or 2 nodes) whose nodes get a `gateway {}` block,
every process started by the harness and stopped by PID. A node keeps its ports across restarts, so a killed node's
peers find it again at the same gateway URL.

Sides: "nats" and "hub" (both clusters of that server), "mixed-nats" (A is nats-server, B our hub), "mixed-hub" (A
our hub, B nats-server). With `implicit`, only A lists B in `gateways` (B's first server only); B dials A back when
A dials it (implicit gateway), and B's other servers learn of A from their route peers. With `leafnodes`, A's nodes
have a leafnode port too.

A super-cluster is "formed" when every node's /gatewayz has an outbound gateway to the other cluster and as many
inbound ones from it as it has nodes, and a message published on each node reaches a subscriber on each node of the
other cluster.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cluster.harness import FORM_TIMEOUT, Cluster, Node, wait_traffic
from tests.compat.harness import ServerFailed, free_port, wait_until
from tests.compat.harness import selected_sides as compat_selected_sides

# The server kind of cluster A and of cluster B, per side.
SIDES = {"nats": ("nats", "nats"), "hub": ("hub", "hub"), "mixed-nats": ("nats", "hub"), "mixed-hub": ("hub", "nats")}
ALL_SIDES = tuple(SIDES)
ENV_SIDES = "NATSEDGE_GATEWAY_SIDES"


def selected_sides(config=None) -> list[str]:
    return compat_selected_sides(config, "--gateway-sides", ENV_SIDES, ALL_SIDES)


def gateway_url(n: Node) -> str:
    return f"nats://127.0.0.1:{n.gateway_port}"


class SuperCluster:
    def __init__(self, side: str, workdir: Path, size: int = 1, implicit: bool = False, gateway_extra: str = "",
                 leafnodes: bool = False):
        """leafnodes: cluster A's nodes get a leafnode port (`Node.leaf_port`)."""
        kind_a, kind_b = SIDES[side]
        self.side = side
        self.implicit = implicit
        self.leafnodes = leafnodes
        self.a = Cluster(kind_a, size, workdir / "A", kinds=(kind_a,) * size, cluster_name="A")
        self.b = Cluster(kind_b, size, workdir / "B", kinds=(kind_b,) * size, cluster_name="B")
        for n in self.nodes:
            n.gateways = []
            n.gateway_extra = gateway_extra

    @property
    def nodes(self) -> list[Node]:
        return [*self.a, *self.b]

    def other(self, c: Cluster) -> Cluster:
        return self.b if c is self.a else self.a

    def plan(self):
        self.a.plan()
        self.b.plan()
        for n in self.a:
            # implicit: A's servers know B's first server only, so B's others learn of A from their route peers
            n.gateways = [("B", [gateway_url(m) for m in (self.b[:1] if self.implicit else self.b)])]
            if self.leafnodes:
                n.leaf_port = free_port()
                # (nats-server: "leaf nodes and gateways (both being defined) require a system account")
                n.extra_conf = ("accounts { SYS: {} }\nsystem_account: SYS\n"
                                f"leafnodes {{ listen: 127.0.0.1:{n.leaf_port} }}")
        for n in self.b:
            n.gateways = [] if self.implicit else [("A", [gateway_url(m) for m in self.a])]

    def start(self, timeout: float = FORM_TIMEOUT) -> SuperCluster:
        last = ""
        for _attempt in range(3):
            self.plan()
            try:
                for n in self.nodes:
                    n.launch()
                for n in self.nodes:
                    n.ready()
            except ServerFailed as exc:
                last = str(exc)
                self.stop()
                if "in use" in last.lower():  # a port was taken meanwhile: new ports for everyone
                    continue
                break
            try:
                if len(self.a) > 1:
                    self.a.wait_formed(timeout=timeout)
                    self.b.wait_formed(timeout=timeout)
                self.wait_gateways(timeout=timeout)
                wait_traffic(self.nodes, timeout)
            except pytest.fail.Exception as exc:
                pytest.fail(f"{exc}\n{self.log_tails()}", pytrace=False)
            return self
        pytest.fail(f"{self.side} super-cluster did not start:\n{last}", pytrace=False)

    def stop(self):
        self.a.stop()
        self.b.stop()

    def log_tails(self) -> str:
        return self.a.log_tails() + "\n" + self.b.log_tails()

    def wait_gateways(self, timeout: float = FORM_TIMEOUT):
        """Every running node has its outbound gateway to the other cluster, and the other cluster's nodes have one
        inbound gateway from each running node of this cluster between them (a node dials one server of a remote
        cluster, any of them)."""

        def linked():
            for c in (self.a, self.b):
                other = self.other(c)
                name, remote = ("A", "B") if c is self.a else ("B", "A")
                up = [n for n in c if n.alive()]
                for n in up:
                    gz = n.http_get("/gatewayz")
                    assert remote in (gz.get("outbound_gateways") or {}), f"{n.name}: no outbound to {remote}: {gz}"
                got_in = sum(len((m.http_get("/gatewayz").get("inbound_gateways") or {}).get(name) or [])
                             for m in other if m.alive())
                assert got_in == len(up), f"{remote} has {got_in} inbound gateways from {name}, want {len(up)}"
            return True

        wait_until(linked, timeout=timeout, interval=0.05, msg=f"{self.side} gateways")
