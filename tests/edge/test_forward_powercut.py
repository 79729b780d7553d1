"""Power cuts: MicroPython edges on emulated ESP32 flash (littlefs on a FileFlash image) are killed with SIGKILL at
random moments while they publish durable records and drain them into a hub stream, restarted, and killed again.

Several edges run at once (each with its own image, name and subject, all into one stream), so the CI variant gets
its >= 200 kill points in about a minute; the hub is stopped and started again (same store) once in the middle, so
cuts also land while offline and during the catch-up. At the end every edge boots once more and drains, and the
stream must hold every record whose durable publish returned exactly once, nothing twice (no message id, no
payload), and each edge's records in its own sequence order. The stream's duplicate window is 0.5 s, so Nats-Msg-Id
alone cannot hide a resend: the lookup before resending has to.

    pytest tests/edge/test_forward_powercut.py                 # CI: 4 edges x 50 cuts (frozen32: x 12, 60 KB heap)
    pytest -m slow tests/edge/test_forward_powercut.py -s      # 4 edges x 250 cuts (>= 1,000)
"""

from __future__ import annotations

import json
import random
import threading
import time

import pytest

from tests.compat.harness import run
from tests.edge.edgeharness import JsHub
from tests.edge.fwdharness import (
    FwdEdge,
    add_stream,
    forward_config,
    msg_ids,
    payload_index,
    stream_messages,
    wait_drained,
)

EDGES = 4
IMAGE_BLOCKS = 96


def _powercut_run(side, tmp_path, mpy_tree, cuts_per_edge, seed):
    rng = random.Random(seed)
    hub = JsHub(side, tmp_path / "hub")
    hub.start()
    edges: list[FwdEdge] = []
    try:
        run(add_stream(hub.url, "PC", ["pc.>"], duplicate_window=0.5))
        for k in range(EDGES):
            name = f"pc{k + 1}"
            cfg = forward_config(name, hub.leaf_port,
                                 [{"subjects": [f"pc.{name}"], "stream": "PC", "segment_size": 4096,
                                   "max_bytes": 131072}],
                                 {"status": 0.25, "flush_interval": 0.02, "ack_timeout": 1},
                                 data="/flash/data", app="fwdapp", max_payload=1024)
            wd = tmp_path / name
            edges.append(FwdEdge(cfg, wd, image=(str(wd / "flash.img"), IMAGE_BLOCKS), mpy=mpy_tree[0]))
        done = [0]
        failures: list[str] = []
        lock = threading.Lock()

        def cycle(e: FwdEdge, r: random.Random):
            for boot in range(cuts_per_edge):
                e.set_app(subjects=[f"pc.{e.cfg['name']}"], count=0, tag=f"b{boot}", size=r.randint(8, 96),
                          batch=r.randint(1, 6), pause_ms=r.randint(5, 30))
                try:
                    e.start()
                except BaseException as exc:  # pytest.fail inside a thread: keep the reason
                    with lock:
                        failures.append(f"{e.cfg['name']} boot {boot}: {exc}")
                    e.kill()
                    return
                time.sleep(r.uniform(0.02, 0.8))
                e.kill()
                with lock:
                    done[0] += 1

        threads = [threading.Thread(target=cycle, args=(e, random.Random(rng.random()))) for e in edges]
        for t in threads:
            t.start()
        total = EDGES * cuts_per_edge
        while done[0] < total * 0.4 and any(t.is_alive() for t in threads):
            time.sleep(0.05)
        hub.stop()  # cuts land while the hub is away ...
        time.sleep(rng.uniform(1.0, 3.0))
        hub.start()  # ... and during the catch-up with the same store
        for t in threads:
            t.join(timeout=600)
        assert not failures, failures
        assert done[0] == total

        for e in edges:  # a last boot: publish one more record, drain everything
            e.set_app(subjects=[f"pc.{e.cfg['name']}"], count=1, tag="last")
            e.start()
        for e in edges:
            e.wait_line(r"^edge: app done 1$", timeout=30)
            wait_drained(e, timeout=90)
        msgs = run(stream_messages(hub.url, "PC"), timeout=120)
    finally:
        for e in edges:
            e.stop()
        hub.stop()

    report = []
    totals = [0, 0]
    for e in edges:
        name = e.cfg["name"]
        mine = [m for m in msgs if m.subject == f"pc.{name}"]
        keys = [payload_index(m) for m in mine]
        ids = msg_ids(mine)
        seqs = [int(i.rsplit("-", 1)[1]) for i in ids]
        present = set(keys)
        twice = [(k, i, m.seq, str(m.time)) for k, i, m in zip(keys, ids, mine, strict=True) if keys.count(k) > 1]
        assert not twice, f"{name}: records stored twice (key, msg id, stream seq, time): {twice[:6]}"
        assert len(ids) == len(set(ids)), f"{name}: a message id stored twice"
        assert all(i.startswith(f"{name}-PC-") for i in ids)
        bad = [i for i in range(1, len(seqs)) if seqs[i] < seqs[i - 1]]
        assert not bad, f"{name}: records out of order at stream positions {bad[:5]}: " + ", ".join(
            f"{seqs[i - 1]} then {seqs[i]} (stream seq {mine[i - 1].seq}, {mine[i].seq})" for i in bad[:5])
        acked = e.acked_keys()
        missing = sorted(k for k in acked if k not in present)
        assert not missing, f"{name}: {len(missing)} acknowledged records missing, e.g. {missing[:5]}"
        skipped, lookups = _lookup_counts(e)
        totals[0] += skipped
        totals[1] += lookups
        report.append(f"{name}: {e.boots} boots, {len(acked)} acked, {len(keys)} stored, {lookups} lookups, "
                      f"{skipped} resends skipped")
    print("power cuts:", EDGES * cuts_per_edge, "kills;", "; ".join(report))
    # the cuts did land between a send and its PubAck: records the stream had were found and not sent again
    assert totals[0] > 0 and totals[1] > 0, report


def _lookup_counts(e: FwdEdge) -> tuple[int, int]:
    """Sum over boots of the last status figures (dup_skipped, lookups): counters start at 0 with every boot."""
    skipped = lookups = 0
    last = None
    for ln in list(e.lines) + ["edge: ready (end)"]:
        if ln.startswith("edge: ready "):
            if last is not None:
                skipped += last["dup_skipped"]
                lookups += last["lookups"]
            last = None
        elif ln.startswith("edge: fwdstatus "):
            last = json.loads(ln[len("edge: fwdstatus "):])["queues"][0]
    return skipped, lookups


@pytest.mark.device
@pytest.mark.timeout(300)
def test_power_cuts_lose_and_duplicate_nothing(side, tmp_path, mpy_tree, edge_runtime):
    # frozen32: 4 edges x 12 cuts inside a 60 KB heap keep `make test` short; the 64-bit runs take the 200 cuts
    _powercut_run(side, tmp_path, mpy_tree, cuts_per_edge=12 if edge_runtime.frozen else 50, seed=1)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_power_cuts_lose_and_duplicate_nothing_long(side, tmp_path, mpy_tree):
    _powercut_run(side, tmp_path, mpy_tree, cuts_per_edge=250, seed=2)
