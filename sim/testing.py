"""Testing a user's edge app: a hub, a fleet of MicroPython edges running the app, network partitions, crashes, a
virtual board, and what reached the hub, as plain synchronous objects.

This is the machinery of the pytest plugin (sim/pytest_plugin.py, fixtures `natsedge_hub`, `natsedge_fleet`,
`natsedge_vboard`; docs/testing.md) and a thin layer over the simulator's: `sim.hub.ManagedHub` starts the hub,
`sim.fleet.Edge` runs and watches each `micropython -m edge config.json` process, `sim.proxy.Proxy` sits between
each edge and the hub's leafnode port (partitions), `sim.procs.ProcessTable` starts and stops every process by PID,
`sim.client.Client` is the test's own hub connection. All of it runs in one background thread with an asyncio loop
(`_Loop`), so a test is ordinary synchronous code and may sleep or block while the fleet runs on; every method here
hands its work to that thread and waits for it.

It works outside pytest too (`with Hub(dir) as hub, Fleet(hub, "app", 3, workdir=dir2) as fleet: ...`).
"""

from __future__ import annotations

import asyncio
import atexit
import base64
import binascii
import copy
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode

from edge import proto
from host.tools import needs
from sim.client import Client, NoResponders
from sim.fleet import REPO, Edge
from sim.hub import HubError, ManagedHub, free_port, http_get
from sim.procs import ProcessTable
from sim.proxy import Proxy
from sim.scenario import DEFAULT_LIMITS, Scenario

__all__ = ["Collector", "Fleet", "FleetEdge", "HarnessError", "Hub", "Msg", "NoResponders", "VBoard", "wait_until"]

T = TypeVar("T")
HUB_KINDS = {"natsedge": "hub", "hub": "hub", "nats-server": "nats-server"}  # name -> sim.hub.ManagedHub kind
MAX_LINES = 100_000  # output lines kept per edge (all boots); edge.log in its folder has every line
START_BATCH = 16  # edges spawned at once (as `natsedge sim`)
# keys of an edge's config the fleet sets itself (hub.url too; hub.user/password/token/tls are the test's)
FLEET_KEYS = ("name", "data", "app", "listen")


class HarnessError(AssertionError):
    """What the test asked for did not happen (a wait timed out, the hub did not start, an edge refused its config);
    the message says what, with the last lines of the edges concerned. An AssertionError, so pytest shows it as a
    test failure."""


def wait_until(cond: Callable[[], T], timeout: float = 10.0, interval: float = 0.05, what: str = "the condition",
               detail: Callable[[], str] | None = None) -> T:
    """Call `cond` until it returns something true, and return that; HarnessError after `timeout` seconds (with
    `detail()` appended, if given)."""
    deadline = time.monotonic() + timeout
    while True:
        r = cond()
        if r:
            return r
        if time.monotonic() >= deadline:
            more = detail() if detail is not None else ""
            raise HarnessError(f"timed out after {timeout:g} s waiting for {what}" + (f"\n{more}" if more else ""))
        time.sleep(interval)


# ---- the background loop ----------------------------------------------------------------------------------------


class _Loop:
    """One asyncio loop in a daemon thread for everything this module starts. The child processes are spawned from
    this thread, so their PR_SET_PDEATHSIG (sim/procs.py) fires if it ends: nothing outlives the test run."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._main, name="natsedge-testing", daemon=True)
        self._thread.start()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 120.0, what: str = "the harness") -> T:
        fut = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return fut.result(timeout)
        except TimeoutError:
            if fut.done():
                raise
            fut.cancel()
            raise HarnessError(f"{what} took more than {timeout:g} s") from None

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a plain function in the loop's thread (asyncio objects are not thread-safe)."""

        async def go() -> T:
            return fn(*args)

        return self.run(go())

    def stop(self) -> None:
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(5)


_loop_lock = threading.Lock()
_the_loop: _Loop | None = None


def _loop() -> _Loop:
    global _the_loop
    with _loop_lock:
        if _the_loop is None:
            _the_loop = _Loop()
            atexit.register(_the_loop.stop)
        return _the_loop


# ---- messages ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Msg:
    """A message that reached the hub: from a `Collector` (core subscription) or `Hub.stream_messages` (stored in a
    stream; then `seq` is its stream sequence)."""

    subject: str
    data: bytes
    headers: dict[str, str] | None = None  # the last value of each header
    reply: str | None = None
    seq: int | None = None

    @property
    def text(self) -> str:
        return self.data.decode(errors="replace")

    def json(self) -> Any:
        return json.loads(self.data)


