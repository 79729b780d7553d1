"""edge/flashlog.py: append, group commit, recovery, rotation, reclaim, write errors.

Plain test functions: pytest runs them on CPython, tests/unit/test_flashlog_mp.py runs the same functions on
MicroPython (a POSIX folder, then littlefs on an emulated ESP32 flash partition: tests/mp/flashlog_lfs.py sets
BASE to the mounted volume). No pytest imports, no fixtures: MicroPython has neither.
"""

import binascii
import os

from edge.flashlog import BLOCK_SIZE, FlashLog, FlashLogError, FlashLogFull

BASE = ["/tmp"]  # where each test makes its own folder; the littlefs runner points it at the mount


def _tmpdir(tag):
    path = f"{BASE[0]}/flog-{tag}-{binascii.hexlify(os.urandom(4)).decode()}"
    _rmtree(path)
    return path


def _isdir(path):
    return os.stat(path)[0] & 0x4000


def _rmtree(path):
    try:
        names = os.listdir(path)
    except OSError:
        return
    for n in names:
        p = path + "/" + n
        if _isdir(p):
            _rmtree(p)
        else:
            os.remove(p)
    os.rmdir(path)


def _payload(i, size=40):
    head = b"rec-%06d-" % i
    return head + b"x" * (size - len(head))


def _segments(path):
    return sorted(n for n in os.listdir(path) if n[-4:] == ".log")


def _raw_append(path, name, data):
    with open(path + "/" + name, "ab") as f:
        f.write(data)


def test_append_flush_reopen_replays_in_order():
    d = _tmpdir("basic")
    log = FlashLog(d)
    seqs = [log.append(_payload(i)) for i in range(100)]
    assert seqs == list(range(1, 101))
    assert log.durable_seq == 0 and log.pending == 100
    log.flush()
    assert log.durable_seq == 100 and log.pending == 0
    log.close()
    log = FlashLog(d)
    assert (log.first_seq, log.last_seq, log.durable_seq) == (1, 100, 100)
    got = list(log.replay())
    assert [s for s, _ in got] == seqs
    assert [p for _, p in got] == [_payload(i) for i in range(100)]
    assert [s for s, _ in log.replay(from_seq=95)] == [95, 96, 97, 98, 99, 100]
    assert log.append(b"next") == 101
    log.close()
    _rmtree(d)


def test_unflushed_records_are_not_durable_and_their_sequences_are_reused():
    d = _tmpdir("unflushed")
    log = FlashLog(d)
    for i in range(5):
        log.append(_payload(i))
    log.flush()
    for i in range(3):
        log.append(_payload(100 + i))
    # a crash now: the buffered records never reached a file
    log2 = FlashLog(d)
    assert (log2.last_seq, log2.durable_seq) == (5, 5)
    assert [p for _, p in log2.replay()] == [_payload(i) for i in range(5)]
    assert log2.append(b"after") == 6
    log2.close()
    log._buf = []  # the "crashed" instance must not write on close
    log.close()
    _rmtree(d)


def test_group_commit_by_count_bytes_and_time():
    d = _tmpdir("group")
    log = FlashLog(d, flush_every=4, flush_ms=60000, flush_bytes=1 << 20)
    flushed = []
    for i in range(10):
        log.append(_payload(i))
        flushed.append(log.maybe_flush())
    assert flushed == [False, False, False, True, False, False, False, True, False, False]
    assert log.durable_seq == 8 and log.flushes == 2
    log.flush_bytes = 100
    log.append(_payload(10, 120))
    assert log.maybe_flush() and log.durable_seq == 11
    log.flush_ms = 0
    log.flush_bytes = 1 << 20
    log.append(_payload(11))
    assert log.maybe_flush() and log.durable_seq == 12
    assert not log.maybe_flush()  # nothing pending
    log.close()
    _rmtree(d)


