# edge/leaf/broker.py — the leaf's local router and its in-process API.
#
# Owns the local subscription table, queue-group choice, delivery to in-process callbacks, the
# table of local interest that the uplink advertises with LS+/LS-, and request/reply.
# Rules this file keeps:
# 1. Subjects, replies and queue names are bytes inside; the API also takes str. A subject is checked
#    once, where it comes in (the API here, a LAN client's PUB and SUB in listener.py); route(), the
#    uplink and the forward queues take it as it is.
# 2. route() never awaits: it hands a message to every local target and, where the hub has
#    interest, to the uplink, then returns how many targets took it (0 = no responders).
# 3. Callbacks run in one dispatcher task (alive while it has work), in delivery order; plain
#    functions and coroutines both work. Its queue holds at most `max_callbacks` messages; when
#    full, a new message for a callback is dropped and counted in `cb_dropped` (the leaf's
#    slow-consumer policy).
# 4. One member per queue group per message across leaf and hub: a local publish goes to one local
#    member of each group and the uplink leaves those groups out of its forward; a hub message
#    reaches local queue members only for the groups it names, one member each (nats-reference
#    README 2.6).
# 5. Interest is reference-counted per (subject, queue); the uplink hears only of changes.
# 6. Subjects of a store-and-forward queue (edge/leaf/forward.py, when configured) reach the hub only
#    through that queue; local targets get them as any other message.
# 7. Message tracing (edge/leaf/msgtrace.py, loaded on the first traced message): route() looks for the
#    Nats-Trace-Dest header line in messages that have headers, and does nothing more for the others.

import asyncio
import binascii
import os
import sys

from edge import proto, subjects

VERSION = "0.1.0"
TRACE_DEST_KEY = b"\r\nNats-Trace-Dest:"  # edge/trace.py DEST as a header line: the one check on untraced messages


class LeafError(Exception):
    pass


class NoResponders(Exception):
    pass


def _bytes(x):
    if isinstance(x, str):
        return x.encode()
    return x if isinstance(x, bytes) else bytes(x)


def _subject(x, wildcards):
    s = _bytes(x)
    if not subjects.valid(s, wildcards):
        raise LeafError("invalid subject %r" % s)
    return s


def new_inbox():
    # A reply prefix of our own, `_INBOX.<random>.`, for the request inbox and edge/leaf/jsclient.py.
    return b"_INBOX." + binascii.hexlify(os.urandom(8)) + b"."


def log_exc(e):
    pe = getattr(sys, "print_exception", None)
    if pe:
        pe(e)
    else:
        import traceback

        traceback.print_exception(type(e), e, e.__traceback__)


class Msg:
    # What a callback receives. subject/reply are str; data is bytes; headers a dict or None.
    def __init__(self, leaf, subject, reply, hdr, data):
        self._leaf = leaf
        self._subject = subject
        self._reply = reply
        self.hdr = hdr
        self.data = data

    @property
    def subject(self):
        return self._subject.decode()

    @property
    def reply(self):
        return self._reply.decode() if self._reply else None

    @property
    def headers(self):
        if not self.hdr:
            return None
        status, desc, pairs = proto.decode_headers(self.hdr)
        d = {}
        for k, v in pairs:
            d[k] = v
        if status is not None:
            d["Status"] = str(status)
            if desc:
                d["Description"] = desc
        return d

    def respond(self, data=b"", headers=None):
        if not self._reply:
            raise LeafError("message has no reply subject")
        self._leaf.publish(self._reply, data, headers)

    def __repr__(self):
        return "<Msg %s %r>" % (self.subject, self.data)


class Subscription:
    # owner is whoever takes the messages, through owner.send_msg(sub, subject, reply, hdr, payload):
    # the Leaf for in-process callbacks (key = the callback), a LAN client (key = its sid), or the
    # request inbox. owner None = unsubscribed. n counts deliveries (for a client's UNSUB max).
    # Few attributes: MicroPython gives an instance 2 of them per 16 bytes. `queue` is a class attribute unless the
    # subscription has one, so a plain subscription has 4 (48 bytes) rather than 5 (64).
    queue = None

    def __init__(self, subject, queue, owner, key):
        self.subject = subject
        if queue is not None:
            self.queue = queue
        self.owner = owner
        self.key = key
        self.n = 0

    def unsubscribe(self):
        if self.owner is not None:
            self.owner.unsub(self)


