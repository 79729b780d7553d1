"""The hub's reader: edge.proto.Parser plus next_batch(), which cuts a whole read into runs of frames.

The device parser (edge/proto.py) yields one event per operation; that costs a tuple and a dispatch per
message, which a pure-Python hub cannot afford at nats-server's rates (shared/perf/PURE-PYTHON-CEILING.md,
section 6). next_batch() returns every complete operation of the buffer as a list, where consecutive
message frames to one subject become one run:

    (OP_PUB_RUN, subject, has_hdr, pieces, nbytes)

Each piece is the frame's tail as it sits in the read buffer, " [reply] [hlen] size\\r\\n<hdr><payload>\\r\\n",
so b"MSG <subject> <sid>" + piece (or b"LMSG <subject>" + piece) is the frame a subscriber gets: delivery
(host/delivery.py) prepends a cached prefix and never formats a message. nbytes sums the frames' sizes.

Which frames make runs depends on the peer: PUB/HPUB from a client, LMSG/HMSG without queue names from a
leaf link, RMSG/HMSG without queue names from a route, whose run "subject" is b"<account> <subject>" (a frame
naming queue groups, or a link's frame whose reply holds an "@" (a consumer delivery, `$JS.ACK...@<subject>`), is
an OP_LMSG or OP_RMSG event, as next_event() gives it). Anything else (and any line
that is not in canonical form: lower case, tabs, extra spaces) goes through Parser._control(), so both methods
accept and refuse exactly the same input with the same errors (tests/unit/test_hub_parser.py holds them to that).
"""

from __future__ import annotations

import re
from typing import Any

from edge.proto import (
    CRLF,
    ERR_MAX_CONTROL_LINE,
    ERR_UNKNOWN_OP,
    KIND_CLIENT,
    KIND_LEAF,
    KIND_ROUTE,
    MAX_CONTROL_LINE,
    MAX_PAYLOAD,
    NEED_DATA,
    OP_PING,
    OP_PONG,
    OP_RMSG,
    OP_RS_MINUS,
    OP_RS_PLUS,
    Parser,
    RemoteProtocolError,
    _frame,
    _reply_queue_words,
    _token,
    reply_queues,
)
from host.msgtrace import TRACE_DEST

OP_PUB_RUN = 17  # after edge.proto's op numbers
OP_ACCOUNT_INTEREST = 19  # a gateway's `A+ <account>` / `A- <account>`: (op, plus, account)
LINE_CACHE_MAX = 4096  # parsed reply-less lines kept (a repeated line costs one dict lookup)
PLANS_MAX = 4096  # delivery plans a connection keeps (Client.plans), then they are rebuilt as needed

# The message verbs each peer sends as runs: (plain, with headers).
_RUN_VERBS = {
    KIND_CLIENT: (b"PUB", b"HPUB"),
    KIND_LEAF: (b"LMSG", b"HMSG"),
    KIND_ROUTE: (b"RMSG", b"HMSG"),
}


