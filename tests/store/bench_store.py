"""Micro-benchmark of the stream stores (not a test: speed belongs in benchmarks, never in assertions).

Usage: .venv/bin/python tests/store/bench_store.py [--dir DIR] [--n N]

Prints appends/s for the file store with sync "always" (one fsync per message, and one per group of 64 through
group_commit), with the default interval sync, and for the memory store, at 128 B and 1 KiB payloads; then loads/s
(random load_msg with a cold cache, sequential load_next_msg) and the time to reopen the store from its block
indexes and by scanning every block. Numbers go to docs/jetstream-store.md with the machine they came from.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from host.jetstream.filestore import FileStore  # noqa: E402
from host.jetstream.memstore import MemStore  # noqa: E402
from host.jetstream.store import ErrStoreEOF, StoreConfig  # noqa: E402


def appends(make, n: int, size: int, group: int = 0) -> float:
    s = make()
    data = os.urandom(size)
    subjects = [f"bench.{i % 100}" for i in range(n)]
    t = time.perf_counter()
    if group:
        for i in range(0, n, group):
            with s.group_commit():
                for j in range(i, min(i + group, n)):
                    s.store_msg(subjects[j], None, data)
    else:
        for subj in subjects:
            s.store_msg(subj, None, data)
    dt = time.perf_counter() - t
    s.stop()
    return n / dt


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", default=None, help="where to put the stores (default: a temp dir)")
    ap.add_argument("--n", type=int, default=200_000, help="messages for the non-fsync runs")
    args = ap.parse_args()
    base = tempfile.mkdtemp(prefix="storebench-", dir=args.dir)
    run = 0

    def fresh(**kw):
        nonlocal run
        run += 1
        d = os.path.join(base, f"s{run}")
        return lambda: FileStore(StoreConfig(name="B", store_dir=d, **kw))

    rows = []
    try:
        for size in (128, 1024):
            n_sync = max(args.n // 20, 2000)
            rows.append((f"file, sync always, {size} B", appends(fresh(sync="always"), n_sync, size)))
            rows.append((f"file, sync always, group of 64, {size} B",
                         appends(fresh(sync="always"), n_sync * 4, size, group=64)))
            rows.append((f"file, sync 120 s (default), {size} B", appends(fresh(), args.n, size)))
            rows.append((f"memory, {size} B", appends(lambda: MemStore(StoreConfig(name="M")), args.n, size)))
        for name, rate in rows:
            print(f"{name:42s} {rate:>12,.0f} appends/s")

        d = os.path.join(base, "load")
        cfg = StoreConfig(name="L", store_dir=d, cache_bytes=1 << 16)
        s = FileStore(cfg)
        data = os.urandom(1024)
        for i in range(args.n):
            s.store_msg(f"load.{i % 100}", None, data)
        rng = random.Random(1)
        picks = [rng.randrange(1, args.n + 1) for _ in range(args.n // 2)]
        t = time.perf_counter()
        for q in picks:
            s.load_msg(q)
        rnd = len(picks) / (time.perf_counter() - t)
        rates = []
        for flt in (">", "load.7"):
            t = time.perf_counter()
            seq, n = 1, 0
            try:
                while True:
                    _, seq = s.load_next_msg(flt, seq)
                    n += 1
            except ErrStoreEOF:
                pass
            rates.append(n / (time.perf_counter() - t))
        s.stop()
        print(f"{'file, load_msg random (1 KiB, cold cache)':42s} {rnd:>12,.0f} loads/s")
        print(f"{'file, load_next_msg all, in order':42s} {rates[0]:>12,.0f} loads/s")
        print(f"{'file, load_next_msg one subject in 100':42s} {rates[1]:>12,.0f} loads/s")
        t = time.perf_counter()
        s = FileStore(cfg)
        t_idx = time.perf_counter() - t
        s.stop()
        for name in os.listdir(os.path.join(d, "msgs")):
            if name.endswith(".idx"):
                os.unlink(os.path.join(d, "msgs", name))
        t = time.perf_counter()
        s = FileStore(cfg)
        t_scan = time.perf_counter() - t
        s.stop()
        mb = sum(os.path.getsize(os.path.join(d, "msgs", x)) for x in os.listdir(os.path.join(d, "msgs"))) / 1e6
        print(f"reopen {args.n:,} msgs ({mb:.0f} MB): {t_idx * 1000:.0f} ms from .idx, {t_scan * 1000:.0f} ms scanning")
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
