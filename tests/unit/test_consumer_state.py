"""host/jetstream/consumer.py consumers at work, in process: the real consumer code, a real Account (sublist, interest
watchers) and real stores (MemStore, FileStore), with a small stand-in for the stream and the hub around them.
Frames are checked byte for byte against nats-server 2.15.1's captures (vectors/js/22-27, 35) where one exists.

Timers are recorded, not run: a test moves the consumer's clock-dependent state (a pending timestamp, a request's
deadline) and calls the timer's handler itself, so nothing here sleeps.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import time
from pathlib import Path

import pytest

from host.accounts import Account
from host.delivery import deliver_msg
from host.gotime import NS
from host.jetstream.consumer import Consumer, install, recover
from host.jetstream.consumer_api import consumer_api
from host.jetstream.errors import ApiError
from host.jetstream.filestore import FileStore
from host.jetstream.gojson import dumps
from host.jetstream.memstore import MemStore
from host.jetstream.store import StoreConfig
from host.sublist import Subscription

VECTORS = Path(__file__).resolve().parents[1] / "vectors"  # nats-server 2.15.1 captures (tests/vectors/README.md)


def vectors_dir() -> Path:
    js = VECTORS / "js"
    assert (js / "api_pairs.json").is_file(), f"vectors missing: {js / 'api_pairs.json'}"
    return js


# ---- stand-ins for the hub around the consumer --------------------------------------------------------------------


class Frame:
    def __init__(self, subject: str, sid: str, reply: str | None, hdr: bytes | None, payload: bytes) -> None:
        self.subject, self.sid, self.reply, self.hdr, self.payload = subject, sid, reply, hdr, payload

    def status(self) -> str | None:
        if self.hdr and self.hdr.startswith(b"NATS/1.0 "):
            return self.hdr.split(b"\r\n", 1)[0][9:].decode()
        return None

    def header(self, name: str) -> str | None:
        for line in (self.hdr or b"").split(b"\r\n")[1:]:
            k, _, v = line.partition(b": ")
            if k.decode() == name:
                return v.decode()
        return None

    def __repr__(self) -> str:
        return f"Frame({self.subject} {self.reply} {self.hdr!r} {self.payload!r})"


class Conn:
    """A client connection as host/delivery.py sees one; take() decodes what was queued."""

    is_leaf = False
    is_router = False
    is_gateway = False
    is_link = False
    to_routes = True
    perms = None

    def __init__(self, acc: Account) -> None:
        self.acc = acc
        self.closed = False
        self.headers = True
        self.dirty = False
        self.out: list[bytes] = []
        self.out_msgs = self.out_bytes = 0
        self.subs: dict[bytes, Subscription] = {}
        self._sid = 0

    def enqueue(self, data: bytes) -> None:
        self.out.append(data)

    def sub(self, subject: str, queue: str | None = None) -> Subscription:
        self._sid += 1
        s = Subscription(self, subject.encode(), queue.encode() if queue else None, str(self._sid).encode())
        self.subs[s.sid] = s
        self.acc.add_sub(s)
        return s

    def remove_sub(self, sub: Subscription) -> None:
        if self.subs.pop(sub.sid, None) is not None:
            sub.closed = True
            self.acc.remove_sub(sub)

    def take(self) -> list[Frame]:
        data = b"".join(self.out)
        self.out.clear()
        self.dirty = False
        frames = []
        while data:
            head, _, rest = data.partition(b"\r\n")
            words = head.split()
            if words[0] == b"HMSG":
                hlen, total = int(words[-2]), int(words[-1])
                reply = words[3].decode() if len(words) == 6 else None
                frames.append(Frame(words[1].decode(), words[2].decode(), reply, rest[:hlen], rest[hlen:total]))
            else:
                total = int(words[-1])
                reply = words[3].decode() if len(words) == 5 else None
                frames.append(Frame(words[1].decode(), words[2].decode(), reply, None, rest[:total]))
            data = rest[total + 2 :]
        return frames


class Timer:
    def __init__(self, delay: float, fn) -> None:
        self.delay, self.fn, self.cancelled = delay, fn, False

    def cancel(self) -> None:
        self.cancelled = True


class Internal:
    """The hub's own publisher, as Server.internal."""

    echo = True
    no_responders = False

    def __init__(self, server: Server) -> None:
        self.server = server


class Server:
    version = "2.11.0"
    reading = None

    def __init__(self) -> None:
        self.out_msgs = self.out_bytes = 0
        self.dirty: list[Conn] = []
        self.internal = Internal(self)

    def flush_dirty(self) -> None:
        pass  # Conn.take() decodes what was queued


class JSA:
    """What the consumer uses of a JSAccount: publish (through internal subscriptions too), replies, timers."""

    def __init__(self) -> None:
        self.server = Server()
        self.account = Account("$G")
        self.limits = self.account.limits  # the account's quotas (JSAccount.limits); none here
        self.streams: dict = {}
        self.api_total = self.api_errors = 0
        self.timers: list[Timer] = []

    def publish(self, subject: bytes, reply: bytes | None, hdr: bytes | None, payload: bytes) -> int:
        return deliver_msg(self.account, self.server.internal, subject, reply, hdr, payload)

    def respond(self, reply: bytes | None, body: dict) -> None:
        if reply:
            self.publish(reply, None, None, dumps(body))

    def respond_error(self, reply: bytes | None, type_name: str, err: ApiError, extra: dict | None = None) -> None:
        self.api_errors += 1
        self.respond(reply, {"type": type_name, "error": err.body(), **(extra or {})})

    def call_later(self, delay: float, fn) -> Timer:
        t = Timer(delay, fn)
        self.timers.append(t)
        return t


