"""Gateways: the links between the clusters of a super-cluster (nats-server `gateway.go`).

A Gateway is a Client of kind GATEWAY. Facts from shared/nats-reference/more/README.md §B1, captured from nats-server
2.15.1; breaking the direction rules closes the link with no -ERR, so they are kept exactly:
- one outbound connection per remote cluster (the ones in `gateway.gateways`, and the implicit ones: a cluster that
  dialled us, or one a peer told us about with INFO gateway_cmd 1), and any number of inbound ones (every server of
  every other cluster dials every cluster once);
- the handshake: the accepting side sends INFO (with `gateway`); the dialling side checks the name, then sends
  CONNECT (with `gateway`, its server id as `name`), its own INFO and PING;
- messages (RMSG/HMSG, always with the account) travel only on outbound connections; interest (RS+/RS-, and INFO
  with gateway_cmd) only on inbound ones, back to the dialler. Either sent the wrong way is logged as nats-server
  does ("Received RS+ from gateway on inbound connection") and the link closed with no -ERR;
- interest-only mode from the start, as nats-server 2.9+ (gateway_iom): on an inbound connection we send every
  account's queue interest (weight always 1), then per account INFO gateway_cmd 2 (AllSubsStart, the account in
  base64), its plain interest, INFO gateway_cmd 3 (AllSubsComplete); afterwards each first/last subscriber of a
  subject or group is an RS+/RS-. What we advertise is the interest of this whole cluster (clients, leafs, the hub's
  own and what routes asked for), never what other gateways asked for;
- on an outbound connection, the remote cluster's interest becomes subscriptions of the Gateway in the accounts'
  sublists (left out of Account.interest, so routes, leafs and other gateways never hear of it). Queue interest
  counts at once; plain interest of an account only once its gateway_cmd 2 came (nats-server ignores a plain RS+
  for an account it has no entry for, processGatewayRSub);
- optimistic mode, only towards a peer whose INFO lacks gateway_iom (older servers): every message of an account
  goes to it but for the subjects it refused with RS- (or all, after `A- <account>`), until its gateway_cmd 2 for
  that account;
- delivery (host/delivery.py): a gateway is a target of messages from clients, leafs and the hub only (never of one
  that came from a route or another gateway: one hop between clusters); a queue group goes to a member of this
  cluster first (clients, routes, leafs) and only when it has none to the remote cluster with the lowest RTT that
  has one, named on that cluster's RMSG; a message from a gateway goes to plain subscribers and the groups it names,
  also behind routes of this cluster;
- replies: a reply matching a subscription made on this server in the last 2 s goes to other clusters as
  `_GR_.<cluster hash>.<server hash>.<reply>` (Account.map_gateway_reply), so the answer needs no interest to
  cross first. A mapped reply that comes in is delivered as `<reply>` and remembered for 2 s: an answer to it goes
  straight back to that cluster (strip_gateway_reply). A message whose subject is such a mapped reply goes to the
  cluster with that hash, or is delivered here as `<reply>` when the hash is ours (host/delivery.py
  deliver_gateway_reply).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import random
from typing import TYPE_CHECKING, Any

from edge.proto import (
    KIND_ROUTE,
    OP_CONNECT,
    OP_INFO,
    OP_RMSG,
    OP_RS_MINUS,
    OP_RS_PLUS,
    PING,
    encode_connect,
    encode_info,
)
from host import errors
from host.accounts import Account
from host.client import LINK_FIRST_PING_INTERVAL, Client, interest_change, peer_proto
from host.delivery import GW_HASH_LEN, GW_REPLY_PREFIX, deliver, deliver_link_msg, learn_plan
from host.opts import split_url
from host.parser import (
    OP_ACCOUNT_INTEREST,
    HubParser,
    decode_tail,
    encode_rmsg,
    encode_rs_minus,
    encode_rs_plus,
    encode_tail,
)
from host.sublist import Subscription, is_valid_subject
from host.tls import dial

if TYPE_CHECKING:
    from host.server import Server

log = logging.getLogger("natsedge.hub")

GATEWAY_CMD_GOSSIP = 1  # INFO naming another gateway to connect to
GATEWAY_CMD_ALL_SUBS_START = 2  # the account's plain interest follows (the switch to interest-only)
GATEWAY_CMD_ALL_SUBS_COMPLETE = 3
_HASH_DIGITS = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
RECONNECT_DELAY = 1.0  # nats-server DEFAULT_GATEWAY_RECONNECT... (its default is 1 s as well)
CONNECT_TIMEOUT = 2.0
_MAPPED_PIECE = b" " + GW_REPLY_PREFIX  # how a frame's piece starts when its reply was mapped by the other cluster
OPTIMISTIC_REFUSED_MAX = 1000  # RS- kept per account in optimistic mode (nats-server switches at 1000)
PING_INTERVAL_MAX = 15.0  # nats-server gwMaxPingInterval: gateways are pinged at least this often (RTT)

GatewayKey = tuple[bytes, bytes, bytes | None]  # (account, subject, queue)


def gw_hash(name: str) -> bytes:
    """nats-server getHashSize(name, 6): the first 6 bytes of the name's SHA-256, each as a base-62 digit."""
    digest = hashlib.sha256(name.encode()).digest()
    return bytes(_HASH_DIGITS[b % 62] for b in digest[:GW_HASH_LEN])


