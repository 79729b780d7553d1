"""Server options: defaults, the config file (nats-server syntax) and command-line flags.

Mirrors nats-server's `server/opts.go`: keys are matched case-insensitively, an unknown key is an
error naming file:line:col as nats-server reports it, a wrong type is an error naming the key, and
the cases where nats-server only warns (an integer ping_interval) log a warning.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from host import conf
from host.conf import ConfError, ConfMap
from host.gotime import NS, parse_duration
from host.subject_transform import Mapping, MappingError
from host.sublist import is_valid_literal_subject, is_valid_subject

DEFAULT_PORT = 4222
MAX_PAYLOAD = 1024 * 1024
MAX_PENDING = 64 * 1024 * 1024
MAX_CONTROL_LINE = 4096
MAX_CONNECTIONS = 64 * 1024
PING_INTERVAL = 120.0
PING_MAX = 2
AUTH_TIMEOUT = 2.0
TLS_TIMEOUT = 2.0  # nats-server TLS_TIMEOUT: how long a TLS handshake may take
WRITE_DEADLINE = 10.0
LAME_DUCK_DURATION = 120.0
LAME_DUCK_GRACE = 10.0
GLOBAL_ACCOUNT = "$G"
SYSTEM_ACCOUNT = "$SYS"


class OptionsError(ValueError):
    """A configuration problem, in one line; str() names the file and line when it came from a config file."""

    def __init__(self, msg: str) -> None:
        # A quoted key or name can hold a line break: shown escaped, so the error stays one line (found by fuzzing).
        super().__init__(msg.replace("\r", "\\r").replace("\n", "\\n"))


@dataclass
class ResponsePermission:
    """allow_responses (nats-server ResponsePermission): a client may publish to the reply subject of each message
    it received, max_msgs times within expires seconds (<= 0: no limit)."""

    max_msgs: int = 1  # nats-server DEFAULT_ALLOW_RESPONSE_MAX_MSGS
    expires: float = 120.0  # DEFAULT_ALLOW_RESPONSE_EXPIRATION


@dataclass
class Permissions:
    pub_allow: list[bytes] | None = None
    pub_deny: list[bytes] | None = None
    sub_allow: list[bytes] | None = None  # entries may name a queue group: b"subject queue"
    sub_deny: list[bytes] | None = None
    allow_responses: ResponsePermission | None = None


@dataclass
class User:
    username: str | None = None
    password: str | None = None
    token: str | None = None
    account: str = GLOBAL_ACCOUNT
    permissions: Permissions | None = None
    nkey: str | None = None  # an nkey user (U...): authenticated by its signature of the INFO nonce (host/jwt.py)
    # a JWT user (host/jwt.py): its JWT's `iat` (revocations pushed later compare with it) and `exp` (0: never)
    issued_at: int = 0
    expires: int = 0
    # a JWT user's own `subs` / `payload` (-1: none), the first terms of the per-connection minimum (nats-server
    # applyAccountLimits)
    max_subscriptions: int = -1
    max_payload: int = -1
    bearer: bool = False  # a JWT user whose JWT is a bearer token (an account update may disallow those)


@dataclass
class Export:
    subject: bytes
    service: bool
    accounts: list[str] | None = None  # None: public
    allow_trace: bool = False  # a service export: message traces go on into this account (host/msgtrace.py)


@dataclass
class Import:
    account: str
    subject: bytes  # subject in the exporting account
    service: bool
    local: bytes  # subject in the importing account (`to`, or prefix + subject)
    allow_trace: bool = False  # a stream import: message traces go on into the importing account


@dataclass
class AccountLimits:
    """An account's quotas (nats-reference more/README.md §E): from `limits {...}` and `jetstream {...}` in its
    config block, or from a JWT account's claims. -1 means no limit."""

    max_connections: int = -1  # per account, newest connection cut first
    max_subscriptions: int = -1  # per connection: min(user, account, server)
    max_payload: int = -1  # per connection: min(user, account, server)
    max_leafnodes: int = -1
    js_max_memory: int = -1
    js_max_storage: int = -1
    js_max_streams: int = -1
    js_max_consumers: int = -1  # enforced per stream, as nats-server
    js_max_ack_pending: int = -1
    js_memory_max_stream_bytes: int = -1
    js_storage_max_stream_bytes: int = -1
    js_max_bytes_required: bool = False
    # a JWT account's tiered JetStream limits (`tiered_limits`): tier name ("R1", "R3") -> that tier's limits in the
    # js_ fields; the R1 tier's are also the ones above, since every stream of this hub is R1. Empty for flat limits.
    js_tiers: dict[str, AccountLimits] = field(default_factory=dict)
    # tiered limits without R1: stream creates get nats-server's 10120
    js_no_tier: bool = False


@dataclass
class AccountConfig:
    name: str
    users: list[User] = field(default_factory=list)
    exports: list[Export] = field(default_factory=list)
    imports: list[Import] = field(default_factory=list)
    default_permissions: Permissions | None = None  # given to its users without permissions of their own
    jetstream: bool | None = None  # `jetstream: enabled` in the account block
    limits: AccountLimits = field(default_factory=AccountLimits)
    # `msg_trace { dest, sampling }` (alias `trace_dest`): where the events of messages traced by a sampled W3C
    # `traceparent` go, and the percentage sampled (host/msgtrace.py)
    trace_dest: str | None = None
    trace_sampling: int = 0
    mappings: list[Mapping] = field(default_factory=list)  # `mappings` (alias `maps`): subject mappings


@dataclass
class RemoteLeafOptions:
    url: str
    account: str = GLOBAL_ACCOUNT
    user: str | None = None
    password: str | None = None
    token: str | None = None
    credentials: str | None = None  # a .creds file: user JWT + seed signing the hub's nonce (host/jwt.py)


@dataclass
class LeafnodeOptions:
    host: str = "0.0.0.0"
    port: int = 0  # 0: no leafnode port
    username: str | None = None
    password: str | None = None
    token: str | None = None
    nkey: str | None = None  # a single nkey (U...) a leaf signs the nonce with (host/jwt.py)
    account: str = GLOBAL_ACCOUNT  # account bound by the single user, token or nkey
    users: list[User] = field(default_factory=list)
    remotes: list[RemoteLeafOptions] = field(default_factory=list)
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_ca: str | None = None
    tls_verify: bool = False
    no_advertise: bool = False  # do not tell leafs the leafnode URLs of the other servers of the cluster


@dataclass
class ClusterOptions:
    """`cluster { ... }` (nats-server ClusterOpts): the route port and the routes to dial."""

    name: str = ""
    host: str = "0.0.0.0"
    port: int = 0  # the route port; 0 with `listen: host:0` picks a free one (enabled says whether it is on)
    enabled: bool = False
    routes: list[str] = field(default_factory=list)  # nats-route://[user:pass@]host:port
    username: str | None = None
    password: str | None = None
    auth_timeout: float = 0.0  # 0: the top-level auth_timeout
    no_advertise: bool = False
    connect_retries: int = 0  # implicit routes: attempts after a failure (explicit routes retry forever)
    advertise: str = ""
    # `tls { ... }` (host/tls.py): on routes TLS is always mutual, so `verify` changes nothing (as nats-server)
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_ca: str | None = None
    tls_verify: bool = False
    tls_timeout: float = TLS_TIMEOUT
    tls_insecure: bool = False  # the dialling side does not check the peer's certificate


