"""Cluster harness: N servers of one side (nats-server or our hub) joined by routes.

Built on tests/compat/harness.py: every process is a `Server`, started by the harness, tracked by PID and stopped
by PID. A node keeps its ports (client, monitoring, cluster) for its whole life, so a killed node can be restarted
on the same ports and its peers' configured routes find it again.

Two topologies, both with explicit `routes`:
  * "mesh": every node lists every other node;
  * "seed": node 1 lists nobody, the others list node 1 only; the rest of the mesh must come from gossip
    (implicit routes, README §3.5).
Two ways to say it, both nats-server's: a config file (`cluster { name, listen, routes: [...] }`) or the flags
`--cluster nats://H:P --cluster_name NAME --routes URL,URL`.

A cluster is "formed" when every node's `/routez` names every other node as a `remote_id` (nats-server has 4 route
connections per peer: a pool of 3 plus the pinned `$SYS` route, so `num_routes` alone is not N-1) and a message
published on each node reaches a subscriber on each other node.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tests.compat.harness import (
    READY_TIMEOUT,
    Raw,
    Server,
    ServerFailed,
    _frame_length,
    free_port,
    parse_frame,
    pub,
    wait_until,
)
from tests.compat.harness import (
    selected_sides as compat_selected_sides,
)

# "mixed-nats": our hub joins a nats-server cluster (n1 and n2 are nats-server, n3 the hub); "mixed-hub": a
# nats-server node joins a cluster of our hubs (n1 and n2 hubs, n3 nats-server). The seed topology's seed is n1.
MIXED = {"mixed-nats": ("nats", "nats", "hub"), "mixed-hub": ("hub", "hub", "nats")}
# Two-node clusters of a mixed side (`pair_kinds`): one nats-server and one hub, n1 being the side's majority kind.
PAIRS = {"mixed-nats": ("nats", "hub"), "mixed-hub": ("hub", "nats")}
ALL_SIDES = ("nats", "hub", *MIXED)
ENV_SIDES = "NATSEDGE_CLUSTER_SIDES"
CLUSTER_NAME = "c1"
FORM_TIMEOUT = 15.0


def selected_sides(config=None) -> list[str]:
    return compat_selected_sides(config, "--cluster-sides", ENV_SIDES, ALL_SIDES)


def node_side(side: str, i: int) -> str:
    """The server kind of node i (0-based) of a cluster of `side`."""
    kinds = MIXED.get(side)
    return side if kinds is None else kinds[i % len(kinds)]


def pair_kinds(side: str) -> tuple[str, str]:
    """The server kinds of a 2-node cluster of `side`: (nats, hub) for mixed-nats, (hub, nats) for mixed-hub, so the
    two mixed sides between them put each kind in each role."""
    return PAIRS.get(side, (side, side))


def route_url(port: int, user: str | None = None, password: str | None = None) -> str:
    cred = f"{user}:{password}@" if user else ""
    return f"nats-route://{cred}127.0.0.1:{port}"


class Node(Server):
    """One cluster member. Ports are chosen by the `Cluster` and kept across restarts."""

    def __init__(self, side: str, name: str, workdir: Path, form: str = "conf", cluster_name: str = CLUSTER_NAME,
                 extra_conf: str = "", cluster_extra: str = ""):
        super().__init__(side, monitor=True, workdir=workdir)
        self.name = name
        self.form = form
        self.cluster_name = cluster_name
        self.extra_conf = extra_conf
        self.cluster_extra = cluster_extra
        self.cluster_port = 0
        self.routes: list[str] = []
        self.server_id = ""
        # In a super-cluster (tests/gateway/harness.py): the gateway port, and the remote clusters this node dials
        # as (name, URLs); None: no gateway{} block.
        self.gateway_port = 0
        self.gateways: list[tuple[str, list[str]]] | None = None
        self.gateway_extra = ""

    def assign_ports(self):
        self.port, self.http_port, self.cluster_port = free_port(), free_port(), free_port()
        if self.gateways is not None:
            self.gateway_port = free_port()

    def cluster_conf(self) -> str:
        routes = ", ".join(self.routes)
        lines = [f"server_name: {self.name}", self.extra_conf,
                 "cluster {", f"  name: {self.cluster_name}", f"  listen: 127.0.0.1:{self.cluster_port}"]
        if self.routes:
            lines.append(f"  routes: [{routes}]")
        if self.cluster_extra:
            lines.append(self.cluster_extra)
        lines.append("}")
        if self.gateways is not None:
            remotes = ", ".join(f'{{name: {name}, urls: [{", ".join(urls)}]}}' for name, urls in self.gateways)
            lines += ["gateway {", f"  name: {self.cluster_name}", f"  listen: 127.0.0.1:{self.gateway_port}",
                      f"  gateways: [{remotes}]", self.gateway_extra, "}"]
        return "\n".join(line for line in lines if line) + "\n"

    def command(self) -> list[str]:
        cmd = super().command()
        if self.form == "flags":
            cmd += ["-n", self.name, "--cluster", f"nats://127.0.0.1:{self.cluster_port}",
                    "--cluster_name", self.cluster_name]
            if self.routes:
                cmd += ["--routes", ",".join(self.routes)]
        return cmd

    def write_files(self):
        if self.form == "conf":
            self.config_text = self.cluster_conf()
        elif self.extra_conf:
            self.config_text = self.extra_conf + "\n"
        super().write_files()

    def launch(self):
        """Start on this node's ports (no port retry: peers already know them)."""
        self.spawn()

    def ready(self, timeout: float = READY_TIMEOUT):
        self.wait_ready(timeout)
        self.server_id = self.info["server_id"]

    def kill(self):
        """SIGKILL by PID and reap: no goodbye on the wire, as a crash."""
        if self.alive():
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=5)

    def restart(self):
        self.stop()
        self.launch()
        try:
            self.ready()
        except ServerFailed as exc:
            pytest.fail(f"{self.side} node {self.name} did not restart:\n{exc}", pytrace=False)
        return self

    # ---- monitoring
    def routez(self) -> dict:
        return self.http_get("/routez")

    def route_peers(self) -> set[str]:
        """The distinct `remote_id`s in /routez."""
        return {r["remote_id"] for r in self.routez().get("routes") or []}

    def connect_urls(self) -> list[str]:
        """`connect_urls` of a fresh client INFO on this node."""
        with Raw(self.port) as r:
            return sorted(r.info.get("connect_urls") or [])

    @property
    def client_hostport(self) -> str:
        return f"127.0.0.1:{self.port}"


