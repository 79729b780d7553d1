"""`natsedge bench`: throughput, latency and memory benchmarks for any NATS server.

Three ways to run it (docs/benchmarks.md has the details and measured numbers):

* ``natsedge bench --url nats://127.0.0.1:4222`` measures one running server (``--server-pid`` enables idle);
* ``natsedge bench --compare`` starts nats-server and our hub on free ports, alternates runs between them for
  every scenario/size and prints medians plus the ratio hub/nats-server;
* ``natsedge bench --self-check`` measures the load generator's own ceilings against a built-in null server.

The load generator speaks the NATS text protocol over raw sockets (no client library) from separate worker
processes, so the GIL never serialises publisher and subscribers:

* publishers pre-build a few large batches (``--batch-kib``, default 512 KiB) of PUB frames with varied
  subjects, payload sizes, payload bytes and reply subjects, and push them with ``sock.sendall``.  Reply
  subjects carry an epoch field that changes on every pass over the batches, so no two frames sent in a run
  are byte-identical.  Each batch ends with a PING; at most ``MAX_PINGS_OUT`` PONGs may be outstanding, which
  bounds what the server has buffered from us.  With subscribers present there is also an end-to-end credit
  window (``--window-mb``): the publisher stalls while (published - slowest subscriber's count) exceeds it, so
  a fast publisher cannot get a subscriber cut off as a slow consumer.
* subscribers read big chunks and count MSG frames with ``bytearray.count`` (see `benchlib.MsgCounter`): payloads,
  subjects and reply subjects are lowercase alphanumerics and dots, so an upper-case ``M`` can only be the
  first letter of a ``MSG`` line or sit inside an INFO line's JSON, which is excluded.
* throughput is counted at the subscriber side over ``--duration`` seconds after ``--warmup``; for ``pub``
  (no subscribers) it is what the server accepted: frames written between two drained PING/PONG round
  trips, divided by the time between them.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import resource
import shlex
import socket
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from functools import partial
from multiprocessing.connection import Connection
from typing import Any

from host.tools import bench_edge, bench_forward, needs
from host.tools.bench_cluster import run_compare_gateway, run_compare_route
from host.tools.bench_js import run_js
from host.tools.bench_js_leaf import run_compare_js_leaf
from host.tools.bench_leaf import run_compare_leaf
from host.tools.benchlib import (
    COMPARE_ONLY,
    GATEWAY_SCENARIOS,
    JS_SCENARIOS,
    LEAF_JS_SCENARIOS,
    LEAF_SCENARIOS,
    LOCALHOST,
    NOISY_CPU,
    ROUTE_SCENARIOS,
    SCENARIOS,
    SUB_SUBJECTS,
    SUBSCRIBERS,
    BenchConfig,
    BenchError,
    Endpoint,
    LoadMix,
    ServerProcess,
    WorkerSpec,
    comma_list,
    connect_frame,
    default_hub_cmd,
    default_nats_cmd,
    find_nats_server,
    fmt_rate,
    jitter_size,
    mp_context,
    nats_connect,
    nats_server_version,
    parse_url,
    payload_pool,
    proc_rss_kib,
    progress_log,
    publisher,
    record_run,
    recv_more,
    run_and_report,
    run_pubsub,
    run_workers,
    scenario_sizes,
    sleep_until,
    subscriber,
    wait_pong,
    window_metrics,
)

REQ_SUBJECT_SUB = b"bench.req.*"
REPLY_SUBJECT_SUB = b"bench.rep.*"


# ------------------------------------------------------------------------------------------ load generation


def request_frames(size: int, mix: LoadMix, seed: int, count: int = 512) -> list[tuple[bytes, bytes]]:
    rng = random.Random(seed)
    pool = payload_pool(rng, 65536 + 2 * size + 64)
    out = []
    for _ in range(count):
        n = jitter_size(rng, size, mix)
        off = rng.randrange(len(pool) - n)
        out.append((b"bench.req.%d" % rng.randrange(mix.subjects), pool[off : off + n]))
    return out


# ---------------------------------------------------------------------------------------------- worker side


def _parse_msgs(buf: bytearray) -> tuple[list[tuple[bytes | None, bytes]], int, int]:
    """Parse complete MSG frames from `buf`: ([(reply, payload)], pings seen, bytes consumed)."""
    out: list[tuple[bytes | None, bytes]] = []
    pos = 0
    pings = 0
    while True:
        end = buf.find(b"\r\n", pos)
        if end < 0:
            break
        if buf.startswith(b"MSG ", pos):
            fields = bytes(buf[pos + 4 : end]).split()
            nbytes = int(fields[-1])
            if len(buf) < end + 2 + nbytes + 2:
                break
            reply = fields[2] if len(fields) == 4 else None
            out.append((reply, bytes(buf[end + 2 : end + 2 + nbytes])))
            pos = end + 2 + nbytes + 2
            continue
        if buf.startswith(b"-ERR", pos):
            raise BenchError(f"server error: {bytes(buf[pos:end]).decode(errors='replace')}")
        if buf.startswith(b"PING", pos):
            pings += 1
        pos = end + 2  # PONG, +OK, INFO
    return out, pings, pos


Prepare = Callable[[socket.socket, bytearray, int], None]  # as benchlib.subscriber's `prepare`


def _responder(ctl: Connection, ep: Endpoint, stop: Any, prepare: Prepare | None = None) -> dict[str, Any]:
    sock, buf = nats_connect(ep, "bench-responder")
    sock.sendall(b"SUB %s 1\r\nPING\r\n" % REQ_SUBJECT_SUB)
    wait_pong(sock, buf)
    if prepare is not None:  # gwreq: until the requests' server routes bench.req.* here
        prepare(sock, buf, 0)
    ctl.send(("ready", None))
    t_go, t_start, t_end = ctl.recv()
    sock.settimeout(0.05)
    answered = 0
    marks: list[tuple[float, float]] = []  # (wall, cpu) at t_start and t_end
    while not stop.value and time.monotonic() < t_end + 30.0:
        if len(marks) < 2 and time.monotonic() >= (t_start, t_end)[len(marks)]:
            marks.append((time.monotonic(), time.process_time()))
        try:
            data = sock.recv(65536)
        except TimeoutError:
            continue
        if not data:
            break
        buf += data
        msgs, pings, used = _parse_msgs(buf)
        del buf[:used]
        out = [b"PUB %s %d\r\n%s\r\n" % (reply, len(payload), payload) for reply, payload in msgs if reply]
        answered += len(out)
        if pings:
            out.append(b"PONG\r\n" * pings)
        if out:
            sock.sendall(b"".join(out))
    sock.close()
    cpu = (marks[1][1] - marks[0][1]) / (marks[1][0] - marks[0][0]) if len(marks) == 2 else float("nan")
    return {"answered": answered, "cpu": cpu}


def _requester(ctl: Connection, ep: Endpoint, size: int, cfg: BenchConfig,
               prepare: Prepare | None = None) -> dict[str, Any]:
    frames = request_frames(size, cfg.mix, cfg.seed * 104729 + size)
    sock, buf = nats_connect(ep, "bench-requester")
    sock.sendall(b"SUB %s 1\r\nPING\r\n" % REPLY_SUBJECT_SUB)
    wait_pong(sock, buf)
    if prepare is not None:  # gwreq: until the responder's server routes bench.rep.* here
        prepare(sock, buf, 1)
    sock.settimeout(10.0)
    ctl.send(("ready", None))
    t_go, t_start, t_end = ctl.recv()
    sleep_until(t_go)
    lat: list[int] = []
    seq = 0
    clock = time.perf_counter_ns
    cpu0 = 0.0
    t_a = 0.0
    while True:
        subj, payload = frames[seq % len(frames)]
        reply = b"bench.rep.%x" % seq
        frame = b"PUB %s %s %d\r\n%s\r\n" % (subj, reply, len(payload), payload)
        t0 = clock()
        sock.sendall(frame)
        while True:
            msgs, pings, used = _parse_msgs(buf)
            if msgs:
                break
            if pings:
                sock.sendall(b"PONG\r\n" * pings)
                del buf[:used]
            try:
                recv_more(sock, buf, "a reply")
            except TimeoutError:
                raise BenchError(f"no reply to request {seq} within 10 s") from None
        t1 = clock()
        del buf[:used]
        if len(msgs) != 1 or msgs[0][1] != payload:
            raise BenchError("reply does not match the request (lost or duplicated messages?)")
        now = time.monotonic()
        if now >= t_start:
            if not lat:
                t_a, cpu0 = now, time.process_time()
            lat.append(t1 - t0)
        if now >= t_end:
            break
        seq += 1
    dt = time.monotonic() - t_a
    cpu = (time.process_time() - cpu0) / dt
    sock.close()
    lat.sort()
    return {
        "samples": len(lat),
        "p50_us": percentile(lat, 0.50) / 1000,
        "p90_us": percentile(lat, 0.90) / 1000,
        "p99_us": percentile(lat, 0.99) / 1000,
        "max_us": lat[-1] / 1000,
        "mean_us": statistics.fmean(lat) / 1000,
        "rtt_per_s": len(lat) / dt,
        "cpu": cpu,
    }


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted sequence."""
    if not sorted_values:
        raise ValueError("no samples")
    k = max(0, min(len(sorted_values) - 1, math.ceil(q * len(sorted_values)) - 1))
    return float(sorted_values[k])


