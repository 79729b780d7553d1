"""The route scenarios of `natsedge bench --compare` (docs/benchmarks.md, "Cluster (routes)").

``route1`` / ``route4``: a 2-node cluster of one server kind; a client publisher on node 1 sends the core
scenarios' varied load (``build_batches``: subjects ``bench.s.0..7``, jittered sizes, unique reply subjects on a
share of frames) and 1 or 4 client subscribers on node 2 count what arrives over the route; reported is msgs/s
delivered, summed over the subscribers, as for ``pubsub1``/``pubsub4``.

Each node gets an extra config file, ``cluster { name: ..., listen: 127.0.0.1:<free port> }``, node 2's also with
``routes: [nats-route://127.0.0.1:<node 1's cluster port>]`` (nats-server syntax, which the hub reads too; the
command-line flags of the other scenarios still set the client port).  A cluster counts as started once a message
published on node 1 reaches a subscriber on node 2.

Interest travels from node 2 to node 1 asynchronously (``RS+``), after node 2 has already confirmed the SUB, and
node 1 drops what nobody it knows of is interested in.  So every subscriber, once its SUB is confirmed, also
subscribes to a probe subject of its own (``benchprobe.<pid>.<n>``, outside ``bench.>``, so no other subscriber
sees it) and publishes probes to it on node 1 until one comes back.  Node 2 sends its interest to node 1 in the
order the subscriptions were made, over the one route connection that carries the account (nats-server pools
routes per account), so once node 1 routes the probe it also routes ``bench.s.*``.  The subscriber then reads
until the last probe it sent has arrived (the route keeps order, so no probe is left in flight), drops the probe
subscription, and only then reports ready.  Every subscriber's total must equal what the publisher published.

``gw1`` / ``gwreq`` (docs/benchmarks.md, "Super-cluster (gateways)"): the same two servers, but each a cluster of
its own ("A" and "B") joined by a gateway instead of a route: B's ``gateway {}`` lists A, A learns of B when B
dials it and dials back (an implicit gateway, docs/supercluster.md).  ``gw1`` is ``route1`` across the gateway
(the publisher on A, one subscriber on B).  ``gwreq`` is ``reqrep`` across it: the requester on A, the responder
on B, one request in flight; latency percentiles and requests/s.  Gateways run interest-only, so both workers
probe as the route subscribers do before they report ready: the responder until A routes its probes to B, the
requester until B routes its probes to A.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from host.tools.benchlib import (
    GATEWAY_SCENARIOS,
    LOCALHOST,
    SUB_SUBJECTS,
    BenchConfig,
    BenchError,
    Endpoint,
    ServerProcess,
    WorkerSpec,
    compare_abba,
    free_port,
    mp_context,
    nats_connect,
    parse_url,
    publisher,
    recv_more,
    run_pubsub,
    subscriber,
    wait_pong,
    without_jetstream,
)

ROUTE_SUBSCRIBERS: dict[str, int] = {"route1": 1, "route4": 4}
GATEWAY_SUBSCRIBERS: dict[str, int] = {"gw1": 1}  # gwreq is a request/reply run, not a subscriber count
CLUSTER_NAME = "natsedge-bench"
GATEWAY_NAMES = ("A", "B")  # node 1's cluster, node 2's
PROBE_PREFIX = b"benchprobe"  # not under bench.>: no bench subscriber matches a probe
ROUTE_LISTENING_LINE = b"Listening for route connections on"
GATEWAY_LISTENING_LINE = b"Listening for gateway"  # nats-server: "gateways connections on", the hub "gateway ..."
INTEREST_TIMEOUT = 20.0  # below the orchestrator's READY_TIMEOUT, so this error is the one reported


def route_subjects(nsubs: int) -> list[bytes]:
    """The subscribers' subjects: the same wildcard shapes as pubsub1/pubsub4, each matching every message."""
    return [SUB_SUBJECTS[i % len(SUB_SUBJECTS)] for i in range(nsubs)]


def cluster_conf(server_name: str, cluster_port: int, routes: Sequence[int]) -> str:
    """A node's extra config file: its name and the cluster block (nats-server syntax)."""
    lines = [
        f'server_name: "{server_name}"',
        "cluster {",
        f"  name: {CLUSTER_NAME}",
        f"  listen: {LOCALHOST}:{cluster_port}",
    ]
    if routes:
        lines.append("  routes: [" + ", ".join(f"nats-route://{LOCALHOST}:{p}" for p in routes) + "]")
    lines.append("}")
    return "\n".join(lines) + "\n"


