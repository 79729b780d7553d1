"""`natsedge bench --forward`: the store-and-forward queue (edge/flashlog.py, edge/leaf/forward.py) on MicroPython.

Three measurements, all on MicroPython's unix port with the edge compiled to .mpy (as shipped):

* **append**: records/s through `FlashLog.append()` + `maybe_flush()` (group commit) on an emulated ESP32 flash
  partition (littlefs on sim/flashdev.py's RamFlash, 1 MB) and on a POSIX folder, per payload size and
  commit policy, with the flash operations it caused: bytes programmed and 4 KB erases per byte stored. The log is
  kept at steady state (whole segments reclaimed as a drained queue would). The unix port's speed says little
  about an ESP32's; the flash-bound ESP32 estimate uses 45 ms per erase and 0.7 ms per 256-byte page program
  (shared/micropython/FACTS.md 3.5, 8.5).
* **durable**: `await leaf.publish(..., durable=True)` in batches of 16 through the Leaf and the Forwarder on the
  same emulated flash, and the heap the queue takes (code imported from .mpy, a Forwarder with one queue, after
  the run), as gc.mem_alloc() after gc.collect().
* **drain**: a `micropython -m edge` process publishes COUNT durable records while no hub is up; then the hub
  (nats-server and/or our hub, JetStream on) starts, the stream is created, and the time until the stream holds
  all COUNT is measured (no pacing), plus the span between the first and last stored message by the stream's own
  timestamps. The edge's stats lines give its heap during the drain; a second edge with the same config but no
  "forward" gives the baseline heap at "ready".
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shlex
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from host.tools import benchlib, needs
from host.tools.bench_edge import HUB_KINDS, find_micropython, micropython_version
from sim import flashdev

FLASHDEV_DIR = Path(flashdev.__file__).resolve().parent  # MicroPython imports sim/flashdev.py as `flashdev`
ERASE_MS = 45.0  # 4 KB sector erase, typical SPI NOR (FACTS.md 8.5)
PAGE_MS = 0.7  # 256-byte page program, typical
COMMITS = (("each record", 1, 1 << 20), ("16 records / 4 KB", 16, 4096), ("64 records / 8 KB (default)", 64, 8192),
           ("64 records / 16 KB", 64, 16384))

APPEND_SCRIPT = r'''
import gc, json, os, sys, time, vfs
sys.path.append(".frozen")
with open(sys.argv[1]) as f:
    P = json.load(f)
import flashdev
from edge.flashlog import FlashLog

def out(d):
    sys.stdout.write("result " + json.dumps(d) + "\n")

def rmtree(p):
    try:
        names = os.listdir(p)
    except OSError:
        return
    for n in names:
        q = p + "/" + n
        if os.stat(q)[0] & 0x4000:
            rmtree(q)
        else:
            os.remove(q)
    os.rmdir(p)

for backend in P["backends"]:
    for size in P["sizes"]:
        for label, every, fbytes in P["commits"]:
            n = P["records"].get(str(size), 2000)
            if every == 1:
                n = min(n, 1000)
            dev = None
            if backend == "littlefs":
                dev = flashdev.RamFlash(4096, 256)
                vfs.VfsLfs2.mkfs(dev)
                vfs.mount(vfs.VfsLfs2(dev), "/b")
                path = "/b/q"
            else:
                path = P["tmp"] + "/q-%d-%d" % (size, every)
                rmtree(path)
            log = FlashLog(path, 16384, 262144, every, 10 ** 9, fbytes)
            payload = b"x" * size
            if dev:
                p0, e0 = dev.prog_bytes, dev.erases
            gc.collect()
            t0 = time.ticks_us()
            for i in range(n):
                log.append(payload)
                log.maybe_flush()
                if log.size_bytes > 131072:
                    log.reclaim(log.first_segment_end())
            log.flush()
            us = time.ticks_diff(time.ticks_us(), t0)
            d = {"backend": backend, "size": size, "commit": label, "records": n, "us": us,
                 "flushes": log.flushes, "log_bytes_written": log.bytes_written}
            if dev:
                d["prog_bytes"] = dev.prog_bytes - p0
                d["erases"] = dev.erases - e0
            log.close()
            if dev:
                vfs.umount("/b")
            else:
                rmtree(path)
            out(d)
'''

DURABLE_SCRIPT = r'''
import asyncio, gc, json, sys, time, vfs
sys.path.append(".frozen")
with open(sys.argv[1]) as f:
    P = json.load(f)
import flashdev
from edge.leaf.broker import Leaf
dev = flashdev.RamFlash(4096, 512)
vfs.VfsLfs2.mkfs(dev)
vfs.mount(vfs.VfsLfs2(dev), "/b")
leaf = Leaf("b", 16, 8192, 8)
gc.collect()
h0 = gc.mem_alloc()
from edge.leaf.forward import Forwarder
gc.collect()
h1 = gc.mem_alloc()
st = {"rate": 0, "byte_rate": 0, "jitter_ms": 0, "max_inflight": 32, "ack_timeout_ms": 5000, "status_ms": 0,
      "flush_every": 64, "flush_ms": 50, "flush_bytes": 8192, "dedup_scan": 1000}
q = {"subjects": ["b.>"], "stream": "B", "name": "B", "priority": 0, "max_age": 0, "max_bytes": 1 << 20,
     "segment_size": 16384, "policy": "reject", "coalesce": False}
fwd = Forwarder(leaf, "b", "/b/data", [q], st)
gc.collect()
h2 = gc.mem_alloc()

async def main():
    asyncio.create_task(fwd.run())  # its flush timer, as in an edge (no uplink here)
    n = P["count"]
    payload = b"x" * P["size"]
    p0, e0 = dev.prog_bytes, dev.erases
    t0 = time.ticks_us()
    peak = 0
    for _ in range(n // 16):
        ws = [leaf.publish("b.x", payload, durable=True) for _ in range(16)]
        for w in ws:
            await w
        a = gc.mem_alloc()
        if a > peak:
            peak = a
    us = time.ticks_diff(time.ticks_us(), t0)
    gc.collect()
    sys.stdout.write("result " + json.dumps({"count": n // 16 * 16, "size": P["size"], "us": us,
        "prog_bytes": dev.prog_bytes - p0, "erases": dev.erases - e0, "heap_code": h1 - h0, "heap_state": h2 - h1,
        "heap_after": gc.mem_alloc() - h1, "heap_peak_uncollected": peak - h1}) + "\n")

asyncio.run(main())
'''

DRAIN_APP = r'''
import asyncio, sys, time
COUNT = %d
SIZE = %d

async def main(leaf):
    if leaf.forwarder is None:
        return  # the baseline edge (no "forward"): only its heap at "ready" is wanted
    payload = b"x" * SIZE
    t0 = time.ticks_ms()
    for i in range(COUNT // 16):
        ws = [leaf.publish("bench.d", payload, durable=True) for _ in range(16)]
        for w in ws:
            await w
    sys.stdout.write("edge: app done %%d %%d\n" %% (COUNT // 16 * 16, time.ticks_diff(time.ticks_ms(), t0)))
'''


def _run_mp(mp: str, heapsize: str, env: dict[str, str], script: str, params: dict[str, Any], workdir: Path,
            timeout: float) -> list[dict[str, Any]]:
    # Parameters go in a file: this unix port (a CPython-hosted build) dies on an argument over 255 bytes.
    path = workdir / "fwd_bench_script.py"
    path.write_text(script)
    (workdir / "fwd_bench_params.json").write_text(json.dumps(params))
    proc = subprocess.run([mp, "-X", f"heapsize={heapsize}", str(path), "fwd_bench_params.json"], cwd=str(workdir),
                          env=env, capture_output=True, text=True, timeout=timeout)
    rows = [json.loads(ln[7:]) for ln in proc.stdout.splitlines() if ln.startswith("result ")]
    if proc.returncode != 0 or not rows:
        raise benchlib.BenchError(f"micropython {path.name} failed ({proc.returncode}):\n{proc.stdout[-1500:]}"
                               f"\n{proc.stderr[-1500:]}")
    return rows


def _esp32_ms(prog_bytes: int, erases: int) -> float:
    return erases * ERASE_MS + prog_bytes / 256 * PAGE_MS


def append_rows(mp: str, env: dict[str, str], sizes: list[int], workdir: Path, log: Any) -> list[dict[str, Any]]:
    records = {str(s): (20000 if s <= 32 else 10000 if s <= 256 else 3000) for s in sizes}
    rows = []
    for backend in ("littlefs", "posix"):  # one process each: keeps every run's heap history short
        log(f"forward bench: append (group commit) on {backend} ...")
        params = {"backends": [backend], "sizes": sizes, "records": records, "tmp": str(workdir),
                  "commits": [list(c) for c in COMMITS]}
        rows += _run_mp(mp, "8M", env, APPEND_SCRIPT, params, workdir, 600)
    for r in rows:
        r["records_per_s"] = r["records"] / (r["us"] / 1e6)
        stored = r["records"] * r["size"]
        if "prog_bytes" in r:
            r["written_per_stored"] = r["prog_bytes"] / stored
            r["written_per_record_byte"] = r["prog_bytes"] / (r["records"] * (r["size"] + 6))
            r["erases_per_record"] = r["erases"] / r["records"]
            r["esp32_flash_records_per_s"] = r["records"] / (_esp32_ms(r["prog_bytes"], r["erases"]) / 1000)
    return rows


def durable_row(mp: str, env: dict[str, str], workdir: Path, log: Any) -> dict[str, Any]:
    log("forward bench: durable publishes through Leaf + Forwarder on emulated littlefs ...")
    r = _run_mp(mp, "8M", env, DURABLE_SCRIPT, {"count": 5000, "size": 64}, workdir, 600)[0]
    r["records_per_s"] = r["count"] / (r["us"] / 1e6)
    r["written_per_stored"] = r["prog_bytes"] / (r["count"] * r["size"])
    r["esp32_flash_records_per_s"] = r["count"] / (_esp32_ms(r["prog_bytes"], r["erases"]) / 1000)
    return r


async def _stream_state(url: str, name: str) -> tuple[int, float]:
    import nats

    nc = await nats.connect(url, allow_reconnect=False, connect_timeout=2)
    try:
        info = await nc.jetstream(timeout=3).stream_info(name)
        return info.state.messages, info.state.last_seq
    finally:
        await nc.close()


async def _add_stream(url: str) -> None:
    import nats

    nc = await nats.connect(url, allow_reconnect=False, connect_timeout=2)
    try:
        await nc.jetstream(timeout=3).add_stream(name="BENCH", subjects=["bench.>"])
    finally:
        await nc.close()


async def _span(url: str, last: int) -> float:
    import nats

    from host.gotime import parse_time

    nc = await nats.connect(url, allow_reconnect=False, connect_timeout=2)
    try:
        t = []
        for seq in (1, last):
            r = await nc.request("$JS.API.STREAM.MSG.GET.BENCH", json.dumps({"seq": seq}).encode(), timeout=3)
            t.append(parse_time(json.loads(r.data)["message"]["time"]) / 1e9)
        return t[1] - t[0]
    finally:
        await nc.close()


class EdgeProc:
    """One `micropython -m edge` process; a thread collects its stdout lines."""

    def __init__(self, mp: str, heapsize: int, env: dict[str, str], conf: Path, workdir: Path) -> None:
        self.proc = subprocess.Popen([mp, "-X", f"heapsize={heapsize}", "-m", "edge", str(conf)], cwd=str(workdir),
                                     env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, text=True, bufsize=1)
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait(self, pattern: str, timeout: float, start: int = 0) -> re.Match[str]:
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            for ln in self.lines[start:]:
                m = rx.search(ln)
                if m:
                    return m
            if time.monotonic() > deadline or (self.proc.poll() is not None and not self._thread.is_alive()):
                raise benchlib.BenchError(f"edge: no line matching {pattern!r} in {timeout:.0f} s; last lines:\n"
                                       + "\n".join(self.lines[-15:]))
            time.sleep(0.02)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # the edge exits 0 on SIGINT, its queue flushed
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._thread.join(timeout=2)


def drain_row(kind: str, mp: str, code_path: str, count: int, size: int, heapsize: int, workdir: Path,
              nats_binary: str | None, log: Any) -> dict[str, Any]:
    wd = workdir / f"drain-{kind}"
    app_dir = wd / "app"
    app_dir.mkdir(parents=True)
    (app_dir / "fwd_bench_app.py").write_text(DRAIN_APP % (count, size))
    env = dict(os.environ, MICROPYPATH=f"{code_path}:{app_dir}:.frozen")
    leaf_port = benchlib.free_port()
    cfg: dict[str, Any] = {
        "name": "bench", "hub": {"url": f"nats-leaf://{benchlib.LOCALHOST}:{leaf_port}"}, "data": str(wd / "data"),
        "app": "fwd_bench_app", "stats": 0.25,
        "forward": [{"subjects": ["bench.>"], "stream": "BENCH", "max_bytes": 8 << 20}],
        "forward_settings": {"jitter": 0, "status": 0.5},
        "limits": {"reconnect_min": 0.05, "reconnect_max": 0.2},
    }
    conf = wd / "edge.json"
    conf.write_text(json.dumps(cfg))
    base = dict(cfg, forward=None, forward_settings=None)  # the same edge without the queue (and app idle)
    base_conf = wd / "edge-noforward.json"
    base_conf.write_text(json.dumps(base))
    row: dict[str, Any] = {"hub": HUB_KINDS[kind], "count": count, "size": size,
                           "edge_command": f"MICROPYPATH={code_path}:{app_dir}:.frozen {shlex.quote(mp)} "
                                           f"-X heapsize={heapsize} -m edge {conf}"}
    p = EdgeProc(mp, heapsize, env, base_conf, wd)
    try:
        row["ready_heap_without_forward"] = int(p.wait(r"^edge: ready .* heap=(\d+)", 20).group(1))
    finally:
        p.stop()
    log(f"forward bench: {HUB_KINDS[kind]}: {count} durable publishes with the hub down ...")
    p = EdgeProc(mp, heapsize, env, conf, wd)
    server = None
    try:
        row["ready_heap_with_forward"] = int(p.wait(r"^edge: ready .* heap=(\d+)", 20).group(1))
        m = p.wait(r"^edge: app done (\d+) (\d+)$", 600)
        count = row["count"] = int(m.group(1))  # the app publishes in groups of 16: --drain-count rounded down
        row["fill_records_per_s"] = count / (int(m.group(2)) / 1000)
        hub_conf = wd / "hub.conf"
        hub_conf.write_text(f"leafnodes {{\n  listen: {benchlib.LOCALHOST}:{leaf_port}\n}}\n")
        cmd = (benchlib.default_nats_cmd(nats_binary or benchlib.find_nats_server(), True) if kind == "nats"
               else benchlib.default_hub_cmd(True))
        server = benchlib.ServerProcess(HUB_KINDS[kind], [*cmd, "-c", str(hub_conf)]).start()
        asyncio.run(_add_stream(server.url))
        t0 = time.monotonic()
        mark = len(p.lines)
        log(f"forward bench: {HUB_KINDS[kind]}: draining ...")
        n = 0
        while n < count:
            time.sleep(0.02)
            n, _ = asyncio.run(_stream_state(server.url, "BENCH"))
            if time.monotonic() - t0 > 300:
                raise benchlib.BenchError(f"{HUB_KINDS[kind]}: only {n} of {count} stored after 300 s")
        row["drain_s"] = time.monotonic() - t0
        row["stored"] = n
        row["stream_span_s"] = asyncio.run(_span(server.url, count))
        during = p.lines[mark:]
        heaps = [int(h) for ln in during for h in re.findall(r"^edge: stats heap=(\d+)", ln)]
        peaks = [int(h) for ln in during for h in re.findall(r"^edge: stats .*peak=(\d+)", ln)]
        row["drain_heap_max"] = max(heaps) if heaps else None
        row["peak_heap"] = max(peaks) if peaks else None
        p.wait(r'"backlog": 0', 30, mark)
        st = [json.loads(ln[len("edge: fwdstatus "):]) for ln in p.lines if ln.startswith("edge: fwdstatus ")]
        q = st[-1]["queues"][0]
        row["published"], row["duplicates"], row["dup_skipped"] = q["published"], q["duplicates"], q["dup_skipped"]
    finally:
        p.stop()
        if server is not None:
            server.stop()
    return row


def _heap(n: int | None) -> str:
    # None: no stats line came during the drain (a short one can end within the 0.25 s stats interval)
    return "not sampled" if n is None else f"{n:,} B"


def format_report(rep: dict[str, Any]) -> str:
    out = [f"natsedge bench --forward ({rep['micropython']}, edge code: {rep['code']})", "",
           "append, group commit (FlashLog.append + maybe_flush), steady state:",
           f"{'backend':<9} {'size':>5} {'commit':<28} {'rec/s':>9} {'prog B/B':>9} {'erase/rec':>9} "
           f"{'ESP32 est rec/s':>15}"]
    for r in rep["append"]:
        out.append(f"{r['backend']:<9} {r['size']:>5} {r['commit']:<28} {r['records_per_s']:>9,.0f} "
                   + (f"{r['written_per_stored']:>9.2f} {r['erases_per_record']:>9.3f} "
                      f"{r['esp32_flash_records_per_s']:>15,.0f}" if "prog_bytes" in r else f"{'-':>9} {'-':>9} "
                                                                                           f"{'-':>15}"))
    d = rep["durable"]
    out += ["", f"durable publishes (Leaf + Forwarder, batches of 16, {d['size']} B, littlefs): "
                f"{d['records_per_s']:,.0f}/s; {d['written_per_stored']:.2f} bytes programmed per byte; "
                f"ESP32 flash-bound estimate {d['esp32_flash_records_per_s']:,.0f}/s",
            f"queue heap (.mpy): code {d['heap_code']:,} B, Forwarder with one queue {d['heap_state']:,} B, "
            f"after {d['count']} publishes {d['heap_after']:,} B (code + state)"]
    for r in rep["drain"]:
        out += ["", f"drain {r['count']:,} backlogged {r['size']} B messages to {r['hub']} (loopback, no pacing): "
                    f"{r['drain_s']:.2f} s from stream creation to all stored; first-to-last stored "
                    f"{r['stream_span_s']:.2f} s; {r['stored']:,} stored",
                f"  durable publishes through the edge while offline: {r['fill_records_per_s']:,.0f}/s",
                f"  edge heap: ready {r['ready_heap_without_forward']:,} B without forward, "
                f"{r['ready_heap_with_forward']:,} B with it; highest during the drain {_heap(r['drain_heap_max'])} "
                f"(peak {_heap(r['peak_heap'])})",
                f"  command: {r['edge_command']}"]
    return "\n".join(out)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The --forward options, added to `natsedge bench` (host/tools/bench.py)."""
    g = parser.add_argument_group("forward (store-and-forward on MicroPython), with --forward; also uses --hub, "
                                  "--micropython, --nats-server, --json, -q")
    g.add_argument("--forward", action="store_true",
                   help="benchmark the store-and-forward queue: append rate, flash writes, drain time, heap")
    g.add_argument("--drain-count", type=int, default=10000, help="with --forward: backlog drained to the hub")
    g.add_argument("--fwd-sizes", type=benchlib.comma_list(int), default="16,128,1024",
                   help="with --forward: payload sizes of the append measurement")


