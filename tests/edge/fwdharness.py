"""Harness for the store-and-forward tests: hubs with JetStream, edges with a forward config, a proxy that can
lose the hub's answers, and readers of the hub stream.

Loopback only; every process is started here and stopped by PID. The hub is nats-server (`nats`) or our hub
(`hub`), started with the same config text (JetStream store directory + leafnodes port), both kept across restarts.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from pathlib import Path

import nats

from tests.compat.harness import free_port, stop_process, wait_until
from tests.edge.edgeharness import REPO, Edge

APP_DIR = str(Path(__file__).resolve().parent)  # fwdapp.py, the device code of these tests


def forward_config(name: str, hub_port: int | None, queues: list[dict], settings: dict | None = None,
                   listen: int | None = None, data: str = "data", app: str | None = None, **limits) -> dict:
    lim = {"reconnect_min": 0.05, "reconnect_max": 0.3, "ping_interval": 1}
    lim.update(limits)
    st = {"jitter": 0, "status": 0.2, "ack_timeout": 2}
    st.update(settings or {})
    return {"name": name, "listen": f"127.0.0.1:{listen}" if listen else None,
            "hub": {"url": f"nats-leaf://127.0.0.1:{hub_port}"} if hub_port else None, "data": data, "app": app,
            "forward": queues, "forward_settings": st, "limits": lim}


class FwdEdge(Edge):
    """An edge process whose app is tests/edge/fwdapp.py (parameters in fwdapp.json), restartable on the same
    working directory (so the same "data" folder); with `image`, its data lives on an emulated littlefs flash
    partition (tests/mp/flashboot.py) instead of a POSIX folder."""

    def __init__(self, cfg: dict, workdir: Path, image: tuple[str, int] | None = None, mpy: str | None = None):
        super().__init__(cfg, workdir, path=(mpy + ":" + str(REPO)) if mpy else str(REPO), extra_path=APP_DIR)
        self.image = image
        self.boots = 0

    def set_app(self, **params):
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "fwdapp.json").write_text(json.dumps(params))

    def start(self, wait: bool = True) -> FwdEdge:
        self.boots += 1
        super().start(wait)
        return self

    def command(self, cfg_path: Path) -> list[str]:
        if self.image is None:
            return super().command(cfg_path)
        return [*self.mp_command(), str(REPO / "tests" / "mp" / "flashboot.py"), self.image[0], str(self.image[1]),
                str(cfg_path)]

    def kill(self):
        """SIGKILL: a power cut as far as the flash image is concerned."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)
        if self._thread is not None:
            self._thread.join(timeout=2)

    def acked_keys(self) -> set[tuple[str, int]]:
        """(tag, index) of every record whose publish returned (the app's `ack` lines), over every boot so far."""
        out = set()
        for ln in list(self.lines):
            if ln.startswith("edge: app ack "):
                w = ln.split()
                out.add((w[5], int(w[3])))
        return out

    def errors(self) -> list[str]:
        return [ln for ln in list(self.lines) if ln.startswith("edge: app err ")]


class HoldProxy:
    """A TCP proxy between an edge and the hub's leafnode port. hold() makes it swallow everything the hub sends
    (PubAcks, PONGs) while the edge's bytes still reach the hub; cut() closes every connection."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.port = free_port()
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", self.port))
        self.lsock.listen(8)
        self.holding = False
        self.closed = False
        self.conns: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
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
                self.conns += [c, u]
            threading.Thread(target=self._pump, args=(c, u, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(u, c, True), daemon=True).start()

    def _pump(self, src, dst, from_hub):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if from_hub and self.holding:
                    continue
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def hold(self):
        self.holding = True

    def cut(self):
        with self.lock:
            conns, self.conns = self.conns, []
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        self.holding = False

    def close(self):
        self.closed = True
        self.lsock.close()
        self.cut()


async def add_stream(url: str, name: str, subjects: list[str], **cfg):
    nc = await nats.connect(url, allow_reconnect=False, connect_timeout=2)
    try:
        await nc.jetstream(timeout=3).add_stream(name=name, subjects=subjects, **cfg)
    finally:
        await nc.close()


async def stream_messages(url: str, name: str) -> list:
    """Every message of a stream, in stream order (STREAM.MSG.GET per sequence; deleted ones are skipped)."""
    nc = await nats.connect(url, allow_reconnect=False, connect_timeout=2)
    try:
        js = nc.jetstream(timeout=3)
        info = await js.stream_info(name)
        out = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            try:
                out.append(await js.get_msg(name, seq))
            except nats.js.errors.NotFoundError:
                continue
        return out
    finally:
        await nc.close()


def stream_last_seq(url: str, name: str) -> int:
    async def body():
        nc = await nats.connect(url, allow_reconnect=False, connect_timeout=2)
        try:
            return (await nc.jetstream(timeout=3).stream_info(name)).state.last_seq
        finally:
            await nc.close()

    return asyncio.run(body())


def msg_ids(msgs) -> list[str]:
    return [(m.headers or {}).get("Nats-Msg-Id", "") for m in msgs]


def payload_index(m) -> tuple[str, int]:
    """(tag, index) of a record written by fwdapp.py (payload "TAG INDEX xxx...")."""
    tag, idx = m.data.split()[:2]
    return tag.decode(), int(idx)


def wait_drained(edge: Edge, queue: str | None = None, timeout: float = 30.0, start: int | None = None) -> dict:
    """Wait for a status line (after line `start`, by default the current last one) showing every queue (or
    `queue`) with backlog 0 and nothing in flight; -> that queue's status."""
    found = {}
    first = len(edge.lines) if start is None else start

    def drained():
        for ln in reversed(list(edge.lines)[first:]):
            if ln.startswith("edge: fwdstatus "):
                st = json.loads(ln[len("edge: fwdstatus "):])
                qs = [q for q in st["queues"] if queue is None or q["name"] == queue]
                if qs and all(q["backlog"] == 0 and q["inflight"] == 0 for q in qs):
                    found.update(qs[0])
                    return True
                return False
        return False

    wait_until(drained, timeout, interval=0.05, msg=f"queue drained (edge output:\n{edge.output()})")
    return found


__all__ = ["FwdEdge", "HoldProxy", "forward_config", "add_stream", "stream_messages", "stream_last_seq",
           "msg_ids", "payload_index", "wait_drained", "stop_process", "free_port", "wait_until"]
