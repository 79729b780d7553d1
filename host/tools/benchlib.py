"""What every `natsedge bench` mode shares: run configuration, errors, a raw-socket NATS client, the varied
load and the worker processes that publish and count it, /proc CPU accounting, servers started on free ports,
and the command's output (run records).

bench.py (the core scenarios and the command), bench_js.py, bench_edge.py, bench_forward.py, bench_leaf.py and
bench_cluster.py import this module; it imports none of them.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

SCENARIOS: tuple[str, ...] = (
    "pub", "pubsub1", "pubsub4", "reqrep", "leaf1", "leaf4", "route1", "route4", "gw1", "gwreq",
    "js_sync", "js_async", "kv_put", "kv_get", "js_source_lag", "js_source_catchup",
    "js_leaf_source_lag", "js_leaf_source_catchup", "idle",
)
JS_SCENARIOS: tuple[str, ...] = (  # host/tools/bench_js.py
    "js_sync", "js_async", "kv_put", "kv_get", "js_source_lag", "js_source_catchup",
)
LEAF_SCENARIOS: tuple[str, ...] = ("leaf1", "leaf4")  # host/tools/bench_leaf.py; --compare only
ROUTE_SCENARIOS: tuple[str, ...] = ("route1", "route4")  # host/tools/bench_cluster.py; --compare only
LEAF_JS_SCENARIOS: tuple[str, ...] = (  # host/tools/bench_js_leaf.py; --compare only
    "js_leaf_source_lag", "js_leaf_source_catchup",
)
GATEWAY_SCENARIOS: tuple[str, ...] = ("gw1", "gwreq")  # host/tools/bench_cluster.py; --compare only
# they start servers of their own
COMPARE_ONLY: tuple[str, ...] = LEAF_SCENARIOS + ROUTE_SCENARIOS + LEAF_JS_SCENARIOS + GATEWAY_SCENARIOS
REQUEST_SCENARIOS: tuple[str, ...] = ("reqrep", "gwreq")  # latency of one request in flight at a time
PAYLOAD_ALPHABET = b"abcdefghijklmnopqrstuvwxyz0123456789"
LISTENING_LINE = b"Listening for client connections on"
LOCALHOST = "127.0.0.1"
NOISY_CPU = 0.25  # cores used by unrelated processes during a run before it is flagged as noisy
SUBSCRIBERS: dict[str, int] = {"pub": 0, "pubsub1": 1, "pubsub4": 4}  # subscriber processes per core scenario
# Subscriptions used by the pubsub scenarios: every one of them matches every published subject
# (bench.s.0 .. bench.s.7), but they exercise different wildcard shapes in the server's subject tree.
SUB_SUBJECTS: tuple[bytes, ...] = (b"bench.s.*", b"bench.>", b"bench.*.*", b"bench.s.*")
MAX_PINGS_OUT = 8
RECV_CHUNK = 256 * 1024
READY_TIMEOUT = 30.0


class BenchError(RuntimeError):
    """A benchmark could not run (server missing, refused connection, slow consumer, ...)."""


# --------------------------------------------------------------------------------------------- configuration


@dataclass
class LoadMix:
    """What the generated traffic looks like (see docs/benchmarks.md)."""

    subjects: int = 8  # publish subjects bench.s.0 .. bench.s.{subjects-1}, chosen uniformly per frame
    exact_fraction: float = 0.7  # share of frames sized n-1, n or n+1 (uniformly); the rest spread ...
    spread: float = 0.25  # ... uniformly over [n*(1-spread), n*(1+spread)]
    reply_fraction: float = 0.25  # share of frames carrying a unique reply subject
    batch_bytes: int = 512 * 1024  # size of one pre-built batch of PUB frames
    batches: int = 4  # distinct batches per publisher, cycled


@dataclass
class BenchConfig:
    scenarios: list[str] = field(default_factory=lambda: list(SCENARIOS))
    sizes: list[int] = field(default_factory=lambda: [16, 128, 1024])
    duration: float = 2.0
    warmup: float = 0.5
    runs: int = 3
    publishers: int = 1
    idle_conns: int = 5000
    window_bytes: int = 8 * 1024 * 1024
    seed: int = 1
    mix: LoadMix = field(default_factory=LoadMix)


@dataclass
class Endpoint:
    host: str
    port: int
    user: str | None = None
    password: str | None = None
    token: str | None = None

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"


def parse_url(url: str) -> Endpoint:
    if "://" not in url:
        url = "nats://" + url
    parts = urlsplit(url)
    if parts.scheme not in ("nats", "tcp"):
        raise BenchError(f"unsupported URL scheme {parts.scheme!r} (plain nats:// only)")
    user = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else None
    token = None
    if user is not None and password is None:
        token, user = user, None
    return Endpoint(parts.hostname or LOCALHOST, parts.port or 4222, user, password, token)


# ------------------------------------------------------------------------------------------ protocol helpers


def connect_frame(ep: Endpoint, name: str, headers: bool = False) -> bytes:
    opts: dict[str, Any] = {
        "verbose": False,
        "pedantic": False,
        "tls_required": False,
        "name": name,
        "lang": "python-natsedge-bench",
        "version": "0.1",
        "protocol": 1,
        "echo": True,
        "headers": headers,
        "no_responders": False,
    }
    if ep.user is not None:
        opts["user"] = ep.user
        opts["pass"] = ep.password or ""
    if ep.token is not None:
        opts["auth_token"] = ep.token
    return b"CONNECT " + json.dumps(opts, separators=(",", ":")).encode() + b"\r\n"


def recv_more(sock: socket.socket, buf: bytearray, what: str) -> None:
    data = sock.recv(65536)
    if not data:
        raise BenchError(f"server closed the connection while waiting for {what}: {bytes(buf[-200:])!r}")
    buf += data


def check_err(buf: bytearray) -> None:
    i = buf.find(b"-ERR")
    if i >= 0:
        end = buf.find(b"\r\n", i)
        raise BenchError(
            f"server error: {bytes(buf[i : end if end >= 0 else i + 200]).decode(errors='replace')}"
        )


def wait_pong(sock: socket.socket, buf: bytearray) -> None:
    """Consume input up to and including the next PONG (answering server PINGs on the way)."""
    while True:
        check_err(buf)
        i = buf.find(b"PONG\r\n")
        if i >= 0:
            if buf.find(b"PING\r\n", 0, i) >= 0:
                sock.sendall(b"PONG\r\n")
            del buf[: i + 6]
            return
        recv_more(sock, buf, "PONG")


def read_info(sock: socket.socket, buf: bytearray, peer: str) -> None:
    """Read the greeting INFO line into `buf` and consume it; `peer` names the server in errors."""
    while b"\r\n" not in buf:
        recv_more(sock, buf, f"the INFO of {peer}")
    end = buf.index(b"\r\n")
    if not buf.startswith(b"INFO "):
        raise BenchError(f"unexpected greeting from {peer}: {bytes(buf[:120])!r}")
    if json.loads(bytes(buf[5:end])).get("tls_required"):
        raise BenchError(f"{peer} requires TLS; the bench speaks plain TCP only")
    del buf[: end + 2]


def nats_connect(
    ep: Endpoint, name: str, timeout: float = 10.0, headers: bool = False
) -> tuple[socket.socket, bytearray]:
    """Open a client connection: read INFO, send CONNECT + PING, wait for PONG. Returns (socket, leftover)."""
    sock = socket.create_connection((ep.host, ep.port), timeout=timeout)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buf = bytearray()
        read_info(sock, buf, ep.url)
        sock.sendall(connect_frame(ep, name, headers) + b"PING\r\n")
        wait_pong(sock, buf)
        return sock, buf
    except BaseException:
        sock.close()
        raise


def payload_pool(rng: random.Random, size: int = 65536) -> bytes:
    return bytes(rng.choices(PAYLOAD_ALPHABET, k=size))


def jitter_size(rng: random.Random, n: int, mix: LoadMix) -> int:
    if rng.random() < mix.exact_fraction:
        return max(1, n + rng.choice((-1, 0, 1)))
    return max(1, round(rng.uniform(n * (1 - mix.spread), n * (1 + mix.spread))))


# -------------------------------------------------------------------------------------------- load generation


@dataclass
class Batch:
    parts: list[bytes | bytearray]  # static segments interleaved with the shared epoch bytearray
    msgs: int
    nbytes: int
    payload_bytes: int


def build_batches(
    size: int, mix: LoadMix, seed: int, tag: str, epoch: bytearray, verb: bytes = b"PUB"
) -> list[Batch]:
    """Pre-build `mix.batches` distinct batches of `verb` frames (each ending with a PING): ``PUB`` from a client,
    ``LMSG`` from a leafnode connection (same argument syntax); the frames differ only in that word.

    Frames with a reply subject get ``bench.r.<tag><batch>.<epoch>.<seq>``; `epoch` is one shared bytearray
    referenced from every such frame, so the sender makes the whole run's reply subjects unique by bumping it
    once per pass and re-joining the parts (a C-level join, ~10 ns per frame).
    """
    rng = random.Random(seed)
    pool = payload_pool(rng, 65536 + 2 * size + 64)
    batches = []
    for b in range(mix.batches):
        parts: list[bytes | bytearray] = []
        cur = bytearray()
        msgs = nbytes = payload = 0
        prefix = b"bench.r.%s%x." % (tag.encode(), b)
        while nbytes < mix.batch_bytes:
            subj = b"bench.s.%d" % rng.randrange(mix.subjects)
            n = jitter_size(rng, size, mix)
            off = rng.randrange(len(pool) - n)
            if rng.random() < mix.reply_fraction:
                head = b"%s %s %s" % (verb, subj, prefix)
                rest = b".%x %d\r\n" % (msgs, n)
                cur += head
                parts.append(bytes(cur))
                parts.append(epoch)
                cur = bytearray(rest)
                flen = len(head) + len(epoch) + len(rest)
            else:
                head = b"%s %s %d\r\n" % (verb, subj, n)
                cur += head
                flen = len(head)
            cur += pool[off : off + n]
            cur += b"\r\n"
            nbytes += flen + n + 2
            msgs += 1
            payload += n
        cur += b"PING\r\n"
        parts.append(bytes(cur))
        batches.append(Batch(parts, msgs, nbytes, payload))
    return batches


# ------------------------------------------------------------------------------------------------ /proc CPU


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (field 3 onwards), or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2 :].split()


def process_tree(pid: int) -> list[int]:
    """`pid` and all its live descendants (a server that forks workers is measured as a whole)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _proc_stat(int(entry))
            if fields is not None:
                children.setdefault(int(fields[1]), []).append(int(entry))
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(children.get(p, []))
    return tree