class Stream:
    """The stream side of the contract: name, jsa, store, config, retention, consumers, dir, ack_msg, purge."""

    def __init__(self, jsa: JSA, name: str, subjects: list[str], retention: str = "limits", store=None,
                 sdir: str | None = None, **cfg) -> None:
        self.jsa, self.name, self.retention, self.dir = jsa, name, retention, sdir
        self.config = {"name": name, "subjects": subjects, "retention": retention, "num_replicas": 1,
                       "max_msgs_per_subject": -1, "max_consumers": -1, **cfg}
        self.store = store or MemStore(StoreConfig(name=name))
        self.consumers: dict = {}
        self.closed = False
        self.acked: list[tuple[str, int]] = []
        jsa.streams[name] = self

    def publish(self, subject: str, data: bytes = b"x", hdr: bytes | None = None) -> int:
        seq, _ = self.store.store_msg(subject, hdr, data)
        for c in list(self.consumers.values()):
            c.on_msg(seq, subject)
        return seq

    def ack_msg(self, consumer, seq: int) -> None:
        self.acked.append((consumer.name, seq))
        if self.retention == "workqueue" or (self.retention == "interest" and not any(
                c is not consumer and c.needs(seq, self.store.subject_for_seq(seq)) for c in self.consumers.values())):
            self.store.remove_msg(seq)

    def purge(self, subject, seq, keep) -> int:
        n = self.store.purge(subject, seq, keep)
        for c in list(self.consumers.values()):
            c.on_purge()
        return n


@pytest.fixture
def jsa() -> JSA:
    j = JSA()
    install(j)
    return j


_INBOXES = itertools.count(1)


def api(jsa: JSA, subject: str, body=None) -> dict:
    conn = Conn(jsa.account)
    inbox = f"_INBOX.api.{next(_INBOXES)}"
    sub = conn.sub(inbox)
    payload = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    consumer_api(jsa, subject.split("."), inbox.encode(), None, payload)
    conn.remove_sub(sub)
    frames = conn.take()
    assert len(frames) == 1, frames
    return json.loads(frames[0].payload)


def create(jsa: JSA, stream: str, name: str, **cfg) -> Consumer:
    config = {"durable_name": name, "ack_policy": "explicit", **cfg}
    resp = api(jsa, f"$JS.API.CONSUMER.CREATE.{stream}.{name}", {"stream_name": stream, "config": config})
    assert "error" not in resp, resp
    return jsa.streams[stream].consumers[name]


class Puller:
    def __init__(self, jsa: JSA, stream: str, name: str) -> None:
        self.jsa, self.subject = jsa, f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{name}".encode()
        self.conn = Conn(jsa.account)
        self.inbox = f"_INBOX.pull.{next(_INBOXES)}"
        self.sub = self.conn.sub(self.inbox)

    def pull(self, body=None) -> list[Frame]:
        payload = b"" if body is None else json.dumps(body).encode()
        consumer_api(self.jsa, self.subject.decode().split("."), self.inbox.encode(), None, payload)
        return self.conn.take()


def ack(jsa: JSA, frame: Frame, payload: bytes = b"", reply: str | None = None) -> None:
    jsa.publish(frame.reply.encode(), reply.encode() if reply else None, None, payload)


def tokens(frame: Frame) -> tuple[int, int, int, int]:
    """(delivered count, stream seq, consumer seq, pending) of a delivery's ack subject."""
    t = frame.reply.split(".")
    return int(t[4]), int(t[5]), int(t[6]), int(t[8])


def strip_dynamic(cfg: dict) -> dict:
    out = dict(cfg)
    md = dict(out.get("metadata") or {})
    md.pop("_nats.ver", None)
    md.pop("_nats.level", None)
    out["metadata"] = md
    return out


# ---- the API against the captured pairs -----------------------------------------------------------------------------


def orders(jsa: JSA) -> Stream:
    """ORDERS as the captures left it for consumer C1: seq 2 deleted, 11 messages on orders.> (seq 1, 3-12), six
    of them on orders.paid (3, 5-9)."""
    s = Stream(jsa, "ORDERS", ["orders.>"])
    subjects = ["orders.new", "orders.new", "orders.paid", "orders.new"] + ["orders.paid"] * 5 + ["orders.new"] * 3
    for subj in subjects:
        s.publish(subj)
    s.store.remove_msg(2)
    return s


def test_create_info_names_delete_as_vectors_19_to_27(jsa):
    orders(jsa)
    pairs = json.loads((vectors_dir() / "api_pairs.json").read_text())["pairs"]
    generated = None
    checked = 0
    for p in pairs:
        if p["op"] not in ("07b_bad_requests", "19_consumer_create", "20_consumer_info_names_list",
                           "21_consumer_not_found", "27_consumer_delete"):
            continue
        subject = p["request"]["subject"]
        if "CONSUMER" not in subject:
            continue
        body = p["request"]["payload"]
        got = api(jsa, subject, body if body else None)
        want = p["responses"][0]["payload"]
        if "error" in want:
            assert got == want, subject
        elif "consumers" in want and want["type"].endswith("names_response"):
            assert got["total"] == want["total"] and got["limit"] == want["limit"]
            assert got["consumers"] == sorted(got["consumers"])
            assert sorted("W51VnCB1" if n == generated else n for n in got["consumers"]) == want["consumers"]
        elif "consumers" in want:
            assert got["total"] == want["total"] and got["limit"] == want["limit"]
            mine = {("W51VnCB1" if c["name"] == generated else c["name"]): c for c in got["consumers"]}
            for c in want["consumers"]:
                # list entries carry the stored metadata only (no _nats.level/_nats.ver), as nats-server's
                assert mine[c["name"]]["config"] == c["config"]
                assert mine[c["name"]]["num_pending"] == c["num_pending"]
        elif "success" in want:
            assert got == want
        else:
            if want["name"] == "W51VnCB1":
                generated = got["name"]
                assert re.fullmatch(r"[A-Za-z0-9]{8}", generated)
                got["name"] = want["name"]
            assert list(got) == list(want), subject
            assert strip_dynamic(got["config"]) == strip_dynamic(want["config"])
            for key in ("delivered", "ack_floor", "num_ack_pending", "num_redelivered", "num_waiting",
                        "num_pending"):
                assert got[key] == want[key], (subject, key)
            assert set(got["config"]["metadata"]) == set(want["config"]["metadata"])
        checked += 1
    assert checked == 11


