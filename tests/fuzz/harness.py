"""The CPython side of the fuzz harness: the per-input watchdog and the seed (the `fuzz` fixture using them, which
saves a failing input, is in tests/fuzz/conftest.py).

The watchdog is a CPU-time timer (ITIMER_PROF, SIGPROF), armed for every input: an input that keeps the process
busy for PER_INPUT_CPU_S raises fuzzcore.Hang inside the target, and the run fails naming that input. CPU time,
not wall time, so a loaded machine cannot make it fire; SIGPROF, so it leaves pytest-timeout's SIGALRM alone.
"""

import os
import signal

import pytest

from tests.fuzz.fuzzcore import Hang

PER_INPUT_CPU_S = 2.0
SEED = int(os.environ.get("FUZZ_SEED", "1"))  # CI is seeded: a failure reproduces with the same seed and index
# The two runs of every fuzz test, as the index into its budget: bounded in CI, long under -m slow (minutes, past
# the suite's 120 s per test).
RUNS = [pytest.param(0, id="ci"), pytest.param(1, id="slow", marks=[pytest.mark.slow, pytest.mark.timeout(7200)])]


class CpuWatchdog:
    def __init__(self, bound_s):
        self.bound_s = bound_s

    def __enter__(self):
        self.old = signal.signal(signal.SIGPROF, self._fire)
        return self

    def __exit__(self, *exc):
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, self.old)

    def _fire(self, signum, frame):
        raise Hang()

    def start(self, index, data):
        signal.setitimer(signal.ITIMER_PROF, self.bound_s)

    def stop(self):
        signal.setitimer(signal.ITIMER_PROF, 0)
