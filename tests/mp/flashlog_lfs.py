# tests/mp/flashlog_lfs.py — edge/flashlog.py on littlefs (VfsLfs2) over an emulated ESP32 flash partition.
# MicroPython only (run by tests/unit/test_flashlog_mp.py through tests/mp/run_unit.py):
# 1. every test of tests/unit/test_flashlog.py again, with its folders on the littlefs volume;
# 2. a power-cut sweep: the flash loses power at every program/erase operation of a workload in turn,
#    the volume is remounted, the log reopened and checked;
# 3. a full volume (ENOSPC before max_bytes) and strict NOR programming.

import vfs

from edge.flashlog import FlashLog, FlashLogError
from sim import flashdev
from tests.unit import test_flashlog as _generic

_DEV = flashdev.RamFlash(4096, 160)
flashdev.mount(_DEV, "/flash")
_generic.BASE[0] = "/flash"

for _name in dir(_generic):
    if _name[:5] == "test_":
        globals()[_name] = getattr(_generic, _name)

BS = 4096


def _fresh_volume(blocks, point):
    dev = flashdev.RamFlash(BS, blocks)
    flashdev.mount(dev, point)
    return dev


def _payload(i):
    return b"sweep-%05d-" % i + b"p" * (90 + i % 37)


def _workload(acked, appended):
    # 60 records, group commit every 5, a reclaim every 20 (segments of one block: rotation and deletion).
    log = acked["log"] = FlashLog("/cut/q", segment_size=BS, max_bytes=12 * BS, flush_every=5, flush_ms=60000)
    for i in range(60):
        seq = log.append(_payload(i))
        appended[seq] = _payload(i)
        if log.maybe_flush():
            acked["durable"] = log.durable_seq
        if i % 20 == 19:
            log.flush()
            acked["durable"] = log.durable_seq
            upto = log.durable_seq - 8
            acked["reclaiming"] = upto + 1  # from here on the records below may be gone
            log.reclaim(upto, b"meta-%d" % i)
            acked["first"] = upto + 1
    log.close()
    acked["durable"] = log.durable_seq


def _check(data, acked, appended):
    # -> a problem description, or None when the log recovered with every durable record intact.
    dev = flashdev.RamFlash(BS, len(data) // BS, data)
    vfs.mount(vfs.VfsLfs2(dev), "/chk")
    try:
        log = FlashLog("/chk/q", segment_size=BS, max_bytes=12 * BS, flush_every=5, flush_ms=60000)
        got = list(log.replay())
        seqs = [s for s, _ in got]
        if seqs != sorted(set(seqs)):
            return f"sequences out of order or repeated: {seqs!r}"
        for s, p in got:
            if appended.get(s) != p:
                return f"record {s} is not what was appended"
        present = set(seqs)
        for s in range(acked["reclaiming"], acked["durable"] + 1):
            if s not in present:
                return f"durable record {s} lost (first_seq {log.first_seq})"
        if not acked["first"] <= log.first_seq <= acked["reclaiming"]:
            return f"first_seq {log.first_seq} outside {acked['first']}..{acked['reclaiming']}"
        nxt = log.append(b"after-the-cut")
        log.flush()
        if nxt <= acked["durable"]:
            return f"sequence {nxt} handed out again after recovery"
        log.close()
        return None
    finally:
        vfs.umount("/chk")


def test_lfs_power_cut_at_every_flash_operation_loses_no_durable_record():
    base = flashdev.RamFlash(BS, 24)
    vfs.VfsLfs2.mkfs(base)
    counter = flashdev.CutFlash(bytearray(base.data), BS, 24, cut_at=1 << 30)
    vfs.mount(vfs.VfsLfs2(counter), "/cut")
    _workload({"durable": 0, "first": 1, "reclaiming": 1, "log": None}, {})
    vfs.umount("/cut")
    total = counter.ops
    assert total > 100, total
    problems = []
    for cut in range(1, total + 1):
        data = bytearray(base.data)
        dev = flashdev.CutFlash(data, BS, 24, cut_at=cut)
        acked = {"durable": 0, "first": 1, "reclaiming": 1, "log": None}
        appended = {}
        try:
            vfs.mount(vfs.VfsLfs2(dev), "/cut")
            _workload(acked, appended)
        except (flashdev.PowerCut, OSError, FlashLogError):
            if acked["log"] is not None:
                try:  # close the dead log's file now, not in a GC finalizer with the heap locked
                    acked["log"]._close_handle()
                except Exception:
                    pass
        try:
            vfs.umount("/cut")
        except OSError:
            pass
        problem = _check(data, acked, appended)
        if problem:
            problems.append(f"cut {cut}: {problem}")
    assert not problems, f"{len(problems)} of {total} cuts: {problems[:5]}"
    print(f"power-cut sweep: {total} cuts, 0 problems")


def test_lfs_full_volume_is_flashlogfull_and_the_log_recovers():
    _fresh_volume(12, "/small")
    log = FlashLog("/small/q", segment_size=BS, max_bytes=64 * BS, flush_every=1000, flush_ms=60000)
    err = None
    for i in range(2000):
        log.append(_payload(i))
        if i % 10 == 9:
            try:
                log.flush()
            except FlashLogError as e:
                err = e
                break
    assert err is not None and "errno 28" in str(err), err
    assert err.lost_first == log.durable_seq + 1 and err.lost_last == log.last_seq
    durable = log.durable_seq
    log.reclaim(log.first_segment_end())
    seq = log.append(b"after")
    log.flush()
    assert seq == err.lost_last + 1 and log.durable_seq == seq
    log.close()
    log = FlashLog("/small/q", segment_size=BS, max_bytes=64 * BS)
    seqs = [s for s, _ in log.replay()]
    assert seqs[-1] == seq and all(s <= durable for s in seqs[:-1])
    log.close()
    vfs.umount("/small")


def test_lfs_programs_never_need_an_erase_first():
    dev = flashdev.RamFlash(BS, 32)
    dev.strict = True
    flashdev.mount(dev, "/strict")
    log = FlashLog("/strict/q", segment_size=BS, max_bytes=16 * BS, flush_every=4)
    for i in range(200):
        log.append(_payload(i))
        log.maybe_flush()
        if i % 50 == 49:
            log.flush()
            log.reclaim(log.durable_seq - 20)
    log.close()
    vfs.umount("/strict")
    assert dev.violations == 0 and dev.erases > 0
