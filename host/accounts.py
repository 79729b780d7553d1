"""Accounts: isolated subject spaces, with stream and service exports/imports (nats-server `accounts.go`).

Every connection belongs to exactly one account (`$G` when none is configured). An account owns its
Sublist. Imports are internal subscriptions:
- a stream import by B from A is a subscription in A on the exported subject whose `imported`
  forwards each matching message into B under the local subject;
- a service import by B from A is a subscription in B on the local subject that forwards requests
  into A, replacing the reply with a fresh `_R_.` subject that A's responder answers; the response
  map sends that answer back to B under the requester's original reply (one response, like
  nats-server's default "Singleton" response type), and entries expire after RESPONSE_TTL.
An account's subject mappings (`Mappings`, built from host/subject_transform.py's) say what a literal subject that
clients and leafs publish to becomes before delivery (host/client.py, host/leafnode.py, host/delivery.py).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from host.opts import AccountConfig, AccountLimits, Export, Import
from host.subject_transform import Mapping, SubjectTransform
from host.sublist import Sublist, Subscription, subject_matches

if TYPE_CHECKING:
    from host.client import Client
    from host.gateway import Gateway
    from host.leafnode import Leaf
    from host.route import Router

RESPONSE_TTL = 120.0
MAPPED_MAX = 4096  # literal subjects whose mapping is remembered (Mappings.cache), then forgotten
GW_RECENT_SUB = 2.0  # nats-server defaultGatewayRecentSubExpiration (and how long a mapped reply is remembered)
GW_TRACKED_MAX = 4096  # recent subscriptions and mapped replies kept per account
MAX_IMPORT_DEPTH = 8  # bound on import chains, so a cycle of imports cannot loop forever
_B32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
_NO_LIMITS = AccountLimits()


def nuid(n: int = 22) -> str:
    """A random token for reply subjects and ids (base32 alphabet, like nats-server's nuid)."""
    return "".join(_B32[b & 31] for b in os.urandom(n))


def map_subject(src_pattern: bytes, dst_pattern: bytes, subject: bytes) -> bytes:
    """Map `subject` (matching src_pattern) onto dst_pattern, carrying wildcard tokens positionally."""
    if src_pattern == dst_pattern:
        return subject
    st = subject.split(b".")
    sp = src_pattern.split(b".")
    wild: list[bytes] = []
    for i, t in enumerate(sp):
        if t == b"*":
            wild.append(st[i])
        elif t == b">":
            wild.append(b".".join(st[i:]))
    out = []
    k = 0
    for t in dst_pattern.split(b"."):
        if t in (b"*", b">") and k < len(wild):
            out.append(wild[k])
            k += 1
        else:
            out.append(t)
    return b".".join(out)


# What a literal subject maps to (Mappings.lookup): the one subject it always maps to, or the weighted destinations
# to pick from per message with the subject's tokens.
Mapped = bytes | tuple[list[tuple[int, SubjectTransform]], list[bytes]]


class Mappings:
    """An account's subject mappings (nats-server Account.mappings, selectMappedSubject). An account without any has
    `mappings` None and pays nothing; with some, what a literal subject maps to is remembered (`cache`, bounded).
    Sources are tried in config order (nats-server tries them in its map's order, which varies by run)."""

    __slots__ = ("mappings", "server", "cache")

    def __init__(self, mappings: list[Mapping], server: Any) -> None:
        self.mappings = mappings
        self.server = server  # its cluster name picks cluster-scoped destinations
        self.cache: dict[bytes, Mapped | None] = {}

    def lookup(self, subject: bytes) -> Mapped | None:
        """What `subject` maps to; None when no mapping matches it."""
        try:
            return self.cache[subject]
        except KeyError:
            pass
        found: Mapped | None = None
        text = subject.decode(errors="replace")
        for i, m in enumerate(self.mappings):
            if m.src == text if m.literal else subject_matches(m.src.encode(), subject):
                # nats-server splits the subject into tokens only once a mapping needs it: a literal source matched
                # first has none, so its partition() hashes nothing (the only function a literal source may use
                # that reads tokens)
                tokens = [] if m.literal and i == 0 else subject.split(b".")
                dests = m.destinations(self.server.cluster_name)
                if len(dests) == 1 and dests[0][0] == 100 and dests[0][1].fixed:
                    found = dests[0][1].transform(tokens)
                else:
                    found = (dests, tokens)
                break
        if len(self.cache) >= MAPPED_MAX:
            self.cache.clear()
        self.cache[subject] = found
        return found

    @staticmethod
    def select(found: Mapped) -> bytes:
        """The subject one message goes to, given its subject's `lookup`: b"" for the share of the weights that
        nothing takes (the message is dropped)."""
        if found.__class__ is bytes:
            return found  # type: ignore[return-value]
        dests, tokens = found  # type: ignore[misc]
        tr = Mapping.pick(dests)
        return tr.transform(tokens) if tr is not None else b""


def set_mappings(acc: Account, mappings: list[Mapping], server: Any) -> None:
    """Give `acc` its mappings (replacing any it had). Their sources count as interest towards leafs, not routes, so
    a leaf sends what its clients publish to a source here to be mapped (as nats-server adds them to a leaf's
    subscriptions); a route carries mapped subjects, mapped by the server the message came in at."""
    old = acc.mappings.mappings if acc.mappings is not None else []
    acc.mappings = Mappings(mappings, server) if mappings else None
    if old:
        # what the parsers learned for the old sources (plans, subjects without interest) no longer holds
        acc.sublist.reset()
        acc.no_interest.clear()
    for m, delta in [(m, -1) for m in old] + [(m, 1) for m in mappings]:
        key = (m.src.encode(), None)
        for counts in (acc.interest, acc.unrouted):
            n = counts.get(key, 0) + delta
            if n > 0:
                counts[key] = n
            else:
                counts.pop(key, None)
        for leaf in acc.leafs:
            leaf.update_interest(key)


class StreamImport:
    """Forwarding data of an internal subscription in the exporting account."""

    __slots__ = ("dest", "subject", "local", "allow_trace")

    def __init__(self, dest: Account, subject: bytes, local: bytes, allow_trace: bool = False) -> None:
        self.dest = dest
        self.subject = subject
        self.local = local
        self.allow_trace = allow_trace  # message traces go on into the importing account (the import's `allow_trace`)


class ServiceImport:
    """Forwarding data of an internal subscription in the importing account."""

    __slots__ = ("dest", "subject", "local", "allow_trace")

    def __init__(self, dest: Account, subject: bytes, local: bytes, allow_trace: bool = False) -> None:
        self.dest = dest
        self.subject = subject
        self.local = local
        self.allow_trace = allow_trace  # message traces go on into the exporting account (the export's `allow_trace`)


class InternalHandler:
    """Marks an internal subscription whose messages go to a callback in the hub (JetStream and other services).

    `callback(src, subject, reply, hdr, payload)` runs synchronously in the delivering read batch; `src` is the
    publishing connection (or the server's internal client). A callback that returns False did not take the
    message (it does not count as a receiver, so a requester may get a no-responders status).
    """

    __slots__ = ("callback", "traced", "consumer_deliveries")

    def __init__(self, callback: Callable[[Any, bytes, bytes | None, bytes | None, bytes], None],
                 traced: bool = False, consumer_deliveries: bool = False) -> None:
        self.callback = callback
        # The callback takes part in message traces (a stream): it reads the trace from host/msgtrace.py `active`,
        # and runs for trace-only messages too (other handlers do not).
        self.traced = traced
        # The callback takes consumer deliveries to its subject (a stream's source, host/jetstream/sourcing.py),
        # with the stored message's subject as `subject`; other handlers never see them.
        self.consumer_deliveries = consumer_deliveries


class Account:
    def __init__(self, name: str) -> None:
        self.name = name
        self.name_b = name.encode()
        self.sublist = Sublist()
        self.clients: set[Client] = set()
        # reply subject in this account -> (requesting account, original reply, expiry time, kept: not used up by a
        # response, for a message trace's destination past a service import, which every server after it answers)
        self.responses: dict[bytes, tuple[Account, bytes, float, bool]] = {}
        self.config: AccountConfig | None = None
        self.jwt = ""  # operator mode: the account JWT its config was taken from (host/jwt.py)
        # Interest for leafnode links: (subject, queue) -> count (queue: summed weights).
        self.interest: dict[tuple[bytes, bytes | None], int] = {}
        self.leafs: set[Leaf] = set()
        # The part of `interest` not advertised to routes (host/route.py): what routes asked for, and service
        # imports (every server of a cluster serves its own clients' imports, as nats-server does).
        self.unrouted: dict[tuple[bytes, bytes | None], int] = {}
        self.routes: dict[str, Router] = {}  # the server's routes, by peer id (Server.routes, shared)
        # The server's inbound gateways, by connection id (Server.gateways_in, shared): they advertise this cluster's
        # interest to the other clusters (host/gateway.py).
        self.gateways: dict[int, Gateway] = {}
        # Other clusters' interest (what the outbound gateways were asked for), told to leafs only, as nats-server's
        # updateInterestForAccountOnGateway: (subject, queue) -> count.
        self.gateway_interest: dict[tuple[bytes, bytes | None], int] = {}
        # In a super-cluster (host/gateway.py): subjects subscribed here in the last GW_RECENT_SUB seconds -> when
        # that ends (a reply matching one goes to other clusters as `_GR_.<cluster>.<server>.<reply>`, so their
        # answer needs no interest to cross first), and replies that came in mapped so -> (the mapped form, expiry):
        # an answer to them goes straight back to the cluster that asked (nats-server gwReplyMapping).
        self.gw_tracking = False
        self.gw_recent: dict[bytes, float] = {}
        self.gw_replies: dict[bytes, tuple[bytes, float]] = {}
        # The part of `interest` that leafs asked for, by the leaf's origin (its cluster name, "_" for none): routes
        # that take nats-server's leaf-origin forms are told it as `LS+ <origin> ...` (host/route.py).
        self.leaf_interest: dict[tuple[bytes, bytes | None], dict[bytes, int]] = {}
        self.lds = b"$LDS." + nuid().encode()  # loop-detection subject sent to every leaf
        # Subjects seen with no interest at all; client parsers skip reply-less PUBs to them.
        # Any new subscription may create interest, so it clears the whole set.
        self.no_interest: dict[bytes, bool] = {}
        self.js: Any = None  # host.jetstream.JSAccount when JetStream is enabled for this account
        # Told the subject of every subscription added or removed: push consumers follow the interest on their
        # deliver subjects this way (host/jetstream/consumer.py).
        self.interest_watchers: list[Callable[[bytes], None]] = []
        self.response_prefix: bytes | None = None  # of the reply subjects of service-import requests (add_response)
        # `msg_trace` (host/msgtrace.py): where traceparent-triggered traces go (None: they are not traced), and the
        # percentage sampled
        self.trace_dest: str | None = None
        self.trace_sampling = 0
        # `mappings`: None for an account without any (nothing is looked up per message then)
        self.mappings: Mappings | None = None

    @property
    def limits(self) -> AccountLimits:
        """The account's quotas, whatever they came from (config block or JWT claims): enforcement reads only these."""
        return self.config.limits if self.config is not None else _NO_LIMITS

    def enforce_limits(self) -> None:
        """Apply changed limits to the connections already in, as nats-server updateAccountClaimsWithRefresh: the oldest
        are kept up to max_connections (leafs count) and the newer cut; the kept ones take the new per-connection
        limits (a connection at or over a lowered max_subscriptions is cut 20 ms after its -ERR)."""
        limit = self.limits.max_connections
        kept = 0
        for c in sorted(self.clients, key=lambda c: c.cid):
            if 0 <= limit <= kept:
                c.max_account_connections_exceeded()
                continue
            kept += 1
            c.apply_account_limits()

    def add_sub(self, sub: Subscription) -> None:
        self.sublist.insert(sub)
        if self.no_interest:
            self.no_interest.clear()
        if sub.conn is None or not sub.conn.is_gateway:
            self._interest(sub, sub_weight(sub))
        else:
            self._gateway_interest(sub, 1)  # another cluster's interest is not this cluster's: for leafs only

    def remove_sub(self, sub: Subscription) -> bool:
        if not self.sublist.remove(sub):
            return False
        if sub.conn is None or not sub.conn.is_gateway:
            self._interest(sub, -sub_weight(sub))
        else:
            self._gateway_interest(sub, -1)
        return True

    def note_recent_sub(self, subject: bytes) -> None:
        now = time.monotonic()
        recent = self.gw_recent
        if len(recent) >= GW_TRACKED_MAX:
            self.expire_recent_subs(now)
            if len(recent) >= GW_TRACKED_MAX:
                return  # (mapping only saves a race: without it the answer comes back by interest)
        recent[subject] = now + GW_RECENT_SUB

    def expire_recent_subs(self, now: float) -> None:
        """Forget the recent subscriptions whose GW_RECENT_SUB ran out (the server does it once a second). When none
        is left, replies to other clusters need no mapping: delivery plans to gateways are possible again."""
        recent = self.gw_recent
        for k in [k for k, exp in recent.items() if exp <= now]:
            del recent[k]
        if not recent:
            self.sublist.replan()

    def map_gateway_reply(self, reply: bytes, prefix: bytes) -> bytes:
        """`reply` as it goes to another cluster: mapped with `prefix` (`_GR_.<cluster>.<server>.`) when it matches a
        subscription made here in the last GW_RECENT_SUB seconds (shouldMapReplyForGatewaySend)."""
        now = time.monotonic()
        for subject, exp in self.gw_recent.items():
            if exp > now and subject_matches(subject, reply):
                return prefix + reply
        return reply

    def track_gateway_reply(self, reply: bytes, routed: bytes) -> None:
        replies = self.gw_replies
        if len(replies) >= GW_TRACKED_MAX:
            self.expire_gateway_replies(time.monotonic())
            if len(replies) >= GW_TRACKED_MAX:
                del replies[next(iter(replies))]  # the oldest
        replies[reply] = (routed, time.monotonic() + GW_RECENT_SUB)
        self.no_interest.pop(reply, None)

    def expire_gateway_replies(self, now: float) -> None:
        for k in [k for k, v in self.gw_replies.items() if v[1] <= now]:
            del self.gw_replies[k]

    def _gateway_interest(self, sub: Subscription, delta: int) -> None:
        key = (sub.subject, sub.queue)
        n = self.gateway_interest.get(key, 0) + delta
        if n > 0:
            self.gateway_interest[key] = n
        else:
            self.gateway_interest.pop(key, None)
        for leaf in self.leafs:
            leaf.update_interest(key)

    def _interest(self, sub: Subscription, delta: int) -> None:
        key = (sub.subject, sub.queue)
        if delta > 0 and self.gw_tracking and sub.conn is not None:
            self.note_recent_sub(sub.subject)
        n = self.interest.get(key, 0) + delta
        if n > 0:
            self.interest[key] = n
        else:
            self.interest.pop(key, None)
        conn = sub.conn
        if conn.is_router if conn is not None else isinstance(sub.imported, ServiceImport):
            n = self.unrouted.get(key, 0) + delta
            if n > 0:
                self.unrouted[key] = n
            else:
                self.unrouted.pop(key, None)
        origins = None
        if conn is not None and conn.is_leaf:
            origins = self.leaf_interest.setdefault(key, {})
            origins[conn.origin] = origins.get(conn.origin, 0) + delta
        for leaf in self.leafs:
            leaf.update_interest(key)
        for route in self.routes.values():
            route.update_interest(self, key)
        for gw in self.gateways.values():
            gw.update_interest(self, key)
        if origins is not None and origins[conn.origin] <= 0:  # kept until the routes were told it is gone
            del origins[conn.origin]
            if not origins:
                del self.leaf_interest[key]
        for watch in self.interest_watchers:
            watch(sub.subject)

    def add_internal(self, subject: bytes, callback: Callable[..., None], traced: bool = False,
                     consumer_deliveries: bool = False) -> Subscription:
        """Subscribe a hub callback to `subject` in this account (see InternalHandler)."""
        sub = Subscription(None, subject, None, b"")
        sub.imported = InternalHandler(callback, traced, consumer_deliveries)
        self.add_sub(sub)
        return sub

    def __repr__(self) -> str:
        return f"Account({self.name})"

    def add_response(self, requester: Account, reply: bytes, kept: bool = False) -> bytes:
        if self.response_prefix is None:
            # One prefix per account, and a subscription on it: routes learn the interest, so a responder on another
            # server of the cluster sends its answer here (deliver() hands it to the requester).
            self.response_prefix = b"_R_." + nuid(6).encode() + b"."
            self.add_internal(self.response_prefix + b">", _expired_response)
        new_reply = self.response_prefix + nuid(10).encode()
        self.responses[new_reply] = (requester, reply, time.monotonic() + RESPONSE_TTL, kept)
        return new_reply

    def expire_responses(self, now: float) -> None:
        for k in [k for k, v in self.responses.items() if v[2] < now]:
            del self.responses[k]


def _expired_response(src: Any, subject: bytes, reply: bytes | None, hdr: bytes | None, payload: bytes) -> bool:
    return False  # an answer after its request's response entry expired (or a second one): dropped


def sub_weight(sub: Subscription) -> int:
    """Members a subscription stands for: a leaf's queue interest carries its weight."""
    return sub.weight


def matching_export(exporter: AccountConfig, importer: str, imp: Import) -> Export | None:
    """The export of `exporter` that lets `importer` make the import `imp`, or None."""
    for e in exporter.exports:
        if e.service != imp.service:
            continue
        if e.accounts is not None and importer not in e.accounts:
            continue
        if subject_matches(e.subject, imp.subject) or e.subject == imp.subject:
            return e
    return None


def wire_imports(accounts: dict[str, Account]) -> list[str]:
    """Install the internal subscriptions for every configured import; returns warnings."""
    warnings = []
    for acc in accounts.values():
        if acc.config is None:
            continue
        for imp in acc.config.imports:
            src = accounts[imp.account]
            export = matching_export(src.config, acc.name, imp) if src.config is not None else None
            if export is None:
                warnings.append(
                    f'account "{acc.name}": import of "{imp.subject.decode()}" from "{imp.account}" '
                    "has no matching export; ignored"
                )
                continue
            if imp.service:
                sub = Subscription(None, imp.local, None, b"")
                sub.imported = ServiceImport(src, imp.subject, imp.local, export.allow_trace)
                acc.add_sub(sub)
            else:
                sub = Subscription(None, imp.subject, None, b"")
                sub.imported = StreamImport(acc, imp.subject, imp.local, imp.allow_trace)
                src.add_sub(sub)
    return warnings