@dataclass
class RemoteGatewayOptions:
    """One entry of `gateway.gateways`: a remote cluster and the URLs of its gateway ports."""

    name: str = ""
    urls: list[str] = field(default_factory=list)  # nats://[user:pass@]host:port


@dataclass
class GatewayOptions:
    """`gateway { ... }` (nats-server GatewayOpts): this cluster's gateway port and the remote clusters it dials
    (host/gateway.py, docs/supercluster.md)."""

    name: str = ""  # this cluster's name in the super-cluster (equal to cluster.name when both are given)
    host: str = "0.0.0.0"
    port: int = 0  # 0: no gateway; -1 (or `listen: host:0`): a free port
    enabled: bool = False
    gateways: list[RemoteGatewayOptions] = field(default_factory=list)
    username: str | None = None
    password: str | None = None
    auth_timeout: float = 0.0  # 0: the top-level auth_timeout
    reject_unknown_cluster: bool = False  # refuse inbound gateways of clusters not in `gateways`
    advertise: str = ""
    connect_retries: int = 0  # implicit gateways: attempts after a failure (explicit ones retry forever)
    # `tls { ... }` (host/tls.py), as on routes: always mutual
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_ca: str | None = None
    tls_verify: bool = False
    tls_timeout: float = TLS_TIMEOUT
    tls_insecure: bool = False


@dataclass
class Options:
    host: str = "0.0.0.0"
    port: int = DEFAULT_PORT
    server_name: str = ""
    http_host: str = ""
    http_port: int = 0
    max_payload: int = MAX_PAYLOAD
    max_pending: int = MAX_PENDING
    max_control_line: int = MAX_CONTROL_LINE
    max_connections: int = MAX_CONNECTIONS
    max_subscriptions: int = 0
    ping_interval: float = PING_INTERVAL
    ping_max: int = PING_MAX
    write_deadline: float = WRITE_DEADLINE
    lame_duck_duration: float = LAME_DUCK_DURATION
    lame_duck_grace_period: float = LAME_DUCK_GRACE
    auth_timeout: float = AUTH_TIMEOUT
    auth_timeout_set: bool = False  # given in the config: else, with TLS, tls_timeout + 1 s (validate)
    token: str | None = None
    username: str | None = None
    password: str | None = None
    users: list[User] = field(default_factory=list)
    default_permissions: Permissions | None = None  # authorization's, given to its users without permissions
    accounts: dict[str, AccountConfig] = field(default_factory=dict)
    mappings: list[Mapping] = field(default_factory=list)  # top-level `mappings`: the global account's
    no_auth_user: str | None = None
    # Operator mode (host/jwt.py): operator JWTs (inline or file paths), the system account's public key, the account
    # resolver ("" none, "MEMORY", "full" or "cache" for the directory resolver) and its preloaded account JWTs.
    operator_jwts: list[str] = field(default_factory=list)
    system_account: str = ""
    resolver: str = ""
    resolver_dir: str = ""
    resolver_preload: dict[str, str] = field(default_factory=dict)
    # `tls { ... }` on the client port (host/tls.py client_tls_context), or the --tls* flags
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_ca: str | None = None
    tls_verify: bool = False
    tls_map: bool = False  # verify_and_map: the client certificate names the user
    tls_timeout: float = TLS_TIMEOUT
    tls_handshake_first: bool = False  # TLS before the INFO (nats-server handshake_first)
    # Blocks that later parts of the hub implement; kept as parsed so they are not lost.
    leafnodes: LeafnodeOptions = field(default_factory=LeafnodeOptions)
    cluster: ClusterOptions = field(default_factory=ClusterOptions)
    gateway: GatewayOptions = field(default_factory=GatewayOptions)
    jetstream: bool = False
    store_dir: str = ""
    # jetstream { max_memory_store, max_file_store, sync_interval }: -1 means no limit; sync_interval in seconds,
    # or "always" (sync every write).
    js_max_memory: int = -1
    js_max_file: int = -1
    js_domain: str = ""  # jetstream { domain }: its API is also reachable as $JS.<domain>.API.>
    js_sync_interval: float | str = 120.0
    config_file: str = ""
    warnings: list[str] = field(default_factory=list)


