"""TLS on the hub's client, leafnode and route ports (nats-server `GenTLSConfig`, `getTLSConfig`, `doTLSHandshake`).

One accept path serves both ports (TLSListener): a connection is handed to its protocol (Leaf, Router) only once
its TLS handshake has succeeded, so no byte of the handshake can reach the protocol parser. The leafnode port
first writes its INFO in plain text (the preamble), as nats-server; the route port writes nothing before TLS.
A failed handshake is logged as nats-server does ("TLS route handshake error: ...") and the socket closed.

The client port, as nats-server 2.15.1 (docs/security.md, "TLS on the client port"): INFO in plain text with
`tls_required` (and `tls_verify`), then the TLS handshake, then CONNECT inside TLS; with `handshake_first` the
handshake comes first and the INFO inside TLS. A client that speaks plain text after the INFO fails the handshake
and is closed without a reply, as nats-server does. The authentication timer starts after the handshake.

Routes, as nats-server 2.15.1 does them (docs/cluster.md, "TLS on routes"):
- both sides handshake as soon as the TCP connection is up, before any protocol (no INFO in plain text); the
  accepting side's INFO, then everything else, travels inside TLS;
- TLS on routes is always mutual: the accepting side requires a client certificate whatever `verify` says, and
  the dialling side verifies the peer's certificate; both against `ca_file` (the system's roots without one);
- the dialling side checks the certificate for the host of the route URL (an IP address against the IP SANs), or
  for the first host name among the configured routes when the URL names an IP address (nats-server routeTLSName);
- `insecure: true` skips the dialling side's checks (with nats-server's warning).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from host.errors import TLS_HANDSHAKE_ERROR

if TYPE_CHECKING:
    from host.opts import ClusterOptions, GatewayOptions, LeafnodeOptions, Options

log = logging.getLogger("natsedge.hub")

# nats-server clusterTLSInsecureWarning
INSECURE_WARNING = ("TLS certificate chain and hostname of solicited routes will not be verified. "
                    "DO NOT USE IN PRODUCTION!")


class TLSConfigError(Exception):
    """A certificate, key or CA file that cannot be loaded; the message is one line naming the key."""


def _reason(e: Exception) -> str:
    if isinstance(e, ssl.SSLError):
        return str(e.reason or e)
    if isinstance(e, OSError):
        return str(e.strerror or e)
    return str(e)


def _prefix(section: str) -> str:
    return section + "." if section else ""  # "" is the client port's top-level `tls {}`


def _load_cert(ctx: ssl.SSLContext, section: str, cert: str, key: str | None) -> None:
    try:
        ctx.load_cert_chain(cert, key or None)
    except (OSError, ssl.SSLError) as e:
        raise TLSConfigError(f'{_prefix(section)}tls: cannot load cert_file "{cert}" with key_file "{key}": '
                             f"{_reason(e)}") from None


def _load_ca(ctx: ssl.SSLContext, section: str, ca: str | None, purpose: ssl.Purpose) -> None:
    """ca_file, or the system's roots without one (Go's x509 with nil roots)."""
    try:
        if ca:
            ctx.load_verify_locations(ca)
        else:
            ctx.load_default_certs(purpose)
    except (OSError, ssl.SSLError) as e:
        raise TLSConfigError(f'{_prefix(section)}tls: cannot load ca_file "{ca}": {_reason(e)}') from None


def server_context(section: str, cert: str, key: str | None, ca: str | None, verify: bool) -> ssl.SSLContext:
    """The accepting side: our certificate; with verify, a client certificate that ca_file trusts is required."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2  # nats-server's MinVersion
    _load_cert(ctx, section, cert, key)
    if verify:
        _load_ca(ctx, section, ca, ssl.Purpose.CLIENT_AUTH)
        ctx.verify_mode = ssl.CERT_REQUIRED
    elif ca:
        _load_ca(ctx, section, ca, ssl.Purpose.CLIENT_AUTH)
    return ctx


def client_context(section: str, cert: str | None, key: str | None, ca: str | None,
                   insecure: bool = False) -> ssl.SSLContext:
    """The dialling side: the peer's certificate checked against ca_file and the host dialled (unless insecure);
    our certificate sent when the peer asks for one."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert:
        _load_cert(ctx, section, cert, key)
    _load_ca(ctx, section, ca, ssl.Purpose.SERVER_AUTH)
    if insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def client_port_context(o: Options) -> ssl.SSLContext:
    """The client port's `tls {}` (or --tls* flags): with verify (or verify_and_map), a client certificate that
    ca_file trusts is required."""
    return server_context("", o.tls_cert or "", o.tls_key, o.tls_ca, o.tls_verify)


def leaf_server_context(lo: LeafnodeOptions) -> ssl.SSLContext:
    return server_context("leafnodes", lo.tls_cert or "", lo.tls_key, lo.tls_ca, lo.tls_verify)


def route_contexts(co: ClusterOptions | GatewayOptions,
                   section: str = "cluster") -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(accepting, dialling) contexts of the route port (or, section "gateway", the gateway port). As nats-server's
    getTLSConfig: verification is always mutual on routes and gateways (`verify` changes nothing), and one CA file
    serves both directions."""
    cert = co.tls_cert or ""
    return (server_context(section, cert, co.tls_key, co.tls_ca, verify=True),
            client_context(section, cert, co.tls_key, co.tls_ca, co.tls_insecure))