def _headers(hdr: bytes | None) -> dict[str, str] | None:
    if not hdr:
        return None
    try:
        status, desc, pairs = proto.decode_headers(hdr)
    except proto.ProtocolError:
        return None
    out = dict(pairs)
    if status is not None:
        out["Status"] = str(status)
        if desc:
            out["Description"] = desc
    return out


class Collector:
    """Every message the hub delivered on `subject` (wildcards allowed) since `Hub.collect()` returned, in order.
    Kept for the life of the hub (re-subscribed after a hub restart)."""

    def __init__(self, subject: str) -> None:
        self.subject = subject
        self._msgs: list[Msg] = []

    def _on_msg(self, subject: bytes, reply: bytes | None, hdr: bytes | None, payload: bytes) -> None:
        self._msgs.append(Msg(subject.decode(), bytes(payload), _headers(hdr), reply.decode() if reply else None))

    @property
    def messages(self) -> list[Msg]:
        return list(self._msgs)

    def __len__(self) -> int:
        return len(self._msgs)

    def __iter__(self) -> Iterator[Msg]:
        return iter(list(self._msgs))

    def clear(self) -> None:
        self._msgs.clear()

    def wait(self, count: int = 1, timeout: float = 10.0, match: Callable[[Msg], bool] | None = None) -> list[Msg]:
        """Until at least `count` messages (those `match` accepts, if given) have arrived; returns them."""

        def enough() -> list[Msg] | None:
            got = [m for m in self._msgs if match is None or match(m)]
            return got if len(got) >= count else None

        return wait_until(enough, timeout, what=f"{count} message(s) on {self.subject}",
                          detail=lambda: f"{len(self._msgs)} message(s) arrived on {self.subject}")


# ---- the hub ----------------------------------------------------------------------------------------------------


