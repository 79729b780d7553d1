"""JetStream and KV scenarios of `natsedge bench` (docs/benchmarks.md, "JetStream").

Both servers run with JetStream on (`-js -sd <tmp>`, file storage). The load generator is this process, on raw
sockets, like the core scenarios:

* ``js_sync``: publish one message with a reply subject, wait for its PubAck, repeat (what ``js.publish()`` does);
  throughput and p50 round trip.
* ``js_async``: pipelined publishes with at most ``WINDOW`` PubAcks outstanding (what ``js.publish_async()`` does);
  acknowledged messages per second.
* ``kv_put``: KV puts (a publish to ``$KV.BENCH.<key>`` waiting for its PubAck) over 1,000 keys.
* ``kv_get``: KV gets by direct get of the last message of a key (``$JS.API.DIRECT.GET.KV_BENCH.$KV.BENCH.<key>``).
* ``js_source_lag``: a stream ``BENCH_SRC`` sources the origin ``BENCH`` on the same server and republishes what it
  stores to ``bench.lag.>``; publishes at a steady ``LAG_RATE`` (well below saturation, so this is lag and not a
  backlog) each carry their index; per message, the time from the publisher's send to the republish from the
  sourcing stream (p50/p90/p99). Every message must arrive once, in order.
* ``js_source_catchup``: ``CATCHUP_MSGS`` messages already in the origin, then ``BENCH_SRC`` created sourcing it
  (republishing headers only, to count arrivals cheaply); messages per second from the create request until the
  last one is stored, checked against the stream's message count.

Load variation: 8 stream subjects or 1,000 keys, payload sizes jittered around the nominal size, every request a
unique reply subject, payload bytes from a random pool. A PubAck with an error, or a get that finds nothing,
fails the run.
"""

from __future__ import annotations

import json
import random
import select
import statistics
import time
from collections.abc import Callable
from typing import Any

from host.tools.benchlib import (
    BenchConfig,
    BenchError,
    Endpoint,
    check_err,
    jitter_size,
    nats_connect,
    payload_pool,
    proc_cpu_seconds,
    recv_more,
    wait_pong,
)

STREAM = "BENCH"
SOURCE = "BENCH_SRC"  # the stream sourcing STREAM in the js_source_* scenarios
LAG_RATE = 1000  # msgs/s published in js_source_lag: steady and moderate, so the lag is not a queue's wait
LAG_SUBJECT = b"bench.lag.>"  # SOURCE republishes here; outside the origin's subjects, so nothing loops
CATCHUP_MSGS = 20_000  # origin backlog in js_source_catchup (the size of docs/jetstream.md's hand-made table)
DRAIN_TIMEOUT = 30.0  # s without progress before a sourcing run is declared stuck
BUCKET = "BENCH"
KEYS = 1000
SUBJECTS = 8
WINDOW = 1000  # async PubAcks outstanding, as a pipelining client keeps (nats-py allows 4000)
INBOX = b"_INBOX.bjs."
ACK_MARK = b'{"stream"'
ERR_MARK = b'"error"'