class Cluster:
    def __init__(self, side: str, size: int, workdir: Path, topology: str = "mesh", form: str = "conf",
                 extra_conf: str = "", cluster_extra: str = "", route_user: str | None = None,
                 route_password: str | None = None, kinds: tuple[str, ...] | None = None,
                 cluster_name: str = CLUSTER_NAME):
        """`kinds`: each node's server kind (default: `node_side`), e.g. `pair_kinds(side)` for 2 nodes."""
        assert topology in ("mesh", "seed"), topology
        assert kinds is None or len(kinds) == size, kinds
        self.side = side
        self.topology = topology
        self.route_user, self.route_password = route_user, route_password
        kinds = kinds or tuple(node_side(side, i) for i in range(size))
        prefix = "n" if cluster_name == CLUSTER_NAME else cluster_name.lower()  # server names unique in a super-cluster
        self.nodes = [Node(kinds[i], f"{prefix}{i + 1}", workdir / f"{prefix}{i + 1}", form=form,
                           extra_conf=extra_conf, cluster_extra=cluster_extra, cluster_name=cluster_name)
                      for i in range(size)]
        for n in self.nodes:
            n.workdir.mkdir(parents=True, exist_ok=True)

    def __getitem__(self, i: int) -> Node:
        return self.nodes[i]

    def __iter__(self):
        return iter(self.nodes)

    def __len__(self):
        return len(self.nodes)

    def plan(self):
        """Choose every node's ports and routes (once per start; restarts keep them)."""
        for n in self.nodes:
            n.assign_ports()
        for i, n in enumerate(self.nodes):
            if self.topology == "mesh":
                peers = [m for m in self.nodes if m is not n]
            else:
                peers = [] if i == 0 else [self.nodes[0]]
            n.routes = [route_url(m.cluster_port, self.route_user, self.route_password) for m in peers]

    def start(self, form_timeout: float = FORM_TIMEOUT) -> Cluster:
        """Start all nodes (node 1 first), wait for each to serve, then for the full mesh."""
        last = ""
        for _attempt in range(3):
            self.plan()
            try:
                for n in self.nodes:
                    n.launch()
                    n.ready()
            except ServerFailed as exc:
                last = str(exc)
                self.stop()
                if "in use" in last.lower():  # a port was taken meanwhile: new ports for everyone
                    continue
                break
            try:
                self.wait_formed(timeout=form_timeout)
            except pytest.fail.Exception as exc:
                pytest.fail(f"{exc}\n{self.log_tails()}", pytrace=False)
            return self
        pytest.fail(f"{self.side} cluster did not start:\n{last}", pytrace=False)

    def log_tails(self, chars: int = 1200) -> str:
        return "\n".join(f"--- {n.name} ({' '.join(n.command()[-8:])}) output:\n{n.output()[-chars:]}"
                         for n in self.nodes)

    def launch_nodes(self, nodes: list[Node]):
        """Start some nodes of a planned cluster (see `plan`) and wait until each serves clients."""
        for n in nodes:
            n.launch()
            try:
                n.ready()
            except ServerFailed as exc:
                pytest.fail(f"{self.side} node {n.name} did not start:\n{exc}", pytrace=False)

    def stop(self):
        for n in self.nodes:
            n.stop()

    def alive(self) -> bool:
        return all(n.alive() for n in self.nodes)

    # ---- formation
    def wait_routes(self, nodes: list[Node] | None = None, timeout: float = FORM_TIMEOUT):
        """Every given node's /routez names exactly the other given nodes (by server_id)."""
        nodes = nodes if nodes is not None else self.nodes

        def complete():
            for n in nodes:
                want = {m.server_id for m in nodes if m is not n}
                got = n.route_peers()
                assert got == want, f"{n.name} routes to {sorted(got)}, want {sorted(want)}"
            return True

        wait_until(complete, timeout=timeout, interval=0.05, msg=f"{self.side} route mesh")

    def wait_formed(self, nodes: list[Node] | None = None, timeout: float = FORM_TIMEOUT):
        nodes = nodes if nodes is not None else self.nodes
        self.wait_routes(nodes, timeout)
        wait_traffic(nodes, timeout)


