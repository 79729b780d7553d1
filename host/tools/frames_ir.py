"""A deterministic in-process driver for counting the hub's instructions per frame (not a timing bench).

It runs a Server in-process, connects clients and a leaf over stand-in transports, and feeds a publisher the byte
stream of one benchmark load in fixed-size reads, through Client.data_received as a socket read would:

- ``reply``: benchvar's "pub reply~" (shared/perf/loadgen/loadgen_var.c, -v 3, 128 B): ``PUB bench.s
  _INBOX.k3Jd8s.<6 digits> 128``, the reply cycling over the 448 frames of the generator's 64 KiB buffer, from a
  client that CONNECTs as the loadgen does; no subscriber (so every frame is dropped). ``reply-k1``: the same with
  one subscriber on ``bench.s`` (benchvar's v3k1). ``reply-sizes``: as ``reply`` with another size on every frame
  (a guard, not a benchvar load).
- ``leaf1``: ``natsedge bench --compare --scenarios leaf1 --sizes 128`` (host/tools/bench_leaf.py): the core mix
  (host/tools/benchlib.py build_batches: subjects bench.s.0..7, jittered sizes, 25% unique replies, a PING per
  batch) as LMSG from a leaf connection, one client subscriber on ``bench.s.*``.

Count with callgrind, twice, and divide the difference by the difference of frames (that removes start-up):

    valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.%p python -m host.tools.frames_ir reply 20000
    valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.%p python -m host.tools.frames_ir reply 120000

With a third argument ``check`` the script also prints the messages the subscribers got and a digest of every byte
the hub wrote after the set-up, so two versions of the hub can be checked for the same output on the same input.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import sys
from typing import Any

from host.client import Client
from host.leafnode import Leaf
from host.opts import Options
from host.server import Server
from host.tools.benchlib import LoadMix, build_batches

CHUNK = 65536  # bytes per read (what one socket read of a busy publisher gives, at most 256 KiB)
LOADGEN_CONNECT = (b'CONNECT {"verbose":false,"pedantic":false,"name":"loadgen","lang":"c","version":"0.1",'
                   b'"protocol":1}\r\n')


class Sink:
    """Stands in for a connection's socket: keeps what the hub writes, digested and counted at the end (so the
    counts of the hub's work are not mixed with hashing)."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.recording = False

    def write(self, data: bytes) -> None:
        if self.recording:
            self.writes.append(data)

    def writelines(self, parts: Any) -> None:
        for p in parts:
            self.write(p)

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, key: str) -> Any:
        return ("127.0.0.1", 1) if key in ("peername", "sockname") else None

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


def reply_stream(frames: int) -> tuple[bytes, int]:
    """loadgen_var.c -v 3 -s 128: the 64 KiB buffer of frames, repeated."""
    flen = len(b"PUB bench.s 128\r\n") + 128 + 2
    fpc = 65536 // flen
    buf = b"".join(b"PUB bench.s _INBOX.k3Jd8s.%06d 128\r\n" % i + b"x" * 128 + b"\r\n" for i in range(fpc))
    reps = -(-frames // fpc)
    return buf * reps, reps * fpc


def reply_sizes_stream(frames: int) -> tuple[bytes, int]:
    """As reply_stream, but every frame with another size (100-999, so the line keeps its length): a guard for
    the lane's per-size work, e.g. JetStream publishes of varied sizes with their own reply (not a benchvar load)."""
    rng = random.Random(1)
    fpc = 448
    buf = b"".join(b"PUB bench.s _INBOX.k3Jd8s.%06d %d\r\n" % (i, z) + b"x" * z + b"\r\n"
                   for i, z in ((i, rng.randrange(100, 1000)) for i in range(fpc)))
    reps = -(-frames // fpc)
    return buf * reps, reps * fpc


def leaf_stream(frames: int) -> tuple[bytes, int]:
    """The leaf1 publisher's batches (benchlib.publisher, worker 0, 128 B), the epoch bumped on every pass."""
    epoch = bytearray(b"%08x" % 0)
    batches = build_batches(128, LoadMix(), 1 * 7919 + 0 * 131 + 128, "p0", epoch, b"LMSG")
    out = []
    total = cycle = 0
    while total < frames:
        for b in batches:
            out.append(b"".join(bytes(p) for p in b.parts))
            total += b.msgs
        cycle += 1
        epoch[:] = b"%08x" % (cycle & 0xFFFFFFFF)
    return b"".join(out), total


def connect(server: Server, cls: type, hello: bytes) -> tuple[Client, Sink]:
    sink = Sink()
    c = cls(server)
    c.connection_made(sink)
    c.data_received(hello)
    return c, sink


async def run(load: str, frames: int, check: bool) -> None:
    server = Server(Options())
    server.loop = asyncio.get_running_loop()
    sinks = []
    if load in ("reply", "reply-k1", "reply-sizes"):
        if load == "reply-k1":
            sinks.append(connect(server, Client, LOADGEN_CONNECT + b"SUB bench.s 1\r\nPING\r\n")[1])
        pub, psink = connect(server, Client, LOADGEN_CONNECT + b"PING\r\n")
        data, frames = (reply_sizes_stream if load == "reply-sizes" else reply_stream)(frames)
    elif load == "leaf1":
        sinks.append(connect(server, Client, LOADGEN_CONNECT + b"SUB bench.s.* 1\r\nPING\r\n")[1])
        hello = {"version": "2.15.1", "name": "bench-leaf-0", "headers": True, "protocol": 1, "compress_mode": "off"}
        pub, psink = connect(server, Leaf, b"CONNECT " + json.dumps(hello).encode() + b"\r\nPING\r\n")
        data, frames = leaf_stream(frames)
    else:
        raise SystemExit(f"load: reply, reply-k1, reply-sizes or leaf1, not {load!r}")
    for s in (psink, *sinks):
        s.recording = True
    recv = pub.data_received
    for off in range(0, len(data), CHUNK):
        recv(data[off : off + CHUNK])
    if not check:
        print(f"load={load} frames={frames} in_msgs={server.in_msgs} closed={pub.closed}")
        return
    digest = hashlib.sha256()
    for s in (psink, *sinks):
        digest.update(hashlib.sha256(b"".join(s.writes)).digest())
    got = [sum(w.count(b"MSG ") for w in s.writes) for s in sinks]
    nbytes = [sum(map(len, s.writes)) for s in (psink, *sinks)]
    print(f"load={load} frames={frames} in_msgs={server.in_msgs} delivered={got} out_bytes={nbytes} "
          f"closed={pub.closed} digest={digest.hexdigest()[:16]}")


def main(argv: list[str]) -> None:
    load = argv[0] if argv else "reply"
    frames = int(argv[1]) if len(argv) > 1 else 100_000
    asyncio.run(run(load, frames, argv[2:3] == ["check"]))


if __name__ == "__main__":
    main(sys.argv[1:])
