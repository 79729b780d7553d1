# tests/mp/kvcache_lfs.py — the KV cache's store (edge/kvcache/store.py) on littlefs (VfsLfs2) over an emulated
# ESP32 flash partition. MicroPython only (run by tests/unit/test_kvcache_mp.py through tests/mp/run_unit.py):
# 1. every test of tests/unit/test_kvcache_store.py again, with its folders on the littlefs volume;
# 2. a power-cut sweep: the flash loses power at every program/erase operation of a workload of hub changes,
#    local writes, pushes and compactions in turn; the volume is remounted, the store reopened, and what it holds
#    must be exactly a state the store passed through, no older than its last flush;
# 3. the flash cost of a put (bytes programmed and blocks erased per put), printed for docs/kvcache.md.

import vfs

from edge.kvcache.store import OP_DEL, OP_PUT, Store
from sim import flashdev
from tests.unit import test_kvcache_store as _generic

_DEV = flashdev.RamFlash(4096, 200)
flashdev.mount(_DEV, "/flash")
_generic.BASE[0] = "/flash"

for _name in dir(_generic):
    if _name[:5] == "test_":
        globals()[_name] = getattr(_generic, _name)

BS = 4096
BLOCKS = 48


def _open(path):
    # Small log and segments so that the workload compacts and reclaims more than once.
    return Store(path, max_keys=32, max_bytes=4096, log_bytes=3 * BS, segment_size=BS, flush_every=4,
                 flush_ms=60000)


def _workload(box):
    states = box["states"]
    states.append((0, ({}, 0)))  # a cut while the store first opens leaves an empty one
    s = box["store"] = _open("/cut/b")

    def passed():
        states.append((s.log.last_seq, _generic._state(s)))

    passed()
    for i in range(72):
        k = f"k{i % 7}"
        r = i % 6
        if r in (0, 4):
            s.local_write(k, OP_PUT, f"L{i}-".encode() + b"x" * 150, 0, f"{1000 + i}-0-e")
        elif r == 1:
            d = s.dirty.get(k)
            if d is not None:
                s.pushed(k, 100 + i, d[3])  # as the PubAck of its push
            else:
                s.hub_set(k, f"H{i}-".encode() + b"y" * 150, 100 + i, 0)
        elif r == 2:
            if k in s.dirty:
                s.drop_local(k)  # lost a conflict
            s.hub_del(k, 100 + i)
        elif r == 3:
            s.local_write(k, OP_DEL, None, 0, f"{1000 + i}-0-e")
        else:
            s.saw(100 + i)
            s.mark_synced()
        passed()  # before the flush: a cut inside it may still leave this state durable
        s.maybe_flush(0)  # group commit, and compaction when the log is half full
    s.close()


def _check(data, box):
    # -> a problem description, or None when the store came back as one of the states it passed through.
    dev = flashdev.RamFlash(BS, BLOCKS, data)
    vfs.mount(vfs.VfsLfs2(dev), "/chk")
    try:
        s = _open("/chk/b")
        got = _generic._state(s)
        s.local_write("after", OP_PUT, b"cut", 0, "9999-0-e")  # and it goes on working
        s.close()
        s = _open("/chk/b")
        if s.get("after") is None:
            return "a write after recovery was lost"
        s.close()
        durable = box["durable"]
        for seq, state in box["states"]:
            if state == got:
                if seq < durable:
                    return f"came back older than its last flush (seq {seq} < {durable})"
                return None
        return f"a state it never passed through: {got!r}"
    finally:
        vfs.umount("/chk")


def test_lfs_power_cut_at_every_flash_operation_leaves_a_consistent_store():
    base = flashdev.RamFlash(BS, BLOCKS)
    vfs.VfsLfs2.mkfs(base)
    counter = flashdev.CutFlash(bytearray(base.data), BS, BLOCKS, cut_at=1 << 30)
    vfs.mount(vfs.VfsLfs2(counter), "/cut")
    box = {"store": None, "states": []}
    _workload(box)
    vfs.umount("/cut")
    total = counter.ops
    compactions = box["store"].snap_seq
    assert total > 100 and compactions > 0, (total, compactions)
    problems = []
    for cut in range(1, total + 1):
        data = bytearray(base.data)
        dev = flashdev.CutFlash(data, BS, BLOCKS, cut_at=cut)
        box = {"store": None, "states": []}
        try:
            vfs.mount(vfs.VfsLfs2(dev), "/cut")
            _workload(box)
        except Exception:  # the power cut, as whatever littlefs or the store raises
            pass
        s = box["store"]
        box["durable"] = s.log.durable_seq if s is not None else 0
        if s is not None:
            try:  # close the dead log's file now, not in a GC finalizer with the heap locked
                s.log._close_handle()
            except Exception:
                pass
        try:
            vfs.umount("/cut")
        except OSError:
            pass
        problem = _check(data, box)
        if problem:
            problems.append(f"cut {cut}: {problem}")
    assert not problems, f"{len(problems)} of {total} cuts: {problems[:5]}"
    print(f"kv power-cut sweep: {total} cuts, 0 problems")


def test_lfs_flash_cost_per_put():
    # Bytes programmed and blocks erased per put of a 16-byte value under a 12-byte key, with the default group
    # commit (16 records or 50 ms) and with a flush after every put.
    for label, every in (("group commit (16)", 16), ("flush every put", 1)):
        dev = flashdev.RamFlash(BS, 256)
        flashdev.mount(dev, "/cost")
        s = Store("/cost/kv/b", max_keys=256, max_bytes=16384, flush_every=every, flush_ms=60000)
        for i in range(64):  # warm up: segment files and directories exist
            s.local_write(f"sensor.{i % 200:05d}", OP_PUT, b"v" * 16, 0, f"{10**12 + i}-0-edge1")
        s.flush()
        p0, e0, w0 = dev.prog_bytes, dev.erases, s.log.bytes_written
        n = 480
        for i in range(n):
            s.local_write(f"sensor.{i % 200:05d}", OP_PUT, b"v" * 16, 0, f"{10**12 + 64 + i}-0-edge1")
            if every == 1:
                s.flush()
        s.flush()
        prog = (dev.prog_bytes - p0) / n
        erases = (dev.erases - e0) / n
        logged = (s.log.bytes_written - w0) / n
        s.close()
        vfs.umount("/cost")
        assert 0 < logged <= prog
        print(f"kv flash per put, {label}: {logged:.0f} bytes logged, {prog:.0f} bytes programmed, "
              f"{erases:.3f} erases")
