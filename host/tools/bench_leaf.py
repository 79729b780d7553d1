"""The leafnode scenarios of `natsedge bench --compare` (docs/benchmarks.md, "Leafnode").

``leaf1`` / ``leaf4``: a leafnode connection publishes into the server and 1 or 4 client subscribers count what
the server delivers; reported is msgs/s delivered, summed over the subscribers, as for ``pubsub1``/``pubsub4``.

Both servers get the same extra config file, ``leafnodes { listen: 127.0.0.1:<free port> }`` (nats-server
syntax, which the hub reads too; the command-line flags of the other scenarios still set the client port).
The leaf is this bench on a raw socket: it reads the leafnode port's INFO, sends a leaf CONNECT (no ``lang``
field, or nats-server takes it for a client on the wrong port) and PING, then waits until the server has
announced the subscribers' interest with ``LS+`` (a leaf only forwards what the other side is interested in, and
a server only announces interest that exists).  Then it sends the core scenarios' varied load (``build_batches``:
subjects ``bench.s.0..7``, jittered sizes, unique reply subjects on a share of frames) with ``PUB`` turned into
``LMSG``, under the same PING/PONG and credit-window flow control as the core publisher.  Subscribers are the
core bench's `_subscriber` workers, and every subscriber's total must equal what the leaf published.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from host.tools.bench import (
    LOCALHOST,
    MAX_PINGS_OUT,
    SUB_SUBJECTS,
    Batch,
    BenchConfig,
    BenchError,
    Endpoint,
    PongTracker,
    ServerProcess,
    WorkerSpec,
    _cases,
    _check_err,
    _keep_big_allocations_in_heap,
    _mp_context,
    _record,
    _recv_more,
    _run_workers,
    _sleep_until,
    _subscriber,
    _window_metrics,
    build_batches,
    free_port,
    parse_url,
)

LEAF_SUBSCRIBERS: dict[str, int] = {"leaf1": 1, "leaf4": 4}
LEAF_VERSION = "2.15.1"  # what the leaf CONNECT claims; nats-server checks it against leafnodes.min_version only


def leaf_subjects(nsubs: int) -> list[bytes]:
    """The subscribers' subjects: the same wildcard shapes as pubsub1/pubsub4, each matching every message."""
    return [SUB_SUBJECTS[i % len(SUB_SUBJECTS)] for i in range(nsubs)]


def leaf_batches(size: int, cfg: BenchConfig, seed: int, tag: str, epoch: bytearray) -> list[Batch]:
    """The core publisher's batches with every ``PUB`` verb turned into ``LMSG`` (same argument syntax).

    Payloads, subjects and reply subjects are lower-case, so ``PUB `` only occurs as a verb, and each one sits
    whole in a static part (the shared epoch bytearray only ever holds hex digits).
    """
    out = []
    for b in build_batches(size, cfg.mix, seed, tag, epoch):
        parts = [p if p is epoch else bytes(p).replace(b"PUB ", b"LMSG ") for p in b.parts]
        out.append(replace(b, parts=parts, nbytes=b.nbytes + b.msgs))
    return out


def leaf_connect_frame(name: str) -> bytes:
    opts = {"version": LEAF_VERSION, "name": name, "headers": True, "protocol": 1, "compress_mode": "off"}
    return b"CONNECT " + json.dumps(opts, separators=(",", ":")).encode() + b"\r\n"


