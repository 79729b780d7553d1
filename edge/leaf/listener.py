# edge/leaf/listener.py — LAN clients: the NATS client protocol on a local TCP port.
#
# Rules this file keeps:
# 1. Speak as nats-server does to a client: INFO first; CONNECT (verbose, pedantic, echo, headers,
#    no_responders, protocol); PUB/HPUB/SUB/UNSUB/PING/PONG in; MSG/HMSG/PING/PONG/+OK/-ERR out,
#    with nats-server's -ERR texts (shared/nats-reference README 1.7). A header-less client gets
#    MSG with the header block stripped. A client with no_responders gets the 503 status message.
# 2. Accept only while under max_connections and while the heap has min_free_heap bytes free
#    (MicroPython can crash, not raise, when the heap runs out with many sockets registered:
#    FACTS.md 1.3); otherwise send INFO, -ERR 'maximum connections exceeded' and close.
# 3. Each client's output is bounded by max_pending (edge/leaf/link.py); a client that falls
#    further behind is closed as a slow consumer (no -ERR, as nats-server), subscriptions and all.
# 4. Per client: this object (a Link), its parser, its reader task (from start_server), its
#    subscriptions. No other task or Event per client: each costs ~170 bytes on MicroPython.
# 5. tick(), called every ping_interval by the runner's one housekeeping task, pings every client
#    and closes one that left ping_max PINGs unanswered with -ERR 'Stale Connection'. A client that
#    sent data since the last tick is not pinged.
# 6. With "authorization" (edge/auth/lanauth.py): INFO says auth_required; the first op must be a CONNECT
#    whose credentials pass, else -ERR 'Authorization Violation' and a close; a client still without
#    CONNECT at its second tick gets -ERR 'Authentication Timeout'. A user's permissions refuse a PUB
#    or SUB with nats-server's -ERR 'Permissions Violation for ...' (the connection stays) and keep denied
#    subjects from its wildcard subscriptions.

import asyncio
import gc

from edge import proto, subjects
from edge.compat import const, mem_free
from edge.leaf.broker import VERSION, LeafError, Subscription, log_exc
from edge.leaf.link import Link

# nats-server's texts (shared/nats-reference README 1.7), as proto.encode_err() would frame them.
_ERR_MAX_CONN = b"-ERR 'maximum connections exceeded'\r\n"
_ERR_MAX_SUBS = b"-ERR 'maximum subscriptions exceeded'\r\n"
_ERR_SUBJECT = b"-ERR 'Invalid Subject'\r\n"
_ERR_PUB_SUBJECT = b"-ERR 'Invalid Publish Subject'\r\n"
_ERR_STALE = b"-ERR 'Stale Connection'\r\n"
_ERR_AUTH = b"-ERR 'Authorization Violation'\r\n"
_ERR_AUTH_TIMEOUT = b"-ERR 'Authentication Timeout'\r\n"

# Client.flags: options that are not on the per-message path share one attribute (each attribute
# costs ~16 bytes per client on MicroPython).
_VERBOSE = const(1)
_PEDANTIC = const(2)
_NO_RESPONDERS = const(4)
_INFO_PENDING = const(8)  # protocol 1: an INFO follows the first PONG
_ABORT = const(16)  # slow consumer: close without flushing
_AUTH_PENDING = const(32)  # authorization configured, no CONNECT yet