class Hub:
    """Our hub (`natsedge hub`, kind "natsedge") or nats-server (kind "nats-server") on free 127.0.0.1 ports, with a
    leafnodes port and JetStream (unless jetstream=False), plus the test's own connection to it."""

    def __init__(self, workdir: Path | str, kind: str = "natsedge", jetstream: bool = True,
                 what: str = "the natsedge hub") -> None:
        if kind not in HUB_KINDS:
            raise ValueError(f"hub kind {kind!r}: expected one of {', '.join(sorted(HUB_KINDS))}")
        self.kind = "natsedge" if HUB_KINDS[kind] == "hub" else "nats-server"
        if self.kind == "nats-server":
            needs.nats_server(f"{what} (nats-server)", "sim")  # MissingExtra: one line, which extra to install
        self.workdir = Path(workdir)
        self._js = jetstream
        self._loop = _loop()
        self._procs = ProcessTable()
        self._hub: ManagedHub | None = None
        self._client: Client | None = None
        self.collectors: list[Collector] = []

    # ---- life cycle

    def start(self) -> Hub:
        try:
            self._loop.run(self._start(), what=f"starting the hub ({self.kind})")
        except HubError as e:
            raise HarnessError(f"the hub ({self.kind}) did not start: {e}") from None
        return self

    async def _start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._hub = ManagedHub(HUB_KINDS[self.kind], self.workdir, self._procs, "on" if self._js else "off")
        await self._hub.start()
        self._client = Client(self._hub.client_url, name="natsedge-pytest")
        self._client.start()
        if not await self._client.wait_connected(10):
            raise HubError(f"the test's connection to {self._hub.client_url} did not come up: "
                           f"{self._client.last_error}")

    def close(self) -> None:
        """Stop the hub (SIGTERM, SIGKILL after 5 s) by PID; HarnessError if a process it started is left."""
        self._loop.run(self._close(), what="stopping the hub")
        left = self._procs.left_running()
        if left:
            raise HarnessError(f"processes left running after the hub stopped: {left}")

    async def _close(self) -> None:
        if self._client is not None:
            await self._client.close()
        await self._procs.stop_all(5.0)

    def __enter__(self) -> Hub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def _managed(self) -> ManagedHub:
        if self._hub is None:
            raise HarnessError("the hub is not started")
        return self._hub

    @property
    def _conn(self) -> Client:
        if self._client is None:
            raise HarnessError("the hub is not started")
        return self._client

    # ---- where it is

    @property
    def url(self) -> str:
        """The client URL, nats://127.0.0.1:PORT (nats-py and any NATS client connect here)."""
        return self._managed.client_url

    client_url = url

    @property
    def leaf_url(self) -> str:
        """nats-leaf://127.0.0.1:PORT, its leafnodes port (a fleet's edges reach it through their proxies)."""
        return self._managed.leaf_url

    @property
    def monitor_url(self) -> str:
        return self._managed.monitor_url or ""

    @property
    def jetstream(self) -> bool:
        return bool(self._managed.jetstream)

    @property
    def pid(self) -> int | None:
        p = self._managed.proc
        return p.pid if p is not None and p.returncode is None else None

    @property
    def pids(self) -> list[int]:
        """Every process this hub fixture started (restarts included)."""
        return self._procs.pids()

    @property
    def log_path(self) -> Path:
        return self._managed.log_path

    @property
    def running(self) -> bool:
        return self._managed.running

    # ---- messages

    def collect(self, subject: str) -> Collector:
        """Subscribe on the hub and keep what arrives; the subscription is in place when this returns."""
        c = Collector(subject)
        conn = self._conn

        async def go() -> None:
            conn.subscribe(subject, c._on_msg)
            await conn.flush()

        self._loop.run(go(), what=f"subscribing to {subject}")
        self.collectors.append(c)
        return c

    def publish(self, subject: str, data: bytes | str = b"") -> None:
        payload = data.encode() if isinstance(data, str) else data
        conn = self._conn

        async def go() -> None:
            conn.publish(subject, payload)
            await conn.flush()

        self._loop.run(go(), what=f"publishing to {subject}")

    def request(self, subject: str, data: bytes | str = b"", timeout: float = 2.0) -> bytes:
        """The reply's payload; raises NoResponders (nobody listens) or TimeoutError."""
        payload = data.encode() if isinstance(data, str) else data
        return self._loop.run(self._conn.request(subject, payload, timeout), timeout + 5, f"the request to {subject}")

    # ---- JetStream

    def js_api(self, api: str, body: Mapping[str, Any] | None = None, timeout: float = 5.0) -> dict[str, Any]:
        """A `$JS.API.<api>` request, its JSON answer (an error answer too: look at "error")."""
        return self._loop.run(self._js_api(api, body, timeout), timeout + 5, f"$JS.API.{api}")

    async def _js_api(self, api: str, body: Mapping[str, Any] | None, timeout: float) -> dict[str, Any]:
        raw = await self._conn.request(f"$JS.API.{api}", json.dumps(body).encode() if body is not None else b"",
                                       timeout)
        r = json.loads(raw)
        if not isinstance(r, dict):
            raise HarnessError(f"$JS.API.{api}: unexpected answer {raw[:200]!r}")
        return r

    def _need_js(self) -> None:
        if not self.jetstream:
            raise HarnessError("the hub runs without JetStream (the natsedge_hub fixture was given jetstream=False)")

    def add_stream(self, name: str, subjects: str | Sequence[str], **config: Any) -> dict[str, Any]:
        """Create a stream (file storage unless `storage` is given; other keys as nats-server's stream config);
        returns its info. An edge's store-and-forward queue drains into a stream that must exist."""
        self._need_js()
        body = {"name": name, "subjects": [subjects] if isinstance(subjects, str) else list(subjects),
                "storage": "file", **config}
        r = self.js_api(f"STREAM.CREATE.{name}", body)
        if "error" in r:
            raise HarnessError(f"stream {name} not created: {r['error'].get('description', r['error'])}")
        return r

    def stream_info(self, name: str) -> dict[str, Any]:
        self._need_js()
        r = self.js_api(f"STREAM.INFO.{name}")
        if "error" in r:
            raise HarnessError(f"stream {name}: {r['error'].get('description', r['error'])}")
        return r

    def stream_messages(self, name: str) -> list[Msg]:
        """Every message stored in the stream now, in sequence order (with `seq` and headers, e.g. the
        Nats-Msg-Id an edge's forward queue sets)."""
        self._need_js()
        return self._loop.run(self._stream_messages(name), 120, f"reading stream {name}")

    async def _stream_messages(self, name: str) -> list[Msg]:
        info = await self._js_api(f"STREAM.INFO.{name}", None, 5)
        if "error" in info:
            raise HarnessError(f"stream {name}: {info['error'].get('description', info['error'])}")
        state = info.get("state") or {}
        first, last = int(state.get("first_seq") or 0), int(state.get("last_seq") or 0)
        if not state.get("messages"):
            return []
        out: list[Msg] = []
        for lo in range(first, last + 1, 64):
            got = await asyncio.gather(*(self._stream_get(name, s) for s in range(lo, min(lo + 64, last + 1))))
            out.extend(m for m in got if m is not None)
        return out

    async def _stream_get(self, name: str, seq: int) -> Msg | None:
        r = await self._js_api(f"STREAM.MSG.GET.{name}", {"seq": seq}, 5)
        if "error" in r:
            if r["error"].get("err_code") == 10037 or r["error"].get("code") == 404:  # deleted: not there
                return None
            raise HarnessError(f"stream {name} seq {seq}: {r['error'].get('description', r['error'])}")
        m = r["message"]
        try:
            data = base64.b64decode(m.get("data") or "")
            hdr = base64.b64decode(m["hdrs"]) if m.get("hdrs") else None
        except (binascii.Error, ValueError) as e:
            raise HarnessError(f"stream {name} seq {seq}: bad base64 in the answer: {e}") from None
        return Msg(m["subject"], data, _headers(hdr), None, int(m["seq"]))

    # ---- monitoring and faults

    def monitor(self, endpoint: str = "varz", **params: Any) -> Any:
        """GET the monitoring endpoint (`varz`, `connz`, `leafz`, `jsz`, ...) and return its JSON."""
        url = f"{self.monitor_url}/{endpoint.lstrip('/')}" + (f"?{urlencode(params)}" if params else "")
        status, body = self._loop.run(http_get(url, 5), 15, f"GET {url}")
        if status != 200:
            raise HarnessError(f"GET {url}: HTTP {status}")
        return body

    def restart(self, down: float = 0.5, kill: bool = False) -> None:
        """Stop the hub (SIGTERM; SIGKILL at once with kill=True, as a power cut), wait `down` seconds, start it again
        on the same ports with the same JetStream store; returns once it answers and the test's connection is back."""
        hub = self._managed

        async def go() -> None:
            if kill:
                await hub.kill()
                await asyncio.sleep(down)
                await hub.start_again(restart=True)
            else:
                await hub.restart(down)
            if not await self._conn.wait_connected(10):
                raise HubError("the test's connection did not come back after the restart")

        try:
            self._loop.run(go(), what="restarting the hub")
        except HubError as e:
            raise HarnessError(f"the hub ({self.kind}) did not come back: {e}") from None

    def report_sections(self) -> list[tuple[str, str]]:
        """For a failed test's report: the end of the hub's log."""
        if self._hub is None:
            return []
        return [(f"natsedge hub ({self.kind}) log, end", self._hub.log_tail()[-3000:])]


