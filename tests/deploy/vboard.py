"""Real processes for the deploy tests: a MicroPython "virtual board" on a PTY, and nats-server as the hub.

The board is `natsedge vboard` (host/tools/vboard.py), run as a user runs it: the unix port behind a PTY, started in
a folder that acts as the board's flash, with MICROPYPATH ":.frozen:lib" (ESP32's sys.path is ['', '.frozen', '/lib']).
No socat: the PTYs are Python's os.openpty.

Every process is stopped by PID in `stop()`.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import tty
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    # dev dependencies of natsedge, installed next to the interpreter: missing means a broken environment
    p = BIN / name
    if not os.access(p, os.X_OK):
        raise AssertionError(f"{name} not found next to {sys.executable}: pip install -e '.[dev]'")
    return str(p)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(cond, timeout: float = 10.0, interval: float = 0.05, msg: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        r = cond()
        if r:
            return r
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {msg}")
        time.sleep(interval)


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def stop_pid(proc: subprocess.Popen | None, timeout: float = 5.0) -> None:
    """SIGTERM a process started by a test, its children first, then SIGKILL whatever is left; reap it."""
    if proc is None or proc.poll() is not None:
        return
    kids = _children(proc.pid)
    for pid in kids + [proc.pid]:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    for pid in kids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


class VirtualBoard:
    """`natsedge vboard` in a process of its own; `flash` is its working folder (its "flash"), `port` the PTY link."""

    def __init__(self, flash: Path, heapsize: int = 200_000, *extra: str):
        self.flash = flash
        self.heapsize = heapsize
        self.extra = extra
        self.port = str(flash.parent / f"{flash.name}.pty")
        self.log = flash.parent / f"{flash.name}.vboard.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> VirtualBoard:
        tool("micropython")  # a dev dependency: missing means a broken environment, not a skipped test
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "host.tools.cli", "vboard", "--flash", str(self.flash), "--port", self.port,
                 "--heapsize", str(self.heapsize), *self.extra],
                cwd=REPO, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)

        def up():
            if self.proc.poll() is not None:
                raise AssertionError(f"natsedge vboard exited: {self.log.read_text()}")
            return os.path.exists(self.port) and b"vboard: port " in self.log.read_bytes()

        wait_until(up, 15, msg="the virtual board's PTY")
        return self

    def stop(self) -> None:
        # SIGTERM to natsedge vboard alone: it stops its MicroPython itself (killed first, it would be restarted)
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        stop_pid(self.proc)
        self.proc = None


class SilentPort:
    """A PTY nobody answers on: this process holds both ends and never reads or writes."""

    def __init__(self, path: Path):
        self.port = str(path)
        self.fds: tuple[int, int] | None = None

    def start(self) -> SilentPort:
        self.fds = os.openpty()
        tty.setraw(self.fds[1])
        os.symlink(os.ttyname(self.fds[1]), self.port)
        return self

    def stop(self) -> None:
        if self.fds is not None:
            for fd in self.fds:
                os.close(fd)
            self.fds = None
        if os.path.islink(self.port):
            os.unlink(self.port)


class Hub:
    """nats-server with a client port and a leafnode port on 127.0.0.1."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.port = free_port()
        self.leaf_port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def leaf_url(self) -> str:
        return f"nats-leaf://127.0.0.1:{self.leaf_port}"

    def start(self) -> Hub:
        conf = self.workdir / "hub.conf"
        conf.write_text(f"listen: 127.0.0.1:{self.port}\nleafnodes {{ listen: 127.0.0.1:{self.leaf_port} }}\n")
        with open(self.workdir / "hub.log", "ab") as log:  # "ab": a restarted hub keeps the first log
            self.proc = subprocess.Popen([tool("nats-server"), "-c", str(conf)], stdout=log,
                                         stderr=subprocess.STDOUT)

        def up():
            if self.proc.poll() is not None:
                raise AssertionError(f"nats-server exited: {(self.workdir / 'hub.log').read_text()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return True
            except OSError:
                return False

        wait_until(up, 10, msg="nats-server")
        return self

    def stop(self) -> None:
        stop_pid(self.proc)
        self.proc = None


def run_cli(module: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """`python -m host.<module> ...` from the repository root, as a user would run the command."""
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout)
