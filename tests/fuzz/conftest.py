"""The `fuzz` fixture: a fuzz run under the per-input watchdog (tests/fuzz/harness.py) that saves a failing input."""

import time

import pytest

from tests.fuzz.fuzzcore import FuzzFailure, run, show
from tests.fuzz.harness import PER_INPUT_CPU_S, SEED, CpuWatchdog


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