class _Loader:
    """Walks a parsed config, raising OptionsError with file:line for the offending key."""

    def __init__(self, opts: Options) -> None:
        self.opts = opts

    def err(self, m: ConfMap, key: str, msg: str) -> OptionsError:
        try:
            fname, line = m.pos(key)
            return OptionsError(f"{fname}:{line}: {msg}")
        except (KeyError, AttributeError):
            return OptionsError(msg)

    def int_(self, m: ConfMap, key: str, minimum: int = 0) -> int:
        v = m[key]
        if isinstance(v, bool) or not isinstance(v, int):
            raise self.err(m, key, f'field "{key}": expected an integer, got {v!r}')
        if v < minimum:
            raise self.err(m, key, f'field "{key}": must be >= {minimum}, got {v}')
        return v

    def str_(self, m: ConfMap, key: str) -> str:
        v = m[key]
        if isinstance(v, bool) or not isinstance(v, (str, int, float)):
            raise self.err(m, key, f'field "{key}": expected a string, got {v!r}')
        return str(v)

    def bool_(self, m: ConfMap, key: str) -> bool:
        v = m[key]
        if not isinstance(v, bool):
            raise self.err(m, key, f'field "{key}": expected true or false, got {v!r}')
        return v

    def duration(self, m: ConfMap, key: str) -> float:
        v = m[key]
        if isinstance(v, bool):
            raise self.err(m, key, f'field "{key}": expected a duration, got {v!r}')
        if isinstance(v, (int, float)):
            # nats-server accepts a number of seconds with a warning.
            fname, line = m.pos(key)
            self.opts.warnings.append(f"{fname}:{line}: {key} should be converted to a duration")
            return float(v)
        if not isinstance(v, str):
            raise self.err(m, key, f'field "{key}": expected a duration, got {v!r}')
        try:
            # nats-server reads a duration string with Go's time.ParseDuration
            return parse_duration(v.strip()) / NS
        except ValueError as e:
            raise self.err(m, key, f'field "{key}": {e}') from None

    def auth_timeout(self, m: ConfMap, key: str) -> float:
        """An authorization timeout: seconds as a number (nats-server's usual form) or a duration string."""
        v = m[key]
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            if v < 0:
                raise self.err(m, key, f'field "{key}": must be >= 0, got {v}')
            return float(v)
        return self.duration(m, key)

    def map_(self, m: ConfMap, key: str) -> ConfMap:
        v = m[key]
        if not isinstance(v, ConfMap):
            raise self.err(m, key, f'field "{key}": expected a map {{ ... }}, got {v!r}')
        return v

    def list_(self, m: ConfMap, key: str) -> list:
        v = m[key]
        if isinstance(v, str):
            return [v]
        if not isinstance(v, list):
            raise self.err(m, key, f'field "{key}": expected an array [ ... ], got {v!r}')
        return v

    def unknown(self, m: ConfMap, key: str) -> OptionsError | None:
        """The unknown-field error, or None for a key that only defines a variable used elsewhere."""
        if m.used_as_variable(key):
            return None
        return self.err(m, key, f'unknown field "{key}"')

    def _unknown(self, m: ConfMap, key: str) -> None:
        e = self.unknown(m, key)
        if e is not None:
            raise e

    # -- top level --------------------------------------------------------------------------

    def load(self, top: ConfMap) -> None:
        o = self.opts
        for key in top:
            k = key.lower()
            if k in ("host", "net", "listen_host"):
                o.host = self.str_(top, key)
            elif k == "listen":
                hp = self.str_(top, key)
                h, _, p = hp.rpartition(":")
                if not p.isdigit():
                    raise self.err(top, key, f'field "listen": expected host:port, got {hp!r}')
                o.host, o.port = h or o.host, int(p)
            elif k == "port":
                o.port = self.int_(top, key)
            elif k in ("server_name", "name"):
                o.server_name = self.str_(top, key)
            elif k in ("http", "monitor"):
                hp = self.str_(top, key)
                h, _, p = hp.rpartition(":")
                if not p.isdigit():
                    raise self.err(top, key, f'field "{key}": expected host:port or port, got {hp!r}')
                o.http_host, o.http_port = h, int(p)
            elif k in ("http_port", "monitor_port"):
                o.http_port = self.int_(top, key)
            elif k == "http_host":
                o.http_host = self.str_(top, key)
            elif k == "max_payload":
                o.max_payload = self.int_(top, key, 1)
            elif k == "max_pending":
                o.max_pending = self.int_(top, key, 1)
            elif k == "max_control_line":
                o.max_control_line = self.int_(top, key, 1)
            elif k == "max_connections":
                o.max_connections = self.int_(top, key)
            elif k == "max_subscriptions":
                o.max_subscriptions = self.int_(top, key)
            elif k == "ping_interval":
                o.ping_interval = self.duration(top, key)
            elif k == "ping_max":
                o.ping_max = self.int_(top, key, 1)
            elif k == "write_deadline":
                o.write_deadline = self.duration(top, key)
            elif k == "lame_duck_duration":
                o.lame_duck_duration = self.duration(top, key)
            elif k == "lame_duck_grace_period":
                o.lame_duck_grace_period = self.duration(top, key)
            elif k == "authorization":
                self.load_authorization(self.map_(top, key))
            elif k == "accounts":
                self.load_accounts(self.map_(top, key))
            elif k in ("mappings", "maps"):
                o.mappings = self.load_mappings(top, key)
            elif k == "no_auth_user":
                o.no_auth_user = self.str_(top, key)
            elif k in ("operator", "operators", "trusted_operators"):
                o.operator_jwts.extend(self.str_list(top, key))
            elif k == "system_account":
                o.system_account = self.str_(top, key)
            elif k == "resolver":
                self.load_resolver(top, key)
            elif k == "resolver_preload":
                pre = self.map_(top, key)
                o.resolver_preload.update({a: self.str_(pre, a) for a in pre})
            elif k in ("leafnodes", "leaf"):
                self.load_leafnodes(self.map_(top, key))
            elif k == "cluster":
                self.load_cluster(self.map_(top, key))
            elif k == "gateway":
                self.load_gateway(self.map_(top, key))
            elif k == "jetstream":
                self.load_jetstream(top, key)
            elif k == "tls":
                self.load_tls(top, key)
            elif k in ("debug", "trace", "logtime", "trace_verbose", "log_file", "pid_file", "syslog"):
                continue  # logging switches: accepted, our logging is fixed
            else:
                self._unknown(top, key)

    def str_list(self, m: ConfMap, key: str) -> list[str]:
        v = self.list_(m, key)
        if not all(isinstance(x, str) for x in v):
            raise self.err(m, key, f'field "{key}": expected strings, got {v!r}')
        return v

    def load_resolver(self, top: ConfMap, key: str) -> None:
        """`resolver: MEMORY`, or the directory resolver `resolver { type: full|cache, dir: ... }` (nats-server
        parseAccountResolver); URL resolvers are refused, since this hub fetches nothing over HTTP."""
        o = self.opts
        v = top[key]
        if isinstance(v, str):
            if v.upper() != "MEMORY":
                raise self.err(top, key, f'field "resolver": only MEMORY or a {{ type: full|cache, dir }} block is '
                               f"supported by this hub, got {v!r}")
            o.resolver = "MEMORY"
            return
        m = self.map_(top, key)
        o.resolver = "full"
        for k in m:
            lk = k.lower()
            if lk == "type":
                t = self.str_(m, k).lower()
                if t not in ("full", "cache"):
                    raise self.err(m, k, f'field "resolver.type": expected full or cache, got {t!r}')
                o.resolver = t
            elif lk == "dir":
                o.resolver_dir = self.str_(m, k)
            elif lk in ("allow_delete", "interval", "limit", "ttl", "timeout", "hard_delete"):
                continue  # tuning of nats-server's resolver synchronisation between servers; there is none here
            else:
                self._unknown(m, k)
        if not o.resolver_dir:
            raise self.err(top, key, 'field "resolver": a directory resolver needs "dir"')

    def load_tls(self, top: ConfMap, tls_key: str) -> None:
        """The client port's `tls { ... }` (nats-server parseTLS, with its error texts)."""
        o = self.opts
        m = self.map_(top, tls_key)
        for key in m:
            k = key.lower()
            if k == "cert_file":
                o.tls_cert = self.str_(m, key)
            elif k == "key_file":
                o.tls_key = self.str_(m, key)
            elif k == "ca_file":
                o.tls_ca = self.str_(m, key)
            elif k == "verify":
                o.tls_verify = self.bool_(m, key)
            elif k == "verify_and_map":
                if self.bool_(m, key):
                    o.tls_verify = o.tls_map = True
            elif k == "timeout":
                o.tls_timeout = self.auth_timeout(m, key) or TLS_TIMEOUT
            elif k in ("handshake_first", "first", "immediate"):
                o.tls_handshake_first = self.handshake_first(m, key)
            elif k in ("cipher_suites", "curve_preferences"):
                o.warnings.append(f"{_where(m, key)}tls.{key} ignored: this hub uses Python's ssl defaults")
            else:
                self._unknown(m, key)
        if not o.tls_cert:
            raise self.err(top, tls_key, "missing 'cert_file' in TLS configuration")
        if not o.tls_key:
            raise self.err(top, tls_key, "missing 'key_file' in TLS configuration")

    def handshake_first(self, m: ConfMap, key: str) -> bool:
        v = m[key]
        if isinstance(v, bool):
            return v
        if isinstance(v, str) and v.lower() in ("true", "on", "false", "off"):
            return v.lower() in ("true", "on")
        if isinstance(v, str):
            # "auto" or a duration: nats-server then falls back to INFO first for clients that wait; not here
            raise self.err(m, key, f'field "{key}"\'s value "{v}" is not supported by this hub (true or false)')
        raise self.err(m, key, f'field "{key}" should be a boolean or a string, got {v!r}')

    def load_jetstream(self, top: ConfMap, key: str) -> None:
        v = top[key]
        if isinstance(v, bool):
            self.opts.jetstream = v
            return
        if isinstance(v, str) and v.lower() in ("enabled", "enable", "disabled", "disable"):
            self.opts.jetstream = v.lower().startswith("enable")
            return
        m = self.map_(top, key)
        self.opts.jetstream = True
        for k in m:
            lk = k.lower()
            if lk in ("store_dir", "store"):
                self.opts.store_dir = self.str_(m, k)
            elif lk in ("max_memory_store", "max_mem"):
                self.opts.js_max_memory = self.int_(m, k, -1)
            elif lk in ("max_file_store", "max_file"):
                self.opts.js_max_file = self.int_(m, k, -1)
            elif lk in ("sync_interval", "sync"):
                v = m[k]
                if isinstance(v, str) and v.lower() == "always":
                    self.opts.js_sync_interval = "always"
                else:
                    self.opts.js_sync_interval = self.duration(m, k)
            elif lk == "domain":
                domain = self.str_(m, k)
                if not domain or any(c in domain for c in ".*> \t"):
                    # nats-server validateOptions
                    raise self.err(m, k, "invalid domain name: may not contain ., * or >")
                self.opts.js_domain = domain
            elif lk == "enabled":
                self.opts.jetstream = self.bool_(m, k)
            else:
                self._unknown(m, k)

    def load_cluster(self, m: ConfMap) -> None:
        co = self.opts.cluster
        co.enabled = True
        for key in m:
            k = key.lower()
            if k == "name":
                co.name = self.str_(m, key)
                if not co.name or " " in co.name:
                    raise self.err(m, key, f'field "cluster.name": a cluster name cannot be empty or contain '
                                   f'spaces, got {co.name!r}')
            elif k == "listen":
                hp = self.str_(m, key)
                h, _, p = hp.rpartition(":")
                if not p.isdigit() or int(p) > 65535:
                    raise self.err(m, key, f'field "cluster.listen": expected host:port, got {hp!r}')
                co.host, co.port = h or co.host, int(p)
            elif k == "port":
                co.port = self.int_(m, key)
                if co.port > 65535:
                    raise self.err(m, key, f'field "cluster.port": out of range, got {co.port}')
            elif k == "host":
                co.host = self.str_(m, key)
            elif k == "routes":
                for r in self.list_(m, key):
                    co.routes.append(self.route_url(m, key, r))
            elif k == "authorization":
                self.load_cluster_authorization(self.map_(m, key))
            elif k == "no_advertise":
                co.no_advertise = self.bool_(m, key)
            elif k == "connect_retries":
                co.connect_retries = self.int_(m, key)
            elif k in ("advertise", "cluster_advertise"):
                co.advertise = self.str_(m, key)
            elif k == "pool_size":
                n = m[key]
                if isinstance(n, bool) or not isinstance(n, int):
                    raise self.err(m, key, f'field "cluster.pool_size": expected an integer, got {n!r}')
                # nats-server pools routes only with peers that announce a pool; we announce none, so every
                # peer keeps one connection to us that names the account on each line (its "no pool" mode).
                self.opts.warnings.append(f"{_where(m, key)}cluster.pool_size {n} ignored: natsedge routes use "
                                          "one connection per peer (nats-server's no-pool mode)")
            elif k == "tls":
                self.load_link_tls(m, key, co, "cluster")
            elif k == "permissions":
                # Refused rather than ignored: a permission that is not enforced is worse than none.
                raise self.err(m, key, 'field "cluster.permissions": route import/export permissions are not '
                               "supported by this hub yet (docs/cluster.md)")
            elif k in ("compression", "accounts", "ping_interval", "ping_max"):
                continue  # accepted: we never compress, keep one route for all accounts, ping links as leafs
            else:
                self._unknown(m, key)

    def route_url(self, m: ConfMap, key: str, r: Any) -> str:
        if not isinstance(r, str) or split_url(r) is None:
            raise self.err(m, key, f'field "cluster.routes": expected a URL like nats-route://host:6222, got {r!r}')
        return r

    def load_cluster_authorization(self, m: ConfMap) -> None:
        co = self.opts.cluster
        for key in m:
            k = key.lower()
            if k in ("user", "username"):
                co.username = self.str_(m, key)
            elif k in ("pass", "password"):
                co.password = self.str_(m, key)
            elif k == "timeout":
                co.auth_timeout = self.auth_timeout(m, key)
            else:
                self._unknown(m, key)

    def load_link_tls(self, parent: ConfMap, tls_key: str, co: ClusterOptions | GatewayOptions, section: str) -> None:
        """`tls { ... }` of `cluster` or `gateway`: the same keys on both, as nats-server."""
        m = self.map_(parent, tls_key)
        for key in m:
            k = key.lower()
            if k == "cert_file":
                co.tls_cert = self.str_(m, key)
            elif k == "key_file":
                co.tls_key = self.str_(m, key)
            elif k == "ca_file":
                co.tls_ca = self.str_(m, key)
            elif k == "verify":
                co.tls_verify = self.bool_(m, key)
            elif k == "insecure":
                co.tls_insecure = self.bool_(m, key)
            elif k == "timeout":
                co.tls_timeout = self.auth_timeout(m, key) or TLS_TIMEOUT
            elif k == "handshake_first":
                continue  # nats-server reads it but routes and gateways handshake first anyway
            else:
                self._unknown(m, key)
        missing = "cert_file" if not co.tls_cert else "key_file" if not co.tls_key else ""
        if missing:
            what = "routes" if section == "cluster" else "gateways"
            raise self.err(parent, tls_key, f'field "{section}.tls": missing "{missing}" (TLS on {what} needs '
                           "cert_file and key_file)")

    def load_gateway(self, m: ConfMap) -> None:
        """`gateway { ... }` as nats-server parseGateway reads it; one-line errors naming the key."""
        go = self.opts.gateway
        go.enabled = True
        for key in m:
            k = key.lower()
            if k == "name":
                go.name = self.str_(m, key)
                if not go.name or " " in go.name:
                    raise self.err(m, key, f'field "gateway.name": a gateway name cannot be empty or contain '
                                   f"spaces, got {go.name!r}")
            elif k == "listen":
                hp = self.str_(m, key)
                h, _, p = hp.rpartition(":")
                if not p.isdigit() or int(p) > 65535:
                    raise self.err(m, key, f'field "gateway.listen": expected host:port, got {hp!r}')
                go.host, go.port = h or go.host, int(p) or -1
            elif k == "port":
                v = m[key]
                if isinstance(v, bool) or not isinstance(v, int) or not -1 <= v <= 65535:
                    raise self.err(m, key, f'field "gateway.port": expected -1 (a free port) to 65535, got {v!r}')
                go.port = v
            elif k in ("host", "net"):
                go.host = self.str_(m, key)
            elif k == "gateways":
                for i, g in enumerate(self.list_(m, key)):
                    go.gateways.append(self.remote_gateway(m, key, i, g))
            elif k == "authorization":
                self.load_gateway_authorization(self.map_(m, key))
            elif k in ("reject_unknown", "reject_unknown_cluster"):
                go.reject_unknown_cluster = self.bool_(m, key)
            elif k in ("advertise", "gateway_advertise"):
                go.advertise = self.str_(m, key)
            elif k == "connect_retries":
                go.connect_retries = self.int_(m, key)
            elif k == "tls":
                self.load_link_tls(m, key, go, "gateway")
            elif k in ("connect_backoff", "write_deadline", "write_timeout"):
                continue  # accepted: we retry at a fixed pace and use the top-level write_deadline
            else:
                self._unknown(m, key)
        if not go.name:
            raise OptionsError("gateway has no name")  # (nats-server validateGatewayOptions, as the next one)
        if go.port == 0:
            raise OptionsError(f'gateway "{go.name}" has no port specified (select -1 for random port)')

    def remote_gateway(self, m: ConfMap, key: str, i: int, g: Any) -> RemoteGatewayOptions:
        if not isinstance(g, ConfMap):
            raise self.err(m, key, f'field "gateway.gateways": expected {{name, url}} maps, got {g!r}')
        r = RemoteGatewayOptions()
        for gk in g:
            lk = gk.lower()
            if lk == "name":
                r.name = self.str_(g, gk)
            elif lk in ("url", "urls"):
                for u in self.list_(g, gk):
                    if not isinstance(u, str) or split_url(u) is None:
                        raise self.err(g, gk, f'field "gateway.gateways.{lk}": expected a URL like '
                                       f"nats://host:7222, got {u!r}")
                    r.urls.append(u)
            else:
                self._unknown(g, gk)
        if not r.name:
            raise self.err(m, key, f"gateway in the list {i} has no name")
        if not r.urls:
            raise self.err(m, key, f'gateway "{r.name}" has no URL')
        return r

    def load_gateway_authorization(self, m: ConfMap) -> None:
        go = self.opts.gateway
        for key in m:
            k = key.lower()
            if k in ("user", "username"):
                go.username = self.str_(m, key)
            elif k in ("pass", "password"):
                go.password = self.str_(m, key)
            elif k == "timeout":
                go.auth_timeout = self.auth_timeout(m, key)
            else:
                self._unknown(m, key)

    def load_leafnodes(self, m: ConfMap) -> None:
        lo = self.opts.leafnodes
        for key in m:
            k = key.lower()
            if k == "listen":
                hp = self.str_(m, key)
                h, _, p = hp.rpartition(":")
                if not p.isdigit():
                    raise self.err(m, key, f'field "leafnodes.listen": expected host:port, got {hp!r}')
                lo.host, lo.port = h or lo.host, int(p)
            elif k == "port":
                lo.port = self.int_(m, key)
            elif k == "host":
                lo.host = self.str_(m, key)
            elif k == "authorization":
                self.load_leaf_authorization(self.map_(m, key))
            elif k == "remotes":
                for r in self.list_(m, key):
                    lo.remotes.append(self.load_remote(m, key, r))
            elif k == "tls":
                self.load_leaf_tls(self.map_(m, key))
            elif k == "no_advertise":
                lo.no_advertise = self.bool_(m, key)
            elif k in ("reconnect", "advertise", "compression", "min_version"):
                continue  # accepted; this hub never compresses and uses a fixed reconnect delay
            else:
                self._unknown(m, key)

    def load_leaf_tls(self, m: ConfMap) -> None:
        lo = self.opts.leafnodes
        for key in m:
            k = key.lower()
            if k == "cert_file":
                lo.tls_cert = self.str_(m, key)
            elif k == "key_file":
                lo.tls_key = self.str_(m, key)
            elif k == "ca_file":
                lo.tls_ca = self.str_(m, key)
            elif k == "verify":
                lo.tls_verify = self.bool_(m, key)
            elif k in ("timeout", "handshake_first"):
                continue
            else:
                self._unknown(m, key)
        if not (lo.tls_cert and lo.tls_key):
            raise self.err(m, next(iter(m), "tls"), "leafnodes tls needs cert_file and key_file")

    def load_leaf_authorization(self, m: ConfMap) -> None:
        lo = self.opts.leafnodes
        for key in m:
            k = key.lower()
            if k in ("user", "username"):
                lo.username = self.str_(m, key)
            elif k in ("pass", "password"):
                lo.password = self.str_(m, key)
            elif k == "token":
                lo.token = self.str_(m, key)
            elif k == "account":
                lo.account = self.str_(m, key)
            elif k == "nkey":
                lo.nkey = self.str_(m, key)
            elif k == "users":
                lo.users = self.load_users(m, key, GLOBAL_ACCOUNT)
                for u in lo.users:
                    if u.nkey is not None:  # nats-server parseLeafUsers takes users and passwords only
                        raise self.err(m, key, 'unknown field "nkey" (a leafnode user has a user and password; a '
                                       'single nkey is leafnodes { authorization { nkey } })')
                if any(u.permissions is not None for u in lo.users):
                    # nats-server parseLeafUsers knows no permissions there: refused, not silently ignored
                    raise self.err(m, key, 'unknown field "permissions" (leafnode users have no permissions; give '
                                   "the leaf a user of the authorization block or of an account instead)")
            elif k == "timeout":
                continue
            else:
                self._unknown(m, key)

    def load_remote(self, m: ConfMap, key: str, r: Any) -> RemoteLeafOptions:
        if not isinstance(r, ConfMap):
            raise self.err(m, key, f"each leafnode remote must be a map, got {r!r}")
        url = None
        ro = RemoteLeafOptions(url="")
        for k in r:
            lk = k.lower()
            if lk in ("url", "urls"):
                v = r[k]
                url = v[0] if isinstance(v, list) and v else v
                if not isinstance(url, str) or "://" not in url:
                    raise self.err(r, k, f'field "{k}": expected a URL like nats-leaf://host:7422, got {v!r}')
            elif lk == "account":
                ro.account = self.str_(r, k)
            elif lk in ("user", "username"):
                ro.user = self.str_(r, k)
            elif lk in ("pass", "password"):
                ro.password = self.str_(r, k)
            elif lk == "token":
                ro.token = self.str_(r, k)
            elif lk == "credentials":
                ro.credentials = self.str_(r, k)  # read and checked by host/jwt.py check_options
            elif lk in ("tls", "ws_compression", "compression", "hub", "deny_imports",
                        "deny_exports", "no_randomize"):
                continue
            else:
                self._unknown(r, k)
        if url is None:
            raise self.err(m, key, "a leafnode remote needs a url")
        ro.url = url
        return ro

    def load_authorization(self, m: ConfMap) -> None:
        o = self.opts
        for key in m:
            k = key.lower()
            if k in ("user", "username"):
                o.username = self.str_(m, key)
            elif k in ("pass", "password"):
                o.password = self.str_(m, key)
            elif k == "token":
                o.token = self.str_(m, key)
            elif k == "timeout":
                o.auth_timeout = self.auth_timeout(m, key)
                o.auth_timeout_set = True
            elif k == "users":
                o.users.extend(self.load_users(m, key, GLOBAL_ACCOUNT))
            elif k in ("permissions", "default_permissions", "default_permission"):
                o.default_permissions = self.load_permissions(self.map_(m, key))
            else:
                self._unknown(m, key)
        # As nats-server parseAuthorization: the block's permissions are the default of its own users only (not of
        # a token, a single user, or users of accounts).
        _apply_default_permissions(o.users, o.default_permissions)
        if o.users and (o.username or o.token):
            raise OptionsError("authorization: can not have a single user/pass or token and a users array")

    def load_users(self, m: ConfMap, key: str, account: str) -> list[User]:
        users = []
        for entry in self.list_(m, key):
            if not isinstance(entry, ConfMap):
                raise self.err(m, key, f'field "{key}": each user must be a map, got {entry!r}')
            u = User(account=account)
            for k in entry:
                lk = k.lower()
                if lk in ("user", "username"):
                    u.username = self.str_(entry, k)
                elif lk in ("pass", "password"):
                    u.password = self.str_(entry, k)
                elif lk == "permissions":
                    u.permissions = self.load_permissions(self.map_(entry, k))
                elif lk == "account":
                    u.account = self.str_(entry, k)
                elif lk == "nkey":
                    u.nkey = self.str_(entry, k)
                elif lk == "allowed_connection_types":
                    raise self.err(entry, k, f'field "{k}" is not supported by this hub')
                else:
                    self._unknown(entry, k)
            # nats-server parseUsers' checks and texts (the key itself is checked by host/jwt.py check_options)
            if not u.username and not u.nkey:
                raise self.err(m, key, "User entry requires a user")
            if u.nkey is not None and (u.username or u.password):
                raise self.err(m, key, "Nkey users do not take usernames or passwords")
            users.append(u)
        return users

    def load_permissions(self, m: ConfMap) -> Permissions:
        p = Permissions()
        for key in m:
            k = key.lower()
            if k in ("publish", "pub", "subscribe", "sub"):
                sub = k.startswith("sub")
                v = m[key]
                if isinstance(v, ConfMap):
                    allow = [self._subj(v, a_k, s, sub) for s in self.list_(v, a_k)] if (a_k := _ci(v, "allow")) \
                        else None
                    deny = [self._subj(v, d_k, s, sub) for s in self.list_(v, d_k)] if (d_k := _ci(v, "deny")) \
                        else None
                    for extra in v:
                        if extra.lower() not in ("allow", "deny"):
                            self._unknown(v, extra)
                else:
                    allow = [self._subj(m, key, s, sub) for s in self.list_(m, key)]
                    deny = None
                if sub:
                    p.sub_allow, p.sub_deny = allow, deny
                else:
                    p.pub_allow, p.pub_deny = allow, deny
            elif k in ("allow_responses", "publish_allow_responses"):
                p.allow_responses = self.load_allow_responses(m, key)
            else:
                self._unknown(m, key)
        if p.allow_responses is not None and p.pub_allow is None:
            # As nats-server: allow_responses turns off the blanket publish allow (nats-server does this only when
            # it reads allow_responses after publish, and Go visits a map's keys in random order; we always do).
            p.pub_allow = []
        return p

    def load_allow_responses(self, m: ConfMap, key: str) -> ResponsePermission | None:
        """`allow_responses: true`, or a map of max (responses per request) and expires (a duration); 0 or
        missing keeps nats-server's default, a negative value means no limit."""
        v = m[key]
        if isinstance(v, bool):
            return ResponsePermission() if v else None
        if not isinstance(v, ConfMap):
            raise self.err(m, key, f'field "{key}": expected true, false or a map {{ max, expires }}, got {v!r}')
        rp = ResponsePermission()
        for k in v:
            lk = k.lower()
            if lk in ("max", "max_msgs", "max_messages", "max_responses"):
                n = v[k]
                if isinstance(n, bool) or not isinstance(n, int):
                    raise self.err(v, k, f'field "{k}": expected an integer, got {n!r}')
                if n:
                    rp.max_msgs = n
            elif lk in ("expires", "expiration", "ttl"):
                if not isinstance(v[k], str):
                    raise self.err(v, k, f'field "{k}": expected a duration string like "1m", got {v[k]!r}')
                d = self.duration(v, k)
                if d:
                    rp.expires = d
            else:
                self._unknown(v, k)
        return rp

    def _subj(self, m: ConfMap, key: str, s: Any, queue_ok: bool) -> bytes:
        """A permission subject; subscribe entries may add a queue group ("subject queue"), as nats-server's
        checkPermSubjectArray."""
        text = s if isinstance(s, str) else ""
        parts = text.split()
        if is_valid_subject(text.encode()):
            return text.encode()
        if queue_ok and len(parts) == 2:
            if not is_valid_subject(parts[0].encode()):
                raise self.err(m, key, f'subject "{parts[0]}" is not a valid subject')
            if not is_valid_subject(parts[1].encode()):
                raise self.err(m, key, f'queue "{parts[1]}" is not a valid queue')
            return f"{parts[0]} {parts[1]}".encode()
        raise self.err(m, key, f"subject {s!r} is not a valid subject" if not isinstance(s, str)
                       else f'subject "{s}" is not a valid subject')

    def load_accounts(self, m: ConfMap) -> None:
        for name in m:
            acc = AccountConfig(name=name)
            body = m[name]
            if not isinstance(body, ConfMap):
                raise self.err(m, name, f'account "{name}": expected a map {{ users, exports, imports }}')
            pending_imports = []
            for key in body:
                k = key.lower()
                if k == "users":
                    acc.users = self.load_users(body, key, name)
                elif k == "exports":
                    for e in self.list_(body, key):
                        acc.exports.append(self.load_export(body, key, e))
                elif k == "imports":
                    pending_imports.extend((body, key, i) for i in self.list_(body, key))
                elif k == "jetstream":
                    self.load_account_jetstream(body, key, acc)
                elif k == "limits":
                    self.load_account_limits(self.map_(body, key), acc.limits)
                elif k == "default_permissions":
                    acc.default_permissions = self.load_permissions(self.map_(body, key))
                elif k in ("mappings", "maps"):
                    acc.mappings = self.load_mappings(body, key)
                elif k in ("msg_trace", "trace_dest"):
                    self.load_account_msg_trace(body, key, acc)
                else:
                    self._unknown(body, key)
            acc.imports = [self.load_import(b, k, i) for b, k, i in pending_imports]
            _apply_default_permissions(acc.users, acc.default_permissions)
            self.opts.accounts[name] = acc

    def load_mappings(self, m: ConfMap, key: str) -> list[Mapping]:
        """`mappings { src: dest, src: [ { destination, weight, cluster }, ... ], src: { ... } }`, as nats-server
        parseAccountMappings and AddWeightedMappings (their texts). A later entry for the same source replaces it."""
        v = m[key]
        if not isinstance(v, ConfMap):
            raise self.err(m, key, f"interface conversion: interface {{}} is {_go_type(v)}, "
                                   "not map[string]interface {}")
        out: dict[str, Mapping] = {}
        for src in v:
            if not is_valid_subject(src.encode()):
                raise self.err(v, src, f'Subject "{src}" is not a valid subject')
            d = v[src]
            try:
                if isinstance(d, str):
                    try:
                        out[src] = Mapping(src, [(d, 100, "")])
                    except MappingError as e:
                        raise self.err(v, src, f'Error adding mapping for "{src}" to "{d}" : {e}') from None
                    continue
                dests = [self._map_dest(v, src, x) for x in (d if isinstance(d, list) else [d])]
                out[src] = Mapping(src, dests)
            except MappingError as e:
                raise self.err(v, src, f'Error adding mapping for "{src}" : {e}') from None
        return list(out.values())

    def _map_dest(self, m: ConfMap, src: str, d: Any) -> tuple[str, int, str]:
        """One weighted destination (parseAccountMapDest): (destination, weight, cluster)."""
        if not isinstance(d, ConfMap):
            raise self.err(m, src, "Expected an entry for the mapping destination")
        subject = None
        weight = None
        cluster = ""
        for k in d:
            lk = k.lower()
            val = d[k]
            if lk in ("dest", "destination", "cluster"):
                if not isinstance(val, str):
                    raise self.err(d, k, f"interface conversion: interface {{}} is {_go_type(val)}, not string")
                if lk == "cluster":
                    cluster = val
                else:
                    subject = val
            elif lk == "weight":
                if isinstance(val, str):
                    text = val[:-1] if val.endswith("%") else val
                    if not re.fullmatch(r"[+-]?[0-9]+", text):
                        raise self.err(d, k, f'Invalid weight "{text}" for mapping destination')
                    val = int(text)
                elif isinstance(val, bool) or not isinstance(val, int):
                    raise self.err(d, k, f"Unknown entry type for weight of {val}")
                if not 0 <= val <= 100:
                    raise self.err(d, k, f"Invalid weight {val} for mapping destination")
                weight = val
            else:
                raise self.err(d, k, f'Unknown field "{k}" for mapping destination')
        if weight is None:
            raise self.err(m, src, f'Missing weight for mapping destination "{subject or ""}"')
        if not subject:
            # nats-server takes it and then crashes on the first message to the source
            raise self.err(m, src, f'Missing destination for the mapping of "{src}"')
        return subject, weight, cluster

    def load_account_msg_trace(self, body: ConfMap, key: str, acc: AccountConfig) -> None:
        """`msg_trace: "dest"` or `msg_trace { dest: "subj", sampling: 1-100 or "NN%" }`, as nats-server
        parseAccountMsgTrace (its texts); a destination without sampling samples everything."""
        v = body[key]

        def dest(m: ConfMap, k: str) -> None:
            d = m[k]
            if not isinstance(d, str):
                raise self.err(m, k, f'Field "{k}" should be a string, got {_go_type(d)}')
            if not is_valid_literal_subject(d.encode()):
                raise self.err(m, k, f'Trace destination "{d}" is not valid')
            acc.trace_dest = d

        if isinstance(v, str):
            dest(body, key)
        elif isinstance(v, ConfMap):
            for k in v:
                lk = k.lower()
                if lk == "dest":
                    dest(v, k)
                elif lk == "sampling":
                    n = v[k]
                    if isinstance(n, str):
                        text = n[:-1] if n.endswith("%") else n
                        if not text.lstrip("+-").isdigit():
                            raise self.err(v, k, f'Invalid trace destination sampling value "{n}"')
                        n = int(text)
                    elif isinstance(n, bool) or not isinstance(n, int):
                        raise self.err(v, k, f'Trace destination sampling field "{k}" should be an integer or a '
                                             f"percentage, got {_go_type(n)}")
                    if not 0 < n <= 100:
                        raise self.err(v, k, f"Ttrace destination sampling value {n} is invalid, needs to be "
                                             "[1..100]")
                    acc.trace_sampling = n
                elif not v.used_as_variable(k):
                    raise self.err(v, k, f'Unknown field "{k}" parsing account message trace map/struct "{key}"')
        else:
            raise self.err(body, key, f'Expected account message trace "{key}" to be a string or a map/struct, got '
                                      f"{_go_type(v)}")
        if acc.trace_dest is not None and acc.trace_sampling == 0:
            acc.trace_sampling = 100
        elif acc.trace_dest is None and acc.trace_sampling:
            self.opts.warnings.append(f"{_where(body, key)}Trace destination sampling ignored since no destination "
                                      "was set")
            acc.trace_sampling = 0

    def load_account_limits(self, m: ConfMap, lim: AccountLimits) -> None:
        """`limits { ... }` of an account, as nats-server parseAccountLimits."""
        for key in m:
            k = key.lower()
            if k in ("max_connections", "max_conn"):
                lim.max_connections = self.int_(m, key, -1)
            elif k in ("max_subscriptions", "max_subs"):
                lim.max_subscriptions = self.int_(m, key, -1)
            elif k in ("max_payload", "max_pay"):
                lim.max_payload = self.int_(m, key, -1)
            elif k in ("max_leafnodes", "max_leafs"):
                lim.max_leafnodes = self.int_(m, key, -1)
            elif not m.used_as_variable(key):
                raise self.err(m, key, f'Unknown field "{key}" parsing account limits')

    def load_account_jetstream(self, body: ConfMap, key: str, acc: AccountConfig) -> None:
        """`jetstream: enabled|disabled|true|false|{ limits }` of an account, as nats-server
        parseJetStreamForAccount: a map enables JetStream with those limits, unset ones are -1."""
        v = body[key]
        if isinstance(v, bool):
            acc.jetstream = v
            return
        if isinstance(v, str):
            if v.lower() not in ("enabled", "enable", "disabled", "disable"):
                raise self.err(body, key, f"Expected 'enabled' or 'disabled' for string value, got '{v}'")
            acc.jetstream = v.lower().startswith("enable")
            return
        if not isinstance(v, ConfMap):
            raise self.err(body, key, f"Expected map, bool or string to define JetStream, got {v!r}")
        acc.jetstream = True
        lim = acc.limits
        for k in v:
            lk = k.lower()
            if lk in ("max_bytes_required", "max_stream_bytes", "max_bytes"):
                if not isinstance(v[k], bool):
                    raise self.err(v, k, f'Expected a parseable bool for "{k}", got {v[k]!r}')
                lim.js_max_bytes_required = v[k]
            elif lk == "cluster_traffic":
                if v[k] not in ("system", "owner", ""):
                    raise self.err(v, k, f'Expected \'system\' or \'owner\' string value for "{k}", got {v[k]!r}')
            elif (attr := _JS_ACCOUNT_LIMITS.get(lk)) is not None:
                n = v[k]
                if isinstance(n, bool) or not isinstance(n, int):
                    raise self.err(v, k, f'Expected a parseable size for "{k}", got {n!r}')
                setattr(lim, attr, n)
            else:
                self._unknown(v, k)

    def load_export(self, m: ConfMap, key: str, e: Any) -> Export:
        if not isinstance(e, ConfMap):
            raise self.err(m, key, f"each export must be a map, got {e!r}")
        stream = _ci(e, "stream")
        service = _ci(e, "service")
        if bool(stream) == bool(service):
            raise self.err(m, key, "an export needs exactly one of stream or service")
        subj = self.str_(e, stream or service)
        accounts = None
        if (ak := _ci(e, "accounts")) is not None:
            accounts = [str(a) for a in self.list_(e, ak)]
        allow_trace = False
        if (tk := _ci(e, "allow_trace")) is not None:
            if not service:
                raise self.err(e, tk, "Detected allow_trace directive on non-service")
            allow_trace = self.bool_(e, tk)
        return Export(subject=subj.encode(), service=bool(service), accounts=accounts, allow_trace=allow_trace)

    def load_import(self, m: ConfMap, key: str, i: Any) -> Import:
        if not isinstance(i, ConfMap):
            raise self.err(m, key, f"each import must be a map, got {i!r}")
        stream = _ci(i, "stream")
        service = _ci(i, "service")
        if bool(stream) == bool(service):
            raise self.err(m, key, "an import needs exactly one of stream or service")
        src = self.map_(i, stream or service)
        acc_k = _ci(src, "account")
        subj_k = _ci(src, "subject")
        if not acc_k or not subj_k:
            raise self.err(i, stream or service, "an import needs account and subject")
        subject = self.str_(src, subj_k)
        local = subject
        if (to_k := _ci(i, "to")) is not None:
            local = self.str_(i, to_k)
        if (pre_k := _ci(i, "prefix")) is not None:
            local = self.str_(i, pre_k) + "." + subject
        allow_trace = False
        if (tk := _ci(i, "allow_trace")) is not None:
            if service:
                raise self.err(i, tk, "Detected allow_trace directive on a non-stream")
            allow_trace = self.bool_(i, tk)
        return Import(
            account=self.str_(src, acc_k),
            subject=subject.encode(),
            service=bool(service),
            local=local.encode(),
            allow_trace=allow_trace,
        )


