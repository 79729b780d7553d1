"""The edge fuzz targets on the real MicroPython unix port: the CBOR codec (decoder and round trip), the flash-log
reader and recovery, the KV store's recovery, the JSON config; and the fuzz regressions
(tests/fuzz/test_fuzz_regressions.py).

tests/fuzz/mp_fuzz.py runs a target in a micropython process and prints `@I` before input I. The watchdog is here:
an input after which the process says nothing for PER_INPUT_S has hung; the process is stopped (by its PID) and the
input is regenerated on CPython from its index (fuzzcore rule 1) to be shown. Same seed, same inputs, same code:
the counts of results must equal CPython's.
"""

import json
import os
import re
import select
import subprocess
from pathlib import Path

import pytest

from tests.fuzz import mp_fuzz, test_fuzz_regressions
from tests.fuzz.fuzzcore import NoGuard, nth_input, run, show
from tests.fuzz.harness import RUNS, SEED
from tests.fuzz.seeds import all_cbor_seeds, edge_config_seeds
from tests.test_mp_unit import _micropython

REPO = Path(__file__).resolve().parents[2]
PER_INPUT_S = 60.0  # wall time: the process is not ours to measure in CPU time, and an input takes milliseconds
# inputs per target: (CI, slow)
BUDGET = {"cbor_decode": (3000, 100_000), "cbor_roundtrip": (1000, 50_000), "flashlog": (200, 10_000),
          "kv_recovery": (150, 5000), "edge_config": (1000, 50_000)}


def _output_lines(proc):
    # The process's stdout, line by line; None when it said nothing for PER_INPUT_S.
    fd = proc.stdout.fileno()
    buf = b""
    while True:
        ready, _, _ = select.select([fd], [], [], PER_INPUT_S)
        if not ready:
            yield None
            return
        chunk = os.read(fd, 65536)
        if not chunk:
            if buf:
                yield buf.decode(errors="replace")
            return
        lines = (buf + chunk).split(b"\n")
        buf = lines.pop()
        for line in lines:
            yield line.decode(errors="replace")


def run_on_micropython(name, n, seed, folder):
    """-> the counts mp_fuzz printed; fails naming the input on a failure, a hang or a crash of the process."""
    seeds = folder / "seeds.json"
    seeds.write_text(json.dumps(_seeds()))
    work = folder / "mp"
    work.mkdir()
    stderr = folder / "stderr.txt"
    with open(stderr, "wb") as err:
        proc = subprocess.Popen([_micropython(), "-X", "heapsize=8M", "tests/fuzz/mp_fuzz.py", name, str(seed),
                                 str(n), str(seeds), str(work)], cwd=str(REPO),
                                env=dict(os.environ, MICROPYPATH=str(REPO)), stdout=subprocess.PIPE, stderr=err)
    last = -1
    result = None
    try:
        for line in _output_lines(proc):
            if line is None:
                gen = mp_fuzz._target(name, _seeds(), str(folder / "regen"))[0]
                pytest.fail(f"{name} input {last} (seed {seed}) hung on MicroPython: no result within {PER_INPUT_S} "
                            f"s; input {show(nth_input(gen, seed, last))}", pytrace=False)
            if line.startswith("@"):
                last = int(line[1:])
            elif line.startswith("FAIL "):
                pytest.fail(f"on MicroPython: {line[5:]} (seed {seed})", pytrace=False)
            elif line.startswith("DONE "):
                result = json.loads(line.split(" ", 2)[2])
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stdout.close()
    assert proc.returncode == 0 and result is not None, \
        f"{name} on MicroPython stopped at input {last}: {stderr.read_text()[-2000:]}"
    return result


def _seeds():
    # what mp_fuzz reads from its SEEDS.json
    return {"cbor": [b.hex() for b in all_cbor_seeds()], "edge_config": edge_config_seeds()}


def _cpython_counts(name, n, seed, folder):
    (folder / "regen").mkdir(exist_ok=True)
    gen, target, allowed = mp_fuzz._target(name, _seeds(), str(folder / "regen"))
    return run(name, target, gen, allowed, n, seed, NoGuard())


@pytest.mark.parametrize("name", sorted(BUDGET))
@pytest.mark.parametrize("budget", RUNS)
def test_fuzz_on_micropython(name, budget, tmp_path):
    n = BUDGET[name][budget]
    counts = run_on_micropython(name, n, SEED, tmp_path)
    print(f"fuzz {name} on MicroPython: {n} inputs, seed {SEED}, {counts}")
    assert sum(counts.values()) == n
    assert counts == _cpython_counts(name, n, SEED, tmp_path), "MicroPython and CPython judged the inputs differently"


def test_fuzz_regressions_pass_on_micropython():
    proc = subprocess.run([_micropython(), "-X", "heapsize=4M", "tests/mp/run_unit.py",
                           "tests.fuzz.test_fuzz_regressions"], cwd=str(REPO),
                          env=dict(os.environ, MICROPYPATH=str(REPO)), capture_output=True, text=True, timeout=110)
    assert not re.findall(r"^FAIL .*$", proc.stdout, re.M), proc.stdout + proc.stderr[-3000:]
    passed = set(re.findall(r"^PASS (\w+)", proc.stdout, re.M))
    expected = {n for n in dir(test_fuzz_regressions) if n.startswith("test_")}
    assert passed == expected and proc.returncode == 0, proc.stdout
