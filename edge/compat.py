# edge/compat.py — the only edge module that asks which interpreter runs it.
#
# The edge runs on MicroPython (ESP32, unix port) and on CPython. Everything that differs
# between the two (const, ticks in ms and us, sleep_ms, wall-clock ms, heap figures, socket constants)
# is shimmed here once, as recorded in shared/micropython/FACTS.md section 4.2.

import sys
import time

IS_MP = sys.implementation.name == "micropython"

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


if hasattr(time, "ticks_ms"):
    ticks_ms = time.ticks_ms
    ticks_us = time.ticks_us
    ticks_diff = time.ticks_diff
    ticks_add = time.ticks_add
else:
    # Same 2**30 wrap-around as MicroPython, so code tested on CPython meets the wrap too.
    def ticks_ms():
        return (time.monotonic_ns() // 1000000) & 0x3FFFFFFF

    def ticks_us():
        return (time.monotonic_ns() // 1000) & 0x3FFFFFFF

    def ticks_diff(a, b):
        return ((a - b + 0x20000000) & 0x3FFFFFFF) - 0x20000000

    def ticks_add(a, d):
        return (a + d) & 0x3FFFFFFF


def mem_free():
    import gc

    f = getattr(gc, "mem_free", None)
    return f() if f else -1


def mem_alloc():
    import gc

    f = getattr(gc, "mem_alloc", None)
    return f() if f else -1


# A heap under SMALL_HEAP bytes (an ESP32 without PSRAM: ~100 KB; the frozen 32-bit test edge: 60 KB) gets smaller
# in-flight buffers by default (docs/forward.md "Group commit", docs/kvcache.md "Push window"); config values win.
SMALL_HEAP = 131072


def small_heap():
    # True on MicroPython when the GC heap (free + allocated, read once at boot by the caller) is under SMALL_HEAP.
    f, a = mem_free(), mem_alloc()
    return f >= 0 and a >= 0 and f + a < SMALL_HEAP


def drop_module(name):
    # Forget an imported module ("edge.leaf.config"), so that its bytecode and globals can be collected: out of
    # sys.modules and off its package's attributes (an import sets both).
    sys.modules.pop(name, None)
    pkg_name, _, attr = name.rpartition(".")
    pkg = sys.modules.get(pkg_name)
    if pkg is not None and attr in dir(pkg):
        delattr(pkg, attr)
