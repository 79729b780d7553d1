# edge/leaf/jsclient.py — requests to the hub's JetStream API over the leaf's uplink, for the parts of the
# edge that talk to JetStream (edge/leaf/forward.py, edge/kvcache/sync.py).
#
# Rules this file keeps:
# 1. One inbox, `_INBOX.<random>.`, one subscription `<inbox>*.*` in the leaf. API replies come to
#    `<inbox>r.<n>`; everything else its owner asks the hub to send there (`<inbox><kind>.<token>`: PubAcks,
#    direct-get batches, push deliveries) goes to on_msg(kind, token, reply, hdr, payload), inside the
#    leaf's route(), so it must never await.
# 2. Requests and stream publishes are written straight to the hub link: the hub announces LS+ $JS.API.>
#    only, so stream subjects have no interest to wait for (nats-server 2.15.1). Requests for another
#    JetStream domain (`$JS.<domain>.API.`, a queue's or bucket's "domain") go the same way; the hub
#    passes them on to the leafnode of that domain.
# 3. A request ends with its reply or a JsError: link down, link output full, no reply within ms, or the
#    link went (a reply to a request sent on a link that is gone never comes).
# 4. Waiting polls every 2 ms rather than waiting on an Event: an Event and wait_for load two more asyncio
#    modules (about 1 KB of heap on a 32-bit board), which a forward-only edge otherwise does without.

import asyncio
import json

from edge import proto
from edge.compat import ticks_diff, ticks_ms
from edge.leaf.broker import Subscription, new_inbox


class JsError(Exception):
    # err: the API's error object, when the hub answered with one.
    def __init__(self, msg, err=None):
        super().__init__(msg)
        self.err = err


class JsClient:
    def __init__(self, leaf, on_msg):
        self.leaf = leaf
        self.on_msg = on_msg
        self.inbox = new_inbox()
        self.n = 0
        self.replies = {}  # token -> (hdr, payload), None while waiting
        leaf.add_sub(Subscription(self.inbox + b"*.*", None, self, None))

    def link(self):
        up = self.leaf.uplink
        return up.link if up is not None and up.up else None

    def send(self, subject, payload, reply=None, hdr=None, queues=None):
        # -> False when the link's output is full.
        link = self.link()
        if link is None:
            raise JsError("hub link down")
        return link.write(proto.encode_lmsg(subject, payload, reply, queues, hdr, True))

    async def wait(self, cond, ms, progress=None):
        # Until cond() holds (True), or ms pass without progress() changing, or the link goes (False).
        link = self.link()
        t0 = ticks_ms()
        mark = progress() if progress else None
        while not cond():
            if link is None or self.link() is not link:
                return False
            if progress is not None and progress() != mark:
                mark = progress()
                t0 = ticks_ms()
            if ticks_diff(ticks_ms(), t0) > ms:
                return False
            await asyncio.sleep(0.002)
        return True

    async def request(self, subject, body, ms, queues=None):
        # -> (hdr, payload) of the reply.
        self.n += 1
        tok = b"%d" % self.n
        self.replies[tok] = None
        try:
            if not self.send(subject, body, self.inbox + b"r." + tok, None, queues):
                raise JsError("hub link congested")
            if not await self.wait(lambda: self.replies[tok] is not None, ms):
                raise JsError("no reply to %s" % subject)
            return self.replies[tok]
        finally:
            self.replies.pop(tok, None)

    async def api(self, subject, obj, ms):
        # A JetStream API call (obj None: empty body) -> the response; its "error" raises JsError.
        _, payload = await self.request(subject, json.dumps(obj) if obj is not None else b"", ms)
        try:
            resp = json.loads(payload)
        except ValueError:
            raise JsError("bad JSON from %s" % subject)
        err = resp.get("error")
        if err is not None:
            raise JsError("%s (%s)" % (err.get("description"), err.get("err_code")), err)
        return resp

    def send_msg(self, sub, subject, reply, hdr, payload):
        kind, _, token = subject[len(self.inbox) :].partition(b".")
        if kind == b"r":
            if token in self.replies:
                self.replies[token] = (hdr, payload)
        else:
            self.on_msg(kind, token, reply, hdr, payload)