# ---- the fleet --------------------------------------------------------------------------------------------------


def _find_module(module: str, dirs: Sequence[Path]) -> Path | None:
    rel = Path(*module.split("."))
    for d in dirs:
        for cand in (d / rel.with_suffix(".py"), d / rel.with_suffix(".mpy"), d / rel / "__init__.py"):
            if cand.is_file():
                return cand
    return None


ConfigArg = Mapping[str, Any] | Callable[[int, str], Mapping[str, Any]] | None
FilesArg = Mapping[str, Any] | Callable[[int, str], Mapping[str, Any]] | None


@dataclass
class _Spec:
    module: str
    path: list[Path]
    config: ConfigArg
    files: FilesArg
    stats: float

    def config_for(self, index: int, name: str) -> dict[str, Any]:
        cfg = self.config(index, name) if callable(self.config) else self.config
        cfg = copy.deepcopy(dict(cfg or {}))
        for k in FLEET_KEYS:
            if k in cfg:
                raise ValueError(f"config key {k!r} is set by the fleet (edge names: name=..., a LAN port: lan=True)")
        if isinstance(cfg.get("hub"), Mapping) and "url" in cfg["hub"]:
            raise ValueError("config key 'hub.url' is set by the fleet (the edge's proxy to the hub)")
        return cfg

    def files_for(self, index: int, name: str) -> dict[str, str]:
        files = self.files(index, name) if callable(self.files) else self.files
        out = {}
        for fname, content in (files or {}).items():
            if "/" in fname or fname in ("", ".", "..", "config.json"):
                raise ValueError(f"files: {fname!r}: a plain file name other than config.json")
            out[fname] = content if isinstance(content, str) else json.dumps(content)
        return out


class _AppEdge(Edge):
    """sim.fleet.Edge running the test's app module with the test's config, keeping its output lines."""

    def __init__(self, spec: _Spec, index: int, name: str, workdir: Path, procs: ProcessTable, micropython: str,
                 hub_url: str, lan_port: int | None, clock: Callable[[], float], event: Callable[[str], None],
                 scenario: Scenario) -> None:
        super().__init__(index, name, scenario, workdir, procs, micropython, hub_url, lan_port, clock, event)
        self.spec = spec
        self.out: deque[str] = deque(maxlen=MAX_LINES)
        self.count = 0  # lines ever read
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log = open(self.dir / "edge.log", "a", buffering=1)  # noqa: SIM115 (closed by Fleet.close)
        self.cfg_error: str | None = None

    def config(self) -> dict[str, Any]:
        cfg = self.spec.config_for(self.index, self.name)
        hub = dict(cfg.get("hub") or {})
        hub["url"] = self.hub_url
        limits = dict(DEFAULT_LIMITS)
        limits.update(cfg.get("limits") or {})
        cfg.update({"name": self.name, "hub": hub, "listen": f"127.0.0.1:{self.lan_port}" if self.lan_port else None,
                    "data": str(self.dir / "data"), "app": self.spec.module, "limits": limits})
        cfg.setdefault("stats", self.spec.stats)
        return cfg

    def files(self) -> dict[str, str]:
        return {"config.json": json.dumps(self.config(), indent=1), **self.spec.files_for(self.index, self.name)}

    def env(self) -> dict[str, str]:
        return dict(os.environ, MICROPYPATH=":".join([*map(str, self.spec.path), str(REPO), ".frozen"]))

    def _line(self, line: str, boot: int) -> None:
        super()._line(line, boot)
        self.out.append(line)
        self.count += 1  # after the append: a reader that takes count first never numbers a line too high
        try:
            self.log.write(line + "\n")
        except ValueError:  # closed
            pass