def log_handshake_error(what: str, ip: str, port: int, e: BaseException) -> None:
    """As nats-server: on routes an error (their port is not probed by load balancers), on the leafnode port at
    info level; then the close with its reason, at info level. On the client port an error, but a peer that left
    during the handshake (a port probe) only at debug level (isClientProbeTLSHandshakeError)."""
    reason = str(e) or type(e).__name__
    if what == "client":
        probe = isinstance(e, (ConnectionError, EOFError)) or "EOF" in reason
        log.log(logging.DEBUG if probe else logging.ERROR, "%s:%s - TLS handshake error: %s", ip, port, reason)
        log.debug("%s:%s - Client connection closed: %s", ip, port, TLS_HANDSHAKE_ERROR)
        return
    level = logging.ERROR if what == "route" else logging.INFO
    log.log(level, "%s:%s - TLS %s handshake error: %s", ip, port, what, reason)
    log.info("%s:%s - %s connection closed: %s", ip, port, "Router" if what == "route" else "Leafnode",
             TLS_HANDSHAKE_ERROR)


class TLSListener:
    """A listening socket whose connections are TLS from the start, or after a plain-text preamble (the INFO of the
    leafnode port and of the client port without handshake_first, made by `preamble(protocol, peer address)`). The
    protocol sees connection_made only after the handshake."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket, factory: Callable[[], Any],
                 ctx: ssl.SSLContext, what: str, timeout: float,
                 preamble: Callable[[Any, Any], bytes] | None = None) -> None:
        self.loop = loop
        self.sock = sock
        self.factory = factory
        self.ctx = ctx
        self.what = what
        self.timeout = timeout
        self.preamble = preamble
        self.tasks: set[asyncio.Task[None]] = set()
        self.closed = False
        sock.setblocking(False)
        self._spawn(self._accept_loop())

    def _spawn(self, coro: Any) -> None:
        task = self.loop.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _accept_loop(self) -> None:
        while not self.closed:
            try:
                conn, addr = await self.loop.sock_accept(self.sock)
            except OSError as e:
                if self.closed:
                    return
                log.error("Error accepting %s connection: %s", self.what, e)  # e.g. out of file descriptors
                await asyncio.sleep(0.1)
                continue
            self._spawn(self._handshake(conn, addr))

    async def _handshake(self, conn: socket.socket, addr: Any) -> None:
        conn.setblocking(False)
        protocol = self.factory()
        try:
            if self.preamble is not None:
                await self.loop.sock_sendall(conn, self.preamble(protocol, addr))
            await self.loop.connect_accepted_socket(lambda: protocol, conn, ssl=self.ctx,
                                                    ssl_handshake_timeout=self.timeout)
        except (OSError, TimeoutError) as e:  # ssl.SSLError and ConnectionError are OSErrors
            conn.close()
            if not self.closed:
                log_handshake_error(self.what, str(addr[0]), int(addr[1]), e)

    def close(self) -> None:
        """Stop accepting; handshakes under way are dropped."""
        self.closed = True
        for task in list(self.tasks):
            task.cancel()
        self.sock.close()


async def dial(loop: asyncio.AbstractEventLoop, factory: Callable[[], Any], host: str, port: int,
               connect_timeout: float, ctx: ssl.SSLContext, server_hostname: str, what: str,
               handshake_timeout: float) -> Exception | None:
    """Connect to host:port, then handshake TLS as the client checking `server_hostname`; the protocol sees
    connection_made only after both. A failed connect raises OSError/TimeoutError as create_connection does; a
    failed handshake is logged as nats-server does and returned."""
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    family, kind, proto, _, addr = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setblocking(False)
    try:
        await asyncio.wait_for(loop.sock_connect(sock, addr), connect_timeout)
    except BaseException:
        sock.close()
        raise
    try:
        await loop.create_connection(factory, sock=sock, ssl=ctx, server_hostname=server_hostname,
                                     ssl_handshake_timeout=handshake_timeout)
    except (OSError, TimeoutError) as e:
        sock.close()
        log_handshake_error(what, str(addr[0]), int(addr[1]), e)
        return e
    return None
