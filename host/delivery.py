"""Message delivery: the one path every message the hub forwards takes (nats-server `processMsgResults`).

A message, whatever its origin, reaches `deliver` as a run: one subject and one or more frame tails
(" [reply] [hlen] size\\r\\n<hdr><payload>\\r\\n", as host/parser.py cuts them from a read buffer, or as
`encode_tail` builds one). The subject is looked up once; its delivery plan (`Fanout`, cached on the
sublist's match result) holds a ready prefix per target, so a frame costs one list append per target
and a run one join per target, whatever the rules below.

Origins are told apart by the source connection (`src.kind`, and what `deliver` is given):
- a client's PUB/HPUB (host/client.py): every queue group, the client's echo choice, a 503 status when
  nobody listens and it asked for no_responders;
- a leafnode link's LMSG/HMSG (host/leafnode.py): plain subscribers, and only the queue groups the frame
  names (`queues`; none named: none); never back to the link it came from (leafs have echo off);
- the hub itself (`Server.internal`: JetStream replies, PubAcks, advisories; `deliver_msg`), and consumer
  deliveries, which match a deliver subject but show the stored message's subject (`deliver_as`).
Routes and gateways plug in as leafs do: their parser cuts RMSG runs, their frames name queue groups,
and `Fanout` gains their target kind (one `RMSG <account> <subject>` per connection, not sent back to a
route when the origin is a route) next to the leaf targets.

The rules, written once here:
- echo: a connection gets its own messages only if it asked for echo (links never do);
- queue groups: one member per group per message, round robin from a random start; only the groups the
  origin has in scope;
- headers: stripped for a client that did not say headers:true;
- UNSUB max: a subscription gets at most its max, then it is removed;
- allow_responses: a subscriber with it may answer the reply subjects it was given (frame by frame, as `limited`);
- permissions: a subscriber whose subscribe permissions deny the subject gets nothing, nor does a leaf whose
  user may not receive it;
- leaf links: one frame per link however many of its subscriptions match; the queue groups it was picked
  for are named on that frame;
- gateways (host/gateway.py): one frame per remote cluster with interest, never for a message that came from a
  route or another gateway (`to_gateways`); a queue group goes to another cluster only when it has no member in
  this one (clients, routes, leafs), then to the one with the lowest RTT; replies of recent subscribers go out
  mapped (`_GR_.`), and `_GR_.` subjects go to the cluster they name;
- imports: stream and service imports carry the message into other accounts, up to MAX_IMPORT_DEPTH;
- tracing: a traced frame from a connection (host/msgtrace.py `traced`, one substring test per frame with headers)
  takes the frame-by-frame path with its MsgTrace, which records every target there and gives links the copy with
  its hop header.
"""

from __future__ import annotations

import random
import time
from typing import TYPE_CHECKING, Any

from edge.trace import DELIVERED_NO_SUPPORT, NO_ECHO, NO_SUPPORT
from host import msgtrace
from host.accounts import MAX_IMPORT_DEPTH, Account, InternalHandler, Mapped, Mappings, ServiceImport, map_subject
from host.headers import hdr_set
from host.msgtrace import (
    AUTO_UNSUB,
    CLIENT_CLOSED,
    MSG_TRACE_PROTO,
    PUB_DENIED,
    SUB_CLOSED,
    SUB_DENIED,
    TRACE_DEST,
    TRACE_DISABLED,
    MsgTrace,
    init_msg_trace,
    traced,
)
from host.parser import PLANS_MAX, decode_tail, encode_tail
from host.sublist import SublistResult, Subscription

if TYPE_CHECKING:
    from host.client import Client

GW_REPLY_PREFIX = b"_GR_."  # nats-server gwReplyPrefix: _GR_.<cluster hash>.<server hash>.<reply>
GW_HASH_LEN = 6  # nats-server gwHashLen (host/gateway.py gw_hash)
NO_INTEREST_MAX = 4096  # subjects remembered as having no interest (Account.no_interest), then forgotten
SHOWN_AS_MAX = 256  # consumer-delivery plans kept per deliver subject (Fanout.shown_as), then made again

# One target: (connection, subscription, prefix, header prefix); the frame is prefix + tail.
Target = tuple[Any, Subscription, bytes, bytes]


