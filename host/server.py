"""The hub server: listeners, connection registry, accounts, counters, shutdown (nats-server `server.go`).

Shutdown follows nats-server: SIGTERM/SIGINT stop accepting, write out what every client has
queued and close; SIGUSR2 enters lame-duck mode (INFO with `ldm:true`, stop accepting, then close
clients spread over lame_duck_duration after lame_duck_grace_period) and exits.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import signal
import socket
import ssl
import sys
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from edge.proto import encode_info
from host import errors
from host.accounts import Account, ServiceImport, nuid, set_mappings, wire_imports
from host.auth import auth_configured, info_auth_required, nonce_required
from host.client import Client
from host.delivery import GW_REPLY_PREFIX, deliver_msg, deliver_reply
from host.gateway import GATEWAY_CMD_GOSSIP, Gateway, GatewayDialer, gw_hash, url_hostport
from host.gotime import time_text
from host.jwt import PREFIX_ACCOUNT, AccountClaims, Trust, install_claims_update, trust_from_options
from host.leafnode import Leaf, RemoteLeaf, leaf_info
from host.monitor import conn_info, start_monitor
from host.msgtrace import MSG_TRACE_PROTO
from host.opts import GLOBAL_ACCOUNT, SYSTEM_ACCOUNT, Options, split_url
from host.route import RouteDialer, Router, first_host_name, new_cluster_name
from host.sublist import Subscription
from host.tls import (
    INSECURE_WARNING,
    TLSConfigError,
    TLSListener,
    client_port_context,
    leaf_server_context,
    route_contexts,
)

VERSION = "2.11.0"  # the nats-server protocol level we implement; clients gate features on it
NATSEDGE_VERSION = "0.1.0"
MAX_CLOSED_CLIENTS = 10000  # nats-server DEFAULT_MAX_CLOSED_CLIENTS
JS_API_ALL = b"$JS.API.>"

log = logging.getLogger("natsedge.hub")


def tune_malloc() -> None:
    """Keep glibc from mmap/munmap-ing every large read buffer (PURE-PYTHON-CEILING.md, technique 4)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(-3, 64 << 20)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 256 << 20)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass


def advertise_host(bound: str) -> str:
    """The address to tell others for a listener bound to `bound`: itself, or for all interfaces this machine's
    first non-loopback IPv4 address (nats-server lists every interface), else loopback."""
    if bound not in ("0.0.0.0", "::", ""):
        return bound
    try:
        for *_, addr in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET):
            if not str(addr[0]).startswith("127."):
                return str(addr[0])
    except OSError:
        pass
    return "127.0.0.1"


class ListenError(OSError):
    """A listener could not bind: names its own address, not the client port's (the monitor's or a route port's
    failure used to be reported as the client port's)."""

    def __init__(self, host: str, port: int, cause: OSError):
        super().__init__(cause.errno, cause.strerror or str(cause))
        self.host, self.port = host, port


class ClosedInfo:
    __slots__ = ("conn", "stop", "reason")

    def __init__(self, conn: dict[str, Any], stop: float, reason: str) -> None:
        self.conn = conn
        self.stop = stop
        self.reason = reason


class InternalClient:
    """The hub's own publisher (JetStream replies, deliveries, advisories): what deliver() reads of a source."""

    kind = "Internal"
    is_leaf = False
    is_router = False
    is_gateway = False
    is_link = False
    to_routes = True
    to_gateways = True
    traces = False
    echo = True
    no_responders = False
    closed = False
    headers = True
    perms = None

    def __init__(self, server: Server) -> None:
        self.server = server
        self.account: Account | None = None