class Listener:
    def __init__(self, leaf, host, port, max_connections=4, max_payload=8192, max_pending=16384,
                 max_control_line=1024, ping_max=2, min_free_heap=8192, backlog=8, log=None, auth=None):
        self.leaf = leaf
        self.host = host
        self.port = port
        self.max_connections = max_connections
        self.max_payload = max_payload
        self.max_pending = max_pending
        self.max_control_line = max_control_line
        self.ping_max = ping_max
        self.min_free_heap = min_free_heap
        self.backlog = backlog
        self.log = log or (lambda s: None)
        self.auth = auth  # edge/auth/lanauth.py LanAuth, or None: no credentials asked
        self.clients = []
        self.refused = 0
        self.slow = 0
        self._server = None

    async def start(self):
        self._server = await asyncio.start_server(self._accept, self.host, self.port, backlog=self.backlog)

    def close(self):
        if self._server is not None:
            self._server.close()
        for c in self.clients:
            c.kill()

    def _info(self, cid, connect_info=False):
        info = {"server_id": self.leaf.name, "server_name": self.leaf.name, "version": VERSION, "proto": 1,
                "host": self.host, "port": self.port, "headers": True, "max_payload": self.max_payload,
                "client_id": cid}
        if connect_info:
            info["connect_info"] = True
        if self.auth is not None:
            info["auth_required"] = True
        return proto.encode_info(info)

    def _heap_ok(self):
        f = mem_free()
        if 0 <= f < self.min_free_heap:
            gc.collect()
            f = mem_free()
        return f < 0 or f >= self.min_free_heap

    def _accept(self, reader, writer):
        # start_server's callback: returns the coroutine that serves this connection (one task and
        # one frame per client, not two).
        cid = self.leaf.new_cid()
        if len(self.clients) >= self.max_connections or not self._heap_ok():
            self.refused += 1
            return self._refuse(reader, writer, cid)
        c = Client(self, cid, reader, writer)
        self.clients.append(c)
        return c.serve()

    async def _refuse(self, reader, writer, cid):
        link = Link(reader, writer, 1024)
        link.write(self._info(cid) + _ERR_MAX_CONN)
        await link.close(True)

    def tick(self):
        # Every ping_interval (edge/leaf/runner.py): ping idle clients, close stale ones.
        for c in self.clients:
            if c.flags & _AUTH_PENDING:  # no CONNECT since the tick before (rule 6)
                if c.pings:
                    c.write(_ERR_AUTH_TIMEOUT)
                    c.kill()
                c.pings = 1
            elif c.active:
                c.active = False
                c.pings = 0
            elif c.pings >= self.ping_max:
                c.write(_ERR_STALE)
                c.kill()
            else:
                c.pings += 1
                c.write(proto.PING)


