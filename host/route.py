"""Routes: the links between the servers of one cluster (nats-server `route.go`).

A Router is a Client of kind ROUTER that carries every account (shared/nats-reference README section 3):
- the handshake: the accepting side sends INFO; the dialling side answers with CONNECT (no `lang`, its server id
  as `name`, the cluster name) and its own INFO. A route is registered when the peer's INFO names its server id:
  a route to ourselves, a second route to a connected peer ("Duplicate Route") or a second JetStream server
  (see below) is closed there;
- interest: `RS+ <account> <subject> [<queue> <weight>]` and `RS-` as the local interest of an account changes
  (clients, leafs and the hub's own subscriptions; not what other routes asked for, Account.unrouted), with
  absolute queue weights. The peer's interest becomes subscriptions of the Router, removed together when it closes;
- messages: `RMSG <account> <subject> [reply | + reply q.. | | q..] <size>` (HMSG with headers). host/delivery.py
  sends one frame per route however many of its subscriptions match, names the queue groups it picked the route
  for, and never sends a route's message on to another route (the mesh is full: one hop);
- TLS (`cluster { tls {...} }`, host/tls.py): both sides handshake before anything else, mutual, as nats-server; a
  Router sees its connection only once the handshake succeeded, and its INFO and CONNECT say tls_required;
- gossip: a newly registered peer's INFO is passed on to the other routes, whose servers dial it (implicit
  routes), so a server that knows one member joins the whole mesh. Each peer's client URLs (`connect_urls`)
  and leafnode URLs (`leafnode_urls`) are added to what our clients and leafs are told, in async INFOs.

What we leave out, so nats-server peers keep to the plain protocol (README 3.4): no `route_pool_size` (one
connection per peer, each line names its account: nats-server's no-pool mode), no `compression`, no
`lnoc`/`lnocu` (leaf interest travels as plain RS+), no `jetstream` flag (we take no part in JetStream's meta
group). nats-server may open a second connection meant for the `$SYS` account; its INFO names `route_account`,
we do not register it, and nats-server closes it itself.

JetStream in a cluster (docs/cluster.md): our hubs do not replicate streams. One server of a cluster may run
JetStream; its API and stream subjects are ordinary interest, which the other servers route to. When a route
joins two servers that both run JetStream, the route is refused, and the server that started later stops with
an error pointing at the scale-out path (a nats-server JetStream cluster, joined by hubs and edges as leafs).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import ssl
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
from host.accounts import Account, nuid
from host.client import LINK_FIRST_PING_INTERVAL, Client, interest_change, peer_proto
from host.delivery import deliver, deliver_link_msg, learn_plan
from host.gateway import GATEWAY_CMD_GOSSIP
from host.opts import split_url
from host.parser import HubParser, encode_rmsg, encode_rs_minus, encode_rs_plus
from host.sublist import Subscription, is_valid_subject
from host.tls import dial

if TYPE_CHECKING:
    from host.server import Server

log = logging.getLogger("natsedge.hub")

RECONNECT_DELAY = 1.0  # nats-server DEFAULT_ROUTE_RECONNECT
CONNECT_TIMEOUT = 2.0  # nats-server DEFAULT_ROUTE_DIAL
ERR_ROUTE_PORT = "attempted to connect to route port"
X509_HOSTNAME_MISMATCH = 62  # OpenSSL X509_V_ERR_HOSTNAME_MISMATCH
X509_IP_MISMATCH = 64  # X509_V_ERR_IP_ADDRESS_MISMATCH

RouteKey = tuple[bytes | None, bytes, bytes, bytes | None]  # (leaf origin or None, account, subject, queue)



def err_cluster_name(theirs: str, ours: str) -> str:
    return f'Rejecting connection, cluster name "{theirs}" does not match "{ours}"'


class Router(Client):
    kind = "Router"
    is_router = True
    is_link = True
    to_routes = False  # one hop: a route's messages never go on to another route
    to_gateways = False  # the server the message came in at sent it to the other clusters

    def __init__(self, server: Server, dialer: RouteDialer | None = None) -> None:
        super().__init__(server)
        opts = server.opts
        self.parser = HubParser(KIND_ROUTE, opts.max_control_line, opts.max_payload)
        self.dialer = dialer  # set when we dialled (nats-server's did_solicit)
        self.echo = False
        self.headers = True
        self.verbose = False
        self.pedantic = False
        self.got_connect = False
        self.registered = False
        self.remote_id = ""
        self.remote_name = ""
        self.remote_info: dict[str, Any] = {}
        self.route_url = ""  # the peer's nats-route:// URL, for gossip and for redialling
        self.connect_urls: list[str] = []  # the peer's client URLs
        self.leafnode_urls: list[str] = []
        self.lame_duck = False
        self.origin_forms = False  # the peer takes leaf-origin interest as `LS+ <origin> ...` (lnoc and lnocu)
        self.remote_subs: dict[RouteKey, Subscription] = {}  # interest the peer asked for
        self.sent: dict[RouteKey, int] = {}  # interest we advertised to the peer, as last sent
        self.rtt = 0.0

    # ---- handshake --------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        # With TLS on routes this comes after the handshake (host/tls.py): the INFO only ever travels inside it.
        self.attach(transport)
        server = self.server
        server.pending_routes[self.cid] = self
        loop = server.loop
        if self.dialer is None:
            transport.write(encode_info(server.route_info()))
            timeout = server.opts.cluster.auth_timeout or server.opts.auth_timeout
            self._timers["auth"] = loop.call_later(timeout, self._auth_timeout)
        self._timers["ping"] = loop.call_later(LINK_FIRST_PING_INTERVAL, self._ping_timer)

    def _auth_timeout(self) -> None:
        if not self.registered:
            self.close(errors.AUTH_TIMEOUT, errors.ERR_AUTH_TIMEOUT)

    def process_route_connect(self, c: dict[str, Any]) -> None:
        """CONNECT from a server that dialled us."""
        if self.got_connect or self.dialer is not None:
            return
        if "lang" in c:
            self.close(errors.PROTOCOL_VIOLATION, ERR_ROUTE_PORT)
            return
        co = self.server.opts.cluster
        if co.username is not None and (c.get("user") != co.username or (c.get("pass") or "") != (co.password or "")):
            log.error('Route authentication error - User "%s" from %s', c.get("user", ""), self.ip)
            self.auth_violation()
            return
        theirs = str(c.get("cluster", "") or "")
        if not self.server.accept_cluster_name(theirs, bool(c.get("cluster_dynamic"))):
            log.error("Rejecting route from %s: %s", self.ip, err_cluster_name(theirs, self.server.cluster_name))
            self.close(errors.CLUSTER_NAME_CONFLICT, err_cluster_name(theirs, self.server.cluster_name))
            return
        self.got_connect = True
        h = self._timers.pop("auth", None)
        if h is not None:
            h.cancel()

    def process_route_info(self, info: dict[str, Any]) -> None:
        sid = str(info.get("server_id", "") or "")
        if self.registered and info.get("gateway"):
            # A remote cluster a peer dials (processGatewayInfoFromRoute): we dial it too.
            self.gateway_info(info)
            return
        if not self.registered:
            self.first_info(info, sid)
        elif sid == self.remote_id:
            self.update_info(info)
        elif sid:
            self.server.gossiped_route(info)

    def first_info(self, info: dict[str, Any], sid: str) -> None:
        server = self.server
        if self.dialer is None and not self.got_connect:
            self.auth_violation()  # INFO before CONNECT
            return
        if not sid:
            self.close(errors.PROTOCOL_VIOLATION)
            return
        if sid == server.id:
            # A route to ourselves (our own URL in `routes`): closed silently, never dialled again.
            if self.dialer is not None:
                self.dialer.stopped = True
            self.close(errors.CLIENT_CLOSED)
            return
        if info.get("route_account"):
            return  # a per-account route nats-server may try; it closes it itself when it sees we do not pool
        if self.dialer is not None:
            theirs = str(info.get("cluster", "") or "")
            if not server.accept_cluster_name(theirs, bool(info.get("cluster_dynamic"))):
                log.error("Rejecting route to %s: %s", self.dialer.url, err_cluster_name(theirs, server.cluster_name))
                self.close(errors.CLUSTER_NAME_CONFLICT, err_cluster_name(theirs, server.cluster_name))
                return
            # Our CONNECT and INFO once the peer's INFO is read (nats-server sends its CONNECT at once and holds back
            # only its INFO; peers take either order), so a peer of another cluster is refused before we say anything.
            self.enqueue(encode_connect(self.dialer.connect_options()))
            self.enqueue(encode_info(server.route_info()))
            self.enqueue(PING)
        self.remote_id = sid
        self.remote_name = str(info.get("server_name", "") or "")
        self.name = self.remote_name
        self.version = str(info.get("version", "") or "")
        self.protocol = peer_proto(info.get("proto"))  # MSG_TRACE_PROTO and up: it traces what we forward it
        self.remote_info = info
        self.origin_forms = bool(info.get("lnoc")) and bool(info.get("lnocu"))
        ip = info.get("ip")
        host = str(info.get("host", "") or "")
        if isinstance(ip, str) and ip.startswith("nats-route://"):
            self.route_url = ip
        elif self.dialer is not None:
            self.route_url = self.dialer.url
        else:
            if not host or host in ("0.0.0.0", "::"):
                host = self.ip
            self.route_url = f"nats-route://{host}:{info.get('port', 0)}/"
        self.set_urls(info)
        reason = server.add_route(self)
        if reason is not None:
            if self.dialer is not None:
                self.dialer.wait_for = sid  # the surviving route carries on; dial again only when it goes
            self.close(reason)

    def gateway_info(self, info: dict[str, Any]) -> None:
        server = self.server
        name, urls = info.get("gateway"), info.get("gateway_urls")
        if not server.gateway_name:
            log.error('Received information about gateway "%s" from %s, but gateway is not configured', name,
                      self.remote_name or self.remote_id)
        elif info.get("gateway_cmd") == GATEWAY_CMD_GOSSIP and isinstance(name, str) and isinstance(urls, list):
            server.implicit_gateway(name, [u for u in urls if isinstance(u, str)][:16])

    def update_info(self, info: dict[str, Any]) -> None:
        """A later INFO from the peer itself: its URLs changed, or it entered lame-duck mode."""
        self.remote_info.update(info)
        if info.get("ldm"):
            self.lame_duck = True
        self.set_urls(info)
        self.server.urls_changed()

    def set_urls(self, info: dict[str, Any]) -> None:
        urls = info.get("connect_urls")
        if isinstance(urls, list):
            self.connect_urls = [u for u in urls if isinstance(u, str)][:16]
        urls = info.get("leafnode_urls")
        if isinstance(urls, list):
            self.leafnode_urls = [u for u in urls if isinstance(u, str)][:16]

    # ---- interest towards the peer ------------------------------------------------------------

    def send_all_interest(self) -> None:
        for acc in list(self.server.accounts.values()):
            for key in list(acc.interest):
                self.update_interest(acc, key)

    def update_interest(self, acc: Account, key: tuple[bytes, bytes | None]) -> None:
        """Advertise the account's local interest in `key` (not what routes asked for), if it changed. To a peer
        that takes the leaf-origin forms, what leafs asked for goes as `LS+ <origin> ...`, apart from the rest, so
        the peer keeps leaf members as the queue fallback they are (nats-server does the same)."""
        if not self.registered or self.closed:
            return
        subject, queue = key
        n = acc.interest.get(key, 0) - acc.unrouted.get(key, 0)
        if self.origin_forms:
            origins = acc.leaf_interest.get(key)
            if origins:
                for origin, k in origins.items():
                    self._advertise(origin, acc.name_b, subject, queue, k)
                    n -= k
        self._advertise(None, acc.name_b, subject, queue, n)

    def _advertise(self, origin: bytes | None, account: bytes, subject: bytes, queue: bytes | None, n: int) -> None:
        change = interest_change(self.sent, (origin, account, subject, queue), queue, n)
        if change > 0:
            if origin is None:
                self.enqueue(encode_rs_plus(account, subject, queue, n))
            else:
                tail = b" %s %d" % (queue, n) if queue else b""
                self.enqueue(b"LS+ %s %s %s%s\r\n" % (origin, account, subject, tail))
        elif change < 0:
            if origin is None:
                self.enqueue(encode_rs_minus(account, subject, queue))
            else:
                tail = b" " + queue if queue else b""
                self.enqueue(b"LS- %s %s %s%s\r\n" % (origin, account, subject, tail))

    # ---- input from the peer --------------------------------------------------------------------

    def process_op(self, ev: tuple) -> None:
        op = ev[0]
        if op == OP_INFO:
            self.process_route_info(ev[1])
            return
        if op == OP_CONNECT:
            self.process_route_connect(ev[1])
            return
        if self.link_control(ev, f"Route {self.remote_name or self.ip}"):
            return
        if not self.registered:
            if self.dialer is None and not self.got_connect:
                self.auth_violation()
            return  # interest or messages before the INFO that names the peer: nothing to file them under
        if op == OP_RMSG:
            self.process_routed_msg(ev[1], ev[2], ev[3], ev[4], ev[5], ev[6])
        elif op == OP_RS_PLUS:
            self.process_remote_sub(ev[1], ev[2], ev[3], ev[4], ev[5] if len(ev) > 5 else None)
        elif op == OP_RS_MINUS:
            self.process_remote_unsub(ev[1], ev[2], ev[3], ev[4] if len(ev) > 4 else None)

    def process_run(self, key: bytes, has_hdr: bool, pieces: list[bytes], nbytes: int) -> None:
        """A run of RMSG/HMSG frames that name no queue group (key: b"<account> <subject>"), which the parser did
        not deliver itself: plain subscribers only."""
        if not self.registered:
            return
        self.count_in(len(pieces), nbytes)
        account, _, subject = key.partition(b" ")
        acc = self.server.accounts.get(account.decode(errors="replace"))
        if acc is None:
            return
        deliver(acc, self, subject, has_hdr, pieces, nbytes, 0, ())
        learn_plan(self.parser.plans, self, acc, subject, (), key)

    def process_remote_sub(self, account: bytes, subject: bytes, queue: bytes | None, weight: int | None,
                           origin: bytes | None = None) -> None:
        """RS+, or LS+ (origin: the leaf cluster behind the peer that asked, "_" for a leaf without one)."""
        acc = self.server.accounts.get(account.decode(errors="replace"))
        if acc is None or not is_valid_subject(subject):
            return  # an account this server does not have: nothing here can receive its messages
        sub = self.link_sub(acc, self.remote_subs, (origin, account, subject, queue), subject, queue, weight)
        if sub is not None:
            sub.origin = origin
            acc.add_sub(sub)

    def process_remote_unsub(self, account: bytes, subject: bytes, queue: bytes | None,
                             origin: bytes | None = None) -> None:
        sub = self.remote_subs.pop((origin, account, subject, queue), None)
        if sub is None:
            return
        sub.closed = True
        acc = self.server.accounts.get(account.decode(errors="replace"))
        if acc is not None:
            acc.remove_sub(sub)

    def process_routed_msg(self, account: bytes, subject: bytes, reply: bytes | None, queues: list[bytes] | None,
                           hdr: bytes | None, payload: bytes) -> None:
        size = len(payload) + (len(hdr) if hdr is not None else 0)
        self.count_in(1, size)
        acc = self.server.accounts.get(account.decode(errors="replace"))
        if acc is not None:
            deliver_link_msg(acc, self, subject, reply, queues, hdr, payload)  # named groups only (README A1)

    # ---- output to the peer --------------------------------------------------------------------

    def link_prefixes(self, acc: Account, subject: bytes) -> tuple[bytes, bytes]:
        """Frame prefixes for delivery plans (host/delivery.py): the frame is prefix + tail."""
        return b"RMSG " + acc.name_b + b" " + subject, b"HMSG " + acc.name_b + b" " + subject

    def send_link_msg(self, acc: Account, subject: bytes, reply: bytes | None, queues: list[bytes],
                      hdr: bytes | None, payload: bytes) -> None:
        self.enqueue(encode_rmsg(acc.name_b, subject, payload, reply, queues or None, hdr))
        self.out_msgs += 1
        self.out_bytes += len(payload) + (len(hdr) if hdr is not None else 0)

    def _teardown(self, reason: str) -> None:
        # The peer's interest goes with the route (nats-server removeRemoteSubs); no RS- is needed.
        server = self.server
        for (_origin, account, _subject, _queue), sub in self.remote_subs.items():
            sub.closed = True
            acc = server.accounts.get(account.decode(errors="replace"))
            if acc is not None:
                acc.remove_sub(sub)
        self.remote_subs.clear()
        super()._teardown(reason)
        server.remove_route(self, reason)
        if self.dialer is not None:
            self.dialer.disconnected(self)


class RouteDialer:
    """A route we dial: a configured `cluster.routes` URL (retried forever) or one learned by gossip (retried
    `connect_retries` times after the first failure)."""

    def __init__(self, server: Server, url: str, explicit: bool, remote_id: str = "") -> None:
        self.server = server
        self.url = url
        host, port, user, password = split_url(url) or ("127.0.0.1", 6222, None, None)
        self.host = host
        self.port = port
        if user is None:
            # As nats-server: a URL without credentials (always so for a gossiped one) uses our own cluster's.
            user, password = server.opts.cluster.username, server.opts.cluster.password
        self.user = user
        self.password = password
        self.explicit = explicit
        self.remote_id = remote_id  # known for implicit routes (the gossiped server id)
        self.wait_for = ""  # a peer already connected by its own dial: redial only once its route is gone
        self.stopped = False
        self.route: Router | None = None
        self._done: asyncio.Future[None] | None = None

    def connect_options(self) -> dict[str, Any]:
        server = self.server
        opts: dict[str, Any] = {
            "echo": True,
            "verbose": False,
            "pedantic": False,
            "tls_required": server.route_tls is not None,
            "headers": True,
            "name": server.id,
            "cluster": server.cluster_name,
            "lnoc": True,
            "lnocu": True,
            "ln": True,
        }
        if server.cluster_dynamic:
            opts["cluster_dynamic"] = True
        if self.user is not None:
            opts["user"] = self.user
            opts["pass"] = self.password or ""
        return opts

    def tls_host(self) -> str:
        """The name the peer's certificate is checked for: the URL's host, or for an IP address the first host
        name among the configured routes, when there is one (nats-server routeTLSName)."""
        name = self.server.route_tls_name
        if name:
            try:
                ipaddress.ip_address(self.host)
                return name
            except ValueError:
                pass
        return self.host

    def tls_failed(self, e: Exception, tls_host: str) -> None:
        """As nats-server: when a certificate does not match the shared TLS name, routes whose URL names an IP
        address check that address again."""
        server = self.server
        if isinstance(e, ssl.SSLCertVerificationError) and e.verify_code in (X509_HOSTNAME_MISMATCH, X509_IP_MISMATCH) \
                and tls_host == server.route_tls_name != self.host:
            server.route_tls_name = ""

    def start(self) -> None:
        self.server.loop.create_task(self._run())

    async def _run(self) -> None:
        server = self.server
        loop = server.loop
        failures = 0
        first = True
        while not self.stopped and not server.shutting_down:
            if not first:
                await asyncio.sleep(RECONNECT_DELAY * (1 + random.random() * 0.5))
            first = False
            while self.wait_for and self.wait_for in server.routes and not self.stopped:
                await asyncio.sleep(RECONNECT_DELAY)
            self.wait_for = ""
            if self.stopped or server.shutting_down:
                break
            if not self.explicit and self.remote_id and self.remote_id in server.routes:
                break  # the peer dialled us meanwhile
            try:
                failed = await self._connect()
            except (OSError, TimeoutError) as e:
                log.debug("Error trying to connect to route %s: %s", self.url, e)
                failed = True
            if failed:
                failures += 1
                if not self.explicit and failures > server.opts.cluster.connect_retries:
                    break
                continue
            failures = 0
            self._done = loop.create_future()
            await self._done
        server.dialers.discard(self)

    async def _connect(self) -> bool:
        """One attempt; True when its TLS handshake failed (logged by host/tls.py). A connection that fails raises
        OSError or TimeoutError."""
        server = self.server
        loop = server.loop
        if server.route_tls_client is None:
            await asyncio.wait_for(loop.create_connection(lambda: Router(server, self), self.host, self.port),
                                   CONNECT_TIMEOUT)
            return False
        tls_host = self.tls_host()
        e = await dial(loop, lambda: Router(server, self), self.host, self.port, CONNECT_TIMEOUT,
                       server.route_tls_client, tls_host, "route", server.opts.cluster.tls_timeout)
        if e is not None:
            self.tls_failed(e, tls_host)
        return e is not None

    def disconnected(self, route: Router) -> None:
        self.route = None
        done = self._done
        if done is not None and not done.done():
            done.set_result(None)


def first_host_name(urls: list[str]) -> str:
    """The first host name (not an IP address) among route URLs: a dialler checks the certificate of a route
    whose URL names an IP address for it (nats-server saveRouteTLSName), so gossiped routes verify too."""
    for url in urls:
        parts = split_url(url)
        if parts is None or not parts[0]:
            continue
        try:
            ipaddress.ip_address(parts[0])
        except ValueError:
            return parts[0]
    return ""


def new_cluster_name() -> str:
    return nuid(22)
