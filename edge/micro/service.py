# edge/micro/service.py — NATS Micro services (ADR-32) hosted by the leaf: `leaf.service(...)`.
#
# A service answers $SRV.PING, $SRV.INFO and $SRV.STATS (each for all, by name and by name + id) and runs
# endpoint handlers on request subjects, counting requests, errors and processing time per endpoint. The
# formats are those of nats-py 2.16's nats.micro and nats.go's micro (shared/nats-reference more/README.md §D),
# so `nats micro ls` and nats-py discover edge services through the uplink, and LAN clients locally.
# Rules this file keeps:
# 1. Everything goes through the leaf's API (subscribe, Msg.respond): the $SRV subjects and the endpoints
#    are ordinary leaf subscriptions, so they count against limits.max_subscriptions (a service takes 9,
#    each endpoint 1), reach the hub as LS+ and LAN clients' requests as any local subscription.
# 2. The $SRV subjects are plain subscriptions, never a queue group: every instance answers a discovery
#    request (nats.net#307). Endpoints are queue subscriptions: endpoint queue > group > "q".
# 3. Nothing is allocated per request beyond the leaf's Msg and the answer (and an async handler's coroutines):
#    the subscription's callback is the Service or the Endpoint object itself, the counters are small ints on it.
# 4. A handler gets the leaf's Msg. What it returns, when not None, is the answer (bytes or str); None means
#    it answered with msg.respond() itself (or sends nothing). ServiceError(code, text) becomes an empty answer
#    with the Nats-Service-Error and Nats-Service-Error-Code headers; any other exception a code 500 whose text
#    is the exception as nats-py words it (`ValueError('kaput')`), on both interpreters.
# 5. Bad names, versions, subjects, queues and metadata raise LeafError with one line saying what is wrong.
#    Nothing is half made: a service or endpoint that cannot get its subscriptions takes none.

import binascii
import json
import os
import time

from edge import subjects
from edge.compat import ticks_diff, ticks_us
from edge.leaf.broker import LeafError, log_exc

ERROR_HEADER = "Nats-Service-Error"
ERROR_CODE_HEADER = "Nats-Service-Error-Code"
DEFAULT_QUEUE = "q"
_PREFIX = "$SRV."
_TYPES = {"PING": "io.nats.micro.v1.ping_response", "INFO": "io.nats.micro.v1.info_response",
          "STATS": "io.nats.micro.v1.stats_response"}


class ServiceError(Exception):
    # Raised by a handler: the requester gets `code` and `text` in the error headers.
    def __init__(self, code, text):
        super().__init__("%s:%s" % (code, text))
        self.code = code
        self.text = text


def _chars_ok(s, extra):
    # Only ASCII letters, digits and the `extra` characters, at least one. By hand: MicroPython's re lacks the
    # SemVer regex's constructs, and str.isdigit() alone would take other scripts' digits.
    if not isinstance(s, str) or not s:
        return False
    for c in s:
        if not (c < "\x7f" and (c.isalpha() or c.isdigit() or c in extra)):
            return False
    return True


def _name_ok(s):
    # nats.go / nats-py: ^[A-Za-z0-9\-_]+$
    return _chars_ok(s, "-_")


def _ident_ok(s, numeric_rule):
    # A SemVer identifier: [0-9A-Za-z-]+; with numeric_rule, one that is all digits has no leading zero.
    return _chars_ok(s, "-") and not (numeric_rule and s.isdigit() and len(s) > 1 and s[0] == "0")


def semver_ok(v):
    # The official SemVer 2.0 grammar (the regex of nats.go semVerRegexp and nats-py SEMVER_REGEX).
    if not isinstance(v, str):
        return False
    v, plus, build = v.partition("+")
    if plus and not all(_ident_ok(p, False) for p in build.split(".")):
        return False
    core, dash, pre = v.partition("-")
    if dash and not all(_ident_ok(p, True) for p in pre.split(".")):
        return False
    nums = core.split(".")
    return len(nums) == 3 and all(n.isdigit() and _ident_ok(n, True) for n in nums)