# The size limits of an account's `jetstream { ... }` map (nats-server parseJetStreamForAccount): key -> field.
_JS_ACCOUNT_LIMITS = {
    **dict.fromkeys(("max_memory", "max_mem", "mem", "memory"), "js_max_memory"),
    **dict.fromkeys(("max_store", "max_file", "max_disk", "store", "disk"), "js_max_storage"),
    **dict.fromkeys(("max_streams", "streams"), "js_max_streams"),
    **dict.fromkeys(("max_consumers", "consumers"), "js_max_consumers"),
    **dict.fromkeys(("mem_max_stream_bytes", "memory_max_stream_bytes"), "js_memory_max_stream_bytes"),
    **dict.fromkeys(("disk_max_stream_bytes", "store_max_stream_bytes"), "js_storage_max_stream_bytes"),
    "max_ack_pending": "js_max_ack_pending",
}


def split_url(url: str) -> tuple[str, int, str | None, str | None] | None:
    """scheme://[user[:pass]@]host:port[/] -> (host, port, user, password); None when it is not one."""
    scheme, sep, rest = url.partition("://")
    creds, at, host_port = rest.rstrip("/").rpartition("@")
    host, _, port = host_port.rpartition(":")
    host = host.strip("[]")
    if not sep or not scheme or not host or not port.isdigit() or int(port) > 65535 or " " in url:
        return None
    user, _, password = creds.partition(":")
    return host, int(port), (user or None) if at else None, (password or None) if at else None