def measure(args: argparse.Namespace, log: Callable[[str], None]) -> dict[str, Any]:
    needs.micropython("natsedge bench --forward", "bench", args.micropython)
    needs.module("nats", "natsedge bench --forward")
    if "nats" in args.hub:
        needs.nats_server("natsedge bench --forward --hub nats", "bench", args.nats_server)
    mp = find_micropython(args.micropython)
    with tempfile.TemporaryDirectory(prefix="natsedge-fwd-bench-") as tmp:
        workdir = Path(tmp)
        from host.tools.firmware_cmd import build_bundle

        bundle = workdir / "bundle"
        build_bundle(bundle, board=None, log=log)
        env = dict(os.environ, MICROPYPATH=f"{bundle}:{FLASHDEV_DIR}:.frozen")
        rep: dict[str, Any] = {"micropython": micropython_version(mp), "code": "mpy bundle",
                               "append": append_rows(mp, env, list(args.fwd_sizes), workdir, log),
                               "durable": durable_row(mp, env, workdir, log), "drain": []}
        for kind in args.hub:
            rep["drain"].append(drain_row(kind, mp, str(bundle), args.drain_count, 128, 160 * 1024, workdir,
                                          args.nats_server, log))
    return rep


def run(args: argparse.Namespace) -> int:
    log = benchlib.progress_log(args.quiet)
    rc, _ = benchlib.run_and_report("natsedge bench --forward", lambda: measure(args, log), format_report, args.json,
                                    log)
    return rc