class _Inbox:
    # The owner of the request inbox `_INBOX.<random>.*`: resolves waiting requests inside route().
    def __init__(self, leaf):
        self.leaf = leaf
        self.prefix = new_inbox()
        self.waiting = {}  # token -> [Event, Msg or None]

    def send_msg(self, sub, subject, reply, hdr, payload):
        slot = self.waiting.get(subject[len(self.prefix) :])
        if slot is not None and slot[1] is None:
            slot[1] = Msg(self.leaf, subject, reply, hdr, payload)
            slot[0].set()


class Leaf:
    # Class attributes until tracing is used: an instance attribute costs heap on every edge (MicroPython).
    tracer = None  # edge/leaf/msgtrace.py Tracer, made on the first traced message
    trace_limits = (4, 2048, "")  # the tracer's (max_trace_events, max_trace_bytes, host); runner.py sets them

    def __init__(self, name="edge", max_subscriptions=64, max_payload=8192, max_callbacks=32, max_requests=8):
        self.name = name
        self.max_subscriptions = max_subscriptions
        self.max_payload = max_payload
        self.max_requests = max_requests
        # Both tables are sized for max_subscriptions at start (see subjects.presized).
        self.subs = subjects.Sublist(max_subscriptions)
        self.interest = subjects.presized(max_subscriptions)  # subject or b"subject queue" -> count
        self.uplink = None  # set by edge.leaf.uplink.Uplink
        self.forwarder = None  # set by edge.leaf.forward.Forwarder
        self.echo = True  # as an origin in route(): the API sees its own messages
        self.cids = 0  # connection ids, shared by LAN clients and hub links (as nats-server's one counter)
        self.cb_dropped = 0
        self.cb_errors = 0
        self._max_cb = max_callbacks
        self._cbq = []  # (sub, Msg), at most max_callbacks
        self._cbtask = None
        self._rr = 0  # queue member rotation
        self._inbox = None
        self._seq = 0

    # ---- API ---------------------------------------------------------------------------------

    def publish(self, subject, data=b"", headers=None, reply=None, durable=False):
        # durable=True: returns an awaitable that ends once the record is on flash (a forward queue's
        # subject only); a plain publish to such a subject returns once it is on flash.
        subject = _subject(subject, False)
        data = _bytes(data)
        hdr = proto.encode_headers(headers) if headers else None
        if reply is not None:
            reply = _subject(reply, False)
        if len(data) + (len(hdr) if hdr else 0) > self.max_payload:
            raise LeafError("payload larger than max_payload (%d)" % self.max_payload)
        fwd = self.forwarder
        q = fwd.queue_for(subject) if fwd is not None else None
        if q is not None:
            return fwd.publish(q, subject, reply, hdr, data, durable)
        if durable:
            raise LeafError("durable publish: no forward queue takes %s" % subject.decode())
        return self.route(subject, reply, hdr, data, self)

    async def apublish(self, subject, data=b"", headers=None, reply=None):
        # As publish(), after waiting while the hub link's output is over half its limit.
        up = self.uplink
        if up is not None:
            await up.wait_writable()
        return self.publish(subject, data, headers, reply)

    def subscribe(self, subject, cb, queue=None):
        q = _bytes(queue) if queue else None
        if q is not None and not subjects.valid_queue(q):
            raise LeafError("invalid queue %r" % q)
        sub = Subscription(_subject(subject, True), q, self, cb)
        self.add_sub(sub)
        return sub

    async def request(self, subject, data=b"", timeout=1.0, headers=None):
        # Raises NoResponders when nothing local or on the hub has interest, asyncio.TimeoutError
        # when no reply came in time.
        subject = _subject(subject, False)
        box = self._inbox
        if box is None:
            box = self._inbox = _Inbox(self)
            self.add_sub(Subscription(box.prefix + b"*", None, box, None))
        if len(box.waiting) >= self.max_requests:
            raise LeafError("too many requests in flight (%d)" % self.max_requests)
        self._seq += 1
        token = b"%d" % self._seq
        slot = [asyncio.Event(), None]
        box.waiting[token] = slot
        try:
            if not self.publish(subject, data, headers, box.prefix + token):
                raise NoResponders(subject.decode())
            await asyncio.wait_for(slot[0].wait(), timeout)
            return slot[1]
        finally:
            box.waiting.pop(token, None)

    def kv(self, bucket):
        # The offline KV cache of a bucket in the config's "kv" section (edge/kvcache, docs/kvcache.md).
        cache = getattr(self, "kvcache", None)
        if cache is None:
            raise LeafError("no KV cache: the config has no \"kv\" section")
        return cache.bucket(bucket)

    def service(self, name, version, description=None, metadata=None):
        # A NATS Micro service on this leaf (edge/micro, an optional package; docs/micro.md).
        try:
            from edge.micro.service import Service
        except ImportError:
            raise LeafError("leaf.service() needs the edge.micro package, which this device lacks (natsedge "
                            "firmware bundle --with micro)")
        return Service(self, name, version, description, metadata)

    def close(self):
        t = self._cbtask
        self._cbtask = None
        if t is not None:
            t.cancel()

    def new_cid(self):
        self.cids += 1
        return self.cids

    # ---- subscriptions and interest ---------------------------------------------------------

    def add_sub(self, sub):
        if self.subs.count >= self.max_subscriptions:
            raise LeafError("maximum subscriptions exceeded")
        self.subs.add(sub.subject, sub)
        self._interest(sub, 1)

    def remove_sub(self, sub):
        if sub.owner is None:
            return
        sub.owner = None
        if self.subs.remove(sub.subject, sub):
            self._interest(sub, -1)

    unsub = remove_sub  # as the owner of in-process subscriptions

    def _interest(self, sub, delta):
        key = sub.subject if sub.queue is None else sub.subject + b" " + sub.queue
        old = self.interest.get(key, 0)
        new = old + delta
        if new > 0:
            self.interest[key] = new
        else:
            self.interest.pop(key, None)
        up = self.uplink
        if up is not None:
            up.interest_changed(sub.subject, sub.queue, old, new)

    # ---- routing -----------------------------------------------------------------------------

    def route(self, subject, reply, hdr, payload, origin, hub_queues=None, local=False):
        # origin: the Leaf (in-process API), a LAN client, or the uplink (then hub_queues are the
        # queue groups the hub named). local: to local targets only (a LAN client's subject that is
        # not valid). Returns the number of targets that took the message.
        mt = None
        if hdr is not None and TRACE_DEST_KEY in hdr:
            mt = self._trace(subject, hdr, payload, origin)
            if mt is False:
                return 0  # trace-only with a destination that cannot be traced: not processed (msgtrace.py rule 3)
        up = self.uplink
        from_hub = origin is up
        echo = from_hub or origin.echo
        n = 0
        groups = None
        for s in self.subs.match(subject, []):
            if s.owner is None:
                continue
            if not echo and s.owner is origin:
                if mt is not None:
                    mt.no_echo(s)
                continue
            if s.queue is None:
                self._deliver(s, subject, reply, hdr, payload, mt)
                n += 1
            elif not from_hub or (hub_queues and s.queue in hub_queues):
                if groups is None:
                    groups = {}
                g = groups.get(s.queue)
                if g is None:
                    groups[s.queue] = [s]
                else:
                    g.append(s)
        if groups:
            self._rr += 1  # once per message, so every group rotates through all its members
            for members in groups.values():
                self._deliver(members[self._rr % len(members)], subject, reply, hdr, payload, mt)
                n += 1
        if not from_hub and not local:
            fwd = self.forwarder
            if fwd is not None and fwd.take(subject, reply, hdr, payload, origin, mt):
                n += 1  # a forward queue takes it to the hub
            elif up is not None and up.forward(subject, reply, hdr, payload, groups, mt):
                n += 1
        if mt is not None and not mt.held:
            mt.send()
        return n

    def _trace(self, subject, hdr, payload, origin):
        t = self.tracer
        if t is None:
            from edge.leaf.msgtrace import Tracer

            t = self.tracer = Tracer(self, *self.trace_limits)
        return t.begin(subject, hdr, payload, origin)

    def _deliver(self, sub, subject, reply, hdr, payload, mt=None):
        if mt is not None:
            mt.egress(sub)
            if mt.only:
                return  # trace-only: listed, not delivered
        sub.n += 1
        sub.owner.send_msg(sub, subject, reply, hdr, payload)

    def send_msg(self, sub, subject, reply, hdr, payload):
        # Delivery to an in-process callback: queued for the dispatcher task.
        if len(self._cbq) >= self._max_cb:
            self.cb_dropped += 1
            return
        self._cbq.append((sub, Msg(self, subject, reply, hdr, payload)))
        if self._cbtask is None:
            self._cbtask = asyncio.create_task(self._callbacks())

    async def _callbacks(self):
        # Lives while there is work: no Event to wait on (each costs heap on MicroPython).
        q = self._cbq
        try:
            while q:
                sub, msg = q.pop(0)
                if sub.owner is None:
                    continue
                try:
                    r = sub.key(msg)
                    if r is not None and hasattr(r, "send"):
                        await r
                except Exception as e:  # a failing callback must not stop the others
                    self.cb_errors += 1
                    log_exc(e)
        finally:
            self._cbtask = None