def url_hostport(url: str) -> str:
    """host:port of a gateway URL, with or without scheme and credentials."""
    return url.split("://", 1)[-1].rsplit("@", 1)[-1].rstrip("/")


class Gateway(Client):
    kind = "Gateway"
    is_gateway = True
    is_link = True
    to_gateways = False  # a gateway's messages never go on to another gateway

    def __init__(self, server: Server, dialer: GatewayDialer | None = None) -> None:
        super().__init__(server)
        opts = server.opts
        self.parser = HubParser(KIND_ROUTE, opts.max_control_line, opts.max_payload, gateway=True)
        self.parser.unplanned_reply = _MAPPED_PIECE
        self.dialer = dialer  # set on an outbound connection
        self.outbound = dialer is not None
        self.echo = False
        self.headers = True
        self.verbose = False
        self.pedantic = False
        self.got_connect = False
        self.registered = False
        self.gateway_name = dialer.name if dialer is not None else ""  # the remote cluster
        self.remote_id = ""
        self.remote_name = ""  # the remote server's name (trace events name it, as for routes)
        self.remote_info: dict[str, Any] = {}
        self.remote_subs: dict[GatewayKey, Subscription] = {}  # outbound: the remote cluster's interest
        self.interest_only: set[bytes] = set()  # outbound: accounts whose gateway_cmd 2 came
        # outbound, optimistic mode: per account not yet interest-only, its catch-all subscription (None after
        # `A- <account>`) and the subjects the peer said it has no interest in (RS-), which are not sent
        self.optimistic: dict[bytes, tuple[Subscription | None, set[bytes]]] = {}
        self.sent: dict[GatewayKey, int] = {}  # inbound: the interest we advertised, as last sent
        self.rtt = 0.0

    # ---- handshake --------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.attach(transport)
        server = self.server
        server.pending_gateways[self.cid] = self
        loop = server.loop
        if not self.outbound:
            transport.write(encode_info(server.gateway_info()))
            go = server.opts.gateway
            self._timers["auth"] = loop.call_later(go.auth_timeout or server.opts.auth_timeout, self._auth_timeout)
        self._timers["ping"] = loop.call_later(LINK_FIRST_PING_INTERVAL, self._ping_timer)

    def _auth_timeout(self) -> None:
        if not self.registered:
            self.close(errors.AUTH_TIMEOUT, errors.ERR_AUTH_TIMEOUT)

    def _ping_timer(self) -> None:
        super()._ping_timer()
        h = self._timers.get("ping")
        interval = min(self.opts.ping_interval, PING_INTERVAL_MAX)
        if h is not None and interval < self.opts.ping_interval:
            h.cancel()
            self._timers["ping"] = self.server.loop.call_later(interval, self._ping_timer)

    def process_gateway_connect(self, c: dict[str, Any]) -> None:
        """CONNECT from a server that dialled us (processGatewayConnect)."""
        if self.outbound or self.got_connect:
            return
        name = c.get("gateway")
        if not isinstance(name, str) or not name:
            self.close(errors.WRONG_PORT, errors.ERR_GATEWAY_PORT)
            return
        server = self.server
        go = server.opts.gateway
        if go.username is not None and (c.get("user") != go.username or (c.get("pass") or "") != (go.password or "")):
            log.error('Gateway authentication error - User "%s" from %s', c.get("user", ""), self.ip)
            self.auth_violation()
            return
        if go.reject_unknown_cluster and all(g.name != name for g in go.gateways):
            log.error('Rejecting connection from gateway "%s"', name)
            self.close(errors.WRONG_GATEWAY, f'Connection to gateway "{server.gateway_name}" rejected')
            return
        self.gateway_name = name
        self.got_connect = True
        h = self._timers.pop("auth", None)
        if h is not None:
            h.cancel()

    def process_gateway_info(self, info: dict[str, Any]) -> None:
        """INFO on either side (processGatewayInfo): the first names the peer; later ones on an outbound connection
        carry gateway_cmd (interest mode, gossip)."""
        if self.registered:
            if self.outbound:
                self.process_gateway_cmd(info)
            return
        server = self.server
        name = info.get("gateway")
        if self.outbound:
            assert self.dialer is not None
            if not isinstance(name, str) or not name:
                msg = f'Attempt to connect to gateway "{self.gateway_name}" using wrong port'
                log.error(msg)
                self.close(errors.WRONG_PORT, msg)
                return
            if name != self.gateway_name:
                log.error('Failing connection to gateway "%s", remote gateway name is "%s"', self.gateway_name, name)
                self.close(errors.WRONG_GATEWAY, f'Connection from "{server.gateway_name}" rejected, wanted to '
                                                 f'connect to "{self.gateway_name}", this is "{name}"')
                return
            self._learn_urls(info)
            self.enqueue(encode_connect(self.dialer.connect_options()))
            self.enqueue(encode_info(server.gateway_info()))
            self.enqueue(PING)
        elif not self.got_connect:
            self.auth_violation()  # INFO before CONNECT
            return
        sid = str(info.get("server_id", "") or "")
        if not sid:
            self.close(errors.PROTOCOL_VIOLATION)
            return
        self.remote_id = sid
        self.name = self.remote_name = str(info.get("server_name", "") or "")
        self.version = str(info.get("version", "") or "")
        self.protocol = peer_proto(info.get("proto"))
        self.remote_info = info
        reason = server.add_gateway(self)
        if reason is not None:
            self.close(reason)
            return
        self.registered = True
        if self.outbound:
            if not info.get("gateway_iom"):
                # A peer that does not switch every account to interest-only at once (before nats-server 2.9):
                # optimistic mode until it does, account by account (gatewayInterest).
                for acc in list(server.accounts.values()):
                    self.optimistic[acc.name_b] = (self._catch_all(acc), set())
        else:
            self.send_all_interest()
            server.gossip_gateways(self)

    def _catch_all(self, acc: Account) -> Subscription:
        """Optimistic mode: everything published in the account goes to the peer, but for what it refused."""
        sub = Subscription(self, b">", None, b"")
        acc.add_sub(sub)
        return sub

    def _end_optimistic(self, account: bytes) -> None:
        entry = self.optimistic.pop(account, None)
        if entry is not None and entry[0] is not None:
            entry[0].closed = True
            acc = self.server.accounts.get(account.decode(errors="replace"))
            if acc is not None:
                acc.remove_sub(entry[0])

    def refuses(self, account: bytes, subject: bytes) -> bool:
        """Optimistic mode: whether the peer said it has no interest in `subject` of the account (RS-)."""
        entry = self.optimistic.get(account)
        return entry is not None and subject in entry[1]

    def process_gateway_cmd(self, info: dict[str, Any]) -> None:
        cmd = info.get("gateway_cmd")
        if cmd == GATEWAY_CMD_ALL_SUBS_START:
            account = _cmd_account(info)
            if account is not None:
                self._end_optimistic(account)
                self.interest_only.add(account)
        elif cmd == GATEWAY_CMD_GOSSIP:
            name = info.get("gateway")
            urls = info.get("gateway_urls")
            if isinstance(name, str) and name and isinstance(urls, list):
                self.server.implicit_gateway(name, [u for u in urls if isinstance(u, str)][:16])
        elif cmd is None:
            self._learn_urls(info)

    def _learn_urls(self, info: dict[str, Any]) -> None:
        """An outbound connection's INFO names the remote cluster's gateway URLs: the dialer keeps them besides its
        own (nats-server cfg.updateURLs, on every INFO from the first)."""
        urls = info.get("gateway_urls")
        if isinstance(urls, list) and self.dialer is not None:
            self.dialer.add_urls([u for u in urls if isinstance(u, str)][:16])

    # ---- interest towards the peer (inbound connections) -----------------------------------------

    def send_all_interest(self) -> None:
        """Right after the peer registered, as nats-server 2.9+: every account's queue interest, then each account's
        plain interest between the gateway_cmd 2 and 3 INFOs (interest-only mode from the start)."""
        accounts = list(self.server.accounts.values())
        for acc in accounts:
            for key in list(acc.interest):
                if key[1] is not None:
                    self.update_interest(acc, key)
        for acc in accounts:
            payload = base64.b64encode(acc.name_b).decode()
            self.enqueue(encode_info(self.server.gateway_cmd_info(GATEWAY_CMD_ALL_SUBS_START, payload)))
            for key in list(acc.interest):
                if key[1] is None:
                    self.update_interest(acc, key)
            self.enqueue(encode_info(self.server.gateway_cmd_info(GATEWAY_CMD_ALL_SUBS_COMPLETE, payload)))

    def update_interest(self, acc: Account, key: tuple[bytes, bytes | None]) -> None:
        """Advertise this cluster's interest in `key` if it changed: present or not, a queue group with weight 1."""
        if not self.registered or self.closed or self.outbound:
            return
        subject, queue = key
        n = min(acc.interest.get(key, 0), 1)
        change = interest_change(self.sent, (acc.name_b, subject, queue), queue, n)
        if change > 0:
            self.enqueue(encode_rs_plus(acc.name_b, subject, queue, 1))
        elif change < 0:
            self.enqueue(encode_rs_minus(acc.name_b, subject, queue))

    # ---- input from the peer --------------------------------------------------------------------

    def process_op(self, ev: tuple) -> None:
        op = ev[0]
        if op == OP_INFO:
            self.process_gateway_info(ev[1])
            return
        if op == OP_CONNECT:
            self.process_gateway_connect(ev[1])
            return
        if self.link_control(ev, f"Gateway {self.gateway_name or self.ip}"):
            return
        if not self.registered:
            if not self.outbound and not self.got_connect:
                self.auth_violation()
            return
        if op == OP_RMSG:
            if self.outbound:
                self._wrong_direction("RMSG")
                return
            self.process_gateway_msg(ev[1], ev[2], ev[3], ev[4], ev[5], ev[6])
        elif op == OP_ACCOUNT_INTEREST:
            if not self.outbound:
                self._wrong_direction("A+" if ev[1] else "A-")
            else:
                self.process_gateway_account(ev[1], ev[2])
        elif op == OP_RS_PLUS or op == OP_RS_MINUS:
            if not self.outbound:
                self._wrong_direction("RS+" if op == OP_RS_PLUS else "RS-")
            elif op == OP_RS_PLUS:
                self.process_gateway_rsub(ev[1], ev[2], ev[3])
            else:
                self.process_gateway_runsub(ev[1], ev[2], ev[3])

    def _wrong_direction(self, what: str) -> None:
        # As nats-server: logged, and the connection closed with no -ERR.
        where = "outbound" if self.outbound else "inbound"
        log.error("Received %s from gateway on %s connection", what, where)
        self.close(errors.PROTOCOL_VIOLATION)

    def process_run(self, key: bytes, has_hdr: bool, pieces: list[bytes], nbytes: int) -> None:
        """A run of RMSG/HMSG frames that name no queue group (key: b"<account> <subject>"): plain subscribers."""
        if not self.registered:
            return
        if self.outbound:
            self._wrong_direction("RMSG")
            return
        self.count_in(len(pieces), nbytes)
        account, _, subject = key.partition(b" ")
        acc = self.server.accounts.get(account.decode(errors="replace"))
        if acc is None:
            return
        if any(p.startswith(_MAPPED_PIECE) for p in pieces):
            pieces = [_stripped_piece(acc, p, has_hdr) for p in pieces]  # (sizes unchanged: replies are not counted)
        deliver(acc, self, subject, has_hdr, pieces, nbytes, 0, ())
        learn_plan(self.parser.plans, self, acc, subject, (), key)  # (never used for a run with a mapped reply)

    def process_gateway_msg(self, account: bytes, subject: bytes, reply: bytes | None, queues: list[bytes] | None,
                            hdr: bytes | None, payload: bytes) -> None:
        self.count_in(1, len(payload) + (len(hdr) if hdr is not None else 0))
        acc = self.server.accounts.get(account.decode(errors="replace"))
        if acc is None:
            return
        if reply is not None and reply.startswith(GW_REPLY_PREFIX):
            reply = strip_gateway_reply(acc, reply)
        deliver_link_msg(acc, self, subject, reply, queues, hdr, payload)  # named groups only

    def process_gateway_account(self, plus: bool, account: bytes) -> None:
        """Optimistic mode: `A- <account>`, no interest in the whole account; `A+`, interest again."""
        entry = self.optimistic.get(account)
        if entry is None:
            return  # interest-only already: the RS+/RS- say it all
        acc = self.server.accounts.get(account.decode(errors="replace"))
        if plus and entry[0] is None and acc is not None:
            self.optimistic[account] = (self._catch_all(acc), set())
        elif not plus and entry[0] is not None:
            self._end_optimistic(account)
            self.optimistic[account] = (None, set())

    def process_gateway_rsub(self, account: bytes, subject: bytes, queue: bytes | None) -> None:
        acc = self.server.accounts.get(account.decode(errors="replace"))
        if acc is None or not is_valid_subject(subject):
            return  # an account this server does not have: nothing here publishes in it
        if queue is None and account not in self.interest_only:
            # Optimistic mode sends everything anyway: a plain RS+ only takes back an RS- (as nats-server, which
            # ignores a plain RS+ for an account it has no entry for).
            entry = self.optimistic.get(account)
            if entry is not None:
                entry[1].discard(subject)
            return
        sub = self.link_sub(acc, self.remote_subs, (account, subject, queue), subject, queue, 1)
        if sub is not None:
            acc.add_sub(sub)

    def process_gateway_runsub(self, account: bytes, subject: bytes, queue: bytes | None) -> None:
        entry = self.optimistic.get(account)
        if entry is not None and queue is None:
            if len(entry[1]) >= OPTIMISTIC_REFUSED_MAX:
                entry[1].clear()  # bounded: the peer refuses them again as they come
            entry[1].add(subject)
            return
        sub = self.remote_subs.pop((account, subject, queue), None)
        if sub is None:
            return
        sub.closed = True
        acc = self.server.accounts.get(account.decode(errors="replace"))
        if acc is not None:
            acc.remove_sub(sub)

    # ---- output to the peer (outbound connections) ------------------------------------------------

    def link_prefixes(self, acc: Account, subject: bytes) -> tuple[bytes, bytes]:
        return b"RMSG " + acc.name_b + b" " + subject, b"HMSG " + acc.name_b + b" " + subject

    def send_link_msg(self, acc: Account, subject: bytes, reply: bytes | None, queues: list[bytes],
                      hdr: bytes | None, payload: bytes) -> None:
        self.enqueue(encode_rmsg(acc.name_b, subject, payload, reply, queues or None, hdr))
        self.out_msgs += 1
        self.out_bytes += len(payload) + (len(hdr) if hdr is not None else 0)

    def _teardown(self, reason: str) -> None:
        server = self.server
        for account in list(self.optimistic):
            self._end_optimistic(account)
        for (account, _subject, _queue), sub in self.remote_subs.items():
            sub.closed = True
            acc = server.accounts.get(account.decode(errors="replace"))
            if acc is not None:
                acc.remove_sub(sub)
        self.remote_subs.clear()
        super()._teardown(reason)
        server.remove_gateway(self, reason)
        if self.dialer is not None:
            self.dialer.disconnected()


