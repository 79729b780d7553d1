"""JetStream: which accounts have it, where their streams live, and what every JetStream part shares
(nats-server `jetstream.go`).

Layout on disk (file storage), as nats-server: `<-sd DIR>/jetstream/` is `JetStream.store_dir`; under it
`<account>/streams/<stream>/` holds `meta.json` (the stream config and creation time), `msgs/` (filestore.py)
and `obs/<consumer>/` (consumer config and state). Memory streams keep nothing on disk and do not survive a restart.

Everything runs on the hub's event loop: API requests, publishes into streams and acks arrive as internal
subscription callbacks (host/accounts.py InternalHandler) inside the read batch of the connection that sent them;
timers (expiry, redelivery, heartbeats, the sync interval) run from loop.call_later. Nothing here awaits.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from host.gotime import NS, rfc3339
from host.jetstream import api, consumer
from host.jetstream.errors import ApiError, js_error
from host.jetstream.gojson import dumps
from host.jetstream.store import SYNC_ALWAYS
from host.jetstream.stream import Stream
from host.jetstream.versioning import API_LEVEL
from host.jwt import JS_TIER
from host.opts import SYSTEM_ACCOUNT, AccountLimits

if TYPE_CHECKING:
    import asyncio

    from host.accounts import Account
    from host.server import Server

log = logging.getLogger("natsedge.hub")

STORE_SUBDIR = "jetstream"  # nats-server JetStreamStoreDir: appended to -sd / store_dir
API_PREFIX = b"$JS.API."
_UINT64_MAX = (1 << 64) - 1
# nats-server JetStreamUsage with tiered limits: there is no default tier, so the top-level limits are Go zero values
NO_TIER_LIMITS = AccountLimits(js_max_memory=0, js_max_storage=0, js_max_streams=0, js_max_consumers=0,
                               js_max_ack_pending=0, js_memory_max_stream_bytes=0, js_storage_max_stream_bytes=0)


# ---- accounts ------------------------------------------------------------------------------------------------


class JSAccount:
    """JetStream state of one account: its streams, API counters, and the helpers its parts use to talk back."""

    def __init__(self, js: JetStream, account: Account) -> None:
        self.js = js
        self.server = js.server
        self.account = account
        self.streams: dict[str, Stream] = {}
        self.api_total = 0
        self.api_errors = 0
        self.dir = os.path.join(js.store_dir, account.name)
        self.api_sub: Any = None
        self.domain_sub: Any = None  # $JS.<domain>.API.> when the server has a JetStream domain

    def publish(self, subject: bytes, reply: bytes | None, hdr: bytes | None, payload: bytes) -> int:
        """Publish from JetStream into this account (deliveries, replies, advisories)."""
        return self.server.internal_publish(self.account, subject, reply, hdr, payload)

    def reply_plain(self, reply: bytes, payload: bytes) -> None:
        """Send a header-less reply (a PubAck) to `reply`, a subject used once: the hot path of publishing into a
        stream, so the reply subject is looked up without filling the subject cache (Sublist.match_one_off)."""
        self.server.internal_publish(self.account, reply, None, None, payload, one_off=True)

    def respond(self, reply: bytes | None, body: dict[str, Any]) -> None:
        """Send an API JSON reply (no reply subject: nothing to send)."""
        if reply:
            self.publish(reply, None, None, dumps(body))

    def respond_error(self, reply: bytes | None, type_name: str, err: ApiError,
                      extra: dict[str, Any] | None = None) -> None:
        """An error reply `{"type", "error", **extra}`; extra carries the fields nats-server's response struct always
        writes (e.g. `"purged":0`, or `total/offset/limit` of paged responses)."""
        self.api_errors += 1
        body: dict[str, Any] = {"type": type_name, "error": err.body()}
        if extra:
            body.update(extra)
        self.respond(reply, body)

    def call_later(self, delay: float, fn: Callable[[], None]) -> asyncio.TimerHandle:
        return self.server.loop.call_later(max(delay, 0.0), fn)

    # -- usage

    def usage(self) -> tuple[int, int]:
        """(memory bytes, file bytes) stored by this account's streams."""
        mem = store = 0
        for s in self.streams.values():
            if s.is_memory:
                mem += s.store.total_bytes
            else:
                store += s.store.total_bytes
        return mem, store

    def reserved(self) -> tuple[int, int]:
        """(memory, file) bytes reserved by streams with a max_bytes limit (nats-server tieredReservation)."""
        mem = store = 0
        for s in self.streams.values():
            mb = s.config["max_bytes"]
            if mb > 0:
                if s.is_memory:
                    mem += mb
                else:
                    store += mb
        return mem, store

    def consumer_count(self) -> int:
        return sum(len(s.consumers) for s in self.streams.values())

    @property
    def limits(self) -> AccountLimits:
        return self.account.limits

    def limits_json(self, lim: AccountLimits | None = None) -> dict[str, Any]:
        """The account's JetStream limits (or a tier's, `lim`) as nats-server's JetStreamAccountLimits JSON."""
        if lim is None:
            lim = self.limits
        return {
            "max_memory": lim.js_max_memory,
            "max_storage": lim.js_max_storage,
            "max_streams": lim.js_max_streams,
            "max_consumers": lim.js_max_consumers,
            "max_ack_pending": lim.js_max_ack_pending,
            "memory_max_stream_bytes": lim.js_memory_max_stream_bytes,
            "storage_max_stream_bytes": lim.js_storage_max_stream_bytes,
            "max_bytes_required": lim.js_max_bytes_required,
        }

    def account_info(self) -> dict[str, Any]:
        """The body of `$JS.API.INFO` (JetStreamAccountStats) without its `type`. With tiered limits (a JWT's), as
        nats-server JetStreamUsage: the totals at the top with limits all 0, and per tier its usage and limits; every
        stream here is in the R1 tier."""
        mem, store = self.usage()
        rmem, rstore = self.reserved()
        usage = {"memory": mem, "storage": store, "reserved_memory": rmem, "reserved_storage": rstore,
                 "streams": len(self.streams), "consumers": self.consumer_count()}
        tiers = self.limits.js_tiers
        info: dict[str, Any] = {
            **usage,
            "limits": self.limits_json(NO_TIER_LIMITS) if tiers else self.limits_json(),
            **({"domain": self.js.domain} if self.js.domain else {}),
            "api": {"level": API_LEVEL, "total": self.api_total, "errors": self.api_errors},
        }
        if tiers:
            info["tiers"] = {name: {**(usage if name == JS_TIER else dict.fromkeys(usage, 0)),
                                    "limits": self.limits_json(lim)} for name, lim in tiers.items()}
        return info

    def check_stream_count(self, name: str) -> None:
        """nats-server jsNonClusteredStreamLimitsCheck, first: the account's limits for the stream's tier (10120 when a
        JWT gives tiered limits without R1), then its max_streams, the stream itself not counted (re-creating it with
        the same config is allowed); 10027 when full."""
        if self.limits.js_no_tier:
            raise js_error("JSNoLimitsErr")
        limit = self.limits.js_max_streams
        if limit > 0 and sum(1 for n in self.streams if n != name) >= limit:
            raise js_error("JSMaximumStreamsLimitErr")

    def check_limits(self, cfg: dict[str, Any], replacing: str | None = None) -> None:
        """Would a stream with this config fit the account's and the server's limits? nats-server checkLimits: its
        max_consumers may not pass the account's (10026), and checkBytesLimits: it reserves its max_bytes (1 byte when
        unlimited) on top of what the account's (the server's) other streams reserved; 10028/10047 if not."""
        lim = self.limits
        if 0 < lim.js_max_consumers < cfg["max_consumers"]:
            raise js_error("JSMaximumConsumersLimitErr")
        memory = cfg["storage"] == "memory"
        add = cfg["max_bytes"] if cfg["max_bytes"] > 0 else 1
        full = js_error("JSMemoryResourcesExceededErr") if memory else js_error("JSStorageResourcesExceededErr")
        limit = lim.js_max_memory if memory else lim.js_max_storage
        if limit >= 0:
            reserved = sum(s.config["max_bytes"] for s in self.streams.values()
                           if s.name != replacing and s.is_memory == memory and s.config["max_bytes"] > 0)
            if reserved > limit or add > limit - reserved:
                raise full
        js = self.js
        reserved = 0
        for a in js.accounts.values():
            for s in a.streams.values():
                if s.name == replacing and a is self:
                    continue
                if s.is_memory == memory and s.config["max_bytes"] > 0:
                    reserved += s.config["max_bytes"]
        limit = js.max_memory if memory else js.max_store
        if reserved > limit or add > limit - reserved:
            raise full

    def check_max_bytes(self, cfg: dict[str, Any]) -> None:
        """nats-server checkStreamCfg with the account's maxBytesLimits: 10113 when the account requires max_bytes and
        the stream has none, 10122 when it passes the account's max stream bytes for its storage."""
        lim = self.limits
        if lim.js_max_bytes_required and cfg["max_bytes"] <= 0:
            raise js_error("JSStreamMaxBytesRequired")
        limit = lim.js_memory_max_stream_bytes if cfg["storage"] == "memory" else lim.js_storage_max_stream_bytes
        if 0 < limit < cfg["max_bytes"]:
            raise js_error("JSStreamMaxStreamBytesExceeded")

    def storage_limited(self, memory: bool) -> bool:
        """Does the account limit its memory (file) storage?"""
        lim = self.account.limits
        return (lim.js_max_memory if memory else lim.js_max_storage) >= 0

    def would_exceed(self, memory: bool, size: int) -> bool:
        """nats-server wouldExceedLimits: would storing `size` more bytes pass the account's memory (file) limit?"""
        lim = self.limits
        limit = lim.js_max_memory if memory else lim.js_max_storage
        if limit < 0:
            return False
        mem, store = self.usage()
        return (mem if memory else store) + size > limit