def test_pull_acks_and_state_as_vectors_22_23_26(jsa):
    orders(jsa)
    resp = api(jsa, "$JS.API.CONSUMER.DURABLE.CREATE.ORDERS.C1", {"stream_name": "ORDERS", "config": {
        "durable_name": "C1", "deliver_policy": "all", "ack_policy": "explicit", "ack_wait": 30000000000,
        "max_deliver": 5, "filter_subject": "orders.>", "replay_policy": "instant"}})
    assert resp["num_pending"] == 11
    p = Puller(jsa, "ORDERS", "C1")
    got = p.pull({"batch": 5, "expires": 1000000000})
    assert [f.subject for f in got] == ["orders.new", "orders.paid", "orders.new", "orders.paid", "orders.paid"]
    assert [tokens(f) for f in got] == [(1, 1, 1, 10), (1, 3, 2, 9), (1, 4, 3, 8), (1, 5, 4, 7), (1, 6, 5, 6)]
    assert all(f.sid == p.sub.sid.decode() for f in got)
    ack(jsa, got[0], b"+ACK")
    ack(jsa, got[1], b"-NAK")
    ack(jsa, got[2], b"+WPI")
    ack(jsa, got[3], b"+TERM")
    sync = Conn(jsa.account)
    sync.sub("_INBOX.sync")
    ack(jsa, got[4], b"+ACK", reply="_INBOX.sync")
    confirm = sync.take()
    assert len(confirm) == 1 and confirm[0].payload == b"" and confirm[0].hdr is None  # AckSync: empty reply
    got = p.pull({"batch": 3, "expires": 1000000000})
    assert [tokens(f) for f in got] == [(2, 3, 6, 6), (1, 7, 7, 5), (1, 8, 8, 4)]
    ack(jsa, got[0], b'-NAK {"delay": 2000000000}')
    ack(jsa, got[1], b"+TERM no longer needed")
    nxt = Conn(jsa.account)
    nxt.sub("_INBOX.nxt")
    ack(jsa, got[2], b'+NXT {"batch":1}', reply="_INBOX.nxt")
    assert [tokens(f) for f in nxt.take()] == [(1, 9, 9, 3)]
    info = api(jsa, "$JS.API.CONSUMER.INFO.ORDERS.C1")
    # vector 26: delivered 9/9, ack floor 1/2 (seq 2 is gone), 3 unacknowledged (3, 4, 9), one redelivered
    assert info["delivered"]["consumer_seq"] == 9 and info["delivered"]["stream_seq"] == 9
    assert (info["ack_floor"]["consumer_seq"], info["ack_floor"]["stream_seq"]) == (1, 2)
    assert (info["num_ack_pending"], info["num_redelivered"], info["num_pending"]) == (3, 1, 3)
    assert "last_active" in info["delivered"] and "last_active" in info["ack_floor"]
    c = jsa.streams["ORDERS"].consumers["C1"]
    assert sorted(c.pending) == [3, 4, 9] and c.rdc == {3: 1}


def test_pull_statuses_as_vector_24(jsa):
    orders(jsa)
    create(jsa, "ORDERS", "EMPTY", filter_subject="orders.none")
    create(jsa, "ORDERS", "C2")
    p = Puller(jsa, "ORDERS", "EMPTY")
    got = p.pull({"batch": 1, "no_wait": True})
    assert [f.status() for f in got] == ["404 No Messages"] and got[0].hdr == b"NATS/1.0 404 No Messages\r\n\r\n"
    assert p.pull({"batch": 1, "expires": 500000000}) == []
    c = jsa.streams["ORDERS"].consumers["EMPTY"]
    c.waiting[0].expires = 1  # the deadline passed: the timer's sweep answers 408
    c._wait_due()
    got = p.conn.take()
    assert got[0].hdr == (b"NATS/1.0 408 Request Timeout\r\nNats-Pending-Messages: 1\r\n"
                          b"Nats-Pending-Bytes: 0\r\n\r\n")
    assert p.pull({"batch": 1, "expires": 2500000000, "idle_heartbeat": 1000000000}) == []
    c.waiting[0].hbt = 1
    c._wait_due()
    hb = p.conn.take()
    assert hb[0].hdr == b"NATS/1.0 100 Idle Heartbeat\r\nNats-Last-Consumer: 0\r\nNats-Last-Stream: 12\r\n\r\n"
    got = Puller(jsa, "ORDERS", "C2").pull({"batch": 10, "max_bytes": 40, "expires": 500000000})
    assert got[0].hdr == (b"NATS/1.0 409 Message Size Exceeds MaxBytes\r\nNats-Pending-Messages: 10\r\n"
                          b"Nats-Pending-Bytes: 40\r\n\r\n")
    c2 = jsa.streams["ORDERS"].consumers["C2"]
    assert c2.sseq == 1 and c2.num_pending() == 11  # the message that did not fit was put back