def gateway_conf(server_name: str, gateway_name: str, gateway_port: int, remotes: Sequence[tuple[str, int]]) -> str:
    """A node's extra config file for a super-cluster: its name and the gateway block, `remotes` the gateways it
    dials as (cluster name, gateway port) (nats-server syntax)."""
    lines = [
        f'server_name: "{server_name}"',
        "gateway {",
        f"  name: {gateway_name}",
        f"  listen: {LOCALHOST}:{gateway_port}",
    ]
    if remotes:
        lines.append("  gateways: [" + ", ".join(f"{{name: {name}, url: nats://{LOCALHOST}:{port}}}"
                                              for name, port in remotes) + "]")
    lines.append("}")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------- interest probe


def next_msg(sock: socket.socket, buf: bytearray, until: float) -> bytes | None:
    """The payload of the next MSG frame on a client connection, or None if none is complete by `until`.

    PINGs are answered; INFO, PONG and +OK lines are skipped; ``-ERR`` raises BenchError."""
    while True:
        end = buf.find(b"\r\n")
        if end >= 0:
            line = bytes(buf[:end])
            if line.startswith(b"MSG "):
                size = int(line.rsplit(b" ", 1)[1])
                if len(buf) >= end + 2 + size + 2:
                    payload = bytes(buf[end + 2 : end + 2 + size])
                    del buf[: end + 2 + size + 2]
                    return payload
            else:
                del buf[: end + 2]
                if line == b"PING":
                    sock.sendall(b"PONG\r\n")
                elif line.startswith(b"-ERR"):
                    raise BenchError(f"server error: {line.decode(errors='replace')}")
                continue
        remaining = until - time.monotonic()
        if remaining <= 0:
            return None
        sock.settimeout(remaining)
        try:
            recv_more(sock, buf, "a probe message")
        except TimeoutError:
            return None


def await_route_interest(
    pub: Endpoint, sock: socket.socket, buf: bytearray, subject: bytes, timeout: float = INTEREST_TIMEOUT
) -> int:
    """Publish probes to `subject` on `pub` (node 1) until one arrives on `sock` (subscribed to `subject` on
    node 2), then read on until the last probe sent has arrived too.  Returns the number of probes sent.

    Probes are numbered (the payload); node 1 routes either none or all from the first one it routes on, in
    order, so the last one sent is also the last one that can arrive."""
    deadline = time.monotonic() + timeout
    psock, pbuf = nats_connect(pub, "bench-route-probe")
    try:
        sent = 0
        wait = 0.02
        while True:
            sent += 1
            payload = b"%d" % sent
            psock.sendall(b"PUB %s %d\r\n%s\r\nPING\r\n" % (subject, len(payload), payload))
            wait_pong(psock, pbuf)  # node 1 has processed the probe: routed it or dropped it
            got = next_msg(sock, buf, min(deadline, time.monotonic() + wait))
            if got is not None:
                break
            if time.monotonic() >= deadline:
                raise BenchError(
                    f"interest in {subject.decode()} never reached {pub.url} from the other node within "
                    f"{timeout:.0f} s ({sent} probes): is the route up?"
                )
            wait = min(2 * wait, 0.5)
        last = b"%d" % sent
        while got != last:
            got = next_msg(sock, buf, time.monotonic() + 10.0)
            if got is None:
                raise BenchError(f"probe {sent} on {subject.decode()} was lost between the nodes")
        return sent
    finally:
        psock.close()
        sock.settimeout(10.0)


def await_subscriber_interest(pub: Endpoint, sock: socket.socket, buf: bytearray, idx: int) -> None:
    """`subscriber`'s prepare hook: wait until node 1 (`pub`) routes what this subscriber's SUB asked for.

    A second subscription on the same connection, made after the first was confirmed, is announced to node 1
    after it; when probes to it arrive, the first one's interest is in place too.  Leaves nothing behind."""
    sid = 1000 + idx
    subject = b"%s.%d.%d" % (PROBE_PREFIX, os.getpid(), idx)
    sock.sendall(b"SUB %s %d\r\nPING\r\n" % (subject, sid))
    wait_pong(sock, buf)
    await_route_interest(pub, sock, buf, subject)
    sock.sendall(b"UNSUB %d\r\nPING\r\n" % sid)
    wait_pong(sock, buf)


