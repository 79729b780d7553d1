"""A raw leafnode connection for the cluster tests: it plays a leaf (README §2.3) on a node's `leafnodes` port.

CONNECT without `lang` (a client CONNECT is refused on that port) and without `cluster`, then `LS+`/`LS-` for its
interest; the node sends it `LMSG` frames (`LMSG <subject> [reply | "| q..." | "+ reply q..."] <size>`).
"""

from __future__ import annotations

import json
import time

import pytest

from tests.compat.harness import Raw


class LeafMsg:
    __slots__ = ("subject", "reply", "queues", "payload", "raw")

    def __init__(self, subject: str, reply: str | None, queues: list[str], payload: bytes, raw: bytes):
        self.subject, self.reply, self.queues, self.payload, self.raw = subject, reply, queues, payload, raw

    def __repr__(self):
        return f"LeafMsg({self.raw!r})"


def parse_lmsg_line(line: bytes) -> tuple[str, str | None, list[str], int]:
    """(subject, reply, queues, size) of an `LMSG` header line (without CRLF)."""
    parts = line.decode().split()
    subject, rest, size = parts[1], parts[2:-1], int(parts[-1])
    if not rest:
        return subject, None, [], size
    if rest[0] == "|":
        return subject, None, rest[1:], size
    if rest[0] == "+":
        return subject, rest[1], rest[2:], size
    assert len(rest) == 1, line
    return subject, rest[0], [], size


class RawLeaf:
    """One leaf connection. The node's PINGs are answered by `Raw`; payloads must not be the line `PING`."""

    def __init__(self, port: int, name: str = "rawleaf"):
        self.raw = Raw(port, auto_pong=True, timeout=5.0)
        opts = {"name": name, "headers": True, "protocol": 1, "version": "2.15.1"}
        self.raw.send(b"CONNECT " + json.dumps(opts).encode() + b"\r\nPING\r\n")
        info = json.loads(self.raw.expect(rb"INFO (\{.*?\}) ?\r\n").group(1))
        assert info.get("connect_info") is True and info.get("remote_account") == "$G", info
        self.raw.expect(rb"(?:(?:LS[+-]|INFO) [^\r]*\r\n)*PONG\r\n")

    def send(self, data: bytes | str):
        self.raw.send(data)

    def sub(self, subject: str, queue: str | None = None, weight: int = 1):
        """`LS+`, and a PING round: the node has taken it once this returns."""
        q = f" {queue} {weight}" if queue else ""
        self.raw.send(f"LS+ {subject}{q}\r\n".encode())
        self.sync()

    def unsub(self, subject: str, queue: str | None = None):
        q = f" {queue}" if queue else ""
        self.raw.send(f"LS- {subject}{q}\r\n".encode())
        self.sync()

    def sync(self):
        self.raw.send(b"PING\r\n")
        self._read(until_pong=True)

    def msgs_until_pong(self) -> list[LeafMsg]:
        self.raw.send(b"PING\r\n")
        return self._read(until_pong=True)

    def read_until(self, marker: str, payload: bytes | None = None, timeout: float = 5.0) -> list[LeafMsg]:
        """LMSGs up to the first one on subject `marker` (with `payload`, if given); the marker is left out, other
        messages on the marker subject are not."""
        return self._read(marker=marker, marker_payload=payload, timeout=timeout)

    def _read(self, until_pong: bool = False, marker: str | None = None, marker_payload: bytes | None = None,
              timeout: float = 5.0) -> list[LeafMsg]:
        """Interest (`LS+`/`LS-`) and async INFOs from the node are skipped; anything else but LMSG fails."""
        r = self.raw
        out: list[LeafMsg] = []
        deadline = time.monotonic() + timeout
        while True:
            i = r.buf.find(b"\r\n")
            if i >= 0:
                line = r.buf[:i]
                op = line.split(b" ", 1)[0].upper()
                if op == b"LMSG":
                    subject, reply, queues, size = parse_lmsg_line(line)
                    end = i + 2 + size + 2
                    if len(r.buf) >= end:
                        m = LeafMsg(subject, reply, queues, r.buf[i + 2:i + 2 + size], r.buf[:end])
                        r.buf = r.buf[end:]
                        if subject == marker and marker_payload in (None, m.payload):
                            return out
                        out.append(m)
                        continue
                else:
                    r.buf = r.buf[i + 2:]
                    if op == b"PONG" and until_pong:
                        return out
                    assert op in (b"LS+", b"LS-", b"INFO", b"PONG"), f"leaf got {line!r}"
                    continue
            if not r._fill(deadline) and (r.eof or time.monotonic() >= deadline):
                what = "PONG" if until_pong else f"marker {marker!r}"
                pytest.fail(f"leaf: no {what} within {timeout}s (eof={r.eof}); got {out[:10]!r}, rest {r.buf[:300]!r}")

    def close(self):
        self.raw.close()
