# edge/proto.py — the NATS wire protocol, sans-IO: bytes in, operations out, encoders for every op an edge
# sends (route ops are parsed here, for the hub; their encoders are the hub's, host/parser.py).
#
# Shared by the edge (MicroPython and CPython) and the hub. Rules this file keeps:
# 1. No IO, no clock, no asyncio. The caller feeds bytes with receive_data() (b"" = peer closed)
#    and pulls operations with next_event(), one tuple per op. The hub reads through a subclass,
#    host/parser.py, that adds next_batch() (runs of frames for its router); it is not shipped to devices.
# 2. The parser does not know whether it runs in a hub or an edge; only `kind` differs: which
#    peer is talking (a client, a server, a leaf link, a route) decides which verbs are legal.
# 3. Every buffer has a limit: the control line is checked before its CRLF arrives, the payload
#    size is checked on the control line, before any payload is buffered.
# 4. Bad peer input raises RemoteProtocolError whose `wire` is the exact -ERR text nats-server
#    sends for it (None: nats-server closes without -ERR); the parser then stays failed.
#    Our own illegal requests (encoding a subject with whitespace) raise LocalProtocolError.
# 5. No memory for a message (MemoryError while assembling its payload, or a read the caller could not copy and
#    hands over as a memoryview) skips that message, whole: next_event() raises MemoryError once for it and the
#    next call goes on after it. No memory for a control line fails the parser (where it ends, nothing says).
#
# Event tuples; ev[0] is the op, subjects/sids/replies are bytes, hdr is None when the frame
# has no header block:
#   (OP_INFO, dict)                (OP_CONNECT, dict)             (OP_PING,) (OP_PONG,) (OP_OK,)
#   (OP_ERR, text)                 (OP_PUB, subject, reply, hdr, payload)          PUB and HPUB
#   (OP_SUB, subject, queue, sid)  (OP_UNSUB, sid, max_msgs)      (OP_CLOSED,)  after b"" was fed
#   (OP_MSG, subject, sid, reply, hdr, payload)                                  MSG and HMSG
#   (OP_LS_PLUS, subject, queue, weight)  (OP_LS_MINUS, subject, queue)
#   (OP_LMSG, subject, reply, queues, hdr, payload)                 LMSG and HMSG on a leaf link
#   (OP_RS_PLUS, account, subject, queue, weight)  (OP_RS_MINUS, account, subject, queue)
#   (OP_RMSG, account, subject, reply, queues, hdr, payload)        RMSG and HMSG on a route

import json

from edge.compat import const

KIND_CLIENT = const(0)  # the peer is a client: we serve it
KIND_SERVER = const(1)  # the peer is a server: we are its client
KIND_LEAF = const(2)  # a leafnode link, either side
KIND_ROUTE = const(3)  # a route link

OP_INFO = const(1)
OP_CONNECT = const(2)
OP_PUB = const(3)
OP_SUB = const(4)
OP_UNSUB = const(5)
OP_MSG = const(6)
OP_PING = const(7)
OP_PONG = const(8)
OP_OK = const(9)
OP_ERR = const(10)
OP_LS_PLUS = const(11)
OP_LS_MINUS = const(12)
OP_LMSG = const(13)
OP_RS_PLUS = const(14)
OP_RS_MINUS = const(15)
OP_RMSG = const(16)
OP_CLOSED = const(18)

NEED_DATA = None

MAX_CONTROL_LINE = const(4096)  # nats-server const.go MAX_CONTROL_LINE_SIZE
MAX_PAYLOAD = const(1048576)  # nats-server const.go MAX_PAYLOAD_SIZE
_LINK_LINE_FACTOR = const(16)  # leaf/route lines may be 16x longer (parser.go overMaxControlLineLimit)

ERR_UNKNOWN_OP = "Unknown Protocol Operation"
ERR_MAX_PAYLOAD = "Maximum Payload Violation"
ERR_MAX_CONTROL_LINE = "maximum control line exceeded"