# ---- the server-wide part -----------------------------------------------------------------------------------


def _system_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def _disk_available(path: str) -> int:
    """75% of the free space under path (nats-server diskAvailable), 1 TB when it cannot be read."""
    try:
        st = os.statvfs(path)
        return st.f_bavail * st.f_frsize // 4 * 3
    except OSError:
        return 1 << 40


class JetStream:
    """Server-wide JetStream: storage location, limits, the enabled accounts, and the timers they share."""

    def __init__(self, server: Server) -> None:
        self.server = server
        opts = server.opts
        base = opts.store_dir or os.path.join(tempfile.gettempdir(), "nats")
        self.store_dir = os.path.join(base, STORE_SUBDIR)
        self.sync: str | float = opts.js_sync_interval if opts.js_sync_interval == SYNC_ALWAYS else float(
            opts.js_sync_interval)
        # Limits as nats-server derives them: configured values, else 75% of RAM and of the free disk. Only
        # configured limits are checked on every publish (the derived ones would cost a walk of all streams per
        # message for a limit that is reached only when the machine is full anyway).
        self.limits_set = (opts.js_max_memory >= 0, opts.js_max_file >= 0)
        mem = _system_memory()
        self.max_memory = opts.js_max_memory if opts.js_max_memory >= 0 else (mem // 4 * 3 if mem else 256 << 20)
        os.makedirs(self.store_dir, exist_ok=True)
        self.max_store = opts.js_max_file if opts.js_max_file >= 0 else _disk_available(self.store_dir)
        self.domain = opts.js_domain
        self.accounts: dict[str, JSAccount] = {}
        self._not_enabled_subs: list[tuple[Account, Any]] = []
        self._sync_timer: asyncio.TimerHandle | None = None
        self.started = False

    def enabled_accounts(self) -> list[Account]:
        """nats-server's rule: without configured accounts the global account has JetStream; with them, only
        accounts that say `jetstream: enabled`."""
        server = self.server
        configured = [a for a in server.accounts.values() if a.config is not None]
        if not configured:
            return [server.global_account]
        return [a for a in configured if a.config is not None and a.config.jetstream]

    # -- lifecycle

    def start(self) -> None:
        """Enable every account, recover its streams from disk, start the sync timer. Runs before listening."""
        log.info("Starting JetStream")
        log.info("    Max Memory:      %d", self.max_memory)
        log.info("    Max Storage:     %d", self.max_store)
        log.info("    Store Directory: \"%s\"", self.store_dir)
        enabled = self.enabled_accounts()
        for acc in self.server.accounts.values():
            if acc not in enabled and acc.name != SYSTEM_ACCOUNT:
                self._not_enabled_subs.append((acc, self._answer_not_enabled(acc)))
        for acc in enabled:
            jsa = self.enable_account(acc)
            consumer.install(jsa)
            self.recover_account(jsa)
        self.started = True
        if self.sync != SYNC_ALWAYS:
            self._sync_timer = self.server.loop.call_later(float(self.sync), self._sync_tick)

    def _answer_not_enabled(self, acc: Account) -> Any:
        name, server = acc.name, self.server
        return acc.add_internal(b"$JS.API.>", lambda src, subj, reply, hdr, msg: api.not_enabled(
            name, server, subj, reply))

    def enable_account(self, acc: Account) -> JSAccount:
        jsa = JSAccount(self, acc)
        acc.js = jsa
        self.accounts[acc.name] = jsa
        jsa.api_sub = acc.add_internal(b"$JS.API.>", lambda src, subj, reply, hdr, msg: api.dispatch(
            jsa, src, subj, reply, hdr, msg))
        if self.domain:
            jsa.domain_sub = acc.add_internal(b"$JS.%s.API.>" % self.domain.encode(), self._domain_mapping(acc))
        return jsa

    def _domain_mapping(self, acc: Account) -> Callable[..., bool]:
        """nats-server generateJSMappingTable, as a forwarding subscription: `$JS.<domain>.API.X` reaches the API as
        `$JS.API.X`, and `$JS.<domain>.API.$KV.>` / `.$OBJ.>` become `$KV.>` / `$OBJ.>`."""
        prefix = b"$JS.%s.API." % self.domain.encode()
        server = self.server

        def forward(src: Any, subject: bytes, reply: bytes | None, hdr: bytes | None, payload: bytes) -> bool:
            rest = subject[len(prefix):]
            target = rest if rest.startswith((b"$KV.", b"$OBJ.")) else API_PREFIX + rest
            return server.internal_publish(acc, target, reply, hdr, payload) > 0

        return forward

    def recover_account(self, jsa: JSAccount) -> None:
        """Open every stream found under `<store_dir>/<account>/streams/`. A stream that cannot be opened is
        logged and left on disk; the others still start."""
        sdir = os.path.join(jsa.dir, "streams")
        try:
            names = sorted(os.listdir(sdir))
        except FileNotFoundError:
            return
        for name in names:
            path = os.path.join(sdir, name)
            if "." in name or not os.path.isdir(path):
                continue  # not a stream (names have no dots): e.g. an unrecovered stream kept aside
            try:
                stream = Stream.recover(jsa, path)
            except Exception as e:  # noqa: BLE001 - one bad stream must not keep the others down
                log.error("JetStream: could not recover stream '%s > %s': %s", jsa.account.name, name, e)
                continue
            if stream is None:
                continue
            log.info("  Restored %d messages for stream '%s > %s'", stream.store.total_msgs, jsa.account.name,
                     stream.name)
            try:
                consumer.recover(stream)
            except Exception as e:  # noqa: BLE001
                log.error("JetStream: could not recover consumers of '%s > %s': %s", jsa.account.name, name, e)

    def stop(self) -> None:
        """Stop consumers, sync and close every store. Safe to call twice."""
        if self._sync_timer is not None:
            self._sync_timer.cancel()
            self._sync_timer = None
        for jsa in self.accounts.values():
            for stream in list(jsa.streams.values()):
                stream.stop()
            for sub in (jsa.api_sub, jsa.domain_sub):
                if sub is not None:
                    sub.closed = True
                    jsa.account.remove_sub(sub)
            jsa.api_sub = jsa.domain_sub = None
        for acc, sub in self._not_enabled_subs:
            sub.closed = True
            acc.remove_sub(sub)
        self._not_enabled_subs.clear()
        self.started = False

    def _sync_tick(self) -> None:
        """nats-server syncBlocks: fsync every file store once per sync interval."""
        self._sync_timer = None
        if not self.started:
            return
        for jsa in self.accounts.values():
            for stream in jsa.streams.values():
                stream.sync()
        self._sync_timer = self.server.loop.call_later(float(self.sync), self._sync_tick)

    # -- limits and stats

    def usage(self) -> tuple[int, int]:
        mem = store = 0
        for jsa in self.accounts.values():
            m, s = jsa.usage()
            mem += m
            store += s
        return mem, store

    def over_limit(self, memory: bool) -> bool:
        """nats-server limitsExceeded: storage in use already past the server's limit (checked per publish)."""
        if not self.limits_set[0 if memory else 1]:
            return False
        mem, store = self.usage()
        return mem > self.max_memory if memory else store > self.max_store

    def config_json(self) -> dict[str, Any]:
        cfg: dict[str, Any] = {"max_memory": self.max_memory, "max_storage": self.max_store,
                               "store_dir": self.store_dir}
        if self.sync == SYNC_ALWAYS:
            cfg["sync_always"] = True
        else:
            cfg["sync_interval"] = int(float(self.sync) * NS)
        if self.domain:
            cfg["domain"] = self.domain
        cfg["strict"] = True
        return cfg

    def stats(self) -> dict[str, Any]:
        """JetStreamStats: usage, reservations, accounts and API counters of the whole server."""
        mem, store = self.usage()
        rmem = rstore = 0
        total = errors = 0
        for jsa in self.accounts.values():
            m, s = jsa.reserved()
            rmem += m
            rstore += s
            total += jsa.api_total
            errors += jsa.api_errors
        return {"memory": mem, "storage": store, "reserved_memory": rmem, "reserved_storage": rstore,
                "accounts": len(self.accounts), "ha_assets": 0,
                "api": {"level": API_LEVEL, "total": total, "errors": errors}}

    def varz(self) -> dict[str, Any]:
        return {"config": self.config_json(), "stats": self.stats(), "limits": {}}

    def jsz(self, accounts: bool = False, streams: bool = False, consumers: bool = False, config: bool = False,
            account: str = "", offset: int = 0, limit: int = 1024) -> dict[str, Any]:
        """The /jsz body (nats-server Jsz): server stats, totals, and optionally per-account details."""
        if consumers:
            streams = True
        if streams and not account:
            accounts = True
        out: dict[str, Any] = dict(self.stats())
        out["server_id"] = self.server.id
        out["now"] = rfc3339(time.time_ns())
        out["config"] = self.config_json()
        out["limits"] = {}
        n_streams = n_consumers = n_msgs = n_bytes = 0
        for jsa in self.accounts.values():
            for s in jsa.streams.values():
                n_streams += 1
                n_consumers += len(s.consumers)
                n_msgs += s.store.total_msgs
                n_bytes += s.store.total_bytes
        out.update(streams=n_streams, consumers=n_consumers, messages=n_msgs, bytes=n_bytes)
        selected: list[JSAccount] = []
        if account:
            selected = [jsa for name, jsa in self.accounts.items() if name == account]
        elif accounts:
            ordered = sorted(self.accounts.values(), key=lambda a: a.account.name)
            offset = min(max(offset, 0), len(ordered))
            selected = ordered[offset:offset + (limit if limit > 0 else len(ordered))]
        if selected:
            out["account_details"] = [self._account_detail(jsa, streams, consumers, config) for jsa in selected]
        out["total"] = len(self.accounts)
        return out

    def _account_detail(self, jsa: JSAccount, streams: bool, consumers: bool, config: bool) -> dict[str, Any]:
        mem, store = jsa.usage()
        lim = jsa.limits
        d: dict[str, Any] = {
            "name": jsa.account.name, "id": jsa.account.name, "memory": mem, "storage": store,
            # nats-server fills these with the account's max_memory and max_storage, writing "no limit" (-1) as an
            # unsigned number.
            "reserved_memory": lim.js_max_memory & _UINT64_MAX, "reserved_storage": lim.js_max_storage & _UINT64_MAX,
            "accounts": 0, "ha_assets": 0,
            "api": {"level": 0, "total": jsa.api_total, "errors": jsa.api_errors},
        }
        if streams:
            details = [s.detail(consumers, config) for s in jsa.streams.values()]
            if details:
                d["stream_detail"] = details
        return d