class Fanout:
    """Delivery plan for one subject, derived from a SublistResult (and dropped with it).

    `plain` and `hplain` list the targets that take every frame whole, with their prefixes for frames without
    and with headers (the hot loop of deliver_fanout checks nothing but echo); `strip`, the clients without header
    support.
    `limited` subscriptions (UNSUB max, or of a subscriber with allow_responses) go through `_deliver_limited`.
    Queue groups list their members (a leaf's queue interest stands for `weight` members). Frames are looked at one
    by one (`_deliver_each`) when leaf links are queue members (a frame names the groups a leaf was picked for) or a
    consumer delivers to a leaf (`leaf_shown`: the shown subject travels after the reply).
    """

    __slots__ = ("plain", "hplain", "limited", "strip", "queues", "internal", "routers", "gateways", "rr",
                 "link_queues", "leaf_shown", "empty", "shown", "shown_as")

    def __init__(self, r: SublistResult, acc: Account, subject: bytes, shown: bytes | None = None) -> None:
        # shown: the subject written on client frames when it is not the one matched (consumer deliveries).
        self.shown = shown
        self.shown_as: dict[bytes, Fanout] | None = None  # consumer deliveries: shown subject -> plan (deliver_as)
        written = subject if shown is None else shown
        plain: list[tuple[Any, Subscription, bytes]] = []  # for frames without headers
        hplain: list[tuple[Any, Subscription, bytes]] = []  # for frames with headers
        limited: list[Target] = []  # subscriptions with an UNSUB max
        strip: list[Target] = []  # clients without header support: frames with headers lose them
        internal: list[Subscription] = []
        routers: list[Target] = []  # one per route connection, however many of its subscriptions match
        gateways: list[Target] = []  # one per outbound gateway (remote cluster) with interest
        self.leaf_shown = False
        links: list[Any] = []
        for s in r.psubs:
            conn = s.conn
            if s.imported is not None:
                if shown is None or (isinstance(s.imported, InternalHandler) and s.imported.consumer_deliveries):
                    internal.append(s)
            elif conn.is_link:
                if conn.is_leaf and conn.leaf_perms is not None and not conn.leaf_perms.may_receive(subject):
                    continue
                if conn not in links:
                    links.append(conn)
                    pfx, hpfx = conn.link_prefixes(acc, subject)
                    if conn.is_router:
                        routers.append((conn, s, pfx, hpfx))
                    elif conn.is_gateway:
                        gateways.append((conn, s, pfx, hpfx))
                    else:
                        plain.append((conn, s, pfx))
                        hplain.append((conn, s, hpfx))
                    self.leaf_shown = written != subject
            elif conn.perms is None or not _denied(s, subject):
                pfx = b"MSG " + written + b" " + s.sid
                hpfx = b"HMSG " + written + b" " + s.sid
                if s.max is not None or (conn.perms is not None and conn.perms.replies is not None):
                    limited.append((conn, s, pfx, hpfx))
                    continue
                plain.append((conn, s, pfx))
                if conn.headers:
                    hplain.append((conn, s, hpfx))
                else:
                    strip.append((conn, s, pfx, hpfx))
        self.plain = plain
        self.hplain = hplain
        self.limited = limited
        self.strip = strip
        self.internal = internal
        self.routers = routers
        self.gateways = gateways
        self.queues: list[list[Target]] = []
        self.link_queues = False
        for grp in r.qsubs:
            members: list[Target] = []
            for s in grp:
                if s.imported is not None:
                    continue
                conn = s.conn
                if conn.is_link:
                    if conn.is_leaf and conn.leaf_perms is not None and not conn.leaf_perms.may_receive(subject):
                        continue
                    # A link's queue interest stands for `weight` members (nats-server expands remote weights too).
                    self.link_queues = True
                    self.leaf_shown = written != subject
                    pfx, hpfx = conn.link_prefixes(acc, subject)
                    members.extend([(conn, s, pfx, hpfx)] * min(s.weight, 64))
                elif not _denied(s, subject):
                    members.append((conn, s, b"MSG " + written + b" " + s.sid, b"HMSG " + written + b" " + s.sid))
            if members:
                self.queues.append(members)
        self.rr = random.getrandbits(16) if self.queues else 0
        self.empty = not (plain or limited or strip or self.queues or internal or routers or gateways)


def _denied(s: Subscription, subject: bytes) -> bool:
    perms = s.conn.perms
    return perms is not None and perms.sub is not None and perms.sub.has_deny() and perms.sub.denies(subject, s.queue)


class Plan:
    """A Fanout as one connection's publishes see it, for the runs its parser delivers on its own (HubParser.plans):
    (output list, prefix) per target, for frames without and with headers (htargets None: such frames take
    `deliver`). Only plain targets qualify: a subject with queue groups in scope, limited subscriptions, imports
    or per-frame rules has no plan. Counts pile up in msgs/bytes until `settle` hands them out."""

    __slots__ = ("targets", "htargets", "subs", "msgs", "bytes")

    def __init__(self, targets: list[tuple[list[bytes], bytes]] | None,
                 htargets: list[tuple[list[bytes], bytes]] | None, subs: list[tuple[Any, Subscription]]) -> None:
        self.targets = targets
        self.htargets = htargets
        self.subs = subs
        self.msgs = 0
        self.bytes = 0


NO_PLAN = Plan(None, None, [])  # a subject whose runs take `deliver`


def learn_plan(plans: dict[bytes, Plan], src: Any, acc: Account, subject: bytes,
               queues: tuple[bytes, ...] | None, key: bytes | None = None) -> None:
    """After `deliver` routed a run from `src`, note how its parser may deliver the next runs to `subject` (`key`: the
    run's subject as the parser has it, when that is not `subject`: b"<account> <subject>" on a route)."""
    if key is None:
        key = subject
    if key in plans:
        return  # known (this run came after an event of its read, so the parser handed it over)
    r = acc.sublist.cache.get(subject)
    fan = r.fanout if r is not None else None
    if fan is None:
        return
    if len(plans) >= PLANS_MAX:
        plans.clear()
    if fan.empty or fan.limited or fan.internal or fan.leaf_shown or (fan.queues and queues is None):
        plans[key] = NO_PLAN
        return
    plain = [(conn, sub, pfx) for conn, sub, pfx in fan.plain if conn is not src or src.echo]
    hplain = [(conn, sub, pfx) for conn, sub, pfx in fan.hplain if conn is not src or src.echo]
    if fan.routers and src.to_routes:
        plain += [(conn, sub, pfx) for conn, sub, pfx, _hpfx in fan.routers]
        hplain += [(conn, sub, hpfx) for conn, sub, _pfx, hpfx in fan.routers]
    if fan.gateways and src.to_gateways:
        if acc.gw_recent or any(conn.optimistic for conn, _sub, _pfx, _hpfx in fan.gateways):
            # (replies may need mapping; what an optimistic gateway refuses changes without the sublist changing)
            plans[key] = NO_PLAN
            return
        plain += [(conn, sub, pfx) for conn, sub, pfx, _hpfx in fan.gateways]
        hplain += [(conn, sub, hpfx) for conn, sub, _pfx, hpfx in fan.gateways]
    if not plain:
        plans[key] = NO_PLAN
        return
    htargets = None
    if src.headers and not fan.strip and acc.trace_dest is None:  # (msg_trace: `traced` looks at each, in deliver)
        htargets = [(conn.out, pfx) for conn, _sub, pfx in hplain]
    plans[key] = Plan([(conn.out, pfx) for conn, _sub, pfx in plain], htargets,
                          [(conn, sub) for conn, sub, _pfx in plain])