def _got_msg(raw: Raw, subject: str, payload: bytes) -> bool:
    """PING/PONG round on raw; True if `payload` on `subject` arrived before the PONG."""
    return any(f[0] == "MSG" and f[1].subject == subject and f[1].payload == payload for f in raw.frames_until_pong())


def wait_traffic(nodes: list[Node], timeout: float = FORM_TIMEOUT):
    """For every ordered pair (a, b): a message published on a reaches a subscriber on b."""
    tag = f"_mesh.{time.monotonic_ns()}"
    subs = []
    try:
        for i, n in enumerate(nodes):
            r = n.client()
            r.send(f"SUB {tag}.{i} 1\r\n".encode())
            flush(r)
            subs.append(r)
        for i, a in enumerate(nodes):
            for j, b in enumerate(nodes):
                if i == j:
                    continue
                subject = f"{tag}.{j}"

                def arrived(i=i, j=j, subject=subject):
                    payload = f"probe-{i}".encode()
                    subs[i].send(pub(subject, payload))
                    flush(subs[i])
                    return _got_msg(subs[j], subject, payload)

                wait_until(arrived, timeout=timeout, interval=0.05, msg=f"traffic {a.name} -> {b.name}")
    finally:
        for r in subs:
            r.close()


# ---------------------------------------------------------------------------------------------- raw helpers


