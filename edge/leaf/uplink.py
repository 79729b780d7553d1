# edge/leaf/uplink.py — the leaf's link to a hub's leafnode port: one connection's lifetime.
#
# Protocol only; when to dial again is edge/leaf/robust.py's business (as umqtt.robust sits on
# umqtt.simple). Follows shared/nats-reference README 2.11, the minimal leaf checklist:
# 1. Read the hub's INFO (upgrade to TLS if configured), send CONNECT without "lang", with
#    "headers":true,"protocol":3 (rule 7), then PING; our interest follows at once (as a Go leaf does).
#    With hub.creds / hub.nkey the signer (edge/auth/creds.py) is prepared before dialling and signs
#    the INFO's nonce for the CONNECT; a -ERR before the link is up (Authorization Violation) is the
#    session's reason, logged with the "uplink down" line.
# 2. Local interest goes out as one LS+ per distinct subject or subject+queue; a queue's LS+ carries
#    the absolute member count, LS- ends it. Nothing under $LDS. is ever sent: we relay no hub
#    interest, so the hub's own loop-detection subject never goes back.
# 3. The hub's LS+/LS- fill a table; a local publish is forwarded only where that table has
#    interest, naming hub queue groups with the `| q` / `+ reply q` forms (a plain LMSG never
#    reaches hub queue subscribers), minus groups a local member already served. $LDS. interest
#    is ignored. The table holds at most max_hub_interest entries; past that the link is
#    "saturated": every publish is forwarded (the hub filters) until the next connection.
# 4. Output is bounded by max_pending while the link is up: a forward that does not fit is
#    dropped and counted in `dropped`; protocol ops (LS+/LS-, PING/PONG) are small and always
#    queued, so the hub never misses interest or a PONG.
# 5. PING is answered; tick() (every ping_interval) sends our own PING, and ping_max unanswered
#    ones end the link as stale. -ERR 'Loop detected...' sets loop_detected (robust.py then waits 30 s).
# 6. Failover: the hub URLs are a rotation, the configured ones first, then those learned from the
#    `leafnode_urls` of the hub's INFO (the first one and async ones when cluster peers join or leave).
#    Each INFO's list replaces what was learned before, as nats-server's leafnode.go
#    updateLeafNodeURLs does; configured URLs and the one in use always stay, the rotation holds at
#    most MAX_URLS. Unlike a Go leaf, the node's own advertised URL is not learned (a standalone hub
#    behind a proxy stays behind it). A learned "host:port" dials with the TLS settings and
#    credentials of the URL it was learned on.
#    next_url() (robust.py, after every drop or failed dial) moves on; `failovers` counts links that
#    came up on another URL than the link before.
# 7. Message tracing (edge/leaf/msgtrace.py): CONNECT says "protocol": 3 (nats-server's MsgTraceProto), so a
#    hub sends trace-only messages on to the edge for it to trace; the hub's INFO "proto" and server_name say
#    whether the hub traces and name it in the edge's events. A traced message's copy to the hub carries
#    Nats-Trace-Hop; events buffered while the link was down go out once it is up.
# 8. No memory to assemble or deliver a message from the hub (MemoryError; a big payload on a small, fragmented
#    heap) drops that message, as an overflow would: the parser skips it (edge/proto.py), `nomem` counts it, the
#    first is logged, and the link stays up. A control line without memory still ends the link (a protocol
#    error): where it ends, nothing says.

import asyncio

from edge import proto, subjects
from edge.compat import const
from edge.leaf.broker import VERSION
from edge.leaf.link import Link

MAX_URLS = const(8)
_PROTO_TRACE = const(3)  # edge/trace.py PROTO, without loading that module on every edge (rule 7)