# ---------------------------------------------------------------------------------------- orchestrator side


def run_throughput(
    ep: Endpoint,
    scenario: str,
    size: int,
    cfg: BenchConfig,
    server_pid: int | None = None,
    verify_totals: bool = True,
) -> dict[str, Any]:
    """One pub/pubsub run. With `verify_totals`, every subscriber must end up with exactly as many messages as
    were published (runs with lost or extra messages fail instead of reporting a rate)."""
    nsubs = SUBSCRIBERS[scenario]
    ctx = mp_context()
    delivered = ctx.RawArray("q", max(nsubs, 1))
    published = ctx.RawArray("q", cfg.publishers)
    stop = ctx.RawValue("b", 0)
    specs: list[WorkerSpec] = []
    for i in range(nsubs):
        subject = SUB_SUBJECTS[i % len(SUB_SUBJECTS)] if nsubs > 1 else SUB_SUBJECTS[0]
        args = (ep, i, subject, delivered, published, stop)
        specs.append(WorkerSpec(f"subscriber-{i}", subscriber, args, passive=True))
    for i in range(cfg.publishers):
        args = (partial(nats_connect, ep, f"bench-pub-{i}"), b"PUB", i, size, cfg, published, delivered, nsubs)
        specs.append(WorkerSpec(f"publisher-{i}", publisher, args))
    return run_pubsub(specs, nsubs, cfg, server_pid, stop, verify_totals=verify_totals)


