# edge/kvcache/sync.py — keeps one cached bucket in step with its hub bucket (stream KV_<bucket>) over the
# leaf's uplink: catch-up, live updates, pushes of local writes, conflicts.
#
# One task per bucket, one session per hub link:
# 1. $JS.API.STREAM.INFO.KV_<bucket>: the bucket must exist with allow_direct (the catch-up needs direct gets).
# 2. Catch-up: batched direct gets ({"seq": last+1, "batch": N, "next_by_subj": "$KV.<b>.<filter>"}), each
#    applied as it arrives, the next batch asked for after the 204 EOB of the previous one: the edge's own pace
#    is the flow control (nats-reference 4.5).
# 3. Live: an ordered push consumer from the revision after the last one applied (ack none, flow control,
#    idle heartbeat). The consumer sequence is checked on every delivery and heartbeat; a gap, a stall or a
#    silent hub makes a new consumer from the last applied revision.
# 4. Local writes are published to $KV.<b>.<key> with Nats-Expected-Last-Subject-Sequence (compare-and-set
#    against the revision the write started from) and Edge-HLC (edge/kvcache/hlc.py), a window at a time.
#    "wrong last sequence" means the hub moved on: the hub's version is fetched and goes through the conflict
#    policy like any hub change that meets a dirty local entry.
# Requests, direct gets and pushes go through the cache's one JsClient (edge/leaf/jsclient.py); a bucket's own
# reply subjects are <inbox><bucket index><kind>.<token>, kind g (batch), p (PubAck), d (delivery).
# Facts about nats-server this relies on (checked against 2.15.1): direct gets are served
# by a queue subscription in group _sys_, which a leaf reaches only by naming the group; a push consumer
# delivers to a leaf only for literal interest in its deliver subject, and the ack reply carries the stored
# subject after "@".
#
# Conflict rule (the same on every edge): a hub version newer than the revision a dirty local write started
# from, and not written by this edge, is a conflict. hub_wins takes the hub's version; lww keeps whichever has
# the higher HLC stamp (a hub version without Edge-HLC is stamped with its stream time); callback asks the
# bucket's resolver and pushes its answer as a new write.

import asyncio
import gc
import json

from edge import proto
from edge.compat import small_heap, ticks_diff, ticks_ms
from edge.kvcache import hlc
from edge.kvcache.store import OP_DEL, OP_PURGE, OP_PUT
from edge.leaf.broker import Subscription, log_exc
from edge.leaf.jsclient import JsClient, JsError

SYS_QUEUE = [b"_sys_"]
BATCH = 500  # messages per catch-up request
# Local writes in flight (each holds its frame in the link's output, then its PubAck): 16, or 4 on a small heap
# (edge.compat.small_heap, read once at import, which is at boot).
WINDOW = 4 if small_heap() else 16
HEARTBEAT_MS = 2000
SILENT_MS = 3 * HEARTBEAT_MS  # no delivery or heartbeat for this long: a new consumer
REPLY_MS = 3000
IDLE_MS = 500  # the session loop looks again at least this often (consumer health, pushes held back)
NAP_POLL_MS = 20  # how often a nap checks for wake(): a local write reaches the hub within this


def days_from_civil(y, m, d):
    y -= 1 if m <= 2 else 0
    era = (y if y >= 0 else y - 399) // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    return era * 146097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719468


def rfc3339_ms(t):
    # "2026-11-26T07:33:06.338283717Z" (or with +hh:mm) -> ms since 1970; 0 when malformed.
    try:
        days = days_from_civil(int(t[0:4]), int(t[5:7]), int(t[8:10]))
        ms = ((days * 24 + int(t[11:13])) * 60 + int(t[14:16])) * 60000 + int(t[17:19]) * 1000
        i = 19
        if i < len(t) and t[i] == ".":
            j = i + 1
            while j < len(t) and t[j].isdigit():
                j += 1
            ms += int((t[i + 1 : j] + "000")[:3])
            i = j
        if i < len(t) and t[i] in "+-":
            off = (int(t[i + 1 : i + 3]) * 60 + int(t[i + 4 : i + 6])) * 60000
            ms -= off if t[i] == "+" else -off
        return ms
    except (ValueError, IndexError):
        return 0


_UNITS = (("ms", 1), ("us", 0.001), ("ns", 0.000001), ("h", 3600000), ("m", 60000), ("s", 1000))