PING = b"PING\r\n"
PONG = b"PONG\r\n"
OK = b"+OK\r\n"
CRLF = b"\r\n"


class ProtocolError(Exception):
    pass


class RemoteProtocolError(ProtocolError):
    # wire: the -ERR text to send before closing, or None to close silently (as nats-server does
    # for argument errors and bad CONNECT JSON).
    def __init__(self, msg, wire=None):
        super().__init__(msg)
        self.wire = wire


class LocalProtocolError(ProtocolError):
    pass


# Verbs each kind of peer may send (as parser.go: route, leaf and account verbs are refused from
# clients). The value says how to parse the rest of the line.
# const() with a leading underscore: MicroPython folds them into the code, no global each.
_V_INFO = const(1)
_V_CONNECT = const(2)
_V_PUB = const(3)
_V_HPUB = const(4)
_V_SUB = const(5)
_V_UNSUB = const(6)
_V_MSG = const(7)
_V_HMSG = const(8)
_V_PING = const(9)
_V_PONG = const(10)
_V_OK = const(11)
_V_ERR = const(12)
_V_LSP = const(13)
_V_LSM = const(14)
_V_LMSG = const(15)
_V_RSP = const(16)
_V_RSM = const(17)
_V_RMSG = const(18)


def _verbs(kind):
    # The verbs of one kind of connection, built by its first parser (Parser.__init__): a device parses as a
    # client (LAN) and as a leaf (uplink) only, and a table it never builds costs it no heap (~150 bytes each).
    d = {b"INFO": _V_INFO, b"PING": _V_PING, b"PONG": _V_PONG, b"+OK": _V_OK, b"-ERR": _V_ERR}
    if kind == KIND_CLIENT:
        d.update({b"CONNECT": _V_CONNECT, b"PUB": _V_PUB, b"HPUB": _V_HPUB, b"SUB": _V_SUB, b"UNSUB": _V_UNSUB})
    elif kind == KIND_SERVER:
        d.update({b"MSG": _V_MSG, b"HMSG": _V_HMSG})
    # As parser.go, SUB/LS+/RS+ on a link all mean "interest" in that link's own framing.
    elif kind == KIND_LEAF:
        d.update({b"CONNECT": _V_CONNECT, b"LS+": _V_LSP, b"LS-": _V_LSM, b"LMSG": _V_LMSG, b"HMSG": _V_LMSG,
                  b"SUB": _V_LSP, b"RS+": _V_LSP})
    else:
        d.update({b"CONNECT": _V_CONNECT, b"RS+": _V_RSP, b"RS-": _V_RSM, b"RMSG": _V_RMSG, b"HMSG": _V_RMSG,
                  b"SUB": _V_RSP, b"LS+": _V_RSP})
    _VERBS[kind] = d
    return d


_VERBS = [None, None, None, None]  # per kind, as _verbs() builds them


def _size(tok, what):
    # As parser.go parseSize: digits only, no sign, no spaces, at most 9 of them.
    if not tok.isdigit() or len(tok) > 9:
        raise RemoteProtocolError("bad %s size %r" % (what, tok))
    return int(tok)


def reply_queues(mid):
    # The part between subject and size on LMSG/RMSG: "", "reply", "+ reply q..", "| q..".
    if not mid:
        return None, None
    if mid[0] == b"+":
        if len(mid) < 3:
            raise RemoteProtocolError("bad reply/queue section")
        return mid[1], mid[2:]
    if mid[0] == b"|":
        if len(mid) < 2:
            raise RemoteProtocolError("bad queue section")
        return None, mid[1:]
    if len(mid) != 1:
        raise RemoteProtocolError("bad reply section")
    return mid[0], None


