"""Real processes for the deploy tests: a MicroPython "virtual board" on a PTY, and nats-server as the hub.

The board is the recipe of shared/micropython/probes/vboard.sh: socat runs the unix port behind a PTY, started in a
folder that acts as the board's flash, with MICROPYPATH ":.frozen:lib" (ESP32's sys.path is ['', '.frozen', '/lib']).
mpremote must use `resume` with it: its soft reset (Ctrl-D at the raw REPL) would end the process.

Every process is stopped by PID in `stop()`, children first.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
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
    """The MicroPython unix port behind a PTY; `flash` is its working folder (its "flash")."""

    def __init__(self, flash: Path, heapsize: int = 200_000):
        self.flash = flash
        self.heapsize = heapsize
        self.port = str(flash.parent / f"{flash.name}.pty")
        self.log = flash.parent / f"{flash.name}.socat.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> VirtualBoard:
        self.flash.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, MICROPYPATH=":.frozen:lib")
        mp = tool("micropython")
        with open(self.log, "wb") as log:
            # socat 1.7.4 has no chdir= option: the child inherits cwd from socat.
            self.proc = subprocess.Popen(
                ["socat", f"PTY,link={self.port},raw,echo=0",
                 f"EXEC:{mp} -X heapsize={self.heapsize},pty,raw,echo=0,stderr,setsid,ctty"],
                cwd=self.flash, env=env, stdout=log, stderr=subprocess.STDOUT)
        wait_until(lambda: os.path.exists(self.port) and _children(self.proc.pid), 10, msg="the virtual board's PTY")
        return self

    def stop(self) -> None:
        stop_pid(self.proc)
        self.proc = None


class SilentPort:
    """A PTY nobody answers on: socat links it to `sleep`, which never reads or writes."""

    def __init__(self, path: Path):
        self.port = str(path)
        self.proc: subprocess.Popen | None = None

    def start(self) -> SilentPort:
        self.proc = subprocess.Popen(["socat", f"PTY,link={self.port},raw,echo=0", "SYSTEM:sleep 120"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: os.path.exists(self.port), 10, msg="the silent PTY")
        return self

    def stop(self) -> None:
        stop_pid(self.proc)
        self.proc = None


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