def ttl_ms(text):
    # Nats-TTL: "5" (seconds), a Go duration ("1h30m", "2s", "500ms") or "never" -> ms; 0 = none.
    if not text or text == "never":
        return 0
    if text.isdigit():
        return int(text) * 1000
    total = 0
    i = 0
    while i < len(text):
        j = i
        while j < len(text) and (text[j].isdigit() or text[j] == "."):
            j += 1
        if j == i:
            return 0
        num = float(text[i:j])
        for unit, scale in _UNITS:
            if text[j : j + len(unit)] == unit:
                total += num * scale
                j += len(unit)
                break
        else:
            return 0
        i = j
    return int(total)


class Headers:
    # Looks header values up in the raw block, as nats-server does (case-sensitive names, the first one
    # wins): a catch-up reads a handful per message, and decoding whole blocks cost more than the rest of
    # the message's handling on MicroPython.
    def __init__(self, block):
        self.b = block

    def _find(self, name):
        key = b"\r\n" + name.encode() + b":"
        i = self.b.find(key)
        return i + len(key) if i >= 0 else -1

    def get(self, name, default=None):
        i = self._find(name)
        if i < 0:
            return default
        j = self.b.find(b"\r\n", i)
        try:
            return bytes(self.b[i : j if j >= 0 else len(self.b)]).strip().decode()
        except UnicodeError:
            return default

    def __contains__(self, name):
        return self._find(name) >= 0


_NO_HEADERS = Headers(b"")


def _headers(hdr):
    # -> (status or None, Headers); a block that is not NATS/1.0 reads as status 0.
    if not hdr:
        return None, _NO_HEADERS
    if hdr[:8] != b"NATS/1.0":
        return 0, _NO_HEADERS
    end = hdr.find(b"\r\n")
    code = hdr[9:12] if end >= 12 else b""
    status = int(code) if len(code) == 3 and code.isdigit() else None
    return status, Headers(hdr)


def _puback(payload):
    # A PubAck -> (seq, None), or (0, its error object): the window's answers wait for the round to end, so only
    # what _push_round reads is kept, not the parsed reply.
    try:
        res = json.loads(payload)
    except ValueError:
        return 0, {"description": "bad PubAck", "err_code": 0}
    err = res.get("error")
    return (res.get("seq", 0), None) if err is None else (0, err)


def start(leaf, kvs, log):
    # One JsClient for every bucket and a Sync each (kv.sync) -> the Syncs, to run. Replies are taken inside
    # the leaf's route() (no callback queue, so a 10,000-message catch-up is never dropped). Push consumers
    # deliver to <inbox><index>d.<gen>.0, one token more than the JsClient's `*.*`: nats-server delivers to
    # a leaf only for literal interest, so that subject is subscribed per session.
    syncs = []

    def on_msg(kind, token, reply, hdr, payload):
        i = kind[:-1]
        if i.isdigit() and int(i) < len(syncs):
            syncs[int(i)].on_msg(kind[-1:], token, reply, hdr, payload)

    js = JsClient(leaf, on_msg)
    turn = [None]  # the Sync whose big API request is out (Sync._api)
    for i, kv in enumerate(kvs):
        kv.sync = Sync(kv, js, i, log, turn)
        syncs.append(kv.sync)
    return syncs