def settle(used: list[Plan], server: Any) -> tuple[int, int]:
    """Hand the counts of the plans a parser used out to their targets, queue those for writing; returns the
    messages and bytes the plans carried (what the publisher sent through them)."""
    n_in = b_in = 0
    for plan in used:
        m = plan.msgs
        b = plan.bytes
        n_in += m
        b_in += b
        for conn, sub in plan.subs:
            _count(conn, sub, m, b)
        k = len(plan.subs)
        server.out_msgs += m * k
        server.out_bytes += b * k
        plan.msgs = plan.bytes = 0
    used.clear()
    return n_in, b_in


def deliver(acc: Account, src: Any, subject: bytes, has_hdr: bool, pieces: list[bytes], nbytes: int,
            depth: int = 0, queues: tuple[bytes, ...] | list[bytes] | None = None, untraced: bool = False,
            mapped_from: bytes | None = None) -> int:
    """Deliver a run of frames published to `subject` in `acc` by `src`; returns how many targets got it.

    queues: the queue groups in scope, None for all of them (a client's or the hub's publish), a sequence of
    names for a link's frame (empty: none). untraced: the run is known to hold no traced frame (host/msgtrace.py);
    a connection's run with headers is looked at here otherwise, where it enters (depth 0). mapped_from: the subject
    the frames were published to, when a subject mapping made it `subject` (mapped_runs).
    """
    if has_hdr and not (depth or untraced) and src.traces and traced(acc, pieces):
        return _deliver_traced_run(acc, src, subject, pieces, queues, mapped_from)
    if subject.startswith(GW_REPLY_PREFIX) and src.server.gateway_name:
        return deliver_gateway_reply(acc, src, subject, has_hdr, pieces, nbytes, depth)
    if acc.gw_replies:
        routed = acc.gw_replies.pop(subject, None)
        if routed is not None and routed[1] > time.monotonic():
            # An answer to a reply that came in mapped from another cluster: straight back there (handleGWReplyMap).
            return deliver_gateway_reply(acc, src, routed[0], has_hdr, pieces, nbytes, depth)
    if acc.responses:
        resp = acc.responses.pop(subject, None)
        if resp is not None:
            if resp[3]:
                acc.responses[subject] = resp  # a trace destination: the events of every server go back
                return deliver(resp[0], src, resp[1], has_hdr, pieces, nbytes, depth + 1)
            # A mapped service reply takes one response; later frames of the run route as usual.
            first = pieces[0]
            size = nbytes if len(pieces) == 1 else _size(first, has_hdr)
            count = deliver(resp[0], src, resp[1], has_hdr, [first], size, depth + 1)
            if len(pieces) > 1:
                count += deliver(acc, src, subject, has_hdr, pieces[1:], nbytes - size, depth, queues)
            return count
    sl = acc.sublist
    r = sl.cache.get(subject)
    if r is None:
        r = sl.match(subject)
    fan = r.fanout
    if fan is None:
        fan = r.fanout = Fanout(r, acc, subject)
    return deliver_fanout(acc, src, fan, subject, has_hdr, pieces, nbytes, depth, queues)


