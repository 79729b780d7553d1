# edge/subjects.py — subjects on the edge: validation, wildcard matching, and the leaf's small sublist.
#
# Rules this file keeps:
# 1. Subjects and queue names are bytes. A subject is tokens joined by b"."; `*` matches exactly one
#    token and `>` one or more trailing tokens, and both are wildcards only as a whole token
#    (`foo.*bar` is a literal), as nats-server `server/sublist.go` IsValidSubject / matchLiteral.
# 2. The literal path does not split: a literal subscription is found with one dict lookup. A
#    wildcard pattern is split once, when it is added, and a subject is split only when wildcard
#    patterns exist.
# 3. The Sublist holds opaque items; it knows nothing of clients, queue groups or the hub. Its size
#    is bounded by whoever adds to it (the broker's max_subscriptions, the uplink's hub table cap).

_WS = (b" ", b"\t", b"\r", b"\n", b"\f")


def _has_space(s):
    for c in _WS:
        if c in s:
            return True
    return False


def valid(subject, wildcards=True):
    # True if `subject` is a well formed subject; with wildcards=False it must also be literal.
    if not subject or _has_space(subject):
        return False
    toks = subject.split(b".")
    last = len(toks) - 1
    for i, t in enumerate(toks):
        if not t:
            return False
        if t == b"*" or t == b">":
            if not wildcards or (t == b">" and i != last):
                return False
    return True


def valid_queue(queue):
    return bool(queue) and not _has_space(queue)


def is_literal(subject):
    if b"*" not in subject and b">" not in subject:
        return True
    for t in subject.split(b"."):
        if t == b"*" or t == b">":
            return False
    return True


def match_tokens(pat, toks):
    # pat: tokens of a pattern; toks: tokens of a literal subject.
    n = len(toks)
    for i, p in enumerate(pat):
        if p == b">":
            return n > i
        if i >= n or (p != b"*" and p != toks[i]):
            return False
    return len(pat) == n


def match(pattern, subject):
    return pattern == subject or match_tokens(pattern.split(b"."), subject.split(b"."))


def presized(n):
    # An empty dict whose table already holds n keys: MicroPython keeps a dict's table when keys
    # are deleted, so tables sized at start-up (while the heap is unfragmented) never need the
    # large contiguous block a resize takes later, when the heap is fragmented.
    d = {}
    for i in range(n):
        d[i] = None
    for i in range(n):
        del d[i]
    return d


class Sublist:
    # Literal subjects: one dict subject -> item, or -> [items] when several share the subject (one
    # item alone is stored bare: a list per subject would cost ~64 bytes each on MicroPython).
    # Wildcard patterns: a list of (tokens, item). Items must not be lists.
    def __init__(self, size=0):
        self.lit = presized(size)
        self.wild = []
        self.count = 0

    def add(self, subject, item):
        if is_literal(subject):
            cur = self.lit.get(subject)
            if cur is None:
                self.lit[subject] = item
            elif cur.__class__ is list:
                cur.append(item)
            else:
                self.lit[subject] = [cur, item]
        else:
            self.wild.append((subject.split(b"."), item))
        self.count += 1

    def remove(self, subject, item):
        # Removes one entry whose item `is` item; returns False if there was none.
        cur = self.lit.get(subject)
        if cur is item:
            del self.lit[subject]
            self.count -= 1
            return True
        if cur.__class__ is list:
            for i, x in enumerate(cur):
                if x is item:
                    cur.pop(i)
                    if len(cur) == 1:
                        self.lit[subject] = cur[0]
                    self.count -= 1
                    return True
            return False
        for i, w in enumerate(self.wild):
            if w[1] is item:
                self.wild.pop(i)
                self.count -= 1
                return True
        return False

    def match(self, subject, out):
        # Appends every item whose subject matches the literal `subject` to `out`; returns out.
        cur = self.lit.get(subject)
        if cur is not None:
            if cur.__class__ is list:
                out.extend(cur)
            else:
                out.append(cur)
        if self.wild:
            toks = subject.split(b".")
            for pat, item in self.wild:
                if match_tokens(pat, toks):
                    out.append(item)
        return out

    def has(self, subject):
        if subject in self.lit:
            return True
        if self.wild:
            toks = subject.split(b".")
            for pat, _ in self.wild:
                if match_tokens(pat, toks):
                    return True
        return False

    def clear(self):
        self.lit = {}
        self.wild = []
        self.count = 0