def test_kv_keys_consumer_as_vector_35(jsa):
    kv = Stream(jsa, "KV_cfg", ["$KV.cfg.>"], max_msgs_per_subject=5)
    for key, hdr in (("color", None), ("color", None), ("size", None),
                     ("color", b"NATS/1.0\r\nNats-Expected-Last-Subject-Sequence: 2\r\n\r\n"), ("new", None),
                     ("size", b"NATS/1.0\r\nKV-Operation: DEL\r\n\r\n"),
                     ("new", b"NATS/1.0\r\nKV-Operation: PURGE\r\nNats-Rollup: sub\r\n\r\n")):
        kv.publish("$KV.cfg." + key, b"" if hdr and b"KV-Op" in hdr else b"blue", hdr)
    kv.store.purge("$KV.cfg.new", 7, 0)  # the rollup left only the PURGE marker of "new"
    deliver = "_INBOX.keys"
    resp = api(jsa, "$JS.API.CONSUMER.CREATE.KV_cfg", {"stream_name": "KV_cfg", "config": {
        "deliver_policy": "last_per_subject", "ack_policy": "none", "ack_wait": 79200000000000, "max_deliver": 1,
        "filter_subject": "$KV.cfg.>", "replay_policy": "instant", "flow_control": True,
        "idle_heartbeat": 5000000000, "headers_only": True, "deliver_subject": deliver,
        "inactive_threshold": 300000000000, "num_replicas": 1, "mem_storage": True}})
    assert resp["delivered"] == {"consumer_seq": 0, "stream_seq": 3}
    assert resp["ack_floor"] == {"consumer_seq": 0, "stream_seq": 3} and resp["num_pending"] == 3
    assert "push_bound" not in resp
    name = resp["name"]
    client = Conn(jsa.account)
    client.sub(deliver)  # interest appears after the create, as nats-py does it: delivery starts now
    got = client.take()
    assert [(f.subject, tokens(f)) for f in got] == [("$KV.cfg.color", (1, 4, 1, 2)), ("$KV.cfg.size", (1, 6, 2, 1)),
                                                     ("$KV.cfg.new", (1, 7, 3, 0))]
    assert got[0].hdr == b"NATS/1.0\r\nNats-Expected-Last-Subject-Sequence: 2\r\nNats-Msg-Size: 4\r\n\r\n"
    assert got[1].hdr == b"NATS/1.0\r\nKV-Operation: DEL\r\nNats-Msg-Size: 0\r\n\r\n"
    assert all(f.payload == b"" for f in got)
    info = api(jsa, f"$JS.API.CONSUMER.INFO.KV_cfg.{name}")
    assert info["delivered"]["stream_seq"] == 7 and info["delivered"]["consumer_seq"] == 3
    assert info["ack_floor"]["stream_seq"] == 7 and info["num_pending"] == 0 and info["push_bound"] is True
    # a new value is delivered live (vector 37)
    kv.publish("$KV.cfg.color", b"violet")
    (f,) = client.take()
    assert tokens(f) == (1, 8, 4, 0) and f.header("Nats-Msg-Size") == "6"


# ---- redelivery, limits, policies -------------------------------------------------------------------------------


def expire_pending(c: Consumer) -> None:
    """Make every outstanding delivery older than ack_wait and run the ack timer's handler."""
    for p in c.pending.values():
        p.ts -= c.cfg["ack_wait"] + NS
    c._check_pending()


def adv_listener(jsa: JSA, subject: str = "$JS.EVENT.ADVISORY.CONSUMER.>") -> Conn:
    conn = Conn(jsa.account)
    conn.sub(subject)
    return conn


def test_ack_wait_redelivery_and_max_deliver_advisory(jsa):
    s = Stream(jsa, "S", ["s.>"])
    for _ in range(3):
        s.publish("s.a")
    adv = adv_listener(jsa)
    c = create(jsa, "S", "C", max_deliver=2, ack_wait=NS)
    p = Puller(jsa, "S", "C")
    assert [tokens(f)[:3] for f in p.pull({"batch": 1})] == [(1, 1, 1)]
    expire_pending(c)
    assert [tokens(f)[:3] for f in p.pull({"batch": 1})] == [(2, 1, 2)]  # redelivered, second delivery
    assert c.rdc == {1: 1}
    expire_pending(c)
    # a third delivery would pass max_deliver: the advisory goes out and message 2 comes instead
    assert [tokens(f)[:3] for f in p.pull({"batch": 1})] == [(1, 2, 3)]
    events = [json.loads(f.payload) for f in adv.take() if "MAX_DELIVERIES" in f.subject]
    assert len(events) == 1 and (events[0]["stream_seq"], events[0]["deliveries"]) == (1, 2)
    assert events[0]["type"] == "io.nats.jetstream.advisory.v1.max_deliver"
    assert sorted(c.pending) == [2] and c.num_pending() == 1
    info = api(jsa, "$JS.API.CONSUMER.INFO.S.C")
    assert info["num_redelivered"] == 1 and info["num_ack_pending"] == 1


def test_backoff_picks_the_delay_per_delivery(jsa):
    s = Stream(jsa, "S", ["s.>"])
    s.publish("s.a")
    c = create(jsa, "S", "C", backoff=[NS, 5 * NS], max_deliver=5)
    assert c.cfg["ack_wait"] == NS
    p = Puller(jsa, "S", "C")
    p.pull({"batch": 1})
    pend = c.pending[1]
    pend.ts = time.time_ns() - 2 * NS  # past backoff[0]
    c._check_pending()
    assert list(c.rdq) == [1]
    p.pull({"batch": 1})
    pend.ts = time.time_ns() - 2 * NS  # not past backoff[1] (5 s): stays pending
    c._check_pending()
    assert list(c.rdq) == [] and 1 in c.pending


