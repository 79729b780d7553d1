"""One simulated edge: a `micropython -m edge CONFIG.json` process, its stdout read into counters, its boots.

What is known about an edge comes from two places only: its own status lines (`edge: uplink up`, `edge: stats ...`,
`edge: app pub IDX SEQ FWD`, see docs/edge.md and sim/edgeapp.py) and what the hub delivers to the simulator. The
lines are parsed as they arrive and dropped (the last few are kept for error messages), so memory stays flat however
long the run.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sys
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sim import procs as procs_mod
from sim.edgestatus import EdgeStatus, forward_backlog
from sim.procs import ProcessTable
from sim.scenario import DEFAULT_LIMITS, Scenario

REPO = Path(__file__).resolve().parents[1]
MAX_SEQ = 1 << 24  # per publisher and boot: 2 MB of bitmap at most; later numbers are counted as out of range
# A fault window opens this long before a fault (messages then may still be in flight) and closes this long after
# the edge's link is back and the simulator is connected (the hub's interest reaches the edge again).
GUARD_S = 1.0


def edge_takes_url_list() -> bool:
    """Whether the edge's config accepts a list for `hub.url` (the cluster's nodes, tried in order). Asked of the
    edge's own config checker (edge/leaf/config.py, the same file the MicroPython edges run); an edge that takes a
    string only is given the first URL of its list."""
    from edge.leaf import config as edge_config
    from edge.leaf.confcheck import ConfigError

    try:
        edge_config.check({"name": "probe", "hub": {"url": ["nats-leaf://127.0.0.1:1", "nats-leaf://127.0.0.1:2"]}})
    except ConfigError:
        return False
    except Exception:  # noqa: BLE001 (a checker that trips over a list does not take one either)
        return False
    return True


def _host_port(text: str) -> str:
    """ "nats-leaf://user@127.0.0.1:7422/" or "127.0.0.1:7422" -> "127.0.0.1:7422"."""
    return text.partition("://")[2].rpartition("@")[2].rstrip("/") if "://" in text else text.rstrip("/")


def micropython_binary(given: str | None = None) -> str | None:
    if given:
        return given if (os.path.isfile(given) and os.access(given, os.X_OK)) else None
    cand = Path(sys.executable).parent / "micropython"
    if cand.exists():
        return str(cand)
    return shutil.which("micropython")


class SeqSet:
    """Sequence numbers 1..MAX_SEQ as a growable bitmap: exact loss and duplicate counts in 1 bit per message."""

    __slots__ = ("bits", "count")

    def __init__(self) -> None:
        self.bits = bytearray()
        self.count = 0

    def add(self, n: int) -> bool:
        """False when n was already there."""
        i, m = n >> 3, 1 << (n & 7)
        if i >= len(self.bits):
            self.bits.extend(bytes(max(i + 1 - len(self.bits), len(self.bits) // 2, 64)))
        if self.bits[i] & m:
            return False
        self.bits[i] |= m
        self.count += 1
        return True

    def as_int(self) -> int:
        return int.from_bytes(self.bits, "little")


async def word_bits(micropython: str, timeout: float = 10) -> int | None:
    """64 or 32: the pointer size of the MicroPython binary the edges run (from its sys.maxsize), which doubles or
    halves their heap figures; None when it cannot say."""
    try:
        proc = await asyncio.create_subprocess_exec(micropython, "-c", "import sys; print(sys.maxsize)",
                                                    stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.DEVNULL)
    except OSError:
        return None
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return None
    text = out.decode(errors="replace").strip()
    return (64 if int(text) > 2**31 else 32) if text.isdigit() else None


class Track:
    """One publisher of one boot of one edge: what it published and forwarded, what reached the hub."""

    __slots__ = ("published", "forwarded", "received", "duplicates", "out_of_range", "windows")

    def __init__(self, window_open: bool) -> None:
        self.published = 0  # highest SEQ printed (sequence numbers are 1, 2, 3, ... per boot)
        self.forwarded = SeqSet()
        self.received = SeqSet()
        self.duplicates = 0
        self.out_of_range = 0
        # Fault windows as [first SEQ, last SEQ] (last 0 while open): published while a fault affected the edge.
        self.windows: list[list[int]] = [[1, 0]] if window_open else []

    def open_window(self, margin: int) -> None:
        if not self.windows or self.windows[-1][1]:
            self.windows.append([max(1, self.published + 1 - margin), 0])

    def close_window(self) -> None:
        if self.windows and not self.windows[-1][1]:
            self.windows[-1][1] = max(self.published, self.windows[-1][0])

    def counts(self) -> dict[str, int]:
        pub_mask = (1 << (self.published + 1)) - 2  # bits 1..published
        fault_mask = 0
        for lo, hi in self.windows:
            hi = hi or max(self.published, lo)
            fault_mask |= ((1 << (hi + 1)) - 1) ^ ((1 << lo) - 1)
        clean = pub_mask & ~fault_mask
        fwd, rcv = self.forwarded.as_int(), self.received.as_int()
        received = (rcv & pub_mask).bit_count()
        forwarded = self.forwarded.count
        return {
            "published": self.published,
            "received": received,
            "forwarded": forwarded,
            "not_forwarded": self.published - forwarded,
            "lost_in_flight": (fwd & ~rcv).bit_count(),
            "delivered_late": (rcv & ~fwd & pub_mask).bit_count(),
            "lost": self.published - received,
            "published_clean": clean.bit_count(),
            "lost_clean": (clean & ~rcv).bit_count(),
            "duplicates": self.duplicates,
            "unmatched": (rcv & ~pub_mask).bit_count() + self.out_of_range,
        }


class Edge:
    def __init__(self, index: int, name: str, scenario: Scenario, workdir: Path, procs: ProcessTable,
                 micropython: str, hub_url: str | list[str], lan_port: int | None, clock: Callable[[], float],
                 event: Callable[[str], None], node_of: dict[str, str] | None = None) -> None:
        self.index = index
        self.name = name
        self.scenario = scenario
        self.dir = workdir / name
        self.procs = procs
        self.micropython = micropython
        self.hub_url = hub_url  # its config's hub.url: one URL, or the cluster's nodes in the order it tries them
        self.node_of = node_of or {}  # "host:port" the edge may dial -> hub node name
        self.lan_port = lan_port
        self.clock = clock
        self.event = event
        self.publishers = scenario.publishers_for(name)
        self.proc: asyncio.subprocess.Process | None = None
        self.reader: asyncio.Task[None] | None = None
        self.boot = 0
        self.state = "new"
        self.link_up = False
        self.expect_exit = False  # the simulator killed or stopped it
        self.stopping = False  # end of run: no restarts
        self.exit_codes: list[int] = []
        self.unexpected_exits = 0
        self.crashes = 0  # injected (SIGKILL)
        self.crashes_survived = 0  # injected crashes after which the edge came back up on the hub
        self.connects = 0
        self.reconnects = 0  # links up again within a boot
        self.connected_in_boot = 0  # the last boot that had a link up
        self.disconnects = 0  # links that were up and went down
        self.failed_dials = 0
        self.hub_errors = 0
        self.last_error = ""
        self.heap: int | None = None
        self.heap_peak: int | None = None
        self.heap_ready: int | None = None  # `edge: ready ... heap=N`: its heap once started, before the app
        self.free_min: int | None = None
        self.stats_line: dict[str, int] = {}
        self.tracks: dict[tuple[int, int], Track] = {}
        self.pending: list[tuple[str, float]] = []  # (fault kind, time) waiting for the next "uplink up"
        self.hub_wait = False  # the hub is restarting: the next "uplink up" is the way back
        self.hub_up_at: float | None = None  # ... and it came before the simulator saw the hub ready
        self.recovery: dict[str, list[float]] = {"partition": [], "crash": [], "hub_restart": [], "hub_kill": []}
        self.node: str | None = None  # the hub node of its last "uplink up" (from the hub= address it names)
        self.node_switches = 0  # links that came up on another node than the one before: failovers seen from here
        self.node_wait = False  # its hub node went away under it: in a fault window until its link is up again
        self.hub_url_reported: str | None = None  # hub_url=... of its stats line, if the edge reports one
        self.partitions = 0
        self.link_survived = 0
        self.down_during_cut = False
        self.requests = {"sent": 0, "ok": 0, "timeout": 0, "no_responders": 0}
        self.stop_acked = False
        self.status = EdgeStatus()  # what it publishes on $EDGE.<name>.<kind>, if anything
        # its forward queue's status as it prints it (`edge: fwdstatus {...}`): seen during partitions too
        self.fwd_local: dict[str, Any] | None = None
        self.fwd_local_at: float | None = None
        self.tail: deque[str] = deque(maxlen=40)
        self.fatal: str | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self.on_fatal: Callable[[Edge], None] | None = None
        self.observer_up: Callable[[], bool] = lambda: True
        self.holds = 0  # faults in progress that affect this edge
        self.window_open = False
        self._close_timer: asyncio.TimerHandle | None = None

    # ---- files and process ----------------------------------------------------------------------------

    def config(self) -> dict[str, Any]:
        limits = dict(DEFAULT_LIMITS)
        limits.update(self.scenario.limits)
        cfg: dict[str, Any] = {
            "name": self.name,
            "hub": {"url": self.hub_url},
            "listen": f"127.0.0.1:{self.lan_port}" if self.lan_port else None,
            "data": str(self.dir / "data"),
            "app": "sim.edgeapp",
            "stats": self.scenario.stats,
            "limits": limits,
        }
        if self.scenario.workloads:  # the scenario deploys workloads: every edge runs the engine (docs/workloads.md)
            cfg["workloads"] = {"status": 2}
        cfg.update(self.scenario.extra_config)
        return cfg

    def app_params(self) -> dict[str, Any]:
        s = self.scenario
        return {
            "name": self.name,
            "boot": self.boot,
            "publish": [{"subject": p.subject.replace("{edge}", self.name), "interval_ms": max(1, round(1000 / p.rate)),
                         "size": p.size} for p in self.publishers],
            "service": s.request_subject.replace("{edge}", self.name),
            "control": f"sim.ctl.{self.name}",
        }

    def command(self) -> list[str]:
        cmd = [self.micropython]
        if self.scenario.heapsize:
            cmd += ["-X", f"heapsize={self.scenario.heapsize}"]
        return cmd + ["-m", "edge", "config.json"]

    def files(self) -> dict[str, str]:
        """What is written into the state folder before every boot: file name -> text."""
        return {"config.json": json.dumps(self.config(), indent=1), "sim_app.json": json.dumps(self.app_params())}

    def env(self) -> dict[str, str]:
        """The process environment: MICROPYPATH finds the edge package (and sim.edgeapp) here."""
        return dict(os.environ, MICROPYPATH=f"{REPO}:.frozen")

    async def start(self) -> None:
        self.boot += 1
        self.window_open = True  # this boot's tracks open with a window: start-up lasts until the link is up
        self._cancel_close()
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "data").mkdir(exist_ok=True)
        for fname, text in self.files().items():
            (self.dir / fname).write_text(text)
        env = self.env()
        self.expect_exit = False
        self.link_up = False
        self.state = "starting"
        self.proc = await self.procs.spawn(self.command(), self.dir, env, pipe=True)
        self.reader = asyncio.create_task(self._read(self.proc, self.boot))

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def crash(self) -> None:
        """SIGKILL, as a power cut or a watchdog reset; the caller restarts it."""
        if not self.running:
            return
        self.expect_exit = True
        self.crashes += 1
        self.open_window()  # what the killed boot published last may still have been in flight
        self.pending = []
        assert self.proc is not None
        await procs_mod.kill(self.proc)
        await self._reaped()
        self.state = "crashed"

    async def restart(self, after_crash: bool = True) -> None:
        """after_crash: an injected crash, whose way back is timed (a watchdog restart is not)."""
        if self.stopping or self.running:
            return
        await self.start()
        if after_crash:
            self.pending.append(("crash", self.clock()))

    async def stop(self, grace: float = 3.0) -> None:
        """End of run: SIGINT (the edge exits 0), SIGKILL after `grace`; its output is read to the end."""
        self.stopping = True
        if self._watchdog is not None:
            self._watchdog.cancel()
        if self.proc is None:
            return
        was_running = self.running
        self.expect_exit = True
        await procs_mod.stop(self.proc, signal.SIGINT, grace)  # KeyboardInterrupt: a clean exit on MicroPython
        await self._reaped()
        if was_running:
            self.state = "stopped"

    async def _reaped(self) -> None:
        if self.reader is not None:
            try:
                await asyncio.wait_for(self.reader, 3)
            except (TimeoutError, asyncio.CancelledError):
                pass

    # ---- faults seen from the edge ----------------------------------------------------------------------

    def partition_started(self) -> None:
        self.partitions += 1
        self.down_during_cut = not self.link_up
        self.fault_begins()

    def partition_healed(self, t: float) -> None:
        if self.link_up and not self.down_during_cut:
            self.link_survived += 1
        elif self.running:
            self.pending.append(("partition", t))
        self.fault_ends()

    def hub_down(self) -> None:
        self.hub_wait = self.running
        self.hub_up_at = None
        self.fault_begins()

    def node_lost(self, kind: str, t: float) -> None:
        """Its hub node is being killed or stopped (kind "hub_kill" / "hub_restart"): the next "uplink up", on another
        node or on the same one back, is the way back; until then it is in a fault window."""
        if not self.node_wait:
            self.node_wait = True
            self.fault_begins()
        if self.running:
            self.pending = [(k, t0) for k, t0 in self.pending if k != kind] + [(kind, t)]

    def hub_back(self, t: float) -> None:
        """t: when the hub was back (the simulator's readiness check, or the first edge that got in, if earlier)."""
        if self.hub_wait:
            if self.hub_up_at is not None:
                self.recovery["hub_restart"].append(round(self.hub_up_at - t, 3))
            elif self.running:
                self.pending.append(("hub_restart", t))
        self.hub_wait = False
        self.fault_ends()

    # ---- fault windows: which messages a fault may excuse ------------------------------------------------

    def fault_begins(self) -> None:
        self.holds += 1
        self.open_window()

    def fault_ends(self) -> None:
        self.holds = max(0, self.holds - 1)
        self.maybe_close_window()

    def open_window(self) -> None:
        self._cancel_close()
        if self.window_open:
            return
        self.window_open = True
        for (boot, idx), t in self.tracks.items():
            if boot == self.boot:
                t.open_window(self._margin(idx))

    def maybe_close_window(self) -> None:
        """Close the window GUARD_S after the link is back (and the simulator connected), if no fault holds it."""
        if self.window_open and not self.holds and self.link_up and self.observer_up() and self._close_timer is None:
            self._close_timer = asyncio.get_running_loop().call_later(GUARD_S, self._close_window)

    def _close_window(self) -> None:
        self._close_timer = None
        if self.holds or not self.link_up or not self.window_open or not self.observer_up():
            return
        self.window_open = False
        for (boot, _idx), t in self.tracks.items():
            if boot == self.boot:
                t.close_window()

    def _cancel_close(self) -> None:
        if self._close_timer is not None:
            self._close_timer.cancel()
            self._close_timer = None

    def _margin(self, idx: int) -> int:
        rate = self.publishers[idx].rate if idx < len(self.publishers) else 1.0
        return int(GUARD_S * rate) + 1

    # ---- what the hub delivered -------------------------------------------------------------------------

    def track(self, boot: int, idx: int) -> Track:
        key = (boot, idx)
        t = self.tracks.get(key)
        if t is None:
            t = self.tracks[key] = Track(self.window_open and boot == self.boot)
        return t

    def received(self, boot: int, idx: int, seq: int) -> None:
        t = self.track(boot, idx)
        if not 1 <= seq <= MAX_SEQ:
            t.out_of_range += 1
        elif not t.received.add(seq):
            t.duplicates += 1

    def set_status(self, kind: str, payload: bytes) -> None:
        self.status.update(kind, payload, self.clock())

    # ---- its status lines -------------------------------------------------------------------------------

    async def _read(self, proc: asyncio.subprocess.Process, boot: int) -> None:
        assert proc.stdout is not None
        while True:
            try:
                raw = await proc.stdout.readline()
            except (ValueError, asyncio.LimitOverrunError):  # an over-long line: skip it
                continue
            if not raw:
                break
            line = raw.decode(errors="replace").rstrip("\r\n")
            self._line(line, boot)
        code = await proc.wait()
        self.exit_codes.append(code)
        self.link_up = False
        self._cancel_close()
        if not self.expect_exit:
            self._unexpected_exit(code, boot)

    def _unexpected_exit(self, code: int, boot: int) -> None:
        self.unexpected_exits += 1
        self.state = "exited"
        last = " | ".join(list(self.tail)[-4:])
        if boot == 1 and code in (1, 2) and not self.connects:
            # a bad config or app (2) or a start-up failure (1): restarting would only repeat it
            self.fatal = f"{self.name} exited with code {code} at start: {last}"
            self.state = "failed"
            if self.on_fatal is not None:
                self.on_fatal(self)
            return
        self.event(f"{self.name} exited unexpectedly (code {code}): {last}")
        if not self.stopping:
            self._watchdog = asyncio.create_task(self._restart_later(1.0))

    async def _restart_later(self, delay: float) -> None:
        # As a device's watchdog would: the edge comes back after a moment.
        await asyncio.sleep(delay)
        try:
            await self.restart(after_crash=False)
        except OSError as e:
            self.event(f"{self.name}: restart failed: {e}")

    def _line(self, line: str, boot: int) -> None:
        if not line.startswith("edge: app pub "):
            self.tail.append(line)
        if not line.startswith("edge: "):
            return
        body = line[6:]
        if body.startswith("app pub "):
            parts = body.split()
            if len(parts) == 5 and parts[2].isdigit() and parts[3].isdigit():
                idx, seq, fwd = int(parts[2]), int(parts[3]), parts[4] == "1"
                t = self.track(boot, idx)
                if seq > t.published:
                    t.published = seq
                if fwd and seq <= MAX_SEQ:
                    t.forwarded.add(seq)
        elif body.startswith("stats "):
            kv = dict(p.split("=", 1) for p in body.split()[1:] if "=" in p)
            self.stats_line = {k: int(v) for k, v in kv.items() if v.lstrip("-").isdigit()}
            if kv.get("hub_url"):
                self.hub_url_reported = kv["hub_url"][:200]
            heap, peak, free = self.stats_line.get("heap"), self.stats_line.get("peak"), self.stats_line.get("free")
            if heap is not None:
                self.heap = heap
            if peak is not None and (self.heap_peak is None or peak > self.heap_peak):
                self.heap_peak = peak
            if free is not None and free >= 0 and (self.free_min is None or free < self.free_min):
                self.free_min = free
        elif body.startswith("uplink up"):
            now = self.clock()
            if self.connected_in_boot == boot:
                self.reconnects += 1
            self.connected_in_boot = boot
            self.connects += 1
            self.link_up = True
            self.state = "up"
            after = []
            for p in body.split()[2:]:
                if p.startswith("hub="):
                    node = self.node_of.get(_host_port(p[4:]))
                    if node is not None and self.node is not None and node != self.node:
                        self.node_switches += 1
                        after.append(f"on {node}, was on {self.node}")
                    self.node = node
            if self.node_wait:
                self.node_wait = False
                self.fault_ends()
            if self.hub_wait and self.hub_up_at is None:
                self.hub_up_at = now
            for kind, t0 in self.pending:
                self.recovery[kind].append(round(now - t0, 3))
                after.append(f"{now - t0:.2f} s after the {kind.replace('_', ' ')}")
                if kind == "crash":
                    self.crashes_survived += 1
            self.pending = []
            self.maybe_close_window()
            if after or self.connects > 1:
                self.event(f"{self.name} uplink up" + (f" ({', '.join(after)})" if after else ""))
        elif body.startswith("uplink down"):
            reason = body.partition("reason=")[2]
            if reason:
                self.last_error = reason[:200]
            if self.link_up:
                self.disconnects += 1
                self.down_during_cut = True
                self.event(f"{self.name} uplink down ({reason or '?'})")
            else:
                self.failed_dials += 1
            self.link_up = False
            self.state = "down"
        elif body.startswith("uplink -ERR"):
            self.hub_errors += 1
            self.last_error = body[7:][:200]
        elif body.startswith("fwdstatus "):
            try:
                fwd = json.loads(body[10:])
            except ValueError:
                return
            if isinstance(fwd, dict):
                self.fwd_local, self.fwd_local_at = fwd, self.clock()
        elif body.startswith("ready "):
            self.state = "connecting"
            for p in body.split():
                if p.startswith("heap=") and p[5:].isdigit():
                    self.heap = self.heap_ready = int(p[5:])
        elif body.startswith("app stopped"):
            self.stop_acked = True
        elif body.startswith("app failed"):
            self.last_error = body[:200]
            self.event(f"{self.name}: {body}")

    # ---- figures ----------------------------------------------------------------------------------------

    def message_counts(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for t in self.tracks.values():
            for k, v in t.counts().items():
                total[k] = total.get(k, 0) + v
        if not total:
            total = dict.fromkeys(Track(False).counts(), 0)
        return total

    def by_boot(self) -> list[dict[str, int]]:
        rows: dict[int, dict[str, int]] = {}
        for (boot, _idx), t in sorted(self.tracks.items()):
            row = rows.setdefault(boot, {"boot": boot, "published": 0, "received": 0})
            c = t.counts()
            row["published"] += c["published"]
            row["received"] += c["received"]
        return list(rows.values())

    def reported_failovers(self) -> tuple[int | None, str | None]:
        """(failovers, hub_url) as the edge reports them itself: `failovers=N hub_url=...` on its stats line, or
        top-level "failovers" / "hub_url" in a JSON message it publishes on $EDGE.<name>.<kind>; None if it does not
        (an edge without a list of hub URLs has nothing to fail over to)."""
        fo = self.stats_line.get("failovers")
        url = self.hub_url_reported
        for v in self.status.last.values():
            if isinstance(v, dict):
                if isinstance(v.get("failovers"), int) and not isinstance(v["failovers"], bool):
                    fo = v["failovers"]
                if isinstance(v.get("hub_url"), str):
                    url = v["hub_url"][:200]
        return fo, url

    def parts(self) -> dict[str, bool]:
        """What this edge runs, as the heap reference table counts it: a LAN listener, the uplink, a forward queue,
        a KV cache."""
        cfg = self.config()
        return {"lan": bool(cfg.get("listen")), "uplink": bool(cfg.get("hub")), "forward": bool(cfg.get("forward")),
                "kv": bool(cfg.get("kv"))}

    def backlog(self, now: float) -> tuple[int | None, float | None]:
        """(messages waiting to go to the hub, age of that figure in s): from the forward status it printed, which
        is never older than the copy that reached the hub (it prints it, then sends it) and goes on during a
        partition; else from its $EDGE.<name>.forward or .status message."""
        local = forward_backlog(self.fwd_local)
        if local is not None and self.fwd_local_at is not None:
            return local, round(now - self.fwd_local_at, 1)
        remote = self.status.backlog()
        return remote, (round(now - self.status.at, 1) if remote is not None and self.status.at is not None else None)

    def snapshot(self, now: float) -> dict[str, Any]:
        backlog, backlog_age = self.backlog(now)
        d: dict[str, Any] = {
            "name": self.name,
            "state": self.state,
            "pid": self.proc.pid if self.proc is not None else None,
            "boots": self.boot,
            "link_up": self.link_up,
            "messages": self.message_counts(),
            "by_boot": self.by_boot(),
            "requests": dict(self.requests),
            "connects": self.connects,
            "reconnects": self.reconnects,
            "disconnects": self.disconnects,
            "failed_dials": self.failed_dials,
            "hub_errors": self.hub_errors,
            "crashes": self.crashes,
            "crashes_survived": self.crashes_survived,
            "unexpected_exits": self.unexpected_exits,
            "partitions": self.partitions,
            "partitions_link_survived": self.link_survived,
            "recovery_s": {k: list(v) for k, v in self.recovery.items()},
            "heap": {"last": self.heap, "peak": self.heap_peak, "min_free": self.free_min, "ready": self.heap_ready},
            "parts": self.parts(),
            "backlog": backlog,
            "backlog_age_s": backlog_age,
            "forward": self.fwd_local,
            "stats": dict(self.stats_line),
            "last_error": self.last_error,
            "status": self.status.to_json(now),
        }
        fo, url = self.reported_failovers()
        d["hub"] = {"urls": self.hub_url if isinstance(self.hub_url, list) else [self.hub_url],
                    "first_node": self.node_of.get(_host_port(self.hub_url if isinstance(self.hub_url, str)
                                                              else self.hub_url[0])),
                    "node": self.node, "node_switches": self.node_switches, "failovers": fo, "hub_url": url}
        if self.lan_port:
            d["lan"] = f"nats://127.0.0.1:{self.lan_port}"
        return d