class Conn:
    """One client connection with a wildcard inbox; reads whole MSG/HMSG frames."""

    def __init__(self, ep: Endpoint, inbox: bytes = INBOX) -> None:
        self.sock, self.buf = nats_connect(ep, "bench-js", headers=True)
        self.inbox = inbox  # distinct per connection when two servers share interest over a leafnode
        self.sock.sendall(b"SUB " + inbox + b"* 1\r\n")
        self.n = 0

    def close(self) -> None:
        self.sock.close()

    def reply(self) -> bytes:
        self.n += 1
        return self.inbox + str(self.n).encode()

    def read_msg(self, timeout: float = 5.0) -> tuple[bytes, bytes | None, bytes]:
        """The next message: (subject, header block or None, payload). Answers PINGs on the way."""
        self.sock.settimeout(timeout)
        while True:
            msg = self.take_msg()
            if msg is not None:
                return msg
            self._more()

    def take_msg(self) -> tuple[bytes, bytes | None, bytes] | None:
        """The next whole message already received, or None; answers PINGs and skips other control lines."""
        buf = self.buf
        while True:
            end = buf.find(b"\r\n")
            if end < 0:
                return None
            line = bytes(buf[:end])
            if line.startswith(b"PING"):
                self.sock.sendall(b"PONG\r\n")
                del buf[: end + 2]
                continue
            if line.startswith((b"PONG", b"+OK", b"INFO")):
                del buf[: end + 2]
                continue
            if line.startswith(b"-ERR"):
                check_err(buf)
            args = line.split()
            if args[0] == b"HMSG":
                hlen, tlen = int(args[-2]), int(args[-1])
            elif args[0] == b"MSG":
                hlen, tlen = 0, int(args[-1])
            else:
                raise BenchError(f"unexpected frame from server: {line[:120]!r}")
            if len(buf) < end + 2 + tlen + 2:
                return None
            body = bytes(buf[end + 2 : end + 2 + tlen])
            del buf[: end + 2 + tlen + 2]
            return args[1], (body[:hlen] if hlen else None), body[hlen:]

    def _more(self) -> None:
        try:
            recv_more(self.sock, self.buf, "a JetStream reply")
        except TimeoutError:
            raise BenchError("no reply from the server within 5 s (is JetStream enabled?)") from None

    def request(self, subject: bytes, payload: bytes = b"") -> tuple[bytes | None, bytes]:
        self.sock.sendall(b"PUB %s %s %d\r\n%s\r\n" % (subject, self.reply(), len(payload), payload))
        _subj, hdr, body = self.read_msg()
        return hdr, body

    def api(self, subject: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        _, payload = self.request(subject.encode(), json.dumps(body).encode() if body is not None else b"")
        return json.loads(payload)


def setup(conn: Conn, scenario: str) -> None:
    """A fresh file-storage stream (or KV bucket) for this run; the js_source_* sourcing stream is made later."""
    if scenario.startswith("js_"):
        conn.api(f"$JS.API.STREAM.DELETE.{SOURCE}")
        conn.api(f"$JS.API.STREAM.DELETE.{STREAM}")
        cfg: dict[str, Any] = {"name": STREAM, "subjects": ["bench.js.>"], "storage": "file",
                               "max_bytes": 1 << 30, "discard": "old"}
        resp = conn.api(f"$JS.API.STREAM.CREATE.{STREAM}", cfg)
    else:
        conn.api(f"$JS.API.STREAM.DELETE.KV_{BUCKET}")
        cfg = {"name": f"KV_{BUCKET}", "subjects": [f"$KV.{BUCKET}.>"], "storage": "file", "max_msgs_per_subject": 1,
               "discard": "new", "allow_rollup_hdrs": True, "deny_delete": True, "allow_direct": True,
               "duplicate_window": 120_000_000_000}
        resp = conn.api(f"$JS.API.STREAM.CREATE.KV_{BUCKET}", cfg)
    if "error" in resp:
        raise BenchError(f"stream create failed: {resp['error']}")


def js_frames(scenario: str, size: int, cfg: BenchConfig) -> list[tuple[bytes, bytes]]:
    """(subject, payload) pairs, cycled by the generators."""
    rng = random.Random(cfg.seed)
    pool = payload_pool(rng)
    out = []
    for i in range(4096):
        n = jitter_size(rng, size, cfg.mix)
        off = rng.randrange(len(pool) - n) if n < len(pool) else 0
        if scenario.startswith("js_"):
            subject = b"bench.js.s%d" % (i % SUBJECTS)
        else:
            subject = b"$KV.%s.k%d" % (BUCKET.encode(), rng.randrange(KEYS))
        out.append((subject, pool[off : off + n]))
    return out


def _check_ack(body: bytes) -> None:
    if not body.startswith(ACK_MARK):
        raise BenchError(f"publish failed: {body[:200]!r}")


def _timed_requests(cfg: BenchConfig, request: Callable[[int], None]) -> dict[str, Any]:
    """Call `request(i)` for i = 0, 1, ... until warmup + duration is over; rate and round-trip percentiles of the
    requests started after the warmup."""
    lat: list[float] = []
    measure_from = time.perf_counter() + cfg.warmup
    end = measure_from + cfg.duration
    i = 0
    while True:
        t0 = time.perf_counter()
        if t0 >= end:
            break
        request(i)
        i += 1
        if t0 >= measure_from:
            lat.append(time.perf_counter() - t0)
    if not lat:
        raise BenchError("no request completed in the measured window")
    lat.sort()
    return {
        "msgs_per_s": len(lat) / cfg.duration,
        "p50_us": statistics.median(lat) * 1e6,
        "p99_us": lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1e6,
    }


def run_sync(conn: Conn, frames: list[tuple[bytes, bytes]], cfg: BenchConfig) -> dict[str, Any]:
    """One publish at a time, each waiting for its PubAck (js_sync, kv_put)."""

    def publish(i: int) -> None:
        subject, payload = frames[i % len(frames)]
        conn.sock.sendall(b"PUB %s %s %d\r\n%s\r\n" % (subject, conn.reply(), len(payload), payload))
        _check_ack(conn.read_msg()[2])

    return _timed_requests(cfg, publish)


def run_async(conn: Conn, frames: list[tuple[bytes, bytes]], cfg: BenchConfig) -> dict[str, Any]:
    """Pipelined publishes, at most WINDOW PubAcks outstanding; counts PubAcks received in the window."""
    sock = conn.sock
    sock.setblocking(False)
    buf = bytes(conn.buf)
    conn.buf = bytearray()
    tail = b""
    outstanding = 0
    acked = 0
    counted_at_start = -1
    i = 0
    nframes = len(frames)
    start = time.perf_counter()
    measure_from = start + cfg.warmup
    end = measure_from + cfg.duration
    pending_out = b""
    try:
        while True:
            now = time.perf_counter()
            if counted_at_start < 0 and now >= measure_from:
                counted_at_start = acked
                measure_from = now
            if now >= end:
                break
            if not pending_out and outstanding < WINDOW:
                parts = []
                for _ in range(min(WINDOW - outstanding, 128)):
                    subject, payload = frames[i % nframes]
                    i += 1
                    parts.append(b"PUB %s %s%d %d\r\n%s\r\n" % (subject, INBOX, i, len(payload), payload))
                outstanding += len(parts)
                pending_out = b"".join(parts)
            wr = [sock] if pending_out else []
            r, w, _ = select.select([sock], wr, [], 0.05)
            if w:
                try:
                    sent = sock.send(pending_out)
                    pending_out = pending_out[sent:]
                except BlockingIOError:
                    pass
            if r:
                try:
                    data = sock.recv(262144)
                except BlockingIOError:
                    continue
                if not data:
                    raise BenchError("server closed the connection during js_async")
                if buf:
                    data = buf + data
                    buf = b""
                chunk = tail + data
                n_acks = chunk.count(ACK_MARK) - tail.count(ACK_MARK)
                if ERR_MARK in chunk:
                    j = chunk.find(ERR_MARK)
                    raise BenchError(f"publish failed: {chunk[max(0, j - 40) : j + 160]!r}")
                if b"PING\r\n" in chunk:
                    sock.setblocking(True)
                    sock.sendall(b"PONG\r\n")
                    sock.setblocking(False)
                if b"-ERR" in chunk:
                    check_err(bytearray(chunk))
                tail = chunk[-16:]
                acked += n_acks
                outstanding -= n_acks
        elapsed = time.perf_counter() - measure_from
    finally:
        sock.setblocking(True)
    if counted_at_start < 0:
        raise BenchError("js_async ended before its measured window")
    return {"msgs_per_s": (acked - counted_at_start) / elapsed, "window": WINDOW}


def run_get(conn: Conn, frames: list[tuple[bytes, bytes]], cfg: BenchConfig) -> dict[str, Any]:
    """kv_get: put every key once, then direct-get keys in a jittered order, one at a time."""
    keys = sorted({s for s, _ in frames})
    for k in keys:
        payload = frames[0][1]
        _, body = conn.request(k, payload)
        _check_ack(body)
    order = [keys[i % len(keys)] for i in random.Random(cfg.seed).sample(range(len(keys) * 4), len(keys) * 4)]
    prefix = b"$JS.API.DIRECT.GET.KV_" + BUCKET.encode() + b"."

    def get(i: int) -> None:
        key = order[i % len(order)]
        conn.sock.sendall(b"PUB %s%s %s 0\r\n\r\n" % (prefix, key, conn.reply()))
        _, hdr, _body = conn.read_msg()
        if hdr is None or not hdr.startswith(b"NATS/1.0\r\n"):
            raise BenchError(f"direct get of {key!r} failed: {(hdr or b'')[:120]!r}")

    return _timed_requests(cfg, get)


def source_config(headers_only: bool, origin_api: str | None) -> dict[str, Any]:
    """SOURCE: a file stream sourcing STREAM from its start (through `origin_api` when STREAM is in another
    domain), republishing each stored message to LAG_SUBJECT."""
    source: dict[str, Any] = {"name": STREAM}
    if origin_api:
        source["external"] = {"api": origin_api}
    return {"name": SOURCE, "storage": "file", "max_bytes": 1 << 30, "discard": "old", "sources": [source],
            "republish": {"src": ">", "dest": LAG_SUBJECT.decode(), "headers_only": headers_only}}


def subscribe_sync(conn: Conn, subject: bytes, sid: int) -> None:
    """Subscribe and wait until the server has the interest (its PONG), so nothing published after is missed."""
    conn.sock.sendall(b"SUB %s %d\r\nPING\r\n" % (subject, sid))
    conn.sock.settimeout(5.0)
    wait_pong(conn.sock, conn.buf)


def _read_ready(conns: list[Conn], until: float) -> list[tuple[bytes, bytes | None, bytes]]:
    """The messages on `conns` that arrive before `until` (perf_counter time), at least all those buffered."""
    got = [msg for conn in conns for msg in iter(conn.take_msg, None)]
    if got:
        return got
    ready, _, _ = select.select([c.sock for c in conns], [], [], max(0.0, until - time.perf_counter()))
    for conn in conns:
        if conn.sock in ready:
            recv_more(conn.sock, conn.buf, "sourced messages")
            got += iter(conn.take_msg, None)
    return got


def _lag_percentile(lags: list[float], q: float) -> float:
    return lags[min(len(lags) - 1, int(len(lags) * q))] * 1e6


def run_source_lag(origin: Conn, sourcing: Conn, origin_api: str | None, frames: list[tuple[bytes, bytes]],
                   cfg: BenchConfig) -> dict[str, Any]:
    """js_source_lag: LAG_RATE publishes/s into STREAM on `origin`; lag until SOURCE on `sourcing` republishes
    each (module docstring). `origin` and `sourcing` may be one connection."""
    resp = sourcing.api(f"$JS.API.STREAM.CREATE.{SOURCE}", source_config(False, origin_api))
    if "error" in resp:
        raise BenchError(f"sourcing stream create failed: {resp['error']}")
    subscribe_sync(sourcing, LAG_SUBJECT, 2)
    conns = list({id(c): c for c in (origin, sourcing)}.values())
    total = max(1, int(LAG_RATE * (cfg.warmup + cfg.duration)))
    first_measured = int(LAG_RATE * cfg.warmup)
    sent_at: list[float] = []
    lags: list[float] = []
    acked = 0
    arrived = 0
    interval = 1.0 / LAG_RATE
    start = time.perf_counter()
    last_progress = start
    while acked < total or arrived < total:
        now = time.perf_counter()
        if now - last_progress > DRAIN_TIMEOUT:
            raise BenchError(f"js_source_lag: {arrived} of {len(sent_at)} published messages reached {SOURCE} "
                             f"({acked} acknowledged by {STREAM}), none more for {DRAIN_TIMEOUT:.0f} s")
        i = len(sent_at)
        if i < total and now >= start + i * interval:
            subject, body = frames[i % len(frames)]
            index = b"%08d" % i
            payload = (index + body)[: max(len(body), len(index))]
            sent_at.append(time.perf_counter())
            origin.sock.sendall(b"PUB %s %s %d\r\n%s\r\n" % (subject, origin.reply(), len(payload), payload))
            continue
        until = start + len(sent_at) * interval if len(sent_at) < total else now + 0.1
        for subject, _hdr, payload in _read_ready(conns, until):
            t = time.perf_counter()
            last_progress = t
            if subject.startswith(origin.inbox):
                _check_ack(payload)
                acked += 1
                continue
            index_seen = int(payload[:8])
            if index_seen != arrived:
                raise BenchError(f"js_source_lag: message {index_seen} reached {SOURCE} where {arrived} was due "
                                 "(lost, duplicated or reordered)")
            if arrived >= first_measured:
                lags.append(t - sent_at[arrived])
            arrived += 1
    if not lags:
        raise BenchError("js_source_lag: no message in the measured window")
    lags.sort()
    return {
        "msgs_per_s": len(lags) / cfg.duration,
        "p50_us": _lag_percentile(lags, 0.5),
        "p90_us": _lag_percentile(lags, 0.9),
        "p99_us": _lag_percentile(lags, 0.99),
        "samples": len(lags),
        "rate": LAG_RATE,
    }


def fill_origin(conn: Conn, frames: list[tuple[bytes, bytes]], count: int) -> None:
    """Publish `count` messages into STREAM, WINDOW at a time, each acknowledged."""
    done = 0
    while done < count:
        n = min(WINDOW, count - done)
        parts = []
        for i in range(done, done + n):
            subject, payload = frames[i % len(frames)]
            parts.append(b"PUB %s %s %d\r\n%s\r\n" % (subject, conn.reply(), len(payload), payload))
        conn.sock.sendall(b"".join(parts))
        for _ in range(n):
            _check_ack(conn.read_msg()[2])
        done += n


def run_source_catchup(origin: Conn, sourcing: Conn, origin_api: str | None,
                       frames: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    """js_source_catchup: CATCHUP_MSGS in STREAM on `origin`, then SOURCE created on `sourcing`; rate until
    SOURCE has them all."""
    fill_origin(origin, frames, CATCHUP_MSGS)
    subscribe_sync(sourcing, LAG_SUBJECT, 2)
    create = json.dumps(source_config(True, origin_api)).encode()
    create_reply = sourcing.reply()
    t0 = time.perf_counter()
    sourcing.sock.sendall(b"PUB $JS.API.STREAM.CREATE.%s %s %d\r\n%s\r\n"
                          % (SOURCE.encode(), create_reply, len(create), create))
    arrived = 0
    answered = False
    last = last_progress = t0
    while arrived < CATCHUP_MSGS or not answered:
        if time.perf_counter() - last_progress > DRAIN_TIMEOUT:
            raise BenchError(f"js_source_catchup: {SOURCE} got {arrived} of {CATCHUP_MSGS} messages, none more for "
                             f"{DRAIN_TIMEOUT:.0f} s")
        for subject, _hdr, payload in _read_ready([sourcing], time.perf_counter() + 0.1):
            last_progress = time.perf_counter()
            if subject == create_reply:
                if b'"error"' in payload:
                    raise BenchError(f"sourcing stream create failed: {payload[:200]!r}")
                answered = True
            else:
                arrived += 1
                last = last_progress
    state = sourcing.api(f"$JS.API.STREAM.INFO.{SOURCE}").get("state", {})
    if state.get("messages") != CATCHUP_MSGS:
        raise BenchError(f"js_source_catchup: {SOURCE} holds {state.get('messages')} messages after "
                         f"{arrived} were republished from it; {CATCHUP_MSGS} were sourced")
    return {"msgs_per_s": CATCHUP_MSGS / (last - t0), "seconds": last - t0, "messages": CATCHUP_MSGS}


def run_js(ep: Endpoint, scenario: str, size: int, cfg: BenchConfig, server_pid: int | None) -> dict[str, Any]:
    conn = Conn(ep)
    try:
        setup(conn, scenario)
        frames = js_frames(scenario, size, cfg)
        cpu0 = proc_cpu_seconds(server_pid) if server_pid else None
        t0 = time.perf_counter()
        if scenario == "js_async":
            m = run_async(conn, frames, cfg)
        elif scenario == "js_source_lag":
            m = run_source_lag(conn, conn, None, frames, cfg)
        elif scenario == "js_source_catchup":
            m = run_source_catchup(conn, conn, None, frames)
        elif scenario == "kv_get":
            m = run_get(conn, frames, cfg)
        else:
            m = run_sync(conn, frames, cfg)
        wall = time.perf_counter() - t0
        if cpu0 is not None and server_pid:
            cpu1 = proc_cpu_seconds(server_pid)
            if cpu1 is not None:
                m["server_cpu"] = (cpu1 - cpu0) / wall
        return m
    except (OSError, ValueError) as exc:
        raise BenchError(f"{scenario}: {exc}") from exc
    finally:
        conn.close()