def wait_for_route(node1: Endpoint, node2: Endpoint, timeout: float = INTEREST_TIMEOUT) -> None:
    """Wait until a message published on node 1 reaches a subscriber on node 2."""
    sock, buf = nats_connect(node2, "bench-route-check")
    try:
        subject = b"%s.%d.check" % (PROBE_PREFIX, os.getpid())
        sock.sendall(b"SUB %s 1\r\nPING\r\n" % subject)
        wait_pong(sock, buf)
        await_route_interest(node1, sock, buf, subject, timeout)
    finally:
        sock.close()


# ---------------------------------------------------------------------------------------------------- runs


def run_route(
    node1: Endpoint,
    node2: Endpoint,
    scenario: str,
    size: int,
    cfg: BenchConfig,
    server_pids: Sequence[int] | None = None,
) -> dict[str, Any]:
    """One route (or gw1) run: `cfg.publishers` client publishers on node 1, ROUTE_SUBSCRIBERS[scenario] (or
    GATEWAY_SUBSCRIBERS[scenario]) client subscribers on node 2."""
    nsubs = (ROUTE_SUBSCRIBERS | GATEWAY_SUBSCRIBERS)[scenario]
    ctx = mp_context()
    delivered = ctx.RawArray("q", nsubs)
    published = ctx.RawArray("q", cfg.publishers)
    stop = ctx.RawValue("b", 0)
    prepare = partial(await_subscriber_interest, node1)
    specs = [
        WorkerSpec(f"subscriber-{i}", subscriber, (node2, i, subj, delivered, published, stop, prepare), passive=True)
        for i, subj in enumerate(route_subjects(nsubs))
    ]
    for i in range(cfg.publishers):
        args = (partial(nats_connect, node1, f"bench-pub-{i}"), b"PUB", i, size, cfg, published, delivered, nsubs)
        specs.append(WorkerSpec(f"publisher-{i}", publisher, args))
    return run_pubsub(specs, nsubs, cfg, server_pids, stop, " on node 1")


def run_gateway_reqrep(run_reqrep: Callable[..., dict[str, Any]], node1: Endpoint, node2: Endpoint, size: int,
                       cfg: BenchConfig, server_pids: Sequence[int] | None = None) -> dict[str, Any]:
    """One gwreq run: bench's reqrep (given by bench, which imports this module) with the requester on node 1
    (cluster A), the responder on node 2 (B)."""
    return run_reqrep(node1, size, cfg, server_pids, responder_ep=node2,
                      prepare_responder=partial(await_subscriber_interest, node1),
                      prepare_requester=partial(await_subscriber_interest, node2))


# ------------------------------------------------------------------------------------------------- servers


