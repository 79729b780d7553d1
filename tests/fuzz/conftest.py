"""The CPython side of the fuzz harness: the per-input watchdog, the budgets, saving a failing input.

The watchdog is a CPU-time timer (ITIMER_PROF, SIGPROF), armed for every input: an input that keeps the process
busy for PER_INPUT_CPU_S raises fuzzcore.Hang inside the target, and the run fails naming that input. CPU time,
not wall time, so a loaded machine cannot make it fire; SIGPROF, so it leaves pytest-timeout's SIGALRM alone.
"""

import os
import signal
import time

import pytest

from tests.fuzz.fuzzcore import FuzzFailure, Hang, run, show

PER_INPUT_CPU_S = 2.0
SEED = int(os.environ.get("FUZZ_SEED", "1"))  # CI is seeded: a failure reproduces with the same seed and index


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


@pytest.fixture
def fuzz(tmp_path_factory):
    """fuzz(name, gen, target, allowed, n) runs n inputs under the watchdog and returns the counts; a failing
    input is saved (fuzz-failures/<name>-<index>.txt under pytest's temporary folder) and named in the failure."""

    def go(name, gen, target, allowed, n, seed=SEED):
        t0 = time.process_time()
        failure = None
        try:
            with CpuWatchdog(PER_INPUT_CPU_S) as dog:
                counts = run(name, target, gen, allowed, n, seed, dog)
        except FuzzFailure as f:
            failure = f
        if failure is not None:
            saved = tmp_path_factory.mktemp("fuzz-failures") / f"{name}-{failure.index}.txt"
            saved.write_text(show(failure.data) + "\n")
            pytest.fail(f"{failure} (seed {seed}; saved in {saved})", pytrace=False)
        cpu = time.process_time() - t0
        print(f"fuzz {name}: {n} inputs, seed {seed}, {cpu:.1f} s CPU, {counts}")
        return counts

    return go
