# edge/leaf/link.py — one TCP stream of the leaf (a LAN client or the hub link): bounded output,
# reads into a shared buffer, close.
#
# Rules this file keeps:
# 1. Output is bounded: write() refuses (returns False) once more than `limit` bytes would be
#    pending; the caller applies its overflow policy (LAN client: close it as a slow consumer;
#    hub link: drop the message and count it). Only small protocol ops may pass with force=True.
# 2. No drain() on MicroPython and no task per connection for output. MicroPython's Stream.write()
#    sends what the socket takes at once and keeps the rest in Stream.out_buf; its drain() loses
#    bytes written while it runs and its IOQueue allows one writer per socket. So one module-level
#    task (_drainer) hands every backlogged out_buf to its socket, without blocking, every 5 ms
#    until all are empty, then ends. On CPython the transport drains by itself.
# 3. Reads on MicroPython go through one preallocated buffer shared by every link (readinto),
#    copied out before the next await; CPython's StreamReader has no readinto and uses read(n). A read with no
#    memory for its copy is handed over as a view of that buffer, for the parser to skip. On a small heap
#    (edge.compat.small_heap) the buffer is 128 bytes, not 256: each copy, and each parser join of a tail with
#    the next read, is then a contiguous block of ~150 bytes instead of ~280, which a fragmented heap still has
#    (the frozen forward + KV scenario: smallest heap 58.8-60.5 KB against 59.6-60.5, docs/benchmarks.md).
#    Feature detection only: edge/compat.py stays the one place that asks for the interpreter.

import asyncio

from edge.compat import small_heap

_READ_SIZE = 256  # 128 on a small heap (rule 3)
_rbuf = None
_rmv = None
_backlog = []  # MicroPython links whose Stream.out_buf is not empty
_task = None


def _pending(w):
    # Bytes the stream itself still holds: MicroPython Stream.out_buf, or the CPython transport.
    b = getattr(w, "out_buf", None)
    if b is not None:
        return len(b)
    return w.transport.get_write_buffer_size()


def _push(w):
    # One non-blocking attempt to hand a MicroPython Stream's out_buf to its socket; bytes left.
    buf = w.out_buf
    if buf:
        n = w.s.write(buf)
        if n:
            buf = w.out_buf = buf[n:]
    return len(buf)


async def _drainer():
    # Lives while some link has a backlog (no Event to sleep on: each costs heap on MicroPython).
    global _task
    try:
        while _backlog:
            for link in list(_backlog):
                try:
                    left = _push(link.w)
                except OSError:
                    link.closed = True
                    left = 0
                if not left:
                    _backlog.remove(link)
            if _backlog:
                await asyncio.sleep(0.005)
    finally:
        _task = None


def init():
    # Allocate the shared read buffer early, before the heap fragments.
    global _rbuf, _rmv
    if _rbuf is None:
        _rbuf = bytearray(128 if small_heap() else _READ_SIZE)
        _rmv = memoryview(_rbuf)


class Link:
    closed = False  # a class attribute until the link closes: each instance attribute costs heap on MicroPython

    def __init__(self, reader, writer, limit):
        self.r = reader
        self.w = writer
        self.limit = limit

    def pending(self):
        return _pending(self.w)

    def write(self, data, force=False):
        # Queue bytes for the peer; False if the link is closed or `limit` would be exceeded.
        # data: bytes, or a tuple of parts (proto's parts=True framing of a big payload), written one by one.
        # force: small protocol ops (PONG, LS+) that must not be lost go out past the limit.
        global _task
        parts = type(data) is tuple
        n = len(data[0]) + len(data[1]) + len(data[2]) if parts else len(data)
        if self.closed or (not force and _pending(self.w) + n > self.limit):
            return False
        w = self.w
        try:
            if parts:
                for p in data:
                    w.write(p)
            else:
                w.write(data)  # MicroPython sends at once what the socket takes
        except OSError:
            self.closed = True
            return False
        if getattr(w, "out_buf", None) and self not in _backlog:
            _backlog.append(self)
            if _task is None:
                _task = asyncio.create_task(_drainer())
        return True

    async def wait_below(self, level):
        # Wait until at most `level` bytes are pending (flow control for apublish).
        while not self.closed and _pending(self.w) > level:
            if hasattr(self.w, "transport"):
                await self.w.drain()  # CPython: returns once under the transport's low-water mark
            await asyncio.sleep(0.005)

    async def read(self):
        # The next chunk from the peer; b"" at EOF. Raises OSError on a broken connection.
        r = self.r
        if hasattr(r, "readinto"):
            init()
            while True:
                n = await r.readinto(_rbuf)
                if n is not None:  # None: a TLS record not complete yet
                    try:
                        return bytes(_rmv[:n])
                    except MemoryError:  # the buffer itself, valid until the next read: the parser skips it
                        return _rmv[:n]  # into the message it cannot hold (edge/proto.py rule 5)
        return await r.read(_READ_SIZE)

    async def close(self, graceful=False):
        # graceful: give what is queued up to 1 s to leave first (for a final -ERR).
        self.closed = True
        w = self.w
        tr = getattr(w, "transport", None)
        try:
            if tr is not None:  # CPython: close() still flushes, abort() does not wait for the peer
                if graceful:
                    tr.close()
                else:
                    tr.abort()
                return
            for _ in range(100 if graceful else 0):
                if not _push(w):
                    break
                await asyncio.sleep(0.01)
        except OSError:
            pass
        finally:
            if self in _backlog:
                _backlog.remove(self)
        try:
            w.close()
            await w.wait_closed()
        except OSError:
            pass