class HubParser(Parser):
    piecewise_from = None  # next_batch() slices runs of frames out of one buffer (edge/proto.py Parser)

    def __init__(self, kind: int, max_control_line: int = MAX_CONTROL_LINE,
                 max_payload: int | None = MAX_PAYLOAD, gateway: bool = False) -> None:
        super().__init__(kind, max_control_line, max_payload)
        self._verbs_run = _RUN_VERBS.get(kind)
        # A gateway speaks the route protocol plus the optimistic mode's account verbs A+/A- (gateway.go).
        self._gateway = gateway
        if kind == KIND_ROUTE:
            # The leaf-origin forms (_origin_control) are route verbs too: a partial line of one runs into the
            # control-line limit as a whole one does (found by fuzzing: it was an unknown operation, which
            # nats-server says only of verbs it does not know). The values are never read: _control takes these
            # lines before Parser._control sees them.
            self._verbs = dict(self._verbs)
            self._verbs[b"LS-"] = self._verbs[b"RS-"]
            self._verbs[b"LMSG"] = self._verbs[b"RMSG"]
            if gateway:
                self._verbs[b"A+"] = self._verbs[b"A-"] = self._verbs[b"RS-"]
        self._link = kind != KIND_CLIENT  # on a link, "+" and "|" after the subject start queue names
        # A route's frames name the account before the subject: a run's "subject" is then b"<account> <subject>".
        self._words = 2 if kind == KIND_ROUTE else 1
        self._max_size = max_payload if max_payload is not None else 1 << 62
        # raw reply-less line -> (subject, has_hdr, size, tail, None), tail = offset of " size" in the line
        self._lines: dict[bytes, tuple[bytes, bool, int, int, bytes | None]] = {}
        # Delivery plans, kept by the router (host/delivery.py Plan): subject -> an object whose `targets` (and
        # `htargets` for frames with headers; None: not for those) list (output list, prefix) pairs. A run to such
        # a subject is delivered here: each target's output list gets prefix + piece. The plan counts what it
        # carried in msgs/bytes and is listed in `used` when it starts counting; the router settles the counts.
        # Runs are only delivered here while no event came before them in the batch, so order is kept.
        self.plans: dict[bytes, Any] = {}
        self.used: list[Any] = []
        # A run with a frame whose piece starts so (b" <reply>...") is never delivered by a plan: a gateway's
        # replies mapped by the other cluster (`_GR_.`) are stripped frame by frame (host/gateway.py process_run).
        self.unplanned_reply: bytes | None = None
        # Subjects nobody listens to (the router's, Account.no_interest). A reply-less frame to one of them is
        # only counted, in dropped/dropped_bytes, and makes no event.
        self.drop: dict[bytes, bool] = {}
        self.drop_replies = False  # also skip frames with a reply (the peer wants no 503 statuses)
        self.dropped = 0
        self.dropped_bytes = 0

    def next_batch(self) -> list[tuple]:
        """Every complete operation in the buffer, as a list, message frames merged into runs; runs whose subject
        has a plan are delivered on the spot instead (see `plans`). Errors are raised after the operations before
        them were returned, so the caller acts on those first."""
        if self.error:
            raise self.error
        out: list[tuple] = []
        try:
            self._batch(out)
        except RemoteProtocolError as e:
            self.error = e
            if not out:
                raise
        return out

    def set_max_payload(self, max_payload: int) -> None:
        """Lower the payload limit once the connection's account is known (its limit may be below the server's).
        Lines seen before were checked against the old limit, so they are forgotten."""
        self.max_payload = self._max_size = max_payload
        self._lines.clear()

    def _batch(self, out: list[tuple]) -> None:
        # The hot loop of the hub: every statement here runs once per message, so it makes no Python calls on
        # the common paths. A frame costs one find, one slice, one dict lookup (or, for a new line inside a run,
        # the tail parse below), two index checks and one slice for the piece; a run with a plan then one dict
        # lookup and, per target, the appends of prefix and piece (or of one join for a longer run).
        buf = self._buf
        pos = self._pos
        n = len(buf)
        lines = self._lines
        get = lines.get
        plans = self.plans
        used = self.used
        unplanned = self.unplanned_reply
        drop = self.drop
        drop_replies = self.drop_replies
        dropped = dropped_bytes = 0
        find = buf.find
        verbs = self._verbs_run
        run_verb = verbs[0] + b" " if verbs is not None else b""
        verb_len = len(run_verb)
        limit = self._line_limit + verb_len + 1
        max_size = self._max_size
        link = self._link
        two_words = self._words == 2
        sizes = _SIZES
        direct = True  # runs may be delivered on the spot: no event but PING/PONG is before them in this batch
        settled = True  # interest is as the router left it: no operation (SUB...) is before this point
        run_subj = None  # subject of the open run (None: no run open)
        run_hdr = False
        last_subj = None  # subject of the last frame without headers (None: the last had headers)
        last_head = None  # b"PUB <last_subj> ", made when the reply-per-frame lane needs it
        line_len = 0  # length of the last line
        tails = False  # the last line had a reply and the subject of the frame before: try the lane (below) next
        tail_sz = b""  # its size token, and that size
        tail_size = 0
        drop_subj = None  # subject of the frames just dropped, twice in a row (see below)
        last_drop = None
        seen = False  # the drop lane stopped at a line it looked up: line and hit hold it
        first = b""  # the open run's first piece
        pieces: list[bytes] | None = None  # all of its pieces once it has a second (a run of one makes no list)
        nbytes = 0
        try:
            awaiting = self._await is not None
            while True:
                if drop_subj is not None and not awaiting:
                    # The drop lane: lines seen before, to the subject of the frame just dropped (nobody listens
                    # to it), are only counted, until a line is anything else.
                    while True:
                        i = pos + line_len
                        if i >= n or buf[i] != 10:
                            break
                        line = buf[pos:i]
                        hit = get(line)
                        if hit is None or hit[0] != drop_subj or hit[1]:
                            # (a line with headers is never dropped here: it may be traced, host/msgtrace.py)
                            seen = hit is not None  # a line seen before, to another subject: taken as it is below
                            break
                        end = i + 1 + hit[2]
                        if end + 2 > n:
                            break
                        if buf[end] != 13 or buf[end + 1] != 10:
                            raise RemoteProtocolError("payload not followed by CRLF", ERR_UNKNOWN_OP)
                        dropped += 1
                        dropped_bytes += hit[2]
                        pos = end + 2
                    drop_subj = None
                if tails and not awaiting:
                    # The reply-per-frame lane: lines to the subject of the frame before, each with its own reply
                    # (requests, JetStream publishes), are read from their tail and added to the open run or
                    # dropped, until a line is anything else; that line then takes the way below. A line is taken
                    # as long as the one before (its \n there), so the size token is compared with the last one
                    # before it is looked up; a buffer too short for the line or the frame ends the lane
                    # (IndexError) as a line that is not there yet.
                    tails = False
                    if last_head is None:
                        last_head = run_verb + last_subj + b" "  # type: ignore[operator]
                    into_run = run_subj is last_subj and run_hdr is False
                    if into_run or (drop and settled and drop_replies and last_subj in drop):
                        hl = len(last_head)  # type: ignore[arg-type]
                        bulk = True  # match the rest of the stretch at once after one frame of the same size
                        try:
                            while True:
                                i = pos + line_len
                                if buf[i] != 10 or buf[i - 1] != 13 or \
                                        not buf.startswith(last_head, pos):  # type: ignore[arg-type]
                                    break
                                reply, _, sz = buf[pos + hl : i - 1].rpartition(b" ")
                                if sz != tail_sz:
                                    # (No length check: the line is as long as the one before, which passed it.)
                                    size = sizes.get(sz)
                                    if size is None or size > max_size:
                                        break
                                    tail_sz = sz
                                    tail_size = size
                                    bulk = False  # sizes that change: not a stretch of one shape
                                if not reply or 32 in reply or 9 in reply or 10 in reply or \
                                        (link and (reply == b"+" or reply == b"|" or 64 in reply)):
                                    break
                                end = i + 1 + tail_size
                                if buf[end + 1] != 10 or buf[end] != 13:
                                    raise RemoteProtocolError("payload not followed by CRLF", ERR_UNKNOWN_OP)
                                if into_run:
                                    if pieces is None:
                                        pieces = [first, buf[pos + hl - 1 : end + 2]]
                                    else:
                                        pieces.append(buf[pos + hl - 1 : end + 2])
                                    nbytes += tail_size
                                else:
                                    dropped += 1
                                    dropped_bytes += tail_size
                                pos = end + 2
                                if bulk:
                                    # The frames of this shape that follow, which this loop would take one by one,
                                    # matched in one call (see _lane_pattern).
                                    bulk = False
                                    pat = _lane_pattern(last_head, line_len, tail_sz, tail_size, link)  # type: ignore[arg-type]
                                    m = pat.match(buf, pos) if pat is not None else None
                                    if m is not None:
                                        flen = line_len + tail_size + 3
                                        e = m.end()
                                        k = (e - pos) // flen
                                        if into_run:
                                            pieces += [buf[f + hl - 1 : f + flen] for f in range(pos, e, flen)]  # type: ignore[operator]
                                            nbytes += k * tail_size
                                        else:
                                            dropped += k
                                            dropped_bytes += k * tail_size
                                        pos = e
                        except IndexError:
                            pass
                if awaiting:
                    awaiting = False
                    ev = self._next()
                    pos = self._pos
                    subj = None
                    stop = ev is NEED_DATA
                else:
                    # The line: most lines are as long as the one before (same subject, size digits), so try
                    # that length first; a line whose end is there is a cached one when the lookup hits.
                    i = pos + line_len
                    if seen:
                        seen = False
                    elif i < n and buf[i] == 10:
                        line = buf[pos:i]
                        hit = get(line)
                        if hit is None and 10 in line:
                            i = find(b"\n", pos)
                            line = buf[pos:i]
                            line_len = i - pos
                            hit = get(line)
                    else:
                        i = find(b"\n", pos)
                        if i >= 0:
                            line = buf[pos:i]
                            line_len = i - pos
                            hit = get(line)
                    if i < 0:
                        self._pos = pos
                        ev = self._need_data(n - pos)
                        subj = None
                        stop = True
                    else:
                        if hit is None:
                            if verbs is not None and buf[i - 1] == 13 and line.startswith(run_verb):
                                # A plain message line not seen before (a new subject, size or reply).
                                sp = line.find(b" ", verb_len)
                                if two_words and sp > verb_len:
                                    sp2 = line.find(b" ", sp + 1)
                                    sp = sp2 if sp2 > sp + 1 else -1
                                if sp > verb_len and 9 not in line:  # 9: a tab, which separates like a space
                                    reply, sep, sz = line[sp + 1 : -1].rpartition(b" ")
                                    size = sizes.get(sz)
                                    if size is None:
                                        size = size_of(sz)
                                    # (An empty reply after a separator is a second space: not canonical, so not
                                    # here.)
                                    if size is not None and (reply or not sep) and 32 not in reply and \
                                            len(line) <= limit and size <= max_size and \
                                            not (link and (reply == b"+" or reply == b"|" or 64 in reply)):
                                        subj = line[verb_len:sp]
                                        if not reply:
                                            hit = (subj, False, size, sp, None)
                                            if len(lines) >= LINE_CACHE_MAX:
                                                lines.clear()
                                            lines[line] = hit
                                        elif subj == last_subj:
                                            # A reply per frame after a plain frame to the same subject: the next
                                            # lines are likely ones too, read by the lane above from their tail.
                                            hit = (last_subj, False, size, sp, reply)
                                            tails = True
                                            tail_sz = sz
                                            tail_size = size
                                        else:
                                            hit = (subj, False, size, sp, reply)
                            if hit is None:
                                hit = self._header_line(line) if verbs is not None else None
                                if hit is None:
                                    # Anything else: the general path, one event.
                                    self._pos = i + 1
                                    ev = self._control(line)
                                    pos = self._pos
                                    if ev is None:
                                        awaiting = True  # a payload follows; read at the top of the loop
                                        continue
                                    subj = None
                                    stop = False
                                elif hit[4] is None:
                                    if len(lines) >= LINE_CACHE_MAX:
                                        lines.clear()
                                    lines[line] = hit
                        if hit is not None:
                            subj, has_hdr, size, tail, reply = hit
                            end = i + 1 + size
                            if end + 2 > n:
                                # Payload incomplete: stop before this line; it is a cache hit next time.
                                if self._eof:
                                    raise RemoteProtocolError("peer closed mid-frame")
                                ev = subj = None
                                stop = True
                            elif buf[end] != 13 or buf[end + 1] != 10:
                                raise RemoteProtocolError("payload not followed by CRLF", ERR_UNKNOWN_OP)
                            elif subj == run_subj and has_hdr == run_hdr:
                                if pieces is None:
                                    pieces = [first, buf[pos + tail : end + 2]]
                                else:
                                    pieces.append(buf[pos + tail : end + 2])
                                nbytes += size
                                pos = end + 2
                                continue
                            elif drop and settled and subj in drop and (reply is None or drop_replies) and \
                                    not has_hdr:
                                # (Only before any operation: a SUB earlier in this batch may have made interest.
                                # A frame with headers is delivered, not dropped: it may be traced, and a traced
                                # message's event lists its ingress whoever listens, host/msgtrace.py.)
                                if subj is not last_subj:
                                    last_subj = None if has_hdr else subj
                                    last_head = None
                                if subj == last_drop:
                                    drop_subj = subj  # twice in a row: try the drop lane for the next lines
                                last_drop = subj
                                dropped += 1
                                dropped_bytes += size
                                pos = end + 2
                                continue
                            else:
                                ev = None
                                stop = False
                # The open run ends here: deliver it by its plan, or hand it on as an event.
                if run_subj is not None:
                    plan = plans.get(run_subj) if direct else None
                    if plan is None:
                        targets = None
                    elif run_hdr:
                        targets = plan.htargets
                        if targets is not None and (TRACE_DEST in first if pieces is None else
                                                    any(TRACE_DEST in p for p in pieces)):
                            # A traced frame (one substring test per frame with headers) leaves for the event path
                            # (host/msgtrace.py): the router delivers the run frame by frame.
                            targets = None
                    else:
                        targets = plan.targets
                    if unplanned is not None and targets is not None and \
                            (first.startswith(unplanned) if pieces is None else
                             any(p.startswith(unplanned) for p in pieces)):
                        targets = None
                    if targets is not None:
                        if pieces is None:
                            for o, pfx in targets:
                                o.append(pfx)
                                o.append(first)
                            if not plan.msgs:
                                used.append(plan)
                            plan.msgs += 1
                        else:
                            parts = [b"", *pieces]
                            for o, pfx in targets:
                                o.append(pfx.join(parts))
                            if not plan.msgs:
                                used.append(plan)
                            plan.msgs += len(pieces)
                        plan.bytes += nbytes
                    else:
                        out.append((OP_PUB_RUN, run_subj, run_hdr, pieces or [first], nbytes))
                        direct = False
                    run_subj = None
                if subj is not None:
                    if subj is not last_subj:
                        last_subj = None if has_hdr else subj
                        last_head = None
                    run_subj = subj
                    run_hdr = has_hdr
                    first = buf[pos + tail : end + 2]
                    pieces = None
                    nbytes = size
                    pos = end + 2
                    continue
                if ev is not None:
                    out.append(ev)
                    if ev[0] != OP_PING and ev[0] != OP_PONG:
                        # Anything but a PING or PONG may change interest or carries a message the router must
                        # deliver before the runs after it.
                        direct = settled = False
                if stop:
                    break
        finally:
            # Also on an error: the frames before the bad bytes are returned first.
            self.dropped += dropped
            self.dropped_bytes += dropped_bytes
            if run_subj is not None:
                out.append((OP_PUB_RUN, run_subj, run_hdr, pieces or [first], nbytes))
            self._pos = pos

    def failed_line(self) -> tuple[bytes, bytes]:
        """After an error: the control line it was raised on (without its CRLF) and the bytes after it that were
        received, as far as they are here (the header block of a frame over the payload limit, for its trace)."""
        buf = self._buf if isinstance(self._buf, bytes) else b"".join(self._buf)
        i = buf.find(b"\n", self._pos)
        if i < 0:
            return b"", b""
        return buf[self._pos : i].rstrip(b"\r"), buf[i + 1 :]

    def _control(self, line: bytes) -> tuple | None:
        if self._words == 2 and line[:2].upper() in (b"LS", b"LM"):
            return self._origin_control(line)
        if self._gateway and line[:2].upper() in (b"A+", b"A-"):
            args = line.rstrip(b"\r").replace(b"\t", b" ").split()
            if len(args) != 2 or line[:1] in (b" ", b"\t"):
                raise RemoteProtocolError("account interest arguments")
            return (OP_ACCOUNT_INTEREST, args[0][1:2] == b"+", args[1])
        return super()._control(line)  # type: ignore[no-any-return]

    def _origin_control(self, line: bytes) -> tuple | None:
        """A route's leaf-origin forms, sent by peers that announced `lnoc`/`lnocu` (shared/nats-reference README
        3.3): `LS+ <origin> <account> <subject> [<queue> <weight>]` and `LS- <origin> <account> <subject> [<queue>]`
        -> OP_RS_PLUS/OP_RS_MINUS events with the origin last; `LMSG <origin> <account> <subject> [reply forms]
        <#hdr> <#total>` (the header size always there, 0 for none) -> an OP_RMSG event. Anything malformed is
        refused as Parser._control refuses a bad route line."""
        text = line[:-1] if line[-1:] == b"\r" else line
        args = [a for a in text.replace(b"\t", b" ").split(b" ") if a]
        verb = args[0].upper()
        if verb not in (b"LS+", b"LS-", b"LMSG") or line[:1] in (b" ", b"\t"):
            return super()._control(line)  # type: ignore[no-any-return]
        if len(line) - len(args[0]) - 1 > self._line_limit:
            raise RemoteProtocolError("control line too long", ERR_MAX_CONTROL_LINE)
        n = len(args)
        if verb == b"LS+":
            if n == 4:
                return (OP_RS_PLUS, args[2], args[3], None, None, args[1])
            if n == 6 and size_of(args[5]) is not None:
                return (OP_RS_PLUS, args[2], args[3], args[4], size_of(args[5]), args[1])
            raise RemoteProtocolError("interest arguments")
        if verb == b"LS-":
            if n in (4, 5):
                return (OP_RS_MINUS, args[2], args[3], args[4] if n == 5 else None, args[1])
            raise RemoteProtocolError("interest arguments")
        if n < 6:
            raise RemoteProtocolError("message arguments")
        size = self._payload_size(args[-1])
        hlen = size_of(args[-2])
        if hlen is None or hlen > size:
            raise RemoteProtocolError("bad header size")
        reply, queues = reply_queues(args[4:-2])
        self._await = ((OP_RMSG, args[2], args[3], reply, queues), hlen if hlen else -1, size)
        return None

    def _header_line(self, line: bytes) -> tuple[bytes, bool, int, int, bytes | None] | None:
        """A canonical message line with headers (HPUB, or HMSG on a link) -> (subject, True, size, tail, reply), or
        None: the line is something else or not canonical, and Parser._control gives its event or its error.
        (Plain message lines are read in _batch itself.)"""
        if line[-1:] != b"\r" or 9 in line:  # 9: a tab, which separates like a space
            return None
        parts = line[:-1].split(b" ")
        np = len(parts)
        verb = parts[0]
        w = self._words
        if verb != self._verbs_run[1] or (np != 3 + w and np != 4 + w):  # type: ignore[index]
            return None
        reply = parts[1 + w] if np == 4 + w else None
        if reply is not None and (not reply or (self._link and (reply == b"+" or reply == b"|" or 64 in reply))):
            return None  # an empty token (two spaces), a link's queue names follow, or a consumer's ack@subject
        if not all(parts[1 : 1 + w]):
            return None
        subj = b" ".join(parts[1 : 1 + w])
        hlen = size_of(parts[-2])
        size = size_of(parts[-1])
        if hlen is None or size is None or hlen > size or size > self._max_size:
            return None
        if len(line) - len(verb) - 2 > self._line_limit:
            return None  # Parser._control reports the control-line limit
        return (subj, True, size, len(verb) + 1 + len(subj), reply)