def test_max_ack_pending_holds_delivery_until_an_ack(jsa):
    s = Stream(jsa, "S", ["s.>"])
    for _ in range(4):
        s.publish("s.a")
    create(jsa, "S", "C", max_ack_pending=2)
    p = Puller(jsa, "S", "C")
    got = p.pull({"batch": 4, "expires": 5 * NS})
    assert [tokens(f)[1] for f in got] == [1, 2]
    ack(jsa, got[0])
    assert [tokens(f)[1] for f in p.conn.take()] == [3]  # the waiting request gets the next one


def test_ack_all_acknowledges_everything_below(jsa):
    s = Stream(jsa, "S", ["s.>"], retention="workqueue")
    for _ in range(4):
        s.publish("s.a")
    with pytest.raises(AssertionError):
        create(jsa, "S", "C", ack_policy="all")  # 10098: a work queue wants explicit acks
    s.retention = "interest"
    s.config["retention"] = "interest"
    c = create(jsa, "S", "C", ack_policy="all")
    got = Puller(jsa, "S", "C").pull({"batch": 4})
    ack(jsa, got[2])
    assert sorted(c.pending) == [4] and (c.adflr, c.asflr) == (3, 3)
    assert sorted(seq for _, seq in s.acked) == [1, 2, 3]
    assert s.store.state().msgs == 1  # interest: nobody else needed 1-3


def test_ack_none_pull_and_workqueue_rules(jsa):
    s = Stream(jsa, "W", ["w.>"], retention="workqueue")
    for subj in ("w.a", "w.b", "w.a"):
        s.publish(subj)
    c = create(jsa, "W", "A", filter_subject="w.a")
    resp = api(jsa, "$JS.API.CONSUMER.CREATE.W.B", {"stream_name": "W", "config": {
        "durable_name": "B", "ack_policy": "explicit", "filter_subject": "w.>"}})
    assert resp["error"] == {"code": 400, "err_code": 10100, "description": "filtered consumer not unique on "
                                                                               "workqueue stream"}
    resp = api(jsa, "$JS.API.CONSUMER.CREATE.W.B", {"stream_name": "W", "config": {
        "durable_name": "B", "ack_policy": "explicit"}})
    assert resp["error"]["err_code"] == 10099
    got = Puller(jsa, "W", "A").pull({"batch": 5, "no_wait": True})
    assert [tokens(f)[1] for f in got if f.reply] == [1, 3] and got[-1].status() == "404 No Messages"
    for f in got[:2]:
        ack(jsa, f)
    assert s.store.state().msgs == 1 and c.needs(2, "w.b") is False


def test_needs_for_interest_retention(jsa):
    s = Stream(jsa, "S", ["s.>"], retention="interest")
    for _ in range(3):
        s.publish("s.a")
    c = create(jsa, "S", "C", filter_subject="s.a")
    assert c.needs(1, "s.a") and not c.needs(1, "s.b")
    got = Puller(jsa, "S", "C").pull({"batch": 2})
    ack(jsa, got[1])
    assert c.needs(1, "s.a") and not c.needs(2, "s.a") and c.needs(3, "s.a")


def test_deleting_the_last_interest_consumer_drops_its_messages(jsa):
    s = Stream(jsa, "S", ["s.>"], retention="interest")
    create(jsa, "S", "C")
    for _ in range(3):
        s.publish("s.a")
    assert api(jsa, "$JS.API.CONSUMER.DELETE.S.C") == {"type": "io.nats.jetstream.api.v1.consumer_delete_response",
                                                        "success": True}
    assert s.store.state().msgs == 0 and s.consumers == {}


def test_purge_releases_pending_and_recounts(jsa):
    s = Stream(jsa, "S", ["s.>"])
    for _ in range(5):
        s.publish("s.a")
    c = create(jsa, "S", "C")
    Puller(jsa, "S", "C").pull({"batch": 2})
    s.purge(None, 0, 0)
    assert c.pending == {} and c.num_pending() == 0 and c.sseq == 6
    info = api(jsa, "$JS.API.CONSUMER.INFO.S.C")
    # as nats-server: both floors jump past the purged messages
    assert info["num_ack_pending"] == 0
    assert info["delivered"]["consumer_seq"] == 2 and info["delivered"]["stream_seq"] == 5
    assert (info["ack_floor"]["consumer_seq"], info["ack_floor"]["stream_seq"]) == (2, 5)


# ---- pull request handling -------------------------------------------------------------------------------------


def test_waiting_requests_limits_and_lost_interest(jsa):
    s = Stream(jsa, "S", ["s.>"])
    create(jsa, "S", "C", max_waiting=1, max_batch=5, max_expires=NS, max_bytes=100)
    c = s.consumers["C"]
    p = Puller(jsa, "S", "C")
    assert [f.status() for f in p.pull({"batch": 6})] == ["409 Exceeded MaxRequestBatch of 5"]
    assert [f.status() for f in p.pull({"batch": 1, "expires": 2 * NS})] == ["409 Exceeded MaxRequestExpires of 1s"]
    assert [f.status() for f in p.pull({"batch": 1, "max_bytes": 101})] == ["409 Exceeded MaxRequestMaxBytes of 100"]
    assert p.pull({"batch": 1}) == []
    assert [f.status() for f in Puller(jsa, "S", "C").pull({"batch": 1})] == ["409 Exceeded MaxWaiting"]
    assert api(jsa, "$JS.API.CONSUMER.INFO.S.C")["num_waiting"] == 1
    p.conn.remove_sub(p.sub)  # the requester went away: its request is dropped
    assert api(jsa, "$JS.API.CONSUMER.INFO.S.C")["num_waiting"] == 0
    q = Puller(jsa, "S", "C")
    q.pull({"batch": 1})
    assert len(c.waiting) == 1
    api(jsa, "$JS.API.CONSUMER.DELETE.S.C")
    assert [f.status() for f in q.conn.take()] == ["409 Consumer Deleted"]