class FleetEdge:
    """One edge of a Fleet: `micropython -m edge config.json` in its own state folder, behind its own proxy."""

    def __init__(self, fleet: Fleet, edge: _AppEdge, proxy: Proxy) -> None:
        self._fleet = fleet
        self._edge = edge
        self._proxy = proxy

    def __repr__(self) -> str:
        return f"<FleetEdge {self.name} {self.state} pid={self.pid}>"

    @property
    def index(self) -> int:
        return self._edge.index

    @property
    def name(self) -> str:
        return self._edge.name

    @property
    def dir(self) -> Path:
        """Its state folder (its working directory): config.json, the test's files, data/, edge.log."""
        return self._edge.dir

    @property
    def data(self) -> Path:
        """Its `data` folder (flash): store-and-forward queues, KV cache. Survives crashes."""
        return self._edge.dir / "data"

    @property
    def log_path(self) -> Path:
        return self._edge.dir / "edge.log"

    @property
    def config(self) -> dict[str, Any]:
        """The config it boots with (as written to config.json)."""
        return self._edge.config()

    @property
    def pid(self) -> int | None:
        p = self._edge.proc
        return p.pid if p is not None and p.returncode is None else None

    @property
    def pids(self) -> list[int]:
        """Every process started for it (one per boot)."""
        return [p.pid for p in self._fleet._procs_of.get(self.name, [])]

    @property
    def running(self) -> bool:
        return self._edge.running

    @property
    def link_up(self) -> bool:
        """Its uplink to the hub is up (its last `edge: uplink up` line had no `uplink down` after it)."""
        return self._edge.link_up

    @property
    def state(self) -> str:
        """new, starting, connecting (ready, no link yet), up, down, partitioned, crashed, stopped, exited, failed."""
        if self._proxy.is_cut and self._edge.running:
            return "partitioned"
        return self._edge.state

    @property
    def partitioned(self) -> bool:
        return self._proxy.is_cut

    @property
    def boots(self) -> int:
        return self._edge.boot

    @property
    def crashes(self) -> int:
        return self._edge.crashes

    @property
    def exit_codes(self) -> list[int]:
        """Every exit so far (-9: killed)."""
        return list(self._edge.exit_codes)

    @property
    def heap(self) -> int | None:
        """gc.mem_alloc() after a collect, from its last `edge: stats` line (stats=1 by default)."""
        return self._edge.heap

    @property
    def heap_peak(self) -> int | None:
        return self._edge.heap_peak

    @property
    def lan_url(self) -> str | None:
        """nats://127.0.0.1:PORT of its LAN listener (lan=True), for nats-py or any NATS client."""
        return f"nats://127.0.0.1:{self._edge.lan_port}" if self._edge.lan_port else None

    @property
    def hub_url(self) -> str:
        """What it dials: its proxy in front of the hub's leafnodes port."""
        return str(self._edge.hub_url)

    @property
    def lines(self) -> list[str]:
        """Its output (stdout and stderr) of every boot, one string per line, the last MAX_LINES of them."""
        return list(self._edge.out)

    @property
    def line_count(self) -> int:
        """Lines read so far (a `since` for wait_for_line)."""
        return self._edge.count

    def wait_for_line(self, pattern: str, timeout: float = 10.0, since: int = 0) -> re.Match[str]:
        """The first output line from line number `since` on (0: the first line of the first boot) in which the
        regular expression `pattern` is found; waits for it."""
        rx = re.compile(pattern)
        e = self._edge

        def find() -> re.Match[str] | None:
            count = e.count
            lines = list(e.out)
            first = count - len(lines)  # the number of lines[0]; too low (never too high) while a line arrives
            for i, line in enumerate(lines):
                if first + i >= since:
                    m = rx.search(line)
                    if m:
                        return m
            return None

        return wait_until(find, timeout, what=f"a line matching {pattern!r} from {self.name}",
                          detail=lambda: self._fleet._tail(self))

    def partition(self, mode: str = "blackhole") -> None:
        self._fleet.partition(self, mode)

    def heal(self) -> None:
        self._fleet.heal(self)

    def crash(self, restart: bool = True, down: float = 0.0) -> None:
        self._fleet.crash(self, restart, down)

    def start(self) -> None:
        self._fleet.start(self)

    def stop(self) -> None:
        self._fleet.stop(self)

    def wait_up(self, timeout: float = 20.0) -> None:
        self._fleet.wait_up(self, timeout=timeout)


