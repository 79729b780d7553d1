"""Leafnode links: the hub's leafnode port and solicited remotes (nats-server `leafnode.go`).

A Leaf is a Client of kind LEAF bound to one account. Interest crosses the link explicitly:
- the peer's LS+/LS- become subscriptions of the Leaf in the account's sublist (one per subject or
  subject+queue; a queue weight stands for that many members);
- the account's interest (Account.interest, kept by Account.add_sub/remove_sub) goes to the peer
  as LS+/LS-, minus what the peer itself asked for, with absolute queue weights;
- messages from the peer (LMSG, or HMSG with the leaf framing) reach plain subscribers, and queue
  subscribers only of the groups the frame names; we never echo a frame back to its link.

Traps that break real Go leafs are avoided on purpose (shared/nats-reference README 2.4, 2.5):
our INFO has no `compression`, always a non-zero `client_id` and `leafnode_urls`, and since it
says `info_on_connect` we answer CONNECT with an INFO carrying `connect_info`.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from edge.proto import (
    KIND_LEAF,
    OP_CLOSED,
    OP_CONNECT,
    OP_ERR,
    OP_INFO,
    OP_LMSG,
    OP_LS_MINUS,
    OP_LS_PLUS,
    OP_OK,
    OP_PING,
    OP_PONG,
    PING,
    PONG,
    encode_connect,
    encode_err,
    encode_info,
    encode_lmsg,
    encode_ls_minus,
    encode_ls_plus,
)
from host import errors
from host.accounts import Account, nuid
from host.auth import LeafPermissions, authenticate_leaf
from host.client import LINK_FIRST_PING_INTERVAL, Client, interest_change, peer_proto
from host.delivery import deliver, deliver_link_msg, deliver_mapped, learn_plan
from host.jwt import JwtError, decode_jwt, read_creds, sign_nonce, user_limits
from host.msgtrace import MSG_TRACE_PROTO
from host.parser import HubParser
from host.sublist import Subscription, is_literal, is_valid_subject

if TYPE_CHECKING:
    from host.server import Server

log = logging.getLogger("natsedge.hub")

RECONNECT_DELAY = 1.0  # nats-server DEFAULT_LEAF_NODE_RECONNECT
LOOP_DELAY = 30.0  # wait after a loop was detected (nats-server leafNodeReconnectAfterPermViolation)
ERR_LEAF_PORT = "attempted to connect to leaf node port"
# What a link between two JetStream servers never carries towards the peer (nats-server denyAllClientJs): each side's
# API stays its own, and is reached across the link through `$JS.<domain>.API` only.
JS_LINK_DENY = (b"$JS.API.", b"$KV.", b"$OBJ.")


def err_loop(account: str) -> str:
    return f'Loop detected for leafnode account="{account}". Delaying attempt to reconnect for 30s'


Key = tuple[bytes, bytes | None]


class Leaf(Client):
    kind = "Leafnode"
    is_leaf = True
    is_link = True

    def __init__(self, server: Server, remote: RemoteLeaf | None = None) -> None:
        super().__init__(server)
        opts = server.opts
        self.parser = HubParser(KIND_LEAF, opts.max_control_line, opts.max_payload)
        self.remote = remote  # set when we dialled out (we are the spoke)
        # As nats-server: what a hub sends down to its spoke is not forwarded to our routes (the hub's cluster
        # reaches the other spokes itself).
        self.to_routes = remote is None
        self.to_gateways = remote is None  # (a hub we dialled as a leaf sent it everywhere it goes already)
        self.echo = False  # a frame never goes back over the link it came from
        self.headers = True
        self.verbose = False
        self.pedantic = False
        self.remote_name = ""
        self.remote_id = ""
        self.origin = b"_"  # the leaf's cluster, as routes are told its interest ("_": none named in its CONNECT)
        self.info_sent = False
        self.leaf_subs: dict[Key, Subscription] = {}  # interest the peer asked for
        self.sent: dict[Key, int] = {}  # interest we advertised to the peer, as last sent
        self.leaf_perms: LeafPermissions | None = None  # the permissions of the user it authenticated as
        self.remote_domain = ""  # the peer's JetStream domain, from its CONNECT or INFO
        self.js_deny: tuple[bytes, ...] = ()  # subject prefixes whose interest from the peer is ignored

    # ---- handshake --------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.attach(transport)
        server = self.server
        server.register_leaf(self)
        loop = server.loop
        if self.remote is None:
            if not self.info_sent:
                transport.write(encode_info(server.leaf_info(self)))
            self._timers["auth"] = loop.call_later(server.opts.auth_timeout, self._auth_timeout)
        self._timers["ping"] = loop.call_later(LINK_FIRST_PING_INTERVAL, self._ping_timer)

    def plain_info(self, _addr: Any = None) -> bytes:
        """The INFO a TLS leafnode port writes in plain text before the handshake (host/tls.py TLSListener):
        as nats-server, INFO first, then TLS, then CONNECT."""
        self.info_sent = True
        return encode_info(self.server.leaf_info(self))

    def process_leaf_connect(self, c: dict[str, Any]) -> None:
        if self.connected:
            return
        if "lang" in c:
            self.close(errors.PROTOCOL_VIOLATION, ERR_LEAF_PORT)
            return
        user = authenticate_leaf(self.opts, c, self.nonce, self.server.trust)
        if user is None:
            self.auth_violation()
            return
        account = self.server.lookup_account(user.account)
        if user.permissions is not None:
            self.leaf_perms = LeafPermissions(user.permissions)
        h = self._timers.pop("auth", None)
        if h is not None:
            h.cancel()
        self.remote_name = str(c.get("name", "") or "")
        self.remote_id = str(c.get("server_id", "") or "")
        cluster = c.get("cluster")
        if isinstance(cluster, str) and cluster and " " not in cluster:
            self.origin = cluster.encode()
        self.name = self.remote_name
        self.version = str(c.get("version", "") or "")
        self.protocol = peer_proto(c.get("protocol"))  # MSG_TRACE_PROTO and up: it traces what we forward it
        if self.server.trust is not None:
            # a leaf's user JWT limits its subscriptions and payload as a client's (nats-server applyAccountLimits
            # decodes the JWT of the CONNECT again, as here: it has just been verified)
            self.user_limits = user_limits(decode_jwt(c.get("jwt")))
        if not self.bind(account):
            if self.server.trust is not None:
                # a JWT leaf joins its account after authentication (nats-server processLeafnodeConnect)
                self.max_account_connections_exceeded()
            else:
                # nats-server registers a leaf of a configured user with its account while authenticating it
                # (auth.go registerLeafWithAccount): over the account's limit it is an authorization failure.
                self.auth_violation()
            return
        self.set_js_deny(c)
        info = self.server.leaf_info(self)
        info["connect_info"] = True
        info["remote_account"] = account.name
        info.pop("nonce", None)
        self.enqueue(encode_info(info))
        self.send_all_interest()
        log.info("Leafnode connection created for account: %s (%s)", account.name, self.remote_name or self.ip)

    def bind(self, account: Account) -> bool:
        """Join the account (False: over its max_leafnodes, not joined)."""
        if not self.register_with_account(account):
            return False
        self.connected = True
        account.leafs.add(self)
        return True

    def process_leaf_info(self, info: dict[str, Any]) -> None:
        """INFO from the hub we dialled: answer the first with CONNECT and our interest."""
        if self.remote is None or self.connected:
            return
        self.remote_name = str(info.get("server_name", "") or "")
        self.remote_id = str(info.get("server_id", "") or "")
        self.protocol = peer_proto(info.get("proto"))
        self.set_js_deny(info)
        try:
            connect = self.remote.connect_options(self.server, str(info.get("nonce") or ""))
        except JwtError as e:
            log.error("Error trying to connect as leafnode to remote server %s: %s", self.remote.url, e)
            self.close(errors.CLIENT_CLOSED)
            return
        self.enqueue(encode_connect(connect))
        if not self.bind(self.remote.account):
            self.max_account_connections_exceeded()
            return
        self.send_all_interest()
        self.enqueue(PING)
        self.remote.connected(self)
        log.info("Connected leafnode to %s (%s)", self.remote.url, self.remote_name)

    def set_js_deny(self, peer: dict[str, Any]) -> None:
        """nats-server addLeafNodeConnection, for a peer with JetStream (its CONNECT or INFO says `jetstream`) in a
        non-system account: `$JS.API.>`, `$KV.>` and `$OBJ.>` are not sent to it, and when the JetStream domains
        differ, neither is our own `$JS.<domain>.API.>` (the peer reaches it through its domain mapping only)."""
        domain = peer.get("domain")
        self.remote_domain = domain if isinstance(domain, str) else ""
        server = self.server
        acc = self.account if self.account is not None else (self.remote.account if self.remote else None)
        if not peer.get("jetstream") or server.js is None or acc is None or server.is_system_account(acc):
            self.js_deny = ()
            return
        own = server.js.domain
        self.js_deny = JS_LINK_DENY + ((b"$JS.%s.API." % own.encode(),) if own and own != self.remote_domain else ())

    # ---- interest towards the peer ------------------------------------------------------------

    def send_all_interest(self) -> None:
        acc = self.account
        assert acc is not None
        self.enqueue(encode_ls_plus(acc.lds))
        for key in [*acc.interest, *acc.gateway_interest]:
            self.update_interest(key)

    def update_interest(self, key: Key) -> None:
        """Advertise the account's interest in `key` minus the peer's own, if it changed."""
        if not self.connected or self.closed:
            return
        acc = self.account
        assert acc is not None
        own = self.leaf_subs.get(key)
        # (other clusters' interest too, as nats-server: a leaf's message reaches them through this hub)
        n = acc.interest.get(key, 0) + acc.gateway_interest.get(key, 0) - (own.weight if own is not None else 0)
        subject, queue = key
        if subject.startswith(b"$LDS.") and own is not None:
            n = 0  # never hand a peer's loop-detection subject back to it
        elif self.leaf_perms is not None and n > 0 and not subject.startswith(b"$LDS.") \
                and not self.leaf_perms.may_advertise(subject):
            n = 0
        change = interest_change(self.sent, key, queue, n)
        if change > 0:
            self.enqueue(encode_ls_plus(subject, queue, n) if queue else encode_ls_plus(subject))
        elif change < 0:
            self.enqueue(encode_ls_minus(subject, queue))

    # ---- input from the peer --------------------------------------------------------------------

    def process_run(self, subject: bytes, has_hdr: bool, pieces: list[bytes], nbytes: int) -> None:
        """A run of LMSG/HMSG frames that name no queue group, which the parser did not deliver itself: plain
        subscribers only (processInboundLeafMsg)."""
        if not self.connected:
            if self.remote is None:
                self.auth_violation()  # a message before CONNECT
            return
        if self.leaf_perms is not None and not self.leaf_perms.may_send(subject):
            self.leaf_perm_violation(errors.err_pub_violation(subject))
            return
        self.count_in(len(pieces), nbytes)
        acc = self.account
        assert acc is not None
        if acc.mappings is not None:
            # As nats-server: a leaf's publish is mapped (its permissions were checked on the subject it sent).
            found = acc.mappings.lookup(subject)
            if found is not None:
                deliver_mapped(acc, self, subject, found, has_hdr, pieces, nbytes, ())
                if found.__class__ is bytes:
                    learn_plan(self.parser.plans, self, acc, found, (), subject)  # type: ignore[arg-type]
                return
        deliver(acc, self, subject, has_hdr, pieces, nbytes, 0, ())
        # (a plan is learned for a subject the leaf may publish to only, so the parser's own deliveries stay inside
        # its permissions)
        learn_plan(self.parser.plans, self, acc, subject, ())

    def process_op(self, ev: tuple) -> None:
        op = ev[0]
        if op == OP_INFO:
            self.process_leaf_info(ev[1])
            return
        if op == OP_CONNECT:
            if self.remote is None:
                self.process_leaf_connect(ev[1])
            return
        if not self.connected:
            if op == OP_ERR:
                self.process_remote_err(ev[1])
            elif self.remote is None:
                self.auth_violation()
            return
        if op == OP_LMSG:
            self.process_inbound_leaf_msg(ev[1], ev[2], ev[3], ev[4], ev[5])
        elif op == OP_LS_PLUS:
            self.process_leaf_sub(ev[1], ev[2], ev[3])
        elif op == OP_LS_MINUS:
            self.process_leaf_unsub(ev[1], ev[2])
        elif op == OP_PING:
            self.enqueue(PONG)
        elif op == OP_PONG:
            self.pings_out = 0
        elif op == OP_ERR:
            self.process_remote_err(ev[1])
        elif op == OP_CLOSED:
            self.close(errors.CLIENT_CLOSED)
        elif op == OP_OK:
            pass

    def process_remote_err(self, text: str) -> None:
        log.warning("Leafnode %s reported error: %s", self.remote_name or self.ip, text)
        if self.remote is not None and text.startswith("Loop detected"):
            self.remote.delay = LOOP_DELAY
        self.close(errors.CLIENT_CLOSED)

    def leaf_perm_violation(self, err: str) -> None:
        """As nats-server leafPermViolation: tell the leaf, log, and cut it off."""
        log.error("%s - Check other side configuration", err)
        self.close(errors.PROTOCOL_VIOLATION, err)

    def process_leaf_sub(self, subject: bytes, queue: bytes | None, weight: int | None) -> None:
        acc = self.account
        assert acc is not None
        if subject == acc.lds:
            self.close(errors.PROTOCOL_VIOLATION, err_loop(acc.name))
            if self.remote is not None:
                self.remote.delay = LOOP_DELAY
            return
        if not is_valid_subject(subject):
            return
        if self.js_deny and subject.startswith(self.js_deny):
            return  # (nats-server: the peer may not subscribe to the other side's JetStream API)
        perms = self.leaf_perms
        if perms is not None and is_literal(subject) and not subject.startswith(b"$LDS.") \
                and not perms.may_receive(subject):
            # (a wildcard interest is taken; what it may receive is filtered per subject on delivery)
            self.leaf_perm_violation(errors.err_sub_violation(subject, None))
            return
        if 0 <= self.max_subs <= len(self.subs) and (subject, queue) not in self.leaf_subs:
            self.enqueue(encode_err(errors.ERR_MAX_SUBSCRIPTIONS))
            return
        sub = self.link_sub(acc, self.leaf_subs, (subject, queue), subject, queue, weight)
        if sub is not None:
            self.subs[subject + b" " + (queue or b"")] = sub
            acc.add_sub(sub)

    def process_leaf_unsub(self, subject: bytes, queue: bytes | None) -> None:
        key = (subject, queue)
        sub = self.leaf_subs.pop(key, None)
        if sub is None:
            return
        self.subs.pop(subject + b" " + (queue or b""), None)
        sub.closed = True
        assert self.account is not None
        self.account.remove_sub(sub)

    def process_inbound_leaf_msg(self, subject: bytes, reply: bytes | None, queues: list[bytes] | None,
                                 hdr: bytes | None, payload: bytes) -> None:
        if self.leaf_perms is not None and not self.leaf_perms.may_send(subject):
            self.leaf_perm_violation(errors.err_pub_violation(subject))
            return
        size = len(payload) + (len(hdr) if hdr is not None else 0)
        self.count_in(1, size)
        assert self.account is not None
        deliver_link_msg(self.account, self, subject, reply, queues, hdr, payload)

    # ---- output to the peer --------------------------------------------------------------------

    def link_prefixes(self, acc: Account, subject: bytes) -> tuple[bytes, bytes]:
        """Frame prefixes for delivery plans (host/delivery.py): the frame is prefix + tail."""
        return b"LMSG " + subject, b"HMSG " + subject

    def send_link_msg(self, acc: Account, subject: bytes, reply: bytes | None, queues: list[bytes],
                      hdr: bytes | None, payload: bytes) -> None:
        self.enqueue(encode_lmsg(subject, payload, reply, queues or None, hdr))
        self.out_msgs += 1
        self.out_bytes += len(payload) + (len(hdr) if hdr is not None else 0)

    def _teardown(self, reason: str) -> None:
        acc = self.account
        if acc is not None:
            acc.leafs.discard(self)
        self.leaf_subs.clear()
        super()._teardown(reason)
        self.server.unregister_leaf(self)
        if self.remote is not None:
            self.remote.disconnected(self)


class RemoteLeaf:
    """A configured `leafnodes { remotes [...] }` entry: dial, and redial after a delay."""

    def __init__(self, server: Server, url: str, account: Account, user: str | None, password: str | None,
                 token: str | None, credentials: str | None = None) -> None:
        self.server = server
        self.url = url
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 7422
        self.user = user if user is not None else parts.username
        self.password = password if password is not None else parts.password
        self.token = token
        self.credentials = credentials
        self.account = account
        self.delay = 0.0
        self.leaf: Leaf | None = None
        self.stopped = False

    def connect_options(self, server: Server, nonce: str) -> dict[str, Any]:
        """Our CONNECT to the hub; with `credentials`, the user JWT and the signature of the hub's `nonce` (the file is
        read at each connect, so rotated credentials take effect at the next one). JwtError for a bad file."""
        opts: dict[str, Any] = {
            "version": server.version,
            "server_id": server.id,
            "name": server.name,
            "cluster": server.name,
            "headers": True,
            "compress_mode": "off",
            "remote_account": self.account.name,
            "protocol": MSG_TRACE_PROTO,
        }
        if server.js is not None:
            # (nats-server: the domain, and whether this account has JetStream, decide the JetStream denies above)
            if server.js.domain:
                opts["domain"] = server.js.domain
            opts["jetstream"] = self.account.js is not None
        if self.user:
            opts["user"] = self.user
            opts["pass"] = self.password or ""
        if self.token:
            opts["auth_token"] = self.token
        if self.credentials:
            jwt, seed = read_creds(self.credentials)
            opts["jwt"] = jwt
            opts["sig"] = sign_nonce(seed, nonce)
        return opts

    def start(self) -> None:
        self.server.loop.create_task(self._run())

    async def _run(self) -> None:
        loop = self.server.loop
        while not self.stopped and not self.server.shutting_down:
            delay, self.delay = self.delay, RECONNECT_DELAY
            if delay:
                await asyncio.sleep(delay * (1 + random.random() * 0.2))
            try:
                await loop.create_connection(lambda: Leaf(self.server, self), self.host, self.port)
            except OSError as e:
                log.debug("Error trying to connect to leafnode remote %s: %s", self.url, e)
                continue
            self._done = loop.create_future()
            await self._done

    def connected(self, leaf: Leaf) -> None:
        self.leaf = leaf

    def disconnected(self, leaf: Leaf) -> None:
        self.leaf = None
        done = getattr(self, "_done", None)
        if done is not None and not done.done():
            done.set_result(None)


def leaf_info(server: Server, leaf: Leaf) -> dict[str, Any]:
    o = server.opts
    leaf.nonce = leaf.nonce or nuid(11)  # always sent on the leaf port; kept for a JWT leaf's signature
    host = server.leaf_host
    info: dict[str, Any] = {
        "server_id": server.id,
        "server_name": server.name,
        "version": server.version,
        "proto": MSG_TRACE_PROTO,  # as nats-server: the leaf forwards us trace-only messages (host/msgtrace.py)
        "host": host,
        "port": server.leaf_port,
        "headers": True,
        "auth_required": True,
        "max_payload": o.max_payload,
        **({"jetstream": True} if server.js is not None else {}),
        "ip": f"{host}:{server.leaf_port}",
        "client_id": leaf.cid,
        **({"domain": server.js.domain} if server.js is not None and server.js.domain else {}),
        "nonce": leaf.nonce,
        "info_on_connect": True,
        "leafnode_urls": server.leafnode_urls or [f"{host}:{server.leaf_port}"],
    }
    if server.leaf_tls is not None:
        info["tls_required"] = True
        if o.leafnodes.tls_verify:
            info["tls_verify"] = True
    return info


def leaf_json(leaf: Leaf) -> dict[str, Any]:
    return {
        "id": leaf.cid,
        "name": leaf.remote_name,
        "is_spoke": leaf.remote is not None,
        "account": leaf.account.name if leaf.account else "",
        "ip": leaf.ip,
        "port": leaf.port,
        "rtt": "0s",
        "in_msgs": leaf.in_msgs,
        "out_msgs": leaf.out_msgs,
        "in_bytes": leaf.in_bytes,
        "out_bytes": leaf.out_bytes,
        "subscriptions": len(leaf.leaf_subs),
        "compression": "off",
    }