def test_no_wait_with_expires_answers_404_after_what_it_got(jsa):
    s = Stream(jsa, "S", ["s.>"])
    s.publish("s.a")
    create(jsa, "S", "C")
    got = Puller(jsa, "S", "C").pull({"batch": 2, "expires": 2 * NS, "no_wait": True})
    assert [tokens(f)[1] for f in got[:1]] == [1] and got[1].status() == "404 No Messages"


def test_negative_expires_times_out_at_once(jsa):
    Stream(jsa, "S", ["s.>"])
    create(jsa, "S", "C")
    got = Puller(jsa, "S", "C").pull({"batch": 1, "expires": -5})
    assert [f.status() for f in got] == ["408 Request Timeout"]


def test_batch_completed_when_bytes_are_left(jsa):
    s = Stream(jsa, "S", ["s.>"])
    s.publish("s.a")
    create(jsa, "S", "C")
    got = Puller(jsa, "S", "C").pull({"batch": 1, "max_bytes": 10_000})
    assert got[1].status() == "409 Batch Completed" and got[1].header("Nats-Pending-Messages") == "0"


def test_push_consumer_rejects_pulls_and_pull_for_missing_consumer_is_not_answered(jsa):
    Stream(jsa, "S", ["s.>"])
    create(jsa, "S", "P", deliver_subject="d.p")
    assert [f.status() for f in Puller(jsa, "S", "P").pull({"batch": 1})] == ["409 Consumer is push based"]
    assert Puller(jsa, "S", "NOPE").pull({"batch": 1}) == []


# ---- push consumers -----------------------------------------------------------------------------------------------


def test_push_delivery_follows_interest_and_queue_groups(jsa):
    s = Stream(jsa, "S", ["s.>"])
    s.publish("s.a", b"one")
    c = create(jsa, "S", "P", deliver_subject="d.p", deliver_group="g")
    assert not c.active
    a, b = Conn(jsa.account), Conn(jsa.account)
    sa = a.sub("d.p", "g")
    b.sub("d.p", "g")
    assert c.active
    s.publish("s.a", b"two")
    got = a.take() + b.take()
    assert sorted(f.payload for f in got) == [b"one", b"two"]  # one member of the group per message
    a.remove_sub(sa)
    for sub in list(b.subs.values()):
        b.remove_sub(sub)
    assert not c.active
    s.publish("s.a", b"three")
    assert a.take() == [] and b.take() == []
    assert c.num_pending() == 1
    b.sub("d.p", "g")
    assert [f.payload for f in b.take()] == [b"three"]


def test_push_consumer_moves_to_a_new_deliver_subject(jsa):
    s = Stream(jsa, "S", ["s.>"])
    create(jsa, "S", "P", deliver_subject="d.one")
    one = Conn(jsa.account)
    sub = one.sub("d.one")
    s.publish("s.a", b"1")
    assert [f.payload for f in one.take()] == [b"1"]
    move = {"stream_name": "S", "config": {"durable_name": "P", "ack_policy": "explicit", "deliver_subject": "d.two"}}
    resp = api(jsa, "$JS.API.CONSUMER.CREATE.S.P", move)
    assert resp["error"] == {"code": 400, "err_code": 10013, "description": "consumer name already in use"}
    one.remove_sub(sub)
    resp = api(jsa, "$JS.API.CONSUMER.CREATE.S.P", move)
    assert resp["config"]["deliver_subject"] == "d.two" and "push_bound" not in resp
    two = Conn(jsa.account)
    two.sub("d.two")
    # the unacknowledged message is redelivered to the new subject, then new ones follow
    s.publish("s.a", b"2")
    assert [(f.payload, tokens(f)[0]) for f in two.take()] == [(b"1", 2), (b"2", 1)]


def test_push_idle_heartbeat_and_flow_control(jsa):
    s = Stream(jsa, "S", ["s.>"])
    c = create(jsa, "S", "P", deliver_subject="d.p", flow_control=True, idle_heartbeat=NS, ack_policy="none")
    client = Conn(jsa.account)
    client.sub("d.p")
    c._last_activity = time.monotonic_ns() - 2 * NS
    c._heartbeat_due()
    (hb,) = client.take()
    assert hb.hdr == b"NATS/1.0 100 Idle Heartbeat\r\nNats-Last-Consumer: 0\r\nNats-Last-Stream: 0\r\n\r\n"
    c.maxpb = 300  # a small window so a few messages need a flow-control reply
    for _ in range(6):
        s.publish("s.a", b"x" * 50)
    got = client.take()
    fc = [f for f in got if f.status() == "100 FlowControl Request"]
    data = [f for f in got if f.status() is None]
    assert len(fc) == 1 and re.fullmatch(r"\$JS\.FC\.S\.P\.[0-9A-Za-z]{4}", fc[0].reply)
    assert len(data) < 6 and c.pbytes > c.maxpb  # stalled until the client answers
    c._last_activity = time.monotonic_ns() - 2 * NS
    c._heartbeat_due()
    (hb,) = client.take()
    assert hb.header("Nats-Consumer-Stalled") == fc[0].reply
    jsa.publish(fc[0].reply.encode(), None, None, b"")
    rest = [f for f in client.take() if f.status() is None]
    assert len(data) + len(rest) == 6 and c.maxpb == 600