def _apply_default_permissions(users: list[User], default: Permissions | None) -> None:
    """nats-server applyDefaultPermissions: users without permissions of their own get the default."""
    if default is not None:
        for u in users:
            if u.permissions is None:
                u.permissions = default


def _go_type(v: Any) -> str:
    """The Go type nats-server's config parser gives a value, as its `%T` errors name it."""
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int64"
    if isinstance(v, float):
        return "float64"
    if isinstance(v, str):
        return "string"
    if isinstance(v, ConfMap):
        return "map[string]interface {}"
    return "[]interface {}"


def _where(m: ConfMap, key: str) -> str:
    try:
        fname, line = m.pos(key)
        return f"{fname}:{line}: "
    except (KeyError, AttributeError):
        return ""


def _ci(m: ConfMap, key: str) -> str | None:
    """The key as spelled in m, matched case-insensitively, or None."""
    for k in m:
        if k.lower() == key:
            return k
    return None


def load_config(path: str, opts: Options | None = None) -> Options:
    opts = opts or Options()
    try:
        top = conf.parse_file(path)
    except ConfError as e:
        raise OptionsError(str(e)) from None
    except OSError as e:
        raise OptionsError(f"cannot read config file {path}: {e.strerror}") from None
    opts.config_file = path
    _Loader(opts).load(top)
    validate(opts)
    return opts