def run_reqrep(ep: Endpoint, size: int, cfg: BenchConfig, server_pid: int | Sequence[int] | None = None,
               responder_ep: Endpoint | None = None, prepare_responder: Prepare | None = None,
               prepare_requester: Prepare | None = None) -> dict[str, Any]:
    """One request/reply run: the requester on `ep`, the responder on `responder_ep` (default: `ep` too; gwreq:
    another cluster's server, with `prepare_*` waiting for each side's interest to cross the gateway)."""
    stop = mp_context().RawValue("b", 0)
    specs = [
        WorkerSpec("responder", _responder, (responder_ep or ep, stop, prepare_responder), passive=True),
        WorkerSpec("requester", _requester, (ep, size, cfg, prepare_requester)),
    ]
    results, _ready, window = run_workers(specs, cfg, server_pid, stop)
    metrics = dict(results[1])
    metrics["requester_cpu"] = metrics.pop("cpu")
    metrics["responder_cpu"] = results[0]["cpu"]
    metrics.update(window_metrics(window, [metrics["requester_cpu"], metrics["responder_cpu"]]))
    return metrics


def raise_nofile_limit() -> tuple[int, int]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft == resource.RLIM_INFINITY or soft >= hard:
        return soft, hard
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):
        return resource.getrlimit(resource.RLIMIT_NOFILE)
    return hard, hard


def _open_fds() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 64


def run_idle(
    ep: Endpoint, server_pid: int, n: int, log: Callable[[str], None] = lambda s: None
) -> dict[str, Any]:
    """Open `n` idle connections (CONNECT + PING/PONG each); report server RSS growth per connection."""
    soft, _hard = raise_nofile_limit()
    available = soft - _open_fds() - 32
    target = n
    if available < n:
        target = max(0, available)
        log(f"idle: only {available} file descriptors available (RLIMIT_NOFILE={soft}); opening {target}")
    time.sleep(0.2)
    rss0 = proc_rss_kib(server_pid)
    hello = connect_frame(ep, "bench-idle") + b"PING\r\n"
    socks: list[socket.socket] = []
    error = None
    t0 = time.monotonic()
    try:
        step = 50  # stays below small listen backlogs (asyncio defaults to 100)
        while len(socks) < target and error is None:
            group: list[socket.socket] = []
            try:
                for _ in range(min(step, target - len(socks))):
                    s = socket.create_connection((ep.host, ep.port), timeout=10.0)
                    group.append(s)
                    s.sendall(hello)
                for s in group:
                    buf = bytearray()
                    wait_pong(s, buf)
            except (OSError, BenchError) as exc:
                error = f"after {len(socks) + len(group)} connections: {type(exc).__name__}: {exc}"
            socks.extend(group)
        connect_s = time.monotonic() - t0
        time.sleep(0.5)
        # verify every connection is still held by the server: one more PING/PONG each
        held = 0
        for s in socks:
            try:
                s.sendall(b"PING\r\n")
            except OSError:
                continue
        for s in socks:
            try:
                wait_pong(s, bytearray())
                held += 1
            except (OSError, BenchError):
                pass
        rss1 = proc_rss_kib(server_pid)
    finally:
        for s in socks:
            s.close()
    opened = len(socks)
    return {
        "requested": n,
        "attempted": target,
        "opened": opened,
        "held": held,
        "all_held": held == n,
        "rss_before_kib": rss0,
        "rss_after_kib": rss1,
        "kib_per_conn": (rss1 - rss0) / opened if opened else float("nan"),
        "connect_s": connect_s,
        "error": error,
    }