def test_ack_latency_metrics_when_sampled(jsa):
    s = Stream(jsa, "S", ["s.>"])
    s.publish("s.a")
    create(jsa, "S", "C", sample_freq="100%")
    metrics = adv_listener(jsa, "$JS.EVENT.METRIC.>")
    (f,) = Puller(jsa, "S", "C").pull({"batch": 1})
    ack(jsa, f)
    (m,) = metrics.take()
    body = json.loads(m.payload)
    assert m.subject == "$JS.EVENT.METRIC.CONSUMER.ACK.S.C"
    assert (body["type"], body["consumer_seq"], body["stream_seq"], body["deliveries"]) == (
        "io.nats.jetstream.metric.v1.consumer_ack", 1, 1, 1)
    assert body["ack_time"] >= 0


def test_headers_only_push_and_client_without_headers(jsa):
    s = Stream(jsa, "S", ["s.>"])
    create(jsa, "S", "P", deliver_subject="d.p", headers_only=True, ack_policy="none")
    client = Conn(jsa.account)
    client.headers = False  # nats-server strips headers for such clients
    client.sub("d.p")
    s.publish("s.a", b"payload")
    (f,) = client.take()
    assert f.hdr is None and f.payload == b""


# ---- pause ---------------------------------------------------------------------------------------------------------


def test_pause_blocks_delivery_and_advises(jsa):
    s = Stream(jsa, "S", ["s.>"])
    s.publish("s.a")
    c = create(jsa, "S", "C")
    adv = adv_listener(jsa)
    resp = api(jsa, "$JS.API.CONSUMER.PAUSE.S.C", {"pause_until": "2099-01-01T00:00:00Z"})
    assert resp["paused"] is True and resp["pause_until"] == "2099-01-01T00:00:00Z" and resp["pause_remaining"] > 0
    (ev,) = adv.take()
    assert ev.subject == "$JS.EVENT.ADVISORY.CONSUMER.PAUSE.S.C"
    body = json.loads(ev.payload)
    assert body["type"] == "io.nats.jetstream.advisory.v1.consumer_pause" and body["paused"] is True
    p = Puller(jsa, "S", "C")
    assert p.pull({"batch": 1, "expires": 5 * NS}) == []
    info = api(jsa, "$JS.API.CONSUMER.INFO.S.C")
    assert info["paused"] is True and info["config"]["pause_until"] == "2099-01-01T00:00:00Z"
    assert info["config"]["metadata"]["_nats.req.level"] == "1"
    resp = api(jsa, "$JS.API.CONSUMER.PAUSE.S.C")
    assert resp == {"type": "io.nats.jetstream.api.v1.consumer_pause_response", "paused": False,
                    "pause_until": "0001-01-01T00:00:00Z"}
    assert [tokens(f)[1] for f in p.conn.take()] == [1]  # the waiting request is served on resume
    assert "pause_until" not in c.config_out(False)


def test_pause_errors(jsa):
    Stream(jsa, "S", ["s.>"])
    create(jsa, "S", "C")
    resp = api(jsa, "$JS.API.CONSUMER.PAUSE.S.C", b'{"pause_until":"bad"}')
    assert resp == {"type": "io.nats.jetstream.api.v1.consumer_pause_response", "error": {
        "code": 400, "err_code": 10025,
        "description": 'invalid JSON: parsing time "bad" as "2006-01-02T15:04:05Z07:00": cannot parse "bad" as '
                       '"2006"'}, "paused": False, "pause_until": "0001-01-01T00:00:00Z"}
    assert api(jsa, "$JS.API.CONSUMER.PAUSE.S.NOPE")["error"]["err_code"] == 10014


# ---- inactivity ---------------------------------------------------------------------------------------------------


def test_idle_ephemerals_are_deleted(jsa):
    s = Stream(jsa, "S", ["s.>"])
    adv = adv_listener(jsa, "$JS.EVENT.ADVISORY.CONSUMER.DELETED.>")
    resp = api(jsa, "$JS.API.CONSUMER.CREATE.S", {"stream_name": "S", "config": {"ack_policy": "explicit"}})
    c = s.consumers[resp["name"]]
    assert c.dthresh >= 5 * NS and c._delete_timer is not None
    c._delete_if_inactive()  # fired early: re-armed for the rest of the threshold
    assert resp["name"] in s.consumers and c._delete_timer is not None
    c.waiting_last -= 10 * NS
    c._delete_if_inactive()
    assert resp["name"] not in s.consumers
    assert [f.subject for f in adv.take()] == [f"$JS.EVENT.ADVISORY.CONSUMER.DELETED.S.{resp['name']}"]
    # a push ephemeral stays while its deliver subject has interest
    resp = api(jsa, "$JS.API.CONSUMER.CREATE.S", {"stream_name": "S", "config": {"deliver_subject": "d.e"}})
    push = s.consumers[resp["name"]]
    client = Conn(jsa.account)
    sub = client.sub("d.e")
    assert push._delete_timer is None
    client.remove_sub(sub)
    assert push._delete_timer is not None
    push._delete_if_inactive()
    assert resp["name"] not in s.consumers


# ---- durable state on disk ----------------------------------------------------------------------------------------