class Sync:
    api = "$JS.API."  # the hub bucket's JetStream API; a bucket with a "domain" has its own
    put_prefix = None  # writes go to kv_prefix + key, or to put_prefix + key for a bucket in another domain

    def __init__(self, kv, js, index, log, turn):
        self.kv = kv
        self.store = kv.store
        self.leaf = js.leaf
        self.js = js
        self.base = js.inbox + b"%d" % index
        self.log = log
        self.turn = turn
        self.stream = "KV_" + kv.name
        self.kv_prefix = "$KV.%s." % kv.name
        if kv.domain:
            # a bucket in another domain: its API, and writes through its mapping `$JS.<domain>.API.$KV.>` -> `$KV.>`
            self.api = "$JS.%s.API." % kv.domain
            self.put_prefix = self.api + self.kv_prefix
        self.filter = self.kv_prefix + kv.filter
        self.online = False
        self.caught_up = False
        self.woken = False  # set by wake() and every hub message: the session loop looks again (_nap)
        self.n = 0
        self.acks = {}  # token -> [key, stamp, PubAck dict or None]
        self.failed = {}  # key -> why the hub refused its push (not a CAS failure); retried next session
        self.max_age_ms = 0
        self.held_logged = False
        self.failure = None  # why the session must restart (set inside on_msg)
        self.catchup_ms = 0  # duration of the last catch-up, and messages applied by it
        self.catchup_msgs = 0
        self._reset_batch(None)
        self.gen = 0
        self.cons_sub = None
        self.cons_name = None
        self.cseq = 0
        self.heard = 0
        self.cons_broken = None  # why the consumer must be replaced (a gap, a heartbeat that disagrees)

    def _reset_batch(self, token):
        self.batch_token = token
        self.batch_done = False
        self.batch_pending = -1
        self.batch_count = 0
        self.batch_error = None

    # ---- requests --------------------------------------------------------------------------------

    def wake(self):
        self.woken = True

    def idle(self):
        return self.online and self.caught_up and not self.store.dirty

    async def _wait(self, cond, ms, progress=None):
        # As JsClient.wait; a hub message that could not be applied (on_msg) ends the session.
        def done():
            if self.failure is not None:
                raise JsError(self.failure)
            return cond()

        return await self.js.wait(done, ms, progress)

    # ---- inbound ------------------------------------------------------------------------------------

    def on_msg(self, kind, token, reply, hdr, payload):
        # Runs inside the leaf's route(): never awaits. After a message could not be applied (MemoryError,
        # a full flash), later ones are ignored until the session restarts from the last applied revision:
        # applying them would move the watermark past the lost one.
        if self.failure is not None:
            return
        try:
            if kind == b"d":
                if token == b"%d.0" % self.gen:
                    self._on_delivery(reply, hdr, payload)
            elif kind == b"g":
                if token == self.batch_token:
                    self._on_batch(hdr, payload)
            elif kind == b"p":
                a = self.acks.get(token)
                if a is not None:
                    a[2] = _puback(payload)
        except Exception as e:  # must not break the leaf's read loop
            self.failure = "cannot apply a hub message: %r" % (e,)
        self.woken = True

    def _on_batch(self, hdr, payload):
        status, h = _headers(hdr)
        if status == 204:
            self.batch_pending = int(h.get("Nats-Num-Pending", "0"))
            self.batch_done = True
        elif status == 404:
            self.batch_pending = 0
            self.batch_done = True
        elif status is not None:
            self.batch_error = "direct get: status %s %s" % (status, h)
            self.batch_done = True
        else:
            self.batch_count += 1
            self._apply(h.get("Nats-Subject", ""), int(h.get("Nats-Sequence", "0")),
                        rfc3339_ms(h.get("Nats-Time-Stamp", "")), h, payload, True)

    def _on_delivery(self, reply, hdr, payload):
        self.heard = ticks_ms()
        status, h = _headers(hdr)
        if status == 100:
            if reply:  # flow control request
                self.js.send(reply, b"")
            stalled = h.get("Nats-Consumer-Stalled")
            if stalled:
                self.js.send(stalled, b"")
            last = h.get("Nats-Last-Consumer")
            if last is not None and int(last) != self.cseq:
                self.cons_broken = "heartbeat says %s delivered, %d seen" % (last, self.cseq)
            return
        if status is not None or not reply or reply[:8] != b"$JS.ACK.":
            return
        ack, _, subject = reply.partition(b"@")
        toks = ack.split(b".")
        if len(toks) == 9:
            sseq, cseq, ts = toks[5], toks[6], toks[7]
        elif len(toks) >= 11:
            sseq, cseq, ts = toks[7], toks[8], toks[9]
        else:
            self.cons_broken = "ack reply of %d tokens" % len(toks)
            return
        cseq = int(cseq)
        if cseq != self.cseq + 1 or not subject:
            self.cons_broken = "delivery %d after %d" % (cseq, self.cseq) if subject else "no subject in the reply"
            return
        self.cseq = cseq
        self._apply(subject.decode(), int(sseq), int(ts) // 1000000, h, payload, True)

    def _apply(self, subject, rev, ts, h, value, in_order):
        # One hub message (from a batch, the consumer or a single get). in_order: every earlier revision
        # has been applied, so the sync watermark may move to rev.
        if subject[: len(self.kv_prefix)] != self.kv_prefix or rev <= 0:
            return
        key = subject[len(self.kv_prefix) :]
        op = h.get("KV-Operation")
        removed = op == "DEL" or op == "PURGE" or "Nats-Marker-Reason" in h
        text = h.get("Edge-HLC")
        stamp = hlc.parse(text) if text else None
        if stamp is None:
            stamp = (ts, 0, "")
            text = None
        self.kv.clock.observe(stamp)
        exp = 0
        if not removed:
            life = ttl_ms(h.get("Nats-TTL")) or self.max_age_ms
            if life:
                exp = ts + life
                removed = exp <= hlc.wall_ms()  # expired on the hub already
        self._hub_change(key, rev, removed, value, exp, stamp, text, in_order)

    def _hub_change(self, key, rev, removed, value, exp, stamp, text, in_order):
        store = self.store
        kv = self.kv
        d = store.dirty.get(key)
        if d is not None:
            if stamp[2] == kv.clock.node:  # a write of this edge came back
                store.pushed(key, rev, text)
            elif rev > d[1]:
                self._conflict(key, d, rev, removed, value, exp, stamp, in_order)
        else:
            e = store.entries.get(key)
            if e is None or e[1] < rev:
                if removed:
                    store.hub_del(key, rev, in_order)
                    if e is not None:
                        kv.cache.changed(kv, key, None, rev, OP_DEL)
                elif store.hub_set(key, value, rev, exp, in_order):
                    kv.cache.changed(kv, key, value, rev, OP_PUT)
        if in_order:
            store.saw(rev)

    def _conflict(self, key, d, rev, removed, value, exp, stamp, in_order):
        kv = self.kv
        store = self.store
        local_text = d[3]
        hub_value = None if removed else value
        winner = "hub"
        if kv.policy == "callback":
            if kv.resolver is None:
                return  # held: the push waits for a resolver, and will meet this version again then
            e = store.entries.get(key)
            try:
                merged = kv.resolver(key, e[0] if e is not None else None, hub_value)
            except Exception as ex:
                self.log("kv conflict resolver failed bucket=%s key=%s: %r" % (kv.name, key, ex))
                return
            if merged is not None and not isinstance(merged, bytes):
                merged = bytes(merged)
            if merged != hub_value:
                store.local_write(key, OP_PUT if merged is not None else OP_DEL, merged, d[4],
                                  hlc.format(kv.clock.now()), rev, rev)
                kv.cache.changed(kv, key, merged, rev, OP_PUT if merged is not None else OP_DEL)
                winner = "merged"
        elif kv.policy == "lww" and hlc.parse(local_text) > stamp:
            store.rebase(key, rev, rev)
            winner = "edge"
        if winner == "hub":
            store.drop_local(key)
            if removed:
                store.hub_del(key, rev, in_order)
            else:
                store.hub_set(key, value, rev, exp, in_order)
            kv.cache.changed(kv, key, hub_value, rev, OP_DEL if removed else OP_PUT)
        kv.cache.conflict(kv, key, winner, local_text, hlc.format(stamp), rev)

    # ---- the session --------------------------------------------------------------------------------

    async def run(self):
        while True:
            while self.js.link() is None:
                await asyncio.sleep(0.05)
            try:
                await self._session()
            except JsError as e:
                self.log("kv sync bucket=%s: %s" % (self.kv.name, e))
            except Exception as e:  # keep syncing: the next session starts from what is on flash
                self.log("kv sync bucket=%s failed: %r" % (self.kv.name, e))
                log_exc(e)
            self.online = False
            self.caught_up = False
            self._drop_consumer()
            self.failed = {}
            self.failure = None
            gc.collect()
            await asyncio.sleep(0.5)

    async def _api(self, subject, obj):
        # A JetStream API call whose reply is big (STREAM.INFO, CONSUMER.CREATE: ~1 KB, parsed from one contiguous
        # block), made by one bucket's session at a time: at link-up every session asks at once, and on a
        # fragmented 60 KB heap the second reply found no free block for itself (MemoryError in the uplink's read:
        # the link went down, and the same happened at every reconnect).
        turn = self.turn
        while turn[0] is not None:
            await asyncio.sleep(NAP_POLL_MS / 1000)
        turn[0] = self
        try:
            return await self.js.api(subject, obj, REPLY_MS)
        finally:
            turn[0] = None

    async def _stream_last_seq(self):
        # STREAM.INFO of the bucket's stream: checks it and sets max_age_ms; -> its last sequence. A method of
        # its own so that the parsed reply (~1.9 KB of heap on a 32-bit board) is gone when it returns, not held
        # by the session's frame for as long as the link lasts.
        info = await self._api(self.api + "STREAM.INFO." + self.stream, None)
        cfg = info.get("config") or {}
        if not cfg.get("allow_direct"):
            raise JsError("stream %s has allow_direct off; the edge needs direct gets" % self.stream)
        self.max_age_ms = (cfg.get("max_age") or 0) // 1000000
        return (info.get("state") or {}).get("last_seq", 0)

    async def _session(self):
        store = self.store
        last = await self._stream_last_seq()
        if last < store.last_rev:
            self.log("kv sync bucket=%s: hub is at revision %d, below ours (%d): the bucket was recreated, "
                     "starting over" % (self.kv.name, last, store.last_rev))
            store.forget_hub()
        self.online = True
        await self._catch_up()
        await self._start_consumer()
        self.caught_up = True
        self.log("kv synced bucket=%s rev=%d keys=%d dirty=%d msgs=%d ms=%d" % (
            self.kv.name, store.last_rev, len(store.entries), len(store.dirty), self.catchup_msgs,
            self.catchup_ms))
        while self.js.link() is not None:
            if self.failure is not None:
                raise JsError(self.failure)
            if self.cons_broken or ticks_diff(ticks_ms(), self.heard) > SILENT_MS:
                self.log("kv sync bucket=%s: consumer %s, new one from revision %d" % (
                    self.kv.name, "out of order (%s)" % self.cons_broken if self.cons_broken else "silent",
                    store.last_rev + 1))
                await self._start_consumer()
            pushed = await self._push_round()
            store.mark_synced()
            if not pushed:
                await self._nap(IDLE_MS)

    async def _nap(self, ms):
        # Until wake() or a hub message, at most ms. Polled every NAP_POLL_MS rather than an asyncio Event with
        # wait_for: those two asyncio modules cost ~1 KB of a 32-bit board's heap, and each wait_for a task.
        self.woken = False
        t0 = ticks_ms()
        while not self.woken and ticks_diff(ticks_ms(), t0) < ms:
            await asyncio.sleep(NAP_POLL_MS / 1000)

    async def _catch_up(self):
        t0 = ticks_ms()
        total = 0
        while True:
            self.n += 1
            tok = b"%d" % self.n
            self._reset_batch(tok)
            req = {"seq": self.store.last_rev + 1, "batch": BATCH, "next_by_subj": self.filter}
            if not self.js.send(self.api + "DIRECT.GET." + self.stream, json.dumps(req), self.base + b"g." + tok,
                                None, SYS_QUEUE):
                raise JsError("hub link congested")
            ok = await self._wait(lambda: self.batch_done, REPLY_MS, lambda: self.batch_count)
            total += self.batch_count
            if not ok:
                raise JsError("catch-up stalled at revision %d" % self.store.last_rev)
            if self.batch_error:
                raise JsError(self.batch_error)
            self.store.maybe_flush(ticks_ms())
            if self.batch_pending <= 0:
                break
        self._reset_batch(None)
        self.store.mark_synced()
        self.catchup_ms = ticks_diff(ticks_ms(), t0)
        self.catchup_msgs = total

    async def _start_consumer(self):
        self._drop_consumer()
        self.gen += 1
        subject = self.base + b"d.%d.0" % self.gen
        self.cons_sub = Subscription(subject, None, self.js, None)
        self.leaf.add_sub(self.cons_sub)  # literal interest first: nats-server delivers to a leaf only then
        self.cseq = 0
        self.cons_broken = None
        self.heard = ticks_ms()
        cfg = {"deliver_policy": "by_start_sequence", "opt_start_seq": self.store.last_rev + 1, "ack_policy": "none",
               "max_deliver": 1, "filter_subject": self.filter, "flow_control": True,
               "idle_heartbeat": HEARTBEAT_MS * 1000000, "mem_storage": True, "inactive_threshold": 30000000000,
               "num_replicas": 1, "replay_policy": "instant", "deliver_subject": subject.decode()}
        resp = await self._api(self.api + "CONSUMER.CREATE." + self.stream, {"stream_name": self.stream, "config": cfg})
        self.cons_name = resp.get("name")
        self.heard = ticks_ms()

    def _drop_consumer(self):
        if self.cons_sub is not None:
            self.leaf.remove_sub(self.cons_sub)  # no interest left: the hub drops the consumer after 30 s
            self.cons_sub = None
        if self.cons_name and self.js.link() is not None:
            self.n += 1  # delete it now; the answer goes to a token nobody waits for
            self.js.send(self.api + "CONSUMER.DELETE.%s.%s" % (self.stream, self.cons_name), b"",
                         self.base + b"r.%d" % self.n)
        self.cons_name = None

    # ---- pushing local writes ---------------------------------------------------------------------

    async def _push_round(self):
        # Publishes up to WINDOW dirty entries with compare-and-set, then handles the answers.
        kv = self.kv
        store = self.store
        if not store.dirty:
            return 0
        if kv.policy == "callback" and kv.resolver is None:
            if not self.held_logged:
                self.log("kv bucket=%s: policy callback without a resolver (kv.on_conflict); %d local writes held"
                         % (kv.name, len(store.dirty)))
                self.held_logged = True
            return 0
        acks = self.acks = {}
        for key in list(store.dirty):
            if len(acks) >= WINDOW:
                break
            if key in self.failed:
                continue
            d = store.dirty[key]
            e = store.get(key) if d[0] == OP_PUT else store.entries.get(key)
            if e is None:
                continue  # its TTL ran out before it reached the hub
            hdr = {"Edge-HLC": d[3], "Nats-Expected-Last-Subject-Sequence": str(d[2])}
            payload = b""
            if d[0] == OP_DEL:
                hdr["KV-Operation"] = "DEL"
            elif d[0] == OP_PURGE:
                hdr["KV-Operation"] = "PURGE"
                hdr["Nats-Rollup"] = "sub"
            else:
                payload = e[0]
            if e[2]:
                hdr["Nats-TTL"] = str(max(1, (e[2] - hlc.wall_ms() + 999) // 1000))
            self.n += 1
            tok = b"%d" % self.n
            subject = (self.put_prefix or self.kv_prefix) + key
            if not self.js.send(subject, payload, self.base + b"p." + tok, proto.encode_headers(hdr)):
                break  # the link's output is full: the rest go in a later round
            acks[tok] = [key, d[3], None]
        if not acks:
            return 0
        await self._wait(lambda: all(a[2] is not None for a in acks.values()), REPLY_MS)
        done = 0
        for a in acks.values():
            key, stamp, res = a
            if res is None:
                continue
            done += 1
            seq, err = res
            if err is None:
                store.pushed(key, seq, stamp)
            elif err.get("err_code") == 10071:
                await self._cas_failed(key, stamp, err.get("description", ""))
            else:
                self.failed[key] = err.get("description")
                self.log("kv push refused bucket=%s key=%s: %s" % (kv.name, key, err.get("description")))
        self.acks = {}
        store.maybe_flush(ticks_ms())
        return done

    async def _cas_failed(self, key, stamp, description):
        # "wrong last sequence: N": the key's last revision on the hub is N, not the one we named.
        d = self.store.dirty.get(key)
        if d is None or d[3] != stamp:
            return
        try:
            actual = int(description.rsplit(" ", 1)[1])
        except (ValueError, IndexError):
            actual = -1
        if 0 <= actual <= d[1]:
            self.store.rebase(key, d[1], actual)  # known when the write was made: no conflict, name N next time
            return
        named = d[2]
        await self.fetch(key, REPLY_MS)  # a newer version goes through _hub_change: conflict, or our own write
        d = self.store.dirty.get(key)
        if d is not None and d[3] == stamp and d[2] == named and actual >= 0:
            # The version at N vanished (TTL, purge) between the publish and the get: nothing to merge with.
            self.store.rebase(key, max(d[1], actual), actual)

    async def fetch(self, key, ms):
        # The hub's last message for key (direct get), applied like any hub change.
        hdr, payload = await self.js.request(self.api + "DIRECT.GET.%s.%s%s" % (self.stream, self.kv_prefix, key), b"",
                                             ms, SYS_QUEUE)
        status, h = _headers(hdr)
        if status is None:
            self._apply(h.get("Nats-Subject", ""), int(h.get("Nats-Sequence", "0")),
                        rfc3339_ms(h.get("Nats-Time-Stamp", "")), h, payload, False)
        return status
