"""Harness for the KV cache tests: a JetStream hub with a leafnode port, gates that partition one edge from it,
MicroPython edges running tests/edge/kvcache_app.py, and nats-py helpers for the hub bucket.

Loopback only; every process is started here and stopped by PID (tests/compat/harness.py, edgeharness.py).
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from pathlib import Path

import nats
import pytest
from nats.js.errors import NoKeysError, NotFoundError

from tests.edge.edgeharness import REPO, Edge, Proxy

APP_PATH = str(REPO / "tests" / "edge")


class Gate(Proxy):
    """A proxy in front of the hub's leaf port that can partition its edge: while closed, connections are
    accepted and dropped at once (the edge sees the hub go away and keeps retrying)."""

    def __init__(self, target_port: int):
        self.blocked = False
        super().__init__(target_port)

    def _accept_loop(self):
        while not self.closed:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            if self.blocked:
                c.close()
                continue
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

    def partition(self):
        self.blocked = True
        self.cut()

    def heal(self):
        self.blocked = False


def kv_edge_config(name: str, listen: int, hub_port: int | None, buckets: dict, **kv) -> dict:
    cfg = {"name": name, "listen": f"127.0.0.1:{listen}", "app": "kvcache_app", "data": "data",
           "hub": {"url": f"nats-leaf://127.0.0.1:{hub_port}"} if hub_port else None,
           "limits": {"reconnect_min": 0.05, "reconnect_max": 0.3, "ping_interval": 2},
           "kv": {"buckets": buckets, **kv}}
    return cfg


def start_edge(cfg: dict, workdir: Path, started: list, heapsize: str | None = None, path: str | None = None) -> Edge:
    e = Edge(cfg, workdir, heapsize=heapsize, path=path, extra_path=APP_PATH)
    started.append(e)
    return e.start()


async def ctl(edge: Edge, op: str, timeout: float = 5.0, **kw) -> dict:
    """One request to the edge app over the edge's LAN port."""
    nc = await nats.connect(edge.url, allow_reconnect=False, connect_timeout=timeout)  # a busy edge answers late
    try:
        msg = await nc.request(f"kvctl.{edge.cfg['name']}", json.dumps({"op": op, **kw}).encode(), timeout=timeout)
    except nats.errors.TimeoutError:
        name = edge.cfg["name"]
        raise AssertionError(f"{name} {op}: no answer in {timeout}s; edge output:\n{edge.output()}") from None
    finally:
        await nc.close()
    out = json.loads(msg.data)
    if isinstance(out, dict) and "error" in out:
        raise AssertionError(f"{edge.cfg['name']} {op}: {out['error']}")
    return out


async def edge_dump(edge: Edge, bucket: str = "b") -> dict[str, str]:
    """Every key and value the edge caches, fetched in pages."""
    out: dict[str, str] = {}
    while True:
        r = await ctl(edge, "dump", bucket=bucket, start=len(out), count=200)
        out.update(r["page"])
        if not r["page"] or len(out) >= r["total"]:
            return out


async def hub_value(kv, key: str) -> bytes | None:
    """The hub's value of key; None when deleted, purged or expired (a TTL delete marker, which nats-py
    returns as an entry, counts as gone)."""
    try:
        m = await kv._js.get_msg(kv._stream, subject=kv._pre + key, direct=True)
    except NotFoundError:
        return None
    h = m.headers or {}
    if h.get("KV-Operation") in ("DEL", "PURGE") or "Nats-Marker-Reason" in h:
        return None
    return m.data


async def hub_dump(kv) -> dict[str, str]:
    try:
        keys = await kv.keys()
    except NoKeysError:
        return {}
    out = {}
    for k in keys:
        v = await hub_value(kv, k)
        if v is not None:
            out[k] = v.decode()
    return out


async def wait_for(cond, timeout: float, msg: str, interval: float = 0.05):
    """Await an async predicate until it returns a truthy value; fail with the last value seen."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = await cond()
        if last:
            return last
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {msg}")
        await asyncio.sleep(interval)


async def edge_idle(edge: Edge, bucket: str = "b") -> bool:
    st = (await ctl(edge, "status"))["buckets"][bucket]
    return st["online"] and st["synced"] and st["dirty"] == 0