class Uplink:
    nomem = 0  # hub messages dropped for want of memory (rule 8); a class attribute until the first

    def __init__(self, leaf, urls, name, token=None, max_payload=8192, max_pending=16384, ping_max=2,
                 max_hub_interest=256, log=None, signer=None):
        # urls: [(host, port, tls, user, password)], tls None or (ca path or None, verify bool)
        # signer: edge/auth/creds.py Signer for hub.creds / hub.nkey, or None
        self.leaf = leaf
        leaf.uplink = self
        self.urls = list(urls)
        self.n_conf = len(urls)  # urls[:n_conf] are configured, the rest learned
        self.i = 0
        self._use(0)
        self.failovers = 0
        self._last_up = None  # (host, port) of the last link that came up
        self.name = name
        self.token = token
        self.signer = signer
        self.max_payload = max_payload
        self.max_pending = max_pending
        self.ping_max = ping_max
        self.max_hub_interest = max_hub_interest
        self.log = log or (lambda s: None)
        self.link = None
        self.stopped = False  # set by whoever stops the leaf, before cancelling robust.keep_up
        self._task = None  # the current session
        self._reason = None
        self.pings = 0
        self.up = False  # the hub answered our first PING
        self.was_up = False
        self.loop_detected = False
        self.forwarded = 0
        self.dropped = 0
        self.received = 0
        self.overflows = 0
        self.cid = 0  # this link's connection id (leaf.new_cid()), in trace events
        self.hub_name = ""  # the hub's server_name (or server_id), in trace events
        self.hub_proto = 0  # the hub's INFO "proto": 3 and up traces messages (edge/trace.py PROTO)
        self._reset_table()

    # ---- which hub: the URL rotation --------------------------------------------------------

    def _use(self, i):
        self.i = i
        self.host, self.port, self.tls, self.user, self.password = self.urls[i]

    def next_url(self):
        self._use((self.i + 1) % len(self.urls))

    def url(self):
        return "%s://%s:%d" % ("tls" if self.tls else "nats-leaf", self.host, self.port)

    def _learn(self, info):
        # The hub's leafnode_urls ("host:port" each) -> the learned part of the rotation. The node's own
        # entry (INFO "ip") is not learned: the URL we dialled stands for it (it may pass a proxy or NAT
        # that the advertised address would bypass).
        lst = info.get("leafnode_urls")
        if not isinstance(lst, list) or not lst:
            return
        cur = self.urls[self.i]
        out = self.urls[: self.n_conf]
        if self.i >= self.n_conf:
            out.append(cur)
        me = info.get("ip")
        for u in lst:
            if len(out) >= MAX_URLS:
                break
            if not isinstance(u, str) or u == me:
                continue
            host, _, port = u.rpartition(":")
            if host[:1] == "[":
                host = host[1:-1]  # an IPv6 literal
            if not host or not port.isdigit():
                continue
            port = int(port)
            for e in out:
                if e[0] == host and e[1] == port:
                    break
            else:
                tls = cur[2]
                if tls is not None:  # an address is verified against the name we dialled, as nats-server does
                    ip = host.replace(".", "").isdigit() or ":" in host
                    tls = (tls[0], tls[1], tls[2] if len(tls) > 2 else cur[0]) if ip else tls[:2]
                out.append((host, port, tls, cur[3], cur[4]))
        if out != self.urls:
            self.urls = out
            self.i = out.index(cur)
            self.log("uplink urls n=%d learned=%d" % (len(out), len(out) - self.n_conf))

    def _reset_table(self):
        self.plain = subjects.Sublist()  # hub plain interest, items are the subjects
        self.hplain = {}  # subject -> the same object (dedupe, and identity for removal)
        self.qsub = subjects.Sublist()  # hub queue interest, items are queue names
        self.qw = {}  # (subject, queue) -> [weight, queue object]
        self.saturated = False

    # ---- called by the broker ----------------------------------------------------------------

    def interest_changed(self, subject, queue, old, new):
        if self.link is None or subject[:5] == b"$LDS.":
            return
        if queue is None:
            if old == 0 and new > 0:
                self.link.write(proto.encode_ls_plus(subject), True)
            elif new == 0 and old > 0:
                self.link.write(proto.encode_ls_minus(subject), True)
        elif new > 0:
            self.link.write(proto.encode_ls_plus(subject, queue, new), True)
        else:
            self.link.write(proto.encode_ls_minus(subject, queue), True)

    def forward(self, subject, reply, hdr, payload, skip, mt=None):
        # mt: the message's MsgTrace (edge/leaf/msgtrace.py) when it is traced.
        link = self.link
        if link is None:
            return False
        plain = self.saturated or self.plain.has(subject)
        qs = None
        if self.qw:
            for q in self.qsub.match(subject, []):
                if (skip is None or q not in skip) and (qs is None or q not in qs):
                    if qs is None:
                        qs = [q]
                    else:
                        qs.append(q)
        if not plain and qs is None:
            return False
        if mt is not None:
            hdr = mt.to_hub(self, hdr)
            if hdr is None:
                return False  # trace-only, and this hub does not trace: it would deliver the message
        if link.write(proto.encode_lmsg(subject, payload, reply, qs, hdr, True)):
            self.forwarded += 1
            return True
        self.dropped += 1
        return False

    async def wait_writable(self):
        link = self.link
        if link is not None:
            await link.wait_below(self.max_pending // 2)

    # ---- the hub's interest -----------------------------------------------------------------

    def hub_interest(self):
        return len(self.hplain) + len(self.qw)

    def _ls_plus(self, subject, queue, weight):
        if subject[:5] == b"$LDS.":
            return
        if queue is None:
            if subject in self.hplain:
                return
            if self.hub_interest() >= self.max_hub_interest:
                self.saturated = True
                self.overflows += 1
                return
            self.hplain[subject] = subject
            self.plain.add(subject, subject)
            return
        key = (subject, queue)
        e = self.qw.get(key)
        if e is not None:
            e[0] = weight  # absolute count, replaces the old one
        elif self.hub_interest() >= self.max_hub_interest:
            self.overflows += 1  # saturated forwarding still names the groups we know
            self.saturated = True
        else:
            self.qw[key] = [weight, queue]
            self.qsub.add(subject, queue)

    def _ls_minus(self, subject, queue):
        if queue is None:
            s = self.hplain.pop(subject, None)
            if s is not None:
                self.plain.remove(s, s)
            return
        e = self.qw.pop((subject, queue), None)
        if e is not None:
            self.qsub.remove(subject, e[1])

    # ---- one connection ---------------------------------------------------------------------

    async def run_once(self):
        # Dial, handshake and serve until the link drops; returns the reason as a short string.
        # One task (the session) per connection; tick() cancels it when the hub falls silent, so
        # no timer, Event or wait_for is needed (each costs heap on MicroPython).
        self.loop_detected = False
        self.was_up = False
        self._reason = None
        self.pings = 1  # the handshake's PING is outstanding from the start
        t = self._task = asyncio.create_task(self._session())
        try:
            await t
        except asyncio.CancelledError:
            if self._reason is None or self.stopped:
                raise  # we were cancelled ourselves, not the session by tick()
        finally:
            self._task = None
            t.cancel()
        return self._reason or "closed"

    async def _session(self):
        link = None
        try:
            if self.signer is not None:
                err = self.signer.prepare()
                if err is not None:
                    self._finish(err)
                    return
            r, w = await asyncio.open_connection(self.host, self.port)
            link = Link(r, w, self.max_pending)
            parser = proto.Parser(proto.KIND_LEAF, max_payload=self.max_payload)
            info = await self._first_info(link, parser)
            if info is None:
                return
            self._learn(info)
            self.hub_name = info.get("server_name") or info.get("server_id") or ""
            p = info.get("proto")
            self.hub_proto = p if isinstance(p, int) else 0
            self.cid = self.leaf.new_cid()
            if self.tls is not None or info.get("tls_required"):
                if self.tls is None:
                    self._finish("hub requires TLS (set hub.tls)")
                    return
                from edge.leaf.tls import start_tls  # only TLS users pay for its code

                r, w = await start_tls(r, w, self.host, self.tls)
                link = Link(r, w, self.max_pending)
            connect = self._connect(info)
            info = None
            if connect is None:
                return
            self.link = link
            link.write(connect + proto.PING, True)
            for key, n in self.leaf.interest.items():
                subject, _, queue = key.partition(b" ")
                self.interest_changed(subject, queue or None, 0, n)
            while True:
                data = await link.read()
                parser.receive_data(data)
                while True:
                    try:
                        ev = parser.next_event()
                        if ev is None:
                            break
                        if self._event(link, ev):
                            return
                    except MemoryError:  # rule 8: that message is dropped, the link stays
                        if not self.nomem:
                            self.log("uplink nomem: a message dropped (logged once)")
                        self.nomem += 1
                if link.closed:
                    self._finish("write failed")
                    return
        except proto.RemoteProtocolError as e:
            self._finish("protocol error: %s" % e)
        except OSError as e:
            self._finish("io error (errno %s)" % e.args[0])
        except Exception as e:  # MicroPython's TLS reports a bad certificate as ValueError
            self._finish("error %r" % e)
        finally:
            self.link = None
            self.up = False
            self._reset_table()
            if link is not None:
                await link.close()

    async def _first_info(self, link, parser):
        while True:
            parser.receive_data(await link.read())
            ev = parser.next_event()
            if ev is None:
                continue
            if ev[0] == proto.OP_INFO:
                return ev[1]
            self._finish("-ERR '%s'" % ev[1] if ev[0] == proto.OP_ERR else "no INFO from hub")
            return None

    def _connect(self, info):
        # The CONNECT for this hub's INFO; None (the reason set) when the credentials cannot sign its nonce.
        opts = {"name": self.name, "headers": True, "protocol": _PROTO_TRACE, "version": VERSION}
        if self.user is not None:
            opts["user"] = self.user
            opts["pass"] = self.password or ""
        if self.token is not None:
            opts["auth_token"] = self.token
        if self.signer is not None:
            nonce = info.get("nonce")
            fields = self.signer.fields(nonce.encode() if isinstance(nonce, str) else b"")
            if isinstance(fields, str):
                self._finish(fields)
                return None
            opts.update(fields)
        return proto.encode_connect(opts)

    def _finish(self, reason):
        if self._reason is None:
            self._reason = reason

    def tick(self):
        # Every ping_interval (edge/leaf/runner.py's housekeeping task): PING the hub, or end a
        # session whose hub left ping_max PINGs unanswered (the handshake's included).
        t = self._task
        if t is None:
            return
        if self.pings >= self.ping_max:
            self._finish(("stale link" if self.up else "handshake timeout") + " (%d pings unanswered)" % self.pings)
            t.cancel()
            return
        self.pings += 1
        if self.link is not None:
            self.link.write(proto.PING, True)
            tr = self.leaf.tracer
            if tr is not None and tr.pending and self.up:
                tr.flush()  # trace events that found the link's output full

    def _event(self, link, ev):
        # Handle one operation from the hub; True when the link is finished.
        op = ev[0]
        if op == proto.OP_LMSG:
            self.received += 1
            self.leaf.route(ev[1], ev[2], ev[4], ev[5], self, ev[3])
        elif op == proto.OP_LS_PLUS:
            self._ls_plus(ev[1], ev[2], ev[3])
        elif op == proto.OP_LS_MINUS:
            self._ls_minus(ev[1], ev[2])
        elif op == proto.OP_PING:
            link.write(proto.PONG, True)
        elif op == proto.OP_PONG:
            self.pings = 0
            if not self.up:
                self.up = self.was_up = True
                at = (self.host, self.port)
                if self._last_up is not None and self._last_up != at:
                    self.failovers += 1
                self._last_up = at
                self.log("uplink up hub=%s:%d failovers=%d" % (self.host, self.port, self.failovers))
                if self.leaf.tracer is not None:
                    self.leaf.tracer.flush()  # events that waited for the link
        elif op == proto.OP_INFO:
            self._learn(ev[1])  # an async INFO: cluster peers came or went
        elif op == proto.OP_ERR:
            if ev[1][:13] == "Loop detected":
                self.loop_detected = True
            self.log("uplink -ERR '%s'" % ev[1])
            if not self.up:  # refused during the handshake: the hub's words are the reason for the retry
                hint = self.signer.refused() if self.signer and ev[1] == "Authorization Violation" else ""
                self._finish("-ERR '%s'%s" % (ev[1], hint))
        elif op == proto.OP_CLOSED:
            self._finish("closed by hub")
            return True
        return False
