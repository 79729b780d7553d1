"""host/jetstream/filestore.py under real crashes: a writer process (crash_writer.py, sync="always") is SIGKILLed at
random moments, and the store it leaves behind is recovered in this process and checked.

After every kill: every acknowledged message is present and byte-for-byte intact; sequences are contiguous from 1
(the writer never deletes) and at most one unacknowledged message survived; the torn tail, if the kill left one,
was cut (opening the store a second time finds nothing to repair and no file changes size); and the store takes
new writes. The next writer run continues on the same directory, so recoveries stack up. A second test damages
bytes in the middle of blocks and checks recovery reports the damage and keeps everything else.

The bounded test does 24 kills; `-m slow` runs 200.
"""

from __future__ import annotations

import os
import random
import select
import signal
import subprocess
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from crash_writer import config, expected  # noqa: E402

from host.jetstream.filestore import FileStore  # noqa: E402
from host.jetstream.store import ErrBadMsg, ErrStoreMsgNotFound  # noqa: E402

WRITER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "crash_writer.py")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BLOCK = 1 << 20


def wait_first_line(p: subprocess.Popen, timeout: float = 20.0) -> bytes:
    """The writer's first ack (it has recovered and is writing); polls, no fixed sleep."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r, _, _ = select.select([p.stdout], [], [], 0.05)
        if r:
            return p.stdout.readline()
        if p.poll() is not None:
            break
    p.kill()
    raise AssertionError(f"writer produced no ack: {p.stderr.read().decode(errors='replace')}")


def blk_sizes(store_dir: str) -> dict[str, int]:
    d = os.path.join(store_dir, "msgs")
    return {n: os.path.getsize(os.path.join(d, n)) for n in os.listdir(d) if n.endswith(".blk")}


def check_recovered(store_dir: str, acked: set[int], verify: list[int]) -> tuple[int, bool]:
    """Open the store as the hub would after the crash and check it: every sequence present, the ones in `verify`
    read back byte for byte. Returns (last_seq, whether a torn tail was cut)."""
    fs = FileStore(config(store_dir, BLOCK))
    rep = fs.recovery
    assert not rep.errors, rep  # a kill -9 never damages the middle of a block
    st = fs.state()
    top = max(acked)
    assert st.first_seq == 1 and st.msgs == st.last_seq and st.num_deleted == 0, st  # contiguous from 1
    assert top <= st.last_seq <= top + 1, (top, st.last_seq)  # all acks, at most one unacknowledged extra
    for seq in verify:
        sm = fs.load_msg(seq)
        subject, hdr, data = expected(seq)
        assert (sm.subject, sm.hdr, sm.data) == (subject, hdr, data), seq
    fs.stop()
    sizes = blk_sizes(store_dir)
    again = FileStore(config(store_dir, BLOCK))  # the tail was cut: nothing left to repair
    assert again.recovery.clean and again.state().last_seq == st.last_seq, again.recovery
    again.stop()
    assert blk_sizes(store_dir) == sizes
    return st.last_seq, bool(rep.truncated)


def run_kills(store_dir: str, kills: int, seed: int, full_every: int = 1) -> dict[str, int]:
    """SIGKILL the writer `kills` times; after each kill read back the new acks, and all of them every
    `full_every` kills and after the last one."""
    rng = random.Random(seed)
    acked: set[int] = set()
    torn = 0
    env = dict(os.environ, PYTHONPATH=ROOT)
    for i in range(kills):
        p = subprocess.Popen([sys.executable, WRITER, store_dir, str(BLOCK)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, env=env, cwd=ROOT)
        first = wait_first_line(p)
        time.sleep(rng.uniform(0.0, 0.08))
        p.send_signal(signal.SIGKILL)
        p.wait()
        out = first + p.stdout.read()
        err = p.stderr.read()
        p.stdout.close()
        p.stderr.close()
        assert p.returncode == -signal.SIGKILL, err.decode(errors="replace")
        lines = out.split(b"\n")
        new = [int(x) for x in lines[:-1]]  # the last piece is "" or a line the kill cut short: not an ack
        assert new == list(range(new[0], new[0] + len(new))), "acks out of order"
        if acked:
            assert new[0] <= max(acked) + 2
        acked.update(new)
        full = (i + 1) % full_every == 0 or i == kills - 1
        _, cut = check_recovered(store_dir, acked, sorted(acked) if full else new)
        torn += cut
    fs = FileStore(config(store_dir, BLOCK))
    last = fs.state().last_seq
    subject, hdr, data = expected(last + 1)
    assert fs.store_msg(subject, hdr, data)[0] == last + 1  # the store takes new writes
    fs.stop()
    fs = FileStore(config(store_dir, BLOCK))
    assert fs.load_msg(last + 1).data == data and fs.recovery.clean
    fs.stop()
    return {"kills": kills, "acked": len(acked), "torn_tails_cut": torn}


def test_sigkill_at_random_points_loses_no_acknowledged_message(tmp_path):
    stats = run_kills(str(tmp_path / "stream"), 24, seed=1)
    print(stats)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_sigkill_200_times_loses_no_acknowledged_message(tmp_path):
    stats = run_kills(str(tmp_path / "stream"), 200, seed=2, full_every=10)
    print(stats)


def test_damage_in_the_middle_of_blocks_is_reported_and_recovery_is_clean(tmp_path):
    store_dir = str(tmp_path / "stream")
    fs = FileStore(config(store_dir, 64 << 10))
    for seq in range(1, 401):
        subject, hdr, data = expected(seq)
        fs.store_msg(subject, hdr, data[:3000])
    fs.stop()
    d = os.path.join(store_dir, "msgs")
    blocks = sorted((n for n in os.listdir(d) if n.endswith(".blk")), key=lambda n: int(n[:-4]))
    assert len(blocks) >= 4
    # Damage the last block (scanned at open, as after a crash: no .idx) and a sealed one (trusted via its .idx,
    # so its damage is found when read).
    last, sealed = os.path.join(d, blocks[-1]), os.path.join(d, blocks[1])
    os.unlink(last[:-4] + ".idx")
    for path in (last, sealed):
        with open(path, "r+b") as f:
            f.seek(os.path.getsize(path) // 2)
            f.write(b"\xde\xad\xbe\xef")
    fs = FileStore(config(store_dir, 64 << 10))
    rep = fs.recovery
    assert rep.errors and not rep.truncated and len(rep.lost) == 1, rep
    lost_at_open = rep.lost[0]
    bad = []
    for seq in range(1, 401):
        try:
            sm = fs.load_msg(seq)
        except ErrStoreMsgNotFound:
            bad.append(seq)
            continue
        except ErrBadMsg:
            bad.append(seq)
            continue
        subject, hdr, data = expected(seq)
        assert (sm.subject, sm.hdr, sm.data) == (subject, hdr, data[:3000])
    assert len(bad) == 2 and lost_at_open in bad and sorted(rep.lost) == bad, (bad, rep)
    st = fs.state()
    assert (st.msgs, st.last_seq) == (398, 400)
    assert fs.store_msg("after", None, b"ok")[0] == 401
    fs.stop()
    fs = FileStore(config(store_dir, 64 << 10))
    assert fs.load_msg(401).data == b"ok" and fs.state().msgs == 399
    fs.stop()
