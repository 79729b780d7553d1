"""What one nonce signature costs the edge (edge/leaf/ed25519.py): time and heap, on the 64-bit unix port and on
the 32-bit build with the edge frozen in (tests/edge/frozen.py), the nearest this machine gets to an ESP32.

    python -m tests.edge.sign_cost           # prints one line per runtime; docs/security.md quotes them

Time: the median of 5 signatures (each with the public key derived from the seed as well, as a first connect
does, and without: a reconnect with the same seed), frozen32 inside the frozen edge's 60,000-byte heap, so that
the collections a small heap needs are in it. Heap: the smallest `-X heapsize` (to 256 bytes) in which
importing edge.leaf.creds and signing once still works, minus the smallest in which the import alone works: what
the signature needs on top of the module at rest, fragmentation included. `alloc` is every byte allocated during
one signature with the GC off (the churn, not the peak).
"""

from __future__ import annotations

import os
import subprocess

from tests.edge import frozen
from tests.edge.edgeharness import REPO, micropython

_SCRIPT = """
import gc, sys, time
from edge.leaf import creds, ed25519
seed = bytes(range(32))
nonce = b"k3vNK5ZNhbTwQx8"
if sys.argv[1] == "once":
    ed25519.sign(seed, nonce)
if sys.argv[1] == "time":
    full = []
    reuse = []
    for _ in range(5):
        t = time.ticks_ms(); pub = ed25519.public(seed); ed25519.sign(seed, nonce, pub)
        full.append(time.ticks_diff(time.ticks_ms(), t))
        t = time.ticks_ms(); ed25519.sign(seed, nonce, pub)
        reuse.append(time.ticks_diff(time.ticks_ms(), t))
    full.sort(); reuse.sort()
    print("first_ms", full[2], "reconnect_ms", reuse[2])
if sys.argv[1] == "alloc":
    pub = ed25519.public(seed)
    gc.collect(); gc.disable(); a = gc.mem_alloc(); ed25519.sign(seed, nonce, pub)
    print("alloc", gc.mem_alloc() - a)
print("ok")
"""


def _run(binary: str, heap: int | None, mode: str, path: str) -> subprocess.CompletedProcess:
    cmd = [binary] + (["-X", f"heapsize={heap}"] if heap else []) + ["-c", _SCRIPT.replace("sys.argv[1]", repr(mode))]
    return subprocess.run(cmd, env=dict(os.environ, MICROPYPATH=path), capture_output=True, text=True, timeout=120)


def _least_heap(binary: str, mode: str, path: str) -> int:
    lo, hi = 1024, 512 * 1024  # lo fails, hi works
    while hi - lo > 256:
        mid = (lo + hi) // 2
        if "ok" in _run(binary, mid, mode, path).stdout:
            hi = mid
        else:
            lo = mid
    return hi


def measure(name: str, binary: str, path: str, heap: int | None) -> str:
    """One line of figures; the times are taken inside `heap` (None: the binary's default), where the GC runs."""
    figures = {}
    for mode, h in (("time", heap), ("alloc", 64 << 20)):  # alloc: the GC is off, room for all the churn
        proc = _run(binary, h, mode, path)
        out = proc.stdout.split()
        if out[-1:] != ["ok"]:
            raise SystemExit(f"{name} {mode}: {proc.stdout}{proc.stderr}")
        figures.update(zip(out[0:-1:2], out[1:-1:2], strict=True))
    at_rest = _least_heap(binary, "import", path)
    peak = _least_heap(binary, "once", path) - at_rest
    return (f"{name} (heap {heap or 'default'}): first connect {figures['first_ms']} ms, reconnect "
            f"{figures['reconnect_ms']} ms, heap for signing +{peak} bytes (module at rest {at_rest} bytes of heap "
            f"incl. interpreter), alloc {figures['alloc']} bytes")


if __name__ == "__main__":
    print(measure("unix64", micropython(), str(REPO), None))
    binary, _ = frozen.build()
    print(measure("frozen32", str(binary), ".frozen", frozen.HEAPSIZE))
