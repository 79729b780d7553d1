"""What signing the hub's nonce costs the edge (edge/auth/creds.py with edge/auth/ed25519.py): time and heap, on the
64-bit unix port and on the 32-bit build with the edge frozen in (tests/edge/frozen.py), the nearest this machine gets
to an ESP32.

    python -m tests.edge.sign_cost           # prints one line per runtime; docs/security.md quotes them

Times (the median of 5): before the first dial the signer derives the public key and a commitment (two scalar
multiplications), before a redial a commitment only (one), and once the hub's INFO brings the nonce the signature
needs no scalar multiplication at all. frozen32 runs inside the frozen edge's 60,000-byte heap, so that the
collections a small heap needs are in its times. Heap: the smallest `-X heapsize` (to 256 bytes) in which importing
edge.auth.creds and signing once (deterministically, both multiplications) still works, minus the smallest in which
the import alone works: what a signature needs on top of the module at rest, fragmentation included. `alloc` is
every byte allocated during that signature with the GC off (the churn, not the peak).
"""

from __future__ import annotations

import os
import subprocess

from tests.edge import frozen
from tests.edge.edgeharness import REPO, micropython

_SCRIPT = """
import gc, sys, time
from edge.auth import creds, ed25519
seed = bytes(range(32))
nonce = b"k3vNK5ZNhbTwQx8"
if sys.argv[1] == "time":
    first = []
    again = []
    after = []
    for i in range(5):
        t = time.ticks_ms(); pub = ed25519.public(seed); pre = ed25519.commit(seed, bytes([i]) * 32)
        first.append(time.ticks_diff(time.ticks_ms(), t))
        t = time.ticks_ms(); pre = ed25519.commit(seed, bytes([i + 1]) * 32)
        again.append(time.ticks_diff(time.ticks_ms(), t))
        t = time.ticks_us(); ed25519.sign(seed, nonce, pub, pre)
        after.append(time.ticks_diff(time.ticks_us(), t))
    first.sort(); again.sort(); after.sort()
    print("first_ms", first[2], "redial_ms", again[2], "nonce_us", after[2])
if sys.argv[1] == "alloc":
    pub = ed25519.public(seed)
    gc.collect(); gc.disable(); a = gc.mem_alloc(); ed25519.sign(seed, nonce, pub)
    print("alloc", gc.mem_alloc() - a)
print("ok")
"""


# The heap bisection's program: as small as can be, so that compiling it needs less heap than what it measures.
_ONCE = "from edge.auth import creds, ed25519\nif SIGN: ed25519.sign(bytes(32), b'k3vNK5ZNhbTwQx8')\nprint('ok')"


def _run(binary: str, heap: int | None, mode: str, path: str) -> subprocess.CompletedProcess:
    if mode in ("import", "once"):
        script = _ONCE.replace("SIGN", str(mode == "once"))
    else:
        script = _SCRIPT.replace("sys.argv[1]", repr(mode))
    cmd = [binary] + (["-X", f"heapsize={heap}"] if heap else []) + ["-c", script]
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
    return (f"{name} (heap {heap or 'default'}): before the first dial {figures['first_ms']} ms, before a "
            f"redial {figures['redial_ms']} ms, after the nonce {figures['nonce_us']} us, heap for signing +{peak} "
            f"bytes (module at rest {at_rest} bytes of heap incl. interpreter), alloc {figures['alloc']} bytes")


if __name__ == "__main__":
    print(measure("unix64", micropython(), str(REPO), None))
    binary, _ = frozen.build()
    print(measure("frozen32", str(binary), ".frozen", frozen.HEAPSIZE))
