"""Subject index: a trie of subscriptions with a match cache, as nats-server's `server/sublist.go`.

Owns: subject validation, the trie (one node per token; `*` and `>` children held apart), the
match cache (published literal subject -> SublistResult) and its invalidation.

Rules:
- Subjects are bytes; tokens split on b".". A result is immutable once cached; routing code may
  hang derived data on it (`SublistResult.fanout`) because a change to the index drops the result.
- Invalidation is targeted: a literal subscription can only match the cache entry with the same
  subject, so its insert/remove pops one key; a wildcard subscription drops the entries it matches
  (nats-server walks the cache the same way). The cache is bounded (CACHE_MAX), like slCacheMax.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from edge.subjects import is_literal
from edge.subjects import match as subject_matches
from edge.subjects import valid as is_valid_subject

CACHE_MAX = 4096
_PWC = b"*"
_FWC = b">"


def is_valid_literal_subject(subject: bytes) -> bool:
    return is_valid_subject(subject, False)


class Subscription:
    """One SUB of a connection (or an internal subscription when `conn` is an internal handler)."""

    __slots__ = ("conn", "subject", "queue", "sid", "max", "delivered", "closed", "imported", "weight", "origin")

    def __init__(self, conn: Any, subject: bytes, queue: bytes | None, sid: bytes) -> None:
        self.conn = conn
        self.subject = subject
        self.queue = queue
        self.sid = sid
        self.max: int | None = None
        self.delivered = 0
        self.closed = False
        self.imported: Any = None  # set for internal subs that forward into another account
        self.weight = 1  # queue members behind a leaf link (LS+ subject queue weight)
        self.origin: bytes | None = None  # a route's interest on behalf of a leaf (LS+ <origin> ...): see delivery


class SublistResult:
    """Matches for one literal subject: plain subs, and one list per queue group."""

    __slots__ = ("psubs", "qsubs", "fanout")

    def __init__(self, psubs: list[Subscription], qsubs: list[list[Subscription]]) -> None:
        self.psubs = psubs
        self.qsubs = qsubs
        self.fanout: Any = None  # delivery data derived by the account, dropped with the result

    def __bool__(self) -> bool:
        return bool(self.psubs or self.qsubs)


class _Node:
    __slots__ = ("next", "pwc", "fwc", "psubs", "qsubs")

    def __init__(self) -> None:
        self.next: dict[bytes, _Node] = {}
        self.pwc: _Node | None = None
        self.fwc: _Node | None = None
        self.psubs: list[Subscription] = []
        self.qsubs: dict[bytes, list[Subscription]] = {}

    def empty(self) -> bool:
        return not (self.next or self.pwc or self.fwc or self.psubs or self.qsubs)


class Sublist:
    changes = 0  # counts the gen changes of every Sublist: plans that span accounts (a route's) check it

    def __init__(self) -> None:
        self._root = _Node()
        self.cache: dict[bytes, SublistResult] = {}
        self.gen = 0  # changes whenever a cached result may have changed (plans derived from them check it)
        # reply prefix -> (gen, the subscriptions every subject under it reaches, or None); see match_one_off
        self._one_off: dict[bytes, tuple[int, SublistResult | None]] = {}
        self.count = 0
        self.inserts = 0
        self.removes = 0
        self.matches = 0
        self.cache_hits = 0

    def insert(self, sub: Subscription) -> None:
        node = self._root
        for t in sub.subject.split(b"."):
            if t == _PWC:
                if node.pwc is None:
                    node.pwc = _Node()
                node = node.pwc
            elif t == _FWC:
                if node.fwc is None:
                    node.fwc = _Node()
                node = node.fwc
            else:
                nxt = node.next.get(t)
                if nxt is None:
                    nxt = node.next[t] = _Node()
                node = nxt
        if sub.queue is None:
            node.psubs.append(sub)
        else:
            node.qsubs.setdefault(sub.queue, []).append(sub)
        self.count += 1
        self.inserts += 1
        self.invalidate(sub.subject)

    def remove(self, sub: Subscription) -> bool:
        path: list[tuple[_Node, bytes, _Node]] = []
        node = self._root
        for t in sub.subject.split(b"."):
            if t == _PWC:
                nxt = node.pwc
            elif t == _FWC:
                nxt = node.fwc
            else:
                nxt = node.next.get(t)
            if nxt is None:
                return False
            path.append((node, t, nxt))
            node = nxt
        if sub.queue is None:
            try:
                node.psubs.remove(sub)
            except ValueError:
                return False
        else:
            members = node.qsubs.get(sub.queue)
            if not members or sub not in members:
                return False
            members.remove(sub)
            if not members:
                del node.qsubs[sub.queue]
        # Prune empty nodes so a churn of unique subjects does not grow the trie forever.
        for parent, t, child in reversed(path):
            if not child.empty():
                break
            if t == _PWC:
                parent.pwc = None
            elif t == _FWC:
                parent.fwc = None
            else:
                del parent.next[t]
        self.count -= 1
        self.removes += 1
        self.invalidate(sub.subject)
        return True

    def invalidate(self, subject: bytes) -> None:
        """Drop the cached results a subscription to `subject` takes part in (also when one of its properties that
        delivery plans depend on changes, such as an UNSUB max)."""
        self.replan()
        cache = self.cache
        if not cache:
            return
        if is_literal(subject):
            cache.pop(subject, None)
            return
        for key in [k for k in cache if subject_matches(subject, k)]:
            del cache[key]

    def replan(self) -> None:
        """Delivery plans made from this sublist no longer hold, though its results do (what they also depend on
        changed: an account's recent subscriptions for gateway replies)."""
        self.gen += 1
        Sublist.changes += 1

    def reset(self) -> None:
        """Drop every cached result (a property delivery plans depend on changed for many subscriptions)."""
        self.replan()
        self.cache.clear()

    def match(self, subject: bytes) -> SublistResult:
        r = self.cache.get(subject)
        if r is not None:
            self.cache_hits += 1
            return r
        self.matches += 1
        psubs: list[Subscription] = []
        qmap: dict[bytes, list[Subscription]] = {}
        toks = subject.split(b".")
        self._match(self._root, toks, 0, psubs, qmap)
        r = SublistResult(psubs, list(qmap.values()))
        if len(self.cache) >= CACHE_MAX:
            # Drop an arbitrary half rather than everything: hot subjects come back quickly.
            for key in list(self.cache)[: CACHE_MAX // 2]:
                del self.cache[key]
        self.cache[subject] = r
        return r

    def _match(
        self, node: _Node, toks: list[bytes], i: int, psubs: list[Subscription], qmap: dict
    ) -> None:
        n = len(toks)
        while True:
            if node.fwc is not None and i < n:
                _collect(node.fwc, psubs, qmap)
            if i == n:
                _collect(node, psubs, qmap)
                return
            if node.pwc is not None:
                self._match(node.pwc, toks, i + 1, psubs, qmap)
            nxt = node.next.get(toks[i])
            if nxt is None:
                return
            node = nxt
            i += 1

    def match_one_off(self, subject: bytes) -> SublistResult:
        """Match a subject used once (a reply inbox: PubAcks, API answers) without caching it: the subscriptions
        under its prefix are looked up once per prefix (the client's wildcard inbox `_INBOX.x.*`) and reused while
        no subscription changes; a prefix where the last token matters gets a walk per subject."""
        r = self.cache.get(subject)
        if r is not None:
            return r
        cut = subject.rfind(b".")
        prefix = subject[:cut] if cut > 0 else b""
        memo = self._one_off.get(prefix)
        if memo is not None and memo[0] == self.gen:
            r = memo[1]
        elif prefix:
            r = self.match_any_last(prefix)
            if len(self._one_off) >= 256:
                self._one_off.clear()
            self._one_off[prefix] = (self.gen, r)
        if r is None:
            r = self.match(subject)
            self.cache.pop(subject, None)
        return r

    def match_any_last(self, prefix: bytes) -> SublistResult | None:
        """The subscriptions that match `prefix.<t>` whatever the single token t is, or None when that depends on
        t (a subscription with a literal last token sits where prefix leads). Lets a caller that delivers to many
        one-off subjects under one wildcard inbox (`_INBOX.x.*`, JetStream PubAcks) walk the trie once per prefix
        instead of once per subject; it must walk again after any insert or remove. Not cached here."""
        psubs: list[Subscription] = []
        qmap: dict[bytes, list[Subscription]] = {}
        if not self._match_any_last(self._root, prefix.split(b"."), 0, psubs, qmap):
            return None
        return SublistResult(psubs, list(qmap.values()))

    def _match_any_last(self, node: _Node, toks: list[bytes], i: int, psubs: list[Subscription], qmap: dict) -> bool:
        n = len(toks)
        while True:
            if i == n:
                for child in node.next.values():
                    if child.psubs or child.qsubs:
                        return False
                if node.pwc is not None:
                    _collect(node.pwc, psubs, qmap)
                if node.fwc is not None:
                    _collect(node.fwc, psubs, qmap)
                return True
            if node.fwc is not None:
                _collect(node.fwc, psubs, qmap)
            if node.pwc is not None and not self._match_any_last(node.pwc, toks, i + 1, psubs, qmap):
                return False
            nxt = node.next.get(toks[i])
            if nxt is None:
                return True
            node = nxt
            i += 1

    def cache_count(self) -> int:
        return len(self.cache)

    def all(self) -> Iterator[Subscription]:
        stack = [self._root]
        while stack:
            node = stack.pop()
            yield from node.psubs
            for members in node.qsubs.values():
                yield from members
            stack.extend(node.next.values())
            if node.pwc is not None:
                stack.append(node.pwc)
            if node.fwc is not None:
                stack.append(node.fwc)


def _collect(node: _Node, psubs: list[Subscription], qmap: dict[bytes, list[Subscription]]) -> None:
    if node.psubs:
        psubs.extend(node.psubs)
    for q, members in node.qsubs.items():
        if members:
            qmap.setdefault(q, []).extend(members)