_LANES: dict[tuple, re.Pattern[bytes] | None] = {}  # frame shape -> its pattern, None: seen once (_lane_pattern)


def _lane_pattern(head: bytes, line_len: int, size_tok: bytes, size: int, link: bool) -> re.Pattern[bytes] | None:
    """A stretch of frames the reply-per-frame lane takes one by one: `head` (verb, subject, space), a reply that
    makes the line `line_len` bytes long, holds no space, tab or \\n (on a link no "@", and not "+" or "|"), a
    space, `size_tok` (the size), CRLF, `size` bytes and CRLF; every frame is as long. Possessive: a
    frame that does not match ends the stretch there, and the lane reads it as it reads any.
    None the first time a shape is asked for: a pattern is compiled (~0.1 ms) only for shapes that come again, so a
    stream of ever new sizes or subjects does not compile one per read."""
    key = (head, line_len, size_tok, link)
    pat = _LANES.get(key, False)
    if pat is None:
        r = line_len - len(head) - len(size_tok) - 2
        reply = rb"[^ \t\n@+|]" if link and r == 1 else rb"[^ \t\n@]" if link else rb"[^ \t\n]"
        pat = _LANES[key] = re.compile(rb"(?:%s%s{%d} %s\r\n.{%d}\r\n)++" % (
            re.escape(head), reply, r, re.escape(size_tok), size), re.DOTALL)
    elif pat is False:
        if len(_LANES) >= 1024:
            _LANES.clear()
        pat = _LANES[key] = None
    return pat