class Client(Link):
    # One LAN client: its stream (Link), parser, protocol options and subscriptions (sid -> sub).
    def __init__(self, listener, cid, reader, writer):
        Link.__init__(self, reader, writer, listener.max_pending)
        self.lst = listener
        self.cid = cid
        self.parser = proto.Parser(proto.KIND_CLIENT, listener.max_control_line, listener.max_payload)
        self.subs = {}
        self.limits = None  # sid -> UNSUB max, for the few subscriptions that have one
        # nats-server's defaults until CONNECT says otherwise (a telnet client gets +OK).
        self.flags = _VERBOSE | _PEDANTIC | (_AUTH_PENDING if listener.auth is not None else 0)
        self.perms = None  # this user's permissions (edge/auth/lanauth.py), None: all allowed
        self.echo = True
        self.headers = False
        self.name = None  # CONNECT's "name", for trace events (edge/leaf/msgtrace.py)
        self.pings = 0
        self.active = True
        self.rtask = None

    def kill(self):
        # Stop this client from outside its own task (stale, slow consumer, shutdown).
        self.closed = True
        t = self.rtask
        self.rtask = None
        if t is not None and t is not asyncio.current_task():
            t.cancel()

    def drop_subs(self):
        subs = self.subs
        self.subs = {}
        for s in subs.values():
            self.lst.leaf.remove_sub(s)

    def unsub(self, sub):
        self.subs.pop(sub.key, None)
        if self.limits is not None:
            self.limits.pop(sub.key, None)
        self.lst.leaf.remove_sub(sub)

    async def serve(self):
        self.rtask = asyncio.current_task()
        self.write(self.lst._info(self.cid))
        parser = self.parser
        try:
            while not self.closed:
                data = await self.read()
                self.active = True
                parser.receive_data(data)
                while True:
                    ev = parser.next_event()
                    if ev is None:
                        break
                    if ev[0] == proto.OP_CLOSED or not self._op(ev):
                        return
        except proto.RemoteProtocolError as e:
            if e.wire:
                self.write(proto.encode_err(e.wire))
        except OSError:
            pass  # reset by the peer
        except Exception as e:  # never let one client take the broker down
            log_exc(e)
        finally:
            self.drop_subs()
            if self in self.lst.clients:
                self.lst.clients.remove(self)
            await self.close(not self.flags & _ABORT)

    def _ok(self):
        if self.flags & _VERBOSE:
            self.write(proto.OK)

    def _op(self, ev):
        # One client operation; False closes the connection.
        op = ev[0]
        w = self.write
        if self.flags & _AUTH_PENDING and op != proto.OP_CONNECT:
            w(_ERR_AUTH)
            return False
        if op == proto.OP_PUB:
            subject, reply = ev[1], ev[2]
            valid = subjects.valid(subject, False)  # the only check of this subject (broker.py rule 1)
            if not valid and self.flags & _PEDANTIC:
                w(_ERR_PUB_SUBJECT)
            if self.perms is not None:
                err = self.lst.auth.pub_denied(self.perms, subject)
                if err:
                    w(err)
                    return True
            self._ok()
            n = self.lst.leaf.route(subject, reply, ev[3], ev[4], self, None, not valid)
            if not n and reply and self.flags & _NO_RESPONDERS:
                self._no_responders(subject, reply)
        elif op == proto.OP_SUB:
            subject, queue, sid = ev[1], ev[2], ev[3]
            if not subjects.valid(subject) or (queue is not None and not subjects.valid_queue(queue)):
                w(_ERR_SUBJECT)
                return True
            if self.perms is not None:
                err = self.lst.auth.sub_denied(self.perms, subject, queue)
                if err:
                    w(err)
                    return True
            if sid in self.subs:
                return True  # a duplicate sid is ignored, as nats-server does
            sub = Subscription(subject, queue, self, sid)
            try:
                self.lst.leaf.add_sub(sub)
            except LeafError:
                w(_ERR_MAX_SUBS)
                return True
            self.subs[sid] = sub
            self._ok()
        elif op == proto.OP_UNSUB:
            sub = self.subs.get(ev[1])
            if sub is not None:
                if ev[2] and sub.n < ev[2]:
                    if self.limits is None:
                        self.limits = {}
                    self.limits[ev[1]] = ev[2]
                else:
                    self.unsub(sub)
            self._ok()
        elif op == proto.OP_PING:
            w(proto.PONG)
            if self.flags & _INFO_PENDING:  # as nats-server: protocol 1 gets an INFO after its first PONG
                self.flags &= ~_INFO_PENDING
                w(self.lst._info(self.cid, True))
        elif op == proto.OP_PONG:
            self.pings = 0
        elif op == proto.OP_CONNECT:
            o = ev[1]
            if self.flags & _AUTH_PENDING:
                ok, self.perms = self.lst.auth.login(o)
                if not ok:
                    w(_ERR_AUTH)
                    return False
            p = o.get("protocol", 0)
            self.flags = ((_VERBOSE if o.get("verbose", True) else 0) | (_PEDANTIC if o.get("pedantic", True) else 0)
                          | (_NO_RESPONDERS if o.get("no_responders") else 0) | (_INFO_PENDING if p == 1 else 0))
            self.echo = bool(o.get("echo", True))
            self.headers = bool(o.get("headers", False))
            name = o.get("name")
            self.name = name if isinstance(name, str) and name else None
            if p != 0 and p != 1:
                w(proto.encode_err("invalid client protocol"))
                return False
            if self.flags & _NO_RESPONDERS and not self.headers:
                w(proto.encode_err("no responders requires headers support"))
                return False
            self._ok()
        return True

    def send_msg(self, sub, subject, reply, hdr, payload):
        if self.perms is not None and self.lst.auth.delivery_denied(self.perms, subject):
            sub.n -= 1  # not delivered: does not count towards an UNSUB max
            return
        if hdr is not None and not self.headers:
            hdr = None
        if not self.write(proto.encode_msg(subject, sub.key, payload, reply, hdr, True)) and not self.closed:
            self.lst.slow += 1
            self.lst.log("client %d closed: slow consumer" % self.cid)
            self.flags |= _ABORT
            self.kill()
        if self.limits is not None and sub.n >= self.limits.get(sub.key, sub.n + 1):
            self.unsub(sub)

    def _no_responders(self, subject, reply):
        # nats-server client.go: the 503 goes to the requester only, on its subscription for reply.
        for sub in self.subs.values():
            if subjects.match(sub.subject, reply):
                hdr = b"NATS/1.0 503\r\nNats-Subject: " + subject + b"\r\n\r\n"
                self.write(proto.encode_msg(reply, sub.key, b"", None, hdr))
                return
