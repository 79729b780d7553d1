"""Crash-test writer: appends to a FileStore with sync="always" and prints every acknowledged sequence.

Usage: python tests/store/crash_writer.py STORE_DIR BLOCK_SIZE

It opens (and so recovers) the store, then stores messages forever; after each store_msg returns it writes one
whole line "<seq>\\n" to stdout and flushes, so a line on stdout means "acknowledged". The test SIGKILLs it at a
random moment. Subject, headers and payload are functions of the sequence (`expected`), so the test can check
every acknowledged message byte for byte. Payload sizes vary from a few bytes to 2 MiB: large writes take long
enough in the kernel that some kills land inside one and leave a torn record for recovery to cut.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from host.jetstream.filestore import FileStore  # noqa: E402
from host.jetstream.store import StoreConfig  # noqa: E402


def expected(seq: int) -> tuple[str, bytes | None, bytes]:
    """The message stored at seq."""
    r = (seq * 2654435761) % 1000
    if r < 5:
        size = 2 << 20
    elif r < 60:
        size = 8192 + r * 512
    else:
        size = 16 + r * 2
    data = (seq.to_bytes(8, "little") * (size // 8 + 1))[:size]
    hdr = f"NATS/1.0\r\nSeq: {seq}\r\n\r\n".encode() if seq % 3 == 0 else None
    return f"crash.{seq % 7}", hdr, data


def config(store_dir: str, block_size: int) -> StoreConfig:
    return StoreConfig(name="crash", store_dir=store_dir, sync="always", block_size=block_size)


def main() -> None:
    store_dir, block_size = sys.argv[1], int(sys.argv[2])
    fs = FileStore(config(store_dir, block_size))
    seq = fs.state().last_seq
    out = sys.stdout
    while True:
        seq += 1
        subject, hdr, data = expected(seq)
        got, _ = fs.store_msg(subject, hdr, data)
        if got != seq:
            raise SystemExit(f"stored as {got}, expected {seq}")
        out.write(f"{seq}\n")
        out.flush()


if __name__ == "__main__":
    main()
