"""edge/kvcache's store and decisions under the real MicroPython unix port, through tests/mp/run_unit.py.

1. tests/unit/test_kvcache_store.py on a POSIX folder (VfsPosix);
2. tests/mp/kvcache_lfs.py: the same functions on littlefs (VfsLfs2) over an emulated ESP32 flash partition
   (sim/flashdev.py), a power-cut sweep at every flash operation of a sync-like workload, and the flash cost
   of a put (docs/kvcache.md quotes it).
Every test function must run and pass: the PASS names must equal the test_* functions of the module.
"""

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _micropython() -> str:
    cand = Path(sys.executable).parent / "micropython"
    if not os.access(str(cand), os.X_OK):
        raise AssertionError(f"micropython binary not found next to {sys.executable}")
    return str(cand)


def _functions(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {n.name for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")}


@pytest.mark.parametrize("module,extra", [("tests.unit.test_kvcache_store", None),
                                          ("tests.mp.kvcache_lfs", "tests/mp/kvcache_lfs.py")])
def test_kvcache_tests_pass_on_micropython(module, extra):
    expected = _functions(REPO / "tests" / "unit" / "test_kvcache_store.py")
    if extra:
        expected |= _functions(REPO / extra)
    env = dict(os.environ, MICROPYPATH=str(REPO) + ":.frozen")
    proc = subprocess.run([_micropython(), "-X", "heapsize=8M", "tests/mp/run_unit.py", module], cwd=str(REPO),
                          env=env, capture_output=True, text=True, timeout=110)
    out = proc.stdout
    print(out[-1500:])  # the sweep and flash-cost figures, shown with -s
    failed = re.findall(r"^FAIL (\w+): (.*)$", out, re.M)
    assert not failed, f"failed on MicroPython: {failed}\n{proc.stderr[-3000:]}"
    assert proc.returncode == 0, out[-2000:] + proc.stderr[-3000:]
    passed = set(re.findall(r"^PASS (\w+)", out, re.M))
    assert passed == expected, f"ran {sorted(passed)}, expected {sorted(expected)}"
    if extra:
        m = re.search(r"^kv power-cut sweep: (\d+) cuts, 0 problems$", out, re.M)
        assert m and int(m.group(1)) > 100, out[-1500:]
        assert len(re.findall(r"^kv flash per put, ", out, re.M)) == 2