class Parser:
    # A payload of at least piecewise_from bytes that has not fully arrived is kept as the pieces
    # receive_data() was given (_buf is then their list) and joined once when complete, into exactly its own
    # size (its header block apart), instead of growing the buffer by concatenation. Growing a 1 KB frame by
    # 256-byte reads (edge/leaf/link.py) takes contiguous blocks of 512, 768 and 1024 bytes, each while the one
    # before is still held, and the payload slice copies it once more: on a small, fragmented MicroPython heap
    # that is the allocation that fails. A class attribute, not an instance one (each costs every parser on a
    # device); the hub's parser (host/parser.py) sets None: its runs of frames are slices of one buffer.
    piecewise_from = 256
    # Start values as class attributes: an instance gets its own once it changes one (every instance attribute
    # costs heap on MicroPython, in each LAN client's parser).
    _buf = b""
    _pos = 0
    _eof = False
    error = None  # the RemoteProtocolError that stopped this parser, if any
    _await = None  # a control line whose payload has not fully arrived: (event head tuple, hdr_len, size)
    _skip = 0  # bytes still to drop of a message skipped in receive_data() (rule 5)
    _dropped = False  # receive_data() began skipping a message: the next next_event() raises MemoryError

    def __init__(self, kind, max_control_line=MAX_CONTROL_LINE, max_payload=MAX_PAYLOAD):
        self.kind = kind
        self.max_control_line = max_control_line
        self.max_payload = max_payload
        self._verbs = _VERBS[kind] or _verbs(kind)
        # Clients are held to the configured limit; links get 16x (still bounded).
        self._line_limit = max_control_line if kind == KIND_CLIENT else max_control_line * _LINK_LINE_FACTOR

    def receive_data(self, data):
        # data: bytes; or a memoryview when the caller had no memory to copy its read (edge/leaf/link.py), valid
        # for this call only: it is skipped into the awaited payload (rule 5).
        if not data:
            self._eof = True
            return
        k = self._skip
        if k:  # the rest of a message dropped for want of memory: counted down, not kept
            self._skip = max(k - len(data), 0)
            if self._skip:
                return
            data = bytes(data[k:])  # b"" when the message ended with this read: nothing more to do
        elif type(data) is memoryview:
            aw = self._await
            if aw is None:
                self._fail(RemoteProtocolError("no memory for a read"))
            self._skip = aw[2] + 2 - self.pending()
            self._buf = b""
            self._pos = 0
            self._await = None
            self._dropped = True
            return self.receive_data(data)
        if type(self._buf) is list:
            self._buf.append(data)
            return
        if self._pos:
            self._buf = self._buf[self._pos :] + data
            self._pos = 0
        elif self._buf:
            self._buf += data
        else:
            self._buf = data

    def pending(self):
        # Bytes received but not yet parsed into an operation.
        buf = self._buf
        if type(buf) is list:
            n = 0
            for p in buf:
                n += len(p)
            return n
        return len(buf) - self._pos

    def _fail(self, e):
        self.error = e
        raise e

    def next_event(self):
        if self.error:
            raise self.error
        if self._dropped:  # receive_data() skipped a message: the caller hears of it here
            self._dropped = False
            raise MemoryError
        try:
            return self._next()
        except RemoteProtocolError as e:
            self._fail(e)
        except MemoryError:
            # No room to assemble the awaited message (rule 5): it is skipped, whole, and the error goes to the
            # caller, which counts it dropped and asks for the next event.
            aw = self._await
            if aw is not None:  # still in the buffer (the pieces skip theirs in _joined)
                self._await = None
                self._pos += aw[2] + 2
            raise

    def _next(self):
        if type(self._buf) is list:
            return self._joined()
        buf = self._buf
        pos = self._pos
        if self._await is None:
            i = buf.find(b"\n", pos)
            if i < 0:
                self._keep(buf, pos, False)
                return self._need_data(len(buf) - pos)
            self._pos = i + 1
            try:
                ev = self._control(buf[pos:i])
            except MemoryError:  # a control line not read cannot be skipped: where it ends, nothing says
                raise RemoteProtocolError("no memory for a control line")
            if ev is not None:
                return ev
            pos = i + 1
        head, hlen, size = self._await
        end = pos + size
        if len(buf) < end + 2:
            self._keep(buf, pos, self.piecewise_from is not None and size >= self.piecewise_from)
            return self._need_data(0)
        if buf[end] != 13 or buf[end + 1] != 10:
            raise RemoteProtocolError("payload not followed by CRLF", ERR_UNKNOWN_OP)
        # The slices first: a MemoryError leaves the message awaited, for next_event to skip.
        ev = head + ((None, buf[pos:end]) if hlen < 0 else (buf[pos : pos + hlen], buf[pos + hlen : end]))
        self._await = None
        self._pos = end + 2
        return ev

    def _keep(self, buf, pos, pieces):
        # Only the unparsed tail stays buffered while waiting for more: the whole read would keep its every byte
        # alive for the last few (on the edge, each idle connection's last 256-byte read; see edge/leaf/link.py).
        # pieces: the tail becomes the first piece of a payload. No memory for the tail: the buffer as it is still
        # serves, and grows by concatenation.
        try:
            if pieces:
                self._buf = [buf[pos:]] if pos < len(buf) else []
            elif pos:
                self._buf = buf[pos:]
            self._pos = 0
        except MemoryError:
            pass

    def _joined(self):
        # The awaited payload once all its pieces are here: header block, payload and CRLF cut off the pieces,
        # the rest stays buffered for the next operation.
        head, hlen, size = self._await
        have = self.pending()
        if have < size + 2:
            return self._need_data(0)
        try:
            hdr = self._cut(hlen) if hlen >= 0 else None
            payload = self._cut(size - hlen if hlen >= 0 else size)
            end = self._cut(2)
        except MemoryError:
            # Skip what is left of the message (each cut took whole bytes off the pieces, or none), then as below.
            self._cut(size + 2 - have + self.pending(), False)
            end = None
        self._await = None
        rest = self._buf  # the last read's tail: one piece at most, as the caller asks after every read
        self._buf = rest[0] if len(rest) == 1 else b"".join(rest)
        self._pos = 0
        if end is None:
            raise MemoryError
        if end != CRLF:
            raise RemoteProtocolError("payload not followed by CRLF", ERR_UNKNOWN_OP)
        return head + (hdr, payload)

    def _cut(self, n, keep=True):
        # The next n bytes of the pieces as one bytes object: one allocation of n bytes (none for a whole piece);
        # keep=False drops them instead, with no allocation but the last piece's rest.
        pieces = self._buf
        if pieces and len(pieces[0]) == n:
            return pieces.pop(0)
        out = []
        while n:
            p = pieces[0]
            if len(p) <= n:
                pieces.pop(0)
                n -= len(p)
            else:
                pieces[0] = p[n:]
                p = p[:n] if keep else p
                n = 0
            if keep:
                out.append(p)
        return b"".join(out)

    def _need_data(self, partial):
        if partial > self._line_limit + 8:
            # As parser.go: an unknown verb fails on its own; only a known verb's arguments run
            # into the control-line limit.
            head = self._buf[self._pos : self._pos + 12].replace(b"\t", b" ").split(b" ")
            if len(head) > 1 and head[0] and head[0].upper() in self._verbs:
                raise RemoteProtocolError("control line too long", ERR_MAX_CONTROL_LINE)
            raise RemoteProtocolError("unknown operation", ERR_UNKNOWN_OP)
        if self._eof:
            if self.pending() or self._await:
                raise RemoteProtocolError("peer closed mid-frame")
            return (OP_CLOSED,)
        return NEED_DATA

    def _control(self, line):
        # Parse one control line (without its \n). Returns the event, or None after setting
        # self._await when a payload must follow.
        if line[-1:] == b"\r":
            line = line[:-1]
        # As parser.go: the verb starts the line, and only space and tab separate arguments.
        args = [a for a in line.replace(b"\t", b" ").split(b" ") if a]
        if not args or line[:1] == b" " or line[:1] == b"\t":
            raise RemoteProtocolError("no operation at the start of the line", ERR_UNKNOWN_OP)
        verb = self._verbs.get(args[0].upper())
        if verb is None:
            raise RemoteProtocolError("unknown operation", ERR_UNKNOWN_OP)
        n = len(args)
        if n == 1 and not _V_PING <= verb <= _V_ERR:  # PING, PONG, +OK, -ERR may stand alone on a line
            # A verb alone is a parse error; once a separator follows it is an argument error (silent
            # close), and CONNECT/INFO take anything after the verb as (bad) JSON.
            if len(line) > len(args[0]) or verb == _V_CONNECT or verb == _V_INFO:
                raise RemoteProtocolError("missing arguments")
            raise RemoteProtocolError("missing arguments", ERR_UNKNOWN_OP)
        if len(line) - len(args[0]) - 1 > self._line_limit:
            raise RemoteProtocolError("control line too long", ERR_MAX_CONTROL_LINE)
        if verb == _V_PUB or verb == _V_HPUB:
            hdr = verb == _V_HPUB
            want = 3 if hdr else 2
            if n != want + 1 and n != want + 2:
                raise RemoteProtocolError("PUB arguments")
            size = self._payload_size(args[-1])
            hlen = _size(args[-2], "header") if hdr else -1
            if hlen > size:
                raise RemoteProtocolError("header size larger than total")
            self._await = ((OP_PUB, args[1], args[2] if n == want + 2 else None), hlen, size)
            return None
        if verb == _V_SUB:
            if n == 3:
                return (OP_SUB, args[1], None, args[2])
            if n == 4:
                return (OP_SUB, args[1], args[2], args[3])
            raise RemoteProtocolError("SUB arguments")
        if verb == _V_UNSUB:
            if n == 2:
                return (OP_UNSUB, args[1], None)
            if n == 3:
                return (OP_UNSUB, args[1], _size(args[2], "max"))
            raise RemoteProtocolError("UNSUB arguments")
        if verb == _V_PING or verb == _V_PONG or verb == _V_OK:
            if n != 1:
                raise RemoteProtocolError("unexpected arguments", ERR_UNKNOWN_OP)
            return ((OP_PING,), (OP_PONG,), (OP_OK,))[verb - _V_PING]
        if verb == _V_INFO or verb == _V_CONNECT:
            body = line[len(args[0]) :].strip()
            try:
                obj = json.loads(body)
            except (ValueError, RuntimeError):  # RuntimeError: CPython's RecursionError on deep nesting
                obj = None
            if not isinstance(obj, dict):
                raise RemoteProtocolError("bad JSON")
            return (OP_INFO if verb == _V_INFO else OP_CONNECT, obj)
        if verb == _V_ERR:
            text = line[len(args[0]) :].strip()
            if text[:1] == b"'" and text[-1:] == b"'" and len(text) > 1:
                text = text[1:-1]
            try:
                return (OP_ERR, text.decode())
            except UnicodeError:
                raise RemoteProtocolError("-ERR text is not UTF-8")
        if verb == _V_MSG or verb == _V_HMSG:
            hdr = verb == _V_HMSG
            want = 5 if hdr else 4  # verb subject sid [reply] [hdr] size
            if n != want and n != want + 1:
                raise RemoteProtocolError("MSG arguments")
            size = self._payload_size(args[-1])
            hlen = _size(args[-2], "header") if hdr else -1
            if hlen > size:
                raise RemoteProtocolError("header size larger than total")
            self._await = ((OP_MSG, args[1], args[2], args[3] if n == want + 1 else None), hlen, size)
            return None
        if verb == _V_LMSG or verb == _V_RMSG:
            hdr = args[0].upper() == b"HMSG"
            acc = 1 if verb == _V_RMSG else 0
            first = 1 + acc
            last = n - (2 if hdr else 1)
            if last <= first:
                raise RemoteProtocolError("message arguments")
            size = self._payload_size(args[-1])
            hlen = _size(args[-2], "header") if hdr else -1
            if hlen > size:
                raise RemoteProtocolError("header size larger than total")
            reply, queues = reply_queues(args[first + 1 : last])
            if acc:
                head = (OP_RMSG, args[1], args[2], reply, queues)
            else:
                head = (OP_LMSG, args[1], reply, queues)
            self._await = (head, hlen, size)
            return None
        if verb == _V_LSP or verb == _V_LSM or verb == _V_RSP or verb == _V_RSM:
            acc = 1 if verb >= _V_RSP else 0
            plus = verb == _V_LSP or verb == _V_RSP
            k = n - acc
            if plus and k == 4:
                q, w = args[2 + acc], _size(args[3 + acc], "weight")
            elif not plus and k == 3:
                q, w = args[2 + acc], None
            elif k == 2:
                q, w = None, None
            else:
                raise RemoteProtocolError("interest arguments")
            if acc:
                return (OP_RS_PLUS if plus else OP_RS_MINUS, args[1], args[2], q) + ((w,) if plus else ())
            return (OP_LS_PLUS if plus else OP_LS_MINUS, args[1], q) + ((w,) if plus else ())
        raise RemoteProtocolError("unknown operation", ERR_UNKNOWN_OP)

    def _payload_size(self, tok):
        size = _size(tok, "payload")
        if self.max_payload is not None and size > self.max_payload:
            raise RemoteProtocolError("payload of %d bytes over the limit" % size, ERR_MAX_PAYLOAD)
        return size


