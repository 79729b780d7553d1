"""edge/auth/ed25519.py and edge/auth/creds.py on the real MicroPython unix port, and against PyNaCl.

1. tests/unit/test_ed25519.py through tests/mp/run_unit.py: every test function must run and pass there too.
2. Random seeds and messages (0 to 300 bytes, so 1 to 4 SHA-512 blocks): the pure signer's public keys and
   signatures equal PyNaCl's, under MicroPython and under CPython; a signature made from a commitment (commit(),
   the edge's path before dialling) differs from the deterministic one and PyNaCl verifies it.
"""

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import nacl.signing

from edge.auth import ed25519

REPO = Path(__file__).resolve().parents[2]
_SIGN_ALL = """
import binascii, json, sys
from edge.auth import ed25519
for seed, msg, noise in json.loads(open(sys.argv[1]).read()):
    seed, msg = binascii.unhexlify(seed), binascii.unhexlify(msg)
    pre = ed25519.commit(seed, binascii.unhexlify(noise))
    print(binascii.hexlify(ed25519.public(seed)).decode(), binascii.hexlify(ed25519.sign(seed, msg)).decode(),
          binascii.hexlify(ed25519.sign(seed, msg, None, pre)).decode())
"""


def _micropython() -> str:
    cand = Path(sys.executable).parent / "micropython"
    if not os.access(str(cand), os.X_OK):
        raise AssertionError(f"micropython binary not found next to {sys.executable}")
    return str(cand)


def _mp(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([_micropython(), "-X", "heapsize=1M", *args], cwd=str(REPO),
                          env=dict(os.environ, MICROPYPATH=str(REPO)), capture_output=True, text=True, timeout=110)


def test_ed25519_unit_tests_pass_on_micropython():
    tree = ast.parse((REPO / "tests" / "unit" / "test_ed25519.py").read_text())
    expected = sorted(n.name for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("test_"))
    proc = _mp(["tests/mp/run_unit.py", "tests.unit.test_ed25519"])
    failed = re.findall(r"^FAIL (\w+): (.*)$", proc.stdout, re.M)
    assert not failed, f"failed on MicroPython: {failed}\n{proc.stderr[-3000:]}"
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert sorted(re.findall(r"^PASS (\w+)", proc.stdout, re.M)) == expected


def test_random_keys_and_messages_match_pynacl(tmp_path):
    cases = [(os.urandom(32), os.urandom(n)) for n in (0, 1, 15, 16, 47, 48, 63, 64, 111, 112, 175, 176, 300)]
    cases += [(os.urandom(32), os.urandom(22)) for _ in range(12)]  # nonce-sized, as the hubs send
    noises = [os.urandom(32) for _ in cases]
    want = []
    for seed, msg in cases:
        key = nacl.signing.SigningKey(seed)
        want.append((bytes(key.verify_key).hex(), key.sign(msg).signature.hex()))

    def check(i, pub, sig, committed):
        seed, msg = cases[i]
        assert (pub, sig) == want[i]
        assert committed != sig  # r from the noise, not from the message
        nacl.signing.VerifyKey(bytes.fromhex(pub)).verify(msg, bytes.fromhex(committed))  # raises if invalid

    for i, (seed, msg) in enumerate(cases):  # CPython, the pure module (the edge's fallback without PyNaCl)
        pre = ed25519.commit(seed, noises[i])
        check(i, ed25519.public(seed).hex(), ed25519.sign(seed, msg).hex(), ed25519.sign(seed, msg, None, pre).hex())
    path = tmp_path / "cases.json"
    path.write_text(json.dumps([[s.hex(), m.hex(), n.hex()] for (s, m), n in zip(cases, noises, strict=True)]))
    proc = _mp(["-c", _SIGN_ALL.replace("sys.argv[1]", repr(str(path)))])
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert len(lines) == len(cases)
    for i, line in enumerate(lines):
        check(i, *line.split())