def deliver_fanout(acc: Account, src: Any, fan: Fanout, subject: bytes, has_hdr: bool, pieces: list[bytes],
                  nbytes: int, depth: int, queues: tuple[bytes, ...] | list[bytes] | None) -> int:
    if fan.empty:
        if fan.shown is None and (acc.mappings is None or acc.mappings.lookup(subject) is None):
            # Client parsers skip reply-less frames to this subject until a subscription appears in the account
            # (not to a mapping's source: those frames go where the mapping says).
            if len(acc.no_interest) >= NO_INTEREST_MAX:
                acc.no_interest.clear()
            acc.no_interest[subject] = True
        if src.no_responders:
            _no_responders(src, subject, has_hdr, pieces)
        return 0
    if fan.leaf_shown or (fan.link_queues and (queues is None or queues)):
        return _deliver_each(acc, src, fan, subject, has_hdr, pieces, queues, depth)
    skip = None if src.echo else src
    n = len(pieces)
    count = 0
    # One frame: prefix and tail as two items (no copy); a run: one join per target.
    one = pieces[0] if n == 1 else None
    parts = None if n == 1 else [b"", *pieces]
    dirty = None
    for conn, sub, pfx in (fan.hplain if has_hdr else fan.plain):
        if conn is skip:
            continue
        out = conn.out
        if one is not None:
            out.append(pfx)
            out.append(one)
        else:
            out.append(pfx.join(parts))
        if not conn.dirty:
            conn.dirty = True
            if dirty is None:
                dirty = src.server.dirty
            dirty.append(conn)
        conn.out_msgs += n
        conn.out_bytes += nbytes
        sub.delivered += n
        count += 1
    if fan.routers and src.to_routes:
        for conn, _sub, pfx, hpfx in fan.routers:
            if not conn.closed:
                head = hpfx if has_hdr else pfx
                conn.enqueue(head + one if one is not None else head.join(parts))  # type: ignore[arg-type]
                conn.out_msgs += n
                conn.out_bytes += nbytes
                count += 1
    if fan.gateways and src.to_gateways:
        gw_pieces = pieces if not acc.gw_recent else [_gateway_piece(acc, src, p, has_hdr) for p in pieces]
        for conn, _sub, pfx, hpfx in fan.gateways:
            if not (conn.closed or conn.optimistic and conn.refuses(acc.name_b, subject)):
                head = hpfx if has_hdr else pfx
                conn.enqueue(head.join([b"", *gw_pieces]))
                conn.out_msgs += n
                conn.out_bytes += nbytes
                count += 1
    if fan.limited:
        for conn, sub, pfx, hpfx in fan.limited:
            if conn is not skip:
                count += _deliver_limited(conn, sub, pfx, hpfx, has_hdr, pieces, nbytes)
    if has_hdr and fan.strip:
        for conn, sub, pfx, _hpfx in fan.strip:
            if conn is not skip and not (conn.closed or sub.closed):
                _deliver_stripped(conn, sub, pfx, pieces)
                count += 1
    if fan.queues and (queues is None or queues):
        for grp in fan.queues:
            if queues is not None and grp[0][1].queue not in queues:
                continue
            size = len(grp)
            fan.rr += 1
            for k in range(size):
                conn, sub, pfx, hpfx = grp[(fan.rr + k) % size]
                if conn is skip:
                    continue
                if _deliver_limited(conn, sub, pfx, hpfx, has_hdr, pieces, nbytes):
                    count += 1
                    break
    if fan.internal and depth < MAX_IMPORT_DEPTH:
        shown = fan.shown or subject  # a consumer delivery: its handlers see the stored message's subject
        for sub in fan.internal:
            count += _deliver_import(acc, sub, src, shown, has_hdr, pieces, nbytes, depth)
    if count:
        server = src.server
        server.out_msgs += n * count
        server.out_bytes += nbytes * count
    elif src.no_responders:
        _no_responders(src, subject, has_hdr, pieces)
    return count


def _deliver_traced_run(acc: Account, src: Any, subject: bytes, pieces: list[bytes],
                        queues: tuple[bytes, ...] | list[bytes] | None, mapped_from: bytes | None) -> int:
    """A run of header frames that may hold traced ones, frame by frame: a traced frame with its MsgTrace
    (host/msgtrace.py), whose event goes out once the frame was delivered; the others as usual. A mapped frame's
    event names the subject it was published to, then the mapping (`sm`), as nats-server's parser adds it."""
    count = 0
    for piece in pieces:
        reply, hdr, payload = decode_tail(piece, True)
        assert hdr is not None
        size = len(hdr) + len(payload)
        skip, trace, new_hdr = init_msg_trace(src, acc, subject if mapped_from is None else mapped_from, hdr, size)
        if skip:
            continue
        if trace is not None and mapped_from is not None:
            trace.subject_mapping(subject)
        if new_hdr is not hdr:
            piece = encode_tail(reply, new_hdr, payload)
            size = len(new_hdr) + len(payload)
        if trace is None:
            count += deliver(acc, src, subject, True, [piece], size, 0, queues, untraced=True)
        else:
            count += deliver_traced(acc, src, subject, piece, size, queues, 0, trace)
            trace.send()
    return count


def deliver_traced(acc: Account, src: Any, subject: bytes, piece: bytes, size: int,
                   queues: tuple[bytes, ...] | list[bytes] | None, depth: int, trace: MsgTrace) -> int:
    """One traced frame (with headers) to the subscribers of `subject` in `acc`: the frame-by-frame path, which
    records each target in `trace`."""
    if acc.responses and subject in acc.responses:
        return deliver(acc, src, subject, True, [piece], size, depth, queues, untraced=True)  # a service reply: as any
    r = acc.sublist.cache.get(subject)
    if r is None:
        r = acc.sublist.match(subject)
    fan = r.fanout
    if fan is None:
        fan = r.fanout = Fanout(r, acc, subject)
    for s in r.psubs:
        # Subscribers the plan leaves out by their permissions are listed with nats-server's reason.
        conn = s.conn
        if s.imported is not None:
            continue
        if conn.is_leaf:
            perms = conn.leaf_perms
            if perms is not None and not perms.may_receive(subject):
                # (as nats-server: its copy was numbered before the leaf's permissions refused it)
                trace.next_hop()
                denies = perms.receive is not None and perms.receive.denies(subject)
                trace.egress(conn, s, SUB_DENIED if denies else PUB_DENIED)
        elif not conn.is_link and conn.perms is not None and _denied(s, subject):
            trace.egress(conn, s, SUB_DENIED)
    if fan.empty:
        return deliver_fanout(acc, src, fan, subject, True, [piece], size, depth, queues)
    return _deliver_each(acc, src, fan, subject, True, [piece], queues, depth, trace)


def mapped_runs(found: Mapped, has_hdr: bool, pieces: list[bytes], nbytes: int) -> list[tuple[bytes, list[bytes], int]]:
    """A run published to a mapping's source, `found` its Mappings.lookup, as (mapped subject, frames, bytes) runs in
    publish order: one run when the mapping always gives one subject, else each frame to the subject the
    weights pick for it (b"": the share nothing takes, to be dropped)."""
    if found.__class__ is bytes:
        return [(found, pieces, nbytes)]  # type: ignore[list-item]
    runs: list[tuple[bytes, list[bytes], int]] = []
    for piece in pieces:
        to = Mappings.select(found)
        size = _size(piece, has_hdr)
        if runs and runs[-1][0] == to:
            last = runs[-1]
            last[1].append(piece)
            runs[-1] = (to, last[1], last[2] + size)
        else:
            runs.append((to, [piece], size))
    return runs