# ---- headers ----------------------------------------------------------------------------------

HDR_LINE = b"NATS/1.0"


def decode_headers(block):
    # -> (status or None, description, [(key, value), ...]) with keys and values as str, order
    # and repeats kept. Raises RemoteProtocolError on a malformed block.
    if block[:8] != HDR_LINE:
        raise RemoteProtocolError("header block does not start with NATS/1.0")
    try:
        text = bytes(block).decode()
    except UnicodeError:
        raise RemoteProtocolError("header block is not UTF-8")
    lines = text.split("\r\n")
    first = lines[0][8:].strip()
    status = None
    desc = ""
    if first:
        code, _, desc = first.partition(" ")
        if len(code) != 3 or not code.isdigit():
            raise RemoteProtocolError("bad status in header block")
        status = int(code)
        desc = desc.strip()
    pairs = []
    for ln in lines[1:]:
        if not ln:
            continue
        k, sep, v = ln.partition(":")
        if not sep or not k.strip():
            raise RemoteProtocolError("bad header line")
        pairs.append((k.strip(), v.strip()))
    return status, desc, pairs


def encode_headers(pairs, status=None, desc=""):
    # pairs: [(key, value)] or a dict of key -> value or list of values.
    out = [HDR_LINE]
    if status is not None:
        out.append(b" %d" % status)
        if desc:
            out.append(b" " + _b(desc))
    out.append(CRLF)
    items = pairs.items() if hasattr(pairs, "items") else pairs
    for k, v in items:
        k = _b(k)
        if not k or b":" in k or _has_space(k):
            raise LocalProtocolError("bad header key %r" % k)
        for val in v if isinstance(v, list) else (v,):
            val = _b(val)
            if b"\r" in val or b"\n" in val:
                raise LocalProtocolError("header value with CR/LF")
            out.append(k + b": " + val + CRLF)
    out.append(CRLF)
    return b"".join(out)