def test_durable_state_survives_a_restart(jsa, tmp_path):
    sdir = str(tmp_path / "S")
    store = FileStore(StoreConfig(name="S", store_dir=sdir))
    s = Stream(jsa, "S", ["s.>"], store=store, sdir=sdir)
    for _ in range(5):
        s.publish("s.a")
    c = create(jsa, "S", "C", description="kept")
    got = Puller(jsa, "S", "C").pull({"batch": 3})
    ack(jsa, got[0])
    ack(jsa, got[2])
    api(jsa, "$JS.API.CONSUMER.PAUSE.S.C", {"pause_until": "2099-01-01T00:00:00Z"})
    before = api(jsa, "$JS.API.CONSUMER.INFO.S.C")
    assert os.path.exists(os.path.join(sdir, "obs", "C", "meta.json"))
    c.stop()
    store.stop()

    jsa2 = JSA()
    install(jsa2)
    store2 = FileStore(StoreConfig(name="S", store_dir=sdir))
    s2 = Stream(jsa2, "S", ["s.>"], store=store2, sdir=sdir)
    recover(s2)
    c2 = s2.consumers["C"]
    after = api(jsa2, "$JS.API.CONSUMER.INFO.S.C")
    for key in ("created", "config", "delivered", "ack_floor", "num_ack_pending", "num_pending", "paused"):
        if key == "delivered":
            assert after[key]["consumer_seq"] == before[key]["consumer_seq"]
            assert after[key]["stream_seq"] == before[key]["stream_seq"]
        elif key == "ack_floor":
            assert (after[key]["consumer_seq"], after[key]["stream_seq"]) == (1, 1)
        else:
            assert after[key] == before[key], key
    assert sorted(c2.pending) == [2] and c2.sseq == 4 and c2.dseq == 4
    api(jsa2, "$JS.API.CONSUMER.PAUSE.S.C")
    expire_pending(c2)
    got = Puller(jsa2, "S", "C").pull({"batch": 3})
    assert [tokens(f)[:3] for f in got] == [(2, 2, 4), (1, 4, 5), (1, 5, 6)]
    # a deleted durable leaves nothing behind
    api(jsa2, "$JS.API.CONSUMER.DELETE.S.C")
    assert not os.path.exists(os.path.join(sdir, "obs", "C"))
    store2.stop()


def test_recover_skips_a_broken_meta_file(jsa, tmp_path, caplog):
    sdir = str(tmp_path / "S")
    store = FileStore(StoreConfig(name="S", store_dir=sdir))
    os.makedirs(os.path.join(sdir, "obs", "BAD"))
    Path(sdir, "obs", "BAD", "meta.json").write_text("{not json")
    s = Stream(jsa, "S", ["s.>"], store=store, sdir=sdir)
    recover(s)
    assert s.consumers == {} and "not recovered" in caplog.text
    store.stop()


def test_state_with_a_max_delivered_message_below_the_ack_floor_is_written(jsa, tmp_path):
    # nats-server keeps the redelivery count of a message that reached max_deliver until it leaves the stream,
    # so the stored state can hold one below the ack floor
    sdir = str(tmp_path / "S")
    store = FileStore(StoreConfig(name="S", store_dir=sdir))
    s = Stream(jsa, "S", ["s.>"], store=store, sdir=sdir)
    for _ in range(3):
        s.publish("s.a")
    c = create(jsa, "S", "C", max_deliver=1, ack_wait=NS)
    p = Puller(jsa, "S", "C")
    first = p.pull({"batch": 1})
    expire_pending(c)  # seq 1 reaches max_deliver
    for f in p.pull({"batch": 2}):
        ack(jsa, f)
    assert c.rdc == {1: 1} and (c.asflr, c.adflr) == (3, 3) and first
    c.flush()
    c.stop()
    store.stop()
    jsa2 = JSA()
    install(jsa2)
    store2 = FileStore(StoreConfig(name="S", store_dir=sdir))
    s2 = Stream(jsa2, "S", ["s.>"], store=store2, sdir=sdir)
    recover(s2)
    c2 = s2.consumers["C"]
    assert c2.rdc == {1: 1} and (c2.asflr, c2.adflr) == (3, 3) and c2.pending == {}
    store2.stop()


def test_reset_starts_over_and_stepdown_needs_a_cluster(jsa):
    s = Stream(jsa, "S", ["s.>"])
    for _ in range(5):
        s.publish("s.a")
    c = create(jsa, "S", "C")
    p = Puller(jsa, "S", "C")
    got = p.pull({"batch": 3})
    ack(jsa, got[0])
    resp = api(jsa, "$JS.API.CONSUMER.RESET.S.C")  # back to just after the ack floor
    assert resp["type"] == "io.nats.jetstream.api.v1.consumer_reset_response" and resp["reset_seq"] == 2
    assert resp["num_ack_pending"] == 0 and resp["num_pending"] == 4 and resp["delivered"]["stream_seq"] == 1
    assert [tokens(f)[:3] for f in p.pull({"batch": 1})] == [(1, 2, 1)]  # consumer sequences start over
    assert api(jsa, "$JS.API.CONSUMER.RESET.S.C", {"seq": 5})["reset_seq"] == 5
    assert c.sseq == 5 and c.num_pending() == 1
    create(jsa, "S", "N", deliver_policy="new")
    assert api(jsa, "$JS.API.CONSUMER.RESET.S.N", {"seq": 2}) == {
        "type": "io.nats.jetstream.api.v1.consumer_reset_response",
        "error": {"code": 400, "err_code": 10204, "description": "invalid reset: not allowed"}, "reset_seq": 0}
    resp = api(jsa, "$JS.API.CONSUMER.LEADER.STEPDOWN.S.C")
    assert resp == {"type": "io.nats.jetstream.api.v1.consumer_leader_stepdown_response", "error": {
        "code": 503, "err_code": 10010, "description": "JetStream clustering support required"}}