def leaf_connect(
    host: str, port: int, name: str, interest: Sequence[bytes], timeout: float = 20.0
) -> tuple[socket.socket, bytearray]:
    """Connect as a leaf and wait until the server has sent ``LS+`` for every subject in `interest`.

    Connection refusals are retried until `timeout` (a server may open its leafnode port after its client port;
    20 s stays below the orchestrator's READY_TIMEOUT, so this error is the one reported).
    Returns (socket, leftover input).
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            sock = socket.create_connection((host, port), timeout=5.0)
            break
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise BenchError(f"nothing listens on leafnode port {host}:{port}") from None
            time.sleep(0.05)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buf = bytearray()
        while b"\r\n" not in buf:
            _recv_more(sock, buf, "the leafnode INFO")
        end = buf.index(b"\r\n")
        if not buf.startswith(b"INFO "):
            raise BenchError(f"unexpected greeting on leafnode port {port}: {bytes(buf[:120])!r}")
        if json.loads(bytes(buf[5:end])).get("tls_required"):
            raise BenchError(f"leafnode port {port} requires TLS; the bench speaks plain TCP only")
        del buf[: end + 2]
        sock.sendall(leaf_connect_frame(name) + b"PING\r\n")
        missing = set(interest)
        pong = False
        while missing or not pong:
            end = buf.find(b"\r\n")
            if end < 0:
                if time.monotonic() > deadline:
                    want = b", ".join(sorted(missing)).decode()
                    raise BenchError(f"leaf {name}: the server never announced interest ({want or 'PONG'})")
                sock.settimeout(max(0.05, deadline - time.monotonic()))
                _recv_more(sock, buf, "LS+ interest")
                _check_err(buf)
                continue
            line = bytes(buf[:end])
            del buf[: end + 2]
            if line.startswith(b"LS+ "):
                missing.discard(line[4:].split(b" ")[0])
            elif line == b"PING":
                sock.sendall(b"PONG\r\n")
            elif line == b"PONG":
                pong = True
        return sock, buf
    except BaseException:
        sock.close()
        raise


def _leaf_publisher(
    ctl: Any,
    leaf: Endpoint,
    idx: int,
    size: int,
    cfg: BenchConfig,
    published: Any,
    delivered: Any,
    nsubs: int,
) -> dict[str, Any]:
    """One leaf connection sending LMSG batches until the window ends (credit-windowed like `_publisher`)."""
    _keep_big_allocations_in_heap()
    epoch = bytearray(b"%08x" % 0)
    batches = leaf_batches(size, cfg, cfg.seed * 7919 + idx * 131 + size, f"l{idx}b", epoch)
    frames = sum(b.msgs for b in batches)
    mean_frame = sum(b.nbytes for b in batches) / frames
    mean_payload = sum(b.payload_bytes for b in batches) / frames
    # MSG frames at the subscribers are about as long as our LMSG frames (sid instead of the verb's extra bytes)
    window_msgs = max(2 * max(b.msgs for b in batches), int(cfg.window_bytes / (mean_frame + 8)))
    sock, buf = leaf_connect(leaf.host, leaf.port, f"bench-leaf-{idx}", leaf_subjects(nsubs))
    sock.settimeout(30.0)
    pongs = PongTracker(sock, buf)
    ctl.send(("ready", {"mean_payload": mean_payload, "mean_frame": mean_frame}))
    t_go, t_start, t_end = ctl.recv()
    _sleep_until(t_go)
    sent = sent0 = cycle = 0
    t0 = t1 = cpu0 = credit_waits = 0.0
    measuring = done = False
    grace = t_end + 10.0
    while not done:
        cycle += 1
        epoch[:] = b"%08x" % (cycle & 0xFFFFFFFF)
        for batch in batches:
            data = b"".join(batch.parts)
            if sum(published) - min(delivered[:nsubs]) > window_msgs:
                w0 = now = time.monotonic()
                while sum(published) - min(delivered[:nsubs]) > window_msgs:
                    now = time.monotonic()
                    if measuring and now >= t_end:
                        break
                    if now > grace:
                        raise BenchError("subscribers stopped consuming (credit window never reopened)")
                    time.sleep(0.0002)
                credit_waits += min(now, t_end) - w0
                if measuring and now >= t_end:
                    t1, done = now, True
                    break
            sock.sendall(data)
            sent += batch.msgs
            published[idx] = sent
            pongs.outstanding += 1
            pongs.wait_below(MAX_PINGS_OUT)
            now = time.monotonic()
            if not measuring and now >= t_start:
                measuring = True
                t0, sent0, cpu0, credit_waits = now, sent, time.process_time(), 0.0
            elif measuring and now >= t_end:
                t1, done = now, True
                break
    cpu = time.process_time() - cpu0
    pongs.wait_below(0)  # the server has routed everything we sent before the subscribers are told to stop
    sock.close()
    return {
        "msgs": sent - sent0,
        "dt": t1 - t0,
        "cpu": cpu / (t1 - t0),
        "credit_wait": credit_waits / (t1 - t0),
        "mean_payload": mean_payload,
        "mean_frame": mean_frame,
        "total_sent": sent,
    }


def run_leaf(
    ep: Endpoint, leaf: Endpoint, scenario: str, size: int, cfg: BenchConfig, server_pid: int | None = None
) -> dict[str, Any]:
    """One leaf run: `cfg.publishers` leaf connections on `leaf`, LEAF_SUBSCRIBERS[scenario] clients on `ep`."""
    nsubs = LEAF_SUBSCRIBERS[scenario]
    ctx = _mp_context()
    delivered = ctx.RawArray("q", nsubs)
    published = ctx.RawArray("q", cfg.publishers)
    stop = ctx.RawValue("b", 0)
    specs = [
        WorkerSpec(f"subscriber-{i}", _subscriber, (ep, i, subj, delivered, published, stop), passive=True)
        for i, subj in enumerate(leaf_subjects(nsubs))
    ]
    specs += [
        WorkerSpec(f"leaf-publisher-{i}", _leaf_publisher, (leaf, i, size, cfg, published, delivered, nsubs))
        for i in range(cfg.publishers)
    ]
    results, _ready, window = _run_workers(specs, cfg, server_pid, stop)
    subs, pubs = results[:nsubs], results[nsubs:]
    for i, sub in enumerate(subs):
        if sub["total"] != sub["expected"]:
            what = "lost" if sub["total"] < sub["expected"] else "extra"
            raise BenchError(
                f"subscriber {i} received {sub['total']} messages but the leaf published {sub['expected']} "
                f"({what}: {abs(sub['expected'] - sub['total'])})"
            )
    rates = [s["msgs"] / s["dt"] for s in subs]
    mean_payload = statistics.fmean(p["mean_payload"] for p in pubs)
    metrics: dict[str, Any] = {
        "msgs_per_s": sum(rates),
        "payload_mb_per_s": sum(rates) * mean_payload / 1e6,
        "mean_payload": mean_payload,
        "offered_msgs_per_s": sum(p["msgs"] / p["dt"] for p in pubs),
        "publisher_cpu": max(p["cpu"] for p in pubs),
        "publisher_credit_wait": max(p["credit_wait"] for p in pubs),
        "subscriber_cpu": max(s["cpu"] for s in subs),
        "per_subscriber_msgs_per_s": rates,
    }
    metrics.update(_window_metrics(window, [r["cpu"] for r in results]))
    return metrics


class LeafServerProcess(ServerProcess):
    """A ServerProcess that also listens for leafnodes: ``-c FILE`` with ``leafnodes { listen: ... }`` is appended
    to its command line (a fresh free port on every start)."""

    def __init__(self, label: str, cmd: Sequence[str]) -> None:
        super().__init__(label, cmd)
        self.leaf_port = 0
        self._conf_dir = tempfile.mkdtemp(prefix="natsedge-bench-leaf-")
        self.conf_path = os.path.join(self._conf_dir, "leaf.conf")

    @property
    def leaf(self) -> Endpoint:
        return Endpoint(LOCALHOST, self.leaf_port)

    def argv(self) -> list[str]:
        return super().argv() + ["-c", self.conf_path]

    def start(self, timeout: float = 20.0) -> LeafServerProcess:
        self.leaf_port = free_port()
        Path(self.conf_path).write_text(f"leafnodes {{ listen: {LOCALHOST}:{self.leaf_port} }}\n")
        super().start(timeout)
        return self

    def close(self) -> None:
        """Stop the server and remove the config directory (`stop` alone allows a restart)."""
        self.stop()
        shutil.rmtree(self._conf_dir, ignore_errors=True)


def run_compare_leaf(
    cfg: BenchConfig, cmds: dict[str, list[str]], log: Callable[[str], None] = lambda s: None
) -> list[dict[str, Any]]:
    """The leaf scenarios of `run_compare`: both servers started once with a leafnode port, runs alternating
    ABBA between them. Returns result entries in `run_compare`'s shape."""
    labels = list(cmds)
    cases = [(s, z) for s, z in _cases(cfg) if s in LEAF_SUBSCRIBERS]
    results: list[dict[str, Any]] = []
    servers: dict[str, LeafServerProcess] = {}
    try:
        for label in labels:
            servers[label] = LeafServerProcess(label, cmds[label])
            servers[label].start()
            log(
                f"started {label} pid {servers[label].pid} on {servers[label].url}, leafnodes on port "
                f"{servers[label].leaf_port}"
            )
        for scen, size in cases:
            assert size is not None
            for run in range(cfg.runs):
                for label in labels if run % 2 == 0 else labels[::-1]:
                    srv = servers[label]
                    if not srv.alive():
                        log(f"{label} died; restarting\n{srv.log_tail()}")
                        srv.stop()
                        srv.start()
                    ep, leaf, pid = parse_url(srv.url), srv.leaf, srv.pid
                    job = lambda ep=ep, leaf=leaf, pid=pid, scen=scen, size=size: run_leaf(
                        ep, leaf, scen, size, cfg, pid
                    )
                    _record(results, label, scen, size, run, cfg, job, log)
    finally:
        for srv in servers.values():
            srv.close()
    return results