# ---- encoders ---------------------------------------------------------------------------------


def _b(x):
    return x.encode() if isinstance(x, str) else bytes(x)


def _has_space(b):
    return b" " in b or b"\t" in b or b"\r" in b or b"\n" in b


def _token(x, what):
    x = _b(x)
    if not x or _has_space(x):
        raise LocalProtocolError("invalid %s %r" % (what, x))
    return x


def _json_line(verb, obj):
    return verb + json.dumps(obj, separators=(",", ":")).encode() + CRLF


def encode_info(info):
    # nats-server puts a space before the CRLF of INFO; peers trim it.
    return b"INFO " + json.dumps(info, separators=(",", ":")).encode() + b" \r\n"


def encode_connect(opts):
    return _json_line(b"CONNECT ", opts)


def encode_err(text):
    return b"-ERR '" + _b(text) + b"'\r\n"


# A payload of at least this many bytes is framed as parts when the caller asks (parts=True): the tuple
# (control line + headers, payload, CRLF), which Link.write hands to the stream one by one, so the payload is never
# copied into a frame-sized block (a 60 KB heap may have no free 0.6 KB run when it is fragmented).
PARTS_FROM = 256


def _frame(head, hdr, payload, parts=False):
    # head: control-line words ending before the size fields. One join: the frame is allocated once, at its
    # size; chained + would allocate (and copy) a frame-sized block per step, which a small heap may not have.
    payload = _b(payload)
    if hdr is None:
        line = b" %d\r\n" % len(payload)
        if parts and len(payload) >= PARTS_FROM:
            return (b" ".join(head) + line, payload, CRLF)
        return b"".join((b" ".join(head), line, payload, CRLF))
    hdr = _b(hdr)
    line = b" %d %d\r\n" % (len(hdr), len(hdr) + len(payload))
    if parts and len(payload) >= PARTS_FROM:
        return (b"".join((b" ".join(head), line, hdr)), payload, CRLF)
    return b"".join((b" ".join(head), line, hdr, payload, CRLF))