class ClusterNode(ServerProcess):
    """A ServerProcess that is also a cluster member: ``-c FILE`` with its ``cluster {}`` block is appended to its
    command line (a fresh free cluster port on every start; `routes` are the cluster ports it dials). `number` is
    its place in the BenchCluster, 1 or 2."""

    listening_line = ROUTE_LISTENING_LINE

    def __init__(self, label: str, cmd: Sequence[str], conf_dir: str, number: int) -> None:
        super().__init__(label, cmd)
        self.number = number
        self.cluster_port = 0
        self.routes: list[int] = []
        self.conf_path = os.path.join(conf_dir, f"{label}.conf")

    def conf_text(self) -> str:
        return cluster_conf(f"bench-{self.label}", self.cluster_port, self.routes)

    @property
    def endpoint(self) -> Endpoint:
        return parse_url(self.url)

    def argv(self) -> list[str]:
        return super().argv() + ["-c", self.conf_path]

    def start(self, timeout: float = 20.0) -> ClusterNode:
        self.cluster_port = free_port()
        Path(self.conf_path).write_text(self.conf_text())
        super().start(timeout)
        try:
            self._wait_route_listener(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_route_listener(self, timeout: float) -> None:
        """Until the log says the cluster (or gateway) port listens (servers may open it after the client port)."""
        assert self.proc is not None and self.log_path is not None
        want = b":%d" % self.cluster_port
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.log_path.read_bytes().splitlines():
                if self.listening_line in line and line.rstrip().endswith(want):
                    return
            if self.proc.poll() is not None:
                raise BenchError(
                    f"{self.label} exited with status {self.proc.returncode} during startup; log:\n{self.log_tail()}"
                )
            time.sleep(0.05)
        raise BenchError(
            f"{self.label} never logged {self.listening_line.decode()!r} ... port {self.cluster_port}; "
            f"log:\n{self.log_tail()}"
        )


class GatewayNode(ClusterNode):
    """A ClusterNode alone in its cluster (node 1 in "A", node 2 in "B"), joined to the other by a gateway:
    `cluster_port` is its gateway port, `routes` the gateway ports of "A" it dials (node 2's: node 1's)."""

    listening_line = GATEWAY_LISTENING_LINE

    def conf_text(self) -> str:
        remotes = [(GATEWAY_NAMES[0], port) for port in self.routes]
        return gateway_conf(f"bench-{self.label}", GATEWAY_NAMES[self.number - 1], self.cluster_port, remotes)


class BenchCluster:
    """Two nodes of one server command, node 2 dialling node 1 (a route; with GatewayNode, a gateway); started
    when the link carries interest."""

    def __init__(self, label: str, cmd: Sequence[str], node_type: type[ClusterNode] = ClusterNode) -> None:
        self.label = label
        self._conf_dir = tempfile.mkdtemp(prefix="natsedge-bench-cluster-")
        self.nodes = [node_type(f"{label}-node{n}", without_jetstream(cmd), self._conf_dir, n) for n in (1, 2)]

    @property
    def pids(self) -> list[int]:
        return [n.pid for n in self.nodes]

    def start(self, timeout: float = 20.0) -> BenchCluster:
        node1, node2 = self.nodes
        try:
            node1.start(timeout)
            node2.routes = [node1.cluster_port]
            node2.start(timeout)
            wait_for_route(node1.endpoint, node2.endpoint, timeout)
        except BenchError as exc:
            tails = "\n".join(f"--- {n.label}:\n{n.log_tail()}" for n in self.nodes)
            self.stop()
            raise BenchError(f"{self.label} cluster did not start: {exc}\n{tails}") from exc
        except BaseException:
            self.stop()
            raise
        return self

    def alive(self) -> bool:
        return all(n.alive() for n in self.nodes)

    def log_tail(self) -> str:
        return "\n".join(f"--- {n.label}:\n{n.log_tail()}" for n in self.nodes)

    def stop(self) -> None:
        """Stop both nodes (each by its PID's process group; `start` may follow)."""
        for node in self.nodes:
            node.stop()

    def close(self) -> None:
        """Stop both nodes and remove the config directory."""
        self.stop()
        shutil.rmtree(self._conf_dir, ignore_errors=True)


def run_compare_route(
    cfg: BenchConfig, cmds: dict[str, list[str]], log: Callable[[str], None] = lambda s: None
) -> list[dict[str, Any]]:
    """The route scenarios of `run_compare`: a 2-node cluster of each server started once, runs alternating
    ABBA between them. Returns result entries in `run_compare`'s shape."""

    def describe(cluster: BenchCluster) -> str:
        n1, n2 = cluster.nodes
        return (f"cluster: node 1 pid {n1.pid} on {n1.url} (routes on {n1.cluster_port}), "
                f"node 2 pid {n2.pid} on {n2.url} (routes on {n2.cluster_port}, dials node 1)")

    def run_one(cluster: BenchCluster, scen: str, size: int) -> dict[str, Any]:
        ep1, ep2 = (n.endpoint for n in cluster.nodes)
        return run_route(ep1, ep2, scen, size, cfg, cluster.pids)

    return compare_abba(cfg, list(cmds), ROUTE_SUBSCRIBERS, lambda label: BenchCluster(label, cmds[label]),
                        describe, run_one, log)


def run_compare_gateway(
    cfg: BenchConfig, cmds: dict[str, list[str]], run_reqrep: Callable[..., dict[str, Any]],
    log: Callable[[str], None] = lambda s: None
) -> list[dict[str, Any]]:
    """The gateway scenarios of `run_compare`: a super-cluster of two 1-server clusters of each server kind
    started once, runs alternating ABBA between them. Returns result entries in `run_compare`'s shape."""

    def describe(cluster: BenchCluster) -> str:
        n1, n2 = cluster.nodes
        return (f"super-cluster: cluster A pid {n1.pid} on {n1.url} (gateway on {n1.cluster_port}), "
                f"cluster B pid {n2.pid} on {n2.url} (gateway on {n2.cluster_port}, dials A)")

    def run_one(cluster: BenchCluster, scen: str, size: int) -> dict[str, Any]:
        ep1, ep2 = (n.endpoint for n in cluster.nodes)
        if scen == "gwreq":
            return run_gateway_reqrep(run_reqrep, ep1, ep2, size, cfg, cluster.pids)
        return run_route(ep1, ep2, scen, size, cfg, cluster.pids)

    return compare_abba(cfg, list(cmds), GATEWAY_SCENARIOS,
                        lambda label: BenchCluster(label, cmds[label], GatewayNode), describe, run_one, log)
