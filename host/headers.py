"""NATS header blocks as nats-server reads and writes them (`NATS/1.0[ <status>]\r\n` + `Name: value\r\n`... +
`\r\n`): status-only messages, reading one header, removing one, appending lines.

Rules: 1. Blocks are bytes, never parsed into dicts on the hub's paths: every helper slices or joins. 2. Names are
matched case-sensitively, as nats-server's `sliceHeader` does (clients write the canonical form).
"""

from __future__ import annotations

HDR_LINE = b"NATS/1.0\r\n"


def status_header(code: int, text: str, *pairs: tuple[str, int | str]) -> bytes:
    """A status-only header block (`NATS/1.0 404 No Messages`), with `pairs` as header lines after it."""
    lines = [f"NATS/1.0 {code} {text}\r\n"]
    lines.extend(f"{k}: {v}\r\n" for k, v in pairs)
    lines.append("\r\n")
    return "".join(lines).encode()


def hdr_get(hdr: bytes, key: bytes) -> bytes | None:
    """Value of the header `key` (given as b"\\r\\nName:"), as nats-server sliceHeader: case-sensitive name, leading
    spaces skipped, up to the CRLF. None when absent."""
    i = hdr.find(key)
    if i < 0:
        return None
    i += len(key)
    j = hdr.find(b"\r\n", i)
    if j < 0:
        j = len(hdr)
    return hdr[i:j].lstrip(b" ")


def hdr_remove(hdr: bytes, key: bytes) -> bytes | None:
    """hdr without every `key` line (nats-server removeHeaderIfPresent); None when only the status line is left."""
    while True:
        i = hdr.find(key)
        if i < 0:
            break
        j = hdr.find(b"\r\n", i + 2)
        if j < 0:
            break
        hdr = hdr[:i] + hdr[j:]
    return None if len(hdr) <= len(HDR_LINE) + 2 else hdr


def hdr_append(hdr: bytes | None, lines: bytes) -> bytes:
    """nats-server genHeader: `lines` ("K: v\\r\\n"...) added at the end of hdr (or of a fresh NATS/1.0 block)."""
    if hdr and len(hdr) > 2:
        return hdr[:-2] + lines + b"\r\n"
    return HDR_LINE + lines + b"\r\n"


def hdr_set(hdr: bytes, name: bytes, value: bytes) -> bytes:
    """hdr with the header `name` set to `value`, as nats-server's client setHeader: every `name` line removed, the
    new line added at the end."""
    rest = hdr_remove(hdr, b"\r\n" + name + b":")
    return hdr_append(rest, name + b": " + value + b"\r\n")