def validate(opts: Options) -> None:
    if opts.max_payload > opts.max_pending:
        raise OptionsError(
            f"max_payload ({opts.max_payload}) cannot be higher than max_pending ({opts.max_pending})"
        )
    if not 0 <= opts.port <= 65535:
        raise OptionsError(f"port {opts.port} out of range")
    if opts.tls_cert and not opts.auth_timeout_set:
        opts.auth_timeout = opts.tls_timeout + 1.0  # nats-server getDefaultAuthTimeout: the handshake comes first
    co = opts.cluster
    if co.tls_cert and not co.auth_timeout:
        co.auth_timeout = co.tls_timeout + 1.0  # nats-server getDefaultAuthTimeout: the handshake comes first
    go = opts.gateway
    if go.enabled:
        if go.tls_cert and not go.auth_timeout:
            go.auth_timeout = go.tls_timeout + 1.0
        if co.enabled and co.name and co.name != go.name:
            # nats-server server.go: the gateway name is the cluster's name in the super-cluster
            raise OptionsError("cluster name conflicts between cluster and gateway definitions")
    names = set()
    for acc in opts.accounts.values():
        for imp in acc.imports:
            if imp.account not in opts.accounts:
                raise OptionsError(f'account "{acc.name}" imports from unknown account "{imp.account}"')
        for u in acc.users:
            if u.username is None:
                continue
            if u.username in names:
                raise OptionsError(f'duplicate user "{u.username}"')
            names.add(u.username)
    for u in opts.users:
        if u.account != GLOBAL_ACCOUNT and u.account not in opts.accounts:
            raise OptionsError(f'user "{u.username}" references unknown account "{u.account}"')
        if u.username in names:
            raise OptionsError(f'Duplicate user "{u.username}" detected')
    if names and opts.username:
        raise OptionsError("Can not have a single user/pass and accounts")
    if names and opts.token:
        raise OptionsError("Can not have a token and accounts")
    # nats-server validateNoAuthUser, with its texts
    if opts.no_auth_user:
        if not (names or opts.users):
            raise OptionsError(f'no_auth_user: "{opts.no_auth_user}" present, but users/nkeys are not defined')
        if opts.no_auth_user not in names and all(u.username != opts.no_auth_user for u in opts.users):
            raise OptionsError(f'no_auth_user: "{opts.no_auth_user}" not present as user or nkey in authorization '
                               "block or account configuration")