class Server:
    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.id = "N" + nuid(55)
        self.name = opts.server_name or self.id
        self.loop: asyncio.AbstractEventLoop = asyncio.get_event_loop()
        self.start_time = time.time()
        self.auth_required = auth_configured(opts)  # enforced; INFO may hide it (info_auth_required)
        self.nonce_required = nonce_required(opts)
        self.exit_code = 0
        # Cluster: registered routes by peer server id (shared with every Account), connections before their
        # peer's INFO, and the routes we dial (host/route.py).
        self.routes: dict[str, Router] = {}
        self.pending_routes: dict[int, Router] = {}
        self.dialers: set[RouteDialer] = set()
        co = opts.cluster
        go = opts.gateway
        # As nats-server: the gateway name is the cluster's name; without a cluster{} block it names the cluster.
        self.cluster_name = co.name or go.name or (new_cluster_name() if co.enabled else "")
        self.cluster_dynamic = co.enabled and not (co.name or go.name)
        # Super-cluster (host/gateway.py): outbound gateways by remote cluster name, inbound ones by connection id
        # (shared with every Account), connections before their peer's INFO, and the dialers of the outbound ones.
        self.gateway_name = go.name if go.enabled else ""
        self.gateway_hash = gw_hash(self.gateway_name) if self.gateway_name else b""
        # what our replies are mapped with for other clusters: _GR_.<cluster hash>.<server hash>.
        self.gateway_reply_prefix = b"_GR_.%s.%s." % (self.gateway_hash, gw_hash(self.id)) if self.gateway_name \
            else b""
        self.gateway_port = go.port
        self.gateways_out: dict[str, Gateway] = {}
        self.gateways_in: dict[int, Gateway] = {}
        self.pending_gateways: dict[int, Gateway] = {}
        self.gateway_dialers: dict[str, GatewayDialer] = {}
        self.gateway_tls: ssl.SSLContext | None = None
        self.gateway_tls_client: ssl.SSLContext | None = None
        if go.enabled and go.tls_cert:
            self.gateway_tls, self.gateway_tls_client = route_contexts(go, "gateway")
        self.cluster_port = co.port
        self.js_imported = False  # the JetStream API is imported from nats-server peers (import_cluster_jetstream)
        self.connect_urls: list[str] = []  # client URLs of this cluster, told to clients (INFO connect_urls)
        self.leafnode_urls: list[str] = []  # leafnode URLs of this cluster, told to leafs
        self.accounts: dict[str, Account] = {}
        for name, cfg in opts.accounts.items():
            acc = Account(name)
            acc.config = cfg
            acc.trace_dest, acc.trace_sampling = cfg.trace_dest, cfg.trace_sampling
            self.join_links(acc)
            set_mappings(acc, cfg.mappings, self)
            self.accounts[name] = acc
        self.trust = trust_from_options(opts)  # operator mode (host/jwt.py)
        if self.trust is not None:
            self.load_jwt_accounts(self.trust)
        self.global_account = self.lookup_account(GLOBAL_ACCOUNT)
        if opts.mappings:
            set_mappings(self.global_account, opts.mappings, self)
        self.lookup_account(SYSTEM_ACCOUNT)
        for w in wire_imports(self.accounts):
            log.warning(w)
        self.clients: dict[int, Client] = {}
        self.closed: deque[ClosedInfo] = deque(maxlen=MAX_CLOSED_CLIENTS)
        self.dirty: list[Client] = []
        self.before_flush: list[Any] = []  # callables run by flush_dirty before it writes
        # the client whose read batch is being processed (the internal client: a batch of the hub's own, `batched`)
        self.reading: Client | InternalClient | None = None
        self._cid = 0
        self.event_seq = 0  # of the server blocks of events (event_server_info)
        self.total_connections = 0
        self.in_msgs = 0
        self.in_bytes = 0
        self.out_msgs = 0
        self.out_bytes = 0
        self.slow_consumers = 0
        self.stale_connections = 0
        self.http_req_stats: dict[str, int] = {}
        self.config_load_time = self.start_time
        self.lame_duck = False
        self.shutting_down = False
        self._servers: list[asyncio.AbstractServer | TLSListener] = []
        self._done = asyncio.Event()
        self._info_base: dict[str, Any] = {}
        self.client_port = opts.port
        self.http_port = opts.http_port
        self.version = VERSION
        self.leafs: dict[int, Leaf] = {}
        self.leaf_host = opts.leafnodes.host
        self.leaf_port = opts.leafnodes.port
        self.remotes: list[RemoteLeaf] = []
        self.client_tls = client_port_context(opts) if opts.tls_cert else None
        self.leaf_tls = leaf_server_context(opts.leafnodes) if opts.leafnodes.tls_cert else None
        # TLS on routes (host/tls.py): the accepting and the dialling side's contexts, and the name a dialler
        # checks certificates for when a route URL names an IP address (nats-server routeTLSName).
        self.route_tls: ssl.SSLContext | None = None
        self.route_tls_client: ssl.SSLContext | None = None
        self.route_tls_name = ""
        if co.enabled and co.tls_cert:
            self.route_tls, self.route_tls_client = route_contexts(co)
            self.route_tls_name = first_host_name(co.routes)
            if co.tls_insecure:
                opts.warnings.append(INSECURE_WARNING)
        self.internal = InternalClient(self)
        self.js: Any = None  # host.jetstream.jetstream.JetStream when enabled
        if opts.jetstream:
            from host.jetstream.jetstream import JetStream

            self.js = JetStream(self)

    # ---- accounts and connections ---------------------------------------------------------------

    def lookup_account(self, name: str) -> Account:
        acc = self.accounts.get(name)
        if self.trust is not None and name.startswith(PREFIX_ACCOUNT):
            claims = self.trust.account(name)
            if claims is not None and (acc is None or acc.config is None or acc.jwt != claims.jwt):
                acc = self.jwt_account(claims)  # new, or its JWT changed in the directory resolver
        if acc is None:
            acc = self.accounts[name] = Account(name)
            self.join_links(acc)
            if self.js_imported:
                self._import_jetstream(acc)
        return acc

    def join_links(self, acc: Account) -> None:
        """A new account shares the server's routes and inbound gateways (they advertise its interest). In a
        super-cluster its leafs are told `_GR_.>` too, so their answers to mapped replies come back (as nats-server)."""
        acc.routes = self.routes
        acc.gateways = self.gateways_in
        if self.gateway_name:
            acc.gateway_interest[(GW_REPLY_PREFIX + b">", None)] = 1
            acc.gw_tracking = True

    def load_jwt_accounts(self, trust: Trust) -> None:
        """Operator mode: every account the resolver holds at start becomes a hub account named by its public key; an
        import of an account the resolver does not hold is dropped with a warning (nats-server logs and skips it)."""
        for claims in trust.known_accounts():
            self.jwt_account(claims)
        if trust.dir and trust.system_account:
            install_claims_update(self, trust, self.lookup_account(trust.system_account))
        for acc in self.accounts.values():
            if acc.config is None:
                continue
            for imp in list(acc.config.imports):
                if imp.account not in self.accounts:
                    log.warning("Account %s: import of %s from unknown account %s ignored", acc.name,
                                imp.subject.decode(), imp.account)
                    acc.config.imports.remove(imp)

    def jwt_account(self, claims: AccountClaims) -> Account:
        """The hub account of a JWT account, its config (limits, exports, imports) taken from the claims. On an
        update, connected bearer users are cut if it now disallows them, and users its revocations now cover, and its
        limits applied to the connections (nats-server updateAccountClaimsWithRefresh)."""
        acc = self.accounts.get(claims.public)
        if acc is None:
            acc = self.accounts[claims.public] = Account(claims.public)
            self.join_links(acc)
        acc.config = claims.config()
        acc.jwt = claims.jwt
        if acc.config.mappings or acc.mappings is not None:
            set_mappings(acc, acc.config.mappings, self)
        disallow_bearer = claims.disallows_bearer()
        for c in list(acc.clients):
            if c.jwt_bearer and disallow_bearer:
                c.auth_violation()
            elif c.user and c.jwt_issued_at and claims.revoked(c.user, c.jwt_issued_at):
                c.close(errors.REVOCATION, errors.ERR_AUTH_REVOKED)
        acc.enforce_limits()
        return acc

    def is_system_account(self, acc: Account) -> bool:
        return acc.name == (self.trust.system_account if self.trust is not None and self.trust.system_account
                            else SYSTEM_ACCOUNT)

    def event_server_info(self) -> dict[str, Any]:
        """The `server` block of the events and system answers the hub sends (nats-server ServerInfo), numbered by
        `seq` as nats-server numbers its system messages."""
        self.event_seq += 1
        info: dict[str, Any] = {"name": self.name, "host": self.opts.host, "id": self.id}
        # (a leaf spoke without a cluster names itself as one, as its leaf CONNECT does: host/leafnode.py)
        cluster = self.cluster_name or (self.name if self.opts.leafnodes.remotes else "")
        if cluster:
            info["cluster"] = cluster
        info.update(ver=self.version, jetstream=self.js is not None, flags=0, seq=self.event_seq,
                    time=time_text(time.time_ns()))
        return info

    def next_cid(self) -> int:
        self._cid += 1
        return self._cid

    def register(self, c: Client) -> bool:
        if self.lame_duck or self.shutting_down:
            return False
        if len(self.clients) >= self.opts.max_connections:
            return False
        self.clients[c.cid] = c
        self.total_connections += 1
        return True

    def unregister(self, c: Client, reason: str) -> None:
        if self.clients.pop(c.cid, None) is not None:
            self.record_closed(c, reason)

    def record_closed(self, c: Client, reason: str) -> None:
        self.closed.append(ClosedInfo(conn_info(self, c, subs=True), time.time(), reason))

    def register_leaf(self, leaf: Leaf) -> None:
        self.leafs[leaf.cid] = leaf
        self.total_connections += 1

    def unregister_leaf(self, leaf: Leaf) -> None:
        self.leafs.pop(leaf.cid, None)

    def leaf_info(self, leaf: Leaf) -> dict[str, Any]:
        return leaf_info(self, leaf)

    # ---- cluster ----------------------------------------------------------------------------------

    def route_info(self) -> dict[str, Any]:
        """Our INFO on routes: nothing that would make nats-server pool, compress, or count us in JetStream's
        meta group (host/route.py); what is ours alone sits under `natsedge`, which nats-server ignores."""
        co = self.opts.cluster
        host = advertise_host(co.host)
        port = self.cluster_port
        if co.advertise:
            # As nats-server: the advertised address is the route's host and port too (a peer that accepted our
            # route redials us there).
            parts = split_url(co.advertise if "://" in co.advertise else "nats-route://" + co.advertise)
            if parts is not None:
                host, port = parts[0], parts[1]
        info: dict[str, Any] = {
            "server_id": self.id,
            "server_name": self.name,
            "version": VERSION,
            "proto": MSG_TRACE_PROTO,  # nats-server MsgTraceProto: peers forward us trace-only messages
            "go": "natsedge " + NATSEDGE_VERSION,
            "host": host,
            "port": port,
            "headers": True,
            "max_payload": self.opts.max_payload,
            "cluster": self.cluster_name,
            "ip": f"nats-route://{host}:{port}/",
            "natsedge": {"jetstream": self.js is not None, "start": self.start_time},
            # nats-server's leaf-origin forms (LS+/LS- with an origin): leaf members stay a queue fallback across
            # the cluster, and interest of leafs and clients on one subject and group is kept apart.
            "lnoc": True,
            "lnocu": True,
            "ln": True,
        }
        if self.cluster_dynamic:
            info["cluster_dynamic"] = True
        if co.username is not None:
            info["auth_required"] = True
        if self.route_tls is not None:
            info["tls_required"] = True
            info["tls_verify"] = True  # as nats-server: TLS on routes is always mutual
        if not co.no_advertise:
            info["connect_urls"] = [self.own_client_url()]
        if self.leaf_port and self.opts.leafnodes.port:
            info["leafnode_urls"] = [f"{self.leaf_host}:{self.leaf_port}"]
        if self.lame_duck:
            info["ldm"] = True
        return info

    def own_client_url(self) -> str:
        return f"{advertise_host(self.opts.host)}:{self.client_port}"

    def accept_cluster_name(self, theirs: str, dynamic: bool) -> bool:
        """Whether a peer of cluster `theirs` may join ours; a dynamic (unnamed) side adopts the other's name."""
        if not theirs or theirs == self.cluster_name or dynamic and not self.cluster_dynamic:
            return True
        if self.cluster_dynamic and (not dynamic or theirs < self.cluster_name):
            log.info("Cluster name is %s (learned from a route)", theirs)
            self.cluster_name = theirs
            for acc in self.accounts.values():
                if acc.mappings is not None:
                    acc.mappings.cache.clear()  # cluster-scoped destinations may differ now
            self.cluster_dynamic = dynamic
            self._build_info()
            return True
        return dynamic

    def add_route(self, r: Router) -> str | None:
        """Register a route whose peer named itself; returns why it must close instead, or None."""
        self.pending_routes.pop(r.cid, None)
        if r.remote_id in self.routes:
            return errors.DUPLICATE_ROUTE
        if r.remote_name and (r.remote_name == self.name or
                              any(o.remote_name == r.remote_name for o in self.routes.values())):
            log.error("Route %s has the server name %s of another server of the cluster", r.route_url, r.remote_name)
            return errors.DUPLICATE_SERVER_NAME
        ours = r.remote_info.get("natsedge")
        ours = ours if isinstance(ours, dict) else {}
        if self.js is not None and (r.remote_info.get("jetstream") or ours.get("jetstream")):
            self.jetstream_conflict(r, ours.get("start"))
            return errors.ROUTE_REMOVED
        if r.remote_info.get("jetstream") and not self.js_imported:
            self.import_cluster_jetstream()
        self.routes[r.remote_id] = r
        r.registered = True
        r.send_all_interest()
        # Gossip: the other members dial the newcomer (implicit routes), so one known peer is enough to join.
        gossip = {k: r.remote_info[k] for k in ("server_id", "server_name", "cluster", "host", "port", "version",
                                                "headers", "max_payload", "proto") if k in r.remote_info}
        gossip["ip"] = r.route_url
        gossip["gossip_mode"] = 1  # not to be forwarded further
        for other in self.routes.values():
            if other is not r:
                other.enqueue(encode_info(gossip))
        self.urls_changed()
        # The remote clusters we have an outbound connection to (nats-server sendGatewayConfigsToRoute).
        for name, gw in self.gateways_out.items():
            if gw.dialer is not None:
                r.enqueue(encode_info(self.gateway_gossip(name, gw.dialer.urls)))
        log.info("Route connection created for %s (%s)", r.remote_name or r.remote_id, r.route_url)
        return None

    def import_cluster_jetstream(self) -> None:
        """A nats-server peer runs JetStream and we do not: as nats-server's servers without JetStream do, every
        account imports the JetStream API from the system account, where the JetStream servers serve it (the
        request carries its account in Nats-Request-Info)."""
        self.js_imported = True
        for acc in list(self.accounts.values()):
            self._import_jetstream(acc)

    def _import_jetstream(self, acc: Account) -> None:
        if acc.name == SYSTEM_ACCOUNT:
            return
        sub = Subscription(None, JS_API_ALL, None, b"")
        sub.imported = ServiceImport(self.lookup_account(SYSTEM_ACCOUNT), JS_API_ALL, JS_API_ALL)
        acc.add_sub(sub)

    def jetstream_conflict(self, r: Router, peer_start: Any) -> None:
        log.error('JetStream is enabled on this server and on "%s" in cluster "%s": natsedge hubs do not replicate '
                  "streams, so one server of a cluster runs JetStream. To scale JetStream out, run a nats-server "
                  "JetStream cluster and join hubs and edges to it as leafnodes (docs/cluster.md)",
                  r.remote_name or r.remote_id, self.cluster_name)
        # The server that started later is the one refused (a nats-server peer always counts as the earlier).
        if not isinstance(peer_start, (int, float)) or peer_start <= self.start_time:
            log.error("Refusing to run a second JetStream server in the cluster: shutting down")
            self.exit_code = 1
            self.loop.create_task(self.shutdown())

    def remove_route(self, r: Router, reason: str) -> None:
        self.pending_routes.pop(r.cid, None)
        if self.routes.get(r.remote_id) is r:
            del self.routes[r.remote_id]
            log.info("Route connection closed for %s: %s", r.remote_name or r.remote_id, reason)
            self.urls_changed()

    def gossiped_route(self, info: dict[str, Any]) -> None:
        """INFO about another member, passed on by a route: dial it unless connected or dialling already."""
        sid = str(info.get("server_id", "") or "")
        url = info.get("ip")
        if not sid or sid == self.id or sid in self.routes or not isinstance(url, str) or info.get("route_account"):
            return
        if info.get("cluster") and info["cluster"] != self.cluster_name:
            return
        if any(d.remote_id == sid or d.url == url for d in self.dialers):
            return
        dialer = RouteDialer(self, url, explicit=False, remote_id=sid)
        self.dialers.add(dialer)
        dialer.start()

    def urls_changed(self, tell_clients: bool = True) -> None:
        """Recompute the cluster's client and leafnode URLs; tell clients (protocol >= 1) and leafs on change."""
        co = self.opts.cluster
        urls: list[str] = []
        lurls: list[str] = []
        if co.enabled and self.routes:
            # (As nats-server: a lone node lists no URLs, and a node in lame-duck mode not its own.)
            if not co.no_advertise and not self.lame_duck:
                urls.append(self.own_client_url())
            if self.opts.leafnodes.port and not self.opts.leafnodes.no_advertise:
                lurls.append(f"{self.leaf_host}:{self.leaf_port}")
            for r in self.routes.values():
                if r.lame_duck:
                    continue
                if not co.no_advertise:
                    urls.extend(u for u in r.connect_urls if u not in urls)
                if not self.opts.leafnodes.no_advertise:
                    lurls.extend(u for u in r.leafnode_urls if u not in lurls)
        if urls != self.connect_urls:
            self.connect_urls = urls
            self._build_info()
            for c in list(self.clients.values()) if tell_clients else ():
                if c.protocol >= 1 and c.connected and not c.closed:
                    c.send(encode_info(self.client_info(c)))
        if lurls != self.leafnode_urls:
            self.leafnode_urls = lurls
            for leaf in list(self.leafs.values()):
                if leaf.remote is None and leaf.connected and not leaf.closed:
                    info = self.leaf_info(leaf)
                    info.pop("nonce", None)
                    leaf.send(encode_info(info))

    def flush_dirty(self) -> None:
        if self.before_flush:
            # Work that must finish before this batch's output goes out (JetStream's one fsync for a batch of
            # publishes under sync "always": their PubAcks are queued but must not leave before it).
            hooks, self.before_flush = self.before_flush, []
            for hook in hooks:
                hook()
        dirty = self.dirty
        if dirty:
            self.dirty = []
            for c in dirty:
                c.flush()

    def batched(self, work: Callable[[], None]) -> None:
        """Run `work` (a timer's, which may publish many messages: a source catching up) as one batch: its output is
        written once at the end, as a read batch's, not message by message."""
        if self.reading is not None:
            work()
            return
        self.reading = self.internal
        try:
            work()
        finally:
            self.reading = None
            self.flush_dirty()

    def internal_publish(self, acc: Account, subject: bytes, reply: bytes | None, hdr: bytes | None,
                         payload: bytes, one_off: bool = False) -> int:
        """Publish from inside the hub into `acc`; returns how many targets got it. Outside a read batch
        (timers) the output is written at once; inside one, with the batch. one_off: `subject` is a reply
        subject used once (a PubAck), and the message has no reply or headers."""
        if one_off:
            n = deliver_reply(acc, self.internal, subject, payload)
        else:
            n = deliver_msg(acc, self.internal, subject, reply, hdr, payload)
        if self.reading is None:
            self.flush_dirty()
        return n

    def num_subscriptions(self) -> int:
        return sum(a.sublist.count for a in self.accounts.values())

    def client_info(self, c: Client) -> dict[str, Any]:
        info = dict(self._info_base)
        info["client_id"] = c.cid
        info["client_ip"] = c.ip
        info["max_payload"] = c.max_payload  # the account's may be lower (nats-server generateClientInfoJSON)
        if self.nonce_required and not c.connected:
            # the challenge an nkey or JWT user signs in CONNECT (nats-server nkey.go); not repeated after CONNECT
            c.nonce = c.nonce or nuid(11)
            info["nonce"] = c.nonce
        return info

    def _build_info(self) -> None:
        o = self.opts
        info: dict[str, Any] = {
            "server_id": self.id,
            "server_name": self.name,
            "version": VERSION,
            "proto": 1,
            "go": "natsedge " + NATSEDGE_VERSION,
            "host": o.host,
            "port": self.client_port,
            "headers": True,
            "max_payload": o.max_payload,
        }
        if info_auth_required(o):
            info["auth_required"] = True
        if self.client_tls is not None:
            info["tls_required"] = True
            if o.tls_verify:
                info["tls_verify"] = True
        if self.js is not None:
            info["jetstream"] = True
            if self.js.domain:
                info["domain"] = self.js.domain
        if self.lame_duck:
            info["ldm"] = True
        if self.cluster_name:
            info["cluster"] = self.cluster_name
        if self.connect_urls:
            info["connect_urls"] = self.connect_urls
        self._info_base = info

    # ---- super-cluster (host/gateway.py) --------------------------------------------------------

    def gateway_url(self) -> str:
        go = self.opts.gateway
        if go.advertise:
            return go.advertise.split("://", 1)[-1]
        host = go.host if go.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
        return f"{host}:{self.gateway_port}"

    def gateway_info(self) -> dict[str, Any]:
        """Our INFO on gateways, with nats-server's keys (gateway_nrp: we read `_GR_.` replies; gateway_iom: every
        account is interest-only from the start)."""
        url = self.gateway_url()
        info: dict[str, Any] = {
            "server_id": self.id,
            "server_name": self.name,
            "version": VERSION,
            "proto": MSG_TRACE_PROTO,
            "host": url.rpartition(":")[0],
            "port": self.gateway_port,
            "headers": True,
            "max_payload": self.opts.max_payload,
            "gateway": self.gateway_name,
            "gateway_urls": [url],
            "gateway_url": url,
            "gateway_nrp": True,
            "gateway_iom": True,
        }
        if self.gateway_tls is not None:
            info["tls_required"] = True
            info["tls_verify"] = True
        return info

    def gateway_cmd_info(self, cmd: int, payload: str) -> dict[str, Any]:
        # As nats-server's command INFOs: its other keys with zero values.
        return {"server_id": "", "server_name": "", "version": "", "proto": 0, "go": "", "host": "", "port": 0,
                "headers": False, "max_payload": 0, "gateway": self.gateway_name, "gateway_cmd": cmd,
                "gateway_cmd_payload": payload}

    def add_gateway(self, gw: Gateway) -> str | None:
        """Register a gateway whose peer named itself; returns why it must close instead, or None."""
        self.pending_gateways.pop(gw.cid, None)
        if gw.remote_id == self.id:
            return errors.WRONG_GATEWAY  # our own gateway port listed as a remote
        if gw.outbound:
            if gw.gateway_name in self.gateways_out:
                return errors.DUPLICATE_ROUTE
            self.gateways_out[gw.gateway_name] = gw
            log.info('Outbound gateway connection to "%s" (%s) registered', gw.gateway_name, gw.name)
            # The other servers of the cluster dial it too (nats-server forwardNewGatewayToLocalCluster). Told once
            # the connection is registered, as add_route tells a later route peer: every peer hears of it either way.
            if gw.dialer is not None:
                gossip = encode_info(self.gateway_gossip(gw.gateway_name, gw.dialer.urls))
                for r in self.routes.values():
                    r.enqueue(gossip)
            return None
        self.gateways_in[gw.cid] = gw
        log.info('Inbound gateway connection from "%s" (%s) registered', gw.gateway_name, gw.name)
        urls = gw.remote_info.get("gateway_urls")
        if isinstance(urls, list):
            self.implicit_gateway(gw.gateway_name, [u for u in urls if isinstance(u, str)][:16])
        return None

    def remove_gateway(self, gw: Gateway, reason: str) -> None:
        self.pending_gateways.pop(gw.cid, None)
        if self.gateways_out.get(gw.gateway_name) is gw:
            del self.gateways_out[gw.gateway_name]
            log.info('Outbound gateway connection to "%s" closed: %s', gw.gateway_name, reason)
        elif self.gateways_in.pop(gw.cid, None) is not None:
            log.info('Inbound gateway connection from "%s" closed: %s', gw.gateway_name, reason)

    def implicit_gateway(self, name: str, urls: list[str]) -> None:
        """Dial a cluster we learned of (it dialled us, or a gateway told us about it), unless we do already."""
        go = self.opts.gateway
        if not name or name == self.gateway_name or not urls or self.shutting_down:
            return
        known = self.gateway_dialers.get(name)
        if known is not None:
            known.add_urls(urls)
            return
        if go.reject_unknown_cluster and all(g.name != name for g in go.gateways):
            return
        dialer = GatewayDialer(self, name, urls, explicit=False)
        self.gateway_dialers[name] = dialer
        dialer.start()

    def gateway_gossip(self, name: str, urls: list[str]) -> dict[str, Any]:
        """INFO gateway_cmd 1 naming a remote cluster, to a gateway or to a route of this cluster. Its server id is
        not ours ("GW" + ours, as nats-server), so a route peer never takes it for news about a route."""
        return {"server_id": "GW" + self.id, "server_name": self.name, "gateway": name,
                "gateway_urls": [url_hostport(u) for u in urls], "gateway_cmd": GATEWAY_CMD_GOSSIP}

    def gossip_gateways(self, gw: Gateway) -> None:
        """Tell a cluster that dialled us the other clusters we reach (INFO gateway_cmd 1), so it dials them too."""
        for name, out in self.gateways_out.items():
            if name == gw.gateway_name:
                continue
            dialer = out.dialer
            gw.enqueue(encode_info(self.gateway_gossip(name, dialer.urls if dialer is not None else [])))

    def gateway_by_hash(self, cluster_hash: bytes) -> Gateway | None:
        for name, gw in self.gateways_out.items():
            if gw_hash(name) == cluster_hash:
                return gw
        return None

    # ---- running --------------------------------------------------------------------------------

    async def start(self) -> None:
        o = self.opts
        self.loop = asyncio.get_running_loop()
        if self.js is not None:
            self.js.start()
        # As nats-server: INFO in plain text, then the TLS handshake; with handshake_first, TLS from the first byte.
        self.client_port = await self._listen(o.host, o.port, lambda: Client(self), 4096, self.client_tls, "client",
                                              o.tls_timeout, None if o.tls_handshake_first else Client.plain_info)
        self._build_info()
        log.info("Listening for client connections on %s:%d", o.host, self.client_port)
        lo = o.leafnodes
        if lo.port:
            # As nats-server: the leafnode port's INFO goes out in plain text, then the TLS handshake.
            self.leaf_port = await self._listen(lo.host, lo.port, lambda: Leaf(self), 1024, self.leaf_tls, "leafnode",
                                                o.auth_timeout, Leaf.plain_info)
            self.leaf_host = lo.host if lo.host not in ("0.0.0.0", "::") else "127.0.0.1"
            log.info("Listening for leafnode connections on %s:%d", lo.host, self.leaf_port)
        co = o.cluster
        if co.enabled:
            # As nats-server: on routes the TLS handshake comes first, the INFO only inside TLS.
            self.cluster_port = await self._listen(co.host, co.port, lambda: Router(self), 1024, self.route_tls,
                                                   "route", co.tls_timeout)
            log.info("Cluster name is %s", self.cluster_name)
            log.info("Listening for route connections on %s:%d", co.host, self.cluster_port)
            self.urls_changed()
            for url in co.routes:
                dialer = RouteDialer(self, url, explicit=True)
                self.dialers.add(dialer)
                dialer.start()
        go = o.gateway
        if go.enabled:
            # As on routes, TLS first and the INFO inside it.
            self.gateway_port = await self._listen(go.host, max(go.port, 0), lambda: Gateway(self), 1024,
                                                   self.gateway_tls, "gateway", go.tls_timeout)
            log.info('Gateway name is "%s"', self.gateway_name)
            log.info("Listening for gateway connections on %s:%d", go.host, self.gateway_port)
            for remote in go.gateways:
                if remote.name == self.gateway_name:
                    continue  # our own cluster in the list (nats-server skips it too)
                gdialer = GatewayDialer(self, remote.name, remote.urls, explicit=True)
                self.gateway_dialers[remote.name] = gdialer
                gdialer.start()
        for r in lo.remotes:
            remote = RemoteLeaf(self, r.url, self.lookup_account(r.account), r.user, r.password, r.token,
                                r.credentials)
            self.remotes.append(remote)
            remote.start()
        if o.http_port:
            http_host = o.http_host or o.host
            try:
                srv_http, self.http_port = await start_monitor(self, http_host, o.http_port)
            except OSError as e:
                raise ListenError(http_host, o.http_port, e) from e
            self._servers.append(srv_http)
            log.info("Starting http monitor on %s:%d", o.http_host or o.host, self.http_port)
        self.loop.call_later(1.0, self._housekeeping)
        log.info("Server is ready")

    async def _listen(self, host: str, port: int, factory: Any, backlog: int, tls: ssl.SSLContext | None = None,
                      what: str = "", tls_timeout: float = 0.0, preamble: Any = None) -> int:
        """Listen on host:port (0: a free port) for connections made by `factory`; returns the port. With `tls`,
        each connection is handed to its protocol after its TLS handshake (host/tls.py TLSListener)."""
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as e:
            sock.close()
            raise ListenError(host, port, e) from e
        if tls is None:
            self._servers.append(await self.loop.create_server(factory, sock=sock, backlog=backlog))
        else:
            sock.listen(backlog)
            self._servers.append(TLSListener(self.loop, sock, factory, tls, what, tls_timeout, preamble))
        return int(sock.getsockname()[1])

    def _housekeeping(self) -> None:
        """Once a second: write deadlines, expired service-import responses."""
        if self.shutting_down:
            return
        now = time.monotonic()
        deadline = self.opts.write_deadline
        for c in list(self.clients.values()):
            if c.blocked_since and now - c.blocked_since > deadline:
                self.slow_consumers += 1
                c.close(errors.SLOW_CONSUMER_WRITE_DEADLINE, abort=True)
        for acc in self.accounts.values():
            if acc.responses:
                acc.expire_responses(now)
            if acc.gw_replies:
                acc.expire_gateway_replies(now)
            if acc.gw_recent:
                acc.expire_recent_subs(now)
        self.loop.call_later(1.0, self._housekeeping)

    def _stop_accepting(self) -> None:
        for s in self._servers:
            s.close()

    async def shutdown(self) -> None:
        """Stop accepting, drain what is queued to each client, close, and finish."""
        if self.shutting_down:
            return
        self.shutting_down = True
        self._stop_accepting()
        for r in self.remotes:
            r.stopped = True
        for d in self.dialers:
            d.stopped = True
        for gd in self.gateway_dialers.values():
            gd.stopped = True
        for c in [*self.clients.values(), *self.leafs.values(), *self.routes.values(),
                  *self.pending_routes.values(), *self.gateways_out.values(), *self.gateways_in.values(),
                  *self.pending_gateways.values()]:
            c.close(errors.SERVER_SHUTDOWN)
        # Give transports a moment to write out their buffers (close() flushes before closing).
        for _ in range(50):
            if not any(c.transport and c.transport.get_write_buffer_size() for c in self.clients.values()):
                break
            await asyncio.sleep(0.02)
        if self.js is not None:
            self.js.stop()
        self._done.set()

    async def enter_lame_duck(self) -> None:
        if self.lame_duck or self.shutting_down:
            return
        log.info("Entering lame duck mode, stop accepting new clients")
        self.lame_duck = True
        self._stop_accepting()
        self.urls_changed(tell_clients=False)  # the INFO with ldm below tells them
        self._build_info()
        if self.routes:
            ldm = encode_info(self.route_info())
            for r in list(self.routes.values()):
                r.send(ldm)
        for c in list(self.clients.values()):
            if c.protocol >= 1 and c.connected:
                c.send(encode_info(self.client_info(c)))
        await asyncio.sleep(self.opts.lame_duck_grace_period)
        clients = list(self.clients.values())
        if clients:
            step = max(self.opts.lame_duck_duration - self.opts.lame_duck_grace_period, 0) / len(clients)
            for c in clients:
                c.close(errors.LAME_DUCK_MODE)
                if step:
                    await asyncio.sleep(min(step, 1.0))
        await self.shutdown()

    def install_signals(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            self.loop.add_signal_handler(sig, lambda: self.loop.create_task(self.shutdown()))
        if hasattr(signal, "SIGUSR2"):
            self.loop.add_signal_handler(signal.SIGUSR2, lambda: self.loop.create_task(self.enter_lame_duck()))

    async def serve(self) -> None:
        await self.start()
        self.install_signals()
        await self._done.wait()
        log.info("Server Exiting..")


def run_server(opts: Options, use_uvloop: bool = True) -> int:
    tune_malloc()
    if use_uvloop:
        try:
            import uvloop

            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        except ImportError:
            pass
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        server = Server(opts)
    except TLSConfigError as e:
        log.error("%s", e)
        loop.close()
        return 1
    for w in opts.warnings:
        log.warning(w)
    try:
        loop.run_until_complete(server.serve())
    except ListenError as e:
        log.error("Error listening on port: %s:%d, %s", e.host, e.port, e.strerror)
        return 1
    except OSError as e:
        log.error("Error starting the server: %s", e.strerror or e)
        return 1
    finally:
        loop.close()
    return server.exit_code
