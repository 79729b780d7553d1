"""Client connections and message delivery (nats-server `client.go`).

A Client is an asyncio.Protocol. Each read is parsed whole by the hub parser's next_batch()
(host/parser.py); consecutive PUBs to one subject arrive as one run of raw tail slices, which
host/delivery.py routes with one sublist cache hit and one `prefix.join(pieces)` per target.
Output is queued per connection and written once per read batch (Server.flush_dirty), which is
what makes pure Python fast enough here (shared/perf/PURE-PYTHON-CEILING.md).

Nothing in this file awaits: every handler runs to completion inside one event-loop callback,
which is the asyncio analogue of holding nats-server's client lock.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import TYPE_CHECKING, Any

from edge.proto import (
    KIND_CLIENT,
    OK,
    OP_CLOSED,
    OP_CONNECT,
    OP_ERR,
    OP_INFO,
    OP_OK,
    OP_PING,
    OP_PONG,
    OP_PUB,
    OP_SUB,
    OP_UNSUB,
    PING,
    PONG,
    RemoteProtocolError,
    encode_err,
    encode_info,
)
from host import errors
from host.accounts import Account
from host.auth import ClientPermissions, authenticate
from host.delivery import deliver, learn_plan, mapped_runs, settle, trace_mapped_away
from host.msgtrace import trace_max_payload, trace_refused
from host.parser import OP_PUB_RUN, HubParser, decode_tail, encode_tail
from host.sublist import Sublist, Subscription, is_valid_literal_subject, is_valid_subject

if TYPE_CHECKING:
    from host.server import Server

FIRST_PING_INTERVAL = 2.0  # nats-server firstPingInterval
LINK_FIRST_PING_INTERVAL = 1.0  # leafs and routes get their first PING after about 1 s
_STALL_MAX = 0.05  # longest pause of a producer while a consumer drains (nats-server stalls briefly)
_MAX_SUBS_CLOSE_DELAY = 0.02  # nats-server applyAccountLimits: -ERR, then the close 20 ms later

log = logging.getLogger("natsedge.hub")


class Client(asyncio.Protocol):
    kind = "Client"
    is_leaf = False
    is_router = False
    is_gateway = False
    is_link = False  # a leaf, route or gateway: messages go out as LMSG/RMSG frames naming queue groups
    to_routes = True  # its messages go on to routes (not a route's own, nor those of a leaf we dialled)
    to_gateways = True  # its messages go on to other clusters (not those of a route or gateway: host/gateway.py)
    traces = True  # its messages may start a message trace (host/msgtrace.py); the hub's own never do

    def __init__(self, server: Server) -> None:
        self.server = server
        opts = server.opts
        self.opts = opts
        self.cid = server.next_cid()
        self.parser = HubParser(KIND_CLIENT, opts.max_control_line, opts.max_payload)
        self.transport: asyncio.Transport | None = None
        self.account: Account | None = None
        self.user: str | None = None
        self.perms: ClientPermissions | None = None
        self.nonce = ""  # the challenge in our INFO, when nkey or JWT users sign one (Server.client_info)
        self.jwt_issued_at = 0  # a JWT user's `iat`, for revocations in a later account update (Server.jwt_account)
        self.subs: dict[bytes, Subscription] = {}
        self.out: list[bytes] = []
        self.dirty = False
        self.closed = False
        self.connected = False  # CONNECT accepted
        self.simple_pub = False  # publishes need no per-message replies or permission checks
        self.first_pong_sent = False  # the connect_info INFO follows the first PONG after CONNECT
        self.info_sent = False  # the INFO went out in plain text before a TLS handshake
        # Defaults before/without CONNECT: nats-server treats such a client as verbose + pedantic.
        self.verbose = True
        self.pedantic = True
        self.echo = True
        self.headers = False
        self.no_responders = False
        self.protocol = 0
        self.name = ""
        self.lang = ""
        self.version = ""
        self.ip = ""
        self.port = 0
        self.in_msgs = 0
        self.in_bytes = 0
        self.out_msgs = 0
        self.out_bytes = 0
        self.start = time.time()
        self.last_activity = self.start
        self.pings_out = 0
        self.ping_sent = 0.0  # when the last PING went out (a link's round-trip time is measured with it)
        self.max_pending = opts.max_pending
        # Per-connection limits, set from the account's by apply_account_limits (-1: none).
        self.max_payload = opts.max_payload
        self.max_subs = opts.max_subscriptions or -1
        self.user_limits = (-1, -1)  # a JWT user's own (max_subs, max_payload), kept for account updates
        self.jwt_bearer = False  # a JWT user's is a bearer token: cut when an account update disallows those
        self.stall_at = opts.max_pending * 3 // 4
        self.blocked_since = 0.0
        self.stalled: list[Client] = []
        self.plans_gen = -1  # the account sublist generation the parser's delivery plans were made for
        self._timers: dict[str, asyncio.TimerHandle] = {}

    # ---- connection lifecycle -----------------------------------------------------------------

    def attach(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername") or ("", 0)
        self.ip, self.port = peer[0], peer[1]
        transport.set_write_buffer_limits(high=min(self.max_pending // 2, 4 << 20))

    def plain_info(self, addr: Any) -> bytes:
        """The INFO a TLS client port writes in plain text before the handshake (host/tls.py TLSListener)."""
        self.ip, self.port = addr[0], addr[1]
        self.info_sent = True
        return encode_info(self.server.client_info(self))

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.attach(transport)
        server = self.server
        info = b"" if self.info_sent else encode_info(server.client_info(self))
        if not server.register(self):
            transport.write(info + encode_err(errors.ERR_MAX_CONNECTIONS))
            self.closed = True
            transport.close()
            server.record_closed(self, errors.MAX_CONNECTIONS_EXCEEDED)
            return
        transport.write(info)
        loop = server.loop
        if server.auth_required:
            self._timers["auth"] = loop.call_later(self.opts.auth_timeout, self._auth_timeout)
        elif not self.register_with_account(server.global_account):
            self.max_account_connections_exceeded()
            return
        first = min(FIRST_PING_INTERVAL, self.opts.ping_interval)
        self._timers["ping"] = loop.call_later(first * (1 + random.random() * 0.2), self._ping_timer)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed:
            self._teardown(errors.READ_ERROR if exc else errors.CLIENT_CLOSED)

    def pause_writing(self) -> None:
        self.blocked_since = time.monotonic()

    def resume_writing(self) -> None:
        self.blocked_since = 0.0
        stalled, self.stalled = self.stalled, []
        for c in stalled:
            c.unstall()

    def close(self, reason: str, err: str | None = None, abort: bool = False) -> None:
        """Close after sending what is queued (plus -ERR err); abort drops queued output."""
        if self.closed:
            return
        t = self.transport
        if t is not None:
            if abort:
                t.abort()
            else:
                if err is not None:
                    self.out.append(encode_err(err))
                if self.out:
                    t.write(b"".join(self.out))
                    self.out = []
                t.close()
        self._teardown(reason)

    def _teardown(self, reason: str) -> None:
        self.closed = True
        for h in self._timers.values():
            h.cancel()
        self._timers.clear()
        self.drop_subs()
        if self.account is not None:
            self.account.clients.discard(self)
        self.out = []
        for c in self.stalled:
            c.unstall()
        self.stalled = []
        self.server.unregister(self, reason)

    # ---- timers ---------------------------------------------------------------------------------

    def expire_at(self, when: float) -> None:
        """A JWT user's connection ends when its JWT expires (nats-server setExpiration)."""
        self._timers["expiry"] = self.server.loop.call_later(max(0.0, when - time.time()), self._auth_expired)

    def _auth_expired(self) -> None:
        self.close(errors.AUTH_EXPIRED, errors.ERR_AUTH_EXPIRED)

    # ---- accounts -------------------------------------------------------------------------------------

    def register_with_account(self, acc: Account) -> bool:
        """Join `acc` as nats-server registerWithAccount: take its limits; False for a connection that would pass its
        max_connections (a leaf: its max_leafnodes), for the caller to refuse. Every connection of the account counts
        towards max_connections, leafs included, as nats-server's MaxTotalConnectionsReached."""
        self.account = acc
        lim = acc.limits
        if self.is_leaf:
            over = 0 <= lim.max_leafnodes <= len(acc.leafs)
        else:
            over = 0 <= lim.max_connections <= len(acc.clients)
        if over:
            return False
        acc.clients.add(self)
        self.apply_account_limits()
        return True

    def max_account_connections_exceeded(self) -> None:
        self.close(errors.MAX_ACCOUNT_CONNECTIONS_EXCEEDED, errors.ERR_MAX_ACCOUNT_CONNECTIONS)

    def apply_account_limits(self) -> None:
        """nats-server applyAccountLimits: max_subscriptions and max_payload are per connection, the lowest of the
        JWT user's, the account's and the server's (only clients and leafs have them). A connection already at its
        subscription limit (a limit of 0) gets -ERR at once and is closed 20 ms later, as nats-server does."""
        assert self.account is not None
        lim = self.account.limits
        user_subs, user_payload = self.user_limits
        self.max_subs = min_limit(min_limit(user_subs, lim.max_subscriptions), self.opts.max_subscriptions or -1)
        max_payload = min_limit(min_limit(user_payload, lim.max_payload), self.opts.max_payload)
        if max_payload != self.max_payload:
            self.max_payload = max_payload
            self.parser.set_max_payload(max_payload)
        if 0 <= self.max_subs <= len(self.subs) and "max_subs" not in self._timers:
            self.enqueue(encode_err(errors.ERR_MAX_SUBSCRIPTIONS))
            if self.server.reading is None:
                self.flush()
            self._timers["max_subs"] = self.server.loop.call_later(
                _MAX_SUBS_CLOSE_DELAY, self.close, errors.MAX_SUBSCRIPTIONS_EXCEEDED)

    def _auth_timeout(self) -> None:
        if not self.connected:
            self.close(errors.AUTH_TIMEOUT, errors.ERR_AUTH_TIMEOUT)

    def _ping_timer(self) -> None:
        # As nats-server processPingTimer: too many unanswered PINGs is a stale connection; a
        # client that sent us data within the interval needs no PING (links are pinged whatever the traffic).
        if self.closed:
            return
        opts = self.opts
        if self.pings_out + 1 > opts.ping_max:
            self.server.stale_connections += 1
            self.close(errors.STALE_CONNECTION, errors.ERR_STALE_CONNECTION)
            return
        if not self.is_link and time.time() - self.last_activity < opts.ping_interval and self.pings_out == 0 \
                and self.connected:
            pass
        else:
            self.pings_out += 1
            self.ping_sent = time.monotonic()
            self.send(PING)
        self._timers["ping"] = self.server.loop.call_later(opts.ping_interval, self._ping_timer)

    # ---- links (leafs, routes) ------------------------------------------------------------------

    def link_sub(self, acc: Account, store: dict[Any, Subscription], key: Any, subject: bytes, queue: bytes | None,
                 weight: int | None) -> Subscription | None:
        """The peer's interest (LS+, RS+) as a subscription of this link, kept in `store` under `key`, for the caller
        to add to `acc`; None when nothing changed. A queue's new absolute weight replaces the old subscription, so
        fanouts are rebuilt with it."""
        old = store.get(key)
        if old is not None:
            if queue is None or old.weight == (weight or 1):
                return None
            acc.remove_sub(old)
        sub = Subscription(self, subject, queue, b"")
        sub.weight = max(weight or 1, 1) if queue is not None else 1
        store[key] = sub
        return sub

    # ---- output ---------------------------------------------------------------------------------

    def enqueue(self, data: bytes) -> None:
        self.out.append(data)
        if not self.dirty:
            self.dirty = True
            self.server.dirty.append(self)

    def send(self, data: bytes) -> None:
        """Queue and write now (timers and other paths outside a read batch)."""
        self.out.append(data)
        self.flush()

    def flush(self) -> None:
        self.dirty = False
        out = self.out
        if not out or self.closed:
            return
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()  # the same list: delivery plans hold it (host/delivery.py Plan)
        t = self.transport
        assert t is not None
        t.write(data)
        pending = t.get_write_buffer_size()
        if pending > self.stall_at:
            if pending > self.max_pending:
                self.server.slow_consumers += 1
                self.close(errors.SLOW_CONSUMER_PENDING_BYTES, abort=True)
                return
            # As nats-server's stall: slow the producer a little before giving up on the consumer.
            src = self.server.reading
            if src is not None and src is not self:
                src.stall(self)

    def stall(self, consumer: Client) -> None:
        """Pause reading from this producer briefly while `consumer` drains (bounded in time)."""
        if self.closed or "stall" in self._timers or self.transport is None:
            return
        self.transport.pause_reading()
        consumer.stalled.append(self)
        self._timers["stall"] = self.server.loop.call_later(_STALL_MAX, self.unstall)

    def unstall(self) -> None:
        h = self._timers.pop("stall", None)
        if h is not None:
            h.cancel()
            if not self.closed and self.transport is not None:
                self.transport.resume_reading()

    # ---- input ----------------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        self.last_activity = time.time()
        p = self.parser
        p.receive_data(data)
        acc = self.account
        if acc is not None:
            if self.plans_gen != acc.sublist.gen:
                p.plans.clear()
                self.plans_gen = acc.sublist.gen
        elif (self.is_router or self.is_gateway) and self.plans_gen != Sublist.changes:
            p.plans.clear()  # a route's or gateway's plans span accounts
            self.plans_gen = Sublist.changes
        server = self.server
        try:
            events = p.next_batch()
        except RemoteProtocolError:
            events = []  # p.error holds it, handled below after what came before it
        server.reading = self
        n_in = b_in = 0
        if p.used:
            n_in, b_in = settle(p.used, server)  # frames the parser delivered itself
        if p.dropped:
            n_in += p.dropped
            b_in += p.dropped_bytes
            p.dropped = p.dropped_bytes = 0
        if n_in:
            self.count_in(n_in, b_in)
        for ev in events:
            if ev[0] == OP_PUB_RUN:
                self.process_run(ev[1], ev[2], ev[3], ev[4])
            else:
                self.process_op(ev)
            if self.closed:
                break
        else:
            if p.error is not None:
                self.protocol_error(p.error)
        server.flush_dirty()
        server.reading = None

    def count_in(self, n: int, nbytes: int) -> None:
        self.in_msgs += n
        self.in_bytes += nbytes
        server = self.server
        server.in_msgs += n
        server.in_bytes += nbytes

    def process_run(self, subject: bytes, has_hdr: bool, pieces: list[bytes], nbytes: int) -> None:
        """A run of PUB/HPUB frames the parser did not deliver itself."""
        acc = self.account
        if acc is not None and acc.mappings is not None:
            found = acc.mappings.lookup(subject)
            if found is not None:
                # As nats-server's parser: mapped before anything else looks at the subject (permissions too).
                learn = found.__class__ is bytes  # one subject for every frame: the parser may deliver them itself
                for to, part, size in mapped_runs(found, has_hdr, pieces, nbytes):
                    if to:
                        self.process_mapped_run(to, has_hdr, part, size, subject if learn else None, subject)
                    else:
                        self.count_in(len(part), size)  # the share of the weights nothing takes: dropped
                        if self.verbose:
                            self.enqueue(OK * len(part))
                        if has_hdr:
                            trace_mapped_away(acc, self, subject, part)
                return
        self.process_mapped_run(subject, has_hdr, pieces, nbytes, subject, None)

    def process_mapped_run(self, subject: bytes, has_hdr: bool, pieces: list[bytes], nbytes: int,
                           plan_key: bytes | None, mapped_from: bytes | None) -> None:
        """A run to `subject` (mapped from `mapped_from`, when a mapping applied); plan_key: the subject the parser
        may deliver the next runs of on its own (None: it may not, the mapping picks per frame)."""
        if self.simple_pub and (self.headers or not has_hdr):
            # No verbose/pedantic replies, no publish permissions to check: the parser may deliver the next runs
            # to this subject on its own.
            self.count_in(len(pieces), nbytes)
            deliver(self.account, self, subject, has_hdr, pieces, nbytes,  # type: ignore[arg-type]
                    mapped_from=mapped_from)
            if plan_key is not None:
                learn_plan(self.parser.plans, self, self.account, subject, None, plan_key)  # type: ignore[arg-type]
        elif self.connected or self.connect_without_credentials():
            self.process_pub_run(subject, has_hdr, pieces, nbytes, mapped_from)

    def protocol_error(self, e: RemoteProtocolError) -> None:
        if e.wire == errors.ERR_MAX_PAYLOAD:
            reason = errors.MAX_PAYLOAD_EXCEEDED
            if not self.is_link:
                trace_max_payload(self)
        elif e.wire == errors.ERR_MAX_CONTROL_LINE:
            reason = errors.MAX_CONTROL_LINE_EXCEEDED
        else:
            reason = errors.PARSE_ERROR if e.wire else errors.PROTOCOL_VIOLATION
        self.close(reason, e.wire)

    def link_control(self, ev: tuple, peer: str) -> bool:
        """A route's or gateway's PING, PONG (its RTT), -ERR, close or +OK, handled alike; False for anything else."""
        op = ev[0]
        if op == OP_PING:
            self.enqueue(PONG)
        elif op == OP_PONG:
            self.pings_out = 0
            if self.ping_sent:
                self.rtt = time.monotonic() - self.ping_sent
        elif op == OP_ERR:
            log.warning("%s reported error: %s", peer, ev[1])
            self.close(errors.CLIENT_CLOSED)
        elif op == OP_CLOSED:
            self.close(errors.CLIENT_CLOSED)
        elif op != OP_OK:
            return False
        return True

    def auth_violation(self) -> None:
        self.close(errors.AUTH_VIOLATION, errors.ERR_AUTH_VIOLATION)

    def connect_without_credentials(self) -> bool:
        """A first operation other than CONNECT: fine without authentication; with no_auth_user, the client becomes
        that user, with its account and permissions (nats-server parser.go, "allow non CONNECT protos as our
        first"); otherwise an Authorization Violation. False: the connection was closed."""
        if not self.server.auth_required:
            return True
        if not self.opts.no_auth_user:
            self.auth_violation()
            return False
        if not self.login({}):
            return False
        self.connected = True
        return True

    def login(self, connect: dict[str, Any]) -> bool:
        """Authenticate, join the user's account, take its permissions and JWT expiry, stop the auth timer. False:
        refused, and the connection closed (Authorization Violation, or the account is at its max_connections)."""
        server = self.server
        peercert = None
        if self.opts.tls_map and self.transport is not None:
            peercert = self.transport.get_extra_info("peercert")
        user = authenticate(self.opts, connect, self.nonce, server.trust, peercert)
        if user is None:
            self.auth_violation()
            return False
        self.user = user.username or user.nkey
        self.jwt_issued_at = user.issued_at
        self.user_limits = (user.max_subscriptions, user.max_payload)
        self.jwt_bearer = user.bearer
        if not self.register_with_account(server.lookup_account(user.account)):
            self.max_account_connections_exceeded()
            return False
        if user.expires:
            self.expire_at(user.expires)
        if user.permissions is not None:
            self.perms = ClientPermissions(user.permissions)
        h = self._timers.pop("auth", None)
        if h is not None:
            h.cancel()
        return True

    def process_op(self, ev: tuple) -> None:
        op = ev[0]
        if op == OP_CONNECT:
            self.process_connect(ev[1])
            return
        if not self.connected and not self.connect_without_credentials():
            return
        if op == OP_PUB:
            self.process_run(ev[1], ev[3] is not None, [encode_tail(ev[2], ev[3], ev[4])],
                             len(ev[4]) + (len(ev[3]) if ev[3] is not None else 0))
        elif op == OP_PING:
            self.enqueue(PONG)
            if self.connected and not self.first_pong_sent:
                # As nats-server processPing: once, at the first PING after CONNECT (or after the first operation
                # made the client no_auth_user), and only to a client that takes async INFO (protocol 1).
                self.first_pong_sent = True
                if self.protocol >= 1:
                    self.send_connect_info()
        elif op == OP_PONG:
            self.pings_out = 0
        elif op == OP_SUB:
            self.process_sub(ev[1], ev[2], ev[3])
        elif op == OP_UNSUB:
            self.process_unsub(ev[1], ev[2])
        elif op == OP_ERR:
            self.close(errors.CLIENT_CLOSED)
        elif op == OP_CLOSED:
            self.close(errors.CLIENT_CLOSED)
        elif op == OP_INFO or op == OP_OK:
            pass

    def send_connect_info(self) -> None:
        info = self.server.client_info(self)
        info["connect_info"] = True
        info["remote_account"] = self.account.name if self.account else ""
        if self.server.auth_required:
            info["auth_required"] = True  # also where no_auth_user leaves it out of the first INFO
        self.enqueue(encode_info(info))

    def process_connect(self, c: dict[str, Any]) -> None:
        if self.connected:
            # As nats-server processConnect: a later CONNECT drops the connection's subscriptions and authenticates
            # again (it may move the client to another account, or fail), then updates the options.
            self.drop_subs()
            if self.server.auth_required:
                if self.account is not None:
                    self.account.clients.discard(self)
                self.perms = None
                expiry = self._timers.pop("expiry", None)  # the previous user's JWT expiry
                if expiry is not None:
                    expiry.cancel()
                if not self.login(c):
                    return
            self.verbose = bool(c.get("verbose", self.verbose))
            self.pedantic = bool(c.get("pedantic", self.pedantic))
            self.echo = bool(c.get("echo", self.echo))
            headers = bool(c.get("headers", self.headers))
            if headers != self.headers and self.account is not None:
                self.account.sublist.reset()  # delivery plans know which clients take headers
            self.headers = headers
            self.simple_pub = not self.verbose and not self.pedantic and (self.perms is None or self.perms.pub is None)
            self.parser.plans.clear()  # they were made for the old echo and reply options
            self.set_drop()
            proto = c.get("protocol", self.protocol)
            if isinstance(proto, int) and not isinstance(proto, bool) and 0 <= proto <= 1:
                self.protocol = proto
            if self.verbose:
                self.enqueue(OK)
            return
        proto = c.get("protocol", 0)
        if not isinstance(proto, int) or isinstance(proto, bool) or not 0 <= proto <= 1:
            self.close(errors.BAD_CLIENT_PROTOCOL_VERSION, errors.ERR_BAD_CLIENT_PROTOCOL)
            return
        self.verbose = bool(c.get("verbose", True))
        self.pedantic = bool(c.get("pedantic", True))
        self.echo = bool(c.get("echo", True))
        self.headers = bool(c.get("headers", False))
        self.no_responders = bool(c.get("no_responders", False))
        self.protocol = proto
        self.name = str(c.get("name", "") or "")
        self.lang = str(c.get("lang", "") or "")
        self.version = str(c.get("version", "") or "")
        if self.server.auth_required and not self.login(c):
            return
        if self.no_responders and not self.headers:
            self.close(errors.NO_RESPONDERS_REQUIRES_HEADERS, errors.ERR_NO_RESPONDERS_NEEDS_HEADERS)
            return
        self.connected = True
        self.simple_pub = not self.verbose and not self.pedantic and (self.perms is None or self.perms.pub is None)
        self.set_drop()
        if self.verbose:
            self.enqueue(OK)

    def set_drop(self) -> None:
        """Let the parser skip frames to subjects with no interest, when no reply (+OK, -ERR) is owed."""
        p = self.parser
        if self.simple_pub and self.account is not None:
            p.drop = self.account.no_interest
            p.drop_replies = not self.no_responders
        else:
            p.drop = {}
            p.drop_replies = False

    def process_sub(self, subject: bytes, queue: bytes | None, sid: bytes) -> None:
        if not is_valid_subject(subject) or (queue is not None and not _valid_queue(queue)):
            self.enqueue(encode_err(errors.ERR_INVALID_SUBJECT))
            return
        perms = self.perms
        if perms is not None and perms.sub is not None and not perms.sub.check(subject, queue):
            self.enqueue(encode_err(errors.err_sub_violation(subject, queue)))
            return
        if sid in self.subs:
            if self.verbose:
                self.enqueue(OK)
            return
        if 0 <= self.max_subs <= len(self.subs):
            self.enqueue(encode_err(errors.ERR_MAX_SUBSCRIPTIONS))
            return
        sub = Subscription(self, subject, queue, sid)
        self.subs[sid] = sub
        assert self.account is not None
        self.account.add_sub(sub)
        if self.verbose:
            self.enqueue(OK)

    def process_unsub(self, sid: bytes, max_msgs: int | None) -> None:
        sub = self.subs.get(sid)
        if sub is not None:
            if max_msgs is not None and max_msgs > sub.delivered:
                sub.max = max_msgs
                if self.account is not None:
                    self.account.sublist.invalidate(sub.subject)  # its delivery plans count it from now on
            else:
                self.remove_sub(sub)
        if self.verbose:
            self.enqueue(OK)

    def drop_subs(self) -> None:
        """Remove every subscription of this connection from its account."""
        acc = self.account
        if acc is not None:
            for sub in self.subs.values():
                sub.closed = True
                acc.remove_sub(sub)
        self.subs.clear()

    def remove_sub(self, sub: Subscription) -> None:
        if self.subs.pop(sub.sid, None) is not None and self.account is not None:
            sub.closed = True
            self.account.remove_sub(sub)

    def process_pub_run(self, subject: bytes, has_hdr: bool, pieces: list[bytes], nbytes: int,
                        mapped_from: bytes | None = None) -> None:
        if has_hdr and not self.headers:
            # nats-server processHeaderPub: HPUB from a client that did not announce headers.
            self.close(errors.PROTOCOL_VIOLATION)
            return
        n = len(pieces)
        if nbytes > self.max_payload and self.max_payload < self.opts.max_payload and any(
                len(p) - p.find(b"\r\n") - 4 > self.max_payload for p in pieces):
            # Parsed in the read that carried CONNECT, before the account's lower limit reached the parser.
            self.close(errors.MAX_PAYLOAD_EXCEEDED, errors.ERR_MAX_PAYLOAD)
            return
        self.count_in(n, nbytes)
        perms = self.perms
        if perms is not None and perms.pub is not None and not perms.pub.check(subject):
            if perms.replies is None:
                err = encode_err(errors.err_pub_violation(subject))
                for _ in range(n):
                    self.enqueue(err)
                if has_hdr:
                    trace_refused(self, self.account, subject if mapped_from is None else mapped_from,
                                  [_hdr_size(p) for p in pieces], errors.err_pub_violation(subject),
                                  None if mapped_from is None else subject)
                return
            # allow_responses: each frame uses up the reply permission, one by one as nats-server counts them.
            now = time.monotonic()
            allowed = []
            for piece in pieces:
                if perms.can_publish(subject, now):
                    allowed.append(piece)
                else:
                    self.enqueue(encode_err(errors.err_pub_violation(subject)))
            if not allowed:
                return
            if len(allowed) < n:
                pieces = allowed
                n = len(pieces)
                nbytes = sum(len(payload) + (len(hdr) if hdr is not None else 0)
                             for _reply, hdr, payload in (decode_tail(p, has_hdr) for p in pieces))
        if self.pedantic and not is_valid_literal_subject(subject if mapped_from is None else mapped_from):
            err = encode_err(errors.ERR_INVALID_PUB_SUBJECT)
            for _ in range(n):
                self.enqueue(err)
        if self.verbose:
            for _ in range(n):
                self.enqueue(OK)
        assert self.account is not None
        deliver(self.account, self, subject, has_hdr, pieces, nbytes, mapped_from=mapped_from)