def strip_gateway_reply(acc: Account, reply: bytes) -> bytes:
    """A reply another cluster mapped (`_GR_.<cluster>.<server>.<reply>`) as this cluster delivers it: `<reply>`,
    remembered for 2 s so that the answer goes straight back (nats-server strips it for clients the same way)."""
    start = len(GW_REPLY_PREFIX) + 2 * (GW_HASH_LEN + 1)
    if len(reply) <= start or reply[start - 1] != 0x2E:  # "."
        return reply
    stripped = reply[start:]
    acc.track_gateway_reply(stripped, reply)
    return stripped


def _stripped_piece(acc: Account, piece: bytes, has_hdr: bool) -> bytes:
    reply, hdr, payload = decode_tail(piece, has_hdr)
    if reply is None or not reply.startswith(GW_REPLY_PREFIX):
        return piece
    return encode_tail(strip_gateway_reply(acc, reply), hdr, payload)


def _cmd_account(info: dict[str, Any]) -> bytes | None:
    payload = info.get("gateway_cmd_payload")
    if not isinstance(payload, str):
        return None
    try:
        return base64.b64decode(payload, validate=True)
    except ValueError:
        return None


class GatewayDialer:
    """The outbound connection to one remote cluster: its configured URLs (retried forever), or for an implicit
    gateway the URLs it told us (retried `connect_retries` times after a failure)."""

    def __init__(self, server: Server, name: str, urls: list[str], explicit: bool) -> None:
        self.server = server
        self.name = name
        self.urls = list(urls)
        self.explicit = explicit
        self.stopped = False
        self.url = ""
        self.user: str | None = None
        self.password: str | None = None
        self._done: asyncio.Future[None] | None = None

    def add_urls(self, urls: list[str]) -> None:
        """URLs the remote cluster told us (host:port), besides the ones we have in whatever form."""
        known = {url_hostport(u) for u in self.urls}
        for u in urls:
            if url_hostport(u) not in known and len(self.urls) < 16:
                self.urls.append(u)
                known.add(url_hostport(u))

    def connect_options(self) -> dict[str, Any]:
        server = self.server
        opts: dict[str, Any] = {
            "echo": False,
            "verbose": False,
            "pedantic": False,
            "tls_required": server.gateway_tls is not None,
            "headers": True,
            "name": server.id,
            "cluster": "",
            "gateway": server.gateway_name,
        }
        if self.user is not None:
            opts["user"] = self.user
            opts["pass"] = self.password or ""
        return opts

    def start(self) -> None:
        self.server.loop.create_task(self._run())

    async def _run(self) -> None:
        server = self.server
        failures = 0
        first = True
        while not self.stopped and not server.shutting_down:
            if not first:
                await asyncio.sleep(RECONNECT_DELAY * (1 + random.random() * 0.5))
            first = False
            if self.stopped or server.shutting_down:
                break
            self.url = self.urls[random.randrange(len(self.urls))]
            try:
                failed = await self._connect()
            except (OSError, TimeoutError) as e:
                log.debug("Error connecting to gateway %s at %s: %s", self.name, self.url, e)
                failed = True
            if failed:
                failures += 1
                if not self.explicit and failures > server.opts.gateway.connect_retries:
                    break
                continue
            failures = 0
            self._done = server.loop.create_future()
            await self._done
        server.gateway_dialers.pop(self.name, None)

    async def _connect(self) -> bool:
        """One attempt; True when its TLS handshake failed. A connection that fails raises OSError or TimeoutError."""
        server = self.server
        parts = split_url(self.url if "://" in self.url else "nats://" + self.url)
        host, port, user, password = parts if parts is not None else ("127.0.0.1", 7222, None, None)
        if user is None:
            user, password = server.opts.gateway.username, server.opts.gateway.password
        self.user, self.password = user, password
        if server.gateway_tls_client is None:
            await asyncio.wait_for(server.loop.create_connection(lambda: Gateway(server, self), host, port),
                                   CONNECT_TIMEOUT)
            return False
        e = await dial(server.loop, lambda: Gateway(server, self), host, port, CONNECT_TIMEOUT,
                       server.gateway_tls_client, host, "gateway", server.opts.gateway.tls_timeout)
        return e is not None

    def disconnected(self) -> None:
        done = self._done
        if done is not None and not done.done():
            done.set_result(None)