EdgeRef = int | str | FleetEdge


class Fleet:
    """N MicroPython edges (`micropython -m edge config.json`, the code a device runs) running the app module `app`,
    each with its own state folder under `workdir` and its own TCP proxy in front of the hub's leafnodes port.

    `app`: a module name found on `path` (folders; the app's own imports are found there too), or the path of a
    .py file (its folder then leads `path`). `config`: more keys of every edge's config (docs/edge.md: `forward`,
    `kv`, `limits`, `stats`, `hub.user`...), or a function (index, name) -> keys; the fleet sets `name`, `hub.url`,
    `data`, `app` and `listen`, and `limits` default to fast failure detection (ping every 1 s, 2 unanswered,
    reconnect 0.1-2 s). `files`: files written into each edge's folder before every boot (its working directory:
    the app opens them by name), name -> text or JSON-able value, or a function (index, name) -> such a dict.
    """

    def __init__(self, hub: Hub, app: str | os.PathLike[str], edges: int = 3, *, workdir: Path | str,
                 config: ConfigArg = None, files: FilesArg = None, path: Sequence[str | os.PathLike[str]] = (),
                 name: str = "edge-{i}", lan: bool = False, heapsize: int | str | None = None, stats: float = 1.0,
                 micropython: str | None = None, what: str = "the natsedge fleet") -> None:
        self.micropython = needs.micropython(what, "sim", micropython)  # MissingExtra: the one-line message
        if not isinstance(edges, int) or isinstance(edges, bool) or not 1 <= edges <= 200:
            raise ValueError(f"edges: expected 1..200, got {edges!r}")
        dirs = [Path(p).resolve() for p in path]
        text = os.fspath(app)
        if isinstance(app, os.PathLike) or text.endswith(".py"):
            file = Path(text).resolve()
            if not file.is_file():
                raise ValueError(f"app: {file} is not a file")
            module, dirs = file.stem, [file.parent, *dirs]
        else:
            module = text
            if _find_module(module, dirs) is None:
                where = ", ".join(map(str, dirs)) or "(no path given)"
                raise ValueError(f"app: module {module!r} not found in {where}")
        names = [name.format(i=i) for i in range(edges)]
        if len(set(names)) != edges:
            raise ValueError(f"name: {name!r} does not give each edge its own name (use {{i}})")
        self.hub = hub
        self.workdir = Path(workdir)
        self._spec = _Spec(module, dirs, config, files, stats)
        for i, n in enumerate(names):  # a bad config is the caller's error: say so before anything starts
            self._spec.config_for(i, n)
            self._spec.files_for(i, n)
        self._names = names
        self._lan = lan
        self._scenario = Scenario(name="pytest", edges=edges, publish=[], stats=stats,
                                  heapsize=str(heapsize) if heapsize is not None else None)
        self._loop = _loop()
        self._procs = ProcessTable()
        self._procs_of: dict[str, list[asyncio.subprocess.Process]] = {}
        self.edges: list[FleetEdge] = []
        self.events: deque[tuple[float, str]] = deque(maxlen=500)
        self._t0 = time.monotonic()
        self._closed = False

    # ---- life cycle

    def start(self, which: EdgeRef | None = None, wait: str | None = "up", timeout: float = 20.0) -> Fleet:
        """Without `which`: launch the fleet, then wait until every edge is `"up"` (linked to the hub), `"ready"`
        (its broker runs), or not at all (None). With `which`: boot that edge again (after crash(restart=False) or
        stop()), without waiting."""
        if which is not None:
            e = self._get(which)
            self._loop.run(self._start_one(e._edge), what=f"starting {e.name}")
            return self
        self._loop.run(self._launch(), what="launching the fleet")
        if wait == "up":
            self.wait_up(timeout=timeout)
        elif wait == "ready":
            self.wait_ready(timeout=timeout)
        elif wait is not None:
            raise ValueError(f"wait: expected 'up', 'ready' or None, got {wait!r}")
        return self

    async def _launch(self) -> None:
        hub = self.hub._managed
        for i, n in enumerate(self._names):
            proxy = Proxy(n, hub.leaf_host, hub.leaf_port)
            await proxy.start()
            lan_port = free_port() if self._lan else None
            edge = _AppEdge(self._spec, i, n, self.workdir, self._procs, self.micropython,
                            f"nats-leaf://127.0.0.1:{proxy.port}", lan_port, self._clock, self._event, self._scenario)
            self.edges.append(FleetEdge(self, edge, proxy))
        for lo in range(0, len(self.edges), START_BATCH):
            await asyncio.gather(*(self._start_one(e._edge) for e in self.edges[lo:lo + START_BATCH]))

    async def _start_one(self, edge: _AppEdge) -> None:
        if edge.running:
            return
        edge.stopping = False
        await edge.start()
        assert edge.proc is not None
        self._procs_of.setdefault(edge.name, []).append(edge.proc)

    def close(self) -> None:
        """Stop every edge (SIGINT, SIGKILL after 3 s) and every proxy; HarnessError if a process it started is
        left. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        try:
            self._loop.run(self._close(), what="stopping the fleet")
        finally:
            for e in self.edges:
                e._edge.log.close()
        left = self._procs.left_running()
        if left:
            raise HarnessError(f"processes left running after the fleet stopped: {left}")

    async def _close(self) -> None:
        await asyncio.gather(*(e._edge.stop(3.0) for e in self.edges), return_exceptions=True)
        await self._procs.stop_all(3.0)  # anything an edge's watchdog restarted meanwhile
        for e in self.edges:
            await e._proxy.close()

    def __enter__(self) -> Fleet:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- edges

    def __len__(self) -> int:
        return len(self.edges)

    def __iter__(self) -> Iterator[FleetEdge]:
        return iter(self.edges)

    def __getitem__(self, which: EdgeRef) -> FleetEdge:
        return self._get(which)

    @property
    def names(self) -> list[str]:
        return list(self._names)

    @property
    def pids(self) -> list[int]:
        """Every process the fleet started (all boots of all edges)."""
        return self._procs.pids()

    def _get(self, which: EdgeRef) -> FleetEdge:
        if isinstance(which, FleetEdge):
            return which
        if isinstance(which, int) and not isinstance(which, bool):
            return self.edges[which]
        for e in self.edges:
            if e.name == which:
                return e
        raise KeyError(f"no edge {which!r} in the fleet ({', '.join(self._names)})")

    def _clock(self) -> float:
        return time.monotonic() - self._t0

    def _event(self, text: str) -> None:
        self.events.append((round(self._clock(), 2), text))

    # ---- faults

    def partition(self, which: EdgeRef, mode: str = "blackhole") -> None:
        """Cut the edge's network at its proxy. "blackhole": nothing moves and nothing is closed (a dead path; each
        side notices through its pings, 2-3 s with the default limits); "reset": every connection is aborted and new
        ones are refused at once."""
        if mode not in ("blackhole", "reset"):
            raise ValueError(f"mode: expected 'blackhole' or 'reset', got {mode!r}")
        e = self._get(which)

        def go() -> None:
            e._proxy.cut(mode)
            e._edge.partition_started()

        self._loop.call(go)
        self._event(f"{e.name} partitioned ({mode})")

    def heal(self, which: EdgeRef) -> None:
        """Open the edge's path again (what a blackhole held flows on in order)."""
        e = self._get(which)

        def go() -> None:
            if e._proxy.is_cut:
                e._proxy.heal(force=True)
                e._edge.partition_healed(self._clock())

        self._loop.call(go)
        self._event(f"{e.name} healed")

    def crash(self, which: EdgeRef, restart: bool = True, down: float = 0.0) -> None:
        """A power cut: SIGKILL (nothing flushed, nothing closed), then, with restart, boot it again after `down`
        seconds with the same state folder (what it wrote to data/ survives). Returns once it is started again (not
        yet linked: wait_up())."""
        e = self._get(which)

        async def go() -> None:
            await e._edge.crash()
            if restart:
                await asyncio.sleep(down)
                await self._start_one(e._edge)

        self._loop.run(go(), what=f"crashing {e.name}")
        self._event(f"{e.name} crashed" + (f", restarted after {down:g} s" if restart else ""))

    def stop(self, which: EdgeRef, grace: float = 3.0) -> None:
        """An orderly stop (SIGINT: the edge closes its parts and exits 0; SIGKILL after `grace`)."""
        e = self._get(which)
        self._loop.run(e._edge.stop(grace), what=f"stopping {e.name}")
        self._event(f"{e.name} stopped")

    # ---- waiting

    def _check(self, edges: Sequence[FleetEdge]) -> None:
        for e in edges:
            if e._edge.fatal:
                raise HarnessError(f"{e._edge.fatal}\n{self._tail(e)}")

    def _tail(self, e: FleetEdge, n: int = 15) -> str:
        lines = list(e._edge.out)[-n:]
        head = f"--- {e.name} ({e.state}, boot {e.boots}, pid {e.pid}), last {len(lines)} lines:"
        return "\n".join([head, *lines])

    def _select(self, which: Sequence[EdgeRef]) -> list[FleetEdge]:
        return [self._get(w) for w in which] if which else list(self.edges)

    def wait_up(self, *which: EdgeRef, timeout: float = 20.0) -> None:
        """Until the edges named (all by default) have their uplink up."""
        edges = self._select(which)

        def up() -> bool:
            self._check(edges)
            return all(e._edge.link_up for e in edges)

        wait_until(up, timeout, what="uplink up on " + ", ".join(e.name for e in edges),
                   detail=lambda: "\n".join(self._tail(e) for e in edges if not e._edge.link_up))

    def wait_ready(self, *which: EdgeRef, timeout: float = 20.0) -> None:
        """Until the edges named (all by default) have started their broker (`edge: ready`)."""
        edges = self._select(which)

        def ready() -> bool:
            self._check(edges)
            return all(e._edge.state not in ("new", "starting") for e in edges)

        wait_until(ready, timeout, what="edge: ready from " + ", ".join(e.name for e in edges),
                   detail=lambda: "\n".join(self._tail(e) for e in edges))

    def report_sections(self) -> list[tuple[str, str]]:
        """For a failed test's report: each edge's state and last lines, and the faults."""
        out = [(f"natsedge {e.name} (state {e.state}, boots {e.boots}, exits {e.exit_codes})",
                "\n".join(list(e._edge.out)[-25:])) for e in self.edges]
        if self.events:
            out.append(("natsedge fleet events", "\n".join(f"[{t:7.2f}s] {s}" for t, s in self.events)))
        return out


