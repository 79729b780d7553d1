"""The snappy framing format (github.com/google/snappy framing_format.txt), which nats-server's S2 writer produces in
its snappy-compatible mode: message-trace events sent with `Content-Encoding: snappy` (host/msgtrace.py writes them,
`natsedge trace` reads them).

`frame` writes uncompressed chunks only (there is no snappy compressor in the standard library, and trace events are
small); `unframe` reads compressed and uncompressed chunks, checks every checksum and refuses more than `max_bytes`.
"""

from __future__ import annotations


class SnappyError(ValueError):
    """Data that is not a well-formed snappy framing stream (one line, starting with "snappy:")."""


_CRC32C: list[int] = []  # CRC-32C (Castagnoli) by byte, made at first use: the hub imports this with tracing


def crc32c(data: bytes) -> int:
    table = _CRC32C
    if not table:
        for i in range(256):
            c = i
            for _ in range(8):
                c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
            table.append(c)
    c = 0xFFFFFFFF
    for b in data:
        c = table[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    """The checksum of a snappy framing chunk: CRC-32C, rotated and offset (framing_format.txt, "Checksum")."""
    c = crc32c(data)
    return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF


_SNAPPY_ID = b"sNaPpY"
_SNAPPY_CHUNK = 65536  # the largest uncompressed chunk the framing format allows


def frame(data: bytes) -> bytes:
    """`data` in the snappy framing format, as uncompressed chunks (which every snappy/S2 reader takes)."""
    out = [b"\xff\x06\x00\x00" + _SNAPPY_ID]
    for i in range(0, len(data), _SNAPPY_CHUNK):
        chunk = data[i:i + _SNAPPY_CHUNK]
        n = len(chunk) + 4
        checksum = masked_crc32c(chunk).to_bytes(4, "little")
        out.append(bytes((0x01, n & 0xFF, (n >> 8) & 0xFF, n >> 16)) + checksum + chunk)
    return b"".join(out)



def unframe(data: bytes, max_bytes: int) -> bytes:
    """The snappy framing format (what S2 writes in its snappy-compatible mode): a stream identifier, then compressed
    (0x00) or uncompressed (0x01) chunks with masked CRC-32C checksums; 0x80-0xfe are skipped, 0x02-0x7f refused."""
    out: list[bytes] = []
    total = 0
    pos = 0
    seen_id = False
    while pos < len(data):
        if pos + 4 > len(data):
            raise SnappyError("snappy: truncated chunk header")
        ctype = data[pos]
        size = int.from_bytes(data[pos + 1:pos + 4], "little")
        body = data[pos + 4:pos + 4 + size]
        if len(body) != size:
            raise SnappyError("snappy: truncated chunk")
        pos += 4 + size
        if ctype == 0xFF:
            if body != _SNAPPY_ID:
                raise SnappyError("snappy: bad stream identifier")
            seen_id = True
            continue
        if not seen_id:
            raise SnappyError("snappy: no stream identifier")
        if ctype in (0x00, 0x01):
            if size < 4:
                raise SnappyError("snappy: chunk without checksum")
            chunk = block(body[4:]) if ctype == 0x00 else bytes(body[4:])
            if len(chunk) > _SNAPPY_CHUNK:
                raise SnappyError("snappy: chunk larger than 64 KiB")
            if masked_crc32c(chunk) != int.from_bytes(body[:4], "little"):
                raise SnappyError("snappy: checksum mismatch")
            total += len(chunk)
            if total > max_bytes:
                raise SnappyError(f"snappy: more than {max_bytes} bytes")
            out.append(chunk)
        elif ctype < 0x80:
            raise SnappyError(f"snappy: unknown chunk type {ctype:#04x}")
    if not seen_id:
        raise SnappyError("snappy: empty stream")
    return b"".join(out)


def block(src: bytes) -> bytes:
    """One snappy block (format_description.txt): the uncompressed length as a varint, then literals and copies."""
    try:
        want, pos, shift = 0, 0, 0
        while True:
            b = src[pos]
            pos += 1
            want |= (b & 0x7F) << shift
            if not b & 0x80:
                break
            shift += 7
            if shift > 28:
                raise SnappyError("snappy: bad length")
        if want > _SNAPPY_CHUNK:
            raise SnappyError("snappy: block larger than 64 KiB")
        out = bytearray()
        while pos < len(src):
            tag = src[pos]
            pos += 1
            kind = tag & 3
            if kind == 0:  # literal; lengths of 60 and more are in the next 1-4 bytes
                n = tag >> 2
                if n >= 60:
                    width = n - 59
                    n = int.from_bytes(src[pos:pos + width], "little")
                    pos += width
                n += 1
                if pos + n > len(src):
                    raise SnappyError("snappy: literal past the end")
                out += src[pos:pos + n]
                pos += n
                continue
            if kind == 1:
                n = 4 + ((tag >> 2) & 7)
                offset = ((tag >> 5) << 8) | src[pos]
                pos += 1
            else:
                n = 1 + (tag >> 2)
                width = 2 if kind == 2 else 4
                if pos + width > len(src):
                    raise SnappyError("snappy: copy past the end")
                offset = int.from_bytes(src[pos:pos + width], "little")
                pos += width
            if not 0 < offset <= len(out):
                raise SnappyError("snappy: copy offset out of range")
            start = len(out) - offset
            for i in range(n):  # byte by byte: a copy may overlap what it writes (a run)
                out.append(out[start + i])
            if len(out) > want:
                raise SnappyError("snappy: block longer than its length")
    except IndexError:
        raise SnappyError("snappy: truncated block") from None
    if len(out) != want:
        raise SnappyError("snappy: block shorter than its length")
    return bytes(out)