def deliver_mapped(acc: Account, src: Any, subject: bytes, found: Mapped, has_hdr: bool, pieces: list[bytes],
                   nbytes: int, queues: tuple[bytes, ...] | list[bytes] | None) -> int:
    """A leaf's run to a mapping's source (a client's goes through its publish checks first: host/client.py)."""
    count = 0
    for to, part, size in mapped_runs(found, has_hdr, pieces, nbytes):
        if to:
            count += deliver(acc, src, to, has_hdr, part, size, 0, queues, mapped_from=subject)
        elif has_hdr:
            trace_mapped_away(acc, src, subject, part)
    return count


def trace_mapped_away(acc: Account, src: Any, subject: bytes, pieces: list[bytes]) -> None:
    """Frames with headers that a mapping's weights dropped: a traced one still gets its event, `in` and an `sm` to
    "" (nats-server maps it to the empty subject, which reaches nobody)."""
    if not src.traces or not traced(acc, pieces):
        return
    for piece in pieces:
        _reply, hdr, payload = decode_tail(piece, True)
        assert hdr is not None
        trace = init_msg_trace(src, acc, subject, hdr, len(hdr) + len(payload))[1]
        if trace is not None:
            trace.subject_mapping(b"")
            trace.send()


def deliver_msg(acc: Account, src: Any, subject: bytes, reply: bytes | None, hdr: bytes | None,
                payload: bytes) -> int:
    """Deliver one message built here (not cut from a read): the hub's own publishes, service import hops."""
    size = len(payload) + (len(hdr) if hdr is not None else 0)
    return deliver(acc, src, subject, hdr is not None, [encode_tail(reply, hdr, payload)], size)


def deliver_as(acc: Account, src: Any, dest: bytes, subject: bytes, reply: bytes | None, hdr: bytes | None,
               payload: bytes, queues: tuple[bytes, ...] | list[bytes] | None = None) -> int:
    """A consumer delivery: to the subscribers of `dest`, written as `subject` (the stored message's subject, as
    nats-server's deliver subject works). A link (leaf, route) gets `dest` with `@<subject>` after the reply, which
    the server at its other end maps back (deliver_link_msg). Internal subscriptions are not delivered to. queues: as
    for `deliver` (a link's frame: the groups it names)."""
    r = acc.sublist.match(dest)
    if not r:
        return 0
    size = len(payload) + (len(hdr) if hdr is not None else 0)
    base = r.fanout
    if base is None:
        base = r.fanout = Fanout(r, acc, dest)
    variants = base.shown_as
    if variants is None:
        variants = base.shown_as = {}
    fan = variants.get(subject)
    if fan is None:
        if len(variants) >= SHOWN_AS_MAX:
            variants.clear()
        fan = variants[subject] = Fanout(r, acc, dest, subject)
    return deliver_fanout(acc, src, fan, dest, hdr is not None, [encode_tail(reply, hdr, payload)], size, 0, queues)


def deliver_link_msg(acc: Account, src: Any, subject: bytes, reply: bytes | None, queues: list[bytes] | None,
                     hdr: bytes | None, payload: bytes) -> None:
    """A message frame from a link (leaf, route): plain subscribers, and only the queue groups the frame names
    (none named: none). A consumer delivery (reply `$JS.ACK...@<subject>`) is shown with its stream subject, as the
    server that sent it encoded it (deliver_as)."""
    shown = _split_js_ack(reply) if reply is not None and b"@" in reply else None
    if shown is not None:
        deliver_as(acc, src, subject, shown[1], shown[0], hdr, payload, queues or ())
    else:
        size = len(payload) + (len(hdr) if hdr is not None else 0)
        piece = encode_tail(reply, hdr, payload)
        if src.is_leaf and acc.mappings is not None:
            found = acc.mappings.lookup(subject)
            if found is not None:
                deliver_mapped(acc, src, subject, found, hdr is not None, [piece], size, queues or ())
                return
        deliver(acc, src, subject, hdr is not None, [piece], size, 0, queues or ())


def _split_js_ack(reply: bytes) -> tuple[bytes, bytes] | None:
    """A consumer delivery's reply as it crosses a link, `$JS.ACK.<8 or more tokens>@<subject>`, -> (the ack reply,
    the subject to show), or None for any other reply. As nats-server: the first "@" after the ack's eighth dot
    (subjects may hold "@" themselves)."""
    if not reply.startswith(b"$JS.ACK."):
        return None
    at = reply.find(b"@")
    while at >= 0 and reply.count(b".", 0, at) < 8:
        at = reply.find(b"@", at + 1)
    if at < 0 or at == len(reply) - 1:
        return None
    return reply[:at], reply[at + 1 :]


def deliver_reply(acc: Account, src: Any, reply: bytes, payload: bytes) -> int:
    """A header-less message to a subject used once (a PubAck, an API answer), looked up without filling the
    subject cache (Sublist.match_one_off)."""
    if acc.responses and reply in acc.responses:
        return deliver_msg(acc, src, reply, None, None, payload)
    r = acc.sublist.match_one_off(reply)
    if len(r.psubs) == 1 and not r.qsubs and r.fanout is None:
        # The usual case, a client's wildcard inbox: one plain target, no plan to build for a subject used once.
        s = r.psubs[0]
        conn = s.conn
        if s.imported is None and not conn.is_link and s.max is None and conn.perms is None and not s.closed:
            n = len(payload)
            conn.out.append(b"MSG %s %s %d\r\n%s\r\n" % (reply, s.sid, n, payload))
            _count(conn, s, 1, n)
            server = src.server
            server.out_msgs += 1
            server.out_bytes += n
            return 1
    fan = r.fanout if r.fanout is not None else Fanout(r, acc, reply)
    if fan.empty:
        return 0
    return deliver_fanout(acc, src, fan, reply, False, [encode_tail(None, None, payload)], len(payload), 0, None)


