"""Store-and-forward (edge/leaf/forward.py): MicroPython edges draining into a hub JetStream stream.

Real processes only: a `micropython -m edge` edge (its app is tests/edge/fwdapp.py), nats-server (`nats`) or our hub
(`hub`) with JetStream and a store directory kept across restarts, nats-py clients on the edge's LAN port and on the
hub. Every check reads the hub's stream itself (STREAM.MSG.GET per sequence).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time

import nats
import pytest

from tests.compat.harness import run, stop_process
from tests.edge.edgeharness import REPO, JsHub
from tests.edge.fwdharness import (
    FwdEdge,
    HoldProxy,
    add_stream,
    forward_config,
    free_port,
    msg_ids,
    payload_index,
    stream_messages,
    wait_drained,
    wait_until,
)


@pytest.fixture
def jshub(side, tmp_path):
    h = JsHub(side, tmp_path / f"hub-{side}")
    yield h
    h.stop()


async def _nc(url):
    return await nats.connect(url, allow_reconnect=False, connect_timeout=2)


def _gap_collector(url, subject="$EDGE.e1.gap"):
    """A hub subscriber on the gap subject, started before the edge connects; -> (start coroutine, markers)."""
    markers: list[dict] = []

    async def on_marker(m):
        markers.append(json.loads(m.data))

    async def start():
        nc = await _nc(url)
        await nc.subscribe(subject, cb=on_marker)
        await nc.flush()
        return nc

    return start, markers


@pytest.mark.device
def test_lan_js_publish_gets_puback_on_flash_and_drains_in_order(jshub, fwd_edges):
    jshub.start()
    run(add_stream(jshub.url, "TELE", ["tele.>"]))
    e = fwd_edges(forward_config("e1", jshub.leaf_port, [{"subjects": ["tele.>"], "stream": "TELE"}],
                                 listen=free_port()))
    e.start()
    e.wait_line(r"uplink up", timeout=10)

    async def body():
        nc = await _nc(e.url)
        local = await nc.subscribe("tele.>")
        js = nc.jetstream(timeout=3)
        acks = [await js.publish(f"tele.k{i % 3}", b"v%d" % i, headers={"Unit": "C"}) for i in range(50)]
        assert [(a.stream, a.seq) for a in acks] == [("TELE", i) for i in range(1, 51)]
        with pytest.raises(nats.js.errors.APIError) as err:
            await js.publish("tele.x", b"wrong stream", stream="OTHER")
        assert err.value.err_code == 10060
        # local subscribers get every message at once, as without a queue
        got = [await local.next_msg(timeout=2) for _ in range(50)]
        assert [m.data for m in got] == [b"v%d" % i for i in range(50)]
        await nc.close()

    run(body())
    st = wait_drained(e)
    msgs = run(stream_messages(jshub.url, "TELE"))
    assert [m.data for m in msgs] == [b"v%d" % i for i in range(50)]
    assert [m.subject for m in msgs] == [f"tele.k{i % 3}" for i in range(50)]
    assert msg_ids(msgs) == [f"e1-TELE-{i}" for i in range(1, 51)]
    assert all(m.headers["Unit"] == "C" for m in msgs)
    assert st["published"] == 50 and st["duplicates"] == 0 and st["dup_skipped"] == 0


@pytest.mark.device(slow=True)  # frozen32: the power-cut test covers outages and catch-up in make test
def test_outage_and_hub_restarts_drain_everything_once_in_order(jshub, fwd_edges):
    jshub.start()
    run(add_stream(jshub.url, "TELE", ["tele.>"]))
    jshub.stop()
    e = fwd_edges(forward_config("e1", jshub.leaf_port, [{"subjects": ["tele.>"], "stream": "TELE"}],
                                 {"rate": 400}, app="fwdapp"))
    e.set_app(subjects=["tele.a", "tele.b"], count=600, batch=8, tag="b1")
    e.start()
    e.wait_line(r"^edge: app done 600$", timeout=30)  # every durable publish returned while the hub was down
    assert not e.errors()
    jshub.start()  # same store
    wait_until(lambda: e.count(r'"published": [1-9]') > 0, 10, msg="the drain to begin")
    jshub.stop()  # down again mid-drain, with PubAcks in flight
    jshub.start()
    st = wait_drained(e, timeout=40)
    msgs = run(stream_messages(jshub.url, "TELE"))
    assert [payload_index(m) for m in msgs] == [("b1", i) for i in range(600)]
    assert msg_ids(msgs) == [f"e1-TELE-{i}" for i in range(1, 601)]
    assert st["published"] + st["duplicates"] + st["dup_skipped"] >= 600


@pytest.mark.device(slow=True)
@pytest.mark.parametrize("dedup_scan", [1000, 0], ids=["lookup", "no-lookup"])
def test_lost_pubacks_after_the_duplicate_window_are_not_stored_twice(jshub, fwd_edges, dedup_scan):
    # The hub stores what the edge sends, but its PubAcks are lost; the edge sends again long after the stream's
    # 0.5 s duplicate window. With the lookup nothing is stored twice; without it (dedup_scan 0) the same setup
    # does store duplicates, so the test can see the difference.
    jshub.start()
    run(add_stream(jshub.url, "TELE", ["tele.>"], duplicate_window=0.5))
    proxy = HoldProxy(jshub.leaf_port)
    try:
        e = fwd_edges(forward_config("e1", proxy.port, [{"subjects": ["tele.>"], "stream": "TELE"}],
                                     {"max_inflight": 16, "dedup_scan": dedup_scan}, app="fwdapp"))
        e.set_app(subjects=["tele.a"], count=60, batch=4, tag="h", wait_file="go")
        proxy_hold_after_up(e, proxy)
        e.wait_line(r"no PubAck in", timeout=15)
        proxy.cut()  # the hub's answers were swallowed: the edge dials again
        st = wait_drained(e, timeout=30)
    finally:
        proxy.close()
    msgs = run(stream_messages(jshub.url, "TELE"))
    ids = msg_ids(msgs)
    dups = len(ids) - len(set(ids))
    assert set(ids) == {f"e1-TELE-{i}" for i in range(1, 61)}
    if dedup_scan:
        assert dups == 0 and st["dup_skipped"] >= 1 and st["lookups"] >= 1
        assert [payload_index(m)[1] for m in msgs] == list(range(60))
    else:
        assert dups >= 1, "without the lookup the resent records should have been stored again"


def proxy_hold_after_up(e: FwdEdge, proxy: HoldProxy):
    """Start the edge with its app held back until the uplink is up, then make the proxy swallow the hub's answers
    before the app publishes (the app waits for the file `go`)."""
    e.start()
    e.wait_line(r"uplink up", timeout=10)
    wait_until(lambda: e.count(r'"state": "up"') > 0, 10, msg="the queue to be ready")
    proxy.hold()
    (e.workdir / "go").write_text("")


def _damage_newest_segment(folder, record):
    """Flip a byte inside record number `record` (0-based) of the newest segment file of a log folder, as flash gets
    damaged (tests/fuzz/edge_targets.py): recovery keeps the records before it. -> the records the file held."""
    seg = sorted(p for p in folder.iterdir() if p.suffix == ".log")[-1]
    b = bytearray(seg.read_bytes())
    starts = []
    at = 0
    while at + 2 <= len(b):
        starts.append(at)
        at += 6 + (b[at] | b[at + 1] << 8)
    b[starts[record] + 3] ^= 0x5A
    seg.write_bytes(bytes(b))
    return len(starts)


@pytest.mark.device
def test_a_damaged_log_never_reuses_the_sequence_of_a_record_sent_before(jshub, fwd_edges):
    # Records go out (the hub stores them, their PubAcks are lost), then the tail of the log's newest segment is
    # damaged on flash: recovery keeps the records before the damage. A record published after the reboot must not
    # get the sequence of a lost one: its Nats-Msg-Id would be in the stream already (the duplicate window, and
    # the lookup after a later reboot, take it for stored) and it would be lost without a word.
    jshub.start()
    run(add_stream(jshub.url, "TELE", ["tele.>"]))  # the default duplicate window, 2 minutes
    proxy = HoldProxy(jshub.leaf_port)
    try:
        e = fwd_edges(forward_config("e1", proxy.port, [{"subjects": ["tele.>"], "stream": "TELE"}],
                                     {"ack_timeout": 1}, app="fwdapp"))
        e.set_app(subjects=["tele.a"], count=10, batch=10, tag="old", wait_file="go")
        proxy_hold_after_up(e, proxy)
        e.wait_line(r"^edge: app done 10$", timeout=15)
        wait_until(lambda: len(run(stream_messages(jshub.url, "TELE"))) == 10, 10, msg="10 records in TELE")
        e.kill()  # none of them confirmed: the log still holds 1..10, its mark the send_limit past them
        assert _damage_newest_segment(e.workdir / "data" / "fwd" / "TELE", 7) == 10  # records 8..10 lost
        e.set_app(subjects=["tele.a"], count=1, tag="new")
        start = len(e.lines)
        e.start()  # the proxy still swallows the hub's answers: the queue waits, offline
        e.wait_line(r"^edge: app done 1$", timeout=15, start=start)
        e.wait_line(r'"backlog": 8\b', timeout=5, start=start)  # the 7 records left and the new one, no burned ones
        proxy.cut()  # the hub's answers get through again
        st = wait_drained(e, timeout=30, start=start)
    finally:
        proxy.close()
    msgs = run(stream_messages(jshub.url, "TELE"))
    keys = [payload_index(m) for m in msgs]
    ids = msg_ids(msgs)
    assert ("new", 0) in keys, f"the record published after the damage never reached the stream: {ids}, status {st}"
    assert len(ids) == len(set(ids)) == 11 and keys[:10] == [("old", i) for i in range(10)]
    seq = int(ids[keys.index(("new", 0))].rsplit("-", 1)[1])
    assert seq > 10, f"the new record took sequence {seq}, the id of a record sent before the damage"
    assert st["duplicates"] == 0 and st["published"] == 1 and st["dup_skipped"] == 7
    backlogs = {json.loads(ln[len("edge: fwdstatus "):])["queues"][0]["backlog"] for ln in e.lines[start:]
                if ln.startswith("edge: fwdstatus ")}
    assert max(backlogs) == 8, f"burned sequences counted as backlog: {sorted(backlogs)}"


@pytest.mark.parametrize("policy", ["reject", "drop_oldest", "drop_newest"])
def test_overflow_policies_count_drops_and_send_gap_markers(jshub, fwd_edges, policy):
    q = {"subjects": ["tele.>"], "stream": "TELE", "policy": policy, "segment_size": 4096, "max_bytes": 8192}
    e = fwd_edges(forward_config("e1", jshub.leaf_port, [q], listen=free_port(), max_payload=1024))
    e.start()
    n = 150

    async def publish():
        nc = await _nc(e.url)
        js = nc.jetstream(timeout=3)
        refused = []
        for i in range(n):
            data = b"%04d " % i + b"p" * 100
            if policy == "reject":
                try:
                    await js.publish("tele.a", data)
                except nats.js.errors.APIError as err:
                    refused.append((i, err.err_code, err.description))
            else:
                await nc.publish("tele.a", data)
        await nc.flush()
        await nc.close()
        return refused

    refused = run(publish())  # the hub is not up yet: everything waits on flash
    jshub.start()
    run(add_stream(jshub.url, "TELE", ["tele.>"]))
    start_gaps, markers = _gap_collector(jshub.url)

    async def drain():
        nc = await start_gaps()
        wait = 0
        while wait < 300 and (not markers if policy != "reject" else wait < 20):
            await asyncio.sleep(0.1)
            wait += 1
        await nc.close()

    run(drain(), timeout=40)
    st = wait_drained(e, timeout=30)
    msgs = run(stream_messages(jshub.url, "TELE"))
    got = [int(m.data[:4]) for m in msgs]
    kept = len(got)
    assert 40 < kept < n, kept
    if policy == "reject":
        assert got == list(range(kept))
        assert [r[0] for r in refused] == list(range(kept, n))
        assert {r[1] for r in refused} == {10077} and "full" in refused[0][2]
        assert st["rejected"] == n - kept and st["dropped"] == 0 and markers == []
    elif policy == "drop_oldest":
        assert got == list(range(n - kept, n))
        assert st["dropped"] == n - kept
        assert [(m["reason"], m["first"], m["last"], m["count"]) for m in markers] == [
            ("drop_oldest", 1, n - kept, n - kept)]
    else:
        assert got == list(range(kept))
        assert st["dropped"] == n - kept
        assert [(m["reason"], m["count"]) for m in markers] == [("drop_newest", n - kept)]
        assert markers[0]["last"] == kept
    assert all(m["edge"] == "e1" and m["queue"] == "TELE" for m in markers)


def test_max_age_coalesce_and_priority_at_replay(jshub, fwd_edges):
    queues = [
        {"subjects": ["lo.>"], "stream": "MIX", "name": "low", "priority": 0},
        {"subjects": ["hi.>"], "stream": "MIX", "name": "high", "priority": 10},
        {"subjects": ["st.>"], "stream": "MIX", "name": "state", "coalesce": True},
        {"subjects": ["old.>"], "stream": "MIX", "name": "old", "max_age": 1},
    ]
    e = fwd_edges(forward_config("e1", jshub.leaf_port, queues, listen=free_port()))
    e.start()

    async def publish():
        nc = await _nc(e.url)
        for i in range(30):
            await nc.publish("lo.x", b"lo %d" % i)
        for i in range(30):
            await nc.publish("hi.x", b"hi %d" % i)
        for i in range(5):
            await nc.publish("st.a", b"a %d" % i)
            await nc.publish("st.b", b"b %d" % i)
        for i in range(7):
            await nc.publish("old.x", b"old %d" % i)
        await nc.flush()
        await nc.close()

    run(publish())
    e.wait_line(r'"name": "old".*"backlog": 7|"backlog": 7.*"name": "old"', timeout=5)
    asyncio.run(asyncio.sleep(2.2))  # the "old" records pass max_age before the hub comes
    jshub.start()
    run(add_stream(jshub.url, "MIX", ["lo.>", "hi.>", "st.>", "old.>"]))
    start_gaps, markers = _gap_collector(jshub.url)

    async def collect():
        nc = await start_gaps()
        for _ in range(300):
            if markers:
                break
            await asyncio.sleep(0.1)
        await nc.close()

    run(collect(), timeout=40)
    wait_drained(e, timeout=30)
    msgs = run(stream_messages(jshub.url, "MIX"))
    data = [m.data.decode() for m in msgs]
    hi = [d for d in data if d.startswith("hi")]
    lo = [d for d in data if d.startswith("lo")]
    assert hi == [f"hi {i}" for i in range(30)] and lo == [f"lo {i}" for i in range(30)]
    assert data.index("lo 0") > data.index("hi 29"), "the high-priority queue drains first"
    assert sorted(d for d in data if d[:2] in ("a ", "b ")) == ["a 4", "b 4"], "coalesce keeps the newest"
    assert not [d for d in data if d.startswith("old")]
    assert [(m["queue"], m["reason"], m["count"]) for m in markers] == [("old", "max_age", 7)]
    st = json.loads([ln for ln in e.lines if ln.startswith("edge: fwdstatus ")][-1][len("edge: fwdstatus "):])
    byname = {q["name"]: q for q in st["queues"]}
    assert byname["state"]["coalesced"] == 8 and byname["old"]["expired"] == 7


@pytest.mark.parametrize("setting,value", [("rate", 40), ("byte_rate", 40 * 140)])
def test_pacing_budget_spreads_the_drain(jshub, fwd_edges, setting, value):
    # A functional bound, not a speed test: with a budget of about 40 messages/s, 100 messages cannot be stored
    # in less than (100 - burst) / 40 seconds; the stream's own timestamps say how long they took.
    e = fwd_edges(forward_config("e1", jshub.leaf_port, [{"subjects": ["tele.>"], "stream": "TELE"}],
                                 {setting: value}, listen=free_port()))
    e.start()

    async def publish():
        nc = await _nc(e.url)
        for i in range(100):
            await nc.publish("tele.a", b"%03d " % i + b"x" * 90)
        await nc.flush()
        await nc.close()

    run(publish())
    # The hub stays away for 2 s: the budget must not pile up meanwhile (a byte bucket that could fill up to the
    # largest payload, 1 MB, let the whole backlog out at once after an outage).
    time.sleep(2)
    jshub.start()
    run(add_stream(jshub.url, "TELE", ["tele.>"]))
    wait_drained(e, timeout=30)
    msgs = run(stream_messages(jshub.url, "TELE"))
    assert [int(m.data[:3]) for m in msgs] == list(range(100))
    span = _span_from_direct(jshub.url, "TELE")
    assert span >= (100 - 8 - 1) / 40 * 0.9, span


def _span_from_direct(url, stream):
    async def body():
        nc = await _nc(url)
        try:
            first = await nc.request(f"$JS.API.STREAM.MSG.GET.{stream}", b'{"seq":1}', timeout=2)
            info = await nc.jetstream().stream_info(stream)
            last = await nc.request(f"$JS.API.STREAM.MSG.GET.{stream}",
                                    json.dumps({"seq": info.state.last_seq}).encode(), timeout=2)
            return _t(json.loads(last.data)) - _t(json.loads(first.data))
        finally:
            await nc.close()

    return run(body())


def _t(resp):
    from host.gotime import parse_time

    return parse_time(resp["message"]["time"]) / 1e9


def test_status_reaches_the_hub(jshub, fwd_edges):
    jshub.start()
    run(add_stream(jshub.url, "TELE", ["tele.>"]))
    e = fwd_edges(forward_config("e1", jshub.leaf_port, [{"subjects": ["tele.>"], "stream": "TELE"}],
                                 listen=free_port()))
    e.start()

    async def body():
        h = await _nc(jshub.url)
        sub = await h.subscribe("$EDGE.e1.forward")
        await h.flush()
        nc = await _nc(e.url)
        js = nc.jetstream(timeout=3)
        for i in range(5):
            await js.publish("tele.a", b"s%d" % i)
        for _ in range(100):
            st = json.loads((await sub.next_msg(timeout=3)).data)
            q = st["queues"][0]
            if q["published"] == 5 and q["backlog"] == 0:
                break
        await nc.close()
        await h.close()
        return st

    st = run(body())
    q = st["queues"][0]
    assert st["edge"] == "e1" and st["up"] is True
    assert (q["name"], q["stream"], q["backlog"], q["inflight"], q["oldest_age"]) == ("TELE", "TELE", 0, 0, 0)
    assert q["bytes_written"] >= q["size_bytes"] > 0
    assert {"dropped", "dup_skipped", "duplicates", "expired", "rejected", "last_seq"} <= set(q)


@pytest.mark.device(slow=True)
def test_full_flash_refuses_publishes_and_recovers(jshub, fwd_edges, tmp_path, mpy_tree):
    # The queue's budget is far larger than the littlefs volume: the flash fills first (ENOSPC). Durable publishes
    # are refused, never acknowledged; the edge keeps running; once the hub took the backlog the space is back.
    q = {"subjects": ["tele.>"], "stream": "TELE", "segment_size": 4096, "max_bytes": 1 << 20}
    cfg = forward_config("e1", jshub.leaf_port, [q], data="/flash/data", app="fwdapp", max_payload=1024)
    e = fwd_edges(cfg, image=(str(tmp_path / "small.img"), 16), mpy=mpy_tree[0])
    e.set_app(subjects=["tele.a"], count=700, batch=4, size=64, tag="full")
    e.start()
    e.wait_line(r"^edge: app done ", timeout=60)
    refused = [ln for ln in e.errors() if "errno 28" in ln or "flash write failed" in ln]
    assert refused, e.output()
    acked_before = e.acked_keys()
    assert 100 < len(acked_before) < 700
    assert e.alive()
    jshub.start()
    run(add_stream(jshub.url, "TELE", ["tele.>"]))
    start_gaps, markers = _gap_collector(jshub.url)

    async def collect():
        nc = await start_gaps()
        for _ in range(300):
            if markers:
                break
            await asyncio.sleep(0.1)
        await nc.close()

    run(collect(), timeout=40)
    wait_drained(e, timeout=40)
    assert markers and markers[0]["reason"] == "flash_error" and markers[0]["count"] >= 1
    e.stop()
    e.set_app(subjects=["tele.a"], count=50, batch=4, size=64, tag="again")
    e.start()
    e.wait_line(r"^edge: app done 50$", timeout=30)
    wait_drained(e, timeout=30)
    msgs = run(stream_messages(jshub.url, "TELE"))
    keys = [payload_index(m) for m in msgs]
    assert len(keys) == len(set(keys)) and len(set(msg_ids(msgs))) == len(msgs)
    assert e.acked_keys() <= set(keys)
    assert [k for k in keys if k[0] == "again"] == [("again", i) for i in range(50)]


def test_the_same_queue_runs_on_cpython(jshub, tmp_path):
    # `natsedge edge` / `python -m edge`: the same code on CPython, data on a POSIX folder (fsync per flush).
    jshub.start()
    run(add_stream(jshub.url, "TELE", ["tele.>"]))
    port = free_port()
    cfg = forward_config("c1", jshub.leaf_port, [{"subjects": ["tele.>"], "stream": "TELE"}], listen=port)
    (tmp_path / "c1.json").write_text(json.dumps(cfg))
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "edge", str(tmp_path / "c1.json")], cwd=str(tmp_path), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        async def body():
            for _ in range(100):
                try:
                    nc = await _nc(f"nats://127.0.0.1:{port}")
                    break
                except (OSError, nats.errors.NoServersError):
                    await asyncio.sleep(0.05)
            js = nc.jetstream(timeout=3)
            acks = [await js.publish("tele.c", b"c%d" % i) for i in range(20)]
            await nc.close()
            return acks

        acks = run(body())
        assert [(a.stream, a.seq) for a in acks] == [("TELE", i) for i in range(1, 21)]
        wait_until(lambda: len(run(stream_messages(jshub.url, "TELE"))) == 20, 10, msg="20 messages in TELE")
        msgs = run(stream_messages(jshub.url, "TELE"))
        assert [m.data for m in msgs] == [b"c%d" % i for i in range(20)]
        assert msg_ids(msgs) == [f"c1-TELE-{i}" for i in range(1, 21)]
    finally:
        stop_process(proc)