def run_one(
    ep: Endpoint,
    scenario: str,
    size: int | None,
    cfg: BenchConfig,
    server_pid: int | None,
    log: Callable[[str], None] = lambda s: None,
) -> dict[str, Any]:
    if scenario in SUBSCRIBERS:
        assert size is not None
        return run_throughput(ep, scenario, size, cfg, server_pid)
    if scenario == "reqrep":
        assert size is not None
        return run_reqrep(ep, size, cfg, server_pid)
    if scenario in JS_SCENARIOS:
        assert size is not None
        return run_js(ep, scenario, size, cfg, server_pid)
    if scenario == "idle":
        if server_pid is None:
            raise BenchError("idle needs the server PID (use --compare or --server-pid)")
        return run_idle(ep, server_pid, cfg.idle_conns, log)
    raise BenchError(f"unknown scenario {scenario!r}")


# ------------------------------------------------------------------------------- generator self-check


def _null_connection(sock: socket.socket, size: int, seed: int) -> None:
    """One connection of the null server: discard input (answering PINGs); once it SUBs, blast MSG frames."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(b'INFO {"server_id":"null","server_name":"null","max_payload":1048576,"proto":1}\r\n')
    buf = bytearray(1 << 20)
    while True:
        n = sock.recv_into(buf)
        if n == 0:
            return
        # the generator's own traffic has exactly one "G" per PING (payloads are lower-case), so a memchr
        # probe keeps this sink far faster than the publisher it measures
        pings = 0
        i = buf.find(b"G", 0, n)
        while i >= 0:
            pings += 1
            i = buf.find(b"G", i + 1, n)
        if pings:
            sock.sendall(b"PONG\r\n" * pings)
        if n < 4096 and buf.find(b"SUB ", 0, n) >= 0:
            break
    rng = random.Random(seed)
    pool = payload_pool(rng, 65536 + 2 * size + 64)
    mix = LoadMix()
    frames = bytearray()
    while len(frames) < mix.batch_bytes:
        n = jitter_size(rng, size, mix)
        reply = (
            b" bench.r.p0b1.%08x.%x" % (rng.randrange(1 << 30), len(frames)) if rng.random() < 0.25 else b""
        )
        off = rng.randrange(len(pool) - n)
        frames += b"MSG bench.s.%d 1%s %d\r\n%s\r\n" % (rng.randrange(8), reply, n, pool[off : off + n])
    data = bytes(frames)
    while True:
        sock.sendall(data)


def _null_server(listener: socket.socket, size: int) -> None:
    """A trivial stand-in for a server (one forked process per connection), to measure the generator alone."""
    while True:
        conn, _addr = listener.accept()
        if os.fork() == 0:
            listener.close()
            try:
                _null_connection(conn, size, 17)
            except OSError:
                pass
            finally:
                os._exit(0)
        conn.close()


def run_self_check(cfg: BenchConfig, log: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Measure the load generator's own ceilings against the null server: `pub` is how fast one publisher
    process can push frames, `pubsub1` how fast one subscriber process can count MSG frames."""
    if not hasattr(os, "fork"):
        raise BenchError("--self-check needs os.fork")
    label = "null-server"
    cfg = replace(cfg, scenarios=[s for s in cfg.scenarios if s in ("pub", "pubsub1")] or ["pub", "pubsub1"])
    results: list[dict[str, Any]] = []
    ctx = mp_context()
    for size in cfg.sizes:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind((LOCALHOST, 0))
        listener.listen(64)
        ep = Endpoint(LOCALHOST, int(listener.getsockname()[1]))
        server = ctx.Process(target=_null_server, args=(listener, size), daemon=True)
        server.start()
        listener.close()
        try:
            for scen in cfg.scenarios:
                for run in range(cfg.runs):
                    job = lambda ep=ep, scen=scen, size=size: run_throughput(ep, scen, size, cfg, None, False)
                    record_run(results, label, scen, size, run, cfg, job, log)
        finally:
            server.kill()  # its per-connection children exit once their sockets close
            server.join(2.0)
    return {
        "config": _config_dict(cfg),
        "servers": {label: {"url": "built-in null server (generator self-check)", "pid": None}},
        "results": results,
        "summary": summarize(results, [label], cfg),
    }