def _hdr_size(piece: bytes) -> tuple[bytes, int]:
    """A frame with headers as (header block, message size)."""
    _reply, hdr, payload = decode_tail(piece, True)
    assert hdr is not None
    return hdr, len(hdr) + len(payload)


def min_limit(a: int, b: int) -> int:
    """The lower of two limits where a negative one means none (nats-server minLimit)."""
    if a < 0:
        return b
    return a if b < 0 else min(a, b)


def _valid_queue(q: bytes) -> bool:
    return bool(q) and b" " not in q and b"\t" not in q


def peer_proto(v: Any) -> int:
    """A link peer's protocol level from its CONNECT or INFO (0 when missing or not a number): at
    host/msgtrace.py MSG_TRACE_PROTO and up it traces the messages it is forwarded."""
    return v if isinstance(v, int) and not isinstance(v, bool) else 0


def interest_change(sent: dict[Any, int], key: Any, queue: bytes | None, n: int) -> int:
    """What a link tells its peer about interest `key`, now `n` (a queue's members; else any count), given what it
    told it last (`sent`, updated here): 1 a `+` (new interest, or a queue's new weight), -1 a `-`, 0 nothing."""
    prev = sent.get(key, 0)
    if n > 0:
        sent[key] = n
    else:
        sent.pop(key, None)
    if n == prev or (queue is None and (n > 0) == (prev > 0)):
        return 0
    return 1 if n > 0 else -1