def proc_cpu_seconds(pid: int) -> float | None:
    """utime+stime (all threads) of `pid` and its descendants from /proc/PID/stat, or None if unavailable."""
    if _proc_stat(pid) is None:
        return None
    total = 0
    for p in process_tree(pid):
        fields = _proc_stat(p)
        if fields is not None:
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def proc_rss_kib(pid: int) -> int:
    """VmRSS of `pid` plus its descendants (pages shared after fork() are counted once per process)."""
    total = 0
    for p in process_tree(pid):
        try:
            lines = Path(f"/proc/{p}/status").read_text().splitlines()
        except OSError:
            if p == pid:
                raise BenchError(f"server process {pid} is gone") from None
            continue
        total += sum(int(line.split()[1]) for line in lines if line.startswith("VmRSS:"))
    return total


def machine_cpu_jiffies() -> tuple[int, int] | None:
    """(busy, total) jiffies summed over all CPUs from /proc/stat, or None."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    total = sum(fields)
    return total - fields[3] - fields[4], total


# ----------------------------------------------------------------------------------------- server processes


def find_nats_server(explicit: str | None = None) -> str:
    candidates = []
    if explicit:
        candidates.append(Path(explicit))
    candidates.append(Path(sys.executable).parent / "nats-server")
    candidates.append(Path(sysconfig.get_path("scripts")) / "nats-server")
    which = shutil.which("nats-server")
    if which:
        candidates.append(Path(which))
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return str(c)
    if explicit:
        raise BenchError(f"nats-server not found or not executable: {explicit}")
    raise BenchError("nats-server not found: pip install 'natsedge[bench]' (or pass --nats-server PATH)")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOCALHOST, 0))
        return int(s.getsockname()[1])


JS_FLAGS = ["-js", "-sd", "{store}"]  # JetStream with file storage in the server's temporary directory


def without_jetstream(cmd: Sequence[str]) -> list[str]:
    """`cmd` without JS_FLAGS: a server of the route and gateway scenarios (nats-server refuses JetStream in a
    cluster whose first node has no routes configured, and those scenarios carry core messages only)."""
    out = list(cmd)
    n = len(JS_FLAGS)
    for i in range(len(out) - n + 1):
        if out[i:i + n] == JS_FLAGS:
            return out[:i] + out[i + n:]
    return out


def default_hub_cmd(jetstream: bool = False) -> list[str]:
    cmd = [sys.executable, "-m", "host.tools.cli", "hub", "-a", LOCALHOST, "-p", "{port}"]
    return cmd + (JS_FLAGS if jetstream else [])


def default_nats_cmd(binary: str, jetstream: bool = False) -> list[str]:
    return [binary, "-a", LOCALHOST, "-p", "{port}"] + (JS_FLAGS if jetstream else [])


class ServerProcess:
    """A server started by the bench on a free port; `{port}` in the command line is substituted."""

    def __init__(self, label: str, cmd: Sequence[str]) -> None:
        if not any("{port}" in a for a in cmd):
            raise BenchError(f"{label} command line has no {{port}} placeholder: {shlex.join(cmd)}")
        self.label = label
        self.cmd = list(cmd)
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self._tmpdir: str | None = None
        self._log: Any = None
        self.log_path: Path | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def url(self) -> str:
        return f"nats://{LOCALHOST}:{self.port}"

    def argv(self) -> list[str]:
        store = os.path.join(self._tmpdir or tempfile.gettempdir(), "store")
        return [a.replace("{port}", str(self.port)).replace("{store}", store) for a in self.cmd]

    def start(self, timeout: float = 20.0) -> ServerProcess:
        self.port = free_port()
        self._tmpdir = tempfile.mkdtemp(prefix="natsedge-bench-")
        self.log_path = Path(self._tmpdir) / f"{self.label}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parents[2])  # the folder holding the host package
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env["PYTHONUNBUFFERED"] = "1"
        try:
            self.proc = subprocess.Popen(
                self.argv(),
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        except OSError as exc:
            self.stop()
            raise BenchError(f"cannot start {self.label} ({shlex.join(self.argv())}): {exc}") from exc
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def log_tail(self, n: int = 20) -> str:
        try:
            assert self.log_path is not None
            lines = self.log_path.read_text(errors="replace").splitlines()
        except (OSError, AssertionError):
            return ""
        return "\n".join(lines[-n:])

    def _wait_ready(self, timeout: float) -> None:
        assert self.proc is not None and self.log_path is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(
                    f"{self.label} exited with status {self.proc.returncode} during startup "
                    f"({shlex.join(self.argv())}); log:\n{self.log_tail()}"
                )
            if self._logged_listening() or self._probe():
                return
            time.sleep(0.05)
        raise BenchError(
            f"{self.label} did not become ready on port {self.port} within {timeout:.0f} s "
            f"({shlex.join(self.argv())}); log:\n{self.log_tail()}"
        )

    def _logged_listening(self) -> bool:
        assert self.log_path is not None
        for line in self.log_path.read_bytes().splitlines():
            if LISTENING_LINE in line and line.rstrip().endswith(b":%d" % self.port):
                return True
        return False

    def _probe(self) -> bool:
        try:
            with socket.create_connection((LOCALHOST, self.port), timeout=0.5) as s:
                return s.recv(5) == b"INFO "
        except OSError:
            return False

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        """SIGTERM the server's process group (pgid == its PID: start_new_session), SIGKILL after 5 s."""
        proc, self.proc = self.proc, None
        if proc is not None:
            if proc.poll() is None:
                self._signal_group(proc, signal.SIGTERM)
                try:
                    proc.wait(5.0)
                except subprocess.TimeoutExpired:
                    self._signal_group(proc, signal.SIGKILL)
                    proc.wait(5.0)
            # children the server forked and that outlived it (a live group member keeps the pgid reserved)
            self._signal_group(proc, signal.SIGKILL)
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    @staticmethod
    def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        except OSError:
            if proc.poll() is None:
                proc.send_signal(sig)

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def nats_server_version(binary: str) -> str:
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or out.stderr.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