# ---- a virtual board --------------------------------------------------------------------------------------------


class VBoard:
    """`natsedge vboard` in the test: the MicroPython unix port behind a pseudo-terminal at `port`, running in `flash`
    (boot.py and main.py run at each start, as on a board). mpremote, `natsedge deploy` and `natsedge console` talk to
    `port` as to a serial port."""

    def __init__(self, flash: Path | str, heapsize: int | None = None, boot: bool = True,
                 micropython: str | None = None, what: str = "the natsedge virtual board") -> None:
        from host.tools.vboard import DEFAULT_HEAPSIZE, VirtualBoard

        binary = needs.micropython(what, "sim", micropython)
        self.board = VirtualBoard(flash, micropython=binary, heapsize=heapsize or DEFAULT_HEAPSIZE, boot=boot)
        self._pids: list[int] = []

    @property
    def port(self) -> str:
        return self.board.port

    @property
    def flash(self) -> Path:
        return self.board.flash

    @property
    def pid(self) -> int | None:
        p = self.board.proc
        return p.pid if p is not None and p.poll() is None else None

    @property
    def boots(self) -> int:
        return self.board.boots

    def start(self) -> VBoard:
        from host.tools.vboard import VBoardError

        try:
            self.board.start()
        except VBoardError as e:
            raise HarnessError(f"the virtual board did not start: {e}") from None
        return self

    def close(self) -> None:
        """Stop the relay and MicroPython (by PID: SIGTERM, SIGKILL after 5 s), remove the port's link."""
        self.board.stop()
        self.board.close()

    def __enter__(self) -> VBoard:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
        return env

    def mpremote(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """`mpremote connect PORT ARGS...` (`fs cp`, `exec`, `run`, `resume`, ...)."""
        cmd = [sys.executable, "-m", "mpremote", "connect", self.port, *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=self._env())

    def exec(self, code: str, timeout: float = 60.0) -> str:
        """Run `code` on the board (mpremote exec, after a soft reset) and return what it printed."""
        r = self.mpremote("exec", code, timeout=timeout)
        if r.returncode != 0:
            raise HarnessError(f"mpremote exec failed (exit {r.returncode}): {(r.stderr or r.stdout)[-2000:]}")
        return r.stdout

    def deploy(self, config: Path | str, *args: str, timeout: float = 300.0) -> subprocess.CompletedProcess[str]:
        """`natsedge deploy --port PORT --config CONFIG ARGS...` (the edge bundle, boot.py, main.py, config.json)."""
        cmd = [sys.executable, "-m", "host.tools.cli", "deploy", "--port", self.port, "--config", str(config), *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=self._env())

    def report_sections(self) -> list[tuple[str, str]]:
        return [("natsedge vboard", f"port {self.port}, flash {self.flash}, boots {self.boots}, pid {self.pid}")]