_SIZES: dict[bytes, int] = {}  # size token -> value: sizes repeat, and a lookup is cheaper than checks and int()


def size_of(token: bytes) -> int | None:
    """A size field's value, or None when it is not 1-9 digits (nats-server parseSize)."""
    size = _SIZES.get(token)
    if size is None and token.isdigit() and len(token) < 10:
        if len(_SIZES) >= LINE_CACHE_MAX:
            _SIZES.clear()
        size = _SIZES[token] = int(token)
    return size


def encode_tail(reply: bytes | None, hdr: bytes | None, payload: bytes) -> bytes:
    """The tail of a message frame after the subject (and sid): a piece as next_batch() yields it."""
    r = b" " + reply if reply else b""
    if hdr is None:
        return r + b" %d\r\n" % len(payload) + payload + CRLF
    return r + b" %d %d\r\n" % (len(hdr), len(hdr) + len(payload)) + hdr + payload + CRLF


def decode_tail(piece: bytes, has_hdr: bool) -> tuple[bytes | None, bytes | None, bytes]:
    """A piece back into (reply, hdr, payload); pieces come from this parser, so they are well formed: one space
    before each word. Split on spaces only: a reply may hold a CR, as nats-server's processPub splits on space and
    tab only (found by fuzzing: split() dropped such a reply)."""
    i = piece.find(CRLF)
    words = piece[1:i].split(b" ")
    reply = words[0] if len(words) == (3 if has_hdr else 2) else None
    body = piece[i + 2 : -2]
    if has_hdr:
        hlen = int(words[-2])
        return reply, body[:hlen], body[hlen:]
    return reply, None, body


# Route (and gateway) encoders, the hub's only: an edge never speaks those protocols, so edge/proto.py (shipped to
# devices) parses route ops (its parser is the hub's too) but does not write them.
def encode_rs_plus(account: str | bytes, subject: str | bytes, queue: str | bytes | None = None,
                   weight: int = 1) -> bytes:
    acc = _token(account, "account")
    if queue:
        return b"RS+ %s %s %s %d\r\n" % (acc, _token(subject, "subject"), _token(queue, "queue"), weight)
    return b"RS+ " + acc + b" " + _token(subject, "subject") + CRLF


def encode_rs_minus(account: str | bytes, subject: str | bytes, queue: str | bytes | None = None) -> bytes:
    tail = b" " + _token(queue, "queue") if queue else b""
    return b"RS- " + _token(account, "account") + b" " + _token(subject, "subject") + tail + CRLF


def encode_rmsg(account: str | bytes, subject: str | bytes, payload: bytes, reply: bytes | None = None,
                queues: list | None = None, hdr: bytes | None = None) -> bytes:
    head = [b"HMSG" if hdr is not None else b"RMSG", _token(account, "account"), _token(subject, "subject")]
    return _frame(_reply_queue_words(head, reply, queues), hdr, payload)
