"""One TCP proxy per edge between the edge and the hub's leafnode port: the place where a partition happens.

Two ways to cut:
- blackhole: nothing moves in either direction and nothing is closed, as when a network path dies. Bytes already
  read wait in the proxy (at most one read per direction), the rest waits in the kernel's socket buffers; new
  connections are accepted and held without dialling the hub. Each side notices only through its own pings. On
  heal, everything that waited flows again in order (TCP would have delivered it too), closes included.
- reset: every connection through the proxy is aborted (RST) and new ones are aborted at once, as when the hub's
  host is reachable but refuses.
Cuts nest (a second cut while cut keeps it cut until both healed); the latest mode applies.

With a cluster of hubs an edge has one proxy per hub node (a `ProxyGroup`), and a partition cuts all of them: the
edge loses every path at once, as when its own network dies.
"""

from __future__ import annotations

import asyncio
import contextlib

_READ = 65536


class _Pair:
    __slots__ = ("edge", "hub", "tasks")

    def __init__(self, edge: asyncio.StreamWriter) -> None:
        self.edge = edge
        self.hub: asyncio.StreamWriter | None = None
        self.tasks: list[asyncio.Task[None]] = []

    def abort(self) -> None:
        for w in (self.edge, self.hub):
            if w is not None:
                w.transport.abort()

    def close(self) -> None:
        for w in (self.edge, self.hub):
            if w is not None:
                w.close()


class Proxy:
    def __init__(self, name: str, target_host: str, target_port: int) -> None:
        self.name = name
        self.target = (target_host, target_port)
        self.port = 0
        self.cuts = 0
        self.mode: str | None = None  # None while open
        self.accepted = 0
        self.bytes_up = 0  # edge -> hub
        self.bytes_down = 0
        self._open = asyncio.Event()
        self._open.set()
        self._pairs: set[_Pair] = set()
        self._server: asyncio.AbstractServer | None = None

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._server = await asyncio.start_server(self._handle, host, port, backlog=128)
        self.port = self._server.sockets[0].getsockname()[1]

    def set_target(self, host: str, port: int) -> None:
        self.target = (host, port)

    def cut(self, mode: str) -> None:
        self.cuts += 1
        self.mode = mode
        self._open.clear()
        if mode == "reset":
            for p in list(self._pairs):
                p.abort()

    def heal(self, force: bool = False) -> bool:
        """Returns True when the path is open again (the last nested cut healed)."""
        self.cuts = 0 if force else max(0, self.cuts - 1)
        if self.cuts:
            return False
        self.mode = None
        self._open.set()
        return True

    @property
    def is_cut(self) -> bool:
        return self.mode is not None

    @property
    def attached(self) -> bool:
        """Some connection through this proxy is joined to the hub right now."""
        return any(p.hub is not None and not p.hub.transport.is_closing() for p in self._pairs)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for p in list(self._pairs):
            p.abort()
            for t in p.tasks:
                t.cancel()
        self._open.set()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self.mode == "reset":
            writer.transport.abort()
            return
        pair = _Pair(writer)
        self._pairs.add(pair)
        try:
            await self._open.wait()
            if self.mode == "reset" or writer.transport.is_closing():
                writer.transport.abort()
                return
            try:
                hub_reader, hub_writer = await asyncio.wait_for(asyncio.open_connection(*self.target), 2)
            except (OSError, TimeoutError):
                writer.transport.abort()  # the hub is down: the edge sees its dial fail
                return
            pair.hub = hub_writer
            pair.tasks = [asyncio.create_task(self._pump(reader, hub_writer, pair, True)),
                          asyncio.create_task(self._pump(hub_reader, writer, pair, False))]
            await asyncio.gather(*pair.tasks, return_exceptions=True)
        finally:
            self._pairs.discard(pair)
            pair.close()

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, pair: _Pair, up: bool) -> None:
        try:
            while True:
                await self._open.wait()
                data = await src.read(_READ)
                await self._open.wait()  # a blackhole holds what was read, EOF included
                if not data:
                    break
                if up:
                    self.bytes_up += len(data)
                else:
                    self.bytes_down += len(data)
                dst.write(data)
                await dst.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            pair.close()  # one side gone: the other side sees it too (after what was written reaches it)


class ProxyGroup:
    """One edge's proxies, one per hub node (index = node index); cut and healed together."""

    def __init__(self, name: str, targets: list[tuple[str, int]]) -> None:
        self.name = name
        self.proxies = [Proxy(name, host, port) for host, port in targets]

    async def start(self, host: str = "127.0.0.1") -> None:
        for p in self.proxies:
            await p.start(host)

    @property
    def port(self) -> int:
        return self.proxies[0].port

    @property
    def ports(self) -> list[int]:
        return [p.port for p in self.proxies]

    def cut(self, mode: str) -> None:
        for p in self.proxies:
            p.cut(mode)

    def heal(self, force: bool = False) -> bool:
        """True when the paths are open again (the last nested cut healed)."""
        return all([p.heal(force) for p in self.proxies])

    @property
    def is_cut(self) -> bool:
        return any(p.is_cut for p in self.proxies)

    @property
    def mode(self) -> str | None:
        return self.proxies[0].mode

    def attached(self, node: int) -> bool:
        return self.proxies[node].attached

    @property
    def accepted(self) -> int:
        return sum(p.accepted for p in self.proxies)

    @property
    def bytes_up(self) -> int:
        return sum(p.bytes_up for p in self.proxies)

    @property
    def bytes_down(self) -> int:
        return sum(p.bytes_down for p in self.proxies)

    async def close(self) -> None:
        for p in self.proxies:
            await p.close()
