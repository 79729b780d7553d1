"""Harness for the failover tests: a cluster of hub nodes (nats-server or our hub), each with a client port, a
leafnodes port, a cluster port routed to every other node, and monitoring. JetStream: nats-server runs it on every node
(a 3-node meta group keeps its quorum when one node dies); our hubs do not replicate, so it runs on the last node only
and the others reach it by interest (docs/cluster.md).

Both sides get the same config text, nats-server's syntax:

    server_name: n1
    cluster { name: c1, listen: 127.0.0.1:P1, routes: [nats-route://127.0.0.1:P2, nats-route://127.0.0.1:P3] }
    leafnodes { listen: 127.0.0.1:L1 }
    jetstream { store_dir: "...", max_memory_store: ..., max_file_store: ... }

Loopback only, free ports. Every node is a process started here and stopped by PID (tests/compat/harness.py); kill(i)
is a node dying (SIGKILL), restart(i) brings it back on the same ports and store.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from tests.compat.harness import Server, ServerFailed, free_port, taken_ports, wait_until

__all__ = ["Cluster"]


def _node_conf(name: str, cport: int, routes: list[int], lport: int, store: Path | None) -> str:
    lines = [f"server_name: {name}",
             "cluster {",
             "  name: c1",
             f"  listen: 127.0.0.1:{cport}",
             "  routes: [" + ", ".join(f"nats-route://127.0.0.1:{p}" for p in routes) + "]",
             "}",
             "leafnodes {",
             f"  listen: 127.0.0.1:{lport}",
             "}"]
    if store is not None:
        lines += ["jetstream {", f'  store_dir: "{store}"', "  max_memory_store: 64MB", "  max_file_store: 256MB",
                  "}"]
    return "\n".join(lines) + "\n"


class Cluster:
    """n nodes of `side` ("nats" or "hub") as one cluster c1, node i on fixed ports across restarts."""

    def __init__(self, side: str, workdir: Path, n: int = 3, jetstream: bool = True):
        self.side = side
        self.workdir = workdir
        self.n = n
        self.jetstream = jetstream
        self.nodes = [Server(side, monitor=True, workdir=workdir / f"n{i + 1}") for i in range(n)]
        for s in self.nodes:
            s.workdir.mkdir(parents=True, exist_ok=True)
        self.started = False
        self._plan()

    def _plan(self):
        """Choose every node's ports and write its config: free_port only found each port free a moment ago."""
        self.cluster_ports = [free_port() for _ in range(self.n)]
        self.leaf_ports = [free_port() for _ in range(self.n)]
        for i, s in enumerate(self.nodes):
            routes = [p for j, p in enumerate(self.cluster_ports) if j != i]
            js = self.jetstream and (self.side == "nats" or i == self.n - 1)
            s.config_text = _node_conf(f"n{i + 1}", self.cluster_ports[i], routes, self.leaf_ports[i],
                                       s.workdir / "js" if js else None)
            s.port, s.http_port = free_port(), free_port()

    # ---- processes

    def start(self, nodes: list[int] | None = None, timeout: float = 30.0) -> Cluster:
        """Start every node (or those listed), then wait until each running node holds a route to every other
        running one (and, with JetStream, until the meta group has a leader). A port taken meanwhile is chosen
        afresh: before the cluster first started, any of them (a new plan); later only a node's client and
        monitoring ports, which no other node's config names."""
        todo = list(nodes if nodes is not None else range(self.n))
        for _attempt in range(4):
            for i in todo:
                self.nodes[i].spawn()
            failed = self._failed_start(todo)
            if failed is None:
                break
            i, failure = failed
            for j in todo:
                self.nodes[j].stop()
            taken = taken_ports(failure)
            if taken and not self.started:
                self._plan()
            elif taken and taken <= {self.nodes[i].port, self.nodes[i].http_port}:
                self.nodes[i].port, self.nodes[i].http_port = free_port(), free_port()
            else:
                break
        if failed is not None:
            self.stop()
            pytest.fail(f"{self.side} cluster node did not start:\n{failure}", pytrace=False)
        self.started = True
        self.wait_formed(timeout)
        return self

    def _failed_start(self, todo: list[int]) -> tuple[int, str] | None:
        for i in todo:
            try:
                self.nodes[i].wait_ready()
            except ServerFailed as e:
                return i, str(e)
        return None

    def wait_formed(self, timeout: float = 30.0):
        live = self.live()

        def formed():
            for i in live:
                if self.routes(i) < len(live) - 1:
                    return False
                if self.jetstream and self.side == "nats" and not self.meta_leader(i):
                    return False
            return True

        what = "a route to every other node" + (" and a JetStream meta leader (/jsz meta_cluster)" if self.jetstream
                                                else "")
        wait_until(formed, timeout, interval=0.1, msg=f"{self.side} cluster of {len(live)} nodes: each with {what}")

    def kill(self, i: int):
        """Node i dies: SIGKILL, no goodbye to its routes or leafs."""
        p = self.nodes[i].proc
        if p is not None and p.poll() is None:
            os.kill(p.pid, signal.SIGKILL)
            p.wait(timeout=5)

    def freeze(self, i: int):
        """Node i hangs (SIGSTOP): what it was sent stays unanswered; kill(i) or stop() end it."""
        p = self.nodes[i].proc
        if p is not None and p.poll() is None:
            os.kill(p.pid, signal.SIGSTOP)

    def restart(self, i: int):
        s = self.nodes[i]
        s.stop()
        s.spawn()
        try:
            s.wait_ready()
        except ServerFailed as e:
            self.stop()
            pytest.fail(f"{self.side} cluster node did not restart:\n{e}", pytrace=False)

    def stop(self):
        for s in self.nodes:
            if s.alive():
                os.kill(s.proc.pid, signal.SIGCONT)  # a frozen node must see its SIGTERM
            s.stop()

    # ---- views

    def url(self, i: int) -> str:
        return self.nodes[i].url

    def leaf_url(self, i: int) -> str:
        return f"nats-leaf://127.0.0.1:{self.leaf_ports[i]}"

    def leaf_addr(self, i: int) -> str:
        return f"127.0.0.1:{self.leaf_ports[i]}"

    def live(self) -> list[int]:
        return [i for i, s in enumerate(self.nodes) if s.alive()]

    def _get(self, i: int, path: str) -> dict:
        try:
            return self.nodes[i].http_get(path)
        except (OSError, AssertionError, ValueError):
            return {}

    def routes(self, i: int) -> int:
        return len(self._get(i, "/routez").get("routes") or [])

    def meta_leader(self, i: int) -> str:
        return ((self._get(i, "/jsz").get("meta_cluster") or {}).get("leader")) or ""

    def leafs(self, i: int) -> list[dict]:
        return self._get(i, "/leafz").get("leafs") or []

    def node_of_leaf(self, name: str) -> int | None:
        """The live node an edge named `name` is connected to, if any."""
        for i in self.live():
            if any(leaf.get("name") == name for leaf in self.leafs(i)):
                return i
        return None