def _metadata(md, what):
    if md is None:
        return None
    if not isinstance(md, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in md.items()):
        raise LeafError("%s metadata: expected a dict of str to str, got %r" % (what, md))
    return md


def _queue(q):
    if not isinstance(q, str) or not subjects.valid_queue(q.encode()):
        raise LeafError("queue group %r: not a valid queue name (no spaces)" % (q,))
    return q


def _rfc3339_now():
    # UTC with milliseconds, as nats-py writes `started` (Go parses it too).
    ns = time.time_ns()
    t = time.gmtime(ns // 1000000000)
    return "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ" % (t[0], t[1], t[2], t[3], t[4], t[5], ns // 1000000 % 1000)


def _one_line(s):
    return s.replace("\r", " ").replace("\n", " ")


class Endpoint:
    # One request subject; the callback of its own subscription (rule 3).
    def __init__(self, name, handler, metadata):
        self.name = name
        self.handler = handler
        self.metadata = metadata
        self.sub = None
        self.requests = 0
        self.errors = 0
        self.us = 0  # total processing time in µs: a small int (no heap) for 17 minutes of it on a 32-bit build
        self.last_error = ""

    def __call__(self, msg):
        t0 = ticks_us()
        try:
            r = self.handler(msg)
        except Exception as e:
            self._done(msg, None, e, t0)
            return None
        if r is not None and hasattr(r, "send"):  # a coroutine: the leaf's dispatcher awaits _finish
            return self._finish(msg, r, t0)
        self._done(msg, r, None, t0)
        return None

    async def _finish(self, msg, coro, t0):
        try:
            r = await coro
        except Exception as e:
            self._done(msg, None, e, t0)
            return
        self._done(msg, r, None, t0)

    def _done(self, msg, answer, err, t0):
        if err is None and answer is not None and msg._reply:
            if not isinstance(answer, (bytes, bytearray, str)):
                err = TypeError("the handler returned %s, not bytes or str" % type(answer).__name__)
            else:
                try:
                    msg.respond(answer)
                except LeafError as e:  # over max_payload: the requester hears why
                    err = e
        self.requests += 1
        self.us += ticks_diff(ticks_us(), t0)
        if err is None:
            return
        self.errors += 1
        if isinstance(err, ServiceError):
            code, text = err.code, _one_line(str(err.text))
            self.last_error = "%s:%s" % (code, text)
        else:
            log_exc(err)
            code, text = 500, _one_line("%s(%r)" % (type(err).__name__, str(err)))
            self.last_error = text
        if msg._reply:
            msg.respond(b"", {ERROR_HEADER: text, ERROR_CODE_HEADER: str(code)})

    def info(self):
        s = self.sub
        return {"name": self.name, "subject": s.subject.decode(), "queue_group": s.queue.decode(),
                "metadata": self.metadata}

    def stats(self):
        s = self.sub
        n = self.requests
        ns = self.us * 1000
        return {"name": self.name, "subject": s.subject.decode(), "queue_group": s.queue.decode(),
                "num_requests": n, "num_errors": self.errors, "last_error": self.last_error,
                "processing_time": ns, "average_processing_time": ns // n if n else 0, "data": None}


class Group:
    # Endpoints under a subject prefix ("a" or "a.b" when nested) with a default queue group.
    def __init__(self, svc, prefix, queue):
        self.svc = svc
        self.prefix = prefix
        self.queue = queue

    def endpoint(self, name, handler, subject=None, queue=None, metadata=None):
        # queue None: the group's queue group.
        return self.svc._add(self.prefix, name, handler, subject, queue or self.queue, metadata)

    def group(self, name, queue=None):
        return Group(self.svc, self.prefix + "." + _group_name(name), _queue(queue) if queue else self.queue)


def _group_name(name):
    if not isinstance(name, str) or not subjects.valid(name.encode(), True) or ">" in name:
        raise LeafError("group name %r: not a valid subject prefix (tokens without spaces, no \">\")" % (name,))
    return name


class Service:
    # Created by leaf.service(); the callback of its nine $SRV subscriptions (rule 3).
    def __init__(self, leaf, name, version, description=None, metadata=None):
        if not _name_ok(name):
            raise LeafError("service name %r: use only A-Z, a-z, 0-9, \"-\" and \"_\"" % (name,))
        if not semver_ok(version):
            raise LeafError("service version %r: not a SemVer version (1.2.3, 1.2.3-rc.1, 1.2.3+build.5)"
                            % (version,))
        if description is not None and not isinstance(description, str):
            raise LeafError("service description: expected a str, got %r" % (description,))
        self.leaf = leaf
        self.name = name
        self.version = version
        self.description = description
        self.metadata = _metadata(metadata, "service")
        self.id = binascii.hexlify(os.urandom(11)).decode()  # 22 characters, as long as a NUID
        self.started = _rfc3339_now()
        self.endpoints = []
        self.subs = []  # the $SRV subscriptions; None once stopped
        try:
            for verb in _TYPES:
                for tail in ("", "." + name, "." + name + "." + self.id):
                    self.subs.append(leaf.subscribe(_PREFIX + verb + tail, self))
        except LeafError as e:
            self._unsubscribe()
            raise LeafError("service %s: %s (it takes 9 subscriptions, each endpoint 1; see "
                            "limits.max_subscriptions)" % (name, e))

    def endpoint(self, name, handler, subject=None, queue=DEFAULT_QUEUE, metadata=None):
        return self._add(None, name, handler, subject, queue, metadata)

    def group(self, name, queue=None):
        return Group(self, _group_name(name), _queue(queue) if queue else DEFAULT_QUEUE)

    def stop(self):
        # Unsubscribes everything: the service no longer answers discovery or requests. Stopping twice is fine.
        if self.subs is None:
            return
        for ep in self.endpoints:
            ep.sub.unsubscribe()
        self._unsubscribe()
        self.subs = None

    def _unsubscribe(self):
        for s in self.subs:
            s.unsubscribe()

    def _add(self, prefix, name, handler, subject, queue, metadata):
        if self.subs is None:
            raise LeafError("service %s is stopped" % self.name)
        if not _name_ok(name):
            raise LeafError("endpoint name %r: use only A-Z, a-z, 0-9, \"-\" and \"_\"" % (name,))
        if not callable(handler):
            raise LeafError("endpoint %s: the handler is not callable" % name)
        if subject is None:
            subject = name
        if not isinstance(subject, str) or ">" in subject[:-1] or not subjects.valid(subject.encode(), True):
            raise LeafError("endpoint subject %r: not a valid subject (no spaces, \">\" only at the end)"
                            % (subject,))
        ep = Endpoint(name, handler, _metadata(metadata, "endpoint"))
        full = subject if prefix is None else prefix + "." + subject
        ep.sub = self.leaf.subscribe(full, ep, _queue(queue or DEFAULT_QUEUE))
        self.endpoints.append(ep)
        return ep

    def __call__(self, msg):
        # A $SRV request: $SRV.<VERB>[.<name>[.<id>]]; the payload is ignored.
        subject = msg.subject
        verb = subject[5:].partition(".")[0]
        d = {"type": _TYPES[verb], "name": self.name, "id": self.id, "version": self.version,
             "metadata": self.metadata or {}}  # {} when unset: natscli#756 rejects null
        if verb == "INFO":
            d["description"] = self.description or ""
            d["endpoints"] = [ep.info() for ep in self.endpoints]
        elif verb == "STATS":
            d["started"] = self.started
            d["endpoints"] = [ep.stats() for ep in self.endpoints]
        if msg._reply:
            msg.respond(json.dumps(d))
