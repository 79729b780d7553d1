"""Run every test_* function of a test module, under MicroPython or CPython.

    MICROPYPATH=<repo> micropython -X heapsize=2M tests/mp/run_unit.py tests.unit.test_proto
    python tests/mp/run_unit.py tests.unit.test_proto

Prints `PASS name (ms)` or `FAIL name: <exception>` per test (sorted by name; the traceback goes to stderr), then
the heap figures, then `N passed, M failed`; exits 1 if anything failed, 2 on a usage or import error.
"""

import gc
import sys
import time

MP = sys.implementation.name == "micropython"


def _now_ms():
    if hasattr(time, "ticks_ms"):
        return time.ticks_ms()
    return time.monotonic_ns() // 1000000


def _elapsed_ms(t0):
    if hasattr(time, "ticks_diff"):
        return time.ticks_diff(time.ticks_ms(), t0)
    return _now_ms() - t0


def _out(line):
    # One write per line: MicroPython's print() issues several writes.
    sys.stdout.write(line + "\n")


def _print_exc(e):
    if MP:
        sys.print_exception(e, sys.stderr)
    else:
        import traceback

        traceback.print_exception(type(e), e, e.__traceback__, file=sys.stderr)


def _repo_root():
    # tests/mp/run_unit.py -> the repository root, so `tests.unit.x` and `edge` import on CPython too.
    path = __file__
    for _ in range(3):
        i = path.rfind("/")
        path = path[:i] if i > 0 else "."
    return path


def _import(name):
    mod = __import__(name)
    for part in name.split(".")[1:]:
        mod = getattr(mod, part)
    return mod


def _mem_alloc():
    f = getattr(gc, "mem_alloc", None)
    return f() if f else -1


def main(argv):
    if len(argv) != 2:
        _out("usage: run_unit.py <module, e.g. tests.unit.test_proto>")
        return 2
    root = _repo_root()
    if root not in sys.path:
        sys.path.insert(0, root)
    try:
        mod = _import(argv[1])
    except Exception as e:
        _out(f"FAIL import {argv[1]}: {type(e).__name__}: {e}")
        _print_exc(e)
        return 2
    names = sorted(n for n in dir(mod) if n[:5] == "test_" and callable(getattr(mod, n)))
    passed = failed = 0
    peak = 0
    t_all = _now_ms()
    for name in names:
        gc.collect()
        t0 = _now_ms()
        try:
            getattr(mod, name)()
        except Exception as e:  # AssertionError, and whatever else a test raises
            failed += 1
            _out(f"FAIL {name}: {type(e).__name__}: {e}")
            _print_exc(e)
        else:
            passed += 1
            _out(f"PASS {name} ({_elapsed_ms(t0)} ms)")
        peak = max(peak, _mem_alloc())  # before collection: an under-estimate of the real high-water mark
    gc.collect()
    _out(f"time: {_elapsed_ms(t_all)} ms")
    if hasattr(gc, "mem_alloc"):
        _out(f"heap: {_mem_alloc()} bytes in use after gc.collect(), {peak} at most seen between tests")
    else:
        _out("heap: not measured on " + sys.implementation.name)
    _out(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