# --------------------------------------------------------------------------------------------------- suites

GEN_CPU_KEYS = ("publisher_cpu", "subscriber_cpu", "requester_cpu", "responder_cpu")
METRICS: dict[str, list[tuple[str, str, str]]] = {
    # scenario -> [(metric key, unit label, which direction is better)]; the first one is the headline
    "pub": [("msgs_per_s", "msg/s", "higher")],
    "pubsub1": [("msgs_per_s", "msg/s", "higher")],
    "pubsub4": [("msgs_per_s", "msg/s", "higher")],
    "reqrep": [("p50_us", "p50 us", "lower"), ("p99_us", "p99 us", "lower")],
    "leaf1": [("msgs_per_s", "msg/s", "higher")],
    "leaf4": [("msgs_per_s", "msg/s", "higher")],
    "route1": [("msgs_per_s", "msg/s", "higher")],
    "route4": [("msgs_per_s", "msg/s", "higher")],
    "gw1": [("msgs_per_s", "msg/s", "higher")],
    "gwreq": [("p50_us", "p50 us", "lower"), ("p99_us", "p99 us", "lower"), ("rtt_per_s", "req/s", "higher")],
    "js_sync": [("msgs_per_s", "msg/s", "higher"), ("p50_us", "p50 us", "lower")],
    "js_async": [("msgs_per_s", "msg/s", "higher")],
    "kv_put": [("msgs_per_s", "put/s", "higher"), ("p50_us", "p50 us", "lower")],
    "kv_get": [("msgs_per_s", "get/s", "higher"), ("p50_us", "p50 us", "lower")],
    "js_source_lag": [("p50_us", "p50 lag us", "lower"), ("p90_us", "p90 lag us", "lower"),
                      ("p99_us", "p99 lag us", "lower")],
    "js_source_catchup": [("msgs_per_s", "msg/s", "higher")],
    "js_leaf_source_lag": [("p50_us", "p50 lag us", "lower"), ("p90_us", "p90 lag us", "lower"),
                           ("p99_us", "p99 lag us", "lower")],
    "js_leaf_source_catchup": [("msgs_per_s", "msg/s", "higher")],
    "idle": [("kib_per_conn", "KiB/conn", "lower"), ("held", "conns held", "higher")],
}


def _busiest_generator(m: dict[str, Any]) -> float | None:
    cpus = [float(m[k]) for k in GEN_CPU_KEYS if k in m and not math.isnan(m[k])]
    return max(cpus) if cpus else None


def summarize(results: list[dict[str, Any]], labels: list[str], cfg: BenchConfig) -> list[dict[str, Any]]:
    rows = []
    for scen, size in scenario_sizes(cfg):
        for key, unit, better in METRICS[scen]:
            row: dict[str, Any] = {
                "scenario": scen,
                "size": size,
                "metric": key,
                "unit": unit,
                "better": better,
            }
            med: dict[str, float | None] = {}
            spread: dict[str, list[float]] = {}
            errors: dict[str, list[str]] = {}
            gen_cpu: dict[str, float | None] = {}
            for label in labels:
                runs = [
                    r for r in results if r["server"] == label and r["scenario"] == scen and r["size"] == size
                ]
                ok = [r["metrics"] for r in runs if r["metrics"] is not None]
                vals = [v for v in (float(m[key]) for m in ok) if not math.isnan(v)]
                med[label] = statistics.median(vals) if vals else None
                spread[label] = [min(vals), max(vals)] if vals else []
                errors[label] = [r["error"] for r in runs if r["error"]]
                busiest = [c for c in map(_busiest_generator, ok) if c is not None]
                gen_cpu[label] = statistics.median(busiest) if busiest else None
            row["median"] = med
            row["range"] = spread
            row["errors"] = errors
            row["generator_cpu"] = gen_cpu  # busiest load-generator process, share of one core
            if len(labels) == 2:
                a, b = med[labels[0]], med[labels[1]]
                row["ratio"] = (b / a) if a and b is not None else None
            rows.append(row)
    return rows


