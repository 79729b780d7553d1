"""A small asyncio NATS client for the simulator's own hub connection (also the dashboard's and `natsedge trace`'s),
on the sans-IO `edge/proto.py`.

The simulator must not need nats-py (`make run` installs the hub extra only), and it wants plain behaviour it can
account for: one connection, re-dialled after it drops (a hub restart), subscriptions re-sent on every connection,
publishes while disconnected refused rather than buffered (so the report never counts a message twice). Given several
URLs (the nodes of a cluster), it stays on one while it works and moves to the next when that one fails.
"""

from __future__ import annotations

import asyncio
import binascii
import os
from collections.abc import Callable
from urllib.parse import urlsplit

from edge import proto

Handler = Callable[[bytes, bytes | None, bytes | None, bytes], None]  # subject, reply, hdr, payload


class NoResponders(Exception):
    pass


class NotConnected(Exception):
    pass


def parse_url(url: str, default_port: int = 4222) -> tuple[str, int]:
    parts = urlsplit(url if "://" in url else "nats://" + url)
    if not parts.hostname:
        raise ValueError(f"no host in {url!r}")
    try:
        port = parts.port or default_port
    except ValueError:
        raise ValueError(f"bad port in {url!r}") from None
    return parts.hostname, port


class Client:
    def __init__(self, url: str | list[str], name: str = "natsedge-sim",
                 on_state: Callable[[bool], None] | None = None) -> None:
        self.urls = [parse_url(u) for u in ([url] if isinstance(url, str) else url)]
        if not self.urls:
            raise ValueError("no URL")
        self.at = 0  # index in urls of the server used now (or dialled next)
        self.host, self.port = self.urls[0]
        self.name = name
        self.on_state = on_state
        self.connected = False
        self.connects = 0
        self.last_error = ""
        self._subs: dict[bytes, tuple[bytes, Handler, bytes | None]] = {}  # sid -> (subject, handler, queue group)
        self._sid = 0
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._inbox = b"_INBOX." + binascii.hexlify(os.urandom(8)) + b"."
        self._inbox_sid: bytes | None = None
        self._waiting: dict[bytes, asyncio.Future[tuple[bytes | None, bytes]]] = {}
        self._token = 0
        self._pongs: list[asyncio.Future[None]] = []  # flush() calls waiting for the PONG of their PING
        self._up = asyncio.Event()
        self._dialled = asyncio.Event()  # set once a dial has ended: connected, or failed with last_error

    # ---- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def wait_connected(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._up.wait(), timeout)
            return True
        except TimeoutError:
            return False

    async def wait_first_dial(self, timeout: float) -> bool:
        """True once connected; False as soon as the first dial fails (the reason in last_error) or after `timeout`:
        for a one-shot command, which should say at once that nothing answers instead of dialling again."""
        try:
            await asyncio.wait_for(self._dialled.wait(), timeout)
        except TimeoutError:
            self.last_error = self.last_error or f"no answer within {timeout:g} s"
        return self.connected

    async def close(self) -> None:
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self._drop_writer()

    async def _run(self) -> None:
        delay = 0.05
        while not self._closing:
            try:
                await self._session()
                delay = 0.05
            except (OSError, TimeoutError, proto.ProtocolError, ValueError) as e:
                self.last_error = str(e) or type(e).__name__
            if self.connected:  # it was up: dial again soon
                delay = 0.05
            self._set_connected(False)
            self._dialled.set()
            if len(self.urls) > 1:  # that server failed or went away: the next one
                self.at = (self.at + 1) % len(self.urls)
                self.host, self.port = self.urls[self.at]
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    async def _session(self) -> None:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(self.host, self.port), 2)
        self._writer = writer
        parser = proto.Parser(proto.KIND_SERVER)
        try:
            ev = await self._next(reader, parser, timeout=5)
            if ev[0] != proto.OP_INFO:
                raise proto.ProtocolError(f"expected INFO, got op {ev[0]}")
            out = [proto.encode_connect({"verbose": False, "pedantic": False, "headers": True, "no_responders": True,
                                         "protocol": 1, "name": self.name, "lang": "python-natsedge-sim",
                                         "version": "0.1.0"})]
            for sid, (subject, _h, queue) in self._subs.items():
                out.append(proto.encode_sub(subject, sid, queue))
            out.append(proto.PING)
            writer.write(b"".join(out))
            await writer.drain()
            while True:
                ev = await self._next(reader, parser, timeout=None)
                op = ev[0]
                if op == proto.OP_MSG:
                    self._dispatch(ev[2], ev[1], ev[3], ev[4], ev[5])
                elif op == proto.OP_PING:
                    writer.write(proto.PONG)
                elif op == proto.OP_PONG and not self.connected:
                    self.connects += 1
                    self._set_connected(True)
                elif op == proto.OP_PONG and self._pongs:
                    fut = self._pongs.pop(0)
                    if not fut.done():
                        fut.set_result(None)
                elif op == proto.OP_ERR:
                    self.last_error = ev[1]
                elif op == proto.OP_CLOSED:
                    return
        finally:
            self._drop_writer()

    async def _next(self, reader: asyncio.StreamReader, parser: proto.Parser, timeout: float | None) -> tuple:
        while True:
            ev = parser.next_event()
            if ev is not proto.NEED_DATA:
                return ev
            if timeout is None:
                data = await reader.read(65536)
            else:
                data = await asyncio.wait_for(reader.read(65536), timeout)
            parser.receive_data(data)

    def _drop_writer(self) -> None:
        w, self._writer = self._writer, None
        if w is not None:
            w.close()
        for fut in self._waiting.values():
            if not fut.done():
                fut.set_exception(NotConnected("connection to the hub lost"))
        self._waiting.clear()
        pongs, self._pongs = self._pongs, []
        for pong in pongs:
            if not pong.done():
                pong.set_exception(NotConnected("connection to the hub lost"))

    def _set_connected(self, up: bool) -> None:
        if up == self.connected:
            return
        self.connected = up
        if up:
            self._up.set()
            self._dialled.set()
        else:
            self._up.clear()
        if self.on_state is not None:
            self.on_state(up)

    # ---- messages ----------------------------------------------------------------------------------

    def subscribe(self, subject: str, handler: Handler, queue: str | None = None) -> bytes:
        """Kept until unsubscribe(sid), re-sent on every connection; `queue`: a member of that queue group. Returns
        the sid."""
        self._sid += 1
        sid = b"%d" % self._sid
        group = queue.encode() if queue else None
        self._subs[sid] = (subject.encode(), handler, group)
        if self._writer is not None:
            self._writer.write(proto.encode_sub(subject.encode(), sid, group))
        return sid

    def sids(self) -> list[bytes]:
        """The subscriptions made with subscribe() and not unsubscribed."""
        return [sid for sid in self._subs if sid != self._inbox_sid]

    def unsubscribe(self, sid: bytes) -> None:
        if self._subs.pop(sid, None) is not None and self._writer is not None:
            self._writer.write(proto.encode_unsub(sid))

    async def flush(self, timeout: float = 5.0) -> None:
        """A PING and its PONG: everything written before (SUBs, PUBs) has been processed by the server."""
        if self._writer is None or not self.connected:
            raise NotConnected("not connected to the hub")
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pongs.append(fut)
        self._writer.write(proto.PING)
        await asyncio.wait_for(fut, timeout)

    def publish(self, subject: str | bytes, data: bytes, reply: bytes | None = None, hdr: bytes | None = None) -> None:
        """hdr: a header block (proto.encode_headers) makes it an HPUB."""
        if self._writer is None or not self.connected:
            raise NotConnected("not connected to the hub")
        subj = subject.encode() if isinstance(subject, str) else subject
        self._writer.write(proto.encode_pub(subj, data, reply, hdr))

    async def request(self, subject: str, data: bytes, timeout: float) -> bytes:
        """The reply's payload; NoResponders on a 503 status, TimeoutError, or NotConnected."""
        if self._inbox_sid is None:
            self._inbox_sid = self.subscribe((self._inbox + b"*").decode(), self._on_reply)
        self._token += 1
        token = b"%d" % self._token
        fut: asyncio.Future[tuple[bytes | None, bytes]] = asyncio.get_running_loop().create_future()
        self._waiting[token] = fut
        try:
            self.publish(subject, data, self._inbox + token)
            hdr, payload = await asyncio.wait_for(fut, timeout)
        finally:
            self._waiting.pop(token, None)
        if hdr:
            status, _desc, _pairs = proto.decode_headers(hdr)
            if status == 503:
                raise NoResponders(subject)
        return payload

    def _on_reply(self, subject: bytes, reply: bytes | None, hdr: bytes | None, payload: bytes) -> None:
        fut = self._waiting.get(subject[len(self._inbox):])
        if fut is not None and not fut.done():
            fut.set_result((hdr, payload))

    def _dispatch(self, sid: bytes, subject: bytes, reply: bytes | None, hdr: bytes | None, payload: bytes) -> None:
        entry = self._subs.get(sid)
        if entry is not None:
            entry[1](subject, reply, hdr, payload)