# ------------------------------------------------------------------------------------------- worker processes


def sleep_until(t: float) -> None:
    while True:
        d = t - time.monotonic()
        if d <= 0:
            return
        time.sleep(min(d, 0.05))


def _worker_main(target: Callable[..., dict[str, Any]], ctl: Connection, *args: Any) -> None:
    try:
        result = target(ctl, *args)
        ctl.send(("done", result))
    except BaseException as exc:  # report everything to the orchestrator, which turns it into a BenchError
        try:
            ctl.send(("error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=4)}"))
        except OSError:
            pass
    finally:
        ctl.close()


def keep_big_allocations_in_heap() -> None:
    """Stop glibc from mmap()/munmap()ing every joined batch (page faults cost more than the join itself)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        libc.mallopt(-1, 64 << 20)  # M_TRIM_THRESHOLD
        libc.mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD (glibc's maximum)
    except (OSError, AttributeError):
        pass  # not glibc: slower, still correct


class PongTracker:
    """Counts PONGs arriving on a publisher connection (which receives nothing else of volume)."""

    def __init__(self, sock: socket.socket, buf: bytearray) -> None:
        self.sock = sock
        self.buf = buf
        self.outstanding = 0

    def wait_below(self, limit: int) -> None:
        while self.outstanding > limit:
            self._read()

    def _read(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise BenchError("server closed the publisher connection")
        self.buf += data
        check_err(self.buf)
        end = self.buf.rfind(b"\r\n")
        if end < 0:
            return
        done = self.buf[: end + 2]
        self.outstanding -= done.count(b"PONG\r\n")
        pings = done.count(b"PING\r\n")
        if pings:
            self.sock.sendall(b"PONG\r\n" * pings)
        del self.buf[: end + 2]


def publisher(
    ctl: Connection,
    connect: Callable[[], tuple[socket.socket, bytearray]],
    verb: bytes,
    idx: int,
    size: int,
    cfg: BenchConfig,
    published: Any,
    delivered: Any,
    nsubs: int,
) -> dict[str, Any]:
    """One publisher process: `connect()` opens its connection (a client's, or a leaf's), then it sends batches of
    `verb` frames (``PUB``, ``LMSG``) until the window ends, under the PING/PONG and credit-window flow control."""
    keep_big_allocations_in_heap()
    epoch = bytearray(b"%08x" % 0)
    tag = f"{verb[:1].lower().decode()}{idx}b"  # p0b, l0b: reply subjects show which kind of publisher sent them
    batches = build_batches(size, cfg.mix, cfg.seed * 7919 + idx * 131 + size, tag, epoch, verb)
    frames = sum(b.msgs for b in batches)
    mean_frame = sum(b.nbytes for b in batches) / frames
    mean_payload = sum(b.payload_bytes for b in batches) / frames
    # credit window in messages; subscribers receive MSG frames about as long as ours (PUB: slightly longer)
    window_msgs = max(2 * max(b.msgs for b in batches), int(cfg.window_bytes / (mean_frame + 8)))
    sock, buf = connect()
    sock.settimeout(30.0)
    pongs = PongTracker(sock, buf)
    ctl.send(("ready", {"mean_payload": mean_payload, "mean_frame": mean_frame}))
    t_go, t_start, t_end = ctl.recv()
    sleep_until(t_go)
    sent = 0
    cycle = 0
    measuring = False
    t0 = t1 = 0.0
    sent0 = 0
    cpu0 = 0.0
    credit_waits = 0.0
    grace = t_end + 10.0
    while True:
        cycle += 1
        epoch[:] = b"%08x" % (cycle & 0xFFFFFFFF)
        for batch in batches:
            data = b"".join(batch.parts)
            if nsubs and sum(published) - min(delivered[:nsubs]) > window_msgs:
                w0 = now = time.monotonic()
                while sum(published) - min(delivered[:nsubs]) > window_msgs:
                    now = time.monotonic()
                    if measuring and now >= t_end:
                        break  # measurement is over; do not wait for the window to reopen
                    if now > grace:
                        raise BenchError("subscribers stopped consuming (credit window never reopened)")
                    time.sleep(0.0002)
                credit_waits += min(now, t_end) - w0
                if measuring and now >= t_end:
                    t1 = now
                    break
            sock.sendall(data)
            sent += batch.msgs
            published[idx] = sent
            pongs.outstanding += 1
            pongs.wait_below(MAX_PINGS_OUT)
            now = time.monotonic()
            if not measuring and now >= t_start:
                if not nsubs:  # pub-only: start the clock once everything sent so far has been processed
                    pongs.wait_below(0)
                    now = time.monotonic()
                measuring = True
                t0, sent0, cpu0, credit_waits = now, sent, time.process_time(), 0.0
            elif measuring and now >= t_end:
                if not nsubs:
                    pongs.wait_below(0)
                t1 = time.monotonic()
                break
        else:
            continue
        break
    cpu = time.process_time() - cpu0
    # let the server process everything we sent, so nothing of this run reaches the next run's subscribers
    pongs.wait_below(0)
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


class MsgCounter:
    """Counts MSG frames in a server->client byte stream that arrives in arbitrary chunks.

    Relies on the bench's own traffic being lower-case: every ``M`` byte then starts a ``MSG`` line, except
    inside the JSON of an (asynchronous) INFO line, which is subtracted, also when it spans chunks.  Counting
    one byte value is about twice as fast as counting ``b"MSG "`` and needs no boundary handling.  The rarer
    tokens are found with memchr-speed single-byte probes: ``P`` (PING, answered by the caller; a 5-byte tail
    catches a PING split across chunks) and ``-`` (``-ERR``, raised as BenchError).
    """

    def __init__(self) -> None:
        self.count = 0
        self.tail = b""  # last 5 bytes of the stream so far
        self.in_info = False  # inside INFO JSON that continues into the next chunk

    def feed(self, buf: bytearray, n: int) -> int:
        """Account for buf[:n]; returns the number of PINGs to answer."""
        ms = buf.count(b"M", 0, n)
        if self.in_info or buf.find(b"{", 0, n) >= 0:
            ms -= self._info_ms(buf, n)
        self.count += ms
        pings = 0
        if buf.find(b"P", 0, n) >= 0 or b"P" in self.tail:
            pings = buf.count(b"PING\r\n", 0, n) + (self.tail + bytes(buf[: min(n, 5)])).count(b"PING\r\n")
        if buf.find(b"-", 0, n) >= 0:
            i = buf.find(b"-ERR", 0, n)
            if i >= 0:
                end = buf.find(b"\r\n", i, n)
                text = bytes(buf[i : end if end >= 0 else n]).decode(errors="replace")
                raise BenchError(f"server error after {self.count} messages: {text}")
        self.tail = (self.tail + bytes(buf[max(0, n - 5) : n]))[-5:]
        return pings

    def _info_ms(self, buf: bytearray, n: int) -> int:
        """``M`` bytes inside INFO JSON (from ``{`` to the end of its line) within buf[:n]."""
        excluded = 0
        pos = 0
        if self.in_info:
            end = buf.find(b"\n", 0, n)
            if end < 0:
                return buf.count(b"M", 0, n)
            excluded += buf.count(b"M", 0, end)
            pos = end + 1
            self.in_info = False
        while True:
            start = buf.find(b"{", pos, n)
            if start < 0:
                return excluded
            end = buf.find(b"\n", start, n)
            if end < 0:
                self.in_info = True
                return excluded + buf.count(b"M", start, n)
            excluded += buf.count(b"M", start, end)
            pos = end + 1


def subscriber(
    ctl: Connection,
    ep: Endpoint,
    idx: int,
    subject: bytes,
    delivered: Any,
    published: Any,
    stop: Any,
    prepare: Callable[[socket.socket, bytearray, int], None] | None = None,
) -> dict[str, Any]:
    """One subscriber process: SUB `subject` on `ep`, then count MSG frames until told to stop.

    `prepare(sock, buf, idx)`, if given, runs once the SUB is confirmed and before the worker reports ready (the
    route scenarios wait there until the subscription's interest has reached the publisher's server); it must
    leave nothing of its own traffic in the connection or in `buf`."""
    sock, buf = nats_connect(ep, f"bench-sub-{idx}")
    sock.sendall(b"SUB %s %d\r\nPING\r\n" % (subject, idx + 1))
    wait_pong(sock, buf)
    if prepare is not None:
        prepare(sock, buf, idx)
    if buf:
        raise BenchError(f"unexpected data before the run: {bytes(buf[:100])!r}")
    ctl.send(("ready", None))
    t_go, t_start, t_end = ctl.recv()
    sock.settimeout(0.05)
    chunk = bytearray(RECV_CHUNK)
    counter = MsgCounter()
    count = 0
    t_a = t_b = 0.0
    c_a = c_b = 0
    cpu_a = cpu_b = 0.0
    started = finished = False
    hard_stop = t_end + 30.0
    drain_until = 0.0
    while True:
        try:
            n = sock.recv_into(chunk)
        except TimeoutError:
            n = -1
        now = time.monotonic()
        if n == 0:
            raise BenchError(f"subscriber {idx}: server closed the connection after {count} messages")
        if n > 0:
            pings = counter.feed(chunk, n)
            count = counter.count
            delivered[idx] = count
            if pings:
                sock.sendall(b"PONG\r\n" * pings)
        if not started and now >= t_start:
            started, t_a, c_a, cpu_a = True, now, count, time.process_time()
        elif started and not finished and now >= t_end:
            finished, t_b, c_b, cpu_b = True, now, count, time.process_time()
        # Keep consuming until every publisher has drained its PONGs (stop is set) and then until everything
        # published has arrived, or 5 s of silence: the totals must match exactly, or messages were lost.
        if finished and stop.value:
            if count >= sum(published):
                break
            if drain_until == 0.0 or n > 0:
                drain_until = now + 5.0
            if now > drain_until:
                break
        elif now > hard_stop:
            raise BenchError(f"subscriber {idx}: never told to stop")
    sock.close()
    return {
        "msgs": c_b - c_a,
        "dt": t_b - t_a,
        "cpu": (cpu_b - cpu_a) / (t_b - t_a),
        "total": count,
        "expected": sum(published),
    }


def mp_context() -> Any:
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


@dataclass
class WorkerSpec:
    name: str
    target: Callable[..., dict[str, Any]]
    args: tuple[Any, ...]
    passive: bool = False  # runs until the active workers are done and `stop` is set (subscribers, responder)


def servers_cpu_seconds(pids: Sequence[int]) -> list[float] | None:
    """`proc_cpu_seconds` of each PID, or None if any of them is unavailable."""
    out = []
    for pid in pids:
        cpu = proc_cpu_seconds(pid)
        if cpu is None:
            return None
        out.append(cpu)
    return out


def run_workers(
    specs: list[WorkerSpec], cfg: BenchConfig, server_pid: int | Sequence[int] | None, stop: Any = None
) -> tuple[list[dict[str, Any]], list[Any], dict[str, float]]:
    """Start worker processes, wait until all are ready, release them together, collect results.

    Active workers are collected first; then `stop.value` is set so passive workers finish too.
    Returns (results in spec order, ready payloads, window) where window has the machine-wide CPU use in
    cores ("machine_cpu") and, with a server PID, the server's ("server_cpu") during the measured window.
    `server_pid` may list several servers (the nodes of a cluster): "server_cpu" is then their sum, and
    "node1_cpu", "node2_cpu", ... each one's share.
    """
    pids = [] if server_pid is None else [server_pid] if isinstance(server_pid, int) else list(server_pid)
    ctx = mp_context()
    procs: list[tuple[str, Any, Connection]] = []
    try:
        for spec in specs:
            name, target, args = spec.name, spec.target, spec.args
            parent, child = ctx.Pipe()
            p = ctx.Process(target=_worker_main, args=(target, child, *args), name=name, daemon=True)
            p.start()
            child.close()
            procs.append((name, p, parent))
        ready = []
        deadline = time.monotonic() + READY_TIMEOUT
        for name, _p, conn in procs:
            kind, payload = _receive(conn, name, deadline)
            if kind != "ready":
                raise BenchError(f"{name} failed during setup: {payload}")
            ready.append(payload)
        t_go = time.monotonic() + 0.05
        t_start = t_go + cfg.warmup
        t_end = t_start + cfg.duration
        for _name, _p, conn in procs:
            conn.send((t_go, t_start, t_end))
        window: dict[str, float] = {}
        sleep_until(t_start)
        c0, m0, w0 = servers_cpu_seconds(pids) if pids else None, machine_cpu_jiffies(), time.monotonic()
        sleep_until(t_end)
        c1, m1, w1 = servers_cpu_seconds(pids) if pids else None, machine_cpu_jiffies(), time.monotonic()
        if c0 is not None and c1 is not None:
            window["server_cpu"] = (sum(c1) - sum(c0)) / (w1 - w0)
            if len(pids) > 1:
                for n, (a, b) in enumerate(zip(c0, c1, strict=True)):
                    window[f"node{n + 1}_cpu"] = (b - a) / (w1 - w0)
        if m0 and m1 and m1[1] > m0[1]:
            window["machine_cpu"] = (m1[0] - m0[0]) / (m1[1] - m0[1]) * (os.cpu_count() or 1)
        results: list[dict[str, Any]] = [{} for _ in procs]
        deadline = t_end + 30.0
        order = [i for i, sp in enumerate(specs) if not sp.passive] + [
            i for i, sp in enumerate(specs) if sp.passive
        ]
        for n, i in enumerate(order):
            name, _p, conn = procs[i]
            if specs[i].passive and stop is not None and (n == 0 or not specs[order[n - 1]].passive):
                stop.value = 1
            kind, payload = _receive(conn, name, deadline)
            if kind != "done":
                raise BenchError(f"{name} failed: {payload}")
            results[i] = payload
        return results, ready, window
    finally:
        for _name, p, conn in procs:
            conn.close()
            if p.is_alive():
                p.terminate()
        for _name, p, _conn in procs:
            p.join(2.0)
            if p.is_alive():
                p.kill()
                p.join(1.0)


def _receive(conn: Connection, name: str, deadline: float) -> tuple[str, Any]:
    if not conn.poll(max(0.0, deadline - time.monotonic())):
        raise BenchError(f"{name} timed out")
    try:
        return conn.recv()
    except EOFError:
        raise BenchError(f"{name} exited without reporting") from None


def run_pubsub(specs: list[WorkerSpec], nsubs: int, cfg: BenchConfig, server_pid: int | Sequence[int] | None,
               stop: Any, published_where: str = "", verify_totals: bool = True) -> dict[str, Any]:
    """Run `nsubs` subscriber workers and the publishers after them in `specs`; the throughput metrics. With
    `verify_totals`, every subscriber must end up with exactly as many messages as were published (a run with lost
    or extra messages fails instead of reporting a rate)."""
    results, _ready, window = run_workers(specs, cfg, server_pid, stop)
    subs, pubs = results[:nsubs], results[nsubs:]
    for i, sub in enumerate(subs):
        if verify_totals and sub["total"] != sub["expected"]:
            what = "lost" if sub["total"] < sub["expected"] else "extra"
            raise BenchError(
                f"subscriber {i} received {sub['total']} messages but {sub['expected']} were published"
                f"{published_where} ({what}: {abs(sub['expected'] - sub['total'])})"
            )
    offered = sum(p["msgs"] / p["dt"] for p in pubs)
    rates = [s["msgs"] / s["dt"] for s in subs]
    rate = sum(rates) if subs else offered
    mean_payload = statistics.fmean(p["mean_payload"] for p in pubs)
    metrics: dict[str, Any] = {
        "msgs_per_s": rate,
        "payload_mb_per_s": rate * mean_payload / 1e6,
        "mean_payload": mean_payload,
        "offered_msgs_per_s": offered,
        "publisher_cpu": max(p["cpu"] for p in pubs),
        "publisher_credit_wait": max(p["credit_wait"] for p in pubs),
    }
    if subs:
        metrics["subscriber_cpu"] = max(s["cpu"] for s in subs)
        metrics["per_subscriber_msgs_per_s"] = rates
    metrics.update(window_metrics(window, [r["cpu"] for r in results]))
    return metrics


def window_metrics(window: dict[str, float], worker_cpu: list[float]) -> dict[str, float]:
    """server_cpu, machine_cpu and other_cpu (used by anything but the server and our workers), in cores."""
    out = dict(window)
    if "server_cpu" in window and "machine_cpu" in window:
        out["other_cpu"] = max(0.0, window["machine_cpu"] - window["server_cpu"] - sum(worker_cpu))
    return out


# -------------------------------------------------------------------------------------------------- command


def fmt_rate(v: float) -> str:
    if v >= 1e6:
        return f"{v / 1e6:.2f}M"
    if v >= 1e3:
        return f"{v / 1e3:.1f}k"
    return f"{v:.0f}"


def comma_list(kind: Callable[[str], Any]) -> Callable[[str], list[Any]]:
    def parse(text: str) -> list[Any]:
        try:
            return [kind(x.strip()) for x in text.split(",") if x.strip()]
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from exc

    return parse


def progress_log(quiet: bool) -> Callable[[str], None]:
    """Progress lines go to stderr, unless -q."""
    return (lambda s: None) if quiet else (lambda s: print(s, file=sys.stderr, flush=True))


def scenario_sizes(cfg: BenchConfig) -> list[tuple[str, int | None]]:
    cases: list[tuple[str, int | None]] = []
    for scen in cfg.scenarios:
        if scen == "idle":
            cases.append((scen, None))
        else:
            cases.extend((scen, size) for size in cfg.sizes)
    return cases


def _describe(label: str, scen: str, size: int | None, run: int, cfg: BenchConfig, m: dict[str, Any]) -> str:
    what = f"[{label}] {scen}" + (f" {size}B" if size else "") + f" run {run + 1}/{cfg.runs}: "
    if scen in SUBSCRIBERS or scen in LEAF_SCENARIOS or scen in ROUTE_SCENARIOS or scen == "gw1":
        s = f"{fmt_rate(m['msgs_per_s'])} msg/s, publisher cpu {m['publisher_cpu']:.0%}"
        if "subscriber_cpu" in m:
            s += f", max subscriber cpu {m['subscriber_cpu']:.0%}"
        if m.get("publisher_credit_wait"):
            s += f", credit-stalled {m['publisher_credit_wait']:.0%}"
    elif scen in JS_SCENARIOS or scen in LEAF_JS_SCENARIOS:
        s = f"{fmt_rate(m['msgs_per_s'])} ops/s" + (f", p50 {m['p50_us']:.0f} us" if "p50_us" in m else "")
    elif scen in REQUEST_SCENARIOS:
        s = (
            f"p50 {m['p50_us']:.0f} us, p99 {m['p99_us']:.0f} us, {m['rtt_per_s']:.0f} rtt/s, "
            f"requester cpu {m['requester_cpu']:.0%}"
        )
    else:
        s = (
            f"{m['kib_per_conn']:.1f} KiB/conn, held {m['held']}/{m['requested']} "
            f"(RSS {m['rss_before_kib']} -> {m['rss_after_kib']} KiB, {m['connect_s']:.1f} s to connect)"
        )
        if m.get("error"):
            s += f"; stopped {m['error']}"
    if "server_cpu" in m:
        s += f", server cpu {m['server_cpu']:.0%}"
        nodes = [f"node {n} {m[f'node{n}_cpu']:.0%}" for n in range(1, 10) if f"node{n}_cpu" in m]
        if nodes:
            s += f" ({' + '.join(nodes)})"
    if m.get("other_cpu", 0) >= NOISY_CPU:
        s += f" [other processes used {m['other_cpu']:.2f} cores: noisy]"
    elif "machine_cpu" in m and "other_cpu" not in m:
        s += f", machine cpu {m['machine_cpu']:.2f} cores"
    return what + s


def compare_abba(
    cfg: BenchConfig, labels: list[str], scenarios: Any, make: Callable[[str], Any], describe: Callable[[Any], str],
    run_one: Callable[[Any, str, int], dict[str, Any]], log: Callable[[str], None],
) -> list[dict[str, Any]]:
    """The scenarios in `scenarios` that `cfg` asks for, on one server set-up per label (`make(label)`, with
    start/alive/stop/close/log_tail; `describe` says what was started), runs alternating ABBA between the labels;
    a set-up that died is restarted. Returns result entries in `run_compare`'s shape; every set-up is closed at
    the end, also one whose start failed."""
    cases = [(s, z) for s, z in scenario_sizes(cfg) if s in scenarios]
    results: list[dict[str, Any]] = []
    targets: dict[str, Any] = {}
    try:
        for label in labels:
            target = targets[label] = make(label)
            target.start()
            log(f"started {label} {describe(target)}")
        for scen, size in cases:
            assert size is not None
            for run in range(cfg.runs):
                for label in labels if run % 2 == 0 else labels[::-1]:
                    target = targets[label]
                    if not target.alive():
                        log(f"{label} died; restarting\n{target.log_tail()}")
                        target.stop()
                        target.start()
                    job = lambda t=target, scen=scen, size=size: run_one(t, scen, size)  # noqa: E731
                    record_run(results, label, scen, size, run, cfg, job, log)
    finally:
        for target in targets.values():
            target.close()
    return results


def record_run(
    results: list[dict[str, Any]],
    label: str,
    scen: str,
    size: int | None,
    run: int,
    cfg: BenchConfig,
    fn: Callable[[], dict[str, Any]],
    log: Callable[[str], None],
) -> None:
    entry: dict[str, Any] = {"server": label, "scenario": scen, "size": size, "run": run}
    try:
        entry["metrics"] = fn()
        entry["error"] = None
        log(_describe(label, scen, size, run, cfg, entry["metrics"]))
    except BenchError as exc:
        entry["metrics"] = None
        entry["error"] = str(exc)
        log(f"[{label}] {scen}" + (f" {size}B" if size else "") + f" run {run + 1}: FAILED: {exc}")
    results.append(entry)


def run_and_report(
    prog: str,
    measure: Callable[[], dict[str, Any]],
    format_report: Callable[[dict[str, Any]], str],
    json_path: str | None,
    log: Callable[[str], None],
) -> tuple[int, dict[str, Any]]:
    """Run a bench and print its report (and write it as JSON to `json_path`): (0, report); or print why it could
    not run: (1, {}) on a BenchError, (130, {}) on Ctrl-C."""
    try:
        report = measure()
    except BenchError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 1, {}
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130, {}
    print(format_report(report))
    if json_path:
        Path(json_path).write_text(json.dumps(report, indent=2) + "\n")
        log(f"wrote {json_path}")
    return 0, report