def _count(conn: Any, sub: Subscription, n: int, nbytes: int) -> None:
    """n frames queued to `conn` for `sub` outside deliver_fanout's hot loop (which does this inline): count them,
    write them with the batch."""
    conn.out_msgs += n
    conn.out_bytes += nbytes
    sub.delivered += n
    if not conn.dirty:
        conn.dirty = True
        conn.server.dirty.append(conn)


def has_interest(acc: Account, subject: bytes) -> bool:
    r = acc.sublist.match(subject)
    return bool(r.psubs) or any(r.qsubs)


def _size(piece: bytes, has_hdr: bool) -> int:
    _, hdr, payload = decode_tail(piece, has_hdr)
    return len(payload) + (len(hdr) if hdr is not None else 0)


def _deliver_each(acc: Account, src: Any, fan: Fanout, subject: bytes, has_hdr: bool, pieces: list[bytes],
                  queues: tuple[bytes, ...] | list[bytes] | None, depth: int, trace: MsgTrace | None = None) -> int:
    """Frame by frame: links (leafs, routes) in queue groups, consumer deliveries to links.

    A link gets one frame per message naming every group it was picked for, so its plain subscribers see the
    frame once and each named group delivers it once (nats-server processMsgResults). A queue group picks, from
    a rotating start, the first local member or route; a leaf member is only the fallback when the message came
    from a client, a leaf or a route (local members and cluster peers win over leafs). A message that came over
    a route goes to local members only: never on to another route (one hop inside the full mesh).
    With a trace (one traced frame), every target is recorded in it, and links get the frame with its hop header.
    """
    count = 0
    out_bytes = 0
    skip = None if src.echo else src
    to_routes = src.to_routes
    to_gateways = src.to_gateways
    leaf_fallback = src.kind != "Internal"
    for piece in pieces:
        reply, hdr, payload = decode_tail(piece, has_hdr)
        size = len(payload) + (len(hdr) if hdr is not None else 0)
        to_links: dict[Any, list[bytes]] = {}
        n = 0
        for conn, sub, pfx in fan.plain:
            if conn is skip:
                if trace is not None and not conn.is_link:
                    trace.egress(conn, sub, NO_ECHO)
                continue
            if conn.is_link:
                to_links.setdefault(conn, [])
            elif trace is None:
                n += _deliver_limited(conn, sub, pfx, b"H" + pfx, has_hdr, [piece], size)  # "MSG ..." -> "HMSG ..."
            else:
                n += _deliver_traced_to(trace, conn, sub, pfx, b"H" + pfx, piece, size)
        if to_routes:
            for conn, _sub, _pfx, _hpfx in fan.routers:
                to_links.setdefault(conn, [])
        if to_gateways:
            for conn, _sub, _pfx, _hpfx in fan.gateways:
                if not (conn.optimistic and conn.refuses(acc.name_b, subject)):
                    to_links.setdefault(conn, [])
        for conn, sub, pfx, hpfx in fan.limited:
            if conn is skip:
                if trace is not None:
                    trace.egress(conn, sub, NO_ECHO)
            elif trace is None:
                n += _deliver_limited(conn, sub, pfx, hpfx, has_hdr, [piece], size)
            else:
                n += _deliver_traced_to(trace, conn, sub, pfx, hpfx, piece, size)
        for grp in fan.queues:
            qname = grp[0][1].queue
            if queues is not None and qname not in queues:
                continue
            k_max = len(grp)
            fan.rr += 1
            fallback = None
            remote = None  # the nearest other cluster with a member: only when this cluster has none
            for k in range(k_max):
                conn, sub, pfx, hpfx = grp[(fan.rr + k) % k_max]
                if conn is skip or conn.closed:
                    continue
                if conn.is_gateway:
                    if to_gateways and (remote is None or conn.rtt < remote.rtt):
                        remote = conn
                    continue
                if not conn.is_link:
                    if _deliver_limited(conn, sub, pfx, hpfx, has_hdr, [piece], size) if trace is None else \
                            _deliver_traced_to(trace, conn, sub, pfx, hpfx, piece, size):
                        n += 1
                        fallback = remote = None
                        break
                    continue
                if conn.is_router and not to_routes:
                    continue
                if leaf_fallback and (conn.is_leaf or sub.origin is not None):  # a leaf, or one behind a route
                    if fallback is None:
                        fallback = conn
                    continue
                to_links.setdefault(conn, []).append(qname)  # type: ignore[arg-type]
                fallback = remote = None
                break
            if fallback is not None:
                to_links.setdefault(fallback, []).append(qname)  # type: ignore[arg-type]
            elif remote is not None:
                to_links.setdefault(remote, []).append(qname)  # type: ignore[arg-type]
        if to_links:
            if reply and fan.leaf_shown:
                reply = reply + b"@" + fan.shown  # type: ignore[operator]
            gw_reply = reply
            if reply and acc.gw_recent:
                gw_reply = acc.map_gateway_reply(reply, src.server.gateway_reply_prefix)
            for link, names in to_links.items():
                if link.closed:
                    continue
                link_reply = gw_reply if link.is_gateway else reply
                if trace is None:
                    link.send_link_msg(acc, subject, link_reply, names, hdr, payload)
                    n += 1
                else:
                    n += _forward_traced(trace, link, acc, subject, link_reply, names, hdr,  # type: ignore[arg-type]
                                         payload)
        if fan.internal and depth < MAX_IMPORT_DEPTH:
            for sub in fan.internal:
                n += _deliver_import(acc, sub, src, fan.shown or subject, has_hdr, [piece], size, depth, trace)
        count += n
        out_bytes += n * size
    if count and (trace is None or not trace.only):
        src.server.out_msgs += count
        src.server.out_bytes += out_bytes
    elif src.no_responders:
        _no_responders(src, subject, has_hdr, pieces)
    return count