def flush(raw: Raw, timeout: float = 5.0):
    """PING and wait for the PONG: the server has processed everything sent before. Unlike `Raw.sync`, frames
    that arrive first (messages, async INFOs) stay in the buffer for later reads."""
    raw.send(b"PING\r\n")
    kept = b""
    deadline = time.monotonic() + timeout
    while True:
        n = _frame_length(raw.buf)
        if n:
            frame, raw.buf = raw.buf[:n], raw.buf[n:]
            if frame.rstrip(b"\r\n").upper() == b"PONG":
                raw.buf = kept + raw.buf
                return
            kept += frame
            continue
        if not raw._fill(deadline) and (raw.eof or time.monotonic() >= deadline):
            pytest.fail(f"no PONG within {timeout}s (eof={raw.eof}); got {kept[:300]!r}")


def next_frame(raw: Raw, deadline: float) -> tuple | None:
    """The next parsed frame on a raw connection (PINGs are answered by Raw), or None at the deadline/EOF."""
    while True:
        n = _frame_length(raw.buf)
        if n:
            frame, raw.buf = raw.buf[:n], raw.buf[n:]
            return parse_frame(frame)
        if not raw._fill(deadline) and (raw.eof or time.monotonic() >= deadline):
            return None


def read_until(raw: Raw, marker: str, count: int = 1, timeout: float = 5.0) -> list:
    """Messages on a raw connection up to the `count`-th message on subject `marker` (markers left out).
    Async INFOs are skipped; any other frame fails the test."""
    out = []
    seen = 0
    deadline = time.monotonic() + timeout
    while seen < count:
        f = next_frame(raw, deadline)
        if f is None:
            pytest.fail(f"saw {seen} of {count} markers {marker!r}; messages so far {out[:10]!r}")
        if f[0] == "INFO":
            continue
        assert f[0] in ("MSG", "HMSG"), f"unexpected frame {f!r}"
        if f[1].subject == marker:
            seen += 1
        else:
            out.append(f[1])
    return out


def next_msg(raw: Raw, timeout: float = 5.0):
    """The next MSG/HMSG on a raw connection; async INFOs are skipped, any other frame fails the test."""
    deadline = time.monotonic() + timeout
    while True:
        f = next_frame(raw, deadline)
        if f is None:
            pytest.fail(f"no message within {timeout}s (eof={raw.eof})")
        if f[0] in ("MSG", "HMSG"):
            return f[1]
        assert f[0] == "INFO", f"unexpected frame {f!r}"


def next_info(raw: Raw, timeout: float = 5.0, stale: bytes | None = None) -> dict:
    """The next async INFO on a raw connection; messages before it fail the test, but for those whose payload is
    `stale` (copies of a poll still in flight), which are skipped."""
    deadline = time.monotonic() + timeout
    while True:
        f = next_frame(raw, deadline)
        if f is None:
            pytest.fail(f"no INFO within {timeout}s (eof={raw.eof})")
        if stale is None or f[0] != "MSG" or f[1].payload != stale:
            break
    assert f[0] == "INFO", f"expected an async INFO, got {f!r}"
    return f[1]


def warm_up(publisher: Raw, subject: str, receivers: list[Raw], payload: bytes = b"warm",
            timeout: float = 5.0) -> tuple[int, list[int]]:
    """Publish `payload` on `subject` until every receiver got at least one: interest has crossed the routes.
    Returns (published, received per receiver). Warm-ups still in flight arrive later: tests filter them out by
    payload (they are ordered before anything published afterwards on the same route)."""
    got = [0] * len(receivers)
    sent = 0

    def everyone():
        nonlocal sent
        publisher.send(pub(subject, payload))
        flush(publisher)
        sent += 1
        for i, r in enumerate(receivers):
            got[i] += sum(1 for f in r.frames_until_pong()
                          if f[0] in ("MSG", "HMSG") and f[1].subject == subject and f[1].payload == payload)
        return all(got)

    wait_until(everyone, timeout=timeout, interval=0.02, msg=f"interest in {subject} across the cluster")
    return sent, got