def test_torn_tail_is_cut_and_appends_continue_in_a_new_segment():
    d = _tmpdir("torn")
    log = FlashLog(d)
    for i in range(20):
        log.append(_payload(i))
    log.close()
    seg = _segments(d)[0]
    full = FlashLog(d)
    full.append(_payload(20))
    rec = full._buf[0]  # a record as the log frames it, cut in the middle below: a torn write
    full._buf = []
    full.close()
    _raw_append(d, seg, rec[: len(rec) // 2])
    log = FlashLog(d)
    assert log.last_seq == 20
    assert [s for s, _ in log.replay()] == list(range(1, 21))
    assert log.append(_payload(21)) == 21
    log.flush()
    assert len(_segments(d)) == 2  # never appended after the torn bytes
    log.close()
    log = FlashLog(d)
    got = list(log.replay())
    assert [s for s, _ in got] == list(range(1, 22)) and got[-1][1] == _payload(21)
    log.close()
    _rmtree(d)


def test_garbage_tail_and_corrupt_record_stop_only_their_segment():
    d = _tmpdir("corrupt")
    log = FlashLog(d, segment_size=BLOCK_SIZE, max_bytes=8 * BLOCK_SIZE)
    for i in range(150):  # 46 bytes each: 87 records fill one 4 KB segment
        log.append(_payload(i))
        log.maybe_flush()
    log.close()
    segs = _segments(d)
    assert len(segs) == 2
    # flip one byte of record 10 in the first (closed) segment
    p = d + "/" + segs[0]
    with open(p, "rb") as f:
        data = bytearray(f.read())
    data[10 * 46 + 5] ^= 0xFF
    with open(p, "wb") as f:
        f.write(data)
    _raw_append(d, segs[1], b"\x00" * 7)  # zeros after the last record, as a crashed POSIX file may show
    log = FlashLog(d, segment_size=BLOCK_SIZE, max_bytes=8 * BLOCK_SIZE)
    second = int(segs[1][:12], 16)
    got = [s for s, _ in log.replay()]
    assert got == list(range(1, 11)) + list(range(second, 151))
    assert log.last_seq == 150
    log.close()
    _rmtree(d)


def test_segments_rotate_within_whole_erase_blocks():
    d = _tmpdir("rotate")
    log = FlashLog(d, segment_size=2 * BLOCK_SIZE, max_bytes=64 * BLOCK_SIZE)
    for i in range(1000):
        log.append(_payload(i, 100))
        log.maybe_flush()
    log.flush()
    segs = _segments(d)
    assert len(segs) == log.stats()["segments"] > 10
    for name in segs:
        size = os.stat(d + "/" + name)[6]
        assert 0 < size <= log.capacity < 2 * BLOCK_SIZE
    bases = [int(n[:12], 16) for n in segs]
    assert bases[0] == 1 and bases == sorted(bases)
    assert log.size_bytes == sum(os.stat(d + "/" + n)[6] for n in segs) == 1000 * 106
    assert [s for s, _ in log.replay()] == list(range(1, 1001))
    log.close()
    _rmtree(d)


def test_reclaim_deletes_whole_segments_and_persists_first_seq_and_meta():
    d = _tmpdir("reclaim")
    log = FlashLog(d, segment_size=BLOCK_SIZE, max_bytes=64 * BLOCK_SIZE)
    for i in range(400):
        log.append(_payload(i))
        log.maybe_flush()
    log.flush()
    n0 = len(_segments(d))
    second = log.segs[1][0]
    log.reclaim(second - 2, b"state-1")  # one record short of the whole first segment
    assert len(_segments(d)) == n0 and log.first_seq == second - 1
    log.reclaim(second - 1, b"state-2")
    assert len(_segments(d)) == n0 - 1 and log.first_seq == second
    log.close()
    log = FlashLog(d, segment_size=BLOCK_SIZE, max_bytes=64 * BLOCK_SIZE)
    assert (log.first_seq, log.last_seq, log.meta) == (second, 400, b"state-2")
    assert next(iter(log.replay()))[0] == second
    log.reclaim(400)  # everything: the active segment (more than half full) goes too
    assert _segments(d) == [] and log.size_bytes == 0
    log.close()
    log = FlashLog(d, segment_size=BLOCK_SIZE, max_bytes=64 * BLOCK_SIZE)
    assert (log.first_seq, log.last_seq) == (401, 400)
    assert list(log.replay()) == []
    assert log.append(b"continues") == 401
    log.close()
    _rmtree(d)


def test_full_log_raises_and_frees_after_reclaim():
    d = _tmpdir("full")
    log = FlashLog(d, segment_size=BLOCK_SIZE, max_bytes=2 * BLOCK_SIZE)
    n = 0
    try:
        while True:
            log.append(_payload(n))
            n += 1
            log.maybe_flush()
    except FlashLogFull as e:
        assert "log full" in str(e)
    assert isinstance(FlashLogFull("x"), FlashLogError)
    assert n * 46 <= 2 * BLOCK_SIZE < (n + 1) * 46
    log.flush()
    log.reclaim(log.first_segment_end())
    log.append(b"room again")
    log.close()
    _rmtree(d)


def test_record_larger_than_a_segment_is_refused():
    d = _tmpdir("big")
    log = FlashLog(d, segment_size=BLOCK_SIZE, max_bytes=4 * BLOCK_SIZE)
    try:
        log.append(b"z" * BLOCK_SIZE)
        raise AssertionError("a record larger than a segment was taken")
    except FlashLogError as e:
        assert "larger than the log takes" in str(e)
    assert log.last_seq == 0
    log.close()
    try:
        FlashLog(d, segment_size=1000)
        raise AssertionError("segment_size 1000 accepted")
    except FlashLogError as e:
        assert "multiple of 4096" in str(e)
    _rmtree(d)


def test_bytes_written_counts_records_and_marks_and_survives_reopen():
    d = _tmpdir("written")
    log = FlashLog(d)
    for i in range(10):
        log.append(_payload(i))
    log.flush()
    assert log.bytes_written == 10 * 46
    log.reclaim(5, b"m")
    after_mark = log.bytes_written
    assert after_mark > 10 * 46
    log.close()
    log = FlashLog(d)
    assert log.bytes_written == after_mark
    log.append(b"y")
    log.flush()
    assert log.bytes_written == after_mark + 7
    log.close()
    _rmtree(d)


def test_reader_follows_appends_across_segments():
    d = _tmpdir("reader")
    log = FlashLog(d, segment_size=BLOCK_SIZE, max_bytes=16 * BLOCK_SIZE)
    r = log.reader(1)
    assert r.next() is None
    seen = []
    for i in range(300):
        log.append(_payload(i))
        if i % 7 == 0:
            log.flush()
            while True:
                item = r.next()
                if item is None:
                    break
                seen.append(item[0])
    log.flush()
    while True:
        item = r.next()
        if item is None:
            break
        seen.append(item[0])
    assert seen == list(range(1, 301)) and len(log.segs) > 2
    r.close()
    r = log.reader(150)
    assert r.next()[0] == 150
    r.close()
    log.close()
    _rmtree(d)


def test_failed_flush_burns_its_sequences_and_the_log_goes_on():
    d = _tmpdir("fail")
    log = FlashLog(d)
    for i in range(3):
        log.append(_payload(i))
    log.flush()
    log.close()
    log = FlashLog(d)  # its active segment is the one holding 1..3
    log._fresh = True  # the next append opens segment 4: make that path unwritable (a folder)
    os.mkdir(f"{d}/{4:012x}.log")
    log.append(_payload(3))
    log.append(_payload(4))
    try:
        log.flush()
        raise AssertionError("flush into a folder did not fail")
    except FlashLogError as e:
        assert (e.lost_first, e.lost_last) == (4, 5) and "records 4..5 lost" in str(e)
    assert (log.durable_seq, log.last_seq, log.errors) == (3, 5, 1)
    assert log.append(_payload(5)) == 6
    log.flush()
    assert [s for s, _ in log.replay()] == [1, 2, 3, 6]
    log.close()
    os.rmdir(f"{d}/{4:012x}.log")
    log = FlashLog(d)
    assert [s for s, _ in log.replay()] == [1, 2, 3, 6] and log.append(b"z") == 7
    log.close()
    _rmtree(d)


def test_burned_sequences_stay_burned_after_reopen():
    d = _tmpdir("floor")
    log = FlashLog(d)
    log.append(_payload(0))
    log.flush()
    log._fresh = True
    os.mkdir(f"{d}/{2:012x}.log")
    log.append(_payload(1))
    try:
        log.flush()
        raise AssertionError("flush into a folder did not fail")
    except FlashLogError:
        pass
    log._f = None
    os.rmdir(f"{d}/{2:012x}.log")
    log = FlashLog(d)  # rebooted before anything else was appended
    assert log.append(b"new") == 3
    log.close()
    log = FlashLog(d)
    assert [(s, p) for s, p in log.replay()] == [(1, _payload(0)), (3, b"new")]
    log.close()
    _rmtree(d)


def test_damage_is_reported_and_burn_moves_numbering_past_the_lost_records():
    # Records 8..10 were durable (the caller may have used their sequences), then flash damage hit record 8:
    # recovery keeps 1..7 and says so; burn() makes sure 8..20 are never handed out again, across reboots.
    d = _tmpdir("burn")
    log = FlashLog(d)
    for i in range(10):
        log.append(_payload(i))
    log.close()
    log = FlashLog(d)
    assert not log.damaged and log.last_seq == 10
    log.close()
    with open(d + "/" + _segments(d)[0], "r+b") as f:
        f.seek(7 * 46 + 3)  # record 8: 2 bytes of length, 40 of payload, 4 of CRC per record
        f.write(b"\xee")
    log = FlashLog(d)
    assert (log.damaged, log.last_seq, log.durable_seq) == (8, 7, 7)
    log.burn(5)  # nothing above what the log holds: nothing to do
    assert log.last_seq == 7
    log.burn(20)
    assert (log.first_seq, log.last_seq, log.durable_seq) == (1, 20, 20)
    log.close()
    log = FlashLog(d)  # a reboot before anything was appended: the floor is in the mark
    assert (log.damaged, log.last_seq) == (8, 20)
    assert [s for s, _ in log.replay()] == list(range(1, 8))
    assert log.append(b"after") == 21
    log.close()
    log = FlashLog(d)
    assert not log.damaged  # the newest segment is the new one, intact
    assert [s for s, _ in log.replay()] == list(range(1, 8)) + [21]
    log.reclaim(21)
    log.burn(30)  # nothing kept: the first kept sequence moves past the burned ones too
    assert (log.first_seq, log.last_seq) == (31, 30) and log.append(b"z") == 31
    log.close()
    log = FlashLog(d)
    assert [s for s, _ in log.replay()] == [31] and log.first_seq == 31
    log.close()
    _rmtree(d)


def test_torn_newest_mark_falls_back_to_the_older_one():
    d = _tmpdir("mark")
    log = FlashLog(d, segment_size=BLOCK_SIZE, max_bytes=16 * BLOCK_SIZE)
    for i in range(200):
        log.append(_payload(i))
    log.flush()
    log.reclaim(10, b"old")
    log.reclaim(20, b"new")
    gen = log._mark_gen
    log.close()
    with open(f"{d}/mark{gen & 1}", "r+b") as f:
        f.seek(9)
        f.write(b"\xee")
    log = FlashLog(d, segment_size=BLOCK_SIZE, max_bytes=16 * BLOCK_SIZE)
    assert (log.first_seq, log.meta) == (11, b"old")
    log.close()
    _rmtree(d)


def test_reader_open_across_a_flush_misses_nothing():
    # A littlefs handle shows only what was synced when it was opened: the reader must not take that older view
    # for the end of the segment (nor the sequences after it for burned ones).
    d = _tmpdir("stale")
    log = FlashLog(d)
    for i in range(10):
        log.append(_payload(i))
    log.flush()
    r = log.reader(1)
    got = [r.next()[0] for _ in range(5)]  # its file stays open after record 5
    for i in range(10, 20):
        log.append(_payload(i))
    log.flush()
    while True:
        item = r.next()
        if item is None:
            break
        got.append(item[0])
        assert item[1] == _payload(item[0] - 1)
    assert got == list(range(1, 21))
    r.close()
    log.close()
    _rmtree(d)