def deliver_gateway_reply(acc: Account, src: Any, subject: bytes, has_hdr: bool, pieces: list[bytes],
                          nbytes: int, depth: int) -> int:
    """A message to `_GR_.<cluster hash>.<server hash>.<reply>` in a super-cluster: to the gateway of the cluster
    with that hash, or, when the hash is this cluster's, to `<reply>` here (handleGatewayReply; we do
    not pass it on to the server of that hash by route: any server of the cluster delivers it)."""
    server = src.server
    if not server.gateway_name or len(subject) <= len(GW_REPLY_PREFIX) + 2 * (GW_HASH_LEN + 1):
        return 0
    start = len(GW_REPLY_PREFIX)
    cluster = subject[start:start + GW_HASH_LEN]
    reply_subject = subject[start + 2 * (GW_HASH_LEN + 1):]
    if cluster == server.gateway_hash:
        if depth:
            return 0
        return deliver(acc, src, reply_subject, has_hdr, pieces, nbytes, depth + 1)
    if not src.to_gateways:
        return 0
    gw = server.gateway_by_hash(cluster)
    if gw is None or gw.closed:
        return 0
    pfx, hpfx = gw.link_prefixes(acc, subject)
    head = hpfx if has_hdr else pfx
    for piece in pieces:
        gw.enqueue(head + piece)
    gw.out_msgs += len(pieces)
    gw.out_bytes += nbytes
    return 1


def _gateway_piece(acc: Account, src: Any, piece: bytes, has_hdr: bool) -> bytes:
    """A frame's tail as it goes to another cluster: its reply mapped if a subscription made here in the last 2 s
    matches it (Account.map_gateway_reply)."""
    reply, hdr, payload = decode_tail(piece, has_hdr)
    if not reply:
        return piece
    mapped = acc.map_gateway_reply(reply, src.server.gateway_reply_prefix)
    return piece if mapped is reply else encode_tail(mapped, hdr, payload)


def _deliver_limited(conn: Client, sub: Subscription, pfx: bytes, hpfx: bytes, has_hdr: bool,
                     pieces: list[bytes], nbytes: int) -> int:
    """One target, every rule checked: closing connections, UNSUB max, header stripping (queue members,
    limited subscriptions and the frame-by-frame path; not the plain loop of deliver_fanout)."""
    if conn.closed or sub.closed:
        return 0
    take = pieces
    if sub.max is not None:
        left = sub.max - sub.delivered
        if left <= 0:
            conn.remove_sub(sub)
            return 0
        if left < len(pieces):
            take = pieces[:left]
            nbytes = sum(_size(x, has_hdr) for x in take)
    perms = conn.perms
    if perms is not None and perms.replies is not None:
        # allow_responses: the subscriber may answer what it is given (client.go deliverMsg tracks replies).
        now = time.monotonic()
        for piece in take:
            reply = decode_tail(piece, has_hdr)[0]
            if reply:
                perms.track_reply(reply, now)
    if has_hdr and not conn.headers:
        _deliver_stripped(conn, sub, pfx, take)
    else:
        conn.enqueue((hpfx if has_hdr else pfx).join([b"", *take]))
        conn.out_msgs += len(take)
        conn.out_bytes += nbytes
        sub.delivered += len(take)
    if sub.max is not None and sub.delivered >= sub.max:
        conn.remove_sub(sub)
    return 1


def _deliver_traced_to(trace: MsgTrace, conn: Client, sub: Subscription, pfx: bytes, hpfx: bytes, piece: bytes,
                       size: int) -> int:
    """One client target of a traced frame, recorded as an `eg` event with nats-server's reason when it gets nothing
    (deliverMsg); with trace-only it is listed and gets nothing. 1 when it got the frame (or is listed)."""
    if sub.closed:
        trace.egress(conn, sub, SUB_CLOSED)
        return 0
    if sub.max is not None and sub.delivered >= sub.max:
        trace.egress(conn, sub, AUTO_UNSUB)
        return 0
    if conn.closed:
        trace.egress(conn, sub, CLIENT_CLOSED)
        return 0
    if not trace.only:
        _deliver_limited(conn, sub, pfx, hpfx, True, [piece], size)
    trace.egress(conn, sub)
    return 1


def _forward_traced(trace: MsgTrace, link: Any, acc: Account, subject: bytes, reply: bytes | None,
                    queues: list[bytes], hdr: bytes, payload: bytes) -> int:
    """A traced frame to a leaf or route: with its Nats-Trace-Hop, counted in the event's hops. A peer below the
    tracing protocol still gets it (but sends no event), unless it is trace-only (client.go deliverMsg)."""
    hdr = trace.hop_header(hdr)
    error = ""
    if link.protocol < MSG_TRACE_PROTO:
        if trace.only:
            trace.egress(link, None, NO_SUPPORT)
            return 0
        error = DELIVERED_NO_SUPPORT
    link.send_link_msg(acc, subject, reply, queues, hdr, payload)
    trace.egress(link, None, error)
    return 1