def encode_pub(subject, payload, reply=None, hdr=None):
    head = [b"HPUB" if hdr is not None else b"PUB", _token(subject, "subject")]
    if reply:
        head.append(_token(reply, "reply"))
    return _frame(head, hdr, payload)


def encode_sub(subject, sid, queue=None):
    parts = [b"SUB", _token(subject, "subject")]
    if queue:
        parts.append(_token(queue, "queue"))
    parts.append(_token(sid, "sid"))
    return b" ".join(parts) + CRLF


def encode_unsub(sid, max_msgs=None):
    if max_msgs is None:
        return b"UNSUB " + _token(sid, "sid") + CRLF
    return b"UNSUB %s %d\r\n" % (_token(sid, "sid"), max_msgs)


def encode_msg(subject, sid, payload, reply=None, hdr=None, parts=False):
    # parts: a big payload comes back as a tuple of parts (see PARTS_FROM) for Link.write.
    head = [b"HMSG" if hdr is not None else b"MSG", _token(subject, "subject"), _token(sid, "sid")]
    if reply:
        head.append(_token(reply, "reply"))
    return _frame(head, hdr, payload, parts)


def _reply_queue_words(head, reply, queues):
    if queues:
        head.extend((b"+", _token(reply, "reply")) if reply else (b"|",))
        head.extend(_token(q, "queue") for q in queues)
    elif reply:
        head.append(_token(reply, "reply"))
    return head


def encode_ls_plus(subject, queue=None, weight=1):
    if queue:
        return b"LS+ %s %s %d\r\n" % (_token(subject, "subject"), _token(queue, "queue"), weight)
    return b"LS+ " + _token(subject, "subject") + CRLF


def encode_ls_minus(subject, queue=None):
    if queue:
        return b"LS- " + _token(subject, "subject") + b" " + _token(queue, "queue") + CRLF
    return b"LS- " + _token(subject, "subject") + CRLF


def encode_lmsg(subject, payload, reply=None, queues=None, hdr=None, parts=False):
    # The subject is not checked here: the edge checks a publish subject where it comes in (leaf.publish, a LAN
    # client's PUB) and the hub forwards subjects it parsed. parts: as encode_msg.
    head = [b"HMSG" if hdr is not None else b"LMSG", _b(subject)]
    return _frame(_reply_queue_words(head, reply, queues), hdr, payload, parts)

