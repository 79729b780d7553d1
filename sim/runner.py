"""A simulation run: hub, observer connection, one proxy and one MicroPython process per edge, faults on a timeline,
then a flush and an orderly stop of everything it started.

Timeline: t=0 is when the fleet has been launched. Faults fire at their "at" (and every "every" seconds after).
At the end (duration reached, or Ctrl-C / SIGTERM): partitions heal, edges get `settle` seconds to reconnect, then
each edge is sent the stop command; its reply travels the same hub link as its telemetry, so once it arrives the
hub has delivered everything that edge forwarded. Then edges get SIGINT, the hub SIGTERM, and the report is made.
A second Ctrl-C skips the waiting but still stops every process by PID.

With a cluster of hubs (`hubs` > 1) every edge has one proxy per node and is given the nodes' URLs (through its
proxies) starting with node i % N, the simulator's own connection moves to another node when its node goes, and hub
nodes are killed, started and restarted one at a time on the timeline; killed nodes are started again before the
flush.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import random
import shutil
import signal
import tempfile
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sim import edgestatus
from sim import report as report_mod
from sim.client import Client, NoResponders, NotConnected, parse_url
from sim.dashboard import Dashboard, HubMonitor
from sim.fleet import Edge, edge_takes_url_list, word_bits
from sim.hub import Cluster, Hub, HubError, ManagedHub, SuperCluster, free_port
from sim.procs import ProcessTable
from sim.proxy import ProxyGroup
from sim.regions import Region
from sim.scenario import HUB_FAULTS, HUB_KINDS, WORKER_FAULTS, Fault, Scenario, WorkloadStep

START_BATCH = 16  # edges launched at once (each is a CPython+MicroPython process: ~25 ms of CPU to start)
STREAM_RETRY_S = 20.0  # a cluster: how long the stream's creation is retried while JetStream is not ready


class SimError(Exception):
    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class Options:
    hub: str = "hub"  # "hub" (ours), "nats-server", or the client URL of an external server; the scenario's
    # hub_kinds (one per node), when set, decide the kinds of started hubs
    leaf_url: str | None = None  # external hub: its leafnode port (default: the client host, port 7422)
    monitor_url: str | None = None  # external hub: its monitoring port, for the dashboard
    jetstream: str = "auto"  # managed hub: "auto" (on if the hub starts with it), "on", "off"
    hub_port: int = 0  # managed hub ports; 0 = a free port
    hub_http_port: int = 0
    leaf_port: int = 0
    dashboard: tuple[str, int] | None = None
    workdir: Path | None = None
    keep: bool = False
    micropython: str = "micropython"
    quiet: bool = False


class Simulation:
    def __init__(self, scenario: Scenario, opts: Options) -> None:
        self.scenario = scenario
        self.opts = opts
        self.rng = random.Random(scenario.seed)
        self.procs = ProcessTable()
        self.events: deque[tuple[float, str]] = deque(maxlen=500)
        self.fault_log: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self.edges: list[Edge] = []
        self.proxies: dict[str, ProxyGroup] = {}
        self.proxy_nodes: dict[str, list[int]] = {}  # edge -> the hub node (index) of each of its proxies
        self.edge_url_lists = False  # the edges take a list of hub URLs (a cluster: every node, in their order)
        self._busy_nodes: set[int] = set()  # hub nodes a hub fault is working on
        self.hub: Hub | None = None
        self.observer: Client | None = None
        self.dashboard: Dashboard | None = None
        self.monitor: HubMonitor | None = None
        self.stream_status = "not configured"
        self.edge_bits: int | None = None  # the edges' MicroPython: 64- or 32-bit (their heap figures depend on it)
        self.phase = "starting"
        self.interrupted = False
        self.hurry = False
        self.fatal: SimError | None = None
        self.t0: float | None = None
        self.run_seconds = 0.0
        self.started_at = datetime.datetime.now(datetime.UTC)
        self._stop = asyncio.Event()
        self._hurry = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._hub_tasks: set[asyncio.Task[Any]] = set()
        self.workdir = opts.workdir or Path(tempfile.mkdtemp(prefix="natsedge-sim-"))
        self._made_workdir = opts.workdir is None
        self._workload_nc: Any = None  # nats-py connection of the workload steps, made at the first one
        self.workload_log: list[dict[str, Any]] = []
        self.regions: dict[str, Region] = {}  # scenarios with "regions": name -> its workers and requester

    # ---- helpers ----------------------------------------------------------------------------------------

    def clock(self) -> float:
        return 0.0 if self.t0 is None else time.monotonic() - self.t0

    def event(self, text: str) -> None:
        t = round(self.clock(), 2)
        self.events.append((t, text))
        if not self.opts.quiet:
            print(f"sim: [{t:7.2f}s] {text}", flush=True)

    def say(self, text: str) -> None:
        if not self.opts.quiet:
            print(f"sim: {text}", flush=True)

    def _spawn(self, coro: Any, hub: bool = False) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        bucket = self._hub_tasks if hub else self._tasks
        bucket.add(task)
        task.add_done_callback(bucket.discard)
        task.add_done_callback(self._task_failed)
        return task

    def _task_failed(self, task: asyncio.Task[Any]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None:
            return
        if isinstance(exc, SimError):
            self._fail(exc)
        else:
            self.errors.append(f"internal error: {exc!r}")
            self._fail(SimError(f"internal error in the simulator: {exc!r}"))

    def _fail(self, err: SimError) -> None:
        if self.fatal is None:
            self.fatal = err
        self._stop.set()

    async def _wait(self, seconds: float) -> bool:
        """Sleep unless the run is stopping; True when the full time passed."""
        try:
            await asyncio.wait_for(self._stop.wait(), seconds)
            return False
        except TimeoutError:
            return True

    # ---- run ---------------------------------------------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._on_signal)
        try:
            await self._setup()
            if self.fatal is None:
                await self._main()
        except (HubError, OSError) as e:
            self._fail(SimError(str(e)))
        finally:
            try:
                await self._teardown()
            finally:
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.remove_signal_handler(sig)
        if self.fatal is not None:
            raise self.fatal
        return report_mod.build(self)

    def _on_signal(self) -> None:
        if not self._stop.is_set():
            self.interrupted = True
            self.event("interrupted: stopping the fleet (press Ctrl-C again to skip the flush)")
            self._stop.set()
        elif not self.hurry:
            self.hurry = True
            self.event("interrupted again: stopping without the flush")
            self._hurry.set()

    async def _setup(self) -> None:
        s, o = self.scenario, self.opts
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.edge_bits = await word_bits(o.micropython)  # ~40 ms
        kinds = (s.hub_kinds or [o.hub] * s.hubs) if o.hub in HUB_KINDS else None  # None: an external hub
        if kinds is not None and s.regions:
            self.hub = SuperCluster(kinds, [(r.name, r.hubs) for r in s.regions], self.workdir / "hub", self.procs,
                                    o.hub_port, o.hub_http_port, o.leaf_port)
        elif kinds is not None and len(kinds) > 1:
            self.hub = Cluster(kinds, self.workdir / "hub", self.procs, o.jetstream, o.hub_port, o.hub_http_port,
                               o.leaf_port)
        elif kinds is not None:
            self.hub = ManagedHub(kinds[0], self.workdir / "hub", self.procs, o.jetstream, o.hub_port,
                                  o.hub_http_port, o.leaf_port)
        else:
            host = parse_url(o.hub)[0]
            self.hub = Hub(o.hub, o.leaf_url or f"nats-leaf://{host}:7422", o.monitor_url)
        await self.hub.start()
        if self.hub.note:
            self.say(self.hub.note)
        self.say(f"hub: {self.hub.describe()}")
        if self.hub.monitor_url:
            self.monitor = HubMonitor(self.hub.monitor_url)

        self.observer = Client(self.hub.client_urls, on_state=self._observer_state)
        subjects = sorted({p.subject.replace("{edge}", e) for e in s.edge_names() for p in s.publishers_for(e)})
        for subj in subjects:
            self.observer.subscribe(subj, self._on_telemetry)
        self.observer.subscribe(edgestatus.SUBJECT, self._on_status)
        self.observer.start()
        if not await self.observer.wait_connected(10):
            raise SimError(f"cannot connect to the hub at {self.hub.client_url}: {self.observer.last_error}")
        await self._ensure_stream()
        await self._start_regions()

        if o.dashboard is not None:
            self.dashboard = Dashboard(self.state, o.dashboard[0], o.dashboard[1], hub_client=self.observer)
            try:
                await self.dashboard.start()
            except OSError as e:
                raise SimError(f"dashboard: cannot listen on {o.dashboard[0]}:{o.dashboard[1]}: "
                               f"{e.strerror or e}") from None
            self.say(f"dashboard: {self.dashboard.url}")

        nodes = self.hub.nodes
        if len(nodes) > 1:
            self.edge_url_lists = edge_takes_url_list()
            nodes_of = "their region's nodes" if s.regions else "every node"
            self.say("edges are given " + (f"{nodes_of}' URLs, node i % N first" if self.edge_url_lists else
                                           f"node i % N's URL of {nodes_of} only (their hub.url takes one URL)"))
        for i, name in enumerate(s.edge_names()):
            if isinstance(self.hub, SuperCluster):  # an edge uplinks to its own region's nodes only
                nodes = self.hub.region_nodes(s.region_of_edge(i))
            group = ProxyGroup(name, [(n.leaf_host, n.leaf_port) for n in nodes])
            await group.start()
            self.proxies[name] = group
            self.proxy_nodes[name] = [list(self.hub.nodes).index(n) for n in nodes]
            order = [(i + k) % len(nodes) for k in range(len(nodes))]
            urls = [f"nats-leaf://127.0.0.1:{group.ports[j]}" for j in order]
            node_of = {f"127.0.0.1:{port}": n.name for port, n in zip(group.ports, nodes, strict=True)}
            node_of.update({f"{n.leaf_host}:{n.leaf_port}": n.name for n in nodes})
            edge = Edge(i, name, s, self.workdir / "edges", self.procs, o.micropython,
                        urls if self.edge_url_lists else urls[0], free_port() if s.lan else None, self.clock,
                        self.event, node_of)
            edge.on_fatal = self._edge_fatal
            edge.observer_up = self._observer_connected
            self.edges.append(edge)
        for i in range(0, len(self.edges), START_BATCH):
            await asyncio.gather(*(e.start() for e in self.edges[i:i + START_BATCH]))
            await asyncio.sleep(0.05)
        self.t0 = time.monotonic()
        self.phase = "running"
        self.say(f"fleet: {len(self.edges)} MicroPython edges started ("
                 + (f"{s.duration:g} s" if s.duration else "until Ctrl-C") + ")")

    async def _start_regions(self) -> None:
        """Regions: every region's queue workers, connected and subscribed before t = 0, and its requester."""
        if not isinstance(self.hub, SuperCluster):
            return
        for r in self.scenario.regions:
            region = self.regions[r.name] = Region(r.name, [n.client_url for n in self.hub.region_nodes(r.name)],
                                                   self.scenario.service, self.clock)
            err = await region.start_workers()
            if err is not None:
                raise SimError(err)
            region.requester.start()
            if not await region.requester.wait_connected(10):
                raise SimError(f"region {r.name}: the requester cannot connect: {region.requester.last_error}")
        sv = self.scenario.service
        self.say(f"regions: {sv.workers} workers each in queue group {sv.queue} on {sv.subject}; "
                 f"{sv.rate:g} requests/s from each region")

    def _edge_fatal(self, edge: Edge) -> None:
        # An edge that cannot start is a setup problem (its config, its app, a port): stop and say so.
        code = 2 if edge.exit_codes[-1:] == [2] else 1
        self._fail(SimError(edge.fatal or f"{edge.name} failed", code))

    def _observer_connected(self) -> bool:
        return self.observer is not None and self.observer.connected

    def _observer_state(self, up: bool) -> None:
        if self.t0 is not None:
            self.event("simulator connected to the hub" if up else "simulator lost its hub connection")
        if up:
            for e in self.edges:
                e.maybe_close_window()

    # ---- hub-side observations ------------------------------------------------------------------------------

    def _on_telemetry(self, subject: bytes, reply: bytes | None, hdr: bytes | None, payload: bytes) -> None:
        parts = payload.split(b" ", 4)
        if len(parts) < 4 or not (parts[1].isdigit() and parts[2].isdigit() and parts[3].isdigit()):
            return
        edge = self._by_name(parts[0].decode(errors="replace"))
        if edge is not None:
            edge.received(int(parts[1]), int(parts[2]), int(parts[3]))

    def _on_status(self, subject: bytes, reply: bytes | None, hdr: bytes | None, payload: bytes) -> None:
        parts = edgestatus.split_subject(subject)
        if parts is not None:
            edge = self._by_name(parts[0])
            if edge is not None:
                edge.set_status(parts[1], payload)

    def _by_name(self, name: str) -> Edge | None:
        if name.startswith("edge-") and name[5:].isdigit():
            i = int(name[5:])
            if i < len(self.edges) and self.edges[i].name == name:
                return self.edges[i]
        return None

    async def _ensure_stream(self) -> None:
        st = self.scenario.stream
        if st is None or self.observer is None or self.hub is None:
            return
        if self.hub.jetstream is False:
            self.stream_status = "not created: the hub runs without JetStream"
            self.say(f"stream {st['name']}: {self.stream_status}")
            return
        body = {"name": st["name"], "subjects": st["subjects"], "storage": "file", "max_msgs": 100_000}
        # A cluster's JetStream needs a few seconds (a meta leader, the node holding JetStream routed in): retry
        # while it says "temporarily unavailable" or nobody answers yet.
        clustered = len(self.hub.nodes) > 1
        deadline = time.monotonic() + (STREAM_RETRY_S if clustered else 0)
        while True:
            retry = False
            try:
                raw = await self.observer.request(f"$JS.API.STREAM.CREATE.{st['name']}", json.dumps(body).encode(),
                                                  3)
                reply = json.loads(raw)
            except (NoResponders, NotConnected, TimeoutError, ValueError) as e:
                self.stream_status = f"not created: {type(e).__name__} {e}".strip()
                retry = not isinstance(e, ValueError)
            else:
                err = reply.get("error") if isinstance(reply, dict) else None
                if err is None:
                    self.stream_status = "created"
                    leader = (reply.get("cluster") or {}).get("leader") if clustered else None
                    if leader:
                        replicas = (reply.get("config") or {}).get("num_replicas", 1)
                        self.stream_status += f" (R{replicas}, on {leader})"
                elif err.get("err_code") == 10058:  # stream name already in use (a restarted hub kept it)
                    self.stream_status = "exists"
                else:
                    self.stream_status = f"not created: {err.get('description', err)}"
                    retry = err.get("err_code") == 10008  # JetStream system temporarily unavailable
            if not retry or time.monotonic() >= deadline or not await self._wait(0.5):
                break
        self.say(f"stream {st['name']} {st['subjects']}: {self.stream_status}")

    # ---- the timeline -----------------------------------------------------------------------------------------

    async def _main(self) -> None:
        s = self.scenario
        for f in s.faults:
            self._spawn(self._schedule(f))
        for w in s.workloads:
            self._spawn(self._workload_step(w))
        if s.request_rate > 0:
            for e in self.edges:
                self._spawn(self._requests(e))
        for region in self.regions.values():
            self._spawn(self._region_requests(region))
        if s.duration:
            await self._wait(s.duration)
        else:
            await self._stop.wait()
        self.run_seconds = self.clock()
        if self.fatal is None:
            await self._finish()

    async def _schedule(self, f: Fault) -> None:
        t = f.at
        while True:
            if not await self._wait(max(0.0, t - self.clock())):
                return
            if f.type in WORKER_FAULTS:
                self._spawn(self._workers_fault(f))
            elif f.type in HUB_FAULTS:
                assert self.hub is not None
                targets = [f.node - 1] if f.node is not None else list(range(len(self.hub.nodes)))
                if self._busy_nodes & set(targets):
                    what = "hub restart" if f.type == "hub_restart" and f.node is None else f.describe()
                    self.event(f"fault {f.index}: {what} skipped (the previous one is still running)")
                else:
                    self._busy_nodes.update(targets)
                    self._spawn(self._hub_fault(f, targets), hub=True)
            else:
                self._spawn(self._apply(f))
            if f.every is None:
                return
            t += f.every

    async def _workload_step(self, w: WorkloadStep) -> None:
        """A `natsedge workload deploy` or `rollback` (host/tools/workload_cmd.py) at its time; a failure is an event
        of the run, as the command would print it."""
        from host.tools import workload_cmd
        from host.tools.firmware_cmd import DEFAULT_TARGET_MPY

        if not await self._wait(max(0.0, w.at - self.clock())):
            return
        assert self.hub is not None
        entry: dict[str, Any] = {"t": round(self.clock(), 2), "step": w.index, "name": w.name}
        try:
            if self._workload_nc is None:
                self._workload_nc = (await workload_cmd.connect(self.hub.client_url))[0]
            js = self._workload_nc.jetstream(timeout=5)
            if w.module is None:
                st = await workload_cmd.rollback(js, w.name)
                text = f"workload {w.name}: rolled back to {st['version']}"
            else:
                limits = {k: default for k, (default, _) in workload_cmd.LIMITS.items()}
                st = await workload_cmd.deploy(self._workload_nc, js, Path(w.module), w.name,
                                               workload_cmd.parse_target(w.target), w.version, limits,
                                               workload_cmd.DEFAULT_MAX_FLASH, None, DEFAULT_TARGET_MPY)
                text = f"workload {w.name}: {st['version']} deployed to {w.target}"
            entry.update(version=st["version"], target=st["target"])
        except workload_cmd.WorkloadError as e:
            text = f"workload step {w.index}: {w.describe()} failed: {e}"
            entry["error"] = str(e)
        self.workload_log.append(entry)
        self.event(text)

    async def _apply(self, f: Fault) -> None:
        names = self.scenario.select(f.edges, self.rng)
        edges = [e for e in self.edges if e.name in names]
        self.fault_log.append({"t": round(self.clock(), 2), "type": f.type, "edges": names,
                               **({"for": f.duration, "mode": f.mode} if f.type == "partition" else {"down": f.down})})
        if f.type == "partition":
            self.event(f"partition {', '.join(names)} ({f.mode}, {f.duration:g} s)")
            for e in edges:
                self.proxies[e.name].cut(f.mode)
                e.partition_started()
            try:
                await asyncio.sleep(f.duration)
            finally:
                t = self.clock()
                healed = []
                for e in edges:
                    if self.proxies[e.name].heal():
                        healed.append(e)
                        e.partition_healed(t)
                    else:  # another partition still holds this edge
                        e.fault_ends()
                if healed:
                    self.event(f"heal {', '.join(e.name for e in healed)}")
        else:
            self.event(f"crash {', '.join(names)} (SIGKILL; restart in {f.down:g} s)")
            await asyncio.gather(*(e.crash() for e in edges))
            await asyncio.sleep(f.down)
            await asyncio.gather(*(e.restart() for e in edges))
            self.event(f"restarted {', '.join(e.name for e in edges)}")

    async def _hub_fault(self, f: Fault, targets: list[int]) -> None:
        try:
            if f.type == "hub_restart" and f.node is None:
                await self._hub_restart(f)  # every node at once: the hub (or the whole cluster) goes and comes back
            elif f.type == "hub_restart":
                await self._node_restart(f, targets[0])
            elif f.type == "hub_kill":
                await self._node_kill(f, targets[0])
            else:
                await self._node_start(f, targets[0])
        finally:
            self._busy_nodes.difference_update(targets)

    def _log_fault(self, f: Fault, **extra: Any) -> None:
        d: dict[str, Any] = {"t": round(self.clock(), 2), "type": f.type}
        if f.node is not None:
            assert self.hub is not None
            d["node"] = self.hub.nodes[f.node - 1].name
        d.update(extra)
        self.fault_log.append(d)

    async def _nodes_down(self, idx: int, kind: str, sigkill: bool) -> None:
        """Node `idx` goes (SIGKILL, or SIGTERM for a restart). Edges linked through it lose their link: each is in a
        fault window until its next "uplink up" (a failover, or the node back), which is timed as `kind`. The others
        get a short fault window, which stays open until the simulator's connection is up again (it may have been on
        that node: windows close only while it is connected)."""
        assert self.hub is not None
        node = self.hub.nodes[idx]
        t = self.clock()
        attached = [e for e in self.edges if idx in self.proxy_nodes[e.name]
                    and self.proxies[e.name].attached(self.proxy_nodes[e.name].index(idx))]
        others = [e for e in self.edges if e not in attached]
        for e in attached:
            e.node_lost(kind, t)
        for e in others:
            e.fault_begins()
        try:
            if sigkill:
                assert isinstance(node, ManagedHub)
                await node.kill()
            else:
                await node.stop()
            await asyncio.sleep(0.2)  # the simulator's connection has noticed if its node is gone
        finally:
            for e in others:
                e.fault_ends()
        if attached:
            self.event(f"{node.name} went with the links of {', '.join(e.name for e in attached)}")

    async def _nodes_up(self, nodes: list[ManagedHub], restart: bool = False) -> None:
        """Start killed nodes again on their ports and wait for their routes; every edge is in a fault window
        meanwhile (interest travels new routes)."""
        assert self.hub is not None
        for e in self.edges:
            e.fault_begins()
        try:
            results = await asyncio.gather(*(n.start_again(restart) for n in nodes), return_exceptions=True)
            for n, r in zip(nodes, results, strict=True):
                if isinstance(r, HubError):
                    raise SimError(f"hub node {n.name} did not come back: {r}") from None
                if isinstance(r, BaseException):
                    raise r
            try:
                await self.hub.wait_cluster()
            except HubError as e:
                raise SimError(str(e)) from None
        finally:
            for e in self.edges:
                e.fault_ends()
        if self.scenario.stream is not None and self.observer is not None:
            await self.observer.wait_connected(5)
            await self._ensure_stream()

    async def _node_kill(self, f: Fault, idx: int) -> None:
        assert self.hub is not None
        node = self.hub.nodes[idx]
        assert isinstance(node, ManagedHub)
        if not node.running:
            self.event(f"fault {f.index}: {f.describe()} skipped ({node.name} is down)")
            return
        self._log_fault(f, pid=node.proc.pid if node.proc else None, **({"down": f.down} if f.down is not None
                                                                         else {}))
        self.event(f"kill hub {node.name} (SIGKILL pid {node.proc.pid if node.proc else '?'}"
                   + (f"; start in {f.down:g} s)" if f.down is not None else ")"))
        await self._nodes_down(idx, "hub_kill", sigkill=True)
        if f.down is not None:
            await asyncio.sleep(f.down)
            await self._start_nodes([node])

    async def _node_start(self, f: Fault, idx: int) -> None:
        assert self.hub is not None
        node = self.hub.nodes[idx]
        assert isinstance(node, ManagedHub)
        if node.running:
            self.event(f"fault {f.index}: {f.describe()} skipped ({node.name} is running)")
            return
        self._log_fault(f)
        await self._start_nodes([node])

    async def _start_nodes(self, nodes: list[ManagedHub]) -> None:
        names = ", ".join(n.name for n in nodes)
        self.event(f"start hub {names} again")
        await self._nodes_up(nodes)
        self.event(f"hub {names} is back")

    async def _node_restart(self, f: Fault, idx: int) -> None:
        assert self.hub is not None
        node = self.hub.nodes[idx]
        assert isinstance(node, ManagedHub)
        if not node.running:
            self.event(f"fault {f.index}: {f.describe()} skipped ({node.name} is down)")
            return
        self._log_fault(f, down=f.down)
        self.event(f"restart hub {node.name} (SIGTERM; down {f.down:g} s)")
        await self._nodes_down(idx, "hub_restart", sigkill=False)
        await asyncio.sleep(f.down or 0.0)
        await self._nodes_up([node], restart=True)
        if self.hub is not node:  # a cluster counts its nodes' restarts too
            self.hub.restarts += 1
        self.event(f"hub {node.name} is back")

    async def _hub_restart(self, f: Fault) -> None:
        assert self.hub is not None
        self.fault_log.append({"t": round(self.clock(), 2), "type": "hub_restart", "down": f.down})
        self.event(f"hub restart (down {f.down:g} s)")
        for e in self.edges:
            e.hub_down()
        try:
            await self.hub.restart(f.down)
        except HubError as e:
            raise SimError(f"the hub did not come back after a restart: {e}") from None
        t = min([self.clock()] + [e.hub_up_at for e in self.edges if e.hub_wait and e.hub_up_at is not None])
        for e in self.edges:
            e.hub_back(t)
        self.event("hub is back")
        if self.scenario.stream is not None and self.observer is not None:
            await self.observer.wait_connected(5)
            await self._ensure_stream()

    async def _workers_fault(self, f: Fault) -> None:
        assert f.region is not None
        region = self.regions[f.region]
        kill = f.type == "workers_kill"
        if region.workers_up != kill:
            self.event(f"fault {f.index}: {f.describe()} skipped (they are {'down' if kill else 'up'} already)")
            return
        self.fault_log.append({"t": round(self.clock(), 2), "type": f.type, "region": f.region})
        self.event(f"{f.describe()}")
        if kill:
            await region.kill_workers()
        else:
            err = await region.start_workers()
            if err is not None:
                raise SimError(err)

    async def _region_requests(self, region: Region) -> None:
        """The region's requests at the service's rate, one at a time (each waits for its reply or timeout)."""
        interval = 1.0 / self.scenario.service.rate
        due = self.clock()
        while True:
            await region.request()
            due = max(due + interval, self.clock())  # a request that waited for its timeout delays the next
            if not await self._wait(max(0.0, due - self.clock())):
                return

    async def _requests(self, edge: Edge) -> None:
        s = self.scenario
        assert self.observer is not None
        subject = s.request_subject.replace("{edge}", edge.name)
        interval = 1.0 / s.request_rate
        if not await self._wait(self.rng.random() * interval):
            return
        while True:
            if edge.running and self.observer.connected:
                edge.requests["sent"] += 1
                try:
                    await self.observer.request(subject, b"ping", s.request_timeout)
                    edge.requests["ok"] += 1
                except NoResponders:
                    edge.requests["no_responders"] += 1
                except TimeoutError:
                    edge.requests["timeout"] += 1
                except NotConnected:
                    edge.requests["sent"] -= 1  # never reached the hub
            if not await self._wait(interval):
                return

    # ---- the end ------------------------------------------------------------------------------------------------

    async def _cancel(self, tasks: set[asyncio.Task[Any]]) -> None:
        pending = list(tasks)
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    async def _finish(self) -> None:
        """Heal, let edges reconnect, flush each edge with the stop barrier."""
        self.phase = "stopping"
        await self._cancel(self._tasks)
        t = self.clock()
        for e in self.edges:
            p = self.proxies[e.name]
            if p.is_cut:
                p.heal(force=True)
                e.partition_healed(t)
        if self._hub_tasks:  # let a hub restart in progress complete: the flush needs the hub
            await self._unless_hurried(asyncio.gather(*self._hub_tasks, return_exceptions=True), 30)
        down = [n for n in self.hub.nodes if isinstance(n, ManagedHub) and n.down] if self.hub else []
        if down and not self.hurry:  # killed nodes come back: edges that only know them need them for the flush
            self.event(f"end of run: {', '.join(n.name for n in down)} killed and not started again")
            await self._unless_hurried(asyncio.ensure_future(self._start_nodes(down)), 30)
        deadline = time.monotonic() + self.scenario.settle
        live = [e for e in self.edges if e.running]
        while not self.hurry and time.monotonic() < deadline and not all(e.link_up for e in live):
            await asyncio.sleep(0.05)
        await self._unless_hurried(asyncio.gather(*(self._stop_barrier(e, deadline + 2) for e in live)), None)
        missed = [e.name for e in live if not e.stop_acked]
        if missed:
            self.event(f"no stop reply from {', '.join(missed)}: messages they sent last may count as lost")
        self.phase = "stopped"

    async def _unless_hurried(self, work: asyncio.Future[Any], timeout: float | None) -> None:
        """Wait for `work` (at most `timeout` s), or until a second Ctrl-C; then cancel what is left of it."""
        if self.hurry:
            work.cancel()
        hurry = asyncio.ensure_future(self._hurry.wait())
        await asyncio.wait([work, hurry], timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        hurry.cancel()
        if not work.done():
            work.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await work

    async def _stop_barrier(self, edge: Edge, deadline: float) -> None:
        assert self.observer is not None
        while time.monotonic() < deadline and edge.running:
            try:
                await self.observer.request(f"sim.ctl.{edge.name}", b"stop", 1.0)
                edge.stop_acked = True
                return
            except (NoResponders, NotConnected, TimeoutError):
                await asyncio.sleep(0.1)

    async def _teardown(self) -> None:
        self.phase = "stopping"
        await self._cancel(self._tasks)
        await self._cancel(self._hub_tasks)
        await asyncio.gather(*(e.stop() for e in self.edges), return_exceptions=True)
        if self.observer is not None:
            await self.observer.close()
        await asyncio.gather(*(r.close() for r in self.regions.values()))
        if self._workload_nc is not None:
            await self._workload_nc.close()
        if self.hub is not None:
            await self.hub.stop()
        for p in self.proxies.values():
            await p.close()
        if self.dashboard is not None:
            await self.dashboard.close()
        await self.procs.stop_all()
        self.phase = "done"
        if self._made_workdir and not self.opts.keep:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # ---- live state (dashboard) -------------------------------------------------------------------------------

    async def state(self) -> dict[str, Any]:
        now = self.clock()
        hub: dict[str, Any] = {"kind": self.hub.kind if self.hub else None,
                               "description": self.hub.describe() if self.hub else None,
                               "restarts": self.hub.restarts if self.hub else 0,
                               "nodes": [n.node_json() for n in self.hub.nodes] if self.hub else []}
        if self.monitor is not None and self.hub is not None and len(self.hub.nodes) > 1:
            # a cluster: the monitoring port of the first running node (node 1 unless it is down)
            up = [n for n in self.hub.nodes if n.running and n.monitor_url]
            if up and up[0].monitor_url != self.monitor.url:
                self.monitor = HubMonitor(up[0].monitor_url or "")
            hub["monitor_node"] = up[0].name if up else None
        if self.monitor is not None:
            hub.update(await self.monitor.view())
        edges = []
        for e in self.edges:
            d = e.snapshot(now)
            p = self.proxies.get(e.name)
            if p is not None:
                d["partitioned"] = p.mode
                d["proxy"] = {"port": p.port, "connections": p.accepted, "bytes_up": p.bytes_up,
                              "bytes_down": p.bytes_down}
            edges.append(d)
        return {
            "source": "sim",
            "sim": {"scenario": self.scenario.name, "phase": self.phase, "t": round(now, 2),
                    "duration": self.scenario.duration, "observer_connected": bool(self.observer
                                                                                   and self.observer.connected),
                    "stream": self.stream_status, "workdir": str(self.workdir),
                    # what the edges' heap figures are: the unix port, the edge's code compiled into the heap from
                    # the .py files on MICROPYPATH (the repo comes before .frozen there)
                    "edge_heap": {"port": "unix", "bits": self.edge_bits,
                                  "code": "compiled into the heap from .py files"}},
            "hub": hub,
            "edges": edges,
            "events": [{"t": t, "text": x} for t, x in list(self.events)[-40:]],
        }