def _deliver_stripped(conn: Client, sub: Subscription, pfx: bytes, pieces: list[bytes]) -> None:
    # nats-server strips the header block for clients that did not say headers:true.
    for piece in pieces:
        reply, _hdr, payload = decode_tail(piece, True)
        conn.enqueue(pfx + encode_tail(reply, None, payload))
        conn.out_msgs += 1
        conn.out_bytes += len(payload)
    sub.delivered += len(pieces)


def _deliver_import(acc: Account, sub: Subscription, src: Any, subject: bytes, has_hdr: bool,
                    pieces: list[bytes], nbytes: int, depth: int, trace: MsgTrace | None = None) -> int:
    """A message to an internal subscription: a hub handler, a stream import or a service import. With a trace (one
    traced frame): handlers that take part in traces (streams) see it in msgtrace.active, others do not run for a
    trace-only frame; an import is an `se`/`si` event, and the trace goes on past it only where `allow_trace` says
    so, else the message goes on untraced or, trace-only, stops there. Past a service import with allow_trace the
    message's Nats-Trace-Dest names a response subject of the exporting account that leads back to the destination,
    so the events of the servers after this one reach it (setupResponseServiceImport)."""
    imp = sub.imported
    if isinstance(imp, InternalHandler):
        if sub.closed:
            return 0
        if trace is not None:
            if not imp.traced:
                if trace.only:
                    return 0
            else:
                msgtrace.active = trace
        taken = 0
        try:
            for piece in pieces:
                reply, hdr, payload = decode_tail(piece, has_hdr)
                # False: the handler does not serve this message (a direct get of a stream without allow_direct),
                # so it must not count as a responder.
                if imp.callback(src, subject, reply, hdr, payload) is not False:
                    taken = 1
        finally:
            msgtrace.active = None
        return taken
    if not isinstance(imp, ServiceImport):
        # Stream import: same frames, subject mapped into the importing account.
        to = map_subject(imp.subject, imp.local, subject)
        if trace is not None:
            trace.stream_export(imp.dest.name, to)
            if imp.allow_trace:
                return deliver_traced(imp.dest, src, to, pieces[0], nbytes, None, depth + 1, trace)
            if trace.only:
                return 0
            # (delivered untraced, its headers as they are: nats-server only stops tracing here)
        return deliver(imp.dest, src, to, has_hdr, pieces, nbytes, depth + 1)
    if src.is_router:
        return 0  # the server the request came from served its client's import already
    mapped = map_subject(imp.local, imp.subject, subject)
    dest_mappings = imp.dest.mappings
    if dest_mappings is not None:
        # The exporting account's own mappings apply to what it is asked (processServiceImport).
        found = dest_mappings.lookup(mapped)
        if found is not None:
            mapped = Mappings.select(found)
            if not mapped:
                return 0
    if trace is not None:
        trace.service_import(imp.dest.name, subject, mapped)
        if not imp.allow_trace:
            if trace.only:
                return 0
            pieces = [_trace_disabled(pieces[0])]
            trace = None
    delivered = 0
    # As nats-server, a request crossing accounts carries the requesting account (and, in a cluster, the server and
    # cluster it came in at: JetStream places a new stream in the requester's cluster). We do not measure client
    # round-trip times, so rtt is 0.
    server = src.server
    where = b',"server":"%s","cluster":"%s"' % (server.name.encode(), server.cluster_name.encode()) \
        if server.cluster_name else b""
    info = b'Nats-Request-Info: {"acc":"' + acc.name_b + b'","rtt":0' + where + b'}\r\n\r\n'
    for piece in pieces:
        reply, hdr, payload = decode_tail(piece, has_hdr)
        if reply:
            reply = imp.dest.add_response(acc, reply)
        hdr = hdr[:-2] + info if hdr is not None else b"NATS/1.0\r\n" + info
        if trace is not None:
            hdr = hdr_set(hdr, TRACE_DEST, imp.dest.add_response(trace.acc, trace.dest, kept=True))
        size = len(payload) + len(hdr)
        if trace is not None:
            delivered += deliver_traced(imp.dest, src, mapped, encode_tail(reply, hdr, payload), size, None,
                                        depth + 1, trace)
        else:
            delivered += deliver(imp.dest, src, mapped, True, [encode_tail(reply, hdr, payload)], size, depth + 1)
    return 1 if delivered else 0


def _trace_disabled(piece: bytes) -> bytes:
    """A traced frame that goes on untraced past an import: its Nats-Trace-Dest says `trace disabled`, so no server
    after this one traces it either."""
    reply, hdr, payload = decode_tail(piece, True)
    return encode_tail(reply, hdr_set(hdr, TRACE_DEST, TRACE_DISABLED), payload)  # type: ignore[arg-type]


def _no_responders(src: Client, subject: bytes, has_hdr: bool, pieces: list[bytes]) -> None:
    # As nats-server: a 503 status to the requester only, on its own subscription to the reply.
    assert src.account is not None
    for piece in pieces:
        reply = decode_tail(piece, has_hdr)[0]
        if not reply:
            continue
        for sub in src.account.sublist.match(reply).psubs:
            if sub.conn is src:
                hdr = b"NATS/1.0 503\r\nNats-Subject: " + subject + b"\r\n\r\n"
                src.enqueue(b"HMSG %s %s %d %d\r\n%s\r\n" % (reply, sub.sid, len(hdr), len(hdr), hdr))
                break