def run_suite(
    url: str,
    cfg: BenchConfig,
    server_pid: int | None = None,
    label: str = "server",
    log: Callable[[str], None] = lambda s: None,
) -> dict[str, Any]:
    """Benchmark one server at `url`. Returns {"config", "servers", "results", "summary"}."""
    ep = parse_url(url)
    try:  # fail fast, with one clear message, when nothing NATS-like is listening there
        sock, _buf = nats_connect(ep, "bench-preflight", timeout=5.0)
        sock.close()
    except (OSError, BenchError, ValueError) as exc:
        raise BenchError(f"cannot connect to {url}: {exc}") from exc
    if server_pid is None and "idle" in cfg.scenarios:
        log("idle: skipped (needs the server PID: use --compare or --server-pid)")
        cfg = replace(cfg, scenarios=[s for s in cfg.scenarios if s != "idle"])
    skipped = [s for s in cfg.scenarios if s in COMPARE_ONLY]
    if skipped:
        log(f"{', '.join(skipped)}: skipped (they need servers with a leafnode port or a cluster: use --compare)")
        cfg = replace(cfg, scenarios=[s for s in cfg.scenarios if s not in COMPARE_ONLY])
    results: list[dict[str, Any]] = []
    for scen, size in scenario_sizes(cfg):
        if scen == "idle":
            continue
        for run in range(cfg.runs):
            job = lambda scen=scen, size=size: run_one(ep, scen, size, cfg, server_pid, log)
            record_run(results, label, scen, size, run, cfg, job, log)
    if "idle" in cfg.scenarios:
        # Once, and last: 5000 closed connections leave state behind that slows some servers down afterwards
        # (nats-server keeps a ring of closed-connection records), and a server keeps memory it freed, so
        # repeat runs against one process under-report. --compare starts a fresh server for every idle run.
        assert server_pid is not None
        log("idle: measured once, after the other scenarios (for a clean number use a fresh server)")
        job = lambda: run_idle(ep, server_pid, cfg.idle_conns, log)
        record_run(results, label, "idle", None, 0, replace(cfg, runs=1), job, log)
    return {
        "config": _config_dict(cfg),
        "servers": {label: {"url": url, "pid": server_pid}},
        "results": results,
        "summary": summarize(results, [label], cfg),
    }


def run_compare(
    cfg: BenchConfig,
    nats_cmd: Sequence[str],
    hub_cmd: Sequence[str],
    log: Callable[[str], None] = lambda s: None,
) -> dict[str, Any]:
    """Start nats-server and the hub, alternate runs between them, and return the same report shape."""
    labels = ["nats-server", "hub"]
    cmds = {"nats-server": list(nats_cmd), "hub": list(hub_cmd)}
    results: list[dict[str, Any]] = []
    # Commands as recorded in the report: paths relative to the working directory, so a report kept in the
    # repository names no machine's paths.
    servers_info: dict[str, dict[str, Any]] = {
        k: {"cmd": shlex.join(os.path.relpath(a) if os.path.isabs(a) and os.path.exists(a) else a for a in v)}
        for k, v in cmds.items()
    }

    def order(run: int) -> list[str]:  # ABBA-style alternation so drift does not favour one side
        return labels if run % 2 == 0 else labels[::-1]

    net = [(s, z) for s, z in scenario_sizes(cfg) if s != "idle" and s not in COMPARE_ONLY]
    if net:
        servers: dict[str, ServerProcess] = {}
        try:
            for label in labels:
                servers[label] = ServerProcess(label, cmds[label]).start()
                log(f"started {label} pid {servers[label].pid} on {servers[label].url}")
            for scen, size in net:
                for run in range(cfg.runs):
                    for label in order(run):
                        srv = servers[label]
                        if not srv.alive():
                            status = srv.proc.returncode if srv.proc else "?"
                            log(f"{label} died (status {status}); restarting")
                            log(srv.log_tail())
                            srv.stop()
                            srv.start()
                        ep = parse_url(srv.url)
                        pid = srv.pid
                        job = lambda ep=ep, pid=pid, scen=scen, size=size: run_one(
                            ep, scen, size, cfg, pid, log
                        )
                        record_run(results, label, scen, size, run, cfg, job, log)
        finally:
            for srv in servers.values():
                srv.stop()
    if any(s in LEAF_SCENARIOS for s in cfg.scenarios):
        results += run_compare_leaf(cfg, cmds, log)
    if any(s in ROUTE_SCENARIOS for s in cfg.scenarios):
        results += run_compare_route(cfg, cmds, log)
    if any(s in LEAF_JS_SCENARIOS for s in cfg.scenarios):
        results += run_compare_js_leaf(cfg, cmds, log)
    if any(s in GATEWAY_SCENARIOS for s in cfg.scenarios):
        results += run_compare_gateway(cfg, cmds, run_reqrep, log)
    if "idle" in cfg.scenarios:
        # a fresh server per idle run: freed memory a runtime keeps around would hide the growth otherwise
        for run in range(cfg.runs):
            for label in order(run):
                with ServerProcess(label, cmds[label]).start() as srv:
                    ep = parse_url(srv.url)
                    pid = srv.pid
                    job = lambda ep=ep, pid=pid: run_idle(ep, pid, cfg.idle_conns, log)
                    record_run(results, label, "idle", None, run, cfg, job, log)
    return {
        "config": _config_dict(cfg),
        "servers": servers_info,
        "results": results,
        "summary": summarize(results, labels, cfg),
    }


