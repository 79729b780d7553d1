"""The leafnode scenarios of `natsedge bench --compare` (docs/benchmarks.md, "Leafnode").

``leaf1`` / ``leaf4``: a leafnode connection publishes into the server and 1 or 4 client subscribers count what
the server delivers; reported is msgs/s delivered, summed over the subscribers, as for ``pubsub1``/``pubsub4``.

Both servers get the same extra config file, ``leafnodes { listen: 127.0.0.1:<free port> }`` (nats-server
syntax, which the hub reads too; the command-line flags of the other scenarios still set the client port).
The leaf is this bench on a raw socket: it reads the leafnode port's INFO, sends a leaf CONNECT (no ``lang``
field, or nats-server takes it for a client on the wrong port) and PING, then waits until the server has
announced the subscribers' interest with ``LS+`` (a leaf only forwards what the other side is interested in, and
a server only announces interest that exists).  Then it sends the core scenarios' varied load (``build_batches``:
subjects ``bench.s.0..7``, jittered sizes, unique reply subjects on a share of frames) as ``LMSG`` frames instead
of ``PUB``, from the core publisher (`benchlib.publisher`, the same PING/PONG and credit-window flow control).
Subscribers are the core bench's `subscriber` workers, and every subscriber's total must equal what the leaf
published.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from host.tools.benchlib import (
    LOCALHOST,
    SUB_SUBJECTS,
    BenchConfig,
    BenchError,
    Endpoint,
    ServerProcess,
    WorkerSpec,
    check_err,
    compare_abba,
    free_port,
    mp_context,
    parse_url,
    publisher,
    read_info,
    recv_more,
    run_pubsub,
    subscriber,
)

LEAF_SUBSCRIBERS: dict[str, int] = {"leaf1": 1, "leaf4": 4}
LEAF_VERSION = "2.15.1"  # what the leaf CONNECT claims; nats-server checks it against leafnodes.min_version only


def leaf_subjects(nsubs: int) -> list[bytes]:
    """The subscribers' subjects: the same wildcard shapes as pubsub1/pubsub4, each matching every message."""
    return [SUB_SUBJECTS[i % len(SUB_SUBJECTS)] for i in range(nsubs)]


def leaf_connect_frame(name: str) -> bytes:
    opts = {"version": LEAF_VERSION, "name": name, "headers": True, "protocol": 1, "compress_mode": "off"}
    return b"CONNECT " + json.dumps(opts, separators=(",", ":")).encode() + b"\r\n"


def leaf_connect(
    host: str, port: int, name: str, interest: Sequence[bytes], timeout: float = 20.0
) -> tuple[socket.socket, bytearray]:
    """Connect as a leaf and wait until the server has sent ``LS+`` for every subject in `interest`.

    Connection refusals are retried until `timeout` (a server may open its leafnode port after its client port;
    20 s stays below the orchestrator's READY_TIMEOUT, so this error is the one reported).
    Returns (socket, leftover input).
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            sock = socket.create_connection((host, port), timeout=5.0)
            break
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise BenchError(f"nothing listens on leafnode port {host}:{port}") from None
            time.sleep(0.05)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buf = bytearray()
        read_info(sock, buf, f"leafnode port {host}:{port}")
        sock.sendall(leaf_connect_frame(name) + b"PING\r\n")
        missing = set(interest)
        pong = False
        while missing or not pong:
            end = buf.find(b"\r\n")
            if end < 0:
                if time.monotonic() > deadline:
                    want = b", ".join(sorted(missing)).decode()
                    raise BenchError(f"leaf {name}: the server never announced interest ({want or 'PONG'})")
                sock.settimeout(max(0.05, deadline - time.monotonic()))
                recv_more(sock, buf, "LS+ interest")
                check_err(buf)
                continue
            line = bytes(buf[:end])
            del buf[: end + 2]
            if line.startswith(b"LS+ "):
                missing.discard(line[4:].split(b" ")[0])
            elif line == b"PING":
                sock.sendall(b"PONG\r\n")
            elif line == b"PONG":
                pong = True
        return sock, buf
    except BaseException:
        sock.close()
        raise


def run_leaf(
    ep: Endpoint, leaf: Endpoint, scenario: str, size: int, cfg: BenchConfig, server_pid: int | None = None
) -> dict[str, Any]:
    """One leaf run: `cfg.publishers` leaf connections on `leaf`, LEAF_SUBSCRIBERS[scenario] clients on `ep`."""
    nsubs = LEAF_SUBSCRIBERS[scenario]
    ctx = mp_context()
    delivered = ctx.RawArray("q", nsubs)
    published = ctx.RawArray("q", cfg.publishers)
    stop = ctx.RawValue("b", 0)
    subjects = leaf_subjects(nsubs)
    specs = [
        WorkerSpec(f"subscriber-{i}", subscriber, (ep, i, subj, delivered, published, stop), passive=True)
        for i, subj in enumerate(subjects)
    ]
    for i in range(cfg.publishers):
        connect = partial(leaf_connect, leaf.host, leaf.port, f"bench-leaf-{i}", subjects)
        args = (connect, b"LMSG", i, size, cfg, published, delivered, nsubs)
        specs.append(WorkerSpec(f"leaf-publisher-{i}", publisher, args))
    return run_pubsub(specs, nsubs, cfg, server_pid, stop, " by the leaf")


class LeafServerProcess(ServerProcess):
    """A ServerProcess that also listens for leafnodes: ``-c FILE`` with ``leafnodes { listen: ... }`` is appended
    to its command line (a fresh free port on every start)."""

    def __init__(self, label: str, cmd: Sequence[str]) -> None:
        super().__init__(label, cmd)
        self.leaf_port = 0
        self._conf_dir = tempfile.mkdtemp(prefix="natsedge-bench-leaf-")
        self.conf_path = os.path.join(self._conf_dir, "leaf.conf")

    @property
    def leaf(self) -> Endpoint:
        return Endpoint(LOCALHOST, self.leaf_port)

    def argv(self) -> list[str]:
        return super().argv() + ["-c", self.conf_path]

    def start(self, timeout: float = 20.0) -> LeafServerProcess:
        self.leaf_port = free_port()
        Path(self.conf_path).write_text(f"leafnodes {{ listen: {LOCALHOST}:{self.leaf_port} }}\n")
        super().start(timeout)
        return self

    def close(self) -> None:
        """Stop the server and remove the config directory (`stop` alone allows a restart)."""
        self.stop()
        shutil.rmtree(self._conf_dir, ignore_errors=True)


def run_compare_leaf(
    cfg: BenchConfig, cmds: dict[str, list[str]], log: Callable[[str], None] = lambda s: None
) -> list[dict[str, Any]]:
    """The leaf scenarios of `run_compare`: both servers started once with a leafnode port, runs alternating
    ABBA between them. Returns result entries in `run_compare`'s shape."""

    def describe(srv: LeafServerProcess) -> str:
        return f"pid {srv.pid} on {srv.url}, leafnodes on port {srv.leaf_port}"

    def run_one(srv: LeafServerProcess, scen: str, size: int) -> dict[str, Any]:
        return run_leaf(parse_url(srv.url), srv.leaf, scen, size, cfg, srv.pid)

    return compare_abba(cfg, list(cmds), LEAF_SUBSCRIBERS, lambda label: LeafServerProcess(label, cmds[label]),
                        describe, run_one, log)