def _config_dict(cfg: BenchConfig) -> dict[str, Any]:
    d = asdict(cfg)
    d["cpus"] = os.cpu_count()
    d["python"] = sys.version.split()[0]
    return d


# -------------------------------------------------------------------------------------------------- output


def fmt_value(metric: str, v: float | None) -> str:
    if v is None:
        return "FAILED"
    if metric == "msgs_per_s":
        return fmt_rate(v)
    if metric == "held":
        return f"{v:.0f}"
    return f"{v:.1f}"


def format_table(report: dict[str, Any]) -> str:
    labels = list(report["servers"])
    compare = len(labels) == 2
    head = ["scenario", "size", "metric"] + labels
    head += ["hub/nats", "better"] if compare else ["min..max", "better"]
    head.append("gen cpu")
    rows = [head]
    for r in report["summary"]:
        size = f"{r['size']}B" if r["size"] else "-"
        cells = [r["scenario"], size, r["unit"]] + [fmt_value(r["metric"], r["median"][lb]) for lb in labels]
        if compare:
            cells.append(f"{r['ratio']:.2f}x" if r.get("ratio") is not None else "-")
        else:
            rng = r["range"][labels[0]]
            cells.append(
                f"{fmt_value(r['metric'], rng[0])}..{fmt_value(r['metric'], rng[1])}" if rng else "-"
            )
        cells.append(r["better"])
        gen = [r.get("generator_cpu", {}).get(lb) for lb in labels]
        cells.append("/".join(f"{g:.0%}" for g in gen if g is not None) or "-")
        rows.append(cells)
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = []
    for n, row in enumerate(rows):
        lines.append(
            "  ".join(
                c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    runs = report["config"]["runs"]
    lines.append(
        f"(medians of {runs} run(s); duration {report['config']['duration']} s per run; gen cpu = busiest "
        f"load-generator process, share of one core{' (nats-server/hub runs)' if compare else ''})"
    )
    if labels == ["null-server"]:
        lines.append(
            "self-check: pub = one publisher process pushing into a discarding null server; pubsub1 = one "
            "subscriber process counting a null server's MSG stream. Both are lower bounds on what the "
            "generator can do (the null server is Python too); a real server's numbers should sit well below."
        )
    noisy = [r for r in report["results"] if r["metrics"] and r["metrics"].get("other_cpu", 0) >= NOISY_CPU]
    if noisy:
        lines.append(
            f"warning: during {len(noisy)} of {len(report['results'])} runs other processes used >= "
            f"{NOISY_CPU} cores of this {os.cpu_count()}-core machine; those numbers are noisy"
        )
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------- CLI


def _size(text: str) -> int:
    t = text.lower().removesuffix("b")
    mult = 1024 if t.endswith("k") else 1
    n = int(t.removesuffix("k")) * mult
    if n < 1:
        raise ValueError(f"payload size must be >= 1: {text}")
    return n


def _scenario(text: str) -> str:
    if text not in SCENARIOS:
        raise ValueError(f"unknown scenario {text!r} (choose from {', '.join(SCENARIOS)})")
    return text


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except empty ones (None/False)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default in (None, False):
            return action.help or ""
        return super()._get_help_string(action) or ""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = _HelpFormatter
    parser.epilog = "Scenarios, load mix, method and measured numbers: docs/benchmarks.md"
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--url", default="nats://127.0.0.1:4222", help="benchmark the server at this URL")
    target.add_argument(
        "--compare", action="store_true", help="start nats-server and the hub on free ports and compare them"
    )
    target.add_argument(
        "--self-check",
        action="store_true",
        help="measure the load generator's own ceilings (pub, pubsub1) against a built-in null server",
    )
    parser.add_argument(
        "--scenarios",
        type=comma_list(_scenario),
        default=",".join(SCENARIOS),
        help="comma list of scenarios",
    )
    parser.add_argument(
        "--sizes", type=comma_list(_size), default="16,128,1024", help="nominal payload sizes, bytes"
    )
    parser.add_argument("--duration", type=float, default=2.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=0.5, help="unmeasured seconds before each run")
    parser.add_argument("--runs", type=int, default=3, help="runs per scenario/size (per server)")
    parser.add_argument("--publishers", type=int, default=1, help="publisher processes per throughput run")
    parser.add_argument(
        "--idle-conns", type=int, default=5000, help="connections opened by the idle scenario"
    )
    parser.add_argument(
        "--window-mb", type=float, default=8.0, help="publisher->subscriber credit window, MiB"
    )
    parser.add_argument("--batch-kib", type=int, default=512, help="size of each pre-built PUB batch, KiB")
    parser.add_argument(
        "--reply-fraction", type=float, default=0.25, help="share of frames with a reply subject"
    )
    parser.add_argument("--seed", type=int, default=1, help="seed for the load mix")
    parser.add_argument("--server-pid", type=int, default=None, help="PID of the --url server (enables idle)")
    parser.add_argument(
        "--nats-server", default=None, help="nats-server binary for --compare (default: auto)"
    )
    parser.add_argument("--hub-cmd", default=None, help=argparse.SUPPRESS)  # e.g. "nats-server -p {port}"
    parser.add_argument("--json", metavar="FILE", default=None, help="also write the full results as JSON")
    parser.add_argument("-q", "--quiet", action="store_true", help="no per-run progress lines")
    bench_edge.add_arguments(parser)  # --edge, --forward: the MicroPython edge benches
    bench_forward.add_arguments(parser)


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    if args.duration <= 0 or args.warmup < 0 or args.runs < 1 or args.publishers < 1 or args.idle_conns < 1:
        raise BenchError("--duration must be > 0, --warmup >= 0, --runs/--publishers/--idle-conns >= 1")
    mix = LoadMix(reply_fraction=args.reply_fraction, batch_bytes=args.batch_kib * 1024)
    return BenchConfig(
        scenarios=list(dict.fromkeys(args.scenarios)),
        sizes=list(dict.fromkeys(args.sizes)),
        duration=args.duration,
        warmup=args.warmup,
        runs=args.runs,
        publishers=args.publishers,
        idle_conns=args.idle_conns,
        window_bytes=int(args.window_mb * 1024 * 1024),
        seed=args.seed,
        mix=mix,
    )


def measure(args: argparse.Namespace, log: Callable[[str], None]) -> dict[str, Any]:
    """The core scenarios against --url, --compare or --self-check, as the options say."""
    cfg = config_from_args(args)
    soft, hard = raise_nofile_limit()  # before starting servers, so they inherit it too
    if "idle" in cfg.scenarios and soft < cfg.idle_conns + 256:
        log(f"note: RLIMIT_NOFILE is {soft} (hard {hard}); idle may open fewer than {cfg.idle_conns}")
    if args.compare:
        needs.nats_server("natsedge bench --compare", "bench", args.nats_server)
        binary = find_nats_server(args.nats_server)
        js = any(s in JS_SCENARIOS or s in LEAF_JS_SCENARIOS for s in cfg.scenarios)
        hub_cmd = shlex.split(args.hub_cmd) if args.hub_cmd else default_hub_cmd(js)
        log(f"nats-server: {binary} ({nats_server_version(binary)}); hub: {shlex.join(hub_cmd)}")
        return run_compare(cfg, default_nats_cmd(binary, js), hub_cmd, log)
    if args.self_check:
        return run_self_check(cfg, log)
    return run_suite(args.url, cfg, args.server_pid, "server", log)


def run(args: argparse.Namespace) -> int:
    if getattr(args, "edge", False):
        return bench_edge.run(args)
    if getattr(args, "forward", False):
        return bench_forward.run(args)
    log = progress_log(args.quiet)
    rc, report = run_and_report("natsedge bench", lambda: measure(args, log), format_table, args.json, log)
    if rc:
        return rc
    failed = [r for r in report["results"] if r["error"]]
    if failed:
        print(f"{len(failed)} run(s) failed; see the progress log or --json for details", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    _parser = argparse.ArgumentParser(prog="natsedge bench")
    add_arguments(_parser)
    sys.exit(run(_parser.parse_args()))
